//! The server's supervisor: starts every child in order, watches them from a thread of its
//! own, restarts one that exited or stalled (one_for_one, with backoff), and gives up past the
//! restart intensity: it then publishes [`EXIT_RESTART_LIMIT`] ([`SupervisorView::watch_exit`])
//! and restarts nothing more; `fleet-server run` stops the server and exits with that code, so
//! systemd restarts the process (`config/fleet-server.service`).
//!
//! Every [`SUPERVISE_TICK`] it looks at each running child: an exit reason recorded in its
//! [`Liveness`] (a panic, an error), a child no longer alive (an actor whose mailbox closed,
//! a task or thread that ended), or no progress for `heartbeat_s` (a stall: it is stopped and
//! abandoned). Restart counts and last exit reasons are published in [`SupervisorView`] for
//! `GET /api/v1/health` and `/metrics`. Its own thread, not an actor: nothing a child does to
//! an actix thread can stop it.

use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use super::child::{BEAT, ChildSpec, Running};
use super::liveness::{Liveness, install_panic_hook};
use super::restart::{ChildRecord, ChildStatus, ExitKind, RestartPolicy, Verdict};

/// How often the supervisor looks at its children.
pub const SUPERVISE_TICK: Duration = Duration::from_millis(250);
/// Exit code of the process when a child went past its restart intensity (EX_SOFTWARE).
pub const EXIT_RESTART_LIMIT: i32 = 70;
/// How long a shutdown waits for each child to end before it stops the next one.
pub const CHILD_STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// What `GET /api/v1/health` shows of the supervisor.
#[derive(Debug, Clone, Serialize)]
pub struct SupervisorSnapshot {
    pub children: Vec<ChildStatus>,
    /// Set once a child went past its restart intensity: the process exits with it.
    pub exit_code: Option<i32>,
    /// Whether this build can inject faults (`faults` feature: test builds only).
    pub fault_injection: bool,
}

/// The supervisor as the API sees it; clones share it.
#[derive(Clone)]
pub struct SupervisorView(Arc<ViewInner>);

struct ViewInner {
    children: RwLock<Vec<ChildStatus>>,
    exit: watch::Sender<Option<i32>>,
}

impl Default for SupervisorView {
    fn default() -> Self {
        SupervisorView(Arc::new(ViewInner {
            children: RwLock::default(),
            exit: watch::Sender::new(None),
        }))
    }
}

impl SupervisorView {
    pub fn snapshot(&self) -> SupervisorSnapshot {
        SupervisorSnapshot {
            children: self.children(),
            exit_code: self.exit_code(),
            fault_injection: cfg!(any(test, feature = "faults")),
        }
    }

