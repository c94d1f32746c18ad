//! The whole fleet's alerts on every instance (several instances on one PostgreSQL;
//! docs/architecture.md "Several instances"): each instance's engine holds the alerts of the
//! machines it evaluates, so the API asks the store instead.
//!
//! - **Lists** (`GET /api/v1/alerts`, the estate and report pages, `/metrics`) read every open
//!   alert and the latest resolved ones from the store ([`AlertStore::stored_alerts`]), so
//!   every instance lists the same set. If the store does not answer within
//!   [`SHARED_TIMEOUT`], this instance's own alerts are listed (logged).
//! - **An acknowledgement or a resolve by hand** of an alert this engine does not hold open is
//!   made in the store, by one conditional `UPDATE` ([`AlertStore::ack_stored`],
//!   [`AlertStore::resolve_stored`]): the row changes once, whichever instances are asked at
//!   the same time, and only the instance whose update changed it audits it. The instance
//!   that evaluates the alert takes it in at its next incident sync (every
//!   [`super::shared::INCIDENT_SYNC_EVERY`], [`AlertStore::handled_elsewhere`]): the
//!   acknowledgement stops its escalation, the resolve goes through its engine like one made
//!   there (notified once, joined by its correlator), neither audited again. Until then its
//!   exports cannot undo them: the store keeps an acknowledgement and a resolution
//!   (`super::pg`'s upsert). An alert no running instance holds (its machine gone with its
//!   instance) is resolved in the store and not notified.
//!
//! With sled the engine is the whole fleet's: nothing here runs.

use std::sync::Arc;

use actix::prelude::*;

use super::actor::AlertsActor;
use super::alert::{Alert, AlertState};
use super::engine::AlertError;
use super::shared::SHARED_TIMEOUT;
use super::store::{AlertStore, HandOutcome};
use crate::live::event::LiveEvent;
use crate::store::StoreError;

impl AlertsActor {
    /// With a shared store and `id` not open in this engine: the store, where it is handled.
    pub(super) fn held_elsewhere(&self, id: &str) -> Option<Arc<dyn AlertStore>> {
        let sh = self.shared.as_ref()?;
        let open_here = self
            .engine
            .get(id)
            .is_some_and(|a| a.state != AlertState::Resolved);
        (!open_here).then(|| sh.store.clone())
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

/// The fleet's alerts from the store, as `select` lists them; this instance's own (`local`)
/// when the store does not answer.
pub(super) async fn list(
    store: Arc<dyn AlertStore>,
    select: impl FnOnce(Vec<Alert>) -> Vec<Alert>,
    local: Vec<Alert>,
) -> Vec<Alert> {
    match blocking(move || store.stored_alerts()).await {
        Ok(all) => select(all),
        Err(e) => {
            tracing::warn!(error = %e, "the fleet's alerts not read; listing this instance's own");
            local
        }
    }
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
