//! Restart decisions (pure): when to restart a child, after how long, and when to give up so
//! that systemd restarts the whole process. [`RestartPolicy`] is the `[supervisor]` section.

use std::collections::VecDeque;

use common::ActorStatus;
use serde::Deserialize;

use crate::shared::problem::ConfigProblem;

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    /// Restarts allowed per child within `window_s` before the agent exits non-zero.
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
    #[serde(default = "default_window_s")]
    pub window_s: u64,
    /// First restart delay; doubles per restart within the window, capped at `backoff_max_ms`.
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// A child that records no progress for this long is restarted.
    #[serde(default = "default_heartbeat_s")]
    pub heartbeat_s: u64,
}

fn default_max_restarts() -> u32 {
    5
}
fn default_window_s() -> u64 {
    60
}
fn default_backoff_initial_ms() -> u64 {
    250
}
fn default_backoff_max_ms() -> u64 {
    10_000
}
fn default_heartbeat_s() -> u64 {
    // well above the link's longest reconnect wait (10 s, +50 % jitter) plus a connect timeout
    60
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_restarts: default_max_restarts(),
            window_s: default_window_s(),
            backoff_initial_ms: default_backoff_initial_ms(),
            backoff_max_ms: default_backoff_max_ms(),
            heartbeat_s: default_heartbeat_s(),
        }
    }
}

impl RestartPolicy {
    pub fn validate(&self, prefix: &str) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        let mut bad = |k: &str, m: String| {
            p.push(ConfigProblem {
                key: format!("{prefix}.{k}"),
                message: m,
            })
        };
        if self.max_restarts == 0 {
            bad("max_restarts", "must be at least 1".into());
        }
        if self.window_s == 0 {
            bad("window_s", "must be at least 1".into());
        }
        if self.backoff_initial_ms == 0 || self.backoff_initial_ms > self.backoff_max_ms {
            bad(
                "backoff_initial_ms",
                format!(
                    "need 0 < backoff_initial_ms ({}) <= backoff_max_ms ({})",
                    self.backoff_initial_ms, self.backoff_max_ms
                ),
            );
        }
        if self.heartbeat_s < 5 {
            bad("heartbeat_s", format!("{} is below 5", self.heartbeat_s));
        }
        p
    }
}

/// What to do about a child that exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    RestartAfterMs(u64),
    /// Past the restart intensity: the agent exits non-zero.
    GiveUp {
        restarts_in_window: usize,
    },
}

/// The supervisor's record of one child.
#[derive(Debug, Clone)]
pub struct ChildRecord {
    pub name: &'static str,
    pub restarts: u32,
    recent: VecDeque<i64>,
    pub last_exit: Option<String>,
    pub alive: bool,
}

impl ChildRecord {
    pub fn new(name: &'static str) -> Self {
        ChildRecord {
            name,
            restarts: 0,
            recent: VecDeque::new(),
            last_exit: None,
            alive: false,
        }
    }

    /// The child exited (panic, error or stall) at `now_ms`.
    pub fn on_exit(&mut self, reason: String, now_ms: i64, p: &RestartPolicy) -> Verdict {
        self.alive = false;
        self.last_exit = Some(reason);
        let window = p.window_s as i64 * 1000;
        while self.recent.front().is_some_and(|&t| now_ms - t > window) {
            self.recent.pop_front();
        }
        if self.recent.len() as u32 >= p.max_restarts {
            return Verdict::GiveUp {
                restarts_in_window: self.recent.len(),
            };
        }
        let n = self.recent.len() as u32;
        self.recent.push_back(now_ms);
        self.restarts += 1;
        let delay = p
            .backoff_initial_ms
            .saturating_mul(1u64 << n.min(20))
            .min(p.backoff_max_ms);
        Verdict::RestartAfterMs(delay)
    }

    pub fn started(&mut self) {
        self.alive = true;
    }

    pub fn status(&self) -> ActorStatus {
        ActorStatus {
            name: self.name.to_string(),
            alive: self.alive,
            restarts: self.restarts,
            last_exit: self.last_exit.clone(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn policy() -> RestartPolicy {
        RestartPolicy {
            max_restarts: 5,
            window_s: 60,
            backoff_initial_ms: 100,
            backoff_max_ms: 1000,
            heartbeat_s: 30,
        }
    }

    #[test]
    fn restarts_back_off_and_give_up_past_the_intensity() {
        let p = policy();
        let mut c = ChildRecord::new("collector");
        let delays: Vec<Verdict> = (0..6).map(|i| c.on_exit("panic".into(), i * 1000, &p)).collect();
        assert_eq!(
            delays,
            vec![
                Verdict::RestartAfterMs(100),
                Verdict::RestartAfterMs(200),
                Verdict::RestartAfterMs(400),
                Verdict::RestartAfterMs(800),
                Verdict::RestartAfterMs(1000),
                Verdict::GiveUp {
                    restarts_in_window: 5
                },
            ]
        );
        assert_eq!(c.restarts, 5);
        assert_eq!(c.status().last_exit.as_deref(), Some("panic"));
    }

    #[test]
    fn restarts_outside_the_window_are_forgotten() {
        let p = policy();
        let mut c = ChildRecord::new("link");
        for i in 0..5 {
            assert!(matches!(c.on_exit("x".into(), i, &p), Verdict::RestartAfterMs(_)));
        }
        // a minute later the slate is clean, and the delay starts small again
        assert_eq!(
            c.on_exit("x".into(), 61_000 + 5, &p),
            Verdict::RestartAfterMs(100)
        );
    }

    #[test]
    fn three_panics_are_three_restarts() {
        let p = policy();
        let mut c = ChildRecord::new("collector");
        for i in 0..3 {
            assert!(matches!(
                c.on_exit("panic: boom".into(), i * 10, &p),
                Verdict::RestartAfterMs(_)
            ));
            c.started();
        }
        assert_eq!(c.status().restarts, 3);
        assert!(c.status().alive);
    }
}
