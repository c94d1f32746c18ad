//! Metric history in PostgreSQL: metric names, raw rows, 1-minute rollups.
//!
//! A raw row is one record's flat metrics, stored as `vals real[]` with each value at the
//! position of its name's id in `metric_names` (see `migrations/0001_init.sql`). Names are
//! numbered once for the whole fleet by [`MetricIds::ensure`], which commits on its own: an id
//! must never vanish with a rolled-back batch, or the values stored at it would have no name.
//!
//! [`RawWriter`] writes a batch of rows in one transaction, deduplicated with
//! `ON CONFLICT DO NOTHING` on (device, time, seq), and marks each (device, minute) it touched
//! in `rollup_dirty` in the same transaction. Two ways, same result ([`WriteMode`]):
//! - [`WriteMode::Copy`]: binary `COPY` into a session-local staging table, then one
//!   `INSERT ... SELECT ... ON CONFLICT DO NOTHING` (COPY itself cannot skip conflicts);
//! - [`WriteMode::Insert`]: multi-row `INSERT ... VALUES ... ON CONFLICT DO NOTHING` in chunks of
//!   [`INSERT_CHUNK`] rows.
//!
//! Rows outside the partitions that exist by policy (older than the raw retention's horizon
//! day, or more than [`AHEAD_DAYS`] days ahead) are not written and are counted: the older ones
//! would be dropped with their partition anyway.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::DeviceId;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, GenericClient, Transaction};

use super::PgError;
use super::partitions::{AHEAD_DAYS, day_of, horizon_day};

/// Highest metric id a row stores a value at: a fleet sending ever new metric names (an app
/// that puts ids in names) would otherwise make every row's array longer.
pub const MAX_METRIC_ID: i16 = 4096;
/// Longest metric name stored (the table's CHECK).
pub const MAX_NAME_BYTES: usize = 200;
/// Rows per statement of [`WriteMode::Insert`] (4 parameters each; PostgreSQL allows 65,535).
pub const INSERT_CHUNK: usize = 1000;
/// Minute length.
pub const MINUTE_MS: i64 = 60_000;

/// One record's metrics at its time.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRow {
    pub device: DeviceId,
    pub time_ms: i64,
    pub seq: u64,
    pub metrics: Vec<(String, f32)>,
}

/// min, max, sum and count of one metric over a minute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricAgg {
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: u64,
}

/// One device's figures for one minute.
#[derive(Debug, Clone, PartialEq)]
pub struct MinuteRollup {
    pub device: DeviceId,
    pub minute_ms: i64,
    pub metrics: Vec<(String, MetricAgg)>,
}

/// How [`RawWriter`] sends rows (module docs). The default is the faster one measured on a
/// 2-core machine (docs/postgres.md, "Writing"): as fast as COPY at 2,048 rows a transaction,
/// faster for smaller batches (the staging table costs a fixed amount per transaction).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum WriteMode {
    Copy,
    #[default]
    Insert,
}

/// What one write did with its rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteReport {
    /// Rows now stored that were not before.
    pub inserted: u64,
    /// Rows already stored (same device, time and seq): a resend.
    pub duplicates: u64,
    /// Rows outside the partitions kept by policy (module docs), not written.
    pub outside_retention: u64,
    /// Rows with seq 0 or above `i64::MAX`, not written.
    pub invalid: u64,
    /// Values not stored because their name is too long or past [`MAX_METRIC_ID`].
    pub dropped_values: u64,
}

/// The fleet's metric names and their ids, as far as this process knows them.
#[derive(Debug, Clone, Default)]
pub struct MetricIds {
    by_name: HashMap<String, i16>,
    by_id: HashMap<i16, String>,
}

impl MetricIds {
    /// Every name the database has numbered.
    pub async fn load(client: &impl GenericClient) -> Result<MetricIds, PgError> {
        let mut ids = MetricIds::default();
        ids.reload(client).await?;
        Ok(ids)
    }

    async fn reload(&mut self, client: &impl GenericClient) -> Result<(), PgError> {
        let rows = client
            .query("SELECT id, name FROM metric_names", &[])
            .await
            .map_err(PgError::db("reading metric names"))?;
        for r in rows {
            self.learn(r.get(0), r.get(1));
        }
        Ok(())
    }

    fn learn(&mut self, id: i16, name: String) {
        self.by_id.insert(id, name.clone());
        self.by_name.insert(name, id);
    }

