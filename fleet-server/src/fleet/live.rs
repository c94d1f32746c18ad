//! What changed in the fleet since the last tick, for the live view (pure): the fleet actor
//! keeps one [`SummaryDiff`] and publishes [`SummaryDiff::changed`] as one
//! [`LiveEvent::Devices`](crate::live::event::LiveEvent::Devices) batch per tick.

use std::collections::HashMap;

use common::{DeviceId, HealthStatus};

use super::state::{DeviceEntry, FleetState, Presence};
use crate::live::event::Changed;

/// What was last sent of one device.
#[derive(Debug, Clone, PartialEq)]
struct Sent {
    status: Presence,
    health: Option<HealthStatus>,
    telemetry_ts: Option<i64>,
    boot_id: Option<String>,
    /// Only while online or degraded (see the module invariants).
    reason: Option<String>,
}

impl Sent {
    fn matches(&self, e: &DeviceEntry, status: Presence, reason: &str) -> bool {
        self.status == status
            && self.health == e.health.as_ref().map(|h| h.status)
            && self.telemetry_ts == e.telemetry_ts()
            && self.boot_id.as_deref() == e.birth.as_ref().map(|b| b.boot_id.as_str())
            && self.reason.as_deref() == reason_kept(status, reason)
    }

    fn of(e: &DeviceEntry, status: Presence, reason: &str) -> Sent {
        Sent {
            status,
            health: e.health.as_ref().map(|h| h.status),
            telemetry_ts: e.telemetry_ts(),
            boot_id: e.birth.as_ref().map(|b| b.boot_id.clone()),
            reason: reason_kept(status, reason).map(str::to_string),
        }
    }
}

fn reason_kept(status: Presence, reason: &str) -> Option<&str> {
    matches!(status, Presence::Online | Presence::Degraded).then_some(reason)
}

/// Which device summaries changed since the last call (pure: takes the state and `now`).
#[derive(Debug, Default)]
pub struct SummaryDiff {
    sent: HashMap<DeviceId, Sent>,
}

impl SummaryDiff {
    /// The devices that changed, each once. With `build = false` it only remembers the
    /// current state (nobody listens: no summaries are made).
    pub fn changed(&mut self, state: &FleetState, now_ms: i64, build: bool) -> Vec<Changed> {
        let mut out = Vec::new();
        for (id, e) in &state.devices {
            let (status, reason) = state.presence(e, now_ms);
            let prev = self.sent.get(id);
            if prev.is_some_and(|s| s.matches(e, status, &reason)) {
                continue;
            }
            let meta_changed =
                prev.is_none_or(|s| s.boot_id.as_deref() != e.birth.as_ref().map(|b| b.boot_id.as_str()));
            self.sent.insert(id.clone(), Sent::of(e, status, &reason));
            if build {
                out.push(Changed {
                    summary: state.summary(id, e, now_ms),
                    meta_changed,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use common::{Birth, DeviceState, Envelope, LastWill, Telemetry};

    use super::*;
    use crate::fleet::state::PresencePolicy;
    use crate::live::event::LiveEvent;

    fn id(s: &str) -> DeviceId {
        DeviceId::new(s).unwrap()
    }

    fn build_state() -> FleetState {
        FleetState::new(PresencePolicy {
            stale_after_ms: 1_000,
            offline_after_ms: 3_000,
        })
    }

    fn tel(dev: &str, seq: u64, ts: i64) -> Envelope<Telemetry> {
        Envelope::new(id(dev), seq, ts, Telemetry::default())
    }

    fn birth(dev: &str) -> Envelope<DeviceState> {
        Envelope::new(
            id(dev),
            0,
            0,
            DeviceState::Online(Birth {
                boot_id: "b1".into(),
                ..Default::default()
            }),
        )
    }

    fn ids(v: &[Changed]) -> Vec<String> {
        v.iter().map(|c| c.summary.id.to_string()).collect()
    }

    #[test]
    fn every_device_is_sent_once_then_only_when_it_changes() {
        let mut s = build_state();
        let mut d = SummaryDiff::default();
        s.apply_telemetry(tel("a", 1, 0), 0);
        s.apply_telemetry(tel("b", 1, 0), 0);
        assert_eq!(ids(&d.changed(&s, 10, true)), ["a", "b"]);
        assert!(d.changed(&s, 20, true).is_empty(), "nothing new");
        s.apply_telemetry(tel("b", 2, 500), 500);
        assert_eq!(ids(&d.changed(&s, 600, true)), ["b"]);
    }

    #[test]
    fn silence_is_sent_when_the_status_changes_not_every_second() {
        let mut s = build_state();
        let mut d = SummaryDiff::default();
        s.apply_telemetry(tel("a", 1, 0), 0);
        d.changed(&s, 0, true);
        let stale = d.changed(&s, 1_500, true);
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].summary.status, Presence::Stale);
        // "no data for 2 s" differs from "no data for 1 s" but is not news
        assert!(d.changed(&s, 2_500, true).is_empty());
        let off = d.changed(&s, 3_100, true);
        assert_eq!(off[0].summary.status, Presence::Offline);
    }

    #[test]
    fn a_goodbye_is_sent_at_the_next_tick() {
        let mut s = build_state();
        let mut d = SummaryDiff::default();
        s.apply_state(birth("a"), 0);
        s.apply_telemetry(tel("a", 1, 0), 0);
        d.changed(&s, 0, true);
        s.apply_state(
            Envelope::new(
                id("a"),
                0,
                0,
                DeviceState::Offline(LastWill {
                    boot_id: "b1".into(),
                    reason: "shutdown".into(),
                }),
            ),
            100,
        );
        let v = d.changed(&s, 200, true);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].summary.status, Presence::Offline);
        assert_eq!(v[0].summary.status_reason, "offline: shutdown");
        assert!(!v[0].meta_changed, "the same boot");
    }

    #[test]
    fn a_batch_names_metrics_once_and_sends_metadata_only_when_it_changed() {
        let mut s = build_state();
        let mut d = SummaryDiff::default();
        s.apply_state(birth("a"), 0);
        s.apply_telemetry(tel("a", 1, 0), 0);
        s.apply_telemetry(tel("b", 1, 0), 0);
        let first = d.changed(&s, 0, true);
        assert!(first.iter().all(|c| c.meta_changed), "first sight");
        let ev = LiveEvent::devices(first);
        let LiveEvent::Devices { names, devices } = &ev else {
            panic!("{ev:?}")
        };
        assert!(names.contains(&"cpu.usage_pct".to_string()));
        assert!(devices.iter().all(|c| c.m.len() == names.len()));
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["type"], "devices");
        assert!(json["devices"][0]["meta"].is_object());
        s.apply_telemetry(tel("a", 2, 500), 500);
        let next = d.changed(&s, 600, true);
        assert!(!next[0].meta_changed);
        let json = serde_json::to_value(LiveEvent::devices(next)).unwrap();
        assert!(json["devices"][0].get("meta").is_none(), "{json}");
    }

    #[test]
    fn without_listeners_nothing_is_built_but_the_state_is_remembered() {
        let mut s = build_state();
        let mut d = SummaryDiff::default();
        s.apply_telemetry(tel("a", 1, 0), 0);
        assert!(d.changed(&s, 0, false).is_empty());
        assert!(d.changed(&s, 10, true).is_empty(), "already remembered");
    }
}
