//! Requests the alerts actor answers for the API: alerts, acknowledgements, silences,
//! incidents, maintenance windows, its counters. Each message sits beside its handler; the actor's state and
//! the helpers they call are in [`super::actor`].

use actix::prelude::*;
use serde::Serialize;

use super::actor::AlertsActor;
use super::alert::{Alert, AlertState};
use super::engine::AlertError;
use super::maintenance::{AddedWindow, WindowError, WindowView};
use super::silence::{Matcher, Silence};
use super::stats::AlertsSnapshot;
use crate::incidents::incident::Incident;
use crate::live::event::LiveEvent;
use crate::notify::maintenance::WindowFile;

/// Which alerts `GET /api/v1/alerts` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateFilter {
    Firing,
    Pending,
    Resolved,
    Acknowledged,
    All,
}

impl std::str::FromStr for StateFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "firing" => StateFilter::Firing,
            "pending" => StateFilter::Pending,
            "resolved" => StateFilter::Resolved,
            "acknowledged" => StateFilter::Acknowledged,
            "all" => StateFilter::All,
            _ => {
                return Err(format!(
                    "{s:?} is not one of firing, pending, resolved, acknowledged, all"
                ));
            }
        })
    }
}

/// Active alerts first (by rule, device), then resolved ones newest first.
#[derive(Message)]
#[rtype(result = "Vec<Alert>")]
pub struct ListAlerts(pub StateFilter);

impl Handler<ListAlerts> for AlertsActor {
    type Result = ResponseFuture<Vec<Alert>>;
    fn handle(&mut self, m: ListAlerts, _: &mut Context<Self>) -> Self::Result {
        let local = self
            .engine
            .active()
            .into_iter()
            .chain(self.engine.history().iter().cloned());
        let local: Vec<Alert> = local.collect();
        match &self.shared {
            None => Box::pin(async move { select(local, m.0) }),
            // several instances: the whole fleet's, from the store (module docs of `fleetwide`)
            Some(sh) => Box::pin(super::fleetwide::list(
                sh.store.clone(),
                move |all| select(all, m.0),
                local,
            )),
        }
    }
}

/// The alerts of `all` that `filter` lists: active ones by (rule, device), then resolved ones
/// newest first.
pub(super) fn select(all: Vec<Alert>, filter: StateFilter) -> Vec<Alert> {
    let (mut active, mut resolved): (Vec<Alert>, Vec<Alert>) =
        all.into_iter().partition(|a| a.state != AlertState::Resolved);
    active.sort_by(|a, b| (&a.rule, &a.device, &a.id).cmp(&(&b.rule, &b.device, &b.id)));
    resolved.sort_by(|a, b| (b.resolved_ms, &b.id).cmp(&(a.resolved_ms, &a.id)));
    let active = active.into_iter();
    match filter {
        StateFilter::Firing => active.filter(|a| a.state == AlertState::Firing).collect(),
        StateFilter::Pending => active.filter(|a| a.state == AlertState::Pending).collect(),
        StateFilter::Acknowledged => active.filter(|a| a.ack.is_some()).collect(),
        StateFilter::Resolved => resolved,
        StateFilter::All => active.chain(resolved).collect(),
    }
}

#[derive(Message)]
#[rtype(result = "Result<Alert, AlertError>")]
pub struct AckAlert {
    pub id: String,
    pub who: String,
    pub comment: String,
}

impl Handler<AckAlert> for AlertsActor {
    type Result = ResponseActFuture<Self, Result<Alert, AlertError>>;
    fn handle(&mut self, m: AckAlert, _: &mut Context<Self>) -> Self::Result {
        if let Some(store) = self.held_elsewhere(&m.id) {
            return super::fleetwide::ack(store, (m.id, m.who, m.comment));
        }
        Box::pin(fut::ready(self.ack_here(m)))
    }
}

impl AlertsActor {
    fn ack_here(&mut self, m: AckAlert) -> Result<Alert, AlertError> {
        let a = self
            .engine
            .ack(&m.id, &m.who, &m.comment, common::time::now_ms())?;
        tracing::info!(alert = %m.id, by = %m.who, "alert acknowledged");
        self.audit(&m.who, "ack", &m.id, &m.comment);
        self.persist_state();
        self.publish(|| LiveEvent::Acknowledged { alert: a.clone() });
        Ok(a)
    }
}

/// Resolves a firing alert by hand ([`super::engine::AlertEngine::resolve_by_hand`]): the
/// resolution is notified, joins the correlator like any other, is audited and persisted.
#[derive(Message)]
#[rtype(result = "Result<Alert, AlertError>")]
pub struct ResolveAlert {
    pub id: String,
    pub who: String,
    pub comment: String,
}

