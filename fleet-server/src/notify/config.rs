//! The `[notify]` section of `fleet-server.toml`: routes, the default route and channels as
//! written, [`NotifySection::validate`] naming every bad key, and the runtime
//! [`NotifyConfig`].

use std::collections::BTreeMap;
use std::time::Duration;

use common::Severity;
use serde::Deserialize;

use super::email::{self, EmailConfig};
use super::notification::Notification;
use super::webhook::{self, WebhookConfig};

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
                    let (host, port) = match common::addr::split_host_port(smtp) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::testkit::*;

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
    fn the_default_config_logs_everything() {
        let cfg = NotifyConfig::default();
        assert_eq!(cfg.default.channels, ["log"]);
        assert_eq!(cfg.channels.get("log"), Some(&Channel::Log));
    }
}
