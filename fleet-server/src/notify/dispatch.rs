//! The dispatcher task: takes each notification the alerts actor decided on, routes it
//! ([`Router`]: first matching route, rate limit), writes the `log` channel's line at once,
//! and writes one outbox entry per other channel (off the async threads, flushed before it
//! returns), then wakes the worker ([`super::worker`]). Enqueuing the same decision twice adds
//! nothing: the entry's key is the channel and the notification id.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::config::{Channel, NotifyConfig};
use super::notification::Notification;
use super::outbox::{OutboxEntry, OutboxStore};
use super::router::{Decision, Router};
use super::stats::{Delivered, NotifyStats};
use super::worker::{Shared, blocking, log_notification};

/// What the dispatcher task needs.
pub struct Dispatcher {
    pub cfg: NotifyConfig,
    pub stats: Arc<NotifyStats>,
    pub outbox: Arc<dyn OutboxStore>,
    pub shared: Arc<Shared>,
}

impl Dispatcher {
    /// Runs until every sender of `rx` is gone. A new generation (a restart) starts with
    /// full rate-limit buckets and carries on with what `rx` still holds.
    pub async fn run(&self, rx: &mut mpsc::Receiver<Notification>) {
        let mut router = Router::new(&self.cfg, common::time::now_ms());
        while let Some(n) = rx.recv().await {
            let now = common::time::now_ms();
            match router.route(&n, now) {
                Decision::RateLimited { route } => {
                    tracing::warn!(route = %route, notification = %n.id, "notification dropped by the route's rate limit");
                    self.stats
                        .with(|s| *s.rate_limited.entry(route).or_default() += 1);
                }
                Decision::Send { route, channels } => {
                    self.stats.with(|s| *s.routed.entry(route).or_default() += 1);
                    let mut entries = Vec::new();
                    for name in channels {
                        match self.cfg.channels.get(&name) {
                            Some(Channel::Log) => {
                                log_notification(&name, &n);
                                self.stats.delivery(&name, &n.id, &Delivered::Ok, now);
                            }
                            Some(_) => entries.push(OutboxEntry::new(&name, n.clone(), now)),
                            // validation makes every route name a defined channel
                            None => {}
                        }
                    }
                    if !entries.is_empty() {
                        self.enqueue(entries).await;
                    }
                }
            }
        }
    }

    async fn enqueue(&self, entries: Vec<OutboxEntry>) {
        let (store, count) = (self.outbox.clone(), entries.len());
        let id = entries[0].notification.id.clone();
        let res = blocking(move || {
            let mut added = 0;
            for e in &entries {
                if store.enqueue(e)? {
                    added += 1;
                }
            }
            Ok(added)
        })
        .await;
        match res {
            Ok(added) => {
                if added < count {
                    tracing::info!(notification = %id, repeats = count - added, "notification already in the outbox");
                }
                self.shared.changed();
            }
            Err(e) => {
                tracing::error!(notification = %id, error = %e, "notification not written to the outbox: lost");
                self.stats.with(|s| s.enqueue_errors += count as u64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::outbox::{EntryState, MemoryOutbox, entry_key};
    use crate::notify::sample;
    use crate::notify::testkit::build_section;

    #[tokio::test]
    async fn a_decision_becomes_one_outbox_entry_per_channel_and_a_repeat_adds_nothing() {
        let cfg = build_section(
            "[notify.default]\nchannels = [\"log\", \"hook\"]\n[notify.channels.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\n",
        )
        .validate("notify")
        .unwrap();
        let outbox = Arc::new(MemoryOutbox::default());
        let stats = Arc::new(NotifyStats::default());
        let d = Dispatcher {
            cfg,
            stats: stats.clone(),
            outbox: outbox.clone(),
            shared: Arc::default(),
        };
        let (tx, rx) = mpsc::channel(4);
        let n = sample::firing_alert(1_000);
        tx.send(n.clone()).await.unwrap();
        tx.send(n.clone()).await.unwrap();
        drop(tx);
        let mut rx = rx;
        d.run(&mut rx).await;
        let entries = outbox.list(None, 10).unwrap();
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_eq!(entries[0].key, entry_key("hook", &n.id));
        assert_eq!(entries[0].state, EntryState::Pending);
        let s = stats.snapshot();
        assert_eq!(s.routed["default"], 2);
        assert_eq!(s.channels["log"].delivered, 2, "the log channel writes at once");
    }
}
