//! The `[commands]` section of `agent.toml`: the server's command-signing public key.

use common::command;
use serde::{Deserialize, Serialize};

use crate::shared::problem::ConfigProblem;

/// The `[commands]` section of `agent.toml`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CommandsConfig {
    /// The server's command-signing public key (`command-signing.pub`, hex). Without it every
    /// command is rejected.
    #[serde(default)]
    pub public_key: Option<std::path::PathBuf>,
}

impl CommandsConfig {
    pub fn validate(&self, prefix: &str) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        if let Some(path) = &self.public_key {
            match std::fs::read_to_string(path) {
                Ok(s) => {
                    if let Err(e) = command::public_key_from_hex(&s) {
                        p.push(ConfigProblem {
                            key: format!("{prefix}.public_key"),
                            message: format!("{}: {e}", path.display()),
                        });
                    }
                }
                Err(e) => p.push(ConfigProblem {
                    key: format!("{prefix}.public_key"),
                    message: format!("{}: {e}", path.display()),
                }),
            }
        }
        p
    }

    pub fn load_key(&self) -> Option<[u8; 32]> {
        let s = std::fs::read_to_string(self.public_key.as_ref()?).ok()?;
        command::public_key_from_hex(&s).ok()
    }
}
