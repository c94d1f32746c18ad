//! Webhook channel (`type = "webhook"`): a POST in the receiver's format, over HTTPS (verified
//! against the system's roots or the channel's `ca_file`) or plain HTTP.
//!
//! ```toml
//! [notify.channels.pager]
//! type = "webhook"
//! format = "pagerduty"            # json (default) | slack | teams | pagerduty | alertmanager | telegram
//! url = "https://events.pagerduty.com/v2/enqueue"   # optional for pagerduty, required otherwise
//! routing_key = "R0123..."        # pagerduty only, required there
//! # chat_id = "-100123"           # telegram only, required there
//! ca_file = "/etc/rvm/receiver-ca.pem"   # trust only this CA instead of the system's roots
//! headers = { Authorization = "Bearer ..." }
//! timeout_s = 10                  # one attempt
//! max_retry_s = 120               # retries stop after this
//! title_template = "..."          # minijinja; see docs/notifications.md
//! text_template = "..."
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{DeliveryError, Receipt, check_seconds, check_templates, default_max_retry_s, default_timeout_s};
use crate::notify::formats::{self, Format, FormatSpec, Input, pagerduty};
use crate::notify::http_client::{self, HttpClient, HttpOptions, Request};
use crate::notify::notification::Notification;
use crate::notify::secret::Secret;
use crate::notify::template::{DEFAULT_TEXT, RenderContext, TemplateError, Templates};

/// `[notify.channels.NAME]` with `type = "webhook"`, as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFile {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub format: Format,
    #[serde(default = "default_timeout_s")]
    pub timeout_s: u64,
    #[serde(default = "default_max_retry_s")]
    pub max_retry_s: u64,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub routing_key: Option<String>,
    #[serde(default)]
    pub chat_id: Option<String>,
    #[serde(default)]
    pub title_template: Option<String>,
    #[serde(default)]
    pub text_template: Option<String>,
}

/// A validated webhook channel.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookChannel {
    pub name: String,
    pub url: String,
    pub spec: FormatSpec,
    pub http: HttpOptions,
    pub title_template: Option<String>,
    pub text_template: Option<String>,
}

impl WebhookFile {
    /// Every problem with its key under `prefix` (`notify.channels.NAME`), or the channel.
    pub fn validate(&self, prefix: &str, name: &str) -> Result<WebhookChannel, Vec<String>> {
        let mut p = Vec::new();
        let k = |field: &str| format!("{prefix}.{field}");
        let url = match (&self.url, self.format) {
            (Some(u), _) => u.clone(),
            (None, Format::Pagerduty) => pagerduty::EVENTS_URL.to_string(),
            (None, _) => {
                p.push(format!(
                    "{}: required for format {:?}",
                    k("url"),
                    self.format.as_str()
                ));
                String::new()
            }
        };
        if !url.is_empty()
            && let Err(e) = http_client::check_url(&url)
        {
            p.push(format!("{}: {e}", k("url")));
        }
        let spec = match self.format {
            Format::Json => FormatSpec::Json,
            Format::Slack => FormatSpec::Slack,
            Format::Teams => FormatSpec::Teams,
            Format::Alertmanager => FormatSpec::Alertmanager,
            Format::Pagerduty => {
                let key = self.routing_key.clone().unwrap_or_default();
                if key.trim().is_empty() {
                    p.push(format!("{}: required for format \"pagerduty\"", k("routing_key")));
                }
                FormatSpec::Pagerduty {
                    routing_key: Secret::new(key),
                }
            }
            Format::Telegram => {
                let chat_id = self.chat_id.clone().unwrap_or_default();
                if chat_id.trim().is_empty() {
                    p.push(format!("{}: required for format \"telegram\"", k("chat_id")));
                }
                FormatSpec::Telegram { chat_id }
            }
        };
        if self.routing_key.is_some() && self.format != Format::Pagerduty {
            p.push(format!("{}: only for format \"pagerduty\"", k("routing_key")));
        }
        if self.chat_id.is_some() && self.format != Format::Telegram {
            p.push(format!("{}: only for format \"telegram\"", k("chat_id")));
        }
        check_seconds(&mut p, k("timeout_s"), self.timeout_s);
        check_seconds(&mut p, k("max_retry_s"), self.max_retry_s);
        if let Some(ca) = &self.ca_file
            && let Err(e) = common::tls::load_certs(ca)
        {
            p.push(format!("{}: {e}", k("ca_file")));
        }
        let mut headers = Vec::new();
        for (h, v) in &self.headers {
            match http_client::check_header(h, v) {
                Ok(_) => headers.push((h.clone(), Secret::new(v.clone()))),
                Err(e) => p.push(format!("{}: {e}", k(&format!("headers.{h}")))),
            }
        }
        check_templates(
            &mut p,
            prefix,
            name,
            self.title_template.as_deref(),
            self.text_template.as_deref(),
            DEFAULT_TEXT,
            self.format.escapes(),
        );
        if !p.is_empty() {
            return Err(p);
        }
        Ok(WebhookChannel {
            name: name.to_string(),
            url,
            spec,
            http: HttpOptions {
                timeout: Duration::from_secs(self.timeout_s),
                max_retry: Duration::from_secs(self.max_retry_s),
                ca_file: self.ca_file.clone(),
                headers,
            },
            title_template: self.title_template.clone(),
            text_template: self.text_template.clone(),
        })
    }
}

