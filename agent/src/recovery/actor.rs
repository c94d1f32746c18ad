//! Recovery actor: follows the local escalation ladder on every health report, and runs remote
//! commands (issue 6) through the same gate: allow-list, interlock, rate limits
//! ([`crate::recovery::policy::RecoveryPolicy::decide`]). Actions run on a blocking thread
//! through an [`Executor`]; every action, run or refused, becomes an event.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use common::ActionOutcome;
use common::command::{Action, CommandResult, CommandStatus, SignedCommand};

use crate::buffer::{Body, BufferHandle};
use crate::collect::actor::Latest;
use crate::commands::executed::ExecutedStore;
use crate::commands::verify::Verdict;
use crate::messages::{HealthUpdate, StopNow};
use crate::recovery::events::{escalation_event, event_with_origin};
use crate::recovery::executor::{ExecOutcome, Executor};
use crate::recovery::interlock::Interlock;
use crate::recovery::policy::{Decision, PlannedAction, RecoveryPolicy, Source};
use crate::supervise::liveness::Liveness;

/// Liveness tick when no health report comes in.
const IDLE_PROGRESS: Duration = Duration::from_secs(10);
/// Longest an action may run (the executor has its own per-command timeouts).
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(120);

/// What remote commands need (see [`crate::commands`]).
#[derive(Clone)]
pub struct CommandParts {
    pub device: common::DeviceId,
    pub key: Option<[u8; 32]>,
    pub executed: Arc<dyn ExecutedStore>,
}

#[derive(Clone)]
pub struct RecoveryParts {
    pub commands: Option<CommandParts>,
    /// Survives restarts of the actor: the ladder position and the rate limits.
    pub policy: Arc<Mutex<RecoveryPolicy>>,
    pub interlock: Arc<Mutex<Interlock>>,
    pub executor: Arc<dyn Executor>,
    pub buffer: BufferHandle,
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
        let ev = event_with_origin(action, outcome, detail, origin);
        self.append(Body::Event(ev), "recovery event not stored");
    }

    /// Hands a record to the buffer actor, without waiting for it.
    fn append(&self, body: Body, what: &'static str) {
        let buffer = self.p.buffer.clone();
        actix::spawn(async move {
            if let Err(e) = buffer.append(common::time::now_ms(), body).await {
                tracing::error!(error = %e, "{what}");
            }
        });
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
        let (planned, escalations) = match self.p.policy.lock() {
            Ok(mut p) => {
                let planned: Vec<PlannedAction> = p.on_health(&report, now);
                (planned, p.take_escalations())
            }
            Err(_) => return,
        };
        for e in &escalations {
            tracing::warn!(check = %e.check, "recovery ladder exhausted; escalating");
            let ev = escalation_event(e);
            self.append(Body::Event(ev), "escalation event not stored");
        }
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

/// A command from the server, as received on the command topic.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoteCommand(pub SignedCommand);

impl RecoveryActor {
    fn report(&self, r: CommandResult) {
        self.append(Body::CmdResult(r), "command result not stored");
    }

    /// Stores the final result (so a repeat is answered with it), then reports it.
    fn finish(&self, store: Arc<dyn ExecutedStore>, r: CommandResult) {
        let stored = r.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = store.put(&stored.command_id, &stored) {
                tracing::error!(error = %e, "command result not recorded");
            }
        });
        self.report(r);
    }
}

impl Handler<RemoteCommand> for RecoveryActor {
    type Result = ();

