//! The outbox worker: claims due entries, delivers each through its channel's sender and
//! records the outcome ([`super::outbox`] decides what comes next: delivered, retried later,
//! or failed). Every outbox call runs off the async threads ([`blocking`]).
//!
//! - When the process starts, every pending entry is made due ([`OutboxStore::release_all`],
//!   by [`super::build`]): a delivery the previous process had claimed when it died, or was
//!   waiting to retry, is tried at once. A worker restarted within the process (supervised)
//!   does not do that: a delivery of its predecessor may still be under way, and one that
//!   is not is due again when its claim's lease ends.
//! - Each loop (every [`WORKER_TICK`], or at once when the dispatcher enqueued something or a
//!   delivery ended) claims at most as many entries as there are free delivery slots
//!   ([`MAX_CONCURRENT_DELIVERIES`]), so a claimed entry never waits behind a slow receiver.
//! - Entries about the same alert or incident on the same channel are delivered in order, one
//!   after the other, and a resolution waits while its firing (or escalation, or opening) is
//!   still pending on that channel: a receiver never sees the resolve before the trigger
//!   (PagerDuty would keep the incident the late trigger opens).
//! - A transient error (unreachable, timeout, 408/429/5xx, an SMTP 4xx) is retried later;
//!   anything else (TLS, authentication, a refusal, a template) fails at once, with the error
//!   counted per channel and kind ([`NotifyStats::delivery`]).
//! - Finished entries are purged every [`PURGE_INTERVAL`], once older than the policy's keep
//!   time; the counts by state are refreshed at most every [`COUNTS_INTERVAL`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};

use super::channels::{DeliveryError, Receipt, Sender};
use super::config::{Channel, NotifyConfig};
use super::notification::Notification;
use super::outbox::{EntryState, OutboxEntry, OutboxError, OutboxStore, Outcome, RetryPolicy, entry_key};
use super::stats::{Delivered, NotifyStats};
use super::template::{is_resolution, subject_id};
use crate::alerts::alert::severity_label;

/// Deliveries in progress at once.
pub const MAX_CONCURRENT_DELIVERIES: usize = 16;
/// How often the worker looks for due entries without being woken.
pub const WORKER_TICK: Duration = Duration::from_secs(1);
/// Longest wait for one outbox call (a write flushes to disk).
pub const STORE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often finished entries past their keep time are purged.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(3600);
/// Shortest time between two counts of the outbox by state.
pub const COUNTS_INTERVAL: Duration = Duration::from_secs(2);

/// The events that open what a resolution closes.
const OPENINGS: [&str; 3] = ["firing", "escalated", "opened"];

/// Runs a blocking outbox call on the blocking pool, waiting at most [`STORE_TIMEOUT`].
pub async fn blocking<T, F>(f: F) -> Result<T, OutboxError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, OutboxError> + Send + 'static,
{
    match tokio::time::timeout(STORE_TIMEOUT, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(OutboxError::Storage(format!("outbox call failed: {e}"))),
        Err(_) => Err(OutboxError::Storage(format!(
            "outbox call took longer than {STORE_TIMEOUT:?}"
        ))),
    }
}

/// A line in the server log: what the `log` channel delivers.
pub fn log_notification(channel: &str, n: &Notification) {
    tracing::warn!(
        channel,
        notification = %n.id,
        severity = severity_label(n.severity),
        title = %n.title,
        "notification"
    );
}

/// How the worker delivers to one channel.
#[derive(Debug)]
pub enum Deliverer {
    Log,
    /// Boxed: a sender (client, templates) is large beside the other variants.
    Sender(Box<Sender>),
    /// The channel could not be started; its deliveries fail with this.
    Broken(DeliveryError),
}

/// Starts every configured channel (clients, transports, compiled templates), registering
/// each with the counters; a channel that cannot start is kept as [`Deliverer::Broken`].
pub fn start_channels(cfg: &NotifyConfig, stats: &NotifyStats) -> BTreeMap<String, Deliverer> {
    let mut out = BTreeMap::new();
    for (name, channel) in &cfg.channels {
        let d = match channel.spec() {
            None => Deliverer::Log,
            Some(spec) => match spec.start() {
                Ok(s) => Deliverer::Sender(Box::new(s)),
                Err(e) => {
                    tracing::error!(channel = %name, error = %e, "notification channel cannot start; its deliveries fail");
                    Deliverer::Broken(e)
                }
            },
        };
        let setup = match &d {
            Deliverer::Broken(e) => Some(e.to_string()),
            _ => None,
        };
        stats.register(name, setup);
        out.insert(name.clone(), d);
    }
    out
}

