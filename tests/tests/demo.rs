//! The README's first command, `rvm-sim demo`, as a user runs it: a fresh data directory,
//! then the printed URL and token must work, the 20 simulated machines and this machine's
//! agent come online, and the machines carry the story's vision model versions
//! (`scenarios/demo.toml`, built in). This machine runs the whole agent: a command to it
//! succeeds (recorded, not carried out) and its health report shows.

use std::time::Duration;

use rvm_fleet_tests::{Child, eventually, free_port};
use serde_json::{Value, json};

fn printed(log: &str, label: &str) -> Option<String> {
    log.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_starts_from_nothing_and_its_machines_replay_the_story() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo-data");
    let log = dir.path().join("demo.log");
    let http = format!("127.0.0.1:{}", free_port());
    let mqtt = format!("127.0.0.1:{}", free_port());
    let mut demo = Child::spawn(
        "rvm-sim",
        &[
            "demo",
            "--data-dir",
            data.to_str().unwrap(),
            "--http",
            &http,
            "--mqtt",
            &mqtt,
        ],
        &log,
    )
    .unwrap();
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let started = eventually(Duration::from_secs(60), || async {
        let l = read();
        l.contains("Ctrl-C stops it.").then_some(l)
    })
    .await
    .unwrap_or_else(|| panic!("the demo did not start:\n{}", read()));
    let token = printed(&started, "admin token:").expect("an admin token is printed");
    assert_eq!(
        std::fs::read_to_string(data.join("admin.token")).unwrap().trim(),
        token
    );
    assert!(started.contains("scenario:    \"demo\""), "{started}");
    let url = printed(&started, "web view:").expect("a URL is printed");
    assert!(url.starts_with(&format!("http://{http}/#token=")), "{url}");

    let client = reqwest::Client::new();
    let devices = || async {
        let r = client
            .get(format!("http://{http}/api/v1/devices"))
            .bearer_auth(&token)
            .send()
            .await
            .ok()?;
        r.json::<Value>().await.ok()?["devices"].as_array().cloned()
    };
    let all = eventually(Duration::from_secs(60), || async {
        let ds = devices().await?;
        let online = ds
            .iter()
            .filter(|d| d["status"] == "online" || d["status"] == "degraded")
            .count();
        (online == 21).then_some(ds)
    })
    .await
    .unwrap_or_else(|| panic!("not 20 machines and this one online:\n{}", read()));
    // rvm0001..rvm0005 run v3.3 by the story's [[model]]; the others v3.2
    let version = |id: &str| {
        let d = all
            .iter()
            .find(|d| d["id"] == id)
            .unwrap_or_else(|| panic!("{id} missing"));
        d.to_string()
    };
    for n in 1..=20 {
        let id = format!("rvm{n:04}");
        let want = if n <= 5 { "\"v3.3\"" } else { "\"v3.2\"" };
        assert!(version(&id).contains(want), "{id}: {}", version(&id));
    }
    println!("{} devices, e.g. {}", all.len(), version("rvm0003"));
    let page = client.get(format!("http://{http}/")).send().await.unwrap();
    assert_eq!(page.status(), 200);

    // this machine's own agent: a command runs through its recovery actor and succeeds
    let local = printed(&started, "local agent:").expect("the local agent's id is printed");
    assert!(
        all.iter().any(|d| d["id"] == local.as_str()),
        "{local} is not among the devices"
    );
    let r = client
        .post(format!("http://{http}/api/v1/devices/{local}/commands"))
        .bearer_auth(&token)
        .json(&json!({"action": "drop_caches", "ttl_s": 60, "reason": "demo test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let command = || async {
        client
            .get(format!("http://{http}/api/v1/commands/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .ok()?
            .json::<Value>()
            .await
            .ok()
    };
    let done = eventually(Duration::from_secs(30), || async {
        let c = command().await?;
        (c["state"] == "succeeded").then_some(c)
    })
    .await;
    let done = match done {
        Some(d) => d,
        None => panic!(
            "the command to {local} did not succeed: {:?}\n{}",
            command().await,
            read()
        ),
    };
    let output = done["output"].as_str().unwrap_or_default();
    assert!(output.contains("not carried out"), "{done}");

    // and its health checks show, with every actor of the agent under its supervisor
    let health = eventually(Duration::from_secs(30), || async {
        let d = client
            .get(format!("http://{http}/api/v1/devices/{local}"))
            .bearer_auth(&token)
            .send()
            .await
            .ok()?
            .json::<Value>()
            .await
            .ok()?;
        let h = d["health_report"].clone();
        h["checks"].as_array().is_some_and(|c| !c.is_empty()).then_some(h)
    })
    .await
    .unwrap_or_else(|| panic!("no health report from {local}:\n{}", read()));
    let names = |key: &str| -> Vec<String> {
        health[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    for check in ["broker", "data_disk", "cpu", "memory"] {
        assert!(
            names("checks").iter().any(|n| n == check),
            "{check} missing: {health}"
        );
    }
    for actor in ["link", "collector", "recovery", "health"] {
        assert!(
            names("actors").iter().any(|n| n == actor),
            "{actor} missing: {health}"
        );
    }
    println!("{local}: command {id} {output:?}, health {}", health["status"]);
    demo.terminate();
}
