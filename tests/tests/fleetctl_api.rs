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

const RULES: &str = r#"
[[rules]]
name = "inference_slow"
metric = "app.inference_ms"
op = ">"
threshold = 150
clear = 120
for_s = 1
severity = "warning"
summary = "inference slower than 150 ms per frame"
"#;

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
    assert_eq!(alert_ids(&v), [slow1.clone()]);
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