impl Handler<ResolveAlert> for AlertsActor {
    type Result = ResponseActFuture<Self, Result<Alert, AlertError>>;
    fn handle(&mut self, m: ResolveAlert, _: &mut Context<Self>) -> Self::Result {
        if let Some(store) = self.held_elsewhere(&m.id) {
            return super::fleetwide::resolve(store, (m.id, m.who, m.comment));
        }
        Box::pin(fut::ready(self.resolve_here(m)))
    }
}

impl AlertsActor {
    fn resolve_here(&mut self, m: ResolveAlert) -> Result<Alert, AlertError> {
        let now = common::time::now_ms();
        let t = self.engine.resolve_by_hand(&m.id, &m.who, &m.comment, now)?;
        tracing::info!(alert = %m.id, by = %m.who, "alert resolved by hand");
        self.audit(&m.who, "resolve", &m.id, &m.comment);
        let alert = t.alert.clone();
        self.resolved_by_hand(t, now);
        Ok(alert)
    }
}

#[derive(Message)]
#[rtype(result = "Vec<Silence>")]
pub struct ListSilences;

impl Handler<ListSilences> for AlertsActor {
    type Result = MessageResult<ListSilences>;
    fn handle(&mut self, _: ListSilences, _: &mut Context<Self>) -> Self::Result {
        let now = common::time::now_ms();
        MessageResult(
            self.engine
                .silences()
                .into_iter()
                .filter(|s| s.is_live(now))
                .collect(),
        )
    }
}

#[derive(Message)]
#[rtype(result = "Result<Silence, AlertError>")]
pub struct AddSilence {
    pub matchers: Vec<Matcher>,
    pub expires_ms: i64,
    pub who: String,
    pub comment: String,
}

impl Handler<AddSilence> for AlertsActor {
    type Result = Result<Silence, AlertError>;
    fn handle(&mut self, m: AddSilence, _: &mut Context<Self>) -> Self::Result {
        let now = common::time::now_ms();
        let s = self.engine.add_silence(
            Silence {
                id: format!("s-{}", common::ids::random_hex(6)),
                matchers: m.matchers,
                expires_ms: m.expires_ms,
                created_by: m.who.clone(),
                comment: m.comment.clone(),
                created_ms: now,
            },
            now,
        )?;
        let target = s
            .matchers
            .iter()
            .map(|x| format!("{}={}", x.label, x.value))
            .collect::<Vec<_>>()
            .join(",");
        tracing::info!(silence = %s.id, by = %m.who, matchers = %target, expires_ms = s.expires_ms, "silence added");
        self.audit(&m.who, "silence", &format!("{} {target}", s.id), &m.comment);
        self.persist_state();
        self.publish(|| LiveEvent::Silences);
        Ok(s)
    }
}

#[derive(Message)]
#[rtype(result = "Result<(), AlertError>")]
pub struct RemoveSilence {
    pub id: String,
    pub who: String,
}

impl Handler<RemoveSilence> for AlertsActor {
    type Result = Result<(), AlertError>;
    fn handle(&mut self, m: RemoveSilence, _: &mut Context<Self>) -> Self::Result {
        let now = common::time::now_ms();
        let t = self.engine.remove_silence(&m.id, now)?;
        tracing::info!(silence = %m.id, by = %m.who, "silence removed");
        self.audit(&m.who, "unsilence", &m.id, "");
        self.handle_changes(&t, &[], now);
        self.persist_state();
        self.publish(|| LiveEvent::Silences);
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct IncidentList {
    pub open: Vec<Incident>,
    /// Resolved and withdrawn, newest first.
    pub recent: Vec<Incident>,
}

#[derive(Message)]
#[rtype(result = "IncidentList")]
pub struct ListIncidents;

impl Handler<ListIncidents> for AlertsActor {
    type Result = ResponseFuture<IncidentList>;
    fn handle(&mut self, _: ListIncidents, _: &mut Context<Self>) -> Self::Result {
        let mut local = self.corr.open();
        local.extend(self.corr.recent());
        if let Some(fc) = &self.fleet {
            // the fleet-wide correlator's, while this instance leads it
            local.extend(fc.open());
        }
        match &self.shared {
            None => Box::pin(async move { incident_list(local) }),
            // several instances: the whole fleet's, from the store (module docs of `fleetwide`)
            Some(sh) => {
                let store = sh.store.clone();
                Box::pin(async move { incident_list(super::fleetwide::incidents(store, local).await) })
            }
        }
    }
}

/// `all` as the API lists it: open ones by when they opened, then the others newest first,
/// at most [`crate::incidents::RECENT_INCIDENTS_CAP`] of them.
pub(super) fn incident_list(all: Vec<Incident>) -> IncidentList {
    let (mut open, mut recent): (Vec<Incident>, Vec<Incident>) = all
        .into_iter()
        .partition(|i| i.state == crate::incidents::incident::IncidentState::Open);
    open.sort_by(|a, b| (a.opened_ms, &a.id).cmp(&(b.opened_ms, &b.id)));
    let closed_ms = |i: &Incident| i.resolved_ms.unwrap_or(i.updated_ms);
    recent.sort_by(|a, b| (closed_ms(b), &b.id).cmp(&(closed_ms(a), &a.id)));
    recent.truncate(crate::incidents::RECENT_INCIDENTS_CAP);
    IncidentList { open, recent }
}

#[derive(Message)]
#[rtype(result = "AlertsSnapshot")]
pub struct GetSnapshot;

impl Handler<GetSnapshot> for AlertsActor {
    type Result = MessageResult<GetSnapshot>;
    fn handle(&mut self, _: GetSnapshot, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.snapshot())
    }
}

/// Every maintenance window, config first, each saying whether it is open now.
#[derive(Message)]
#[rtype(result = "Vec<WindowView>")]
pub struct ListWindows;

impl Handler<ListWindows> for AlertsActor {
    type Result = MessageResult<ListWindows>;
    fn handle(&mut self, _: ListWindows, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.maintenance.list(common::time::now_ms()))
    }
}

