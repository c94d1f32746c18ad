//! Notifications: what the alerts actor decided people should hear about, routed to channels.
//!
//! - [`Notification`]: one message (an alert firing, resolved or escalated; an incident opened,
//!   resolved or withdrawn), the same JSON a webhook receives;
//! - [`Router`] (pure): the first `[[notify.routes]]` entry whose severity and labels match
//!   wins, else the default route; every route has a token bucket ([`TokenBucket`], e.g. 10 a
//!   minute) so an outage cannot turn into a storm: a notification over the limit is dropped
//!   and counted, never queued;
//! - [`spawn`]: the dispatcher task; every delivery runs on its own task (at most
//!   [`MAX_CONCURRENT_DELIVERIES`]) so a slow webhook never holds up email;
//! - channels: [`webhook`] (JSON POST, retried with jittered, capped exponential backoff),
//!   [`email`] (SMTP to a relay), and `log`.
//!
//! Configured in `fleet-server.toml` under `[notify]`; [`NotifySection::validate`] names every
//! bad key. A built-in `log` channel exists unless the file defines one of that name.

pub mod channels;
pub mod email;
pub mod formats;
pub mod http_client;
pub mod maintenance;
pub mod outbox;
pub mod sample;
pub mod secret;
pub mod template;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Severity;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc};

use crate::alerts::engine::severity_label;
use crate::alerts::{Alert, Transition, TransitionKind};
use crate::correlate::{Incident, IncidentChange, IncidentChangeKind, IncidentKind};

/// Notifications waiting for the dispatcher at most; more are dropped and counted.
pub const QUEUE: usize = 10_000;
/// Deliveries in progress at once.
pub const MAX_CONCURRENT_DELIVERIES: usize = 16;
/// The built-in channel.
pub const LOG_CHANNEL: &str = "log";
/// Default rate limit of a route, notifications per minute.
pub const DEFAULT_PER_MINUTE: u32 = 10;
/// Default time one delivery attempt may take.
pub const DEFAULT_TIMEOUT_S: u64 = 10;
/// Default time a delivery keeps retrying.
pub const DEFAULT_MAX_RETRY_S: u64 = 120;
/// Longest `timeout_s` / `max_retry_s` accepted.
pub const MAX_CHANNEL_S: u64 = 24 * 3600;

// ---------------------------------------------------------------------------------------------
// Configuration

/// `[notify]` as written in `fleet-server.toml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySection {
    /// Tried in order; the first that matches wins.
    #[serde(default)]
    pub routes: Vec<RouteFile>,
    /// Where a notification that no route matched goes.
    #[serde(default)]
    pub default: DefaultRouteFile,
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelFile>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// Shown in logs and counters; defaults to `routes[i]`.
    #[serde(default)]
    pub name: Option<String>,
    /// Only notifications at least this severe.
    #[serde(default)]
    pub min_severity: Option<Severity>,
    /// Labels that must all be equal (`site = "oslo"`, `team = "hardware"`, `source =
    /// "incident"`, `incident = "site_outage"`, ...).
    #[serde(default, rename = "match")]
    pub matchers: BTreeMap<String, String>,
    pub channels: Vec<String>,
    #[serde(default = "default_per_minute")]
    pub per_minute: u32,
    /// Notifications allowed at once before the rate applies; defaults to `per_minute`.
    #[serde(default)]
    pub burst: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultRouteFile {
    #[serde(default = "default_channels")]
    pub channels: Vec<String>,
    #[serde(default = "default_per_minute")]
    pub per_minute: u32,
    #[serde(default)]
    pub burst: Option<u32>,
}

impl Default for DefaultRouteFile {
    fn default() -> Self {
        DefaultRouteFile {
            channels: default_channels(),
            per_minute: default_per_minute(),
            burst: None,
        }
    }
}

fn default_channels() -> Vec<String> {
    vec![LOG_CHANNEL.into()]
}
fn default_per_minute() -> u32 {
    DEFAULT_PER_MINUTE
}
fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_S
}
fn default_max_retry() -> u64 {
    DEFAULT_MAX_RETRY_S
}
fn default_subject_prefix() -> String {
    "[RVM Fleet]".into()
}

