//! The link's state for status and health, shared with the rest of the agent: written by the
//! link task, read by the health actor, the status page and tests.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use common::BrokerHealth;

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
    /// The last keep-alive's PINGREQ -> PINGRESP, µs (0: none yet).
    pub ping_rtt_us: AtomicU64,
    /// How long the last resolution of the broker's name took, µs.
    pub dns_us: AtomicU64,
    /// [`DNS_UNKNOWN`], [`DNS_OK`] or [`DNS_FAILED`].
    pub dns_state: AtomicU8,
}

/// Not tried yet, or the broker is an IP address.
pub const DNS_UNKNOWN: u8 = 0;
pub const DNS_OK: u8 = 1;
pub const DNS_FAILED: u8 = 2;

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
    pub fn note_ping(&self, rtt: Duration) {
        let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX).max(1);
        self.ping_rtt_us.store(us, Ordering::Relaxed);
    }

    pub fn note_dns(&self, ok: bool, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        self.dns_us.store(us, Ordering::Relaxed);
        self.dns_state
            .store(if ok { DNS_OK } else { DNS_FAILED }, Ordering::Relaxed);
    }

    pub fn note_dns_not_needed(&self) {
        self.dns_us.store(0, Ordering::Relaxed);
        self.dns_state.store(DNS_UNKNOWN, Ordering::Relaxed);
    }

    /// The broker path as the telemetry reports it.
    pub fn broker_health(&self) -> BrokerHealth {
        let ms = |us: u64| (us > 0).then(|| us as f32 / 1000.0);
        let state = self.dns_state.load(Ordering::Relaxed);
        BrokerHealth {
            rtt_ms: ms(self.ping_rtt_us.load(Ordering::Relaxed)),
            dns_ms: ms(self.dns_us.load(Ordering::Relaxed)).filter(|_| state != DNS_UNKNOWN),
            dns_ok: match state {
                DNS_OK => Some(true),
                DNS_FAILED => Some(false),
                _ => None,
            },
        }
    }

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
