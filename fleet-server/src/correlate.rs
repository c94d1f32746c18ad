//! The correlator: incidents across alerts and devices, each with a stated probable cause.
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

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use common::DeviceId;
use serde::{Deserialize, Serialize};

use crate::alerts::engine::{Alert, AlertState, DeviceInfo, Transition, TransitionKind};
use crate::alerts::rules::PRESENCE_OFFLINE;

/// Resolved incidents kept for [`Correlator::recent`].
pub const RECENT_INCIDENTS_CAP: usize = 1000;
/// Version of [`CorrelatorState`].
pub const STATE_VERSION: u32 = 1;
/// GPU temperature: the first step of the thermal chain.
pub const TEMP_METRIC: &str = "gpu.temp_c";
/// GPU clock: a drop under load is the throttling step.
pub const FREQ_METRIC: &str = "gpu.freq_mhz";
/// GPU load: a clock drop on an idle GPU is DVFS saving power, not throttling.
pub const LOAD_METRIC: &str = "gpu.load_pct";
/// Vision performance: the last step of the thermal chain.
pub const PERF_METRICS: &[&str] = &["app.camera_fps", "app.inference_ms"];
/// Outlier samples of a device silent for this many `max_sample_age_s` are forgotten.
const OUTLIER_FORGET_FACTOR: i64 = 10;
/// A cohort's median and MAD are computed at most this often (and whenever a machine joins or
/// leaves the metric's samples): computing them per record cost O(fleet) per record, 68 µs at
/// 1,000 machines, on the thread that also evaluates every alert.
const OUTLIER_STATS_REFRESH_MS: i64 = 1000;
/// Cap of GPU clock samples kept per device for the throttle window.
const FREQ_SAMPLES_CAP: usize = 4096;

// ---------------------------------------------------------------------------------------------
// Configuration (the `[correlate]` section of rules.toml)

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SiteOutageConfig {
    pub min_devices: usize,
    pub min_pct: f64,
    /// The percentage rule needs at least this many machines offline.
    pub min_devices_for_pct: usize,
    pub window_s: u64,
}

