//! Email channel: plain SMTP to a relay with `lettre` (no TLS and no authentication in this
//! build: a local relay such as Postfix forwards it). Retried like webhooks: transient SMTP
//! replies (4xx) and connection errors with jittered, capped backoff; permanent ones (5xx) are
//! final.

use std::time::Duration;

use backoff::ExponentialBackoff;
use lettre::message::{Mailbox, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::notification::Notification;
use super::webhook::{RETRY_INITIAL, RETRY_MAX_INTERVAL};
use crate::alerts::alert::severity_label;

/// A validated email channel.
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

/// Parses one address (`ops@example.com` or `Ops <ops@example.com>`).
pub fn check_address(a: &str) -> Result<Mailbox, String> {
    a.parse::<Mailbox>()
        .map_err(|e| format!("{a:?} is not an email address: {e}"))
}

/// Builds the message of a notification.
pub fn build_message(cfg: &EmailConfig, n: &Notification) -> Result<Message, String> {
    let mut b = Message::builder()
        .from(check_address(&cfg.from)?)
        .subject(format!(
            "{} {} {}: {}",
            cfg.subject_prefix,
            severity_label(n.severity),
            n.event,
            n.title
        ))
        .header(ContentType::TEXT_PLAIN);
    for to in &cfg.to {
        b = b.to(check_address(to)?);
    }
    b.body(format!("{}\n\nid: {}\nat: {} ms\n", n.text, n.id, n.at_ms))
        .map_err(|e| format!("cannot build the message: {e}"))
}

/// Sends the notification, retrying as the module docs say.
pub async fn send(cfg: &EmailConfig, n: &Notification) -> Result<(), String> {
    let message = build_message(cfg, n)?;
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(cfg.host.clone())
        .port(cfg.port)
        .timeout(Some(cfg.timeout))
        .build();
    let policy = ExponentialBackoff {
        initial_interval: RETRY_INITIAL,
        current_interval: RETRY_INITIAL,
        randomization_factor: 0.5,
        multiplier: 2.0,
        max_interval: RETRY_MAX_INTERVAL,
        max_elapsed_time: Some(cfg.max_retry),
        ..Default::default()
    };
    let relay = format!("{}:{}", cfg.host, cfg.port);
    let attempt = || async {
        match transport.send(message.clone()).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(backoff::Error::permanent(format!("SMTP {relay}: {e}"))),
            Err(e) => {
                tracing::warn!(notification = %n.id, relay = %relay, error = %e, "email attempt failed; retrying");
                Err(backoff::Error::transient(format!("SMTP {relay}: {e}")))
            }
        }
    };
    backoff::future::retry(policy, attempt).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::notify::notification::Source;

    #[test]
    fn addresses_are_checked() {
        assert!(check_address("ops@example.com").is_ok());
        assert!(check_address("Ops <ops@example.com>").is_ok());
        assert!(check_address("nope").is_err());
    }

    #[test]
    fn the_message_carries_subject_and_text() {
        let cfg = EmailConfig {
            host: "127.0.0.1".into(),
            port: 25,
            from: "fleet@example.com".into(),
            to: vec!["a@example.com".into(), "b@example.com".into()],
            subject_prefix: "[RVM]".into(),
            timeout: Duration::from_secs(1),
            max_retry: Duration::from_secs(1),
        };
        let n = Notification {
            id: "cpu_high:rvm1:1/firing".into(),
            source: Source::Alert,
            event: "firing".into(),
            severity: common::Severity::Warning,
            at_ms: 5,
            title: "cpu_high on rvm1".into(),
            text: "details".into(),
            labels: Default::default(),
            alert: None,
            incident: None,
        };
        let raw = String::from_utf8(build_message(&cfg, &n).unwrap().formatted()).unwrap();
        assert!(
            raw.contains("Subject: [RVM] warning firing: cpu_high on rvm1"),
            "{raw}"
        );
        assert!(
            raw.contains("cpu_high:rvm1:1/firing") && raw.contains("b@example.com"),
            "{raw}"
        );
    }
}
