//! Alerts actor: owns the [`AlertEngine`] and the [`Correlator`], turns observations into
//! alerts, incidents and notifications, and persists both exports.
//!
//! The fleet actor sends an [`Observe`] with each device's flat metrics after every live
//! telemetry record, and the derived inputs (presence, restarts, drops, recoveries, skew;
//! [`crate::alerts::inputs`]) every second. Per observation, in this order (see
//! [`crate::incidents`]): `engine.observe` -> `corr.on_metrics` -> `corr.on_transitions`, then
//! each transition is notified unless it is silenced or its incident speaks for it
//! ([`Correlator::is_suppressed`]); incident openings and resolutions are notified too.
//!
//! An offline alert's `firing` notification is *held* for the site-outage window
//! (`correlate.site_outage.window_s`, or [`AlertsSetup::hold_offline_ms`]): when the rest of
//! the site follows, the site incident suppresses it and people get one incident instead of a
//! page per machine; if the machine comes back within the window nothing is sent at all.
//!
//! Maintenance windows ([`super::maintenance`]) mute notifications about the machines they
//! cover: a muted firing is recorded on the alert (`muted_by`), its resolution is not sent,
//! and if it still fires when the window closes its firing goes out then (checked every
//! [`TICK`]). Windows added through the API are persisted beside the engine's state.
//!
//! Every change batch (transitions, incident changes, acknowledgements, silences) hands both
//! exports to the persister ([`super::persist`]), which writes them to the store
//! ([`AlertStore::save`]: sled's `alerts` tree or PostgreSQL's tables); at most one export is
//! with it at a time, and changes made meanwhile go in the next one. On start they are
//! imported, so active alerts, acknowledgements and silences survive a restart of the process
//! or of this actor (supervised: `crate::server::children`) and are not notified again; what a
//! restart loses is the last changes not yet exported and the offline notifications being
//! held. Acknowledgements and silence changes also go to the audit log
//! (`crate::audit::AuditLog`, through the persister).
//!
//! With a store that several instances share ([`AlertStore::shared`]: PostgreSQL; see
//! docs/architecture.md "Several instances"), each machine is evaluated by the instance that
//! holds its session, and moves. So, off this thread ([`SHARED_TIMEOUT`]):
//! - a device's first observations since this actor started wait while its open alerts and
//!   counters are loaded ([`AlertStore::load_device`]) and adopted
//!   ([`AlertEngine::adopt_device`]): an alert another instance fired goes on here, with its
//!   id, and is not notified again;
//! - an alert this engine opens is claimed ([`AlertStore::claim`]: the unique open alert per
//!   (rule, device) decides) before any of its transitions is notified; a lost claim adopts
//!   the stored alert ([`AlertEngine::adopt`]) and notifies nothing, a stale generation takes
//!   a later one and claims again. If the store does not answer, the alert is notified anyway
//!   (at least once, counted in `shared_errors`).
//!
//! With sled nothing of this happens: observations are evaluated at once, as always.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix::prelude::*;
use common::{CheckResult, DeviceId};

use super::alert::{AlertState, DeviceInfo, Transition, TransitionKind};
use super::engine::AlertEngine;
use super::maintenance::{MaintenanceBook, Verdict, verdict};
use super::names::PRESENCE_OFFLINE;
use super::persist::PersistHandle;
use super::rules::RuleSet;
use super::stats::{AlertsSnapshot, AlertsStats};
use super::store::AlertStore;
use crate::incidents::incident::{FleetView, IncidentChange, IncidentChangeKind};
use crate::incidents::leader::FleetCorrelation;
use crate::incidents::{Correlator, Scope};
use crate::live::LiveHub;
use crate::live::event::LiveEvent;
use crate::messages::AttachLive;
use crate::notify::NotifyHandle;
use crate::notify::maintenance::Windows;
use crate::notify::notification::Notification;
use crate::republish::item::Item as RepublishItem;
use crate::republish::queue::RepublishHandle;
use crate::supervise::child::Beat;

