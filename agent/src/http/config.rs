//! The `[http]` section of `agent.toml`: where the local endpoint listens.

use serde::Deserialize;

use crate::shared::problem::ConfigProblem;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Local status endpoint; empty string disables it.
    #[serde(default = "default_http_listen")]
    pub listen: String,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: default_http_listen(),
        }
    }
}

fn default_http_listen() -> String {
    "127.0.0.1:9101".into()
}

impl HttpSection {
    /// Every problem, each with its key path under `prefix` (`http`).
    pub fn validate(&self, prefix: &str) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if !self.listen.is_empty() && self.listen.parse::<std::net::SocketAddr>().is_err() {
            p.push(ConfigProblem {
                key: format!("{prefix}.listen"),
                message: format!("{:?} is not an address like 127.0.0.1:9101", self.listen),
            });
        }
        p
    }
}
