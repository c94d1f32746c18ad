//! Alerting end to end: simulated machines over mTLS, the embedded broker, the alert engine,
//! the correlator, notifications to a real local webhook receiver and SMTP server, restarts;
//! the scenarios that keep state run on sled and on PostgreSQL (`..._on_postgres`).

use std::time::{Duration, Instant};

use fleet_server::auth::Role;
use reqwest::Method;
use rvm_fleet_tests::{
    Backend, FleetOptions, SimFleet, SmtpReceiver, TestFleet, WebhookReceiver, eventually,
};
use rvm_sim::simulate::{SimConfig, SimProfile};
use rvm_sim::source::Fault;
use serde_json::{Value, json};

/// Rules with short timings, so each scenario takes seconds.
const RULES: &str = r#"
[[rules]]
name = "device_offline"
metric = "presence.offline"
op = ">"
threshold = 0
severity = "critical"
summary = "device is offline"

[[rules]]
name = "inference_slow"
metric = "app.inference_ms"
op = ">"
threshold = 150
clear = 120
for_s = 2
severity = "warning"
summary = "inference slower than 150 ms per frame"

[correlate.site_outage]
min_devices = 3
window_s = 5

[correlate.cohort]
min_devices = 3
min_pct = 50.0
max_others_pct = 10.0
min_others = 3
"#;

fn notify_to_webhook(url: &str) -> String {
    format!(
        r#"
[notify.default]
channels = ["hook"]
per_minute = 100
[notify.channels.hook]
type = "webhook"
url = "{url}"
max_retry_s = 10
"#
    )
}

fn build_sim(prefix: &str, devices: usize, sites: usize) -> SimConfig {
    SimConfig {
        devices,
        sites,
        prefix: prefix.into(),
        // host, port and certs are set by SimFleet::start
        host: String::new(),
        port: 0,
        certs: Default::default(),
        interval: Duration::from_millis(500),
        first: 0,
    }
}

async fn wait_online(fleet: &TestFleet, ids: &[String], within: Duration) {
    let ok = eventually(within, || async {
        let ds = fleet.devices().await.ok()?;
        let online = ds
            .iter()
            .filter(|d| ids.iter().any(|id| d["id"] == id.as_str()))
            .filter(|d| d["status"] == "online" || d["status"] == "degraded")
            .count();
        (online == ids.len()).then_some(())
    })
    .await;
    assert!(ok.is_some(), "not all of {ids:?} came online");
}

fn of_source<'a>(bodies: &'a [Value], source: &str) -> Vec<&'a Value> {
    bodies.iter().filter(|b| b["source"] == source).collect()
}

