//! The Prometheus text both binaries serve (`/metrics` of the agent and of the fleet server),
//! in the exposition format 0.0.4.
//!
//! Each binary builds its [`Family`]s from a snapshot of its state at scrape time and hands
//! them to an [`Exposition`], which is a `prometheus-client` [`Collector`]: the crate's
//! encoder writes `# HELP` and `# TYPE` once per family, escapes label values (`\\`, `\"`,
//! `\n`) and help texts, and writes the samples of a family together. This crate adds the
//! rules both binaries share:
//!
//! - A family without samples is left out (a figure nobody measured is not written as 0), and
//!   a second family of the same name is ignored.
//! - In one family, a second sample with the same labels is ignored (Prometheus could not tell
//!   the two apart): the first wins.
//! - A counter's name ends in `_total`, as Prometheus wants it (the crate writes the suffix).
//! - Values are written as Prometheus' own clients write them: integers without a fraction
//!   (`3`, not `3.0`), an `f32` in its own shortest form (`0.1`, not `0.10000000149011612`),
//!   `NaN`, `+Inf` and `-Inf`.

use std::collections::HashSet;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    CounterValueEncoder, DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, GaugeValueEncoder,
    NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Exposition::render`]'s output.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The type of a family, as `# TYPE` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    /// Its name ends in `_total`.
    Counter,
    /// Neither known to count nor to measure (another program's figure).
    Untyped,
}

impl Kind {
    /// `gauge`, `counter`, `untyped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Untyped => "untyped",
        }
    }
}

/// A sample value (see the crate doc for how each is written).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(i64),
    UInt(u64),
    Float(f64),
}

/// Largest integer an `f64` holds exactly: whole floats up to it are written as integers.
const EXACT_INT: f64 = 9_007_199_254_740_992.0;

impl Value {
    /// The value to write: a whole, exactly held float becomes an integer.
    fn normal(self) -> Value {
        match self {
            Value::Float(f) if f.is_finite() && f.fract() == 0.0 && f.abs() <= EXACT_INT => {
                Value::Int(f as i64)
            }
            v => v,
        }
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<f32> for Value {
    fn from(v: f32) -> Self {
        // the f32's shortest decimal, read back as the f64 nearest to it
        Value::Float(v.to_string().parse::<f64>().unwrap_or(f64::from(v)))
    }
}
impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::UInt(v)
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::UInt(u64::from(v))
    }
}
impl From<u8> for Value {
    fn from(v: u8) -> Self {
        Value::UInt(u64::from(v))
    }
}
impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::UInt(v as u64)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::UInt(u64::from(v))
    }
}

impl EncodeGaugeValue for Value {
    fn encode(&self, encoder: &mut GaugeValueEncoder) -> Result<(), std::fmt::Error> {
        match self.normal() {
            Value::Int(i) => EncodeGaugeValue::encode(&i, encoder),
            Value::UInt(u) => EncodeGaugeValue::encode(&u, encoder),
            Value::Float(f) => EncodeGaugeValue::encode(&f, encoder),
        }
    }
}

impl EncodeCounterValue for Value {
    fn encode(&self, encoder: &mut CounterValueEncoder) -> Result<(), std::fmt::Error> {
        match self.normal() {
            Value::Int(i) if i >= 0 => EncodeCounterValue::encode(&(i as u64), encoder),
            Value::Int(i) => EncodeCounterValue::encode(&(i as f64), encoder),
            Value::UInt(u) => EncodeCounterValue::encode(&u, encoder),
            Value::Float(f) => EncodeCounterValue::encode(&f, encoder),
        }
    }
}

type Labels = Vec<(String, String)>;

/// One family being built from a snapshot.
#[derive(Debug, Clone)]
pub struct Family {
    name: String,
    help: String,
    kind: Kind,
    samples: Vec<(Labels, Value)>,
    label_sets: HashSet<Labels>,
}

impl Family {
    pub fn new(name: impl Into<String>, kind: Kind, help: impl Into<String>) -> Self {
        let name = name.into();
        debug_assert!(
            kind != Kind::Counter || name.ends_with("_total"),
            "counter {name} must end in _total"
        );
        Family {
            name,
            help: help.into(),
            kind,
            samples: Vec::new(),
            label_sets: HashSet::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Adds a sample; a second sample with the same labels is ignored.
    pub fn add(&mut self, labels: &[(&str, &str)], value: impl Into<Value>) -> &mut Self {
        let set: Labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if self.label_sets.insert(set.clone()) {
            self.samples.push((set, value.into()));
        }
        self
    }

    /// Adds a sample when there is a value.
    pub fn add_opt(&mut self, labels: &[(&str, &str)], value: Option<impl Into<Value>>) -> &mut Self {
        if let Some(v) = value {
            self.add(labels, v);
        }
        self
    }

    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (name, metric_type) = match self.kind {
            // the encoder writes the suffix of a counter
            Kind::Counter => (
                self.name.strip_suffix("_total").unwrap_or(&self.name),
                MetricType::Counter,
            ),
            Kind::Gauge => (self.name.as_str(), MetricType::Gauge),
            Kind::Untyped => (self.name.as_str(), MetricType::Unknown),
        };
        let mut metric = encoder.encode_descriptor(name, &self.help, None, metric_type)?;
        for (labels, value) in &self.samples {
            let mut sample = metric.encode_family(labels)?;
            match self.kind {
                Kind::Counter => sample.encode_counter::<NoLabelSet, _, u64>(value, None)?,
                Kind::Gauge | Kind::Untyped => sample.encode_gauge(value)?,
            }
        }
        Ok(())
    }
}

/// The exposition could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the Prometheus text could not be written")]
pub struct RenderError;

/// Families in the order they were pushed; a `prometheus-client` [`Collector`].
#[derive(Debug, Default)]
pub struct Exposition {
    families: Vec<Family>,
    names: HashSet<String>,
}

impl Exposition {
    /// Adds a family with at least one sample, once per name.
    pub fn push(&mut self, family: Family) {
        if family.is_empty() || !self.names.insert(family.name.clone()) {
            return;
        }
        self.families.push(family);
    }

