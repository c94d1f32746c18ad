//! History's store access: raw rows and 1-minute rollups of each device, read in time order
//! (both layouts merged, see [`super::pack`]), the dirty-minute marks the rollup job takes,
//! and retention. Every history row also marks its (device, minute) dirty in the writer's batch
//! ([`crate::ingest::store`]); the history job ([`super::job`]) rolls dirty minutes up and
//! enforces retention. Readers may read concurrently.
//!
//! [`HistoryStore`] is the seam the routes, exports, reports and the history job use; the
//! sled store ([`FleetStore`], below) and the PostgreSQL one ([`super::pg`]) implement it.
//! Every method blocks: call them off actor threads (`web::block`, `spawn_blocking`).

use common::DeviceId;

use super::minute::{HOUR_MS, MINUTE_MS, minute_of};
use super::pack::{self, CompactRollup, CompactRow, Packed};
use super::rollup::HistoryPolicy;
use super::rows::{HistoryRow, RollupRow};
use crate::cluster::lease::LeaseToken;
use crate::store::{FleetStore, StoreError, parse_time_key, time_key};

/// Rows read as iterated (exports, reports: nothing collected).
pub type RowIter = Box<dyn Iterator<Item = Result<HistoryRow, StoreError>> + Send>;
/// Rollups read as iterated.
pub type RollupIter = Box<dyn Iterator<Item = Result<RollupRow, StoreError>> + Send>;

/// What one retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expired {
    /// Raw rows deleted (sled: counted one by one).
    pub raw_rows: u64,
    pub rollups: u64,
    /// Whole daily partitions dropped (PostgreSQL: retention without row-by-row deletes).
    pub partitions: u64,
}

/// The history of every device (module docs).
pub trait HistoryStore: Send + Sync {
    /// Rows of one device with `from_ms <= ts < to_ms`, in time order, read as iterated.
    /// Rows that do not decode are skipped.
    fn history_iter(&self, device: &DeviceId, from_ms: i64, to_ms: i64) -> RowIter;

    /// Rollups of one device with `from_ms <= minute < to_ms`, in time order, read as iterated.
    fn rollups_iter(&self, device: &DeviceId, from_ms: i64, to_ms: i64) -> RollupIter;

    /// History rows of one device with `from_ms <= ts < to_ms`, in time order, at most `limit`.
    fn history(
        &self,
        device: &DeviceId,
        from_ms: i64,
        to_ms: i64,
        limit: usize,
    ) -> Result<Vec<HistoryRow>, StoreError> {
        self.history_iter(device, from_ms, to_ms).take(limit).collect()
    }

    /// Rollups of one device with `from_ms <= minute < to_ms`, in time order.
    fn rollups(&self, device: &DeviceId, from_ms: i64, to_ms: i64) -> Result<Vec<RollupRow>, StoreError> {
        self.rollups_iter(device, from_ms, to_ms).collect()
    }

    /// The first minute of one device that has a rollup or a raw row.
    fn first_data_minute(&self, device: &DeviceId) -> Result<Option<i64>, StoreError>;

    /// Devices that ever sent a sequenced record (they have delivery state).
    fn known_devices(&self) -> Result<Vec<DeviceId>, StoreError>;

    /// Takes up to `limit` dirty (device, minute) marks and writes each minute's rollup,
    /// recomputed from its raw rows ([`rollup::rollup`]); a minute that fails stays dirty.
    /// How many minutes were rolled up. With `fence` (a leader among several instances)
    /// every transaction asserts the lease first, and fails without writing once it is lost
    /// ([`crate::cluster::fence`]); a single-instance store has nothing to fence.
    fn roll_up(&self, limit: usize, fence: Option<&LeaseToken>) -> Result<usize, StoreError>;

    /// Packs raw minutes that ended before `raw_sealed_before_ms` and rollup hours that ended
    /// before `rollups_sealed_before_ms` (sled's second layout, [`super::pack`]; nothing to do
    /// elsewhere): (raw spans and rows, rollup spans and rows).
    fn pack(
        &self,
        raw_sealed_before_ms: i64,
        rollups_sealed_before_ms: i64,
        max_rows: u64,
    ) -> Result<(Packed, Packed), StoreError>;

    /// Removes what is past `policy` at `now_ms` (`fence` as for [`HistoryStore::roll_up`]).
    fn expire(
        &self,
        policy: &HistoryPolicy,
        now_ms: i64,
        fence: Option<&LeaseToken>,
    ) -> Result<Expired, StoreError>;

    /// Bytes the store takes on disk.
    fn disk_bytes(&self) -> u64;
}

/// Raw rows read for one minute at most when rolling it up (600 at 10 Hz).
pub const ROWS_PER_MINUTE_MAX: usize = 100_000;

impl HistoryStore for FleetStore {
    fn history_iter(&self, device: &DeviceId, from_ms: i64, to_ms: i64) -> RowIter {
        Box::new(FleetStore::history_iter(self, device, from_ms, to_ms))
    }

