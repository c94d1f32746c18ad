//! Notifications: what the alerts actor decided people should hear about, routed to channels
//! that reach real endpoints, through a durable outbox (docs/notifications.md).
//!
//! - [`notification::Notification`]: one message (an alert firing, resolved or escalated; an
//!   incident opened, resolved or withdrawn), the same JSON a `json` webhook receives;
//! - [`config`]: the `[notify]` section, every bad key named; [`router::Router`] (pure): the
//!   first `[[notify.routes]]` entry whose severity and labels match wins, else the default
//!   route; each route has a token bucket, and a notification over the limit is dropped and
//!   counted, never queued;
//! - [`channels`]: webhook (in a receiver's [`formats`]: json, slack, teams, pagerduty,
//!   alertmanager, telegram), SMS (Twilio), email (SMTP with TLS and AUTH), over
//!   [`http_client`]; message text from [`template`]s; secrets from files or the environment
//!   ([`secret`]);
//! - [`dispatch`]: routes each decision and writes one [`outbox`] entry per channel (the
//!   `log` channel is written at once); [`worker`]: delivers due entries, retries what is
//!   worth retrying, and records every outcome in [`stats`]. A notification decided before a
//!   crash is delivered after the restart, at least once, with a stable id to deduplicate on;
//! - [`maintenance`]: recurring windows in a site's time zone (pure); the alerts actor mutes
//!   notifications inside them and serves their routes ([`crate::alerts::maintenance`]);
//! - [`Notifier`]: what the API sees: counters, channels, the outbox, and the test message
//!   ([`sample`]); [`http`]: its routes.
//!
//! A built-in `log` channel exists unless the file defines one of that name.

pub mod channels;
pub mod config;
pub mod dispatch;
pub mod formats;
pub mod http;
pub mod http_client;
pub mod maintenance;
pub mod notification;
pub mod outbox;
pub mod router;
pub mod sample;
pub mod secret;
pub mod stats;
pub mod template;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::mpsc;

use self::channels::{Receipt, Sender};
use self::config::{Channel, NotifyConfig};
use self::dispatch::Dispatcher;
use self::notification::Notification;
use self::outbox::OutboxStore;
use self::stats::ChannelStats;
pub use self::stats::{NotifySnapshot, NotifyStats};
use self::worker::{Shared, Worker, log_notification};
use crate::supervise::inbox::Inbox;

/// Notifications waiting for the dispatcher at most; more are dropped and counted.
pub const QUEUE: usize = 10_000;

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

    /// A handle whose notifications go to the returned receiver (tests of the alerts actor).
    pub fn detached(capacity: usize) -> (NotifyHandle, mpsc::Receiver<Notification>) {
        let (tx, rx) = mpsc::channel(capacity);
        let handle = NotifyHandle {
            tx,
            stats: Arc::default(),
        };
        (handle, rx)
    }
}

/// A channel as the API shows it: no secrets, the target redacted.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelView {
    pub name: String,
    /// `log`, `webhook`, `email` or `sms`.
    pub kind: &'static str,
    /// A webhook's format (`json`, `slack`, ...), or the kind.
    pub format: &'static str,
    /// `scheme://host:port/…` or `smtp host:port`; none for `log`.
    pub target: Option<String>,
    pub stats: ChannelStats,
}

/// What the receiver answered to a test message, or why it was not delivered.
#[derive(Debug, Clone, Serialize)]
pub struct TestOutcome {
    pub channel: String,
    /// The sample notification's id.
    pub notification: String,
    pub delivered: bool,
    pub took_ms: u64,
    pub receipt: Option<Receipt>,
    /// `{kind, message}` of the failure.
    pub error: Option<TestError>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TestError {
    pub kind: &'static str,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("no channel {name:?} (defined: {})", known.join(", "))]
    UnknownChannel { name: String, known: Vec<String> },
}

/// The notification service as the API sees it. See the module docs.
pub struct Notifier {
    stats: Arc<NotifyStats>,
    outbox: Arc<dyn OutboxStore>,
    channels: BTreeMap<String, Channel>,
    public_url: Option<String>,
}

impl Notifier {
    pub fn stats(&self) -> &Arc<NotifyStats> {
        &self.stats
    }

    pub fn snapshot(&self) -> NotifySnapshot {
        self.stats.snapshot()
    }

    pub fn outbox(&self) -> &Arc<dyn OutboxStore> {
        &self.outbox
    }

    /// Every channel with its counters, by name.
    pub fn channels(&self) -> Vec<ChannelView> {
        let snap = self.stats.snapshot();
        self.channels
            .iter()
            .map(|(name, c)| {
                let spec = c.spec();
                ChannelView {
                    name: name.clone(),
                    kind: c.kind(),
                    format: spec.as_ref().map_or("log", |s| s.format()),
                    target: spec.as_ref().map(|s| s.target()),
                    stats: snap.channels.get(name).cloned().unwrap_or_default(),
                }
            })
            .collect()
    }

