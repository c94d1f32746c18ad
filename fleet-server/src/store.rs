//! The server's sled database: [`FleetStore`] opens it, holds one handle per tree, and closes
//! it when the last clone is gone ([`StoreWatch`]). Each feature's reads and writes live in its
//! own folder, as `impl FleetStore` blocks beside the feature:
//!
//! | trees | owner |
//! | --- | --- |
//! | `delivery`, `devices`, and the writes of `history` and `rollup_dirty` | [`crate::ingest::store`]: the ingest writer's batches |
//! | `history`, `history_packed`, `rollups`, `rollups_packed`, `rollup_dirty` | [`crate::history::store`] (reads, rollups, retention) and [`crate::history::pack`] (packing) |
//! | `metric_names` | [`crate::metric_names`]: the names history rows and rollups refer to by id |
//! | `alerts` | [`crate::alerts::store`]: the engine's and correlator's exports |
//! | `commands`, `rollouts` ([`FleetStore::tree`]) | [`crate::commands::store`] |
//! | `notify_outbox`, `notify_outbox_due`, `notify_outbox_corrupt` | [`crate::notify::outbox::sled_store`] |
//!
//! Keys of per-device, time-ordered trees are built here ([`time_key`], [`history_key`]) so
//! the features that share a tree agree on its layout. This module imports no feature (the
//! name book is a leaf).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::DeviceId;

use crate::metric_names::NameBook;

/// sled page cache for the server store.
pub const STORE_CACHE_BYTES: u64 = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {error}")]
    Sled { path: PathBuf, error: sled::Error },
    #[error("store encoding: {0}")]
    Codec(#[from] common::codec::CodecError),
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    /// A value that cannot be written in the store's format.
    #[error("store encoding: {0}")]
    Encode(String),
    /// The PostgreSQL store (`[storage] backend = "postgres"`).
    #[error(transparent)]
    Postgres(#[from] crate::pg::PgError),
}

/// A handle on the store; clones share the database. The database closes (and its lock is
/// released) when the last clone is dropped, which [`FleetStore::watch`] lets a caller see.
#[derive(Clone)]
pub struct FleetStore {
    path: PathBuf,
    db: sled::Db,
    /// Per-device delivery state (the dedup window that survives a restart).
    pub(crate) delivery: sled::Tree,
    /// Per-device metadata: the last birth.
    pub(crate) devices: sled::Tree,
    /// Raw history rows, one key each, keyed by [`history_key`].
    pub(crate) history: sled::Tree,
    /// Raw history rows of sealed minutes, packed ([`crate::history::pack`]).
    pub(crate) history_packed: sled::Tree,
    /// 1-minute rollups, one key each, keyed by [`time_key`] of the minute.
    pub(crate) rollups: sled::Tree,
    /// Rollups of sealed hours, packed.
    pub(crate) rollups_packed: sled::Tree,
    /// (device, minute) marks of minutes whose rollup is due.
    pub(crate) rollup_dirty: sled::Tree,
    /// The alert engine's and correlator's exports.
    pub(crate) alerts: sled::Tree,
    /// The metric names history rows and rollups refer to by id (`metric_names`).
    pub(crate) names: NameBook,
    alive: Arc<()>,
}

/// Tells whether any [`FleetStore`] clone is still alive.
#[derive(Clone, Debug)]
pub struct StoreWatch {
    alive: std::sync::Weak<()>,
    /// sled's lock file (`PATH/db`, an exclusive `flock` while the database is open).
    lock: PathBuf,
}

impl StoreWatch {
    /// True while a clone of the store is alive, or while sled still holds the database's
    /// lock: its own IO threads can keep the database a moment after the last handle goes
    /// (sled's `try_lock` says as much), and a server started next on the same directory
    /// would then fail to open it.
    pub fn is_open(&self) -> bool {
        self.alive.strong_count() > 0 || lock_held(&self.lock)
    }
}

/// Whether another open file description holds an exclusive `flock` on `path` (probed with
/// a non-blocking lock, released at once).
fn lock_held(path: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(f) = std::fs::File::open(path) else {
        return false;
    };
    // SAFETY: flock on the descriptor of a file this function holds open.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        // SAFETY: as above; the lock is ours and is given back before the file closes.
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_UN) };
        return false;
    }
    std::io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK)
}

