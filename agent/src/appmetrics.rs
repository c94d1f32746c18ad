//! Application metrics of the vision service: the `[app]` config, the push schema, a Prometheus
//! text parser, the scrape client, and the store both sources land in.
//!
//! The vision service reports its own figures (items recognised, rejected, inference ms, camera
//! fps, detection confidence, errors, `transaction_active`) in two ways, either or both:
//!
//! - **push**: it POSTs JSON to the agent's local HTTP endpoint ([`crate::http`]), parsed by
//!   [`parse_push`]: `{"metrics": {"items_recognised": 1234, "camera_fps": 29.5}}` or the flat
//!   `{"items_recognised": 1234, "camera_fps": 29.5}`. Values are finite JSON numbers, names
//!   match `[A-Za-z0-9_.:-]{1,64}`, at most `max_metrics` per body. A bad body is refused as a
//!   whole with a [`PushError`] naming the bad field.
//! - **scrape**: the agent GETs a Prometheus text endpoint of the service ([`scrape`], blocking:
//!   run it on a blocking thread), parsed by [`parse_prometheus`] and flattened by
//!   [`samples_to_readings`].
//!
//! Both land in one [`AppMetricsStore`], which the collector reads with
//! [`AppMetricsStore::snapshot`] into `Telemetry.app` every tick. The store and the parsers do no
//! IO and take the time as an argument.
//!
//! # Flattening a Prometheus sample into a reading name
//!
//! A sample without labels keeps its name: `camera_fps 29.5` -> `camera_fps`. A sample with
//! labels gets the label *values* appended with `.`, in the order they were written, empty
//! values skipped: `errors_total{kind="camera",stage="io"} 3` -> `errors_total.camera.io`.
//! Characters of a label value outside `[A-Za-z0-9_.:-]` become `_`. A flattened name longer
//! than 64 characters is skipped (truncating could merge two series), as are non-finite values
//! (`NaN`, `+Inf`: telemetry carries no made-up numbers), and a name seen twice keeps its first
//! value. The allow-list (`names`) matches either the flattened name or the sample's own name,
//! so `names = ["camera_fps"]` keeps every `camera_fps.*` series.
//!
//! # Freshness
//!
//! Each value carries the time it arrived. [`AppMetricsStore::snapshot`] merges both sources per
//! name, the fresher value winning (a push wins a tie), and drops values that are too old:
//! pushed values after `push_max_age_s`, scraped ones after the longer of `push_max_age_s` and
//! three scrape intervals (so one failed scrape does not blank the figures). An old value is
//! dropped, never reported as if it were current. At most `max_metrics` names are kept: a push
//! that brings new names evicts the oldest ones, and a snapshot keeps the freshest.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::Reading;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::shared::http1::{HTTP_MAX_HEAD, parse_http_url, parse_status_line};
use crate::shared::problem::ConfigProblem;

/// Longest application metric name.
pub const NAME_MAX_LEN: usize = 64;
/// Most bytes of a scraped body (after de-chunking).
pub const SCRAPE_MAX_BODY: usize = 1 << 20;
/// Longest chunk-size line accepted in a chunked body.
const CHUNK_LINE_MAX: usize = 1024;
/// A scraped value outlives this many scrape intervals (see the module doc).
const SCRAPE_INTERVALS_KEPT: i64 = 3;

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

/// The `[app]` section of `agent.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppMetricsConfig {
    /// Prometheus text endpoint of the vision service (`http://` only); unset = no scraping.
    #[serde(default)]
    pub scrape_url: Option<String>,
    #[serde(default = "default_scrape_interval_ms")]
    pub scrape_interval_ms: u64,
    #[serde(default = "default_scrape_timeout_ms")]
    pub scrape_timeout_ms: u64,
    /// Pushed values older than this are dropped from telemetry.
    #[serde(default = "default_push_max_age_s")]
    pub push_max_age_s: u64,
    /// Allow-list of metric names; empty = all.
    #[serde(default)]
    pub names: Vec<String>,
    /// Most metrics in one push, and most names kept.
    #[serde(default = "default_max_metrics")]
    pub max_metrics: usize,
}

impl Default for AppMetricsConfig {
    fn default() -> Self {
        Self {
            scrape_url: None,
            scrape_interval_ms: default_scrape_interval_ms(),
            scrape_timeout_ms: default_scrape_timeout_ms(),
            push_max_age_s: default_push_max_age_s(),
            names: Vec::new(),
            max_metrics: default_max_metrics(),
        }
    }
}

fn default_scrape_interval_ms() -> u64 {
    5000
}
fn default_scrape_timeout_ms() -> u64 {
    1000
}
fn default_push_max_age_s() -> u64 {
    30
}
fn default_max_metrics() -> usize {
    64
}

