//! Message text from templates (minijinja, Jinja2 syntax). Every channel renders a **title** and
//! a **text** from a [`Notification`]; the defaults are [`DEFAULT_TITLE`], [`DEFAULT_TEXT`] and,
//! for SMS, [`DEFAULT_SMS_TEXT`]. A channel overrides them with `title_template` /
//! `text_template`.
//!
//! # Variables (documented in docs/notifications.md)
//! `id`, `dedup_key`, `source` (`alert` | `incident`), `event` (`firing`, `resolved`,
//! `escalated`, `opened`, `withdrawn`), `resolved` (true for `resolved` and `withdrawn`),
//! `severity` (`info`, `warning`, `critical`), `at` (RFC 3339, UTC), `at_ms`, `title` and
//! `text` (the notification's own), `labels` (a map), `device` and `site` (or none), `alert`
//! and `incident` (the full records, or none), `channel` (the channel's name), `public_url`
//! (the server's `public_url`, or none).
//!
//! # Rules
//! - Undefined variables are errors (strict mode), so a typo cannot send an empty page. Every
//!   template is compiled and tried on [`super::sample`] notifications when the config is
//!   loaded: a template that fails there is a config error naming the channel's key.
//! - Escaping follows where the text goes: Telegram's HTML (`parse_mode = "HTML"`), Slack's
//!   `&`, `<`, `>` for Slack `mrkdwn`; none elsewhere. `{{ x|safe }}` opts out.
//! - Output is trimmed of trailing whitespace; `trim_blocks` and `lstrip_blocks` are on, so
//!   `{% if %}` lines leave no blank lines behind.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;

use super::notification::Notification;
use crate::alerts::alert::Alert;
use crate::alerts::alert::severity_label;
use crate::incidents::incident::Incident;

/// The default title: `FIRING [warning] cpu_high on rvm1: CPU above 90 %`.
pub const DEFAULT_TITLE: &str =
    "{% if resolved %}RESOLVED{% else %}{{ event|upper }}{% endif %} [{{ severity }}] {{ title }}";

/// The default text: what happened, on which machine, with the numbers.
pub const DEFAULT_TEXT: &str = "\
{% if alert and alert.labels.check is defined %}
{{ alert.summary }}
health check {{ alert.labels.check }} failing ({{ severity }})
machine {{ alert.device }}{% if site %} at {{ site }}{% endif %}, rule {{ alert.rule }}
{% elif alert %}
{{ alert.summary }}
{{ alert.metric }} = {{ alert.value }} ({{ alert.op }} {{ alert.threshold }}, clears at {{ alert.clear }})
machine {{ alert.device }}{% if site %} at {{ site }}{% endif %}, rule {{ alert.rule }}
{% elif incident %}
{{ incident.title }}
probable cause: {{ incident.probable_cause }}
machines ({{ incident.devices|length }}): {{ incident.devices|join(\", \") }}
{% else %}
{{ text }}
{% endif %}
{{ event }} at {{ at }} ({{ id }})";

/// The default SMS text: short, one line.
pub const DEFAULT_SMS_TEXT: &str =
    "{% if resolved %}RESOLVED{% else %}{{ severity|upper }}{% endif %} {{ title }}";

/// How rendered values are escaped, by where the text goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    None,
    /// Telegram's HTML parse mode: `&`, `<`, `>`, `"` as entities (all it needs).
    Telegram,
    /// Slack `mrkdwn`: `&`, `<` and `>` as entities.
    Slack,
}

impl Escape {
    fn auto_escape(self) -> AutoEscape {
        match self {
            Escape::None => AutoEscape::None,
            Escape::Telegram => AutoEscape::Custom(TELEGRAM_ESCAPE),
            Escape::Slack => AutoEscape::Custom(SLACK_ESCAPE),
        }
    }
}

const SLACK_ESCAPE: &str = "slack";
const TELEGRAM_ESCAPE: &str = "telegram";

/// Which template failed, and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {detail}")]
pub struct TemplateError {
    /// `title_template` or `text_template`.
    pub key: &'static str,
    pub detail: String,
}

/// A title and a text, rendered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rendered {
    pub title: String,
    pub text: String,
}

/// What a template sees besides the notification.
#[derive(Debug, Clone, Copy, Default)]
pub struct RenderContext<'a> {
    pub channel: &'a str,
    pub public_url: Option<&'a str>,
}

#[derive(Serialize)]
struct Vars<'a> {
    id: &'a str,
    dedup_key: String,
    source: &'a str,
    event: &'a str,
    resolved: bool,
    severity: &'static str,
    at: String,
    at_ms: i64,
    title: &'a str,
    text: &'a str,
    labels: &'a BTreeMap<String, String>,
    device: Option<&'a str>,
    site: Option<&'a str>,
    alert: Option<&'a Alert>,
    incident: Option<&'a Incident>,
    channel: &'a str,
    public_url: Option<&'a str>,
}

