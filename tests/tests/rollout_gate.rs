//! Health-gated rollouts (issue 23 item 3), end to end: 20 simulated machines (rvm-sim, real
//! MQTT with mTLS to a real server) bring 20 items a second each. In one fleet every machine
//! accepts half as much once it ran a command (`SimFault::degrade_on_command`: the simulator's
//! stand-in for a harmful update); the rollout must pause after its first batch, abort when
//! nobody resumes it, and the other machines must never get the command. In the other fleet
//! the machines stay healthy and the rollout completes, batch by batch.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use fleet_server::auth::Role;
use reqwest::Method;
use rvm_fleet_tests::{SimFleet, TestFleet, eventually};
use serde_json::{Value, json};

const MACHINES: usize = 20;
const BATCH: u64 = 5;
/// Items a second per machine: about 70 000 an hour, so a rate over ten seconds means something.
const ITEMS_PER_S: f64 = 20.0;

fn start_sims(fleet: &TestFleet, prefix: &str) -> SimFleet {
    SimFleet::start(
        fleet,
        rvm_sim::simulate::SimConfig {
            devices: MACHINES,
            sites: 1,
            prefix: prefix.into(),
            host: String::new(),
            port: 0,
            certs: Default::default(),
            interval: Duration::from_millis(1000),
            first: 1,
        },
        Default::default(),
    )
    .unwrap()
}

async fn all_reporting(fleet: &TestFleet) {
    eventually(Duration::from_secs(30), || async {
        let d = fleet.devices().await.ok()?;
        (d.len() == MACHINES).then_some(())
    })
    .await
    .expect("20 machines report");
}

