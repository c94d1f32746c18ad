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

/// The device of an alert id (`{rule}:{device}:{generation}`, see
/// [`crate::alerts::alert::Alert::id`]); a device id has no `:`.
pub fn alert_device(alert_id: &str) -> Option<&str> {
    let mut parts = alert_id.rsplitn(3, ':');
    let _generation = parts.next()?;
    let device = parts.next()?;
    parts.next()?;
    Some(device)
}

impl Incident {
    /// The part of this incident a token limited to some machines may see (`keep` says which
    /// devices are in its scope): None when it touches none of them; else only those devices
    /// and their alerts. When machines were left out, the title and cause (which count and
    /// name them) are replaced, and the site is dropped unless `keep_site` says it is in scope.
    pub fn restricted(
        &self,
        keep: impl Fn(&str) -> bool,
        keep_site: impl Fn(&str) -> bool,
    ) -> Option<Incident> {
        if !self.devices.iter().any(|d| keep(d.as_str())) {
            return None;
        }
        if self.devices.iter().all(|d| keep(d.as_str())) && self.site.as_deref().is_none_or(&keep_site) {
            return Some(self.clone());
        }
        let alert_kept = |id: &String| alert_device(id).is_some_and(&keep);
        let mut v = self.clone();
        v.devices.retain(|d| keep(d.as_str()));
        v.members.retain(alert_kept);
        v.active_members.retain(alert_kept);
        v.site = v.site.filter(|s| keep_site(s));
        v.title = format!("{} (in part outside this token's scope)", self.kind.as_str());
        v.probable_cause = format!(
            "{} of this incident's machines are in this token's scope; the rest is not shown",
            v.devices.len()
        );
        Some(v)
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn build_incident() -> Incident {
        let d = |s: &str| DeviceId::new(s).unwrap();
        Incident {
            id: "site_outage-1".into(),
            kind: IncidentKind::SiteOutage,
            title: "oslo-1: 2 of 2 machines offline".into(),
            probable_cause: "a1 and b1 stopped reporting".into(),
            site: Some("oslo-1".into()),
            attribute: None,
            attribute_value: None,
            rule: None,
            metric: None,
            devices: vec![d("a1"), d("b1")],
            members: vec!["device_offline:a1:1".into(), "device_offline:b1:3".into()],
            active_members: vec!["device_offline:b1:3".into()],
            suppresses_members: true,
            opened_ms: 1,
            updated_ms: 2,
            resolved_ms: None,
            state: IncidentState::Open,
        }
    }

    #[test]
    fn an_incident_is_cut_to_the_machines_in_scope_and_hidden_when_none_is() {
        let i = build_incident();
        assert_eq!(alert_device("device_offline:a1:1"), Some("a1"));
        assert_eq!(alert_device("nocolon"), None);
        assert_eq!(
            i.restricted(|_| true, |_| true),
            Some(i.clone()),
            "all in scope: whole"
        );
        assert_eq!(i.restricted(|d| d == "zz", |_| true), None);
        let cut = i.restricted(|d| d == "a1", |_| false).unwrap();
        assert_eq!(cut.devices, vec![DeviceId::new("a1").unwrap()]);
        assert_eq!(cut.members, vec!["device_offline:a1:1".to_string()]);
        assert!(cut.active_members.is_empty());
        assert_eq!(cut.site, None);
        assert!(!cut.title.contains("2 of 2") && !cut.probable_cause.contains("b1"));
    }
}
