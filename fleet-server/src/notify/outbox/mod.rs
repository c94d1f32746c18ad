//! The notification outbox: every (channel, notification) the router decided to send is an
//! entry on disk until it is delivered or given up, so a notification decided before a crash
//! or restart is still delivered after it (at least once).
//!
//! # Design
//! - **Key**: `{channel}/{notification id}`; the notification id is `{alert or incident
//!   id}/{event}`, so the key is stable: enqueuing the same decision again (a restart that
//!   replays it) finds the entry and adds nothing. Receivers deduplicate on the same ids (the
//!   `dedup_key` of the formats).
//! - **Lifecycle**: `pending` (with `attempts` and `next_attempt_ms`) -> `delivered` or
//!   `failed`. A failed delivery that is worth retrying ([`Outcome::Retry`]) stays pending with
//!   its next attempt after a backoff ([`backoff_delay`]: doubling from
//!   [`RetryPolicy::initial`], capped at [`RetryPolicy::max_interval`], ±25 % jitter derived
//!   from the key, so it is pure and reproducible), until [`RetryPolicy::give_up_after`] has
//!   passed since the entry was made; then, or at once for a permanent error, it is `failed`.
//! - **Claim**: a worker takes a due entry by moving its next attempt to `now + lease` and
//!   counting the attempt, in one write ([`OutboxEntry::claim`]). If the process dies during
//!   the attempt, the entry is due again when the lease ends: at least once, never lost.
//! - **Finish** is a compare-and-set on the attempt count ([`OutboxStore::finish`]): a worker
//!   whose lease ran out and whose entry was claimed again cannot overwrite the newer outcome.
//! - **Durable when**: `enqueue`, `claim_due` and `finish` return after the write is on disk.
//!   Finished entries are kept for [`RetryPolicy::keep_finished`] (dedup and the API), then
//!   purged.
//!
//! Everything here is pure and takes `now_ms`; storage is behind [`OutboxStore`] ([`store`]:
//! the trait and an in-memory twin; [`sled_store`]: the sled implementation; PostgreSQL
//! implements the same trait with `FOR UPDATE SKIP LOCKED` claims).

pub mod sled_store;
pub mod store;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use store::{MemoryOutbox, OutboxCounts, OutboxError, OutboxStore};

use super::notification::Notification;

/// First wait before a delivery is tried again.
pub const RETRY_INITIAL: Duration = Duration::from_secs(30);
/// Longest wait between two deliveries of one entry.
pub const RETRY_MAX_INTERVAL: Duration = Duration::from_secs(30 * 60);
/// A pending entry is given up this long after it was made.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// How long a claimed entry is reserved for the worker delivering it.
pub const CLAIM_LEASE: Duration = Duration::from_secs(10 * 60);
/// Added to the longest delivery a channel can take when sizing the lease.
pub const LEASE_MARGIN: Duration = Duration::from_secs(60);
/// How long delivered and failed entries are kept.
pub const KEEP_FINISHED: Duration = Duration::from_secs(7 * 24 * 3600);

/// When to try again and when to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max_interval: Duration,
    pub give_up_after: Duration,
    /// Longer than a channel's own retries (`max_retry_s`) plus one attempt.
    pub lease: Duration,
    pub keep_finished: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: RETRY_INITIAL,
            max_interval: RETRY_MAX_INTERVAL,
            give_up_after: GIVE_UP_AFTER,
            lease: CLAIM_LEASE,
            keep_finished: KEEP_FINISHED,
        }
    }
}

impl RetryPolicy {
    /// The default policy with a lease long enough for the slowest channel. A delivery takes
    /// at most a channel's `max_retry` plus one `timeout` (its last attempt): a shorter lease
    /// would let a second worker deliver while the first is still trying.
    pub fn with_longest_delivery(longest: Duration) -> RetryPolicy {
        RetryPolicy {
            lease: CLAIM_LEASE.max(longest.saturating_add(LEASE_MARGIN)),
            ..RetryPolicy::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryState {
    Pending,
    Delivered,
    Failed,
}

/// One (channel, notification) to deliver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// `{channel}/{notification id}`.
    pub key: String,
    pub channel: String,
    pub notification: Notification,
    pub created_ms: i64,
    /// Deliveries started (claims).
    pub attempts: u32,
    /// Due at this time (pending), or when it finished.
    pub next_attempt_ms: i64,
    pub state: EntryState,
    pub last_error: Option<String>,
    /// What the receiver answered to the delivery that succeeded.
    pub receipt: Option<String>,
    pub finished_ms: Option<i64>,
}

/// How one delivery went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered {
        receipt: String,
    },
    /// Worth trying again later (the receiver was unreachable or overloaded).
    Retry {
        error: String,
    },
    /// Needs a person: TLS, authentication, a refusal, a template.
    Fail {
        error: String,
    },
}

