//! Rollouts (pure): one action to many machines at a rate, stopped when too many fail, or,
//! with a health gate ([`super::gate`]), when machines that ran it got worse.
//!
//! ```text
//! running -> completed
//!    |  ^ resume (an operator)
//!    v  |
//! paused --(pause_s without a resume)--> aborted
//!    `-- abort (an operator) ----------> aborted <-- too many failed / abort
//! ```
//!
//! A gated rollout goes batch by batch (`batch_size` machines, at most `per_minute` a
//! minute): each machine of the next batch is watched for the settle window before its
//! command (its baseline), and the batch after it goes only when every machine of this one
//! was judged healthy (or its command failed: that counts against `abort_failed_pct`).
//! Every step ends: the baseline after one settle window, a command at its TTL (the book
//! times it out), the window after it with a verdict or NoData, a pause at `pause_s`.

use std::collections::{BTreeMap, VecDeque};

use common::DeviceId;
use common::command::Action;
use serde::{Deserialize, Serialize};

use super::book::{CmdState, CommandBook};
use super::gate::{GateSpec, Sample, Verdict, Watch};

/// Which machines a rollout targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    All,
    Site(String),
    Tag(String),
    Devices(Vec<DeviceId>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    Running,
    Completed,
    Aborted,
    /// A machine got worse after the command (last: sled keeps rollouts as bincode).
    Paused,
}

/// One action across many machines at a rate, stopping when too many fail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: String,
    pub action: Action,
    pub target: Target,
    pub per_minute: u32,
    /// Stop when more than this percentage of finished commands failed (or were rejected,
    /// expired or timed out), once at least `min_finished` finished.
    pub abort_failed_pct: f64,
    pub min_finished: u32,
    pub ttl_s: u64,
    pub reason: String,
    pub issued_by: String,
    pub created_ms: i64,
    pub state: RolloutState,
    pub remaining: VecDeque<DeviceId>,
    pub commands: Vec<String>,
    pub dispatched_at: Vec<i64>,
    pub detail: Option<String>,
    /// The health gate (None: stopped by failures only).
    #[serde(default)]
    pub gate: Option<GateSpec>,
    /// Machines per batch of a gated rollout (0: `per_minute`).
    #[serde(default)]
    pub batch_size: u32,
    /// Machines watched by the gate: the next batch and those that ran the command.
    #[serde(default)]
    pub watch: BTreeMap<DeviceId, Watch>,
    /// When it paused.
    #[serde(default)]
    pub paused_ms: Option<i64>,
    /// How many times an operator resumed or aborted it. Several instances: an operator's
    /// change made on any instance wins over the leader's older copy (the store keeps the
    /// higher count, and the leader adopts it: `super::actor::cluster`).
    #[serde(default)]
    pub operated: u32,
}

/// A rollout as sled kept it before the health gate (bincode is positional: the fields
/// above up to `detail`). Read at start so a rollout in flight during an upgrade carries on,
/// ungated, instead of being dropped.
#[derive(Debug, Clone, Deserialize)]
pub struct RolloutV1 {
    pub id: String,
    pub action: Action,
    pub target: Target,
    pub per_minute: u32,
    pub abort_failed_pct: f64,
    pub min_finished: u32,
    pub ttl_s: u64,
    pub reason: String,
    pub issued_by: String,
    pub created_ms: i64,
    pub state: RolloutState,
    pub remaining: VecDeque<DeviceId>,
    pub commands: Vec<String>,
    pub dispatched_at: Vec<i64>,
    pub detail: Option<String>,
}

impl From<RolloutV1> for Rollout {
    fn from(r: RolloutV1) -> Self {
        Rollout {
            id: r.id,
            action: r.action,
            target: r.target,
            per_minute: r.per_minute,
            abort_failed_pct: r.abort_failed_pct,
            min_finished: r.min_finished,
            ttl_s: r.ttl_s,
            reason: r.reason,
            issued_by: r.issued_by,
            created_ms: r.created_ms,
            state: r.state,
            remaining: r.remaining,
            commands: r.commands,
            dispatched_at: r.dispatched_at,
            detail: r.detail,
            gate: None,
            batch_size: 0,
            watch: BTreeMap::new(),
            paused_ms: None,
            operated: 0,
        }
    }
}