    /// Numbers every name not numbered yet. Commits by itself: call it on a connection that
    /// is not inside a transaction.
    pub async fn ensure<'a>(
        &mut self,
        client: &Client,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), PgError> {
        let unknown: BTreeSet<&str> = names
            .into_iter()
            .filter(|n| !self.by_name.contains_key(*n) && storable(n))
            .collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let unknown: Vec<&str> = unknown.into_iter().collect();
        // Only names still missing are inserted: a conflicting insert would use up an id.
        client
            .execute(
                "INSERT INTO metric_names (name)
                 SELECT n FROM unnest($1::text[]) AS n
                 WHERE NOT EXISTS (SELECT 1 FROM metric_names m WHERE m.name = n)
                 ON CONFLICT (name) DO NOTHING",
                &[&unknown],
            )
            .await
            .map_err(PgError::db("numbering metric names"))?;
        let rows = client
            .query(
                "SELECT id, name FROM metric_names WHERE name = ANY($1)",
                &[&unknown],
            )
            .await
            .map_err(PgError::db("reading metric names"))?;
        for r in rows {
            self.learn(r.get(0), r.get(1));
        }
        Ok(())
    }

    pub fn id(&self, name: &str) -> Option<i16> {
        self.by_name.get(name).copied()
    }

    pub fn name(&self, id: i16) -> Option<&str> {
        self.by_id.get(&id).map(String::as_str)
    }

    /// Values placed at their ids (1-based positions); the count of values left out (name
    /// unknown, too long, or its id past [`MAX_METRIC_ID`]).
    pub fn encode<'a, T: Copy + 'a>(
        &self,
        metrics: impl IntoIterator<Item = (&'a str, T)>,
    ) -> (Vec<Option<T>>, u64) {
        let mut out: Vec<Option<T>> = Vec::new();
        let mut dropped = 0;
        for (name, v) in metrics {
            match self.id(name).filter(|id| (1..=MAX_METRIC_ID).contains(id)) {
                Some(id) => {
                    let i = id as usize - 1;
                    if out.len() <= i {
                        out.resize(i + 1, None);
                    }
                    out[i] = Some(v);
                }
                None => dropped += 1,
            }
        }
        (out, dropped)
    }

    /// (name, value) of every value present, in id order; None if an id has no known name.
    pub fn decode<T: Copy>(&self, vals: &[Option<T>]) -> Option<Vec<(String, T)>> {
        let mut out = Vec::new();
        for (i, v) in vals.iter().enumerate() {
            if let Some(v) = v {
                let name = self.name(i16::try_from(i + 1).ok()?)?;
                out.push((name.to_string(), *v));
            }
        }
        Some(out)
    }
}

fn storable(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_BYTES
}

/// The time `ms` after the Unix epoch (negative: before it).
pub fn system_time(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// Milliseconds after the Unix epoch of `t` (rounded down).
pub fn millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

/// A row ready to send.
struct Encoded<'a> {
    time: SystemTime,
    device: &'a str,
    seq: i64,
    vals: Vec<Option<f32>>,
}

/// The batch writer of raw rows (module docs).
#[derive(Debug, Clone)]
pub struct RawWriter {
    ids: MetricIds,
    mode: WriteMode,
    raw_retention_ms: i64,
}

impl RawWriter {
    pub fn new(ids: MetricIds, mode: WriteMode, raw_retention_ms: i64) -> RawWriter {
        RawWriter {
            ids,
            mode,
            raw_retention_ms,
        }
    }

    pub fn ids(&self) -> &MetricIds {
        &self.ids
    }

    /// Numbers the metric names of `rows` that are new (commits by itself: call it before the
    /// transaction of [`RawWriter::write_in`], on the same or another connection).
    pub async fn prepare(&mut self, client: &Client, rows: &[RawRow]) -> Result<(), PgError> {
        self.ids
            .ensure(
                client,
                rows.iter()
                    .flat_map(|r| r.metrics.iter().map(|(n, _)| n.as_str())),
            )
            .await
    }

    /// [`RawWriter::prepare`], then the rows in one transaction of their own.
    pub async fn write(
        &mut self,
        client: &mut Client,
        rows: &[RawRow],
        now_ms: i64,
    ) -> Result<WriteReport, PgError> {
        self.prepare(client, rows).await?;
        let tx = client
            .transaction()
            .await
            .map_err(PgError::db("history transaction"))?;
        let report = self.write_in(&tx, rows, now_ms).await?;
        tx.commit().await.map_err(PgError::db("history commit"))?;
        Ok(report)
    }