/// Time-driven evaluation: pending alerts, escalations, silence expiry, held notifications.
pub const TICK: Duration = Duration::from_secs(1);
/// Resolved alerts kept for the API.
pub const ALERT_HISTORY_CAP: usize = 2_000;

/// What the actor needs to start.
pub struct AlertsSetup {
    pub rules: RuleSet,
    pub notify: NotifyHandle,
    /// Where the state was persisted (read at start).
    pub store: Arc<dyn AlertStore>,
    /// The persister's queue (its thread is a child of its own).
    pub persist: PersistHandle,
    /// How long an offline alert's notification waits for its site incident; None: the
    /// correlator's site outage window.
    pub hold_offline_ms: Option<i64>,
    /// `[[notify.maintenance]]`; the API adds more.
    pub maintenance: Windows,
}

pub(super) struct Held {
    notification: Notification,
    due_ms: i64,
}

pub struct AlertsActor {
    pub(super) engine: AlertEngine,
    pub(super) corr: Correlator,
    devices: BTreeMap<DeviceId, DeviceInfo>,
    view: FleetView,
    view_dirty: bool,
    notify: NotifyHandle,
    /// A state with the persister and not yet written makes the next export wait for it.
    persist: PersistHandle,
    /// The state changed since the last export.
    state_dirty: bool,
    pub(super) held: BTreeMap<String, Held>,
    hold_ms: i64,
    pub(super) maintenance: MaintenanceBook,
    /// Active alerts whose firing a window muted: sent when it closes if they still fire.
    pub(super) muted_alerts: BTreeSet<String>,
    /// Open incidents whose opening a window muted: their resolution is not sent either.
    muted_incidents: BTreeSet<String>,
    pub(super) stats: Arc<AlertsStats>,
    /// With a live hub attached: transitions, acknowledgements, silences and incident changes.
    live: Option<LiveHub>,
    /// With a republisher attached ([`AttachRepublisher`]): transitions and incident changes
    /// as JSON on `fleet/v1/alerts` and `fleet/v1/incidents`.
    republish: Option<RepublishHandle>,
    /// Other instances share the store (module docs); None: they do not.
    pub(super) shared: Option<Shared>,
    /// The fleet-wide correlation ([`super::fleetcorr`]): with a shared store, once the
    /// server attached its leaderships.
    pub(super) fleet: Option<FleetCorrelation>,
}

/// What the actor keeps while it shares the store with other instances (module docs; the
/// work is in [`super::shared`]).
pub struct Shared {
    pub(super) store: Arc<dyn AlertStore>,
    /// Set when the actor starts: where loads and claims report.
    pub(super) me: Option<Addr<AlertsActor>>,
    /// Devices whose stored alerts were adopted (or could not be read).
    pub(super) loaded: HashSet<DeviceId>,
    /// Devices being loaded, with their observations since, evaluated once loaded.
    pub(super) loading: HashMap<DeviceId, Vec<Observation>>,
    /// Alerts being claimed, with their transitions to notify if the claim is won.
    pub(super) claiming: HashMap<String, Vec<(Transition, i64)>>,
}

impl Shared {
    pub fn new(store: Arc<dyn AlertStore>) -> Shared {
        Shared {
            store,
            me: None,
            loaded: HashSet::new(),
            loading: HashMap::new(),
            claiming: HashMap::new(),
        }
    }

    /// The actor started: loads and claims report to `me`.
    pub fn started(&mut self, me: Addr<AlertsActor>) {
        self.me = Some(me);
    }
}

