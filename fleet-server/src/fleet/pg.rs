//! The fleet actor's PostgreSQL store: the `presence` table (`fleet_devices` shows it).
//!
//! [`PgPresence::record`] never blocks the actor: rows go to a writer task on the store's
//! runtime, which keeps the latest row of each device and upserts a burst with one
//! statement. A write that fails is retried with the next rows (presence is a snapshot: the
//! latest row of a device is all that matters).

use std::collections::BTreeMap;
use std::time::Duration;

use common::DeviceId;
use tokio::sync::mpsc;

use super::state::Presence;
use super::store::{PresenceRow, PresenceStore};
use crate::pg::PgError;
use crate::pg::history::{millis, system_time};
use crate::pg::store::PgStore;
use crate::store::StoreError;

/// Wait before failed rows are tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Presence on PostgreSQL (module docs).
pub struct PgPresence {
    store: PgStore,
    tx: mpsc::UnboundedSender<Vec<PresenceRow>>,
}

impl PgPresence {
    pub fn new(store: PgStore) -> PgPresence {
        let (tx, rx) = mpsc::unbounded_channel();
        store.spawn(writer(store.clone(), rx));
        PgPresence { store, tx }
    }
}

impl PresenceStore for PgPresence {
    fn record(&self, rows: Vec<PresenceRow>) {
        let _ = self.tx.send(rows);
    }

    fn load(&self) -> Result<Vec<PresenceRow>, StoreError> {
        let s = self.store.clone();
        let rows = self.store.run(async move {
            let client = s.client().await?;
            client
                .query(
                    "SELECT device, status, coalesce(reason, ''), since, first_seen, last_seen
                     FROM presence ORDER BY device",
                    &[],
                )
                .await
                .map_err(PgError::db("reading presence"))
        })?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                Some(PresenceRow {
                    device: DeviceId::new(r.get::<_, &str>(0)).ok()?,
                    status: STATUSES.iter().find(|(_, n)| *n == r.get::<_, &str>(1))?.0,
                    reason: r.get(2),
                    since_ms: millis(r.get(3)),
                    first_seen_ms: millis(r.get(4)),
                    last_seen_ms: millis(r.get(5)),
                })
            })
            .collect())
    }
}

/// Each status and its name in the table.
const STATUSES: [(Presence, &str); 4] = [
    (Presence::Online, "online"),
    (Presence::Degraded, "degraded"),
    (Presence::Stale, "stale"),
    (Presence::Offline, "offline"),
];

fn status(p: Presence) -> &'static str {
    STATUSES
        .iter()
        .find(|(s, _)| *s == p)
        .map_or("offline", |(_, n)| n)
}

async fn write(store: &PgStore, rows: &BTreeMap<DeviceId, PresenceRow>) -> Result<(), PgError> {
    let client = store.client().await?;
    let devices: Vec<&str> = rows.keys().map(DeviceId::as_str).collect();
    let statuses: Vec<&str> = rows.values().map(|r| status(r.status)).collect();
    let reasons: Vec<&str> = rows.values().map(|r| r.reason.as_str()).collect();
    let t = |f: fn(&PresenceRow) -> i64| rows.values().map(|r| system_time(f(r))).collect::<Vec<_>>();
    client
        .execute(
            "INSERT INTO presence (device, status, reason, since, first_seen, last_seen, updated_at)
             SELECT u.*, now() FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[],
                 $5::timestamptz[], $6::timestamptz[]) AS u
             ON CONFLICT (device) DO UPDATE SET status = EXCLUDED.status, reason = EXCLUDED.reason,
                 since = EXCLUDED.since, first_seen = EXCLUDED.first_seen,
                 last_seen = EXCLUDED.last_seen, updated_at = now()",
            &[
                &devices,
                &statuses,
                &reasons,
                &t(|r| r.since_ms),
                &t(|r| r.first_seen_ms),
                &t(|r| r.last_seen_ms),
            ],
        )
        .await
        .map_err(PgError::db("writing presence"))?;
    Ok(())
}

async fn writer(store: PgStore, mut rx: mpsc::UnboundedReceiver<Vec<PresenceRow>>) {
    let mut pending: BTreeMap<DeviceId, PresenceRow> = BTreeMap::new();
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(rows) => pending.extend(rows.into_iter().map(|r| (r.device.clone(), r))),
                None => return,
            }
        }
        while let Ok(rows) = rx.try_recv() {
            pending.extend(rows.into_iter().map(|r| (r.device.clone(), r)));
        }
        let res = write(&store, &pending).await;
        store.note(&res);
        match res {
            Ok(()) => pending.clear(),
            Err(e) => {
                tracing::warn!(error = %e, devices = pending.len(), "presence not written yet");
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    }
}
