//! History's PostgreSQL store: raw rows (`telemetry`) and 1-minute rollups (`rollups_1m`),
//! both partitioned by day (`crate::pg::partitions`).
//!
//! - Reads page through a device's range by key ((time, seq) for rows, minute for rollups),
//!   [`PAGE_ROWS`] at a time, so an export of a day holds one page in memory.
//! - [`PgHistory::roll_up`] takes dirty (device, minute) marks and writes their rollups in
//!   the same transaction ([`take_dirty`]: marks another transaction holds are skipped; a
//!   failed transaction leaves its marks for the next run), reading every marked minute's raw
//!   rows with one statement.
//! - Retention drops whole daily partitions ([`partitions::ensure`]), which also makes the
//!   partitions of the days ahead; there is nothing to pack.
//! - With several instances only the leader rolls up and drops partitions, and each of its
//!   transactions asserts its lease first ([`crate::cluster::fence`]): a leader that lost the
//!   lease (frozen, cut off) writes nothing, and its marks stay for the new leader.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use common::DeviceId;
use tokio::sync::Mutex;
use tokio_postgres::GenericClient;

use super::minute::minute_of;
use super::pack::Packed;
use super::rollup::{self, HistoryPolicy};
use super::rows::{Agg, HistoryRow, RollupRow};
use super::store::{Expired, HistoryStore, RollupIter, RowIter};
use crate::cluster::fence;
use crate::cluster::lease::LeaseToken;
use crate::pg::PgError;
use crate::pg::history::{
    MetricAgg, MetricIds, MinuteRollup, millis, system_time, take_dirty, write_rollups,
};
use crate::pg::partitions::{self, AHEAD_DAYS, Retention, day_of, horizon_day};
use crate::pg::store::PgStore;
use crate::store::StoreError;

/// Rows (or rollups) read by one statement of an iterator.
pub const PAGE_ROWS: i64 = 2_000;
/// Dirty minutes rolled up in one transaction.
pub const ROLLUP_CHUNK: usize = 2_000;

/// History on PostgreSQL (module docs).
#[derive(Clone)]
pub struct PgHistory {
    store: PgStore,
    ids: Arc<Mutex<MetricIds>>,
}

impl PgHistory {
    pub fn new(store: PgStore) -> PgHistory {
        PgHistory {
            store,
            ids: Arc::default(),
        }
    }
}

/// Values at their ids back to (name, value); names numbered since the ids were loaded are
/// read again.
async fn named<T: Copy>(
    client: &impl GenericClient,
    ids: &mut MetricIds,
    vals: &[Option<T>],
) -> Result<Vec<(String, T)>, PgError> {
    if let Some(m) = ids.decode(vals) {
        return Ok(m);
    }
    *ids = MetricIds::load(client).await?;
    Ok(ids.decode(vals).unwrap_or_default())
}

fn rollup_row(r: &tokio_postgres::Row) -> (i64, Vec<Option<MetricAgg>>) {
    let mins: Vec<Option<f64>> = r.get("mins");
    let maxs: Vec<Option<f64>> = r.get("maxs");
    let sums: Vec<Option<f64>> = r.get("sums");
    let counts: Vec<Option<i32>> = r.get("counts");
    let aggs = (0..counts.len())
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
    (millis(r.get("minute")), aggs)
}

/// One page and the cursor after it (None: the last page).
type Page<T, C> = Result<(Vec<T>, Option<C>), StoreError>;
/// Fetches the page at a cursor.
type Fetch<T, C> = Box<dyn FnMut(&C) -> Page<T, C> + Send>;

/// A page-at-a-time iterator: `fetch(cursor)` returns the next page and the cursor after it.
struct Pages<T, C> {
    fetch: Fetch<T, C>,
    cursor: Option<C>,
    buf: VecDeque<T>,
}