impl Default for SiteOutageConfig {
    fn default() -> Self {
        SiteOutageConfig {
            min_devices: 3,
            min_pct: 50.0,
            min_devices_for_pct: 2,
            window_s: 120,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CohortConfig {
    /// Device attributes compared, in order of preference on a tie.
    pub attrs: Vec<String>,
    pub min_pct: f64,
    pub min_devices: usize,
    pub max_others_pct: f64,
    pub min_others: usize,
}

impl Default for CohortConfig {
    fn default() -> Self {
        CohortConfig {
            attrs: vec![
                "agent_version".into(),
                "vision_model_version".into(),
                "jetpack".into(),
            ],
            min_pct: 50.0,
            min_devices: 3,
            max_others_pct: 10.0,
            min_others: 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThermalConfig {
    pub window_s: u64,
    pub freq_drop_pct: f64,
    pub min_load_pct: f64,
}

impl Default for ThermalConfig {
    fn default() -> Self {
        ThermalConfig {
            window_s: 600,
            freq_drop_pct: 20.0,
            min_load_pct: 50.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierConfig {
    pub metrics: Vec<String>,
    pub k: f64,
    pub min_cohort: usize,
    pub for_s: u64,
    /// Compare only machines with the same value of this attribute (e.g. `board`).
    pub cohort_by: Option<String>,
    /// MAD floor in percent of the median: identical machines would otherwise make any
    /// difference an outlier.
    pub min_mad_pct: f64,
    pub max_sample_age_s: u64,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            metrics: vec![
                "gpu.temp_c".into(),
                "cpu.usage_pct".into(),
                "app.inference_ms".into(),
            ],
            k: 5.0,
            min_cohort: 8,
            for_s: 300,
            cohort_by: None,
            min_mad_pct: 2.0,
            max_sample_age_s: 120,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorrelatorConfig {
    pub site_outage: SiteOutageConfig,
    pub cohort: CohortConfig,
    pub thermal: ThermalConfig,
    pub outlier: OutlierConfig,
}

/// Longest window accepted (one day).
const MAX_WINDOW_S: u64 = 24 * 3600;

impl CorrelatorConfig {
    /// Every problem, each with its key path under `prefix`.
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut p = Vec::new();
        let pct = |key: &str, v: f64, p: &mut Vec<String>| {
            if !(v.is_finite() && (0.0..=100.0).contains(&v)) {
                p.push(format!("{prefix}.{key}: {v} is not a percentage in 0..=100"));
            }
        };
        pct("site_outage.min_pct", self.site_outage.min_pct, &mut p);
        pct("cohort.min_pct", self.cohort.min_pct, &mut p);
        pct("cohort.max_others_pct", self.cohort.max_others_pct, &mut p);
        pct("thermal.freq_drop_pct", self.thermal.freq_drop_pct, &mut p);
        pct("thermal.min_load_pct", self.thermal.min_load_pct, &mut p);
        pct("outlier.min_mad_pct", self.outlier.min_mad_pct, &mut p);
        let mut at_least_one = |key: &str, v: u64| {
            if v == 0 {
                p.push(format!("{prefix}.{key}: must be at least 1"));
            }
        };
        at_least_one("site_outage.min_devices", self.site_outage.min_devices as u64);
        at_least_one(
            "site_outage.min_devices_for_pct",
            self.site_outage.min_devices_for_pct as u64,
        );
        at_least_one("site_outage.window_s", self.site_outage.window_s);
        at_least_one("cohort.min_devices", self.cohort.min_devices as u64);
        at_least_one("cohort.min_others", self.cohort.min_others as u64);
        at_least_one("thermal.window_s", self.thermal.window_s);
        at_least_one("outlier.max_sample_age_s", self.outlier.max_sample_age_s);
        if self.outlier.min_cohort < 3 {
            p.push(format!(
                "{prefix}.outlier.min_cohort: a median needs at least 3 machines"
            ));
        }
        if self.thermal.freq_drop_pct == 0.0 {
            p.push(format!("{prefix}.thermal.freq_drop_pct: must be above 0"));
        }
        for (key, v) in [
            ("site_outage.window_s", self.site_outage.window_s),
            ("thermal.window_s", self.thermal.window_s),
            ("outlier.for_s", self.outlier.for_s),
            ("outlier.max_sample_age_s", self.outlier.max_sample_age_s),
        ] {
            if v > MAX_WINDOW_S {
                p.push(format!("{prefix}.{key}: {v} s is longer than {MAX_WINDOW_S} s"));
            }
        }
        if !(self.outlier.k.is_finite() && self.outlier.k > 0.0) {
            p.push(format!("{prefix}.outlier.k: must be a positive number"));
        }
        for (i, a) in self.cohort.attrs.iter().enumerate() {
            if a.is_empty() {
                p.push(format!("{prefix}.cohort.attrs[{i}]: must not be empty"));
            }
        }
        for (i, m) in self.outlier.metrics.iter().enumerate() {
            if !crate::alerts::rules::is_known_input(m) {
                p.push(format!("{prefix}.outlier.metrics[{i}]: unknown metric {m:?}"));
            }
        }
        if self.outlier.cohort_by.as_deref() == Some("") {
            p.push(format!("{prefix}.outlier.cohort_by: must not be empty"));
        }
        p
    }
}

// ---------------------------------------------------------------------------------------------
// Fleet view, incidents

/// The devices the correlator compares; the actor builds it from the fleet state.
#[derive(Debug, Clone, Default)]
pub struct FleetView {
    devices: BTreeMap<DeviceId, DeviceInfo>,
}

impl FleetView {
    pub fn new(devices: impl IntoIterator<Item = DeviceInfo>) -> Self {
        FleetView {
            devices: devices.into_iter().map(|d| (d.id.clone(), d)).collect(),
        }
    }

    pub fn get(&self, id: &DeviceId) -> Option<&DeviceInfo> {
        self.devices.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &DeviceInfo> {
        self.devices.values()
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    SiteOutage,
    CohortRegression,
    ThermalThrottling,
    Outlier,
}

impl IncidentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentKind::SiteOutage => "site_outage",
            IncidentKind::CohortRegression => "cohort_regression",
            IncidentKind::ThermalThrottling => "thermal_throttling",
            IncidentKind::Outlier => "outlier",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    Open,
    Resolved,
    /// The explanation stopped holding (a cohort regression whose failure spread to machines
    /// outside the cohort); `probable_cause` says why.
    Withdrawn,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    /// `{kind}-{n}`, unique for the life of the persisted state.
    pub id: String,
    pub kind: IncidentKind,
    pub title: String,
    pub probable_cause: String,
    pub site: Option<String>,
    /// Cohort regression: the attribute and value that separate failing machines.
    pub attribute: Option<String>,
    pub attribute_value: Option<String>,
    /// Cohort regression: the rule; outlier: the metric.
    pub rule: Option<String>,
    pub metric: Option<String>,
    pub devices: Vec<DeviceId>,
    /// Alert ids attached, in the order they joined (empty for an outlier).
    pub members: Vec<String>,
    /// Members still firing; the incident resolves when none is left.
    pub active_members: Vec<String>,
    /// Members are not to be notified on their own (site outage).
    pub suppresses_members: bool,
    pub opened_ms: i64,
    pub updated_ms: i64,
    pub resolved_ms: Option<i64>,
    pub state: IncidentState,
}

impl Incident {
    fn join(&mut self, alert: &FiringAlert, now_ms: i64) -> bool {
        if self.members.contains(&alert.id) {
            return false;
        }
        self.members.push(alert.id.clone());
        self.active_members.push(alert.id.clone());
        if !self.devices.contains(&alert.device) {
            self.devices.push(alert.device.clone());
            self.devices.sort();
        }
        self.updated_ms = now_ms;
        true
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentChangeKind {
    Opened,
    /// Another alert joined an open incident.
    Joined,
    Resolved,
    /// See [`IncidentState::Withdrawn`].
    Withdrawn,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentChange {
    pub kind: IncidentChangeKind,
    pub at_ms: i64,
    pub incident: Incident,
    /// Alert ids suppressed by this change (not to be notified on their own).
    pub suppressed: Vec<String>,
}

/// What the correlator remembers of a firing alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FiringAlert {
    pub id: String,
    pub rule: String,
    pub device: DeviceId,
    pub metric: String,
    pub site: Option<String>,
    pub started_ms: i64,
    pub fired_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorrelatorState {
    pub version: u32,
    pub next_seq: u64,
    pub open: Vec<Incident>,
    pub recent: Vec<Incident>,
    pub firing: Vec<FiringAlert>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorrelateError {
    #[error("correlator state version {found} cannot be imported (expected {STATE_VERSION})")]
    StateVersion { found: u32 },
}

#[derive(Debug, Clone, Default)]
struct ThermalTrack {
    /// (time, GPU clock) within the thermal window.
    freq: VecDeque<(i64, f64)>,
    throttled: bool,
    /// Start of the latest clock drop, kept for the window after it.
    last_onset_ms: Option<i64>,
}

/// A cohort's median and raw MAD of one metric, as of `at_ms`.
#[derive(Debug, Clone, Copy)]
struct CohortStats {
    n: usize,
    median: f64,
    mad: f64,
    at_ms: i64,
    /// Samples of the metric (all cohorts) when computed: a change means a machine came or went.
    samples: usize,
}

#[derive(Debug, Clone)]
struct OutlierSample {
    cohort: Option<String>,
    value: f64,
    at_ms: i64,
}

type AlertKey = (String, DeviceId);

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
        }
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
                    if f.metric == PRESENCE_OFFLINE {
                        self.site_outage(&f, devices, now_ms, &mut out);
                    }
                    self.cohort(&f, devices, now_ms, &mut out);
                    if f.metric == TEMP_METRIC || PERF_METRICS.contains(&f.metric.as_str()) {
                        self.thermal_chain(&f.device, now_ms, &mut out);
                    }
                }
                TransitionKind::Resolved => {
                    let key = (t.alert.rule.clone(), t.alert.device.clone());
                    if self.firing.get(&key).is_some_and(|f| f.id == t.alert.id) {
                        self.firing.remove(&key);
                    }
                    self.member_resolved(&t.alert.id, now_ms, &mut out);
                }
                TransitionKind::Pending
                | TransitionKind::Cancelled
                | TransitionKind::Escalated
                | TransitionKind::Unsilenced => {}
            }
        }
        out
    }

    /// Feeds one device's metrics (GPU clock for the thermal chain, outlier metrics).
    pub fn on_metrics(
        &mut self,
        device: &DeviceInfo,
        metrics: &[(String, f64)],
        now_ms: i64,
    ) -> Vec<IncidentChange> {
        let mut out = Vec::new();
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
        self.open = state.open.into_iter().map(|i| (i.id.clone(), i)).collect();
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
        self.thermal.clear();
        self.samples.clear();
        self.stats.clear();
        self.outlier_since.clear();
        Ok(())
    }

    // -----------------------------------------------------------------------------------------

    fn open_incident(
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

    fn join(&mut self, incident_id: &str, alert: &FiringAlert, now_ms: i64, out: &mut Vec<IncidentChange>) {
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

    fn resolve(&mut self, incident_id: &str, now_ms: i64, out: &mut Vec<IncidentChange>) {
        self.close(incident_id, now_ms, None, out);
    }

    /// Resolves, or with a reason withdraws, an open incident.
    fn close(
        &mut self,
        incident_id: &str,
        now_ms: i64,
        withdrawn: Option<String>,
        out: &mut Vec<IncidentChange>,
    ) {
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

    fn member_resolved(&mut self, alert_id: &str, now_ms: i64, out: &mut Vec<IncidentChange>) {
        let mut done = Vec::new();
        for inc in self.open.values_mut() {
            if let Some(pos) = inc.active_members.iter().position(|m| m == alert_id) {
                inc.active_members.remove(pos);
                inc.updated_ms = now_ms;
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
    fn is_failing(&self, rule: &str, device: &DeviceId) -> bool {
        self.firing
            .get(&(rule.to_string(), device.clone()))
            .is_some_and(|f| !self.suppressed.contains(&f.id))
    }

    fn find_open(&self, pred: impl Fn(&Incident) -> bool) -> Option<String> {
        self.open.values().find(|i| pred(i)).map(|i| i.id.clone())
    }

    // --- site outage --------------------------------------------------------------------------

    fn site_outage(
        &mut self,
        alert: &FiringAlert,
        devices: &FleetView,
        now_ms: i64,
        out: &mut Vec<IncidentChange>,
    ) {
        let Some(site) = alert.site.clone() else {
            return;
        };
        let open = self.find_open(|i| i.kind == IncidentKind::SiteOutage && i.site.as_deref() == Some(&site));
        if let Some(id) = open {
            self.join(&id, alert, now_ms, out);
            return;
        }
        let cfg = &self.config.site_outage;
        let since = now_ms - cfg.window_s as i64 * 1000;
        let offline: Vec<FiringAlert> = self
            .firing
            .values()
            .filter(|f| {
                f.metric == PRESENCE_OFFLINE && f.site.as_deref() == Some(&site) && f.fired_ms >= since
            })
            .cloned()
            .collect();
        let count = offline.len();
        let size = devices
            .iter()
            .filter(|d| d.site.as_deref() == Some(&site))
            .count()
            .max(count);
        let by_count = count >= cfg.min_devices;
        let by_pct = count >= cfg.min_devices_for_pct && count as f64 * 100.0 >= cfg.min_pct * size as f64;
        if !(by_count || by_pct) {
            return;
        }
        let members: Vec<String> = offline.iter().map(|f| f.id.clone()).collect();
        let mut devs: Vec<DeviceId> = offline.iter().map(|f| f.device.clone()).collect();
        devs.sort();
        let incident = Incident {
            id: String::new(),
            kind: IncidentKind::SiteOutage,
            title: format!("site outage at {site}"),
            probable_cause: format!(
                "loss of network or power at site {site}: {count} of {size} machines went offline within {} s",
                cfg.window_s
            ),
            site: Some(site),
            attribute: None,
            attribute_value: None,
            rule: Some(alert.rule.clone()),
            metric: Some(PRESENCE_OFFLINE.into()),
            devices: devs,
            members: members.clone(),
            active_members: members.clone(),
            suppresses_members: true,
            opened_ms: now_ms,
            updated_ms: now_ms,
            resolved_ms: None,
            state: IncidentState::Open,
        };
        self.open_incident(incident, members, now_ms, out);
    }

    // --- cohort regression --------------------------------------------------------------------

    fn cohort(
        &mut self,
        alert: &FiringAlert,
        devices: &FleetView,
        now_ms: i64,
        out: &mut Vec<IncidentChange>,
    ) {
        // An offline alert explained by a site outage says nothing about versions.
        if self.suppressed.contains(&alert.id) {
            return;
        }
        let attrs_of = |d: &DeviceId| devices.get(d).map(|d| &d.attrs);
        let open = self.find_open(|i| {
            i.kind == IncidentKind::CohortRegression && i.rule.as_deref() == Some(&alert.rule)
        });
        if let Some(id) = open {
            let cohort = self
                .open
                .get(&id)
                .and_then(|i| Some((i.attribute.clone()?, i.attribute_value.clone()?)));
            let Some((key, value)) = cohort else {
                return;
            };
            if attrs_of(&alert.device).and_then(|a| a.get(&key)) == Some(&value) {
                self.join(&id, alert, now_ms, out);
                return;
            }
            // A machine outside the cohort fails too: does the explanation still hold?
            let (n_out, f_out) = devices
                .iter()
                .filter(|d| d.attrs.get(&key) != Some(&value))
                .fold((0usize, 0usize), |(n, f), d| {
                    (n + 1, f + usize::from(self.is_failing(&alert.rule, &d.id)))
                });
            if f_out as f64 * 100.0 <= self.config.cohort.max_others_pct * n_out as f64 {
                return;
            }
            let reason = format!("{f_out} of {n_out} machines without it fire {} too", alert.rule);
            self.close(&id, now_ms, Some(reason), out);
            // Fall through: another attribute may explain it now.
        }
        let Some(my_attrs) = attrs_of(&alert.device) else {
            return;
        };
        let failing: BTreeMap<&DeviceId, &FiringAlert> = self
            .firing
            .values()
            .filter(|f| f.rule == alert.rule && !self.suppressed.contains(&f.id))
            .map(|f| (&f.device, f))
            .collect();
        let cfg = &self.config.cohort;
        // (separation, attr, value, in-group count, in-group firing, others, others firing)
        let mut qualified: Vec<(f64, &str, &str, usize, usize, usize, usize)> = Vec::new();
        for attr in &cfg.attrs {
            let Some(value) = my_attrs.get(attr) else {
                continue;
            };
            let (mut n_in, mut f_in, mut n_out, mut f_out) = (0usize, 0usize, 0usize, 0usize);
            for d in devices.iter() {
                let fails = failing.contains_key(&d.id);
                if d.attrs.get(attr) == Some(value) {
                    n_in += 1;
                    f_in += usize::from(fails);
                } else {
                    n_out += 1;
                    f_out += usize::from(fails);
                }
            }
            let group_fails =
                f_in >= cfg.min_devices && n_in > 0 && f_in as f64 * 100.0 >= cfg.min_pct * n_in as f64;
            let others_fine =
                n_out >= cfg.min_others && f_out as f64 * 100.0 <= cfg.max_others_pct * n_out as f64;
            if group_fails && others_fine {
                let separation = f_in as f64 / n_in as f64 - f_out as f64 / n_out as f64;
                qualified.push((separation, attr, value, n_in, f_in, n_out, f_out));
            }
        }
        // Highest separation; on a tie the attribute listed first (stable sort keeps order).
        qualified.sort_by(|a, b| b.0.total_cmp(&a.0));
        let Some(&(_, attr, value, n_in, f_in, n_out, f_out)) = qualified.first() else {
            return;
        };
        let also: Vec<String> = qualified
            .iter()
            .skip(1)
            .map(|(_, a, v, ..)| format!("{a} = {v}"))
            .collect();
        let mut probable_cause = format!(
            "{attr} = {value}: {f_in} of {n_in} machines with it fire {}, {f_out} of {n_out} without it",
            alert.rule
        );
        if !also.is_empty() {
            probable_cause.push_str(&format!(" (the same machines also share {})", also.join(", ")));
        }
        let mut group: Vec<&FiringAlert> = failing
            .values()
            .filter(|f| attrs_of(&f.device).and_then(|a| a.get(attr)) == Some(&value.to_string()))
            .copied()
            .collect();
        group.sort_by(|a, b| (a.fired_ms, &a.id).cmp(&(b.fired_ms, &b.id)));
        let members: Vec<String> = group.iter().map(|f| f.id.clone()).collect();
        let mut devs: Vec<DeviceId> = group.iter().map(|f| f.device.clone()).collect();
        devs.sort();
        let incident = Incident {
            id: String::new(),
            kind: IncidentKind::CohortRegression,
            title: format!("{} on machines with {attr} = {value}", alert.rule),
            probable_cause,
            site: None,
            attribute: Some(attr.to_string()),
            attribute_value: Some(value.to_string()),
            rule: Some(alert.rule.clone()),
            metric: Some(alert.metric.clone()),
            devices: devs,
            members: members.clone(),
            active_members: members,
            suppresses_members: false,
            opened_ms: now_ms,
            updated_ms: now_ms,
            resolved_ms: None,
            state: IncidentState::Open,
        };
        self.open_incident(incident, Vec::new(), now_ms, out);
    }

    // --- thermal chain ------------------------------------------------------------------------

    /// Records a GPU clock sample; true when a drop (throttling) starts with this sample.
    fn observe_gpu_clock(&mut self, device: &DeviceId, freq: f64, load: Option<f64>, now_ms: i64) -> bool {
        let cfg = &self.config.thermal;
        let window = cfg.window_s as i64 * 1000;
        let t = self.thermal.entry(device.clone()).or_default();
        while t.freq.front().is_some_and(|(at, _)| *at < now_ms - window) || t.freq.len() >= FREQ_SAMPLES_CAP
        {
            t.freq.pop_front();
        }
        t.freq.push_back((now_ms, freq));
        let max = t.freq.iter().map(|(_, f)| *f).fold(f64::MIN, f64::max);
        let busy = load.is_none_or(|l| l >= cfg.min_load_pct);
        let dropped = max > 0.0 && freq <= max * (1.0 - cfg.freq_drop_pct / 100.0) && busy;
        let onset = dropped && !t.throttled;
        t.throttled = dropped;
        if onset {
            t.last_onset_ms = Some(now_ms);
        }
        onset
    }

    fn thermal_chain(&mut self, device: &DeviceId, now_ms: i64, out: &mut Vec<IncidentChange>) {
        let of_device: Vec<FiringAlert> = self
            .firing
            .values()
            .filter(|f| &f.device == device)
            .filter(|f| f.metric == TEMP_METRIC || PERF_METRICS.contains(&f.metric.as_str()))
            .cloned()
            .collect();
        let open = self
            .find_open(|i| i.kind == IncidentKind::ThermalThrottling && i.devices.first() == Some(device));
        if let Some(id) = open {
            for f in &of_device {
                self.join(&id, f, now_ms, out);
            }
            return;
        }
        let Some(onset) = self.thermal.get(device).and_then(|t| t.last_onset_ms) else {
            return;
        };
        let window = self.config.thermal.window_s as i64 * 1000;
        let temp = of_device
            .iter()
            .filter(|f| f.metric == TEMP_METRIC && f.started_ms <= onset)
            .min_by_key(|f| f.started_ms);
        let perf: Vec<&FiringAlert> = of_device
            .iter()
            .filter(|f| PERF_METRICS.contains(&f.metric.as_str()))
            .filter(|f| f.fired_ms >= onset && f.fired_ms - onset <= window)
            .collect();
        let Some(temp) = temp else {
            return;
        };
        if perf.is_empty() {
            return;
        }
        let mut members = vec![temp.id.clone()];
        members.extend(perf.iter().map(|f| f.id.clone()));
        let perf_names: Vec<&str> = perf.iter().map(|f| f.metric.as_str()).collect();
        let incident = Incident {
            id: String::new(),
            kind: IncidentKind::ThermalThrottling,
            title: format!("thermal throttling on {device}"),
            probable_cause: format!(
                "GPU overheating (alert {} since {} ms) throttled the GPU clock at {onset} ms, then {} degraded: \
                 check fan, heatsink, dust and enclosure temperature",
                temp.rule,
                temp.started_ms,
                perf_names.join(" and ")
            ),
            site: temp.site.clone(),
            attribute: None,
            attribute_value: None,
            rule: Some(temp.rule.clone()),
            metric: Some(TEMP_METRIC.into()),
            devices: vec![device.clone()],
            members: members.clone(),
            active_members: members,
            suppresses_members: false,
            opened_ms: now_ms,
            updated_ms: now_ms,
            resolved_ms: None,
            state: IncidentState::Open,
        };
        self.open_incident(incident, Vec::new(), now_ms, out);
    }

    // --- fleet-relative outlier ---------------------------------------------------------------

    fn outlier(
        &mut self,
        device: &DeviceInfo,
        metric: &str,
        value: f64,
        now_ms: i64,
        out: &mut Vec<IncidentChange>,
    ) {
        let cfg = &self.config.outlier;
        let cohort = cfg.cohort_by.as_ref().and_then(|k| device.attrs.get(k).cloned());
        let max_age = cfg.max_sample_age_s as i64 * 1000;
        let per_device = self.samples.entry(metric.to_string()).or_default();
        per_device.insert(
            device.id.clone(),
            OutlierSample {
                cohort: cohort.clone(),
                value,
                at_ms: now_ms,
            },
        );
        let stats_key = (metric.to_string(), cohort.clone());
        let stats = match self.stats.get(&stats_key) {
            Some(st)
                if st.samples == per_device.len()
                    && now_ms >= st.at_ms
                    && now_ms - st.at_ms < OUTLIER_STATS_REFRESH_MS =>
            {
                *st
            }
            _ => {
                let mut values: Vec<f64> = per_device
                    .values()
                    .filter(|s| s.cohort == cohort && now_ms - s.at_ms <= max_age)
                    .map(|s| s.value)
                    .collect();
                let median = median_of(&mut values);
                let mut deviations: Vec<f64> = values.iter().map(|v| (v - median).abs()).collect();
                let st = CohortStats {
                    n: values.len(),
                    median,
                    mad: median_of(&mut deviations),
                    at_ms: now_ms,
                    samples: per_device.len(),
                };
                self.stats.insert(stats_key, st);
                st
            }
        };
        let key = (device.id.clone(), metric.to_string());
        let open = self.find_open(|i| {
            i.kind == IncidentKind::Outlier
                && i.metric.as_deref() == Some(metric)
                && i.devices.first() == Some(&device.id)
        });
        let cfg = &self.config.outlier;
        if stats.n < cfg.min_cohort {
            // Too few machines to compare: no new judgement either way.
            self.outlier_since.remove(&key);
            return;
        }
        let (n, median) = (stats.n, stats.median);
        let mad = stats.mad.max(median.abs() * cfg.min_mad_pct / 100.0);
        let bound = median + cfg.k * mad;
        if value <= bound {
            self.outlier_since.remove(&key);
            if let Some(id) = open {
                self.resolve(&id, now_ms, out);
            }
            return;
        }
        let since = *self.outlier_since.entry(key).or_insert(now_ms);
        let for_ms = cfg.for_s as i64 * 1000;
        if open.is_some() || now_ms - since < for_ms {
            return;
        }
        let scope = match (&cfg.cohort_by, &cohort) {
            (Some(k), Some(v)) => format!("machines with {k} = {v}"),
            (Some(k), None) => format!("machines without {k}"),
            _ => "the fleet".to_string(),
        };
        let incident = Incident {
            id: String::new(),
            kind: IncidentKind::Outlier,
            title: format!("{} on {} far above {scope}", metric, device.id),
            probable_cause: format!(
                "a fault of this machine alone: {metric} = {value:.1} has stayed above median {median:.1} + {} x MAD \
                 ({bound:.1}) of {n} {scope} for {} s",
                cfg.k, cfg.for_s
            ),
            site: device.site.clone(),
            attribute: cfg.cohort_by.clone(),
            attribute_value: cohort,
            rule: None,
            metric: Some(metric.to_string()),
            devices: vec![device.id.clone()],
            members: Vec::new(),
            active_members: Vec::new(),
            suppresses_members: false,
            opened_ms: now_ms,
            updated_ms: now_ms,
            resolved_ms: None,
            state: IncidentState::Open,
        };
        self.open_incident(incident, Vec::new(), now_ms, out);
    }
}

fn firing_alert(a: &Alert, devices: &FleetView) -> FiringAlert {
    FiringAlert {
        id: a.id.clone(),
        rule: a.rule.clone(),
        device: a.device.clone(),
        metric: a.metric.clone(),
        site: devices
            .get(&a.device)
            .and_then(|d| d.site.clone())
            .or_else(|| a.labels.get("site").cloned()),
        started_ms: a.started_ms,
        fired_ms: a.fired_ms.unwrap_or(a.started_ms),
    }
}

/// Median (sorts the slice); 0 for an empty one.
fn median_of(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    let upper = values.get(mid).copied().unwrap_or(0.0);
    if values.len() % 2 == 1 {
        upper
    } else {
        let lower = mid
            .checked_sub(1)
            .and_then(|i| values.get(i))
            .copied()
            .unwrap_or(upper);
        (lower + upper) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::engine::AlertEngine;
    use crate::alerts::rules::parse_rules;

    const S: i64 = 1000;

    /// The shipped rules, so scenarios use the real rule names and `for` values.
    fn build_engine() -> AlertEngine {
        AlertEngine::new(
            parse_rules(include_str!("../../config/rules.toml"))
                .unwrap()
                .rules,
        )
    }

    fn build_device(id: &str, site: &str, attrs: &[(&str, &str)]) -> DeviceInfo {
        let mut d = DeviceInfo::new(DeviceId::new(id).unwrap());
        d.site = Some(site.into());
        d.attrs = attrs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        d
    }

    fn build_site(site: &str, n: usize) -> Vec<DeviceInfo> {
        (0..n)
            .map(|i| build_device(&format!("{site}{i}"), site, &[]))
            .collect()
    }

    fn m(pairs: &[(&str, f64)]) -> Vec<(String, f64)> {
        pairs.iter().map(|(k, v)| ((*k).into(), *v)).collect()
    }

    /// Engine + correlator + fleet, driven the way the actor drives them.
    struct Harness {
        engine: AlertEngine,
        corr: Correlator,
        fleet: FleetView,
        changes: Vec<IncidentChange>,
    }

    impl Harness {
        fn build(devices: Vec<DeviceInfo>) -> Self {
            Harness {
                engine: build_engine(),
                corr: Correlator::new(CorrelatorConfig::default()),
                fleet: FleetView::new(devices),
                changes: Vec::new(),
            }
        }

        fn feed(&mut self, id: &str, metrics: &[(&str, f64)], now_ms: i64) -> Vec<Transition> {
            let d = self.fleet.get(&DeviceId::new(id).unwrap()).cloned().unwrap();
            let metrics = m(metrics);
            let t = self.engine.observe(&d, &metrics, now_ms);
            self.changes.extend(self.corr.on_metrics(&d, &metrics, now_ms));
            self.changes
                .extend(self.corr.on_transitions(&t, &self.fleet, now_ms));
            t
        }

        fn tick(&mut self, now_ms: i64) {
            let t = self.engine.tick(now_ms);
            self.corr.tick(now_ms);
            self.changes
                .extend(self.corr.on_transitions(&t, &self.fleet, now_ms));
        }

        fn opened(&self) -> Vec<&Incident> {
            self.changes
                .iter()
                .filter(|c| c.kind == IncidentChangeKind::Opened)
                .map(|c| &c.incident)
                .collect()
        }
    }

    #[test]
    fn machines_of_one_site_going_offline_together_make_one_site_outage() {
        let mut h = Harness::build(build_site("oslo", 10));
        let mut offline_ids = Vec::new();
        for (i, id) in ["oslo0", "oslo1", "oslo2"].iter().enumerate() {
            let t = h.feed(id, &[(PRESENCE_OFFLINE, 1.0)], i as i64 * 20 * S);
            offline_ids.push(t[0].alert.id.clone());
        }
        let opened = h.opened();
        assert_eq!(opened.len(), 1);
        let inc = opened[0];
        assert_eq!(
            (inc.kind, inc.site.as_deref()),
            (IncidentKind::SiteOutage, Some("oslo"))
        );
        assert!(inc.probable_cause.contains("3 of 10"), "{}", inc.probable_cause);
        assert_eq!(inc.members, offline_ids);
        assert!(offline_ids.iter().all(|id| h.corr.is_suppressed(id)));
        // A later machine of the same site joins, suppressed.
        let t = h.feed("oslo5", &[(PRESENCE_OFFLINE, 1.0)], 600 * S);
        let last = h.changes.last().unwrap();
        assert_eq!(last.kind, IncidentChangeKind::Joined);
        assert_eq!(last.suppressed, vec![t[0].alert.id.clone()]);
        // It resolves when every machine is back, not before.
        for id in ["oslo0", "oslo1", "oslo2"] {
            h.feed(id, &[(PRESENCE_OFFLINE, 0.0)], 700 * S);
        }
        assert_eq!(h.corr.open().len(), 1);
        h.feed("oslo5", &[(PRESENCE_OFFLINE, 0.0)], 710 * S);
        assert!(h.corr.open().is_empty());
        assert_eq!(
            h.changes.last().map(|c| c.kind),
            Some(IncidentChangeKind::Resolved)
        );
        assert!(
            h.corr.is_suppressed(&offline_ids[0]),
            "its resolve is not notified either"
        );
    }

    #[test]
    fn two_of_ten_machines_offline_is_not_a_site_outage() {
        let mut h = Harness::build(build_site("oslo", 10));
        h.feed("oslo0", &[(PRESENCE_OFFLINE, 1.0)], 0);
        let t = h.feed("oslo1", &[(PRESENCE_OFFLINE, 1.0)], 10 * S);
        assert!(h.opened().is_empty());
        assert!(!h.corr.is_suppressed(&t[0].alert.id));
    }

    #[test]
    fn machines_going_offline_further_apart_than_the_window_are_not_a_site_outage() {
        let mut h = Harness::build(build_site("oslo", 10));
        for (i, id) in ["oslo0", "oslo1", "oslo2"].iter().enumerate() {
            h.feed(id, &[(PRESENCE_OFFLINE, 1.0)], i as i64 * 121 * S);
        }
        assert!(h.opened().is_empty());
    }

    #[test]
    fn half_of_a_small_site_offline_is_a_site_outage_but_one_machine_never_is() {
        let mut devices = build_site("bergen", 4);
        devices.extend(build_site("solo", 1));
        let mut h = Harness::build(devices);
        h.feed("solo0", &[(PRESENCE_OFFLINE, 1.0)], 0);
        h.feed("bergen0", &[(PRESENCE_OFFLINE, 1.0)], 0);
        assert!(h.opened().is_empty());
        h.feed("bergen1", &[(PRESENCE_OFFLINE, 1.0)], S);
        assert_eq!(h.opened().len(), 1);
        assert_eq!(h.opened()[0].devices.len(), 2);
    }

    fn build_cohort_fleet() -> Vec<DeviceInfo> {
        // 6 machines on v3.3, 14 on v3.2; nothing else differs.
        (0..20)
            .map(|i| {
                let model = if i < 6 { "v3.3" } else { "v3.2" };
                build_device(
                    &format!("rvm{i}"),
                    "oslo",
                    &[
                        ("agent_version", "1.4.0"),
                        ("vision_model_version", model),
                        ("jetpack", "6.0"),
                    ],
                )
            })
            .collect()
    }

    fn slow_inference(h: &mut Harness, ids: &[usize]) {
        for (n, i) in ids.iter().enumerate() {
            let id = format!("rvm{i}");
            let at = n as i64 * 5 * S;
            h.feed(&id, &[("app.inference_ms", 400.0)], at);
            h.feed(&id, &[("app.inference_ms", 400.0)], at + 60 * S);
        }
    }

    #[test]
    fn one_rule_failing_on_one_model_version_only_is_a_cohort_regression() {
        let mut h = Harness::build(build_cohort_fleet());
        slow_inference(&mut h, &[0, 1, 2, 3]);
        let opened = h.opened();
        assert_eq!(opened.len(), 1, "{opened:#?}");
        let inc = opened[0];
        assert_eq!(inc.kind, IncidentKind::CohortRegression);
        assert_eq!(inc.rule.as_deref(), Some("inference_slow"));
        assert_eq!(
            (inc.attribute.as_deref(), inc.attribute_value.as_deref()),
            (Some("vision_model_version"), Some("v3.3"))
        );
        assert!(
            inc.probable_cause.starts_with("vision_model_version = v3.3"),
            "{}",
            inc.probable_cause
        );
        assert_eq!(inc.members.len(), 3, "opened at the third failing machine");
        assert!(!inc.suppresses_members);
        // The fourth joins; everything resolving resolves the incident.
        assert_eq!(h.corr.open()[0].members.len(), 4);
        for i in 0..4 {
            h.feed(&format!("rvm{i}"), &[("app.inference_ms", 50.0)], 500 * S);
        }
        assert!(h.corr.open().is_empty());
    }

    #[test]
    fn a_rule_failing_on_other_versions_too_is_not_a_cohort_regression() {
        let mut h = Harness::build(build_cohort_fleet());
        slow_inference(&mut h, &[6, 7, 0, 1, 2, 3]);
        assert!(h.opened().is_empty(), "{:#?}", h.opened());
    }

    #[test]
    fn a_cohort_regression_is_withdrawn_when_other_versions_start_failing() {
        let mut h = Harness::build(build_cohort_fleet());
        slow_inference(&mut h, &[0, 1, 2, 6]);
        assert_eq!(h.opened().len(), 1);
        assert_eq!(
            h.corr.open().len(),
            1,
            "1 of 14 others (7 %) does not withdraw it"
        );
        slow_inference(&mut h, &[7]);
        assert!(h.corr.open().is_empty());
        let last = h.changes.last().unwrap();
        assert_eq!(last.kind, IncidentChangeKind::Withdrawn);
        assert_eq!(last.incident.state, IncidentState::Withdrawn);
        assert!(
            last.incident.probable_cause.contains("withdrawn: 2 of 14"),
            "{}",
            last.incident.probable_cause
        );
    }

    #[test]
    fn a_version_on_too_few_machines_is_not_a_cohort_regression() {
        let mut h = Harness::build(build_cohort_fleet());
        slow_inference(&mut h, &[0, 1]);
        assert!(h.opened().is_empty());
    }

    fn build_thermal_device() -> Harness {
        Harness::build(vec![build_device("rvm1", "oslo", &[])])
    }

    /// Hot GPU from t = 0 (temperature alert fires at 60 s), clock drops at `drop_at` under
    /// `load`, camera fps falls from `fps_at` (the fps alert fires 60 s later).
    fn thermal_story(h: &mut Harness, drop_at: Option<i64>, load: f64, fps_at: i64) {
        for s in (0..=fps_at / S + 70).step_by(10) {
            let now = s * S;
            let freq = if drop_at.is_some_and(|d| now >= d) {
                600.0
            } else {
                1000.0
            };
            let fps = if now >= fps_at { 5.0 } else { 30.0 };
            h.feed(
                "rvm1",
                &[
                    ("gpu.temp_c", 88.0),
                    (FREQ_METRIC, freq),
                    (LOAD_METRIC, load),
                    ("app.camera_fps", fps),
                ],
                now,
            );
        }
    }

    #[test]
    fn hot_gpu_then_throttled_clock_then_low_fps_is_one_thermal_incident() {
        let mut h = build_thermal_device();
        thermal_story(&mut h, Some(90 * S), 95.0, 120 * S);
        let opened = h.opened();
        assert_eq!(opened.len(), 1, "{opened:#?}");
        let inc = opened[0];
        assert_eq!(inc.kind, IncidentKind::ThermalThrottling);
        assert_eq!(inc.members, ["gpu_temp_high:rvm1:1", "camera_fps_low:rvm1:1"]);
        assert!(inc.probable_cause.contains("throttled"), "{}", inc.probable_cause);
        // Cooling down resolves both alerts and the incident.
        h.feed("rvm1", &[("gpu.temp_c", 60.0), ("app.camera_fps", 30.0)], 400 * S);
        assert!(h.corr.open().is_empty());
    }

    #[test]
    fn a_hot_gpu_and_low_fps_without_a_clock_drop_is_not_thermal_throttling() {
        let mut h = build_thermal_device();
        thermal_story(&mut h, None, 95.0, 120 * S);
        assert!(h.opened().is_empty());
    }

    #[test]
    fn a_clock_drop_on_an_idle_gpu_is_not_throttling() {
        let mut h = build_thermal_device();
        thermal_story(&mut h, Some(90 * S), 10.0, 120 * S);
        assert!(h.opened().is_empty());
    }

    #[test]
    fn low_fps_long_after_the_clock_drop_is_not_part_of_the_chain() {
        let mut h = build_thermal_device();
        thermal_story(&mut h, Some(90 * S), 95.0, 700 * S);
        assert!(h.opened().is_empty(), "{:#?}", h.opened());
    }

    fn build_outlier_fleet(n: usize) -> Harness {
        Harness::build(
            (0..n)
                .map(|i| build_device(&format!("rvm{i}"), "oslo", &[]))
                .collect(),
        )
    }

    /// Every 10 s until `until_s`, `rvm0` reports a GPU temperature of `hot_c` and the others
    /// 50 to 52 C.
    fn outlier_story(h: &mut Harness, n: usize, hot_c: f64, until_s: i64) {
        for s in (0..=until_s).step_by(10) {
            for i in 0..n {
                let temp = if i == 0 { hot_c } else { 50.0 + (i % 3) as f64 };
                h.feed(&format!("rvm{i}"), &[("gpu.temp_c", temp)], s * S);
            }
        }
    }

    #[test]
    fn a_machine_far_above_its_fleet_for_long_enough_is_an_outlier_below_any_threshold() {
        let mut h = build_outlier_fleet(10);
        outlier_story(&mut h, 10, 70.0, 310);
        let opened = h.opened();
        assert_eq!(opened.len(), 1, "{opened:#?}");
        let inc = opened[0];
        assert_eq!(inc.kind, IncidentKind::Outlier);
        assert_eq!(inc.devices, [DeviceId::new("rvm0").unwrap()]);
        assert_eq!(inc.metric.as_deref(), Some("gpu.temp_c"));
        // Judged from 10 s, when every machine had reported once; 300 s later it opens.
        assert_eq!(inc.opened_ms, 310 * S);
        assert!(h.engine.active().is_empty(), "70 C is below the 80 C rule");
        h.feed("rvm0", &[("gpu.temp_c", 51.0)], 320 * S);
        assert!(h.corr.open().is_empty());
    }

    #[test]
    fn a_step_of_the_whole_fleet_is_no_outlier_although_statistics_are_kept_for_a_second() {
        let mut h = build_outlier_fleet(10);
        for s in (0..=600).step_by(10) {
            for i in 0..10 {
                // every machine jumps from ~50 C to ~75 C at 100 s: the first to report after
                // the jump meets statistics of the old fleet, then they catch up
                let base = if s >= 100 { 75.0 } else { 50.0 };
                h.feed(
                    &format!("rvm{i}"),
                    &[("gpu.temp_c", base + (i % 3) as f64)],
                    s * S,
                );
            }
        }
        assert!(h.opened().is_empty(), "{:#?}", h.opened());
    }

    #[test]
    fn an_outlier_for_less_than_the_duration_is_not_an_incident() {
        let mut h = build_outlier_fleet(10);
        outlier_story(&mut h, 10, 70.0, 290);
        assert!(h.opened().is_empty());
    }

    #[test]
    fn a_cohort_of_seven_machines_is_too_small_to_name_an_outlier() {
        let mut h = build_outlier_fleet(7);
        outlier_story(&mut h, 7, 70.0, 600);
        assert!(h.opened().is_empty());
    }

    #[test]
    fn a_machine_within_the_spread_of_the_fleet_is_not_an_outlier() {
        let mut h = build_outlier_fleet(10);
        outlier_story(&mut h, 10, 54.0, 600);
        assert!(h.opened().is_empty());
    }

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

    #[test]
    fn tick_forgets_old_clock_samples() {
        let mut h = build_thermal_device();
        h.feed("rvm1", &[(FREQ_METRIC, 1000.0)], 0);
        h.tick(10_000 * S);
        assert!(h.corr.thermal.is_empty());
    }

    #[test]
    fn the_default_correlator_config_is_valid_and_bad_values_are_named() {
        assert!(CorrelatorConfig::default().validate("correlate").is_empty());
        let mut c = CorrelatorConfig::default();
        c.outlier.min_cohort = 2;
        c.outlier.metrics.push("nope".into());
        c.cohort.max_others_pct = -1.0;
        let p = c.validate("correlate").join("\n");
        for key in [
            "correlate.outlier.min_cohort",
            "correlate.outlier.metrics[3]",
            "correlate.cohort.max_others_pct",
        ] {
            assert!(p.contains(key), "{key} in {p}");
        }
    }

    #[test]
    fn median_of_odd_and_even_lengths() {
        assert_eq!(median_of(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median_of(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median_of(&mut []), 0.0);
    }
}