/// `[notify.channels.NAME]`, by `type`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChannelFile {
    /// A line in the server log.
    Log,
    /// JSON POST of the [`Notification`].
    Webhook {
        /// `http://host:port/path` (this build has no TLS client: put a TLS proxy in front of
        /// an `https` receiver).
        url: String,
        #[serde(default = "default_timeout")]
        timeout_s: u64,
        #[serde(default = "default_max_retry")]
        max_retry_s: u64,
    },
    /// Plain SMTP to a relay (no TLS, no authentication: a local relay such as Postfix does
    /// the rest).
    Email {
        /// `host:port` of the relay.
        smtp: String,
        from: String,
        to: Vec<String>,
        #[serde(default = "default_subject_prefix")]
        subject_prefix: String,
        #[serde(default = "default_timeout")]
        timeout_s: u64,
        #[serde(default = "default_max_retry")]
        max_retry_s: u64,
    },
}

/// A validated route.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    pub min_severity: Option<Severity>,
    pub matchers: BTreeMap<String, String>,
    pub channels: Vec<String>,
    pub per_minute: u32,
    pub burst: u32,
}

impl Route {
    pub fn matches(&self, n: &Notification) -> bool {
        self.min_severity.is_none_or(|min| n.severity >= min)
            && self
                .matchers
                .iter()
                .all(|(k, v)| n.labels.get(k).is_some_and(|x| x == v))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    pub url: String,
    pub timeout: Duration,
    pub max_retry: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EmailConfig {
    pub host: String,
    pub port: u16,
    pub from: String,
    pub to: Vec<String>,
    pub subject_prefix: String,
    pub timeout: Duration,
    pub max_retry: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Channel {
    Log,
    Webhook(WebhookConfig),
    Email(EmailConfig),
}

/// The validated `[notify]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyConfig {
    pub routes: Vec<Route>,
    pub default: Route,
    pub channels: BTreeMap<String, Channel>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        // The default section always validates; the fallback keeps this infallible.
        NotifySection::default()
            .validate("notify")
            .unwrap_or_else(|_| NotifyConfig {
                routes: Vec::new(),
                default: Route {
                    name: "default".into(),
                    min_severity: None,
                    matchers: BTreeMap::new(),
                    channels: vec![LOG_CHANNEL.into()],
                    per_minute: DEFAULT_PER_MINUTE,
                    burst: DEFAULT_PER_MINUTE,
                },
                channels: BTreeMap::from([(LOG_CHANNEL.to_string(), Channel::Log)]),
            })
    }
}

fn check_duration(p: &mut Vec<String>, key: String, s: u64) {
    if s == 0 || s > MAX_CHANNEL_S {
        p.push(format!("{key}: {s} s is not between 1 and {MAX_CHANNEL_S} s"));
    }
}

impl NotifySection {
    /// Every problem with its key path under `prefix`, or the runtime config.
    pub fn validate(&self, prefix: &str) -> Result<NotifyConfig, Vec<String>> {
        let mut p = Vec::new();
        let mut channels = BTreeMap::from([(LOG_CHANNEL.to_string(), Channel::Log)]);
        for (name, c) in &self.channels {
            let k = |field: &str| format!("{prefix}.channels.{name}.{field}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                p.push(format!(
                    "{prefix}.channels.{name:?}: channel names are [A-Za-z0-9_-]+"
                ));
            }
            let channel = match c {
                ChannelFile::Log => Channel::Log,
                ChannelFile::Webhook {
                    url,
                    timeout_s,
                    max_retry_s,
                } => {
                    if let Err(e) = webhook::check_url(url) {
                        p.push(format!("{}: {e}", k("url")));
                    }
                    check_duration(&mut p, k("timeout_s"), *timeout_s);
                    check_duration(&mut p, k("max_retry_s"), *max_retry_s);
                    Channel::Webhook(WebhookConfig {
                        url: url.clone(),
                        timeout: Duration::from_secs(*timeout_s),
                        max_retry: Duration::from_secs(*max_retry_s),
                    })
                }
                ChannelFile::Email {
                    smtp,
                    from,
                    to,
                    subject_prefix,
                    timeout_s,
                    max_retry_s,
                } => {
                    let (host, port) = match rvm_agent::config::split_host_port(smtp) {
                        Some(hp) => hp,
                        None => {
                            p.push(format!("{}: {smtp:?} is not host:port", k("smtp")));
                            (String::new(), 0)
                        }
                    };
                    if let Err(e) = email::check_address(from) {
                        p.push(format!("{}: {e}", k("from")));
                    }
                    if to.is_empty() {
                        p.push(format!("{}: needs at least one address", k("to")));
                    }
                    for (i, a) in to.iter().enumerate() {
                        if let Err(e) = email::check_address(a) {
                            p.push(format!("{}: {e}", k(&format!("to[{i}]"))));
                        }
                    }
                    check_duration(&mut p, k("timeout_s"), *timeout_s);
                    check_duration(&mut p, k("max_retry_s"), *max_retry_s);
                    Channel::Email(EmailConfig {
                        host,
                        port,
                        from: from.clone(),
                        to: to.clone(),
                        subject_prefix: subject_prefix.clone(),
                        timeout: Duration::from_secs(*timeout_s),
                        max_retry: Duration::from_secs(*max_retry_s),
                    })
                }
            };
            channels.insert(name.clone(), channel);
        }
        let check_route =
            |p: &mut Vec<String>, key: String, chans: &[String], per_minute: u32, burst: Option<u32>| {
                if chans.is_empty() {
                    p.push(format!("{key}.channels: needs at least one channel"));
                }
                for (i, c) in chans.iter().enumerate() {
                    if !channels.contains_key(c) {
                        let known: Vec<&str> = channels.keys().map(String::as_str).collect();
                        p.push(format!(
                            "{key}.channels[{i}]: no channel {c:?} (defined: {})",
                            known.join(", ")
                        ));
                    }
                }
                if per_minute == 0 {
                    p.push(format!("{key}.per_minute: must be at least 1"));
                }
                if burst == Some(0) {
                    p.push(format!("{key}.burst: must be at least 1"));
                }
            };
        let mut routes = Vec::with_capacity(self.routes.len());
        for (i, r) in self.routes.iter().enumerate() {
            let key = format!("{prefix}.routes[{i}]");
            check_route(&mut p, key.clone(), &r.channels, r.per_minute, r.burst);
            for (label, value) in &r.matchers {
                if label.is_empty() || value.is_empty() {
                    p.push(format!("{key}.match.{label}: label and value must not be empty"));
                }
            }
            routes.push(Route {
                name: r.name.clone().unwrap_or_else(|| format!("routes[{i}]")),
                min_severity: r.min_severity,
                matchers: r.matchers.clone(),
                channels: r.channels.clone(),
                per_minute: r.per_minute,
                burst: r.burst.unwrap_or(r.per_minute),
            });
        }
        let d = &self.default;
        check_route(
            &mut p,
            format!("{prefix}.default"),
            &d.channels,
            d.per_minute,
            d.burst,
        );
        let default = Route {
            name: "default".into(),
            min_severity: None,
            matchers: BTreeMap::new(),
            channels: d.channels.clone(),
            per_minute: d.per_minute,
            burst: d.burst.unwrap_or(d.per_minute),
        };
        if p.is_empty() {
            Ok(NotifyConfig {
                routes,
                default,
                channels,
            })
        } else {
            Err(p)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Notifications

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Alert,
    Incident,
}

/// One message to people: the JSON body of a webhook, the content of an email.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// `{alert or incident id}/{event}`: a receiver can drop repeats by it.
    pub id: String,
    pub source: Source,
    /// Alerts: `firing`, `resolved`, `escalated`; incidents: `opened`, `resolved`, `withdrawn`.
    pub event: String,
    pub severity: Severity,
    pub at_ms: i64,
    pub title: String,
    pub text: String,
    /// What routes match on: an alert's labels (`rule`, `device`, `site`, `severity`, the
    /// rule's own); for an incident `incident` (its kind), `site`, `severity`. Both have
    /// `source`.
    pub labels: BTreeMap<String, String>,
    pub alert: Option<Alert>,
    pub incident: Option<Incident>,
}

