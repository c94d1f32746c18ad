//! The alerts actor's store access: the engine's and correlator's exports in the `alerts`
//! tree, written together and flushed.

use crate::store::{FleetStore, StoreError};

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
}
