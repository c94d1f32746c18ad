//! The outbox in sled (tier 0), three trees of the server's database:
//! - `notify_outbox`: key -> the entry as versioned JSON (`{"v": 1, "entry": {...}}`);
//! - `notify_outbox_due`: (next attempt, big-endian with the sign bit flipped) ++ key -> key,
//!   one row per pending entry, so claiming reads only what is due;
//! - `notify_outbox_corrupt`: entries that could not be decoded, moved aside with their bytes
//!   (reported in [`OutboxCounts::corrupt`], never retried, never a crash).
//!
//! Each change of an entry and its due row is one sled transaction; every call that writes
//! flushes before it returns (the server's sled flushes on its own schedule otherwise), which
//! is what makes an enqueued notification survive a crash. Calls block: run them off actor
//! threads (`spawn_blocking`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::store::{OutboxCounts, OutboxError, OutboxStore};
use super::{EntryState, OutboxEntry};
use crate::store::FleetStore;

/// Version of the stored record.
pub const RECORD_VERSION: u32 = 1;

const ENTRIES: &str = "notify_outbox";
const DUE: &str = "notify_outbox_due";
const CORRUPT: &str = "notify_outbox_corrupt";

#[derive(Serialize)]
struct RecordRef<'a> {
    v: u32,
    entry: &'a OutboxEntry,
}

#[derive(Deserialize)]
struct Record {
    v: u32,
    entry: OutboxEntry,
}

fn encode(e: &OutboxEntry) -> Result<Vec<u8>, OutboxError> {
    serde_json::to_vec(&RecordRef {
        v: RECORD_VERSION,
        entry: e,
    })
    .map_err(|err| OutboxError::Encode {
        key: e.key.clone(),
        detail: err.to_string(),
    })
}

fn decode(key: &[u8], bytes: &[u8]) -> Result<OutboxEntry, OutboxError> {
    let corrupt = |detail: String| OutboxError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        detail,
    };
    let r: Record = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if r.v != RECORD_VERSION {
        return Err(corrupt(format!(
            "record version {} (this build reads {RECORD_VERSION})",
            r.v
        )));
    }
    if r.entry.key.as_bytes() != key {
        return Err(corrupt(format!("stored under another key ({:?})", r.entry.key)));
    }
    Ok(r.entry)
}

/// The due row of a pending entry: sorts by time, then key.
fn due_key(next_attempt_ms: i64, key: &str) -> Vec<u8> {
    let mut k = ((next_attempt_ms as u64) ^ (1 << 63)).to_be_bytes().to_vec();
    k.extend_from_slice(key.as_bytes());
    k
}

fn due_time(due: &[u8]) -> Option<i64> {
    let b: [u8; 8] = due.get(..8)?.try_into().ok()?;
    Some((u64::from_be_bytes(b) ^ (1 << 63)) as i64)
}

fn storage(e: impl std::fmt::Display) -> OutboxError {
    OutboxError::Storage(e.to_string())
}

fn tx_err(e: TransactionError<OutboxError>) -> OutboxError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => storage(e),
    }
}

/// The outbox in the server's sled database.
#[derive(Clone)]
pub struct SledOutbox {
    db: sled::Db,
    entries: sled::Tree,
    due: sled::Tree,
    corrupt: sled::Tree,
    /// The server's store handle, so the store counts as open while the outbox is in use.
    _store: Option<FleetStore>,
}

impl std::fmt::Debug for SledOutbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledOutbox").finish_non_exhaustive()
    }
}

impl SledOutbox {
    pub fn open(db: &sled::Db) -> Result<SledOutbox, OutboxError> {
        Ok(SledOutbox {
            db: db.clone(),
            entries: db.open_tree(ENTRIES).map_err(storage)?,
            due: db.open_tree(DUE).map_err(storage)?,
            corrupt: db.open_tree(CORRUPT).map_err(storage)?,
            _store: None,
        })
    }

    /// The outbox in the server's store (its trees beside the others').
    pub fn open_in(store: &FleetStore) -> Result<SledOutbox, OutboxError> {
        Ok(SledOutbox {
            _store: Some(store.clone()),
            ..SledOutbox::open(store.sled())?
        })
    }

    fn flush(&self) -> Result<(), OutboxError> {
        self.db.flush().map(|_| ()).map_err(storage)
    }