    fn rollups_iter(&self, device: &DeviceId, from_ms: i64, to_ms: i64) -> RollupIter {
        Box::new(FleetStore::rollups_iter(self, device, from_ms, to_ms))
    }

    fn first_data_minute(&self, device: &DeviceId) -> Result<Option<i64>, StoreError> {
        FleetStore::first_data_minute(self, device)
    }

    fn known_devices(&self) -> Result<Vec<DeviceId>, StoreError> {
        FleetStore::known_devices(self)
    }

    // one instance on sled: there is nobody to fence against
    fn roll_up(&self, limit: usize, _: Option<&LeaseToken>) -> Result<usize, StoreError> {
        let dirty = self.take_dirty_minutes(limit)?;
        for (device, minute) in &dirty {
            let res = self.compact_rows(device, *minute).and_then(|rows| {
                let rolled = pack::rollup_compact(*minute, &rows, &self.names);
                self.put_compact_rollup(device, *minute, rolled)
            });
            if let Err(e) = res {
                // Try again next run.
                let _ = self.mark_dirty(device, *minute);
                return Err(e);
            }
        }
        Ok(dirty.len())
    }

    fn pack(
        &self,
        raw_sealed_before_ms: i64,
        rollups_sealed_before_ms: i64,
        max_rows: u64,
    ) -> Result<(Packed, Packed), StoreError> {
        Ok((
            self.pack_sealed(raw_sealed_before_ms, max_rows)?,
            self.pack_sealed_rollups(rollups_sealed_before_ms, max_rows)?,
        ))
    }

    fn expire(
        &self,
        policy: &HistoryPolicy,
        now_ms: i64,
        _: Option<&LeaseToken>,
    ) -> Result<Expired, StoreError> {
        let mut out = Expired::default();
        for device in FleetStore::known_devices(self)? {
            let (raw, rolled) = self.expire_device(
                &device,
                now_ms - policy.raw_retention_ms,
                now_ms - policy.rollup_retention_ms,
            )?;
            out.raw_rows += raw;
            out.rollups += rolled;
        }
        Ok(out)
    }

    fn disk_bytes(&self) -> u64 {
        FleetStore::disk_bytes(self)
    }
}

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
                .insert(key, super::pack::encode_row(r, &self.names)?)
                .map(|_| ())
                .map_err(|e| self.err(e)),
            None => self.rollups.remove(key).map(|_| ()).map_err(|e| self.err(e)),
        }
    }

    /// One minute's raw rows as stored (names as ids), for rolling it up.
    pub(crate) fn compact_rows(
        &self,
        device: &DeviceId,
        minute_ms: i64,
    ) -> Result<Vec<CompactRow>, StoreError> {
        let span = (MINUTE_MS, minute_ms, minute_ms + MINUTE_MS);
        self.merged_iter_as(
            &self.history,
            &self.history_packed,
            span,
            device,
            pack::decode_compact_row,
            pack::decode_compact_rows,
        )
        .take(ROWS_PER_MINUTE_MAX)
        .collect()
    }

    /// Writes (or, with None, deletes) one rollup in its compact form.
    fn put_compact_rollup(
        &self,
        device: &DeviceId,
        minute_ms: i64,
        row: Option<CompactRollup>,
    ) -> Result<(), StoreError> {
        let key = time_key(device, minute_ms);
        match row {
            Some(r) => self
                .rollups
                .insert(key, pack::encode_compact_rollup(&r)?)
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
    pub fn expire_device(
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
        let raw_in_part = |v: &[u8]| {
            super::pack::decode_rows::<HistoryRow>(v, &self.names).map_or(0, |rows| rows.len() as u64)
        };
        let rollups_in_part = |v: &[u8]| {
            super::pack::decode_rows::<RollupRow>(v, &self.names).map_or(0, |rows| rows.len() as u64)
        };
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
    use crate::ingest::store::{IngestStore, WriteBatch};

    #[test]
    fn history_rows_mark_their_minute_dirty_and_expiry_deletes_old_rows() {
        let dir = tempfile::tempdir().unwrap();
        let d = DeviceId::new("rvm1").unwrap();
        let s = FleetStore::open(dir.path()).unwrap();
        let mut b = WriteBatch::default();
        for (ts, seq) in [(-30_000, 1), (61_000, 2), (65_000, 3), (200_000, 4)] {
            b.history(
                &d,
                HistoryRow {
                    ts_ms: ts,
                    seq,
                    metrics: vec![("cpu.usage_pct".into(), 1.0)],
                },
            );
        }
        b.delivery(&d, &DeliveryState::default());
        s.apply(b, 0).unwrap();
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
        assert_eq!(s.expire_device(&d, 100_000, 100_000).unwrap(), (3, 1));
        assert_eq!(s.history(&d, i64::MIN / 2, i64::MAX / 2, 100).unwrap().len(), 1);
        assert_eq!(
            s.rollups(&d, i64::MIN / 2, i64::MAX / 2).unwrap()[0].minute_ms,
            180_000
        );
    }
}
