//! The `[notify]` section of `fleet-server.toml`: routes, the default route, channels and
//! maintenance windows as written, [`NotifySection::validate`] naming every bad key, and the
//! runtime [`NotifyConfig`].
//!
//! Each channel kind validates its own keys ([`super::channels`]: webhook, sms, email, each
//! with a `validate(prefix, name)` that also compiles and tries its templates and reads its
//! secrets); maintenance windows are [`super::maintenance::Windows`].

use std::collections::BTreeMap;

use common::Severity;
use serde::Deserialize;

use super::channels::ChannelSpec;
use super::channels::email::{EmailChannel, EmailFile};
use super::channels::sms::{SmsChannel, SmsFile};
use super::channels::webhook::{WebhookChannel, WebhookFile};
use super::http_client;
use super::maintenance::{WindowFile, Windows};
use super::notification::Notification;

/// The built-in channel.
pub const LOG_CHANNEL: &str = "log";
/// Default rate limit of a route, notifications per minute.
pub const DEFAULT_PER_MINUTE: u32 = 10;

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
    /// The web view's address as people reach it (`https://fleet.example.com`): links in
    /// messages (`public_url` in templates, Teams' button, Alertmanager's `externalURL`).
    #[serde(default)]
    pub public_url: Option<String>,
    /// `[[notify.maintenance]]`: recurring windows during which notifications are muted.
    #[serde(default)]
    pub maintenance: Vec<WindowFile>,
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
/// `[notify.channels.NAME]`, by `type`; each kind's keys are its file struct's.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChannelFile {
    /// A line in the server log (a struct variant, so keys given to it are refused).
    Log {},
    /// A POST in a receiver's format, over HTTPS or HTTP.
    Webhook(WebhookFile),
    /// SMTP with STARTTLS (default), implicit TLS or none, with AUTH.
    Email(EmailFile),
    /// SMS through a provider's HTTP API (Twilio).
    Sms(SmsFile),
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

/// A validated channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Channel {
    Log,
    Webhook(WebhookChannel),
    Email(EmailChannel),
    Sms(SmsChannel),
}

impl Channel {
    /// `log`, `webhook`, `email` or `sms`.
    pub fn kind(&self) -> &'static str {
        match self {
            Channel::Log => "log",
            Channel::Webhook(_) => "webhook",
            Channel::Email(_) => "email",
            Channel::Sms(_) => "sms",
        }
    }

    /// What a sender is started from; None for the log channel (it needs none).
    pub fn spec(&self) -> Option<ChannelSpec> {
        match self {
            Channel::Log => None,
            Channel::Webhook(c) => Some(ChannelSpec::Webhook(c.clone())),
            Channel::Email(c) => Some(ChannelSpec::Email(c.clone())),
            Channel::Sms(c) => Some(ChannelSpec::Sms(c.clone())),
        }
    }
}

/// The validated `[notify]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct NotifyConfig {
    pub routes: Vec<Route>,
    pub default: Route,
    pub channels: BTreeMap<String, Channel>,
    /// `public_url`, for links in messages.
    pub public_url: Option<String>,
    /// `[[notify.maintenance]]`.
    pub maintenance: Windows,
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
                public_url: None,
                maintenance: Windows::default(),
            })
    }
}

