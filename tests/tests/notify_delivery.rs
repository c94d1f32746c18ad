//! Notifications end to end (issue 19): a running fleet server, a simulated machine whose
//! fault fires and resolves a rule, and real receivers on 127.0.0.1: an HTTPS server behind a
//! private CA made by the test (Slack, PagerDuty and Alertmanager formats, refused without
//! `ca_file`), aiosmtpd from PyPI requiring STARTTLS and AUTH (`RVM_TEST_PYTHON`, see
//! `.ci/run`), a `kill -9` of a `fleet-server` process while a delivery is in flight, and
//! maintenance windows in a non-UTC zone.

use std::time::Duration;

use jiff::tz::TimeZone;
use rvm_fleet_tests::harness::{ServerProc, SimSpec, spawn_simulator};
use rvm_fleet_tests::receivers::{HttpsReceiver, SmtpServer, SmtpTls};
use rvm_fleet_tests::{FleetOptions, SimFleet, TestFleet, WebhookReceiver, eventually};
use rvm_sim::simulate::{SimConfig, SimProfile};
use rvm_sim::source::Fault;
use serde_json::Value;

/// One rule a simulated machine's `InferenceDegraded` fault fires at once and its end
/// resolves.
const RULES: &str = r#"
[[rules]]
name = "inference_slow"
metric = "app.inference_ms"
op = ">"
threshold = 150
clear = 120
severity = "critical"
summary = "inference slower than 150 ms per frame"
"#;

/// How long a notification may take to arrive.
const ARRIVES: Duration = Duration::from_secs(20);

fn build_sim(prefix: &str, devices: usize, sites: usize) -> SimConfig {
    SimConfig {
        devices,
        sites,
        prefix: prefix.into(),
        host: String::new(),
        port: 0,
        certs: Default::default(),
        interval: Duration::from_millis(300),
        first: 0,
    }
}

async fn start_sims(fleet: &TestFleet, prefix: &str, devices: usize, sites: usize) -> SimFleet {
    let sims = SimFleet::start(fleet, build_sim(prefix, devices, sites), SimProfile::default()).unwrap();
    let online = eventually(ARRIVES, || async {
        let ds = fleet.devices().await.ok()?;
        (ds.iter()
            .filter(|d| d["status"] == "online" || d["status"] == "degraded")
            .count()
            == devices)
            .then_some(())
    })
    .await;
    assert!(online.is_some(), "the simulated machines did not come online");
    sims
}

/// The channel's entry of `GET /api/v1/notify`.
async fn channel(fleet: &TestFleet, name: &str) -> Value {
    let n = fleet.get("/api/v1/notify").await.unwrap();
    n["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no channel {name} in {n:#}"))
}