impl AppMetricsConfig {
    /// Every problem, each with its key path under `prefix` (`app`).
    pub fn validate(&self, prefix: &str) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        let mut bad = |key: String, message: String| p.push(ConfigProblem { key, message });
        if let Some(url) = &self.scrape_url
            && let Err(e) = parse_http_url(url)
        {
            bad(format!("{prefix}.scrape_url"), e);
        }
        if !(100..=3_600_000).contains(&self.scrape_interval_ms) {
            bad(
                format!("{prefix}.scrape_interval_ms"),
                format!("{} is outside 100..=3600000", self.scrape_interval_ms),
            );
        }
        if !(10..=60_000).contains(&self.scrape_timeout_ms) {
            bad(
                format!("{prefix}.scrape_timeout_ms"),
                format!("{} is outside 10..=60000", self.scrape_timeout_ms),
            );
        } else if self.scrape_timeout_ms > self.scrape_interval_ms {
            bad(
                format!("{prefix}.scrape_timeout_ms"),
                format!(
                    "{} is longer than scrape_interval_ms ({})",
                    self.scrape_timeout_ms, self.scrape_interval_ms
                ),
            );
        }
        if !(1..=86_400).contains(&self.push_max_age_s) {
            bad(
                format!("{prefix}.push_max_age_s"),
                format!("{} is outside 1..=86400", self.push_max_age_s),
            );
        }
        if !(1..=1024).contains(&self.max_metrics) {
            bad(
                format!("{prefix}.max_metrics"),
                format!("{} is outside 1..=1024", self.max_metrics),
            );
        }
        let mut seen = HashSet::new();
        for (i, name) in self.names.iter().enumerate() {
            let key = format!("{prefix}.names[{i}]");
            if let Err(e) = validate_name(name) {
                bad(key, e);
            } else if !seen.insert(name) {
                bad(key, format!("{name:?} is listed twice"));
            }
        }
        p
    }
}

/// Checks `[A-Za-z0-9_.:-]{1,64}`; the error says what is wrong.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > NAME_MAX_LEN {
        return Err(format!(
            "{:?} is {} bytes long, at most {NAME_MAX_LEN} are allowed",
            shorten(name),
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|c| !is_name_char(*c)) {
        return Err(format!(
            "{:?} has the character {c:?}, outside [A-Za-z0-9_.:-]",
            shorten(name)
        ));
    }
    Ok(())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')
}

/// At most 80 characters of something quoted in an error.
fn shorten(s: &str) -> String {
    s.chars().take(80).collect()
}

// ---------------------------------------------------------------------------------------------
// Prometheus text format (pure)
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Push schema (pure)
// ---------------------------------------------------------------------------------------------

/// Why a pushed body was refused. `field` is the JSON path of the bad field (`camera_fps`,
/// `metrics.camera_fps`) when one is to blame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PushError {
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "field {field:?}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for PushError {}

/// Parses a pushed body: `{"metrics": {NAME: NUMBER, ...}}` or `{NAME: NUMBER, ...}`, at most
/// `max_metrics` entries, every name valid, every value a finite number, no name twice.
pub fn parse_push(body: &[u8], max_metrics: usize) -> Result<Vec<Reading>, PushError> {
    let bad_field = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(body);
    let result = TopSeed {
        bad: &bad_field,
        max: max_metrics,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v));
    result.map_err(|e| PushError {
        field: bad_field.into_inner(),
        message: e.to_string(),
    })
}

const PUSH_EXPECTING: &str = "a JSON object of metric names and numbers, or {\"metrics\": {...}} holding one";

struct TopSeed<'a> {
    bad: &'a RefCell<Option<String>>,
    max: usize,
}

impl<'de> DeserializeSeed<'de> for TopSeed<'_> {
    type Value = Vec<Reading>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopSeed<'_> {
    type Value = Vec<Reading>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PUSH_EXPECTING)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut acc = Entries {
            bad: self.bad,
            max: self.max,
            out: Vec::new(),
            seen: HashSet::new(),
        };
        let mut wrapped = false;
        let mut first_flat: Option<String> = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "metrics" && !wrapped {
                let value = map.next_value_seed(MetricsValue { acc: &mut acc });
                match value {
                    // a metric called `metrics`, in the flat shape
                    Ok(Some(v)) => {
                        acc.add(&key, v)?;
                        first_flat.get_or_insert(key);
                    }
                    Ok(None) => wrapped = true,
                    Err(e) => {
                        acc.blame(&key);
                        return Err(e);
                    }
                }
            } else {
                let v = match map.next_value_seed(Number) {
                    Ok(v) => v,
                    Err(e) => {
                        acc.blame(&key);
                        return Err(e);
                    }
                };
                acc.add(&key, v)?;
                first_flat.get_or_insert(key);
            }
            if wrapped && let Some(flat) = &first_flat {
                acc.blame(flat);
                return Err(de::Error::custom(
                    "a body with \"metrics\": {...} must hold every metric inside it",
                ));
            }
        }
        Ok(acc.out)
    }
}

/// What has been read so far, and the checks every entry passes.
struct Entries<'a> {
    bad: &'a RefCell<Option<String>>,
    max: usize,
    out: Vec<Reading>,
    seen: HashSet<String>,
}

