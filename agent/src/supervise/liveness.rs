//! What a running child shares with its supervisor: when it last made progress and, once it
//! is about to stop, why. A child that makes no progress for a heartbeat is stalled.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use super::restart::RestartPolicy;

/// Shared between a running child and its supervisor.
#[derive(Debug, Default)]
pub struct Liveness {
    progress_ms: AtomicI64,
    exit: Mutex<Option<String>>,
}

impl Liveness {
    pub fn new(now_ms: i64) -> Self {
        Liveness {
            progress_ms: AtomicI64::new(now_ms),
            exit: Mutex::new(None),
        }
    }

    /// The child did useful work.
    pub fn progress(&self, now_ms: i64) {
        self.progress_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn last_progress_ms(&self) -> i64 {
        self.progress_ms.load(Ordering::Relaxed)
    }

    /// The child is about to stop, and why (first reason wins).
    pub fn exit(&self, reason: impl Into<String>) {
        if let Ok(mut e) = self.exit.lock()
            && e.is_none()
        {
            *e = Some(reason.into());
        }
    }

    pub fn take_exit(&self) -> Option<String> {
        self.exit.lock().ok().and_then(|mut e| e.take())
    }

    /// No progress for a heartbeat.
    pub fn stalled(&self, now_ms: i64, p: &RestartPolicy) -> bool {
        now_ms - self.last_progress_ms() > p.heartbeat_s as i64 * 1000
    }
}

/// Text of a caught panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panic: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panic: {s}")
    } else {
        "panic".into()
    }
}

/// Runs `f`, turning a panic into an exit reason on `live` (and `None`).
pub fn guarded<T>(live: &Liveness, f: impl FnOnce() -> T) -> Option<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(p) => {
            live.exit(panic_message(&*p));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervise::restart::tests::policy;

    #[test]
    fn a_child_without_progress_for_a_heartbeat_is_stalled() {
        let p = policy();
        let l = Liveness::new(0);
        assert!(!l.stalled(30_000, &p));
        assert!(l.stalled(30_001, &p));
        l.progress(30_000);
        assert!(!l.stalled(59_000, &p));
    }

    #[test]
    fn the_first_exit_reason_wins() {
        let l = Liveness::new(0);
        l.exit("panic: a");
        l.exit("stopped");
        assert_eq!(l.take_exit().as_deref(), Some("panic: a"));
        assert_eq!(l.take_exit(), None);
    }

    #[test]
    fn panic_payloads_become_messages() {
        let r = std::panic::catch_unwind(|| panic!("boom {}", 1));
        assert_eq!(panic_message(&*r.unwrap_err()), "panic: boom 1");
    }
}
