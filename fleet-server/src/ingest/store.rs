//! The ingest writer's store access: one [`WriteBatch`] per batch of records (history rows and
//! their rollup marks, births, delivery state), and what the writer loads on start.

use std::collections::{BTreeMap, BTreeSet};

use common::{Birth, DeviceId};

use crate::fleet::delivery::DeliveryState;
use crate::history::minute::minute_of;
use crate::history::rows::HistoryRow;
use crate::store::{FleetStore, StoreError, history_key, time_key};

/// One write of the writer: the keys of one batch, applied in a fixed order by
/// [`FleetStore::apply`].
#[derive(Default)]
pub struct WriteBatch {
    delivery: Vec<(Vec<u8>, Vec<u8>)>,
    devices: Vec<(Vec<u8>, Vec<u8>)>,
    history: Vec<(Vec<u8>, Vec<u8>)>,
    rollup_dirty: BTreeSet<Vec<u8>>,
}

impl WriteBatch {
    pub fn delivery(&mut self, device: &DeviceId, state: &DeliveryState) -> Result<(), StoreError> {
        self.delivery
            .push((device.as_str().as_bytes().to_vec(), common::codec::encode(state)?));
        Ok(())
    }

    pub fn birth(&mut self, device: &DeviceId, birth: &Birth) -> Result<(), StoreError> {
        self.devices
            .push((device.as_str().as_bytes().to_vec(), common::codec::encode(birth)?));
        Ok(())
    }

    pub fn history(&mut self, device: &DeviceId, row: &HistoryRow) -> Result<(), StoreError> {
        self.history.push((
            history_key(device, row.ts_ms, row.seq),
            common::codec::encode(row)?,
        ));
        self.rollup_dirty.insert(time_key(device, minute_of(row.ts_ms)));
        Ok(())
    }
}

impl FleetStore {
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
    pub fn apply(&self, b: WriteBatch) -> Result<(), StoreError> {
        for (k, v) in b.history {
            self.history.insert(k, v).map_err(|e| self.err(e))?;
        }
        for k in b.rollup_dirty {
            self.rollup_dirty
                .insert(k, &[] as &[u8])
                .map_err(|e| self.err(e))?;
        }
        for (k, v) in b.devices {
            self.devices.insert(k, v).map_err(|e| self.err(e))?;
        }
        for (k, v) in b.delivery {
            self.delivery.insert(k, v).map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    pub fn load_delivery(&self) -> Result<BTreeMap<DeviceId, DeliveryState>, StoreError> {
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

    pub fn load_births(&self) -> Result<BTreeMap<DeviceId, Birth>, StoreError> {
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
            b.delivery(&d, &st).unwrap();
            for (ts, seq) in [(300, 3), (-5, 1), (100, 2)] {
                b.history(
                    &d,
                    &HistoryRow {
                        ts_ms: ts,
                        seq,
                        metrics: vec![("cpu.usage_pct".into(), 1.0)],
                    },
                )
                .unwrap();
            }
            s.apply(b).unwrap();
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