impl Entries<'_> {
    fn blame(&self, field: &str) {
        // keep the innermost path when a nested entry already named itself
        let mut bad = self.bad.borrow_mut();
        if bad.is_none() {
            *bad = Some(shorten(field));
        }
    }

    fn add<E: de::Error>(&mut self, name: &str, value: f64) -> Result<(), E> {
        if let Err(e) = validate_name(name) {
            self.blame(name);
            return Err(E::custom(format!("bad metric name: {e}")));
        }
        if !value.is_finite() {
            self.blame(name);
            return Err(E::custom("the value is not a finite number"));
        }
        if !self.seen.insert(name.to_string()) {
            self.blame(name);
            return Err(E::custom("the name appears twice"));
        }
        if self.out.len() >= self.max {
            self.blame(name);
            return Err(E::custom(format!(
                "more than {} metrics in one push (max_metrics)",
                self.max
            )));
        }
        self.out.push(Reading::new(name, value));
        Ok(())
    }
}

/// The value of a top-level `metrics` key: an object of metrics (read into `acc`, `None`
/// returned) or a number (a metric of that name, returned).
struct MetricsValue<'a, 'b> {
    acc: &'a mut Entries<'b>,
}

impl<'de> DeserializeSeed<'de> for MetricsValue<'_, '_> {
    type Value = Option<f64>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MetricsValue<'_, '_> {
    type Value = Option<f64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of metric names and numbers")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(v as f64))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(v as f64))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            let path = format!("metrics.{key}");
            let v = match map.next_value_seed(Number) {
                Ok(v) => v,
                Err(e) => {
                    self.acc.blame(&path);
                    return Err(e);
                }
            };
            if let Err(e) = self.acc.add::<A::Error>(&key, v) {
                // `add` blamed the bare name; the path is more useful here
                *self.acc.bad.borrow_mut() = Some(shorten(&path));
                return Err(e);
            }
        }
        Ok(None)
    }
}

/// A finite JSON number.
struct Number;

impl<'de> DeserializeSeed<'de> for Number {
    type Value = f64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Number {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a finite number")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        Ok(v as f64)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        if v.is_finite() {
            Ok(v)
        } else {
            Err(E::custom("the value is not a finite number"))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Store (pure, thread-safe)
// ---------------------------------------------------------------------------------------------

/// Counters for `/api/v1/status` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AppMetricsCounters {
    pub pushes_accepted: u64,
    pub pushes_rejected: u64,
    pub scrapes_ok: u64,
    pub scrapes_failed: u64,
    pub last_push_ms: Option<i64>,
    pub last_push_error: Option<String>,
    pub last_scrape_ms: Option<i64>,
    pub last_scrape_error: Option<String>,
}

/// What became of a valid push: metrics kept, and metrics ignored because the allow-list
/// (`names`) does not name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PushOutcome {
    pub accepted: usize,
    pub ignored: usize,
}

#[derive(Debug, Clone, Copy)]
struct Stamped {
    value: f64,
    at_ms: i64,
}

#[derive(Debug, Default)]
struct StoreInner {
    pushed: HashMap<String, Stamped>,
    scraped: HashMap<String, Stamped>,
    counters: AppMetricsCounters,
}

/// Latest application metrics from both sources. Share it as `Arc<AppMetricsStore>`; every
/// method takes the time (any millisecond clock, the same one for every call).
#[derive(Debug)]
pub struct AppMetricsStore {
    allow: HashSet<String>,
    max_metrics: usize,
    push_max_age_ms: i64,
    scrape_max_age_ms: i64,
    inner: Mutex<StoreInner>,
}

