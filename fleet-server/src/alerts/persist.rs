//! The alerts persister: a thread that writes the alert engine's and correlator's exports to
//! the store ([`AlertStore::save`]; the latest of a burst) and appends audit lines
//! ([`AuditLog`]), so the alerts actor never waits on the store.
//!
//! Supervised (`crate::server::children`) apart from the actor. Its queue outlives it
//! ([`PersistInbox`]): an export still queued is written by the next generation. One taken
//! from the queue is marked in hand until written, so a generation that starts and finds the
//! mark knows its predecessor died with it and tells the actor to export again; audit lines
//! taken but not yet written are kept aside and written by the next generation. An export
//! the store refuses is marked lost the same way, so the actor exports again (every tick
//! until the store takes it); audit lines and maintenance windows it refuses are kept and
//! tried again every [`PERSIST_RETRY`]. It also writes the maintenance windows added through the API
//! (the whole list each time, so a list lost with a dying generation is written whole by the
//! next change).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};

use super::engine::EngineState;
use super::maintenance::AddedWindow;
use super::stats::AlertsStats;
use super::store::AlertStore;
use crate::audit::AuditLog;
use crate::incidents::incident::CorrelatorState;
use crate::supervise::inbox::Inbox;
use crate::supervise::liveness::Liveness;

/// How long the persister waits for a job before it beats and looks at its stop flag.
pub const PERSIST_POLL: std::time::Duration = std::time::Duration::from_millis(100);
/// Audit lines and maintenance windows the store refused are tried again this often.
pub const PERSIST_RETRY: std::time::Duration = std::time::Duration::from_secs(1);
/// Audit lines kept for a store that cannot be reached; past it the oldest are dropped and
/// counted.
pub const MAX_PENDING_AUDIT: usize = 10_000;

/// One thing for the persister to write (opaque outside this module).
pub struct PersistJob(Job);

enum Job {
    State(Box<(EngineState, CorrelatorState)>),
    Audit(serde_json::Value),
    Windows(Vec<AddedWindow>),
}

/// The persister's queue: the alerts actor holds the handle, persister generations take turns
/// with the inbox.
pub type PersistInbox = Inbox<std_mpsc::Receiver<PersistJob>>;

/// What the alerts actor (each generation of it) holds of the persister.
#[derive(Clone)]
pub struct PersistHandle {
    tx: std_mpsc::Sender<PersistJob>,
    /// An export is with the persister (queued or in hand) and not yet written.
    pub(super) busy: Arc<AtomicBool>,
    /// An export was taken from the queue and is being written.
    in_hand: Arc<AtomicBool>,
    /// A persister died with an export in hand: the actor exports again.
    lost: Arc<AtomicBool>,
    /// Audit lines taken from the queue and not yet written.
    pending_audit: Arc<Mutex<Vec<serde_json::Value>>>,
    /// Maintenance windows taken from the queue and not yet written.
    pending_windows: Arc<Mutex<Option<Vec<AddedWindow>>>>,
}

/// A queue for the persister.
pub fn queue() -> (PersistHandle, PersistInbox) {
    let (tx, rx) = std_mpsc::channel();
    let h = PersistHandle {
        tx,
        busy: Arc::default(),
        in_hand: Arc::default(),
        lost: Arc::default(),
        pending_audit: Arc::default(),
        pending_windows: Arc::default(),
    };
    (h, Inbox::new(rx))
}

impl PersistHandle {
    /// Whether an earlier export is still being written.
    pub(super) fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }

    /// Hands an export over (marking it busy); false if no persister can ever read it.
    pub(super) fn export(&self, state: (EngineState, CorrelatorState)) -> bool {
        self.busy.store(true, Ordering::Release);
        let sent = self.tx.send(PersistJob(Job::State(Box::new(state)))).is_ok();
        if !sent {
            self.busy.store(false, Ordering::Release);
        }
        sent
    }

    pub(super) fn audit(&self, line: serde_json::Value) {
        let _ = self.tx.send(PersistJob(Job::Audit(line)));
    }

    /// Hands the API's maintenance windows over; false if no persister can ever read them.
    pub(super) fn windows(&self, windows: Vec<AddedWindow>) -> bool {
        self.tx.send(PersistJob(Job::Windows(windows))).is_ok()
    }

    /// True once after a persister died with an export in hand.
    pub(super) fn take_lost(&self) -> bool {
        self.lost.swap(false, Ordering::AcqRel)
    }
}

