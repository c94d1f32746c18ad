//! Email channel (`type = "email"`): SMTP through lettre over rustls with ring, with STARTTLS
//! (default, port 587), implicit TLS (port 465) or, for a relay on the same host, none; AUTH
//! PLAIN or LOGIN with a password read from a file or an environment variable.
//!
//! ```toml
//! [notify.channels.mail]
//! type = "email"
//! smtp = "smtp.office365.com:587"
//! security = "starttls"                 # starttls (default) | tls | none
//! username = "fleet@example.com"
//! password_file = "/etc/rvm/smtp-password"   # or password_env = "SMTP_PASSWORD"
//! # ca_file = "/etc/rvm/relay-ca.pem"   # trust only this CA instead of the system's roots
//! from = "RVM Fleet <fleet@example.com>"
//! to = ["ops@example.com"]
//! subject_prefix = "[RVM Fleet]"
//! ```
//!
//! The subject is `subject_prefix` and the rendered title; the body the rendered text (plain
//! text). Retries: connection errors, timeouts and 4xx replies, with the same backoff as the
//! HTTP client, for at most `max_retry_s`; a TLS failure, an authentication failure (535) or
//! any 5xx is final. A password is never logged and never in `Debug` output ([`Secret`]); a
//! password without TLS is refused at config time.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use backoff::ExponentialBackoff;
use backoff::backoff::Backoff;
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::Deserialize;

use super::{DeliveryError, Receipt, check_seconds, check_templates, default_max_retry_s, default_timeout_s};
use crate::notify::http_client::{RETRY_INITIAL, RETRY_MAX_INTERVAL, find_tls_error};
use crate::notify::notification::Notification;
use crate::notify::secret::{Secret, SecretSource};
use crate::notify::template::{DEFAULT_TEXT, Escape, RenderContext, Rendered, TemplateError, Templates};

fn default_subject_prefix() -> String {
    "[RVM Fleet]".into()
}

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain connection upgraded with STARTTLS, which the server must offer (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Tls,
    /// No TLS: only for a relay on the same host or network; no password allowed.
    None,
}

/// `[notify.channels.NAME]` with `type = "email"`, as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailFile {
    /// `host:port` of the SMTP server.
    pub smtp: String,
    #[serde(default)]
    pub security: Security,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    pub from: String,
    pub to: Vec<String>,
    #[serde(default = "default_subject_prefix")]
    pub subject_prefix: String,
    #[serde(default)]
    pub title_template: Option<String>,
    #[serde(default)]
    pub text_template: Option<String>,
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
    #[serde(default = "default_max_retry_s")]
    pub max_retry_s: u64,
}

/// A validated email channel.
#[derive(Debug, Clone, PartialEq)]
pub struct EmailChannel {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// Username and password.
    pub credentials: Option<(String, Secret)>,
    pub ca_file: Option<PathBuf>,
    pub from: String,
    pub to: Vec<String>,
    pub subject_prefix: String,
    pub title_template: Option<String>,
    pub text_template: Option<String>,
    pub timeout: Duration,
    pub max_retry: Duration,
}

/// Why one attempt failed. `server` is `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmtpError {
    #[error("SMTP {server}: TLS: {detail}")]
    Tls { server: String, detail: String },
    #[error("SMTP {server}: authentication failed: {detail}")]
    Auth { server: String, detail: String },
    #[error("SMTP {server}: cannot connect: {detail}")]
    Connect { server: String, detail: String },
    #[error("SMTP {server}: no answer within {timeout:?}")]
    Timeout { server: String, timeout: Duration },
    /// A 5xx reply: the server will not take this message.
    #[error("SMTP {server}: refused: {detail}")]
    Rejected {
        server: String,
        code: u16,
        detail: String,
    },
    /// A 4xx reply: the server cannot take it now.
    #[error("SMTP {server}: deferred: {detail}")]
    Deferred {
        server: String,
        code: u16,
        detail: String,
    },
    #[error("SMTP {server}: {detail}")]
    Other { server: String, detail: String },
    #[error("cannot build the message: {0}")]
    Message(String),
}

impl SmtpError {
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SmtpError::Connect { .. } | SmtpError::Timeout { .. } | SmtpError::Deferred { .. }
        )
    }

    pub fn kind(&self) -> &'static str {
        match self {
            SmtpError::Tls { .. } => "tls",
            SmtpError::Auth { .. } => "auth",
            SmtpError::Connect { .. } => "connect",
            SmtpError::Timeout { .. } => "timeout",
            SmtpError::Rejected { .. } => "rejected",
            SmtpError::Deferred { .. } => "deferred",
            SmtpError::Other { .. } => "other",
            SmtpError::Message(_) => "message",
        }
    }
}

