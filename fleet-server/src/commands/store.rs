//! The commands actor's store access: every command record (`commands` tree, by id) and every
//! rollout (`rollouts` tree, by id), written after each change. A record that does not decode
//! is skipped and logged; a failed write is logged (the record stays in memory and is written
//! again at its next change).

use common::codec;

use super::book::CommandRecord;
use super::rollout::Rollout;
use crate::store::{FleetStore, StoreError};

/// The commands and rollouts trees of the server's store.
pub struct CommandStore {
    commands: sled::Tree,
    rollouts: sled::Tree,
}

impl CommandStore {
    pub fn open(store: &FleetStore) -> Result<CommandStore, StoreError> {
        Ok(CommandStore {
            commands: store.tree("commands")?,
            rollouts: store.tree("rollouts")?,
        })
    }

    /// Every command record that decodes.
    pub fn records(&self) -> Vec<CommandRecord> {
        let mut out = Vec::new();
        for (_, v) in self.commands.iter().flatten() {
            match codec::decode_bare::<CommandRecord>(&v) {
                Ok(r) => out.push(r),
                Err(e) => tracing::error!(error = %e, "unreadable command record skipped"),
            }
        }
        out
    }

    /// Every rollout that decodes.
    pub fn rollouts(&self) -> Vec<Rollout> {
        self.rollouts
            .iter()
            .flatten()
            .filter_map(|(_, v)| codec::decode_bare::<Rollout>(&v).ok())
            .collect()
    }

    pub fn put(&self, r: &CommandRecord) {
        match codec::encode(r) {
            Ok(b) => {
                if let Err(e) = self.commands.insert(r.id.as_bytes(), b) {
                    tracing::error!(error = %e, "command not persisted");
                }
            }
            Err(e) => tracing::error!(error = %e, "command not encodable"),
        }
    }

    /// Forgets a command (the book keeps a bounded number per device).
    pub fn remove(&self, id: &str) {
        let _ = self.commands.remove(id.as_bytes());
    }

    pub fn put_rollout(&self, r: &Rollout) {
        if let Ok(b) = codec::encode(r)
            && let Err(e) = self.rollouts.insert(r.id.as_bytes(), b)
        {
            tracing::error!(error = %e, "rollout not persisted");
        }
    }
}
