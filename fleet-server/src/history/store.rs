//! History's store access: raw rows and 1-minute rollups of each device, read in time order
//! (both layouts merged, see [`super::pack`]), the dirty-minute marks the rollup job takes,
//! and retention. Every history row also marks its (device, minute) dirty in the writer's batch
//! ([`crate::ingest::store`]); the history job ([`super::job`]) rolls dirty minutes up and
//! enforces retention. Readers may read concurrently.

use common::DeviceId;

use super::minute::{HOUR_MS, MINUTE_MS, minute_of};
use super::rows::{HistoryRow, RollupRow};
use crate::store::{FleetStore, StoreError, parse_time_key, time_key};

/// Keys of each history tree (a full scan: for tests and benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCounts {
    pub raw: usize,
    pub raw_packed: usize,
    pub rollups: usize,
    pub rollups_packed: usize,
}

impl FleetStore {
    /// History rows of one device with `from_ms <= ts < to_ms`, in time order.
    pub fn history(
        &self,
        device: &DeviceId,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<HistoryRow>, StoreError> {
        self.history_iter(device, from_ms, to_ms).take(limit).collect()
    }

    /// Devices that ever sent a sequenced record (they have delivery state).
    pub fn known_devices(&self) -> Result<Vec<DeviceId>, StoreError> {
        let mut out = Vec::new();
        for k in self.delivery.iter().keys() {
            let k = k.map_err(|e| self.err(e))?;
            if let Some(id) = std::str::from_utf8(&k).ok().and_then(|s| DeviceId::new(s).ok()) {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Takes up to `limit` dirty (device, minute) marks, removing them: a row written after
    /// the removal marks its minute again.
    pub fn take_dirty_minutes(&self, limit: usize) -> Result<Vec<(DeviceId, i64)>, StoreError> {
        let mut out = Vec::new();
        for k in self.rollup_dirty.iter().keys().take(limit) {
            let k = k.map_err(|e| self.err(e))?;
            self.rollup_dirty.remove(&k).map_err(|e| self.err(e))?;
            if let Some(m) = parse_time_key(&k) {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Marks a minute dirty again (its rollup failed).
    pub fn mark_dirty(&self, device: &DeviceId, minute_ms: i64) -> Result<(), StoreError> {
        self.rollup_dirty
            .insert(time_key(device, minute_ms), &[] as &[u8])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Writes (or, with None, deletes) the rollup of one minute.
    pub fn put_rollup(
        &self,
        device: &DeviceId,
        minute_ms: i64,
        row: Option<&RollupRow>,
    ) -> Result<(), StoreError> {
        let key = time_key(device, minute_ms);
        match row {
            Some(r) => self
                .rollups
                .insert(key, common::codec::encode(r)?)
                .map(|_| ())
                .map_err(|e| self.err(e)),
            None => self.rollups.remove(key).map(|_| ()).map_err(|e| self.err(e)),
        }
    }

    /// Rollups of one device with `from_ms <= minute < to_ms`, in time order.
    pub fn rollups(&self, device: &DeviceId, from_ms: i64, to_ms: i64) -> Result<Vec<RollupRow>, StoreError> {
        self.rollups_iter(device, from_ms, to_ms).collect()
    }

    /// Deletes one device's raw rows older than `raw_before_ms` (a packed minute once all of
    /// it is) and rollups older than `rollup_before_ms`; returns how many of each went.
    pub fn expire(
        &self,
        device: &DeviceId,
        raw_before_ms: i64,
        rollup_before_ms: i64,
    ) -> Result<(u64, u64), StoreError> {
        // `count` tells how many rows one value held.
        let sweep = |tree: &sled::Tree, before: i64, count: &dyn Fn(&[u8]) -> u64| {
            let lo = time_key(device, i64::MIN);
            let hi = time_key(device, before);
            let mut batch = sled::Batch::default();
            let (mut n, mut keys) = (0u64, 0usize);
            for item in tree.range(lo..hi) {
                let (k, v) = item.map_err(|e| self.err(e))?;
                n += count(&v);
                keys += 1;
                batch.remove(k);
            }
            // an empty batch still costs sled two log writes (see `apply`), and retention
            // sweeps four trees of every machine each pass, nearly always with nothing to drop
            if keys > 0 {
                tree.apply_batch(batch).map_err(|e| self.err(e))?;
            }
            Ok::<u64, StoreError>(n)
        };
        let one = |_: &[u8]| 1;
        let raw_in_part =
            |v: &[u8]| common::codec::decode_bare::<Vec<HistoryRow>>(v).map_or(0, |rows| rows.len() as u64);
        let rollups_in_part =
            |v: &[u8]| common::codec::decode_bare::<Vec<RollupRow>>(v).map_or(0, |rows| rows.len() as u64);
        // spans that ended by the bound: key(start) + part < key(before - span + 1)
        let ended = |before: i64, span: i64| before.saturating_sub(span - 1);
        Ok((
            sweep(&self.history, raw_before_ms, &one)?
                + sweep(
                    &self.history_packed,
                    ended(raw_before_ms, MINUTE_MS),
                    &raw_in_part,
                )?,
            sweep(&self.rollups, rollup_before_ms, &one)?
                + sweep(
                    &self.rollups_packed,
                    ended(rollup_before_ms, HOUR_MS),
                    &rollups_in_part,
                )?,
        ))
    }

    /// How many keys each history tree holds (a full scan of keys: for tests and benchmarks;
    /// sled then holds the pages it read for a while).
    pub fn key_counts(&self) -> KeyCounts {
        KeyCounts {
            raw: self.history.len(),
            raw_packed: self.history_packed.len(),
            rollups: self.rollups.len(),
            rollups_packed: self.rollups_packed.len(),
        }
    }
}

/// Streaming reads for exports and reports: lazy iterators over sled ranges, nothing collected.
impl FleetStore {
    /// History rows of one device with `from_ms <= ts < to_ms`, in time order, read as
    /// iterated. Rows that do not decode are skipped.
    pub fn history_iter(
        &self,
        device: &DeviceId,
        from_ms: i64,
        to_ms: i64,
    ) -> impl Iterator<Item = Result<HistoryRow, StoreError>> + Send + 'static {
        self.merged_iter(
            &self.history,
            &self.history_packed,
            MINUTE_MS,
            device,
            from_ms,
            to_ms,
        )
    }

    /// Rollups of one device with `from_ms <= minute < to_ms`, in time order, read as iterated.
    pub fn rollups_iter(
        &self,
        device: &DeviceId,
        from_ms: i64,
        to_ms: i64,
    ) -> impl Iterator<Item = Result<RollupRow, StoreError>> + Send + 'static {
        self.merged_iter(
            &self.rollups,
            &self.rollups_packed,
            HOUR_MS,
            device,
            from_ms,
            to_ms,
        )
    }

    /// The first minute of one device that has a rollup or a raw row (its first data the store
    /// still holds).
    pub fn first_data_minute(&self, device: &DeviceId) -> Result<Option<i64>, StoreError> {
        let lo = time_key(device, i64::MIN);
        let hi = time_key(device, i64::MAX);
        // a single key's time is in its key; a packed span's key is the span's start, so its
        // first row is read
        let first_key = |tree: &sled::Tree| -> Result<Option<i64>, StoreError> {
            match tree.range(lo.clone()..hi.clone()).keys().next() {
                Some(k) => Ok(parse_time_key(&k.map_err(|e| self.err(e))?).map(|(_, ts)| ts)),
                None => Ok(None),
            }
        };
        let candidates = [
            first_key(&self.rollups)?,
            first_key(&self.history)?,
            self.first_packed::<RollupRow>(&self.rollups_packed, device)?,
            self.first_packed::<HistoryRow>(&self.history_packed, device)?,
        ];
        let first = candidates.into_iter().flatten().map(minute_of).min();
        Ok(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::delivery::DeliveryState;
    use crate::ingest::store::WriteBatch;

    #[test]
    fn history_rows_mark_their_minute_dirty_and_expiry_deletes_old_rows() {
        let dir = tempfile::tempdir().unwrap();
        let d = DeviceId::new("rvm1").unwrap();
        let s = FleetStore::open(dir.path()).unwrap();
        let mut b = WriteBatch::default();
        for (ts, seq) in [(-30_000, 1), (61_000, 2), (65_000, 3), (200_000, 4)] {
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
        b.delivery(&d, &DeliveryState::default()).unwrap();
        s.apply(b).unwrap();
        let dirty = s.take_dirty_minutes(100).unwrap();
        let minutes: Vec<i64> = dirty.iter().map(|(_, m)| *m).collect();
        assert_eq!(minutes, vec![-60_000, 60_000, 180_000]);
        assert!(s.take_dirty_minutes(100).unwrap().is_empty(), "marks are taken");
        let row =
            crate::history::rollup::rollup(60_000, &s.history(&d, 60_000, 120_000, 100).unwrap()).unwrap();
        s.put_rollup(&d, 60_000, Some(&row)).unwrap();
        let later =
            crate::history::rollup::rollup(180_000, &s.history(&d, 180_000, 240_000, 100).unwrap()).unwrap();
        s.put_rollup(&d, 180_000, Some(&later)).unwrap();
        assert_eq!(s.rollups(&d, 0, 200_000).unwrap().len(), 2);
        assert_eq!(s.known_devices().unwrap(), vec![d.clone()]);
        assert_eq!(s.expire(&d, 100_000, 100_000).unwrap(), (3, 1));
        assert_eq!(s.history(&d, i64::MIN / 2, i64::MAX / 2, 100).unwrap().len(), 1);
        assert_eq!(
            s.rollups(&d, i64::MIN / 2, i64::MAX / 2).unwrap()[0].minute_ms,
            180_000
        );
    }
}
