//! The ingest writer's PostgreSQL store: one transaction per batch of records.
//!
//! [`PgIngest::apply`] writes, in one transaction: the batch's history rows (multi-row
//! `INSERT ... ON CONFLICT DO NOTHING` on (device, time, seq), [`RawWriter`]) and their rollup
//! marks, the births (`devices`), and the delivery state of every device the batch touched
//! (`delivery`, the exact dedup window). It returns once the transaction committed: the
//! writer replies, and the broker acknowledges, only then (the commit is the durability
//! point; no journal). A batch that fails leaves nothing behind; its records are refused and
//! sent again by their machines. A broken pooled connection (PostgreSQL restarted) is retried
//! once on a new connection before the batch is given up.
//!
//! Metric names new to the fleet are numbered before the transaction, in a commit of their
//! own ([`RawWriter::prepare`]): an id must never vanish with a rolled-back batch.
//!
//! **Several instances on one database.** A device's records reach one instance at a time,
//! but it moves (an instance dies, its link fails over), and each instance keeps the delivery
//! state of the devices it served in memory. A stale view must neither drop new records nor
//! undo what another instance stored, so:
//! - the writer reloads a device's row when its session starts on this instance (its birth,
//!   [`PgIngest::reload_delivery`]) and joins it into its view before it judges the records
//!   that follow (the resent tail of the dead instance's session is then dropped as
//!   duplicates, even for a device whose wrong clock put those rows at another time there);
//! - each batch locks the `delivery` rows of its devices first (`SELECT ... FOR UPDATE`, in
//!   device order, so two instances' batches never deadlock), joins the stored state into
//!   the state it writes ([`DeliveryState::merge`]: the union of the seqs) and hands the
//!   joined state back to the writer ([`Applied::delivery`]): a late batch of an instance
//!   that still held an old session cannot shrink the row, and the next batch of either
//!   instance knows what the other stored;
//! - the rows themselves are `ON CONFLICT DO NOTHING` on (device, time, seq): a record
//!   resent to another instance with a view that did not know it lands once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use common::{Birth, DeviceId};
use tokio::sync::Mutex;

use super::store::{Applied, IngestStore, WriteBatch};
use crate::fleet::delivery::DeliveryState;
use crate::pg::PgError;
use crate::pg::history::{MetricIds, RawRow, RawWriter, WriteMode, system_time};
use crate::pg::store::{PgStore, is_unavailable};
use crate::store::StoreError;

/// Attempts of one batch when the connection breaks (a pooled connection to a PostgreSQL
/// that restarted fails once, then the pool connects anew).
pub const BATCH_ATTEMPTS: usize = 2;

/// The ingest writer's store on PostgreSQL (module docs).
pub struct PgIngest {
    store: PgStore,
    writer: Arc<Mutex<RawWriter>>,
}

/// A batch ready to send (kept across a retry; the delivery states are joined with the
/// stored ones inside each attempt's transaction).
struct Prepared {
    rows: Vec<RawRow>,
    births: Vec<(DeviceId, Birth)>,
    delivery: Vec<(DeviceId, DeliveryState)>,
}

impl PgIngest {
    /// Loads the fleet's metric names; every batch then uses the connection pool of `store`.
    pub fn open(store: PgStore) -> Result<PgIngest, StoreError> {
        let s = store.clone();
        let ids = store.run(async move {
            let client = s.client().await?;
            MetricIds::load(&**client).await
        })?;
        let raw_ms = store.retention().raw_ms;
        Ok(PgIngest {
            store,
            writer: Arc::new(Mutex::new(RawWriter::new(ids, WriteMode::Insert, raw_ms))),
        })
    }
}

impl IngestStore for PgIngest {
    fn needs_journal(&self) -> bool {
        false
    }

