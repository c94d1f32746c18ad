//! The fleet-wide correlator as the `correlator` leader holds it (several instances on one
//! PostgreSQL): the machines it compares, the correlator while this instance leads, and the
//! changes not yet written. The alerts actor drives it (`crate::alerts::fleetcorr`: the reads,
//! the fenced writes, the notifications); here is what it keeps and when it must start over.

use std::collections::BTreeMap;

use common::DeviceId;

use super::Correlator;
use super::config::CorrelatorConfig;
use super::incident::{FleetView, Incident, IncidentChange};
use crate::alerts::alert::DeviceInfo;
use crate::cluster::leader::{CORRELATOR, Leadership, Role};
use crate::cluster::lease::LeaseToken;

/// What the alerts actor keeps for the fleet-wide correlation (module docs).
pub struct FleetCorrelation {
    pub(crate) leadership: Leadership,
    pub(crate) config: CorrelatorConfig,
    /// The correlator and the lease epoch it started under, while this instance leads.
    pub(crate) led: Option<(i64, Correlator)>,
    /// Every machine's info, from its observations here or elsewhere.
    devices: BTreeMap<DeviceId, DeviceInfo>,
    view: FleetView,
    view_dirty: bool,
    pub(crate) reading: bool,
    pub(crate) writing: bool,
    /// Changes made and not yet written (module docs), in order.
    pub(crate) unwritten: Vec<IncidentChange>,
}

impl FleetCorrelation {
    pub fn new(leadership: Leadership, config: CorrelatorConfig) -> FleetCorrelation {
        FleetCorrelation {
            leadership,
            config,
            led: None,
            devices: BTreeMap::new(),
            view: FleetView::default(),
            view_dirty: false,
            reading: false,
            writing: false,
            unwritten: Vec::new(),
        }
    }

    /// The open incidents of the fleet-wide correlator while this instance leads.
    pub fn open(&self) -> Vec<Incident> {
        self.led.as_ref().map(|(_, c)| c.open()).unwrap_or_default()
    }

    /// A machine's samples, here or elsewhere: its info for the view, its metrics for the
    /// outlier and thermal detectors.
    pub fn on_metrics(&mut self, device: &DeviceInfo, metrics: &[(String, f64)], at_ms: i64) {
        if self.devices.get(&device.id) != Some(device) {
            self.devices.insert(device.id.clone(), device.clone());
            self.view_dirty = true;
        }
        if let Some((_, c)) = self.led.as_mut() {
            let changes = c.on_metrics(device, metrics, at_ms);
            self.unwritten.extend(changes);
        }
    }

    pub(crate) fn view(&mut self) -> FleetView {
        if self.view_dirty {
            self.view = FleetView::new(self.devices.values().cloned());
            self.view_dirty = false;
        }
        self.view.clone()
    }

    /// The token while this instance leads; otherwise drops what it led with.
    pub(crate) fn token(&mut self) -> Option<LeaseToken> {
        match self.leadership.role(CORRELATOR) {
            Role::Leader(Some(t)) => {
                if self.led.as_ref().is_some_and(|(epoch, _)| *epoch != t.epoch) {
                    // led, lost and led again: start over from the store
                    self.stop();
                }
                Some(t)
            }
            Role::Leader(None) | Role::Follower => {
                if self.led.is_some() {
                    tracing::info!("no longer correlating the fleet");
                    self.stop();
                }
                None
            }
        }
    }

    pub(crate) fn stop(&mut self) {
        self.led = None;
        self.unwritten.clear();
    }
}
