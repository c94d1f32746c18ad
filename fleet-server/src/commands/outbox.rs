//! Commands across several instances (PostgreSQL): the `command_outbox` claims and the reads
//! that keep every instance's book current.
//!
//! A command posted on any instance is written with an outbox row (the writer of
//! [`super::pg`], in the transaction of the command's first write; its trigger NOTIFYs
//! `fleet_command`). Only the instance whose broker holds the machine's session
//! (`session_owners.instance`) claims the row, and only while the machine is online there
//! (its birth seen, so it is subscribed): [`claim`] takes due rows `FOR UPDATE SKIP LOCKED`
//! and sets a lease of [`CLAIM_LEASE_MS`]. The claimer publishes the command once per claim;
//! the agent's first answer marks the row delivered. A row is due again when
//!
//! - it was never claimed,
//! - its lease ran out (the claimer died, or the agent has not answered: the resend of the
//!   single-instance book, [`super::book::RESEND_AFTER_MS`]), or
//! - it was claimed by another instance or before the machine's current session began (the
//!   machine reconnected: what went to the old session may be lost; the book resends
//!   everything pending on reconnect too).
//!
//! A resend is harmless: the agent runs an id once and answers a repeat with its stored
//! result (agent `commands` module).

use std::time::SystemTime;

use common::DeviceId;

use super::book::CommandRecord;
use super::pg::record_of;
use super::rollout::Rollout;
use crate::pg::PgError;
use crate::pg::history::system_time;
use crate::pg::store::PgStore;

/// How long a claim lasts before the row is due again: the resend interval of one instance.
pub const CLAIM_LEASE_MS: i64 = super::book::RESEND_AFTER_MS;
/// Rows claimed at most per statement (the rest are taken by the next one).
pub const CLAIM_BATCH: i64 = 500;

/// Claims the due outbox rows of `online` machines whose session `me` holds; returns their
/// commands, oldest first.
pub async fn claim(store: &PgStore, me: &str, online: &[DeviceId]) -> Result<Vec<CommandRecord>, PgError> {
    if online.is_empty() {
        return Ok(Vec::new());
    }
    let client = store.client().await?;
    let devices: Vec<&str> = online.iter().map(|d| d.as_str()).collect();
    let rows = client
        .query(
            "WITH due AS (
                 SELECT o.command_id FROM command_outbox o
                 JOIN session_owners s ON s.device = o.device AND s.instance = $1
                 WHERE o.delivered_at IS NULL AND o.device = ANY($2)
                   AND (o.claimed_until IS NULL OR o.claimed_until < now()
                        OR o.claimed_by IS DISTINCT FROM $1
                        OR o.claimed_until < s.since + $3::float8 * interval '1 millisecond')
                 ORDER BY o.created_at
                 LIMIT $4
                 FOR UPDATE OF o SKIP LOCKED
             ), claimed AS (
                 UPDATE command_outbox o SET claimed_by = $1,
                     claimed_until = now() + $3::float8 * interval '1 millisecond',
                     attempts = o.attempts + 1
                 FROM due WHERE o.command_id = due.command_id
                 RETURNING o.command_id
             )
             SELECT c.* FROM commands c JOIN claimed ON c.id = claimed.command_id
             ORDER BY c.created_at, c.id",
            &[&me, &devices, &(CLAIM_LEASE_MS as f64), &CLAIM_BATCH],
        )
        .await
        .map_err(PgError::db("claiming commands"))?;
    Ok(records(&rows))
}

/// The commands written (by any instance) at or after `since_ms`.
pub async fn changed_since(store: &PgStore, since_ms: i64) -> Result<Vec<CommandRecord>, PgError> {
    let client = store.client().await?;
    let since: SystemTime = system_time(since_ms);
    let rows = client
        .query(
            "SELECT * FROM commands WHERE updated_at >= $1 ORDER BY created_at, id",
            &[&since],
        )
        .await
        .map_err(PgError::db("reading changed commands"))?;
    Ok(records(&rows))
}

/// The rollouts written (by any instance) at or after `since_ms`.
pub async fn rollouts_since(store: &PgStore, since_ms: i64) -> Result<Vec<Rollout>, PgError> {
    let client = store.client().await?;
    let rows = client
        .query(
            "SELECT record FROM rollouts WHERE updated_at >= $1 ORDER BY created_at, id",
            &[&system_time(since_ms)],
        )
        .await
        .map_err(PgError::db("reading changed rollouts"))?;
    Ok(rows
        .iter()
        .filter_map(|r| match serde_json::from_value::<Rollout>(r.get(0)) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::error!(error = %e, "unreadable rollout skipped");
                None
            }
        })
        .collect())
}

/// One command, by id (a result for a command this instance had not seen).
pub async fn load(store: &PgStore, id: &str) -> Result<Option<CommandRecord>, PgError> {
    let client = store.client().await?;
    let row = client
        .query_opt("SELECT * FROM commands WHERE id = $1", &[&id])
        .await
        .map_err(PgError::db("reading a command"))?;
    Ok(row.as_ref().and_then(|r| match record_of(r) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::error!(error = %e, "unreadable command record skipped");
            None
        }
    }))
}

/// Whether `device` ever sent a birth (to any instance).
pub async fn device_known(store: &PgStore, device: &DeviceId) -> Result<bool, PgError> {
    let client = store.client().await?;
    let row = client
        .query_opt("SELECT 1 FROM devices WHERE device = $1", &[&device.as_str()])
        .await
        .map_err(PgError::db("looking a device up"))?;
    Ok(row.is_some())
}

fn records(rows: &[tokio_postgres::Row]) -> Vec<CommandRecord> {
    rows.iter()
        .filter_map(|r| match record_of(r) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(error = %e, "unreadable command record skipped");
                None
            }
        })
        .collect()
}