/// What every generation of the persister works with.
#[derive(Clone)]
pub struct PersistSetup {
    pub store: Arc<dyn AlertStore>,
    pub audit: Arc<dyn AuditLog>,
    pub stats: Arc<AlertsStats>,
    pub handle: PersistHandle,
}

/// One generation: writes the latest state of each burst and the audit lines until `stop`
/// is set (then it writes what is queued and ends).
pub fn run(
    setup: &PersistSetup,
    inbox: &PersistInbox,
    live: &Liveness,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let Some(rx) = inbox.take_blocking(live, stop) else {
        return Ok(());
    };
    let h = &setup.handle;
    if h.in_hand.swap(false, Ordering::AcqRel) {
        // the previous generation took an export and never wrote it
        h.busy.store(false, Ordering::Release);
        h.lost.store(true, Ordering::Release);
    }
    let mut last_try = std::time::Instant::now();
    write_pending(setup);
    loop {
        live.beat(common::time::now_ms());
        let first = match rx.recv_timeout(PERSIST_POLL) {
            Ok(job) => job,
            Err(std_mpsc::RecvTimeoutError::Timeout) if !stop.load(Ordering::Acquire) => {
                // what the store refused (PostgreSQL unreachable), once a second
                if last_try.elapsed() >= PERSIST_RETRY && has_pending(h) {
                    last_try = std::time::Instant::now();
                    write_pending(setup);
                }
                continue;
            }
            // stopped (and nothing queued), or every sender gone
            Err(_) => return Ok(()),
        };
        let mut state = None;
        let mut windows = None;
        let mut lines = Vec::new();
        for job in std::iter::once(first).chain(rx.try_iter()) {
            match job.0 {
                Job::State(s) => state = Some(s),
                Job::Audit(l) => lines.push(l),
                Job::Windows(w) => windows = Some(w),
            }
        }
        if let Some(w) = windows {
            *h.pending_windows.lock().unwrap_or_else(|p| p.into_inner()) = Some(w);
        }
        h.pending_audit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(lines);
        last_try = std::time::Instant::now();
        write_pending(setup);
        if let Some(s) = state {
            h.in_hand.store(true, Ordering::Release);
            let (engine, corr) = *s;
            if let Err(e) = setup.store.save(&engine, &corr) {
                setup.stats.persist_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "alert state not persisted; exported again");
                // (PostgreSQL unreachable): the actor's next tick exports again, so a change
                // made while the store was away is written once it is back
                h.lost.store(true, Ordering::Release);
            }
            h.in_hand.store(false, Ordering::Release);
            h.busy.store(false, Ordering::Release);
        }
    }
}

fn has_pending(h: &PersistHandle) -> bool {
    !h.pending_audit
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .is_empty()
        || h.pending_windows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
}

/// Writes the maintenance windows and audit lines taken so far. What the store refuses is
/// kept for the next try (audit lines up to [`MAX_PENDING_AUDIT`], the oldest dropped and
/// counted past it).
fn write_pending(setup: &PersistSetup) {
    let h = &setup.handle;
    {
        let mut windows = h.pending_windows.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = windows.as_ref() {
            match setup.store.save_windows(w) {
                Ok(()) => *windows = None,
                Err(e) => {
                    setup.stats.persist_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "maintenance windows not persisted; kept for the next try");
                }
            }
        }
    }
    let mut pending = h.pending_audit.lock().unwrap_or_else(|p| p.into_inner());
    if pending.is_empty() {
        return;
    }
    match setup.audit.append(&pending) {
        Ok(()) => pending.clear(),
        Err(e) => {
            setup.stats.persist_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, lines = pending.len(), "audit log not written; kept for the next try");
            if pending.len() > MAX_PENDING_AUDIT {
                let over = pending.len() - MAX_PENDING_AUDIT;
                pending.drain(..over);
                setup
                    .stats
                    .audit_dropped
                    .fetch_add(over as u64, Ordering::Relaxed);
                tracing::error!(
                    lines = over,
                    "audit lines dropped: the audit log stayed unwritable"
                );
            }
        }
    }
}

