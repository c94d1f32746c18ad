//! Channels that reach real endpoints (issue 19): their config keys, validation naming every
//! bad key, and their senders.
//!
//! - [`webhook`]: HTTPS or HTTP POST in a receiver's [`Format`](super::formats::Format)
//!   (`json`, `slack`, `teams`, `pagerduty`, `alertmanager`, `telegram`);
//! - [`sms`]: SMS through Twilio's Messages API;
//! - [`email`]: SMTP with STARTTLS or implicit TLS and AUTH.
//!
//! Each channel kind has a file struct (`*File`, `deny_unknown_fields`), a `validate(prefix,
//! name)` that compiles and tries its templates and loads its secrets, a runtime config, and a
//! sender made by `start()` that owns the HTTP client or SMTP transport and the compiled
//! templates. A send is one delivery with the channel's own retries inside; what to do after a
//! failed delivery (retry later or give up) is the outbox's decision ([`super::outbox`]), by
//! [`DeliveryError::is_transient`].

pub mod email;
pub mod sms;
pub mod webhook;

use std::time::Duration;

use serde::Serialize;

use super::http_client::{self, Answer, SendFailure};
use super::notification::Notification;
use super::template::{Escape, RenderContext, TemplateError, Templates};

/// Default time one delivery attempt may take.
pub const DEFAULT_TIMEOUT_S: u64 = 10;
/// Default time a delivery keeps retrying.
pub const DEFAULT_MAX_RETRY_S: u64 = 120;
/// Longest `timeout_s` / `max_retry_s` accepted.
pub const MAX_CHANNEL_S: u64 = 24 * 3600;

pub(crate) fn default_timeout_s() -> u64 {
    DEFAULT_TIMEOUT_S
}

pub(crate) fn default_max_retry_s() -> u64 {
    DEFAULT_MAX_RETRY_S
}

/// Pushes a problem when `s` is not between 1 s and [`MAX_CHANNEL_S`].
pub(crate) fn check_seconds(p: &mut Vec<String>, key: String, s: u64) {
    if s == 0 || s > MAX_CHANNEL_S {
        p.push(format!("{key}: {s} s is not between 1 and {MAX_CHANNEL_S} s"));
    }
}

/// Compiles a channel's templates and tries them on the sample notifications; a failure is a
/// problem at `{prefix}.title_template` or `{prefix}.text_template`.
pub(crate) fn check_templates(
    p: &mut Vec<String>,
    prefix: &str,
    name: &str,
    title: Option<&str>,
    text: Option<&str>,
    default_text: &'static str,
    escapes: (Escape, Escape),
) {
    let ctx = RenderContext {
        channel: name,
        public_url: None,
    };
    let checked = Templates::new(title, text, default_text, escapes.0, escapes.1).and_then(|t| t.check(ctx));
    if let Err(e) = checked {
        p.push(format!("{prefix}.{}: {}", e.key, e.detail));
    }
}

/// What the receiver said to a delivery: the test message and the API show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Receipt {
    /// One answer per request (an SMS channel makes one per recipient).
    Http { answers: Vec<Answer> },
    /// The SMTP server's reply to the message.
    Smtp {
        code: u16,
        message: String,
        attempts: u32,
    },
    /// Written to the server's log (the `log` channel).
    Logged,
}

/// Why a delivery failed, after the channel's own retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// A template failed on this notification (they were tried on samples at start).
    #[error("template: {0}")]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Http(#[from] SendFailure),
    /// Some recipients of an SMS channel got it, one did not.
    #[error("sent to {delivered} of {total} recipients: {failure}")]
    Partial {
        delivered: usize,
        total: usize,
        failure: SendFailure,
    },
    #[error(transparent)]
    Smtp(#[from] email::SmtpFailure),
    /// The channel could not be set up (an unreadable `ca_file`, no system roots).
    #[error("channel setup: {0}")]
    Setup(String),
}

impl DeliveryError {
    /// Worth delivering again later: the receiver could not be reached or was overloaded.
    /// TLS, authentication, refusals and template errors are not (they need a person).
    pub fn is_transient(&self) -> bool {
        match self {
            DeliveryError::Http(f) | DeliveryError::Partial { failure: f, .. } => f.error.is_transient(),
            DeliveryError::Smtp(f) => f.error.is_transient(),
            DeliveryError::Template(_) | DeliveryError::Setup(_) => false,
        }
    }

    /// A short name for counters and the API (`tls`, `connect`, `timeout`, `status`, `auth`,
    /// `rejected`, `template`, `setup`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            DeliveryError::Http(f) | DeliveryError::Partial { failure: f, .. } => f.error.kind(),
            DeliveryError::Smtp(f) => f.error.kind(),
            DeliveryError::Template(_) => "template",
            DeliveryError::Setup(_) => "setup",
        }
    }
}

/// A validated channel of one of the new kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelSpec {
    Webhook(webhook::WebhookChannel),
    Sms(sms::SmsChannel),
    Email(email::EmailChannel),
}