    /// Writes `rows` inside `tx` (the caller commits, e.g. with the delivery state of the same
    /// records). Names not numbered by [`RawWriter::prepare`] are left out and counted.
    pub async fn write_in(
        &self,
        tx: &Transaction<'_>,
        rows: &[RawRow],
        now_ms: i64,
    ) -> Result<WriteReport, PgError> {
        let mut report = WriteReport::default();
        let first_day = horizon_day(now_ms, self.raw_retention_ms);
        let last_day = day_of(now_ms) + AHEAD_DAYS;
        let mut batch = Vec::with_capacity(rows.len());
        let mut dirty: BTreeSet<(&str, i64)> = BTreeSet::new();
        for r in rows {
            let Some(seq) = i64::try_from(r.seq).ok().filter(|s| *s > 0) else {
                report.invalid += 1;
                continue;
            };
            if !(first_day..=last_day).contains(&day_of(r.time_ms)) {
                report.outside_retention += 1;
                continue;
            }
            let (vals, dropped) = self.ids.encode(r.metrics.iter().map(|(n, v)| (n.as_str(), *v)));
            report.dropped_values += dropped;
            dirty.insert((r.device.as_str(), r.time_ms.div_euclid(MINUTE_MS) * MINUTE_MS));
            batch.push(Encoded {
                time: system_time(r.time_ms),
                device: r.device.as_str(),
                seq,
                vals,
            });
        }
        if batch.is_empty() {
            return Ok(report);
        }
        report.inserted = match self.mode {
            WriteMode::Copy => copy_rows(tx, &batch).await?,
            WriteMode::Insert => insert_rows(tx, &batch).await?,
        };
        report.duplicates = batch.len() as u64 - report.inserted;
        let (devices, minutes): (Vec<&str>, Vec<SystemTime>) =
            dirty.into_iter().map(|(d, m)| (d, system_time(m))).unzip();
        tx.execute(
            "INSERT INTO rollup_dirty (device, minute)
             SELECT * FROM unnest($1::text[], $2::timestamptz[])
             ON CONFLICT DO NOTHING",
            &[&devices, &minutes],
        )
        .await
        .map_err(PgError::db("marking rollup minutes"))?;
        Ok(report)
    }
}

/// Binary COPY into the session's staging table, then one insert that skips conflicts.
async fn copy_rows(tx: &Transaction<'_>, batch: &[Encoded<'_>]) -> Result<u64, PgError> {
    tx.batch_execute(
        "SET LOCAL client_min_messages = warning;
         CREATE TEMP TABLE IF NOT EXISTS telemetry_stage (
             time timestamptz NOT NULL,
             device text NOT NULL,
             seq bigint NOT NULL,
             vals real[] NOT NULL
         ) ON COMMIT DELETE ROWS",
    )
    .await
    .map_err(PgError::db("staging table"))?;
    let sink = tx
        .copy_in("COPY telemetry_stage (time, device, seq, vals) FROM STDIN (FORMAT binary)")
        .await
        .map_err(PgError::db("copy into staging"))?;
    let writer = BinaryCopyInWriter::new(
        sink,
        &[Type::TIMESTAMPTZ, Type::TEXT, Type::INT8, Type::FLOAT4_ARRAY],
    );
    let mut writer = std::pin::pin!(writer);
    for r in batch {
        writer
            .as_mut()
            .write(&[&r.time, &r.device, &r.seq, &r.vals])
            .await
            .map_err(PgError::db("copy into staging"))?;
    }
    writer.finish().await.map_err(PgError::db("copy into staging"))?;
    let inserted = tx
        .execute(
            "INSERT INTO telemetry (time, device, seq, vals)
             SELECT time, device, seq, vals FROM telemetry_stage
             ON CONFLICT DO NOTHING",
            &[],
        )
        .await
        .map_err(PgError::db("insert from staging"))?;
    // a second write in the same transaction must not see these rows again
    tx.batch_execute("TRUNCATE telemetry_stage")
        .await
        .map_err(PgError::db("staging table"))?;
    Ok(inserted)
}