/// Why an operator's resume or abort was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    #[error("rollout {id} is {state:?}: only a paused rollout can be resumed")]
    NotPaused { id: String, state: RolloutState },
    #[error("rollout {id} is already {state:?}")]
    Finished { id: String, state: RolloutState },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RolloutProgress {
    pub dispatched: usize,
    pub remaining: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub pending: usize,
    /// Gated: machines judged healthy, worse (or without readings), and still watched.
    pub healthy: usize,
    pub worse: usize,
    pub watching: usize,
}

impl Rollout {
    /// Devices due now, at `per_minute` (a sliding minute).
    pub fn due(&mut self, now_ms: i64, book: &CommandBook) -> Vec<DeviceId> {
        if self.state != RolloutState::Running {
            return Vec::new();
        }
        let in_last_minute = self
            .dispatched_at
            .iter()
            .filter(|&&t| now_ms - t < 60_000)
            .count() as u32;
        let room = self.per_minute.saturating_sub(in_last_minute) as usize;
        let mut n = room.min(self.remaining.len());
        if let Some(spec) = self.gate.clone() {
            let batch = if self.batch_size == 0 {
                self.per_minute
            } else {
                self.batch_size
            } as usize;
            // the next batch is watched from now on (its baseline)
            for d in self.remaining.iter().take(batch) {
                self.watch.entry(d.clone()).or_insert_with(|| Watch::new(now_ms));
            }
            let in_flight = self.in_flight(book);
            let ready = self
                .remaining
                .iter()
                .take(batch)
                .all(|d| self.watch.get(d).is_some_and(|w| w.baseline_ready(&spec, now_ms)));
            if in_flight > 0 || !ready || n < batch.min(self.remaining.len()) {
                return Vec::new();
            }
            n = batch.min(self.remaining.len());
        }
        let out: Vec<DeviceId> = self.remaining.drain(..n).collect();
        for d in &out {
            if let Some(w) = self.watch.get_mut(d) {
                w.dispatched_ms = Some(now_ms);
            }
        }
        if self.gate.is_some() {
            // the batch after this one: its baseline while this one settles
            let batch = if self.batch_size == 0 {
                self.per_minute
            } else {
                self.batch_size
            } as usize;
            for d in self.remaining.iter().take(batch) {
                self.watch.entry(d.clone()).or_insert_with(|| Watch::new(now_ms));
            }
        }
        self.dispatched_at.extend(std::iter::repeat_n(now_ms, out.len()));
        out
    }

    /// Machines that ran (or are running) the command and have no verdict yet.
    fn in_flight(&self, book: &CommandBook) -> usize {
        let failed: std::collections::BTreeSet<&DeviceId> = self
            .commands
            .iter()
            .filter_map(|id| book.get(id))
            .filter(|r| r.state.is_final() && r.state != CmdState::Succeeded)
            .map(|r| &r.device)
            .collect();
        self.watch
            .iter()
            .filter(|(d, w)| w.dispatched_ms.is_some() && w.verdict.is_none() && !failed.contains(d))
            .count()
    }

    /// Machines whose readings the gate wants now (the next batch, and those in flight).
    pub fn watched(&self) -> Vec<DeviceId> {
        if self.gate.is_none() || !matches!(self.state, RolloutState::Running | RolloutState::Paused) {
            return Vec::new();
        }
        self.watch
            .iter()
            .filter(|(_, w)| w.verdict.is_none())
            .map(|(d, _)| d.clone())
            .collect()
    }

    /// A reading of a watched machine.
    pub fn observe(&mut self, device: &DeviceId, s: Sample) {
        if let Some(w) = self.watch.get_mut(device)
            && w.verdict.is_none()
        {
            w.observe(s);
        }
    }

    /// An operator resumes a paused rollout: the findings that paused it stand overridden.
    pub fn resume(&mut self, who: &str, now_ms: i64) -> Result<(), RolloutError> {
        if self.state != RolloutState::Paused {
            return Err(RolloutError::NotPaused {
                id: self.id.clone(),
                state: self.state,
            });
        }
        for w in self.watch.values_mut() {
            if let Some(v) = w.verdict.take() {
                w.verdict = Some(match v {
                    Verdict::Worse(t) | Verdict::NoData(t) => {
                        Verdict::Overridden(format!("{t}; resumed by {who}"))
                    }
                    other => other,
                });
            }
        }
        self.state = RolloutState::Running;
        self.paused_ms = None;
        self.operated += 1;
        self.detail = Some(format!("resumed by {who} at {now_ms}"));
        Ok(())
    }

