//! Storage behind the buffer: sled on a real machine, memory for simulated machines and
//! for the model-based tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Records sort by class first (priority records before telemetry), then by seq.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub class: u8,
    pub seq: u64,
}

impl Key {
    pub const PRIORITY: u8 = 0;
    pub const TELEMETRY: u8 = 1;
    pub const CLASSES: usize = 2;

    pub fn to_bytes(self) -> [u8; 9] {
        let mut b = [0u8; 9];
        b[0] = self.class;
        b[1..].copy_from_slice(&self.seq.to_be_bytes());
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<Key> {
        if b.len() != 9 {
            return None;
        }
        let mut s = [0u8; 8];
        s.copy_from_slice(&b[1..]);
        Some(Key {
            class: b[0],
            seq: u64::from_be_bytes(s),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {error}")]
    Sled { path: PathBuf, error: sled::Error },
    #[error("corrupt record under key {0:?}")]
    Corrupt(Vec<u8>),
}

/// The operations the buffer needs. Implementations must keep keys in order.
pub trait Store: Send + 'static {
    fn insert(&mut self, key: Key, value: &[u8]) -> Result<(), StoreError>;
    /// Removes a record; returns its size if it was there.
    fn remove(&mut self, key: Key) -> Result<Option<usize>, StoreError>;
    /// Up to `n` records of `class` with seq greater than `after`, in order.
    fn scan(&self, class: u8, after: Option<u64>, n: usize) -> Result<Vec<(Key, Vec<u8>)>, StoreError>;
    /// The oldest record of `class`.
    fn first(&self, class: u8) -> Result<Option<(Key, usize)>, StoreError>;
    /// The key of the newest record of `class` (read without walking the others).
    fn last(&self, class: u8) -> Result<Option<Key>, StoreError>;
    /// Count and total value bytes of all records (computed at open, then tracked by the caller).
    fn count_and_bytes(&self) -> Result<(u64, u64), StoreError>;
    /// The highest seq ever used (persisted), if any.
    fn last_seq(&self) -> Result<Option<u64>, StoreError>;
    /// Drops counted and not yet reported (an encoded value kept beside the records).
    fn pending_drops(&self) -> Result<Option<Vec<u8>>, StoreError>;
    fn set_pending_drops(&mut self, value: Option<&[u8]>) -> Result<(), StoreError>;
    /// A clean stop: keeps the count and bytes of the records, so the next open need not
    /// read every record to know them. Forgotten at the first write after.
    fn save_counts(&mut self, _records: u64, _bytes: u64) -> Result<(), StoreError> {
        Ok(())
    }
    fn set_last_seq(&mut self, seq: u64) -> Result<(), StoreError>;
    /// Makes everything written so far durable. Blocking.
    fn flush(&self) -> Result<(), StoreError>;
    /// What makes everything written so far durable from another thread (the buffer actor
    /// flushes on a blocking thread); `None` when there is nothing to flush.
    fn flusher(&self) -> Option<Flusher> {
        None
    }
    /// Bytes on disk (0 in memory).
    fn disk_bytes(&self) -> u64;
}

/// A store's flush, callable from any thread. Blocking.
pub type Flusher = Arc<dyn Fn() -> Result<(), StoreError> + Send + Sync>;

/// A boxed store is a store (the agent's buffer holds sled or memory behind one type).
impl Store for Box<dyn Store> {
    fn insert(&mut self, key: Key, value: &[u8]) -> Result<(), StoreError> {
        (**self).insert(key, value)
    }
    fn remove(&mut self, key: Key) -> Result<Option<usize>, StoreError> {
        (**self).remove(key)
    }
    fn scan(&self, class: u8, after: Option<u64>, n: usize) -> Result<Vec<(Key, Vec<u8>)>, StoreError> {
        (**self).scan(class, after, n)
    }
    fn first(&self, class: u8) -> Result<Option<(Key, usize)>, StoreError> {
        (**self).first(class)
    }
    fn last(&self, class: u8) -> Result<Option<Key>, StoreError> {
        (**self).last(class)
    }
    fn count_and_bytes(&self) -> Result<(u64, u64), StoreError> {
        (**self).count_and_bytes()
    }
    fn last_seq(&self) -> Result<Option<u64>, StoreError> {
        (**self).last_seq()
    }
    fn set_last_seq(&mut self, seq: u64) -> Result<(), StoreError> {
        (**self).set_last_seq(seq)
    }
    fn pending_drops(&self) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).pending_drops()
    }
    fn set_pending_drops(&mut self, value: Option<&[u8]>) -> Result<(), StoreError> {
        (**self).set_pending_drops(value)
    }
    fn save_counts(&mut self, records: u64, bytes: u64) -> Result<(), StoreError> {
        (**self).save_counts(records, bytes)
    }
    fn flush(&self) -> Result<(), StoreError> {
        (**self).flush()
    }
    fn flusher(&self) -> Option<Flusher> {
        (**self).flusher()
    }
    fn disk_bytes(&self) -> u64 {
        (**self).disk_bytes()
    }
}

/// In-memory store: simulated machines and tests. Nothing survives the process.
#[derive(Debug, Default)]
pub struct MemStore {
    records: BTreeMap<Key, Vec<u8>>,
    last_seq: Option<u64>,
    pending_drops: Option<Vec<u8>>,
}

impl Store for MemStore {
    fn insert(&mut self, key: Key, value: &[u8]) -> Result<(), StoreError> {
        self.records.insert(key, value.to_vec());
        Ok(())
    }
    fn remove(&mut self, key: Key) -> Result<Option<usize>, StoreError> {
        Ok(self.records.remove(&key).map(|v| v.len()))
    }
    fn scan(&self, class: u8, after: Option<u64>, n: usize) -> Result<Vec<(Key, Vec<u8>)>, StoreError> {
        let start = Key {
            class,
            seq: after.map_or(0, |s| s.saturating_add(1)),
        };
        if after == Some(u64::MAX) {
            return Ok(Vec::new());
        }
        Ok(self
            .records
            .range(start..)
            .take_while(|(k, _)| k.class == class)
            .take(n)
            .map(|(k, v)| (*k, v.clone()))
            .collect())
    }
    fn first(&self, class: u8) -> Result<Option<(Key, usize)>, StoreError> {
        Ok(self
            .records
            .range(Key { class, seq: 0 }..)
            .next()
            .filter(|(k, _)| k.class == class)
            .map(|(k, v)| (*k, v.len())))
    }
    fn last(&self, class: u8) -> Result<Option<Key>, StoreError> {
        Ok(self
            .records
            .range(Key { class, seq: 0 }..=Key { class, seq: u64::MAX })
            .next_back()
            .map(|(k, _)| *k))
    }
    fn count_and_bytes(&self) -> Result<(u64, u64), StoreError> {
        Ok((
            self.records.len() as u64,
            self.records.values().map(|v| v.len() as u64).sum(),
        ))
    }
    fn last_seq(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.last_seq)
    }
    fn set_last_seq(&mut self, seq: u64) -> Result<(), StoreError> {
        self.last_seq = Some(seq);
        Ok(())
    }
    fn pending_drops(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.pending_drops.clone())
    }
    fn set_pending_drops(&mut self, value: Option<&[u8]>) -> Result<(), StoreError> {
        self.pending_drops = value.map(<[u8]>::to_vec);
        Ok(())
    }
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
    fn disk_bytes(&self) -> u64 {
        0
    }
}

