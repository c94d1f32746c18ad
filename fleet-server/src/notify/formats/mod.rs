//! Request bodies of webhook channels, one receiver's shape a file, all pure: a
//! [`Notification`] and its [`Rendered`] title and text in, JSON out.
//!
//! - [`json`]: the project's own payload, versioned (`"version": 1`, docs/notifications.md)
//! - [`slack`]: Slack incoming webhooks (`text` and `blocks`)
//! - [`teams`]: Microsoft Teams incoming webhooks and Workflows (an Adaptive Card in a
//!   `message`)
//! - [`pagerduty`]: PagerDuty Events API v2 (`trigger` / `resolve` on a stable `dedup_key`)
//! - [`alertmanager`]: Alertmanager's webhook payload (version 4), for receivers people
//!   already run
//! - [`telegram`]: Telegram Bot API `sendMessage` (HTML parse mode)
//!
//! Receivers cap their fields; bodies respect the caps by cutting text with an ellipsis
//! ([`truncate`]) rather than being refused.

pub mod alertmanager;
pub mod json;
pub mod pagerduty;
pub mod slack;
pub mod teams;
pub mod telegram;

use serde::{Deserialize, Serialize};

use super::notification::Notification;
use super::secret::Secret;
use super::template::{Escape, Rendered};

/// `format = "..."` of a webhook channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Slack,
    Teams,
    Pagerduty,
    Alertmanager,
    Telegram,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Slack => "slack",
            Format::Teams => "teams",
            Format::Pagerduty => "pagerduty",
            Format::Alertmanager => "alertmanager",
            Format::Telegram => "telegram",
        }
    }

    /// How the title and the text templates escape their values for this receiver.
    pub fn escapes(self) -> (Escape, Escape) {
        match self {
            // the title goes in a plain_text header block, the text in a mrkdwn section
            Format::Slack => (Escape::None, Escape::Slack),
            Format::Telegram => (Escape::Telegram, Escape::Telegram),
            _ => (Escape::None, Escape::None),
        }
    }
}

/// A format with the settings it needs from the channel.
#[derive(Debug, Clone, PartialEq)]
pub enum FormatSpec {
    Json,
    Slack,
    Teams,
    /// The channel's own `routing_key` (the integration key of a PagerDuty service).
    Pagerduty {
        routing_key: Secret,
    },
    Alertmanager,
    /// The channel's `chat_id` (a number, or `@channelname`).
    Telegram {
        chat_id: String,
    },
}

impl FormatSpec {
    pub fn format(&self) -> Format {
        match self {
            FormatSpec::Json => Format::Json,
            FormatSpec::Slack => Format::Slack,
            FormatSpec::Teams => Format::Teams,
            FormatSpec::Pagerduty { .. } => Format::Pagerduty,
            FormatSpec::Alertmanager => Format::Alertmanager,
            FormatSpec::Telegram { .. } => Format::Telegram,
        }
    }
}

/// What a body is made of.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub notification: &'a Notification,
    pub rendered: &'a Rendered,
    /// The channel's name (Alertmanager's `receiver`, the JSON payload's `channel`).
    pub channel: &'a str,
    /// The server's public URL, for links; None: no links.
    pub public_url: Option<&'a str>,
}

/// The request body for `spec`.
pub fn body(spec: &FormatSpec, input: &Input<'_>) -> serde_json::Value {
    match spec {
        FormatSpec::Json => json::body(input),
        FormatSpec::Slack => slack::body(input),
        FormatSpec::Teams => teams::body(input),
        FormatSpec::Pagerduty { routing_key } => pagerduty::body(routing_key, input),
        FormatSpec::Alertmanager => alertmanager::body(input),
        FormatSpec::Telegram { chat_id } => telegram::body(chat_id, input),
    }
}

/// At most `max` characters: longer text is cut and ends with `…` (counted in `max`).
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
pub(crate) mod testing {
    //! Golden files: `golden/{name}.json` holds the expected body; `UPDATE_GOLDEN=1 cargo
    //! test` rewrites them (review the diff before committing).

    use std::path::PathBuf;

    use super::*;
    use crate::notify::sample;
    use crate::notify::template::{DEFAULT_TEXT, RenderContext, Templates};

    /// 2026-03-29T01:00:00Z.
    pub const AT_MS: i64 = 1_774_746_000_000;
    pub const PUBLIC_URL: &str = "https://fleet.example.com";

    /// The three sample notifications with their names.
    pub fn build_cases() -> Vec<(&'static str, Notification)> {
        let [f, r, i] = sample::all(AT_MS);
        vec![("firing", f), ("resolved", r), ("incident", i)]
    }

    pub fn build_rendered(format: Format, n: &Notification) -> Rendered {
        let (title, text) = format.escapes();
        Templates::new(None, None, DEFAULT_TEXT, title, text)
            .unwrap()
            .render(
                n,
                RenderContext {
                    channel: "ops",
                    public_url: Some(PUBLIC_URL),
                },
            )
            .unwrap()
    }

    /// The body of `spec` for `n`, rendered with the default templates.
    pub fn build_body(spec: &FormatSpec, n: &Notification) -> serde_json::Value {
        let rendered = build_rendered(spec.format(), n);
        body(
            spec,
            &Input {
                notification: n,
                rendered: &rendered,
                channel: "ops",
                public_url: Some(PUBLIC_URL),
            },
        )
    }

    pub fn check_golden(name: &str, actual: &serde_json::Value) {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("src/notify/formats/golden")
            .join(format!("{name}.json"));
        let pretty = serde_json::to_string_pretty(actual).unwrap() + "\n";
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &pretty).unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; write it with UPDATE_GOLDEN=1 and review it",
                path.display()
            )
        });
        let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(
            *actual == expected,
            "{name}: the body differs from {}; it is now:\n{pretty}",
            path.display()
        );
    }

    /// Every sample through `spec`, each against its golden file `{prefix}_{case}`.
    pub fn check_all(prefix: &str, spec: &FormatSpec) {
        for (case, n) in build_cases() {
            check_golden(&format!("{prefix}_{case}"), &build_body(spec, &n));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_short_text_and_marks_cut_text() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "ab…");
        assert_eq!(truncate("ææææ", 2), "æ…");
        assert_eq!(truncate("abc", 0), "");
    }

    #[test]
    fn format_names_parse_from_config() {
        #[derive(Deserialize)]
        struct W {
            format: Format,
        }
        for f in [
            Format::Json,
            Format::Slack,
            Format::Teams,
            Format::Pagerduty,
            Format::Alertmanager,
            Format::Telegram,
        ] {
            let w: W = toml::from_str(&format!("format = {:?}", f.as_str())).unwrap();
            assert_eq!(w.format, f);
        }
        let e = toml::from_str::<W>("format = \"discord\"")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("discord"), "{e}");
    }
}
