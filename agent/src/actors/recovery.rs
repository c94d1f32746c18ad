//! Recovery actor: follows the local escalation ladder on every health report, and runs
//! remote commands (issue 6) through the same gate: allow-list, interlock, rate limits
//! ([`crate::recovery::RecoveryPolicy::decide`]). Actions run on a blocking thread through an
//! [`Executor`]; every action, run or refused, becomes an event.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use common::ActionOutcome;
use common::command::Action;
use common::topics::Kind;
use tokio::sync::Notify;

use crate::actors::collector::Latest;
use crate::actors::health::HealthUpdate;
use crate::actors::supervisor::StopNow;
use crate::buffer::Buffer;
use crate::recovery::{
    self, Decision, ExecOutcome, Executor, Interlock, PlannedAction, RecoveryPolicy, Source,
};
use crate::supervise::Liveness;

/// Liveness tick when no health report comes in.
const IDLE_PROGRESS: Duration = Duration::from_secs(10);
/// Longest an action may run (the executor has its own per-command timeouts).
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct RecoveryParts {
    /// Survives restarts of the actor: the ladder position and the rate limits.
    pub policy: Arc<Mutex<RecoveryPolicy>>,
    pub interlock: Arc<Mutex<Interlock>>,
    pub executor: Arc<dyn Executor>,
    pub buffer: Arc<Buffer>,
    pub wake: Arc<Notify>,
    pub latest: Latest,
}

pub struct RecoveryActor {
    p: RecoveryParts,
    live: Arc<Liveness>,
    running: bool,
}

impl RecoveryActor {
    pub fn new(p: RecoveryParts, live: Arc<Liveness>) -> Self {
        RecoveryActor {
            p,
            live,
            running: false,
        }
    }

    fn event(&self, action: &Action, outcome: ActionOutcome, detail: String, origin: &str) {
        let ev = recovery::event_with_origin(action, outcome, detail, origin);
        match self.p.buffer.append(Kind::Event, common::time::now_ms(), &ev) {
            Ok(_) => self.p.wake.notify_one(),
            Err(e) => tracing::error!(error = %e, "recovery event not stored"),
        }
    }

    /// Runs one allowed action; `done` gets the outcome on the actor.
    fn execute(
        &mut self,
        ctx: &mut Context<Self>,
        action: Action,
        origin: String,
        done: impl FnOnce(&mut Self, &ExecOutcome) + 'static,
    ) {
        self.running = true;
        let ex = self.p.executor.clone();
        let a = action.clone();
        let job = tokio::task::spawn_blocking(move || ex.execute(&a));
        let fut = async move { tokio::time::timeout(ACTION_TIMEOUT, job).await };
        ctx.spawn(fut.into_actor(self).map(move |res, act, _| {
            act.running = false;
            let out = match res {
                Ok(Ok(o)) => o,
                Ok(Err(e)) => ExecOutcome::new(false, format!("executor failed: {e}")),
                Err(_) => ExecOutcome::new(false, format!("timed out after {} s", ACTION_TIMEOUT.as_secs())),
            };
            tracing::info!(action = %action, ok = out.ok, origin = %origin, "recovery action done");
            act.event(&action, out.outcome(), out.output.clone(), &origin);
            done(act, &out);
        }));
    }
}

impl Actor for RecoveryActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(IDLE_PROGRESS, |act, _| act.live.progress(common::time::now_ms()));
    }
}

impl Handler<HealthUpdate> for RecoveryActor {
    type Result = ();

    fn handle(&mut self, HealthUpdate(report): HealthUpdate, ctx: &mut Context<Self>) {
        let now = common::time::now_ms();
        self.live.progress(now);
        if let (Ok(mut il), Ok(latest)) = (self.p.interlock.lock(), self.p.latest.lock())
            && let Some(t) = latest.as_ref()
        {
            il.observe_telemetry(t, now);
        }
        if self.running {
            return;
        }
        let planned: Vec<PlannedAction> = match self.p.policy.lock() {
            Ok(mut p) => p.on_health(&report, now),
            Err(_) => return,
        };
        for step in planned {
            let decision = {
                let il = self.p.interlock.lock().map(|i| i.clone()).unwrap_or_default();
                match self.p.policy.lock() {
                    Ok(mut p) => p.decide(&step.action, &Source::Local, &il, now),
                    Err(_) => return,
                }
            };
            match decision {
                Decision::Refused(reason) => {
                    tracing::info!(step = %step.describe(), reason = %reason, "recovery step refused");
                    self.event(&step.action, ActionOutcome::Refused, reason, &step.describe());
                    if let Ok(mut p) = self.p.policy.lock() {
                        p.record_outcome(&step, ActionOutcome::Refused, now);
                    }
                }
                Decision::Allowed => {
                    let policy = self.p.policy.clone();
                    let s = step.clone();
                    self.execute(ctx, step.action.clone(), step.describe(), move |_, out| {
                        if let Ok(mut p) = policy.lock() {
                            p.record_outcome(&s, out.outcome(), common::time::now_ms());
                        }
                    });
                    // one action at a time: the next report plans the next step
                    return;
                }
            }
        }
    }
}

impl Handler<StopNow> for RecoveryActor {
    type Result = ();
    fn handle(&mut self, _: StopNow, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
