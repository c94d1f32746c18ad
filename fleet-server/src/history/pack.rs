//! Packing of sealed history spans (the history trees' second layout).
//!
//! Raw history rows and rollups each have two layouts ([`Packable`]). A row arrives as one key
//! of its own (`history`: device, time, seq; `rollups`: device, minute). Once its span is
//! sealed (a raw row's minute ended [`super::job::SEAL_AFTER_MS`] ago, a rollup's
//! hour [`super::job::ROLLUP_SEAL_AFTER_MS`] ago) the history job packs the span's
//! rows into a few values (`history_packed`, `rollups_packed`: device, span, part; up to
//! [`PART_BYTES`] each), written once, then deletes the single-row keys. sled keeps about 24
//! bytes of heap per key it holds, so one key per row made the server's heap grow with the
//! retention (raw rows: 0.4 to 0.7 GiB at 1,000 machines over 24 h; rollups: about 1 GiB over
//! 30 days; docs/benchmarks.md, "Soak findings"); packing divides the key count by the rows per
//! part. A row that lands late in a packed span (a backlog, a minute rolled up again) is a
//! single key again until the next pass merges it in. Readers merge both layouts in order;
//! where both hold a row (the same id) the single key, the newer, wins: that also covers a
//! crash between writing the packed value and deleting the single keys.

use std::path::PathBuf;

use common::DeviceId;
use common::codec::{self, CodecError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::minute::{HOUR_MS, MINUTE_MS};
use super::rows::{Agg, HistoryRow, RollupRow};
use crate::metric_names::{NameBook, Names};
use crate::store::{FleetStore, StoreError, parse_time_key, time_key};

/// Encoded bytes of one packed value at most (a single row larger than this is a part of its
/// own): a raw minute at one record per 5 s is one part; a rollup hour, about a dozen. sled
/// holds whole leaves of up to 16 values in memory, so parts much larger would make every
/// read of history costlier in memory.
pub const PART_BYTES: usize = 8 << 10;

/// First byte of a compact value (see "Compact rows" below). bincode's varints never start
/// with it, and every value written before compact rows starts with one (a row's time, a
/// packed part's length), so the two layouts tell themselves apart.
const COMPACT: u8 = 0xFF;

/// A row kept as one key until its span is sealed, then packed with its span's others.
///
/// Compact rows: a row is stored with its metric names replaced by their ids in the store's
/// [`NameBook`] (`COMPACT`, then the bincode of [`Packable::Compact`]); a value written
/// before that, with names spelled out, is still read.
pub trait Packable: Keyed + DeserializeOwned + Send + Sized + 'static {
    /// The stored form: the row with ids for names.
    type Compact: Serialize + DeserializeOwned;
    /// The stored form, writing new names into `book` first.
    fn compact(&self, book: &NameBook) -> Result<Self::Compact, sled::Error>;
    /// The row back; a metric whose id the book does not hold is left out.
    fn expand(c: Self::Compact, names: Names<'_>) -> Self;
}

/// Order and identity of a stored row: two rows with the same id are the same row.
pub trait Keyed {
    fn id(&self) -> (i64, u64);
}

/// A [`HistoryRow`] as stored: metrics by name id, and those whose name the full book did
/// not take spelled out.
#[derive(Serialize, Deserialize)]
pub struct CompactRow {
    ts_ms: i64,
    seq: u64,
    metrics: Vec<(u32, f32)>,
    spelled: Vec<(String, f32)>,
}

/// A [`RollupRow`] as stored.
#[derive(Serialize, Deserialize)]
pub struct CompactRollup {
    minute_ms: i64,
    metrics: Vec<(u32, Agg)>,
    spelled: Vec<(String, Agg)>,
}

type Split<V> = (Vec<(u32, V)>, Vec<(String, V)>);

fn ids<V: Copy>(book: &NameBook, metrics: &[(String, V)]) -> Result<Split<V>, sled::Error> {
    let mut out = (Vec::with_capacity(metrics.len()), Vec::new());
    for (n, v) in metrics {
        match book.id(n)? {
            Some(id) => out.0.push((id, *v)),
            None => out.1.push((n.clone(), *v)),
        }
    }
    Ok(out)
}

fn spelled<V>(names: Names<'_>, metrics: Vec<(u32, V)>, spelled: Vec<(String, V)>) -> Vec<(String, V)> {
    let mut out: Vec<(String, V)> = Vec::with_capacity(metrics.len() + spelled.len());
    out.extend(
        metrics
            .into_iter()
            .filter_map(|(id, v)| Some((names.get(id)?.to_owned(), v))),
    );
    out.extend(spelled);
    out
}

impl Keyed for HistoryRow {
    fn id(&self) -> (i64, u64) {
        (self.ts_ms, self.seq)
    }
}

impl Keyed for CompactRow {
    fn id(&self) -> (i64, u64) {
        (self.ts_ms, self.seq)
    }
}

impl Keyed for RollupRow {
    fn id(&self) -> (i64, u64) {
        (self.minute_ms, 0)
    }
}

impl Packable for HistoryRow {
    type Compact = CompactRow;

    fn compact(&self, book: &NameBook) -> Result<CompactRow, sled::Error> {
        let (metrics, spelled) = ids(book, &self.metrics)?;
        Ok(CompactRow {
            ts_ms: self.ts_ms,
            seq: self.seq,
            metrics,
            spelled,
        })
    }

    fn expand(c: CompactRow, names: Names<'_>) -> HistoryRow {
        HistoryRow {
            ts_ms: c.ts_ms,
            seq: c.seq,
            metrics: spelled(names, c.metrics, c.spelled),
        }
    }
}

impl Packable for RollupRow {
    type Compact = CompactRollup;

    fn compact(&self, book: &NameBook) -> Result<CompactRollup, sled::Error> {
        let (metrics, spelled) = ids(book, &self.metrics)?;
        Ok(CompactRollup {
            minute_ms: self.minute_ms,
            metrics,
            spelled,
        })
    }

    fn expand(c: CompactRollup, names: Names<'_>) -> RollupRow {
        RollupRow {
            minute_ms: c.minute_ms,
            metrics: spelled(names, c.metrics, c.spelled),
        }
    }
}

/// Encodes one row, or a packed part (`&[R]`), in the compact layout.
fn encode_compact<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let body = codec::encode(value)?;
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(COMPACT);
    out.extend_from_slice(&body);
    Ok(out)
}