/// Adds a maintenance window (persisted, audited).
#[derive(Message)]
#[rtype(result = "Result<WindowView, WindowError>")]
pub struct AddWindow {
    pub window: WindowFile,
    pub who: String,
    pub comment: String,
}

impl Handler<AddWindow> for AlertsActor {
    type Result = Result<WindowView, WindowError>;
    fn handle(&mut self, m: AddWindow, _: &mut Context<Self>) -> Self::Result {
        let now = common::time::now_ms();
        let v = self.maintenance.add(AddedWindow {
            window: m.window,
            created_by: m.who.clone(),
            created_ms: now,
            comment: m.comment.clone(),
        })?;
        let name = v.window.name.clone().unwrap_or_default();
        tracing::info!(window = %name, by = %m.who, open_now = v.open_now, "maintenance window added");
        self.audit(&m.who, "maintenance_add", &name, &m.comment);
        self.persist_windows();
        self.publish(|| LiveEvent::Maintenance);
        Ok(v)
    }
}

/// Removes a maintenance window the API added (persisted, audited).
#[derive(Message)]
#[rtype(result = "Result<(), WindowError>")]
pub struct RemoveWindow {
    pub name: String,
    pub who: String,
}

impl Handler<RemoveWindow> for AlertsActor {
    type Result = Result<(), WindowError>;
    fn handle(&mut self, m: RemoveWindow, _: &mut Context<Self>) -> Self::Result {
        self.maintenance.remove(&m.name)?;
        tracing::info!(window = %m.name, by = %m.who, "maintenance window removed");
        self.audit(&m.who, "maintenance_remove", &m.name, "");
        self.persist_windows();
        self.publish(|| LiveEvent::Maintenance);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incidents::incident::{IncidentKind, IncidentState};

    fn build_incident(id: &str, state: IncidentState, opened_ms: i64, closed_ms: Option<i64>) -> Incident {
        Incident {
            id: id.into(),
            kind: IncidentKind::SiteOutage,
            title: String::new(),
            probable_cause: String::new(),
            site: Some("s1".into()),
            attribute: None,
            attribute_value: None,
            rule: None,
            metric: None,
            devices: Vec::new(),
            members: Vec::new(),
            active_members: Vec::new(),
            suppresses_members: true,
            opened_ms,
            updated_ms: closed_ms.unwrap_or(opened_ms),
            resolved_ms: closed_ms,
            state,
        }
    }

    #[test]
    fn open_incidents_are_listed_oldest_first_and_closed_ones_newest_first() {
        use IncidentState::*;
        let list = incident_list(vec![
            build_incident("site_outage-3", Open, 3_000, None),
            build_incident("site_outage-1", Resolved, 1_000, Some(2_000)),
            build_incident("site_outage-4", Open, 1_500, None),
            build_incident("cohort_regression-2", Withdrawn, 1_200, Some(5_000)),
        ]);
        let ids = |v: &[Incident]| v.iter().map(|i| i.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&list.open), ["site_outage-4", "site_outage-3"]);
        assert_eq!(ids(&list.recent), ["cohort_regression-2", "site_outage-1"]);
    }
}
