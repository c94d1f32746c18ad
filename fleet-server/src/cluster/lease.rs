//! The leader lease as this instance sees it: pure decisions, no IO, every function takes the
//! time (`now`, milliseconds of this process's monotonic clock, [`mono_ms`]).
//!
//! One [`Lease`] per leader-only job (`leader_lease.name`). The database decides who holds a
//! lease (one statement: take it when it expired or is already ours; taking it over bumps
//! `epoch`; `fleet_server::cluster::pg`); this module decides what this instance does with the
//! answers:
//!
//! - **When to ask**: every heartbeat ([`Lease::due`]), whether leader or not: a leader
//!   renews, a follower looks whether the lease lapsed.
//! - **Am I leader**: only while its own clock says the lease is surely still valid. The
//!   database set `expires_at = (its clock when it ran the statement) + lease_ms`, which is no
//!   earlier than the moment this instance *sent* the statement, so the database cannot let
//!   another instance in before `sent + lease_ms`. This instance stops at
//!   `sent + lease_ms - margin` ([`LeaseTiming::trusted_ms`]): leader work stops before anyone
//!   else may start, even when no answer comes (a database that does not answer, a statement
//!   that waits on a lock, a process that was frozen). The margin covers the clocks' rates
//!   and the time between a job's check and its write; what it cannot cover (a thread frozen
//!   between its check and its write for longer than the margin) the database fence catches:
//!   every leader write asserts its [`LeaseToken`] in its transaction (`fleet_assert_lease`).
//! - **A refused write** ([`Lease::fenced`]) ends leadership at once, whatever the clock says.
//!
//! Invariant (property-tested below): [`Lease::token`] returns a token at epoch `e` at `now`
//! only if an answer "held at `e`" came to an attempt sent at `s` with
//! `now < s + lease_ms - margin`.

use std::sync::OnceLock;
use std::time::Instant;

use serde::Serialize;

/// Smallest safety margin: scheduling jitter between a check and the write it allows.
pub const MIN_MARGIN_MS: i64 = 100;

/// Milliseconds of this process's monotonic clock (`CLOCK_MONOTONIC`: it keeps running while
/// the process is stopped, so a process resumed after SIGSTOP sees how long it was frozen).
pub fn mono_ms() -> i64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as i64
}

/// The `[cluster]` timings a lease runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How often the lease is renewed (or looked at by a follower).
    pub heartbeat_ms: i64,
    /// How long the database keeps a lease without renewal.
    pub lease_ms: i64,
    /// How much sooner than the database this instance gives the lease up.
    pub margin_ms: i64,
}

impl LeaseTiming {
    /// The margin is a fifth of the lease (at least [`MIN_MARGIN_MS`]), and never more than
    /// leaves one heartbeat of leadership: `lease_ms >= 2 * heartbeat_ms` is validated with
    /// `[cluster]`, so a leader renews at least once before it stops trusting its lease.
    pub fn new(heartbeat_ms: u64, lease_ms: u64) -> LeaseTiming {
        let (heartbeat_ms, lease_ms) = (heartbeat_ms as i64, lease_ms as i64);
        let margin_ms = (lease_ms / 5)
            .max(MIN_MARGIN_MS)
            .min((lease_ms - heartbeat_ms).max(0));
        LeaseTiming {
            heartbeat_ms,
            lease_ms,
            margin_ms,
        }
    }

    /// How long after sending an acquire that the database answered "yours" this instance
    /// acts as the leader.
    pub fn trusted_ms(&self) -> i64 {
        self.lease_ms - self.margin_ms
    }
}

/// What a leader write proves it holds: checked by `fleet_assert_lease(name, holder, epoch)`
/// in the write's own transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseToken {
    pub name: String,
    pub holder: String,
    pub epoch: i64,
    /// `[cluster] lease_ms`: a leader transaction left idle this long (its process frozen
    /// in the middle) is ended by the database, so it cannot hold a takeover back.
    pub lease_ms: i64,
}

/// The database's answer to one acquire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The lease is ours at `epoch` (renewed, or taken over: then `epoch` is new).
    Held { epoch: i64 },
    /// Another instance holds it and it has not expired.
    Taken { holder: String, epoch: i64 },
    /// No answer: the database is unreachable, the statement timed out or waited too long
    /// on a lock. What was trusted stays trusted until its own deadline.
    Failed,
}

/// Why this instance stopped leading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LostBecause {
    /// Not renewed in time by this instance's own clock (no answer, or answers too late).
    Expired,
    /// The database says another instance holds it.
    Taken,
    /// A leader write was refused by the database's fence.
    Fenced,
}

