//! The server's supervisor end to end: each of its actors, tasks and threads made to panic or
//! stall through the test-only fault hook (`fleet-server` feature `faults`, enabled for this
//! crate as a dev-dependency) while simulated machines and a real agent send, and the server
//! keeps ingesting, alerting, notifying, commanding and answering, with every restart and its
//! reason in `GET /api/v1/health` and `/metrics`; a process whose child panics at every start
//! exits with code 70 for systemd, whose unit is checked here too.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fleet_server::auth::Role;
use fleet_server::supervise::faults::{FAULTS_ENV, Fault};
use fleet_server::supervise::restart::RestartPolicy;
use reqwest::Method;
use rvm_fleet_tests::harness::ServerProc;
use rvm_fleet_tests::{Agents, FleetOptions, SimFleet, TestFleet, WebhookReceiver, eventually};
use rvm_sim::simulate::{SimConfig, SimProfile};
use rvm_sim::source::Fault as SimFault;
use serde_json::{Value, json};

/// Every child of the server, in start order.
const CHILDREN: [&str; 10] = [
    "fleet",
    "writer",
    "notify",
    "notify-worker",
    "alerts-persist",
    "alerts",
    "history",
    "commands",
    "republish",
    "ingest",
];

const RULES: &str = rvm_fleet_tests::rules::INFERENCE_SLOW;

/// Short timings, so that each restart takes about a second.
fn build_policy(heartbeat_s: u64) -> RestartPolicy {
    RestartPolicy {
        max_restarts: 5,
        window_s: 60,
        backoff_initial_ms: 50,
        backoff_max_ms: 500,
        heartbeat_s,
    }
}

fn build_sim(prefix: &str, devices: usize) -> SimConfig {
    SimConfig {
        devices,
        sites: 1,
        prefix: prefix.into(),
        // host, port and certs are set by SimFleet::start
        host: String::new(),
        port: 0,
        certs: Default::default(),
        interval: Duration::from_millis(300),
        first: 0,
    }
}

