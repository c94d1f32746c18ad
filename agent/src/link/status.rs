//! The link's state for status and health, shared with the rest of the agent: written by the
//! link task, read by the health actor, the status page and tests.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Serialize;

/// Link state for status and health, shared with the rest of the agent.
#[derive(Debug, Default)]
pub struct LinkStatus {
    pub connected: AtomicBool,
    pub connects: AtomicU64,
    pub disconnects: AtomicU64,
    pub published: AtomicU64,
    pub acked: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    pub in_flight: AtomicU64,
    /// The broker the link is on or trying (`host:port`).
    pub broker: Mutex<String>,
    /// Moves to another broker after a loss or a failed attempt.
    pub failovers: AtomicU64,
    /// Wall clock of the link loop's last turn (liveness).
    pub last_loop_ms: std::sync::atomic::AtomicI64,
}

#[derive(Debug, Serialize)]
pub struct LinkSnapshot {
    pub connected: bool,
    pub connects: u64,
    pub disconnects: u64,
    pub published: u64,
    pub acked: u64,
    pub in_flight: u64,
    pub last_error: Option<String>,
    /// The broker the link is on (while `connected`) or trying next.
    pub broker: String,
    pub failovers: u64,
}

impl LinkStatus {
    pub fn snapshot(&self) -> LinkSnapshot {
        LinkSnapshot {
            connected: self.connected.load(Ordering::Relaxed),
            connects: self.connects.load(Ordering::Relaxed),
            disconnects: self.disconnects.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            last_error: self.last_error.lock().map(|e| e.clone()).unwrap_or(None),
            broker: self.broker.lock().map(|b| b.clone()).unwrap_or_default(),
            failovers: self.failovers.load(Ordering::Relaxed),
        }
    }
}