/// Slack `mrkdwn` escaping: `&`, `<`, `>` as entities (Slack's own rule).
pub fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Telegram HTML escaping: `&`, `<`, `>`, `"` as the named entities Telegram knows.
pub fn telegram_escape(s: &str) -> String {
    slack_escape(s).replace('"', "&quot;")
}

/// RFC 3339 in UTC (`2026-03-29T01:00:00Z`; milliseconds when there are any).
pub fn rfc3339_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// True for the events that end something: `resolved`, `withdrawn`.
pub fn is_resolution(event: &str) -> bool {
    matches!(event, "resolved" | "withdrawn")
}

/// What the notification is about, stable across its events: the alert's or the incident's id
/// (the notification id without its `/event`). Receivers deduplicate and pair trigger and
/// resolve on it.
pub fn subject_id(n: &Notification) -> &str {
    match (&n.alert, &n.incident) {
        (Some(a), _) => &a.id,
        (None, Some(i)) => &i.id,
        (None, None) => n.id.rsplit_once('/').map_or(n.id.as_str(), |(s, _)| s),
    }
}

/// A channel's compiled templates.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    /// Compiles the title and text templates (`None`: the defaults given), escaping each as
    /// given. Does not try them: see [`Templates::check`].
    pub fn new(
        title: Option<&str>,
        text: Option<&str>,
        default_text: &'static str,
        title_escape: Escape,
        text_escape: Escape,
    ) -> Result<Templates, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_auto_escape_callback(move |name| match name {
            "title_template" => title_escape.auto_escape(),
            _ => text_escape.auto_escape(),
        });
        env.set_formatter(|out, state, value| {
            let escaped = match state.auto_escape() {
                _ if value.is_safe() => None,
                AutoEscape::Custom(SLACK_ESCAPE) => Some(slack_escape(&value.to_string())),
                AutoEscape::Custom(TELEGRAM_ESCAPE) => Some(telegram_escape(&value.to_string())),
                _ => None,
            };
            match escaped {
                Some(text) => out.write_str(&text).map_err(minijinja::Error::from),
                None => minijinja::escape_formatter(out, state, value),
            }
        });
        for (key, source) in [
            ("title_template", title.unwrap_or(DEFAULT_TITLE)),
            ("text_template", text.unwrap_or(default_text)),
        ] {
            env.add_template_owned(key, source.to_string())
                .map_err(|e| TemplateError {
                    key,
                    detail: describe(&e),
                })?;
        }
        Ok(Templates { env })
    }

    /// Renders both templates for `n`.
    pub fn render(&self, n: &Notification, ctx: RenderContext<'_>) -> Result<Rendered, TemplateError> {
        let vars = Vars {
            id: &n.id,
            dedup_key: subject_id(n).to_string(),
            source: match n.source {
                super::notification::Source::Alert => "alert",
                super::notification::Source::Incident => "incident",
            },
            event: &n.event,
            resolved: is_resolution(&n.event),
            severity: severity_label(n.severity),
            at: rfc3339_ms(n.at_ms),
            at_ms: n.at_ms,
            title: &n.title,
            text: &n.text,
            labels: &n.labels,
            device: n.alert.as_ref().map(|a| a.device.as_str()),
            site: n.labels.get("site").map(String::as_str),
            alert: n.alert.as_ref(),
            incident: n.incident.as_ref(),
            channel: ctx.channel,
            public_url: ctx.public_url,
        };
        let one = |key: &'static str| -> Result<String, TemplateError> {
            let t = self.env.get_template(key).map_err(|e| TemplateError {
                key,
                detail: describe(&e),
            })?;
            let out = t.render(&vars).map_err(|e| TemplateError {
                key,
                detail: describe(&e),
            })?;
            Ok(out.trim_end().to_string())
        };
        Ok(Rendered {
            title: one("title_template")?,
            text: one("text_template")?,
        })
    }

    /// Renders every [`super::sample`] notification: the first failure, if any.
    pub fn check(&self, ctx: RenderContext<'_>) -> Result<(), TemplateError> {
        for n in super::sample::all(0) {
            let r = self.render(&n, ctx)?;
            if r.title.trim().is_empty() {
                return Err(TemplateError {
                    key: "title_template",
                    detail: format!("renders an empty title for a {} {}", source_name(&n), n.event),
                });
            }
        }
        Ok(())
    }
}

fn source_name(n: &Notification) -> &'static str {
    match n.source {
        super::notification::Source::Alert => "alert",
        super::notification::Source::Incident => "incident",
    }
}

