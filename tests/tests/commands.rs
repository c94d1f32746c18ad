//! Remote commands acceptance: signed, durable, executed at most once, with results and an
//! audit trail. The agents' recovery executor records calls instead of acting.

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::command::{Action, Command, CommandSigner};
use common::pki;
use common::topics::{Kind, Topic};
use fleet_server::auth::Role;
use reqwest::Method;
use rumqttc::QoS;
use rvm_agent::agent::Overrides;
use rvm_agent::recovery::executor::RecordingExecutor;
use rvm_fleet_tests::{AgentExtra, Agents, ConnectOutcome, Probe, SimFleet, TestFleet, eventually, tls_for};
use serde_json::{Value, json};

fn agent_extra(fleet: &TestFleet) -> AgentExtra {
    AgentExtra {
        tail: format!(
            "[recovery]\nextra_units = [\"vision.service\"]\n[commands]\npublic_key = \"{}\"\n",
            fleet.certs.signing_pub().display()
        ),
        ..Default::default()
    }
}

fn start_agent(fleet: &TestFleet, id: &str, rec: &Arc<RecordingExecutor>) -> Agents {
    let cfg = fleet.agent_config_extra(id, 500, &agent_extra(fleet)).unwrap();
    Agents::start_with(vec![(
        cfg,
        Overrides {
            executor: Some(rec.clone()),
            ..Default::default()
        },
    )])
    .unwrap()
}

async fn known(fleet: &TestFleet, id: &str) {
    eventually(Duration::from_secs(15), || async { fleet.device(id).await.ok()? })
        .await
        .expect("device reports");
}

async fn submit(fleet: &TestFleet, token: &str, device: &str, body: Value) -> (u16, Value) {
    fleet
        .send(
            Method::POST,
            &format!("/api/v1/devices/{device}/commands"),
            token,
            Some(body),
        )
        .await
        .unwrap()
}

async fn state_of(fleet: &TestFleet, id: &str) -> Value {
    fleet.get(&format!("/api/v1/commands/{id}")).await.unwrap()
}

