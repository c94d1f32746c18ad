//! Incidents: the correlator finds them across alerts and devices, each with a stated probable
//! cause.
//! Pure: every call takes `now_ms`; the alerts actor feeds it the engine's transitions
//! ([`Correlator::on_transitions`]) and each device's metrics ([`Correlator::on_metrics`]),
//! persists [`Correlator::export`], and publishes the [`IncidentChange`]s.
//!
//! # Kinds
//! - **Site outage**: at least `min_devices` machines of one site, or `min_pct` of its
//!   machines (counting from `min_devices_for_pct` machines), fire the offline alert within
//!   `window_s`. The offline alerts are attached and *suppressed* (not notified on their own);
//!   later offline alerts of the site join while the incident is open. It resolves when every
//!   member device is back (its offline alert resolved).
//! - **Cohort regression**: one rule fires on at least `min_pct` (and `min_devices`) of the
//!   machines sharing an attribute value (`vision_model_version = v3.3`) while at most
//!   `max_others_pct` of the (at least `min_others`) other machines fire it; machines without
//!   the attribute count as others. One incident per rule at a time, naming the attribute that
//!   separates best. If the rule later spreads past `max_others_pct` of the others, the
//!   incident is *withdrawn* (the explanation no longer holds).
//! - **Thermal throttling** (a causal chain on one machine): the GPU temperature alert is
//!   active when the GPU clock drops by `freq_drop_pct` from its recent maximum under load, and
//!   a camera fps / inference time alert fires within `window_s` after that drop.
//! - **Outlier**: a machine's metric stays above median + k × MAD of its cohort (the fleet,
//!   or the machines with the same `attrs[cohort_by]`) for `for_s`, with at least `min_cohort`
//!   machines reporting; no fixed threshold involved. It resolves when the value comes back.
//!
//! Alert-based incidents resolve when all their member alerts resolved.
//!
//! # Call order
//! Per batch: `engine.observe` -> `correlator.on_metrics` -> `correlator.on_transitions`; then
//! notify each transition unless it is silenced or [`Correlator::is_suppressed`]. An alert
//! stays suppressed as long as its incident is open or among the recent ones, so its resolve
//! is not notified either. Offline alerts that fired before their site incident opened were
//! already notified: a notifier that wants no per-machine page at all delays offline
//! notifications by `site_outage.window_s`.
//!
//! Persisted: incidents, the firing alerts seen, the id counter. Not persisted (rebuilt from
//! the next samples): GPU clock windows and outlier timers, so an outlier needs `for_s` again
//! after a restart.

pub mod adopt;
pub mod cohort;
pub mod config;
pub mod fleet;
pub mod incident;
pub mod leader;
pub mod outlier;
pub mod site_outage;
pub mod thermal;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use common::DeviceId;

use self::config::CorrelatorConfig;
use self::incident::{
    CorrelateError, CorrelatorState, FiringAlert, FleetView, Incident, IncidentChange, IncidentChangeKind,
    IncidentKind, IncidentState, STATE_VERSION, firing_alert,
};
use self::outlier::{CohortStats, OUTLIER_FORGET_FACTOR, OutlierSample};
use self::thermal::{FREQ_METRIC, LOAD_METRIC, PERF_METRICS, TEMP_METRIC, ThermalTrack};
use crate::alerts::alert::{Alert, AlertState, DeviceInfo, Transition, TransitionKind};
use crate::alerts::names::PRESENCE_OFFLINE;

/// Resolved incidents kept for [`Correlator::recent`].
pub const RECENT_INCIDENTS_CAP: usize = 1000;

type AlertKey = (String, DeviceId);

/// Which kinds of incident a correlator opens. One instance (sled) correlates everything;
/// several instances on one PostgreSQL split the kinds by the data they need
/// (docs/architecture.md "Several instances"): site outages are made of offline alerts, which
/// only the presence judge fires, so its correlator opens them; cohorts, outliers and thermal
/// chains compare machines that any instance may hold, so one fleet-wide correlator (the
/// `correlator` leader's, [`fleet`]) opens those.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Everything,
    SiteOutages,
    AcrossMachines,
}

