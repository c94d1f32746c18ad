//! Health gate of a rollout (pure): is a machine worse after the command than before it?
//!
//! Each machine is compared with itself. Before its command the rollout samples the machine
//! for [`GateSpec::settle_s`] (its baseline); once the command succeeded it samples it as long
//! again. The machine is worse when, between the two windows:
//!
//! - its health got worse (ok to warn or critical, warn to critical);
//! - its accepted rate (the `app.rvm.accepted_total` counter's rise per hour, docs/kpis.md)
//!   fell by more than [`GateSpec::max_accepted_drop_pct`];
//! - its reject ratio (rejected / (accepted + rejected)) rose by more than
//!   [`GateSpec::max_reject_ratio_rise_pct`] percentage points, when both windows counted at
//!   least [`MIN_ITEMS`] items.
//!
//! A machine without the counters is compared on health alone. A machine that gives no reading
//! after its command within [`NO_DATA_AFTER_SETTLES`] settle windows is not known to be well:
//! the gate says so ([`Verdict::NoData`]), which stops the rollout like a worse machine.

use serde::{Deserialize, Serialize};

/// Fewer items than this in a window give no reject ratio (a quiet machine).
pub const MIN_ITEMS: f64 = 10.0;
/// After this many settle windows without enough readings, a machine's verdict is NoData.
pub const NO_DATA_AFTER_SETTLES: i64 = 3;
/// Samples kept per machine at most.
const SAMPLES_CAP: usize = 512;

/// How a rollout watches the machines that ran its command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateSpec {
    /// How long each machine is watched before and after its command, seconds.
    #[serde(default = "default_settle_s")]
    pub settle_s: u64,
    /// A machine whose accepted rate fell by more than this percentage is worse.
    #[serde(default = "default_drop_pct")]
    pub max_accepted_drop_pct: f64,
    /// A machine whose reject ratio rose by more than this many percentage points is worse.
    #[serde(default = "default_rise_pct")]
    pub max_reject_ratio_rise_pct: f64,
    /// A paused rollout is aborted after this many seconds unless an operator resumes it.
    #[serde(default = "default_pause_s")]
    pub pause_s: u64,
}

fn default_settle_s() -> u64 {
    120
}
fn default_drop_pct() -> f64 {
    30.0
}
fn default_rise_pct() -> f64 {
    10.0
}
fn default_pause_s() -> u64 {
    900
}

impl GateSpec {
    /// Every problem with its key path (`gate.settle_s: ...`).
    pub fn validate(&self) -> Result<(), String> {
        let mut p = Vec::new();
        if !(1..=86_400).contains(&self.settle_s) {
            p.push(format!("gate.settle_s: {} is outside 1..=86400", self.settle_s));
        }
        if !(0.0..=100.0).contains(&self.max_accepted_drop_pct) {
            p.push(format!(
                "gate.max_accepted_drop_pct: {} is outside 0..=100",
                self.max_accepted_drop_pct
            ));
        }
        if !(0.0..=100.0).contains(&self.max_reject_ratio_rise_pct) {
            p.push(format!(
                "gate.max_reject_ratio_rise_pct: {} is outside 0..=100",
                self.max_reject_ratio_rise_pct
            ));
        }
        if !(1..=7 * 86_400).contains(&self.pause_s) {
            p.push(format!("gate.pause_s: {} is outside 1..=604800", self.pause_s));
        }
        if p.is_empty() { Ok(()) } else { Err(p.join("; ")) }
    }

    pub fn settle_ms(&self) -> i64 {
        self.settle_s as i64 * 1000
    }
}

/// One reading of a machine: its record time, counters and health (0 ok, 1 warn, 2 critical).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub ts_ms: i64,
    pub accepted: Option<f64>,
    pub rejected: Option<f64>,
    pub health: Option<u8>,
}

/// What the gate decided about one machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "verdict", content = "detail")]
pub enum Verdict {
    Healthy(String),
    Worse(String),
    NoData(String),
    /// An operator resumed the rollout over this machine's finding.
    Overridden(String),
}

impl Verdict {
    /// Whether this verdict stops the rollout.
    pub fn stops(&self) -> bool {
        matches!(self, Verdict::Worse(_) | Verdict::NoData(_))
    }
}

/// One machine under watch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Watch {
    /// When watching began (the baseline window opens).
    pub since_ms: i64,
    pub samples: Vec<Sample>,
    /// When its command was created, and when it succeeded.
    pub dispatched_ms: Option<i64>,
    pub done_ms: Option<i64>,
    pub verdict: Option<Verdict>,
}

impl Watch {
    pub fn new(now_ms: i64) -> Self {
        Watch {
            since_ms: now_ms,
            ..Default::default()
        }
    }

    /// Keeps a reading (a repeat of the last record is ignored).
    pub fn observe(&mut self, s: Sample) {
        if self.samples.last().is_some_and(|l| l.ts_ms >= s.ts_ms) {
            return;
        }
        self.samples.push(s);
        if self.samples.len() > SAMPLES_CAP {
            self.samples.remove(0);
        }
    }