    /// Moves an undecodable entry and its due row aside.
    fn set_aside(
        &self,
        key: &[u8],
        bytes: &[u8],
        due_row: Option<&[u8]>,
        error: &OutboxError,
    ) -> Result<(), OutboxError> {
        tracing::error!(error = %error, "outbox entry moved aside");
        (&self.entries, &self.due, &self.corrupt)
            .transaction(|(entries, due, corrupt)| {
                corrupt.insert(key, bytes)?;
                entries.remove(key)?;
                if let Some(d) = due_row {
                    due.remove(d)?;
                }
                Ok::<_, ConflictableTransactionError<OutboxError>>(())
            })
            .map_err(tx_err)
    }

    /// Claims the entry of one due row, if it is still due: the claimed entry.
    fn claim_row(
        &self,
        due_row: &[u8],
        key: &[u8],
        now_ms: i64,
        lease: Duration,
    ) -> Result<Option<OutboxEntry>, OutboxError> {
        let Some(bytes) = self.entries.get(key).map_err(storage)? else {
            // a due row without its entry: repair the index
            self.due.remove(due_row).map_err(storage)?;
            return Ok(None);
        };
        let entry = match decode(key, &bytes) {
            Ok(e) => e,
            Err(e) => {
                self.set_aside(key, &bytes, Some(due_row), &e)?;
                return Ok(None);
            }
        };
        if !entry.is_due(now_ms) || due_key(entry.next_attempt_ms, &entry.key) != due_row {
            self.due.remove(due_row).map_err(storage)?;
            return Ok(None);
        }
        let claimed = entry.claim(now_ms, lease);
        let value = encode(&claimed)?;
        let new_row = due_key(claimed.next_attempt_ms, &claimed.key);
        let done = (&self.entries, &self.due)
            .transaction(|(entries, due)| {
                // another claim between our read and this write loses nothing: compare first
                if entries.get(key)?.as_deref() != Some(&bytes[..]) {
                    return Ok(false);
                }
                entries.insert(key, value.as_slice())?;
                due.remove(due_row)?;
                due.insert(new_row.as_slice(), key)?;
                Ok::<_, ConflictableTransactionError<OutboxError>>(true)
            })
            .map_err(tx_err)?;
        Ok(done.then_some(claimed))
    }
}

impl OutboxStore for SledOutbox {
    fn enqueue(&self, entry: &OutboxEntry) -> Result<bool, OutboxError> {
        let value = encode(entry)?;
        let key = entry.key.as_bytes();
        let row = (entry.state == EntryState::Pending).then(|| due_key(entry.next_attempt_ms, &entry.key));
        let added = (&self.entries, &self.due)
            .transaction(|(entries, due)| {
                if entries.get(key)?.is_some() {
                    return Ok(false);
                }
                entries.insert(key, value.as_slice())?;
                if let Some(r) = &row {
                    due.insert(r.as_slice(), key)?;
                }
                Ok::<_, ConflictableTransactionError<OutboxError>>(true)
            })
            .map_err(tx_err)?;
        if added {
            self.flush()?;
        }
        Ok(added)
    }

