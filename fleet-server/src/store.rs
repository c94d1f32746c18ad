//! The server's durable state in sled: per-device delivery accounting (the dedup window that
//! survives a restart), device metadata (the last birth), raw history rows keyed by the
//! record's original timestamp so a backlog lands where it belongs, 1-minute rollups of them
//! ([`crate::history`]), and the alert engine's and correlator's persisted state.
//!
//! The ingest writer ([`crate::writer`]) writes records; every history row also marks its
//! (device, minute) dirty in the same batch, and the history job rolls dirty minutes up and
//! enforces retention. The alerts actor writes its state. Readers may read concurrently.
//!
//! Raw history rows and rollups each have two layouts ([`Packable`]). A row arrives as one key
//! of its own (`history`: device, time, seq; `rollups`: device, minute). Once its span is
//! sealed (a raw row's minute ended [`crate::actors::history::SEAL_AFTER_MS`] ago, a rollup's
//! hour [`crate::actors::history::ROLLUP_SEAL_AFTER_MS`] ago) the history job packs the span's
//! rows into a few values (`history_packed`, `rollups_packed`: device, span, part; up to
//! [`PART_BYTES`] each), written once, then deletes the single-row keys. sled keeps about 24
//! bytes of heap per key it holds, so one key per row made the server's heap grow with the
//! retention (raw rows: 0.4 to 0.7 GiB at 1,000 machines over 24 h; rollups: about 1 GiB over
//! 30 days; docs/benchmarks.md, "Soak findings"); packing divides the key count by the rows per
//! part. A row that lands late in a packed span (a backlog, a minute rolled up again) is a
//! single key again until the next pass merges it in. Readers merge both layouts in order;
//! where both hold a row (the same id) the single key, the newer, wins: that also covers a
//! crash between writing the packed value and deleting the single keys.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{Birth, DeviceId};
use serde::{Deserialize, Serialize};

use crate::delivery::{Delivery, SeqTracker};
use crate::history::{HOUR_MS, MINUTE_MS, RollupRow, minute_of};

/// sled page cache for the server store.
pub const STORE_CACHE_BYTES: u64 = 64 << 20;
/// Encoded bytes of one packed value at most (a single row larger than this is a part of its
/// own): a raw minute at one record per 5 s is one part; a rollup hour, about a dozen. sled
/// holds whole leaves of up to 16 values in memory, so parts much larger would make every
/// read of history costlier in memory.
pub const PART_BYTES: usize = 8 << 10;

/// A row kept as one key until its span is sealed, then packed with its span's others.
pub trait Packable: Serialize + serde::de::DeserializeOwned + Send + 'static {
    /// Order and identity: two rows with the same id are the same row.
    fn id(&self) -> (i64, u64);
}

impl Packable for HistoryRow {
    fn id(&self) -> (i64, u64) {
        (self.ts_ms, self.seq)
    }
}

impl Packable for RollupRow {
    fn id(&self) -> (i64, u64) {
        (self.minute_ms, 0)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliveryState {
    pub seqs: SeqTracker,
    pub received: u64,
    pub duplicates: u64,
    pub reported_dropped: u64,
    /// Telemetry records that arrived after a higher telemetry seq (health, events and
    /// command results overtake telemetry on purpose and do not count).
    pub reordered: u64,
    #[serde(default)]
    pub last_telemetry_seq: u64,
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

/// A handle on the store; clones share the database. The database closes (and its lock is
/// released) when the last clone is dropped, which [`FleetStore::watch`] lets a caller see.
#[derive(Clone)]
pub struct FleetStore {
    path: PathBuf,
    db: sled::Db,
    delivery: sled::Tree,
    devices: sled::Tree,
    history: sled::Tree,
    history_packed: sled::Tree,
    rollups: sled::Tree,
    rollups_packed: sled::Tree,
    rollup_dirty: sled::Tree,
    alerts: sled::Tree,
    alive: Arc<()>,
}

/// What one packing pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Packed {
    /// Spans (raw minutes, rollup hours) written.
    pub spans: u64,
    pub rows: u64,
}

/// Keys of each history tree (a full scan: for tests and benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCounts {
    pub raw: usize,
    pub raw_packed: usize,
    pub rollups: usize,
    pub rollups_packed: usize,
}

/// Tells whether any [`FleetStore`] clone is still alive.
#[derive(Clone, Debug)]
pub struct StoreWatch(std::sync::Weak<()>);

impl StoreWatch {
    pub fn is_open(&self) -> bool {
        self.0.strong_count() > 0
    }
}

/// A history row: flat metrics at the record's own time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRow {
    pub ts_ms: i64,
    pub seq: u64,
    pub metrics: Vec<(String, f32)>,
}

