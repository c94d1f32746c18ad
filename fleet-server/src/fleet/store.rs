//! The fleet actor's store access: each device's presence as the server decided it (status,
//! reason, since when, last seen), for people and Grafana (`fleet_devices`).
//!
//! [`PresenceStore`] is the seam. The sled store keeps no presence ([`NotStored`]: the fleet
//! actor recomputes it from records after a restart, as it always has); the PostgreSQL one
//! ([`super::pg`]) upserts the `presence` table from a writer task. [`PresenceLog`] (pure)
//! decides what to write at each tick: a device whose status changed, and every
//! [`SEEN_EVERY_MS`] a device whose last record is newer than what was written.

use std::collections::HashMap;

use common::DeviceId;

use super::state::{FleetState, Presence};
use crate::store::StoreError;

/// `last_seen` of a device that keeps reporting is written this often at most.
pub const SEEN_EVERY_MS: i64 = 30_000;

/// One device's presence.
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceRow {
    pub device: DeviceId,
    pub status: Presence,
    pub reason: String,
    pub since_ms: i64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
}

/// Where presence goes (module docs).
pub trait PresenceStore: Send + Sync {
    /// Never blocks: it is called on the fleet actor's thread.
    fn record(&self, rows: Vec<PresenceRow>);

    /// Every device's presence as last recorded (blocking: tools).
    fn load(&self) -> Result<Vec<PresenceRow>, StoreError>;
}

/// The sled backend: presence is not stored.
pub struct NotStored;

impl PresenceStore for NotStored {
    fn record(&self, _: Vec<PresenceRow>) {}

    fn load(&self) -> Result<Vec<PresenceRow>, StoreError> {
        Ok(Vec::new())
    }
}

#[derive(Debug, Clone, Copy)]
struct Written {
    status: Presence,
    since_ms: i64,
    last_seen_ms: i64,
    at_ms: i64,
}

/// What was written of each device, to write only what changed (pure).
#[derive(Debug, Default)]
pub struct PresenceLog {
    written: HashMap<DeviceId, Written>,
}

impl PresenceLog {
    /// The rows to write at `now_ms` (module docs).
    pub fn changes(&mut self, state: &FleetState, now_ms: i64) -> Vec<PresenceRow> {
        let mut out = Vec::new();
        for (id, e) in &state.devices {
            let (status, reason) = state.presence(e, now_ms);
            let prev = self.written.get(id).copied();
            let changed = prev.is_none_or(|w| w.status != status);
            let seen =
                prev.is_some_and(|w| e.last_seen_ms > w.last_seen_ms && now_ms - w.at_ms >= SEEN_EVERY_MS);
            if !changed && !seen {
                continue;
            }
            let since_ms = match prev {
                Some(w) if !changed => w.since_ms,
                _ => match status {
                    Presence::Offline => e.offline_since_ms.unwrap_or(now_ms),
                    _ => now_ms,
                },
            };
            self.written.insert(
                id.clone(),
                Written {
                    status,
                    since_ms,
                    last_seen_ms: e.last_seen_ms,
                    at_ms: now_ms,
                },
            );
            out.push(PresenceRow {
                device: id.clone(),
                status,
                reason,
                since_ms,
                first_seen_ms: e.first_seen_ms,
                last_seen_ms: e.last_seen_ms,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::state::{DeviceEntry, PresencePolicy};

    fn build_state(last_seen_ms: i64) -> FleetState {
        let mut s = FleetState::new(PresencePolicy::default());
        s.devices.insert(
            DeviceId::new("rvm1").unwrap(),
            DeviceEntry {
                first_seen_ms: 1_000,
                last_seen_ms,
                ..Default::default()
            },
        );
        s
    }

    #[test]
    fn a_status_change_is_written_at_once_and_last_seen_at_most_every_interval() {
        let mut log = PresenceLog::default();
        let rows = log.changes(&build_state(10_000), 10_000);
        assert_eq!(rows.len(), 1, "first sight");
        assert_eq!((rows[0].status, rows[0].since_ms), (Presence::Online, 10_000));
        assert!(log.changes(&build_state(11_000), 11_000).is_empty(), "too soon");
        let rows = log.changes(&build_state(40_000), 40_000);
        assert_eq!(rows.len(), 1, "last seen, 30 s later");
        assert_eq!((rows[0].last_seen_ms, rows[0].since_ms), (40_000, 10_000));
        // silent for 20 s: stale, written at once, since now
        let rows = log.changes(&build_state(40_000), 60_000);
        assert_eq!((rows[0].status, rows[0].since_ms), (Presence::Stale, 60_000));
        assert!(
            log.changes(&build_state(40_000), 95_000).is_empty(),
            "still stale, nothing new"
        );
    }
}
