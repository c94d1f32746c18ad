//! The whole fleet's alerts on every instance (several instances on one PostgreSQL;
//! docs/architecture.md "Several instances"): each instance's engine holds the alerts of the
//! machines it evaluates, so the API asks the store instead.
//!
//! - **Lists** (`GET /api/v1/alerts`, the estate and report pages, `/metrics`) read every open
//!   alert and the latest resolved ones from the store ([`AlertStore::stored_alerts`]), so
//!   every instance lists the same set. If the store does not answer within
//!   [`SHARED_TIMEOUT`], this instance's own alerts are listed (logged).
//! - **An acknowledgement or a resolve by hand** of an alert this engine does not know is
//!   made in the store, by one conditional `UPDATE` ([`AlertStore::ack_stored`],
//!   [`AlertStore::resolve_stored`]): the row changes once, whichever instances are asked at
//!   the same time, and only the instance whose update changed it audits it. The instance
//!   that evaluates the alert takes it in at its next incident sync (every
//!   [`super::shared::INCIDENT_SYNC_EVERY`], [`AlertStore::handled_elsewhere`]): the
//!   acknowledgement stops its escalation, the resolve goes through its engine like one made
//!   there (notified once, joined by its correlator), neither audited again. Until then its
//!   exports cannot undo them: the store keeps an acknowledgement and a resolution
//!   (`super::pg::rows::UPSERT`). An alert no running instance holds (its machine gone with its
//!   instance) is resolved in the store and not notified.
//!
//! - **Incidents** (`GET /api/v1/incidents`): each instance's correlator holds only its own
//!   (the presence judge's site outages; the fleet-wide correlator's cohorts, outliers and
//!   thermal chains while it leads `correlator`), so the list reads every open incident and
//!   the latest closed ones from the store ([`AlertStore::stored_incidents`]) and joins this
//!   instance's own, one per id (`merge_incidents`); this instance's own alone if the store
//!   does not answer within [`SHARED_TIMEOUT`] (logged).
//!
//! With sled the engine is the whole fleet's: nothing here runs.

use std::sync::Arc;

use actix::prelude::*;

use super::actor::AlertsActor;
use super::alert::{Alert, AlertState};
use super::engine::AlertError;
use super::shared::SHARED_TIMEOUT;
use super::store::{AlertStore, HandOutcome};
use crate::incidents::incident::{Incident, IncidentState};
use crate::live::event::LiveEvent;
use crate::store::StoreError;

impl AlertsActor {
    /// With a shared store and `id` unknown to this engine (neither open nor among its
    /// resolved ones): the store, where it is handled. An alert this engine knows is handled
    /// here, as with one instance: one it resolved a moment ago may not be exported yet, and
    /// the store would take a second resolve of it.
    pub(super) fn held_elsewhere(&self, id: &str) -> Option<Arc<dyn AlertStore>> {
        let sh = self.shared.as_ref()?;
        self.engine.get(id).is_none().then(|| sh.store.clone())
    }

    /// Takes in what the store holds of this engine's open alerts that another instance
    /// acknowledged or resolved by hand (module docs).
    pub(super) fn take_in_handled(&mut self, stored: Vec<Alert>) {
        let now = common::time::now_ms();
        for s in stored {
            let Some(mine) = self
                .engine
                .get(&s.id)
                .filter(|a| a.state != AlertState::Resolved)
                .cloned()
            else {
                continue;
            };
            if s.state == AlertState::Resolved {
                let Some(r) = &s.resolved_by else { continue };
                match self.engine.resolve_by_hand(&s.id, &r.by, &r.comment, r.at_ms) {
                    Ok(t) => {
                        tracing::info!(alert = %s.id, by = %r.by, "alert resolved by hand on another instance; taken in");
                        self.resolved_by_hand(t, now);
                    }
                    Err(e) => {
                        tracing::warn!(alert = %s.id, error = %e, "a resolve made on another instance not taken in")
                    }
                }
                continue;
            }
            let Some(ack) = s.ack.as_ref().filter(|_| mine.ack.is_none()) else {
                continue;
            };
            match self.engine.ack(&s.id, &ack.by, &ack.comment, ack.at_ms) {
                Ok(a) => {
                    tracing::info!(alert = %s.id, by = %ack.by, "alert acknowledged on another instance; taken in");
                    self.publish(|| LiveEvent::Acknowledged { alert: a.clone() });
                    self.persist_state();
                }
                Err(e) => {
                    tracing::warn!(alert = %s.id, error = %e, "an acknowledgement made on another instance not taken in")
                }
            }
        }
    }
}

