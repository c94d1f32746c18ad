//! The JSON Schemas of `docs/schemas/` and a validator for the subset of JSON Schema 2020-12
//! they use: `type`, `properties`, `required`, `additionalProperties` (false or a schema),
//! `items`, `enum`, `const`, `oneOf`, local `$ref`, `minimum`. `pattern` and the annotations
//! are not checked; any other keyword is an error, so a schema cannot silently use one this
//! validator ignores.

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::topics::{Kind, Topic};
use serde_json::Value;

/// Keywords that only describe.
const ANNOTATIONS: &[&str] = &["$schema", "$id", "$defs", "title", "description", "pattern"];

/// Where the schemas are: `docs/schemas/` of the workspace.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/schemas")
}

/// Why a value was not validated: it does not match (each variant names its JSON path, `$.a.b`),
/// or the schema asks for something this validator does not support.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchemaError {
    #[error("no schema {name:?} in {dir}")]
    NoSchema { name: String, dir: PathBuf },
    #[error("no schema for topic {0}")]
    NoTopicSchema(String),
    #[error("{path}: {value} is not of type {types:?}")]
    NotOfType {
        path: String,
        value: Value,
        types: Vec<String>,
    },
    #[error("{path}: {name:?} is required")]
    Required { path: String, name: String },
    #[error("{path}: {name:?} is not in the schema")]
    NotInSchema { path: String, name: String },
    #[error("{path}: {value} is not one of {allowed}")]
    NotInEnum {
        path: String,
        value: Value,
        allowed: Value,
    },
    #[error("{path}: {value} is not {expected}")]
    NotConst {
        path: String,
        value: Value,
        expected: Value,
    },
    #[error("{path}: {value} < {min}")]
    BelowMinimum { path: String, value: f64, min: f64 },
    #[error(
        "{path}: {matched} of the oneOf alternatives match {value} ({})",
        join(errors)
    )]
    OneOf {
        path: String,
        matched: usize,
        value: Value,
        errors: Vec<SchemaError>,
    },
    #[error("{path}: schema is not an object: {schema}")]
    SchemaNotAnObject { path: String, schema: Value },
    #[error("{path}: unsupported $ref {reference}")]
    UnsupportedRef { path: String, reference: Value },
    #[error("{path}: no $defs/{name}")]
    NoDef { path: String, name: String },
    #[error("{path}: bad type {schema}")]
    BadType { path: String, schema: Value },
    #[error("{path}: unknown type {name:?}")]
    UnknownType { path: String, name: String },
    #[error("{path}: bad oneOf")]
    BadOneOf { path: String },
    #[error("{path}: keyword {keyword:?} is not supported")]
    UnsupportedKeyword { path: String, keyword: String },
}

fn join(errors: &[SchemaError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every `docs/schemas/NAME.schema.json`, by NAME.
pub struct Schemas {
    pub by_name: BTreeMap<String, Value>,
}

impl Schemas {
    pub fn load() -> anyhow::Result<Schemas> {
        let mut by_name = BTreeMap::new();
        for entry in std::fs::read_dir(dir())? {
            let path = entry?.path();
            let file = path.file_name().and_then(|f| f.to_str()).unwrap_or_default();
            if let Some(name) = file.strip_suffix(".schema.json") {
                let v: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                by_name.insert(name.to_string(), v);
            }
        }
        Ok(Schemas { by_name })
    }

    /// The schema name of the payload on `topic` (`fleet/v1/...`, or `rvm/v1/{id}/cmd` as
    /// `fleetctl sub` prints it).
    pub fn name_of_topic(topic: &str) -> Option<&'static str> {
        match Topic::parse(topic).ok()? {
            Topic::FleetAlerts => Some("alert"),
            Topic::FleetIncidents => Some("incident"),
            Topic::Device { kind: Kind::Cmd, .. } => Some("command"),
            Topic::FleetDevice { kind, .. } => Some(match kind {
                Kind::Telemetry => "telemetry",
                Kind::Health => "health",
                Kind::Event => "event",
                Kind::State => "state",
                Kind::CmdResult => "cmd-result",
                Kind::Cmd => "command",
            }),
            Topic::Device { .. } => None,
        }
    }

    pub fn validate(&self, name: &str, v: &Value) -> Result<(), SchemaError> {
        let root = self.by_name.get(name).ok_or_else(|| SchemaError::NoSchema {
            name: name.into(),
            dir: dir(),
        })?;
        validate(root, root, v, "$")
    }

    pub fn validate_topic(&self, topic: &str, v: &Value) -> Result<(), SchemaError> {
        let name = Self::name_of_topic(topic).ok_or_else(|| SchemaError::NoTopicSchema(topic.into()))?;
        self.validate(name, v)
    }
}

fn type_matches(t: &str, v: &Value, path: &str) -> Result<bool, SchemaError> {
    Ok(match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        other => {
            return Err(SchemaError::UnknownType {
                path: path.into(),
                name: other.into(),
            });
        }
    })
}