impl AppMetricsStore {
    pub fn new(cfg: &AppMetricsConfig) -> Self {
        let push_max_age_ms = (cfg.push_max_age_s as i64).saturating_mul(1000);
        let scrape_max_age_ms =
            push_max_age_ms.max((cfg.scrape_interval_ms as i64).saturating_mul(SCRAPE_INTERVALS_KEPT));
        Self {
            allow: cfg.names.iter().cloned().collect(),
            max_metrics: cfg.max_metrics.max(1),
            push_max_age_ms,
            scrape_max_age_ms,
            inner: Mutex::new(StoreInner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, StoreInner> {
        // the data stays consistent at every step, so a poisoned lock is still usable
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The allow-list test: the flattened name, or its metric name (the part before the first
    /// `.`).
    fn allowed(&self, name: &str) -> bool {
        self.allow.is_empty()
            || self.allow.contains(name)
            || name
                .split_once('.')
                .is_some_and(|(base, _)| self.allow.contains(base))
    }

    /// Keeps `values` (already validated, e.g. by [`parse_push`]) as pushed at `now_ms`; names
    /// outside the allow-list, invalid names and non-finite values are ignored. Returns how many
    /// were kept.
    pub fn push(&self, values: Vec<Reading>, now_ms: i64) -> usize {
        let mut inner = self.lock();
        let mut kept = 0;
        for r in values {
            if r.value.is_finite() && validate_name(&r.name).is_ok() && self.allowed(&r.name) {
                inner.pushed.insert(
                    r.name,
                    Stamped {
                        value: r.value,
                        at_ms: now_ms,
                    },
                );
                kept += 1;
            }
        }
        evict_oldest(&mut inner.pushed, self.max_metrics);
        inner.counters.pushes_accepted += 1;
        inner.counters.last_push_ms = Some(now_ms);
        kept
    }

    /// Parses and keeps a pushed body; counts it as accepted or rejected.
    pub fn push_json(&self, body: &[u8], now_ms: i64) -> Result<PushOutcome, PushError> {
        match parse_push(body, self.max_metrics) {
            Ok(values) => {
                let total = values.len();
                let accepted = self.push(values, now_ms);
                Ok(PushOutcome {
                    accepted,
                    ignored: total - accepted,
                })
            }
            Err(e) => {
                self.record_rejected_push(&e.to_string());
                Err(e)
            }
        }
    }

    /// Counts a push refused before it could be parsed (e.g. too large).
    pub fn record_rejected_push(&self, why: &str) {
        let mut inner = self.lock();
        inner.counters.pushes_rejected += 1;
        inner.counters.last_push_error = Some(shorten(why));
    }

    /// Replaces the scraped values with `values`, taken at `now_ms` (allow-list and cap
    /// applied, first of a name wins); counts a good scrape.
    pub fn set_scraped(&self, values: Vec<Reading>, now_ms: i64) {
        let mut scraped = HashMap::new();
        for r in values {
            if scraped.len() >= self.max_metrics {
                break;
            }
            if r.value.is_finite() && validate_name(&r.name).is_ok() && self.allowed(&r.name) {
                scraped.entry(r.name).or_insert(Stamped {
                    value: r.value,
                    at_ms: now_ms,
                });
            }
        }
        let mut inner = self.lock();
        inner.scraped = scraped;
        inner.counters.scrapes_ok += 1;
        inner.counters.last_scrape_ms = Some(now_ms);
        inner.counters.last_scrape_error = None;
    }

    /// Counts a failed scrape; the previous values stay until they age out.
    pub fn scrape_failed(&self, error: &str, now_ms: i64) {
        let mut inner = self.lock();
        inner.counters.scrapes_failed += 1;
        inner.counters.last_scrape_ms = Some(now_ms);
        inner.counters.last_scrape_error = Some(shorten(error));
    }

    /// Both sources merged (the fresher value per name wins, a push wins a tie), aged-out values
    /// dropped, at most `max_metrics` (the freshest), sorted by name.
    pub fn snapshot(&self, now_ms: i64) -> Vec<Reading> {
        let inner = self.lock();
        let mut merged: HashMap<&str, Stamped> = HashMap::new();
        let fresh = |s: &Stamped, max_age: i64| now_ms.saturating_sub(s.at_ms) <= max_age;
        for (name, s) in &inner.scraped {
            if fresh(s, self.scrape_max_age_ms) {
                merged.insert(name, *s);
            }
        }
        for (name, s) in &inner.pushed {
            if fresh(s, self.push_max_age_ms) {
                match merged.get(name.as_str()) {
                    Some(old) if old.at_ms > s.at_ms => {}
                    _ => {
                        merged.insert(name, *s);
                    }
                }
            }
        }
        let mut out: Vec<(&str, Stamped)> = merged.into_iter().collect();
        if out.len() > self.max_metrics {
            out.sort_by(|a, b| b.1.at_ms.cmp(&a.1.at_ms).then(a.0.cmp(b.0)));
            out.truncate(self.max_metrics);
        }
        out.sort_by(|a, b| a.0.cmp(b.0));
        out.into_iter()
            .map(|(name, s)| Reading::new(name, s.value))
            .collect()
    }

    pub fn counters(&self) -> AppMetricsCounters {
        self.lock().counters.clone()
    }
}

/// Drops the oldest entries (ties: the smallest name first) until at most `max` remain.
fn evict_oldest(map: &mut HashMap<String, Stamped>, max: usize) {
    if map.len() <= max {
        return;
    }
    let mut by_age: Vec<(i64, String)> = map.iter().map(|(k, s)| (s.at_ms, k.clone())).collect();
    by_age.sort();
    let excess = map.len() - max;
    for (_, name) in by_age.into_iter().take(excess) {
        map.remove(&name);
    }
}

// ---------------------------------------------------------------------------------------------
// Scrape (blocking IO)
// ---------------------------------------------------------------------------------------------

/// GETs `url` (a Prometheus text endpoint, `http://` only) within `timeout` and returns its
/// samples as readings (see the module doc). Blocking: call it from a blocking thread.
pub fn scrape(url: &str, timeout: Duration) -> Result<Vec<Reading>, String> {
    let body = http_get_body(url, timeout, SCRAPE_MAX_BODY)?;
    let text = std::str::from_utf8(&body).map_err(|e| format!("{url}: the body is not UTF-8: {e}"))?;
    let samples = parse_prometheus(text).map_err(|e| format!("{url}: {e}"))?;
    Ok(samples_to_readings(&samples))
}

/// What the response head says about the body.
#[derive(Debug, Clone, PartialEq)]
struct Head {
    status: u16,
    content_length: Option<usize>,
    chunked: bool,
}

fn parse_head(head: &[u8]) -> Result<Head, String> {
    let text = std::str::from_utf8(head).map_err(|_| "the response head is not UTF-8".to_string())?;
    let mut lines = text.split("\r\n");
    let status = parse_status_line(lines.next().unwrap_or("").as_bytes())?;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("bad header line {:?}", shorten(line)));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value
                .parse()
                .map_err(|_| format!("bad Content-Length {:?}", shorten(value)))?;
            if content_length.is_some_and(|old| old != n) {
                return Err("two different Content-Length headers".into());
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            for coding in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                if coding.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                } else {
                    return Err(format!("transfer encoding {coding:?} is not supported"));
                }
            }
        } else if name.eq_ignore_ascii_case("content-encoding") && !value.eq_ignore_ascii_case("identity") {
            return Err(format!("content encoding {:?} is not supported", shorten(value)));
        }
    }
    Ok(Head {
        status,
        content_length,
        chunked,
    })
}

/// Decodes a chunked body: `Ok(None)` while incomplete, the body once the last chunk and the
/// trailers are in, an error when malformed or larger than `max`.
fn decode_chunked(raw: &[u8], max: usize) -> Result<Option<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    let line_at = |pos: usize| -> Result<Option<(&[u8], usize)>, String> {
        let rest = &raw[pos..];
        match rest.windows(2).position(|w| w == b"\r\n") {
            Some(end) => Ok(Some((&rest[..end], pos + end + 2))),
            None if rest.len() > CHUNK_LINE_MAX => {
                Err(format!("a chunk line is longer than {CHUNK_LINE_MAX} bytes"))
            }
            None => Ok(None),
        }
    };
    loop {
        let Some((line, next)) = line_at(pos)? else {
            return Ok(None);
        };
        let line = String::from_utf8_lossy(line);
        let size_text = line.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {:?}", shorten(size_text)))?;
        pos = next;
        if size == 0 {
            // trailers, then an empty line
            loop {
                let Some((trailer, next)) = line_at(pos)? else {
                    return Ok(None);
                };
                pos = next;
                if trailer.is_empty() {
                    return Ok(Some(out));
                }
            }
        }
        if size > max.saturating_sub(out.len()) {
            return Err(format!("the body is larger than {max} bytes"));
        }
        if raw.len() < pos + size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&raw[pos..pos + size]);
        if &raw[pos + size..pos + size + 2] != b"\r\n" {
            return Err("a chunk is not followed by CRLF".into());
        }
        pos += size + 2;
    }
}

