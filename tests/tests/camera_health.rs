//! Camera faults are alerts on the right machine (issue 23), end to end:
//!
//! - an `rvm-sim simulate` process replays `scenarios/camera-faults.toml` on five machines
//!   against a real server (embedded broker, mTLS). Each machine's camera figures are judged by
//!   the agent's own camera health; the server raises the matching health check alert on that
//!   machine, and no other camera alert anywhere: a frozen picture on cam0001, a covered lens
//!   on cam0002, stale frames on cam0003, an inference fps drop on cam0004, nothing on cam0005;
//! - a real agent scrapes a vision service (this test) whose camera is frozen: the alert
//!   fires, and the agent's recovery ladder restarts the vision unit, resets the camera
//!   (through a recording executor) and escalates, which the server pages as
//!   `recovery_failed`.

use std::sync::Arc;
use std::time::Duration;

use common::command::Action;
use rvm_agent::agent::Overrides;
use rvm_agent::recovery::executor::RecordingExecutor;
use rvm_fleet_tests::{AgentExtra, Agents, FleetOptions, TestFleet, eventually, firing_each};
use serde_json::Value;

/// Any rules file turns the server's alerting on; health check alerts are on by default
/// (`[health_checks]`, every kind, no wait). `recovery_failed` pages an escalation.
const RULES: &str = r#"
[[rules]]
name = "device_offline"
metric = "presence.offline"
op = ">"
threshold = 0
severity = "critical"

[[rules]]
name = "recovery_failed"
metric = "agent.recovery_failed"
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
    let _sim = fleet.simulate_scenario(5, "cam", scenario, &log).unwrap();

    let fired = eventually(WITHIN, || async { firing_each(&alerts(&fleet).await, &EXPECTED) }).await;
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

/// A vision service's Prometheus endpoint whose camera `front` is frozen: fresh frames (their
/// age varies), the same hash every time.
async fn frozen_vision_service() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", l.local_addr().unwrap());
    tokio::spawn(async move {
        let mut n = 0u32;
        loop {
            let Ok((mut s, _)) = l.accept().await else { return };
            n += 1;
            let age = 0.01 + f64::from(n % 5) * 0.01;
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let body = format!(
                    "rvm_camera_frame_age_seconds{{camera=\"front\"}} {age}\n\
                     rvm_camera_frame_hash{{camera=\"front\"}} 2868197731\n\
                     rvm_camera_luma_mean{{camera=\"front\"}} 112.5\n\
                     rvm_vision_inference_fps{{camera=\"front\"}} 29.7\n"
                );
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_agent_with_a_frozen_camera_alerts_restarts_the_vision_unit_resets_the_camera_and_escalates_once()
 {
    let fleet = TestFleet::start_with(FleetOptions {
        rules: Some(RULES.into()),
        ..Default::default()
    })
    .unwrap();
    let url = frozen_vision_service().await;
    let extra = AgentExtra {
        tail: format!(
            "[app]\nscrape_url = \"{url}\"\nscrape_interval_ms = 500\nscrape_timeout_ms = 400\n\
             [health.vision]\nfrozen_after_s = 2\n\
             [recovery]\nretry_after_s = 10\nextra_units = [\"vision.service\"]\n\
             vision_unit = \"vision.service\"\ncamera_reset_command = [\"/usr/bin/usbreset\", \"{{camera}}\"]\n"
        ),
        ..Default::default()
    };
    let cfg = fleet.agent_config_extra("camagent1", 500, &extra).unwrap();
    let rec = Arc::new(RecordingExecutor::new());
    let _agents = Agents::start_with(vec![(
        cfg,
        Overrides {
            executor: Some(rec.clone()),
            ..Default::default()
        },
    )])
    .unwrap();

    let alert = |id: &'static str| {
        let fleet = &fleet;
        async move {
            alerts(fleet)
                .await
                .into_iter()
                .find(|a| a["id"] == id && a["state"] == "firing")
        }
    };
    let frozen = eventually(Duration::from_secs(60), || {
        alert("check.camera.front.frozen:camagent1:1")
    })
    .await
    .unwrap_or_else(|| panic!("no frozen alert: {:#?}", rec.calls()));
    assert_eq!(frozen["severity"], "critical");
    assert_eq!(frozen["labels"]["check"], "camera:front:frozen");

    // restart at once, the reset 10 s later, the escalation 10 s after that
    let escalated = eventually(Duration::from_secs(60), || alert("recovery_failed:camagent1:1"))
        .await
        .unwrap_or_else(|| panic!("no escalation: {:#?}", rec.calls()));
    assert_eq!(escalated["severity"], "critical");
    let reset = Action::ResetCamera {
        camera: "front".into(),
    };
    let restart = Action::RestartUnit {
        unit: "vision.service".into(),
    };
    assert_eq!(rec.calls(), vec![restart, reset]);
    let events = eventually(Duration::from_secs(20), || async {
        let d = fleet.device("camagent1").await.ok()??;
        let msgs: Vec<String> = d["recent_events"]
            .as_array()?
            .iter()
            .filter_map(|e| e["message"].as_str().map(String::from))
            .collect();
        msgs.iter()
            .any(|m| m.starts_with("camera:front:frozen is still critical after its recovery ladder"))
            .then_some(msgs)
    })
    .await
    .expect("the escalation event reached the server");
    assert!(
        events
            .iter()
            .any(|m| m.starts_with("reset_camera(front) succeeded")),
        "{events:#?}"
    );

    // the ladder does not loop: nothing more runs while the camera stays frozen
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(rec.calls().len(), 2, "{:#?}", rec.calls());
}