/// Runs `job` on the blocking pool within [`SHARED_TIMEOUT`].
async fn blocking<T: Send + 'static>(
    job: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, String> {
    match tokio::time::timeout(SHARED_TIMEOUT, tokio::task::spawn_blocking(job)).await {
        Ok(Ok(Ok(v))) => Ok(v),
        Ok(Ok(Err(e))) => Err(e.to_string()),
        Ok(Err(e)) => Err(format!("the store call failed: {e}")),
        Err(_) => Err(format!("no answer within {SHARED_TIMEOUT:?}")),
    }
}

/// The fleet's alerts from the store, joined with this engine's own (`local`: [`merge`]), as
/// `select` lists them; this instance's own alone when the store does not answer.
pub(super) async fn list(
    store: Arc<dyn AlertStore>,
    select: impl FnOnce(Vec<Alert>) -> Vec<Alert>,
    local: Vec<Alert>,
) -> Vec<Alert> {
    match blocking(move || store.stored_alerts()).await {
        Ok(all) => select(merge(all, local)),
        Err(e) => {
            tracing::warn!(error = %e, "the fleet's alerts not read; listing this instance's own");
            select(local)
        }
    }
}

/// The fleet's incidents from the store, joined with this instance's own (`local`:
/// [`merge_incidents`]); this instance's own alone when the store does not answer.
pub(super) async fn incidents(store: Arc<dyn AlertStore>, local: Vec<Incident>) -> Vec<Incident> {
    match blocking(move || store.stored_incidents()).await {
        Ok(all) => merge_incidents(all, local),
        Err(e) => {
            tracing::warn!(error = %e, "the fleet's incidents not read; listing this instance's own");
            local
        }
    }
}

/// The stored incidents and this instance's own, one per id: a closed copy wins over an open
/// one (the store may not have this instance's last change yet, or another instance closed
/// it), then the later update; on a tie this instance's (it may hold a change not yet written).
pub(super) fn merge_incidents(stored: Vec<Incident>, local: Vec<Incident>) -> Vec<Incident> {
    let rank = |i: &Incident| (i.state != IncidentState::Open, i.updated_ms);
    let mut by_id: std::collections::HashMap<String, Incident> =
        stored.into_iter().map(|i| (i.id.clone(), i)).collect();
    for i in local {
        match by_id.get(&i.id) {
            Some(s) if rank(s) > rank(&i) => {}
            _ => {
                by_id.insert(i.id.clone(), i);
            }
        }
    }
    by_id.into_values().collect()
}

/// How far along an alert is: resolved, then acknowledged, then open.
fn progress(a: &Alert) -> u8 {
    if a.state == AlertState::Resolved {
        2
    } else {
        u8::from(a.ack.is_some())
    }
}

/// The stored alerts and this engine's own, one per id: the copy further along wins (the
/// store may not have this engine's last change yet, this engine may not have taken in one
/// made elsewhere), on a tie this engine's (its values are the latest it evaluated).
pub(super) fn merge(stored: Vec<Alert>, local: Vec<Alert>) -> Vec<Alert> {
    let mut by_id: std::collections::HashMap<String, Alert> =
        stored.into_iter().map(|a| (a.id.clone(), a)).collect();
    for a in local {
        match by_id.get(&a.id) {
            Some(s) if progress(s) > progress(&a) => {}
            _ => {
                by_id.insert(a.id.clone(), a);
            }
        }
    }
    by_id.into_values().collect()
}

/// What to do once the store answered an acknowledgement or resolve: audit it here (the
/// only instance whose update changed the row), and say so.
fn done(
    action: &'static str,
    m: (String, String, String),
    outcome: Result<HandOutcome, String>,
    act: &mut AlertsActor,
) -> Result<Alert, AlertError> {
    let (id, who, comment) = m;
    let a = outcome.map_err(AlertError::Store)??;
    tracing::info!(alert = %id, by = %who, action, "alert handled in the shared store; its instance takes it in");
    act.audit(&who, action, &id, &comment);
    if action == "ack" {
        act.publish(|| LiveEvent::Acknowledged { alert: a.clone() });
    }
    Ok(a)
}

/// Acknowledges `what` (id, who, comment) in the store (module docs).
pub(super) fn ack(
    store: Arc<dyn AlertStore>,
    what: (String, String, String),
) -> ResponseActFuture<AlertsActor, Result<Alert, AlertError>> {
    let now = common::time::now_ms();
    let (id, who, comment) = what.clone();
    Box::pin(
        fut::wrap_future(blocking(move || store.ack_stored(&id, &who, &comment, now)))
            .map(move |outcome, act: &mut AlertsActor, _| done("ack", what, outcome, act)),
    )
}

