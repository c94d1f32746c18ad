//! The Prometheus text format (pure): [`parse_prometheus`] reads an exposition with the
//! `prometheus-parse` crate and counts the lines it could not read; [`samples_to_readings`]
//! flattens the samples into reading names (see the module doc of [`crate::appmetrics`]).
//!
//! What the crate reads, and how this module completes it:
//! - `# HELP`, `# TYPE` and any other comment (`# EOF`) are skipped; a sample line is a name,
//!   optional labels, a value (`NaN`, `+Inf` included) and an optional timestamp (dropped: the
//!   agent stamps values when they arrive).
//! - A line that is neither blank, a comment nor a sample with a number for a value is a *bad
//!   line*: it is counted and the first one is reported with its line number, the others'
//!   samples are kept. A body with bad lines and no sample at all (an HTML error page, a wrong
//!   port) is refused as a whole.
//! - Labels come back in label-name order (the crate keeps them in a map; Prometheus itself
//!   orders them by name). An empty label set (`name{} 1`), which the crate does not read, is
//!   read as `name 1`. Label values are unescaped here (`\\`, `\"`, `\n`); a value holding a
//!   comma or `=` is cut there by the crate (its label reader splits on them).
//! - A family typed `histogram` comes back grouped; each bucket becomes a `NAME_bucket` sample
//!   with its `le` label last, as it was written. A `summary`'s quantiles likewise keep their
//!   `quantile` label last.

use std::collections::HashSet;

use common::Reading;
use prometheus_parse::{LineInfo, Scrape, Value};

use super::names::{NAME_MAX_LEN, is_name_char, shorten, validate_name};

/// One sample of the Prometheus text format, labels in label-name order (`le` and `quantile`
/// last).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// A line that is not Prometheus text; `line` counts from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    pub line: usize,
    /// At most 80 characters of it.
    pub text: String,
}

impl std::fmt::Display for BadLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {:?} is not a metric sample", self.line, self.text)
    }
}

/// What a body held: its samples and the lines that were not Prometheus text.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Parsed {
    pub samples: Vec<Sample>,
    pub bad_lines: usize,
    /// The first bad line, when there is one.
    pub first_bad: Option<BadLine>,
}

/// Why a body was refused: bad lines and no sample.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{first} ({bad_lines} such lines and no sample: not a Prometheus text body)")]
pub struct ParseError {
    pub first: BadLine,
    pub bad_lines: usize,
}

impl ParseError {
    /// The line number of the first bad line.
    pub fn line(&self) -> usize {
        self.first.line
    }
}

/// Reads a Prometheus text exposition (format 0.0.4) as the module doc says.
pub fn parse_prometheus(text: &str) -> Result<Parsed, ParseError> {
    let mut bad_lines = 0;
    let mut first_bad = None;
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = without_empty_label_set(raw);
        if !is_readable(&line) {
            bad_lines += 1;
            first_bad.get_or_insert_with(|| BadLine {
                line: i + 1,
                text: shorten(raw.trim()),
            });
        }
        lines.push(line);
    }
    // the crate fails only where the lines' iterator does, and these lines are in memory
    let scrape = Scrape::parse(lines.into_iter().map(Ok)).unwrap_or_else(|_| Scrape {
        docs: Default::default(),
        samples: Vec::new(),
    });
    let samples = to_samples(scrape);
    if samples.is_empty()
        && let Some(first) = first_bad
    {
        return Err(ParseError { first, bad_lines });
    }
    Ok(Parsed {
        samples,
        bad_lines,
        first_bad,
    })
}

/// Blank, a comment, or a sample the crate reads with a number for a value.
fn is_readable(line: &str) -> bool {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return true;
    }
    match LineInfo::parse(trimmed) {
        LineInfo::Sample { value, .. } => parse_value(value).is_some(),
        _ => false,
    }
}

/// `name{} 1` -> `name 1`: the crate does not read an empty label set.
fn without_empty_label_set(line: &str) -> String {
    let start = line.len() - line.trim_start().len();
    let rest = &line[start..];
    let name_len = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(rest.len());
    match rest[name_len..].strip_prefix("{}") {
        Some(after) if name_len > 0 => format!("{}{}{after}", &line[..start], &rest[..name_len]),
        _ => line.to_string(),
    }
}

/// A Go `ParseFloat`-style value, as the crate reads it: decimal, exponent, `NaN`, `±Inf`.
fn parse_value(s: &str) -> Option<f64> {
    if s.eq_ignore_ascii_case("nan") {
        return Some(f64::NAN);
    }
    s.parse::<f64>().ok()
}

