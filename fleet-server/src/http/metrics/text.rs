//! Writing the Prometheus text exposition format 0.0.4: a family's samples with escaped
//! labels, `# HELP` and `# TYPE` once per family, values as Prometheus reads them.

use std::fmt::Write as _;

use super::families::FAMILIES;

/// One family being written.
pub(super) struct Family {
    name: &'static str,
    lines: Vec<String>,
}

impl Family {
    pub(super) fn new(name: &'static str) -> Self {
        debug_assert!(FAMILIES.iter().any(|f| f.0 == name), "{name} is not in FAMILIES");
        Family {
            name,
            lines: Vec::new(),
        }
    }

    pub(super) fn add(&mut self, labels: &[(&str, &str)], value: f64) {
        let mut line = String::from(self.name);
        if !labels.is_empty() {
            line.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    line.push(',');
                }
                line.push_str(k);
                line.push_str("=\"");
                escape_label(&mut line, v);
                line.push('"');
            }
            line.push('}');
        }
        line.push(' ');
        line.push_str(&number(value));
        self.lines.push(line);
    }
}

fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A sample value as Prometheus reads it.
pub fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        v.to_string()
    }
}

#[derive(Default)]
pub(super) struct Out {
    pub(super) text: String,
}

impl Out {
    pub(super) fn emit(&mut self, f: Family) {
        if f.lines.is_empty() {
            return;
        }
        let (name, kind, help) = FAMILIES
            .iter()
            .find(|x| x.0 == f.name)
            .copied()
            .unwrap_or((f.name, "untyped", ""));
        let _ = write!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        for l in f.lines {
            self.text.push_str(&l);
            self.text.push('\n');
        }
    }

    pub(super) fn one(&mut self, name: &'static str, value: f64) {
        let mut f = Family::new(name);
        f.add(&[], value);
        self.emit(f);
    }
}
