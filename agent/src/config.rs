//! `agent.toml`: the file format, its defaults, and validation that names every bad key.
//!
//! Each section's type, defaults and checks live in its feature's folder (`[mqtt]` in
//! [`crate::link::config`], `[health]` in [`crate::health::config`], ...); this file composes
//! them and adds the top-level keys. No feature imports this module.
//!
//! Unknown keys are errors (`deny_unknown_fields`): a typo must not silently become a default.
//! [`AgentFile::validate`] reports every problem at once, each with its key path.

use std::path::{Path, PathBuf};

use common::DeviceId;
use serde::Deserialize;

use crate::appmetrics::config::AppMetricsConfig;
use crate::buffer::config::BufferSection;
use crate::collect::config::{CollectorSection, PathsSection};
use crate::commands::config::CommandsConfig;
use crate::health::config::HealthConfig;
use crate::http::config::HttpSection;
use crate::link::config::MqttSection;
use crate::recovery::config::RecoveryConfig;
use crate::shared::problem::ConfigProblem;
use crate::supervise::restart::RestartPolicy;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    /// `[A-Za-z0-9]{1,64}`; must equal the CN of the device certificate.
    pub device_id: String,
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub vision_model_version: Option<String>,
    pub mqtt: MqttSection,
    #[serde(default)]
    pub collector: CollectorSection,
    #[serde(default)]
    pub buffer: BufferSection,
    #[serde(default)]
    pub http: HttpSection,
    #[serde(default)]
    pub paths: PathsSection,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub recovery: RecoveryConfig,
    #[serde(default)]
    pub supervisor: RestartPolicy,
    #[serde(default)]
    pub app: AppMetricsConfig,
    #[serde(default)]
    pub commands: CommandsConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("{path}: {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<ConfigProblem>,
    },
}

impl AgentFile {
    pub fn load(path: &Path) -> Result<AgentFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let file = Self::parse(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        let problems = file.validate();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            });
        }
        Ok(file)
    }

    pub fn parse(text: &str) -> Result<AgentFile, toml::de::Error> {
        toml::from_str(text)
    }

    /// Every problem, each with its key path. Empty when the config is usable.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if let Err(e) = DeviceId::new(self.device_id.clone()) {
            p.push(ConfigProblem {
                key: "device_id".into(),
                message: e.to_string(),
            });
        }
        p.extend(self.mqtt.validate("mqtt"));
        p.extend(self.collector.validate("collector"));
        p.extend(self.buffer.validate("buffer"));
        p.extend(self.http.validate("http"));
        p.extend(self.health.validate("health"));
        p.extend(self.recovery.validate("recovery", &self.health));
        p.extend(self.supervisor.validate("supervisor"));
        p.extend(self.app.validate("app"));
        p.extend(self.commands.validate("commands"));
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::FullPolicy;

    fn example_with_paths(dir: &Path) -> String {
        for f in ["ca.pem", "dev.pem", "dev.key"] {
            std::fs::write(dir.join(f), "x").unwrap();
        }
        format!(
            r#"
device_id = "rvm0042"
[mqtt]
broker = "localhost:8883"
ca = "{0}/ca.pem"
cert = "{0}/dev.pem"
key = "{0}/dev.key"
"#,
            dir.display()
        )
    }

    #[test]
    fn the_example_config_in_the_repo_parses() {
        let text = include_str!("../../config/agent.toml");
        let f = AgentFile::parse(text).expect("config/agent.toml parses");
        // paths point at /etc on a real machine; everything else must be valid
        let problems: Vec<_> = f
            .validate()
            .into_iter()
            .filter(|p| !p.key.starts_with("mqtt.c") && p.key != "mqtt.key")
            .collect();
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn a_minimal_config_takes_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let f = AgentFile::parse(&example_with_paths(dir.path())).unwrap();
        assert!(f.validate().is_empty(), "{:?}", f.validate());
        assert_eq!(f.collector.interval_ms, 1000);
        assert_eq!(f.buffer.full_policy, FullPolicy::DropOldest);
    }

    #[test]
    fn an_unknown_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let text = example_with_paths(dir.path()) + "\n[collector]\nintervall_ms = 5\n";
        let err = AgentFile::parse(&text).unwrap_err().to_string();
        assert!(err.contains("intervall_ms"), "{err}");
    }

    #[test]
    fn every_bad_value_is_reported_with_its_key() {
        let text = r#"
device_id = "rvm-1"
[mqtt]
broker = "nohost"
ca = "/nonexistent/ca.pem"
cert = "/nonexistent/c.pem"
key = "/nonexistent/k.pem"
keep_alive_s = 1
[collector]
interval_ms = 5
[http]
listen = "nope"
"#;
        let f = AgentFile::parse(text).unwrap();
        let keys: Vec<String> = f.validate().into_iter().map(|p| p.key).collect();
        for k in [
            "device_id",
            "mqtt.broker",
            "mqtt.ca",
            "mqtt.cert",
            "mqtt.key",
            "mqtt.keep_alive_s",
            "collector.interval_ms",
            "http.listen",
        ] {
            assert!(keys.contains(&k.to_string()), "{k} missing from {keys:?}");
        }
    }

    #[test]
    fn problems_in_nested_sections_are_named_with_their_section() {
        let dir = tempfile::tempdir().unwrap();
        let text = example_with_paths(dir.path())
            + "\n[supervisor]\nmax_restarts = 0\n[app]\nmax_metrics = 0\n[commands]\npublic_key = \"/nonexistent.pub\"\n";
        let f = AgentFile::parse(&text).unwrap();
        let keys: Vec<String> = f.validate().into_iter().map(|p| p.key).collect();
        for k in [
            "supervisor.max_restarts",
            "app.max_metrics",
            "commands.public_key",
        ] {
            assert!(keys.contains(&k.to_string()), "{k} missing from {keys:?}");
        }
    }
}
