//! The fleet-wide view (several instances on PostgreSQL, docs/architecture.md "Several
//! instances"): what other instances stored about the machines they serve, folded into this
//! instance's [`FleetState`] so that its API, web view and live stream show the whole fleet,
//! and its presence judgement knows when a machine was last seen *anywhere*.
//!
//! Pure: [`apply_remote`] takes one row read from the store ([`super::mirror_pg`] reads the
//! rows changed since a watermark, every [`MIRROR_EVERY`]). A row is a fact about the past,
//! so applying it never moves anything backwards: `last_seen` only grows, metrics are replaced
//! only by newer telemetry, and a machine this instance received a record from since is left
//! as this instance sees it (its own records are fresher than the store's copy).
//!
//! A machine served elsewhere gets no alert inputs here ([`super::actor`]): the instance that
//! holds its session evaluates it. Only the presence leader judges its `presence.offline`.

use std::time::Duration;

use actix::Message;
use common::{Birth, DeviceId};

use super::state::FleetState;

/// How often the fleet-wide view reads what changed: with the fleet actor's 1 s tick, a
/// change stored by another instance reaches this instance's live stream within about
/// `MIRROR_EVERY + PRESENCE_TICK` (+ the query's time) after its commit.
pub const MIRROR_EVERY: Duration = Duration::from_secs(1);
/// Rows are read from `watermark - MIRROR_OVERLAP` on: `updated_at` is stamped by each
/// instance's clock before its transaction commits, so a row can become visible with an
/// `updated_at` older than rows read already. Re-reading a row is harmless (see above).
pub const MIRROR_OVERLAP: Duration = Duration::from_secs(5);

/// The latest stored telemetry of a machine.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteTelemetry {
    /// Device time.
    pub ts_ms: i64,
    pub seq: u64,
    pub metrics: Vec<(String, f64)>,
}

/// One machine as the store has it (module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteDevice {
    pub id: DeviceId,
    /// When an instance last stored a record of it (`delivery.updated_at`, stamped by that
    /// instance's clock).
    pub seen_ms: i64,
    /// The instance that holds (or last held) its session (`session_owners`).
    pub owner: Option<String>,
    /// Its last birth, when it changed since the watermark.
    pub birth: Option<Birth>,
    pub telemetry: Option<RemoteTelemetry>,
}

/// Rows read from the store by the fleet-wide view, for the fleet actor.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct Mirrored(pub Vec<RemoteDevice>);

/// Folds one row into `state`; `me` is this instance's id. Returns whether the row was applied
/// (false: the machine is served here, and this instance's own view of it stands).
pub fn apply_remote(state: &mut FleetState, me: &str, r: RemoteDevice) -> bool {
    let served_here = r.owner.as_deref().is_none_or(|o| o == me);
    let names = &mut state.names;
    let e = state.devices.entry(r.id).or_default();
    // a record received here at or after the store's last one: this view is fresher
    let fresher_here = e.served_by.is_none() && e.last_seen_ms >= r.seen_ms;
    if served_here && fresher_here {
        return false;
    }
    if e.first_seen_ms == 0 {
        e.first_seen_ms = r.seen_ms;
    }
    if r.seen_ms > e.last_seen_ms {
        e.last_seen_ms = r.seen_ms;
        // stored after its goodbye here: it came back (elsewhere)
        if e.offline_since_ms.is_some_and(|t| t < r.seen_ms) {
            e.offline_reason = None;
            e.offline_since_ms = None;
        }
    }
    e.served_by = if served_here { None } else { r.owner };
    if let Some(b) = r.birth
        && (!served_here || e.birth.as_ref().is_none_or(|old| old.boot_id != b.boot_id))
    {
        e.birth = Some(b);
    }
    if let Some(t) = r.telemetry
        && e.telemetry_ts().is_none_or(|ts| t.ts_ms > ts)
    {
        e.metrics = t.metrics.into_iter().map(|(n, v)| (names.get(&n), v)).collect();
        e.remote_ts_ms = Some(t.ts_ms);
    }
    true
}