/// A minijinja error as one line: its kind, detail and line.
fn describe(e: &minijinja::Error) -> String {
    let mut s = e.kind().to_string();
    if let Some(d) = e.detail() {
        let _ = write!(s, ": {d}");
    }
    if let Some(line) = e.line() {
        let _ = write!(s, " (line {line})");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::sample;

    fn build(title: Option<&str>, text: Option<&str>, escape: Escape) -> Result<Templates, TemplateError> {
        Templates::new(title, text, DEFAULT_TEXT, Escape::None, escape)
    }

    fn ctx() -> RenderContext<'static> {
        RenderContext {
            channel: "ops",
            public_url: None,
        }
    }

    #[test]
    fn the_default_templates_render_a_firing_alert() {
        let t = build(None, None, Escape::None).unwrap();
        let r = t.render(&sample::firing_alert(1_774_746_000_000), ctx()).unwrap();
        assert_eq!(
            r.title,
            "FIRING [warning] notify_test on RVMTEST01: test message from RVM Fleet"
        );
        assert_eq!(
            r.text,
            "test message from RVM Fleet\n\
             test.value = 1.0 (> 0.0, clears at 0.0)\n\
             machine RVMTEST01 at test-site, rule notify_test\n\
             firing at 2026-03-29T01:00:00Z (notify_test:RVMTEST01:1/firing)"
        );
    }

    #[test]
    fn the_default_templates_name_a_failing_health_check_and_its_machine() {
        let t = build(None, None, Escape::None).unwrap();
        let r = t
            .render(&sample::failing_check(1_774_746_000_000), ctx())
            .unwrap();
        assert_eq!(
            r.title,
            "FIRING [critical] check.http.vision on RVMTEST01: http vision answered 500 (expected 200)"
        );
        assert_eq!(
            r.text,
            "http vision answered 500 (expected 200)\n\
             health check http:vision failing (critical)\n\
             machine RVMTEST01 at test-site, rule check.http.vision\n\
             firing at 2026-03-29T01:00:00Z (check.http.vision:RVMTEST01:1/firing)"
        );
    }

    #[test]
    fn the_default_templates_render_a_resolution_and_an_incident() {
        let t = build(None, None, Escape::None).unwrap();
        let r = t.render(&sample::resolved_alert(0), ctx()).unwrap();
        assert!(r.title.starts_with("RESOLVED [warning] "), "{}", r.title);
        let i = t.render(&sample::opened_incident(0), ctx()).unwrap();
        assert_eq!(i.title, "OPENED [critical] site outage at test-site");
        assert!(
            i.text
                .contains("probable cause: power or network at the site\nmachines (1): RVMTEST01"),
            "{}",
            i.text
        );
    }

    #[test]
    fn a_channel_template_overrides_the_default() {
        let t = build(
            Some("{{ severity }}/{{ channel }}"),
            Some("{{ labels.site }} {{ dedup_key }}"),
            Escape::None,
        )
        .unwrap();
        let r = t.render(&sample::firing_alert(0), ctx()).unwrap();
        assert_eq!(r.title, "warning/ops");
        assert_eq!(r.text, "test-site notify_test:RVMTEST01:1");
    }

    #[test]
    fn a_syntax_error_names_the_template_key() {
        let e = build(Some("{% if %}"), None, Escape::None).unwrap_err();
        assert_eq!(e.key, "title_template");
        assert!(e.detail.contains("syntax error"), "{e}");
        let e = build(None, Some("{{ unclosed "), Escape::None).unwrap_err();
        assert_eq!(e.key, "text_template");
    }

    #[test]
    fn an_undefined_variable_fails_the_check_instead_of_rendering_empty() {
        let t = build(None, Some("{{ alert.sumary }}"), Escape::None).unwrap();
        let e = t.check(ctx()).unwrap_err();
        assert_eq!(e.key, "text_template");
        assert!(e.detail.contains("undefined"), "{e}");
        // an alert-only field on an incident notification fails too
        let t = build(None, Some("{{ alert.summary }}"), Escape::None).unwrap();
        assert!(t.check(ctx()).is_err());
        assert!(build(None, None, Escape::None).unwrap().check(ctx()).is_ok());
    }

    #[test]
    fn telegram_escaping_protects_its_markup_and_safe_opts_out() {
        let mut n = sample::firing_alert(0);
        n.title = "<b>x</b> & y".into();
        let t = Templates::new(
            Some("<b>{{ title }}</b>"),
            Some("{{ title|safe }}"),
            DEFAULT_TEXT,
            Escape::Telegram,
            Escape::Telegram,
        )
        .unwrap();
        let r = t.render(&n, ctx()).unwrap();
        assert_eq!(r.title, "<b>&lt;b&gt;x&lt;/b&gt; &amp; y</b>");
        assert_eq!(r.text, "<b>x</b> & y");
    }

    #[test]
    fn slack_escaping_covers_the_three_control_characters() {
        let mut n = sample::firing_alert(0);
        n.title = "a <@here> & b > c".into();
        let t = build(Some("{{ title }}"), Some("*{{ title }}*"), Escape::Slack).unwrap();
        let r = t.render(&n, ctx()).unwrap();
        assert_eq!(r.title, "a <@here> & b > c", "the title is not mrkdwn here");
        assert_eq!(r.text, "*a &lt;@here&gt; &amp; b &gt; c*");
    }

    #[test]
    fn an_empty_title_is_refused_by_the_check() {
        let t = build(Some("{% if false %}x{% endif %}"), None, Escape::None).unwrap();
        assert!(t.check(ctx()).unwrap_err().detail.contains("empty title"));
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_ms(1_500), "1970-01-01T00:00:01.5Z");
    }
}