/// The supervisor's entry for `name` in `GET /api/v1/health`.
async fn child(fleet: &TestFleet, name: &str) -> Value {
    let h = fleet.health().await.unwrap();
    h["supervisor"]["children"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no child {name} in {h:#}"))
}

async fn accepted(fleet: &TestFleet) -> u64 {
    fleet.health().await.unwrap()["ingest"]["accepted"]
        .as_u64()
        .unwrap()
}

/// Waits until `name` was restarted `restarts` times and runs again; its entry.
async fn restarted(fleet: &TestFleet, name: &str, restarts: u64, within: Duration) -> Value {
    let c = eventually(within, || async {
        let c = child(fleet, name).await;
        (c["restarts"] == restarts && c["alive"] == true).then_some(c)
    })
    .await;
    match c {
        Some(c) => c,
        None => panic!(
            "{name} not restarted: {:#}",
            fleet.health().await.unwrap()["supervisor"]
        ),
    }
}

/// Records keep being stored: `more` beyond what was stored when called.
async fn keeps_ingesting(fleet: &TestFleet, more: u64, after: &str) {
    let before = accepted(fleet).await;
    let grew = eventually(Duration::from_secs(15), || async {
        (accepted(fleet).await >= before + more).then_some(())
    })
    .await;
    assert!(grew.is_some(), "ingest stalled after {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_actor_restarts_after_a_panic_and_the_server_keeps_ingesting_alerting_and_answering() {
    let hook = WebhookReceiver::start().await.unwrap();
    let fleet = TestFleet::start_with(FleetOptions {
        rules: Some(RULES.into()),
        notify: Some(format!(
            "[notify.default]\nchannels = [\"hook\"]\nper_minute = 100\n[notify.channels.hook]\ntype = \"webhook\"\nurl = \"{}\"\nmax_retry_s = 10\n",
            hook.url
        )),
        supervisor: Some(build_policy(10)),
        ..Default::default()
    })
    .unwrap();
    let h = fleet.health().await.unwrap();
    assert_eq!(h["supervisor"]["fault_injection"], true, "{h:#}");
    let names: Vec<&str> = h["supervisor"]["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, CHILDREN, "every child is listed, in start order");

    let sims = SimFleet::start(&fleet, build_sim("sup", 3), SimProfile::default()).unwrap();
    let online = eventually(Duration::from_secs(20), || async {
        let ds = fleet.devices().await.ok()?;
        (ds.len() == 3 && ds.iter().all(|d| d["status"] == "online")).then_some(())
    })
    .await;
    assert!(online.is_some(), "{:#?}", fleet.devices().await);
    // state the alerts actor must find again after its restart
    let op = fleet.token("olga", Role::Operator).unwrap();
    let (status, silence) = fleet
        .send(
            Method::POST,
            "/api/v1/silences",
            &op,
            Some(json!({"matchers": [{"label": "device", "value": "nobody"}], "duration_s": 3600, "comment": "kept"})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{silence}");
    let republished_before = fleet.server.republish.as_ref().unwrap().snapshot().published;

    for name in CHILDREN {
        fleet.server.faults().arm(name, Fault::Panic);
        let c = restarted(&fleet, name, 1, Duration::from_secs(15)).await;
        assert_eq!(c["last_exit"]["kind"], "panic", "{c}");
        let message = c["last_exit"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("fault injected: {name} panics")),
            "{name}: {message}"
        );
        keeps_ingesting(&fleet, 10, name).await;
        // the API answers, with the fleet's state (reloaded, for the fleet actor's restart)
        let ds = fleet.devices().await.unwrap();
        assert_eq!(ds.len(), 3, "after {name}: {ds:#?}");
        for d in &ds {
            let detail = fleet.device(d["id"].as_str().unwrap()).await.unwrap().unwrap();
            assert!(
                detail["delivery"]["received"].as_u64().unwrap() > 0 && detail["birth"].is_object(),
                "after {name}: {detail:#}"
            );
        }
    }
    // nothing else restarted along the way
    for name in CHILDREN {
        assert_eq!(child(&fleet, name).await["restarts"], 1, "{name}");
    }

    // alerting: an alert fires on new data and its notification goes out
    let silences = fleet.get("/api/v1/silences").await.unwrap();
    assert_eq!(
        silences["silences"][0]["id"], silence["id"],
        "the restarted alerts actor imported its state: {silences:#}"
    );
    sims.set_fault(0, SimFault::InferenceDegraded);
    let fired = eventually(Duration::from_secs(20), || async {
        hook.bodies()
            .into_iter()
            .find(|b| b["event"] == "firing" && b["labels"]["device"] == sims.ids[0].as_str())
    })
    .await;
    assert!(
        fired.is_some(),
        "no firing notification: {:#?}\nalerts: {:#}",
        hook.bodies(),
        fleet.get("/api/v1/alerts?state=all").await.unwrap()
    );
    // commands reach a machine and come back
    let (status, cmd) = fleet
        .send(
            Method::POST,
            &format!("/api/v1/devices/{}/commands", sims.ids[1]),
            &op,
            Some(json!({"action": "drop_caches", "ttl_s": 60, "reason": "after the restarts"})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{cmd}");
    let id = cmd["id"].as_str().unwrap().to_string();
    let done = eventually(Duration::from_secs(15), || async {
        let v = fleet.get(&format!("/api/v1/commands/{id}")).await.ok()?;
        (v["state"] == "succeeded").then_some(v)
    })
    .await;
    assert!(
        done.is_some(),
        "{:#}",
        fleet.get(&format!("/api/v1/commands/{id}")).await.unwrap()
    );
    // the republisher publishes again
    let republished = eventually(Duration::from_secs(10), || async {
        let p = fleet.server.republish.as_ref()?.snapshot().published;
        (p > republished_before + 10).then_some(p)
    })
    .await;
    assert!(republished.is_some(), "the republisher is silent");
    // /metrics shows every restart and why
    let metrics = fleet
        .http
        .get(fleet.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in CHILDREN {
        for line in [
            format!("rvm_fleet_server_actor_restarts_total{{actor=\"{name}\"}} 1\n"),
            format!("rvm_fleet_server_actor_alive{{actor=\"{name}\"}} 1\n"),
        ] {
            assert!(metrics.contains(&line), "{line} missing");
        }
        assert!(
            metrics.contains(&format!(
                "rvm_fleet_server_actor_last_exit_timestamp_seconds{{actor=\"{name}\",reason=\"panic\"}} "
            )),
            "{name}'s last exit missing"
        );
    }
    assert_eq!(fleet.server.supervisor().exit_code(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_writer_fleet_or_alerts_actor_is_restarted_after_a_heartbeat_and_no_record_is_lost() {
    let fleet = TestFleet::start_with(FleetOptions {
        supervisor: Some(build_policy(2)),
        ..Default::default()
    })
    .unwrap();
    let _agents = Agents::start(vec![fleet.agent_config("stall1", 100).unwrap()]).unwrap();
    let known = eventually(Duration::from_secs(10), || async {
        fleet.device("stall1").await.ok().flatten()
    })
    .await;
    assert!(known.is_some(), "the agent reports");

    for name in ["writer", "fleet", "alerts"] {
        // blocked past the heartbeat: the supervisor gives up on it and starts another
        fleet
            .server
            .faults()
            .arm(name, Fault::Stall(Duration::from_millis(3_500)));
        let c = restarted(&fleet, name, 1, Duration::from_secs(15)).await;
        assert_eq!(c["last_exit"]["kind"], "stall", "{c}");
        assert!(
            c["last_exit"]["message"]
                .as_str()
                .unwrap()
                .starts_with("no progress for "),
            "{c}"
        );
        keeps_ingesting(&fleet, 20, name).await;
    }
    // every record the agent made arrived: what the stalled writer held was never
    // acknowledged, and the agent sent it again
    let whole = eventually(Duration::from_secs(20), || async {
        let d = fleet.device("stall1").await.ok().flatten()?;
        let delivery = d["delivery"].clone();
        (delivery["missing"] == 0 && delivery["received"].as_u64()? > 50).then_some(delivery)
    })
    .await;
    assert!(
        whole.is_some(),
        "{:#}",
        fleet.device("stall1").await.unwrap().unwrap()["delivery"]
    );
    for name in CHILDREN {
        let c = child(&fleet, name).await;
        let want = u64::from(["writer", "fleet", "alerts"].contains(&name));
        assert_eq!(c["restarts"], want, "{name}: {c}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_restart_intensity_the_server_process_exits_with_code_70() {
    let dir = tempfile::tempdir().unwrap();
    let certs = common::pki::CertDir::new(dir.path().join("certs"));
    common::pki::init(&certs, &["localhost".into(), "127.0.0.1".into()], false).unwrap();
    let mut server = ServerProc::new(
        dir.path(),
        &certs,
        "[supervisor]\nmax_restarts = 2\nwindow_s = 60\nbackoff_initial_ms = 50\nbackoff_max_ms = 200\nheartbeat_s = 10\n",
    )
    .unwrap();
    server.start_env(&[(FAULTS_ENV, "alerts=panic_always")]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(code) = server.wait_exit(Duration::from_millis(200)) {
            break Some(code);
        }
        let log = rvm_fleet_tests::read(&server.log);
        assert!(
            !log.contains("fleet server running") || log.contains("fault injection armed"),
            "the fleet-server binary has no fault injection: build it with \
             `cargo build -p fleet-server --features faults` (`cargo test --workspace` does)\n{log}"
        );
        if Instant::now() > deadline {
            break None;
        }
    };
    let log = rvm_fleet_tests::read(&server.log);
    assert_eq!(code, Some(70), "{log}");
    assert!(log.contains("restart limit exceeded"), "{log}");
    assert_eq!(
        log.matches("actor restarted").count(),
        2,
        "two restarts, then the third exit is past the limit:\n{log}"
    );
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

#[test]
fn the_server_unit_restarts_the_process_after_a_non_zero_exit_and_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(repo().join("config/fleet-server.service")).unwrap();
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    for want in [
        "Restart=on-failure",
        "ExecStart=/usr/bin/fleet-server run --config /etc/fleet-server/fleet-server.toml",
        "User=fleet-server",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(lines.contains(&want), "{want} missing from the unit");
    }
    let analyze = std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("systemd-analyze"))
                .find(|p| p.is_file())
        })
        .expect("systemd-analyze is not installed: apt-get install -y systemd");
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("root/usr/bin/fleet-server");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(rvm_fleet_tests::bin_path("fleet-server"), &bin).unwrap();
    // a test-only copy of the unit whose program exists here
    let path = tmp.path().join("fleet-server.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/fleet-server", &bin.display().to_string()),
    )
    .unwrap();
    let o = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&path)
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    // systemd-analyze reports problems of other units on the host too: only ours count
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("fleet-server.service"))
        .collect();
    assert!(
        o.status.success() && ours.is_empty(),
        "systemd-analyze verify: {err}"
    );
}