impl Notification {
    /// The notification for an engine transition people hear about, if any: firing,
    /// resolved, escalated, and a firing alert whose silence ended (as `firing`).
    pub fn from_transition(t: &Transition) -> Option<Notification> {
        let event = match t.kind {
            TransitionKind::Firing | TransitionKind::Unsilenced => "firing",
            TransitionKind::Resolved => "resolved",
            TransitionKind::Escalated => "escalated",
            TransitionKind::Pending | TransitionKind::Cancelled => return None,
        };
        let a = &t.alert;
        let mut labels = a.labels.clone();
        labels.insert("source".into(), "alert".into());
        let title = format!("{} on {}: {}", a.rule, a.device, a.summary);
        let text = format!(
            "{event}: {title}\nalert {id}, severity {sev}\n{metric} = {value} ({op} {threshold}, clears at {clear})\nlabels: {labels}",
            id = a.id,
            sev = severity_label(a.severity),
            metric = a.metric,
            value = a.value,
            op = a.op,
            threshold = a.threshold,
            clear = a.clear,
            labels = a
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        Some(Notification {
            id: format!("{}/{event}", a.id),
            source: Source::Alert,
            event: event.into(),
            severity: a.severity,
            at_ms: t.at_ms,
            title,
            text,
            labels,
            alert: Some(a.clone()),
            incident: None,
        })
    }

    /// The notification for an incident change people hear about: opened, resolved,
    /// withdrawn (a member joining is not news).
    pub fn from_incident(c: &IncidentChange) -> Option<Notification> {
        let event = match c.kind {
            IncidentChangeKind::Opened => "opened",
            IncidentChangeKind::Resolved => "resolved",
            IncidentChangeKind::Withdrawn => "withdrawn",
            IncidentChangeKind::Joined => return None,
        };
        let i = &c.incident;
        let severity = incident_severity(i.kind);
        let mut labels = BTreeMap::from([
            ("source".to_string(), "incident".to_string()),
            ("incident".to_string(), i.kind.as_str().to_string()),
            ("severity".to_string(), severity_label(severity).to_string()),
        ]);
        if let Some(site) = &i.site {
            labels.insert("site".into(), site.clone());
        }
        if let (Some(k), Some(v)) = (&i.attribute, &i.attribute_value) {
            labels.insert(k.clone(), v.clone());
        }
        let devices: Vec<&str> = i.devices.iter().map(|d| d.as_str()).collect();
        let text = format!(
            "incident {event}: {title}\nincident {id} ({kind})\nprobable cause: {cause}\nmachines ({n}): {devices}",
            title = i.title,
            id = i.id,
            kind = i.kind.as_str(),
            cause = i.probable_cause,
            n = devices.len(),
            devices = devices.join(", "),
        );
        Some(Notification {
            id: format!("{}/{event}", i.id),
            source: Source::Incident,
            event: event.into(),
            severity,
            at_ms: c.at_ms,
            title: i.title.clone(),
            text,
            labels,
            alert: None,
            incident: Some(i.clone()),
        })
    }
}

/// How urgent an incident kind is: a whole site down pages, the others warn or inform.
pub fn incident_severity(kind: IncidentKind) -> Severity {
    match kind {
        IncidentKind::SiteOutage => Severity::Critical,
        IncidentKind::CohortRegression | IncidentKind::ThermalThrottling => Severity::Warning,
        IncidentKind::Outlier => Severity::Info,
    }
}

// ---------------------------------------------------------------------------------------------
// Routing and rate limits (pure)

/// A token bucket: `burst` tokens, refilled at `per_minute`. Pure: takes `now_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    capacity: f64,
    per_ms: f64,
    tokens: f64,
    last_ms: i64,
}

