//! Rollouts (pure): one action to many machines at a rate, stopped when too many fail.

use std::collections::VecDeque;

use common::DeviceId;
use common::command::Action;
use serde::{Deserialize, Serialize};

use super::book::{CmdState, CommandBook};

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
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RolloutProgress {
    pub dispatched: usize,
    pub remaining: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub pending: usize,
}

impl Rollout {
    /// Devices due now, at `per_minute` (a sliding minute).
    pub fn due(&mut self, now_ms: i64) -> Vec<DeviceId> {
        if self.state != RolloutState::Running {
            return Vec::new();
        }
        let in_last_minute = self
            .dispatched_at
            .iter()
            .filter(|&&t| now_ms - t < 60_000)
            .count() as u32;
        let room = self.per_minute.saturating_sub(in_last_minute) as usize;
        let n = room.min(self.remaining.len());
        let out: Vec<DeviceId> = self.remaining.drain(..n).collect();
        self.dispatched_at.extend(std::iter::repeat_n(now_ms, out.len()));
        out
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
        p
    }

    /// Aborts or completes the rollout when it is time; returns true on a change.
    pub fn evaluate(&mut self, book: &CommandBook) -> bool {
        if self.state != RolloutState::Running {
            return false;
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
        if p.remaining == 0 && p.pending == 0 {
            self.state = RolloutState::Completed;
            self.detail = Some(format!("{} succeeded, {} failed", p.succeeded, p.failed));
            return true;
        }
        false
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
        }
    }

    #[test]
    fn a_rollout_dispatches_at_its_rate() {
        let mut r = build_rollout(20, 6);
        assert_eq!(r.due(0).len(), 6);
        assert_eq!(r.due(30_000).len(), 0);
        assert_eq!(r.due(60_000).len(), 6);
    }

    #[test]
    fn a_rollout_stops_at_the_abort_threshold() {
        let mut r = build_rollout(20, 100);
        let mut b = CommandBook::default();
        for (i, dev) in r.due(0).into_iter().take(6).enumerate() {
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
        assert!(r.evaluate(&b));
        assert_eq!(r.state, RolloutState::Aborted);
        assert!(r.remaining.is_empty());
        assert!(r.detail.unwrap().contains("2 of 6"));
    }

    #[test]
    fn a_rollout_under_the_threshold_completes() {
        let mut r = build_rollout(3, 100);
        let mut b = CommandBook::default();
        for (i, dev) in r.due(0).into_iter().enumerate() {
            let id = format!("c{i}");
            b.insert(rec(&id, dev.as_str(), 0, 60_000), true, 0);
            r.commands.push(id.clone());
            b.on_result(&dev, &result(&id, CommandStatus::Succeeded), 1);
        }
        assert!(r.evaluate(&b));
        assert_eq!(r.state, RolloutState::Completed);
    }
}