    /// Its baseline spans the settle window (or watching began that long ago: a machine
    /// without readings is not held back for ever).
    pub fn baseline_ready(&self, spec: &GateSpec, now_ms: i64) -> bool {
        now_ms - self.since_ms >= spec.settle_ms()
    }

    /// Decides when the window after the command is complete; None while it is not.
    pub fn judge(&mut self, spec: &GateSpec, now_ms: i64) -> Option<&Verdict> {
        if self.verdict.is_some() {
            return self.verdict.as_ref();
        }
        let (Some(dispatched), Some(done)) = (self.dispatched_ms, self.done_ms) else {
            return None;
        };
        let settle = spec.settle_ms();
        let before: Vec<Sample> = self
            .samples
            .iter()
            .filter(|s| s.ts_ms <= dispatched && s.ts_ms >= dispatched - settle)
            .copied()
            .collect();
        let after: Vec<Sample> = self.samples.iter().filter(|s| s.ts_ms > done).copied().collect();
        let span = |w: &[Sample]| match (w.first(), w.last()) {
            (Some(a), Some(b)) => b.ts_ms - a.ts_ms,
            _ => 0,
        };
        // the window after is complete when it spans the settle window, less one reading
        // interval (readings come at the machine's pace)
        let interval = typical_interval(&self.samples);
        if after.len() < 2 || span(&after) + interval < settle {
            if now_ms - done >= NO_DATA_AFTER_SETTLES * settle {
                self.verdict = Some(Verdict::NoData(format!(
                    "{} readings in the {} s after the command",
                    after.len(),
                    (now_ms - done) / 1000
                )));
            }
            return self.verdict.as_ref();
        }
        self.verdict = Some(compare(&before, &after, spec));
        self.verdict.as_ref()
    }
}

fn typical_interval(samples: &[Sample]) -> i64 {
    let mut gaps: Vec<i64> = samples.windows(2).map(|w| w[1].ts_ms - w[0].ts_ms).collect();
    gaps.sort_unstable();
    gaps.get(gaps.len() / 2).copied().unwrap_or(0)
}

/// Rise of a counter per hour over a window, and the items in it.
fn rate(w: &[Sample], f: impl Fn(&Sample) -> Option<f64>) -> Option<(f64, f64)> {
    let pts: Vec<(i64, f64)> = w.iter().filter_map(|s| f(s).map(|v| (s.ts_ms, v))).collect();
    // a counter that went down was reset (the vision service restarted): from there on
    let from = pts.windows(2).rposition(|p| p[1].1 < p[0].1).map_or(0, |i| i + 1);
    let pts = &pts[from..];
    let (&(t0, v0), &(t1, v1)) = (pts.first()?, pts.last()?);
    if t1 <= t0 {
        return None;
    }
    Some(((v1 - v0) * 3_600_000.0 / (t1 - t0) as f64, v1 - v0))
}

fn worst_health(w: &[Sample]) -> Option<u8> {
    w.iter().filter_map(|s| s.health).max()
}

const HEALTH: [&str; 3] = ["ok", "warn", "critical"];

fn health_name(h: u8) -> &'static str {
    HEALTH.get(h as usize).copied().unwrap_or("?")
}

