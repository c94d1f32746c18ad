//! Several fleet-server instances on one PostgreSQL database: a rollout advances on one
//! instance only, the leader of the `rollouts` job (issue 23 item 3). Real `fleet-server`
//! processes A and B on a throwaway database of the test cluster, and a real `rvm-sim simulate`
//! process whose machines connect to A and answer commands. The rollout is posted to the
//! instance that does *not* lead rollouts: it completes all the same (the leader read it from
//! the store and dispatched it), each machine gets the command exactly once, and both
//! instances show the same final state.

use std::collections::BTreeMap;
use std::time::Duration;

use rvm_fleet_tests::cluster::{Cluster, ClusterOptions, leader};
use rvm_fleet_tests::eventually;
use rvm_fleet_tests::harness::{SimSpec, spawn_simulator};
use serde_json::{Value, json};

const MACHINES: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_rollout_posted_on_the_follower_is_dispatched_once_per_machine_by_the_leader() {
    let cl = Cluster::start(&["fleet-a", "fleet-b"], ClusterOptions::default()).await;
    let (a, b, certs, dir, pg) = (&cl.servers[0], &cl.servers[1], &cl.certs, &cl.dir, &cl.pg);
    let spec = SimSpec {
        prefix: "crl",
        devices: MACHINES,
        first: 1,
        interval_ms: 1000,
        sites: 1,
        buffer_dir: None,
    };
    let _sim = spawn_simulator(certs, a.mqtt, &spec, &dir.path().join("sim.log")).unwrap();
    let ids: Vec<String> = (1..=MACHINES).map(|i| format!("crl{i:04}")).collect();
    eventually(Duration::from_secs(30), || async {
        let d = a.get("/api/v1/devices").await.ok()?;
        (d["devices"].as_array()?.len() == MACHINES).then_some(())
    })
    .await
    .expect("the machines report to A");
    let leader = eventually(Duration::from_secs(20), || async { leader(a, "rollouts").await })
        .await
        .expect("a leader of rollouts");
    let (lead, follow) = if leader == "fleet-a" { (a, b) } else { (b, a) };
    println!("rollouts led by {leader}; posting on the other");

    let r = reqwest::Client::new()
        .post(follow.url("/api/v1/rollouts"))
        .bearer_auth(&follow.token)
        .json(&json!({
            "action": "drop_caches", "target": {"devices": ids}, "per_minute": 100,
            "abort_failed_pct": 50, "ttl_s": 120, "reason": "cluster rollout"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    for s in [lead, follow] {
        let done = eventually(Duration::from_secs(40), || async {
            let v = s.get(&format!("/api/v1/rollouts/{id}")).await.ok()?;
            (v["state"] == "completed").then_some(v)
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "not completed on {}:\nA:\n{}\nB:\n{}",
                s.http,
                rvm_fleet_tests::read(&a.log),
                rvm_fleet_tests::read(&b.log)
            )
        });
        assert_eq!(done["progress"]["succeeded"], MACHINES as u64, "{done}");
    }
    // exactly one command per machine, all of this rollout
    let per_machine: BTreeMap<String, String> = pg
        .psql(&format!(
            "SELECT device || '=' || count(*) FROM commands WHERE rollout = '{id}' GROUP BY device ORDER BY device"
        ))
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().split_once('=').map(|(d, n)| (d.to_string(), n.to_string())))
        .collect();
    assert_eq!(per_machine.len(), MACHINES, "{per_machine:?}");
    assert!(per_machine.values().all(|n| n == "1"), "{per_machine:?}");
}