    fn claim_due(&self, now_ms: i64, limit: usize, lease: Duration) -> Result<Vec<OutboxEntry>, OutboxError> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut changed = false;
        for item in self.due.iter() {
            if out.len() >= limit {
                break;
            }
            let (row, key) = item.map_err(storage)?;
            if due_time(&row).is_none_or(|t| t > now_ms) {
                break;
            }
            // a zero lease puts a claimed row back in range: claim each entry once a call
            if !seen.insert(key.clone()) {
                continue;
            }
            changed = true;
            if let Some(e) = self.claim_row(&row, &key, now_ms, lease)? {
                out.push(e);
            }
        }
        if changed {
            self.flush()?;
        }
        Ok(out)
    }

    fn finish(&self, entry: &OutboxEntry) -> Result<bool, OutboxError> {
        let key = entry.key.as_bytes();
        let Some(bytes) = self.entries.get(key).map_err(storage)? else {
            return Ok(false);
        };
        let stored = match decode(key, &bytes) {
            Ok(s) => s,
            Err(e) => {
                let row = self
                    .due
                    .iter()
                    .filter_map(Result::ok)
                    .find(|(_, k)| k.as_ref() == key)
                    .map(|(r, _)| r);
                self.set_aside(key, &bytes, row.as_deref(), &e)?;
                return Err(e);
            }
        };
        if stored.state != EntryState::Pending || stored.attempts != entry.attempts {
            return Ok(false);
        }
        let value = encode(entry)?;
        let old_row = due_key(stored.next_attempt_ms, &stored.key);
        let new_row =
            (entry.state == EntryState::Pending).then(|| due_key(entry.next_attempt_ms, &entry.key));
        let done = (&self.entries, &self.due)
            .transaction(|(entries, due)| {
                if entries.get(key)?.as_deref() != Some(&bytes[..]) {
                    return Ok(false);
                }
                entries.insert(key, value.as_slice())?;
                due.remove(old_row.as_slice())?;
                if let Some(r) = &new_row {
                    due.insert(r.as_slice(), key)?;
                }
                Ok::<_, ConflictableTransactionError<OutboxError>>(true)
            })
            .map_err(tx_err)?;
        if done {
            self.flush()?;
        }
        Ok(done)
    }

    fn get(&self, key: &str) -> Result<Option<OutboxEntry>, OutboxError> {
        match self.entries.get(key.as_bytes()).map_err(storage)? {
            Some(bytes) => decode(key.as_bytes(), &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn list(&self, state: Option<EntryState>, limit: usize) -> Result<Vec<OutboxEntry>, OutboxError> {
        let mut out = Vec::new();
        for item in self.entries.iter() {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(storage)?;
            match decode(&k, &v) {
                Ok(e) if state.is_none_or(|s| e.state == s) => out.push(e),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "outbox entry skipped in a listing"),
            }
        }
        Ok(out)
    }

    fn purge_finished(&self, before_ms: i64) -> Result<usize, OutboxError> {
        let mut gone = Vec::new();
        for item in self.entries.iter() {
            let (k, v) = item.map_err(storage)?;
            if decode(&k, &v).is_ok_and(|e| e.is_purgeable(before_ms)) {
                gone.push(k);
            }
        }
        for k in &gone {
            self.entries.remove(k).map_err(storage)?;
        }
        if !gone.is_empty() {
            self.flush()?;
        }
        Ok(gone.len())
    }

    fn release_all(&self, now_ms: i64) -> Result<usize, OutboxError> {
        let start = due_key(now_ms.saturating_add(1), "");
        let mut moved = 0;
        for item in self.due.range(start..) {
            let (row, key) = item.map_err(storage)?;
            let Some(bytes) = self.entries.get(&key).map_err(storage)? else {
                self.due.remove(&row).map_err(storage)?;
                continue;
            };
            let entry = match decode(&key, &bytes) {
                Ok(e) => e,
                Err(e) => {
                    self.set_aside(&key, &bytes, Some(&row), &e)?;
                    continue;
                }
            };
            let released = OutboxEntry {
                next_attempt_ms: now_ms,
                ..entry
            };
            let value = encode(&released)?;
            let new_row = due_key(now_ms, &released.key);
            (&self.entries, &self.due)
                .transaction(|(entries, due)| {
                    entries.insert(&key, value.as_slice())?;
                    due.remove(&row)?;
                    due.insert(new_row.as_slice(), &key)?;
                    Ok::<_, ConflictableTransactionError<OutboxError>>(())
                })
                .map_err(tx_err)?;
            moved += 1;
        }
        if moved > 0 {
            self.flush()?;
        }
        Ok(moved)
    }

    fn counts(&self) -> Result<OutboxCounts, OutboxError> {
        let mut c = OutboxCounts {
            corrupt: self.corrupt.len() as u64,
            ..Default::default()
        };
        for item in self.entries.iter() {
            let (k, v) = item.map_err(storage)?;
            match decode(&k, &v).map(|e| e.state) {
                Ok(EntryState::Pending) => c.pending += 1,
                Ok(EntryState::Delivered) => c.delivered += 1,
                Ok(EntryState::Failed) => c.failed += 1,
                Err(_) => c.corrupt += 1,
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use proptest::prelude::*;

    use super::super::testing::build_notification;
    use super::super::{MemoryOutbox, Outcome, RetryPolicy};
    use super::*;

    const LEASE: Duration = Duration::from_secs(60);
    /// Set for the child process of the crash tests: its data directory.
    const CRASH_DIR_ENV: &str = "RVM_OUTBOX_CRASH_DIR";

    fn build_db(path: &Path) -> sled::Db {
        // as the server opens it: a small cache, no background flush (only ours counts)
        sled::Config::new()
            .path(path)
            .cache_capacity(1 << 20)
            .flush_every_ms(None)
            .open()
            .unwrap()
    }

    fn build_temporary() -> SledOutbox {
        let db = sled::Config::new().temporary(true).open().unwrap();
        SledOutbox::open(&db).unwrap()
    }

    /// Runs the test `name` of this binary in a child process with `CRASH_DIR_ENV=dir`; the
    /// child does its part and aborts (no destructor, no flush but the outbox's own).
    fn run_crashing_child(name: &str, dir: &Path) {
        let test = name.trim_start_matches("fleet_server::");
        let status = Command::new(std::env::current_exe().unwrap())
            .args([test, "--exact", "--test-threads=1", "--nocapture"])
            .env(CRASH_DIR_ENV, dir)
            .status()
            .unwrap();
        assert!(
            !status.success(),
            "the child must die by abort, not pass: {status}"
        );
    }

    #[test]
    fn an_entry_enqueued_before_an_abort_is_due_after_reopening() {
        if let Some(dir) = std::env::var_os(CRASH_DIR_ENV) {
            let s = SledOutbox::open(&build_db(Path::new(&dir))).unwrap();
            assert!(
                s.enqueue(&OutboxEntry::new("pager", build_notification(0), 1_000))
                    .unwrap()
            );
            std::process::abort();
        }
        let dir = tempfile::tempdir().unwrap();
        run_crashing_child(
            concat!(
                module_path!(),
                "::an_entry_enqueued_before_an_abort_is_due_after_reopening"
            ),
            dir.path(),
        );
        let s = SledOutbox::open(&build_db(dir.path())).unwrap();
        let due = s.claim_due(2_000, 10, LEASE).unwrap();
        assert_eq!(due.len(), 1, "{due:?}");
        assert_eq!(due[0].key, "pager/rule0:RVM1:1/firing");
        assert_eq!(due[0].notification, build_notification(0));
    }

    #[test]
    fn an_entry_claimed_before_an_abort_is_delivered_again_after_its_lease() {
        if let Some(dir) = std::env::var_os(CRASH_DIR_ENV) {
            let s = SledOutbox::open(&build_db(Path::new(&dir))).unwrap();
            s.enqueue(&OutboxEntry::new("pager", build_notification(0), 1_000))
                .unwrap();
            let claimed = s.claim_due(1_000, 10, LEASE).unwrap();
            assert_eq!(claimed.len(), 1);
            // dies during the delivery
            std::process::abort();
        }
        let dir = tempfile::tempdir().unwrap();
        run_crashing_child(
            concat!(
                module_path!(),
                "::an_entry_claimed_before_an_abort_is_delivered_again_after_its_lease"
            ),
            dir.path(),
        );
        let s = SledOutbox::open(&build_db(dir.path())).unwrap();
        let lease_end = 1_000 + LEASE.as_millis() as i64;
        assert!(
            s.claim_due(lease_end - 1, 10, LEASE).unwrap().is_empty(),
            "still leased"
        );
        let again = s.claim_due(lease_end, 10, LEASE).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempts, 2, "the first attempt was recorded");
    }

    #[test]
    fn a_finished_entry_survives_a_reopen_and_is_not_due() {
        let dir = tempfile::tempdir().unwrap();
        let p = RetryPolicy::default();
        {
            let s = SledOutbox::open(&build_db(dir.path())).unwrap();
            s.enqueue(&OutboxEntry::new("hook", build_notification(0), 0))
                .unwrap();
            s.enqueue(&OutboxEntry::new("hook", build_notification(1), 0))
                .unwrap();
            let c = s.claim_due(0, 10, LEASE).unwrap();
            assert!(
                s.finish(&c[0].finish(
                    &Outcome::Delivered {
                        receipt: "200".into()
                    },
                    5,
                    &p
                ))
                .unwrap()
            );
            assert!(
                s.finish(&c[1].finish(&Outcome::Retry { error: "503".into() }, 5, &p))
                    .unwrap()
            );
        }
        let s = SledOutbox::open(&build_db(dir.path())).unwrap();
        let counts = s.counts().unwrap();
        assert_eq!((counts.pending, counts.delivered), (1, 1));
        let retry = s.list(Some(EntryState::Pending), 10).unwrap().remove(0);
        assert!(
            s.claim_due(retry.next_attempt_ms - 1, 10, LEASE)
                .unwrap()
                .is_empty()
        );
        assert_eq!(s.claim_due(retry.next_attempt_ms, 10, LEASE).unwrap().len(), 1);
    }

    #[test]
    fn a_corrupt_entry_is_moved_aside_and_the_others_are_still_claimed() {
        let s = build_temporary();
        s.enqueue(&OutboxEntry::new("hook", build_notification(0), 0))
            .unwrap();
        s.enqueue(&OutboxEntry::new("hook", build_notification(2), 0))
            .unwrap();
        // one garbage value, one truncated record
        let keys: Vec<_> = s.entries.iter().keys().map(Result::unwrap).collect();
        s.entries.insert(&keys[0], &b"\x00\x01not json"[..]).unwrap();
        let whole = s.entries.get(&keys[1]).unwrap().unwrap();
        s.entries.insert(&keys[1], &whole[..whole.len() / 2]).unwrap();
        s.enqueue(&OutboxEntry::new("hook", build_notification(4), 0))
            .unwrap();
        let claimed = s.claim_due(10, 10, LEASE).unwrap();
        assert_eq!(claimed.len(), 1, "{claimed:?}");
        assert_eq!(claimed[0].key, "hook/rule2:RVM1:1/firing");
        let c = s.counts().unwrap();
        assert_eq!((c.pending, c.corrupt), (1, 2));
        let later = s.claim_due(10_000_000, 10, LEASE).unwrap();
        assert_eq!(later.len(), 1, "the corrupt ones are not retried: {later:?}");
        assert_eq!(later[0].key, "hook/rule2:RVM1:1/firing");
    }

    #[test]
    fn a_record_of_another_version_is_corrupt_not_misread() {
        let e = OutboxEntry::new("hook", build_notification(0), 0);
        let mut v: serde_json::Value = serde_json::from_slice(&encode(&e).unwrap()).unwrap();
        v["v"] = 2.into();
        let err = decode(e.key.as_bytes(), &serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(err.to_string().contains("record version 2"), "{err}");
    }

    #[test]
    fn due_rows_sort_by_time_including_negative_times() {
        let mut rows = [
            due_key(5, "a"),
            due_key(-5, "z"),
            due_key(i64::MAX, "m"),
            due_key(0, "b"),
        ];
        rows.sort();
        let times: Vec<i64> = rows.iter().map(|r| due_time(r).unwrap()).collect();
        assert_eq!(times, [-5, 0, 5, i64::MAX]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Enqueue { channel: u8, notification: u32 },
        Claim { limit: usize },
        Finish { which: usize, outcome: u8 },
        Purge,
        Release,
        Advance { ms: i64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..3, 0u32..6).prop_map(|(channel, notification)| Op::Enqueue {
                channel,
                notification
            }),
            (1usize..4).prop_map(|limit| Op::Claim { limit }),
            (0usize..8, 0u8..3).prop_map(|(which, outcome)| Op::Finish { which, outcome }),
            Just(Op::Purge),
            Just(Op::Release),
            (0i64..4_000_000).prop_map(|ms| Op::Advance { ms }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The sled store and the in-memory twin answer every sequence of calls alike.
        #[test]
        fn the_sled_outbox_behaves_like_its_in_memory_twin(ops in proptest::collection::vec(op(), 1..40)) {
            let sled = build_temporary();
            let mem = MemoryOutbox::new();
            let p = RetryPolicy {
                keep_finished: Duration::from_secs(3600),
                ..RetryPolicy::default()
            };
            let mut now = 0i64;
            let mut claimed: Vec<OutboxEntry> = Vec::new();
            for op in ops {
                match op {
                    Op::Enqueue { channel, notification } => {
                        let e = OutboxEntry::new(&format!("c{channel}"), build_notification(notification), now);
                        prop_assert_eq!(sled.enqueue(&e).unwrap(), mem.enqueue(&e).unwrap());
                    }
                    Op::Claim { limit } => {
                        let a = sled.claim_due(now, limit, LEASE).unwrap();
                        let b = mem.claim_due(now, limit, LEASE).unwrap();
                        prop_assert_eq!(&a, &b);
                        claimed.extend(a);
                    }
                    Op::Finish { which, outcome } => {
                        if claimed.is_empty() {
                            continue;
                        }
                        let c = claimed.remove(which % claimed.len());
                        let outcome = match outcome {
                            0 => Outcome::Delivered { receipt: "200".into() },
                            1 => Outcome::Retry { error: "503".into() },
                            _ => Outcome::Fail { error: "tls".into() },
                        };
                        let f = c.finish(&outcome, now, &p);
                        prop_assert_eq!(sled.finish(&f).unwrap(), mem.finish(&f).unwrap());
                    }
                    Op::Purge => {
                        let before = now - p.keep_finished.as_millis() as i64;
                        prop_assert_eq!(sled.purge_finished(before).unwrap(), mem.purge_finished(before).unwrap());
                    }
                    Op::Release => {
                        prop_assert_eq!(sled.release_all(now).unwrap(), mem.release_all(now).unwrap());
                    }
                    Op::Advance { ms } => now += ms,
                }
                prop_assert_eq!(sled.counts().unwrap(), mem.counts().unwrap());
            }
            prop_assert_eq!(sled.list(None, usize::MAX).unwrap(), mem.list(None, usize::MAX).unwrap());
        }
    }
}