impl Scope {
    fn site_outages(self) -> bool {
        matches!(self, Scope::Everything | Scope::SiteOutages)
    }

    fn across_machines(self) -> bool {
        matches!(self, Scope::Everything | Scope::AcrossMachines)
    }

    /// Does a correlator of this scope own incidents of `kind`?
    pub fn owns(self, kind: IncidentKind) -> bool {
        if kind == IncidentKind::SiteOutage {
            self.site_outages()
        } else {
            self.across_machines()
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Correlator {
    config: CorrelatorConfig,
    next_seq: u64,
    open: BTreeMap<String, Incident>,
    recent: VecDeque<Incident>,
    firing: BTreeMap<AlertKey, FiringAlert>,
    suppressed: BTreeSet<String>,
    thermal: BTreeMap<DeviceId, ThermalTrack>,
    /// metric -> device -> latest sample.
    samples: BTreeMap<String, BTreeMap<DeviceId, OutlierSample>>,
    /// (device, metric) -> first sample above the bound in the current run.
    outlier_since: BTreeMap<(DeviceId, String), i64>,
    /// (metric, cohort) -> recent median and MAD.
    stats: BTreeMap<(String, Option<String>), CohortStats>,
    /// Open site outages taken from the shared store ([`adopt`]), by id.
    adopted: BTreeSet<String>,
    scope: Scope,
}

impl Correlator {
    pub fn new(config: CorrelatorConfig) -> Self {
        Correlator {
            config,
            next_seq: 1,
            open: BTreeMap::new(),
            recent: VecDeque::new(),
            firing: BTreeMap::new(),
            suppressed: BTreeSet::new(),
            thermal: BTreeMap::new(),
            samples: BTreeMap::new(),
            outlier_since: BTreeMap::new(),
            stats: BTreeMap::new(),
            adopted: BTreeSet::new(),
            scope: Scope::Everything,
        }
    }

    /// Limits the kinds this correlator opens ([`Scope`]); open incidents of other kinds are
    /// dropped: another correlator owns them (and writes them).
    pub fn set_scope(&mut self, scope: Scope) {
        self.scope = scope;
        self.open.retain(|_, i| scope.owns(i.kind));
    }

    pub fn scope(&self) -> Scope {
        self.scope
    }

    pub fn config(&self) -> &CorrelatorConfig {
        &self.config
    }

    /// Open incidents, oldest first.
    pub fn open(&self) -> Vec<Incident> {
        let mut v: Vec<Incident> = self.open.values().cloned().collect();
        v.sort_by(|a, b| (a.opened_ms, &a.id).cmp(&(b.opened_ms, &b.id)));
        v
    }

    /// Resolved incidents, oldest first, at most [`RECENT_INCIDENTS_CAP`].
    pub fn recent(&self) -> Vec<Incident> {
        self.recent.iter().cloned().collect()
    }

    pub fn get(&self, id: &str) -> Option<&Incident> {
        self.open
            .get(id)
            .or_else(|| self.recent.iter().find(|i| i.id == id))
    }

    /// Numbers the next incidents above `seq` (ids other instances stored, module docs of
    /// `crate::alerts::shared`).
    pub fn number_above(&mut self, seq: u64) {
        self.next_seq = self.next_seq.max(seq.saturating_add(1));
    }

    /// Is this alert part of an incident that speaks for it (do not notify it alone)?
    pub fn is_suppressed(&self, alert_id: &str) -> bool {
        self.suppressed.contains(alert_id)
    }

    /// Rebuilds the firing alerts from the engine (when no correlator state was persisted);
    /// opens no incident.
    pub fn seed_alerts(&mut self, active: &[Alert], devices: &FleetView) {
        for a in active.iter().filter(|a| a.state == AlertState::Firing) {
            let f = firing_alert(a, devices);
            self.firing.insert((f.rule.clone(), f.device.clone()), f);
        }
    }

    /// Feeds the engine's transitions.
    pub fn on_transitions(
        &mut self,
        transitions: &[Transition],
        devices: &FleetView,
        now_ms: i64,
    ) -> Vec<IncidentChange> {
        let mut out = Vec::new();
        for t in transitions {
            match t.kind {
                TransitionKind::Firing => {
                    let f = firing_alert(&t.alert, devices);
                    self.firing.insert((f.rule.clone(), f.device.clone()), f.clone());
                    self.fired(&f, devices, now_ms, &mut out);
                }
                TransitionKind::Resolved => {
                    let key = (t.alert.rule.clone(), t.alert.device.clone());
                    if self.firing.get(&key).is_some_and(|f| f.id == t.alert.id) {
                        self.firing.remove(&key);
                    }
                    self.member_resolved(&t.alert.id, devices, now_ms, &mut out);
                }
                TransitionKind::Pending
                | TransitionKind::Cancelled
                | TransitionKind::Escalated
                | TransitionKind::Unsilenced => {}
            }
        }
        out
    }

    /// Correlates an alert that just fired (and is in the firing set), within the scope.
    pub(super) fn fired(
        &mut self,
        f: &FiringAlert,
        devices: &FleetView,
        now_ms: i64,
        out: &mut Vec<IncidentChange>,
    ) {
        if f.metric == PRESENCE_OFFLINE && self.scope.site_outages() {
            self.site_outage(f, devices, now_ms, out);
        }
        if !self.scope.across_machines() {
            return;
        }
        self.cohort(f, devices, now_ms, out);
        if f.metric == TEMP_METRIC || PERF_METRICS.contains(&f.metric.as_str()) {
            self.thermal_chain(&f.device, now_ms, out);
        }
    }

    /// Feeds one device's metrics (GPU clock for the thermal chain, outlier metrics).
    pub fn on_metrics(
        &mut self,
        device: &DeviceInfo,
        metrics: &[(String, f64)],
        now_ms: i64,
    ) -> Vec<IncidentChange> {
        let mut out = Vec::new();
        if !self.scope.across_machines() {
            return out;
        }
        let value = |name: &str| {
            metrics
                .iter()
                .rev()
                .find(|(n, v)| n == name && v.is_finite())
                .map(|(_, v)| *v)
        };
        if let Some(freq) = value(FREQ_METRIC)
            && self.observe_gpu_clock(&device.id, freq, value(LOAD_METRIC), now_ms)
        {
            self.thermal_chain(&device.id, now_ms, &mut out);
        }
        let metric_names = self.config.outlier.metrics.clone();
        for m in metric_names {
            if let Some(v) = value(&m) {
                self.outlier(device, &m, v, now_ms, &mut out);
            }
        }
        out
    }

    /// Housekeeping: forgets old GPU clock samples and silent devices' outlier samples.
    pub fn tick(&mut self, now_ms: i64) {
        let window = self.config.thermal.window_s as i64 * 1000;
        self.thermal.retain(|_, t| {
            while t.freq.front().is_some_and(|(at, _)| *at < now_ms - window) {
                t.freq.pop_front();
            }
            if t.last_onset_ms.is_some_and(|o| o < now_ms - window) {
                t.last_onset_ms = None;
            }
            !t.freq.is_empty() || t.last_onset_ms.is_some()
        });
        let forget = self.config.outlier.max_sample_age_s as i64 * 1000 * OUTLIER_FORGET_FACTOR;
        for per_device in self.samples.values_mut() {
            per_device.retain(|_, s| now_ms - s.at_ms <= forget);
        }
        self.samples.retain(|_, per_device| !per_device.is_empty());
        let samples = &self.samples;
        self.stats.retain(|(metric, _), _| samples.contains_key(metric));
    }

    pub fn export(&self) -> CorrelatorState {
        CorrelatorState {
            version: STATE_VERSION,
            next_seq: self.next_seq,
            open: self.open(),
            recent: self.recent(),
            firing: self.firing.values().cloned().collect(),
        }
    }

    /// Replaces the state with a persisted one; produces no change.
    pub fn import(&mut self, state: CorrelatorState) -> Result<(), CorrelateError> {
        if state.version != STATE_VERSION {
            return Err(CorrelateError::StateVersion { found: state.version });
        }
        self.next_seq = state.next_seq.max(1);
        let scope = self.scope;
        self.open = state
            .open
            .into_iter()
            .filter(|i| scope.owns(i.kind))
            .map(|i| (i.id.clone(), i))
            .collect();
        self.recent = state.recent.into_iter().collect();
        self.firing = state
            .firing
            .into_iter()
            .map(|f| ((f.rule.clone(), f.device.clone()), f))
            .collect();
        self.suppressed = self
            .open
            .values()
            .chain(self.recent.iter())
            .filter(|i| i.suppresses_members)
            .flat_map(|i| i.members.iter().cloned())
            .collect();
        self.adopted.clear();
        self.thermal.clear();
        self.samples.clear();
        self.stats.clear();
        self.outlier_since.clear();
        Ok(())
    }

    // -----------------------------------------------------------------------------------------

    pub(super) fn open_incident(
        &mut self,
        mut incident: Incident,
        suppressed: Vec<String>,
        now_ms: i64,
        out: &mut Vec<IncidentChange>,
    ) {
        incident.id = format!("{}-{}", incident.kind.as_str(), self.next_seq);
        self.next_seq += 1;
        if incident.suppresses_members {
            self.suppressed.extend(incident.members.iter().cloned());
        }
        out.push(IncidentChange {
            kind: IncidentChangeKind::Opened,
            at_ms: now_ms,
            incident: incident.clone(),
            suppressed,
        });
        self.open.insert(incident.id.clone(), incident);
    }

    pub(super) fn join(
        &mut self,
        incident_id: &str,
        alert: &FiringAlert,
        now_ms: i64,
        out: &mut Vec<IncidentChange>,
    ) {
        let Some(inc) = self.open.get_mut(incident_id) else {
            return;
        };
        if !inc.join(alert, now_ms) {
            return;
        }
        let suppressed = if inc.suppresses_members {
            self.suppressed.insert(alert.id.clone());
            vec![alert.id.clone()]
        } else {
            Vec::new()
        };
        out.push(IncidentChange {
            kind: IncidentChangeKind::Joined,
            at_ms: now_ms,
            incident: inc.clone(),
            suppressed,
        });
    }

    pub(super) fn resolve(&mut self, incident_id: &str, now_ms: i64, out: &mut Vec<IncidentChange>) {
        self.close(incident_id, now_ms, None, out);
    }

    /// Resolves, or with a reason withdraws, an open incident.
    pub(super) fn close(
        &mut self,
        incident_id: &str,
        now_ms: i64,
        withdrawn: Option<String>,
        out: &mut Vec<IncidentChange>,
    ) {
        self.adopted.remove(incident_id);
        let Some(mut inc) = self.open.remove(incident_id) else {
            return;
        };
        let kind = match withdrawn {
            Some(reason) => {
                inc.probable_cause = format!("{} (withdrawn: {reason})", inc.probable_cause);
                inc.state = IncidentState::Withdrawn;
                IncidentChangeKind::Withdrawn
            }
            None => {
                inc.state = IncidentState::Resolved;
                IncidentChangeKind::Resolved
            }
        };
        inc.resolved_ms = Some(now_ms);
        inc.updated_ms = now_ms;
        out.push(IncidentChange {
            kind,
            at_ms: now_ms,
            incident: inc.clone(),
            suppressed: Vec::new(),
        });
        self.recent.push_back(inc);
        while self.recent.len() > RECENT_INCIDENTS_CAP {
            if let Some(old) = self.recent.pop_front() {
                for m in &old.members {
                    self.suppressed.remove(m);
                }
            }
        }
    }

    fn member_resolved(
        &mut self,
        alert_id: &str,
        devices: &FleetView,
        now_ms: i64,
        out: &mut Vec<IncidentChange>,
    ) {
        let mut done = Vec::new();
        for inc in self.open.values_mut() {
            if let Some(pos) = inc.active_members.iter().position(|m| m == alert_id) {
                inc.active_members.remove(pos);
                inc.updated_ms = now_ms;
                if inc.kind == IncidentKind::SiteOutage {
                    inc.probable_cause = site_outage::cause(inc, devices);
                }
                if inc.active_members.is_empty() {
                    done.push(inc.id.clone());
                }
            }
        }
        for id in done {
            self.resolve(&id, now_ms, out);
        }
    }

    /// Does `rule` fire on `device`, not explained by a site outage?
    pub(super) fn is_failing(&self, rule: &str, device: &DeviceId) -> bool {
        self.firing
            .get(&(rule.to_string(), device.clone()))
            .is_some_and(|f| !self.suppressed.contains(&f.id))
    }

    pub(super) fn find_open(&self, pred: impl Fn(&Incident) -> bool) -> Option<String> {
        self.open.values().find(|i| pred(i)).map(|i| i.id.clone())
    }
}

#[cfg(test)]
mod testkit;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incidents::testkit::*;

    #[test]
    fn correlator_export_import_round_trip_keeps_incidents_and_suppression() {
        let mut h = Harness::build(build_site("oslo", 10));
        let mut ids = Vec::new();
        for id in ["oslo0", "oslo1", "oslo2"] {
            ids.push(h.feed(id, &[(PRESENCE_OFFLINE, 1.0)], 0)[0].alert.id.clone());
        }
        let json = serde_json::to_string(&h.corr.export()).unwrap();
        let mut c = Correlator::new(CorrelatorConfig::default());
        c.import(serde_json::from_str(&json).unwrap()).unwrap();
        assert_eq!(c.open(), h.corr.open());
        assert!(ids.iter().all(|id| c.is_suppressed(id)));
        // It goes on where it stopped: a new member joins the same incident.
        let t = h.engine.observe(
            h.fleet.get(&DeviceId::new("oslo3").unwrap()).unwrap(),
            &m(&[(PRESENCE_OFFLINE, 1.0)]),
            S,
        );
        let changes = c.on_transitions(&t, &h.fleet, S);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].kind, IncidentChangeKind::Joined);
        let mut bad = c.export();
        bad.version = 7;
        assert_eq!(c.import(bad), Err(CorrelateError::StateVersion { found: 7 }));
    }