fn history_key(device: &DeviceId, ts_ms: i64, seq: u64) -> Vec<u8> {
    let mut k = time_key(device, ts_ms);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// `device \0 ts` with the sign bit flipped so negative timestamps sort before positive ones.
fn time_key(device: &DeviceId, ts_ms: i64) -> Vec<u8> {
    let d = device.as_str().as_bytes();
    let mut k = Vec::with_capacity(d.len() + 17);
    k.extend_from_slice(d);
    k.push(0);
    k.extend_from_slice(&((ts_ms as u64) ^ (1 << 63)).to_be_bytes());
    k
}

fn parse_time_key(k: &[u8]) -> Option<(DeviceId, i64)> {
    let zero = k.iter().position(|b| *b == 0)?;
    let id = std::str::from_utf8(k.get(..zero)?)
        .ok()
        .and_then(|s| DeviceId::new(s).ok())?;
    let ts: [u8; 8] = k.get(zero + 1..zero + 9)?.try_into().ok()?;
    Some((id, (u64::from_be_bytes(ts) ^ (1 << 63)) as i64))
}

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
            db,
            alive: Arc::new(()),
        })
    }

    fn err(&self, error: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.path.clone(),
            error,
        }
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
    ///   ([`crate::writer`]), so a crash between two keys loses nothing either way.
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
        self.history_iter(device, from_ms, to_ms).take(limit).collect()
    }

    pub fn disk_bytes(&self) -> u64 {
        self.db.size_on_disk().unwrap_or(0)
    }

    /// Sees when every clone of this store is gone.
    pub fn watch(&self) -> StoreWatch {
        StoreWatch(Arc::downgrade(&self.alive))
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

    /// Packs the raw rows of every minute that ended before `sealed_before_ms` (see
    /// [`FleetStore::pack_tree`]). Blocking.
    pub fn pack_sealed(&self, sealed_before_ms: i64, max_rows: u64) -> Result<Packed, StoreError> {
        self.pack_tree::<HistoryRow>(
            &self.history,
            &self.history_packed,
            MINUTE_MS,
            sealed_before_ms,
            max_rows,
        )
    }

    /// Packs the rollups of every hour that ended before `sealed_before_ms`. Blocking.
    pub fn pack_sealed_rollups(&self, sealed_before_ms: i64, max_rows: u64) -> Result<Packed, StoreError> {
        self.pack_tree::<RollupRow>(
            &self.rollups,
            &self.rollups_packed,
            HOUR_MS,
            sealed_before_ms,
            max_rows,
        )
    }

    /// Packs the single keys of `single` whose span (`span_ms` long) ended before
    /// `sealed_before_ms` into that span's parts in `packed` (merging rows already packed
    /// there), then deletes the single keys; stops after the span that brings the pass to
    /// `max_rows`.
    fn pack_tree<R: Packable>(
        &self,
        single: &sled::Tree,
        packed: &sled::Tree,
        span_ms: i64,
        sealed_before_ms: i64,
        max_rows: u64,
    ) -> Result<Packed, StoreError> {
        let mut done = Packed::default();
        let mut group: Option<(DeviceId, i64)> = None;
        let mut keys = Vec::new();
        let mut rows = Vec::new();
        for item in single.iter() {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let Some((device, ts)) = parse_time_key(&k) else {
                continue;
            };
            let span = ts.div_euclid(span_ms) * span_ms;
            if span.saturating_add(span_ms) > sealed_before_ms {
                continue;
            }
            let Ok(row) = common::codec::decode_bare::<R>(&v) else {
                // unreadable: left alone (readers skip it too) until retention deletes it
                continue;
            };
            let this = (device, span);
            if group.as_ref() != Some(&this) {
                if let Some((d, at)) = group.take() {
                    let (k, r) = (std::mem::take(&mut keys), std::mem::take(&mut rows));
                    done.rows += self.pack_span(single, packed, &d, at, k, r)?;
                    done.spans += 1;
                    if done.rows >= max_rows {
                        return Ok(done);
                    }
                }
                group = Some(this);
            }
            keys.push(k);
            rows.push(row);
        }
        if let Some((d, at)) = group {
            done.rows += self.pack_span(single, packed, &d, at, keys, rows)?;
            done.spans += 1;
        }
        Ok(done)
    }

    /// Merges `rows` (whose single keys are `keys`) into the parts of one span, then deletes
    /// those keys; returns how many rows were packed.
    fn pack_span<R: Packable>(
        &self,
        single: &sled::Tree,
        packed: &sled::Tree,
        device: &DeviceId,
        span_ms: i64,
        keys: Vec<sled::IVec>,
        mut rows: Vec<R>,
    ) -> Result<u64, StoreError> {
        let packed_now = rows.len() as u64;
        let prefix = time_key(device, span_ms);
        let mut parts = sled::Batch::default();
        for item in packed.scan_prefix(&prefix) {
            let (k, v) = item.map_err(|e| self.err(e))?;
            match common::codec::decode_bare::<Vec<R>>(&v) {
                Ok(old) => rows.extend(old),
                Err(e) => {
                    tracing::error!(device = %device, span_ms, error = %e, "unreadable packed history dropped")
                }
            }
            parts.remove(k);
        }
        // the single keys come first, so a stable sort and dedup keep them over packed rows
        rows.sort_by_key(R::id);
        rows.dedup_by_key(|r| r.id());
        let mut part: Vec<R> = Vec::new();
        let (mut size, mut index) = (0usize, 0u16);
        let mut put = |part: &mut Vec<R>, index: &mut u16| -> Result<(), StoreError> {
            let mut key = prefix.clone();
            key.extend_from_slice(&index.to_be_bytes());
            parts.insert(key, common::codec::encode(&*part)?);
            part.clear();
            *index += 1;
            Ok(())
        };
        for row in rows {
            let n = common::codec::encode(&row)?.len();
            if !part.is_empty() && size + n > PART_BYTES {
                put(&mut part, &mut index)?;
                size = 0;
            }
            size += n;
            part.push(row);
        }
        if !part.is_empty() {
            put(&mut part, &mut index)?;
        }
        // packed first: a crash between the two leaves rows in both, which readers dedup
        packed.apply_batch(parts).map_err(|e| self.err(e))?;
        let mut gone = sled::Batch::default();
        for k in keys {
            gone.remove(k);
        }
        single.apply_batch(gone).map_err(|e| self.err(e))?;
        Ok(packed_now)
    }

    /// Rows of one device in `single` and `packed` (spans `span_ms` long) with
    /// `from_ms <= time < to_ms`, merged in order, read as iterated.
    fn merged_iter<R: Packable>(
        &self,
        single: &sled::Tree,
        packed: &sled::Tree,
        span_ms: i64,
        device: &DeviceId,
        from_ms: i64,
        to_ms: i64,
    ) -> MergeRows<R> {
        let fail = |path: &PathBuf, error| StoreError::Sled {
            path: path.clone(),
            error,
        };
        let path = self.path.clone();
        let singles = single
            .range(time_key(device, from_ms)..time_key(device, to_ms))
            .filter_map(move |item| match item {
                Ok((_, v)) => common::codec::decode_bare::<R>(&v).ok().map(Ok),
                Err(error) => Some(Err(fail(&path, error))),
            });
        let path = self.path.clone();
        let span_start = from_ms.div_euclid(span_ms) * span_ms;
        let parts = packed
            .range(time_key(device, span_start)..time_key(device, to_ms))
            .flat_map(move |item| match item {
                Ok((_, v)) => common::codec::decode_bare::<Vec<R>>(&v)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|r| (from_ms..to_ms).contains(&r.id().0))
                    .map(Ok)
                    .collect::<Vec<_>>(),
                Err(error) => vec![Err(fail(&path, error))],
            });
        MergeRows {
            packed: (Box::new(parts) as Box<dyn Iterator<Item = _> + Send>).peekable(),
            single: (Box::new(singles) as Box<dyn Iterator<Item = _> + Send>).peekable(),
        }
    }

    /// The time of one device's first row in a packed tree.
    fn first_packed<R: Packable>(
        &self,
        tree: &sled::Tree,
        device: &DeviceId,
    ) -> Result<Option<i64>, StoreError> {
        let Some(item) = tree
            .range(time_key(device, i64::MIN)..time_key(device, i64::MAX))
            .next()
        else {
            return Ok(None);
        };
        let (_, v) = item.map_err(|e| self.err(e))?;
        Ok(common::codec::decode_bare::<Vec<R>>(&v)
            .ok()
            .and_then(|rows| rows.first().map(|r| r.id().0)))
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

    /// A value of the alerts tree (the engine's and correlator's exports).
    pub fn alert_state(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.alerts
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| self.err(e))
    }

    /// Writes the alerts tree values atomically, then flushes (blocking: off actor threads).
    pub fn save_alert_state(&self, entries: &[(&str, Vec<u8>)]) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for (k, v) in entries {
            b.insert(k.as_bytes(), v.as_slice());
        }
        self.alerts.apply_batch(b).map_err(|e| self.err(e))?;
        self.flush()
    }

    /// Another tree of the same database (commands, rollouts).
    pub fn tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        self.db.open_tree(name).map_err(|e| self.err(e))
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