    fn handle(&mut self, RemoteCommand(signed): RemoteCommand, ctx: &mut Context<Self>) {
        let Some(cp) = self.p.commands.clone() else { return };
        let now = common::time::now_ms();
        self.live.progress(now);
        match crate::commands::verify::check(&signed, cp.key.as_ref(), &cp.device, &*cp.executed, now) {
            Verdict::Reject { id, reason } => {
                tracing::warn!(command = %id, reason = %reason, "command rejected");
                let ev = common::Event {
                    severity: common::Severity::Warning,
                    kind: common::EventKind::Note,
                    message: format!("command {id} rejected: {reason}"),
                };
                self.append(Body::Event(ev), "event not stored");
                self.report(crate::commands::verify::result(
                    &id,
                    CommandStatus::Rejected,
                    String::new(),
                    Some(reason),
                ));
            }
            Verdict::Repeat(prev) => {
                tracing::info!(command = %prev.command_id, status = ?prev.status, "repeated command answered from the record");
                self.report(prev);
            }
            Verdict::DryRun(cmd) => {
                // the same gate as a real run, recording nothing in the policy; only the
                // answer is stored (a repeat gets it again)
                let il = self.p.interlock.lock().map(|i| i.clone()).unwrap_or_default();
                let decision = match self.p.policy.lock() {
                    Ok(mut p) => p.would_decide(&cmd.action, &Source::Remote(cmd.id.clone()), &il, now),
                    Err(_) => Decision::Refused("recovery policy unavailable".into()),
                };
                tracing::info!(command = %cmd.id, action = %cmd.action, decision = ?decision, "dry run");
                self.finish(cp.executed.clone(), dry_run_result(&cmd, &decision));
            }
            Verdict::Run(cmd) => {
                // The id is recorded durably before anything runs: at most once.
                let accepted =
                    crate::commands::verify::result(&cmd.id, CommandStatus::Accepted, String::new(), None);
                let store = cp.executed.clone();
                let a2 = accepted.clone();
                let job = tokio::task::spawn_blocking(move || store.put(&a2.command_id, &a2));
                ctx.spawn(job.into_actor(self).map(move |res, act, ctx| {
                    let why = match res {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some(e.to_string()),
                        Err(e) => Some(e.to_string()),
                    };
                    if let Some(why) = why {
                        tracing::error!(error = %why, command = %cmd.id, "cannot record the command id; not running it");
                        act.report(crate::commands::verify::result(
                            &cmd.id,
                            CommandStatus::Rejected,
                            String::new(),
                            Some(format!("cannot record the command id: {why}")),
                        ));
                        return;
                    }
                    act.report(accepted);
                    let now = common::time::now_ms();
                    let il = act.p.interlock.lock().map(|i| i.clone()).unwrap_or_default();
                    let decision = match act.p.policy.lock() {
                        Ok(mut p) => p.decide(&cmd.action, &Source::Remote(cmd.id.clone()), &il, now),
                        Err(_) => Decision::Refused("recovery policy unavailable".into()),
                    };
                    let origin = format!("command {} by {}", cmd.id, cmd.issued_by);
                    match decision {
                        Decision::Refused(reason) => {
                            act.event(&cmd.action, ActionOutcome::Refused, reason.clone(), &origin);
                            act.finish(
                                cp.executed.clone(),
                                crate::commands::verify::result(&cmd.id, CommandStatus::Rejected, String::new(), Some(reason)),
                            );
                        }
                        Decision::Allowed => {
                            act.report(crate::commands::verify::result(&cmd.id, CommandStatus::Running, String::new(), None));
                            let (id, store) = (cmd.id.clone(), cp.executed.clone());
                            act.execute(ctx, cmd.action.clone(), origin, move |act, out| {
                                let status = if out.ok { CommandStatus::Succeeded } else { CommandStatus::Failed };
                                let reason = (!out.ok).then(|| "the action failed".to_string());
                                act.finish(store, crate::commands::verify::result(&id, status, out.output.clone(), reason));
                            });
                        }
                    }
                }));
            }
        }
    }
}

/// The answer to a dry run: what would happen, and that nothing did.
pub fn dry_run_result(cmd: &common::command::Command, decision: &Decision) -> CommandResult {
    match decision {
        Decision::Allowed => crate::commands::verify::result(
            &cmd.id,
            CommandStatus::Succeeded,
            format!(
                "dry run: would run {} (signature, target device, expiry, allow list, interlock and rate limits pass); nothing was done",
                cmd.action
            ),
            None,
        ),
        Decision::Refused(reason) => crate::commands::verify::result(
            &cmd.id,
            CommandStatus::Rejected,
            format!("dry run: {} would be refused; nothing was done", cmd.action),
            Some(format!("dry run: {reason}")),
        ),
    }
}

impl Handler<StopNow> for RecoveryActor {
    type Result = ();
    fn handle(&mut self, _: StopNow, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