    /// An operator aborts a running or paused rollout: no machine gets it any more.
    pub fn abort(&mut self, who: &str) -> Result<(), RolloutError> {
        if !matches!(self.state, RolloutState::Running | RolloutState::Paused) {
            return Err(RolloutError::Finished {
                id: self.id.clone(),
                state: self.state,
            });
        }
        self.state = RolloutState::Aborted;
        self.detail = Some(format!(
            "aborted by {who}; {} machines not started",
            self.remaining.len()
        ));
        self.remaining.clear();
        self.paused_ms = None;
        self.operated += 1;
        Ok(())
    }

    /// The findings that stop the rollout, by machine.
    fn stopping(&self) -> Vec<String> {
        self.watch
            .iter()
            .filter_map(|(d, w)| match &w.verdict {
                Some(v @ (Verdict::Worse(t) | Verdict::NoData(t))) => Some(format!(
                    "{d}: {}{t}",
                    if matches!(v, Verdict::NoData(_)) {
                        "no data, "
                    } else {
                        ""
                    }
                )),
                _ => None,
            })
            .collect()
    }

    /// The gate's part of [`Rollout::evaluate`]: commands that succeeded start their window
    /// after, verdicts pause, a pause that lasted `pause_s` aborts. True on a change.
    fn gate_step(&mut self, book: &CommandBook, now_ms: i64) -> bool {
        let Some(spec) = self.gate.clone() else {
            return false;
        };
        for id in &self.commands {
            if let Some(r) = book.get(id)
                && r.state == CmdState::Succeeded
                && let Some(w) = self.watch.get_mut(&r.device)
                && w.done_ms.is_none()
            {
                w.done_ms = Some(r.updated_ms);
            }
        }
        let mut changed = false;
        for w in self.watch.values_mut() {
            if w.verdict.is_none() && w.judge(&spec, now_ms).is_some() {
                changed = true;
            }
        }
        match self.state {
            RolloutState::Running => {
                let stop = self.stopping();
                if !stop.is_empty() {
                    self.state = RolloutState::Paused;
                    self.paused_ms = Some(now_ms);
                    self.detail = Some(format!(
                        "paused: {} machine(s) worse after the command ({}); resume or abort within {} s, or it aborts",
                        stop.len(),
                        stop.join("; "),
                        spec.pause_s
                    ));
                    return true;
                }
            }
            RolloutState::Paused
                if self
                    .paused_ms
                    .is_some_and(|p| now_ms - p >= spec.pause_s as i64 * 1000) =>
            {
                self.state = RolloutState::Aborted;
                self.detail = Some(format!(
                    "aborted: paused {} s without a resume ({}); {} machines not started",
                    spec.pause_s,
                    self.stopping().join("; "),
                    self.remaining.len()
                ));
                self.remaining.clear();
                return true;
            }
            _ => {}
        }
        changed
    }

    /// Whether a copy read from the shared store replaces this one: an operator changed it
    /// since (on any instance), or this instance does not advance rollouts (a follower
    /// shows what the leader wrote).
    pub fn replaced_by(&self, stored: &Rollout, leading: bool) -> bool {
        stored.operated > self.operated || (!leading && stored != self)
    }

    pub fn progress(&self, book: &CommandBook) -> RolloutProgress {
        let mut p = RolloutProgress {
            dispatched: self.commands.len(),
            remaining: self.remaining.len(),
            ..Default::default()
        };
        for id in &self.commands {
            match book.get(id).map(|r| r.state) {
                Some(CmdState::Succeeded) => p.succeeded += 1,
                Some(s) if s.is_final() => p.failed += 1,
                _ => p.pending += 1,
            }
        }
        for w in self.watch.values() {
            match &w.verdict {
                Some(v) if v.stops() => p.worse += 1,
                Some(_) => p.healthy += 1,
                None => p.watching += 1,
            }
        }
        p
    }