type RowIter<R> = std::iter::Peekable<Box<dyn Iterator<Item = Result<R, StoreError>> + Send>>;

/// Packed rows and single-key rows, each in order, merged into one; where both hold a row
/// (the same id) the single key's, the newer, is given. Errors pass through as they come.
pub struct MergeRows<R: Packable> {
    packed: RowIter<R>,
    single: RowIter<R>,
}

impl<R: Packable> Iterator for MergeRows<R> {
    type Item = Result<R, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        use std::cmp::Ordering;
        let order = match (self.packed.peek(), self.single.peek()) {
            (Some(Ok(p)), Some(Ok(s))) => p.id().cmp(&s.id()),
            (Some(Err(_)), _) | (Some(_), None) => Ordering::Less,
            (_, Some(_)) => Ordering::Greater,
            (None, None) => return None,
        };
        match order {
            Ordering::Less => self.packed.next(),
            Ordering::Greater => self.single.next(),
            Ordering::Equal => {
                self.packed.next();
                self.single.next()
            }
        }
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
        let row = crate::history::rollup(60_000, &s.history(&d, 60_000, 120_000, 100).unwrap()).unwrap();
        s.put_rollup(&d, 60_000, Some(&row)).unwrap();
        let later = crate::history::rollup(180_000, &s.history(&d, 180_000, 240_000, 100).unwrap()).unwrap();
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