impl AlertsActor {
    /// Builds the engine and correlator and imports their persisted state (blocking reads:
    /// call at start-up).
    pub fn new(setup: AlertsSetup, stats: Arc<AlertsStats>) -> anyhow::Result<AlertsActor> {
        let now = common::time::now_ms();
        let hold_ms = setup
            .hold_offline_ms
            .unwrap_or(setup.rules.correlate.site_outage.window_s as i64 * 1000);
        let mut engine = AlertEngine::new(setup.rules.rules.clone())
            .with_history_cap(ALERT_HISTORY_CAP)
            .with_health_checks(setup.rules.health_checks.clone());
        let mut corr = Correlator::new(setup.rules.correlate.clone());
        let saved = setup.store.load().unwrap_or_else(|e| {
            tracing::error!(error = %e, "persisted alert state not readable; starting without it");
            Default::default()
        });
        if let Some(state) = saved.engine {
            match engine.import(state, now) {
                Ok(t) => {
                    for t in t {
                        tracing::info!(alert = %t.alert.id, kind = ?t.kind, "alert of a removed rule closed on start");
                    }
                    tracing::info!(active = engine.active().len(), "alert state restored");
                }
                Err(e) => tracing::error!(error = %e, "persisted alert engine state ignored"),
            }
        }
        match saved.correlator.map(|s| corr.import(s)) {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                tracing::error!(error = %e, "persisted correlator state ignored");
                corr.seed_alerts(&engine.active(), &FleetView::default());
            }
            None => corr.seed_alerts(&engine.active(), &FleetView::default()),
        }
        let mut maintenance = MaintenanceBook::new(setup.maintenance);
        if let Some(added) = saved.windows {
            for problem in maintenance.restore(added) {
                tracing::error!(error = %problem, "persisted maintenance window ignored");
            }
        }
        let shared = setup.store.shared().then(|| Shared::new(setup.store.clone()));
        if shared.is_some() {
            // cohorts, outliers and thermal chains are the fleet-wide correlator's
            corr.set_scope(Scope::SiteOutages);
        }
        let muted_alerts = engine
            .active()
            .into_iter()
            .filter(|a| a.muted_by.is_some())
            .map(|a| a.id)
            .collect();
        Ok(AlertsActor {
            engine,
            corr,
            devices: BTreeMap::new(),
            view: FleetView::default(),
            view_dirty: false,
            notify: setup.notify,
            persist: setup.persist,
            state_dirty: false,
            held: BTreeMap::new(),
            hold_ms,
            maintenance,
            muted_alerts,
            muted_incidents: BTreeSet::new(),
            stats,
            live: None,
            republish: None,
            shared,
            fleet: None,
        })
    }

    fn view(&mut self) -> &FleetView {
        if self.view_dirty {
            self.view = FleetView::new(self.devices.values().cloned());
            self.view_dirty = false;
        }
        &self.view
    }

    fn learn(&mut self, info: &DeviceInfo) {
        if self.devices.get(&info.id) != Some(info) {
            self.devices.insert(info.id.clone(), info.clone());
            self.view_dirty = true;
        }
    }

    pub(super) fn observe(&mut self, o: Observation) {
        self.stats.observations.fetch_add(1, Ordering::Relaxed);
        self.learn(&o.device);
        if let Some(fc) = self.fleet.as_mut() {
            fc.on_metrics(&o.device, &o.metrics, o.at_ms);
        }
        let mut t = self.engine.observe(&o.device, &o.metrics, o.at_ms);
        if let Some(checks) = &o.checks {
            t.extend(self.engine.observe_checks(&o.device, checks, o.at_ms));
        }
        let mut changes = self.corr.on_metrics(&o.device, &o.metrics, o.at_ms);
        if !t.is_empty() {
            self.view();
            changes.extend(self.corr.on_transitions(&t, &self.view, o.at_ms));
        }
        self.handle_changes(&t, &changes, o.at_ms);
    }

    /// A transition the API made (a resolve by hand) goes where the engine's own go.
    pub(super) fn resolved_by_hand(&mut self, t: Transition, now_ms: i64) {
        let t = [t];
        self.view();
        let changes = self.corr.on_transitions(&t, &self.view, now_ms);
        self.handle_changes(&t, &changes, now_ms);
    }

    fn tick(&mut self, now_ms: i64) {
        let t = self.engine.tick(now_ms);
        self.corr.tick(now_ms);
        let changes = if t.is_empty() {
            Vec::new()
        } else {
            self.view();
            self.corr.on_transitions(&t, &self.view, now_ms)
        };
        self.handle_changes(&t, &changes, now_ms);
        self.release_held(now_ms);
        self.unmute_closed(now_ms);
        if self.persist.take_lost() {
            // a persister died writing an export, or the store refused it: this state is the
            // next one
            self.state_dirty = true;
        }
        self.persist_if_idle();
    }

    pub(super) fn publish(&self, ev: impl FnOnce() -> LiveEvent) {
        if let Some(hub) = self.live.as_ref().filter(|h| h.has_subscribers()) {
            hub.publish(&ev());
        }
    }

    /// Notifies what people should hear about, then persists.
    pub(super) fn handle_changes(
        &mut self,
        transitions: &[Transition],
        changes: &[IncidentChange],
        now_ms: i64,
    ) {
        if let Some(r) = &self.republish {
            for t in transitions {
                r.offer(|| Some(RepublishItem::Alert(Box::new(t.clone()))));
            }
            for c in changes {
                r.offer(|| Some(RepublishItem::Incident(Box::new(c.clone()))));
            }
        }
        for t in transitions {
            self.publish(|| LiveEvent::Alert(t.clone()));
        }
        for c in changes {
            self.publish(|| LiveEvent::Incident(c.clone()));
        }
        for t in transitions {
            self.stats.transitions.fetch_add(1, Ordering::Relaxed);
            tracing::info!(alert = %t.alert.id, kind = ?t.kind, silenced = t.silenced, value = t.alert.value, "alert transition");
            self.consider(t, now_ms);
        }
        for c in changes {
            self.stats.incident_changes.fetch_add(1, Ordering::Relaxed);
            tracing::info!(incident = %c.incident.id, kind = ?c.kind, cause = %c.incident.probable_cause, "incident change");
            if let Some(n) = Notification::from_incident(c)
                && !self.incident_muted(c, now_ms)
            {
                self.send(n);
            }
        }
        if !transitions.is_empty() || !changes.is_empty() {
            self.persist_state();
        }
    }

    /// Notifies `t` unless it is not news, silenced, suppressed, muted or held.
    pub(super) fn decide(&mut self, t: &Transition, now_ms: i64) {
        // A resolve of an alert whose firing was never sent is not news either.
        if t.kind == TransitionKind::Resolved && self.held.remove(&t.alert.id).is_some() {
            self.stats.held_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if t.silenced {
            self.stats.skipped_silenced.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.corr.is_suppressed(&t.alert.id) {
            self.stats.skipped_suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Some(n) = Notification::from_transition(t) else {
            return;
        };
        let device = self.device(&t.alert.device);
        if let Verdict::Mute { window, mark } = verdict(&self.maintenance, t, &device, now_ms) {
            self.mute(&t.alert.id, &window, mark, t.kind == TransitionKind::Resolved);
            return;
        }
        if t.alert.muted_by.is_some() && matches!(t.kind, TransitionKind::Firing | TransitionKind::Unsilenced)
        {
            // its firing goes out now (a silence ended after its window closed)
            self.engine.set_muted(&t.alert.id, None);
            self.muted_alerts.remove(&t.alert.id);
        }
        if t.kind == TransitionKind::Firing && t.alert.metric == PRESENCE_OFFLINE && self.hold_ms > 0 {
            self.stats.held.fetch_add(1, Ordering::Relaxed);
            self.held.insert(
                t.alert.id.clone(),
                Held {
                    notification: n,
                    due_ms: now_ms + self.hold_ms,
                },
            );
            return;
        }
        self.send(n);
    }

    fn release_held(&mut self, now_ms: i64) {
        let due: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| h.due_ms <= now_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            let Some(h) = self.held.remove(&id) else {
                continue;
            };
            let still = self
                .engine
                .get(&id)
                .filter(|a| a.state == AlertState::Firing)
                .is_some_and(|a| !self.engine.is_silenced(a, now_ms));
            let window = h
                .notification
                .alert
                .as_ref()
                .and_then(|a| self.maintenance.muted_by(&self.device(&a.device), now_ms))
                .map(str::to_string);
            if let (true, Some(w)) = (still, &window) {
                self.mute(&id, w, true, false);
            } else if still && !self.corr.is_suppressed(&id) {
                self.send(h.notification);
            } else {
                self.stats.held_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// What the engine knows of a device (learned from observations), or just its id.
    fn device(&self, id: &DeviceId) -> DeviceInfo {
        self.devices
            .get(id)
            .cloned()
            .unwrap_or_else(|| DeviceInfo::new(id.clone()))
    }

    /// A notification about `alert_id` not sent because of `window`; `mark`: its firing
    /// (recorded on the alert, sent when the window closes if it still fires); `resolved`:
    /// the alert is done, nothing to send later.
    fn mute(&mut self, alert_id: &str, window: &str, mark: bool, resolved: bool) {
        self.stats.muted.fetch_add(1, Ordering::Relaxed);
        tracing::info!(alert = %alert_id, window, "notification muted by a maintenance window");
        if resolved {
            self.muted_alerts.remove(alert_id);
        } else if mark && self.engine.set_muted(alert_id, Some(window)).is_some() {
            self.muted_alerts.insert(alert_id.to_string());
            self.persist_state();
        }
    }

    /// Is the notification of incident change `c` muted (its site or all its machines in a
    /// window, or its opening was muted)? Counts and remembers it.
    fn incident_muted(&mut self, c: &IncidentChange, now_ms: i64) -> bool {
        let id = &c.incident.id;
        let muted = if c.kind == IncidentChangeKind::Opened {
            let devices: Vec<DeviceInfo> = c.incident.devices.iter().map(|d| self.device(d)).collect();
            let w = self
                .maintenance
                .incident_muted_by(c.incident.site.as_deref(), &devices, now_ms);
            if w.is_some() {
                self.muted_incidents.insert(id.clone());
            }
            w.is_some()
        } else {
            self.muted_incidents.remove(id)
        };
        if muted {
            self.stats.muted.fetch_add(1, Ordering::Relaxed);
            tracing::info!(incident = %id, kind = ?c.kind, "incident notification muted by a maintenance window");
        }
        muted
    }

    /// Muted alerts whose window closed: if they still fire, their firing is sent now (as
    /// when a silence ends); the mark goes either way.
    fn unmute_closed(&mut self, now_ms: i64) {
        if self.muted_alerts.is_empty() {
            return;
        }
        let ids: Vec<String> = self.muted_alerts.iter().cloned().collect();
        for id in ids {
            let Some(a) = self.engine.get(&id).filter(|a| a.state == AlertState::Firing) else {
                self.muted_alerts.remove(&id);
                continue;
            };
            if self
                .maintenance
                .muted_by(&self.device(&a.device), now_ms)
                .is_some()
            {
                continue;
            }
            self.muted_alerts.remove(&id);
            let Some(alert) = self.engine.set_muted(&id, None) else {
                continue;
            };
            tracing::info!(alert = %id, "maintenance window closed on a firing alert; notifying it now");
            let t = Transition {
                kind: TransitionKind::Unsilenced,
                at_ms: now_ms,
                silenced: self.engine.is_silenced(&alert, now_ms),
                alert,
            };
            self.consider(&t, now_ms);
            self.persist_state();
        }
    }

    /// Hands the API's windows to the persister.
    pub(super) fn persist_windows(&self) {
        if !self.persist.windows(self.maintenance.added()) {
            self.stats.persist_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!("maintenance windows not persisted: the persister stopped");
        }
    }

    fn send(&mut self, n: Notification) {
        self.stats.notified.fetch_add(1, Ordering::Relaxed);
        self.notify.send(n);
    }

    /// The state changed: it is exported now, or, while the persister is still writing an
    /// earlier export, once it is done (checked on every change and every [`TICK`]).
    ///
    /// One export copies every active and resolved alert (up to [`ALERT_HISTORY_CAP`]); made on each
    /// change and queued, a thousand machines going offline at once queued a thousand copies
    /// (600 MiB of heap in the soak's shutdown). So at most one is with the persister.
    pub(super) fn persist_state(&mut self) {
        self.state_dirty = true;
        self.persist_if_idle();
    }

    fn persist_if_idle(&mut self) {
        if self.state_dirty && !self.persist.is_busy() {
            self.export_state();
        }
    }

    fn export_state(&mut self) {
        self.state_dirty = false;
        self.stats.state_exports.fetch_add(1, Ordering::Relaxed);
        if !self.persist.export((self.engine.export(), self.corr.export())) {
            self.stats.persist_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!("alert state not persisted: the persister's queue is gone");
        }
    }

    pub(super) fn audit(&self, who: &str, action: &str, target: &str, comment: &str) {
        let line = serde_json::json!({
            "at_ms": common::time::now_ms(),
            "who": who,
            "action": action,
            "target": target,
            "comment": comment,
        });
        self.persist.audit(line);
    }

    pub(super) fn snapshot(&self) -> AlertsSnapshot {
        let active = self.engine.active();
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let s = &self.stats;
        AlertsSnapshot {
            firing: active.iter().filter(|a| a.state == AlertState::Firing).count(),
            active: active.len(),
            open_incidents: self.corr.open().len() + self.fleet.as_ref().map_or(0, |f| f.open().len()),
            silences: self.engine.silences().len(),
            observations: l(&s.observations),
            transitions: l(&s.transitions),
            notified: l(&s.notified),
            skipped_silenced: l(&s.skipped_silenced),
            skipped_suppressed: l(&s.skipped_suppressed),
            held: l(&s.held),
            held_dropped: l(&s.held_dropped),
            muted: l(&s.muted),
            incident_changes: l(&s.incident_changes),
            persist_errors: l(&s.persist_errors),
            audit_dropped: l(&s.audit_dropped),
            adopted: l(&s.adopted),
            claims_lost: l(&s.claims_lost),
            shared_errors: l(&s.shared_errors),
            fleet_incident_writes: l(&s.fleet_incident_writes),
            fleet_open_incidents: self.fleet.as_ref().map_or(0, |f| f.open().len()),
        }
    }
}

impl Actor for AlertsActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(100_000);
        if let Some(sh) = self.shared.as_mut() {
            sh.started(ctx.address());
        }
        self.start_incident_sync(ctx);
        ctx.run_interval(TICK, |act, _| act.tick(common::time::now_ms()));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        // the last changes, even if an earlier export is still being written (latest wins)
        if self.state_dirty {
            self.export_state();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Messages

/// One device's samples at one time: telemetry metrics and/or derived inputs, and/or the
/// checks of a live health report.
#[derive(Debug, Clone)]
pub struct Observation {
    pub device: DeviceInfo,
    pub metrics: Vec<(String, f64)>,
    /// A health report's checks: each failing one is an alert ([`super::checks`]).
    pub checks: Option<Vec<CheckResult>>,
    /// The device's birth: its session (re)started on this instance. With a shared store its
    /// stored alerts are read again first ([`super::shared`]).
    pub session_started: bool,
    /// A machine another instance holds (several instances): its samples feed only the
    /// fleet-wide correlation ([`super::fleetcorr`]); its holder's engine evaluates it.
    pub elsewhere: bool,
    pub at_ms: i64,
}

/// Observations from the fleet actor, evaluated in order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Observe(pub Vec<Observation>);

impl Handler<Observe> for AlertsActor {
    type Result = ();
    fn handle(&mut self, m: Observe, _: &mut Context<Self>) {
        for o in m.0 {
            self.admit(o);
        }
    }
}

/// Starts republishing this actor's transitions and incident changes.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttachRepublisher(pub RepublishHandle);

impl Handler<AttachRepublisher> for AlertsActor {
    type Result = ();
    fn handle(&mut self, m: AttachRepublisher, _: &mut Context<Self>) {
        self.republish = Some(m.0);
    }
}

impl Handler<Beat> for AlertsActor {
    type Result = ();
    fn handle(&mut self, m: Beat, _: &mut Context<Self>) {
        m.record();
    }
}

impl Handler<AttachLive> for AlertsActor {
    type Result = ();
    fn handle(&mut self, m: AttachLive, _: &mut Context<Self>) {
        self.live = Some(m.0);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::alerts::engine::EngineState;
    use crate::alerts::rules::parse_rules;
    use crate::alerts::store::ENGINE_KEY;
    use crate::audit::AuditFile;
    use crate::notify::NotifyHandle;
    use crate::store::FleetStore;

    /// A burst of changes while the persister writes (a fleet going offline at once) makes
    /// one more export, not one per change, and the last state is the one written.
    #[actix::test]
    async fn changes_made_while_the_persister_writes_go_in_one_next_export() {
        let dir = tempfile::tempdir().unwrap();
        let store = FleetStore::open(&dir.path().join("fleet.sled")).unwrap();
        let stats = Arc::new(AlertsStats::default());
        let persist = super::super::persist::start_unsupervised(
            Arc::new(store.clone()),
            Arc::new(AuditFile::new(&dir.path().join("audit.log"))),
            stats.clone(),
        );
        let mut a = AlertsActor::new(
            AlertsSetup {
                rules: parse_rules("").unwrap(),
                notify: NotifyHandle::detached(16).0,
                store: Arc::new(store.clone()),
                persist,
                hold_offline_ms: None,
                maintenance: Windows::default(),
            },
            stats.clone(),
        )
        .unwrap();
        let exports = || stats.state_exports.load(Ordering::Relaxed);
        let wait_idle = |busy: &Arc<AtomicBool>| {
            let t = std::time::Instant::now();
            while busy.load(Ordering::Acquire) {
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "the persister never finished"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        a.persist_state();
        assert_eq!(exports(), 1, "an idle persister gets the change at once");
        wait_idle(&a.persist.busy);

        // the persister is busy with an earlier export: a thousand changes wait
        a.persist.busy.store(true, Ordering::Release);
        let now = common::time::now_ms();
        for i in 0..1000 {
            let silence = crate::alerts::silence::Silence {
                id: format!("s{i}"),
                matchers: vec![crate::alerts::silence::Matcher {
                    label: "device".into(),
                    value: format!("rvm{i}"),
                }],
                expires_ms: now + 3_600_000,
                created_by: "ops".into(),
                comment: String::new(),
                created_ms: 0,
            };
            a.engine.add_silence(silence, now).unwrap();
            a.persist_state();
        }
        assert_eq!(exports(), 1);
        assert!(a.state_dirty);
        // done with it: the next tick exports once, with every change
        a.persist.busy.store(false, Ordering::Release);
        a.tick(now);
        assert_eq!(exports(), 2);
        assert!(!a.state_dirty);
        wait_idle(&a.persist.busy);
        let saved: EngineState =
            serde_json::from_slice(&store.alert_state(ENGINE_KEY).unwrap().unwrap()).unwrap();
        assert_eq!(saved.silences.len(), 1000);
        a.tick(now);
        assert_eq!(exports(), 2, "nothing changed since");
    }

    fn build_observation(site: &str, value: f64, at: &str) -> Observation {
        Observation {
            device: DeviceInfo {
                site: Some(site.into()),
                ..DeviceInfo::new(DeviceId::new("rvm1").unwrap())
            },
            metrics: vec![("cpu.usage_pct".into(), value)],
            checks: None,
            session_started: false,
            elsewhere: false,
            at_ms: at.parse::<jiff::Timestamp>().unwrap().as_millisecond(),
        }
    }

    fn ms(at: &str) -> i64 {
        at.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    /// A nightly window in Oslo: a firing inside it is recorded and marked, not sent; when
    /// the window closes and it still fires, the firing goes out, then its resolution.
    #[actix::test]
    async fn a_firing_muted_by_a_window_is_marked_and_sent_when_the_window_closes() {
        let dir = tempfile::tempdir().unwrap();
        let store = FleetStore::open(&dir.path().join("fleet.sled")).unwrap();
        let (notify, mut sent) = NotifyHandle::detached(16);
        let rules = "[[rules]]\nname = \"cpu_high\"\nmetric = \"cpu.usage_pct\"\nop = \">\"\nthreshold = 80\nseverity = \"warning\"\n";
        let maintenance = Windows::from_files(
            "notify.maintenance",
            &[crate::notify::maintenance::WindowFile {
                name: Some("nightly".into()),
                sites: vec!["oslo".into()],
                tags: vec![],
                time_zone: "Europe/Oslo".into(),
                days: vec![],
                from: "02:00".into(),
                to: "03:00".into(),
            }],
        )
        .unwrap();
        let stats = Arc::new(AlertsStats::default());
        let persist = super::super::persist::start_unsupervised(
            Arc::new(store.clone()),
            Arc::new(AuditFile::new(&dir.path().join("audit.log"))),
            stats.clone(),
        );
        let mut a = AlertsActor::new(
            AlertsSetup {
                rules: parse_rules(rules).unwrap(),
                notify,
                store: Arc::new(store),
                persist,
                hold_offline_ms: None,
                maintenance,
            },
            stats.clone(),
        )
        .unwrap();
        // 02:30 in Oslo (CET)
        a.observe(build_observation("oslo", 95.0, "2026-01-15T01:30:00Z"));
        assert!(sent.try_recv().is_err(), "muted inside the window");
        let firing = &a.engine.active()[0];
        assert_eq!(firing.muted_by.as_deref(), Some("nightly"));
        assert_eq!(stats.muted.load(Ordering::Relaxed), 1);
        a.tick(ms("2026-01-15T01:59:59Z"));
        assert!(sent.try_recv().is_err(), "02:59:59 in Oslo is still inside");

        a.tick(ms("2026-01-15T02:00:00Z"));
        let n = sent.try_recv().expect("the firing once the window closed");
        assert_eq!(
            (n.event.as_str(), n.id.as_str()),
            ("firing", "cpu_high:rvm1:1/firing")
        );
        assert_eq!(a.engine.active()[0].muted_by, None);
        a.tick(ms("2026-01-15T02:00:01Z"));
        assert!(sent.try_recv().is_err(), "sent once");
        a.observe(build_observation("oslo", 10.0, "2026-01-15T02:00:02Z"));
        assert_eq!(sent.try_recv().unwrap().event, "resolved");

        // muted and resolved inside the next night's window: nothing at all
        a.observe(build_observation("oslo", 95.0, "2026-01-16T01:10:00Z"));
        a.observe(build_observation("oslo", 10.0, "2026-01-16T01:20:00Z"));
        a.tick(ms("2026-01-16T02:30:00Z"));
        assert!(sent.try_recv().is_err());
        assert_eq!(stats.muted.load(Ordering::Relaxed), 3);
        let resolved = a.engine.history().last().unwrap().clone();
        assert_eq!(
            resolved.muted_by.as_deref(),
            Some("nightly"),
            "the record keeps the mark"
        );
    }
}
