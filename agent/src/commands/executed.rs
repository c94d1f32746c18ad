//! Where executed command ids and their last result are kept. A put is durable on return, so
//! an id is recorded before its command runs (at most once).

use std::collections::HashMap;
use std::sync::Mutex;

use common::codec::{self, CodecError};
use common::command::CommandResult;

/// Why an executed command id was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum ExecutedStoreError {
    #[error("cannot encode the command result: {0}")]
    Encode(#[from] CodecError),
    #[error("the executed-commands store: {0}")]
    Sled(#[from] sled::Error),
    #[error("the executed-commands store lock is poisoned")]
    Poisoned,
}

/// Where executed command ids and their last result are kept.
pub trait ExecutedStore: Send + Sync + 'static {
    fn get(&self, id: &str) -> Option<CommandResult>;
    /// Durable on return.
    fn put(&self, id: &str, result: &CommandResult) -> Result<(), ExecutedStoreError>;
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

    fn put(&self, id: &str, result: &CommandResult) -> Result<(), ExecutedStoreError> {
        let bytes = codec::encode(result)?;
        self.tree.insert(id.as_bytes(), bytes)?;
        self.db.flush()?;
        Ok(())
    }
}

/// In memory (simulated machines).
#[derive(Default)]
pub struct MemExecuted(Mutex<HashMap<String, CommandResult>>);

impl ExecutedStore for MemExecuted {
    fn get(&self, id: &str) -> Option<CommandResult> {
        self.0.lock().ok()?.get(id).cloned()
    }
    fn put(&self, id: &str, result: &CommandResult) -> Result<(), ExecutedStoreError> {
        self.0
            .lock()
            .map_err(|_| ExecutedStoreError::Poisoned)?
            .insert(id.to_string(), result.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use common::command::CommandStatus;

    use super::*;
    use crate::commands::verify::result;

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