    fn apply(&self, batch: WriteBatch, now_ms: i64) -> Result<Applied, StoreError> {
        if batch.is_empty() {
            return Ok(Applied::default());
        }
        let prepared = Arc::new(Prepared {
            rows: batch
                .history
                .into_iter()
                .map(|(device, r)| RawRow {
                    device,
                    time_ms: r.ts_ms,
                    seq: r.seq,
                    metrics: r.metrics,
                })
                .collect(),
            births: batch.births,
            delivery: batch.delivery,
        });
        let (s, w) = (self.store.clone(), self.writer.clone());
        let res = self.store.run(async move {
            let mut attempt = 1;
            loop {
                match write_batch(&s, &w, &prepared, now_ms).await {
                    Err(e) if attempt < BATCH_ATTEMPTS && is_unavailable(&e) => {
                        tracing::warn!(error = %e, attempt, "ingest batch failed; trying a new connection");
                        attempt += 1;
                    }
                    other => return other,
                }
            }
        })?;
        Ok(res)
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn load_delivery(&self) -> Result<BTreeMap<DeviceId, DeliveryState>, StoreError> {
        let s = self.store.clone();
        let rows = self.store.run(async move {
            let client = s.client().await?;
            client
                .query("SELECT device, tracker FROM delivery", &[])
                .await
                .map_err(PgError::db("reading delivery state"))
        })?;
        Ok(delivery_rows(&rows))
    }

    fn reload_delivery(&self, devices: &[DeviceId]) -> Result<BTreeMap<DeviceId, DeliveryState>, StoreError> {
        if devices.is_empty() {
            return Ok(BTreeMap::new());
        }
        let names: Vec<String> = devices.iter().map(|d| d.to_string()).collect();
        let s = self.store.clone();
        let rows = self.store.run(async move {
            let client = s.client().await?;
            client
                .query(
                    "SELECT device, tracker FROM delivery WHERE device = ANY($1)",
                    &[&names],
                )
                .await
                .map_err(PgError::db("reloading delivery state"))
        })?;
        Ok(delivery_rows(&rows))
    }

    fn load_births(&self) -> Result<BTreeMap<DeviceId, Birth>, StoreError> {
        let s = self.store.clone();
        let rows = self.store.run(async move {
            let client = s.client().await?;
            client
                .query("SELECT device, birth FROM devices", &[])
                .await
                .map_err(PgError::db("reading births"))
        })?;
        let mut out = BTreeMap::new();
        for r in rows {
            let id = DeviceId::new(r.get::<_, &str>(0)).ok();
            let birth = serde_json::from_value::<Birth>(r.get(1));
            match (id, birth) {
                (Some(id), Ok(b)) => {
                    out.insert(id, b);
                }
                (id, Err(e)) => tracing::error!(device = ?id, error = %e, "unreadable birth skipped"),
                (None, _) => {}
            }
        }
        Ok(out)
    }
}

/// One attempt: the whole batch in one transaction.
async fn write_batch(
    s: &PgStore,
    writer: &Mutex<RawWriter>,
    b: &Prepared,
    now_ms: i64,
) -> Result<Applied, PgError> {
    let mut client = s.client().await?;
    let mut w = writer.lock().await;
    w.prepare(&client, &b.rows).await?;
    let tx = client
        .transaction()
        .await
        .map_err(PgError::db("ingest transaction"))?;
    // first: another instance's batch for the same devices waits here, not halfway through
    let delivery = join_stored_delivery(&tx, &b.delivery).await?;
    let report = w.write_in(&tx, &b.rows, now_ms).await?;
    drop(w);
    for (device, birth) in &b.births {
        write_birth(&tx, device, birth, now_ms).await?;
    }
    write_delivery(&tx, &delivery).await?;
    tx.commit().await.map_err(PgError::db("ingest commit"))?;
    Ok(Applied {
        rows_past_retention: report.outside_retention,
        delivery,
    })
}

/// Decodes `(device, tracker)` rows; an unreadable one is logged and left out.
fn delivery_rows(rows: &[tokio_postgres::Row]) -> BTreeMap<DeviceId, DeliveryState> {
    let mut out = BTreeMap::new();
    for r in rows {
        let Ok(id) = DeviceId::new(r.get::<_, &str>(0)) else {
            continue;
        };
        match common::codec::decode_bare::<DeliveryState>(r.get::<_, &[u8]>(1)) {
            Ok(st) => {
                out.insert(id, st);
            }
            Err(e) => tracing::error!(device = %id, error = %e, "unreadable delivery state skipped"),
        }
    }
    out
}

/// Locks the `delivery` rows of `states`' devices for the rest of the transaction and joins
/// what they hold into `states` (module docs): the states to write. Rows are locked in device
/// order, so two instances' batches over the same devices queue rather than deadlock. A device
/// with no row yet gets one in this transaction first (`ON CONFLICT DO NOTHING` waits for
/// another instance inserting it), so its first batches on two instances are joined too.
pub async fn join_stored_delivery(
    tx: &tokio_postgres::Transaction<'_>,
    states: &[(DeviceId, DeliveryState)],
) -> Result<Vec<(DeviceId, DeliveryState)>, PgError> {
    if states.is_empty() {
        return Ok(Vec::new());
    }
    let mut joined: BTreeMap<&str, DeliveryState> = BTreeMap::new();
    for (d, st) in states {
        joined.entry(d.as_str()).or_default().merge(st);
    }
    let names: Vec<&str> = joined.keys().copied().collect();
    let lock = "SELECT device, tracker FROM delivery WHERE device = ANY($1) ORDER BY device FOR UPDATE";
    let mut rows = tx
        .query(lock, &[&names])
        .await
        .map_err(PgError::db("locking delivery state"))?;
    if rows.len() < names.len() {
        // placeholders, replaced by this transaction's upsert (never committed as they are)
        tx.execute(
            "INSERT INTO delivery (device, tracker) SELECT unnest($1::text[]), ''::bytea
             ON CONFLICT (device) DO NOTHING",
            &[&names],
        )
        .await
        .map_err(PgError::db("adding delivery rows"))?;
        rows = tx
            .query(lock, &[&names])
            .await
            .map_err(PgError::db("locking delivery state"))?;
    }
    for r in &rows {
        let tracker: &[u8] = r.get(1);
        if tracker.is_empty() {
            continue; // a placeholder of this transaction
        }
        let device: &str = r.get(0);
        match common::codec::decode_bare::<DeliveryState>(tracker) {
            Ok(stored) => {
                if let Some(st) = joined.get_mut(device) {
                    st.merge(&stored);
                }
            }
            Err(e) => tracing::error!(device, error = %e, "unreadable stored delivery state replaced"),
        }
    }
    joined
        .into_iter()
        .map(|(d, st)| {
            Ok((
                DeviceId::new(d).map_err(|e| PgError::Db {
                    context: "a delivery row's device",
                    detail: e.to_string(),
                    sqlstate: None,
                })?,
                st,
            ))
        })
        .collect()
}

/// Upserts a device's last birth (the columns people filter on, and the whole birth).
pub async fn write_birth(
    tx: &tokio_postgres::Transaction<'_>,
    device: &DeviceId,
    b: &Birth,
    now_ms: i64,
) -> Result<(), PgError> {
    let json = serde_json::to_value(b).map_err(|e| PgError::Db {
        context: "encoding a birth",
        detail: e.to_string(),
        sqlstate: None,
    })?;
    tx.execute(
        "INSERT INTO devices (device, site, tags, boot_id, agent_version, hostname, board, jetpack,
             vision_model_version, simulated, started_at, birth, birth_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (device) DO UPDATE SET site = EXCLUDED.site, tags = EXCLUDED.tags,
             boot_id = EXCLUDED.boot_id, agent_version = EXCLUDED.agent_version,
             hostname = EXCLUDED.hostname, board = EXCLUDED.board, jetpack = EXCLUDED.jetpack,
             vision_model_version = EXCLUDED.vision_model_version,
             simulated = EXCLUDED.simulated, started_at = EXCLUDED.started_at,
             birth = EXCLUDED.birth, birth_at = EXCLUDED.birth_at",
        &[
            &device.as_str(),
            &b.site,
            &b.tags,
            &b.boot_id,
            &b.agent_version,
            &b.hostname,
            &b.board,
            &b.jetpack,
            &b.vision_model_version,
            &b.simulated,
            &(b.started_ms > 0).then(|| system_time(b.started_ms)),
            &json,
            &system_time(now_ms),
        ],
    )
    .await
    .map_err(PgError::db("writing a birth"))?;
    Ok(())
}

fn count(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Upserts the delivery state of every device in `states`, in one statement.
pub async fn write_delivery(
    tx: &tokio_postgres::Transaction<'_>,
    states: &[(DeviceId, DeliveryState)],
) -> Result<(), PgError> {
    if states.is_empty() {
        return Ok(());
    }
    let mut cols: [Vec<i64>; 7] = Default::default();
    let mut devices = Vec::with_capacity(states.len());
    let mut trackers = Vec::with_capacity(states.len());
    for (d, st) in states {
        let v = st.view();
        for (col, x) in cols.iter_mut().zip([
            v.received,
            v.duplicates_dropped,
            v.reported_dropped,
            v.reordered,
            v.last_seq,
            st.last_telemetry_seq,
            v.missing,
        ]) {
            col.push(count(x));
        }
        devices.push(d.as_str());
        trackers.push(common::codec::encode(st).map_err(|e| PgError::Db {
            context: "encoding delivery state",
            detail: e.to_string(),
            sqlstate: None,
        })?);
    }
    let now = SystemTime::now();
    tx.execute(
        "INSERT INTO delivery (device, received, duplicates, reported_dropped, reordered, last_seq,
             last_telemetry_seq, missing, tracker, updated_at)
         SELECT u.*, $10 FROM unnest($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::int8[],
             $6::int8[], $7::int8[], $8::int8[], $9::bytea[]) AS u
         ON CONFLICT (device) DO UPDATE SET received = EXCLUDED.received,
             duplicates = EXCLUDED.duplicates, reported_dropped = EXCLUDED.reported_dropped,
             reordered = EXCLUDED.reordered, last_seq = EXCLUDED.last_seq,
             last_telemetry_seq = EXCLUDED.last_telemetry_seq, missing = EXCLUDED.missing,
             tracker = EXCLUDED.tracker, updated_at = EXCLUDED.updated_at",
        &[
            &devices, &cols[0], &cols[1], &cols[2], &cols[3], &cols[4], &cols[5], &cols[6], &trackers, &now,
        ],
    )
    .await
    .map_err(PgError::db("writing delivery state"))?;
    Ok(())
}
