//! The ingest writer's store access: one [`WriteBatch`] per batch of records (history rows and
//! their rollup marks, births, delivery state), and what the writer loads on start.
//!
//! [`IngestStore`] is the seam between the writer and the backend: the sled store
//! ([`FleetStore`], below) and the PostgreSQL one ([`super::pg`]). What "durable" means
//! differs, and the writer follows [`IngestStore::needs_journal`]:
//! - sled: [`IngestStore::apply`] writes to sled's in-memory log; records are durable once
//!   journaled ([`super::journal`], before `apply`), and the journal is truncated only after
//!   [`IngestStore::flush`];
//! - PostgreSQL: `apply` returns after the transaction holding the batch (rows, rollup
//!   marks, births, delivery state) committed: the commit is the durability point, and no
//!   journal is kept. Other instances may write the same devices' delivery state, so the
//!   store joins what it holds into each state it writes ([`Applied::delivery`]) and the
//!   writer reloads a device's state when its session starts here
//!   ([`IngestStore::reload_delivery`]).

use std::collections::{BTreeMap, BTreeSet};

use common::{Birth, DeviceId};

use crate::fleet::delivery::DeliveryState;
use crate::history::minute::minute_of;
use crate::history::rows::HistoryRow;
use crate::store::{FleetStore, StoreError, history_key, time_key};

/// One write of the writer: what one batch of records changed. Applied by
/// [`IngestStore::apply`], all of it or (PostgreSQL) none.
#[derive(Debug, Default, Clone)]
pub struct WriteBatch {
    pub delivery: Vec<(DeviceId, DeliveryState)>,
    pub births: Vec<(DeviceId, Birth)>,
    pub history: Vec<(DeviceId, HistoryRow)>,
}

impl WriteBatch {
    pub fn delivery(&mut self, device: &DeviceId, state: &DeliveryState) {
        self.delivery.push((device.clone(), state.clone()));
    }

    pub fn birth(&mut self, device: &DeviceId, birth: &Birth) {
        self.births.push((device.clone(), birth.clone()));
    }

    pub fn history(&mut self, device: &DeviceId, row: HistoryRow) {
        self.history.push((device.clone(), row));
    }

    pub fn is_empty(&self) -> bool {
        self.delivery.is_empty() && self.births.is_empty() && self.history.is_empty()
    }
}

/// What an applied batch did beyond the obvious.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// History rows not stored because they are older than the raw retention keeps (the
    /// PostgreSQL store writes only into the partitions that exist by policy).
    pub rows_past_retention: u64,
    /// Delivery states as stored, where the store joined the batch's states with what it
    /// held (another instance served the device meanwhile: PostgreSQL); the writer takes
    /// them as its own. Empty where the writer's states are stored as given (sled).
    pub delivery: Vec<(DeviceId, DeliveryState)>,
}

/// The ingest writer's store (module docs).
pub trait IngestStore: Send + Sync {
    /// True when an applied batch is durable only after [`IngestStore::flush`] (the writer
    /// journals records before applying them); false when [`IngestStore::apply`] returns
    /// once the batch is durable.
    fn needs_journal(&self) -> bool;

    /// Writes one batch (blocking). `now_ms` is the server's time (retention horizons).
    fn apply(&self, batch: WriteBatch, now_ms: i64) -> Result<Applied, StoreError>;

    /// Makes every applied batch durable (blocking; a no-op where `apply` already is).
    fn flush(&self) -> Result<(), StoreError>;

    fn load_delivery(&self) -> Result<BTreeMap<DeviceId, DeliveryState>, StoreError>;

    /// The stored delivery state of `devices` (those that have one), read when their
    /// sessions start on this instance: a store shared by several instances (PostgreSQL) may
    /// hold what another instance stored since this one last served them. A store only this
    /// process writes returns nothing (its writer's state is already the stored one).
    fn reload_delivery(
        &self,
        _devices: &[DeviceId],
    ) -> Result<BTreeMap<DeviceId, DeliveryState>, StoreError> {
        Ok(BTreeMap::new())
    }

    fn load_births(&self) -> Result<BTreeMap<DeviceId, Birth>, StoreError>;
}