/// sled-backed store. Records in tree `records`, the last seq under `meta/last_seq`.
pub struct SledStore {
    path: PathBuf,
    db: sled::Db,
    records: sled::Tree,
    meta: sled::Tree,
    /// Count and bytes of the records as counted at open, until the first write.
    counted_at_open: Option<(u64, u64)>,
    /// The count a clean stop saved is still in `meta` (removed before the first write).
    counts_saved: bool,
}

/// Page cache for sled: small, the buffer is read sequentially (docs/architecture.md, crate pitfalls).
pub const SLED_CACHE_BYTES: u64 = 1 << 20;
/// A backlog read at open larger than this is shed from memory by reopening the store.
pub const SHED_AFTER_BYTES: u64 = 1 << 20;
/// Tries 50 ms apart to take the directory's lock a handle just dropped may still hold.
const LOCK_RETRIES: u32 = 40;

const LAST_SEQ: &[u8] = b"last_seq";
const PENDING_DROPS: &[u8] = b"pending_drops";
const COUNTS: &[u8] = b"counts";

impl SledStore {
    /// Opens (or creates) the store. `flush_every_ms` is sled's background fsync period.
    ///
    /// After a clean stop the count and bytes of the records are kept in the store
    /// ([`Store::save_counts`]). Otherwise they are counted here, which reads every record.
    /// sled 0.34 takes page accesses in batches of 64 per shard over 256 shards, so the pages
    /// of one pass are not evicted and a read backlog would stay in memory until drained:
    /// 36,000 queued records held 27 MiB more this way (sled issue #1036, "OOM while
    /// traversing large database"). Past [`SHED_AFTER_BYTES`] the store is therefore opened a
    /// second time, and the allocator asked to return what the first handle held.
    pub fn open(path: &Path, flush_every_ms: Option<u64>) -> Result<SledStore, StoreError> {
        let mut store = SledStore::open_once(path, flush_every_ms)?;
        // after a clean stop the count is kept: nothing to read
        if let Some(v) = store.meta.get(COUNTS).map_err(|e| store.err(e))?
            && let (Some(n), Some(b)) = (v.get(..8), v.get(8..16))
            && let (Ok(n), Ok(b)) = (<[u8; 8]>::try_from(n), <[u8; 8]>::try_from(b))
        {
            store.counted_at_open = Some((u64::from_be_bytes(n), u64::from_be_bytes(b)));
            store.counts_saved = true;
            return Ok(store);
        }
        let counted = store.count_and_bytes()?;
        if counted.1 > SHED_AFTER_BYTES {
            drop(store);
            store = SledStore::open_once(path, flush_every_ms)?;
            proc_mem::trim();
        }
        store.counted_at_open = Some(counted);
        Ok(store)
    }

