//! Live updates for the web view: what changed, serialised once, to every open page.
//!
//! Producers publish a [`LiveEvent`] on the [`LiveHub`]: the fleet actor a batch of changed
//! device summaries every [`crate::actors::fleet::PRESENCE_TICK`] (from [`SummaryDiff`]), the
//! alerts actor each transition, acknowledgement, silence change and incident change, the
//! commands module each command state change. The hub serialises an event once into a
//! [`LiveFrame`] (a whole Server-Sent Events frame) and broadcasts it; `GET /api/v1/stream`
//! ([`crate::http::live`]) writes the frames to each subscriber.
//!
//! Invariants:
//! - a device appears at most once in a [`LiveEvent::Devices`] batch and the fleet actor
//!   publishes one batch per tick (1 s): at most one update per device per second;
//! - a batch is compact (every machine of a large fleet may be in it each second): metric
//!   names once, each device's values as `f32` in their order, and the summary's metadata
//!   (site, tags, versions) only when it changed (first sight, a new boot);
//! - a device is sent when its status, health, latest telemetry, metadata or (while online or
//!   degraded) its status reason changed. The "no data for N s" reason of a stale or offline
//!   machine changes every second and is not news: the page computes it from `last_seen_ms`;
//! - a subscriber more than [`LIVE_CAPACITY`] frames behind misses frames: it is sent a
//!   [`LiveEvent::Resync`] and refetches what it shows;
//! - nothing is serialised while nobody listens.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{DeviceId, HealthStatus};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::alerts::Transition;
use crate::correlate::IncidentChange;
use crate::fleet::{DeviceEntry, DeviceSummary, FleetState, Presence};

/// Frames a subscriber may fall behind before it must resync.
pub const LIVE_CAPACITY: usize = 256;

/// One change, as the page receives it: JSON with a `type` field.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveEvent {
    /// The devices that changed since the previous batch (see [`LiveEvent::devices`]).
    Devices {
        /// Metric names; each device's `m` holds their values in this order.
        names: Vec<String>,
        devices: Vec<CompactDevice>,
    },
    /// An alert transition (pending, firing, resolved, escalated, cancelled, unsilenced).
    Alert(Transition),
    /// An alert was acknowledged: `alert` is the alert after it.
    Acknowledged { alert: crate::alerts::Alert },
    /// A silence was added or removed: refetch silences and alerts.
    Silences,
    /// An incident opened, gained a member, resolved or was withdrawn.
    Incident(IncidentChange),
    /// A command changed state; the value is what `GET /api/v1/commands/{id}` answers.
    Command { command: serde_json::Value },
    /// Frames were lost (the subscriber was too slow): refetch everything shown.
    Resync { missed: u64 },
}

/// One device of a [`LiveEvent::Devices`] batch: a [`DeviceSummary`] with its metrics as
/// values aligned with the batch's `names` and its metadata only when it changed.
#[derive(Debug, Clone, Serialize)]
pub struct CompactDevice {
    pub id: DeviceId,
    pub status: Presence,
    pub status_reason: String,
    pub last_seen_ms: i64,
    pub health: Option<HealthStatus>,
    pub items_per_hour: Option<f32>,
    /// The value of each of the batch's `names` (null: this device has no such metric).
    pub m: Vec<Option<f32>>,
    /// Site, tags, versions, board: with the first update of a device and after a new boot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<DeviceMeta>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceMeta {
    pub site: Option<String>,
    pub tags: Vec<String>,
    pub agent_version: Option<String>,
    pub board: Option<String>,
    pub jetpack: Option<String>,
    pub vision_model_version: Option<String>,
    pub simulated: bool,
}

/// A device that changed, and whether its metadata may have.
#[derive(Debug, Clone)]
pub struct Changed {
    pub summary: DeviceSummary,
    pub meta_changed: bool,
}

