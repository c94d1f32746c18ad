//! The whole fleet's alerts and incidents in the shared tables, read and written by any
//! instance (docs/architecture.md, "Several instances"; the actor's side is
//! [`crate::alerts::fleetwide`] and [`crate::alerts::fleetcorr`]):
//!
//! - what other instances' correlators stored ([`shared_incidents`]) and what the fleet-wide
//!   correlator reads every second ([`fleet_alerts`]) and writes, fenced by its lease
//!   ([`write_incidents`]);
//! - every instance's alerts and incidents as the API lists them ([`stored_alerts`],
//!   [`stored_incidents`]), and an acknowledgement or a resolve by hand of another
//!   instance's alert, one conditional `UPDATE` ([`by_hand`]) that the holder takes in later
//!   ([`handled_elsewhere`]).
//!
//! This instance's own exports (the engine's and the correlator's state) are [`super`]'s.

use super::rows::{
    alert_of, alerts_of, db, incident_seq_max, incidents_of, open_and_recent_alerts,
    open_and_recent_incidents, write_incident,
};
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
    let open = client
        .query(
            "SELECT * FROM incidents WHERE state = 'open' AND kind = 'site_outage'",
            &[],
        )
        .await
        .map_err(db("reading the open site outages"))?;
    Ok(SharedIncidents {
        seq_max: incident_seq_max(&**client).await?,
        open_site_outages: incidents_of(&open)?,
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
    Ok(FleetAlerts {
        firing: alerts_of(&firing)?,
        open: incidents_of(&open)?,
        seq_max: incident_seq_max(&**client).await?,
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
    open_and_recent_alerts(&**s.client().await?).await
}

/// Every open incident and the latest closed ones, whichever instance's correlator made
/// them: what `GET /api/v1/incidents` lists when instances share the store.
pub(super) async fn stored_incidents(s: PgStore) -> Result<Vec<Incident>, PgError> {
    open_and_recent_incidents(&**s.client().await?).await
}

/// What an acknowledgement or a resolve by hand of another instance's alert changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ByHand {
    Ack,
    Resolve,
}

/// Acknowledges an open alert unless it is acknowledged already, or resolves a firing one:
/// one conditional `UPDATE` (`who` is `$2`, `now_ms` `$3`, `comment` `$4`), so however many
/// instances are asked at once, one changes the row; otherwise why not.
pub(super) async fn by_hand(
    s: PgStore,
    what: ByHand,
    (id, who, comment): (String, String, String),
    now_ms: i64,
) -> Result<HandOutcome, PgError> {
    let (sql, context) = match what {
        ByHand::Ack => (
            "UPDATE alerts SET ack_by = $2, ack_at = $3, ack_comment = $4, updated_at = now()
             WHERE id = $1 AND state IN ('pending', 'firing') AND ack_by IS NULL
             RETURNING *",
            "acknowledging an alert",
        ),
        ByHand::Resolve => (
            "UPDATE alerts SET state = 'resolved', resolved_at = $3, resolved_by = $2,
                 resolve_comment = $4, updated_at = now()
             WHERE id = $1 AND state = 'firing'
             RETURNING *",
            "resolving an alert",
        ),
    };
    let client = s.client().await?;
    let row = client
        .query_opt(sql, &[&id, &who, &system_time(now_ms), &comment])
        .await
        .map_err(db(context))?;
    match row {
        Some(r) => Ok(Ok(alert_of(&r)?)),
        None => Ok(Err(why_not(&**client, &id, what).await?)),
    }
}

/// Why an acknowledgement or a resolve by hand of `id` changed no row:
/// the error the engine would have given.
async fn why_not(
    client: &impl tokio_postgres::GenericClient,
    id: &str,
    what: ByHand,
) -> Result<AlertError, PgError> {
    let row = client
        .query_opt("SELECT state, ack_by FROM alerts WHERE id = $1", &[&id])
        .await
        .map_err(db("reading an alert"))?;
    Ok(match row {
        None => AlertError::UnknownAlert(id.to_string()),
        Some(r) => match (r.get::<_, &str>(0), r.get::<_, Option<String>>(1)) {
            ("resolved", _) => AlertError::NotActive(id.to_string()),
            (_, _) if what == ByHand::Resolve => AlertError::NotFiring(id.to_string()),
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
    alerts_of(&rows)
}