/// The crate's samples, labels ordered and unescaped, histograms and summaries unfolded.
fn to_samples(scrape: Scrape) -> Vec<Sample> {
    let mut plain = Vec::new();
    let mut grouped = Vec::new();
    for s in scrape.samples {
        let mut labels: Vec<(String, String)> =
            s.labels.iter().map(|(k, v)| (k.clone(), unescape(v))).collect();
        labels.sort();
        match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => plain.push(Sample {
                name: s.metric,
                labels,
                value: v,
            }),
            Value::Histogram(buckets) => {
                for b in buckets {
                    let mut labels = labels.clone();
                    labels.push(("le".into(), go_float(b.less_than)));
                    grouped.push(Sample {
                        name: format!("{}_bucket", s.metric),
                        labels,
                        value: b.count,
                    });
                }
            }
            Value::Summary(quantiles) => {
                for q in quantiles {
                    let mut labels = labels.clone();
                    labels.push(("quantile".into(), go_float(q.quantile)));
                    grouped.push(Sample {
                        name: s.metric.clone(),
                        labels,
                        value: q.count,
                    });
                }
            }
        }
    }
    // the crate hands grouped families back in no particular order: order them by name and
    // labels, keeping each family's buckets as written (a stable sort, `le` / `quantile` aside)
    let family = |s: &Sample| (s.name.clone(), s.labels[..s.labels.len() - 1].to_vec());
    grouped.sort_by_key(family);
    plain.extend(grouped);
    plain
}

/// A bound as Prometheus writes it: `+Inf`, `0.5`, `1`.
fn go_float(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        v.to_string()
    }
}

/// Resolves `\\`, `\"` and `\n` in a label value the crate cut out of its quotes. The crate
/// strips every trailing `"`, so a value that ended in an escaped quote comes back ending in a
/// lone backslash: that quote is put back.
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            // the lone backslash of an escaped closing quote
            None => out.push('"'),
        }
    }
    out
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
        let parsed = parse_prometheus(REALISTIC).unwrap();
        assert_eq!((parsed.bad_lines, parsed.first_bad.clone()), (0, None));
        let samples = parsed.samples;
        assert_eq!(samples.len(), 10, "{samples:?}");
        assert_eq!(samples[0].name, "vision_items_recognised_total");
        assert_eq!(samples[0].value, 1234.0);
        // labels in label-name order
        assert_eq!(
            samples[1].labels,
            vec![
                ("device".to_string(), "cuda:0".to_string()),
                ("model".to_string(), "yolo \"v8\"".to_string())
            ]
        );
        assert_eq!(samples[1].value, 17.25);
        assert!(samples[3].value.is_nan());
        assert_eq!(samples[4].value, f64::INFINITY);
        assert_eq!(samples[6].labels, vec![("le".to_string(), "+Inf".to_string())]);
        assert_eq!(samples[7].labels[0].1, "C:\\temp\nx");
        assert_eq!(samples[8].name, "transaction_active");
        assert_eq!(samples[8].value, 1.0);
        assert_eq!(samples[9].name, "errors_total");
        assert!(samples[9].labels.is_empty());
    }

    #[test]
    fn samples_flatten_to_reading_names_and_non_finite_values_are_skipped() {
        let readings = samples_to_readings(&parse_prometheus(REALISTIC).unwrap().samples);
        let names: Vec<&str> = readings.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "vision_items_recognised_total",
                "vision_inference_ms.cuda:0.yolo__v8_",
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
    fn a_typed_histogram_and_summary_unfold_into_one_sample_per_bucket_and_quantile() {
        let text = "# TYPE lat histogram\nlat_bucket{stage=\"io\",le=\"0.5\"} 3\n\
                    lat_bucket{stage=\"io\",le=\"+Inf\"} 7\nlat_sum{stage=\"io\"} 2.5\n\
                    lat_count{stage=\"io\"} 7\n# TYPE q summary\nq{quantile=\"0.9\"} 12\n";
        let readings = samples_to_readings(&parse_prometheus(text).unwrap().samples);
        let got: Vec<(&str, f64)> = readings.iter().map(|r| (r.name.as_str(), r.value)).collect();
        assert_eq!(
            got,
            vec![
                ("lat_sum.io", 2.5),
                ("lat_count.io", 7.0),
                ("lat_bucket.io.0.5", 3.0),
                ("lat_bucket.io._Inf", 7.0),
                ("q.0.9", 12.0),
            ]
        );
    }

    #[test]
    fn bad_lines_are_counted_and_a_body_of_nothing_else_is_refused_with_the_line_number() {
        let cases: &[(&str, usize, usize, usize)] = &[
            // (body, samples kept, bad lines, first bad line)
            ("ok 1\nthis is not a metric\n", 1, 1, 2),
            ("m 1\n\nm 0x10\n{a=\"1\"} 1\nn 2\n", 2, 2, 3),
            ("# TYPE m gauge\nm{a=\"1\"} soon\nm 1\n", 1, 1, 2),
        ];
        for (text, samples, bad, line) in cases {
            let p = parse_prometheus(text).unwrap();
            assert_eq!(p.samples.len(), *samples, "{text:?}: {p:?}");
            assert_eq!(p.bad_lines, *bad, "{text:?}");
            let first = p.first_bad.unwrap();
            assert_eq!(first.line, *line, "{text:?}");
            assert!(
                first.to_string().starts_with(&format!("line {line}: ")),
                "{first}"
            );
        }
        let err = parse_prometheus("<html><body>502</body></html>\n<p>bad gateway</p>\n").unwrap_err();
        assert_eq!((err.line(), err.bad_lines), (1, 2));
        assert!(err.to_string().starts_with("line 1: "), "{err}");
        assert!(err.to_string().contains("not a Prometheus text body"), "{err}");
        // nothing at all is no error: the service has no metrics yet
        assert_eq!(parse_prometheus("# EOF\n"), Ok(Parsed::default()));
    }
}