/// Multi-row inserts of [`INSERT_CHUNK`] rows (the last chunk shorter).
async fn insert_rows(tx: &Transaction<'_>, batch: &[Encoded<'_>]) -> Result<u64, PgError> {
    let mut inserted = 0;
    let mut prepared: HashMap<usize, tokio_postgres::Statement> = HashMap::new();
    for chunk in batch.chunks(INSERT_CHUNK) {
        let stmt = match prepared.get(&chunk.len()) {
            Some(s) => s.clone(),
            None => {
                let s = tx
                    .prepare(&insert_sql(chunk.len()))
                    .await
                    .map_err(PgError::db("preparing the history insert"))?;
                prepared.insert(chunk.len(), s.clone());
                s
            }
        };
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(chunk.len() * 4);
        for r in chunk {
            params.extend_from_slice(&[&r.time, &r.device, &r.seq, &r.vals]);
        }
        inserted += tx
            .execute(&stmt, &params)
            .await
            .map_err(PgError::db("history insert"))?;
    }
    Ok(inserted)
}

/// `INSERT INTO telemetry ... VALUES ($1, $2, $3, $4), ... ON CONFLICT DO NOTHING` for `n` rows.
fn insert_sql(n: usize) -> String {
    let mut sql = String::from("INSERT INTO telemetry (time, device, seq, vals) VALUES ");
    for i in 0..n {
        let p = i * 4;
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&format!("(${},${},${},${})", p + 1, p + 2, p + 3, p + 4));
    }
    sql.push_str(" ON CONFLICT DO NOTHING");
    sql
}

/// Raw rows of `device` with `from_ms <= time < to_ms`, in time order, at most `limit`.
pub async fn read_raw(
    client: &impl GenericClient,
    ids: &mut MetricIds,
    device: &DeviceId,
    from_ms: i64,
    to_ms: i64,
    limit: usize,
) -> Result<Vec<RawRow>, PgError> {
    let rows = client
        .query(
            "SELECT time, seq, vals FROM telemetry
             WHERE device = $1 AND time >= $2 AND time < $3
             ORDER BY time, seq LIMIT $4",
            &[
                &device.as_str(),
                &system_time(from_ms),
                &system_time(to_ms),
                &(limit.min(i64::MAX as usize) as i64),
            ],
        )
        .await
        .map_err(PgError::db("reading history"))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let vals: Vec<Option<f32>> = r.get(2);
        let metrics = decode_or_reload(client, ids, &vals).await?;
        out.push(RawRow {
            device: device.clone(),
            time_ms: millis(r.get(0)),
            seq: r.get::<_, i64>(1) as u64,
            metrics,
        });
    }
    Ok(out)
}

async fn decode_or_reload<T: Copy>(
    client: &impl GenericClient,
    ids: &mut MetricIds,
    vals: &[Option<T>],
) -> Result<Vec<(String, T)>, PgError> {
    if let Some(m) = ids.decode(vals) {
        return Ok(m);
    }
    // another instance numbered a name since this one loaded them
    ids.reload(client).await?;
    Ok(ids.decode(vals).unwrap_or_default())
}

/// Writes (or replaces) each rollup in `tx`. Names must be numbered (they come from raw rows).
pub async fn write_rollups(
    tx: &Transaction<'_>,
    ids: &MetricIds,
    rollups: &[MinuteRollup],
) -> Result<u64, PgError> {
    let stmt = tx
        .prepare(
            "INSERT INTO rollups_1m (minute, device, mins, maxs, sums, counts)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (device, minute) DO UPDATE SET mins = EXCLUDED.mins, maxs = EXCLUDED.maxs,
                 sums = EXCLUDED.sums, counts = EXCLUDED.counts",
        )
        .await
        .map_err(PgError::db("preparing the rollup upsert"))?;
    let mut written = 0;
    for r in rollups {
        let named = |f: fn(&MetricAgg) -> f64| {
            ids.encode(r.metrics.iter().map(move |(n, a)| (n.as_str(), f(a))))
                .0
        };
        let (counts, _) = ids.encode(
            r.metrics
                .iter()
                .map(|(n, a)| (n.as_str(), i32::try_from(a.count).unwrap_or(i32::MAX))),
        );
        written += tx
            .execute(
                &stmt,
                &[
                    &system_time(r.minute_ms),
                    &r.device.as_str(),
                    &named(|a| a.min),
                    &named(|a| a.max),
                    &named(|a| a.sum),
                    &counts,
                ],
            )
            .await
            .map_err(PgError::db("rollup upsert"))?;
    }
    Ok(written)
}