/// The key of (channel, notification).
pub fn entry_key(channel: &str, notification_id: &str) -> String {
    format!("{channel}/{notification_id}")
}

/// The wait before the next delivery after `attempts` failed ones: doubling from
/// `policy.initial`, capped at `policy.max_interval`, times a jitter of 0.75 to 1.25 taken
/// from a hash of the key and the attempt (pure: the same inputs give the same wait).
pub fn backoff_delay(policy: &RetryPolicy, key: &str, attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(30);
    let base = policy
        .initial
        .saturating_mul(1u32 << doublings)
        .min(policy.max_interval);
    // FNV-1a 64 of the key and the attempt: spreads retries of many entries apart
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain(attempts.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let jitter = 0.75 + (h % 1001) as f64 / 2000.0;
    base.mul_f64(jitter)
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl OutboxEntry {
    /// A pending entry, due at once.
    pub fn new(channel: &str, notification: Notification, now_ms: i64) -> OutboxEntry {
        OutboxEntry {
            key: entry_key(channel, &notification.id),
            channel: channel.to_string(),
            notification,
            created_ms: now_ms,
            attempts: 0,
            next_attempt_ms: now_ms,
            state: EntryState::Pending,
            last_error: None,
            receipt: None,
            finished_ms: None,
        }
    }

    pub fn is_due(&self, now_ms: i64) -> bool {
        self.state == EntryState::Pending && self.next_attempt_ms <= now_ms
    }

    /// The entry as a worker takes it: one more attempt, reserved until `now + lease`.
    pub fn claim(&self, now_ms: i64, lease: Duration) -> OutboxEntry {
        OutboxEntry {
            attempts: self.attempts.saturating_add(1),
            next_attempt_ms: now_ms.saturating_add(ms(lease)),
            ..self.clone()
        }
    }

    /// The entry after a claimed delivery ended with `outcome` at `now_ms`.
    pub fn finish(&self, outcome: &Outcome, now_ms: i64, policy: &RetryPolicy) -> OutboxEntry {
        let mut e = self.clone();
        match outcome {
            Outcome::Delivered { receipt } => {
                e.state = EntryState::Delivered;
                e.receipt = Some(receipt.clone());
                e.finished_ms = Some(now_ms);
                e.next_attempt_ms = now_ms;
            }
            Outcome::Retry { error } => {
                e.last_error = Some(error.clone());
                let next = now_ms.saturating_add(ms(backoff_delay(policy, &self.key, self.attempts)));
                if next > self.created_ms.saturating_add(ms(policy.give_up_after)) {
                    e.state = EntryState::Failed;
                    e.finished_ms = Some(now_ms);
                    e.next_attempt_ms = now_ms;
                } else {
                    e.next_attempt_ms = next;
                }
            }
            Outcome::Fail { error } => {
                e.last_error = Some(error.clone());
                e.state = EntryState::Failed;
                e.finished_ms = Some(now_ms);
                e.next_attempt_ms = now_ms;
            }
        }
        e
    }

    /// Finished (delivered or failed) before `before_ms`: may be purged.
    pub fn is_purgeable(&self, before_ms: i64) -> bool {
        self.state != EntryState::Pending && self.finished_ms.is_some_and(|f| f < before_ms)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use crate::notify::notification::Notification;
    use crate::notify::sample;

    /// Notification `i`: a distinct alert firing (`i` even) or resolving (`i` odd).
    pub fn build_notification(i: u32) -> Notification {
        let mut n = if i.is_multiple_of(2) {
            sample::firing_alert(1_000)
        } else {
            sample::resolved_alert(1_000)
        };
        n.id = format!("rule{}:RVM1:1/{}", i / 2, n.event);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::testing::build_notification;
    use super::*;

    fn build_entry() -> OutboxEntry {
        OutboxEntry::new("pager", build_notification(0), 1_000)
    }

    #[test]
    fn the_key_is_the_channel_and_the_notification_id() {
        let e = build_entry();
        assert_eq!(e.key, "pager/rule0:RVM1:1/firing");
        assert!(e.is_due(1_000) && !e.is_due(999));
    }

    #[test]
    fn a_claim_counts_the_attempt_and_reserves_the_entry_for_the_lease() {
        let e = build_entry().claim(5_000, Duration::from_secs(60));
        assert_eq!((e.attempts, e.next_attempt_ms), (1, 65_000));
        assert!(
            !e.is_due(64_999) && e.is_due(65_000),
            "due again if the worker died"
        );
    }

    #[test]
    fn a_retry_waits_with_backoff_and_a_permanent_error_fails_at_once() {
        let p = RetryPolicy::default();
        let claimed = build_entry().claim(2_000, p.lease);
        let r = claimed.finish(
            &Outcome::Retry {
                error: "connect".into(),
            },
            3_000,
            &p,
        );
        assert_eq!(r.state, EntryState::Pending);
        let wait = r.next_attempt_ms - 3_000;
        assert!((22_500..=37_500).contains(&wait), "{wait}");
        assert_eq!(r.last_error.as_deref(), Some("connect"));
        let f = claimed.finish(
            &Outcome::Fail {
                error: "tls: UnknownIssuer".into(),
            },
            3_000,
            &p,
        );
        assert_eq!((f.state, f.finished_ms), (EntryState::Failed, Some(3_000)));
        let d = claimed.finish(
            &Outcome::Delivered {
                receipt: "202".into(),
            },
            3_000,
            &p,
        );
        assert_eq!(
            (d.state, d.receipt.as_deref()),
            (EntryState::Delivered, Some("202"))
        );
    }

    #[test]
    fn retries_end_when_the_give_up_time_has_passed() {
        let p = RetryPolicy::default();
        let mut e = build_entry();
        let mut now = 1_000;
        while e.state == EntryState::Pending {
            now = e.next_attempt_ms;
            e = e
                .claim(now, p.lease)
                .finish(&Outcome::Retry { error: "503".into() }, now, &p);
            assert!(e.attempts < 100, "gives up");
        }
        assert_eq!(e.state, EntryState::Failed);
        assert!(now - 1_000 <= ms(p.give_up_after), "{now}");
        assert!(
            now - 1_000 > ms(p.give_up_after) - ms(p.max_interval) * 2,
            "kept trying: {now}"
        );
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_bounded_reproducible_jitter() {
        let p = RetryPolicy::default();
        let d = |n| backoff_delay(&p, "k", n);
        assert_eq!(d(3), d(3), "pure");
        assert!(d(1) >= p.initial.mul_f64(0.75) && d(1) <= p.initial.mul_f64(1.25));
        assert!(d(2) >= p.initial.mul_f64(1.5) && d(2) <= p.initial.mul_f64(2.5));
        for n in [10, 40, u32::MAX] {
            assert!(d(n) <= p.max_interval.mul_f64(1.25), "{n}");
            assert!(d(n) >= p.max_interval.mul_f64(0.75), "{n}");
        }
        assert_ne!(
            backoff_delay(&p, "a", 1),
            backoff_delay(&p, "b", 1),
            "spread apart"
        );
    }

    #[test]
    fn the_lease_outlasts_the_slowest_channel_delivery() {
        assert_eq!(
            RetryPolicy::with_longest_delivery(Duration::from_secs(130)).lease,
            CLAIM_LEASE
        );
        assert_eq!(
            RetryPolicy::with_longest_delivery(Duration::from_secs(3600)).lease,
            Duration::from_secs(3660)
        );
    }

    #[test]
    fn only_finished_entries_past_their_keep_time_are_purgeable() {
        let p = RetryPolicy::default();
        let e = build_entry();
        assert!(!e.is_purgeable(i64::MAX));
        let d = e.claim(1_000, p.lease).finish(
            &Outcome::Delivered {
                receipt: String::new(),
            },
            2_000,
            &p,
        );
        assert!(!d.is_purgeable(2_000) && d.is_purgeable(2_001));
    }
}