async fn alerts(fleet: &TestFleet, state: &str) -> Vec<Value> {
    fleet.get(&format!("/api/v1/alerts?state={state}")).await.unwrap()["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_going_offline_sends_one_incident_notification_not_ten_offline_alerts() {
    a_site_going_offline_sends_one_incident_notification_not_ten_offline_alerts_on(Backend::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_going_offline_sends_one_incident_notification_not_ten_offline_alerts_on_postgres() {
    a_site_going_offline_sends_one_incident_notification_not_ten_offline_alerts_on(Backend::Postgres).await;
}

async fn a_site_going_offline_sends_one_incident_notification_not_ten_offline_alerts_on(backend: Backend) {
    let started = Instant::now();
    let hook = WebhookReceiver::start().await.unwrap();
    let fleet = TestFleet::start_with(FleetOptions {
        backend,
        rules: Some(RULES.into()),
        notify: Some(notify_to_webhook(&hook.url)),
        ..Default::default()
    })
    .unwrap();
    let sims = SimFleet::start(&fleet, build_sim("oslo", 10, 1), SimProfile::default()).unwrap();
    wait_online(&fleet, &sims.ids, Duration::from_secs(20)).await;

    for i in 0..10 {
        sims.stop_device(i);
    }
    let opened = eventually(Duration::from_secs(15), || async {
        of_source(&hook.bodies(), "incident")
            .into_iter()
            .find(|b| b["event"] == "opened")
            .cloned()
    })
    .await
    .unwrap_or_else(|| panic!("no incident notification; received {:#?}", hook.bodies()));
    assert_eq!(opened["incident"]["kind"], "site_outage", "{opened:#}");
    assert_eq!(opened["labels"]["site"], "site1");
    assert_eq!(opened["severity"], "critical");

    // Every machine joins the incident; their offline alerts fire but are not sent on their own.
    let all_in = eventually(Duration::from_secs(10), || async {
        let inc = fleet.get("/api/v1/incidents").await.ok()?;
        let open = inc["open"].as_array()?.clone();
        (open.len() == 1 && open[0]["devices"].as_array()?.len() == 10).then_some(open)
    })
    .await;
    assert!(
        all_in.is_some(),
        "{:#}",
        fleet.get("/api/v1/incidents").await.unwrap()
    );
    assert_eq!(alerts(&fleet, "firing").await.len(), 10);
    // Past the hold window (5 s) no per-machine page arrives.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let bodies = hook.bodies();
    assert_eq!(of_source(&bodies, "alert").len(), 0, "{bodies:#?}");
    assert_eq!(of_source(&bodies, "incident").len(), 1, "{bodies:#?}");
    let h = fleet.health().await.unwrap();
    if matches!(backend, Backend::Sled) {
        assert_eq!(
            h["alerts"]["held"], 2,
            "two fired before the incident opened: {h:#}"
        );
    } else {
        // on PostgreSQL each firing is decided once its claim is answered (the store is
        // shared by instances: docs/architecture.md "Several instances"), by when the
        // incident may already speak for it: each of the ten is held or suppressed
        let (held, suppressed) = (
            h["alerts"]["held"].as_u64().unwrap_or(0),
            h["alerts"]["skipped_suppressed"].as_u64().unwrap_or(0),
        );
        assert!(held <= 2, "{h:#}");
        assert_eq!(held + suppressed, 10, "{h:#}");
    }
    assert_eq!(h["notify"]["delivered"]["hook"], 1, "{h:#}");
    println!("site outage scenario took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_on_one_model_version_failing_inference_make_one_cohort_incident_naming_it() {
    machines_on_one_model_version_failing_inference_make_one_cohort_incident_naming_it_on(Backend::Sled)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_on_one_model_version_failing_inference_make_one_cohort_incident_naming_it_on_postgres() {
    machines_on_one_model_version_failing_inference_make_one_cohort_incident_naming_it_on(Backend::Postgres)
        .await;
}

async fn machines_on_one_model_version_failing_inference_make_one_cohort_incident_naming_it_on(
    backend: Backend,
) {
    let hook = WebhookReceiver::start().await.unwrap();
    let fleet = TestFleet::start_with(FleetOptions {
        backend,
        rules: Some(RULES.into()),
        notify: Some(notify_to_webhook(&hook.url)),
        ..Default::default()
    })
    .unwrap();
    let mut profile = SimProfile::default();
    for i in 0..4 {
        profile.vision_model_versions.insert(i, "v3.3".into());
    }
    let sims = SimFleet::start(&fleet, build_sim("cohort", 10, 2), profile).unwrap();
    wait_online(&fleet, &sims.ids, Duration::from_secs(20)).await;

    for i in 0..4 {
        sims.set_fault(i, Fault::InferenceDegraded);
    }
    let inc = eventually(Duration::from_secs(20), || async {
        of_source(&hook.bodies(), "incident")
            .into_iter()
            .find(|b| b["event"] == "opened")
            .cloned()
    })
    .await
    .unwrap_or_else(|| panic!("no incident notification; received {:#?}", hook.bodies()));
    let i = &inc["incident"];
    assert_eq!(i["kind"], "cohort_regression", "{inc:#}");
    assert_eq!(i["attribute"], "vision_model_version");
    assert_eq!(i["attribute_value"], "v3.3");
    assert_eq!(inc["labels"]["vision_model_version"], "v3.3");
    assert!(
        i["probable_cause"]
            .as_str()
            .unwrap()
            .starts_with("vision_model_version = v3.3"),
        "{i:#}"
    );
    // All four join; nothing on v3.2 fires; still one incident.
    let joined = eventually(Duration::from_secs(10), || async {
        let list = fleet.get("/api/v1/incidents").await.ok()?;
        let open = list["open"].as_array()?.clone();
        (open.len() == 1 && open[0]["members"].as_array()?.len() == 4).then_some(())
    })
    .await;
    assert!(
        joined.is_some(),
        "{:#}",
        fleet.get("/api/v1/incidents").await.unwrap()
    );
    let firing = alerts(&fleet, "firing").await;
    assert_eq!(firing.len(), 4, "{firing:#?}");
    assert!(firing.iter().all(|a| a["rule"] == "inference_slow"));
    let bodies = hook.bodies();
    let opened: Vec<_> = of_source(&bodies, "incident")
        .into_iter()
        .filter(|b| b["event"] == "opened")
        .collect();
    assert_eq!(opened.len(), 1, "{bodies:#?}");
    // A cohort incident does not hide its members: each alert was notified.
    assert_eq!(of_source(&bodies, "alert").len(), 4, "{bodies:#?}");

    // Recovery resolves the alerts and the incident, and says so.
    for i in 0..4 {
        sims.set_fault(i, Fault::None);
    }
    let resolved = eventually(Duration::from_secs(15), || async {
        of_source(&hook.bodies(), "incident")
            .into_iter()
            .find(|b| b["event"] == "resolved")
            .cloned()
    })
    .await;
    assert!(resolved.is_some(), "{:#?}", hook.bodies());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_alerts_acknowledgements_and_silences_and_does_not_notify_again() {
    a_restart_keeps_alerts_acknowledgements_and_silences_and_does_not_notify_again_on(Backend::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_alerts_acknowledgements_and_silences_and_does_not_notify_again_on_postgres() {
    a_restart_keeps_alerts_acknowledgements_and_silences_and_does_not_notify_again_on(Backend::Postgres)
        .await;
}

async fn a_restart_keeps_alerts_acknowledgements_and_silences_and_does_not_notify_again_on(backend: Backend) {
    let hook = WebhookReceiver::start().await.unwrap();
    let mut fleet = TestFleet::start_with(FleetOptions {
        backend,
        rules: Some(RULES.into()),
        notify: Some(notify_to_webhook(&hook.url)),
        ..Default::default()
    })
    .unwrap();
    let alice = fleet.token("alice", Role::Operator).unwrap();
    let sims = SimFleet::start(&fleet, build_sim("keep", 5, 5), SimProfile::default()).unwrap();
    wait_online(&fleet, &sims.ids, Duration::from_secs(20)).await;
    sims.set_fault(0, Fault::InferenceDegraded);
    sims.set_fault(1, Fault::InferenceDegraded);
    let firing = eventually(Duration::from_secs(15), || async {
        let a = alerts(&fleet, "firing").await;
        (a.len() == 2).then_some(a)
    })
    .await
    .expect("two alerts fire");
    let first = firing
        .iter()
        .find(|a| a["device"] == sims.ids[0].as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, acked) = fleet
        .send(
            Method::POST,
            &format!("/api/v1/alerts/{first}/ack"),
            &alice,
            Some(json!({"comment": "swapping the model"})),
        )
        .await
        .unwrap();
    assert_eq!(st, 200, "{acked}");
    assert_eq!(acked["ack"]["by"], "alice");
    // a silence for machine 2, which is fine for now
    let (st, silence) = fleet
        .send(
            Method::POST,
            "/api/v1/silences",
            &alice,
            Some(json!({
                "matchers": [{"label": "device", "value": sims.ids[2]}],
                "duration_s": 7200,
                "comment": "maintenance"
            })),
        )
        .await
        .unwrap();
    assert_eq!(st, 201, "{silence}");
    let sent_before = eventually(Duration::from_secs(10), || async {
        let n = of_source(&hook.bodies(), "alert").len();
        (n == 2).then_some(n)
    })
    .await
    .unwrap_or_else(|| panic!("two firing notifications: {:#?}", hook.bodies()));

    fleet.restart().unwrap();
    wait_online(&fleet, &sims.ids, Duration::from_secs(30)).await;
    // Alerts, acknowledgement and silence are back, before and after fresh samples.
    let firing = alerts(&fleet, "firing").await;
    assert_eq!(firing.len(), 2, "{firing:#?}");
    let acked = alerts(&fleet, "acknowledged").await;
    assert_eq!(acked.len(), 1);
    assert_eq!(acked[0]["id"], first.as_str());
    assert_eq!(acked[0]["ack"]["comment"], "swapping the model");
    let silences = fleet.get("/api/v1/silences").await.unwrap();
    assert_eq!(silences["silences"][0]["id"], silence["id"], "{silences:#}");
    // The silence still works: machine 2 fails quietly.
    sims.set_fault(2, Fault::InferenceDegraded);
    let three = eventually(Duration::from_secs(15), || async {
        let a = alerts(&fleet, "firing").await;
        (a.len() == 3).then_some(a)
    })
    .await
    .expect("the silenced machine's alert fires");
    let silenced = three
        .iter()
        .find(|a| a["device"] == sims.ids[2].as_str())
        .unwrap();
    assert_eq!(silenced["silenced_by"], silence["id"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let bodies = hook.bodies();
    assert_eq!(
        of_source(&bodies, "alert").len(),
        sent_before,
        "nothing notified again after the restart: {bodies:#?}"
    );
    // The acknowledged alert cannot be acknowledged twice, even after a restart.
    let (st, e) = fleet
        .send(Method::POST, &format!("/api/v1/alerts/{first}/ack"), &alice, None)
        .await
        .unwrap();
    assert_eq!((st, e["error"].as_str()), (409, Some("conflict")), "{e}");
}

/// `HH:MM` in UTC, `offset_min` from now (a maintenance window's bound).
fn utc_time(offset_min: i64) -> String {
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_mins(offset_min);
    at.to_zoned(jiff::tz::TimeZone::UTC).strftime("%H:%M").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_window_added_through_the_api_and_the_alert_it_muted_survive_a_restart() {
    a_maintenance_window_added_through_the_api_and_the_alert_it_muted_survive_a_restart_on(Backend::Sled)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_window_added_through_the_api_and_the_alert_it_muted_survive_a_restart_on_postgres() {
    a_maintenance_window_added_through_the_api_and_the_alert_it_muted_survive_a_restart_on(Backend::Postgres)
        .await;
}

async fn a_maintenance_window_added_through_the_api_and_the_alert_it_muted_survive_a_restart_on(
    backend: Backend,
) {
    let hook = WebhookReceiver::start().await.unwrap();
    let mut fleet = TestFleet::start_with(FleetOptions {
        backend,
        rules: Some(RULES.into()),
        notify: Some(notify_to_webhook(&hook.url)),
        ..Default::default()
    })
    .unwrap();
    let op = fleet.token("otto", Role::Operator).unwrap();
    let sims = SimFleet::start(&fleet, build_sim("mwin", 1, 1), SimProfile::default()).unwrap();
    wait_online(&fleet, &sims.ids, Duration::from_secs(20)).await;
    let id = sims.ids[0].clone();
    let site = fleet
        .devices()
        .await
        .unwrap()
        .into_iter()
        .find(|d| d["id"] == id.as_str())
        .and_then(|d| d["site"].as_str().map(str::to_string))
        .expect("the machine has a site");
    let body = json!({
        "name": "firmware", "sites": [site], "time_zone": "UTC",
        "from": utc_time(-60), "to": utc_time(60), "comment": "firmware update",
    });
    let (st, w) = fleet
        .send(Method::POST, "/api/v1/maintenance", &op, Some(body))
        .await
        .unwrap();
    assert_eq!((st, w["open_now"].as_bool()), (201, Some(true)), "{w:#}");
    sims.set_fault(0, Fault::InferenceDegraded);
    let alert_id = format!("inference_slow:{id}:1");
    let muted = eventually(Duration::from_secs(15), || async {
        alerts(&fleet, "firing")
            .await
            .into_iter()
            .find(|a| a["id"] == alert_id.as_str())
    })
    .await
    .expect("the alert fires");
    assert_eq!(muted["muted_by"], "firmware", "{muted:#}");

    fleet.restart().unwrap();
    wait_online(&fleet, &sims.ids, Duration::from_secs(30)).await;
    if backend == Backend::Postgres {
        // kept in PostgreSQL, nothing beside it in a sled store of the data directory
        let kept = fleet
            .pg()
            .psql("SELECT value -> 0 -> 'window' ->> 'name' FROM server_state WHERE key = 'maintenance'")
            .unwrap();
        assert_eq!(kept, "firmware");
        let muted_by = fleet
            .pg()
            .psql(&format!(
                "SELECT muted_by FROM fleet_alerts WHERE id = '{alert_id}'"
            ))
            .unwrap();
        assert_eq!(muted_by, "firmware");
        assert!(!fleet.dir.path().join("server/fleet.sled").exists());
    }
    // The window is back as added, and still mutes the alert: nothing was sent.
    let windows = fleet.get("/api/v1/maintenance").await.unwrap();
    let added: Vec<&Value> = windows["windows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["name"] == "firmware")
        .collect();
    assert_eq!(added.len(), 1, "{windows:#}");
    assert_eq!(added[0]["created_by"], "otto", "{windows:#}");
    assert_eq!(added[0]["open_now"], true, "{windows:#}");
    let firing = alerts(&fleet, "firing").await;
    let again = firing.iter().find(|a| a["id"] == alert_id.as_str());
    assert_eq!(
        again.map(|a| &a["muted_by"]),
        Some(&json!("firmware")),
        "{firing:#?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let firing_id = format!("{alert_id}/firing");
    assert!(
        !hook.bodies().iter().any(|b| b["id"] == firing_id.as_str()),
        "muted across the restart: {:#?}",
        hook.bodies()
    );

    // Removing the window sends the firing that is still going on, and the removal is kept.
    let (st, _) = fleet
        .send(Method::DELETE, "/api/v1/maintenance/firmware", &op, None)
        .await
        .unwrap();
    assert_eq!(st, 204);
    let sent = eventually(Duration::from_secs(15), || async {
        hook.bodies()
            .iter()
            .any(|b| b["id"] == firing_id.as_str())
            .then_some(())
    })
    .await;
    assert!(
        sent.is_some(),
        "the window went, the firing followed: {:#?}",
        hook.bodies()
    );
    fleet.restart().unwrap();
    let windows = fleet.get("/api/v1/maintenance").await.unwrap();
    assert!(
        !windows["windows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == "firmware"),
        "{windows:#}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sends = hook
        .bodies()
        .iter()
        .filter(|b| b["id"] == firing_id.as_str())
        .count();
    assert_eq!(
        sends,
        1,
        "sent once, not again after the second restart: {:#?}",
        hook.bodies()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_alert_is_emailed_through_a_local_smtp_server() {
    let smtp = SmtpReceiver::start().await.unwrap();
    let notify = format!(
        r#"
[[notify.routes]]
name = "pager"
min_severity = "critical"
channels = ["mail"]
[notify.channels.mail]
type = "email"
smtp = "{addr}"
security = "none"
from = "RVM Fleet <fleet@example.com>"
to = ["ops@example.com"]
max_retry_s = 10
"#,
        addr = smtp.addr
    );
    let fleet = TestFleet::start_with(FleetOptions {
        rules: Some(RULES.into()),
        notify: Some(notify),
        hold_offline_ms: Some(500),
        ..Default::default()
    })
    .unwrap();
    let sims = SimFleet::start(&fleet, build_sim("mail", 2, 2), SimProfile::default()).unwrap();
    wait_online(&fleet, &sims.ids, Duration::from_secs(20)).await;
    sims.stop_device(0);
    let msg = eventually(Duration::from_secs(15), || async {
        smtp.messages().into_iter().next()
    })
    .await
    .unwrap_or_else(|| panic!("no email arrived"));
    let id = &sims.ids[0];
    assert!(
        msg.contains("Subject: [RVM Fleet] FIRING [critical] device_offline on"),
        "{msg}"
    );
    assert!(msg.contains(&format!("device_offline:{id}:1")), "{msg}");
    assert!(msg.contains("ops@example.com"), "{msg}");
    let h = fleet.health().await.unwrap();
    assert_eq!(h["notify"]["delivered"]["mail"], 1, "{h:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_routes_check_roles_and_name_bad_fields_and_history_answers_queries() {
    alert_routes_check_roles_and_name_bad_fields_and_history_answers_queries_on(Backend::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_routes_check_roles_and_name_bad_fields_and_history_answers_queries_on_postgres() {
    alert_routes_check_roles_and_name_bad_fields_and_history_answers_queries_on(Backend::Postgres).await;
}

async fn alert_routes_check_roles_and_name_bad_fields_and_history_answers_queries_on(backend: Backend) {
    let fleet = TestFleet::start_with(FleetOptions {
        backend,
        rules: Some(RULES.into()),
        ..Default::default()
    })
    .unwrap();
    let viewer = fleet.token("vera", Role::Viewer).unwrap();
    let op = fleet.token("otto", Role::Operator).unwrap();
    let sims = SimFleet::start(&fleet, build_sim("hist", 1, 1), SimProfile::default()).unwrap();
    wait_online(&fleet, &sims.ids, Duration::from_secs(20)).await;
    let id = &sims.ids[0];

    let (st, e) = fleet
        .send(Method::POST, "/api/v1/alerts/x:y:1/ack", &viewer, None)
        .await
        .unwrap();
    assert_eq!((st, e["error"].as_str()), (403, Some("forbidden")), "{e}");
    let (st, e) = fleet
        .send(
            Method::POST,
            "/api/v1/alerts/inference_slow:nope:1/ack",
            &op,
            None,
        )
        .await
        .unwrap();
    assert_eq!(st, 404, "{e}");
    let (st, e) = fleet
        .send(
            Method::POST,
            "/api/v1/silences",
            &op,
            Some(json!({"matchers": [], "duration_s": 60})),
        )
        .await
        .unwrap();
    assert_eq!(st, 400);
    assert!(e["message"].as_str().unwrap().starts_with("matchers"), "{e}");
    let (st, e) = fleet
        .send(
            Method::POST,
            "/api/v1/silences",
            &op,
            Some(json!({"matchers": [{"label": "site", "value": "x"}], "duration": 60})),
        )
        .await
        .unwrap();
    assert_eq!(st, 400);
    assert!(e["message"].as_str().unwrap().contains("duration"), "{e}");
    let (st, e) = fleet
        .send(Method::GET, "/api/v1/alerts?state=loud", &viewer, None)
        .await
        .unwrap();
    assert_eq!(st, 400);
    assert!(e["message"].as_str().unwrap().contains("state"), "{e}");
    let (st, s) = fleet
        .send(
            Method::POST,
            "/api/v1/silences",
            &op,
            Some(json!({"matchers": [{"label": "site", "value": "x"}], "duration_s": 60})),
        )
        .await
        .unwrap();
    assert_eq!(st, 201, "{s}");
    let del = format!("/api/v1/silences/{}", s["id"].as_str().unwrap());
    assert_eq!(
        fleet.send(Method::DELETE, &del, &viewer, None).await.unwrap().0,
        403
    );
    assert_eq!(fleet.send(Method::DELETE, &del, &op, None).await.unwrap().0, 204);
    assert_eq!(fleet.send(Method::DELETE, &del, &op, None).await.unwrap().0, 404);
    // the audit log as the API shows it, from either store (sled: `audit.log`)
    let audit = eventually(Duration::from_secs(5), || async {
        let (_, a) = fleet.send(Method::GET, "/api/v1/audit", &op, None).await.ok()?;
        let a = serde_json::to_string(&a["entries"]).ok()?;
        a.contains("unsilence").then_some(a)
    })
    .await
    .expect("the silence's removal is audited");
    assert!(audit.contains("\"who\":\"otto\""), "{audit}");

    // History: raw points of the last minute; a bad parameter is named.
    let path = format!("/api/v1/devices/{id}/metrics?name=cpu.usage_pct&step=1s");
    let v = eventually(Duration::from_secs(10), || async {
        let v = fleet.get(&path).await.ok()?;
        (v["points"].as_array()?.len() >= 3).then_some(v)
    })
    .await
    .expect("raw points");
    assert_eq!(
        (v["name"].as_str(), v["resolution"].as_str()),
        (Some("cpu.usage_pct"), Some("raw"))
    );
    let p = &v["points"][0];
    let (min, max, avg) = (
        p[1].as_f64().unwrap(),
        p[2].as_f64().unwrap(),
        p[3].as_f64().unwrap(),
    );
    assert!(min <= avg && avg <= max && (0.0..=100.0).contains(&avg), "{p}");
    let (st, e) = fleet
        .send(
            Method::GET,
            &format!("/api/v1/devices/{id}/metrics?name=cpu.usage_pct&step=fast"),
            &viewer,
            None,
        )
        .await
        .unwrap();
    assert_eq!(st, 400);
    assert!(e["message"].as_str().unwrap().contains("step"), "{e}");
    // Rollups: the history job rolls the current minute up within its period (10 s).
    let rolled = format!("/api/v1/devices/{id}/metrics?name=cpu.usage_pct&step=1m");
    let v = eventually(Duration::from_secs(20), || async {
        let v = fleet.get(&rolled).await.ok()?;
        (!v["points"].as_array()?.is_empty()).then_some(v)
    })
    .await
    .expect("rollup points");
    assert_eq!(v["resolution"], "rollup");
    let h = fleet.health().await.unwrap();
    assert!(h["storage"]["disk_bytes"].as_u64().unwrap() > 0, "{h:#}");
    assert!(h["storage"]["rollups_written"].as_u64().unwrap() > 0, "{h:#}");
}
