//! Counters of notifications, shared by the dispatcher, the outbox worker, the API
//! (`/api/v1/health`, `GET /api/v1/notify`) and `/metrics`: one [`NotifySnapshot`] they all
//! read. Each notable event is recorded in one place here, which also logs it.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

use super::outbox::OutboxCounts;

/// The last failed delivery of a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastError {
    pub at_ms: i64,
    /// `tls`, `connect`, `timeout`, `status`, `auth`, `rejected`, `template`, `setup`, ...
    pub kind: String,
    pub message: String,
    /// The notification it was about.
    pub notification: String,
}

/// One channel's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChannelStats {
    /// Deliveries the receiver accepted.
    pub delivered: u64,
    /// Deliveries that failed and will be tried again later.
    pub retried: u64,
    /// Given up: an error that needs a person (TLS, authentication, a refusal), or retries
    /// past the outbox's give-up time.
    pub failed: u64,
    /// Failed deliveries (retried or given up) by error kind.
    pub errors: BTreeMap<String, u64>,
    /// Resolutions held back until their firing was delivered (a receiver would otherwise
    /// see the resolve before the trigger).
    pub deferred: u64,
    pub last_error: Option<LastError>,
    pub last_delivered_ms: Option<i64>,
    /// The channel could not be started (an unreadable `ca_file`, no system roots): its
    /// deliveries fail with this.
    pub setup_error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct NotifySnapshot {
    /// Accepted for delivery, by route.
    pub routed: BTreeMap<String, u64>,
    /// Dropped by a route's rate limit, by route.
    pub rate_limited: BTreeMap<String, u64>,
    /// Delivered, by channel.
    pub delivered: BTreeMap<String, u64>,
    /// Given up (an error that needs a person, or retries past the give-up time), by channel.
    pub failed: BTreeMap<String, u64>,
    /// Dropped because the dispatcher's queue was full.
    pub queue_full: u64,
    /// Decisions that could not be written to the outbox (lost).
    pub enqueue_errors: u64,
    /// Outbox reads and writes of the worker that failed.
    pub outbox_errors: u64,
    /// `{channel}: {error}` of the latest failed delivery.
    pub last_error: Option<String>,
    pub channels: BTreeMap<String, ChannelStats>,
    /// Outbox entries by state, as of the worker's last count.
    pub outbox: OutboxCounts,
}

/// How one delivery ended, for the counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    Ok,
    /// Will be tried again later.
    Retry {
        kind: String,
        message: String,
    },
    /// Given up.
    Failed {
        kind: String,
        message: String,
    },
    /// A resolution waiting for its firing.
    Deferred,
}

/// The shared counters. See the module docs.
#[derive(Debug, Default)]
pub struct NotifyStats(Mutex<NotifySnapshot>);

impl NotifyStats {
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut NotifySnapshot) -> T) -> T {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s)
    }

    pub fn snapshot(&self) -> NotifySnapshot {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Registers the configured channels, so the API lists them before their first delivery.
    pub fn register(&self, channel: &str, setup_error: Option<String>) {
        self.with(|s| s.channels.entry(channel.to_string()).or_default().setup_error = setup_error);
    }

    /// Counts the end of one delivery of `notification` to `channel` at `now_ms`, and logs it.
    pub fn delivery(&self, channel: &str, notification: &str, outcome: &Delivered, now_ms: i64) {
        match outcome {
            Delivered::Ok => tracing::info!(channel, notification, "notification delivered"),
            Delivered::Retry { kind, message } => {
                tracing::warn!(channel, notification, kind = %kind, error = %message, "notification not delivered; will retry")
            }
            Delivered::Failed { kind, message } => {
                tracing::error!(channel, notification, kind = %kind, error = %message, "notification not delivered; given up")
            }
            Delivered::Deferred => {
                tracing::info!(
                    channel,
                    notification,
                    "resolution waits for its firing to be delivered"
                )
            }
        }
        self.with(|s| {
            let c = s.channels.entry(channel.to_string()).or_default();
            let error = |c: &mut ChannelStats, kind: &str, message: &str| {
                *c.errors.entry(kind.to_string()).or_default() += 1;
                c.last_error = Some(LastError {
                    at_ms: now_ms,
                    kind: kind.to_string(),
                    message: message.to_string(),
                    notification: notification.to_string(),
                });
            };
            match outcome {
                Delivered::Ok => {
                    c.delivered += 1;
                    c.last_delivered_ms = Some(now_ms);
                    *s.delivered.entry(channel.to_string()).or_default() += 1;
                }
                Delivered::Retry { kind, message } => {
                    c.retried += 1;
                    error(c, kind, message);
                    s.last_error = Some(format!("{channel}: {message}"));
                }
                Delivered::Failed { kind, message } => {
                    c.failed += 1;
                    error(c, kind, message);
                    *s.failed.entry(channel.to_string()).or_default() += 1;
                    s.last_error = Some(format!("{channel}: {message}"));
                }
                Delivered::Deferred => c.deferred += 1,
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_delivery_counts_by_kind_and_keeps_the_last_error() {
        let s = NotifyStats::default();
        s.register("pager", None);
        assert_eq!(s.snapshot().channels["pager"], ChannelStats::default());
        let retry = Delivered::Retry {
            kind: "status".into(),
            message: "503".into(),
        };
        s.delivery("pager", "a/firing", &retry, 1);
        s.delivery(
            "pager",
            "a/firing",
            &Delivered::Failed {
                kind: "tls".into(),
                message: "UnknownIssuer".into(),
            },
            2,
        );
        s.delivery("pager", "b/firing", &Delivered::Ok, 3);
        s.delivery("pager", "b/resolved", &Delivered::Deferred, 4);
        let snap = s.snapshot();
        let c = &snap.channels["pager"];
        assert_eq!((c.delivered, c.retried, c.failed, c.deferred), (1, 1, 1, 1));
        assert_eq!(
            c.errors,
            BTreeMap::from([("status".into(), 1), ("tls".into(), 1)])
        );
        let last = c.last_error.as_ref().unwrap();
        assert_eq!((last.at_ms, last.kind.as_str()), (2, "tls"));
        assert_eq!(c.last_delivered_ms, Some(3));
        assert_eq!((snap.delivered["pager"], snap.failed["pager"]), (1, 1));
        assert_eq!(snap.last_error.as_deref(), Some("pager: UnknownIssuer"));
    }
}