    fn rows(d: &DeviceId, s: &FleetStore, from: i64, to: i64) -> Vec<(i64, u64)> {
        s.history(d, from, to, 10_000)
            .unwrap()
            .iter()
            .map(|r| (r.ts_ms, r.seq))
            .collect()
    }

    fn write(s: &FleetStore, d: &DeviceId, rows: impl IntoIterator<Item = (i64, u64)>) {
        let mut b = WriteBatch::default();
        for (ts, seq) in rows {
            let row = HistoryRow {
                ts_ms: ts,
                seq,
                // about 85 bytes a row: 97 rows fill a part
                metrics: vec![
                    ("cpu.usage_pct".into(), seq as f32),
                    ("memory.used_pct".into(), 1.0),
                    ("gpu.load_pct".into(), 2.0),
                    ("thermal.cpu_c".into(), 3.0),
                ],
            };
            b.history(d, &row).unwrap();
        }
        s.apply(b).unwrap();
    }

    #[test]
    fn sealed_minutes_are_packed_and_read_back_the_same_with_late_rows_merged() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (DeviceId::new("rvm1").unwrap(), DeviceId::new("rvm2").unwrap());
        let s = FleetStore::open(dir.path()).unwrap();
        // rvm1: 300 rows every 0.5 s from -30 s (minutes -1 to 2; minute 0 holds 120 rows, two
        // parts); rvm2: a few rows
        let seqs = |n: u64| (1..=n).map(|i| (-30_000 + 500 * i as i64, i));
        write(&s, &a, seqs(300));
        write(&s, &b, [(10_000, 1), (70_000, 2)]);
        let before = rows(&a, &s, i64::MIN / 2, i64::MAX / 2);
        assert_eq!(before.len(), 300);