    /// Pauses, aborts or completes the rollout when it is time; returns true on a change of
    /// its state (or a verdict).
    pub fn evaluate(&mut self, book: &CommandBook, now_ms: i64) -> bool {
        let gated = self.gate_step(book, now_ms);
        if self.state != RolloutState::Running {
            return gated;
        }
        let p = self.progress(book);
        let finished = p.succeeded + p.failed;
        if finished as u32 >= self.min_finished.max(1) {
            let pct = p.failed as f64 * 100.0 / finished as f64;
            if pct > self.abort_failed_pct {
                self.state = RolloutState::Aborted;
                self.detail = Some(format!(
                    "aborted: {} of {finished} finished commands failed ({pct:.0} % > {} %); {} machines not started",
                    p.failed, self.abort_failed_pct, p.remaining
                ));
                self.remaining.clear();
                return true;
            }
        }
        if p.remaining == 0 && p.pending == 0 && self.in_flight(book) == 0 {
            self.state = RolloutState::Completed;
            self.detail = Some(match self.gate {
                Some(_) => format!(
                    "{} succeeded, {} failed; {} machines healthy after the command",
                    p.succeeded, p.failed, p.healthy
                ),
                None => format!("{} succeeded, {} failed", p.succeeded, p.failed),
            });
            return true;
        }
        gated
    }
}

#[cfg(test)]
mod tests {
    use common::command::CommandStatus;

    use super::*;
    use crate::commands::testkit::*;

    fn build_rollout(n: usize, per_minute: u32) -> Rollout {
        Rollout {
            id: "r1".into(),
            action: Action::DropCaches,
            target: Target::All,
            per_minute,
            abort_failed_pct: 20.0,
            min_finished: 5,
            ttl_s: 60,
            reason: "x".into(),
            issued_by: "op".into(),
            created_ms: 0,
            state: RolloutState::Running,
            remaining: (0..n).map(|i| d(&format!("m{i}"))).collect(),
            commands: Vec::new(),
            dispatched_at: Vec::new(),
            detail: None,
            gate: None,
            batch_size: 0,
            watch: BTreeMap::new(),
            paused_ms: None,
            operated: 0,
        }
    }

    #[test]
    fn a_rollout_dispatches_at_its_rate() {
        let mut r = build_rollout(20, 6);
        let b = CommandBook::default();
        assert_eq!(r.due(0, &b).len(), 6);
        assert_eq!(r.due(30_000, &b).len(), 0);
        assert_eq!(r.due(60_000, &b).len(), 6);
    }

    #[test]
    fn a_rollout_stops_at_the_abort_threshold() {
        let mut r = build_rollout(20, 100);
        let mut b = CommandBook::default();
        for (i, dev) in r.due(0, &CommandBook::default()).into_iter().take(6).enumerate() {
            let id = format!("c{i}");
            b.insert(rec(&id, dev.as_str(), 0, 60_000), true, 0);
            r.commands.push(id.clone());
            let status = if i < 4 {
                CommandStatus::Succeeded
            } else {
                CommandStatus::Failed
            };
            b.on_result(&dev, &result(&id, status), 1);
        }
        assert!(r.evaluate(&b, 1));
        assert_eq!(r.state, RolloutState::Aborted);
        assert!(r.remaining.is_empty());
        assert!(r.detail.unwrap().contains("2 of 6"));
    }

    #[test]
    fn a_rollout_under_the_threshold_completes() {
        let mut r = build_rollout(3, 100);
        let mut b = CommandBook::default();
        for (i, dev) in r.due(0, &CommandBook::default()).into_iter().enumerate() {
            let id = format!("c{i}");
            b.insert(rec(&id, dev.as_str(), 0, 60_000), true, 0);
            r.commands.push(id.clone());
            b.on_result(&dev, &result(&id, CommandStatus::Succeeded), 1);
        }
        assert!(r.evaluate(&b, 1));
        assert_eq!(r.state, RolloutState::Completed);
    }

    fn build_gated(n: usize) -> (Rollout, CommandBook) {
        let mut r = build_rollout(n, 100);
        r.gate = Some(GateSpec {
            settle_s: 10,
            max_accepted_drop_pct: 30.0,
            max_reject_ratio_rise_pct: 10.0,
            pause_s: 30,
        });
        r.batch_size = 2;
        (r, CommandBook::default())
    }

    /// Feeds every watched machine a reading a second from `from` to `to`: 10 accepted a
    /// second, half that for machines in `degraded`.
    fn feed(r: &mut Rollout, from: i64, to: i64, degraded: &[DeviceId]) {
        for t in (from..=to).step_by(1000) {
            for d in r.watched() {
                let acc = if degraded.contains(&d) {
                    (10 * from + 5 * (t - from)) as f64 / 1000.0
                } else {
                    10.0 * t as f64 / 1000.0
                };
                r.observe(
                    &d,
                    Sample {
                        ts_ms: t,
                        accepted: Some(acc),
                        rejected: Some(0.0),
                        health: Some(0),
                    },
                );
            }
        }
    }