impl TokenBucket {
    pub fn new(per_minute: u32, burst: u32, now_ms: i64) -> Self {
        let capacity = f64::from(burst.max(1));
        TokenBucket {
            capacity,
            per_ms: f64::from(per_minute) / 60_000.0,
            tokens: capacity,
            last_ms: now_ms,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now_ms: i64) -> bool {
        let elapsed = (now_ms - self.last_ms).max(0) as f64;
        self.tokens = (self.tokens + elapsed * self.per_ms).min(self.capacity);
        self.last_ms = self.last_ms.max(now_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Where one notification goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Send {
        route: String,
        channels: Vec<String>,
    },
    /// Over the route's rate limit: dropped.
    RateLimited {
        route: String,
    },
}

/// Routes and their buckets. See the module docs.
#[derive(Debug, Clone)]
pub struct Router {
    routes: Vec<(Route, TokenBucket)>,
    default: (Route, TokenBucket),
}

impl Router {
    pub fn new(cfg: &NotifyConfig, now_ms: i64) -> Self {
        let with_bucket = |r: &Route| (r.clone(), TokenBucket::new(r.per_minute, r.burst, now_ms));
        Router {
            routes: cfg.routes.iter().map(with_bucket).collect(),
            default: with_bucket(&cfg.default),
        }
    }

    pub fn route(&mut self, n: &Notification, now_ms: i64) -> Decision {
        let (route, bucket) = match self.routes.iter_mut().find(|(r, _)| r.matches(n)) {
            Some(found) => found,
            None => &mut self.default,
        };
        if bucket.take(now_ms) {
            Decision::Send {
                route: route.name.clone(),
                channels: route.channels.clone(),
            }
        } else {
            Decision::RateLimited {
                route: route.name.clone(),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dispatcher

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

/// Starts the dispatcher on the current tokio runtime.
pub fn spawn(cfg: NotifyConfig, stats: Arc<NotifyStats>) -> NotifyHandle {
    let (tx, mut rx) = mpsc::channel::<Notification>(QUEUE);
    let handle = NotifyHandle {
        tx,
        stats: stats.clone(),
    };
    let http = webhook::client();
    tokio::spawn(async move {
        let mut router = Router::new(&cfg, common::time::now_ms());
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
    });
    handle
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
mod tests {
    use super::*;

    fn build_section(text: &str) -> NotifySection {
        #[derive(Deserialize)]
        struct Wrap {
            notify: NotifySection,
        }
        toml::from_str::<Wrap>(text).unwrap().notify
    }

    fn build_notification(severity: Severity, labels: &[(&str, &str)]) -> Notification {
        Notification {
            id: "a/firing".into(),
            source: Source::Alert,
            event: "firing".into(),
            severity,
            at_ms: 0,
            title: String::new(),
            text: String::new(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            alert: None,
            incident: None,
        }
    }

    const ROUTES: &str = r#"
[notify.default]
channels = ["log"]
[[notify.routes]]
name = "hardware"
match = { team = "hardware" }
channels = ["mail"]
[[notify.routes]]
name = "pager"
min_severity = "critical"
channels = ["hook", "mail"]
per_minute = 2
[notify.channels.hook]
type = "webhook"
url = "http://127.0.0.1:9/hook"
[notify.channels.mail]
type = "email"
smtp = "127.0.0.1:25"
from = "fleet@example.com"
to = ["ops@example.com"]
"#;

    #[test]
    fn the_first_matching_route_wins_and_the_default_takes_the_rest() {
        let cfg = build_section(ROUTES).validate("notify").unwrap();
        let mut r = Router::new(&cfg, 0);
        let route_of = |r: &mut Router, n: &Notification| match r.route(n, 0) {
            Decision::Send { route, .. } | Decision::RateLimited { route } => route,
        };
        // critical hardware: the hardware route comes first
        let hw = build_notification(Severity::Critical, &[("team", "hardware")]);
        assert_eq!(route_of(&mut r, &hw), "hardware");
        let crit = build_notification(Severity::Critical, &[("team", "vision")]);
        assert_eq!(
            r.route(&crit, 0),
            Decision::Send {
                route: "pager".into(),
                channels: vec!["hook".into(), "mail".into()]
            }
        );
        let warn = build_notification(Severity::Warning, &[]);
        assert_eq!(route_of(&mut r, &warn), "default");
    }

    #[test]
    fn a_route_over_its_rate_drops_until_tokens_refill() {
        let cfg = build_section(ROUTES).validate("notify").unwrap();
        let mut r = Router::new(&cfg, 0);
        let crit = build_notification(Severity::Critical, &[]);
        assert!(matches!(r.route(&crit, 0), Decision::Send { .. }));
        assert!(matches!(r.route(&crit, 1), Decision::Send { .. }));
        assert_eq!(
            r.route(&crit, 2),
            Decision::RateLimited {
                route: "pager".into()
            }
        );
        // other routes have their own bucket
        assert!(matches!(
            r.route(&build_notification(Severity::Info, &[]), 3),
            Decision::Send { .. }
        ));
        // 2 a minute: one token every 30 s
        assert!(matches!(r.route(&crit, 30_002), Decision::Send { .. }));
        assert!(matches!(r.route(&crit, 30_003), Decision::RateLimited { .. }));
    }

    #[test]
    fn a_token_bucket_allows_a_burst_then_the_rate() {
        let mut b = TokenBucket::new(10, 10, 0);
        assert_eq!((0..20).filter(|_| b.take(0)).count(), 10);
        assert!(!b.take(5_999));
        assert!(b.take(6_000));
        // a clock going back neither refills nor panics
        assert!(!b.take(0));
        let mut b = TokenBucket::new(10, 10, 0);
        assert_eq!(
            (0..20).filter(|_| b.take(3_600_000)).count(),
            10,
            "capped at burst"
        );
    }

    #[test]
    fn every_bad_notify_value_is_named_by_key() {
        let text = r#"
[notify.default]
channels = []
[[notify.routes]]
channels = ["nope"]
per_minute = 0
[notify.channels.hook]
type = "webhook"
url = "ftp://x"
timeout_s = 0
[notify.channels.mail]
type = "email"
smtp = "relay"
from = "not an address"
to = []
"#;
        let p = build_section(text).validate("notify").unwrap_err().join("\n");
        for key in [
            "notify.default.channels",
            "notify.routes[0].channels[0]",
            "notify.routes[0].per_minute",
            "notify.channels.hook.url",
            "notify.channels.hook.timeout_s",
            "notify.channels.mail.smtp",
            "notify.channels.mail.from",
            "notify.channels.mail.to",
        ] {
            assert!(p.contains(key), "{key} in:\n{p}");
        }
    }

    #[test]
    fn an_unknown_channel_key_or_type_is_named() {
        let e = toml::from_str::<NotifySection>(
            "[channels.x]\ntype = \"webhook\"\nurl = \"http://a/\"\nretries = 3\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("retries"), "{e}");
        let e = toml::from_str::<NotifySection>("[channels.x]\ntype = \"pager\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pager"), "{e}");
    }

    #[test]
    fn transitions_people_care_about_become_notifications_with_labels() {
        use crate::alerts::{AlertEngine, DeviceInfo, parse_rules};
        let rules = parse_rules(
            "[[rules]]\nname = \"hot\"\nmetric = \"gpu.temp_c\"\nop = \">\"\nthreshold = 80\nfor_s = 1\nseverity = \"warning\"\nlabels = { team = \"hardware\" }\n",
        )
        .unwrap();
        let mut e = AlertEngine::new(rules.rules);
        let mut d = DeviceInfo::new(common::DeviceId::new("rvm1").unwrap());
        d.site = Some("oslo".into());
        let m = |v: f64| vec![("gpu.temp_c".to_string(), v)];
        let pending = e.observe(&d, &m(90.0), 0);
        assert!(
            Notification::from_transition(&pending[0]).is_none(),
            "pending is not news"
        );
        let firing = e.observe(&d, &m(90.0), 1000);
        let n = Notification::from_transition(&firing[0]).unwrap();
        assert_eq!((n.id.as_str(), n.event.as_str()), ("hot:rvm1:1/firing", "firing"));
        for (k, v) in [
            ("source", "alert"),
            ("site", "oslo"),
            ("team", "hardware"),
            ("severity", "warning"),
        ] {
            assert_eq!(n.labels.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert!(n.text.contains("gpu.temp_c = 90"), "{}", n.text);
        let resolved = e.observe(&d, &m(20.0), 2000);
        assert_eq!(
            Notification::from_transition(&resolved[0]).unwrap().event,
            "resolved"
        );
    }

    #[test]
    fn incident_openings_and_resolutions_are_news_joins_are_not() {
        let inc = Incident {
            id: "site_outage-1".into(),
            kind: IncidentKind::SiteOutage,
            title: "site outage at oslo".into(),
            probable_cause: "power".into(),
            site: Some("oslo".into()),
            attribute: None,
            attribute_value: None,
            rule: None,
            metric: None,
            devices: vec![common::DeviceId::new("rvm1").unwrap()],
            members: Vec::new(),
            active_members: Vec::new(),
            suppresses_members: true,
            opened_ms: 0,
            updated_ms: 0,
            resolved_ms: None,
            state: crate::correlate::IncidentState::Open,
        };
        let change = |kind| IncidentChange {
            kind,
            at_ms: 5,
            incident: inc.clone(),
            suppressed: Vec::new(),
        };
        let n = Notification::from_incident(&change(IncidentChangeKind::Opened)).unwrap();
        assert_eq!((n.severity, n.event.as_str()), (Severity::Critical, "opened"));
        assert_eq!(n.labels.get("incident").map(String::as_str), Some("site_outage"));
        assert!(
            n.text.contains("probable cause: power") && n.text.contains("rvm1"),
            "{}",
            n.text
        );
        assert!(Notification::from_incident(&change(IncidentChangeKind::Joined)).is_none());
        assert_eq!(
            Notification::from_incident(&change(IncidentChangeKind::Withdrawn))
                .unwrap()
                .event,
            "withdrawn"
        );
    }

    #[test]
    fn the_default_config_logs_everything() {
        let cfg = NotifyConfig::default();
        assert_eq!(cfg.default.channels, ["log"]);
        assert_eq!(cfg.channels.get("log"), Some(&Channel::Log));
    }
}
