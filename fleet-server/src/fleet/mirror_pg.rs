//! The fleet-wide view's reader ([`super::mirror`]): every [`MIRROR_EVERY`], the machines
//! another instance stored a record of since the watermark, with their session owner, their
//! birth (when it changed) and their latest telemetry, sent to the fleet actor as one
//! [`Mirrored`] batch.
//!
//! Polling rather than LISTEN/NOTIFY: the rows change many times a second per machine (every
//! ingest batch stamps `delivery.updated_at`), so a notification per change would cost more
//! than one indexed read a second, and a missed notification would need the same read anyway.
//! The task ends when its fleet actor is gone (the next generation starts its own).

use std::time::{Duration, SystemTime};

use actix::Recipient;
use common::{Birth, DeviceId};

use super::mirror::{MIRROR_EVERY, MIRROR_OVERLAP, Mirrored, RemoteDevice, RemoteTelemetry};
use crate::pg::PgError;
use crate::pg::history::{MetricIds, millis};
use crate::pg::store::PgStore;

/// Only telemetry this recent is read as a machine's latest (the bound prunes the daily
/// partitions the lookup visits).
pub const LATEST_WITHIN: Duration = Duration::from_secs(3600);

/// Reads what changed until the fleet actor is gone (module docs).
pub async fn run(store: PgStore, me: String, fleet: Recipient<Mirrored>) {
    let mut newest = SystemTime::UNIX_EPOCH;
    loop {
        let since = newest
            .checked_sub(MIRROR_OVERLAP)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let res = read(&store, &me, since).await;
        store.note(&res);
        match res {
            Ok((rows, top)) => {
                newest = newest.max(top);
                if !rows.is_empty() && fleet.try_send(Mirrored(rows)).is_err() && !fleet.connected() {
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "fleet-wide view not read"),
        }
        if !fleet.connected() {
            return;
        }
        tokio::time::sleep(MIRROR_EVERY).await;
    }
}

/// The rows of machines whose session another instance holds (or held last), changed since
/// `since`, and the newest `updated_at` among them.
async fn read(
    store: &PgStore,
    me: &str,
    since: SystemTime,
) -> Result<(Vec<RemoteDevice>, SystemTime), PgError> {
    let client = store.client().await?;
    let ids = MetricIds::load(&**client).await?;
    let recent = SystemTime::now()
        .checked_sub(LATEST_WITHIN)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let rows = client
        .query(
            "SELECT v.device, v.updated_at, so.instance,
                    CASE WHEN d.birth_at > $1 THEN d.birth END,
                    t.time, t.seq, t.vals
             FROM delivery v
             LEFT JOIN session_owners so ON so.device = v.device
             LEFT JOIN devices d ON d.device = v.device
             LEFT JOIN LATERAL (
                 SELECT time, seq, vals FROM telemetry tt
                 WHERE tt.device = v.device AND tt.time > $2
                 ORDER BY time DESC, seq DESC LIMIT 1) t ON true
             WHERE v.updated_at > $1 AND so.instance <> $3",
            &[&since, &recent, &me],
        )
        .await
        .map_err(PgError::db("reading the fleet-wide view"))?;
    let mut top = since;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let Ok(id) = DeviceId::new(r.get::<_, &str>(0)) else {
            continue;
        };
        let updated: SystemTime = r.get(1);
        top = top.max(updated);
        let birth = r
            .get::<_, Option<serde_json::Value>>(3)
            .and_then(|b| serde_json::from_value::<Birth>(b).ok());
        let telemetry = match (r.get::<_, Option<SystemTime>>(4), r.get::<_, Option<i64>>(5)) {
            (Some(time), Some(seq)) => {
                let vals: Vec<Option<f32>> = r.get(6);
                ids.decode(&vals).map(|m| RemoteTelemetry {
                    ts_ms: millis(time),
                    seq: u64::try_from(seq).unwrap_or(0),
                    metrics: m.into_iter().map(|(n, v)| (n, f64::from(v))).collect(),
                })
            }
            _ => None,
        };
        out.push(RemoteDevice {
            id,
            seen_ms: millis(updated),
            owner: r.get(2),
            birth,
            telemetry,
        });
    }
    Ok((out, top))
}
