//! The notification channels of issue 19 against real receivers on 127.0.0.1: an HTTPS server
//! with a certificate from a private CA made by the test, and aiosmtpd (PyPI) requiring
//! STARTTLS or implicit TLS and AUTH. These drive the channel senders directly; the running
//! server's notifications through them are `notify_delivery.rs`.

use std::time::Duration;

use fleet_server::notify::channels::email::EmailFile;
use fleet_server::notify::channels::sms::SmsFile;
use fleet_server::notify::channels::webhook::WebhookFile;
use fleet_server::notify::channels::{ChannelSpec, DeliveryError, Receipt};
use fleet_server::notify::formats::{self, FormatSpec, Input};
use fleet_server::notify::http_client::{HttpClient, HttpOptions, Request, SendError};
use fleet_server::notify::sample;
use fleet_server::notify::template::{DEFAULT_TEXT, Escape, RenderContext, Templates};
use rvm_fleet_tests::eventually;
use rvm_fleet_tests::receivers::{HttpsReceiver, SmtpServer, SmtpTls};
use rvm_fleet_tests::schema::{self, Schemas};

fn build_webhook(text: &str) -> ChannelSpec {
    let f: WebhookFile = toml::from_str(text).unwrap();
    ChannelSpec::Webhook(f.validate("notify.channels.hook", "hook").unwrap())
}

fn build_options(ca_file: Option<&std::path::Path>) -> HttpOptions {
    let mut o = HttpOptions::new(Duration::from_secs(5), Duration::from_secs(5));
    o.ca_file = ca_file.map(Into::into);
    o
}

#[tokio::test]
async fn a_request_to_a_private_ca_receiver_is_refused_without_ca_file_and_delivered_with_it() {
    let rx = HttpsReceiver::start().await.unwrap();
    let req = Request::post_json(rx.url("/hook"), serde_json::json!({"hello": "world"}));

    let without = HttpClient::new(build_options(None)).unwrap();
    let failure = without.send(&req).await.unwrap_err();
    match &failure.error {
        SendError::Tls { detail, url } => {
            assert!(detail.contains("UnknownIssuer"), "{detail}");
            assert_eq!(url, &format!("{}/…", rx.base), "the path is not shown");
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
    assert_eq!(failure.attempts, 1, "a TLS error is not retried");
    assert!(rx.requests().is_empty(), "nothing was delivered");
    // the receiver hears the client's alert a moment after the client gave up
    let refused = eventually(Duration::from_secs(5), || async {
        rx.tls_failures()
            .iter()
            .any(|f| f.contains("UnknownCA"))
            .then_some(())
    })
    .await;
    assert!(
        refused.is_some(),
        "the client refused the certificate: {:?}",
        rx.tls_failures()
    );

    let with = HttpClient::new(build_options(Some(&rx.ca_file))).unwrap();
    let answer = with.send(&req).await.unwrap();
    assert_eq!((answer.status, answer.body.as_str()), (200, "{\"ok\":true}"));
    let got = rx.requests();
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].method.as_str(), got[0].path.as_str()), ("POST", "/hook"));
    assert_eq!(got[0].json(), serde_json::json!({"hello": "world"}));
    assert_eq!(got[0].header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn a_slack_channel_without_ca_file_shows_a_tls_delivery_error_and_with_it_delivers() {
    let rx = HttpsReceiver::start().await.unwrap();
    let refused = build_webhook(&format!(
        "url = \"{}\"\nformat = \"slack\"\n",
        rx.url("/services/T/B/X")
    ));
    let e = refused
        .start()
        .unwrap()
        .send(&sample::firing_alert(0), None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "tls", "{e}");
    assert!(!e.is_transient(), "a certificate problem needs a person");
    assert!(
        !e.to_string().contains("/services/"),
        "the secret path is not shown: {e}"
    );

    let ok = build_webhook(&format!(
        "url = \"{}\"\nformat = \"slack\"\nca_file = \"{}\"\nheaders = {{ X-Token = \"t0k\" }}\n",
        rx.url("/services/T/B/X"),
        rx.ca_file.display()
    ));
    let receipt = ok
        .start()
        .unwrap()
        .send(&sample::firing_alert(0), None)
        .await
        .unwrap();
    assert!(
        matches!(receipt, Receipt::Http { ref answers } if answers[0].status == 200),
        "{receipt:?}"
    );
    let got = rx.requests();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/services/T/B/X");
    assert_eq!(got[0].header("x-token"), Some("t0k"));
    let body = got[0].json();
    assert_eq!(body["blocks"][0]["type"], "header");
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .contains("notify_test on RVMTEST01"),
        "{body:#}"
    );
}

