//! SMS channel (`type = "sms"`) through Twilio's Messages API: one `POST
//! {api_url}/2010-04-01/Accounts/{account_sid}/Messages.json` per recipient, form-encoded
//! `To`, `From` (or `MessagingServiceSid` when `from` is a Messaging Service SID, `MG...`) and
//! `Body`, HTTP basic authentication with the account SID and the auth token.
//!
//! ```toml
//! [notify.channels.oncall_sms]
//! type = "sms"
//! account_sid = "AC0123..."
//! auth_token_file = "/etc/rvm/twilio-token"   # or auth_token_env = "TWILIO_AUTH_TOKEN"
//! from = "+4759000000"                       # E.164, an alphanumeric sender id, or MG...
//! to = ["+4791234567"]
//! # api_url = "https://api.twilio.com"       # default
//! # text_template = "..."                    # default: docs/notifications.md
//! ```
//!
//! The text is cut to [`BODY_MAX`] characters (Twilio's limit). A delivery fails when any
//! recipient's request fails; a retry of the delivery then sends to every recipient again
//! (at least once, as everywhere in the outbox).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{DeliveryError, Receipt, check_seconds, check_templates, default_max_retry_s, default_timeout_s};
use crate::notify::formats::truncate;
use crate::notify::http_client::{self, Body, HttpClient, HttpOptions, Request};
use crate::notify::notification::Notification;
use crate::notify::secret::{Secret, SecretSource};
use crate::notify::template::{DEFAULT_SMS_TEXT, Escape, RenderContext, TemplateError, Templates};

/// Twilio's API.
pub const TWILIO_API_URL: &str = "https://api.twilio.com";
/// Twilio's limit for a message body, in characters.
pub const BODY_MAX: usize = 1600;

fn default_api_url() -> String {
    TWILIO_API_URL.into()
}

/// The SMS providers the channel speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    #[default]
    Twilio,
}

/// `[notify.channels.NAME]` with `type = "sms"`, as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsFile {
    #[serde(default)]
    pub provider: Provider,
    pub account_sid: String,
    #[serde(default)]
    pub auth_token_file: Option<PathBuf>,
    #[serde(default)]
    pub auth_token_env: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    #[serde(default = "default_api_url")]
    pub api_url: String,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
    #[serde(default = "default_max_retry_s")]
    pub max_retry_s: u64,
    #[serde(default)]
    pub text_template: Option<String>,
}

/// A validated SMS channel.
#[derive(Debug, Clone, PartialEq)]
pub struct SmsChannel {
    pub name: String,
    pub provider: Provider,
    pub account_sid: String,
    pub auth_token: Secret,
    pub from: String,
    pub to: Vec<String>,
    pub api_url: String,
    pub http: HttpOptions,
    pub text_template: Option<String>,
}

/// `+` and 8 to 15 digits, the first not 0.
pub fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
}

