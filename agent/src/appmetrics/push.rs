//! The push schema (pure): what the vision service may POST to `/api/v1/app-metrics`, and a
//! [`PushError`] naming the bad field when a body is refused as a whole.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use common::Reading;
use serde::Serialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};

use super::names::{shorten, validate_name};

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
#[cfg(test)]
mod tests {
    use super::*;

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
}