/// Resolves `what` (id, who, comment) by hand in the store (module docs).
pub(super) fn resolve(
    store: Arc<dyn AlertStore>,
    what: (String, String, String),
) -> ResponseActFuture<AlertsActor, Result<Alert, AlertError>> {
    let now = common::time::now_ms();
    let (id, who, comment) = what.clone();
    Box::pin(
        fut::wrap_future(blocking(move || store.resolve_stored(&id, &who, &comment, now)))
            .map(move |outcome, act: &mut AlertsActor, _| done("resolve", what, outcome, act)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::alert::{Ack, Resolution};
    use crate::incidents::incident::IncidentKind;

    fn build_incident(id: &str, state: IncidentState, members: &[&str], updated_ms: i64) -> Incident {
        Incident {
            id: id.into(),
            kind: IncidentKind::CohortRegression,
            title: String::new(),
            probable_cause: String::new(),
            site: None,
            attribute: None,
            attribute_value: None,
            rule: None,
            metric: None,
            devices: Vec::new(),
            members: members.iter().map(|m| m.to_string()).collect(),
            active_members: Vec::new(),
            suppresses_members: false,
            opened_ms: 1_000,
            updated_ms,
            resolved_ms: (state != IncidentState::Open).then_some(updated_ms),
            state,
        }
    }

    #[test]
    fn incidents_are_listed_once_each_the_closed_or_later_copy_winning() {
        use IncidentState::*;
        let stored = vec![
            // the leader's, in the store only
            build_incident("cohort_regression-3", Open, &["a", "b", "c"], 5_000),
            // resolved here a moment ago, not yet written
            build_incident("site_outage-1", Open, &["x", "y", "z"], 2_000),
            // another instance closed it; this instance's copy is behind
            build_incident("outlier-2", Resolved, &["o"], 6_000),
            // a member joined in the store after this instance last read it
            build_incident("site_outage-4", Open, &["p", "q", "r", "s"], 7_000),
        ];
        let local = vec![
            build_incident("site_outage-1", Resolved, &["x", "y", "z"], 3_000),
            build_incident("outlier-2", Open, &["o"], 6_500),
            build_incident("site_outage-4", Open, &["p", "q", "r"], 4_000),
            // this instance's own, not yet written
            build_incident("site_outage-5", Open, &["t", "u", "v"], 8_000),
        ];
        let mut out = merge_incidents(stored, local);
        out.sort_by(|a, b| a.id.cmp(&b.id));
        let got: Vec<(&str, IncidentState, usize)> = out
            .iter()
            .map(|i| (i.id.as_str(), i.state, i.members.len()))
            .collect();
        assert_eq!(
            got,
            [
                ("cohort_regression-3", Open, 3),
                ("outlier-2", Resolved, 1),
                ("site_outage-1", Resolved, 3),
                ("site_outage-4", Open, 4),
                ("site_outage-5", Open, 3),
            ]
        );
    }

    fn build_alert(id: &str) -> Alert {
        let mut e = crate::alerts::engine::AlertEngine::new(
            crate::alerts::rules::parse_rules(
                "[[rules]]\nname = \"hot\"\nmetric = \"gpu.temp_c\"\nop = \">\"\nthreshold = 1\nseverity = \"warning\"\n",
            )
            .unwrap()
            .rules,
        );
        let d = crate::alerts::alert::DeviceInfo::new(common::DeviceId::new(id).unwrap());
        e.observe(&d, &[("gpu.temp_c".to_string(), 5.0)], 1_000)[0]
            .alert
            .clone()
    }

    #[test]
    fn the_copy_further_along_wins_and_each_alert_is_listed_once() {
        let (a, b, c) = (build_alert("m1"), build_alert("m2"), build_alert("m3"));
        // resolved here, not yet exported: the store still has it firing
        let mut a_here = a.clone();
        a_here.state = AlertState::Resolved;
        a_here.resolved_by = Some(Resolution {
            by: "otto".into(),
            at_ms: 2_000,
            comment: "x".into(),
        });
        // acknowledged on another instance: this engine has not taken it in yet
        let mut b_stored = b.clone();
        b_stored.ack = Some(Ack {
            by: "ann".into(),
            at_ms: 2_000,
            comment: String::new(),
        });
        let mut b_here = b.clone();
        b_here.value = 9.0;
        // only here (fired a moment ago), and only in the store (another instance's)
        let d = build_alert("m4");
        let mut out = merge(vec![a, b_stored, c.clone()], vec![a_here, b_here, d]);
        out.sort_by(|x, y| x.id.cmp(&y.id));
        let ids: Vec<&str> = out.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["hot:m1:1", "hot:m2:1", "hot:m3:1", "hot:m4:1"]);
        assert_eq!(out[0].state, AlertState::Resolved);
        assert_eq!(out[1].ack.as_ref().map(|a| a.by.as_str()), Some("ann"));
        assert_eq!(out[2], c);
    }
}