/// A Twilio Messaging Service SID: `MG` and 32 hex digits.
pub fn is_messaging_service(s: &str) -> bool {
    s.len() == 34 && s.starts_with("MG") && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// An alphanumeric sender id: 1 to 11 letters, digits or spaces, at least one letter.
fn is_alphanumeric_sender(s: &str) -> bool {
    (1..=11).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ')
        && s.bytes().any(|b| b.is_ascii_alphabetic())
}

impl SmsFile {
    /// Every problem with its key under `prefix`, or the channel (the auth token read now).
    pub fn validate(&self, prefix: &str, name: &str) -> Result<SmsChannel, Vec<String>> {
        let mut p = Vec::new();
        let k = |field: &str| format!("{prefix}.{field}");
        if self.account_sid.is_empty() || !self.account_sid.bytes().all(|b| b.is_ascii_alphanumeric()) {
            p.push(format!("{}: must be the account SID (AC...)", k("account_sid")));
        }
        let token = match SecretSource::from_keys(
            prefix,
            "auth_token",
            self.auth_token_file.as_deref(),
            self.auth_token_env.as_deref(),
        ) {
            Ok(Some(source)) => match source.load() {
                Ok(t) => Some(t),
                Err(e) => {
                    let key = match source {
                        SecretSource::File(_) => "auth_token_file",
                        SecretSource::Env(_) => "auth_token_env",
                    };
                    p.push(format!("{}: {e}", k(key)));
                    None
                }
            },
            Ok(None) => {
                p.push(format!(
                    "{}: set auth_token_file or auth_token_env",
                    k("auth_token_file")
                ));
                None
            }
            Err(e) => {
                p.push(e);
                None
            }
        };
        if !(is_e164(&self.from) || is_messaging_service(&self.from) || is_alphanumeric_sender(&self.from)) {
            p.push(format!(
                "{}: {:?} is not an E.164 number, a Messaging Service SID or an alphanumeric sender id",
                k("from"),
                self.from
            ));
        }
        if self.to.is_empty() {
            p.push(format!("{}: needs at least one number", k("to")));
        }
        for (i, n) in self.to.iter().enumerate() {
            if !is_e164(n) {
                p.push(format!(
                    "{}: {n:?} is not an E.164 number (+4791234567)",
                    k(&format!("to[{i}]"))
                ));
            }
        }
        if let Err(e) = http_client::check_url(&self.api_url) {
            p.push(format!("{}: {e}", k("api_url")));
        }
        if let Some(ca) = &self.ca_file
            && let Err(e) = common::tls::load_certs(ca)
        {
            p.push(format!("{}: {e}", k("ca_file")));
        }
        check_seconds(&mut p, k("timeout_s"), self.timeout_s);
        check_seconds(&mut p, k("max_retry_s"), self.max_retry_s);
        check_templates(
            &mut p,
            prefix,
            name,
            None,
            self.text_template.as_deref(),
            DEFAULT_SMS_TEXT,
            (Escape::None, Escape::None),
        );
        match (p.is_empty(), token) {
            (true, Some(auth_token)) => Ok(SmsChannel {
                name: name.to_string(),
                provider: self.provider,
                account_sid: self.account_sid.clone(),
                auth_token,
                from: self.from.clone(),
                to: self.to.clone(),
                api_url: self.api_url.trim_end_matches('/').to_string(),
                http: HttpOptions {
                    timeout: Duration::from_secs(self.timeout_s),
                    max_retry: Duration::from_secs(self.max_retry_s),
                    ca_file: self.ca_file.clone(),
                    headers: Vec::new(),
                },
                text_template: self.text_template.clone(),
            }),
            _ => Err(p),
        }
    }
}

impl SmsChannel {
    pub fn templates(&self) -> Result<Templates, TemplateError> {
        Templates::new(
            None,
            self.text_template.as_deref(),
            DEFAULT_SMS_TEXT,
            Escape::None,
            Escape::None,
        )
    }

    /// Twilio's Messages endpoint of the account.
    pub fn messages_url(&self) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.api_url, self.account_sid
        )
    }

    /// One request per recipient for `n` (pure).
    pub fn requests(
        &self,
        templates: &Templates,
        n: &Notification,
        public_url: Option<&str>,
    ) -> Result<Vec<Request>, TemplateError> {
        let text = templates
            .render(
                n,
                RenderContext {
                    channel: &self.name,
                    public_url,
                },
            )?
            .text;
        let body = truncate(&text, BODY_MAX);
        let from_key = if is_messaging_service(&self.from) {
            "MessagingServiceSid"
        } else {
            "From"
        };
        Ok(self
            .to
            .iter()
            .map(|to| Request {
                method: reqwest::Method::POST,
                url: self.messages_url(),
                body: Body::Form(vec![
                    ("To".into(), to.clone()),
                    (from_key.into(), self.from.clone()),
                    ("Body".into(), body.clone()),
                ]),
                basic_auth: Some((self.account_sid.clone(), self.auth_token.clone())),
            })
            .collect())
    }

    pub fn start(&self) -> Result<SmsSender, DeliveryError> {
        let client = HttpClient::new(self.http.clone()).map_err(|e| DeliveryError::Setup(e.to_string()))?;
        Ok(SmsSender {
            templates: self.templates()?,
            channel: self.clone(),
            client,
        })
    }
}

/// A started SMS channel.
#[derive(Debug)]
pub struct SmsSender {
    channel: SmsChannel,
    templates: Templates,
    client: HttpClient,
}

