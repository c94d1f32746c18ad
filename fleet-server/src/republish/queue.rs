//! The republisher's bounded queue: producers (the ingest writer, the alerts actor) offer
//! without ever waiting; a full queue drops and counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Serialize;
use tokio::sync::mpsc;

use super::item::Item;

/// Messages waiting to be encoded and published; past it, offers are dropped and counted.
pub const QUEUE: usize = 16_384;

#[derive(Debug, Default)]
pub struct RepublishStats {
    pub connected: AtomicBool,
    pub offered: AtomicU64,
    pub published: AtomicU64,
    pub acked: AtomicU64,
    pub dropped_full: AtomicU64,
    pub dropped_too_large: AtomicU64,
    pub errors: AtomicU64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RepublishSnapshot {
    pub connected: bool,
    pub offered: u64,
    pub published: u64,
    pub acked: u64,
    pub dropped_full: u64,
    pub dropped_too_large: u64,
    pub errors: u64,
}

impl RepublishStats {
    pub fn snapshot(&self) -> RepublishSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RepublishSnapshot {
            connected: self.connected.load(Ordering::Relaxed),
            offered: l(&self.offered),
            published: l(&self.published),
            acked: l(&self.acked),
            dropped_full: l(&self.dropped_full),
            dropped_too_large: l(&self.dropped_too_large),
            errors: l(&self.errors),
        }
    }
}

/// What producers hold: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct RepublishHandle {
    tx: mpsc::Sender<Item>,
    stats: Arc<RepublishStats>,
}

/// The consuming end, read by [`super::client::run`].
pub struct RepublishQueue(pub(super) mpsc::Receiver<Item>);

/// A bounded queue of `capacity` items.
pub fn channel(capacity: usize) -> (RepublishHandle, RepublishQueue) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        RepublishHandle {
            tx,
            stats: Arc::default(),
        },
        RepublishQueue(rx),
    )
}

impl RepublishHandle {
    /// Queues what `make` builds, or drops and counts it when the queue is full (`make` is
    /// not called then). Returns whether it was queued.
    pub fn offer(&self, make: impl FnOnce() -> Option<Item>) -> bool {
        if self.tx.capacity() == 0 {
            self.dropped();
            return false;
        }
        let Some(item) = make() else { return false };
        self.stats.offered.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(_) => {
                self.dropped();
                false
            }
        }
    }

    fn dropped(&self) {
        let n = self.stats.dropped_full.fetch_add(1, Ordering::Relaxed);
        // one line per 1,000 drops: a stalled broker must not flood the log
        if n.is_multiple_of(1_000) {
            tracing::warn!(dropped = n + 1, "republish queue full; message dropped");
        }
    }

    pub fn stats(&self) -> Arc<RepublishStats> {
        self.stats.clone()
    }
}

#[cfg(test)]
mod tests {
    use common::{DeviceId, Envelope, HealthReport};

    use super::*;

    fn dev() -> DeviceId {
        DeviceId::new("rvm7").unwrap()
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_building_the_item() {
        let (h, mut q) = channel(2);
        let item = || {
            Some(Item::Health(Box::new(Envelope::new(
                dev(),
                1,
                1,
                HealthReport::default(),
            ))))
        };
        assert!(h.offer(item));
        assert!(h.offer(item));
        let mut built = false;
        assert!(!h.offer(|| {
            built = true;
            item()
        }));
        assert!(!built);
        let s = h.stats().snapshot();
        assert_eq!((s.offered, s.dropped_full), (2, 1));
        assert!(q.0.try_recv().is_ok());
        assert!(h.offer(item));
    }
}