/// The policy for `cfg`: a lease longer than its slowest channel's delivery.
pub fn policy_for(cfg: &NotifyConfig) -> RetryPolicy {
    let longest = cfg
        .channels
        .values()
        .filter_map(Channel::spec)
        .map(|s| s.longest_delivery())
        .max()
        .unwrap_or_default();
    RetryPolicy::with_longest_delivery(longest)
}

/// What the dispatcher and the worker share.
#[derive(Debug, Default)]
pub struct Shared {
    /// Something to claim: an entry was enqueued, or a delivery slot came free.
    pub wake: Notify,
    /// The outbox changed since its last count.
    pub dirty: AtomicBool,
}

impl Shared {
    pub fn changed(&self) {
        self.dirty.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

/// The outbox worker. See the module docs.
pub struct Worker {
    pub outbox: Arc<dyn OutboxStore>,
    pub deliverers: Arc<BTreeMap<String, Deliverer>>,
    pub stats: Arc<NotifyStats>,
    pub shared: Arc<Shared>,
    pub policy: RetryPolicy,
    pub public_url: Option<String>,
}

impl Worker {
    /// Runs until the runtime stops.
    pub async fn run(self: Arc<Self>) {
        let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_DELIVERIES));
        let mut next_purge = Instant::now();
        let mut next_count = Instant::now();
        self.shared.dirty.store(true, Ordering::Release);
        loop {
            self.claim_and_deliver(&permits).await;
            if Instant::now() >= next_count && self.shared.dirty.swap(false, Ordering::AcqRel) {
                self.count().await;
                next_count = Instant::now() + COUNTS_INTERVAL;
            }
            if Instant::now() >= next_purge {
                self.purge().await;
                next_purge = Instant::now() + PURGE_INTERVAL;
            }
            tokio::select! {
                _ = self.shared.wake.notified() => {}
                _ = tokio::time::sleep(WORKER_TICK) => {}
            }
        }
    }

    fn outbox_error(&self, e: &OutboxError) {
        tracing::error!(error = %e, "notification outbox");
        self.stats.with(|s| s.outbox_errors += 1);
    }

    async fn claim_and_deliver(self: &Arc<Self>, permits: &Arc<Semaphore>) {
        let free = permits.available_permits();
        if free == 0 {
            return;
        }
        let (store, lease, now) = (self.outbox.clone(), self.policy.lease, common::time::now_ms());
        let claimed = match blocking(move || store.claim_due(now, free, lease)).await {
            Ok(c) => c,
            Err(e) => return self.outbox_error(&e),
        };
        if claimed.is_empty() {
            return;
        }
        self.shared.dirty.store(true, Ordering::Release);
        for group in by_subject(claimed) {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let me = self.clone();
            tokio::spawn(async move {
                for entry in group {
                    me.deliver(entry).await;
                }
                drop(permit);
                me.shared.changed();
            });
        }
    }

    /// One claimed entry: attempt, then record the outcome.
    async fn deliver(&self, entry: OutboxEntry) {
        let (outcome, counted) = self.attempt(&entry).await;
        let now = common::time::now_ms();
        let finished = entry.finish(&outcome, now, &self.policy);
        let counted = match counted {
            Delivered::Retry { kind, message } if finished.state == EntryState::Failed => Delivered::Failed {
                kind,
                message: format!("given up after {} deliveries: {message}", finished.attempts),
            },
            Delivered::Deferred if finished.state == EntryState::Failed => Delivered::Failed {
                kind: "deferred".into(),
                message: "given up waiting for its firing to be delivered".into(),
            },
            other => other,
        };
        let store = self.outbox.clone();
        let stored = finished.clone();
        match blocking(move || store.finish(&stored)).await {
            Ok(true) => self
                .stats
                .delivery(&entry.channel, &entry.notification.id, &counted, now),
            Ok(false) => {
                tracing::warn!(entry = %entry.key, "outbox entry claimed again meanwhile; this outcome is dropped")
            }
            Err(e) => self.outbox_error(&e),
        }
    }