/// Validates `v` at `path` against `schema`; `root` resolves `#/$defs/...`.
pub fn validate(root: &Value, schema: &Value, v: &Value, path: &str) -> Result<(), SchemaError> {
    let obj = schema.as_object().ok_or_else(|| SchemaError::SchemaNotAnObject {
        path: path.into(),
        schema: schema.clone(),
    })?;
    for (k, s) in obj {
        match k.as_str() {
            k if ANNOTATIONS.contains(&k) => {}
            "$ref" => {
                let name = s
                    .as_str()
                    .and_then(|r| r.strip_prefix("#/$defs/"))
                    .ok_or_else(|| SchemaError::UnsupportedRef {
                        path: path.into(),
                        reference: s.clone(),
                    })?;
                let target =
                    root.get("$defs")
                        .and_then(|d| d.get(name))
                        .ok_or_else(|| SchemaError::NoDef {
                            path: path.into(),
                            name: name.into(),
                        })?;
                validate(root, target, v, path)?;
            }
            "type" => {
                let types: Vec<&str> = match s {
                    Value::String(t) => vec![t.as_str()],
                    Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                    _ => {
                        return Err(SchemaError::BadType {
                            path: path.into(),
                            schema: s.clone(),
                        });
                    }
                };
                let mut ok = false;
                for t in &types {
                    ok |= type_matches(t, v, path)?;
                }
                if !ok {
                    return Err(SchemaError::NotOfType {
                        path: path.into(),
                        value: v.clone(),
                        types: types.iter().map(|t| t.to_string()).collect(),
                    });
                }
            }
            "properties" => {
                let (Some(props), Some(o)) = (s.as_object(), v.as_object()) else {
                    continue;
                };
                for (name, ps) in props {
                    if let Some(x) = o.get(name) {
                        validate(root, ps, x, &format!("{path}.{name}"))?;
                    }
                }
            }
            "required" => {
                if let Some(o) = v.as_object() {
                    for r in s.as_array().into_iter().flatten().filter_map(Value::as_str) {
                        if !o.contains_key(r) {
                            return Err(SchemaError::Required {
                                path: path.into(),
                                name: r.into(),
                            });
                        }
                    }
                }
            }
            "additionalProperties" => {
                let Some(o) = v.as_object() else { continue };
                let known = obj.get("properties").and_then(Value::as_object);
                for (name, x) in o {
                    if known.is_some_and(|k| k.contains_key(name)) {
                        continue;
                    }
                    match s {
                        Value::Bool(false) => {
                            return Err(SchemaError::NotInSchema {
                                path: path.into(),
                                name: name.clone(),
                            });
                        }
                        Value::Bool(true) => {}
                        sub => validate(root, sub, x, &format!("{path}.{name}"))?,
                    }
                }
            }
            "items" => {
                if let Some(a) = v.as_array() {
                    for (i, x) in a.iter().enumerate() {
                        validate(root, s, x, &format!("{path}[{i}]"))?;
                    }
                }
            }
            "enum" => {
                if !s.as_array().is_some_and(|a| a.contains(v)) {
                    return Err(SchemaError::NotInEnum {
                        path: path.into(),
                        value: v.clone(),
                        allowed: s.clone(),
                    });
                }
            }
            "const" => {
                if s != v {
                    return Err(SchemaError::NotConst {
                        path: path.into(),
                        value: v.clone(),
                        expected: s.clone(),
                    });
                }
            }
            "minimum" => {
                if let (Some(min), Some(x)) = (s.as_f64(), v.as_f64())
                    && x < min
                {
                    return Err(SchemaError::BelowMinimum {
                        path: path.into(),
                        value: x,
                        min,
                    });
                }
            }
            "oneOf" => {
                let subs = s
                    .as_array()
                    .ok_or_else(|| SchemaError::BadOneOf { path: path.into() })?;
                let errors: Vec<SchemaError> = subs
                    .iter()
                    .filter_map(|sub| validate(root, sub, v, path).err())
                    .collect();
                let matched = subs.len() - errors.len();
                if matched != 1 {
                    return Err(SchemaError::OneOf {
                        path: path.into(),
                        matched,
                        value: v.clone(),
                        errors,
                    });
                }
            }
            other => {
                return Err(SchemaError::UnsupportedKeyword {
                    path: path.into(),
                    keyword: other.into(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_validator_enforces_what_the_schemas_rely_on() {
        let root = json!({
            "type": "object",
            "properties": { "a": { "type": "integer", "minimum": 0 }, "b": { "$ref": "#/$defs/B" } },
            "required": ["a"],
            "additionalProperties": false,
            "$defs": { "B": { "oneOf": [ { "const": "x" }, { "type": "null" } ] } }
        });
        let ok = |v: Value| validate(&root, &root, &v, "$");
        assert!(ok(json!({"a": 1, "b": "x"})).is_ok());
        assert!(ok(json!({"a": 1, "b": null})).is_ok());
        assert!(ok(json!({"a": 1.5})).is_err());
        assert!(ok(json!({"a": -1})).is_err());
        assert!(ok(json!({"b": "x"})).is_err());
        assert!(
            ok(json!({"a": 1, "c": 2}))
                .unwrap_err()
                .to_string()
                .contains("\"c\"")
        );
        assert!(ok(json!({"a": 1, "b": "y"})).is_err());
        let bad = json!({ "format": "date" });
        assert!(validate(&bad, &bad, &json!(1), "$").is_err());
    }
}