/// The last error after every attempt the channel allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error} (attempts: {attempts})")]
pub struct SmtpFailure {
    #[source]
    pub error: SmtpError,
    pub attempts: u32,
}

/// Parses one address (`ops@example.com` or `Ops <ops@example.com>`).
pub fn check_address(a: &str) -> Result<Mailbox, String> {
    a.parse::<Mailbox>()
        .map_err(|e| format!("{a:?} is not an email address: {e}"))
}

impl EmailFile {
    /// Every problem with its key under `prefix`, or the channel (the password read now).
    pub fn validate(&self, prefix: &str, name: &str) -> Result<EmailChannel, Vec<String>> {
        let mut p = Vec::new();
        let k = |field: &str| format!("{prefix}.{field}");
        let (host, port) = common::addr::split_host_port(&self.smtp).unwrap_or_else(|| {
            p.push(format!("{}: {:?} is not host:port", k("smtp"), self.smtp));
            (String::new(), 0)
        });
        let password = match SecretSource::from_keys(
            prefix,
            "password",
            self.password_file.as_deref(),
            self.password_env.as_deref(),
        ) {
            Ok(Some(source)) => match source.load() {
                Ok(s) => Some(s),
                Err(e) => {
                    let key = match source {
                        SecretSource::File(_) => "password_file",
                        SecretSource::Env(_) => "password_env",
                    };
                    p.push(format!("{}: {e}", k(key)));
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                p.push(e);
                None
            }
        };
        let has_password = self.password_file.is_some() || self.password_env.is_some();
        match (&self.username, has_password) {
            (Some(u), _) if u.is_empty() => p.push(format!("{}: must not be empty", k("username"))),
            (Some(_), false) => p.push(format!(
                "{}: a username needs password_file or password_env",
                k("username")
            )),
            (None, true) => p.push(format!("{}: a password needs a username", k("username"))),
            _ => {}
        }
        if has_password && self.security == Security::None {
            p.push(format!(
                "{}: \"none\" would send the password in clear; use starttls or tls",
                k("security")
            ));
        }
        if let Some(ca) = &self.ca_file {
            if self.security == Security::None {
                p.push(format!("{}: only with security starttls or tls", k("ca_file")));
            } else if let Err(e) = common::tls::load_certs(ca) {
                p.push(format!("{}: {e}", k("ca_file")));
            }
        }
        if let Err(e) = check_address(&self.from) {
            p.push(format!("{}: {e}", k("from")));
        }
        if self.to.is_empty() {
            p.push(format!("{}: needs at least one address", k("to")));
        }
        for (i, a) in self.to.iter().enumerate() {
            if let Err(e) = check_address(a) {
                p.push(format!("{}: {e}", k(&format!("to[{i}]"))));
            }
        }
        check_seconds(&mut p, k("timeout_s"), self.timeout_s);
        check_seconds(&mut p, k("max_retry_s"), self.max_retry_s);
        check_templates(
            &mut p,
            prefix,
            name,
            self.title_template.as_deref(),
            self.text_template.as_deref(),
            DEFAULT_TEXT,
            (Escape::None, Escape::None),
        );
        if !p.is_empty() {
            return Err(p);
        }
        Ok(EmailChannel {
            name: name.to_string(),
            host,
            port,
            security: self.security,
            credentials: self.username.clone().zip(password),
            ca_file: self.ca_file.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            subject_prefix: self.subject_prefix.clone(),
            title_template: self.title_template.clone(),
            text_template: self.text_template.clone(),
            timeout: Duration::from_secs(self.timeout_s),
            max_retry: Duration::from_secs(self.max_retry_s),
        })
    }
}

impl EmailChannel {
    pub fn server(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn templates(&self) -> Result<Templates, TemplateError> {
        Templates::new(
            self.title_template.as_deref(),
            self.text_template.as_deref(),
            DEFAULT_TEXT,
            Escape::None,
            Escape::None,
        )
    }

    /// The message for rendered text (pure).
    pub fn message(&self, rendered: &Rendered) -> Result<Message, SmtpError> {
        let subject = if self.subject_prefix.is_empty() {
            rendered.title.clone()
        } else {
            format!("{} {}", self.subject_prefix, rendered.title)
        };
        let mut b = Message::builder()
            .from(check_address(&self.from).map_err(SmtpError::Message)?)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            b = b.to(check_address(to).map_err(SmtpError::Message)?);
        }
        b.body(format!("{}\n", rendered.text))
            .map_err(|e| SmtpError::Message(e.to_string()))
    }

