//! The alerts actor's store access: the alert engine's and the correlator's exports, written
//! together after every change batch, and the maintenance windows added through the API,
//! read back at start.
//!
//! [`AlertStore`] is the seam: the sled store keeps them as JSON values of its `alerts` tree
//! ([`FleetStore`], below); the PostgreSQL one ([`super::pg`]) keeps the exports in the tables
//! people and Grafana read (`alerts`, `alert_pairs`, `silences`, `incidents`) and the windows
//! in `server_state`.
//!
//! A store that several fleet-server instances share ([`AlertStore::shared`]: PostgreSQL)
//! also answers for one device ([`AlertStore::load_device`]) and decides which instance's
//! alert of a (rule, device) is the open one ([`AlertStore::claim`]); sled is one instance's
//! alone and keeps the defaults, which change nothing.

use common::DeviceId;

use super::alert::Alert;
use super::engine::{DeviceAlerts, EngineState};
use super::maintenance::AddedWindow;
use crate::incidents::incident::CorrelatorState;
use crate::store::{FleetStore, StoreError};

/// Keys of the persisted exports in the sled store's `alerts` tree.
pub const ENGINE_KEY: &str = "engine";
pub const CORRELATOR_KEY: &str = "correlator";
/// Key of the maintenance windows added through the API.
pub const MAINTENANCE_KEY: &str = "maintenance";

/// What the store holds of the alerts actor's state; a part that is missing or does not
/// decode is None (and logged).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SavedAlerts {
    pub engine: Option<EngineState>,
    pub correlator: Option<CorrelatorState>,
    /// The maintenance windows added through the API (not those of the config).
    pub windows: Option<Vec<AddedWindow>>,
}

/// Who holds the open alert of a (rule, device), as the shared store decided it.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// This instance's alert is the open one: this instance notifies it.
    Won,
    /// Another instance's alert (the stored one) is open: adopt it, notify nothing.
    Lost(Box<Alert>),
    /// Nothing is open, but the store holds this generation of the pair already (alerts
    /// opened and closed elsewhere meanwhile): the alert takes a later one and claims again.
    Stale { generation: u64 },
}

/// What a correlator takes from a shared store every couple of seconds
/// (`crate::incidents::adopt`).
#[derive(Debug, Clone, Default)]
pub struct SharedIncidents {
    /// The highest sequence number in a stored incident's id (`site_outage-7`: 7): incidents
    /// are numbered above it, so an instance that starts correlating (a new presence judge)
    /// does not reuse another's id.
    pub seq_max: u64,
    /// The site outages open in the store.
    pub open_site_outages: Vec<crate::incidents::incident::Incident>,
}

/// What the fleet-wide correlator reads from a shared store every second
/// (`crate::incidents::fleet`).
#[derive(Debug, Clone, Default)]
pub struct FleetAlerts {
    /// Every alert firing, whichever instance fired it.
    pub firing: Vec<Alert>,
    /// The open incidents (of every kind: the correlator keeps those of its own).
    pub open: Vec<crate::incidents::incident::Incident>,
    /// As [`SharedIncidents::seq_max`].
    pub seq_max: u64,
}

/// An acknowledgement or a resolve by hand made in a shared store: the alert as it is now, or
/// why not (the engine's own errors: unknown, not active, not firing, acknowledged already).
pub type HandOutcome = Result<Alert, super::engine::AlertError>;

/// The alerts actor's state (module docs). Every method blocks: off actor threads.
pub trait AlertStore: Send + Sync {
    /// Other instances share this store: the alerts actor loads each device's alerts before
    /// it first evaluates it, and claims every alert it opens before notifying it.
    fn shared(&self) -> bool {
        false
    }

    /// The device's open alerts and pair bookkeeping as the store holds them now.
    fn load_device(&self, _device: &DeviceId) -> Result<DeviceAlerts, StoreError> {
        Ok(DeviceAlerts::default())
    }

    /// Records `alert` (just opened by this instance) as the open alert of its (rule,
    /// device) unless another is open there already ([`Claim`]).
    fn claim(&self, _alert: &Alert) -> Result<Claim, StoreError> {
        Ok(Claim::Won)
    }

    /// What other instances' correlators stored ([`SharedIncidents`]).
    fn shared_incidents(&self) -> Result<SharedIncidents, StoreError> {
        Ok(SharedIncidents::default())
    }

    /// Every instance's firing alerts and the open incidents ([`FleetAlerts`]).
    fn fleet_alerts(&self) -> Result<FleetAlerts, StoreError> {
        Ok(FleetAlerts::default())
    }