async fn metrics(fleet: &TestFleet) -> String {
    fleet
        .http
        .get(fleet.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_firing_rule_reaches_a_private_ca_receiver_as_slack_pagerduty_and_alertmanager_and_pagerduty_gets_the_resolve()
 {
    let rx = HttpsReceiver::start().await.unwrap();
    let ca = rx.ca_file.display().to_string();
    let notify = format!(
        r#"
[notify]
public_url = "https://fleet.example.com"
[notify.default]
channels = ["slack", "pager", "am", "untrusted"]
per_minute = 100
[notify.channels.slack]
type = "webhook"
format = "slack"
url = "{slack}"
ca_file = "{ca}"
[notify.channels.pager]
type = "webhook"
format = "pagerduty"
url = "{pd}"
routing_key = "R0123456789ABCDEF0123456789ABCDEF"
ca_file = "{ca}"
[notify.channels.am]
type = "webhook"
format = "alertmanager"
url = "{am}"
ca_file = "{ca}"
headers = {{ Authorization = "Bearer am-token" }}
[notify.channels.untrusted]
type = "webhook"
format = "slack"
url = "{untrusted}"
max_retry_s = 1
"#,
        slack = rx.url("/services/T0/B0/secret"),
        pd = rx.url("/v2/enqueue"),
        am = rx.url("/api/alerts"),
        untrusted = rx.url("/untrusted"),
    );
    let fleet = TestFleet::start_with(FleetOptions {
        rules: Some(RULES.into()),
        notify: Some(notify),
        ..Default::default()
    })
    .unwrap();
    let sims = start_sims(&fleet, "https", 1, 1).await;
    let id = sims.ids[0].clone();
    let of = |path: &str| -> Vec<Value> {
        rx.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .map(|r| r.json())
            .collect()
    };

    sims.set_fault(0, Fault::InferenceDegraded);
    let fired = eventually(ARRIVES, || async {
        let (s, p, a) = (of("/services/T0/B0/secret"), of("/v2/enqueue"), of("/api/alerts"));
        (!s.is_empty() && !p.is_empty() && !a.is_empty()).then(|| (s[0].clone(), p[0].clone(), a[0].clone()))
    })
    .await;
    let (slack, trigger, am) =
        fired.unwrap_or_else(|| panic!("not every format arrived: {:#?}", rx.requests()));
    let alert_id = format!("inference_slow:{id}:1");
    assert!(
        slack["text"]
            .as_str()
            .unwrap()
            .contains(&format!("inference_slow on {id}")),
        "{slack:#}"
    );
    assert!(slack["blocks"].is_array(), "{slack:#}");
    assert_eq!(trigger["event_action"], "trigger", "{trigger:#}");
    assert_eq!(trigger["routing_key"], "R0123456789ABCDEF0123456789ABCDEF");
    assert_eq!(trigger["dedup_key"], alert_id.as_str());
    assert_eq!(trigger["payload"]["source"], id.as_str());
    assert_eq!(trigger["payload"]["severity"], "critical");
    assert_eq!(
        (am["version"].as_str(), am["status"].as_str()),
        (Some("4"), Some("firing")),
        "{am:#}"
    );
    assert_eq!(am["receiver"], "am");
    assert_eq!(am["externalURL"], "https://fleet.example.com");
    assert_eq!(am["alerts"][0]["labels"]["alertname"], "inference_slow");
    let am_request = rx
        .requests()
        .into_iter()
        .find(|r| r.path == "/api/alerts")
        .unwrap();
    assert_eq!(am_request.header("authorization"), Some("Bearer am-token"));

    // without ca_file the same receiver is refused: visible in the API and counted
    let untrusted = eventually(ARRIVES, || async {
        let c = channel(&fleet, "untrusted").await;
        (c["stats"]["failed"].as_u64() >= Some(1)).then_some(c)
    })
    .await
    .unwrap_or_else(|| panic!("no failure on the untrusted channel"));
    assert_eq!(untrusted["stats"]["last_error"]["kind"], "tls", "{untrusted:#}");
    assert!(
        untrusted["stats"]["last_error"]["message"]
            .as_str()
            .unwrap()
            .contains("UnknownIssuer"),
        "{untrusted:#}"
    );
    assert!(
        of("/untrusted").is_empty(),
        "nothing was delivered without ca_file"
    );
    let counted = [
        "rvm_fleet_notification_errors_total{channel=\"untrusted\",kind=\"tls\"} 1\n",
        "rvm_fleet_notifications_failed_total{channel=\"untrusted\"} 1\n",
        // recorded a moment after the receiver answered
        "rvm_fleet_notifications_sent_total{channel=\"pager\"} 1\n",
    ];
    let text = eventually(ARRIVES, || async {
        let text = metrics(&fleet).await;
        counted.iter().all(|l| text.contains(l)).then_some(text)
    })
    .await;
    assert!(text.is_some(), "{counted:?} in\n{}", metrics(&fleet).await);

    // the fault ends: PagerDuty gets a resolve with the same dedup_key, Alertmanager a resolved
    sims.set_fault(0, Fault::None);
    let resolve = eventually(ARRIVES, || async {
        of("/v2/enqueue")
            .into_iter()
            .find(|b| b["event_action"] == "resolve")
    })
    .await
    .unwrap_or_else(|| panic!("no resolve: {:#?}", of("/v2/enqueue")));
    assert_eq!(resolve["dedup_key"], alert_id.as_str(), "{resolve:#}");
    let resolved = eventually(ARRIVES, || async {
        of("/api/alerts").into_iter().find(|b| b["status"] == "resolved")
    })
    .await
    .unwrap();
    assert_eq!(
        resolved["alerts"][0]["fingerprint"], am["alerts"][0]["fingerprint"],
        "a firing and its resolution pair up in Alertmanager"
    );
    assert_eq!(of("/v2/enqueue").len(), 2, "one trigger, one resolve");
    // the outbox holds each delivery with what the receiver answered (recorded a moment
    // after the receiver answered)
    let key = format!("pager/{alert_id}/resolved");
    let entry = eventually(ARRIVES, || async {
        let outbox = fleet.get("/api/v1/notify/outbox?state=delivered").await.ok()?;
        outbox["entries"]
            .as_array()?
            .iter()
            .find(|e| e["key"] == key.as_str())
            .cloned()
    })
    .await
    .unwrap_or_else(|| panic!("{key} not delivered in the outbox"));
    assert_eq!(entry["receipt"]["answers"][0]["status"], 200, "{entry:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_goes_through_aiosmtpd_with_starttls_and_auth_and_a_wrong_password_is_a_channel_error() {
    let smtp = SmtpServer::start(SmtpTls::Starttls, "fleet", "correct horse").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (good, bad) = (dir.path().join("good"), dir.path().join("bad"));
    std::fs::write(&good, "correct horse\n").unwrap();
    std::fs::write(&bad, "battery staple\n").unwrap();
    let mail = |name: &str, password: &std::path::Path| {
        format!(
            r#"
[notify.channels.{name}]
type = "email"
smtp = "{addr}"
username = "fleet"
password_file = "{pw}"
ca_file = "{ca}"
from = "RVM Fleet <fleet@example.com>"
to = ["ops@example.com"]
max_retry_s = 2
"#,
            addr = smtp.addr(),
            pw = password.display(),
            ca = smtp.ca_file.display()
        )
    };
    let notify = format!(
        "[notify.default]\nchannels = [\"mail\", \"wrongpw\"]\nper_minute = 100\n{}{}",
        mail("mail", &good),
        mail("wrongpw", &bad)
    );
    let fleet = TestFleet::start_with(FleetOptions {
        rules: Some(RULES.into()),
        notify: Some(notify),
        ..Default::default()
    })
    .unwrap();
    let sims = start_sims(&fleet, "mail", 1, 1).await;
    let id = sims.ids[0].clone();
    sims.set_fault(0, Fault::InferenceDegraded);
    let msg = eventually(ARRIVES, || async { smtp.messages().into_iter().next() })
        .await
        .unwrap_or_else(|| panic!("no email arrived"));
    assert_eq!(msg.login.as_deref(), Some("fleet"));
    assert_eq!(msg.rcpt_tos, ["ops@example.com"]);
    assert!(
        msg.data.contains(&format!(
            "Subject: [RVM Fleet] FIRING [critical] inference_slow on {id}"
        )),
        "{}",
        msg.data
    );
    // the wrong password: an authentication error of that channel, not retried
    let wrong = eventually(ARRIVES, || async {
        let c = channel(&fleet, "wrongpw").await;
        (c["stats"]["failed"].as_u64() >= Some(1)).then_some(c)
    })
    .await
    .unwrap_or_else(|| panic!("no failure on the wrong password's channel"));
    assert_eq!(wrong["stats"]["last_error"]["kind"], "auth", "{wrong:#}");
    assert_eq!(wrong["stats"]["retried"], 0, "{wrong:#}");
    let text = metrics(&fleet).await;
    assert!(
        text.contains("rvm_fleet_notification_errors_total{channel=\"wrongpw\",kind=\"auth\"} 1\n"),
        "{text}"
    );
    // and the server carries on: the resolution reaches the good channel
    sims.set_fault(0, Fault::None);
    let resolved = eventually(ARRIVES, || async {
        smtp.messages()
            .into_iter()
            .find(|m| m.data.contains("Subject: [RVM Fleet] RESOLVED [critical]"))
    })
    .await;
    assert!(resolved.is_some(), "{:#?}", smtp.messages());
    assert_eq!(
        smtp.messages().len(),
        2,
        "every message came through the right password"
    );
    // counted a moment after the server answered
    let counted = eventually(ARRIVES, || async {
        let h = fleet.health().await.ok()?;
        (h["notify"]["delivered"]["mail"] == 2).then_some(())
    })
    .await;
    assert!(counted.is_some(), "{:#}", fleet.health().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_of_the_server_while_a_notification_is_in_flight_delivers_it_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let certs = common::pki::CertDir::new(dir.path().join("certs"));
    common::pki::init(&certs, &["localhost".into(), "127.0.0.1".into()], false).unwrap();
    let hook = WebhookReceiver::start().await.unwrap();
    // the first delivery is received and never answered: in flight when the server dies
    hook.hold(true);
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rules]]\nname = \"always\"\nmetric = \"cpu.usage_pct\"\nop = \">=\"\nthreshold = 0\nseverity = \"critical\"\n",
    )
    .unwrap();
    let extra = format!(
        r#"[alerts]
rules = "{rules}"
[notify.default]
channels = ["hook"]
[notify.channels.hook]
type = "webhook"
url = "{url}"
timeout_s = 300
max_retry_s = 300
"#,
        rules = rules.display(),
        url = hook.url
    );
    let mut server = ServerProc::new(dir.path(), &certs, &extra).unwrap();
    server.start().unwrap();
    assert!(
        server.wait_ready(Duration::from_secs(30)).await,
        "{}",
        rvm_fleet_tests::read(&server.log)
    );
    let spec = SimSpec {
        prefix: "kill",
        devices: 1,
        first: 0,
        interval_ms: 300,
        sites: 1,
        buffer_dir: None,
    };
    let _sim = spawn_simulator(&certs, server.mqtt, &spec, &dir.path().join("sim.log")).unwrap();
    let expected = "always:kill0000:1/firing";
    let in_flight = eventually(Duration::from_secs(30), || async {
        hook.held().into_iter().any(|b| b["id"] == expected).then_some(())
    })
    .await;
    assert!(in_flight.is_some(), "{}", rvm_fleet_tests::read(&server.log));
    let outbox = server.get("/api/v1/notify/outbox?state=pending").await.unwrap();
    assert_eq!(outbox["entries"][0]["attempts"], 1, "claimed: {outbox:#}");

    server.kill9();
    hook.hold(false);
    server.start().unwrap();
    assert!(server.wait_ready(Duration::from_secs(30)).await);
    let delivered = eventually(Duration::from_secs(30), || async {
        hook.bodies().into_iter().find(|b| b["id"] == expected)
    })
    .await;
    assert!(
        delivered.is_some(),
        "not delivered after the restart:\n{}",
        rvm_fleet_tests::read(&server.log)
    );
    // once: the alert restored from the store is not notified again, and the outbox's
    // entry is done
    tokio::time::sleep(Duration::from_secs(3)).await;
    let copies = hook.bodies().iter().filter(|b| b["id"] == expected).count();
    assert_eq!(copies, 1, "{:#?}", hook.bodies());
    let done = server.get("/api/v1/notify/outbox?state=delivered").await.unwrap();
    assert_eq!(
        done["entries"][0]["key"],
        format!("hook/{expected}").as_str(),
        "{done:#}"
    );
    assert_eq!(done["entries"][0]["attempts"], 2, "{done:#}");
    server.terminate();
}

/// `HH:MM` in `zone`, `offset_min` minutes from now.
fn local_time(zone: &str, offset_min: i64) -> String {
    let tz = TimeZone::get(zone).unwrap();
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_mins(offset_min);
    at.to_zoned(tz).strftime("%H:%M").to_string()
}

async fn alert_of(fleet: &TestFleet, device: &str, generation: u64) -> Option<Value> {
    let a = fleet.get("/api/v1/alerts?state=all").await.ok()?;
    a["alerts"]
        .as_array()?
        .iter()
        .find(|a| a["device"] == device && a["generation"] == generation)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_window_in_new_york_mutes_its_site_and_a_closed_one_does_not() {
    let hook = WebhookReceiver::start().await.unwrap();
    let zone = "America/New_York";
    // site1: a window open now (from an hour ago to an hour ahead, New York time); site2: one
    // that opens in two hours
    let notify = format!(
        r#"
[notify.default]
channels = ["hook"]
per_minute = 100
[notify.channels.hook]
type = "webhook"
url = "{url}"
[[notify.maintenance]]
name = "site1-now"
sites = ["site1"]
time_zone = "{zone}"
from = "{a}"
to = "{b}"
[[notify.maintenance]]
name = "site2-later"
sites = ["site2"]
time_zone = "{zone}"
from = "{c}"
to = "{d}"
"#,
        url = hook.url,
        a = local_time(zone, -60),
        b = local_time(zone, 60),
        c = local_time(zone, 120),
        d = local_time(zone, 180),
    );
    let fleet = TestFleet::start_with(FleetOptions {
        rules: Some(RULES.into()),
        notify: Some(notify),
        ..Default::default()
    })
    .unwrap();
    let windows = fleet.get("/api/v1/maintenance").await.unwrap();
    let open: Vec<(&str, bool)> = windows["windows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["name"].as_str().unwrap(), w["open_now"].as_bool().unwrap()))
        .collect();
    assert_eq!(open, [("site1-now", true), ("site2-later", false)]);

    let sims = start_sims(&fleet, "mw", 2, 2).await;
    let (in_window, outside) = (sims.ids[0].clone(), sims.ids[1].clone());
    sims.set_fault(0, Fault::InferenceDegraded);
    sims.set_fault(1, Fault::InferenceDegraded);
    let sent = |device: &str, event: &str| {
        let id = format!("inference_slow:{device}:1/{event}");
        hook.bodies().iter().any(|b| b["id"] == id.as_str())
    };
    let outside_sent = eventually(ARRIVES, || async { sent(&outside, "firing").then_some(()) }).await;
    assert!(outside_sent.is_some(), "{:#?}", hook.bodies());
    let muted = eventually(ARRIVES, || async {
        alert_of(&fleet, &in_window, 1)
            .await
            .filter(|a| a["state"] == "firing")
    })
    .await
    .unwrap();
    assert_eq!(muted["muted_by"], "site1-now", "recorded and marked: {muted:#}");
    // both resolve: only the one people were told about is resolved aloud
    sims.set_fault(0, Fault::None);
    sims.set_fault(1, Fault::None);
    let outside_resolved = eventually(ARRIVES, || async { sent(&outside, "resolved").then_some(()) }).await;
    assert!(outside_resolved.is_some());
    let resolved = eventually(ARRIVES, || async {
        alert_of(&fleet, &in_window, 1)
            .await
            .filter(|a| a["state"] == "resolved")
    })
    .await
    .unwrap();
    assert_eq!(resolved["muted_by"], "site1-now");
    assert!(
        !sent(&in_window, "firing") && !sent(&in_window, "resolved"),
        "{:#?}",
        hook.bodies()
    );
    let h = fleet.health().await.unwrap();
    assert_eq!(h["alerts"]["muted"], 2, "{h:#}");
    assert!(
        metrics(&fleet)
            .await
            .contains("rvm_fleet_notifications_muted_total 2\n")
    );

    // a window added through the API mutes site2 too; removing it sends the firing that is
    // still going on
    let op = fleet.token("otto", fleet_server::auth::Role::Operator).unwrap();
    let body = serde_json::json!({
        "name": "site2-now", "sites": ["site2"], "time_zone": zone,
        "from": local_time(zone, -60), "to": local_time(zone, 60), "comment": "firmware update",
    });
    let (status, w) = fleet
        .send(reqwest::Method::POST, "/api/v1/maintenance", &op, Some(body))
        .await
        .unwrap();
    assert_eq!((status, w["open_now"].as_bool()), (201, Some(true)), "{w:#}");
    sims.set_fault(1, Fault::InferenceDegraded);
    let muted = eventually(ARRIVES, || async {
        alert_of(&fleet, &outside, 2)
            .await
            .filter(|a| a["state"] == "firing")
    })
    .await
    .unwrap();
    assert_eq!(muted["muted_by"], "site2-now");
    let second = format!("inference_slow:{outside}:2/firing");
    assert!(
        !hook.bodies().iter().any(|b| b["id"] == second.as_str()),
        "muted: {:#?}",
        hook.bodies()
    );
    let (status, _) = fleet
        .send(
            reqwest::Method::DELETE,
            "/api/v1/maintenance/site2-now",
            &op,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 204);
    let after = eventually(ARRIVES, || async {
        hook.bodies()
            .iter()
            .any(|b| b["id"] == second.as_str())
            .then_some(())
    })
    .await;
    assert!(
        after.is_some(),
        "the window went, the firing followed: {:#?}",
        hook.bodies()
    );
    let (status, e) = fleet
        .send(
            reqwest::Method::DELETE,
            "/api/v1/maintenance/site1-now",
            &op,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 409, "a config window is changed in the config file: {e}");
}