/// A blocking HTTP/1.1 `GET` that returns the body of a 200 response, at most `max_body` bytes,
/// all within `timeout`.
fn http_get_body(url: &str, timeout: Duration, max_body: usize) -> Result<Vec<u8>, String> {
    let (host, port, path) = parse_http_url(url)?;
    let deadline = Instant::now() + timeout;
    let remaining = || deadline.saturating_duration_since(Instant::now());
    let timed_out = |what: &str| format!("timed out after {} ms {what}", timeout.as_millis());
    let addrs: Vec<_> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let mut last_err = format!("{host} resolved to no address");
    let mut stream = None;
    for addr in addrs {
        if remaining().is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, remaining()) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_err = format!("connect {addr}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last_err)?;
    let host_header = match (host.contains(':'), port) {
        (true, 80) => format!("[{host}]"),
        (true, p) => format!("[{host}]:{p}"),
        (false, 80) => host.clone(),
        (false, p) => format!("{host}:{p}"),
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: rvm-agent\r\n\
         Accept: text/plain;version=0.0.4;q=1,*/*;q=0.1\r\nConnection: close\r\n\r\n"
    );
    let left = |what: &str| -> Result<Duration, String> {
        let r = remaining();
        if r.is_zero() { Err(timed_out(what)) } else { Ok(r) }
    };
    stream
        .set_write_timeout(Some(left("before sending")?))
        .map_err(|e| format!("socket: {e}"))?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send request: {e}"))?;

    // Reads more into `buf`; Ok(false) at the end of the stream.
    let mut read_more = |buf: &mut Vec<u8>| -> Result<bool, String> {
        let mut chunk = [0u8; 8192];
        loop {
            stream
                .set_read_timeout(Some(left("waiting for the response")?))
                .map_err(|e| format!("socket: {e}"))?;
            match stream.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(timed_out("waiting for the response"));
                }
                Err(e) => return Err(format!("read response: {e}")),
            }
        }
    };

    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() >= HTTP_MAX_HEAD {
            return Err(format!(
                "no end of the response head in the first {HTTP_MAX_HEAD} bytes"
            ));
        }
        if !read_more(&mut buf)? {
            return Err(if buf.is_empty() {
                "connection closed without a response".into()
            } else {
                "connection closed inside the response head".into()
            });
        }
    };
    let head = parse_head(&buf[..head_end])?;
    if head.status != 200 {
        return Err(format!("status {} from {url}", head.status));
    }
    let mut body = buf.split_off(head_end + 4);
    if head.chunked {
        // the chunk framing may add a little to the body size
        let raw_max = max_body + max_body / 8 + 4096;
        loop {
            if let Some(decoded) = decode_chunked(&body, max_body)? {
                return Ok(decoded);
            }
            if body.len() > raw_max {
                return Err(format!("the body is larger than {max_body} bytes"));
            }
            if !read_more(&mut body)? {
                return Err("connection closed inside a chunked body".into());
            }
        }
    }
    if let Some(len) = head.content_length {
        if len > max_body {
            return Err(format!("the body is {len} bytes, more than {max_body}"));
        }
        while body.len() < len {
            if !read_more(&mut body)? {
                return Err(format!("connection closed after {} of {len} bytes", body.len()));
            }
        }
        body.truncate(len);
        return Ok(body);
    }
    // no framing: the body ends when the server closes
    loop {
        if body.len() > max_body {
            return Err(format!("the body is larger than {max_body} bytes"));
        }
        if !read_more(&mut body)? {
            return Ok(body);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;
    use std::sync::Arc;

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

    #[test]
    fn a_flat_push_and_a_wrapped_push_are_both_accepted() {
        let flat = parse_push(
            br#"{"items_recognised": 1234, "camera_fps": 29.5, "transaction_active": 0}"#,
            64,
        )
        .unwrap();
        let wrapped = parse_push(
            br#"{"metrics": {"items_recognised": 1234, "camera_fps": 29.5, "transaction_active": 0}}"#,
            64,
        )
        .unwrap();
        assert_eq!(flat, wrapped);
        assert_eq!(flat[1], Reading::new("camera_fps", 29.5));
        assert_eq!(
            parse_push(br#"{"metrics": 3}"#, 64).unwrap(),
            vec![Reading::new("metrics", 3.0)]
        );
        assert_eq!(parse_push(b" {} ", 64).unwrap(), vec![]);
        assert_eq!(
            parse_push(br#"{"a.b:c-d_e": -1e3}"#, 64).unwrap(),
            vec![Reading::new("a.b:c-d_e", -1000.0)]
        );
    }

    #[test]
    fn a_bad_push_is_refused_naming_the_bad_field() {
        let long = "x".repeat(65);
        let cases: Vec<(Vec<u8>, Option<&str>, &str)> = vec![
            (
                br#"{"camera_fps": "29.5"}"#.to_vec(),
                Some("camera_fps"),
                "string",
            ),
            (
                br#"{"metrics": {"ok": 1, "camera_fps": "fast"}}"#.to_vec(),
                Some("metrics.camera_fps"),
                "string",
            ),
            (
                br#"{"ok": 1, "confidence": 1e999}"#.to_vec(),
                Some("confidence"),
                "out of range",
            ),
            (
                br#"{"metrics": {"confidence": -1e400}}"#.to_vec(),
                Some("metrics.confidence"),
                "out of range",
            ),
            (
                br#"{"bad name": 1}"#.to_vec(),
                Some("bad name"),
                "outside [A-Za-z0-9_.:-]",
            ),
            (
                br#"{"metrics": {"bad/name": 1}}"#.to_vec(),
                Some("metrics.bad/name"),
                "outside",
            ),
            (
                format!(r#"{{"{long}": 1}}"#).into_bytes(),
                Some(&long),
                "at most 64",
            ),
            (br#"{"": 1}"#.to_vec(), Some(""), "empty"),
            (br#"{"a": 1, "a": 2}"#.to_vec(), Some("a"), "twice"),
            (br#"{"a": null}"#.to_vec(), Some("a"), "finite number"),
            (br#"{"a": [1]}"#.to_vec(), Some("a"), "finite number"),
            (br#"{"a": true}"#.to_vec(), Some("a"), "finite number"),
            (
                br#"{"a": 1, "metrics": {"b": 2}}"#.to_vec(),
                Some("a"),
                "inside it",
            ),
            (
                br#"{"metrics": {"b": 2}, "a": 1}"#.to_vec(),
                Some("a"),
                "inside it",
            ),
            (br#"[1, 2]"#.to_vec(), None, "JSON object"),
            (br#"{"a": 1} x"#.to_vec(), None, "trailing"),
            (b"not json".to_vec(), None, "expected"),
        ];
        for (body, field, what) in cases {
            let err = parse_push(&body, 64).unwrap_err();
            let text = String::from_utf8_lossy(&body);
            assert_eq!(err.field.as_deref(), field, "{text}: {err}");
            assert!(err.message.contains(what), "{text}: {err}");
        }
        let many: Vec<String> = (0..5).map(|i| format!(r#""m{i}": {i}"#)).collect();
        let body = format!("{{{}}}", many.join(","));
        let err = parse_push(body.as_bytes(), 4).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("m4"), "{err}");
        assert!(err.message.contains("more than 4 metrics"), "{err}");
        assert!(parse_push(body.as_bytes(), 5).is_ok());
    }

    fn build_store(names: &[&str], max_metrics: usize) -> AppMetricsStore {
        AppMetricsStore::new(&AppMetricsConfig {
            push_max_age_s: 30,
            scrape_interval_ms: 5000,
            names: names.iter().map(|s| s.to_string()).collect(),
            max_metrics,
            ..AppMetricsConfig::default()
        })
    }

    #[test]
    fn the_store_merges_both_sources_and_the_fresher_value_wins() {
        let store = build_store(&[], 64);
        store.set_scraped(
            vec![Reading::new("fps", 25.0), Reading::new("errors", 2.0)],
            1_000,
        );
        store.push(vec![Reading::new("fps", 30.0), Reading::new("items", 7.0)], 2_000);
        assert_eq!(
            store.snapshot(2_000),
            vec![
                Reading::new("errors", 2.0),
                Reading::new("fps", 30.0),
                Reading::new("items", 7.0)
            ]
        );
        // a later scrape is fresher than the push
        store.set_scraped(vec![Reading::new("fps", 24.0)], 3_000);
        assert_eq!(
            store.snapshot(3_000),
            vec![Reading::new("fps", 24.0), Reading::new("items", 7.0)]
        );
        // a tie goes to the push
        store.push(vec![Reading::new("fps", 31.0)], 3_000);
        assert_eq!(store.snapshot(3_000)[0], Reading::new("fps", 31.0));
        let c = store.counters();
        assert_eq!((c.pushes_accepted, c.scrapes_ok), (2, 2));
    }

    #[test]
    fn old_values_age_out_instead_of_being_reported_stale() {
        let store = build_store(&[], 64);
        store.push(vec![Reading::new("transaction_active", 1.0)], 0);
        store.set_scraped(vec![Reading::new("fps", 25.0)], 0);
        assert_eq!(store.snapshot(30_000).len(), 2);
        assert_eq!(store.snapshot(30_001), vec![]);
        // scraped values live three intervals when that is longer than the push age
        let store = AppMetricsStore::new(&AppMetricsConfig {
            push_max_age_s: 5,
            scrape_interval_ms: 10_000,
            ..AppMetricsConfig::default()
        });
        store.push(vec![Reading::new("pushed", 1.0)], 0);
        store.set_scraped(vec![Reading::new("scraped", 2.0)], 0);
        store.scrape_failed("connect: refused", 10_000);
        assert_eq!(store.snapshot(10_000), vec![Reading::new("scraped", 2.0)]);
        assert_eq!(store.snapshot(30_001), vec![]);
        let c = store.counters();
        assert_eq!(c.scrapes_failed, 1);
        assert_eq!(c.last_scrape_error.as_deref(), Some("connect: refused"));
    }

    #[test]
    fn the_store_applies_the_allow_list_and_the_cap() {
        let store = build_store(&["fps", "items"], 64);
        store.push(vec![Reading::new("items", 1.0), Reading::new("other", 2.0)], 0);
        store.set_scraped(
            vec![Reading::new("fps.front", 30.0), Reading::new("fpsx", 1.0)],
            0,
        );
        assert_eq!(
            store.snapshot(0),
            vec![Reading::new("fps.front", 30.0), Reading::new("items", 1.0)]
        );

        let store = build_store(&[], 2);
        store.push(vec![Reading::new("a", 1.0), Reading::new("b", 2.0)], 0);
        store.push(vec![Reading::new("c", 3.0)], 10);
        assert_eq!(
            store.snapshot(10),
            vec![Reading::new("b", 2.0), Reading::new("c", 3.0)]
        );
        store.set_scraped(
            vec![
                Reading::new("x", 1.0),
                Reading::new("y", 2.0),
                Reading::new("z", 3.0),
            ],
            20,
        );
        // four names fresh, the two freshest kept
        assert_eq!(
            store.snapshot(20),
            vec![Reading::new("x", 1.0), Reading::new("y", 2.0)]
        );

        assert!(store.push_json(br#"{"a": "x"}"#, 30).is_err());
        let c = store.counters();
        assert_eq!((c.pushes_accepted, c.pushes_rejected), (2, 1));

        let store = build_store(&["fps"], 64);
        assert_eq!(
            store.push_json(br#"{"fps": 30, "other": 1, "another": 2}"#, 0),
            Ok(PushOutcome {
                accepted: 1,
                ignored: 2
            })
        );
        assert!(c.last_push_error.unwrap_or_default().contains("\"a\""));
    }

    #[test]
    fn the_store_is_shared_between_threads() {
        let store = Arc::new(build_store(&[], 64));
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let s = store.clone();
                std::thread::spawn(move || s.push(vec![Reading::new(format!("m{i}"), i as f64)], 0))
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), 1);
        }
        assert_eq!(store.snapshot(0).len(), 4);
    }

    #[test]
    fn defaults_validate_and_bad_values_are_named_with_their_keys() {
        let cfg: AppMetricsConfig = toml::from_str("").unwrap();
        assert_eq!(cfg, AppMetricsConfig::default());
        assert!(cfg.validate("app").is_empty());
        assert_eq!(
            (cfg.scrape_interval_ms, cfg.scrape_timeout_ms, cfg.push_max_age_s),
            (5000, 1000, 30)
        );
        assert_eq!(cfg.max_metrics, 64);
        let cfg: AppMetricsConfig = toml::from_str(
            r#"
scrape_url = "https://127.0.0.1:8000/metrics"
scrape_interval_ms = 50
scrape_timeout_ms = 5
push_max_age_s = 0
max_metrics = 0
names = ["ok", "bad name", "ok"]
"#,
        )
        .unwrap();
        let keys: Vec<String> = cfg.validate("app").into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            vec![
                "app.scrape_url",
                "app.scrape_interval_ms",
                "app.scrape_timeout_ms",
                "app.push_max_age_s",
                "app.max_metrics",
                "app.names[1]",
                "app.names[2]",
            ]
        );
        let cfg = AppMetricsConfig {
            scrape_timeout_ms: 6000,
            ..AppMetricsConfig::default()
        };
        assert_eq!(cfg.validate("app")[0].key, "app.scrape_timeout_ms");
        let err = toml::from_str::<AppMetricsConfig>("scrape_urll = \"http://x/\"").unwrap_err();
        assert!(err.to_string().contains("scrape_urll"), "{err}");
    }

    /// Serves one connection with `response`, after reading the request head; returns the
    /// request.
    fn serve_once(response: Vec<u8>) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 512];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            // write in pieces so the client has to reassemble
            for piece in response.chunks(7) {
                s.write_all(piece).unwrap();
                s.flush().unwrap();
            }
            String::from_utf8_lossy(&req).into_owned()
        });
        (format!("http://{addr}/metrics"), handle)
    }

    const BODY: &str =
        "# TYPE items_recognised counter\nitems_recognised 42\ncamera_fps{camera=\"front\"} 29.5\n";

    #[test]
    fn a_scrape_reads_a_content_length_body() {
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{BODY}",
            BODY.len()
        );
        let (url, server) = serve_once(response.into_bytes());
        let got = scrape(&url, Duration::from_secs(5)).unwrap();
        assert_eq!(
            got,
            vec![
                Reading::new("items_recognised", 42.0),
                Reading::new("camera_fps.front", 29.5)
            ]
        );
        let request = server.join().unwrap();
        assert!(request.starts_with("GET /metrics HTTP/1.1\r\n"), "{request}");
        assert!(request.contains("Accept: text/plain;version=0.0.4"), "{request}");
    }

    #[test]
    fn a_scrape_reads_a_chunked_body() {
        let mut response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let (a, b) = BODY.split_at(20);
        response.extend_from_slice(format!("{:x};ext=1\r\n{a}\r\n", a.len()).as_bytes());
        response.extend_from_slice(format!("{:X}\r\n{b}\r\n", b.len()).as_bytes());
        response.extend_from_slice(b"0\r\nX-Trailer: y\r\n\r\n");
        let (url, server) = serve_once(response);
        let got = scrape(&url, Duration::from_secs(5)).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], Reading::new("camera_fps.front", 29.5));
        server.join().unwrap();
    }

    #[test]
    fn a_scrape_reports_a_bad_status_a_bad_body_and_a_refused_connection() {
        let (url, server) = serve_once(b"HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n".to_vec());
        let err = scrape(&url, Duration::from_secs(5)).unwrap_err();
        assert!(err.starts_with("status 503"), "{err}");
        server.join().unwrap();

        let (url, server) = serve_once(b"HTTP/1.1 200 OK\r\n\r\nok 1\n<html>\n".to_vec());
        let err = scrape(&url, Duration::from_secs(5)).unwrap_err();
        assert!(err.contains("line 2: "), "{err}");
        server.join().unwrap();

        let (url, server) = serve_once(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                SCRAPE_MAX_BODY + 1
            )
            .into_bytes(),
        );
        let err = scrape(&url, Duration::from_secs(5)).unwrap_err();
        assert!(err.contains("more than 1048576"), "{err}");
        server.join().unwrap();

        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = scrape(
            &format!("http://127.0.0.1:{port}/metrics"),
            Duration::from_secs(2),
        )
        .unwrap_err();
        assert!(err.starts_with("connect 127.0.0.1:"), "{err}");
    }

    #[test]
    fn chunked_bodies_are_decoded_incrementally_and_malformed_ones_refused() {
        let full = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        for cut in 0..full.len() {
            assert_eq!(decode_chunked(&full[..cut], 100), Ok(None), "cut at {cut}");
        }
        assert_eq!(decode_chunked(full, 100), Ok(Some(b"abcde".to_vec())));
        assert!(
            decode_chunked(b"zz\r\n", 100)
                .unwrap_err()
                .contains("bad chunk size")
        );
        assert!(
            decode_chunked(b"3\r\nabcX\r\n", 100)
                .unwrap_err()
                .contains("CRLF")
        );
        assert!(
            decode_chunked(b"65\r\n", 100)
                .unwrap_err()
                .contains("larger than 100")
        );
        assert!(
            decode_chunked(&[b'1'; 2000], 100)
                .unwrap_err()
                .contains("longer than")
        );
    }

    #[test]
    fn response_heads_give_the_status_and_framing() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 12\r\nX: y").unwrap();
        assert_eq!(
            h,
            Head {
                status: 200,
                content_length: Some(12),
                chunked: false
            }
        );
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked")
                .unwrap()
                .chunked
        );
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x").is_err());
        assert!(parse_head(b"SSH-2.0-OpenSSH").is_err());
    }
}
