//! What a running child shares with its supervisor: when it last made progress and, once it
//! is about to end, why. A child that makes no progress for a heartbeat is stalled.
//!
//! A panic is recorded without wrapping handler bodies: every child runs on a thread of its
//! own (an arbiter, or a plain thread), which [`enter`] marks with the child's liveness, and
//! the process's panic hook ([`install_panic_hook`]) writes the message and location of a
//! panic on such a thread into it. The previous hook still runs (the panic is printed).

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Once};

use super::restart::ExitKind;

/// Shared between one generation of a child and its supervisor.
#[derive(Debug)]
pub struct Liveness {
    name: &'static str,
    progress_ms: AtomicI64,
    exit: Mutex<Option<(ExitKind, String)>>,
    /// Waiting for its queue ([`super::inbox::Inbox`]): beats do not count meanwhile, so a
    /// generation stuck behind a hung predecessor is seen as stalled.
    waiting: AtomicBool,
    #[cfg(any(test, feature = "faults"))]
    faults: super::faults::Faults,
}

impl Liveness {
    pub fn new(name: &'static str, now_ms: i64) -> Self {
        Liveness {
            name,
            progress_ms: AtomicI64::new(now_ms),
            exit: Mutex::new(None),
            waiting: AtomicBool::new(false),
            #[cfg(any(test, feature = "faults"))]
            faults: super::faults::Faults::default(),
        }
    }

    /// A liveness whose beats strike the faults armed for `name` in `faults`.
    #[cfg(any(test, feature = "faults"))]
    pub fn with_faults(name: &'static str, now_ms: i64, faults: super::faults::Faults) -> Self {
        Liveness {
            faults,
            ..Liveness::new(name, now_ms)
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The child is alive and doing its work (called every [`super::child::BEAT`] at least).
    /// With fault injection compiled in, this is where an armed fault strikes: on the child's
    /// own thread, inside its loop or message handler.
    pub fn beat(&self, now_ms: i64) {
        if self.waiting.load(Ordering::Acquire) {
            return;
        }
        #[cfg(any(test, feature = "faults"))]
        self.faults.strike(self.name);
        self.progress_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn last_progress_ms(&self) -> i64 {
        self.progress_ms.load(Ordering::Relaxed)
    }

    pub(crate) fn set_waiting(&self, waiting: bool) {
        self.waiting.store(waiting, Ordering::Release);
    }

    /// The child is about to end, and why (the first reason wins).
    pub fn exit(&self, kind: ExitKind, message: impl Into<String>) {
        let mut e = self.exit.lock().unwrap_or_else(|p| p.into_inner());
        if e.is_none() {
            *e = Some((kind, message.into()));
        }
    }

    /// The exit reason, once (the supervisor takes it).
    pub fn take_exit(&self) -> Option<(ExitKind, String)> {
        self.exit.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// No progress for `heartbeat_ms`.
    pub fn stalled(&self, now_ms: i64, heartbeat_ms: i64) -> bool {
        now_ms - self.last_progress_ms() > heartbeat_ms
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Liveness>>> = const { RefCell::new(None) };
}

/// This thread runs `live`'s child: a panic on it becomes the child's exit reason.
pub fn enter(live: Arc<Liveness>) {
    CURRENT.with(|c| *c.borrow_mut() = Some(live));
}

/// Installs (once per process) the panic hook behind [`enter`].
pub fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // try_with: a panic while the thread-local is being torn down records nothing
            let _ = CURRENT.try_with(|c| {
                if let Ok(c) = c.try_borrow()
                    && let Some(live) = c.as_ref()
                {
                    let at = info
                        .location()
                        .map(|l| format!(" at {}:{}", l.file(), l.line()))
                        .unwrap_or_default();
                    live.exit(ExitKind::Panic, format!("{}{at}", panic_message(info.payload())));
                }
            });
            previous(info);
        }));
    });
}

/// Text of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panic: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panic: {s}")
    } else {
        "panic".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_without_progress_for_a_heartbeat_is_stalled() {
        let l = Liveness::new("fleet", 0);
        assert!(!l.stalled(30_000, 30_000));
        assert!(l.stalled(30_001, 30_000));
        l.beat(30_000);
        assert!(!l.stalled(59_000, 30_000));
    }

    #[test]
    fn beats_while_waiting_for_the_queue_do_not_count() {
        let l = Liveness::new("writer", 0);
        l.set_waiting(true);
        l.beat(10_000);
        assert_eq!(l.last_progress_ms(), 0);
        l.set_waiting(false);
        l.beat(10_000);
        assert_eq!(l.last_progress_ms(), 10_000);
    }

    #[test]
    fn the_first_exit_reason_wins() {
        let l = Liveness::new("alerts", 0);
        l.exit(ExitKind::Panic, "panic: a");
        l.exit(ExitKind::Ended, "returned");
        assert_eq!(l.take_exit(), Some((ExitKind::Panic, "panic: a".into())));
        assert_eq!(l.take_exit(), None);
    }

    #[test]
    fn a_panic_on_a_thread_that_entered_a_child_is_its_exit_reason() {
        install_panic_hook();
        let l = Arc::new(Liveness::new("persist", 0));
        let t = l.clone();
        let r = std::thread::spawn(move || {
            enter(t);
            panic!("disk on fire {}", 7);
        })
        .join();
        assert!(r.is_err());
        let (kind, message) = l.take_exit().unwrap();
        assert_eq!(kind, ExitKind::Panic);
        assert!(
            message.starts_with("panic: disk on fire 7 at ") && message.contains("liveness.rs"),
            "{message}"
        );
        // a thread that entered no child records nothing anywhere
        let other = Arc::new(Liveness::new("other", 0));
        let _ = std::thread::spawn(|| panic!("elsewhere")).join();
        assert_eq!(other.take_exit(), None);
    }
}