    /// Sends a sample notification ([`sample::firing_alert`], or its resolution) to
    /// `channel` now, in one attempt, past routes, rate limits and the outbox; what the
    /// receiver answered, or the error.
    pub async fn send_test(
        &self,
        channel: &str,
        resolved: bool,
        now_ms: i64,
    ) -> Result<TestOutcome, NotifyError> {
        let c = self
            .channels
            .get(channel)
            .ok_or_else(|| NotifyError::UnknownChannel {
                name: channel.to_string(),
                known: self.channels.keys().cloned().collect(),
            })?;
        let n = if resolved {
            sample::resolved_alert(now_ms)
        } else {
            sample::firing_alert(now_ms)
        };
        let started = Instant::now();
        let result = match c.spec() {
            None => {
                log_notification(channel, &n);
                Ok(Receipt::Logged)
            }
            Some(spec) => match spec.single_attempt().start() {
                Ok(sender) => Sender::send(&sender, &n, self.public_url.as_deref()).await,
                Err(e) => Err(e),
            },
        };
        let took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (delivered, receipt, error) = match result {
            Ok(r) => (true, Some(r), None),
            Err(e) => (
                false,
                None,
                Some(TestError {
                    kind: e.kind(),
                    message: e.to_string(),
                }),
            ),
        };
        tracing::info!(channel, delivered, took_ms, "test notification sent");
        Ok(TestOutcome {
            channel: channel.to_string(),
            notification: n.id,
            delivered,
            took_ms,
            receipt,
            error,
        })
    }
}

/// The dispatcher's queue: the alerts actor keeps the handle, dispatcher generations take
/// turns with the inbox (supervised: `crate::server::children`).
pub type NotifyInbox = Inbox<mpsc::Receiver<Notification>>;

/// The notification service, built once per process: the handle the alerts actor sends to,
/// the dispatcher's queue, the dispatcher and the outbox worker (each run as a supervised
/// child: a restarted one carries on with the same queue, outbox and channels), and what the
/// API sees.
pub struct NotifyService {
    pub handle: NotifyHandle,
    pub inbox: NotifyInbox,
    pub dispatcher: Arc<Dispatcher>,
    pub worker: Arc<Worker>,
    pub notifier: Arc<Notifier>,
}

/// Builds the service on `outbox` (starting every channel's client) and makes every pending
/// entry due now: called once when the process starts, when no delivery of an earlier
/// process can still be under way (a blocking outbox call).
pub fn build(cfg: NotifyConfig, outbox: Arc<dyn OutboxStore>) -> NotifyService {
    match outbox.release_all(common::time::now_ms()) {
        Ok(0) => {}
        Ok(n) => tracing::info!(entries = n, "pending notifications of the previous run are due"),
        Err(e) => tracing::error!(error = %e, "notification outbox: pending entries not released"),
    }
    let stats = Arc::new(NotifyStats::default());
    let shared = Arc::new(Shared::default());
    let (tx, rx) = mpsc::channel::<Notification>(QUEUE);
    let worker = Arc::new(Worker {
        outbox: outbox.clone(),
        deliverers: Arc::new(worker::start_channels(&cfg, &stats)),
        stats: stats.clone(),
        shared: shared.clone(),
        policy: worker::policy_for(&cfg),
        public_url: cfg.public_url.clone(),
    });
    let notifier = Arc::new(Notifier {
        stats: stats.clone(),
        outbox: outbox.clone(),
        channels: cfg.channels.clone(),
        public_url: cfg.public_url.clone(),
    });
    let dispatcher = Arc::new(Dispatcher {
        cfg,
        stats: stats.clone(),
        outbox,
        shared,
    });
    NotifyService {
        handle: NotifyHandle { tx, stats },
        inbox: Inbox::new(rx),
        dispatcher,
        worker,
        notifier,
    }
}

/// Builds the service and runs the dispatcher and the worker unsupervised on the current
/// tokio runtime (tests).
pub fn spawn(cfg: NotifyConfig, outbox: Arc<dyn OutboxStore>) -> (NotifyHandle, Arc<Notifier>) {
    let s = build(cfg, outbox);
    let (dispatcher, inbox) = (s.dispatcher.clone(), s.inbox.clone());
    tokio::spawn(async move {
        if let Some(mut rx) = inbox.try_take() {
            dispatcher.run(&mut rx).await;
        }
    });
    tokio::spawn(s.worker.clone().run());
    (s.handle, s.notifier)
}

#[cfg(test)]
mod testkit;
