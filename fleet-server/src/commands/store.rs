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
use super::rollout::{Rollout, RolloutV1};
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
    /// The server's store handle: a tree alone keeps the database (and its lock) open
    /// without counting in [`FleetStore::watch`], so a server stopping would not wait for
    /// this store to go and the next one on the same directory could find the lock held.
    _store: FleetStore,
}

impl SledCommandStore {
    pub fn open(store: &FleetStore) -> Result<SledCommandStore, StoreError> {
        Ok(SledCommandStore {
            commands: store.tree("commands")?,
            rollouts: store.tree("rollouts")?,
            _store: store.clone(),
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
        let mut out = Vec::new();
        for (_, v) in self.rollouts.iter().flatten() {
            // a rollout written before the health gate has the old layout
            let r = codec::decode_bare::<Rollout>(&v).or_else(|e| {
                codec::decode_bare::<RolloutV1>(&v)
                    .map(Rollout::from)
                    .map_err(|_| e)
            });
            match r {
                Ok(r) => out.push(r),
                Err(e) => tracing::error!(error = %e, "unreadable rollout record skipped"),
            }
        }
        Ok(out)
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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use common::DeviceId;
    use common::command::Action;
    use serde::Serialize;

    use super::*;
    use crate::commands::rollout::{RolloutState, Target};

    /// The layout sled kept before the health gate: the fields up to `detail`.
    #[derive(Serialize)]
    struct OldRollout {
        id: String,
        action: Action,
        target: Target,
        per_minute: u32,
        abort_failed_pct: f64,
        min_finished: u32,
        ttl_s: u64,
        reason: String,
        issued_by: String,
        created_ms: i64,
        state: RolloutState,
        remaining: VecDeque<DeviceId>,
        commands: Vec<String>,
        dispatched_at: Vec<i64>,
        detail: Option<String>,
    }

    #[test]
    fn a_rollout_stored_before_the_health_gate_is_read_and_carries_on_ungated() {
        let dir = tempfile::tempdir().unwrap();
        let store = FleetStore::open(dir.path()).unwrap();
        let s = SledCommandStore::open(&store).unwrap();
        let old = OldRollout {
            id: "r-old".into(),
            action: Action::DropCaches,
            target: Target::All,
            per_minute: 6,
            abort_failed_pct: 20.0,
            min_finished: 5,
            ttl_s: 60,
            reason: "upgrade".into(),
            issued_by: "op".into(),
            created_ms: 1_000,
            state: RolloutState::Running,
            remaining: [DeviceId::new("m2").unwrap()].into(),
            commands: vec!["c1".into()],
            dispatched_at: vec![1_500],
            detail: None,
        };
        s.rollouts
            .insert("r-old", common::codec::encode(&old).unwrap())
            .unwrap();
        // and one that no layout reads: logged and skipped, the others still load
        s.rollouts.insert("r-bad", &[0xff_u8, 0xff][..]).unwrap();
        let read = s.rollouts().unwrap();
        assert_eq!(read.len(), 1, "{read:?}");
        let r = &read[0];
        assert_eq!(
            (r.id.as_str(), r.state, r.per_minute),
            ("r-old", RolloutState::Running, 6)
        );
        assert_eq!(r.remaining, VecDeque::from([DeviceId::new("m2").unwrap()]));
        assert_eq!(r.commands, vec!["c1".to_string()]);
        assert!(r.gate.is_none() && r.watch.is_empty() && r.paused_ms.is_none());
    }
}