impl NotifySection {
    /// Every problem with its key path under `prefix`, or the runtime config.
    pub fn validate(&self, prefix: &str) -> Result<NotifyConfig, Vec<String>> {
        let mut p = Vec::new();
        let mut channels = BTreeMap::from([(LOG_CHANNEL.to_string(), Channel::Log)]);
        for (name, c) in &self.channels {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                p.push(format!(
                    "{prefix}.channels.{name:?}: channel names are [A-Za-z0-9_-]+"
                ));
            }
            let key = format!("{prefix}.channels.{name}");
            let channel = match c {
                ChannelFile::Log {} => Ok(Channel::Log),
                ChannelFile::Webhook(f) => f.validate(&key, name).map(Channel::Webhook),
                ChannelFile::Email(f) => f.validate(&key, name).map(Channel::Email),
                ChannelFile::Sms(f) => f.validate(&key, name).map(Channel::Sms),
            };
            let channel = match channel {
                Ok(c) => c,
                Err(mut e) => {
                    p.append(&mut e);
                    continue;
                }
            };
            channels.insert(name.clone(), channel);
        }
        // a channel with bad keys is reported once, not again by every route naming it
        let mut declared: Vec<&str> = self.channels.keys().map(String::as_str).collect();
        if !self.channels.contains_key(LOG_CHANNEL) {
            declared.insert(0, LOG_CHANNEL);
        }
        let check_route =
            |p: &mut Vec<String>, key: String, chans: &[String], per_minute: u32, burst: Option<u32>| {
                if chans.is_empty() {
                    p.push(format!("{key}.channels: needs at least one channel"));
                }
                for (i, c) in chans.iter().enumerate() {
                    if !declared.contains(&c.as_str()) {
                        p.push(format!(
                            "{key}.channels[{i}]: no channel {c:?} (defined: {})",
                            declared.join(", ")
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
        let public_url = self
            .public_url
            .as_ref()
            .map(|u| u.trim_end_matches('/').to_string());
        if let Some(u) = &public_url
            && let Err(e) = http_client::check_url(u)
        {
            p.push(format!("{prefix}.public_url: {e}"));
        }
        let maintenance = Windows::from_files(&format!("{prefix}.maintenance"), &self.maintenance)
            .unwrap_or_else(|mut e| {
                p.append(&mut e);
                Windows::default()
            });
        if p.is_empty() {
            Ok(NotifyConfig {
                routes,
                default,
                channels,
                public_url,
                maintenance,
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

    #[test]
    fn channels_of_every_kind_validate_with_their_own_keys() {
        let cfg = build_section(
            r#"
[notify]
public_url = "https://fleet.example.com/"
[notify.default]
channels = ["pager", "mail", "hook"]
[notify.channels.pager]
type = "webhook"
format = "pagerduty"
routing_key = "R0123"
[notify.channels.hook]
type = "webhook"
url = "https://hooks.example.com/x"
[notify.channels.mail]
type = "email"
smtp = "smtp.example.com:587"
from = "fleet@example.com"
to = ["ops@example.com"]
"#,
        )
        .validate("notify")
        .unwrap();
        assert_eq!(cfg.public_url.as_deref(), Some("https://fleet.example.com"));
        let kinds: Vec<&str> = cfg.channels.values().map(Channel::kind).collect();
        assert_eq!(kinds, ["webhook", "log", "email", "webhook"]);
        let Some(Channel::Email(m)) = cfg.channels.get("mail") else {
            panic!("{cfg:?}")
        };
        assert_eq!(
            m.security,
            crate::notify::channels::email::Security::Starttls,
            "STARTTLS unless told otherwise"
        );
    }

    #[test]
    fn a_bad_channel_is_named_once_and_not_again_by_its_routes() {
        let p = build_section(
            "[notify.default]\nchannels = [\"pd\"]\n[notify.channels.pd]\ntype = \"webhook\"\nformat = \"pagerduty\"\n",
        )
        .validate("notify")
        .unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("notify.channels.pd.routing_key"), "{p:?}");
    }

    #[test]
    fn public_url_and_maintenance_windows_are_checked_by_key() {
        let p = build_section(
            r#"
[notify]
public_url = "ftp://fleet"
[[notify.maintenance]]
sites = ["oslo"]
time_zone = "Europe/Atlantis"
"#,
        )
        .validate("notify")
        .unwrap_err()
        .join("\n");
        for key in ["notify.public_url", "notify.maintenance[0].time_zone"] {
            assert!(p.contains(key), "{key} in:\n{p}");
        }
        let cfg = build_section(
            "[[notify.maintenance]]\nname = \"sundays\"\nsites = [\"oslo\"]\ntime_zone = \"Europe/Oslo\"\ndays = [\"sun\"]\n",
        )
        .validate("notify")
        .unwrap();
        assert_eq!(cfg.maintenance.windows[0].name, "sundays");
    }

    #[test]
    fn a_log_channel_takes_no_keys() {
        let e = toml::from_str::<NotifySection>("[channels.x]\ntype = \"log\"\nurl = \"http://a/\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("url"), "{e}");
    }
}