async fn wait_state(fleet: &TestFleet, id: &str, want: &str, within: Duration) -> Option<Value> {
    eventually(within, || async {
        let v = state_of(fleet, id).await;
        (v["state"] == want).then_some(v)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_unit_command_to_an_online_agent_succeeds_within_2s_and_runs_exactly_once() {
    let fleet = TestFleet::start().unwrap();
    let rec = Arc::new(RecordingExecutor::new());
    let _agents = start_agent(&fleet, "cmd1", &rec);
    known(&fleet, "cmd1").await;
    let op = fleet.token("op", Role::Operator).unwrap();
    let t0 = Instant::now();
    let (status, v) = submit(
        &fleet,
        &op,
        "cmd1",
        json!({"action": {"restart_unit": {"unit": "vision.service"}}, "ttl_s": 60, "reason": "vision stuck"}),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let done = wait_state(&fleet, &id, "succeeded", Duration::from_secs(2)).await;
    let took = t0.elapsed();
    let done = match done {
        Some(d) => d,
        None => panic!("not succeeded within 2 s: {}", state_of(&fleet, &id).await),
    };
    println!("restart_unit round trip: {} ms", took.as_millis());
    assert_eq!(done["issued_by"], "op");
    assert_eq!(
        rec.calls(),
        vec![Action::RestartUnit {
            unit: "vision.service".into()
        }]
    );
    // and it stays that way
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rec.calls().len(), 1);
    let list = fleet.get("/api/v1/devices/cmd1/commands").await.unwrap();
    assert_eq!(list["commands"][0]["id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_to_an_offline_agent_runs_once_after_it_reconnects_and_an_expired_one_never_runs() {
    let fleet = TestFleet::start().unwrap();
    let rec = Arc::new(RecordingExecutor::new());
    let mut agents = start_agent(&fleet, "off1", &rec);
    known(&fleet, "off1").await;
    agents.stop();
    drop(agents);
    eventually(Duration::from_secs(10), || async {
        let d = fleet.device("off1").await.ok()??;
        (d["status"] == "offline").then_some(())
    })
    .await
    .expect("agent offline");
    let op = fleet.token("op", Role::Operator).unwrap();
    let (_, a) = submit(
        &fleet,
        &op,
        "off1",
        json!({"action": {"restart_unit": {"unit": "vision.service"}}, "ttl_s": 120, "reason": "later"}),
    )
    .await;
    let (_, b) = submit(
        &fleet,
        &op,
        "off1",
        json!({"action": "collect_diagnostics", "ttl_s": 2, "reason": "too late"}),
    )
    .await;
    let (a, b) = (
        a["id"].as_str().unwrap().to_string(),
        b["id"].as_str().unwrap().to_string(),
    );
    assert_eq!(state_of(&fleet, &a).await["state"], "queued");
    wait_state(&fleet, &b, "expired", Duration::from_secs(6))
        .await
        .expect("short-TTL command expired");

    let rec2 = Arc::new(RecordingExecutor::new());
    let _agents = start_agent(&fleet, "off1", &rec2);
    wait_state(&fleet, &a, "succeeded", Duration::from_secs(15))
        .await
        .expect("runs after reconnect");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rec2.calls(),
        vec![Action::RestartUnit {
            unit: "vision.service".into()
        }],
        "only the live command ran, once"
    );
    assert_eq!(state_of(&fleet, &b).await["state"], "expired");
    assert!(rec.calls().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_a_forged_and_a_misrouted_command_are_refused_and_reported_and_none_runs_twice() {
    let fleet = TestFleet::start().unwrap();
    let rec = Arc::new(RecordingExecutor::new());
    let _agents = start_agent(&fleet, "dev1", &rec);
    known(&fleet, "dev1").await;
    let signer = pki::load_signer(&fleet.certs).unwrap();
    let forger = CommandSigner::from_pkcs8(&CommandSigner::generate_pkcs8().unwrap()).unwrap();
    let now = common::time::now_ms();
    let cmd = |id: &str, device: &str| Command {
        id: id.into(),
        device: common::DeviceId::new(device).unwrap(),
        action: Action::RestartUnit {
            unit: "vision.service".into(),
        },
        issued_ms: now,
        expires_ms: now + 60_000,
        issued_by: "test".into(),
        reason: "test".into(),
    };
    let genuine = signer.sign(&cmd("replay1", "dev1")).unwrap();
    let forged = forger.sign(&cmd("forged1", "dev1")).unwrap();
    let misrouted = signer.sign(&cmd("other1", "dev2")).unwrap();
    // publish as the server would (server identity), straight to the device's command topic
    let ConnectOutcome::Accepted(client, mut el) =
        Probe::new("fleet-server:test", tls_for(&fleet.certs.server_identity()))
            .connect(fleet.broker_port())
            .await
    else {
        panic!("server identity connects")
    };
    let topic = Topic::device(&common::DeviceId::new("dev1").unwrap(), Kind::Cmd);
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    for sc in [&genuine, &genuine, &forged, &misrouted, &genuine] {
        client
            .publish(
                topic.clone(),
                QoS::AtLeastOnce,
                false,
                common::codec::encode(sc).unwrap(),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let d = eventually(Duration::from_secs(10), || async {
        let d = fleet.device("dev1").await.ok()??;
        let msgs: Vec<String> = d["recent_events"]
            .as_array()?
            .iter()
            .filter_map(|e| e["message"].as_str().map(String::from))
            .collect();
        let forged = msgs
            .iter()
            .any(|m| m.contains("forged1") && m.contains("bad_signature"));
        let misrouted = msgs
            .iter()
            .any(|m| m.contains("other1") && m.contains("wrong_device"));
        (forged && misrouted).then_some(d)
    })
    .await
    .expect("refusals reported as events");
    assert_eq!(
        rec.calls().len(),
        1,
        "the genuine command ran once, replays were answered from the record"
    );
    println!("refusals: {}", d["recent_events"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_to_20_simulated_machines_with_a_failing_cohort_stops_at_the_abort_threshold() {
    let fleet = TestFleet::start().unwrap();
    let sims = SimFleet::start(
        &fleet,
        rvm_sim::simulate::SimConfig {
            devices: 20,
            sites: 1,
            prefix: "roll".into(),
            host: String::new(),
            port: 0,
            certs: Default::default(),
            interval: Duration::from_millis(1000),
            first: 1,
        },
        Default::default(),
    )
    .unwrap();
    // the first eight machines (in id order, the order of dispatch) fail their commands
    for f in sims.commands_fail.iter().take(8) {
        f.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    eventually(Duration::from_secs(20), || async {
        (fleet.devices().await.ok()?.len() == 20).then_some(())
    })
    .await
    .expect("20 machines");
    let op = fleet.token("op", Role::Operator).unwrap();
    let (status, r) = fleet
        .send(
            Method::POST,
            "/api/v1/rollouts",
            &op,
            Some(json!({"action": "drop_caches", "target": "all", "per_minute": 5, "abort_failed_pct": 30, "min_finished": 3, "ttl_s": 60, "reason": "free memory"})),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    let done = eventually(Duration::from_secs(20), || async {
        let v = fleet.get(&format!("/api/v1/rollouts/{id}")).await.ok()?;
        (v["state"] != "running").then_some(v)
    })
    .await
    .expect("rollout stops");
    println!("rollout: {done}");
    assert_eq!(done["state"], "aborted", "{done}");
    let p = &done["progress"];
    assert!(
        p["dispatched"].as_u64().unwrap() < 20,
        "stopped before the whole fleet: {p}"
    );
    assert_eq!(p["remaining"], 0, "nothing left to dispatch after the abort");
    assert!(done["detail"].as_str().unwrap().contains("aborted"));
    // no machine after the abort got the command
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = fleet.get(&format!("/api/v1/rollouts/{id}")).await.unwrap();
    assert_eq!(later["progress"]["dispatched"], p["dispatched"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_gets_403_and_every_command_is_in_the_audit_log() {
    let fleet = TestFleet::start().unwrap();
    let rec = Arc::new(RecordingExecutor::new());
    let _agents = start_agent(&fleet, "aud1", &rec);
    known(&fleet, "aud1").await;
    let viewer = fleet.token("vic", Role::Viewer).unwrap();
    let op = fleet.token("olga", Role::Operator).unwrap();
    let body = json!({"action": "drop_caches", "ttl_s": 60, "reason": "memory pressure"});
    let (status, v) = submit(&fleet, &viewer, "aud1", body.clone()).await;
    assert_eq!(status, 403, "{v}");
    let (status, v) = submit(&fleet, &op, "aud1", body.clone()).await;
    assert_eq!(status, 201);
    let id = v["id"].as_str().unwrap().to_string();
    wait_state(&fleet, &id, "succeeded", Duration::from_secs(10))
        .await
        .expect("succeeds");
    // bad input is named
    let (status, v) = submit(
        &fleet,
        &op,
        "aud1",
        json!({"action": "format_disk", "reason": "x"}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = submit(
        &fleet,
        &op,
        "aud1",
        json!({"action": "drop_caches", "reason": ""}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(v["message"].as_str().unwrap().contains("reason"), "{v}");
    let (status, _) = submit(&fleet, &op, "nosuch", body).await;
    assert_eq!(status, 404);
    // viewers cannot read the audit log; operators can
    let r = fleet
        .http
        .get(fleet.url("/api/v1/audit"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let audit = eventually(Duration::from_secs(5), || async {
        let a = fleet.send(Method::GET, "/api/v1/audit", &op, None).await.ok()?.1;
        let e = a["entries"].as_array()?.clone();
        let asked = e
            .iter()
            .any(|l| l["command"] == id.as_str() && l["who"] == "olga" && l["reason"] == "memory pressure");
        let outcome = e
            .iter()
            .any(|l| l["command"] == id.as_str() && l["state"] == "succeeded");
        (asked && outcome).then_some(e)
    })
    .await
    .expect("the command and its outcome are in the audit log");
    assert!(!audit.is_empty());
    assert_eq!(rec.calls(), vec![Action::DropCaches]);
}
