//! AgentSupervisor: starts every child, watches it, restarts it one_for_one with backoff, and
//! exits the process non-zero past the restart intensity (systemd then restarts the agent).
//!
//! A child is dead when its mailbox is closed (an actor that panicked outside our
//! `catch_unwind`s), when it reported an exit reason through its [`Liveness`], or when it made
//! no progress for a heartbeat (it is stopped first). Restart counts and last exit reasons are
//! published in [`ActorStatuses`] for health reports and `/api/v1/status`.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use common::ActorStatus;

use super::liveness::Liveness;
use super::restart::{ChildRecord, RestartPolicy, Verdict};
use crate::messages::StopNow;

/// How often the supervisor looks at its children. A restart is not held to it: the
/// supervisor wakes at the restart's due time (it was 250 ms, 4 wakeups a second for a
/// look that finds nothing to do almost always).
pub const SUPERVISE_TICK: Duration = Duration::from_secs(1);

/// Exit code when a child exceeded its restart intensity.
pub const EXIT_RESTART_LIMIT: i32 = 70;
/// On shutdown, how long each child may take to stop before the next one is stopped.
pub const STOP_WAIT: Duration = Duration::from_secs(3);
/// How often a stopping child is looked at.
const STOP_POLL: Duration = Duration::from_millis(10);

/// A running child, as the supervisor sees it.
pub struct ChildRun {
    pub connected: Box<dyn Fn() -> bool>,
    pub stop: Box<dyn Fn()>,
}

/// How to (re)start one child.
pub trait ChildSpec: 'static {
    fn name(&self) -> &'static str;
    fn start(&mut self, live: Arc<Liveness>) -> ChildRun;
}

/// Latest status of every child, shared with health and the HTTP endpoint.
pub type ActorStatuses = Arc<Mutex<Vec<ActorStatus>>>;

struct Child {
    spec: Box<dyn ChildSpec>,
    rec: ChildRecord,
    live: Arc<Liveness>,
    run: Option<ChildRun>,
    restart_at_ms: Option<i64>,
}

pub struct AgentSupervisor {
    children: Vec<Child>,
    policy: RestartPolicy,
    pub statuses: ActorStatuses,
    /// Set when the agent gives up (the process should exit with it).
    pub exit_code: Arc<AtomicI32>,
    stopping: bool,
    /// `READY=1` once every child runs, `WATCHDOG=1` from this tick (no-op outside systemd).
    notify: crate::sdnotify::SdNotify,
}

impl AgentSupervisor {
    pub fn new(policy: RestartPolicy, specs: Vec<Box<dyn ChildSpec>>) -> Self {
        let now = common::time::now_ms();
        let children = specs
            .into_iter()
            .map(|spec| Child {
                rec: ChildRecord::new(spec.name()),
                spec,
                live: Arc::new(Liveness::new(now)),
                run: None,
                restart_at_ms: Some(now),
            })
            .collect();
        AgentSupervisor {
            children,
            policy,
            statuses: Arc::default(),
            exit_code: Arc::new(AtomicI32::new(0)),
            stopping: false,
            notify: crate::sdnotify::SdNotify::from_env(),
        }
    }