impl IngestStore for FleetStore {
    fn needs_journal(&self) -> bool {
        true
    }

    /// Writes a batch key by key: history rows, their rollup markers, births, and delivery
    /// state last.
    ///
    /// Not `sled::Batch`: sled 0.34's `apply_batch` rolls its IO buffer twice per call (a log
    /// write and a `sync_file_range` each, even for an empty batch), which cost the embedded
    /// broker's path, where a device's publishes are stored one at a time, more than half of
    /// the server's CPU. Nothing needs the batch to be atomic:
    /// - sled recovers its log in order up to the first write that did not reach the disk, so
    ///   a delivery state that survived a crash implies the rows written before it did;
    /// - every key is idempotent (a row's key is its device, timestamp and seq), and the ingest
    ///   journal, replayed on start, rewrites the rows of records it finds already counted
    ///   ([`crate::ingest::writer`]), so a crash between two keys loses nothing either way.
    fn apply(&self, b: WriteBatch, _now_ms: i64) -> Result<Applied, StoreError> {
        let mut dirty = BTreeSet::new();
        for (device, row) in &b.history {
            self.history
                .insert(
                    history_key(device, row.ts_ms, row.seq),
                    crate::history::pack::encode_row(row, &self.names)?,
                )
                .map_err(|e| self.err(e))?;
            dirty.insert(time_key(device, minute_of(row.ts_ms)));
        }
        for k in dirty {
            self.rollup_dirty
                .insert(k, &[] as &[u8])
                .map_err(|e| self.err(e))?;
        }
        for (device, birth) in &b.births {
            self.devices
                .insert(device.as_str().as_bytes(), common::codec::encode(birth)?)
                .map_err(|e| self.err(e))?;
        }
        for (device, state) in &b.delivery {
            self.delivery
                .insert(device.as_str().as_bytes(), common::codec::encode(state)?)
                .map_err(|e| self.err(e))?;
        }
        Ok(Applied::default())
    }

    fn flush(&self) -> Result<(), StoreError> {
        FleetStore::flush(self)
    }

    fn load_delivery(&self) -> Result<BTreeMap<DeviceId, DeliveryState>, StoreError> {
        let mut out = BTreeMap::new();
        for item in self.delivery.iter() {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let Some(id) = std::str::from_utf8(&k).ok().and_then(|s| DeviceId::new(s).ok()) else {
                continue;
            };
            match common::codec::decode_bare::<DeliveryState>(&v) {
                Ok(s) => {
                    out.insert(id, s);
                }
                Err(e) => tracing::error!(device = %id, error = %e, "unreadable delivery state skipped"),
            }
        }
        Ok(out)
    }

    fn load_births(&self) -> Result<BTreeMap<DeviceId, Birth>, StoreError> {
        let mut out = BTreeMap::new();
        for item in self.devices.iter() {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let id = std::str::from_utf8(&k).ok().and_then(|s| DeviceId::new(s).ok());
            if let (Some(id), Ok(b)) = (id, common::codec::decode_bare::<Birth>(&v)) {
                out.insert(id, b);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_and_history_survive_reopen_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = DeviceId::new("rvm1").unwrap();
        {
            let s = FleetStore::open(dir.path()).unwrap();
            let mut b = WriteBatch::default();
            let mut st = DeliveryState::default();
            st.seqs.observe(1);
            st.received = 1;
            b.delivery(&d, &st);
            for (ts, seq) in [(300, 3), (-5, 1), (100, 2)] {
                b.history(
                    &d,
                    HistoryRow {
                        ts_ms: ts,
                        seq,
                        metrics: vec![("cpu.usage_pct".into(), 1.0)],
                    },
                );
            }
            s.apply(b, 0).unwrap();
            s.flush().unwrap();
        }
        let s = FleetStore::open(dir.path()).unwrap();
        assert_eq!(s.load_delivery().unwrap()[&d].received, 1);
        let rows: Vec<i64> = s
            .history(&d, i64::MIN / 2, 1000, 10)
            .unwrap()
            .iter()
            .map(|r| r.ts_ms)
            .collect();
        assert_eq!(rows, vec![-5, 100, 300]);
        assert_eq!(s.history(&d, 0, 200, 10).unwrap().len(), 1);
    }
}