        // minutes ending by 60 s are sealed: rvm1's -1 and 0, rvm2's 0
        let done = s.pack_sealed(60_000, u64::MAX).unwrap();
        assert_eq!(done, Packed { spans: 3, rows: 180 });
        let k = s.key_counts();
        assert_eq!((k.raw, k.raw_packed), (300 - 179 + 1, 1 + 2 + 1));
        assert_eq!(
            rows(&a, &s, i64::MIN / 2, i64::MAX / 2),
            before,
            "same rows, same order"
        );
        // a range inside a packed minute and across both layouts
        assert_eq!(
            rows(&a, &s, 15_000, 16_500),
            vec![(15_000, 90), (15_500, 91), (16_000, 92)]
        );
        assert_eq!(rows(&a, &s, 58_500, 61_500).len(), 6);
        assert_eq!(rows(&b, &s, 0, 100_000), vec![(10_000, 1), (70_000, 2)]);

        // a backlog row in a packed minute, and a crash that left a packed row's single key
        write(&s, &a, [(30_250, 1000), (30_000, 120)]);
        assert_eq!(rows(&a, &s, 30_000, 30_500), vec![(30_000, 120), (30_250, 1000)]);
        let done = s.pack_sealed(60_000, u64::MAX).unwrap();
        assert_eq!(done, Packed { spans: 1, rows: 2 });
        assert_eq!(rows(&a, &s, 30_000, 30_500), vec![(30_000, 120), (30_250, 1000)]);
        assert_eq!(rows(&a, &s, i64::MIN / 2, i64::MAX / 2).len(), 301);
        // rollups read the merged rows
        let minute0 = crate::history::rollup(0, &s.history(&a, 0, 60_000, 1000).unwrap()).unwrap();
        assert_eq!(minute0.get("cpu.usage_pct").unwrap().count, 121);
        assert_eq!(s.first_data_minute(&a).unwrap(), Some(-60_000));

        // a pass stops at its row budget after a whole minute
        write(&s, &b, [(130_000, 3), (190_000, 4)]);
        assert_eq!(s.pack_sealed(300_000, 1).unwrap(), Packed { spans: 1, rows: 120 });