    async fn attempt(&self, entry: &OutboxEntry) -> (Outcome, Delivered) {
        let n = &entry.notification;
        if is_resolution(&n.event)
            && let Some(key) = self.pending_opening(entry).await
        {
            return (
                Outcome::Retry {
                    error: format!("waiting for {key} to be delivered first"),
                },
                Delivered::Deferred,
            );
        }
        let failed = |kind: &str, message: String| {
            (
                Outcome::Fail {
                    error: message.clone(),
                },
                Delivered::Failed {
                    kind: kind.into(),
                    message,
                },
            )
        };
        match self.deliverers.get(&entry.channel) {
            None => failed(
                "config",
                format!("channel {:?} is not in the configuration any more", entry.channel),
            ),
            Some(Deliverer::Log) => {
                log_notification(&entry.channel, n);
                delivered(&Receipt::Logged)
            }
            Some(Deliverer::Broken(e)) => failed(e.kind(), e.to_string()),
            Some(Deliverer::Sender(s)) => match s.send(n, self.public_url.as_deref()).await {
                Ok(r) => delivered(&r),
                Err(e) if e.is_transient() => (
                    Outcome::Retry { error: e.to_string() },
                    Delivered::Retry {
                        kind: e.kind().into(),
                        message: e.to_string(),
                    },
                ),
                Err(e) => failed(e.kind(), e.to_string()),
            },
        }
    }

    /// The key of a pending entry that opened what `entry` resolves, on the same channel.
    async fn pending_opening(&self, entry: &OutboxEntry) -> Option<String> {
        let subject = subject_id(&entry.notification).to_string();
        let keys: Vec<String> = OPENINGS
            .iter()
            .map(|ev| entry_key(&entry.channel, &format!("{subject}/{ev}")))
            .filter(|k| *k != entry.key)
            .collect();
        let store = self.outbox.clone();
        let found = blocking(move || {
            for k in keys {
                if store.get(&k)?.is_some_and(|e| e.state == EntryState::Pending) {
                    return Ok(Some(k));
                }
            }
            Ok(None)
        })
        .await;
        found.unwrap_or_else(|e| {
            self.outbox_error(&e);
            None
        })
    }

    async fn count(&self) {
        let store = self.outbox.clone();
        match blocking(move || store.counts()).await {
            Ok(c) => self.stats.with(|s| s.outbox = c),
            Err(e) => self.outbox_error(&e),
        }
    }

    async fn purge(&self) {
        let store = self.outbox.clone();
        let keep = i64::try_from(self.policy.keep_finished.as_millis()).unwrap_or(i64::MAX);
        let before = common::time::now_ms().saturating_sub(keep);
        match blocking(move || store.purge_finished(before)).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(entries = n, "finished notifications purged from the outbox");
                self.shared.dirty.store(true, Ordering::Release);
            }
            Err(e) => self.outbox_error(&e),
        }
    }
}

fn delivered(r: &Receipt) -> (Outcome, Delivered) {
    let receipt = serde_json::to_string(r).unwrap_or_default();
    (Outcome::Delivered { receipt }, Delivered::Ok)
}

