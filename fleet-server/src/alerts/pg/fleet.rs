//! The whole fleet's alerts and incidents in the shared tables, read and written by any
//! instance (docs/architecture.md, "Several instances"; the actor's side is
//! [`crate::alerts::fleetwide`] and [`crate::alerts::fleetcorr`]):
//!
//! - what other instances' correlators stored ([`shared_incidents`]) and what the fleet-wide
//!   correlator reads every second ([`fleet_alerts`]) and writes, fenced by its lease
//!   ([`write_incidents`]);
//! - every instance's alerts as the API lists them ([`stored_alerts`]), and an
//!   acknowledgement or a resolve by hand of another instance's alert, each one conditional
//!   `UPDATE` ([`ack_stored`], [`resolve_stored`]) that the holder takes in later
//!   ([`handled_elsewhere`]).
//!
//! This instance's own exports (the engine's and the correlator's state) are [`super`]'s.

use super::rows::{alert_of, db, incident_of, write_incident};
use crate::alerts::actor::ALERT_HISTORY_CAP;
use crate::alerts::alert::Alert;
use crate::alerts::engine::AlertError;
use crate::alerts::store::{FleetAlerts, HandOutcome, SharedIncidents};
use crate::cluster::fence::assert_lease;
use crate::cluster::lease::LeaseToken;
use crate::incidents::incident::Incident;
use crate::pg::PgError;
use crate::pg::history::system_time;
use crate::pg::store::PgStore;

/// The site outages open in the store and the highest incident number.
pub(super) async fn shared_incidents(s: PgStore) -> Result<SharedIncidents, PgError> {
    let client = s.client().await?;
    let row = client
        .query_one(
            "SELECT coalesce(max(substring(id from '-([0-9]{1,18})$')::bigint), 0) FROM incidents",
            &[],
        )
        .await
        .map_err(db("reading the incident ids"))?;
    let open = client
        .query(
            "SELECT * FROM incidents WHERE state = 'open' AND kind = 'site_outage'",
            &[],
        )
        .await
        .map_err(db("reading the open site outages"))?;
    Ok(SharedIncidents {
        seq_max: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
        open_site_outages: open.iter().map(incident_of).collect::<Result<_, _>>()?,
    })
}

/// Every firing alert, the open incidents and the highest incident number.
pub(super) async fn fleet_alerts(s: PgStore) -> Result<FleetAlerts, PgError> {
    let client = s.client().await?;
    let firing = client
        .query("SELECT * FROM alerts WHERE state = 'firing'", &[])
        .await
        .map_err(db("reading the firing alerts"))?;
    let open = client
        .query("SELECT * FROM incidents WHERE state = 'open'", &[])
        .await
        .map_err(db("reading the open incidents"))?;
    let seq = client
        .query_one(
            "SELECT coalesce(max(substring(id from '-([0-9]{1,18})$')::bigint), 0) FROM incidents",
            &[],
        )
        .await
        .map_err(db("reading the incident ids"))?;
    Ok(FleetAlerts {
        firing: firing.iter().map(alert_of).collect::<Result<_, _>>()?,
        open: open.iter().map(incident_of).collect::<Result<_, _>>()?,
        seq_max: u64::try_from(seq.get::<_, i64>(0)).unwrap_or(0),
    })
}

/// The fleet-wide correlator's incidents, in one transaction fenced by `token`.
pub(super) async fn write_incidents(
    s: PgStore,
    token: LeaseToken,
    incidents: Vec<Incident>,
) -> Result<(), PgError> {
    let mut client = s.client().await?;
    let tx = client
        .transaction()
        .await
        .map_err(db("starting the incident write"))?;
    assert_lease(&tx, &token).await?;
    for i in &incidents {
        write_incident(&tx, i).await?;
    }
    tx.commit().await.map_err(db("committing the incidents"))
}

/// Every open alert and the latest resolved ones.
pub(super) async fn stored_alerts(s: PgStore) -> Result<Vec<Alert>, PgError> {
    let client = s.client().await?;
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
    rows.iter().map(alert_of).collect()
}

/// Acknowledges an open alert unless it is acknowledged already: one conditional `UPDATE`.
pub(super) async fn ack_stored(
    s: PgStore,
    id: String,
    who: String,
    comment: String,
    now_ms: i64,
) -> Result<HandOutcome, PgError> {
    let client = s.client().await?;
    let row = client
        .query_opt(
            "UPDATE alerts SET ack_by = $2, ack_at = $3, ack_comment = $4, updated_at = now()
             WHERE id = $1 AND state IN ('pending', 'firing') AND ack_by IS NULL
             RETURNING *",
            &[&id, &who, &system_time(now_ms), &comment],
        )
        .await
        .map_err(db("acknowledging an alert"))?;
    match row {
        Some(r) => Ok(Ok(alert_of(&r)?)),
        None => Ok(Err(why_not(&**client, &id, false).await?)),
    }
}

/// Resolves a firing alert by hand: one conditional `UPDATE`.
pub(super) async fn resolve_stored(
    s: PgStore,
    id: String,
    who: String,
    comment: String,
    now_ms: i64,
) -> Result<HandOutcome, PgError> {
    let client = s.client().await?;
    let row = client
        .query_opt(
            "UPDATE alerts SET state = 'resolved', resolved_at = $3, resolved_by = $2,
                 resolve_comment = $4, updated_at = now()
             WHERE id = $1 AND state = 'firing'
             RETURNING *",
            &[&id, &who, &system_time(now_ms), &comment],
        )
        .await
        .map_err(db("resolving an alert"))?;
    match row {
        Some(r) => Ok(Ok(alert_of(&r)?)),
        None => Ok(Err(why_not(&**client, &id, true).await?)),
    }
}

/// Why an acknowledgement (or, with `resolve`, a resolve by hand) of `id` changed no row:
/// the error the engine would have given.
async fn why_not(
    client: &impl tokio_postgres::GenericClient,
    id: &str,
    resolve: bool,
) -> Result<AlertError, PgError> {
    let row = client
        .query_opt("SELECT state, ack_by FROM alerts WHERE id = $1", &[&id])
        .await
        .map_err(db("reading an alert"))?;
    Ok(match row {
        None => AlertError::UnknownAlert(id.to_string()),
        Some(r) => match (r.get::<_, &str>(0), r.get::<_, Option<String>>(1)) {
            ("resolved", _) => AlertError::NotActive(id.to_string()),
            (_, _) if resolve => AlertError::NotFiring(id.to_string()),
            (_, Some(by)) => AlertError::AlreadyAcknowledged {
                id: id.to_string(),
                by,
            },
            _ => AlertError::NotActive(id.to_string()),
        },
    })
}

/// Those of `ids` acknowledged, or resolved by hand, in the store.
pub(super) async fn handled_elsewhere(s: PgStore, ids: Vec<String>) -> Result<Vec<Alert>, PgError> {
    let client = s.client().await?;
    let rows = client
        .query(
            "SELECT * FROM alerts WHERE id = ANY($1)
             AND (ack_by IS NOT NULL OR (state = 'resolved' AND resolved_by IS NOT NULL))",
            &[&ids],
        )
        .await
        .map_err(db("reading alerts handled elsewhere"))?;
    rows.iter().map(alert_of).collect()
}