    /// A family of one unlabelled sample.
    pub fn one(&mut self, name: &str, kind: Kind, help: &str, value: impl Into<Value>) {
        let mut f = Family::new(name, kind, help);
        f.add(&[], value);
        self.push(f);
    }

    /// A family of one unlabelled sample, when there is a value.
    pub fn one_opt(&mut self, name: &str, kind: Kind, help: &str, value: Option<impl Into<Value>>) {
        if let Some(v) = value {
            self.one(name, kind, help, v);
        }
    }

    /// The text, through `prometheus-client`'s encoder of the format 0.0.4.
    pub fn render(self) -> Result<String, RenderError> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).map_err(|_| RenderError)?;
        Ok(out)
    }
}

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.families {
            f.encode(&mut encoder)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_exposition() -> Exposition {
        let mut x = Exposition::default();
        let mut temp = Family::new("rvm_temperature_celsius", Kind::Gauge, "Temperature by sensor.");
        temp.add(&[("sensor", "cpu \"die\"\\0\nx")], 51.5f64);
        temp.add(&[("sensor", "cpu \"die\"\\0\nx")], 99.0f64);
        temp.add(&[("sensor", "gpu")], 0.1f32);
        x.push(temp);
        x.one(
            "rvm_agent_buffer_acked_total",
            Kind::Counter,
            "Records acknowledged.",
            40u64,
        );
        x.one("rvm_uptime_seconds", Kind::Gauge, "Up.", 3.0f64);
        x.one(
            "rvm_app_fps",
            Kind::Untyped,
            "Vision service metric fps.",
            f64::NAN,
        );
        x.one("rvm_load1", Kind::Gauge, "Load.", f64::INFINITY);
        x.push(Family::new("rvm_never", Kind::Gauge, "Nobody measured it."));
        x.one("rvm_uptime_seconds", Kind::Gauge, "Twice.", 4u64);
        x
    }

    #[test]
    fn families_are_written_once_with_escaped_labels_and_values_as_prometheus_reads_them() {
        let text = build_exposition().render().unwrap();
        assert_eq!(
            text,
            "# HELP rvm_temperature_celsius Temperature by sensor.\n\
             # TYPE rvm_temperature_celsius gauge\n\
             rvm_temperature_celsius{sensor=\"cpu \\\"die\\\"\\\\0\\nx\"} 51.5\n\
             rvm_temperature_celsius{sensor=\"gpu\"} 0.1\n\
             # HELP rvm_agent_buffer_acked_total Records acknowledged.\n\
             # TYPE rvm_agent_buffer_acked_total counter\n\
             rvm_agent_buffer_acked_total 40\n\
             # HELP rvm_uptime_seconds Up.\n\
             # TYPE rvm_uptime_seconds gauge\n\
             rvm_uptime_seconds 3\n\
             # HELP rvm_app_fps Vision service metric fps.\n\
             # TYPE rvm_app_fps untyped\n\
             rvm_app_fps NaN\n\
             # HELP rvm_load1 Load.\n\
             # TYPE rvm_load1 gauge\n\
             rvm_load1 +Inf\n"
        );
    }

    /// How `v` is written as a sample.
    fn written(v: impl Into<Value>) -> String {
        let mut x = Exposition::default();
        x.one("m", Kind::Gauge, "h", v);
        let text = x.render().unwrap();
        text.lines()
            .last()
            .unwrap()
            .strip_prefix("m ")
            .unwrap()
            .to_string()
    }

    #[test]
    fn values_are_written_the_way_prometheus_reads_them() {
        assert_eq!(written(f64::NAN), "NaN");
        assert_eq!(written(f64::INFINITY), "+Inf");
        assert_eq!(written(f64::NEG_INFINITY), "-Inf");
        assert_eq!(written(0.1f32), "0.1");
        assert_eq!(written(1e-7f64).parse::<f64>(), Ok(1e-7));
        assert_eq!(written(u64::MAX), "18446744073709551615");
        assert_eq!(written(true), "1");
    }

    #[test]
    fn whole_floats_are_integers_and_others_keep_their_fraction() {
        assert_eq!(Value::Float(7.0).normal(), Value::Int(7));
        assert_eq!(Value::Float(-2.0).normal(), Value::Int(-2));
        assert_eq!(Value::Float(7.25).normal(), Value::Float(7.25));
        assert_eq!(Value::Float(1e300).normal(), Value::Float(1e300));
        assert_eq!(Value::from(0.1f32), Value::Float(0.1));
        assert_eq!(Value::from(true), Value::UInt(1));
    }

    #[test]
    fn help_texts_with_a_backslash_or_a_newline_are_escaped() {
        let mut x = Exposition::default();
        x.one("m", Kind::Gauge, "a \\ b\nc", 1u64);
        assert_eq!(
            x.render().unwrap(),
            "# HELP m a \\\\ b\\nc\n# TYPE m gauge\nm 1\n"
        );
    }
}