/// A started channel: clients, transports and compiled templates, ready to send.
#[derive(Debug)]
pub enum Sender {
    Webhook(webhook::WebhookSender),
    Sms(sms::SmsSender),
    Email(email::EmailSender),
}

impl ChannelSpec {
    pub fn start(&self) -> Result<Sender, DeliveryError> {
        Ok(match self {
            ChannelSpec::Webhook(c) => Sender::Webhook(c.start()?),
            ChannelSpec::Sms(c) => Sender::Sms(c.start()?),
            ChannelSpec::Email(c) => Sender::Email(c.start()?),
        })
    }

    /// The longest one delivery can take: every retry the channel allows plus its last
    /// attempt, for each request (an SMS channel sends one per recipient, in turn).
    pub fn longest_delivery(&self) -> Duration {
        let (max_retry, timeout, requests) = match self {
            ChannelSpec::Webhook(c) => (c.http.max_retry, c.http.timeout, 1),
            ChannelSpec::Sms(c) => (c.http.max_retry, c.http.timeout, c.to.len().max(1)),
            ChannelSpec::Email(c) => (c.max_retry, c.timeout, 1),
        };
        (max_retry + timeout).saturating_mul(u32::try_from(requests).unwrap_or(u32::MAX))
    }

    /// The same channel making one attempt, no retries (the test message: whoever asked
    /// sees the receiver's first answer at once).
    pub fn single_attempt(&self) -> ChannelSpec {
        let mut c = self.clone();
        match &mut c {
            ChannelSpec::Webhook(w) => w.http.max_retry = Duration::ZERO,
            ChannelSpec::Sms(s) => s.http.max_retry = Duration::ZERO,
            ChannelSpec::Email(e) => e.max_retry = Duration::ZERO,
        }
        c
    }

    /// Where it sends, safe to show: `scheme://host:port/…` or `smtp host:port`.
    pub fn target(&self) -> String {
        match self {
            ChannelSpec::Webhook(c) => http_client::redact_url(&c.url),
            ChannelSpec::Sms(c) => http_client::redact_url(&c.messages_url()),
            ChannelSpec::Email(c) => format!("smtp {}", c.server()),
        }
    }

    /// The webhook's format, or the kind of channel.
    pub fn format(&self) -> &'static str {
        match self {
            ChannelSpec::Webhook(c) => c.spec.format().as_str(),
            ChannelSpec::Sms(_) => "sms",
            ChannelSpec::Email(_) => "email",
        }
    }
}

impl Sender {
    /// One delivery of `n`, with the channel's retries.
    pub async fn send(&self, n: &Notification, public_url: Option<&str>) -> Result<Receipt, DeliveryError> {
        match self {
            Sender::Webhook(s) => s.send(n, public_url).await,
            Sender::Sms(s) => s.send(n, public_url).await,
            Sender::Email(s) => s.send(n, public_url).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    /// The shape the wiring gives `ChannelFile`: newtype variants of an internally tagged enum.
    #[derive(Debug, Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum WiredChannelFile {
        Webhook(webhook::WebhookFile),
        Sms(sms::SmsFile),
        Email(email::EmailFile),
    }

    #[test]
    fn channel_files_parse_as_tagged_variants_and_still_refuse_unknown_keys() {
        let w: WiredChannelFile =
            toml::from_str("type = \"webhook\"\nurl = \"https://x/\"\nformat = \"slack\"\n").unwrap();
        let WiredChannelFile::Webhook(w) = w else {
            panic!("{w:?}")
        };
        assert_eq!(w.format, crate::notify::formats::Format::Slack);
        let e = toml::from_str::<WiredChannelFile>("type = \"webhook\"\nurl = \"https://x/\"\nretries = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("retries"), "{e}");
        let s: WiredChannelFile = toml::from_str(
            "type = \"sms\"\naccount_sid = \"AC1\"\nauth_token_env = \"T\"\nfrom = \"+4711111111\"\nto = [\"+4722222222\"]\n",
        )
        .unwrap();
        let WiredChannelFile::Sms(s) = s else {
            panic!("{s:?}")
        };
        assert_eq!(s.to, ["+4722222222"]);
        let m: WiredChannelFile = toml::from_str(
            "type = \"email\"\nsmtp = \"smtp.office365.com:587\"\nfrom = \"a@b.c\"\nto = [\"d@e.f\"]\n",
        )
        .unwrap();
        let WiredChannelFile::Email(m) = m else {
            panic!("{m:?}")
        };
        assert_eq!(m.smtp, "smtp.office365.com:587");
    }

    #[test]
    fn only_reachability_problems_are_transient() {
        use crate::notify::http_client::SendError;
        let f = |error| DeliveryError::Http(SendFailure { error, attempts: 3 });
        assert!(
            f(SendError::Connect {
                url: "u".into(),
                detail: "refused".into()
            })
            .is_transient()
        );
        assert!(
            !f(SendError::Tls {
                url: "u".into(),
                detail: "UnknownIssuer".into()
            })
            .is_transient()
        );
        assert!(
            !DeliveryError::Template(TemplateError {
                key: "text_template",
                detail: "x".into()
            })
            .is_transient()
        );
    }
}
