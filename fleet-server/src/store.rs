//! The server's durable state in sled: per-device delivery accounting (the dedup window that
//! survives a restart), device metadata (the last birth), and raw history rows keyed by the
//! record's original timestamp so a backlog lands where it belongs.
//!
//! Only the ingest writer ([`crate::writer`]) writes; readers may read concurrently.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{Birth, DeviceId};
use serde::{Deserialize, Serialize};

use crate::delivery::{Delivery, SeqTracker};

/// sled page cache for the server store.
pub const STORE_CACHE_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliveryState {
    pub seqs: SeqTracker,
    pub received: u64,
    pub duplicates: u64,
    pub reported_dropped: u64,
    /// New records that arrived after a higher seq (priority records overtaking telemetry).
    pub reordered: u64,
}

impl DeliveryState {
    pub fn view(&self) -> Delivery {
        Delivery {
            received: self.received,
            duplicates_dropped: self.duplicates,
            last_seq: self.seqs.last_seq(),
            gaps: self.seqs.gaps(),
            missing: self.seqs.missing(),
            reported_dropped: self.reported_dropped,
            reordered: self.reordered,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {error}")]
    Sled { path: PathBuf, error: sled::Error },
    #[error("store encoding: {0}")]
    Codec(#[from] common::codec::CodecError),
}

pub struct FleetStore {
    path: PathBuf,
    db: sled::Db,
    delivery: sled::Tree,
    devices: sled::Tree,
    history: sled::Tree,
}

/// A history row: flat metrics at the record's own time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRow {
    pub ts_ms: i64,
    pub seq: u64,
    pub metrics: Vec<(String, f32)>,
}

fn history_key(device: &DeviceId, ts_ms: i64, seq: u64) -> Vec<u8> {
    let d = device.as_str().as_bytes();
    let mut k = Vec::with_capacity(d.len() + 17);
    k.extend_from_slice(d);
    k.push(0);
    // sign bit flipped so negative timestamps sort before positive ones
    k.extend_from_slice(&((ts_ms as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// One atomic write of the writer.
#[derive(Default)]
pub struct WriteBatch {
    delivery: sled::Batch,
    devices: sled::Batch,
    history: sled::Batch,
}

impl WriteBatch {
    pub fn delivery(&mut self, device: &DeviceId, state: &DeliveryState) -> Result<(), StoreError> {
        self.delivery
            .insert(device.as_str().as_bytes(), common::codec::encode(state)?);
        Ok(())
    }

    pub fn birth(&mut self, device: &DeviceId, birth: &Birth) -> Result<(), StoreError> {
        self.devices
            .insert(device.as_str().as_bytes(), common::codec::encode(birth)?);
        Ok(())
    }

    pub fn history(&mut self, device: &DeviceId, row: &HistoryRow) -> Result<(), StoreError> {
        self.history.insert(
            history_key(device, row.ts_ms, row.seq),
            common::codec::encode(row)?,
        );
        Ok(())
    }
}

impl FleetStore {
    pub fn open(path: &Path) -> Result<FleetStore, StoreError> {
        let err = |error| StoreError::Sled {
            path: path.to_path_buf(),
            error,
        };
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(STORE_CACHE_BYTES)
            // the writer flushes on its own schedule, then truncates the journal
            .flush_every_ms(None)
            .open()
            .map_err(err)?;
        Ok(FleetStore {
            path: path.to_path_buf(),
            delivery: db.open_tree("delivery").map_err(err)?,
            devices: db.open_tree("devices").map_err(err)?,
            history: db.open_tree("history").map_err(err)?,
            db,
        })
    }

    fn err(&self, error: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.path.clone(),
            error,
        }
    }

    pub fn apply(&self, b: WriteBatch) -> Result<(), StoreError> {
        // Three trees, three batches: each is atomic; the journal replay covers a crash
        // between them (dedup makes the replay idempotent).
        self.history.apply_batch(b.history).map_err(|e| self.err(e))?;
        self.devices.apply_batch(b.devices).map_err(|e| self.err(e))?;
        self.delivery.apply_batch(b.delivery).map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Blocking: durable on disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map(|_| ()).map_err(|e| self.err(e))
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

    /// History rows of one device with `from_ms <= ts < to_ms`, in time order.
    pub fn history(
        &self,
        device: &DeviceId,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<HistoryRow>, StoreError> {
        let lo = history_key(device, from_ms, 0);
        let hi = history_key(device, to_ms, 0);
        let mut out = Vec::new();
        for item in self.history.range(lo..hi).take(limit) {
            let (_, v) = item.map_err(|e| self.err(e))?;
            if let Ok(r) = common::codec::decode_bare::<HistoryRow>(&v) {
                out.push(r);
            }
        }
        Ok(out)
    }

    pub fn disk_bytes(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
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