/// Rollups of `device` with `from_ms <= minute < to_ms`, in time order.
pub async fn read_rollups(
    client: &impl GenericClient,
    ids: &mut MetricIds,
    device: &DeviceId,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<MinuteRollup>, PgError> {
    let rows = client
        .query(
            "SELECT minute, mins, maxs, sums, counts FROM rollups_1m
             WHERE device = $1 AND minute >= $2 AND minute < $3 ORDER BY minute",
            &[&device.as_str(), &system_time(from_ms), &system_time(to_ms)],
        )
        .await
        .map_err(PgError::db("reading rollups"))?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let mins: Vec<Option<f64>> = r.get(1);
        let maxs: Vec<Option<f64>> = r.get(2);
        let sums: Vec<Option<f64>> = r.get(3);
        let counts: Vec<Option<i32>> = r.get(4);
        let packed: Vec<Option<MetricAgg>> = (0..counts.len())
            .map(|i| {
                let at = |v: &Vec<Option<f64>>| v.get(i).copied().flatten();
                Some(MetricAgg {
                    min: at(&mins)?,
                    max: at(&maxs)?,
                    sum: at(&sums)?,
                    count: counts[i]?.max(0) as u64,
                })
            })
            .collect();
        out.push(MinuteRollup {
            device: device.clone(),
            minute_ms: millis(r.get(0)),
            metrics: decode_or_reload(client, ids, &packed).await?,
        });
    }
    Ok(out)
}

/// Takes up to `limit` (device, minute) marks to roll up, oldest first, removing them in
/// `tx`; marks another transaction holds are skipped. If `tx` rolls back, they stay.
pub async fn take_dirty(tx: &Transaction<'_>, limit: usize) -> Result<Vec<(DeviceId, i64)>, PgError> {
    let rows = tx
        .query(
            "DELETE FROM rollup_dirty WHERE (device, minute) IN (
                 SELECT device, minute FROM rollup_dirty ORDER BY minute LIMIT $1
                 FOR UPDATE SKIP LOCKED)
             RETURNING device, minute",
            &[&(limit.min(i64::MAX as usize) as i64)],
        )
        .await
        .map_err(PgError::db("taking rollup minutes"))?;
    Ok(rows
        .iter()
        .filter_map(|r| Some((DeviceId::new(r.get::<_, &str>(0)).ok()?, millis(r.get(1)))))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_ids(names: &[&str]) -> MetricIds {
        let mut ids = MetricIds::default();
        for (i, n) in names.iter().enumerate() {
            ids.learn(i as i16 + 1, n.to_string());
        }
        ids
    }

    #[test]
    fn values_sit_at_their_ids_and_unknown_names_are_counted() {
        let ids = build_ids(&["cpu", "gpu", "load"]);
        let (vals, dropped) = ids.encode([("load", 1.5f32), ("cpu", 50.0), ("fan", 3.0)]);
        assert_eq!(vals, [Some(50.0), None, Some(1.5)]);
        assert_eq!(dropped, 1);
        let back = ids.decode(&vals).unwrap();
        assert_eq!(back, [("cpu".to_string(), 50.0), ("load".to_string(), 1.5)]);
    }

    #[test]
    fn ids_past_the_limit_are_not_stored() {
        let mut ids = MetricIds::default();
        ids.learn(MAX_METRIC_ID + 1, "late".into());
        ids.learn(2, "early".into());
        let (vals, dropped) = ids.encode([("late", 1.0f32), ("early", 2.0)]);
        assert_eq!(vals, [None, Some(2.0)]);
        assert_eq!(dropped, 1);
    }

    #[test]
    fn a_value_at_an_id_without_a_name_is_not_decoded() {
        let ids = build_ids(&["cpu"]);
        assert_eq!(ids.decode(&[Some(1.0f32), Some(2.0)]), None);
    }

    #[test]
    fn times_before_and_after_the_epoch_round_trip() {
        for ms in [-86_400_001, -1, 0, 1, 1_741_611_600_123] {
            assert_eq!(millis(system_time(ms)), ms);
        }
    }

    #[test]
    fn the_insert_statement_numbers_four_parameters_a_row() {
        assert_eq!(
            insert_sql(2),
            "INSERT INTO telemetry (time, device, seq, vals) VALUES ($1,$2,$3,$4),($5,$6,$7,$8) \
             ON CONFLICT DO NOTHING"
        );
        const { assert!(INSERT_CHUNK * 4 <= 65_535) };
    }
}
