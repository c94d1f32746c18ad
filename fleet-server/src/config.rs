//! `fleet-server.toml`: format, defaults, validation naming every bad key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    #[serde(default)]
    pub http: HttpSection,
    #[serde(default)]
    pub mqtt: MqttSection,
    #[serde(default)]
    pub certs: CertsSection,
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub presence: PresenceSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    #[serde(default = "default_http")]
    pub listen: String,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: default_http(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    /// Run the embedded broker (default) or connect to an external one.
    #[serde(default = "yes")]
    pub embedded: bool,
    /// Where the embedded broker listens.
    #[serde(default = "default_mqtt")]
    pub listen: String,
    /// Where the server's own MQTT client connects: `host:port`. Defaults to `listen`.
    #[serde(default)]
    pub connect: Option<String>,
}

impl Default for MqttSection {
    fn default() -> Self {
        Self {
            embedded: true,
            listen: default_mqtt(),
            connect: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertsSection {
    /// Directory made by `fleetctl certs init`.
    #[serde(default = "default_certs")]
    pub dir: PathBuf,
}

impl Default for CertsSection {
    fn default() -> Self {
        Self { dir: default_certs() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    #[serde(default = "default_data")]
    pub data_dir: PathBuf,
}

impl Default for StorageSection {
    fn default() -> Self {
        Self {
            data_dir: default_data(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceSection {
    #[serde(default = "default_stale")]
    pub stale_after_s: u64,
    #[serde(default = "default_offline")]
    pub offline_after_s: u64,
}

impl Default for PresenceSection {
    fn default() -> Self {
        Self {
            stale_after_s: default_stale(),
            offline_after_s: default_offline(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_http() -> String {
    "127.0.0.1:8080".into()
}
fn default_mqtt() -> String {
    "127.0.0.1:8883".into()
}
fn default_certs() -> PathBuf {
    PathBuf::from("certs")
}
fn default_data() -> PathBuf {
    PathBuf::from("data")
}
fn default_stale() -> u64 {
    15
}
fn default_offline() -> u64 {
    60
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {}", problems.join("; "))]
    Invalid { path: PathBuf, problems: Vec<String> },
}

/// The validated runtime configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub http: SocketAddr,
    pub embedded_broker: Option<SocketAddr>,
    /// host and port the server's MQTT client connects to.
    pub mqtt_host: String,
    pub mqtt_port: u16,
    pub certs: PathBuf,
    pub data_dir: PathBuf,
    pub stale_after_ms: i64,
    pub offline_after_ms: i64,
}

impl ServerFile {
    pub fn load(path: &Path) -> Result<ServerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let file: ServerFile = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        file.validate().map_err(|problems| ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        })
    }

    /// Every problem with its key path, or the runtime config.
    pub fn validate(&self) -> Result<ServerConfig, Vec<String>> {
        let mut p = Vec::new();
        let http = self.http.listen.parse::<SocketAddr>().map_err(|_| {
            p.push(format!(
                "http.listen: {:?} is not an address like 127.0.0.1:8080",
                self.http.listen
            ))
        });
        let listen = self.mqtt.listen.parse::<SocketAddr>().map_err(|_| {
            p.push(format!(
                "mqtt.listen: {:?} is not an address like 127.0.0.1:8883",
                self.mqtt.listen
            ))
        });
        let connect = match (&self.mqtt.connect, self.mqtt.embedded) {
            (Some(c), _) => rvm_agent::config::split_host_port(c)
                .ok_or_else(|| p.push(format!("mqtt.connect: {c:?} is not host:port"))),
            (None, true) => listen.map(|a| (a.ip().to_string(), a.port())),
            (None, false) => {
                p.push("mqtt.connect: required when mqtt.embedded = false".into());
                Err(())
            }
        };
        if self.presence.stale_after_s == 0 || self.presence.offline_after_s <= self.presence.stale_after_s {
            p.push(format!(
                "presence: need 0 < stale_after_s ({}) < offline_after_s ({})",
                self.presence.stale_after_s, self.presence.offline_after_s
            ));
        }
        match (http, listen, connect) {
            (Ok(http), Ok(listen), Ok((host, port))) if p.is_empty() => Ok(ServerConfig {
                http,
                embedded_broker: self.mqtt.embedded.then_some(listen),
                mqtt_host: host,
                mqtt_port: port,
                certs: self.certs.dir.clone(),
                data_dir: self.storage.data_dir.clone(),
                stale_after_ms: self.presence.stale_after_s as i64 * 1000,
                offline_after_ms: self.presence.offline_after_s as i64 * 1000,
            }),
            _ => Err(p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_and_validates() {
        let f: ServerFile = toml::from_str(include_str!("../../config/fleet-server.toml")).unwrap();
        let c = f.validate().unwrap();
        assert!(c.embedded_broker.is_some());
    }

    #[test]
    fn an_unknown_key_is_named() {
        let e =
            toml::from_str::<ServerFile>("[http]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n").unwrap_err();
        assert!(e.to_string().contains("listen_port"), "{e}");
    }

    #[test]
    fn bad_values_are_named_by_key() {
        let f: ServerFile = toml::from_str(
            "[http]\nlisten = \"x\"\n[mqtt]\nembedded = false\n[presence]\nstale_after_s = 10\noffline_after_s = 5\n",
        )
        .unwrap();
        let p = f.validate().unwrap_err().join("\n");
        for k in ["http.listen", "mqtt.connect", "presence"] {
            assert!(p.contains(k), "{k} in {p}");
        }
    }
}
