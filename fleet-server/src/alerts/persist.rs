//! The alerts persister: a thread that writes the alert engine's and correlator's exports to
//! the store's `alerts` tree (the latest of a burst) and appends audit lines, so the alerts
//! actor never waits on disk.
//!
//! Supervised (`crate::server::children`) apart from the actor. Its queue outlives it
//! ([`PersistInbox`]): an export still queued is written by the next generation. One taken
//! from the queue is marked in hand until written, so a generation that starts and finds the
//! mark knows its predecessor died with it and tells the actor to export again; audit lines
//! taken but not yet written are kept aside and written by the next generation. It also
//! writes the maintenance windows added through the API (the whole list each time, so a
//! list lost with a dying generation is written whole by the next change).

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};

use super::engine::EngineState;
use super::maintenance::AddedWindow;
use super::stats::AlertsStats;
use crate::incidents::incident::CorrelatorState;
use crate::store::FleetStore;
use crate::supervise::inbox::Inbox;
use crate::supervise::liveness::Liveness;

/// How long the persister waits for a job before it beats and looks at its stop flag.
pub const PERSIST_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Keys of the persisted exports in the store's `alerts` tree.
pub const ENGINE_KEY: &str = "engine";
pub const CORRELATOR_KEY: &str = "correlator";
/// Key of the maintenance windows added through the API.
pub const MAINTENANCE_KEY: &str = "maintenance";

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
    pub store: FleetStore,
    /// `DATA_DIR/audit.log` (JSON lines).
    pub audit_log: PathBuf,
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
    write_pending_audit(setup);
    loop {
        live.beat(common::time::now_ms());
        let first = match rx.recv_timeout(PERSIST_POLL) {
            Ok(job) => job,
            Err(std_mpsc::RecvTimeoutError::Timeout) if !stop.load(Ordering::Acquire) => continue,
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
            let res = serde_json::to_vec(&w).map_err(|e| e.to_string()).and_then(|b| {
                setup
                    .store
                    .save_alert_state(&[(MAINTENANCE_KEY, b)])
                    .map_err(|e| e.to_string())
            });
            if let Err(e) = res {
                setup.stats.persist_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "maintenance windows not persisted");
            }
        }
        h.pending_audit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(lines);
        write_pending_audit(setup);
        if let Some(s) = state {
            h.in_hand.store(true, Ordering::Release);
            let (engine, corr) = *s;
            let res = serde_json::to_vec(&engine)
                .and_then(|e| Ok((e, serde_json::to_vec(&corr)?)))
                .map_err(|e| e.to_string())
                .and_then(|(e, c)| {
                    setup
                        .store
                        .save_alert_state(&[(ENGINE_KEY, e), (CORRELATOR_KEY, c)])
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = res {
                setup.stats.persist_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "alert state not persisted");
            }
            h.in_hand.store(false, Ordering::Release);
            h.busy.store(false, Ordering::Release);
        }
    }
}

/// Writes the audit lines taken so far (dropped and counted when the file cannot be written).
fn write_pending_audit(setup: &PersistSetup) {
    let mut pending = setup
        .handle
        .pending_audit
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if pending.is_empty() {
        return;
    }
    if let Err(e) = append_audit(&setup.audit_log, &pending) {
        setup.stats.persist_errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!(error = %e, path = %setup.audit_log.display(), lines = pending.len(), "audit log not written");
    }
    pending.clear();
}

fn append_audit(path: &PathBuf, lines: &[serde_json::Value]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let mut buf = Vec::new();
    for l in lines {
        buf.extend_from_slice(l.to_string().as_bytes());
        buf.push(b'\n');
    }
    f.write_all(&buf)?;
    f.sync_data()
}

/// A persister on a thread of its own, unsupervised (unit tests).
#[cfg(test)]
pub(super) fn start_unsupervised(
    store: FleetStore,
    audit_log: PathBuf,
    stats: Arc<AlertsStats>,
) -> PersistHandle {
    let (handle, inbox) = queue();
    let setup = PersistSetup {
        store,
        audit_log,
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
        let store = FleetStore::open(&dir.path().join("fleet.sled")).unwrap();
        let (handle, inbox) = queue();
        let setup = PersistSetup {
            store,
            audit_log: dir.path().join("audit.log"),
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
}
