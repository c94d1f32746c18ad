//! The `[mqtt]` section of `agent.toml`: the broker, the device's TLS identity, keep-alive and
//! the in-flight window.

use std::path::PathBuf;

use common::addr::split_host_port;
use serde::Deserialize;

use crate::shared::problem::ConfigProblem;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    /// `host:port` of the broker.
    pub broker: String,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    #[serde(default = "default_keep_alive_s")]
    pub keep_alive_s: u64,
    /// Records published and not yet acknowledged, at most.
    #[serde(default = "default_window")]
    pub inflight_window: usize,
}

fn default_keep_alive_s() -> u64 {
    30
}
fn default_window() -> usize {
    64
}

impl MqttSection {
    /// Every problem, each with its key path under `prefix` (`mqtt`).
    pub fn validate(&self, prefix: &str) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        let mut bad = |key: &str, message: String| {
            p.push(ConfigProblem {
                key: format!("{prefix}.{key}"),
                message,
            })
        };
        if split_host_port(&self.broker).is_none() {
            bad("broker", format!("{:?} is not host:port", self.broker));
        }
        for (key, path) in [("ca", &self.ca), ("cert", &self.cert), ("key", &self.key)] {
            if !path.exists() {
                bad(key, format!("{} does not exist", path.display()));
            }
        }
        if !(5..=3600).contains(&self.keep_alive_s) {
            bad(
                "keep_alive_s",
                format!("{} is outside 5..=3600", self.keep_alive_s),
            );
        }
        if !(1..=4096).contains(&self.inflight_window) {
            bad(
                "inflight_window",
                format!("{} is outside 1..=4096", self.inflight_window),
            );
        }
        p
    }
}
