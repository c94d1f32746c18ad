//! The Prometheus text format (pure): [`parse_prometheus`] reads an exposition into samples,
//! [`samples_to_readings`] flattens them into reading names (see the module doc of
//! [`crate::appmetrics`]).

use std::collections::HashSet;

use common::Reading;

use super::names::{NAME_MAX_LEN, is_name_char, shorten, validate_name};

/// One sample line of the Prometheus text format. The timestamp, if any, is dropped: the agent
/// stamps values when they arrive.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Why a Prometheus text body was refused; `line` counts from 1.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

const METRIC_TYPES: &[&str] = &[
    "counter",
    "gauge",
    "histogram",
    "summary",
    "untyped",
    // OpenMetrics words some exporters use in the classic format too
    "unknown",
    "info",
    "stateset",
    "gaugehistogram",
];

/// Parses the Prometheus text exposition format (0.0.4): `# HELP`, `# TYPE` and other comments,
/// samples with optional labels (escapes `\\`, `\"`, `\n`), values including `NaN` and `±Inf`,
/// and optional timestamps. The first malformed line fails the whole body.
pub fn parse_prometheus(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut samples = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line_no = i + 1;
        let err = |message: String| ParseError {
            line: line_no,
            message,
        };
        let line = raw
            .strip_suffix('\r')
            .unwrap_or(raw)
            .trim_start_matches([' ', '\t']);
        if line.trim_end().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            parse_comment(comment).map_err(err)?;
            continue;
        }
        samples.push(parse_sample(line).map_err(err)?);
    }
    Ok(samples)
}

fn parse_comment(comment: &str) -> Result<(), String> {
    let mut words = comment.split_ascii_whitespace();
    match words.next() {
        Some("HELP") => {
            let name = words.next().ok_or("HELP without a metric name")?;
            check_metric_name(name)
        }
        Some("TYPE") => {
            let name = words.next().ok_or("TYPE without a metric name")?;
            check_metric_name(name)?;
            let kind = words
                .next()
                .ok_or_else(|| format!("TYPE of {name} without a type"))?;
            if !METRIC_TYPES.contains(&kind) {
                return Err(format!("TYPE of {name}: unknown type {:?}", shorten(kind)));
            }
            if let Some(extra) = words.next() {
                return Err(format!(
                    "TYPE of {name}: unexpected {:?} after the type",
                    shorten(extra)
                ));
            }
            Ok(())
        }
        // any other comment, including OpenMetrics' `# EOF`
        _ => Ok(()),
    }
}

fn check_metric_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("{:?} is not a metric name", shorten(name)))
    }
}

