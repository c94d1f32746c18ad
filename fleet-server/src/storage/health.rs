//! Whether the store answers: what `GET /api/v1/health` (`storage.status`, `storage.reason`,
//! `storage.error`) and `/metrics` (`rvm_fleet_storage_up`,
//! `rvm_fleet_storage_unavailable_since_timestamp_seconds{reason}`,
//! `rvm_fleet_storage_errors_total`) say about it.
//!
//! The store reports every outcome of its operations: a success marks it available, an error
//! that means the database cannot be reached ([`StorageHealth::unavailable`]) marks it
//! unavailable with that error and since when. While it is unavailable the ingest writer
//! refuses records (the broker does not acknowledge them: they stay on the machines), so
//! this is the place that says why. sled is always available (its errors are IO errors of
//! this machine, counted the same way). A leaf: imports nothing of the crate.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Which store the server keeps its state in, as the API names it.
pub type BackendName = &'static str;

#[derive(Debug)]
pub struct StorageHealth {
    backend: BackendName,
    state: Mutex<State>,
    errors: AtomicU64,
    unavailable_total: AtomicU64,
}

#[derive(Debug, Clone, Default)]
struct State {
    down: Option<Down>,
    last_error: Option<String>,
}

#[derive(Debug, Clone)]
struct Down {
    reason: &'static str,
    error: String,
    since_ms: i64,
}

/// What the API shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StorageStatus {
    pub backend: BackendName,
    /// `ok` or `unavailable`.
    pub status: &'static str,
    /// Why it is unavailable, as a short class (`connect`, `connection_lost`, `shutdown`,
    /// `too_many_connections`, `pool_timeout`; None while ok): what `/metrics` labels it with.
    pub reason: Option<&'static str>,
    /// Why it is unavailable, the error itself (None while ok).
    pub error: Option<String>,
    /// Unavailable since (ms since the epoch).
    pub since_ms: Option<i64>,
    /// The last error of any kind, kept after recovery.
    pub last_error: Option<String>,
    /// Operations that failed.
    pub errors_total: u64,
    /// Times the store became unavailable.
    pub unavailable_total: u64,
}

impl StorageHealth {
    pub fn new(backend: BackendName) -> StorageHealth {
        StorageHealth {
            backend,
            state: Mutex::new(State::default()),
            errors: AtomicU64::new(0),
            unavailable_total: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An operation succeeded: the store answers.
    pub fn ok(&self) {
        let mut s = self.lock();
        if let Some(d) = s.down.take() {
            tracing::info!(
                backend = self.backend,
                down_ms = common::time::now_ms() - d.since_ms,
                "storage available again"
            );
        }
    }

    /// An operation failed for another reason than reachability (counted, status unchanged).
    pub fn error(&self, error: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.lock().last_error = Some(error.to_string());
    }

    /// The store cannot be reached, for `reason` (a short class, module docs): unavailable from
    /// `now_ms` (or since it first was; the reason and error are the latest).
    pub fn unavailable(&self, reason: &'static str, error: &str, now_ms: i64) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut s = self.lock();
        s.last_error = Some(error.to_string());
        match &mut s.down {
            Some(d) => {
                d.reason = reason;
                d.error = error.to_string();
            }
            None => {
                self.unavailable_total.fetch_add(1, Ordering::Relaxed);
                tracing::error!(backend = self.backend, reason, error, "storage unavailable");
                s.down = Some(Down {
                    reason,
                    error: error.to_string(),
                    since_ms: now_ms,
                });
            }
        }
    }

    pub fn is_available(&self) -> bool {
        self.lock().down.is_none()
    }

    pub fn backend(&self) -> BackendName {
        self.backend
    }

    pub fn status(&self) -> StorageStatus {
        let s = self.lock().clone();
        StorageStatus {
            backend: self.backend,
            status: if s.down.is_some() { "unavailable" } else { "ok" },
            reason: s.down.as_ref().map(|d| d.reason),
            error: s.down.as_ref().map(|d| d.error.clone()),
            since_ms: s.down.as_ref().map(|d| d.since_ms),
            last_error: s.last_error,
            errors_total: self.errors.load(Ordering::Relaxed),
            unavailable_total: self.unavailable_total.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_reported_from_its_first_error_until_a_success() {
        let h = StorageHealth::new("postgres");
        assert_eq!(h.status().status, "ok");
        h.unavailable("connect", "storage.url: cannot connect", 1_000);
        h.unavailable("connect", "storage.url: cannot connect (again)", 2_000);
        let s = h.status();
        assert_eq!(
            (s.status, s.reason, s.since_ms, s.error.as_deref()),
            (
                "unavailable",
                Some("connect"),
                Some(1_000),
                Some("storage.url: cannot connect (again)")
            )
        );
        assert_eq!((s.errors_total, s.unavailable_total), (2, 1));
        h.ok();
        let s = h.status();
        assert_eq!(
            (s.status, s.reason, s.error, s.since_ms),
            ("ok", None, None, None)
        );
        assert_eq!(
            s.last_error.as_deref(),
            Some("storage.url: cannot connect (again)")
        );
    }

    #[test]
    fn other_errors_are_counted_without_changing_the_status() {
        let h = StorageHealth::new("sled");
        h.error("store data/fleet.sled: io error");
        let s = h.status();
        assert_eq!((s.status, s.errors_total, s.unavailable_total), ("ok", 1, 0));
        assert!(h.is_available());
    }
}
