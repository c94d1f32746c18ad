//! Camera faults are alerts on the right machine (issue 23), end to end: an `rvm-sim
//! simulate` process replays `scenarios/camera-faults.toml` on five machines against a real
//! server (embedded broker, mTLS). Each machine's camera figures are judged by the agent's own
//! camera health; the server raises the matching health check alert on that machine, and no
//! other camera alert anywhere: a frozen picture on cam0001, a covered lens on cam0002, stale
//! frames on cam0003, an inference fps drop on cam0004, and nothing on cam0005.

use std::time::Duration;

use rvm_fleet_tests::{Child, FleetOptions, TestFleet, eventually};
use serde_json::Value;

/// Any rules file turns the server's alerting on; health check alerts are on by default
/// (`[health_checks]`, every kind, no wait).
const RULES: &str = r#"
[[rules]]
name = "device_offline"
metric = "presence.offline"
op = ">"
threshold = 0
severity = "critical"
"#;

/// The slowest fault (frozen: 60 s of the same frame, from 5 s in) plus reports and the
/// server's evaluation, with room for a busy machine.
const WITHIN: Duration = Duration::from_secs(180);

/// (machine, rule, severity) each fault must raise.
const EXPECTED: [(&str, &str, &str); 4] = [
    ("cam0001", "check.camera.chamber.frozen", "critical"),
    ("cam0002", "check.camera.chamber.covered", "critical"),
    ("cam0003", "check.camera.chamber.frames", "critical"),
    ("cam0004", "check.camera.chamber.fps", "warning"),
];

async fn alerts(fleet: &TestFleet) -> Vec<Value> {
    let v = fleet.get("/api/v1/alerts?state=all").await.unwrap_or_default();
    v["alerts"].as_array().cloned().unwrap_or_default()
}

fn is_camera_alert(a: &Value) -> bool {
    a["rule"].as_str().is_some_and(|r| r.starts_with("check.camera."))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_camera_fault_of_a_scenario_raises_its_own_alert_on_its_own_machine_and_nowhere_else() {
    let fleet = TestFleet::start_with(FleetOptions {
        rules: Some(RULES.into()),
        ..Default::default()
    })
    .unwrap();
    let log = fleet.dir.path().join("simulate.log");
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/camera-faults.toml");
    let broker = format!("127.0.0.1:{}", fleet.broker_port());
    let certs = fleet.certs.root().display().to_string();
    let _sim = Child::spawn(
        "rvm-sim",
        &[
            "simulate",
            "--devices",
            "5",
            "--first",
            "1",
            "--prefix",
            "cam",
            "--sites",
            "1",
            "--broker",
            &broker,
            "--certs",
            &certs,
            "--interval",
            "1000",
            "--scenario",
            scenario,
        ],
        &log,
    )
    .unwrap();

    let fired = eventually(WITHIN, || async {
        let all = alerts(&fleet).await;
        let mut got = Vec::new();
        for (device, rule, _) in EXPECTED {
            got.push(
                all.iter()
                    .find(|a| a["device"] == device && a["rule"] == rule && a["state"] == "firing")?
                    .clone(),
            );
        }
        Some(got)
    })
    .await;
    let Some(fired) = fired else {
        panic!(
            "not every camera fault raised its alert: {:#}\nsimulator log:\n{}",
            serde_json::Value::Array(alerts(&fleet).await.into_iter().filter(is_camera_alert).collect()),
            rvm_fleet_tests::read(&log)
        );
    };
    for ((device, rule, severity), a) in EXPECTED.iter().zip(&fired) {
        assert_eq!(a["severity"], *severity, "{a:#}");
        let check = rule.trim_start_matches("check.").replace('.', ":");
        assert_eq!(a["labels"]["check"], check.as_str(), "{a:#}");
        assert_eq!(a["labels"]["check_kind"], "camera", "{a:#}");
        assert!(
            a["summary"]
                .as_str()
                .is_some_and(|s| s.starts_with("camera chamber: ")),
            "{device}: {a:#}"
        );
    }
    assert!(
        fired[0]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("the same picture")),
        "{:#}",
        fired[0]
    );
    assert!(
        fired[1]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("lens covered")),
        "{:#}",
        fired[1]
    );

    // a few more reports: still no camera alert but the four, on any machine
    tokio::time::sleep(Duration::from_secs(10)).await;
    let stray: Vec<Value> = alerts(&fleet)
        .await
        .into_iter()
        .filter(is_camera_alert)
        .filter(|a| {
            !EXPECTED
                .iter()
                .any(|(device, rule, _)| a["device"] == *device && a["rule"] == *rule)
        })
        .collect();
    assert!(
        stray.is_empty(),
        "camera alerts on the wrong machine or for the wrong fault: {stray:#?}"
    );
}
