//! Restart decisions (pure): when to restart a child, after how long, and when to give up so
//! that systemd restarts the whole process. [`RestartPolicy`] is the `[supervisor]` section.
//!
//! Restart intensity is one_for_one, per child: at most `max_restarts` within `window_s`; the
//! delay before a restart doubles with each restart still inside the window, from
//! `backoff_initial_ms` up to `backoff_max_ms`. One exit more inside the window is past the
//! intensity: the supervisor gives up and the process exits with
//! [`super::supervisor::EXIT_RESTART_LIMIT`].

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// `[supervisor]`: restart intensity, backoff and the heartbeat of every child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    /// Restarts allowed per child within `window_s`; one more exit and the process exits.
    #[serde(default = "default_max_restarts")]
    pub max_restarts: u32,
    #[serde(default = "default_window_s")]
    pub window_s: u64,
    /// First restart delay; doubles per restart within the window, capped at `backoff_max_ms`.
    #[serde(default = "default_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    #[serde(default = "default_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// A child that records no progress for this long is stalled and restarted. Children beat
    /// every [`super::child::BEAT`]; the ingest client's MQTT keep-alive is 30 s.
    #[serde(default = "default_heartbeat_s")]
    pub heartbeat_s: u64,
}

/// The shortest heartbeat accepted: children beat every second.
pub const MIN_HEARTBEAT_S: u64 = 2;
/// The longest window or heartbeat accepted (a year, as every other duration of the config).
pub const MAX_S: u64 = 365 * 24 * 3600;

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
    /// Every problem as `{prefix}.{key}: message`.
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut p = Vec::new();
        if self.max_restarts == 0 {
            p.push(format!("{prefix}.max_restarts: must be at least 1"));
        }
        if self.window_s == 0 || self.window_s > MAX_S {
            p.push(format!(
                "{prefix}.window_s: {} is not between 1 and {}",
                self.window_s, MAX_S
            ));
        }
        if self.backoff_initial_ms == 0 || self.backoff_initial_ms > self.backoff_max_ms {
            p.push(format!(
                "{prefix}.backoff_initial_ms: need 0 < backoff_initial_ms ({}) <= backoff_max_ms ({})",
                self.backoff_initial_ms, self.backoff_max_ms
            ));
        }
        if self.backoff_max_ms > MAX_S * 1000 {
            p.push(format!(
                "{prefix}.backoff_max_ms: {} is longer than a year",
                self.backoff_max_ms
            ));
        }
        if self.heartbeat_s < MIN_HEARTBEAT_S || self.heartbeat_s > MAX_S {
            p.push(format!(
                "{prefix}.heartbeat_s: {} is not between {MIN_HEARTBEAT_S} and {}",
                self.heartbeat_s, MAX_S
            ));
        }
        p
    }

    pub fn heartbeat_ms(&self) -> i64 {
        self.heartbeat_s as i64 * 1000
    }
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitKind {
    /// It panicked.
    Panic,
    /// It made no progress for a heartbeat (it was stopped).
    Stall,
    /// Its actor is gone without a recorded reason.
    Died,
    /// It returned on its own (a run loop that should run until stopped).
    Ended,
    /// It failed: starting it, or an error its loop could not get past.
    Failed,
}

impl ExitKind {
    /// The `reason` label of `/metrics`.
    pub fn label(self) -> &'static str {
        match self {
            ExitKind::Panic => "panic",
            ExitKind::Stall => "stall",
            ExitKind::Died => "died",
            ExitKind::Ended => "ended",
            ExitKind::Failed => "failed",
        }
    }
}

/// Why and when a child last exited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exit {
    pub kind: ExitKind,
    pub message: String,
    pub at_ms: i64,
}

/// What to do about a child that exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    RestartAfterMs(u64),
    /// Past the restart intensity: the process exits non-zero.
    GiveUp {
        restarts_in_window: usize,
    },
}

/// One child as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChildStatus {
    pub name: String,
    pub alive: bool,
    pub restarts: u32,
    pub last_exit: Option<Exit>,
}

/// The supervisor's record of one child.
#[derive(Debug, Clone)]
pub struct ChildRecord {
    pub name: &'static str,
    pub restarts: u32,
    recent: VecDeque<i64>,
    pub last_exit: Option<Exit>,
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

    /// The child exited at `now_ms`.
    pub fn on_exit(&mut self, kind: ExitKind, message: String, now_ms: i64, p: &RestartPolicy) -> Verdict {
        self.alive = false;
        self.last_exit = Some(Exit {
            kind,
            message,
            at_ms: now_ms,
        });
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

    pub fn status(&self) -> ChildStatus {
        ChildStatus {
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

    pub(crate) fn build_policy() -> RestartPolicy {
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
        let p = build_policy();
        let mut c = ChildRecord::new("alerts");
        let verdicts: Vec<Verdict> = (0..6)
            .map(|i| c.on_exit(ExitKind::Panic, "panic: boom".into(), i * 1000, &p))
            .collect();
        assert_eq!(
            verdicts,
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
        let last = c.status().last_exit.unwrap();
        assert_eq!(
            (last.kind, last.message.as_str(), last.at_ms),
            (ExitKind::Panic, "panic: boom", 5000)
        );
    }

    #[test]
    fn restarts_outside_the_window_are_forgotten_and_the_delay_starts_small_again() {
        let p = build_policy();
        let mut c = ChildRecord::new("writer");
        for i in 0..5 {
            assert!(matches!(
                c.on_exit(ExitKind::Stall, "x".into(), i, &p),
                Verdict::RestartAfterMs(_)
            ));
        }
        assert_eq!(
            c.on_exit(ExitKind::Stall, "x".into(), 61_000 + 5, &p),
            Verdict::RestartAfterMs(100)
        );
        assert_eq!(c.restarts, 6, "the count is since start, not per window");
    }

    #[test]
    fn a_restarted_child_is_alive_with_its_last_exit_kept() {
        let p = build_policy();
        let mut c = ChildRecord::new("fleet");
        assert!(!c.status().alive, "not alive before its first start");
        c.started();
        c.on_exit(ExitKind::Died, "gone".into(), 10, &p);
        assert!(!c.status().alive);
        c.started();
        let s = c.status();
        assert!(s.alive);
        assert_eq!(s.restarts, 1);
        assert_eq!(s.last_exit.map(|e| e.kind), Some(ExitKind::Died));
    }

    #[test]
    fn the_policy_names_every_bad_key() {
        let bad = RestartPolicy {
            max_restarts: 0,
            window_s: 0,
            backoff_initial_ms: 500,
            backoff_max_ms: 100,
            heartbeat_s: 1,
        };
        let p = bad.validate("supervisor");
        for key in ["max_restarts", "window_s", "backoff_initial_ms", "heartbeat_s"] {
            assert!(
                p.iter().any(|m| m.starts_with(&format!("supervisor.{key}:"))),
                "{key} not named: {p:?}"
            );
        }
        assert!(RestartPolicy::default().validate("supervisor").is_empty());
    }
}
