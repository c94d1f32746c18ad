//! Live updates for the web view: what changed, serialised once, to every open page.
//!
//! Producers publish a [`LiveEvent`] on the [`LiveHub`]: the fleet actor a batch of changed
//! device summaries every [`crate::fleet::actor::PRESENCE_TICK`] (from
//! [`crate::fleet::live::SummaryDiff`]), the
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

pub mod event;
pub mod scoped;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tokio::sync::broadcast;

use self::event::{LiveEvent, LiveFrame};

/// Frames a subscriber may fall behind before it must resync.
pub const LIVE_CAPACITY: usize = 256;

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

#[cfg(test)]
mod tests {
    use super::*;

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