    fn open_once(path: &Path, flush_every_ms: Option<u64>) -> Result<SledStore, StoreError> {
        let err = |error| StoreError::Sled {
            path: path.to_path_buf(),
            error,
        };
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(SLED_CACHE_BYTES)
            .flush_every_ms(flush_every_ms)
            .mode(sled::Mode::LowSpace);
        // A handle just dropped (ours, a moment ago) can hold the directory's lock while
        // sled's IO threads finish its last writes: wait for it, briefly.
        let mut tries = 0;
        let db = loop {
            match config.open() {
                Err(e) if tries < LOCK_RETRIES && e.to_string().contains("could not acquire lock") => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => break other.map_err(err)?,
            }
        };
        let records = db.open_tree("records").map_err(err)?;
        let meta = db.open_tree("meta").map_err(err)?;
        Ok(SledStore {
            path: path.to_path_buf(),
            db,
            records,
            meta,
            counted_at_open: None,
            counts_saved: false,
        })
    }

    /// The database, for other trees (the executed-command record).
    pub fn db(&self) -> sled::Db {
        self.db.clone()
    }

    fn err(&self, error: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.path.clone(),
            error,
        }
    }

    /// Before a write: the count a clean stop saved is about to be wrong.
    fn forget_saved_counts(&mut self) -> Result<(), StoreError> {
        self.counted_at_open = None;
        if self.counts_saved {
            self.meta.remove(COUNTS).map_err(|e| self.err(e))?;
            self.counts_saved = false;
        }
        Ok(())
    }
}

