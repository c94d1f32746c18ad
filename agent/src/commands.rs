//! Remote commands on the agent: verification and at-most-once bookkeeping.
//!
//! A command runs only if its Ed25519 signature verifies with the server's public key, it
//! names this device, it has not expired, and its id was never seen before. The id is recorded
//! durably (written and flushed) *before* anything runs, so a crash or a replay can never run
//! it twice; a repeated id is answered with the stored result instead. What runs, and whether,
//! is then up to the recovery actor's gate (allow-list, interlock, rate limits).

use std::collections::HashMap;
use std::sync::Mutex;

use common::DeviceId;
use common::codec;
use common::command::{self, Command, CommandResult, CommandStatus, MAX_RESULT_OUTPUT, SignedCommand};
use serde::{Deserialize, Serialize};

use crate::shared::problem::ConfigProblem;

/// Where executed command ids and their last result are kept.
pub trait ExecutedStore: Send + Sync + 'static {
    fn get(&self, id: &str) -> Option<CommandResult>;
    /// Durable on return.
    fn put(&self, id: &str, result: &CommandResult) -> Result<(), String>;
}

/// sled tree `commands` in the agent's buffer database.
pub struct SledExecuted {
    pub db: sled::Db,
    pub tree: sled::Tree,
}

impl ExecutedStore for SledExecuted {
    fn get(&self, id: &str) -> Option<CommandResult> {
        let v = self.tree.get(id.as_bytes()).ok()??;
        codec::decode_bare(&v).ok()
    }

    fn put(&self, id: &str, result: &CommandResult) -> Result<(), String> {
        let bytes = codec::encode(result).map_err(|e| e.to_string())?;
        self.tree
            .insert(id.as_bytes(), bytes)
            .map_err(|e| e.to_string())?;
        self.db.flush().map(|_| ()).map_err(|e| e.to_string())
    }
}

/// In memory (simulated machines).
#[derive(Default)]
pub struct MemExecuted(Mutex<HashMap<String, CommandResult>>);

impl ExecutedStore for MemExecuted {
    fn get(&self, id: &str) -> Option<CommandResult> {
        self.0.lock().ok()?.get(id).cloned()
    }
    fn put(&self, id: &str, result: &CommandResult) -> Result<(), String> {
        self.0
            .lock()
            .map_err(|e| e.to_string())?
            .insert(id.to_string(), result.clone());
        Ok(())
    }
}

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

/// What to do with a command that arrived.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// New and valid: record it, then run it through the gate.
    Run(Command),
    /// Seen before: answer with what is stored, run nothing.
    Repeat(CommandResult),
    /// Refused; `id` is the command's claimed id (untrusted when the signature failed).
    Reject { id: String, reason: String },
}

/// Checks one signed command (pure apart from the store lookup).
pub fn check(
    signed: &SignedCommand,
    key: Option<&[u8; 32]>,
    me: &DeviceId,
    store: &dyn ExecutedStore,
    now_ms: i64,
) -> Verdict {
    // the claimed id, for the report only
    let claimed = codec::decode_bare::<Command>(&signed.payload)
        .map(|c| c.id)
        .unwrap_or_else(|_| "unknown".into());
    let Some(key) = key else {
        return Verdict::Reject {
            id: claimed,
            reason: "commands disabled: no commands.public_key configured".into(),
        };
    };
    match command::verify(signed, key, me, now_ms) {
        Ok(cmd) => match store.get(&cmd.id) {
            Some(prev) => Verdict::Repeat(prev),
            None => Verdict::Run(cmd),
        },
        Err(e) => Verdict::Reject {
            id: claimed,
            reason: format!("{}: {e}", e.label()),
        },
    }
}

pub fn result(id: &str, status: CommandStatus, output: String, reason: Option<String>) -> CommandResult {
    let mut output = output;
    if output.len() > MAX_RESULT_OUTPUT {
        let mut cut = MAX_RESULT_OUTPUT;
        while !output.is_char_boundary(cut) {
            cut -= 1;
        }
        output.truncate(cut);
    }
    CommandResult {
        command_id: id.to_string(),
        status,
        output,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use common::command::{Action, CommandSigner};

    use super::*;

    fn signer() -> CommandSigner {
        CommandSigner::from_pkcs8(&CommandSigner::generate_pkcs8().unwrap()).unwrap()
    }

    fn cmd(id: &str, device: &str, expires: i64) -> Command {
        Command {
            id: id.into(),
            device: DeviceId::new(device).unwrap(),
            action: Action::DropCaches,
            issued_ms: 0,
            expires_ms: expires,
            issued_by: "op".into(),
            reason: "r".into(),
        }
    }

    #[test]
    fn a_valid_new_command_runs_and_a_repeat_gets_the_stored_result() {
        let s = signer();
        let me = DeviceId::new("a").unwrap();
        let store = MemExecuted::default();
        let sc = s.sign(&cmd("c1", "a", 100)).unwrap();
        assert!(matches!(
            check(&sc, Some(&s.public_key()), &me, &store, 1),
            Verdict::Run(_)
        ));
        let done = result("c1", CommandStatus::Succeeded, "ok".into(), None);
        store.put("c1", &done).unwrap();
        assert_eq!(
            check(&sc, Some(&s.public_key()), &me, &store, 2),
            Verdict::Repeat(done)
        );
    }

    #[test]
    fn bad_signatures_other_devices_and_expired_commands_are_rejected_with_the_reason() {
        let s = signer();
        let other = signer();
        let me = DeviceId::new("a").unwrap();
        let store = MemExecuted::default();
        let by_other = other.sign(&cmd("c1", "a", 100)).unwrap();
        let Verdict::Reject { id, reason } = check(&by_other, Some(&s.public_key()), &me, &store, 1) else {
            panic!()
        };
        assert_eq!(id, "c1");
        assert!(reason.starts_with("bad_signature"), "{reason}");
        let for_b = s.sign(&cmd("c2", "b", 100)).unwrap();
        assert!(
            matches!(check(&for_b, Some(&s.public_key()), &me, &store, 1), Verdict::Reject { reason, .. } if reason.starts_with("wrong_device"))
        );
        let old = s.sign(&cmd("c3", "a", 100)).unwrap();
        assert!(
            matches!(check(&old, Some(&s.public_key()), &me, &store, 100), Verdict::Reject { reason, .. } if reason.starts_with("expired"))
        );
        assert!(
            matches!(check(&old, None, &me, &store, 1), Verdict::Reject { reason, .. } if reason.contains("disabled"))
        );
    }

    #[test]
    fn output_is_bounded() {
        let r = result("c", CommandStatus::Succeeded, "é".repeat(5000), None);
        assert!(r.output.len() <= MAX_RESULT_OUTPUT);
    }

    #[test]
    fn the_sled_store_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let s = SledExecuted {
                tree: db.open_tree("commands").unwrap(),
                db,
            };
            s.put("c1", &result("c1", CommandStatus::Accepted, String::new(), None))
                .unwrap();
        }
        let db = sled::open(dir.path()).unwrap();
        let s = SledExecuted {
            tree: db.open_tree("commands").unwrap(),
            db,
        };
        assert_eq!(s.get("c1").unwrap().status, CommandStatus::Accepted);
    }
}