/// `device \0 ts seq`: a raw history row's key.
pub fn history_key(device: &DeviceId, ts_ms: i64, seq: u64) -> Vec<u8> {
    let mut k = time_key(device, ts_ms);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `device \0 ts` with the sign bit flipped so negative timestamps sort before positive ones.
pub fn time_key(device: &DeviceId, ts_ms: i64) -> Vec<u8> {
    let d = device.as_str().as_bytes();
    let mut k = Vec::with_capacity(d.len() + 17);
    k.extend_from_slice(d);
    k.push(0);
    k.extend_from_slice(&((ts_ms as u64) ^ (1 << 63)).to_be_bytes());
    k
}

/// The device and time of a [`time_key`] (or of a longer key that starts with one).
pub fn parse_time_key(k: &[u8]) -> Option<(DeviceId, i64)> {
    let zero = k.iter().position(|b| *b == 0)?;
    let id = std::str::from_utf8(k.get(..zero)?)
        .ok()
        .and_then(|s| DeviceId::new(s).ok())?;
    let ts: [u8; 8] = k.get(zero + 1..zero + 9)?.try_into().ok()?;
    Some((id, (u64::from_be_bytes(ts) ^ (1 << 63)) as i64))
}

impl FleetStore {
    pub fn open(path: &Path) -> Result<FleetStore, StoreError> {
        FleetStore::open_with(path, STORE_CACHE_BYTES)
    }

    /// Opens the store with a page cache of `cache_bytes`.
    pub fn open_with(path: &Path, cache_bytes: u64) -> Result<FleetStore, StoreError> {
        let err = |error| StoreError::Sled {
            path: path.to_path_buf(),
            error,
        };
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            // the writer flushes on its own schedule, then truncates the journal
            .flush_every_ms(None)
            .open()
            .map_err(err)?;
        Ok(FleetStore {
            path: path.to_path_buf(),
            delivery: db.open_tree("delivery").map_err(err)?,
            devices: db.open_tree("devices").map_err(err)?,
            history: db.open_tree("history").map_err(err)?,
            history_packed: db.open_tree("history_packed").map_err(err)?,
            rollups: db.open_tree("rollups").map_err(err)?,
            rollups_packed: db.open_tree("rollups_packed").map_err(err)?,
            rollup_dirty: db.open_tree("rollup_dirty").map_err(err)?,
            alerts: db.open_tree("alerts").map_err(err)?,
            names: NameBook::open(db.open_tree("metric_names").map_err(err)?).map_err(err)?,
            db,
            alive: Arc::new(()),
        })
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn err(&self, error: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.path.clone(),
            error,
        }
    }

    /// Blocking: durable on disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(|e| self.err(e))
    }

    pub fn disk_bytes(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// Sees when every clone of this store is gone.
    pub fn watch(&self) -> StoreWatch {
        StoreWatch {
            alive: Arc::downgrade(&self.alive),
            lock: self.path.join("db"),
        }
    }

    /// The database itself, for a store that opens its own trees and flushes
    /// ([`crate::notify::outbox::sled_store`]).
    pub(crate) fn sled(&self) -> &sled::Db {
        &self.db
    }

    /// Another tree of the same database (commands, rollouts: [`crate::commands::store`]).
    pub fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        self.db.open_tree(name).map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the watch says closed within 5 s (sled's threads may hold the lock a moment).
    fn closes(w: &StoreWatch) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while w.is_open() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        !w.is_open()
    }

    #[test]
    fn the_watch_sees_the_last_clone_go() {
        let dir = tempfile::tempdir().unwrap();
        let s = FleetStore::open(dir.path()).unwrap();
        let w = s.watch();
        let c = s.clone();
        drop(s);
        assert!(w.is_open());
        drop(c);
        assert!(closes(&w));
        // and the database can be opened again
        FleetStore::open(dir.path()).unwrap();
    }

    #[test]
    fn the_watch_sees_the_lock_of_a_database_still_open_through_a_tree_alone() {
        let dir = tempfile::tempdir().unwrap();
        let s = FleetStore::open(dir.path()).unwrap();
        let w = s.watch();
        // a tree keeps sled's database (and its lock) without counting as a clone
        let tree = s.tree("t").unwrap();
        drop(s);
        assert!(w.is_open(), "the lock is still held through the tree");
        drop(tree);
        assert!(closes(&w));
        FleetStore::open(dir.path()).unwrap();
    }
}