        // expiry: a packed minute goes once all of it is past the bound
        assert_eq!(s.expire(&a, 59_999, 0).unwrap(), (59, 0), "minute -1 only");
        assert_eq!(s.expire(&a, 60_000, 0).unwrap(), (121, 0));
        assert_eq!(rows(&a, &s, i64::MIN / 2, i64::MAX / 2).len(), 121);
    }

    #[test]
    fn sealed_rollup_hours_are_packed_and_a_minute_rolled_up_again_wins() {
        use crate::history::Agg;
        let dir = tempfile::tempdir().unwrap();
        let d = DeviceId::new("rvm1").unwrap();
        let s = FleetStore::open(dir.path()).unwrap();
        let put = |minute: i64, v: f64| {
            let row = RollupRow {
                minute_ms: minute * MINUTE_MS,
                metrics: vec![("cpu.usage_pct".into(), Agg::of(v))],
            };
            s.put_rollup(&d, row.minute_ms, Some(&row)).unwrap();
        };
        for m in 0..70 {
            put(m, m as f64);
        }
        let all = |s: &FleetStore| s.rollups(&d, 0, 2 * HOUR_MS).unwrap();
        let before = all(&s);
        assert_eq!(before.len(), 70);
        // hour 0 is sealed, hour 1 not yet
        let done = s.pack_sealed_rollups(HOUR_MS + 30 * MINUTE_MS, u64::MAX).unwrap();
        assert_eq!(done, Packed { spans: 1, rows: 60 });
        let k = s.key_counts();
        assert_eq!(k.rollups, 10);
        assert!((1..=12).contains(&k.rollups_packed), "{k:?}");
        assert_eq!(all(&s), before);
        assert_eq!(s.rollups(&d, 5 * MINUTE_MS, 7 * MINUTE_MS).unwrap().len(), 2);

        // a late row rolls minute 5 up again: the single key wins, then is packed over it
        put(5, 500.0);
        let cpu5 = |s: &FleetStore| {
            s.rollups(&d, 5 * MINUTE_MS, 6 * MINUTE_MS).unwrap()[0].metrics[0]
                .1
                .max
        };
        assert_eq!(cpu5(&s), 500.0);
        assert_eq!(all(&s).len(), 70);
        let done = s.pack_sealed_rollups(HOUR_MS + 30 * MINUTE_MS, u64::MAX).unwrap();
        assert_eq!(done, Packed { spans: 1, rows: 1 });
        assert_eq!(cpu5(&s), 500.0);
        assert_eq!(all(&s).len(), 70);

        // expiry: the packed hour goes once all of it is past the bound
        assert_eq!(s.expire(&d, 0, HOUR_MS - 1).unwrap(), (0, 0));
        assert_eq!(s.expire(&d, 0, HOUR_MS).unwrap(), (0, 60));
        assert_eq!(all(&s).len(), 10);

        // a packed hour's key is the hour's start; a device's first data is its first row
        let late = DeviceId::new("rvm2").unwrap();
        for m in 17..20 {
            let row = RollupRow {
                minute_ms: m * MINUTE_MS,
                metrics: vec![("cpu.usage_pct".into(), Agg::of(1.0))],
            };
            s.put_rollup(&late, row.minute_ms, Some(&row)).unwrap();
        }
        s.pack_sealed_rollups(2 * HOUR_MS, u64::MAX).unwrap();
        assert_eq!(s.key_counts().rollups, 0);
        assert_eq!(s.first_data_minute(&late).unwrap(), Some(17 * MINUTE_MS));
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
        assert!(!w.is_open());
        // and the database can be opened again
        FleetStore::open(dir.path()).unwrap();
    }

    #[test]
    fn alert_state_is_written_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = FleetStore::open(dir.path()).unwrap();
        assert_eq!(s.alert_state("engine").unwrap(), None);
        s.save_alert_state(&[("engine", b"{}".to_vec()), ("correlator", b"[]".to_vec())])
            .unwrap();
        assert_eq!(s.alert_state("correlator").unwrap(), Some(b"[]".to_vec()));
    }
}
