//! A measured figure beside its reference, its target, and the results directory.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// One figure: a value, the reference measured in the same run, and the target.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Figure {
    pub name: String,
    /// None: not measured (see `notes`).
    pub value: Option<f64>,
    pub unit: String,
    /// What the value is compared with, and its value in the same run.
    pub reference: Option<String>,
    pub reference_value: Option<f64>,
    /// value / reference_value.
    pub ratio: Option<f64>,
    /// The target in words ("<= 0.25x node_exporter"); empty: for information.
    pub target: String,
    /// Whether the target is met; None: no target, or not measured.
    pub met: Option<bool>,
    /// By how much a target is missed, or the margin it is met with.
    pub verdict: String,
    pub notes: String,
    /// Shown in the summary although it has no target (a figure shown beside targeted ones).
    #[serde(default)]
    pub in_summary: bool,
}

impl Figure {
    pub fn new(name: &str, value: f64, unit: &str) -> Figure {
        Figure {
            name: name.into(),
            value: Some(value),
            unit: unit.into(),
            ..Default::default()
        }
    }

    /// Sets the reference and the ratio value / reference.
    pub fn vs(mut self, reference: &str, value: f64) -> Figure {
        self.reference = Some(reference.into());
        self.reference_value = Some(value);
        self.ratio = self.value.map(|v| v / value).filter(|r| r.is_finite());
        self
    }

    pub fn target(mut self, target: &str, met: bool, verdict: String) -> Figure {
        self.target = target.into();
        self.met = Some(met);
        self.verdict = verdict;
        self
    }

    /// Lists the figure in the summary too, without a target.
    pub fn in_summary(mut self) -> Figure {
        self.in_summary = true;
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Figure {
        let n = note.into();
        if !self.notes.is_empty() {
            self.notes.push_str("; ");
        }
        self.notes.push_str(&n);
        self
    }
}

/// Target "value at most `limit`": met or not, and by how much.
pub fn at_most(value: f64, limit: f64, unit: &str) -> (bool, String) {
    if value <= limit {
        (true, format!("met ({} {unit} under)", fmt(limit - value)))
    } else {
        (
            false,
            format!(
                "missed by {} {unit} ({:.0} % over)",
                fmt(value - limit),
                (value / limit - 1.0) * 100.0
            ),
        )
    }
}

/// Target "value at least `limit`".
pub fn at_least(value: f64, limit: f64, unit: &str) -> (bool, String) {
    if value >= limit {
        (true, format!("met ({:.1}x the target)", value / limit))
    } else {
        (
            false,
            format!(
                "missed by {} {unit} ({:.0} % short)",
                fmt(limit - value),
                (1.0 - value / limit) * 100.0
            ),
        )
    }
}

/// Both parts of a two-part target must hold.
pub fn both(a: (bool, String), b: (bool, String)) -> (bool, String) {
    (a.0 && b.0, format!("{}; {}", a.1, b.1))
}

/// A figure group as saved in the results directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupResult {
    pub key: String,
    pub title: String,
    pub date: String,
    pub machine: String,
    pub quick: bool,
    /// `bench/run.sh --only KEY`.
    pub command: String,
    /// The processes measured, with their exact command lines.
    pub commands: Vec<String>,
    pub figures: Vec<Figure>,
    pub notes: Vec<String>,
}

impl GroupResult {
    /// Applies `rewrite` to every text that may name a path (command lines, configs, notes).
    pub fn rewrite_text(&mut self, rewrite: impl Fn(&str) -> String) {
        for c in &mut self.commands {
            *c = rewrite(c);
        }
        for n in &mut self.notes {
            *n = rewrite(n);
        }
        for f in &mut self.figures {
            f.name = rewrite(&f.name);
            f.notes = rewrite(&f.notes);
            f.reference = f.reference.as_deref().map(&rewrite);
        }
    }

    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(
            dir.join(format!("{}.json", self.key)),
            serde_json::to_vec_pretty(self)?,
        )?;
        Ok(())
    }
}

/// The groups in the order of the document.
pub const ORDER: &[&str] = &[
    "footprint",
    "buffer",
    "ingest",
    "alerts",
    "commands",
    "scale",
    "postgres",
    "cluster",
];

/// `nproc`, memory, CPU model and kernel of this machine.
pub fn machine() -> String {
    let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "nproc {nproc}, {:.1} GiB memory, {model}, Linux {}",
        mem_kib as f64 / 1024.0 / 1024.0,
        kernel.trim()
    )
}

pub fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// A number with a sensible number of digits.
pub fn fmt(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let a = v.abs();
    if v == v.trunc() && a < 1000.0 {
        format!("{v:.0}")
    } else if a >= 1000.0 {
        let s = format!("{:.0}", v);
        // thousands separators
        let (sign, digits) = s.split_at(if v < 0.0 { 1 } else { 0 });
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_get_thousands_separators_and_few_digits() {
        assert_eq!(fmt(36_000.0), "36,000");
        assert_eq!(fmt(1234567.0), "1,234,567");
        assert_eq!(fmt(5.4321), "5.43");
        assert_eq!(fmt(0.41), "0.410");
        assert_eq!(fmt(0.0), "0");
        assert_eq!(fmt(f64::NAN), "-");
    }

    #[test]
    fn a_missed_target_says_by_how_much() {
        assert!(at_most(5.0, 6.0, "MiB").0);
        let (ok, why) = at_most(7.5, 6.0, "MiB");
        assert!(!ok);
        assert!(why.contains("1.50 MiB"), "{why}");
        assert!(at_least(25_000.0, 20_000.0, "rec/s").0);
        assert!(!at_least(1_000.0, 20_000.0, "rec/s").0);
    }
}
