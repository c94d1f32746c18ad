//! fleetctl against a running server's API, each subcommand end to end: a real `fleetctl`
//! process per call, an in-process server ([`TestFleet`]), simulated machines over mTLS.
//! Listings are read back from `--output json` (what scripts use) and checked in
//! `--output table` for their columns; errors must name what was wrong and exit non-zero.

use std::process::Command;
use std::time::Duration;

use fleet_server::auth::Role;
use rvm_fleet_tests::{FleetOptions, SimFleet, TestFleet, bin_path, eventually};
use rvm_sim::simulate::{SimConfig, SimProfile};
use rvm_sim::source::Fault;
use serde_json::Value;

const RULES: &str = rvm_fleet_tests::rules::INFERENCE_SLOW;

/// Runs fleetctl against `fleet` as `token`; (exit code, stdout, stderr).
fn fleetctl(fleet: &TestFleet, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin_path("fleetctl"))
        .args(args)
        .env("FLEET_URL", fleet.url(""))
        .env("FLEET_TOKEN", token)
        .output()
        .expect("fleetctl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs fleetctl, expects success, returns stdout.
fn ok(fleet: &TestFleet, token: &str, args: &[&str]) -> String {
    let (code, out, err) = fleetctl(fleet, token, args);
    assert_eq!(code, 0, "fleetctl {args:?}: {err}{out}");
    out
}

/// Runs a listing with `--output json` and parses it.
fn json(fleet: &TestFleet, token: &str, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["--output", "json"]);
    let out = ok(fleet, token, &a);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("fleetctl {args:?}: {e}: {out}"))
}

fn build_sim(prefix: &str, devices: usize) -> SimConfig {
    SimConfig {
        devices,
        sites: 2,
        prefix: prefix.into(),
        host: String::new(),
        port: 0,
        certs: Default::default(),
        interval: Duration::from_millis(500),
        first: 0,
    }
}

fn alert_ids(v: &Value) -> Vec<String> {
    v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleetctl_alerts_filters_and_resolve_by_hand() {
    let fleet = TestFleet::start_with(FleetOptions {
        rules: Some(RULES.into()),
        ..Default::default()
    })
    .unwrap();
    let viewer = fleet.token("vera", Role::Viewer).unwrap();
    let otto = fleet.token("otto", Role::Operator).unwrap();
    // machine 0 on site1, machine 1 on site2
    let sims = SimFleet::start(&fleet, build_sim("ctla", 2), SimProfile::default()).unwrap();
    sims.set_fault(0, Fault::InferenceDegraded);
    sims.set_fault(1, Fault::InferenceDegraded);
    let slow0 = format!("inference_slow:{}:1", sims.ids[0]);
    let slow1 = format!("inference_slow:{}:1", sims.ids[1]);
    eventually(Duration::from_secs(20), || async {
        let v = fleet.get("/api/v1/alerts?state=firing").await.ok()?;
        (v["alerts"].as_array()?.len() == 2).then_some(())
    })
    .await
    .expect("both machines' alerts fire");

    let v = json(
        &fleet,
        &viewer,
        &["alerts", "--site", "site2", "--severity", "warning"],
    );
    assert_eq!(alert_ids(&v), [slow1]);
    let v = json(&fleet, &viewer, &["alerts", "--severity", "critical"]);
    assert!(alert_ids(&v).is_empty());
    let v = json(
        &fleet,
        &viewer,
        &[
            "alerts",
            "--from",
            "2020-01-01T00:00:00Z",
            "--rule",
            "inference_slow",
        ],
    );
    assert_eq!(v["state"], "all");
    assert_eq!(alert_ids(&v).len(), 2);
    let table = ok(&fleet, &viewer, &["alerts", "--device", &sims.ids[0]]);
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("ID"), "{table}");
    let row = lines.next().unwrap();
    assert!(
        row.starts_with(&slow0) && row.contains("firing") && row.contains("site1"),
        "{table}"
    );
    let (code, _, err) = fleetctl(&fleet, &viewer, &["alerts", "--from", "yesterday"]);
    assert_eq!(code, 1);
    assert!(err.contains("from") && err.contains("400"), "{err}");

    // resolve: a viewer is refused, an operator's resolve shows in the list
    let (code, _, err) = fleetctl(&fleet, &viewer, &["resolve", &slow0, "--comment", "x"]);
    assert_eq!(code, 1);
    assert!(err.contains("403"), "{err}");
    let out = ok(
        &fleet,
        &otto,
        &["resolve", &slow0, "--comment", "new model deployed"],
    );
    assert_eq!(
        out.trim(),
        format!("resolved {slow0} by otto: new model deployed")
    );
    let table = ok(&fleet, &viewer, &["alerts", "--state", "resolved"]);
    assert!(
        table.contains(&slow0) && table.contains("resolved by otto"),
        "{table}"
    );
}