/// Claimed entries grouped by (channel, subject), each group in claim order (due first).
fn by_subject(entries: Vec<OutboxEntry>) -> Vec<Vec<OutboxEntry>> {
    let mut index: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut groups: Vec<Vec<OutboxEntry>> = Vec::new();
    for e in entries {
        let k = (e.channel.clone(), subject_id(&e.notification).to_string());
        match index.get(&k) {
            Some(&i) => groups[i].push(e),
            None => {
                index.insert(k, groups.len());
                groups.push(vec![e]);
            }
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::outbox::MemoryOutbox;
    use crate::notify::sample;

    fn build_worker(outbox: Arc<dyn OutboxStore>, deliverers: BTreeMap<String, Deliverer>) -> Arc<Worker> {
        let stats = Arc::new(NotifyStats::default());
        for name in deliverers.keys() {
            stats.register(name, None);
        }
        Arc::new(Worker {
            outbox,
            deliverers: Arc::new(deliverers),
            stats,
            shared: Arc::default(),
            policy: RetryPolicy::default(),
            public_url: None,
        })
    }

    /// Runs one claim and waits for the deliveries it started.
    async fn build_round(w: &Arc<Worker>) {
        let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_DELIVERIES));
        w.claim_and_deliver(&permits).await;
        let all = u32::try_from(MAX_CONCURRENT_DELIVERIES).unwrap();
        drop(permits.acquire_many(all).await.unwrap());
    }

    #[test]
    fn claimed_entries_are_grouped_by_channel_and_subject_in_claim_order() {
        let now = 1_000;
        let firing = sample::firing_alert(now);
        let resolved = sample::resolved_alert(now);
        let incident = sample::opened_incident(now);
        let entries = vec![
            OutboxEntry::new("a", firing.clone(), now),
            OutboxEntry::new("b", firing, now),
            OutboxEntry::new("a", incident, now),
            OutboxEntry::new("a", resolved, now),
        ];
        let groups: Vec<Vec<String>> = by_subject(entries)
            .into_iter()
            .map(|g| g.into_iter().map(|e| e.key).collect())
            .collect();
        let id = |n: &Notification| n.id.clone();
        assert_eq!(
            groups,
            [
                vec![
                    format!("a/{}", id(&sample::firing_alert(now))),
                    format!("a/{}", id(&sample::resolved_alert(now)))
                ],
                vec![format!("b/{}", id(&sample::firing_alert(now)))],
                vec![format!("a/{}", id(&sample::opened_incident(now)))],
            ]
        );
    }

    #[tokio::test]
    async fn a_resolution_waits_while_its_firing_is_pending_on_the_same_channel() {
        let outbox: Arc<dyn OutboxStore> = Arc::new(MemoryOutbox::default());
        let now = common::time::now_ms();
        // the firing is pending but not due (a retry later); its resolution is due now
        let mut firing = OutboxEntry::new("x", sample::firing_alert(now), now);
        firing.next_attempt_ms = now + 3_600_000;
        outbox.enqueue(&firing).unwrap();
        let resolved = OutboxEntry::new("x", sample::resolved_alert(now), now);
        outbox.enqueue(&resolved).unwrap();
        let w = build_worker(outbox.clone(), BTreeMap::from([("x".into(), Deliverer::Log)]));
        build_round(&w).await;
        let r = outbox.get(&resolved.key).unwrap().unwrap();
        assert_eq!(r.state, EntryState::Pending, "{r:?}");
        assert!(r.last_error.as_deref().unwrap().contains(&firing.key), "{r:?}");
        assert_eq!(w.stats.snapshot().channels["x"].deferred, 1);

        // once the firing is delivered, the resolution goes
        outbox.release_all(common::time::now_ms() + 3_600_000).unwrap();
        let later = outbox
            .claim_due(common::time::now_ms() + 3_600_000, 10, Duration::from_secs(1))
            .unwrap();
        assert_eq!(later.len(), 2);
        for e in later {
            let fin = e.finish(&Outcome::Delivered { receipt: "{}".into() }, now, &w.policy);
            assert!(outbox.finish(&fin).unwrap());
        }
        assert_eq!(
            outbox.get(&resolved.key).unwrap().unwrap().state,
            EntryState::Delivered
        );
    }

    #[tokio::test]
    async fn a_channel_that_could_not_start_fails_its_entries_at_once_with_its_error() {
        let outbox: Arc<dyn OutboxStore> = Arc::new(MemoryOutbox::default());
        let now = common::time::now_ms();
        let e = OutboxEntry::new("broken", sample::firing_alert(now), now);
        outbox.enqueue(&e).unwrap();
        let err = DeliveryError::Setup("ca_file /nope: no such file".into());
        let w = build_worker(
            outbox.clone(),
            BTreeMap::from([("broken".into(), Deliverer::Broken(err))]),
        );
        build_round(&w).await;
        let stored = outbox.get(&e.key).unwrap().unwrap();
        assert_eq!(stored.state, EntryState::Failed);
        let c = &w.stats.snapshot().channels["broken"];
        assert_eq!((c.failed, c.delivered), (1, 0));
        assert_eq!(c.last_error.as_ref().unwrap().kind, "setup");
    }

    #[tokio::test]
    async fn an_entry_for_a_channel_no_longer_configured_fails_naming_it() {
        let outbox: Arc<dyn OutboxStore> = Arc::new(MemoryOutbox::default());
        let now = common::time::now_ms();
        let e = OutboxEntry::new("gone", sample::firing_alert(now), now);
        outbox.enqueue(&e).unwrap();
        let w = build_worker(outbox.clone(), BTreeMap::new());
        build_round(&w).await;
        let stored = outbox.get(&e.key).unwrap().unwrap();
        assert_eq!(stored.state, EntryState::Failed);
        assert!(stored.last_error.unwrap().contains("\"gone\""));
    }
}