    fn supervise(&mut self, ctx: &mut Context<Self>) {
        if self.stopping {
            return;
        }
        let now = common::time::now_ms();
        let mut give_up = None;
        let mut wake_in_ms = u64::MAX;
        for c in &mut self.children {
            if let Some(run) = &c.run {
                let reported = c.live.take_exit();
                let dead = !(run.connected)();
                let stalled = c.live.stalled(now, &self.policy);
                if reported.is_some() || dead || stalled {
                    if stalled && !dead {
                        (run.stop)();
                    }
                    let reason = reported.unwrap_or_else(|| {
                        if dead {
                            "actor died (panic outside a handler guard)".to_string()
                        } else {
                            format!("no progress for {} s", (now - c.live.last_progress_ms()) / 1000)
                        }
                    });
                    c.run = None;
                    tracing::warn!(actor = c.rec.name, reason = %reason, "actor exited");
                    match c.rec.on_exit(reason, now, &self.policy) {
                        Verdict::RestartAfterMs(ms) => {
                            c.restart_at_ms = Some(now + ms as i64);
                            wake_in_ms = wake_in_ms.min(ms);
                        }
                        Verdict::GiveUp { restarts_in_window } => {
                            give_up = Some((c.rec.name, restarts_in_window));
                        }
                    }
                }
            }
            if c.run.is_none()
                && let Some(at) = c.restart_at_ms
                && now >= at
            {
                c.restart_at_ms = None;
                c.live = Arc::new(Liveness::new(now));
                let restarted = c.rec.restarts > 0;
                c.run = Some(c.spec.start(c.live.clone()));
                c.rec.started();
                if restarted {
                    tracing::info!(actor = c.rec.name, restarts = c.rec.restarts, "actor restarted");
                }
            }
        }
        if let Ok(mut s) = self.statuses.lock() {
            *s = self.children.iter().map(|c| c.rec.status()).collect();
        }
        if wake_in_ms < SUPERVISE_TICK.as_millis() as u64 {
            ctx.run_later(Duration::from_millis(wake_in_ms), |act, ctx| act.supervise(ctx));
        }
        let all_running = self.children.iter().all(|c| c.run.is_some());
        self.notify.on_tick(now, all_running);
        if let Some((name, n)) = give_up {
            tracing::error!(
                actor = name,
                restarts = n,
                window_s = self.policy.window_s,
                "restart limit exceeded; exiting"
            );
            self.exit_code.store(EXIT_RESTART_LIMIT, Ordering::SeqCst);
            self.stop_all();
            System::current().stop_with_code(EXIT_RESTART_LIMIT);
        }
    }

    fn stop_all(&mut self) {
        self.stopping = true;
        self.notify.stopping();
        for c in &mut self.children {
            if let Some(run) = c.run.take() {
                (run.stop)();
            }
        }
    }
}

impl Actor for AgentSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.supervise(ctx);
        ctx.run_interval(SUPERVISE_TICK, |act, ctx| act.supervise(ctx));
    }
}

/// Stop every child (shutdown), in the reverse order of their start, each one gone (or
/// [`STOP_WAIT`] passed) before the next is stopped: the buffer, started first, stops last,
/// after everything that appends to it. Answered when all are stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopChildren;

impl Handler<StopChildren> for AgentSupervisor {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, _: StopChildren, _: &mut Context<Self>) -> Self::Result {
        self.stopping = true;
        self.notify.stopping();
        let runs: Vec<ChildRun> = self
            .children
            .iter_mut()
            .rev()
            .filter_map(|c| c.run.take())
            .collect();
        Box::pin(
            async move {
                for run in runs {
                    (run.stop)();
                    let deadline = tokio::time::Instant::now() + STOP_WAIT;
                    while (run.connected)() && tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(STOP_POLL).await;
                    }
                }
            }
            .into_actor(self),
        )
    }
}

/// A child spec from a closure that starts an actor and returns its address.
pub struct FnSpec<A, F>
where
    A: Actor<Context = Context<A>> + Handler<StopNow>,
    F: FnMut(Arc<Liveness>) -> Addr<A> + 'static,
{
    pub name: &'static str,
    pub start: F,
    _a: std::marker::PhantomData<A>,
}

impl<A, F> FnSpec<A, F>
where
    A: Actor<Context = Context<A>> + Handler<StopNow>,
    F: FnMut(Arc<Liveness>) -> Addr<A> + 'static,
{
    pub fn boxed(name: &'static str, start: F) -> Box<dyn ChildSpec> {
        Box::new(FnSpec {
            name,
            start,
            _a: std::marker::PhantomData,
        })
    }
}

impl<A, F> ChildSpec for FnSpec<A, F>
where
    A: Actor<Context = Context<A>> + Handler<StopNow>,
    F: FnMut(Arc<Liveness>) -> Addr<A> + 'static,
{
    fn name(&self) -> &'static str {
        self.name
    }

    fn start(&mut self, live: Arc<Liveness>) -> ChildRun {
        let addr = (self.start)(live);
        let a1 = addr.clone();
        ChildRun {
            connected: Box::new(move || a1.connected()),
            stop: Box::new(move || addr.do_send(StopNow)),
        }
    }
}