#[test]
fn fleetctl_help_lists_every_subcommand() {
    let out = Command::new(bin_path("fleetctl")).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    let listed: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for want in [
        "devices",
        "device",
        "history",
        "alerts",
        "ack",
        "resolve",
        "silence",
        "incidents",
        "cmd",
        "rollout",
        "audit",
        "export",
        "report",
        "tokens",
        "whoami",
        "token",
        "maintenance",
        "notify",
        "certs",
        "sub",
    ] {
        assert!(
            listed.contains(&want),
            "{want} is not in fleetctl --help: {listed:?}"
        );
    }
}

const OUTAGE_RULES: &str = r#"
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
for_s = 1
severity = "warning"
summary = "inference slower than 150 ms per frame"

[correlate.site_outage]
min_devices = 2
window_s = 10
"#;

/// Every other subcommand against one server: devices and one device, history, ack, silence,
/// commands and a rollout, tokens and whoami, the audit log, an incident, the report and the
/// export.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleetctl_covers_devices_history_commands_tokens_audit_incidents_report_and_export() {
    let fleet = TestFleet::start_with(FleetOptions {
        rules: Some(OUTAGE_RULES.into()),
        ..Default::default()
    })
    .unwrap();
    let started = common::time::now_ms();
    let viewer = fleet.token("vera", Role::Viewer).unwrap();
    let otto = fleet.token("otto", Role::Operator).unwrap();
    let admin = fleet.admin.clone();
    // machines 0 and 2 on site1, 1 and 3 on site2
    let sims = SimFleet::start(&fleet, build_sim("ctlb", 4), SimProfile::default()).unwrap();
    let id0 = sims.ids[0].clone();
    eventually(Duration::from_secs(20), || async {
        (fleet.devices().await.ok()?.len() == 4).then_some(())
    })
    .await
    .expect("four machines");

    // whoami, devices, one device
    assert_eq!(
        json(&fleet, &otto, &["whoami"]),
        serde_json::json!({"name": "otto", "role": "operator", "scope": null})
    );
    assert_eq!(
        ok(&fleet, &otto, &["whoami"]).lines().nth(1).unwrap(),
        "otto  operator  all"
    );
    let v = json(&fleet, &viewer, &["devices"]);
    let mut listed: Vec<&str> = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    listed.sort();
    assert_eq!(listed, sims.ids.iter().map(String::as_str).collect::<Vec<_>>());
    let table = ok(&fleet, &viewer, &["devices"]);
    assert!(
        table.starts_with("DEVICE") && table.lines().count() == 5,
        "{table}"
    );
    let d = json(&fleet, &viewer, &["device", &id0]);
    assert_eq!(
        (d["id"].as_str(), d["site"].as_str()),
        (Some(id0.as_str()), Some("site1"))
    );
    let table = ok(&fleet, &viewer, &["device", &id0]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("site") && l.ends_with("site1")),
        "{table}"
    );
    let (code, _, err) = fleetctl(&fleet, &viewer, &["device", "nosuch"]);
    assert_eq!(code, 1);
    assert!(err.contains("404"), "{err}");

    // history: raw points of the last minute, with --from in RFC 3339
    let from = jiff::Timestamp::from_millisecond(started - 60_000)
        .unwrap()
        .to_string();
    let hist = [
        "history",
        id0.as_str(),
        "--metric",
        "cpu.usage_pct",
        "--step",
        "1s",
        "--from",
        from.as_str(),
    ];
    let points = eventually(Duration::from_secs(15), || async {
        let v = json(&fleet, &viewer, &hist);
        (v["points"].as_array()?.len() >= 3).then_some(v)
    })
    .await
    .expect("history points");
    assert_eq!(points["name"], "cpu.usage_pct");
    let table = ok(&fleet, &viewer, &hist);
    assert!(table.starts_with("TIME") && table.lines().count() >= 4, "{table}");
    let (code, _, err) = fleetctl(
        &fleet,
        &viewer,
        &["history", &id0, "--metric", "cpu.usage_pct", "--from", "noon"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("--from"), "{err}");

    // ack and silence
    sims.set_fault(0, Fault::InferenceDegraded);
    let alert = format!("inference_slow:{id0}:1");
    eventually(Duration::from_secs(20), || async {
        let v = fleet.get("/api/v1/alerts?state=firing").await.ok()?;
        v["alerts"]
            .as_array()?
            .iter()
            .any(|a| a["id"] == alert.as_str())
            .then_some(())
    })
    .await
    .expect("the alert fires");
    let out = ok(&fleet, &otto, &["ack", &alert, "--comment", "looking"]);
    assert_eq!(out.trim(), format!("acknowledged {alert} by otto"));
    let out = ok(
        &fleet,
        &otto,
        &[
            "silence",
            "--match",
            "site=site2",
            "--for",
            "1h",
            "--comment",
            "works",
        ],
    );
    let silence = out.split_whitespace().nth(1).unwrap().to_string();
    assert!(silence.starts_with("s-"), "{out}");
    assert!(ok(&fleet, &viewer, &["silence", "--list"]).contains(&silence));
    let v = json(&fleet, &viewer, &["silence", "--list"]);
    assert_eq!(v["silences"][0]["id"], silence.as_str(), "{v}");
    assert_eq!(
        ok(&fleet, &otto, &["silence", "--remove", &silence]).trim(),
        format!("removed silence {silence}")
    );

    // a command and a rollout
    let out = ok(
        &fleet,
        &otto,
        &["cmd", "send", &id0, "drop_caches", "--reason", "fleetctl test"],
    );
    let cmd_id = out.split_whitespace().next().unwrap().to_string();
    assert!(out.contains("succeeded"), "{out}");
    assert!(ok(&fleet, &viewer, &["cmd", "get", &cmd_id]).contains("succeeded"));
    assert!(ok(&fleet, &viewer, &["cmd", "list", &id0]).contains(&cmd_id));
    let v = json(&fleet, &viewer, &["cmd", "list", &id0]);
    assert!(
        v["commands"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == cmd_id.as_str()),
        "{v}"
    );
    let out = ok(
        &fleet,
        &otto,
        &[
            "cmd",
            "rollout",
            "clean_temp",
            "--to",
            "site=site2",
            "--per-minute",
            "60",
            "--reason",
            "fleetctl test",
        ],
    );
    let rollout = out.split_whitespace().nth(1).unwrap().to_string();
    let done = eventually(Duration::from_secs(20), || async {
        let v = json(&fleet, &viewer, &["rollout", &rollout]);
        (v["state"] == "completed").then_some(v)
    })
    .await
    .expect("the rollout completes");
    assert_eq!(done["progress"]["succeeded"], 2, "both site2 machines: {done}");
    let table = ok(&fleet, &viewer, &["rollout", &rollout]);
    assert!(
        table
            .lines()
            .nth(1)
            .unwrap()
            .starts_with(&format!("{rollout}  completed")),
        "{table}"
    );

    // the notification listings (no channel, no window configured: empty lists, as JSON too)
    assert!(json(&fleet, &viewer, &["notify", "channels"])["channels"].is_array());
    assert!(json(&fleet, &viewer, &["notify", "outbox"])["entries"].is_array());
    assert!(json(&fleet, &viewer, &["maintenance", "list"])["windows"].is_array());

    // tokens through the API: admin only; a new token works at once
    let (code, _, err) = fleetctl(&fleet, &otto, &["tokens", "list"]);
    assert_eq!(code, 1);
    assert!(err.contains("403"), "{err}");
    let secret = ok(
        &fleet,
        &admin,
        &["tokens", "create", "ci-bot", "--role", "viewer"],
    )
    .trim()
    .to_string();
    assert_eq!(json(&fleet, &secret, &["whoami"])["name"], "ci-bot");
    let v = json(&fleet, &admin, &["tokens", "list"]);
    assert!(
        v["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "ci-bot" && t["role"] == "viewer")
    );
    assert!(
        !serde_json::to_string(&v).unwrap().contains(&secret),
        "no secret in the list"
    );
    // a token limited to one store: made, listed and shown by whoami with its scope
    let store_secret = ok(
        &fleet,
        &admin,
        &[
            "tokens",
            "create",
            "site1-mgr",
            "--role",
            "operator",
            "--scope",
            "site=site1",
        ],
    )
    .trim()
    .to_string();
    assert!(
        ok(&fleet, &store_secret, &["whoami"])
            .lines()
            .nth(1)
            .unwrap()
            .ends_with("site=site1"),
        "whoami shows the scope"
    );
    let table = ok(&fleet, &admin, &["tokens", "list"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("site1-mgr") && l.contains("site=site1")),
        "{table}"
    );
    let (code, _, err) = fleetctl(
        &fleet,
        &admin,
        &["tokens", "create", "x", "--role", "viewer", "--scope", "shop=1"],
    );
    assert!(code != 0 && err.contains("scope"), "{err}");

    // the audit log names each action above
    let audit = json(&fleet, &otto, &["audit", "--limit", "50"]);
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for want in ["ack", "silence", "unsilence"] {
        assert!(actions.contains(&want), "{want} in {actions:?}");
    }
    let table = ok(&fleet, &otto, &["audit"]);
    assert!(table.starts_with("TIME") && table.contains("looking"), "{table}");

    // an incident: site1's two machines go offline together
    sims.stop_device(0);
    sims.stop_device(2);
    let inc = eventually(Duration::from_secs(20), || async {
        let v = json(&fleet, &viewer, &["incidents"]);
        v["open"].as_array()?.first().cloned()
    })
    .await
    .expect("a site outage opens");
    assert_eq!(
        (inc["kind"].as_str(), inc["site"].as_str()),
        (Some("site_outage"), Some("site1"))
    );
    let cause = inc["probable_cause"].as_str().unwrap();
    assert!(cause.contains("2 of 2 machines offline now"), "{cause}");
    let table = ok(&fleet, &viewer, &["incidents"]);
    assert!(table.lines().nth(1).unwrap().contains("site_outage"), "{table}");

    // the report and the export through the API
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.html");
    ok(
        &fleet,
        &viewer,
        &["report", "--from", &from, "--out", report.to_str().unwrap()],
    );
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(
        html.contains("<html") && html.contains(&id0),
        "{}",
        &html[..html.len().min(300)]
    );
    let csv = ok(
        &fleet,
        &viewer,
        &[
            "export",
            "--format",
            "csv",
            "--devices",
            &id0,
            "--from",
            &started.to_string(),
            "--metrics",
            "cpu.usage_pct",
        ],
    );
    let mut lines = csv.lines();
    assert!(lines.next().unwrap().contains("cpu.usage_pct"), "{csv}");
    assert!(lines.filter(|l| l.contains(id0.as_str())).count() >= 3, "{csv}");
}
