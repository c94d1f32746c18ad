//! Ingest counters: what the client and the writer received, accepted, dropped as duplicates
//! and rejected by reason (`/api/v1/health`, `/metrics`).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Serialize;

#[derive(Debug, Default)]
pub struct IngestStats {
    pub connected: AtomicBool,
    pub received: AtomicU64,
    pub accepted: AtomicU64,
    pub duplicates: AtomicU64,
    pub rejected: Mutex<BTreeMap<String, u64>>,
    /// Batches the ingest writer has processed (`/metrics`).
    pub writer_batches: AtomicU64,
    /// Records waiting in the writer's queue after its last batch (`/metrics`).
    pub writer_queue: AtomicU64,
    /// Telemetry whose history row was not stored at its own timestamp: the device's clock
    /// was off ([`crate::fleet::clock`]).
    pub clock_moved: AtomicU64,
    /// Batches the store refused (records not acknowledged: their machines send them again).
    pub refused_batches: AtomicU64,
    /// History rows not stored: older than the raw retention keeps (PostgreSQL).
    pub rows_past_retention: AtomicU64,
    /// Devices whose stored delivery state was joined in when their session started here
    /// (PostgreSQL: another instance may have served them meanwhile).
    pub delivery_reloads: AtomicU64,
}

#[derive(Debug, Serialize)]
pub struct IngestSnapshot {
    pub connected: bool,
    pub received: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected_total: u64,
    pub rejected: BTreeMap<String, u64>,
    pub clock_moved: u64,
    pub refused_batches: u64,
    pub rows_past_retention: u64,
    pub delivery_reloads: u64,
}

impl IngestStats {
    pub fn reject(&self, reason: &str, topic: &str, detail: &str) {
        if let Ok(mut m) = self.rejected.lock() {
            *m.entry(reason.to_string()).or_default() += 1;
        }
        tracing::warn!(reason, topic, detail, "record rejected");
    }

    pub fn snapshot(&self) -> IngestSnapshot {
        let rejected = self.rejected.lock().map(|m| m.clone()).unwrap_or_default();
        IngestSnapshot {
            connected: self.connected.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            rejected_total: rejected.values().sum(),
            rejected,
            clock_moved: self.clock_moved.load(Ordering::Relaxed),
            refused_batches: self.refused_batches.load(Ordering::Relaxed),
            rows_past_retention: self.rows_past_retention.load(Ordering::Relaxed),
            delivery_reloads: self.delivery_reloads.load(Ordering::Relaxed),
        }
    }
}