#[tokio::test]
async fn pagerduty_gets_a_trigger_then_a_resolve_with_the_same_dedup_key() {
    let rx = HttpsReceiver::start().await.unwrap();
    rx.answer_with(202, r#"{"status":"success","message":"Event processed"}"#);
    let pd = build_webhook(&format!(
        "url = \"{}\"\nformat = \"pagerduty\"\nrouting_key = \"R0UT1NG\"\nca_file = \"{}\"\n",
        rx.url("/v2/enqueue"),
        rx.ca_file.display()
    ))
    .start()
    .unwrap();
    let receipt = pd.send(&sample::firing_alert(0), None).await.unwrap();
    let Receipt::Http { answers } = receipt else {
        panic!()
    };
    assert_eq!(answers[0].status, 202);
    assert!(answers[0].body.contains("Event processed"));
    pd.send(&sample::resolved_alert(1_000), None).await.unwrap();
    let bodies: Vec<_> = rx.requests().iter().map(|r| r.json()).collect();
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[0]["event_action"], "trigger");
    assert_eq!(bodies[1]["event_action"], "resolve");
    assert_eq!(bodies[0]["dedup_key"], bodies[1]["dedup_key"]);
    assert_eq!(bodies[0]["routing_key"], "R0UT1NG");
    assert_eq!(bodies[0]["payload"]["severity"], "warning");
}

#[tokio::test]
async fn an_alertmanager_receiver_gets_a_version_4_payload() {
    let rx = HttpsReceiver::start().await.unwrap();
    let am = build_webhook(&format!(
        "url = \"{}\"\nformat = \"alertmanager\"\nca_file = \"{}\"\n",
        rx.url("/alerts"),
        rx.ca_file.display()
    ))
    .start()
    .unwrap();
    am.send(&sample::firing_alert(0), Some("https://fleet.example.com"))
        .await
        .unwrap();
    let b = rx.requests()[0].json();
    assert_eq!(
        (b["version"].as_str(), b["status"].as_str()),
        (Some("4"), Some("firing"))
    );
    assert_eq!(b["receiver"], "hook");
    assert_eq!(b["alerts"][0]["labels"]["alertname"], "notify_test");
    assert_eq!(b["alerts"][0]["fingerprint"].as_str().unwrap().len(), 16);
}

#[tokio::test]
async fn a_receiver_that_fails_twice_gets_the_notification_on_the_third_attempt() {
    let rx = HttpsReceiver::start().await.unwrap();
    rx.answer_next(&[(503, "busy"), (500, "oops")]);
    let client = HttpClient::new(build_options(Some(&rx.ca_file))).unwrap();
    let a = client
        .send(&Request::post_json(rx.url("/x"), serde_json::json!({})))
        .await
        .unwrap();
    assert_eq!((a.status, a.attempts), (200, 3));
    rx.answer_with(400, "invalid payload: missing text");
    let f = client
        .send(&Request::post_json(rx.url("/x"), serde_json::json!({})))
        .await
        .unwrap_err();
    assert_eq!(f.attempts, 1);
    assert!(
        f.to_string().contains("400") && f.to_string().contains("missing text"),
        "{f}"
    );
    assert_eq!(rx.requests().len(), 4);
}

#[tokio::test]
async fn sms_reaches_a_twilio_shaped_receiver_once_per_recipient_with_basic_auth() {
    let rx = HttpsReceiver::start().await.unwrap();
    rx.answer_with(201, r#"{"sid":"SM123","status":"queued"}"#);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cr3t\n").unwrap();
    let f: SmsFile = toml::from_str(&format!(
        "account_sid = \"AC0123\"\nauth_token_file = \"{}\"\nfrom = \"+4759000000\"\nto = [\"+4791234567\", \"+4798765432\"]\napi_url = \"{}\"\nca_file = \"{}\"\n",
        token.display(),
        rx.base,
        rx.ca_file.display()
    ))
    .unwrap();
    let sms = ChannelSpec::Sms(f.validate("notify.channels.sms", "sms").unwrap());
    let receipt = sms
        .start()
        .unwrap()
        .send(&sample::firing_alert(0), None)
        .await
        .unwrap();
    let Receipt::Http { answers } = receipt else {
        panic!()
    };
    assert_eq!(answers.len(), 2);
    let got = rx.requests();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].path, "/2010-04-01/Accounts/AC0123/Messages.json");
    // "AC0123:s3cr3t" in base64
    assert_eq!(got[0].header("authorization"), Some("Basic QUMwMTIzOnMzY3IzdA=="));
    let form = got[1].form();
    assert_eq!(form[0], ("To".to_string(), "+4798765432".to_string()));
    assert_eq!(form[1], ("From".to_string(), "+4759000000".to_string()));
    assert!(
        form[2].1.starts_with("WARNING notify_test on RVMTEST01"),
        "{form:?}"
    );
}

fn build_email(
    server: &SmtpServer,
    security: &str,
    password_file: &std::path::Path,
    ca: bool,
) -> ChannelSpec {
    let mut text = format!(
        "smtp = \"{}\"\nsecurity = \"{security}\"\nusername = \"{}\"\npassword_file = \"{}\"\nfrom = \"RVM Fleet <fleet@example.com>\"\nto = [\"ops@example.com\"]\ntimeout_s = 5\nmax_retry_s = 2\n",
        server.addr(),
        server.username,
        password_file.display()
    );
    if ca {
        text.push_str(&format!("ca_file = \"{}\"\n", server.ca_file.display()));
    }
    let f: EmailFile = toml::from_str(&text).unwrap();
    ChannelSpec::Email(f.validate("notify.channels.mail", "mail").unwrap())
}

