//! The commands actor's store access: every command record and every rollout, written after
//! each change and read back at start.
//!
//! [`CommandStore`] is the seam. Writes never block the actor: the sled store
//! ([`SledCommandStore`]: `commands` and `rollouts` trees, by id) writes to sled's in-memory
//! log (durable with the store's next flush, like every sled write of the server); the
//! PostgreSQL one ([`super::pg`]) hands each change to a writer task that upserts it. A
//! record that does not decode is skipped and logged; a failed write is logged (the record
//! stays in memory and is written again at its next change).

use common::codec;

use super::book::{CommandRecord, CommandRecordV1};
use super::rollout::Rollout;
use crate::cluster::Leadership;
use crate::cluster::lease::LeaseToken;

/// A leader's write: the lease it holds, and whom to tell when the fence refuses it.
#[derive(Clone)]
pub struct LeaderWrite {
    pub token: LeaseToken,
    pub leadership: Leadership,
}
use crate::store::{FleetStore, StoreError};

/// The commands actor's records (module docs).
pub trait CommandStore: Send + Sync {
    /// Every command record that decodes (blocking: at start).
    fn records(&self) -> Result<Vec<CommandRecord>, StoreError>;

    /// Every rollout that decodes (blocking: at start).
    fn rollouts(&self) -> Result<Vec<Rollout>, StoreError>;

    /// Writes (or replaces) a record; never blocks.
    fn put(&self, r: &CommandRecord);

    /// Forgets a command (the book keeps a bounded number per device); never blocks.
    fn remove(&self, id: &str);

    /// Writes (or replaces) a rollout; never blocks.
    fn put_rollout(&self, r: &Rollout);

    /// Writes a rollout as the leader of the rollouts job: with PostgreSQL the write asserts
    /// `lead`'s lease in its transaction, and a refused write ends that leadership instead of
    /// landing beside a successor's (`crate::cluster::fence`). One instance: a plain write.
    fn put_rollout_led(&self, r: &Rollout, lead: Option<LeaderWrite>) {
        let _ = lead;
        self.put_rollout(r)
    }

    /// Queues a new command for whichever instance holds its machine's session (the outbox
    /// of [`super::outbox`]); never blocks. One instance (sled) has nothing to queue: its
    /// book sends.
    fn enqueue(&self, _r: &CommandRecord) {}

    /// The agent answered command `id`: its outbox row is done; never blocks.
    fn delivered(&self, _id: &str) {}
}

/// The commands and rollouts trees of the server's sled store.
pub struct SledCommandStore {
    commands: sled::Tree,
    rollouts: sled::Tree,
}

impl SledCommandStore {
    pub fn open(store: &FleetStore) -> Result<SledCommandStore, StoreError> {
        Ok(SledCommandStore {
            commands: store.tree("commands")?,
            rollouts: store.tree("rollouts")?,
        })
    }
}

impl CommandStore for SledCommandStore {
    fn records(&self) -> Result<Vec<CommandRecord>, StoreError> {
        let mut out = Vec::new();
        for (_, v) in self.commands.iter().flatten() {
            // a record written before approvals and dry runs has the old layout
            let r = codec::decode_bare::<CommandRecord>(&v).or_else(|e| {
                codec::decode_bare::<CommandRecordV1>(&v)
                    .map(CommandRecord::from)
                    .map_err(|_| e)
            });
            match r {
                Ok(r) => out.push(r),
                Err(e) => tracing::error!(error = %e, "unreadable command record skipped"),
            }
        }
        Ok(out)
    }

    fn rollouts(&self) -> Result<Vec<Rollout>, StoreError> {
        Ok(self
            .rollouts
            .iter()
            .flatten()
            .filter_map(|(_, v)| codec::decode_bare::<Rollout>(&v).ok())
            .collect())
    }

    fn put(&self, r: &CommandRecord) {
        match codec::encode(r) {
            Ok(b) => {
                if let Err(e) = self.commands.insert(r.id.as_bytes(), b) {
                    tracing::error!(error = %e, "command not persisted");
                }
            }
            Err(e) => tracing::error!(error = %e, "command not encodable"),
        }
    }

    fn remove(&self, id: &str) {
        let _ = self.commands.remove(id.as_bytes());
    }

    fn put_rollout(&self, r: &Rollout) {
        if let Ok(b) = codec::encode(r)
            && let Err(e) = self.rollouts.insert(r.id.as_bytes(), b)
        {
            tracing::error!(error = %e, "rollout not persisted");
        }
    }
}
