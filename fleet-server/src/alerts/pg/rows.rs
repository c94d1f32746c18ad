//! Rows of the alerts actor's tables and the values in them: an alert or an incident read
//! from a row ([`alert_of`], [`incident_of`]: every read goes through them) and written to
//! one, the labels of unit enums, timestamps; and the reads that both the instance's own
//! store ([`super`]) and the fleet-wide reads ([`super::fleet`]) make.

use common::DeviceId;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_postgres::{GenericClient, Row};

use crate::alerts::actor::ALERT_HISTORY_CAP;
use crate::alerts::alert::{Ack, Alert, Resolution};
use crate::incidents::RECENT_INCIDENTS_CAP;
use crate::incidents::incident::Incident;
use crate::pg::PgError;
use crate::pg::history::{millis, system_time};

pub(super) fn db(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> PgError {
    PgError::db(context)
}

pub(super) fn bad(context: &'static str, detail: impl ToString) -> PgError {
    PgError::Db {
        context,
        detail: detail.to_string(),
        sqlstate: None,
    }
}

/// A unit enum's serde name (`firing`, `site_outage`, `>`).
pub(super) fn label<T: Serialize>(x: &T) -> String {
    match serde_json::to_value(x) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

pub(super) fn parse<T: DeserializeOwned>(s: &str) -> Result<T, PgError> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|e| bad("reading a label", e))
}

pub(super) fn json<T: Serialize>(x: &T) -> Result<serde_json::Value, PgError> {
    serde_json::to_value(x).map_err(|e| bad("encoding", e))
}

pub(super) fn ms(r: &Row, col: &str) -> Option<i64> {
    r.get::<_, Option<std::time::SystemTime>>(col).map(millis)
}

/// Who did something by hand, when, and why (an acknowledgement, a resolve): the row's
/// `by`, `at` and `comment` columns, when both `by` and `at` are set.
fn by_hand(r: &Row, by: &str, at: &str, comment: &str) -> Option<(String, i64, String)> {
    let (by, at_ms) = (r.get::<_, Option<String>>(by)?, ms(r, at)?);
    Some((by, at_ms, r.get::<_, Option<String>>(comment).unwrap_or_default()))
}

/// An alert from its row: the one mapping every read of `alerts` goes through.
pub(super) fn alert_of(r: &Row) -> Result<Alert, PgError> {
    Ok(Alert {
        id: r.get("id"),
        rule: r.get("rule"),
        device: DeviceId::new(r.get::<_, &str>("subject")).map_err(|e| bad("reading an alert", e))?,
        generation: r.get::<_, i64>("generation") as u64,
        metric: r.get("metric"),
        severity: parse(r.get("severity"))?,
        labels: serde_json::from_value(r.get("labels")).map_err(|e| bad("reading labels", e))?,
        summary: r.get("summary"),
        op: parse(r.get("op"))?,
        value: r.get("value"),
        threshold: r.get("threshold"),
        clear: r.get("clear"),
        started_ms: ms(r, "started_at").unwrap_or(0),
        fired_ms: ms(r, "fired_at"),
        resolved_ms: ms(r, "resolved_at"),
        escalated_ms: ms(r, "escalated_at"),
        last_sample_ms: ms(r, "last_sample_at").unwrap_or(0),
        ack: by_hand(r, "ack_by", "ack_at", "ack_comment").map(|(by, at_ms, comment)| Ack {
            by,
            at_ms,
            comment,
        }),
        silenced_by: r.get("silenced_by"),
        muted_by: r.get("muted_by"),
        resolved_by: by_hand(r, "resolved_by", "resolved_at", "resolve_comment")
            .map(|(by, at_ms, comment)| Resolution { by, at_ms, comment }),
        state: parse(r.get("state"))?,
    })
}

/// Every row's alert.
pub(super) fn alerts_of(rows: &[Row]) -> Result<Vec<Alert>, PgError> {
    rows.iter().map(alert_of).collect()
}

/// Every row's incident.
pub(super) fn incidents_of(rows: &[Row]) -> Result<Vec<Incident>, PgError> {
    rows.iter().map(incident_of).collect()
}

