//! The outbox in PostgreSQL: one row of `notification_outbox` per entry (docs/postgres.md).
//!
//! | entry | column |
//! | --- | --- |
//! | `key` | `dedup_key` (unique) |
//! | `notification` | `payload` (JSON) |
//! | `state`, `finished_ms` | `delivered_at` or `failed_at` set (neither: pending) |
//! | `next_attempt_ms`, `attempts`, `last_error`, `receipt`, `created_ms` | the columns of those names |
//!
//! A claim is one statement: the due rows, earliest first (ties by key, in byte order
//! whatever the database's collation), taken `FOR UPDATE SKIP LOCKED` and updated with the
//! attempt and the lease (`claimed_by`, `claimed_until`), so several instances on one
//! database never claim one entry twice. `finish` is a compare-and-set on the attempt count,
//! as with sled; it keeps `claimed_by`, so [`OutboxStore::release_all`] at a start makes due
//! again exactly what this instance (the same `worker` name) claimed before, whether cut off by
//! a crash or waiting to retry, and leaves other instances' claims alone. Every call returns
//! after its commit.
//!
//! A row whose payload this build cannot read is never retried: the claim that finds it
//! marks it failed with a `last_error` starting [`CORRUPT_PREFIX`], counted as `corrupt`.

use std::time::{Duration, SystemTime};

use super::store::{OutboxCounts, OutboxError, OutboxStore};
use super::{EntryState, OutboxEntry};
use crate::notify::notification::Notification;
use crate::pg::PgError;
use crate::pg::history::{millis, system_time};
use crate::pg::store::PgStore;

/// `last_error` of a row set aside because its payload cannot be read.
pub const CORRUPT_PREFIX: &str = "corrupt: ";

/// Columns read back, in this order, by every query that returns entries.
const COLUMNS: &str = "id, dedup_key, channel, payload, created_at, attempts, next_attempt_at, \
                       delivered_at, failed_at, last_error, receipt";

/// The outbox in the server's PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgOutbox {
    store: PgStore,
    /// `claimed_by` of this process's claims.
    worker: String,
}