async fn start_rollout(fleet: &TestFleet, op: &str, pause_s: u64) -> String {
    let (status, r) = fleet
        .send(
            Method::POST,
            "/api/v1/rollouts",
            op,
            Some(json!({
                "action": "drop_caches", "target": "all", "per_minute": 20, "batch_size": BATCH,
                "abort_failed_pct": 50, "ttl_s": 60, "reason": "gated rollout test",
                "gate": {"settle_s": 10, "max_accepted_drop_pct": 30, "max_reject_ratio_rise_pct": 10, "pause_s": pause_s}
            })),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{r}");
    r["id"].as_str().unwrap().to_string()
}

/// Polls the rollout until it ends, collecting every state it showed.
async fn follow(fleet: &TestFleet, id: &str, within: Duration) -> (Value, Vec<String>) {
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + within;
    loop {
        let v = fleet.get(&format!("/api/v1/rollouts/{id}")).await.unwrap();
        let st = v["state"].as_str().unwrap_or("?").to_string();
        if seen.last() != Some(&st) {
            println!(
                "{:>5.1} s  {st}  {}",
                (within - (deadline - Instant::now())).as_secs_f64(),
                v["detail"]
            );
            seen.push(st.clone());
        }
        if st == "completed" || st == "aborted" {
            return (v, seen);
        }
        assert!(
            Instant::now() < deadline,
            "rollout still {st} after {within:?}: {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Machines that got a command of this rollout.
async fn machines_with_commands(fleet: &TestFleet, ids: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for d in ids {
        let v = fleet.get(&format!("/api/v1/devices/{d}/commands")).await.unwrap();
        if v["commands"].as_array().is_some_and(|c| !c.is_empty()) {
            out.insert(d.clone());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_whose_machines_lose_half_their_accepted_rate_pauses_after_the_first_batch_then_aborts() {
    let fleet = TestFleet::start().unwrap();
    let sims = start_sims(&fleet, "gdeg");
    for f in &sims.faults {
        f.set_items_per_s(ITEMS_PER_S);
        f.degrade_on_command(0.5);
    }
    all_reporting(&fleet).await;
    let op = fleet.token("olga", Role::Operator).unwrap();
    let t0 = Instant::now();
    let id = start_rollout(&fleet, &op, 8).await;
    let (done, seen) = follow(&fleet, &id, Duration::from_secs(90)).await;
    println!("rollout ended in {:.1} s: {done:#}", t0.elapsed().as_secs_f64());
    assert_eq!(seen, ["running", "paused", "aborted"], "paused, then aborted");
    let p = &done["progress"];
    assert_eq!(p["dispatched"], BATCH, "only the first batch got it: {p}");
    assert_eq!(p["succeeded"], BATCH, "the commands themselves succeeded: {p}");
    assert_eq!(p["remaining"], 0);
    assert_eq!(p["worse"], BATCH, "every machine of the batch is worse: {p}");
    let detail = done["detail"].as_str().unwrap();
    assert!(
        detail.contains("without a resume") && detail.contains("accepted"),
        "{detail}"
    );
    let worse: Vec<&Value> = done["machines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["verdict"]["verdict"] == "worse")
        .collect();
    for m in &worse {
        println!("{}: {}", m["device"], m["verdict"]["detail"]);
    }
    // nobody else ever gets it
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got = machines_with_commands(&fleet, &sims.ids).await;
    assert_eq!(got.len() as u64, BATCH, "{got:?}");
    let later = fleet.get(&format!("/api/v1/rollouts/{id}")).await.unwrap();
    assert_eq!(later["progress"]["dispatched"], BATCH);
    // the pause and the abort are in the audit log
    let audit = fleet
        .send(Method::GET, "/api/v1/audit", &op, None)
        .await
        .unwrap()
        .1;
    let states: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["rollout"] == id.as_str() && l["action"] == "rollout_result")
        .filter_map(|l| l["state"].as_str())
        .collect();
    assert!(
        states.contains(&"paused") && states.contains(&"aborted"),
        "{states:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_whose_machines_stay_healthy_completes_batch_by_batch() {
    let fleet = TestFleet::start().unwrap();
    let sims = start_sims(&fleet, "gok");
    for f in &sims.faults {
        f.set_items_per_s(ITEMS_PER_S);
    }
    all_reporting(&fleet).await;
    let op = fleet.token("olga", Role::Operator).unwrap();
    let t0 = Instant::now();
    let id = start_rollout(&fleet, &op, 8).await;
    let (done, seen) = follow(&fleet, &id, Duration::from_secs(150)).await;
    println!(
        "rollout completed in {:.1} s: {}",
        t0.elapsed().as_secs_f64(),
        done["detail"]
    );
    assert_eq!(seen, ["running", "completed"], "{done:#}");
    let p = &done["progress"];
    assert_eq!(p["dispatched"], MACHINES as u64);
    assert_eq!(p["succeeded"], MACHINES as u64);
    assert_eq!(p["healthy"], MACHINES as u64, "{p}");
    assert_eq!(p["worse"], 0);
    let got = machines_with_commands(&fleet, &sims.ids).await;
    assert_eq!(got.len(), MACHINES);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_resumes_a_paused_rollout_or_aborts_it_and_a_viewer_cannot() {
    let fleet = TestFleet::start().unwrap();
    let sims = start_sims(&fleet, "gop");
    for f in &sims.faults {
        f.set_items_per_s(ITEMS_PER_S);
        f.degrade_on_command(0.5);
    }
    all_reporting(&fleet).await;
    let op = fleet.token("olga", Role::Operator).unwrap();
    let viewer = fleet.token("vic", Role::Viewer).unwrap();
    let id = start_rollout(&fleet, &op, 600).await;
    let paused = eventually(Duration::from_secs(60), || async {
        let v = fleet.get(&format!("/api/v1/rollouts/{id}")).await.ok()?;
        (v["state"] == "paused").then_some(v)
    })
    .await
    .expect("pauses");
    assert_eq!(paused["progress"]["dispatched"], BATCH);
    let (status, _) = fleet
        .send(
            Method::POST,
            &format!("/api/v1/rollouts/{id}/resume"),
            &viewer,
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 403);
    let (status, v) = fleet
        .send(Method::POST, &format!("/api/v1/rollouts/{id}/resume"), &op, None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["state"], "running");
    // The next batch goes, and pauses it again (those machines get worse too). A machine of
    // the first batch judged after the first pause pauses it again before that: new
    // findings stop it anew, and are resumed over the same way.
    let mut resumes = 1;
    let mut again = eventually(Duration::from_secs(60), || async {
        let v = fleet.get(&format!("/api/v1/rollouts/{id}")).await.ok()?;
        (v["state"] == "paused").then_some(v)
    })
    .await
    .expect("paused again");
    while again["progress"]["dispatched"] == BATCH {
        assert!(resumes < BATCH, "{again:#}");
        let (status, v) = fleet
            .send(Method::POST, &format!("/api/v1/rollouts/{id}/resume"), &op, None)
            .await
            .unwrap();
        assert_eq!(status, 200, "{v}");
        resumes += 1;
        again = eventually(Duration::from_secs(60), || async {
            let v = fleet.get(&format!("/api/v1/rollouts/{id}")).await.ok()?;
            (v["state"] == "paused").then_some(v)
        })
        .await
        .expect("paused again");
    }
    println!(
        "resumed {resumes} time(s) over the first batch; paused again: {}",
        again["detail"]
    );
    assert_eq!(again["progress"]["dispatched"], 2 * BATCH, "{again:#}");
    let overridden = again["machines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["verdict"]["verdict"] == "overridden")
        .count();
    assert_eq!(overridden as u64, BATCH, "{again:#}");
    let (status, v) = fleet
        .send(Method::POST, &format!("/api/v1/rollouts/{id}/abort"), &op, None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["state"], "aborted");
    assert!(v["detail"].as_str().unwrap().contains("aborted by olga"), "{v}");
    let (status, v) = fleet
        .send(Method::POST, &format!("/api/v1/rollouts/{id}/resume"), &op, None)
        .await
        .unwrap();
    assert_eq!(status, 409, "{v}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        machines_with_commands(&fleet, &sims.ids).await.len() as u64,
        2 * BATCH
    );
}