/// Every open alert and the latest resolved ones (up to the engine's history cap): what an
/// instance loads at start, and what the API lists when instances share the store.
pub(super) async fn open_and_recent_alerts(client: &impl GenericClient) -> Result<Vec<Alert>, PgError> {
    let rows = client
        .query(
            "SELECT * FROM alerts WHERE state IN ('pending', 'firing')
             UNION ALL
             (SELECT * FROM alerts WHERE state = 'resolved'
              ORDER BY resolved_at DESC NULLS LAST, id DESC LIMIT $1)",
            &[&(ALERT_HISTORY_CAP as i64)],
        )
        .await
        .map_err(db("reading alerts"))?;
    alerts_of(&rows)
}

/// Every open incident and the latest closed ones (up to the correlator's cap), as
/// [`open_and_recent_alerts`].
pub(super) async fn open_and_recent_incidents(client: &impl GenericClient) -> Result<Vec<Incident>, PgError> {
    let rows = client
        .query(
            "SELECT * FROM incidents WHERE state = 'open'
             UNION ALL
             (SELECT * FROM incidents WHERE state <> 'open'
              ORDER BY coalesce(resolved_at, updated_at) DESC, id DESC LIMIT $1)",
            &[&(RECENT_INCIDENTS_CAP as i64)],
        )
        .await
        .map_err(db("reading incidents"))?;
    incidents_of(&rows)
}

/// The highest sequence number in a stored incident's id (`site_outage-7`: 7).
pub(super) async fn incident_seq_max(client: &impl GenericClient) -> Result<u64, PgError> {
    let row = client
        .query_one(
            "SELECT coalesce(max(substring(id from '-([0-9]{1,18})$')::bigint), 0) FROM incidents",
            &[],
        )
        .await
        .map_err(db("reading the incident ids"))?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

/// An incident from its row.
pub(super) fn incident_of(r: &Row) -> Result<Incident, PgError> {
    let devices: Vec<String> = r.get("devices");
    Ok(Incident {
        id: r.get("id"),
        kind: parse(r.get("kind"))?,
        title: r.get("title"),
        probable_cause: r.get("probable_cause"),
        site: r.get("site"),
        attribute: r.get("attribute"),
        attribute_value: r.get("attribute_value"),
        rule: r.get("rule"),
        metric: r.get("metric"),
        devices: devices
            .iter()
            .map(|d| DeviceId::new(d).map_err(|e| bad("reading an incident", e)))
            .collect::<Result<_, _>>()?,
        members: r.get("members"),
        active_members: r.get("active_members"),
        suppresses_members: r.get("suppresses_members"),
        opened_ms: ms(r, "opened_at").unwrap_or(0),
        updated_ms: ms(r, "updated_at").unwrap_or(0),
        resolved_ms: ms(r, "resolved_at"),
        state: parse(r.get("state"))?,
    })
}

/// The insert of an alert row; `conflict` says what a row already there means.
fn insert_alert_sql(conflict: &str) -> String {
    format!(
        "INSERT INTO alerts (id, rule, subject, generation, state, severity, metric, op, value,
             threshold, clear, summary, labels, started_at, fired_at, resolved_at, escalated_at,
             last_sample_at, ack_by, ack_at, ack_comment, silenced_by, muted_by, opened_by,
             resolved_by, resolve_comment, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
             $19, $20, $21, $22, $23, $24, $25, $26, now())
         {conflict}"
    )
}