    /// Writes the fleet-wide correlator's incidents (their latest state) in one transaction
    /// fenced by `token` (`crate::cluster::fence`): refused with `RVML1` once the lease is
    /// no longer this holder's at this epoch.
    fn write_incidents(
        &self,
        _token: &crate::cluster::lease::LeaseToken,
        _incidents: &[crate::incidents::incident::Incident],
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Every instance's open alerts and the latest resolved ones (up to the engine's history
    /// cap): what the API lists when the store is shared.
    fn stored_alerts(&self) -> Result<Vec<Alert>, StoreError> {
        Ok(Vec::new())
    }

    /// Every instance's open incidents and the latest closed ones (up to the correlator's
    /// cap): what `GET /api/v1/incidents` lists when the store is shared.
    fn stored_incidents(&self) -> Result<Vec<crate::incidents::incident::Incident>, StoreError> {
        Ok(Vec::new())
    }

    /// Acknowledges an open alert in the store (one another instance evaluates); the
    /// instance that holds it takes the acknowledgement in from there.
    fn ack_stored(
        &self,
        id: &str,
        _who: &str,
        _comment: &str,
        _now_ms: i64,
    ) -> Result<HandOutcome, StoreError> {
        Ok(Err(super::engine::AlertError::UnknownAlert(id.to_string())))
    }

    /// Resolves a firing alert by hand in the store (as [`Self::ack_stored`]).
    fn resolve_stored(
        &self,
        id: &str,
        _who: &str,
        _comment: &str,
        _now_ms: i64,
    ) -> Result<HandOutcome, StoreError> {
        Ok(Err(super::engine::AlertError::UnknownAlert(id.to_string())))
    }

    /// Those of the alerts `ids` (open in this instance's engine) that the store holds
    /// acknowledged, or resolved by hand: done on another instance.
    fn handled_elsewhere(&self, _ids: &[String]) -> Result<Vec<Alert>, StoreError> {
        Ok(Vec::new())
    }

    fn load(&self) -> Result<SavedAlerts, StoreError>;

    /// Writes both exports, durably, as one change.
    fn save(&self, engine: &EngineState, correlator: &CorrelatorState) -> Result<(), StoreError>;

    /// Writes the whole list of maintenance windows added through the API, durably.
    fn save_windows(&self, windows: &[AddedWindow]) -> Result<(), StoreError>;
}

impl FleetStore {
    /// A value of the alerts tree (the engine's and correlator's exports).
    pub fn alert_state(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.alerts
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| self.err(e))
    }

    /// Writes the alerts tree values atomically, then flushes (blocking: off actor threads).
    pub fn save_alert_state(&self, entries: &[(&str, Vec<u8>)]) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for (k, v) in entries {
            b.insert(k.as_bytes(), v.as_slice());
        }
        self.alerts.apply_batch(b).map_err(|e| self.err(e))?;
        self.flush()
    }
}

impl AlertStore for FleetStore {
    fn load(&self) -> Result<SavedAlerts, StoreError> {
        let engine = self.alert_state(ENGINE_KEY)?.and_then(|bytes| {
            serde_json::from_slice::<EngineState>(&bytes)
                .map_err(|e| tracing::error!(error = %e, "persisted alert engine state ignored"))
                .ok()
        });
        let correlator = self.alert_state(CORRELATOR_KEY)?.and_then(|bytes| {
            serde_json::from_slice::<CorrelatorState>(&bytes)
                .map_err(|e| tracing::error!(error = %e, "persisted correlator state ignored"))
                .ok()
        });
        let windows = self.alert_state(MAINTENANCE_KEY)?.and_then(|bytes| {
            serde_json::from_slice::<Vec<AddedWindow>>(&bytes)
                .map_err(|e| tracing::error!(error = %e, "persisted maintenance windows ignored"))
                .ok()
        });
        Ok(SavedAlerts {
            engine,
            correlator,
            windows,
        })
    }

    fn save(&self, engine: &EngineState, correlator: &CorrelatorState) -> Result<(), StoreError> {
        let e = serde_json::to_vec(engine).map_err(|e| StoreError::Encode(e.to_string()))?;
        let c = serde_json::to_vec(correlator).map_err(|e| StoreError::Encode(e.to_string()))?;
        self.save_alert_state(&[(ENGINE_KEY, e), (CORRELATOR_KEY, c)])
    }

    fn save_windows(&self, windows: &[AddedWindow]) -> Result<(), StoreError> {
        let w = serde_json::to_vec(windows).map_err(|e| StoreError::Encode(e.to_string()))?;
        self.save_alert_state(&[(MAINTENANCE_KEY, w)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_state_is_written_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = FleetStore::open(dir.path()).unwrap();
        assert_eq!(s.alert_state("engine").unwrap(), None);
        s.save_alert_state(&[("engine", b"{}".to_vec()), ("correlator", b"[]".to_vec())])
            .unwrap();
        assert_eq!(s.alert_state("correlator").unwrap(), Some(b"[]".to_vec()));
    }

    #[test]
    fn an_export_that_does_not_decode_loads_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let s = FleetStore::open(dir.path()).unwrap();
        assert_eq!(s.load().unwrap(), SavedAlerts::default());
        s.save_alert_state(&[(ENGINE_KEY, b"{not json".to_vec())])
            .unwrap();
        assert_eq!(s.load().unwrap().engine, None);
    }
}