    fn tls_parameters(&self) -> Result<TlsParameters, SmtpError> {
        let setup = |detail: String| SmtpError::Tls {
            server: self.server(),
            detail,
        };
        let mut b = TlsParameters::builder(self.host.clone());
        if let Some(ca) = &self.ca_file {
            b = b.certificate_store(CertificateStore::None);
            for der in common::tls::load_certs(ca).map_err(|e| setup(e.to_string()))? {
                let cert = Certificate::from_der(der.to_vec()).map_err(|e| setup(e.to_string()))?;
                b = b.add_root_certificate(cert);
            }
        }
        b.build_rustls().map_err(|e| setup(e.to_string()))
    }

    /// The SMTP transport (no connection is made yet).
    pub fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, SmtpError> {
        let tls = match self.security {
            Security::Starttls => Tls::Required(self.tls_parameters()?),
            Security::Tls => Tls::Wrapper(self.tls_parameters()?),
            Security::None => Tls::None,
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(self.host.clone())
            .port(self.port)
            .tls(tls)
            .timeout(Some(self.timeout));
        if let Some((user, password)) = &self.credentials {
            b = b
                .credentials(Credentials::new(user.clone(), password.expose().to_string()))
                .authentication(vec![Mechanism::Plain, Mechanism::Login]);
        }
        Ok(b.build())
    }

    pub fn start(&self) -> Result<EmailSender, DeliveryError> {
        let transport = self
            .transport()
            .map_err(|e| DeliveryError::Setup(e.to_string()))?;
        Ok(EmailSender {
            templates: self.templates()?,
            channel: self.clone(),
            transport,
        })
    }

    fn classify(&self, e: &lettre::transport::smtp::Error) -> SmtpError {
        let server = self.server();
        let detail = chain(e);
        let code = e.status().map(u16::from);
        // a failed handshake reaches lettre as a connection error: find rustls' own error
        if let Some(tls) = find_tls_error(e) {
            return SmtpError::Tls { server, detail: tls };
        }
        if e.is_tls() {
            return SmtpError::Tls { server, detail };
        }
        if detail.contains("STARTTLS is not supported") {
            return SmtpError::Tls {
                server,
                detail: "the server does not offer STARTTLS (security = \"none\" is for a local relay only)"
                    .into(),
            };
        }
        if matches!(code, Some(530 | 534 | 535 | 538)) || detail.contains("authentication mechanism") {
            return SmtpError::Auth { server, detail };
        }
        if e.is_timeout() {
            return SmtpError::Timeout {
                server,
                timeout: self.timeout,
            };
        }
        match code {
            Some(c) if e.is_permanent() => SmtpError::Rejected {
                server,
                code: c,
                detail,
            },
            Some(c) if e.is_transient() => SmtpError::Deferred {
                server,
                code: c,
                detail,
            },
            _ if e.is_client() || e.is_response() => SmtpError::Other { server, detail },
            _ => SmtpError::Connect { server, detail },
        }
    }
}

/// An error's message and its sources', `: `-joined without repeats.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let msg = err.to_string();
        if parts.last().is_none_or(|last| !last.contains(&msg)) {
            parts.push(msg);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// A started email channel.
pub struct EmailSender {
    channel: EmailChannel,
    templates: Templates,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl fmt::Debug for EmailSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // the transport holds the password in clear: it stays out
        f.debug_struct("EmailSender")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl EmailSender {
    /// Sends `n`, retrying as the module docs say.
    pub async fn send(&self, n: &Notification, public_url: Option<&str>) -> Result<Receipt, DeliveryError> {
        let ch = &self.channel;
        let rendered = self.templates.render(
            n,
            RenderContext {
                channel: &ch.name,
                public_url,
            },
        )?;
        let message = ch
            .message(&rendered)
            .map_err(|error| SmtpFailure { error, attempts: 0 })?;
        let mut policy = ExponentialBackoff {
            initial_interval: RETRY_INITIAL,
            current_interval: RETRY_INITIAL,
            randomization_factor: 0.5,
            multiplier: 2.0,
            max_interval: RETRY_MAX_INTERVAL,
            max_elapsed_time: Some(ch.max_retry),
            ..Default::default()
        };
        let started = Instant::now();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let error = match self.transport.send(message.clone()).await {
                Ok(resp) => {
                    return Ok(Receipt::Smtp {
                        code: u16::from(resp.code()),
                        message: resp.message().collect::<Vec<_>>().join(" "),
                        attempts,
                    });
                }
                Err(e) => ch.classify(&e),
            };
            let wait = policy.next_backoff();
            match wait {
                Some(wait) if error.is_transient() && started.elapsed() + wait <= ch.max_retry => {
                    tracing::warn!(channel = %ch.name, error = %error, attempt = attempts, "email attempt failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                _ => return Err(SmtpFailure { error, attempts }.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::sample;

    fn build_file(extra: &str) -> EmailFile {
        toml::from_str(&format!(
            "smtp = \"smtp.example.com:587\"\nfrom = \"RVM Fleet <fleet@example.com>\"\nto = [\"ops@example.com\", \"b@example.com\"]\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn starttls_is_the_default_and_a_password_comes_from_the_environment() {
        let c = build_file("username = \"fleet@example.com\"\npassword_env = \"PATH\"\n")
            .validate("notify.channels.mail", "mail")
            .unwrap();
        assert_eq!(c.security, Security::Starttls);
        let (user, pw) = c.credentials.as_ref().unwrap();
        assert_eq!(user, "fleet@example.com");
        assert_eq!(pw.expose(), std::env::var("PATH").unwrap());
        assert!(
            !format!("{c:?}").contains(pw.expose()),
            "the password stays out of Debug"
        );
    }

    #[test]
    fn a_password_without_tls_or_without_a_username_is_refused() {
        let p = build_file("security = \"none\"\nusername = \"u\"\npassword_env = \"PATH\"\n")
            .validate("m", "m")
            .unwrap_err()
            .join("\n");
        assert!(
            p.contains("m.security: \"none\" would send the password in clear"),
            "{p}"
        );
        let p = build_file("password_env = \"PATH\"\n")
            .validate("m", "m")
            .unwrap_err()
            .join("\n");
        assert!(p.contains("m.username: a password needs a username"), "{p}");
        let p = build_file("username = \"u\"\n")
            .validate("m", "m")
            .unwrap_err()
            .join("\n");
        assert!(
            p.contains("m.username: a username needs password_file or password_env"),
            "{p}"
        );
    }

    #[test]
    fn every_bad_email_key_is_named() {
        let f: EmailFile = toml::from_str(
            "smtp = \"relay\"\nfrom = \"nope\"\nto = []\nusername = \"u\"\npassword_file = \"/nonexistent/pw\"\nca_file = \"/nonexistent/ca.pem\"\ntimeout_s = 0\ntext_template = \"{% for %}\"\n",
        )
        .unwrap();
        let p = f.validate("notify.channels.mail", "mail").unwrap_err().join("\n");
        for key in [
            "notify.channels.mail.smtp",
            "notify.channels.mail.from",
            "notify.channels.mail.to",
            "notify.channels.mail.password_file",
            "notify.channels.mail.ca_file",
            "notify.channels.mail.timeout_s",
            "notify.channels.mail.text_template",
        ] {
            assert!(p.contains(key), "{key} in:\n{p}");
        }
    }

    #[test]
    fn the_message_carries_the_rendered_subject_and_text_to_every_address() {
        let c = build_file("subject_prefix = \"[RVM]\"\n")
            .validate("m", "m")
            .unwrap();
        let rendered = c
            .templates()
            .unwrap()
            .render(&sample::firing_alert(0), RenderContext::default())
            .unwrap();
        let raw = String::from_utf8(c.message(&rendered).unwrap().formatted()).unwrap();
        assert!(
            raw.contains("Subject: [RVM] FIRING [warning] notify_test on RVMTEST01"),
            "{raw}"
        );
        assert!(
            raw.contains("ops@example.com") && raw.contains("b@example.com"),
            "{raw}"
        );
        assert!(raw.contains("machine RVMTEST01 at test-site"), "{raw}");
    }

    #[tokio::test]
    async fn a_plain_relay_without_starttls_is_a_named_tls_error_when_starttls_is_required() {
        // a server that greets and answers EHLO without offering STARTTLS
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut r = BufReader::new(s);
                    let _ = r.get_mut().write_all(b"220 relay ready\r\n").await;
                    let mut line = String::new();
                    while r.read_line(&mut line).await.unwrap_or(0) > 0 {
                        let reply: &[u8] = if line.to_ascii_uppercase().starts_with("EHLO") {
                            b"250-relay\r\n250 8BITMIME\r\n"
                        } else if line.to_ascii_uppercase().starts_with("QUIT") {
                            b"221 bye\r\n"
                        } else {
                            b"250 ok\r\n"
                        };
                        let _ = r.get_mut().write_all(reply).await;
                        line.clear();
                    }
                });
            }
        });
        common::tls::install_crypto_provider();
        let mut c = build_file("max_retry_s = 1\n").validate("m", "m").unwrap();
        c.host = "127.0.0.1".into();
        c.port = addr.port();
        let e = c
            .start()
            .unwrap()
            .send(&sample::firing_alert(0), None)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), "tls", "{e}");
        assert!(e.to_string().contains("does not offer STARTTLS"), "{e}");
        assert!(!e.is_transient());
    }
}