impl LiveEvent {
    /// The compact batch of `changed` devices.
    pub fn devices(changed: Vec<Changed>) -> LiveEvent {
        let names: Vec<String> = changed
            .iter()
            .flat_map(|c| c.summary.metrics.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .cloned()
            .collect();
        let devices = changed
            .into_iter()
            .map(
                |Changed {
                     summary: s,
                     meta_changed,
                 }| CompactDevice {
                    m: names
                        .iter()
                        .map(|n| s.metrics.get(n).map(|v| *v as f32))
                        .collect(),
                    meta: meta_changed.then_some(DeviceMeta {
                        site: s.site,
                        tags: s.tags,
                        agent_version: s.agent_version,
                        board: s.board,
                        jetpack: s.jetpack,
                        vision_model_version: s.vision_model_version,
                        simulated: s.simulated,
                    }),
                    id: s.id,
                    status: s.status,
                    status_reason: s.status_reason,
                    last_seen_ms: s.last_seen_ms,
                    health: s.health,
                    items_per_hour: s.items_per_hour.map(|v| v as f32),
                },
            )
            .collect();
        LiveEvent::Devices { names, devices }
    }

    /// The whole SSE frame: one `data:` line (JSON never contains a raw newline).
    pub fn frame(&self) -> Result<LiveFrame, serde_json::Error> {
        let json = serde_json::to_string(self)?;
        Ok(Arc::from(format!("data: {json}\n\n")))
    }
}

/// A serialised Server-Sent Events frame, shared by every subscriber.
pub type LiveFrame = Arc<str>;

#[derive(Debug, Default)]
pub struct LiveStats {
    pub published: AtomicU64,
    pub serialise_errors: AtomicU64,
    pub subscribed: AtomicU64,
    /// Frames missed by slow subscribers, summed.
    pub lagged: AtomicU64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LiveSnapshot {
    pub subscribers: usize,
    pub published: u64,
    pub serialise_errors: u64,
    pub subscribed: u64,
    pub lagged: u64,
}

/// The broadcast of live frames; clones share it.
#[derive(Debug, Clone)]
pub struct LiveHub {
    tx: broadcast::Sender<LiveFrame>,
    stats: Arc<LiveStats>,
}

impl Default for LiveHub {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveHub {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(LIVE_CAPACITY);
        LiveHub {
            tx,
            stats: Arc::default(),
        }
    }

    /// True when at least one page listens (producers may skip building events otherwise).
    pub fn has_subscribers(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    /// Serialises `ev` once and sends it to every subscriber; a no-op without subscribers.
    pub fn publish(&self, ev: &LiveEvent) {
        if !self.has_subscribers() {
            return;
        }
        match ev.frame() {
            Ok(f) => {
                self.stats.published.fetch_add(1, Ordering::Relaxed);
                // An error only means the last subscriber left meanwhile.
                let _ = self.tx.send(f);
            }
            Err(e) => {
                self.stats.serialise_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "live event not serialisable");
            }
        }
    }

    /// A new subscriber; it sees frames published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveFrame> {
        self.stats.subscribed.fetch_add(1, Ordering::Relaxed);
        self.tx.subscribe()
    }

    /// Counts frames a slow subscriber missed.
    pub fn note_lagged(&self, missed: u64) {
        self.stats.lagged.fetch_add(missed, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LiveSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LiveSnapshot {
            subscribers: self.tx.receiver_count(),
            published: l(&self.stats.published),
            serialise_errors: l(&self.stats.serialise_errors),
            subscribed: l(&self.stats.subscribed),
            lagged: l(&self.stats.lagged),
        }
    }
}

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
            && self.telemetry_ts == e.latest.as_ref().map(|l| l.ts_ms)
            && self.boot_id.as_deref() == e.birth.as_ref().map(|b| b.boot_id.as_str())
            && self.reason.as_deref() == reason_kept(status, reason)
    }

    fn of(e: &DeviceEntry, status: Presence, reason: &str) -> Sent {
        Sent {
            status,
            health: e.health.as_ref().map(|h| h.status),
            telemetry_ts: e.latest.as_ref().map(|l| l.ts_ms),
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
    use crate::fleet::PresencePolicy;

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

    #[test]
    fn a_hub_serialises_only_for_listeners_and_frames_are_single_data_lines() {
        let hub = LiveHub::new();
        hub.publish(&LiveEvent::Silences);
        assert_eq!(hub.snapshot().published, 0, "nobody listened");
        let mut rx = hub.subscribe();
        hub.publish(&LiveEvent::Resync { missed: 3 });
        let f = rx.try_recv().unwrap();
        assert_eq!(&*f, "data: {\"type\":\"resync\",\"missed\":3}\n\n");
        assert_eq!(hub.snapshot().published, 1);
    }
}