/// A change of role worth a log line and a counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    Gained { epoch: i64 },
    Lost { epoch: i64, because: LostBecause },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    epoch: i64,
    /// Leader until then (exclusive), by this instance's clock.
    until: i64,
}

/// One lease as this instance sees it (module docs).
#[derive(Debug, Clone)]
pub struct Lease {
    name: String,
    holder: String,
    timing: LeaseTiming,
    held: Option<Held>,
    /// Who the database last said holds it, at which epoch.
    seen: Option<(String, i64)>,
    /// When the next attempt is due.
    next_attempt: i64,
    /// Times this instance became leader, and stopped being it.
    gained: u64,
    lost: u64,
}

/// What the API and `/metrics` show of a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseView {
    pub name: String,
    /// This instance leads this job now.
    pub leader: bool,
    /// Our epoch while leading.
    pub epoch: Option<i64>,
    /// How long this instance still trusts its lease without renewal (ms).
    pub trusted_for_ms: Option<i64>,
    /// Who the database last said holds it.
    pub holder: Option<String>,
    pub holder_epoch: Option<i64>,
    pub gained_total: u64,
    pub lost_total: u64,
}

impl Lease {
    pub fn new(name: &str, holder: &str, timing: LeaseTiming) -> Lease {
        Lease {
            name: name.to_string(),
            holder: holder.to_string(),
            timing,
            held: None,
            seen: None,
            next_attempt: i64::MIN,
            gained: 0,
            lost: 0,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether an attempt (renewal, or a follower's look) is due at `now`.
    pub fn due(&self, now: i64) -> bool {
        now >= self.next_attempt
    }

    /// Whether this instance believes it holds the lease (then it renews with the acquire
    /// statement at once; a follower first looks whether the lease lapsed).
    pub fn believes_held(&self, now: i64) -> bool {
        self.token(now).is_some()
    }

    /// The token for a leader write at `now`: Some only while the lease is trusted.
    pub fn token(&self, now: i64) -> Option<LeaseToken> {
        self.held.filter(|h| now < h.until).map(|h| LeaseToken {
            name: self.name.clone(),
            holder: self.holder.clone(),
            epoch: h.epoch,
            lease_ms: self.timing.lease_ms,
        })
    }

    /// Ends a leadership whose deadline passed (call it before and after each attempt).
    pub fn tick(&mut self, now: i64) -> Option<Transition> {
        let h = self.held?;
        (now >= h.until).then(|| self.lose(h.epoch, LostBecause::Expired))
    }

    fn lose(&mut self, epoch: i64, because: LostBecause) -> Transition {
        self.held = None;
        self.lost += 1;
        Transition::Lost { epoch, because }
    }

    fn gain(&mut self, held: Held) -> Transition {
        self.held = Some(held);
        self.gained += 1;
        Transition::Gained { epoch: held.epoch }
    }

    /// The answer to an attempt sent at `sent` arrived at `now`.
    pub fn answered(&mut self, sent: i64, answer: Answer, now: i64) -> Option<Transition> {
        self.next_attempt = sent + self.timing.heartbeat_ms;
        // a deadline that passed before the answer came ends leadership first
        let expired = self.tick(now);
        match answer {
            Answer::Held { epoch } => {
                self.seen = Some((self.holder.clone(), epoch));
                let held = Held {
                    epoch,
                    until: sent + self.timing.trusted_ms(),
                };
                match self.held {
                    // answered too late to act on
                    _ if now >= held.until => expired,
                    // renewed
                    Some(h) if h.epoch == epoch => {
                        self.held = Some(held);
                        None
                    }
                    // taken (again) at a new epoch: writes of the old one are refused now
                    Some(h) => {
                        self.lose(h.epoch, LostBecause::Expired);
                        Some(self.gain(held))
                    }
                    None => Some(self.gain(held)),
                }
            }
            Answer::Taken { holder, epoch } => {
                self.seen = Some((holder, epoch));
                match self.held {
                    Some(h) => Some(self.lose(h.epoch, LostBecause::Taken)),
                    None => expired,
                }
            }
            // keep what is trusted until its own deadline
            Answer::Failed => expired,
        }
    }

    /// A leader write at `epoch` was refused by the fence: leadership ends at once if it is
    /// still held at that epoch (a newer epoch was gained meanwhile: that one stays).
    pub fn fenced(&mut self, epoch: i64) -> Option<Transition> {
        match self.held {
            Some(h) if h.epoch == epoch => Some(self.lose(epoch, LostBecause::Fenced)),
            _ => None,
        }
    }

    pub fn view(&self, now: i64) -> LeaseView {
        let held = self.held.filter(|h| now < h.until);
        LeaseView {
            name: self.name.clone(),
            leader: held.is_some(),
            epoch: held.map(|h| h.epoch),
            trusted_for_ms: held.map(|h| h.until - now),
            holder: self.seen.as_ref().map(|s| s.0.clone()),
            holder_epoch: self.seen.as_ref().map(|s| s.1),
            gained_total: self.gained,
            lost_total: self.lost,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// heartbeat 1 s, lease 5 s: margin 1 s, trusted 4 s after sending.
    fn build_lease() -> Lease {
        Lease::new("history", "a", LeaseTiming::new(1_000, 5_000))
    }

    #[test]
    fn the_margin_is_a_fifth_of_the_lease_and_leaves_a_heartbeat() {
        assert_eq!(LeaseTiming::new(1_000, 5_000).margin_ms, 1_000);
        assert_eq!(LeaseTiming::new(500, 3_000).margin_ms, 600);
        assert_eq!(LeaseTiming::new(100, 200).margin_ms, 100, "at least the minimum");
        assert_eq!(LeaseTiming::new(1_000, 2_000).trusted_ms(), 1_600);
        // a lease barely longer than the heartbeat keeps one heartbeat of leadership
        let t = LeaseTiming::new(1_000, 1_050);
        assert_eq!(t.trusted_ms(), 1_000);
    }

    #[test]
    fn a_held_answer_makes_a_leader_until_the_lease_minus_the_margin_after_sending() {
        let mut l = build_lease();
        assert!(l.due(0));
        assert_eq!(l.token(0), None);
        assert_eq!(
            l.answered(100, Answer::Held { epoch: 3 }, 150),
            Some(Transition::Gained { epoch: 3 })
        );
        let token = l.token(150).unwrap();
        assert_eq!(
            (token.name.as_str(), token.holder.as_str(), token.epoch),
            ("history", "a", 3)
        );
        // trusted until 100 + 5000 - 1000, counted from the sending, not the answer
        assert!(l.token(4_099).is_some());
        assert_eq!(l.token(4_100), None);
        assert_eq!(
            l.tick(4_100),
            Some(Transition::Lost {
                epoch: 3,
                because: LostBecause::Expired
            })
        );
        assert_eq!(l.view(4_100).lost_total, 1);
    }

    #[test]
    fn renewals_every_heartbeat_keep_the_same_epoch_without_transitions() {
        let mut l = build_lease();
        l.answered(0, Answer::Held { epoch: 1 }, 10);
        for beat in 1..20 {
            let sent = beat * 1_000;
            assert!(!l.due(sent - 1));
            assert!(l.due(sent));
            assert_eq!(l.tick(sent), None);
            assert_eq!(l.answered(sent, Answer::Held { epoch: 1 }, sent + 30), None);
        }
        let v = l.view(19_500);
        assert_eq!(
            (v.leader, v.epoch, v.gained_total, v.lost_total),
            (true, Some(1), 1, 0)
        );
        assert_eq!(v.trusted_for_ms, Some(19_000 + 4_000 - 19_500));
    }

    #[test]
    fn with_no_answers_leadership_ends_by_the_own_clock_before_the_database_would_let_go() {
        let mut l = build_lease();
        l.answered(0, Answer::Held { epoch: 1 }, 5);
        for sent in [1_000, 2_000, 3_000] {
            assert_eq!(
                l.answered(sent, Answer::Failed, sent + 900),
                None,
                "still trusted"
            );
        }
        assert!(l.token(3_999).is_some());
        // the database keeps the lease until at least 5_000: this instance stopped at 4_000
        assert_eq!(
            l.answered(4_000, Answer::Failed, 4_200),
            Some(Transition::Lost {
                epoch: 1,
                because: LostBecause::Expired
            })
        );
        assert_eq!(l.token(4_200), None);
    }

    #[test]
    fn a_renewal_answered_too_late_gives_no_leadership() {
        let mut l = build_lease();
        // sent at 0, the statement waited on a lock for 4.5 s
        assert_eq!(l.answered(0, Answer::Held { epoch: 2 }, 4_500), None);
        assert_eq!(l.token(4_500), None);
        assert_eq!(l.view(4_500).gained_total, 0);
    }

    #[test]
    fn a_process_frozen_past_its_lease_is_no_leader_when_it_resumes() {
        let mut l = build_lease();
        l.answered(0, Answer::Held { epoch: 1 }, 5);
        // SIGSTOP at 500 for 10 s; the monotonic clock ran on
        assert_eq!(l.token(10_500), None);
        assert!(l.due(10_500));
        assert!(!l.believes_held(10_500), "it looks before it renews");
        assert_eq!(
            l.answered(
                10_500,
                Answer::Taken {
                    holder: "b".into(),
                    epoch: 2
                },
                10_510
            ),
            Some(Transition::Lost {
                epoch: 1,
                because: LostBecause::Expired
            })
        );
        let v = l.view(10_510);
        assert_eq!(
            (v.leader, v.holder.as_deref(), v.holder_epoch),
            (false, Some("b"), Some(2))
        );
    }

    #[test]
    fn another_holder_ends_leadership_at_once() {
        let mut l = build_lease();
        l.answered(0, Answer::Held { epoch: 1 }, 5);
        assert_eq!(
            l.answered(
                1_000,
                Answer::Taken {
                    holder: "b".into(),
                    epoch: 2
                },
                1_010
            ),
            Some(Transition::Lost {
                epoch: 1,
                because: LostBecause::Taken
            })
        );
        assert_eq!(l.token(1_010), None);
    }

    #[test]
    fn a_fenced_write_ends_leadership_of_its_epoch_only() {
        let mut l = build_lease();
        l.answered(0, Answer::Held { epoch: 4 }, 5);
        assert_eq!(l.fenced(3), None, "an older epoch's write: the current one stays");
        assert!(l.token(10).is_some());
        assert_eq!(
            l.fenced(4),
            Some(Transition::Lost {
                epoch: 4,
                because: LostBecause::Fenced
            })
        );
        assert_eq!(l.token(10), None);
        assert_eq!(l.fenced(4), None, "counted once");
        assert_eq!(l.view(10).lost_total, 1);
    }

    #[test]
    fn taking_the_lease_again_at_a_new_epoch_counts_as_lost_and_gained() {
        let mut l = build_lease();
        l.answered(0, Answer::Held { epoch: 1 }, 5);
        assert_eq!(
            l.answered(1_000, Answer::Held { epoch: 2 }, 1_005),
            Some(Transition::Gained { epoch: 2 })
        );
        let v = l.view(1_005);
        assert_eq!((v.epoch, v.gained_total, v.lost_total), (Some(2), 2, 1));
    }

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let a = mono_ms();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(mono_ms() >= a + 5);
    }

    /// One attempt: sent `gap` ms after the previous answer, answered `latency` ms later.
    #[derive(Debug, Clone)]
    struct Step {
        gap: i64,
        latency: i64,
        answer: Answer,
        fenced: bool,
    }

    fn step() -> impl Strategy<Value = Step> {
        let answer = prop_oneof![
            (1i64..4).prop_map(|epoch| Answer::Held { epoch }),
            (1i64..4).prop_map(|epoch| Answer::Taken {
                holder: "b".into(),
                epoch
            }),
            Just(Answer::Failed),
        ];
        (0i64..3_000, 0i64..6_000, answer, proptest::bool::weighted(0.1)).prop_map(
            |(gap, latency, answer, fenced)| Step {
                gap,
                latency,
                answer,
                fenced,
            },
        )
    }

    proptest! {
        /// Whenever a token is handed out, an answer "held at that epoch" came to an attempt
        /// sent less than `lease - margin` ago: the database holds the lease for us at least
        /// `margin` longer than we use it.
        #[test]
        fn a_token_is_never_handed_out_after_the_lease_minus_the_margin(
            steps in proptest::collection::vec(step(), 1..40),
            heartbeat in 100u64..2_000,
            factor in 2u64..6,
        ) {
            let timing = LeaseTiming::new(heartbeat, heartbeat * factor);
            let mut l = Lease::new("history", "a", timing);
            let mut now = 0i64;
            // (sent, epoch) of every Held answer
            let mut helds: Vec<(i64, i64)> = Vec::new();
            for s in steps {
                let sent = now + s.gap;
                now = sent + s.latency;
                if let Answer::Held { epoch } = s.answer {
                    helds.push((sent, epoch));
                }
                l.answered(sent, s.answer.clone(), now);
                if s.fenced && let Some(t) = l.token(now) {
                    l.fenced(t.epoch);
                    prop_assert!(l.token(now).is_none());
                }
                for probe in [now, now + timing.margin_ms, now + timing.trusted_ms()] {
                    if let Some(t) = l.token(probe) {
                        prop_assert!(
                            helds.iter().any(|(sent, e)| *e == t.epoch
                                && probe < sent + timing.lease_ms - timing.margin_ms),
                            "token {t:?} at {probe} without a recent enough answer: {helds:?}"
                        );
                    }
                }
            }
        }
    }
}