/// An existing row of the same id is updated (its `opened_by` stays).
/// A resolved row stays resolved, with its resolution, and an acknowledgement stays: another
/// instance may have acknowledged or resolved the alert by hand in the store
/// ([`crate::alerts::store::AlertStore::ack_stored`],
/// [`crate::alerts::store::AlertStore::resolve_stored`]) after this instance's engine
/// last heard of it (it takes them in within a couple of seconds, `crate::alerts::shared`). An alert
/// id never opens again once resolved: its next firing is a new generation, a new id.
pub(super) const UPSERT: &str = "ON CONFLICT (id) DO UPDATE SET
             state = CASE WHEN alerts.state = 'resolved' THEN alerts.state ELSE EXCLUDED.state END,
             severity = EXCLUDED.severity,
             metric = EXCLUDED.metric, op = EXCLUDED.op, value = EXCLUDED.value,
             threshold = EXCLUDED.threshold, clear = EXCLUDED.clear, summary = EXCLUDED.summary,
             labels = EXCLUDED.labels, started_at = EXCLUDED.started_at,
             fired_at = EXCLUDED.fired_at,
             resolved_at = CASE WHEN alerts.state = 'resolved' THEN alerts.resolved_at ELSE EXCLUDED.resolved_at END,
             escalated_at = EXCLUDED.escalated_at, last_sample_at = EXCLUDED.last_sample_at,
             ack_by = coalesce(EXCLUDED.ack_by, alerts.ack_by),
             ack_at = CASE WHEN EXCLUDED.ack_by IS NULL THEN alerts.ack_at ELSE EXCLUDED.ack_at END,
             ack_comment = CASE WHEN EXCLUDED.ack_by IS NULL THEN alerts.ack_comment ELSE EXCLUDED.ack_comment END,
             silenced_by = EXCLUDED.silenced_by, muted_by = EXCLUDED.muted_by,
             resolved_by = CASE WHEN alerts.state = 'resolved' THEN alerts.resolved_by ELSE EXCLUDED.resolved_by END,
             resolve_comment = CASE WHEN alerts.state = 'resolved' THEN alerts.resolve_comment ELSE EXCLUDED.resolve_comment END,
             updated_at = now()";

pub(super) async fn insert_alert(
    client: &impl tokio_postgres::GenericClient,
    a: &Alert,
    opened_by: &str,
    conflict: &str,
) -> Result<u64, tokio_postgres::Error> {
    let t = |v: Option<i64>| v.map(system_time);
    let labels = serde_json::to_value(&a.labels).unwrap_or_default();
    client
        .execute(
            &insert_alert_sql(conflict),
            &[
                &a.id,
                &a.rule,
                &a.device.as_str(),
                &(a.generation as i64),
                &label(&a.state),
                &label(&a.severity),
                &a.metric,
                &label(&a.op),
                &a.value,
                &a.threshold,
                &a.clear,
                &a.summary,
                &labels,
                &system_time(a.started_ms),
                &t(a.fired_ms),
                &t(a.resolved_ms),
                &t(a.escalated_ms),
                &system_time(a.last_sample_ms),
                &a.ack.as_ref().map(|k| k.by.clone()),
                &t(a.ack.as_ref().map(|k| k.at_ms)),
                &a.ack.as_ref().map(|k| k.comment.clone()),
                &a.silenced_by,
                &a.muted_by,
                // NULL from a store that is not an instance's (`fleetctl store migrate`)
                &(!opened_by.is_empty()).then_some(opened_by),
                &a.resolved_by.as_ref().map(|r| r.by.clone()),
                &a.resolved_by.as_ref().map(|r| r.comment.clone()),
            ],
        )
        .await
}

pub(super) async fn write_incident(
    tx: &tokio_postgres::Transaction<'_>,
    i: &Incident,
) -> Result<(), PgError> {
    let devices: Vec<&str> = i.devices.iter().map(DeviceId::as_str).collect();
    tx.execute(
        "INSERT INTO incidents (id, kind, state, title, probable_cause, site, attribute,
             attribute_value, rule, metric, devices, members, active_members, suppresses_members,
             opened_at, updated_at, resolved_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
         ON CONFLICT (id) DO UPDATE SET kind = EXCLUDED.kind, state = EXCLUDED.state,
             title = EXCLUDED.title, probable_cause = EXCLUDED.probable_cause, site = EXCLUDED.site,
             attribute = EXCLUDED.attribute, attribute_value = EXCLUDED.attribute_value,
             rule = EXCLUDED.rule, metric = EXCLUDED.metric, devices = EXCLUDED.devices,
             members = EXCLUDED.members, active_members = EXCLUDED.active_members,
             suppresses_members = EXCLUDED.suppresses_members, opened_at = EXCLUDED.opened_at,
             updated_at = EXCLUDED.updated_at, resolved_at = EXCLUDED.resolved_at",
        &[
            &i.id,
            &label(&i.kind),
            &label(&i.state),
            &i.title,
            &i.probable_cause,
            &i.site,
            &i.attribute,
            &i.attribute_value,
            &i.rule,
            &i.metric,
            &devices,
            &i.members,
            &i.active_members,
            &i.suppresses_members,
            &system_time(i.opened_ms),
            &system_time(i.updated_ms),
            &i.resolved_ms.map(system_time),
        ],
    )
    .await
    .map_err(db("writing an incident"))?;
    Ok(())
}