    /// Dispatches what is due at `now` as commands that succeed at `now + 100`.
    fn dispatch(r: &mut Rollout, b: &mut CommandBook, now: i64) -> Vec<DeviceId> {
        let due = r.due(now, b);
        for dev in &due {
            let id = format!("c-{dev}");
            b.insert(rec(&id, dev.as_str(), now, 60_000), true, now);
            r.commands.push(id.clone());
            b.on_result(dev, &result(&id, CommandStatus::Succeeded), now + 100);
        }
        due
    }

    #[test]
    fn a_gated_rollout_waits_for_a_baseline_then_goes_batch_by_batch_while_machines_stay_healthy() {
        let (mut r, mut b) = build_gated(4);
        assert!(dispatch(&mut r, &mut b, 0).is_empty(), "no baseline yet");
        feed(&mut r, 0, 10_000, &[]);
        assert_eq!(dispatch(&mut r, &mut b, 10_000).len(), 2, "the first batch");
        feed(&mut r, 11_000, 15_000, &[]);
        r.evaluate(&b, 15_000);
        assert!(
            dispatch(&mut r, &mut b, 15_000).is_empty(),
            "the first batch is still watched"
        );
        feed(&mut r, 16_000, 21_000, &[]);
        r.evaluate(&b, 21_000);
        assert_eq!(r.progress(&b).healthy, 2);
        assert_eq!(dispatch(&mut r, &mut b, 21_000).len(), 2, "the second batch");
        feed(&mut r, 22_000, 33_000, &[]);
        assert!(r.evaluate(&b, 33_000));
        assert_eq!(r.state, RolloutState::Completed, "{:?}", r.detail);
    }

    #[test]
    fn a_gated_rollout_pauses_when_a_machine_loses_half_its_rate_and_aborts_without_a_resume() {
        let (mut r, mut b) = build_gated(6);
        assert!(dispatch(&mut r, &mut b, 0).is_empty(), "no baseline yet");
        feed(&mut r, 0, 10_000, &[]);
        let first = dispatch(&mut r, &mut b, 10_000);
        feed(&mut r, 11_000, 22_000, &first);
        assert!(r.evaluate(&b, 22_000));
        assert_eq!(r.state, RolloutState::Paused);
        assert!(r.detail.as_deref().unwrap().contains("-50 %"), "{:?}", r.detail);
        assert!(
            dispatch(&mut r, &mut b, 23_000).is_empty(),
            "nothing while paused"
        );
        assert!(!r.evaluate(&b, 40_000));
        assert!(r.evaluate(&b, 52_000));
        assert_eq!(r.state, RolloutState::Aborted);
        assert_eq!((r.commands.len(), r.remaining.len()), (2, 0));
        assert!(
            r.detail.as_deref().unwrap().contains("4 machines not started"),
            "{:?}",
            r.detail
        );
    }

    #[test]
    fn an_operator_resumes_a_paused_rollout_or_aborts_it() {
        let (mut r, mut b) = build_gated(6);
        assert!(dispatch(&mut r, &mut b, 0).is_empty(), "no baseline yet");
        feed(&mut r, 0, 10_000, &[]);
        let first = dispatch(&mut r, &mut b, 10_000);
        feed(&mut r, 11_000, 22_000, &first);
        r.evaluate(&b, 22_000);
        assert_eq!(r.state, RolloutState::Paused);
        r.abort("carol").unwrap();
        assert_eq!((r.state, r.remaining.len()), (RolloutState::Aborted, 0));
        let (mut r, mut b) = build_gated(6);
        assert!(dispatch(&mut r, &mut b, 0).is_empty(), "no baseline yet");
        feed(&mut r, 0, 10_000, &[]);
        let first = dispatch(&mut r, &mut b, 10_000);
        feed(&mut r, 11_000, 22_000, &first);
        r.evaluate(&b, 22_000);
        assert_eq!(r.resume("bob", 23_000), Ok(()));
        assert_eq!(r.state, RolloutState::Running);
        r.evaluate(&b, 24_000);
        assert_eq!(
            r.state,
            RolloutState::Running,
            "overridden findings do not pause again"
        );
        assert!(matches!(
            r.resume("bob", 25_000),
            Err(RolloutError::NotPaused { .. })
        ));
        r.abort("carol").unwrap();
        assert_eq!(r.state, RolloutState::Aborted);
        assert!(r.remaining.is_empty());
        assert!(matches!(r.abort("carol"), Err(RolloutError::Finished { .. })));
    }
}