/// One row's stored value.
pub fn encode_row<R: Packable>(row: &R, book: &NameBook) -> Result<Vec<u8>, StoreError> {
    let c = row.compact(book).map_err(|e| StoreError::Encode(e.to_string()))?;
    Ok(encode_compact(&c)?)
}

/// A packed part's stored value.
pub fn encode_rows<R: Packable>(rows: &[R], book: &NameBook) -> Result<Vec<u8>, StoreError> {
    let c = rows
        .iter()
        .map(|r| r.compact(book))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StoreError::Encode(e.to_string()))?;
    Ok(encode_compact(&c)?)
}

/// One row from its stored value, in either layout.
pub fn decode_row<R: Packable>(bytes: &[u8], book: &NameBook) -> Result<R, CodecError> {
    match bytes.split_first() {
        Some((&COMPACT, body)) => {
            let c = codec::decode_bare::<R::Compact>(body)?;
            Ok(book.with_names(|names| R::expand(c, names)))
        }
        _ => codec::decode_bare::<R>(bytes),
    }
}

/// A packed part's rows from its stored value, in either layout.
pub fn decode_rows<R: Packable>(bytes: &[u8], book: &NameBook) -> Result<Vec<R>, CodecError> {
    match bytes.split_first() {
        Some((&COMPACT, body)) => {
            let c = codec::decode_bare::<Vec<R::Compact>>(body)?;
            Ok(book.with_names(|names| c.into_iter().map(|c| R::expand(c, names)).collect()))
        }
        _ => codec::decode_bare::<Vec<R>>(bytes),
    }
}

/// One raw row from its stored value with its names left as ids, for rolling up; a row
/// written before compact rows comes with every name spelled out.
pub fn decode_compact_row(bytes: &[u8], _: &NameBook) -> Result<CompactRow, CodecError> {
    match bytes.split_first() {
        Some((&COMPACT, body)) => codec::decode_bare::<CompactRow>(body),
        _ => codec::decode_bare::<HistoryRow>(bytes).map(CompactRow::spelled_out),
    }
}