impl Store for SledStore {
    fn insert(&mut self, key: Key, value: &[u8]) -> Result<(), StoreError> {
        self.forget_saved_counts()?;
        self.records
            .insert(key.to_bytes(), value)
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
    fn remove(&mut self, key: Key) -> Result<Option<usize>, StoreError> {
        self.forget_saved_counts()?;
        self.records
            .remove(key.to_bytes())
            .map(|v| v.map(|v| v.len()))
            .map_err(|e| self.err(e))
    }
    fn scan(&self, class: u8, after: Option<u64>, n: usize) -> Result<Vec<(Key, Vec<u8>)>, StoreError> {
        if after == Some(u64::MAX) {
            return Ok(Vec::new());
        }
        let start = Key {
            class,
            seq: after.map_or(0, |s| s + 1),
        }
        .to_bytes();
        let end = Key {
            class: class + 1,
            seq: 0,
        }
        .to_bytes();
        let mut out = Vec::with_capacity(n.min(1024));
        for item in self.records.range(start..end).take(n) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let key = Key::from_bytes(&k).ok_or_else(|| StoreError::Corrupt(k.to_vec()))?;
            out.push((key, v.to_vec()));
        }
        Ok(out)
    }
    fn first(&self, class: u8) -> Result<Option<(Key, usize)>, StoreError> {
        Ok(self
            .scan(class, None, 1)?
            .into_iter()
            .next()
            .map(|(k, v)| (k, v.len())))
    }
    fn last(&self, class: u8) -> Result<Option<Key>, StoreError> {
        let lo = Key { class, seq: 0 }.to_bytes();
        let hi = Key { class, seq: u64::MAX }.to_bytes();
        match self.records.range(lo..=hi).next_back() {
            Some(item) => {
                let (k, _) = item.map_err(|e| self.err(e))?;
                Key::from_bytes(&k)
                    .map(Some)
                    .ok_or_else(|| StoreError::Corrupt(k.to_vec()))
            }
            None => Ok(None),
        }
    }
    fn count_and_bytes(&self) -> Result<(u64, u64), StoreError> {
        if let Some(c) = self.counted_at_open {
            return Ok(c);
        }
        let mut n = 0;
        let mut bytes = 0;
        for item in self.records.iter() {
            let (_, v) = item.map_err(|e| self.err(e))?;
            n += 1;
            bytes += v.len() as u64;
        }
        Ok((n, bytes))
    }
    fn last_seq(&self) -> Result<Option<u64>, StoreError> {
        let v = self.meta.get(LAST_SEQ).map_err(|e| self.err(e))?;
        Ok(v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok().map(u64::from_be_bytes)))
    }
    fn set_last_seq(&mut self, seq: u64) -> Result<(), StoreError> {
        self.meta
            .insert(LAST_SEQ, &seq.to_be_bytes())
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
    fn pending_drops(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let v = self.meta.get(PENDING_DROPS).map_err(|e| self.err(e))?;
        Ok(v.map(|v| v.to_vec()))
    }
    fn set_pending_drops(&mut self, value: Option<&[u8]>) -> Result<(), StoreError> {
        match value {
            Some(v) => self.meta.insert(PENDING_DROPS, v).map(|_| ()),
            None => self.meta.remove(PENDING_DROPS).map(|_| ()),
        }
        .map_err(|e| self.err(e))
    }
    fn save_counts(&mut self, records: u64, bytes: u64) -> Result<(), StoreError> {
        let mut v = [0u8; 16];
        v[..8].copy_from_slice(&records.to_be_bytes());
        v[8..].copy_from_slice(&bytes.to_be_bytes());
        self.meta.insert(COUNTS, &v).map_err(|e| self.err(e))?;
        self.counts_saved = true;
        // what the next open of this store object reads (a restart of the buffer actor)
        self.counted_at_open = Some((records, bytes));
        Ok(())
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(|e| self.err(e))
    }
    fn flusher(&self) -> Option<Flusher> {
        let (db, path) = (self.db.clone(), self.path.clone());
        Some(Arc::new(move || {
            db.flush().map(|_| ()).map_err(|error| StoreError::Sled {
                path: path.clone(),
                error,
            })
        }))
    }
    fn disk_bytes(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(store: &mut dyn Store) {
        for seq in [3u64, 1, 2] {
            store
                .insert(
                    Key {
                        class: Key::TELEMETRY,
                        seq,
                    },
                    &[seq as u8; 4],
                )
                .unwrap();
        }
        store
            .insert(
                Key {
                    class: Key::PRIORITY,
                    seq: 9,
                },
                b"h",
            )
            .unwrap();
        let t: Vec<u64> = store
            .scan(Key::TELEMETRY, None, 10)
            .unwrap()
            .iter()
            .map(|(k, _)| k.seq)
            .collect();
        assert_eq!(t, vec![1, 2, 3]);
        let t: Vec<u64> = store
            .scan(Key::TELEMETRY, Some(1), 1)
            .unwrap()
            .iter()
            .map(|(k, _)| k.seq)
            .collect();
        assert_eq!(t, vec![2]);
        assert_eq!(store.scan(Key::PRIORITY, None, 10).unwrap().len(), 1);
        assert_eq!(
            store.first(Key::TELEMETRY).unwrap(),
            Some((Key { class: 1, seq: 1 }, 4))
        );
        assert_eq!(store.remove(Key { class: 1, seq: 1 }).unwrap(), Some(4));
        assert_eq!(store.remove(Key { class: 1, seq: 1 }).unwrap(), None);
        assert_eq!(store.count_and_bytes().unwrap(), (3, 9));
        assert_eq!(
            store.last(Key::TELEMETRY).unwrap(),
            Some(Key { class: 1, seq: 3 })
        );
        assert_eq!(store.last(Key::PRIORITY).unwrap(), Some(Key { class: 0, seq: 9 }));
        assert_eq!(store.last(2).unwrap(), None);
        store.set_last_seq(42).unwrap();
        assert_eq!(store.last_seq().unwrap(), Some(42));
        assert_eq!(store.pending_drops().unwrap(), None);
        store.set_pending_drops(Some(b"p")).unwrap();
        assert_eq!(store.pending_drops().unwrap(), Some(b"p".to_vec()));
        store.set_pending_drops(None).unwrap();
        assert_eq!(store.pending_drops().unwrap(), None);
    }

    #[test]
    fn a_large_backlog_is_counted_at_open_and_the_reopened_store_works() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = SledStore::open(dir.path(), None).unwrap();
            for seq in 1..=2_000u64 {
                s.insert(Key { class: 1, seq }, &[1u8; 1024]).unwrap();
            }
            s.insert(Key { class: 0, seq: 2_001 }, b"event").unwrap();
            s.flush().unwrap();
        }
        // 2 MiB counted: past SHED_AFTER_BYTES, so opened twice
        let mut s = SledStore::open(dir.path(), None).unwrap();
        assert_eq!(s.count_and_bytes().unwrap(), (2_001, 2_000 * 1024 + 5));
        assert_eq!(
            s.last(Key::TELEMETRY).unwrap(),
            Some(Key { class: 1, seq: 2_000 })
        );
        assert_eq!(s.scan(Key::TELEMETRY, Some(1_998), 10).unwrap().len(), 2);
        assert_eq!(s.remove(Key { class: 1, seq: 1 }).unwrap(), Some(1024));
        assert_eq!(
            s.count_and_bytes().unwrap(),
            (2_000, 1_999 * 1024 + 5),
            "counted live after a write"
        );
    }

    #[test]
    fn a_count_saved_by_a_clean_stop_is_used_at_open_until_the_first_write() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = SledStore::open(dir.path(), None).unwrap();
            for seq in 1..=3u64 {
                s.insert(Key { class: 1, seq }, &[1u8; 10]).unwrap();
            }
            // a figure no scan would give: proves the open did not read the records
            s.save_counts(7, 70).unwrap();
            s.flush().unwrap();
        }
        let mut s = SledStore::open(dir.path(), None).unwrap();
        assert_eq!(s.count_and_bytes().unwrap(), (7, 70));
        s.insert(Key { class: 1, seq: 4 }, &[1u8; 10]).unwrap();
        assert_eq!(
            s.count_and_bytes().unwrap(),
            (4, 40),
            "counted live after a write"
        );
        s.flush().unwrap();
        drop(s);
        // the saved count went with that write
        let s = SledStore::open(dir.path(), None).unwrap();
        assert_eq!(s.count_and_bytes().unwrap(), (4, 40));
    }

    #[test]
    fn mem_store_keeps_class_then_seq_order() {
        exercise(&mut MemStore::default());
    }

    #[test]
    fn sled_store_keeps_class_then_seq_order_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("buf");
        {
            let mut s = SledStore::open(&path, None).unwrap();
            exercise(&mut s);
            s.flush().unwrap();
        }
        let s = SledStore::open(&path, None).unwrap();
        assert_eq!(s.count_and_bytes().unwrap(), (3, 9));
        assert_eq!(s.last_seq().unwrap(), Some(42));
    }

    #[test]
    fn keys_round_trip_through_bytes_in_order() {
        let a = Key {
            class: 0,
            seq: u64::MAX,
        };
        let b = Key { class: 1, seq: 0 };
        assert!(a.to_bytes() < b.to_bytes());
        assert_eq!(Key::from_bytes(&a.to_bytes()), Some(a));
        assert_eq!(Key::from_bytes(&[1, 2]), None);
    }
}
