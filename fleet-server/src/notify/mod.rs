//! Notifications: what the alerts actor decided people should hear about, routed to channels.
//!
//! - [`notification::Notification`]: one message (an alert firing, resolved or escalated; an incident opened,
//!   resolved or withdrawn), the same JSON a webhook receives;
//! - [`router::Router`] (pure): the first `[[notify.routes]]` entry whose severity and labels match
//!   wins, else the default route; every route has a token bucket ([`router::TokenBucket`], e.g. 10 a
//!   minute) so an outage cannot turn into a storm: a notification over the limit is dropped
//!   and counted, never queued;
//! - [`run`]: the dispatcher task; every delivery runs on its own task (at most
//!   [`MAX_CONCURRENT_DELIVERIES`]) so a slow webhook never holds up email. Supervised
//!   (`crate::server::children`): its queue ([`NotifyInbox`]) outlives it, so a restarted
//!   dispatcher carries on with what was queued (its rate-limit buckets start full again);
//! - channels: [`webhook`] (JSON POST, retried with jittered, capped exponential backoff),
//!   [`email`] (SMTP to a relay), and `log`.
//!
//! Configured in `fleet-server.toml` under `[notify]`; [`config::NotifySection::validate`] names every
//! bad key. A built-in `log` channel exists unless the file defines one of that name.

pub mod channels;
pub mod config;
pub mod email;
pub mod formats;
pub mod http_client;
pub mod maintenance;
pub mod notification;
pub mod outbox;
pub mod router;
pub mod sample;
pub mod secret;
pub mod template;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};

use self::config::{Channel, NotifyConfig};
use self::notification::Notification;
use self::router::{Decision, Router};
use crate::alerts::alert::severity_label;
use crate::supervise::inbox::Inbox;

/// Notifications waiting for the dispatcher at most; more are dropped and counted.
pub const QUEUE: usize = 10_000;
/// Deliveries in progress at once.
pub const MAX_CONCURRENT_DELIVERIES: usize = 16;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NotifySnapshot {
    /// Accepted for delivery, by route.
    pub routed: BTreeMap<String, u64>,
    /// Dropped by a route's rate limit, by route.
    pub rate_limited: BTreeMap<String, u64>,
    /// Delivered, by channel.
    pub delivered: BTreeMap<String, u64>,
    /// Given up after retries (or refused for good), by channel.
    pub failed: BTreeMap<String, u64>,
    /// Dropped because the dispatcher's queue was full.
    pub queue_full: u64,
    pub last_error: Option<String>,
}

/// Counters of the dispatcher, shared with the API.
#[derive(Debug, Default)]
pub struct NotifyStats(Mutex<NotifySnapshot>);

impl NotifyStats {
    fn with(&self, f: impl FnOnce(&mut NotifySnapshot)) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
    }

    pub fn snapshot(&self) -> NotifySnapshot {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Hands notifications to the dispatcher task.
#[derive(Clone)]
pub struct NotifyHandle {
    tx: mpsc::Sender<Notification>,
    stats: Arc<NotifyStats>,
}

impl NotifyHandle {
    /// Queues a notification; never blocks (a full queue drops it and counts it).
    pub fn send(&self, n: Notification) {
        if let Err(e) = self.tx.try_send(n) {
            let id = match &e {
                mpsc::error::TrySendError::Full(n) | mpsc::error::TrySendError::Closed(n) => n.id.clone(),
            };
            tracing::error!(notification = %id, "notification dropped: dispatcher queue full or stopped");
            self.stats.with(|s| s.queue_full += 1);
        }
    }

    pub fn stats(&self) -> Arc<NotifyStats> {
        self.stats.clone()
    }
}

/// The dispatcher's queue: senders keep the handle, dispatcher generations take turns with
/// the inbox.
pub type NotifyInbox = Inbox<mpsc::Receiver<Notification>>;

/// A queue of [`QUEUE`] notifications.
pub fn channel(stats: Arc<NotifyStats>) -> (NotifyHandle, NotifyInbox) {
    let (tx, rx) = mpsc::channel::<Notification>(QUEUE);
    (NotifyHandle { tx, stats }, Inbox::new(rx))
}

/// Starts an unsupervised dispatcher on the current tokio runtime (tests).
pub fn spawn(cfg: NotifyConfig, stats: Arc<NotifyStats>) -> NotifyHandle {
    let (tx, mut rx) = mpsc::channel::<Notification>(QUEUE);
    let handle = NotifyHandle {
        tx,
        stats: stats.clone(),
    };
    tokio::spawn(async move { run(&cfg, &mut rx, &stats).await });
    handle
}

/// The dispatcher: routes and delivers what `rx` holds until every sender is gone.
pub async fn run(cfg: &NotifyConfig, rx: &mut mpsc::Receiver<Notification>, stats: &Arc<NotifyStats>) {
    let http = webhook::client();
    let mut router = Router::new(cfg, common::time::now_ms());
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_DELIVERIES));
    while let Some(n) = rx.recv().await {
        match router.route(&n, common::time::now_ms()) {
            Decision::RateLimited { route } => {
                tracing::warn!(route = %route, notification = %n.id, "notification dropped by the route's rate limit");
                stats.with(|s| *s.rate_limited.entry(route).or_default() += 1);
            }
            Decision::Send { route, channels } => {
                stats.with(|s| *s.routed.entry(route.clone()).or_default() += 1);
                let n = Arc::new(n);
                for name in channels {
                    let Some(channel) = cfg.channels.get(&name).cloned() else {
                        continue;
                    };
                    let Ok(permit) = permits.clone().acquire_owned().await else {
                        return;
                    };
                    let (n, stats, http) = (n.clone(), stats.clone(), http.clone());
                    tokio::spawn(async move {
                        let res = deliver(&channel, &n, &http).await;
                        drop(permit);
                        match res {
                            Ok(()) => stats.with(|s| *s.delivered.entry(name).or_default() += 1),
                            Err(e) => {
                                tracing::error!(channel = %name, notification = %n.id, error = %e, "notification not delivered");
                                stats.with(|s| {
                                    *s.failed.entry(name.clone()).or_default() += 1;
                                    s.last_error = Some(format!("{name}: {e}"));
                                });
                            }
                        }
                    });
                }
            }
        }
    }
}

async fn deliver(channel: &Channel, n: &Notification, http: &reqwest::Client) -> Result<(), String> {
    match channel {
        Channel::Log => {
            tracing::warn!(
                notification = %n.id,
                severity = severity_label(n.severity),
                title = %n.title,
                "notification"
            );
            Ok(())
        }
        Channel::Webhook(w) => webhook::send(http, w, n).await,
        Channel::Email(e) => email::send(e, n).await,
    }
}

#[cfg(test)]
mod testkit;