/// Compares the window after the command with the one before it (module docs).
pub fn compare(before: &[Sample], after: &[Sample], spec: &GateSpec) -> Verdict {
    let mut worse = Vec::new();
    let mut seen = Vec::new();
    let (hb, ha) = (worst_health(before), after.last().and_then(|s| s.health));
    if let Some(ha) = ha {
        let hb_v = hb.unwrap_or(0);
        if ha > hb_v {
            worse.push(format!("health {} -> {}", health_name(hb_v), health_name(ha)));
        } else {
            seen.push(format!("health {}", health_name(ha)));
        }
    }
    let (ab, aa) = (rate(before, |s| s.accepted), rate(after, |s| s.accepted));
    match (ab, aa) {
        (Some((rb, _)), Some((ra, _))) if rb > 0.0 => {
            let drop = (1.0 - ra / rb) * 100.0;
            let text = format!("accepted {rb:.0}/h -> {ra:.0}/h ({:+.0} %)", -drop);
            if drop > spec.max_accepted_drop_pct {
                worse.push(text);
            } else {
                seen.push(text);
            }
        }
        _ => {}
    }
    let ratio = |w: &[Sample]| -> Option<f64> {
        let (_, a) = rate(w, |s| s.accepted)?;
        let (_, r) = rate(w, |s| s.rejected).unwrap_or((0.0, 0.0));
        (a + r >= MIN_ITEMS).then(|| r / (a + r))
    };
    if let (Some(b), Some(a)) = (ratio(before), ratio(after)) {
        let rise = (a - b) * 100.0;
        let text = format!("reject ratio {:.1} % -> {:.1} %", b * 100.0, a * 100.0);
        if rise > spec.max_reject_ratio_rise_pct {
            worse.push(text);
        } else {
            seen.push(text);
        }
    }
    if worse.is_empty() {
        Verdict::Healthy(if seen.is_empty() {
            "no readings to compare".into()
        } else {
            seen.join(", ")
        })
    } else {
        Verdict::Worse(worse.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> GateSpec {
        GateSpec {
            settle_s: 10,
            max_accepted_drop_pct: 30.0,
            max_reject_ratio_rise_pct: 10.0,
            pause_s: 60,
        }
    }

    /// Readings every second from `t0` for `n` s: `acc_per_s` accepted, `rej_per_s` rejected.
    fn build_window(t0: i64, n: i64, acc0: f64, acc_per_s: f64, rej_per_s: f64, health: u8) -> Vec<Sample> {
        (0..=n)
            .map(|i| Sample {
                ts_ms: t0 + i * 1000,
                accepted: Some(acc0 + acc_per_s * i as f64),
                rejected: Some(rej_per_s * i as f64),
                health: Some(health),
            })
            .collect()
    }

    #[test]
    fn a_machine_that_keeps_its_rate_is_healthy_and_one_that_loses_half_is_worse() {
        let before = build_window(0, 10, 0.0, 10.0, 0.3, 0);
        let same = build_window(20_000, 10, 200.0, 9.5, 0.3, 0);
        assert!(
            matches!(compare(&before, &same, &spec()), Verdict::Healthy(t) if t.contains("accepted 36000/h"))
        );
        let half = build_window(20_000, 10, 200.0, 5.0, 0.3, 0);
        let v = compare(&before, &half, &spec());
        assert!(matches!(&v, Verdict::Worse(t) if t.contains("-50 %")), "{v:?}");
    }

    #[test]
    fn worse_health_and_a_reject_ratio_rise_are_worse() {
        let before = build_window(0, 10, 0.0, 10.0, 0.3, 0);
        let critical = build_window(20_000, 10, 100.0, 10.0, 0.3, 2);
        assert!(
            matches!(compare(&before, &critical, &spec()), Verdict::Worse(t) if t.contains("ok -> critical"))
        );
        let rejects = build_window(20_000, 10, 100.0, 7.0, 3.0, 0);
        assert!(
            matches!(compare(&before, &rejects, &spec()), Verdict::Worse(t) if t.contains("reject ratio"))
        );
    }

    #[test]
    fn a_machine_without_counters_is_judged_on_health_alone() {
        let h = |t0: i64, health: u8| -> Vec<Sample> {
            (0..5)
                .map(|i| Sample {
                    ts_ms: t0 + i * 1000,
                    accepted: None,
                    rejected: None,
                    health: Some(health),
                })
                .collect()
        };
        assert!(matches!(
            compare(&h(0, 1), &h(10_000, 1), &spec()),
            Verdict::Healthy(_)
        ));
        assert!(matches!(
            compare(&h(0, 0), &h(10_000, 1), &spec()),
            Verdict::Worse(_)
        ));
    }

    #[test]
    fn a_watch_judges_once_the_window_after_is_complete_and_says_when_nothing_came() {
        let s = spec();
        let mut w = Watch::new(0);
        for x in build_window(0, 10, 0.0, 10.0, 0.3, 0) {
            w.observe(x);
        }
        assert!(w.baseline_ready(&s, 10_000));
        w.dispatched_ms = Some(10_000);
        w.done_ms = Some(10_500);
        for x in build_window(11_000, 5, 110.0, 5.0, 0.3, 0) {
            w.observe(x);
        }
        assert_eq!(w.judge(&s, 16_000), None, "half a window");
        for x in build_window(17_000, 5, 145.0, 5.0, 0.3, 0) {
            w.observe(x);
        }
        assert!(matches!(w.judge(&s, 22_000), Some(Verdict::Worse(_))));

        let mut silent = Watch::new(0);
        silent.dispatched_ms = Some(10_000);
        silent.done_ms = Some(10_000);
        assert_eq!(silent.judge(&s, 30_000), None);
        assert!(matches!(silent.judge(&s, 40_000), Some(Verdict::NoData(_))));
    }

    #[test]
    fn a_counter_reset_gives_no_rate_and_bad_settings_are_named() {
        let mut after = build_window(20_000, 10, 200.0, 10.0, 0.3, 0);
        after[5].accepted = Some(0.0);
        after.truncate(6);
        assert_eq!(rate(&after, |s| s.accepted), None, "one point after the reset");
        let mut after = build_window(20_000, 10, 200.0, 10.0, 0.3, 0);
        for (i, s) in after.iter_mut().enumerate().skip(5) {
            s.accepted = Some((i - 5) as f64 * 10.0);
        }
        assert_eq!(rate(&after, |s| s.accepted).map(|r| r.0.round()), Some(36_000.0));
        let e = GateSpec {
            settle_s: 0,
            ..spec()
        }
        .validate()
        .unwrap_err();
        assert!(e.contains("gate.settle_s"), "{e}");
    }
}