/// A cursor over one sample line.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }
    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }
    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }
    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
    }
    /// Takes `[A-Za-z0-9_:]*` (the caller checks the first character).
    fn take_ident(&mut self) -> &'a str {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }
    fn take_word(&mut self) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(|c| c != ' ' && c != '\t') {
            self.bump();
        }
        &self.s[start..self.pos]
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let mut c = Cursor { s: line, pos: 0 };
    let name = c.take_ident();
    if name.is_empty() || name.starts_with(|ch: char| ch.is_ascii_digit()) {
        return Err(format!(
            "expected a metric name at the start of {:?}",
            shorten(line)
        ));
    }
    c.skip_blanks();
    let mut labels: Vec<(String, String)> = Vec::new();
    if c.peek() == Some('{') {
        c.bump();
        loop {
            c.skip_blanks();
            if c.peek() == Some('}') {
                c.bump();
                break;
            }
            let label = c.take_ident();
            if label.is_empty() || label.starts_with(|ch: char| ch.is_ascii_digit()) || label.contains(':') {
                return Err(format!(
                    "{name}: expected a label name at {:?}",
                    shorten(c.rest())
                ));
            }
            c.skip_blanks();
            if c.bump() != Some('=') {
                return Err(format!("{name}: expected = after label {label}"));
            }
            c.skip_blanks();
            if c.bump() != Some('"') {
                return Err(format!("{name}: the value of label {label} is not quoted"));
            }
            let value = take_label_value(&mut c).map_err(|e| format!("{name}: label {label}: {e}"))?;
            if labels.iter().any(|(l, _)| l == label) {
                return Err(format!("{name}: label {label} appears twice"));
            }
            labels.push((label.to_string(), value));
            c.skip_blanks();
            match c.bump() {
                Some(',') => {}
                Some('}') => break,
                _ => return Err(format!("{name}: expected , or }} after label {label}")),
            }
        }
        c.skip_blanks();
    } else if !matches!(line[name.len()..].chars().next(), Some(' ' | '\t')) {
        return Err(format!(
            "{:?}: expected a space or {{ after the metric name",
            shorten(line)
        ));
    }
    let value_text = c.take_word();
    if value_text.is_empty() {
        return Err(format!("{name}: no value"));
    }
    let value = parse_value(value_text)
        .ok_or_else(|| format!("{name}: {:?} is not a number", shorten(value_text)))?;
    c.skip_blanks();
    let ts = c.take_word();
    if !ts.is_empty() && ts.parse::<i64>().is_err() {
        return Err(format!("{name}: {:?} is not a timestamp", shorten(ts)));
    }
    c.skip_blanks();
    if !c.rest().is_empty() {
        return Err(format!(
            "{name}: unexpected {:?} after the timestamp",
            shorten(c.rest())
        ));
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// After the opening quote: reads up to the closing quote, resolving escapes.
fn take_label_value(c: &mut Cursor<'_>) -> Result<String, String> {
    let mut out = String::new();
    loop {
        match c.bump() {
            None => return Err("the value has no closing quote".into()),
            Some('"') => return Ok(out),
            Some('\\') => match c.bump() {
                Some('\\') => out.push('\\'),
                Some('"') => out.push('"'),
                Some('n') => out.push('\n'),
                Some(other) => return Err(format!("unknown escape \\{other}")),
                None => return Err("the value ends in a lone backslash".into()),
            },
            Some(ch) => out.push(ch),
        }
    }
}

/// A Go `ParseFloat`-style value: decimal, exponent, `NaN`, `Inf`, `+Inf`, `-Inf`.
fn parse_value(s: &str) -> Option<f64> {
    let unsigned = s.strip_prefix(['+', '-']).unwrap_or(s);
    let special = ["nan", "inf", "infinity"]
        .iter()
        .any(|w| unsigned.eq_ignore_ascii_case(w));
    // Rust also accepts these words; anything else must look like a decimal number
    let decimal = unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && unsigned
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'));
    if !special && !decimal {
        return None;
    }
    s.parse::<f64>().ok()
}

impl Sample {
    /// The reading name of this sample (see the module doc), or `None` when it would be longer
    /// than [`NAME_MAX_LEN`] or the metric name itself is not a valid reading name.
    pub fn reading_name(&self) -> Option<String> {
        let mut name = self.name.clone();
        for (_, v) in &self.labels {
            if v.is_empty() {
                continue;
            }
            name.push('.');
            name.extend(v.chars().map(|c| if is_name_char(c) { c } else { '_' }));
            if name.len() > NAME_MAX_LEN {
                return None;
            }
        }
        validate_name(&name).ok().map(|()| name)
    }
}

/// Samples to readings: flattened names, finite values, first of a name wins. Allow-list and
/// caps are applied by the store.
pub fn samples_to_readings(samples: &[Sample]) -> Vec<Reading> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for s in samples {
        if !s.value.is_finite() {
            continue;
        }
        let Some(name) = s.reading_name() else {
            continue;
        };
        if seen.insert(name.clone()) {
            out.push(Reading::new(name, s.value));
        }
    }
    out
}
#[cfg(test)]
mod tests {
    use super::*;