/// A persister on a thread of its own, unsupervised (unit tests).
#[cfg(test)]
pub(super) fn start_unsupervised(
    store: Arc<dyn AlertStore>,
    audit: Arc<dyn AuditLog>,
    stats: Arc<AlertsStats>,
) -> PersistHandle {
    let (handle, inbox) = queue();
    let setup = PersistSetup {
        store,
        audit,
        stats,
        handle: handle.clone(),
    };
    std::thread::spawn(move || {
        let live = Liveness::new("persist", common::time::now_ms());
        let _ = run(&setup, &inbox, &live, &AtomicBool::new(false));
    });
    handle
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_persister_that_died_with_an_export_in_hand_makes_the_actor_export_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::FleetStore::open(&dir.path().join("fleet.sled")).unwrap();
        let (handle, inbox) = queue();
        let setup = PersistSetup {
            store: Arc::new(store),
            audit: Arc::new(crate::audit::AuditFile::new(&dir.path().join("audit.log"))),
            stats: Arc::default(),
            handle: handle.clone(),
        };
        // taken by a generation that then died: busy and in hand, and an audit line too
        handle.busy.store(true, Ordering::Release);
        handle.in_hand.store(true, Ordering::Release);
        handle
            .pending_audit
            .lock()
            .unwrap()
            .push(serde_json::json!({"who": "ops", "action": "ack"}));
        let stop = AtomicBool::new(true);
        let live = Liveness::new("persist", 0);
        run(&setup, &inbox, &live, &stop).unwrap();
        assert!(handle.take_lost(), "the actor is told to export again");
        assert!(!handle.take_lost(), "once");
        assert!(!handle.is_busy());
        // an export still queued when a generation starts is not lost: it is written
        handle.busy.store(true, Ordering::Release);
        let rules = crate::alerts::rules::parse_rules("").unwrap();
        let engine = crate::alerts::engine::AlertEngine::new(rules.rules.clone()).export();
        let corr = crate::incidents::Correlator::new(rules.correlate.clone()).export();
        assert!(handle.export((engine, corr)));
        let stop = AtomicBool::new(true);
        run(&setup, &inbox, &live, &stop).unwrap();
        assert!(!handle.take_lost());
        assert!(!handle.is_busy(), "written");
        let audit = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
        assert!(audit.contains(r#""action":"ack""#), "{audit}");
    }

    /// A store that refuses every save, like a PostgreSQL that cannot be reached.
    struct Refusing;

    impl AlertStore for Refusing {
        fn load(&self) -> Result<super::super::store::SavedAlerts, crate::store::StoreError> {
            Ok(Default::default())
        }
        fn save(&self, _: &EngineState, _: &CorrelatorState) -> Result<(), crate::store::StoreError> {
            Err(crate::store::StoreError::Encode("unreachable".into()))
        }
        fn save_windows(&self, _: &[AddedWindow]) -> Result<(), crate::store::StoreError> {
            Err(crate::store::StoreError::Encode("unreachable".into()))
        }
    }

    #[test]
    fn an_export_the_store_refuses_is_counted_and_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let (handle, inbox) = queue();
        let stats = Arc::new(AlertsStats::default());
        let setup = PersistSetup {
            store: Arc::new(Refusing),
            audit: Arc::new(crate::audit::AuditFile::new(&dir.path().join("audit.log"))),
            stats: stats.clone(),
            handle: handle.clone(),
        };
        let rules = crate::alerts::rules::parse_rules("").unwrap();
        let engine = crate::alerts::engine::AlertEngine::new(rules.rules.clone()).export();
        let corr = crate::incidents::Correlator::new(rules.correlate.clone()).export();
        assert!(handle.export((engine, corr)));
        let live = Liveness::new("persist", 0);
        run(&setup, &inbox, &live, &AtomicBool::new(true)).unwrap();
        assert_eq!(stats.persist_errors.load(Ordering::Relaxed), 1);
        assert!(!handle.is_busy(), "the next export may go");
        assert!(handle.take_lost(), "the actor exports again");
    }
}
