//! The commands actor's rollouts: dispatching them (the leader's job), the health gate's
//! readings, and the messages that start, show, resume and abort them.

use actix::prelude::*;
use common::DeviceId;
use common::command::Action;
use serde::Serialize;

use super::{CommandsActor, NewCommand, ROLLOUTS_JOB};
use crate::cluster::Role;
use crate::commands::gate::{GateSpec, Sample};
use crate::commands::rollout::{Rollout, RolloutError, RolloutProgress, RolloutState, Target};
use crate::commands::store::LeaderWrite;
use crate::messages::{MachineReading, ReadMachines};

impl CommandsActor {
    /// Dispatches and judges rollouts: the leader's job ([`ROLLOUTS_JOB`]); a follower leaves
    /// them to the leader (with sled, this instance always leads).
    pub(super) fn advance_rollouts(&mut self, now: i64) {
        let lead = match self.leadership.role(ROLLOUTS_JOB) {
            Role::Follower => return,
            Role::Leader(token) => token.map(|token| LeaderWrite {
                token,
                leadership: self.leadership.clone(),
            }),
        };
        let ids: Vec<String> = self.rollouts.keys().cloned().collect();
        for rid in ids {
            let Some(mut r) = self.rollouts.remove(&rid) else {
                continue;
            };
            let mut changed = false;
            for device in r.due(now, &self.book) {
                match self.create(NewCommand {
                    device: device.clone(),
                    action: r.action.clone(),
                    ttl_s: r.ttl_s,
                    reason: r.reason.clone(),
                    who: r.issued_by.clone(),
                    rollout: Some(rid.clone()),
                    dry_run: false,
                }) {
                    Ok(v) => r.commands.push(v.id),
                    Err(e) => tracing::error!(error = %e, device = %device, "rollout command not created"),
                }
                changed = true;
            }
            let before = r.state;
            if r.evaluate(&self.book, now) {
                changed = true;
                if r.state != before {
                    tracing::info!(rollout = %rid, state = ?r.state, detail = ?r.detail, "rollout state");
                    self.audit(serde_json::json!({
                        "ts_ms": now, "who": r.issued_by, "action": "rollout_result",
                        "rollout": rid, "state": r.state, "detail": r.detail,
                    }));
                }
            }
            if changed {
                self.store.put_rollout_led(&r, lead.clone());
            }
            self.rollouts.insert(rid, r);
        }
    }

    /// Asks the fleet actor for the readings of every machine a gate watches (one read at a
    /// time; the answer is fed to the rollouts).
    pub(super) fn read_gated(&mut self, ctx: &mut Context<Self>) {
        if self.reading {
            return;
        }
        let mut want: Vec<DeviceId> = self.rollouts.values().flat_map(|r| r.watched()).collect();
        if want.is_empty() {
            return;
        }
        want.sort();
        want.dedup();
        let Some(fleet) = self.readings.as_ref().and_then(|f| f()) else {
            return;
        };
        self.reading = true;
        ctx.spawn(
            fleet
                .send(ReadMachines(want))
                .into_actor(self)
                .map(|res, act, _| {
                    act.reading = false;
                    match res {
                        Ok(readings) => act.observe(readings),
                        Err(e) => tracing::warn!(error = %e, "machine readings for rollout gates not read"),
                    }
                }),
        );
    }

    fn observe(&mut self, readings: Vec<MachineReading>) {
        for m in readings {
            let s = Sample {
                ts_ms: m.ts_ms,
                accepted: m.accepted_total,
                rejected: m.rejected_total,
                health: m.health,
            };
            for r in self.rollouts.values_mut() {
                r.observe(&m.device, s);
            }
        }
    }
}

/// Start a rollout over already resolved devices. It cannot fail: its commands are created (and
/// may fail, logged) as the rollout proceeds.
#[derive(Message)]
#[rtype(result = "RolloutView")]
pub struct StartRollout {
    pub action: Action,
    pub target: Target,
    pub devices: Vec<DeviceId>,
    pub per_minute: u32,
    pub abort_failed_pct: f64,
    pub min_finished: u32,
    pub ttl_s: u64,
    pub reason: String,
    pub who: String,
    pub gate: Option<GateSpec>,
    pub batch_size: u32,
}