    const REALISTIC: &str = r#"# HELP vision_items_recognised_total Items recognised since start.
# TYPE vision_items_recognised_total counter
vision_items_recognised_total 1234
# HELP vision_inference_ms Inference time of the last frame.
# TYPE vision_inference_ms gauge
vision_inference_ms{model="yolo \"v8\"",device="cuda:0"} 17.25 1712345678901
vision_camera_fps{camera="front"} 29.5
vision_camera_fps{camera="side"} NaN
vision_confidence_max +Inf
vision_latency_bucket{le="0.5"} 3
vision_latency_bucket{le="+Inf",} 7
vision_path{dir="C:\\temp\nx"} 1
   # a comment with leading blanks

transaction_active	1	-5
errors_total{} 0
# EOF
"#;

    #[test]
    fn a_realistic_prometheus_body_parses_with_labels_escapes_nan_inf_and_timestamps() {
        let samples = parse_prometheus(REALISTIC).unwrap();
        assert_eq!(samples.len(), 10, "{samples:?}");
        assert_eq!(samples[0].name, "vision_items_recognised_total");
        assert_eq!(samples[0].value, 1234.0);
        assert_eq!(
            samples[1].labels,
            vec![
                ("model".to_string(), "yolo \"v8\"".to_string()),
                ("device".to_string(), "cuda:0".to_string())
            ]
        );
        assert_eq!(samples[1].value, 17.25);
        assert!(samples[3].value.is_nan());
        assert_eq!(samples[4].value, f64::INFINITY);
        assert_eq!(samples[6].labels, vec![("le".to_string(), "+Inf".to_string())]);
        assert_eq!(samples[7].labels[0].1, "C:\\temp\nx");
        assert_eq!(samples[8].name, "transaction_active");
        assert_eq!(samples[8].value, 1.0);
        assert!(samples[9].labels.is_empty());
    }

    #[test]
    fn samples_flatten_to_reading_names_and_non_finite_values_are_skipped() {
        let readings = samples_to_readings(&parse_prometheus(REALISTIC).unwrap());
        let names: Vec<&str> = readings.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "vision_items_recognised_total",
                "vision_inference_ms.yolo__v8_.cuda:0",
                "vision_camera_fps.front",
                "vision_latency_bucket.0.5",
                "vision_latency_bucket._Inf",
                "vision_path.C:_temp_x",
                "transaction_active",
                "errors_total",
            ]
        );
        let long = Sample {
            name: "m".into(),
            labels: vec![("l".into(), "x".repeat(70))],
            value: 1.0,
        };
        assert_eq!(long.reading_name(), None);
    }

    #[test]
    fn garbage_is_refused_with_the_line_number() {
        let cases: &[(&str, usize, &str)] = &[
            ("ok 1\nthis is not a metric\n", 2, "not a number"),
            ("# TYPE m gauge\nm{a=\"1} 2\n", 2, "closing quote"),
            ("m 1\n\nm{a=1} 2\n", 3, "not quoted"),
            ("m{a=\"x\\t\"} 1\n", 1, "unknown escape"),
            ("m 1 2 3\n", 1, "after the timestamp"),
            ("m 1 soon\n", 1, "not a timestamp"),
            ("# TYPE m sometimes\n", 1, "unknown type"),
            ("# HELP 9m text\n", 1, "not a metric name"),
            ("m{a=\"1\",a=\"2\"} 1\n", 1, "twice"),
            ("m\n", 1, "expected a space"),
            ("m 0x10\n", 1, "not a number"),
            ("{a=\"1\"} 1\n", 1, "metric name"),
            ("<html><body>502</body></html>\n", 1, "metric name"),
        ];
        for (text, line, what) in cases {
            let err = parse_prometheus(text).unwrap_err();
            assert_eq!(err.line, *line, "{text:?}: {err}");
            assert!(err.to_string().starts_with(&format!("line {line}: ")), "{err}");
            assert!(err.message.contains(what), "{text:?}: {err}");
        }
    }
}
