//! The sled store's dictionary of metric names: every name a history row or rollup holds is
//! stored once, in the tree `metric_names` (id as 4 big-endian bytes -> the name), and rows
//! carry its id instead (`crate::history::pack`, "Compact rows").
//!
//! A row of a Jetson with the look inside (issue 24) holds about 57 metrics whose names
//! average 19 bytes: spelled out they were three quarters of the row (1,331 bytes; 350
//! with ids), and sled's writes, its cache, the rollup pass that reads a whole minute and
//! the server's heap in the soak all grew with them. The names a fleet uses are few (the
//! same rails, interfaces, disks and app metrics on every machine), so the book stays small.
//!
//! Ids are handed out in order and never reused or renumbered. A new name is written to the
//! tree before the first row that uses it: sled recovers its log in order up to the first
//! write that did not reach the disk, so a row that survived a crash has its name too.
//!
//! Names come from the machines (process, interface and app metric names), so the book is
//! capped at [`MAX_NAMES`]: past it, rows spell new names out again (a machine that sent a
//! new name in every record would otherwise grow the book, and the server's heap, forever),
//! and the lookup's hash is keyed at random (ahash), so chosen names cannot collide on
//! purpose. A leaf: imports nothing of the crate.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Names the book holds at most; about 100 bytes of heap each.
pub const MAX_NAMES: usize = 100_000;

/// Names and ids, both ways; clones share the book.
#[derive(Clone)]
pub struct NameBook {
    tree: sled::Tree,
    inner: Arc<RwLock<Inner>>,
    /// Names not taken in because the book was full.
    refused: Arc<AtomicU64>,
    cap: usize,
}

#[derive(Default)]
struct Inner {
    ids: HashMap<Arc<str>, u32, ahash::RandomState>,
    names: Vec<Option<Arc<str>>>,
}

impl NameBook {
    /// Loads every name of `tree`. An entry that is not a 4-byte id and a UTF-8 name is
    /// skipped (its id stays taken).
    pub fn open(tree: sled::Tree) -> Result<NameBook, sled::Error> {
        let mut inner = Inner::default();
        for item in tree.iter() {
            let (k, v) = item?;
            let Ok(id) = <[u8; 4]>::try_from(&*k).map(u32::from_be_bytes) else {
                continue;
            };
            let at = id as usize;
            if inner.names.len() <= at {
                inner.names.resize(at + 1, None);
            }
            if let Ok(name) = std::str::from_utf8(&v) {
                let name: Arc<str> = name.into();
                inner.ids.insert(name.clone(), id);
                inner.names[at] = Some(name);
            }
        }
        Ok(NameBook {
            tree,
            inner: Arc::new(RwLock::new(inner)),
            refused: Arc::default(),
            cap: MAX_NAMES,
        })
    }

    /// The same book holding at most `cap` names (tests).
    pub fn with_cap(mut self, cap: usize) -> NameBook {
        self.cap = cap;
        self
    }

    /// The id of `name`, written into the book first if it is new; None when the book is
    /// full and `name` is not in it (the caller spells the name out).
    pub fn id(&self, name: &str) -> Result<Option<u32>, sled::Error> {
        if let Some(id) = self.read().ids.get(name) {
            return Ok(Some(*id));
        }
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = inner.ids.get(name) {
            return Ok(Some(*id));
        }
        if inner.names.len() >= self.cap {
            if self.refused.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(
                    names = inner.names.len(),
                    "the metric name book is full: new names are stored spelled out in each row"
                );
            }
            return Ok(None);
        }
        let id = inner.names.len() as u32;
        self.tree.insert(id.to_be_bytes(), name.as_bytes())?;
        let name: Arc<str> = name.into();
        inner.ids.insert(name.clone(), id);
        inner.names.push(Some(name));
        Ok(Some(id))
    }

    /// The id of `name` if the book holds it (never writes).
    pub fn known(&self, name: &str) -> Option<u32> {
        self.read().ids.get(name).copied()
    }

    /// How many names were not taken in because the book was full.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// The name of `id`; None for an id the book does not hold.
    pub fn name(&self, id: u32) -> Option<Arc<str>> {
        self.read().names.get(id as usize).cloned().flatten()
    }

    /// Calls `f` with the names by id, holding the book once for many lookups.
    pub fn with_names<T>(&self, f: impl FnOnce(Names<'_>) -> T) -> T {
        let inner = self.read();
        f(Names(&inner.names))
    }

    /// How many names the book holds.
    pub fn len(&self) -> usize {
        self.read().ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }
}

/// The book's names by id, read under one lock ([`NameBook::with_names`]).
#[derive(Clone, Copy)]
pub struct Names<'a>(&'a [Option<Arc<str>>]);

impl<'a> Names<'a> {
    pub fn get(self, id: u32) -> Option<&'a str> {
        self.0.get(id as usize).and_then(|n| n.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_across_a_reopen_and_new_names_follow() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let book = NameBook::open(db.open_tree("metric_names").unwrap()).unwrap();
            assert_eq!(book.id("cpu.usage_pct").unwrap(), Some(0));
            assert_eq!(book.id("gpu.temp_c").unwrap(), Some(1));
            assert_eq!(
                book.id("cpu.usage_pct").unwrap(),
                Some(0),
                "a known name keeps its id"
            );
            db.flush().unwrap();
        }
        let db = sled::open(dir.path()).unwrap();
        let book = NameBook::open(db.open_tree("metric_names").unwrap()).unwrap();
        assert_eq!(book.len(), 2);
        assert_eq!(book.name(1).as_deref(), Some("gpu.temp_c"));
        assert_eq!(book.id("gpu.temp_c").unwrap(), Some(1));
        assert_eq!(book.id("net.iface.eth0.rx_bytes_per_s").unwrap(), Some(2));
        assert_eq!(book.name(7), None);
        assert_eq!(
            book.with_names(|n| n.get(0).map(str::to_owned)).as_deref(),
            Some("cpu.usage_pct")
        );
    }
}