fn storage(e: PgError) -> OutboxError {
    OutboxError::Storage(e.to_string())
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A row as read, before its payload is decoded.
struct Row {
    id: i64,
    entry: Result<OutboxEntry, OutboxError>,
}

fn read_row(r: &tokio_postgres::Row) -> Row {
    let key: String = r.get("dedup_key");
    let t = |c: &str| r.get::<_, Option<SystemTime>>(c).map(millis);
    let (delivered, failed) = (t("delivered_at"), t("failed_at"));
    let state = match (delivered, failed) {
        (Some(_), _) => EntryState::Delivered,
        (None, Some(_)) => EntryState::Failed,
        (None, None) => EntryState::Pending,
    };
    let entry = serde_json::from_value::<Notification>(r.get("payload"))
        .map_err(|e| OutboxError::Corrupt {
            key: key.clone(),
            detail: e.to_string(),
        })
        .map(|notification| OutboxEntry {
            key: key.clone(),
            channel: r.get("channel"),
            notification,
            created_ms: t("created_at").unwrap_or(0),
            attempts: r.get::<_, i32>("attempts").max(0) as u32,
            next_attempt_ms: t("next_attempt_at").unwrap_or(0),
            state,
            last_error: r.get("last_error"),
            receipt: r.get("receipt"),
            finished_ms: delivered.or(failed),
        });
    Row {
        id: r.get("id"),
        entry,
    }
}

/// `delivered_at` and `failed_at` of `e`.
fn finished_at(e: &OutboxEntry) -> (Option<SystemTime>, Option<SystemTime>) {
    let at = system_time(e.finished_ms.unwrap_or(e.next_attempt_ms));
    match e.state {
        EntryState::Pending => (None, None),
        EntryState::Delivered => (Some(at), None),
        EntryState::Failed => (None, Some(at)),
    }
}

fn attempts(e: &OutboxEntry) -> i32 {
    i32::try_from(e.attempts).unwrap_or(i32::MAX)
}

impl PgOutbox {
    /// The outbox of `store`; claims are marked as `worker`'s.
    pub fn new(store: PgStore, worker: &str) -> PgOutbox {
        PgOutbox {
            store,
            worker: worker.to_string(),
        }
    }

    fn run<T, F>(&self, f: impl FnOnce(PgStore) -> F) -> Result<T, OutboxError>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T, PgError>> + Send + 'static,
    {
        self.store.run(f(self.store.clone())).map_err(storage)
    }

    fn query(
        &self,
        sql: String,
        params: Vec<Box<dyn tokio_postgres::types::ToSql + Send + Sync>>,
    ) -> Result<Vec<Row>, OutboxError> {
        let rows = self.run(|s| async move {
            let client = s.client().await?;
            let p: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                params.iter().map(|b| &**b as _).collect();
            client
                .query(&sql, &p)
                .await
                .map_err(PgError::db("reading the notification outbox"))
        })?;
        Ok(rows.iter().map(read_row).collect())
    }
}

impl OutboxStore for PgOutbox {
    fn enqueue(&self, entry: &OutboxEntry) -> Result<bool, OutboxError> {
        let payload = serde_json::to_value(&entry.notification).map_err(|e| OutboxError::Encode {
            key: entry.key.clone(),
            detail: e.to_string(),
        })?;
        let e = entry.clone();
        self.run(|s| async move {
            let client = s.client().await?;
            let (delivered, failed) = finished_at(&e);
            let n = client
                .execute(
                    "INSERT INTO notification_outbox (dedup_key, channel, payload, created_at,
                         attempts, next_attempt_at, delivered_at, failed_at, last_error, receipt)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                     ON CONFLICT (dedup_key) DO NOTHING",
                    &[
                        &e.key,
                        &e.channel,
                        &payload,
                        &system_time(e.created_ms),
                        &attempts(&e),
                        &system_time(e.next_attempt_ms),
                        &delivered,
                        &failed,
                        &e.last_error,
                        &e.receipt,
                    ],
                )
                .await
                .map_err(PgError::db("enqueuing a notification"))?;
            Ok(n == 1)
        })
    }

    fn claim_due(&self, now_ms: i64, limit: usize, lease: Duration) -> Result<Vec<OutboxEntry>, OutboxError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let (now, until) = (system_time(now_ms), system_time(now_ms.saturating_add(ms(lease))));
        let worker = self.worker.clone();
        let rows = self.run(|s| async move {
            let client = s.client().await?;
            client
                .query(
                    &format!(
                        "WITH due AS (
                             SELECT id, next_attempt_at AS was FROM notification_outbox
                             WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $1
                             ORDER BY next_attempt_at, dedup_key COLLATE \"C\"
                             LIMIT $2 FOR UPDATE SKIP LOCKED)
                         UPDATE notification_outbox o
                         SET attempts = LEAST(o.attempts::int8 + 1, 2147483647)::int4,
                             next_attempt_at = $3, claimed_by = $4, claimed_until = $3
                         FROM due WHERE o.id = due.id
                         RETURNING due.was, {}",
                        COLUMNS
                            .split(", ")
                            .map(|c| format!("o.{c}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    &[&now, &limit, &until, &worker],
                )
                .await
                .map_err(PgError::db("claiming notifications"))
        })?;
        let mut claimed: Vec<(SystemTime, Row)> = rows.iter().map(|r| (r.get("was"), read_row(r))).collect();
        claimed.sort_by(|(a, x), (b, y)| {
            let key = |r: &Row| r.entry.as_ref().map(|e| e.key.clone()).unwrap_or_default();
            a.cmp(b).then_with(|| key(x).cmp(&key(y)))
        });
        let mut out = Vec::with_capacity(claimed.len());
        let mut corrupt = Vec::new();
        for (_, row) in claimed {
            match row.entry {
                Ok(e) => out.push(e),
                Err(e) => {
                    tracing::error!(error = %e, "outbox entry set aside");
                    corrupt.push((row.id, format!("{CORRUPT_PREFIX}{e}")));
                }
            }
        }
        if !corrupt.is_empty() {
            self.run(|s| async move {
                let client = s.client().await?;
                for (id, why) in &corrupt {
                    client
                        .execute(
                            "UPDATE notification_outbox SET failed_at = $2, last_error = $3,
                                 claimed_by = NULL, claimed_until = NULL WHERE id = $1",
                            &[id, &now, why],
                        )
                        .await
                        .map_err(PgError::db("setting an outbox entry aside"))?;
                }
                Ok(())
            })?;
        }
        Ok(out)
    }

    fn finish(&self, entry: &OutboxEntry) -> Result<bool, OutboxError> {
        let e = entry.clone();
        self.run(|s| async move {
            let client = s.client().await?;
            let (delivered, failed) = finished_at(&e);
            let n = client
                .execute(
                    "UPDATE notification_outbox SET next_attempt_at = $3, delivered_at = $4,
                         failed_at = $5, last_error = $6, receipt = $7, claimed_until = NULL
                     WHERE dedup_key = $1 AND attempts = $2
                       AND delivered_at IS NULL AND failed_at IS NULL",
                    &[
                        &e.key,
                        &attempts(&e),
                        &system_time(e.next_attempt_ms),
                        &delivered,
                        &failed,
                        &e.last_error,
                        &e.receipt,
                    ],
                )
                .await
                .map_err(PgError::db("finishing a notification"))?;
            Ok(n == 1)
        })
    }

    fn get(&self, key: &str) -> Result<Option<OutboxEntry>, OutboxError> {
        let rows = self.query(
            format!("SELECT {COLUMNS} FROM notification_outbox WHERE dedup_key = $1"),
            vec![Box::new(key.to_string())],
        )?;
        rows.into_iter().next().map(|r| r.entry).transpose()
    }

    fn list(&self, state: Option<EntryState>, limit: usize) -> Result<Vec<OutboxEntry>, OutboxError> {
        let filter = match state {
            None => "TRUE",
            Some(EntryState::Pending) => "delivered_at IS NULL AND failed_at IS NULL",
            Some(EntryState::Delivered) => "delivered_at IS NOT NULL",
            Some(EntryState::Failed) => "delivered_at IS NULL AND failed_at IS NOT NULL",
        };
        let rows = self.query(
            format!(
                "SELECT {COLUMNS} FROM notification_outbox WHERE {filter}
                 ORDER BY dedup_key COLLATE \"C\" LIMIT $1"
            ),
            vec![Box::new(i64::try_from(limit).unwrap_or(i64::MAX))],
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            match r.entry {
                Ok(e) => out.push(e),
                Err(e) => tracing::warn!(error = %e, "outbox entry skipped in a listing"),
            }
        }
        Ok(out)
    }

    fn purge_finished(&self, before_ms: i64) -> Result<usize, OutboxError> {
        let before = system_time(before_ms);
        self.run(|s| async move {
            let client = s.client().await?;
            let n = client
                .execute(
                    "DELETE FROM notification_outbox
                     WHERE coalesce(delivered_at, failed_at) < $1
                       AND coalesce(last_error, '') NOT LIKE 'corrupt: %'",
                    &[&before],
                )
                .await
                .map_err(PgError::db("purging the notification outbox"))?;
            Ok(n as usize)
        })
    }

    fn release_all(&self, now_ms: i64) -> Result<usize, OutboxError> {
        let (now, worker) = (system_time(now_ms), self.worker.clone());
        self.run(|s| async move {
            let client = s.client().await?;
            let n = client
                .execute(
                    "UPDATE notification_outbox SET next_attempt_at = $1, claimed_until = NULL
                     WHERE delivered_at IS NULL AND failed_at IS NULL
                       AND claimed_by = $2 AND next_attempt_at > $1",
                    &[&now, &worker],
                )
                .await
                .map_err(PgError::db("releasing notification claims"))?;
            Ok(n as usize)
        })
    }

    fn counts(&self) -> Result<OutboxCounts, OutboxError> {
        let row = self.run(|s| async move {
            let client = s.client().await?;
            client
                .query_one(
                    "SELECT
                         count(*) FILTER (WHERE delivered_at IS NULL AND failed_at IS NULL),
                         count(*) FILTER (WHERE delivered_at IS NOT NULL),
                         count(*) FILTER (WHERE delivered_at IS NULL AND failed_at IS NOT NULL
                                            AND coalesce(last_error, '') NOT LIKE 'corrupt: %'),
                         count(*) FILTER (WHERE delivered_at IS NULL AND failed_at IS NOT NULL
                                            AND last_error LIKE 'corrupt: %')
                     FROM notification_outbox",
                    &[],
                )
                .await
                .map_err(PgError::db("counting the notification outbox"))
        })?;
        let n = |i: usize| row.get::<_, i64>(i).max(0) as u64;
        Ok(OutboxCounts {
            pending: n(0),
            delivered: n(1),
            failed: n(2),
            corrupt: n(3),
        })
    }
}