fn write_password(dir: &std::path::Path, pw: &str) -> std::path::PathBuf {
    let p = dir.join("smtp-password");
    std::fs::write(&p, format!("{pw}\n")).unwrap();
    p
}

#[tokio::test]
async fn email_through_aiosmtpd_with_starttls_and_auth_arrives() {
    common::tls::install_crypto_provider();
    let smtp = SmtpServer::start(SmtpTls::Starttls, "fleet", "correct horse").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mail = build_email(
        &smtp,
        "starttls",
        &write_password(dir.path(), "correct horse"),
        true,
    );
    let receipt = mail
        .start()
        .unwrap()
        .send(&sample::firing_alert(0), None)
        .await
        .unwrap();
    assert!(matches!(receipt, Receipt::Smtp { code: 250, .. }), "{receipt:?}");
    let msgs = smtp.wait_messages(1);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0].login.as_deref(), Some("fleet"));
    assert_eq!(msgs[0].rcpt_tos, ["ops@example.com"]);
    assert!(
        msgs[0]
            .data
            .contains("Subject: [RVM Fleet] FIRING [warning] notify_test on RVMTEST01"),
        "{}",
        msgs[0].data
    );
    assert!(
        msgs[0].data.contains("machine RVMTEST01 at test-site"),
        "{}",
        msgs[0].data
    );
}

#[tokio::test]
async fn email_through_aiosmtpd_with_implicit_tls_and_auth_arrives() {
    common::tls::install_crypto_provider();
    let smtp = SmtpServer::start(SmtpTls::Implicit, "fleet", "pw").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mail = build_email(&smtp, "tls", &write_password(dir.path(), "pw"), true);
    mail.start()
        .unwrap()
        .send(&sample::opened_incident(0), None)
        .await
        .unwrap();
    let msgs = smtp.wait_messages(1);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert!(
        msgs[0].data.contains("site outage at test-site"),
        "{}",
        msgs[0].data
    );
}

#[tokio::test]
async fn email_through_aiosmtpd_with_a_wrong_password_is_an_auth_error_and_nothing_arrives() {
    common::tls::install_crypto_provider();
    let smtp = SmtpServer::start(SmtpTls::Starttls, "fleet", "right").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mail = build_email(&smtp, "starttls", &write_password(dir.path(), "wrong"), true);
    let e = mail
        .start()
        .unwrap()
        .send(&sample::firing_alert(0), None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "auth", "{e}");
    assert!(!e.is_transient(), "a wrong password is not retried later: {e}");
    let text = e.to_string();
    assert!(
        text.contains("authentication failed") && text.contains("535"),
        "{text}"
    );
    assert!(text.contains(&smtp.addr()), "names the server: {text}");
    assert!(!text.contains("wrong"), "the password is not shown: {text}");
    assert!(matches!(&e, DeliveryError::Smtp(f) if f.attempts == 1), "{e:?}");
    assert!(smtp.messages().is_empty());
}

#[tokio::test]
async fn email_through_aiosmtpd_without_its_ca_is_a_tls_error() {
    common::tls::install_crypto_provider();
    let smtp = SmtpServer::start(SmtpTls::Starttls, "fleet", "pw").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mail = build_email(&smtp, "starttls", &write_password(dir.path(), "pw"), false);
    let e = mail
        .start()
        .unwrap()
        .send(&sample::firing_alert(0), None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "tls", "{e}");
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    assert!(smtp.messages().is_empty());
}

/// docs/notification.schema.json (beside docs/notifications.md: not an MQTT payload, so not
/// in docs/schemas/).
fn notification_schema() -> serde_json::Value {
    let path = schema::dir().join("../notification.schema.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn json_notification_bodies_match_the_documented_schema() {
    let root = notification_schema();
    let templates = Templates::new(None, None, DEFAULT_TEXT, Escape::None, Escape::None).unwrap();
    for n in sample::all(1_774_746_000_000) {
        let rendered = templates
            .render(
                &n,
                RenderContext {
                    channel: "hook",
                    public_url: None,
                },
            )
            .unwrap();
        let body = formats::body(
            &FormatSpec::Json,
            &Input {
                notification: &n,
                rendered: &rendered,
                channel: "hook",
                public_url: None,
            },
        );
        schema::validate(&root, &root, &body, "$")
            .unwrap_or_else(|e| panic!("{} {}: {e}\n{body:#}", n.id, n.event));
    }
}

#[test]
fn the_notification_schema_embeds_the_alert_and_incident_definitions_unchanged() {
    let s = Schemas::load().unwrap();
    let defs = |name: &str| s.by_name[name]["$defs"].as_object().unwrap().clone();
    let notification = notification_schema()["$defs"].as_object().unwrap().clone();
    for (from, def) in [("alert", "Alert"), ("alert", "Ack"), ("incident", "Incident")] {
        assert_eq!(
            notification.get(def),
            defs(from).get(def),
            "$defs/{def} of docs/notification.schema.json differs from docs/schemas/{from}.schema.json"
        );
    }
}