/// A packed part's raw rows, names left as ids (see [`decode_compact_row`]).
pub fn decode_compact_rows(bytes: &[u8], _: &NameBook) -> Result<Vec<CompactRow>, CodecError> {
    match bytes.split_first() {
        Some((&COMPACT, body)) => codec::decode_bare::<Vec<CompactRow>>(body),
        _ => Ok(codec::decode_bare::<Vec<HistoryRow>>(bytes)?
            .into_iter()
            .map(CompactRow::spelled_out)
            .collect()),
    }
}

impl CompactRow {
    fn spelled_out(r: HistoryRow) -> CompactRow {
        CompactRow {
            ts_ms: r.ts_ms,
            seq: r.seq,
            metrics: Vec::new(),
            spelled: r.metrics,
        }
    }
}

/// The rollup of one minute from its raw rows as stored, names as ids (the same figures as
/// [`super::rollup::rollup`] of the rows spelled out: rows outside the minute and non-finite
/// values are ignored; metrics in name order, those the book has no id for after the others).
/// Spelling ~60 names out of every row to roll a minute up was most of the rollup pass's cost
/// at 5,000 machines (issue 25). A name spelled out in one row (written before compact rows)
/// and an id in another is one metric.
pub fn rollup_compact(minute_ms: i64, rows: &[CompactRow], book: &NameBook) -> Option<CompactRollup> {
    let mut ids: Vec<(u32, Agg)> = Vec::new();
    let mut spelled: std::collections::BTreeMap<&str, Agg> = Default::default();
    // a machine sends the same names in the same order: the row's position is the first guess
    let mut add = |at: usize, id: u32, v: f64| match ids.get_mut(at).filter(|(k, _)| *k == id) {
        Some((_, a)) => a.merge(&Agg::of(v)),
        None => match ids.iter_mut().find(|(k, _)| *k == id) {
            Some((_, a)) => a.merge(&Agg::of(v)),
            None => ids.push((id, Agg::of(v))),
        },
    };
    for r in rows
        .iter()
        .filter(|r| super::minute::minute_of(r.ts_ms) == minute_ms)
    {
        for (at, (id, v)) in r.metrics.iter().enumerate() {
            let v = f64::from(*v);
            if v.is_finite() {
                add(at, *id, v);
            }
        }
        for (name, v) in &r.spelled {
            let v = f64::from(*v);
            if !v.is_finite() {
                continue;
            }
            match book.known(name) {
                Some(id) => add(usize::MAX, id, v),
                None => {
                    spelled
                        .entry(name.as_str())
                        .and_modify(|a| a.merge(&Agg::of(v)))
                        .or_insert_with(|| Agg::of(v));
                }
            }
        }
    }
    if ids.is_empty() && spelled.is_empty() {
        return None;
    }
    book.with_names(|names| ids.sort_by(|a, b| names.get(a.0).cmp(&names.get(b.0))));
    Some(CompactRollup {
        minute_ms,
        metrics: ids,
        spelled: spelled.into_iter().map(|(n, a)| (n.to_owned(), a)).collect(),
    })
}

/// A rollup's stored value from its compact form.
pub fn encode_compact_rollup(r: &CompactRollup) -> Result<Vec<u8>, StoreError> {
    Ok(encode_compact(r)?)
}

/// What one packing pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Packed {
    /// Spans (raw minutes, rollup hours) written.
    pub spans: u64,
    pub rows: u64,
}