impl<T, C> Iterator for Pages<T, C> {
    type Item = Result<T, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(x) = self.buf.pop_front() {
                return Some(Ok(x));
            }
            let cursor = self.cursor.take()?;
            match (self.fetch)(&cursor) {
                Ok((page, next)) => {
                    self.buf.extend(page);
                    self.cursor = next;
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl HistoryStore for PgHistory {
    fn history_iter(&self, device: &DeviceId, from_ms: i64, to_ms: i64) -> RowIter {
        let (h, device) = (self.clone(), device.clone());
        Box::new(Pages {
            cursor: Some((from_ms, 0i64)),
            buf: VecDeque::new(),
            fetch: Box::new(move |&(t, seq): &(i64, i64)| {
                let (s, ids, device) = (h.store.clone(), h.ids.clone(), device.clone());
                let page = h.store.run(async move {
                    let client = s.client().await?;
                    let rows = client
                        .query(
                            "SELECT time, seq, vals FROM telemetry
                             WHERE device = $1 AND (time, seq) > ($2, $3) AND time < $4
                             ORDER BY time, seq LIMIT $5",
                            &[
                                &device.as_str(),
                                &system_time(t),
                                &seq,
                                &system_time(to_ms),
                                &PAGE_ROWS,
                            ],
                        )
                        .await
                        .map_err(PgError::db("reading history"))?;
                    let mut ids = ids.lock().await;
                    let mut out = Vec::with_capacity(rows.len());
                    for r in &rows {
                        let vals: Vec<Option<f32>> = r.get(2);
                        out.push(HistoryRow {
                            ts_ms: millis(r.get(0)),
                            seq: r.get::<_, i64>(1) as u64,
                            metrics: named(&**client, &mut ids, &vals).await?,
                        });
                    }
                    Ok(out)
                })?;
                let next = (page.len() as i64 == PAGE_ROWS)
                    .then(|| page.last().map(|r| (r.ts_ms, r.seq as i64)))
                    .flatten();
                Ok((page, next))
            }),
        })
    }

    fn rollups_iter(&self, device: &DeviceId, from_ms: i64, to_ms: i64) -> RollupIter {
        let (h, device) = (self.clone(), device.clone());
        Box::new(Pages {
            cursor: Some(from_ms),
            buf: VecDeque::new(),
            fetch: Box::new(move |&from: &i64| {
                let (s, ids, device) = (h.store.clone(), h.ids.clone(), device.clone());
                let page = h.store.run(async move {
                    let client = s.client().await?;
                    let rows = client
                        .query(
                            "SELECT minute, mins, maxs, sums, counts FROM rollups_1m
                             WHERE device = $1 AND minute >= $2 AND minute < $3
                             ORDER BY minute LIMIT $4",
                            &[
                                &device.as_str(),
                                &system_time(from),
                                &system_time(to_ms),
                                &PAGE_ROWS,
                            ],
                        )
                        .await
                        .map_err(PgError::db("reading rollups"))?;
                    let mut ids = ids.lock().await;
                    let mut out = Vec::with_capacity(rows.len());
                    for r in &rows {
                        let (minute_ms, aggs) = rollup_row(r);
                        let metrics = named(&**client, &mut ids, &aggs)
                            .await?
                            .into_iter()
                            .map(|(n, a)| {
                                (
                                    n,
                                    Agg {
                                        min: a.min,
                                        max: a.max,
                                        sum: a.sum,
                                        count: a.count,
                                    },
                                )
                            })
                            .collect();
                        out.push(RollupRow { minute_ms, metrics });
                    }
                    Ok(out)
                })?;
                let next = (page.len() as i64 == PAGE_ROWS)
                    .then(|| page.last().map(|r| r.minute_ms + 1))
                    .flatten();
                Ok((page, next))
            }),
        })
    }

    fn first_data_minute(&self, device: &DeviceId) -> Result<Option<i64>, StoreError> {
        let (s, device) = (self.store.clone(), device.clone());
        let first = self.store.run(async move {
            let client = s.client().await?;
            let r = client
                .query_one(
                    "SELECT least((SELECT min(minute) FROM rollups_1m WHERE device = $1),
                                  (SELECT min(time) FROM telemetry WHERE device = $1))",
                    &[&device.as_str()],
                )
                .await
                .map_err(PgError::db("reading the first data"))?;
            Ok(r.get::<_, Option<std::time::SystemTime>>(0).map(millis))
        })?;
        Ok(first.map(minute_of))
    }

    fn known_devices(&self) -> Result<Vec<DeviceId>, StoreError> {
        let s = self.store.clone();
        let rows = self.store.run(async move {
            let client = s.client().await?;
            client
                .query("SELECT device FROM delivery ORDER BY device", &[])
                .await
                .map_err(PgError::db("listing devices"))
        })?;
        Ok(rows
            .iter()
            .filter_map(|r| DeviceId::new(r.get::<_, &str>(0)).ok())
            .collect())
    }

    fn roll_up(&self, limit: usize, fence: Option<&LeaseToken>) -> Result<usize, StoreError> {
        let mut done = 0;
        while done < limit {
            let n = self.roll_up_chunk((limit - done).min(ROLLUP_CHUNK), common::time::now_ms(), fence)?;
            done += n;
            if n < ROLLUP_CHUNK {
                break;
            }
        }
        Ok(done)
    }

    fn pack(&self, _: i64, _: i64, _: u64) -> Result<(Packed, Packed), StoreError> {
        Ok((Packed::default(), Packed::default()))
    }

    fn expire(
        &self,
        policy: &HistoryPolicy,
        now_ms: i64,
        fence: Option<&LeaseToken>,
    ) -> Result<Expired, StoreError> {
        let (s, fence) = (self.store.clone(), fence.cloned());
        let retention = Retention {
            raw_ms: policy.raw_retention_ms,
            rollup_ms: policy.rollup_retention_ms,
        };
        let report = self.store.run(async move {
            let mut client = s.client().await?;
            partitions::ensure(&mut client, &retention, now_ms, fence.as_ref()).await
        })?;
        Ok(Expired {
            partitions: report.dropped.len() as u64,
            ..Default::default()
        })
    }

    fn disk_bytes(&self) -> u64 {
        let s = self.store.clone();
        self.store
            .run(async move {
                let client = s.client().await?;
                let r = client
                    .query_one("SELECT pg_database_size(current_database())", &[])
                    .await
                    .map_err(PgError::db("measuring the database"))?;
                Ok(r.get::<_, i64>(0).max(0) as u64)
            })
            .unwrap_or(0)
    }
}

impl PgHistory {
    /// One transaction: asserts the leader's lease (with `fence`), takes up to `limit` marks,
    /// reads their minutes' rows with one statement, writes (or deletes) their rollups.
    /// Minutes outside the rollup partitions kept by policy are dropped with their marks.
    fn roll_up_chunk(
        &self,
        limit: usize,
        now_ms: i64,
        fence: Option<&LeaseToken>,
    ) -> Result<usize, StoreError> {
        let (s, ids, fence) = (self.store.clone(), self.ids.clone(), fence.cloned());
        let rollup_ms = self.store.retention().rollup_ms;
        let n = self.store.run(async move {
            let mut client = s.client().await?;
            let tx = client
                .transaction()
                .await
                .map_err(PgError::db("rollup transaction"))?;
            // first: a lost lease refuses the transaction before it takes a mark
            if let Some(token) = &fence {
                fence::assert_lease(&tx, token).await?;
            }
            let dirty = take_dirty(&tx, limit).await?;
            if dirty.is_empty() {
                return Ok(0);
            }
            let (first, last) = (horizon_day(now_ms, rollup_ms), day_of(now_ms) + AHEAD_DAYS);
            let kept: Vec<&(DeviceId, i64)> = dirty
                .iter()
                .filter(|(_, m)| (first..=last).contains(&day_of(*m)))
                .collect();
            let devices: Vec<&str> = kept.iter().map(|(d, _)| d.as_str()).collect();
            let minutes: Vec<std::time::SystemTime> = kept.iter().map(|(_, m)| system_time(*m)).collect();
            let rows = tx
                .query(
                    "SELECT t.device, t.time, t.seq, t.vals
                     FROM unnest($1::text[], $2::timestamptz[]) AS d(device, minute)
                     JOIN telemetry t ON t.device = d.device AND t.time >= d.minute
                         AND t.time < d.minute + interval '1 minute'",
                    &[&devices, &minutes],
                )
                .await
                .map_err(PgError::db("reading minutes to roll up"))?;
            let mut ids = ids.lock().await;
            let mut by_minute: BTreeMap<(String, i64), Vec<HistoryRow>> = BTreeMap::new();
            for r in &rows {
                let vals: Vec<Option<f32>> = r.get(3);
                let ts_ms = millis(r.get(1));
                by_minute
                    .entry((r.get::<_, String>(0), minute_of(ts_ms)))
                    .or_default()
                    .push(HistoryRow {
                        ts_ms,
                        seq: r.get::<_, i64>(2) as u64,
                        metrics: named(&*tx, &mut ids, &vals).await?,
                    });
            }
            let mut rollups = Vec::new();
            let mut empty = Vec::new();
            for (device, minute) in kept {
                let rows = by_minute
                    .get(&(device.as_str().to_string(), *minute))
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                match rollup::rollup(*minute, rows) {
                    Some(r) => rollups.push(MinuteRollup {
                        device: device.clone(),
                        minute_ms: *minute,
                        metrics: r
                            .metrics
                            .into_iter()
                            .map(|(n, a)| {
                                (
                                    n,
                                    MetricAgg {
                                        min: a.min,
                                        max: a.max,
                                        sum: a.sum,
                                        count: a.count,
                                    },
                                )
                            })
                            .collect(),
                    }),
                    None => empty.push((device.as_str(), system_time(*minute))),
                }
            }
            write_rollups(&tx, &ids, &rollups).await?;
            drop(ids);
            for (device, minute) in &empty {
                tx.execute(
                    "DELETE FROM rollups_1m WHERE device = $1 AND minute = $2",
                    &[device, minute],
                )
                .await
                .map_err(PgError::db("deleting an empty rollup"))?;
            }
            tx.commit().await.map_err(PgError::db("rollup commit"))?;
            Ok(dirty.len())
        })?;
        Ok(n)
    }
}