/// What the API shows of one machine a gated rollout watched.
#[derive(Debug, Clone, Serialize)]
pub struct WatchView {
    pub device: DeviceId,
    pub dispatched_ms: Option<i64>,
    pub done_ms: Option<i64>,
    pub samples: usize,
    pub verdict: Option<crate::commands::gate::Verdict>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RolloutView {
    pub id: String,
    pub action: Action,
    pub target: Target,
    pub per_minute: u32,
    pub abort_failed_pct: f64,
    pub state: RolloutState,
    pub detail: Option<String>,
    pub progress: RolloutProgress,
    pub commands: Vec<String>,
    pub created_ms: i64,
    pub issued_by: String,
    pub reason: String,
    pub gate: Option<GateSpec>,
    pub batch_size: u32,
    pub paused_ms: Option<i64>,
    pub machines: Vec<WatchView>,
}

impl CommandsActor {
    pub(super) fn rollout_view(&self, r: &Rollout) -> RolloutView {
        RolloutView {
            id: r.id.clone(),
            action: r.action.clone(),
            target: r.target.clone(),
            per_minute: r.per_minute,
            abort_failed_pct: r.abort_failed_pct,
            state: r.state,
            detail: r.detail.clone(),
            progress: r.progress(&self.book),
            commands: r.commands.clone(),
            created_ms: r.created_ms,
            issued_by: r.issued_by.clone(),
            reason: r.reason.clone(),
            gate: r.gate.clone(),
            batch_size: r.batch_size,
            paused_ms: r.paused_ms,
            machines: r
                .watch
                .iter()
                .map(|(d, w)| WatchView {
                    device: d.clone(),
                    dispatched_ms: w.dispatched_ms,
                    done_ms: w.done_ms,
                    samples: w.samples.len(),
                    verdict: w.verdict.clone(),
                })
                .collect(),
        }
    }
}

impl Handler<StartRollout> for CommandsActor {
    type Result = MessageResult<StartRollout>;
    fn handle(&mut self, m: StartRollout, _: &mut Context<Self>) -> Self::Result {
        let now = common::time::now_ms();
        let r = Rollout {
            id: format!("r{}", common::ids::random_hex(6)),
            action: m.action,
            target: m.target,
            per_minute: m.per_minute,
            abort_failed_pct: m.abort_failed_pct,
            min_finished: m.min_finished,
            ttl_s: m.ttl_s,
            reason: m.reason,
            issued_by: m.who,
            created_ms: now,
            state: RolloutState::Running,
            remaining: m.devices.into_iter().collect(),
            commands: Vec::new(),
            dispatched_at: Vec::new(),
            detail: None,
            gate: m.gate,
            batch_size: m.batch_size,
            watch: Default::default(),
            paused_ms: None,
            operated: 0,
        };
        self.audit(serde_json::json!({
            "ts_ms": now, "who": r.issued_by, "action": "rollout", "rollout": r.id,
            "requested": r.action.to_string(), "target": r.target, "machines": r.remaining.len(),
            "per_minute": r.per_minute, "abort_failed_pct": r.abort_failed_pct, "reason": r.reason,
            "gate": r.gate, "batch_size": r.batch_size,
        }));
        self.persist_rollout(&r);
        let v = self.rollout_view(&r);
        self.rollouts.insert(r.id.clone(), r);
        MessageResult(v)
    }
}

#[derive(Message)]
#[rtype(result = "Option<RolloutView>")]
pub struct GetRollout(pub String);

impl Handler<GetRollout> for CommandsActor {
    type Result = Option<RolloutView>;
    fn handle(&mut self, m: GetRollout, _: &mut Context<Self>) -> Self::Result {
        self.rollouts.get(&m.0).map(|r| self.rollout_view(r))
    }
}

/// Every rollout, newest first.
#[derive(Message)]
#[rtype(result = "Vec<RolloutView>")]
pub struct ListRollouts;

impl Handler<ListRollouts> for CommandsActor {
    type Result = MessageResult<ListRollouts>;
    fn handle(&mut self, _: ListRollouts, _: &mut Context<Self>) -> Self::Result {
        let mut v: Vec<RolloutView> = self.rollouts.values().map(|r| self.rollout_view(r)).collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.created_ms));
        MessageResult(v)
    }
}

/// Why an operator's resume or abort did not go through.
#[derive(Debug, thiserror::Error)]
pub enum RolloutOpError {
    #[error("no rollout {0}")]
    NotFound(String),
    #[error(transparent)]
    State(#[from] RolloutError),
}

/// An operator resumes a paused rollout (`resume: true`) or aborts one.
#[derive(Message)]
#[rtype(result = "Result<RolloutView, RolloutOpError>")]
pub struct OperateRollout {
    pub id: String,
    pub who: String,
    pub resume: bool,
}

impl Handler<OperateRollout> for CommandsActor {
    type Result = Result<RolloutView, RolloutOpError>;
    fn handle(&mut self, m: OperateRollout, _: &mut Context<Self>) -> Self::Result {
        let now = common::time::now_ms();
        let r = self
            .rollouts
            .get_mut(&m.id)
            .ok_or_else(|| RolloutOpError::NotFound(m.id.clone()))?;
        if m.resume {
            r.resume(&m.who, now)?;
        } else {
            r.abort(&m.who)?;
        }
        let line = serde_json::json!({
            "ts_ms": now, "who": m.who,
            "action": if m.resume { "rollout_resumed" } else { "rollout_aborted" },
            "rollout": m.id, "state": r.state, "detail": r.detail,
        });
        tracing::info!(rollout = %m.id, who = %m.who, state = ?r.state, "rollout operated");
        let r = r.clone();
        self.audit(line);
        self.persist_rollout(&r);
        Ok(self.rollout_view(&r))
    }
}
