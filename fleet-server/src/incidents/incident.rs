//! What the correlator produces and remembers: [`Incident`]s and their [`IncidentChange`]s,
//! the [`FleetView`] it compares devices in, and its persisted [`CorrelatorState`].

use std::collections::BTreeMap;

use common::DeviceId;
use serde::{Deserialize, Serialize};

use crate::alerts::alert::{Alert, DeviceInfo};

/// Version of [`CorrelatorState`].
pub const STATE_VERSION: u32 = 1;

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
    pub(super) fn join(&mut self, alert: &FiringAlert, now_ms: i64) -> bool {
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

/// A time in a probable cause: RFC 3339 UTC to the second (`2026-12-07T09:57:04Z`), which a
/// person reads and the web view shows in the viewer's own zone.
pub fn utc(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => t
            .round(jiff::Unit::Second)
            .unwrap_or(t)
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string(),
        Err(_) => format!("{ms} ms"),
    }
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

/// What the correlator remembers of a firing alert, its site from the fleet view when known.
pub(super) fn firing_alert(a: &Alert, devices: &FleetView) -> FiringAlert {
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