impl SmsSender {
    /// Sends to every recipient; fails if any failed (after the others were tried).
    pub async fn send(&self, n: &Notification, public_url: Option<&str>) -> Result<Receipt, DeliveryError> {
        let requests = self.channel.requests(&self.templates, n, public_url)?;
        let total = requests.len();
        let mut answers = Vec::with_capacity(total);
        let mut failure = None;
        for req in &requests {
            match self.client.send(req).await {
                Ok(a) => answers.push(a),
                Err(f) => {
                    tracing::warn!(channel = %self.channel.name, error = %f, "sms to one recipient failed");
                    failure.get_or_insert(f);
                }
            }
        }
        match failure {
            None => Ok(Receipt::Http { answers }),
            Some(f) if answers.is_empty() => Err(DeliveryError::Http(f)),
            Some(f) => Err(DeliveryError::Partial {
                delivered: answers.len(),
                total,
                failure: f,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::sample;

    const ENV: &str = "RVM_TEST_TWILIO_TOKEN_SMS_RS";

    fn build_file(extra: &str) -> SmsFile {
        toml::from_str(&format!(
            "account_sid = \"AC0123\"\nauth_token_env = \"PATH\"\nfrom = \"+4759000000\"\nto = [\"+4791234567\", \"+4798765432\"]\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn twilio_gets_one_form_post_per_recipient_with_basic_auth() {
        let c = build_file("").validate("notify.channels.sms", "sms").unwrap();
        let reqs = c
            .requests(&c.templates().unwrap(), &sample::firing_alert(0), None)
            .unwrap();
        assert_eq!(reqs.len(), 2);
        let r = &reqs[1];
        assert_eq!(
            r.url,
            "https://api.twilio.com/2010-04-01/Accounts/AC0123/Messages.json"
        );
        assert_eq!(
            r.body,
            Body::Form(vec![
                ("To".into(), "+4798765432".into()),
                ("From".into(), "+4759000000".into()),
                (
                    "Body".into(),
                    "WARNING notify_test on RVMTEST01: test message from RVM Fleet".into()
                ),
            ])
        );
        let (user, token) = r.basic_auth.as_ref().unwrap();
        assert_eq!(user, "AC0123");
        assert_eq!(token.expose(), std::env::var("PATH").unwrap());
    }

    #[test]
    fn a_resolution_says_so_and_a_messaging_service_replaces_from() {
        let mut f = build_file("text_template = \"{{ event }}: {{ title }}\"\n");
        f.from = format!("MG{}", "a".repeat(32));
        let c = f.validate("c", "c").unwrap();
        let reqs = c
            .requests(&c.templates().unwrap(), &sample::resolved_alert(0), None)
            .unwrap();
        let Body::Form(fields) = &reqs[0].body else {
            panic!()
        };
        assert_eq!(fields[1].0, "MessagingServiceSid");
        assert!(fields[2].1.starts_with("resolved: notify_test"), "{fields:?}");
    }

    #[test]
    fn a_long_text_is_cut_to_twilio_limit() {
        let c = build_file("text_template = \"{% for i in range(500) %}word {% endfor %}\"\n")
            .validate("c", "c")
            .unwrap();
        let reqs = c
            .requests(&c.templates().unwrap(), &sample::firing_alert(0), None)
            .unwrap();
        let Body::Form(fields) = &reqs[0].body else {
            panic!()
        };
        assert_eq!(fields[2].1.chars().count(), BODY_MAX);
    }

    #[test]
    fn every_bad_sms_key_is_named() {
        let f: SmsFile = toml::from_str(&format!(
            "account_sid = \"\"\nauth_token_env = \"{ENV}\"\nfrom = \"not a sender!\"\nto = [\"91234567\"]\napi_url = \"ftp://x\"\ntimeout_s = 0\ntext_template = \"{{{{ nope }}}}\"\n"
        ))
        .unwrap();
        let p = f.validate("notify.channels.sms", "sms").unwrap_err().join("\n");
        for key in [
            "notify.channels.sms.account_sid",
            "notify.channels.sms.auth_token_env",
            "notify.channels.sms.from",
            "notify.channels.sms.to[0]",
            "notify.channels.sms.api_url",
            "notify.channels.sms.timeout_s",
            "notify.channels.sms.text_template",
        ] {
            assert!(p.contains(key), "{key} in:\n{p}");
        }
        assert!(p.contains(ENV), "the missing variable is named: {p}");
    }

    #[test]
    fn a_token_source_is_required() {
        let f: SmsFile =
            toml::from_str("account_sid = \"AC1\"\nfrom = \"+4759000000\"\nto = [\"+4791234567\"]\n")
                .unwrap();
        let p = f.validate("c", "c").unwrap_err().join("\n");
        assert!(
            p.contains("c.auth_token_file: set auth_token_file or auth_token_env"),
            "{p}"
        );
    }

    #[test]
    fn e164_numbers_are_recognised() {
        assert!(is_e164("+4791234567"));
        assert!(is_e164("+14155552671"));
        assert!(!is_e164("4791234567"));
        assert!(!is_e164("+0791234567"));
        assert!(!is_e164("+47 91234567"));
        assert!(!is_e164("+1234567"));
    }
}