impl WebhookChannel {
    pub fn templates(&self) -> Result<Templates, TemplateError> {
        Templates::new(
            self.title_template.as_deref(),
            self.text_template.as_deref(),
            DEFAULT_TEXT,
            self.spec.format().escapes().0,
            self.spec.format().escapes().1,
        )
    }

    /// The request for `n` (pure).
    pub fn request(
        &self,
        templates: &Templates,
        n: &Notification,
        public_url: Option<&str>,
    ) -> Result<Request, TemplateError> {
        let rendered = templates.render(
            n,
            RenderContext {
                channel: &self.name,
                public_url,
            },
        )?;
        let body = formats::body(
            &self.spec,
            &Input {
                notification: n,
                rendered: &rendered,
                channel: &self.name,
                public_url,
            },
        );
        Ok(Request::post_json(self.url.clone(), body))
    }

    pub fn start(&self) -> Result<WebhookSender, DeliveryError> {
        let client = HttpClient::new(self.http.clone()).map_err(|e| DeliveryError::Setup(e.to_string()))?;
        Ok(WebhookSender {
            templates: self.templates()?,
            channel: self.clone(),
            client,
        })
    }
}

/// A started webhook channel.
#[derive(Debug)]
pub struct WebhookSender {
    channel: WebhookChannel,
    templates: Templates,
    client: HttpClient,
}

impl WebhookSender {
    pub async fn send(&self, n: &Notification, public_url: Option<&str>) -> Result<Receipt, DeliveryError> {
        let req = self.channel.request(&self.templates, n, public_url)?;
        let answer = self.client.send(&req).await?;
        Ok(Receipt::Http {
            answers: vec![answer],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::http_client::Body;
    use crate::notify::sample;

    fn build_file(text: &str) -> WebhookFile {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn a_pagerduty_channel_needs_its_routing_key_and_defaults_its_url() {
        let c = build_file("format = \"pagerduty\"\nrouting_key = \"K\"\n")
            .validate("notify.channels.pd", "pd")
            .unwrap();
        assert_eq!(c.url, pagerduty::EVENTS_URL);
        let p = build_file("format = \"pagerduty\"\n")
            .validate("notify.channels.pd", "pd")
            .unwrap_err();
        assert!(
            p.iter().any(|e| e.starts_with("notify.channels.pd.routing_key")),
            "{p:?}"
        );
    }

    #[test]
    fn every_bad_webhook_key_is_named() {
        let text = r#"
url = "ftp://x/"
format = "slack"
timeout_s = 0
max_retry_s = 999999
ca_file = "/nonexistent/ca.pem"
headers = { "Content-Length" = "1" }
chat_id = "1"
title_template = "{% if %}"
"#;
        let p = build_file(text)
            .validate("notify.channels.s", "s")
            .unwrap_err()
            .join("\n");
        for key in [
            "notify.channels.s.url",
            "notify.channels.s.timeout_s",
            "notify.channels.s.max_retry_s",
            "notify.channels.s.ca_file",
            "notify.channels.s.headers.Content-Length",
            "notify.channels.s.chat_id",
            "notify.channels.s.title_template",
        ] {
            assert!(p.contains(key), "{key} in:\n{p}");
        }
    }

    #[test]
    fn a_template_that_fails_on_a_sample_is_a_config_error_naming_the_channel() {
        let p = build_file("url = \"https://x/\"\ntext_template = \"{{ alert.device }}\"\n")
            .validate("notify.channels.ops", "ops")
            .unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("notify.channels.ops.text_template: "), "{p:?}");
    }

    #[test]
    fn a_url_error_does_not_repeat_the_url() {
        let p = build_file("url = \"https://user:t0ken@x/\"\n")
            .validate("c", "c")
            .unwrap_err()
            .join("\n");
        assert!(!p.contains("t0ken"), "{p}");
    }

    #[test]
    fn the_request_is_the_format_body_posted_to_the_url() {
        let c = build_file("url = \"https://hooks.slack.com/services/T/B/X\"\nformat = \"slack\"\ntitle_template = \"{{ channel }}: {{ title }}\"\n")
            .validate("notify.channels.chat", "chat")
            .unwrap();
        let req = c
            .request(&c.templates().unwrap(), &sample::firing_alert(0), None)
            .unwrap();
        assert_eq!(req.url, "https://hooks.slack.com/services/T/B/X");
        assert_eq!(req.method, reqwest::Method::POST);
        let Body::Json(b) = &req.body else {
            panic!("{:?}", req.body)
        };
        assert!(
            b["text"]
                .as_str()
                .unwrap()
                .starts_with("chat: notify_test on RVMTEST01"),
            "{b:#}"
        );
    }

    #[test]
    fn header_values_and_routing_keys_stay_out_of_debug_output() {
        let c = build_file(
            "format = \"pagerduty\"\nrouting_key = \"S3CR3TKEY\"\nheaders = { X-Token = \"T0K3N\" }\n",
        )
        .validate("c", "c")
        .unwrap();
        let d = format!("{c:?}");
        assert!(!d.contains("S3CR3TKEY") && !d.contains("T0K3N"), "{d}");
    }
}