    pub fn children(&self) -> Vec<ChildStatus> {
        self.0.children.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The exit code, once the supervisor gave up.
    pub fn exit_code(&self) -> Option<i32> {
        *self.0.exit.borrow()
    }

    /// Changes to `Some(code)` when the supervisor gives up.
    pub fn watch_exit(&self) -> watch::Receiver<Option<i32>> {
        self.0.exit.subscribe()
    }

    fn publish(&self, children: Vec<ChildStatus>) {
        *self.0.children.write().unwrap_or_else(|p| p.into_inner()) = children;
    }
}

struct Child {
    spec: ChildSpec,
    rec: ChildRecord,
    live: Arc<Liveness>,
    run: Option<Running>,
    restart_at_ms: Option<i64>,
    last_ping_ms: i64,
}

/// The running supervisor; [`Supervisor::stop`] (or drop) stops every child in reverse order.
pub struct Supervisor {
    view: SupervisorView,
    stop: Option<std_mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Supervisor {
    /// Starts every child in `specs` order on a thread of the actix `system`, then watches
    /// them. Returns once all started, or with the first start error (the ones started are
    /// stopped again).
    pub fn start(
        system: actix::System,
        policy: RestartPolicy,
        specs: Vec<ChildSpec>,
        view: SupervisorView,
        #[cfg(any(test, feature = "faults"))] faults: super::faults::Faults,
    ) -> anyhow::Result<Supervisor> {
        let (started_tx, started_rx) = std_mpsc::channel();
        let (stop_tx, stop_rx) = std_mpsc::channel();
        let t_view = view.clone();
        let thread = std::thread::Builder::new()
            .name("supervisor".into())
            .spawn(move || {
                actix::System::set_current(system);
                install_panic_hook();
                let now = common::time::now_ms();
                let mut s = Watch {
                    children: specs
                        .into_iter()
                        .map(|spec| Child {
                            rec: ChildRecord::new(spec.name),
                            live: Arc::new(Liveness::new(spec.name, now)),
                            spec,
                            run: None,
                            restart_at_ms: None,
                            last_ping_ms: now,
                        })
                        .collect(),
                    policy,
                    view: t_view,
                    gave_up: false,
                    #[cfg(any(test, feature = "faults"))]
                    faults,
                };
                if let Err(e) = s.start_all() {
                    s.stop_all();
                    let _ = started_tx.send(Err(e));
                    return;
                }
                s.publish();
                let _ = started_tx.send(Ok(()));
                // a stop message, or the Supervisor dropped, ends the watch
                while let Err(std_mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(SUPERVISE_TICK) {
                    s.tick(common::time::now_ms());
                }
                s.stop_all();
                s.publish();
            })?;
        started_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("the supervisor thread ended while starting"))??;
        Ok(Supervisor {
            view,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn view(&self) -> &SupervisorView {
        &self.view
    }

    /// Stops every child, the last started first, each given [`CHILD_STOP_TIMEOUT`] to end.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The supervisor thread's state.
struct Watch {
    children: Vec<Child>,
    policy: RestartPolicy,
    view: SupervisorView,
    gave_up: bool,
    #[cfg(any(test, feature = "faults"))]
    faults: super::faults::Faults,
}

impl Watch {
    fn start_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.children.len() {
            let now = common::time::now_ms();
            let run = self.start_one(i, now);
            let c = &mut self.children[i];
            c.run = Some(run.map_err(|e| e.context(format!("starting {}", c.spec.name)))?);
            c.rec.started();
        }
        Ok(())
    }

    fn new_liveness(&self, name: &'static str, now_ms: i64) -> Arc<Liveness> {
        #[cfg(any(test, feature = "faults"))]
        return Arc::new(Liveness::with_faults(name, now_ms, self.faults.clone()));
        #[cfg(not(any(test, feature = "faults")))]
        Arc::new(Liveness::new(name, now_ms))
    }

    /// A new generation of child `i`.
    fn start_one(&mut self, i: usize, now_ms: i64) -> anyhow::Result<Running> {
        let live = self.new_liveness(self.children[i].spec.name, now_ms);
        let c = &mut self.children[i];
        c.live = live.clone();
        c.last_ping_ms = now_ms;
        (c.spec.start)(live)
    }

    fn tick(&mut self, now: i64) {
        let heartbeat_ms = self.policy.heartbeat_ms();
        for i in 0..self.children.len() {
            let c = &mut self.children[i];
            if let Some(run) = &mut c.run {
                let reported = c.live.take_exit();
                let dead = !run.alive();
                let stalled = reported.is_none() && !dead && c.live.stalled(now, heartbeat_ms);
                if reported.is_some() || dead || stalled {
                    let (kind, message) = reported.unwrap_or_else(|| match stalled {
                        true => (
                            ExitKind::Stall,
                            format!("no progress for {} s", (now - c.live.last_progress_ms()) / 1000),
                        ),
                        false => (
                            ExitKind::Died,
                            "ended without a reason (its actor, task or thread is gone)".into(),
                        ),
                    });
                    // a stalled one is abandoned: it ends when its thread wakes up
                    run.stop();
                    c.run = None;
                    self.on_exit(i, kind, message, now);
                } else if now - c.last_ping_ms >= BEAT.as_millis() as i64 {
                    c.last_ping_ms = now;
                    run.ping();
                }
            }
            let c = &mut self.children[i];
            if !self.gave_up
                && c.run.is_none()
                && let Some(at) = c.restart_at_ms
                && now >= at
            {
                c.restart_at_ms = None;
                match self.start_one(i, now) {
                    Ok(run) => {
                        let c = &mut self.children[i];
                        c.run = Some(run);
                        c.rec.started();
                        tracing::info!(actor = c.spec.name, restarts = c.rec.restarts, "actor restarted");
                    }
                    Err(e) => self.on_exit(i, ExitKind::Failed, format!("restart failed: {e:#}"), now),
                }
            }
        }
        self.publish();
    }

    fn on_exit(&mut self, i: usize, kind: ExitKind, message: String, now: i64) {
        let c = &mut self.children[i];
        tracing::warn!(actor = c.spec.name, reason = kind.label(), detail = %message, "actor exited");
        match c.rec.on_exit(kind, message, now, &self.policy) {
            Verdict::RestartAfterMs(ms) => c.restart_at_ms = Some(now + ms as i64),
            Verdict::GiveUp { restarts_in_window } => {
                tracing::error!(
                    actor = c.spec.name,
                    restarts = restarts_in_window,
                    window_s = self.policy.window_s,
                    exit_code = EXIT_RESTART_LIMIT,
                    "restart limit exceeded; the process exits"
                );
                self.gave_up = true;
                self.view.0.exit.send_replace(Some(EXIT_RESTART_LIMIT));
            }
        }
    }

    fn publish(&self) {
        self.view
            .publish(self.children.iter().map(|c| c.rec.status()).collect());
    }

    /// Stops every running child, the last started first.
    fn stop_all(&mut self) {
        for c in self.children.iter_mut().rev() {
            let Some(mut run) = c.run.take() else { continue };
            run.stop();
            let t = Instant::now();
            while run.alive() && t.elapsed() < CHILD_STOP_TIMEOUT {
                std::thread::sleep(Duration::from_millis(10));
            }
            if run.alive() {
                tracing::warn!(actor = c.spec.name, "did not stop within {CHILD_STOP_TIMEOUT:?}");
            }
            c.rec.alive = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use actix::{Actor, Context, Handler, Message};

    use super::*;
    use crate::supervise::child::{Beat, spawn_actor, spawn_thread};
    use crate::supervise::faults::{Fault, Faults};

    fn build_policy(max_restarts: u32) -> RestartPolicy {
        RestartPolicy {
            max_restarts,
            window_s: 60,
            backoff_initial_ms: 10,
            backoff_max_ms: 50,
            heartbeat_s: 2,
        }
    }

    /// An actix system running on a thread of its own, as the server's.
    fn build_system() -> actix::System {
        let (tx, rx) = std_mpsc::channel();
        std::thread::spawn(move || {
            let sys = actix::System::new();
            let _ = tx.send(actix::System::current());
            let _ = sys.run();
        });
        rx.recv().unwrap()
    }

    /// A thread child that beats until stopped; `panic_first` generations panic at once.
    fn build_worker(generations: Arc<AtomicU32>, panic_first: u32) -> ChildSpec {
        ChildSpec::new("worker", move |live| {
            let n = generations.fetch_add(1, Ordering::SeqCst);
            spawn_thread(&live, "worker", move |live, stop| {
                assert!(n >= panic_first, "worker generation {n} panics");
                while !stop.load(Ordering::Acquire) {
                    live.beat(common::time::now_ms());
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(())
            })
        })
    }

    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(15), "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_child_that_panics_is_restarted_and_its_exit_is_shown() {
        let gens = Arc::new(AtomicU32::new(0));
        let view = SupervisorView::default();
        let mut s = Supervisor::start(
            build_system(),
            build_policy(5),
            vec![build_worker(gens.clone(), 1)],
            view.clone(),
            Faults::default(),
        )
        .unwrap();
        wait_for("the worker runs again", || {
            view.children()[0].alive && gens.load(Ordering::SeqCst) == 2
        });
        let c = &view.children()[0];
        assert_eq!(c.restarts, 1);
        let exit = c.last_exit.clone().unwrap();
        assert_eq!(exit.kind, ExitKind::Panic);
        assert!(exit.message.contains("worker generation 0 panics"), "{exit:?}");
        assert_eq!(view.exit_code(), None);
        s.stop();
        assert!(!view.children()[0].alive);
    }

    #[test]
    fn a_child_without_progress_for_a_heartbeat_is_restarted_as_stalled() {
        let gens = Arc::new(AtomicU32::new(0));
        let g = gens.clone();
        let spec = ChildSpec::new("sleeper", move |live| {
            let n = g.fetch_add(1, Ordering::SeqCst);
            spawn_thread(&live, "sleeper", move |live, stop| {
                while !stop.load(Ordering::Acquire) {
                    // the first generation hangs (no beats) until it is told to stop
                    if n > 0 {
                        live.beat(common::time::now_ms());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(())
            })
        });
        let view = SupervisorView::default();
        let _s = Supervisor::start(
            build_system(),
            build_policy(5),
            vec![spec],
            view.clone(),
            Faults::default(),
        )
        .unwrap();
        wait_for("a restart after the heartbeat", || {
            view.children()[0].restarts == 1
        });
        let exit = view.children()[0].last_exit.clone().unwrap();
        assert_eq!(exit.kind, ExitKind::Stall);
        assert!(exit.message.starts_with("no progress for 2 s"), "{exit:?}");
        wait_for("the second generation runs", || view.children()[0].alive);
    }

    #[test]
    fn past_the_restart_intensity_the_supervisor_gives_up_with_exit_code_70() {
        let gens = Arc::new(AtomicU32::new(0));
        let view = SupervisorView::default();
        let mut exit = view.watch_exit();
        let _s = Supervisor::start(
            build_system(),
            build_policy(2),
            vec![build_worker(gens.clone(), u32::MAX)],
            view.clone(),
            Faults::default(),
        )
        .unwrap();
        wait_for("the supervisor gives up", || view.exit_code().is_some());
        assert_eq!(view.exit_code(), Some(EXIT_RESTART_LIMIT));
        assert!(exit.has_changed().unwrap());
        assert_eq!(*exit.borrow_and_update(), Some(70));
        // it restarts nothing more: the first run and two restarts
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(gens.load(Ordering::SeqCst), 3);
        assert_eq!(view.children()[0].restarts, 2);
    }

    struct Counter;
    impl Actor for Counter {
        type Context = Context<Self>;
    }
    impl Handler<Beat> for Counter {
        type Result = ();
        fn handle(&mut self, m: Beat, _: &mut Context<Self>) {
            m.record();
        }
    }
    #[derive(Message)]
    #[rtype(result = "u32")]
    struct Generation;
    struct Numbered(u32);
    impl Actor for Numbered {
        type Context = Context<Self>;
    }
    impl Handler<Beat> for Numbered {
        type Result = ();
        fn handle(&mut self, m: Beat, _: &mut Context<Self>) {
            m.record();
        }
    }
    impl Handler<Generation> for Numbered {
        type Result = u32;
        fn handle(&mut self, _: Generation, _: &mut Context<Self>) -> u32 {
            self.0
        }
    }

    #[test]
    fn an_actor_that_panics_in_a_handler_is_restarted_and_reached_through_its_slot() {
        let faults = Faults::default();
        let slot: crate::supervise::slot::Slot<Numbered> = Default::default();
        let gens = Arc::new(AtomicU32::new(0));
        let (t_slot, t_gens) = (slot.clone(), gens.clone());
        let numbered = ChildSpec::new("numbered", move |live| {
            let n = t_gens.fetch_add(1, Ordering::SeqCst);
            let (addr, run) = spawn_actor(&live, move |_| Numbered(n));
            t_slot.set(addr);
            Ok(run)
        });
        // a neighbour that must not notice
        let counter = ChildSpec::new("counter", |live| Ok(spawn_actor(&live, |_| Counter).1));
        let view = SupervisorView::default();
        let _s = Supervisor::start(
            build_system(),
            build_policy(5),
            vec![counter, numbered],
            view.clone(),
            faults.clone(),
        )
        .unwrap();
        faults.arm("numbered", Fault::Panic);
        wait_for("a restart after the panic", || {
            view.children()[1].restarts == 1 && view.children()[1].alive
        });
        let exit = view.children()[1].last_exit.clone().unwrap();
        assert_eq!(exit.kind, ExitKind::Panic);
        assert!(
            exit.message.contains("fault injected: numbered panics"),
            "{exit:?}"
        );
        assert_eq!(view.children()[0].restarts, 0, "{:?}", view.children());
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert_eq!(rt.block_on(slot.send(Generation)).unwrap(), 1);
    }
}