impl FleetStore {
    /// Packs the raw rows of every minute that ended before `sealed_before_ms` (see
    /// `FleetStore::pack_tree`). Blocking.
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
    pub(crate) fn pack_tree<R: Packable>(
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
            let Ok(row) = decode_row::<R>(&v, &self.names) else {
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
            match decode_rows::<R>(&v, &self.names) {
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
            parts.insert(key, encode_rows(part, &self.names)?);
            part.clear();
            *index += 1;
            Ok(())
        };
        for row in rows {
            let n = encode_row(&row, &self.names)?.len();
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
    pub(crate) fn merged_iter<R: Packable>(
        &self,
        single: &sled::Tree,
        packed: &sled::Tree,
        span_ms: i64,
        device: &DeviceId,
        from_ms: i64,
        to_ms: i64,
    ) -> MergeRows<R> {
        let span = (span_ms, from_ms, to_ms);
        self.merged_iter_as(single, packed, span, device, decode_row::<R>, decode_rows::<R>)
    }

    /// [`Self::merged_iter`] with the values decoded by `one` (a single key) and `many` (a
    /// packed part); `span` is (span length, from, to).
    pub(crate) fn merged_iter_as<T: Keyed + Send + 'static>(
        &self,
        single: &sled::Tree,
        packed: &sled::Tree,
        (span_ms, from_ms, to_ms): (i64, i64, i64),
        device: &DeviceId,
        one: fn(&[u8], &NameBook) -> Result<T, CodecError>,
        many: fn(&[u8], &NameBook) -> Result<Vec<T>, CodecError>,
    ) -> MergeRows<T> {
        let fail = |path: &PathBuf, error| StoreError::Sled {
            path: path.clone(),
            error,
        };
        let path = self.path().to_path_buf();
        let book = self.names.clone();
        let singles = single
            .range(time_key(device, from_ms)..time_key(device, to_ms))
            .filter_map(move |item| match item {
                Ok((_, v)) => one(&v, &book).ok().map(Ok),
                Err(error) => Some(Err(fail(&path, error))),
            });
        let path = self.path().to_path_buf();
        let span_start = from_ms.div_euclid(span_ms) * span_ms;
        let book = self.names.clone();
        let parts = packed
            .range(time_key(device, span_start)..time_key(device, to_ms))
            .flat_map(move |item| match item {
                Ok((_, v)) => many(&v, &book)
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
    pub(crate) fn first_packed<R: Packable>(
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
        Ok(decode_rows::<R>(&v, &self.names)
            .ok()
            .and_then(|rows| rows.first().map(|r| r.id().0)))
    }
}

type RowIter<R> = std::iter::Peekable<Box<dyn Iterator<Item = Result<R, StoreError>> + Send>>;

/// Packed rows and single-key rows, each in order, merged into one; where both hold a row
/// (the same id) the single key's, the newer, is given. Errors pass through as they come.
pub struct MergeRows<R: Keyed> {
    packed: RowIter<R>,
    single: RowIter<R>,
}

impl<R: Keyed> Iterator for MergeRows<R> {
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
    use crate::ingest::store::{IngestStore, WriteBatch};

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
                // 16 metrics, about 87 bytes a row in the compact layout: 94 rows fill a part
                metrics: std::iter::once(("cpu.usage_pct".to_string(), seq as f32))
                    .chain((1..16).map(|i| (format!("m{i}"), i as f32)))
                    .collect(),
            };
            b.history(d, row);
        }
        s.apply(b, 0).unwrap();
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
        let minute0 = crate::history::rollup::rollup(0, &s.history(&a, 0, 60_000, 1000).unwrap()).unwrap();
        assert_eq!(minute0.get("cpu.usage_pct").unwrap().count, 121);
        assert_eq!(s.first_data_minute(&a).unwrap(), Some(-60_000));

        // a pass stops at its row budget after a whole minute
        write(&s, &b, [(130_000, 3), (190_000, 4)]);
        assert_eq!(s.pack_sealed(300_000, 1).unwrap(), Packed { spans: 1, rows: 120 });

        // expiry: a packed minute goes once all of it is past the bound
        assert_eq!(s.expire_device(&a, 59_999, 0).unwrap(), (59, 0), "minute -1 only");
        assert_eq!(s.expire_device(&a, 60_000, 0).unwrap(), (121, 0));
        assert_eq!(rows(&a, &s, i64::MIN / 2, i64::MAX / 2).len(), 121);
    }

    #[test]
    fn sealed_rollup_hours_are_packed_and_a_minute_rolled_up_again_wins() {
        use crate::history::rows::Agg;
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
        assert_eq!(s.expire_device(&d, 0, HOUR_MS - 1).unwrap(), (0, 0));
        assert_eq!(s.expire_device(&d, 0, HOUR_MS).unwrap(), (0, 60));
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

    /// A store written before compact rows (names spelled out in every row and part) is
    /// read as before, packs together with compact rows, and survives a reopen.
    #[test]
    fn rows_stored_with_spelled_out_names_are_still_read_and_packed() {
        let dir = tempfile::tempdir().unwrap();
        let d = DeviceId::new("rvm1").unwrap();
        let old = |ts: i64, seq: u64| HistoryRow {
            ts_ms: ts,
            seq,
            metrics: vec![("cpu.usage_pct".into(), seq as f32), ("app.items".into(), 2.0)],
        };
        {
            let s = FleetStore::open(dir.path()).unwrap();
            // the old layout, as the writer stored it: codec::encode of the row or the part
            for seq in 1..=3 {
                let r = old(seq as i64 * 1000, seq);
                s.history
                    .insert(
                        crate::store::history_key(&d, r.ts_ms, seq),
                        codec::encode(&r).unwrap(),
                    )
                    .unwrap();
            }
            let part = vec![old(-59_000, 100), old(-58_000, 101)];
            let mut key = time_key(&d, -MINUTE_MS);
            key.extend_from_slice(&0u16.to_be_bytes());
            s.history_packed
                .insert(key, codec::encode(&part).unwrap())
                .unwrap();
            // and new rows beside them
            write(&s, &d, [(4000, 4), (70_000, 5)]);
            s.flush().unwrap();
        }
        let s = FleetStore::open(dir.path()).unwrap();
        let all = s.history(&d, i64::MIN / 2, i64::MAX / 2, 100).unwrap();
        assert_eq!(
            all.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [100, 101, 1, 2, 3, 4, 5]
        );
        assert_eq!(all[2], old(1000, 1), "an old row reads back whole");
        assert_eq!(all[5].metrics[0], ("cpu.usage_pct".to_string(), 4.0));
        assert_eq!(all[5].metrics.len(), 16);
        // minute 0 holds three old rows and one new: one part, in the compact layout (minute
        // -1 has no single keys, its old part stays as it is)
        assert_eq!(
            s.pack_sealed(60_000, u64::MAX).unwrap(),
            Packed { spans: 1, rows: 4 }
        );
        assert_eq!(s.history(&d, i64::MIN / 2, i64::MAX / 2, 100).unwrap(), all);
        let mut key = time_key(&d, 0);
        key.extend_from_slice(&0u16.to_be_bytes());
        let v = s.history_packed.get(key).unwrap().unwrap();
        assert_eq!(v[0], COMPACT);
        assert_eq!(s.key_counts().raw, 1, "minute 1 is not sealed");
    }

    /// The rollup pass reads rows with names as ids; it must give what the rollup of the rows
    /// spelled out gives: old rows (names spelled out, one of them in a packed part), new rows,
    /// a late row, a non-finite value, a row of the next minute, and names past a full book.
    #[test]
    fn a_minute_rolled_up_from_compact_rows_is_the_rollup_of_the_rows_spelled_out() {
        let dir = tempfile::tempdir().unwrap();
        let d = DeviceId::new("rvm1").unwrap();
        let s = FleetStore::open(dir.path()).unwrap();
        let old = |ts: i64, seq: u64, cpu: f32| HistoryRow {
            ts_ms: ts,
            seq,
            metrics: vec![
                ("z.last".into(), 1.0),
                ("cpu.usage_pct".into(), cpu),
                ("m3".into(), 7.0),
            ],
        };
        s.history
            .insert(
                crate::store::history_key(&d, 1_000, 1),
                codec::encode(&old(1_000, 1, 90.0)).unwrap(),
            )
            .unwrap();
        let mut key = time_key(&d, 0);
        key.extend_from_slice(&0u16.to_be_bytes());
        s.history_packed
            .insert(key, codec::encode(&vec![old(500, 0, 5.0)]).unwrap())
            .unwrap();
        write(&s, &d, [(2_000, 2), (3_000, 3), (61_000, 9)]);
        let mut b = WriteBatch::default();
        b.history(
            &d,
            HistoryRow {
                ts_ms: 30_000,
                seq: 4,
                metrics: vec![("cpu.usage_pct".into(), f32::NAN), ("m3".into(), 1.0)],
            },
        );
        s.apply(b, 0).unwrap();
        let spelled = |s: &FleetStore| {
            let rows = s.history(&d, 0, MINUTE_MS, 1_000).unwrap();
            super::super::rollup::rollup(0, &rows).unwrap()
        };
        let compact = |s: &FleetStore| {
            let rows = s.compact_rows(&d, 0).unwrap();
            assert_eq!(rows.len(), 5, "four of minute 0 and one late");
            let c = rollup_compact(0, &rows, &s.names).unwrap();
            s.names.with_names(|n| RollupRow::expand(c, n))
        };
        let want = spelled(&s);
        assert_eq!(want.get("cpu.usage_pct").unwrap().count, 4, "NaN left out");
        assert_eq!(want.get("m3").unwrap().count, 5);
        assert_eq!(compact(&s), want);
        // a full book: a name it never took stays spelled out, after the others
        let full = s.names.clone().with_cap(s.names.len());
        let extra = HistoryRow {
            ts_ms: 40_000,
            seq: 5,
            metrics: vec![("a.new".into(), 3.0), ("cpu.usage_pct".into(), 1.0)],
        };
        let c = extra.compact(&full).unwrap();
        assert_eq!(c.spelled.len(), 1, "past the cap");
        let mut rows = s.compact_rows(&d, 0).unwrap();
        rows.push(c);
        let rolled = rollup_compact(0, &rows, &full).unwrap();
        let got = full.with_names(|n| RollupRow::expand(rolled, n));
        assert_eq!(got.get("cpu.usage_pct").unwrap().count, 5);
        // the old rows' `z.last` was never given an id either
        let names: Vec<&str> = got.metrics.iter().map(|(n, _)| n.as_str()).collect();
        let (with_ids, spelled) = names.split_at(names.len() - 2);
        assert_eq!(spelled, ["a.new", "z.last"]);
        assert!(with_ids.is_sorted(), "in name order: {with_ids:?}");
    }

    /// What the names cost: a row of 57 metrics with names as the look inside spells them
    /// (19 bytes on average) is about a quarter of its spelled-out size once compact.
    #[test]
    fn a_compact_row_is_a_fraction_of_the_spelled_out_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = FleetStore::open(dir.path()).unwrap();
        let row = HistoryRow {
            ts_ms: 1_796_599_024_947,
            seq: 12345,
            metrics: (0..57)
                .map(|i| (format!("proc.top_cpu.{i:02}.rss_b"), i as f32))
                .collect(),
        };
        let (spelled, compact) = (
            codec::encode(&row).unwrap().len(),
            encode_row(&row, &s.names).unwrap().len(),
        );
        assert!(compact * 3 < spelled, "{spelled} -> {compact}");
        let back: HistoryRow = decode_row(&encode_row(&row, &s.names).unwrap(), &s.names).unwrap();
        assert_eq!(back, row);
        assert_eq!(s.names.len(), 57);
    }

    /// Past the book's cap, new names are spelled out in the row and read back the same.
    #[test]
    fn a_row_with_names_past_a_full_book_keeps_them_spelled_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FleetStore::open(dir.path()).unwrap();
        s.names = s.names.clone().with_cap(2);
        let d = DeviceId::new("rvm1").unwrap();
        let row = HistoryRow {
            ts_ms: 1000,
            seq: 1,
            metrics: vec![("a".into(), 1.0), ("b".into(), 2.0), ("c".into(), 3.0)],
        };
        let mut b = WriteBatch::default();
        b.history(&d, row.clone());
        s.apply(b, 0).unwrap();
        assert_eq!(s.history(&d, 0, 2000, 10).unwrap(), vec![row.clone()]);
        assert_eq!((s.names.len(), s.names.refused()), (2, 1));
        // and packed
        s.pack_sealed(60_000, u64::MAX).unwrap();
        assert_eq!(s.history(&d, 0, 2000, 10).unwrap(), vec![row]);
    }
}
