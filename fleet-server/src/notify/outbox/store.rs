//! The outbox's storage trait and its in-memory twin (the model the sled store is tested
//! against, and a store for tests of the dispatcher).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use super::{EntryState, OutboxEntry};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OutboxError {
    #[error("outbox storage: {0}")]
    Storage(String),
    /// An entry that cannot be decoded (moved aside by the store that found it).
    #[error("outbox entry {key:?} is corrupt: {detail}")]
    Corrupt { key: String, detail: String },
    #[error("outbox entry {key:?} cannot be encoded: {detail}")]
    Encode { key: String, detail: String },
}

/// Entries by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OutboxCounts {
    pub pending: u64,
    pub delivered: u64,
    pub failed: u64,
    /// Entries found undecodable and moved aside.
    pub corrupt: u64,
}

/// Durable storage of outbox entries. Every write is durable when the call returns.
pub trait OutboxStore: Send + Sync {
    /// Adds `entry` unless an entry with its key exists: true if it was added.
    fn enqueue(&self, entry: &OutboxEntry) -> Result<bool, OutboxError>;

    /// Claims up to `limit` entries due at `now_ms`, earliest due first (ties by key): each
    /// is stored as [`OutboxEntry::claim`] made it and returned so.
    fn claim_due(&self, now_ms: i64, limit: usize, lease: Duration) -> Result<Vec<OutboxEntry>, OutboxError>;

    /// Stores the outcome of a claimed delivery if the stored entry is still pending with the
    /// same attempt count (no newer claim): true if stored.
    fn finish(&self, entry: &OutboxEntry) -> Result<bool, OutboxError>;

    fn get(&self, key: &str) -> Result<Option<OutboxEntry>, OutboxError>;

    /// Entries in key order, of one state or all, at most `limit`.
    fn list(&self, state: Option<EntryState>, limit: usize) -> Result<Vec<OutboxEntry>, OutboxError>;

    /// Removes delivered and failed entries that finished before `before_ms`: how many.
    fn purge_finished(&self, before_ms: i64) -> Result<usize, OutboxError>;

    /// Makes every pending entry due by `now_ms` (a later next attempt becomes `now_ms`): how
    /// many moved. Called when a process starts on a store only it uses (sled): no claim of
    /// its predecessor can still be running, so a delivery cut off by a crash or waiting to
    /// retry is tried again at once. A store several processes share (PostgreSQL) releases
    /// only the claims of the instance that restarted.
    fn release_all(&self, now_ms: i64) -> Result<usize, OutboxError>;

    fn counts(&self) -> Result<OutboxCounts, OutboxError>;
}

/// The in-memory twin: the same contract, nothing durable.
#[derive(Debug, Default)]
pub struct MemoryOutbox {
    entries: Mutex<BTreeMap<String, OutboxEntry>>,
}

impl MemoryOutbox {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, OutboxEntry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl OutboxStore for MemoryOutbox {
    fn enqueue(&self, entry: &OutboxEntry) -> Result<bool, OutboxError> {
        let mut m = self.lock();
        if m.contains_key(&entry.key) {
            return Ok(false);
        }
        m.insert(entry.key.clone(), entry.clone());
        Ok(true)
    }

    fn claim_due(&self, now_ms: i64, limit: usize, lease: Duration) -> Result<Vec<OutboxEntry>, OutboxError> {
        let mut m = self.lock();
        let mut due: Vec<(i64, String)> = m
            .values()
            .filter(|e| e.is_due(now_ms))
            .map(|e| (e.next_attempt_ms, e.key.clone()))
            .collect();
        due.sort();
        let mut out = Vec::new();
        for (_, key) in due.into_iter().take(limit) {
            if let Some(e) = m.get_mut(&key) {
                *e = e.claim(now_ms, lease);
                out.push(e.clone());
            }
        }
        Ok(out)
    }

    fn finish(&self, entry: &OutboxEntry) -> Result<bool, OutboxError> {
        let mut m = self.lock();
        match m.get_mut(&entry.key) {
            Some(stored) if stored.state == EntryState::Pending && stored.attempts == entry.attempts => {
                *stored = entry.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn get(&self, key: &str) -> Result<Option<OutboxEntry>, OutboxError> {
        Ok(self.lock().get(key).cloned())
    }

    fn list(&self, state: Option<EntryState>, limit: usize) -> Result<Vec<OutboxEntry>, OutboxError> {
        Ok(self
            .lock()
            .values()
            .filter(|e| state.is_none_or(|s| e.state == s))
            .take(limit)
            .cloned()
            .collect())
    }

    fn purge_finished(&self, before_ms: i64) -> Result<usize, OutboxError> {
        let mut m = self.lock();
        let before = m.len();
        m.retain(|_, e| !e.is_purgeable(before_ms));
        Ok(before - m.len())
    }

    fn release_all(&self, now_ms: i64) -> Result<usize, OutboxError> {
        let mut n = 0;
        for e in self.lock().values_mut() {
            if e.state == EntryState::Pending && e.next_attempt_ms > now_ms {
                e.next_attempt_ms = now_ms;
                n += 1;
            }
        }
        Ok(n)
    }

    fn counts(&self) -> Result<OutboxCounts, OutboxError> {
        let mut c = OutboxCounts::default();
        for e in self.lock().values() {
            match e.state {
                EntryState::Pending => c.pending += 1,
                EntryState::Delivered => c.delivered += 1,
                EntryState::Failed => c.failed += 1,
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::build_notification;
    use super::super::{Outcome, RetryPolicy};
    use super::*;

    #[test]
    fn enqueuing_the_same_decision_twice_adds_one_entry() {
        let s = MemoryOutbox::new();
        let e = OutboxEntry::new("hook", build_notification(0), 0);
        assert!(s.enqueue(&e).unwrap());
        assert!(
            !s.enqueue(&OutboxEntry::new("hook", build_notification(0), 50))
                .unwrap()
        );
        assert!(
            s.enqueue(&OutboxEntry::new("mail", build_notification(0), 0))
                .unwrap()
        );
        assert_eq!(s.counts().unwrap().pending, 2);
    }

    #[test]
    fn a_stale_worker_cannot_overwrite_a_newer_claim() {
        let s = MemoryOutbox::new();
        let p = RetryPolicy::default();
        s.enqueue(&OutboxEntry::new("hook", build_notification(0), 0))
            .unwrap();
        let lease = Duration::from_secs(1);
        let first = s.claim_due(0, 10, lease).unwrap().remove(0);
        // the lease runs out; a second worker claims and delivers
        let second = s.claim_due(1_000, 10, lease).unwrap().remove(0);
        assert_eq!(second.attempts, 2);
        let delivered = second.finish(&Outcome::Delivered { receipt: "ok".into() }, 1_100, &p);
        assert!(s.finish(&delivered).unwrap());
        let late = first.finish(&Outcome::Fail { error: "x".into() }, 1_200, &p);
        assert!(!s.finish(&late).unwrap());
        assert_eq!(s.get(&first.key).unwrap().unwrap().state, EntryState::Delivered);
    }
}