    #[test]
    fn incidents_are_numbered_above_the_stored_ones_never_below_its_own() {
        let mut h = Harness::build(build_site("oslo", 10));
        h.corr.number_above(41);
        h.corr.number_above(3);
        for id in ["oslo0", "oslo1", "oslo2"] {
            h.feed(id, &[(PRESENCE_OFFLINE, 1.0)], 0);
        }
        let opened: Vec<&str> = h.opened().iter().map(|i| i.id.as_str()).collect();
        assert_eq!(opened, ["site_outage-42"]);
    }

    #[test]
    fn seeding_from_the_engine_opens_nothing_but_counts_for_later_incidents() {
        let mut h = Harness::build(build_site("oslo", 10));
        h.feed("oslo0", &[(PRESENCE_OFFLINE, 1.0)], 0);
        h.feed("oslo1", &[(PRESENCE_OFFLINE, 1.0)], 0);
        let mut c = Correlator::new(CorrelatorConfig::default());
        c.seed_alerts(&h.engine.active(), &h.fleet);
        assert!(c.open().is_empty());
        let t = h.engine.observe(
            h.fleet.get(&DeviceId::new("oslo2").unwrap()).unwrap(),
            &m(&[(PRESENCE_OFFLINE, 1.0)]),
            S,
        );
        assert_eq!(
            c.on_transitions(&t, &h.fleet, S)[0].kind,
            IncidentChangeKind::Opened
        );
    }
}