#[cfg(test)]
mod tests {
    use common::{DeviceState, Envelope, LastWill, Telemetry};

    use super::*;
    use crate::fleet::state::{Presence, PresencePolicy};

    fn id(s: &str) -> DeviceId {
        DeviceId::new(s).unwrap()
    }

    fn build_state() -> FleetState {
        FleetState::new(PresencePolicy {
            stale_after_ms: 1_000,
            offline_after_ms: 3_000,
        })
    }

    fn row(dev: &str, seen_ms: i64, owner: &str, ts_ms: i64, cpu: f64) -> RemoteDevice {
        RemoteDevice {
            id: id(dev),
            seen_ms,
            owner: Some(owner.into()),
            birth: Some(Birth {
                boot_id: "b1".into(),
                site: Some("oslo".into()),
                ..Default::default()
            }),
            telemetry: Some(RemoteTelemetry {
                ts_ms,
                seq: 1,
                metrics: vec![("cpu.usage_pct".into(), cpu)],
            }),
        }
    }

    #[test]
    fn a_machine_served_elsewhere_shows_its_stored_state_and_presence() {
        let mut s = build_state();
        assert!(apply_remote(&mut s, "a", row("m1", 10_000, "b", 9_900, 42.0)));
        let e = &s.devices[&id("m1")];
        assert_eq!(e.served_by.as_deref(), Some("b"));
        assert_eq!(e.telemetry_ts(), Some(9_900));
        let sum = s.summary(&id("m1"), e, 10_500);
        assert_eq!(sum.status, Presence::Online);
        assert_eq!(sum.site.as_deref(), Some("oslo"));
        assert_eq!(sum.metrics["cpu.usage_pct"], 42.0);
        // silent everywhere for the offline timeout: offline here too
        assert_eq!(s.presence(e, 13_000).0, Presence::Offline);
    }

    #[test]
    fn an_older_row_moves_nothing_backwards() {
        let mut s = build_state();
        apply_remote(&mut s, "a", row("m1", 10_000, "b", 9_900, 42.0));
        apply_remote(&mut s, "a", row("m1", 8_000, "b", 7_900, 1.0));
        let e = &s.devices[&id("m1")];
        assert_eq!((e.last_seen_ms, e.telemetry_ts()), (10_000, Some(9_900)));
        assert_eq!(
            crate::fleet::state::owned_metrics(&e.metrics),
            vec![("cpu.usage_pct".to_string(), 42.0)]
        );
    }

    #[test]
    fn a_machine_served_here_keeps_this_instances_view_and_a_local_record_takes_it_back() {
        let mut s = build_state();
        s.apply_telemetry(Envelope::new(id("m1"), 5, 11_000, Telemetry::default()), 11_000);
        assert!(!apply_remote(&mut s, "a", row("m1", 10_000, "a", 9_900, 42.0)));
        assert_eq!(s.devices[&id("m1")].last_seen_ms, 11_000);
        // it moved to b, which stored a newer record
        assert!(apply_remote(&mut s, "a", row("m1", 12_000, "b", 11_900, 42.0)));
        assert_eq!(s.devices[&id("m1")].served_by.as_deref(), Some("b"));
        // and back here
        s.apply_telemetry(Envelope::new(id("m1"), 9, 13_000, Telemetry::default()), 13_000);
        assert_eq!(s.devices[&id("m1")].served_by, None);
    }

    #[test]
    fn a_goodbye_here_then_records_elsewhere_is_online_again() {
        let mut s = build_state();
        s.apply_state(
            Envelope::new(
                id("m1"),
                0,
                0,
                DeviceState::Offline(LastWill {
                    boot_id: "b1".into(),
                    reason: "connection lost".into(),
                }),
            ),
            10_000,
        );
        assert_eq!(s.presence(&s.devices[&id("m1")], 10_100).0, Presence::Offline);
        apply_remote(&mut s, "a", row("m1", 10_600, "b", 10_500, 1.0));
        assert_eq!(s.presence(&s.devices[&id("m1")], 10_700).0, Presence::Online);
    }
}
