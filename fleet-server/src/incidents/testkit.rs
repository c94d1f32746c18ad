//! Test helpers of the correlator's detectors: the shipped rules' engine, devices, and a
//! harness that drives engine and correlator the way the alerts actor does.

use common::DeviceId;

use super::Correlator;
use super::config::CorrelatorConfig;
use super::incident::{FleetView, Incident, IncidentChange, IncidentChangeKind};
use crate::alerts::alert::{DeviceInfo, Transition};
use crate::alerts::engine::AlertEngine;
use crate::alerts::rules::parse_rules;

pub(super) const S: i64 = 1000;

/// The shipped rules, so scenarios use the real rule names and `for` values.
pub(super) fn build_engine() -> AlertEngine {
    AlertEngine::new(
        parse_rules(include_str!("../../../config/rules.toml"))
            .unwrap()
            .rules,
    )
}

pub(super) fn build_device(id: &str, site: &str, attrs: &[(&str, &str)]) -> DeviceInfo {
    let mut d = DeviceInfo::new(DeviceId::new(id).unwrap());
    d.site = Some(site.into());
    d.attrs = attrs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
    d
}

pub(super) fn build_site(site: &str, n: usize) -> Vec<DeviceInfo> {
    (0..n)
        .map(|i| build_device(&format!("{site}{i}"), site, &[]))
        .collect()
}

pub(super) fn m(pairs: &[(&str, f64)]) -> Vec<(String, f64)> {
    pairs.iter().map(|(k, v)| ((*k).into(), *v)).collect()
}

/// Engine + correlator + fleet, driven the way the actor drives them.
pub(super) struct Harness {
    pub(super) engine: AlertEngine,
    pub(super) corr: Correlator,
    pub(super) fleet: FleetView,
    pub(super) changes: Vec<IncidentChange>,
}

impl Harness {
    pub(super) fn build(devices: Vec<DeviceInfo>) -> Self {
        Harness {
            engine: build_engine(),
            corr: Correlator::new(CorrelatorConfig::default()),
            fleet: FleetView::new(devices),
            changes: Vec::new(),
        }
    }

    pub(super) fn feed(&mut self, id: &str, metrics: &[(&str, f64)], now_ms: i64) -> Vec<Transition> {
        let d = self.fleet.get(&DeviceId::new(id).unwrap()).cloned().unwrap();
        let metrics = m(metrics);
        let t = self.engine.observe(&d, &metrics, now_ms);
        self.changes.extend(self.corr.on_metrics(&d, &metrics, now_ms));
        self.changes
            .extend(self.corr.on_transitions(&t, &self.fleet, now_ms));
        t
    }

    pub(super) fn tick(&mut self, now_ms: i64) {
        let t = self.engine.tick(now_ms);
        self.corr.tick(now_ms);
        self.changes
            .extend(self.corr.on_transitions(&t, &self.fleet, now_ms));
    }

    pub(super) fn opened(&self) -> Vec<&Incident> {
        self.changes
            .iter()
            .filter(|c| c.kind == IncidentChangeKind::Opened)
            .map(|c| &c.incident)
            .collect()
    }
}
