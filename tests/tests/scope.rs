//! Scoped access end to end (issue 22 item 2, docs/estate.md "Scoped access"), on sled.
//!
//! Two retailers, three stores and a site no store has; machines in each. A token scoped to
//! store `sa1` walks EVERY route of the security suite's table (`rvm_fleet_tests::routes`; a
//! route of the table this test has no expectation for fails it) with the ids of things
//! outside its scope in the path: each answers 404 (a machine, command, rollout, alert,
//! silence, store or retailer outside the scope is unknown) or 403 (what spans the whole
//! fleet), and no answer names a machine, store or retailer outside the scope. Then what it
//! may see comes back, and only that: its machines, their alerts, commands and history; the
//! live stream carries its machines and nothing else. An operator scoped to store A gets 404
//! sending a command to a machine of store B; a retailer-scoped token sees exactly its
//! retailer's stores.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use fleet_server::auth::Role;
use reqwest::Method;
use rvm_fleet_tests::process::bin_path;
use rvm_fleet_tests::routes::routes;
use rvm_fleet_tests::{Backend, FleetOptions, SimFleet, TestFleet, eventually};
use rvm_sim::simulate::{SimConfig, SimProfile};
use serde_json::{Value, json};

/// An alert on every machine (any CPU reading), so every store has alerts to leak.
const RULES: &str = r#"
[[rules]]
name = "cpu_any"
metric = "cpu.usage_pct"
op = ">"
threshold = -1
severity = "warning"
summary = "cpu reported"
"#;

/// Machines 0, 1: store sa1 (retailer coop); 2: sa2 (coop); 3: sb1 (zrtl); 4: a site no
/// store has.
const SITES: [&str; 5] = ["sa1", "sa1", "sa2", "sb1", "nostore"];

/// What a route answers the store-scoped token when its path names things outside the scope.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// Answered, with only what is in scope.
    Filtered,
    /// 404: the thing named is outside the scope (as if it did not exist).
    Hidden,
    /// 403: it spans the whole fleet.
    Refused,
    /// Open route (no token): not the scope's business.
    Open,
}

fn expectations() -> BTreeMap<(&'static str, &'static str), Expect> {
    use Expect::*;
    [
        ("GET", "/", Open),
        ("GET", "/ui/{file:.*}", Open),
        ("GET", "/metrics", Refused),
        ("GET", "/api/v1/health", Open),
        ("GET", "/api/v1/cluster", Filtered),
        ("GET", "/api/v1/devices", Filtered),
        ("GET", "/api/v1/devices/{id}", Hidden),
        ("GET", "/api/v1/devices/{id}/metrics", Hidden),
        ("POST", "/api/v1/devices/{id}/commands", Hidden),
        ("GET", "/api/v1/devices/{id}/commands", Hidden),
        ("GET", "/api/v1/commands/{id}", Hidden),
        ("POST", "/api/v1/rollouts", Refused),
        ("GET", "/api/v1/rollouts/{id}", Hidden),
        ("GET", "/api/v1/commands", Filtered),
        ("POST", "/api/v1/commands/{id}/approve", Hidden),
        ("GET", "/api/v1/rollouts", Filtered),
        ("POST", "/api/v1/rollouts/{id}/resume", Hidden),
        ("POST", "/api/v1/rollouts/{id}/abort", Hidden),
        ("GET", "/api/v1/audit", Filtered),
        ("GET", "/api/v1/tokens", Refused),
        ("POST", "/api/v1/tokens", Refused),
        ("GET", "/api/v1/whoami", Filtered),
        ("GET", "/api/v1/alerts", Filtered),
        ("POST", "/api/v1/alerts/{id}/ack", Hidden),
        ("POST", "/api/v1/alerts/{id}/resolve", Hidden),
        ("GET", "/api/v1/silences", Filtered),
        ("POST", "/api/v1/silences", Refused),
        ("DELETE", "/api/v1/silences/{id}", Hidden),
        ("GET", "/api/v1/incidents", Filtered),
        ("GET", "/api/v1/maintenance", Filtered),
        ("POST", "/api/v1/maintenance", Refused),
        ("DELETE", "/api/v1/maintenance/{name}", Refused),
        ("GET", "/api/v1/estate", Filtered),
        ("PUT", "/api/v1/estate/retailers/{id}", Refused),
        ("PUT", "/api/v1/estate/stores/{id}", Refused),
        ("GET", "/api/v1/estate/retailers/{id}", Hidden),
        ("GET", "/api/v1/estate/stores/{id}", Hidden),
        ("GET", "/api/v1/estate/unknown-sites", Filtered),
        ("GET", "/api/v1/estate/map", Filtered),
        ("GET", "/api/v1/estate/availability", Filtered),
        ("DELETE", "/api/v1/estate/stores/{id}", Refused),
        ("DELETE", "/api/v1/estate/retailers/{id}", Refused),
        ("GET", "/api/v1/notify", Refused),
        ("GET", "/api/v1/notify/outbox", Refused),
        ("POST", "/api/v1/notify/channels/{name}/test", Refused),
        ("GET", "/api/v1/export", Filtered),
        ("GET", "/api/v1/report", Filtered),
        ("GET", "/api/v1/stream", Filtered),
    ]
    .into_iter()
    .map(|(m, p, e)| ((m, p), e))
    .collect()
}

/// Status and body text.
async fn call(
    fleet: &TestFleet,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> (u16, String) {
    let m = Method::from_bytes(method.as_bytes()).unwrap();
    let mut r = fleet.http.request(m, fleet.url(path)).bearer_auth(token);
    if let Some(b) = body {
        r = r.json(b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (
        status,
        String::from_utf8_lossy(&resp.bytes().await.unwrap()).into_owned(),
    )
}

async fn json_of(fleet: &TestFleet, path: &str, token: &str) -> Value {
    let (s, text) = call(fleet, "GET", path, token, None).await;
    assert_eq!(s, 200, "GET {path}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// The first of `words` found in `text`.
fn leak<'a>(text: &str, words: &'a [String]) -> Option<&'a String> {
    words.iter().find(|w| text.contains(w.as_str()))
}

/// The ids under `key` of a JSON list.
fn ids(list: &Value, key: &str) -> BTreeSet<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|v| v[key].as_str().unwrap().to_string())
        .collect()
}

/// Reads the live stream as `token` for `within`: its frames' data, in order.
async fn stream_frames(fleet: &TestFleet, token: &str, within: Duration) -> String {
    let mut resp = fleet
        .http
        .get(fleet.url(&format!("/api/v1/stream?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let deadline = Instant::now() + within;
    let mut text = String::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match tokio::time::timeout(left, resp.chunk()).await {
            Ok(Ok(Some(c))) => text.push_str(&String::from_utf8_lossy(&c)),
            _ => break,
        }
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_a_store_token_walks_every_route_and_sees_only_its_store() {
    let t0 = Instant::now();
    let fleet = TestFleet::start_with(FleetOptions {
        rules: Some(RULES.into()),
        ..Default::default()
    })
    .unwrap();
    let admin = fleet.admin.clone();
    for (id, name) in [("coop", "Coop Norge"), ("zrtl", "Zed Retail")] {
        let (s, v) = fleet
            .send(
                Method::PUT,
                &format!("/api/v1/estate/retailers/{id}"),
                &admin,
                Some(json!({"name": name})),
            )
            .await
            .unwrap();
        assert_eq!(s, 200, "{v}");
    }
    for (id, retailer, lat) in [
        ("sa1", "coop", 59.9),
        ("sa2", "coop", 60.4),
        ("sb1", "zrtl", 63.4),
    ] {
        let store = json!({"id": id, "name": format!("Shop {id}"), "retailer": retailer, "time_zone": "UTC",
            "hours": {"mon": "24h", "tue": "24h", "wed": "24h", "thu": "24h", "fri": "24h", "sat": "24h", "sun": "24h"},
            "latitude": lat, "longitude": 10.0});
        let (s, v) = fleet
            .send(
                Method::PUT,
                &format!("/api/v1/estate/stores/{id}"),
                &admin,
                Some(store),
            )
            .await
            .unwrap();
        assert_eq!(s, 200, "{v}");
    }

    let cfg = SimConfig {
        devices: SITES.len(),
        sites: SITES.len(),
        prefix: "scp".into(),
        host: String::new(),
        port: 0,
        certs: Default::default(),
        interval: Duration::from_millis(250),
        first: 0,
    };
    let profile = SimProfile {
        sites: SITES
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.to_string()))
            .collect(),
        ..Default::default()
    };
    let sims = SimFleet::start(&fleet, cfg, profile).unwrap();
    let dev: Vec<String> = sims.ids.clone();
    let mine: BTreeSet<String> = dev[..2].iter().cloned().collect();
    let coop: BTreeSet<String> = dev[..3].iter().cloned().collect();
    let (a, b) = (dev[0].clone(), dev[3].clone());
    let firing = eventually(Duration::from_secs(30), || async {
        let v = fleet.get("/api/v1/alerts?state=firing").await.ok()?;
        let on: BTreeSet<&str> = v["alerts"]
            .as_array()?
            .iter()
            .filter_map(|a| a["device"].as_str())
            .collect();
        (on.len() == SITES.len()).then_some(v)
    })
    .await
    .expect("an alert on every machine");
    let alert_of = |d: &str| -> String {
        firing["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["device"] == d)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // things in and out of the scope, made by the (unscoped) admin
    let command = |d: String| {
        let fleet = &fleet;
        let admin = admin.clone();
        async move {
            let (s, v) = fleet
                .send(
                    Method::POST,
                    &format!("/api/v1/devices/{d}/commands"),
                    &admin,
                    Some(json!({"action": "drop_caches", "reason": "scope test"})),
                )
                .await
                .unwrap();
            assert_eq!(s, 201, "{v}");
            v["id"].as_str().unwrap().to_string()
        }
    };
    let (cmd_a, cmd_b) = (command(a.clone()).await, command(b.clone()).await);
    let rollout = |site: &str| {
        let fleet = &fleet;
        let admin = admin.clone();
        let body = json!({"action": "collect_diagnostics", "target": {"site": site}, "per_minute": 5,
            "abort_failed_pct": 50, "reason": "scope test"});
        async move {
            let (s, v) = fleet
                .send(Method::POST, "/api/v1/rollouts", &admin, Some(body))
                .await
                .unwrap();
            assert_eq!(s, 201, "{v}");
            v["id"].as_str().unwrap().to_string()
        }
    };
    let (roll_a, roll_b) = (rollout("sa1").await, rollout("sb1").await);
    let silence = |site: &str| {
        let fleet = &fleet;
        let admin = admin.clone();
        let body = json!({"matchers": [{"label": "site", "value": site}], "duration_s": 600, "comment": "scope test"});
        async move {
            let (s, v) = fleet
                .send(Method::POST, "/api/v1/silences", &admin, Some(body))
                .await
                .unwrap();
            assert_eq!(s, 201, "{v}");
            v["id"].as_str().unwrap().to_string()
        }
    };
    let (sil_a, sil_b) = (silence("sa1").await, silence("sb1").await);
    for (name, site) in [("win-a", "sa1"), ("win-b", "sb1")] {
        let w = json!({"name": name, "sites": [site], "time_zone": "UTC", "from": "02:00", "to": "03:00"});
        let (s, v) = fleet
            .send(Method::POST, "/api/v1/maintenance", &admin, Some(w))
            .await
            .unwrap();
        assert_eq!(s, 201, "{v}");
    }
    let (s, v) = fleet
        .send(
            Method::POST,
            &format!("/api/v1/alerts/{}/ack", alert_of(&b)),
            &admin,
            Some(json!({"comment": "b seen"})),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");

    // tokens with a scope, through the API; a bad scope is a 400 naming the field
    let make = |name: &str, role: &str, scope: Value| {
        let fleet = &fleet;
        let admin = admin.clone();
        let body = json!({"name": name, "role": role, "scope": scope});
        async move {
            fleet
                .send(Method::POST, "/api/v1/tokens", &admin, Some(body))
                .await
                .unwrap()
        }
    };
    let (s, v) = make("bad1", "viewer", json!({"shop": "sa1"})).await;
    assert_eq!(s, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("scope"), "{v}");
    let (s, v) = make("bad2", "viewer", json!({"site": "no/slash"})).await;
    assert!(
        s == 400 && v["message"].as_str().unwrap().contains("scope.site"),
        "{s} {v}"
    );
    let (s, v) = make("bad3", "admin", json!({"site": "sa1"})).await;
    assert!(
        s == 400 && v["message"].as_str().unwrap().contains("admin"),
        "{s} {v}"
    );
    let (s, v) = make("mgr-a", "operator", json!({"site": "sa1"})).await;
    assert_eq!(s, 201, "{v}");
    let store_op = v["token"].as_str().unwrap().to_string();
    let (s, v) = make("coop-viewer", "viewer", json!({"retailer": "coop"})).await;
    assert_eq!(s, 201, "{v}");
    let coop_viewer = v["token"].as_str().unwrap().to_string();
    let listed = json_of(&fleet, "/api/v1/tokens", &admin).await;
    let mgr = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "mgr-a")
        .unwrap();
    assert_eq!(mgr["scope"], json!({"site": "sa1"}));
    let me = json_of(&fleet, "/api/v1/whoami", &store_op).await;
    assert_eq!(me["scope"], json!({"site": "sa1"}));

    // what must never reach the store token: other machines, stores, retailers, their ids
    let mut foreign: Vec<String> = dev[2..].to_vec();
    foreign.extend(
        [
            "sa2",
            "sb1",
            "nostore",
            "zrtl",
            "Zed Retail",
            &cmd_b,
            &roll_b,
            &sil_b,
            "win-b",
        ]
        .map(String::from),
    );

    // 1. walk every route of the security table with the ids of things outside the scope
    let table = routes();
    let expect = expectations();
    let walked: BTreeSet<(&str, &str)> = table.iter().map(|r| (r.method, r.pattern)).collect();
    let missing: Vec<_> = walked.iter().filter(|k| !expect.contains_key(k)).collect();
    assert!(
        missing.is_empty(),
        "routes of the security table this test does not walk: {missing:?}"
    );
    let stale: Vec<_> = expect.keys().filter(|k| !walked.contains(k)).collect();
    assert!(
        stale.is_empty(),
        "expectations for routes not in the table: {stale:?}"
    );
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in &table {
        let e = expect[&(r.method, r.pattern)];
        if e == Expect::Open {
            continue;
        }
        let path = r
            .path
            .replace("cpu_high:secdev:1", &alert_of(&b))
            .replace("secdev", &b)
            .replace("/commands/c1", &format!("/commands/{cmd_b}"))
            .replace("/rollouts/r1", &format!("/rollouts/{roll_b}"))
            .replace("/silences/s1", &format!("/silences/{sil_b}"))
            .replace("/maintenance/security-test", "/maintenance/win-b")
            .replace("sec-s", "sb1")
            .replace("sec-r", "zrtl");
        let text = if r.pattern == "/api/v1/stream" {
            stream_frames(&fleet, &store_op, Duration::from_secs(3)).await
        } else {
            let (status, text) = call(&fleet, r.method, &path, &store_op, r.body.as_ref()).await;
            let ok = match e {
                Expect::Filtered => status < 300,
                Expect::Hidden => status == 404,
                Expect::Refused => status == 403,
                Expect::Open => true,
            };
            assert!(
                ok,
                "{} {path} as the store token: {status} (expected {e:?}): {text}",
                r.method
            );
            text
        };
        // a 404 may repeat the id it was asked about: that tells nothing new
        let unasked: Vec<String> = foreign
            .iter()
            .filter(|w| !path.contains(w.as_str()))
            .cloned()
            .collect();
        if let Some(w) = leak(&text, &unasked) {
            panic!("{} {path} as the store token names {w:?}: {text}", r.method);
        }
        *counts.entry(format!("{e:?}")).or_default() += 1;
    }
    println!("walked {} routes in {:?}: {counts:?}", table.len(), t0.elapsed());

    // 2. what comes back is its store's, all of it
    let devices = json_of(&fleet, "/api/v1/devices", &store_op).await;
    assert_eq!(ids(&devices["devices"], "id"), mine);
    let alerts = json_of(&fleet, "/api/v1/alerts", &store_op).await;
    assert_eq!(
        ids(&alerts["alerts"], "device"),
        mine,
        "alerts of its machines, all of them"
    );
    let cmds = json_of(&fleet, &format!("/api/v1/devices/{a}/commands"), &store_op).await;
    assert!(ids(&cmds["commands"], "id").contains(&cmd_a), "{cmds}");
    assert!(
        cmds["commands"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["device"] == a.as_str())
    );
    assert_eq!(
        json_of(&fleet, &format!("/api/v1/commands/{cmd_a}"), &store_op).await["device"],
        a.as_str()
    );
    let history = eventually(Duration::from_secs(20), || async {
        let v = json_of(
            &fleet,
            &format!("/api/v1/devices/{a}/metrics?name=cpu.usage_pct"),
            &store_op,
        )
        .await;
        (!v["points"].as_array()?.is_empty()).then_some(v)
    })
    .await;
    assert!(history.is_some(), "its machine's history");
    let rollouts = json_of(&fleet, "/api/v1/rollouts", &store_op).await;
    assert_eq!(ids(&rollouts["rollouts"], "id"), [roll_a.clone()].into());
    assert_eq!(
        json_of(&fleet, &format!("/api/v1/rollouts/{roll_a}"), &store_op).await["id"],
        roll_a.as_str()
    );
    let silences = json_of(&fleet, "/api/v1/silences", &store_op).await;
    assert_eq!(ids(&silences["silences"], "id"), [sil_a].into());
    let windows = json_of(&fleet, "/api/v1/maintenance", &store_op).await;
    assert_eq!(ids(&windows["windows"], "name"), ["win-a".to_string()].into());
    let estate = json_of(&fleet, "/api/v1/estate", &store_op).await;
    assert_eq!(ids(&estate["stores"], "id"), ["sa1".to_string()].into());
    assert_eq!(estate["stores"][0]["machines"], 2);
    assert_eq!(ids(&estate["retailers"], "id"), ["coop".to_string()].into());
    let map = json_of(&fleet, "/api/v1/estate/map", &store_op).await;
    assert_eq!(ids(&map["stores"], "id"), ["sa1".to_string()].into());
    let store = json_of(&fleet, "/api/v1/estate/stores/sa1", &store_op).await;
    assert_eq!(ids(&store["machines"], "id"), mine);
    let avail = json_of(&fleet, "/api/v1/estate/availability", &store_op).await;
    assert_eq!(ids(&avail["machines"], "id"), mine, "{avail}");
    let audit = json_of(&fleet, "/api/v1/audit", &store_op).await;
    let targets: BTreeSet<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["target"].as_str())
        .collect();
    assert!(
        targets.contains(a.as_str()),
        "its machine's command is in the audit: {audit}"
    );
    let (s, export) = call(&fleet, "GET", "/api/v1/export?format=csv", &store_op, None).await;
    assert_eq!(s, 200);
    assert!(export.contains(&a) && leak(&export, &foreign).is_none());
    let (s, report) = call(&fleet, "GET", "/api/v1/report", &store_op, None).await;
    assert!(s == 200 && report.contains(&a));

    // 3. an operator of store A: 404 sending a command to a machine of store B, 201 to its own;
    // a rollout leaving the scope is refused
    let drop = json!({"action": "drop_caches", "reason": "scope test"});
    let (s, text) = call(
        &fleet,
        "POST",
        &format!("/api/v1/devices/{b}/commands"),
        &store_op,
        Some(&drop),
    )
    .await;
    assert_eq!(s, 404, "{text}");
    assert_eq!(
        text,
        call(
            &fleet,
            "POST",
            "/api/v1/devices/scp9999/commands",
            &store_op,
            Some(&drop)
        )
        .await
        .1
        .replace("scp9999", &b),
        "the same answer as for a machine that does not exist"
    );
    let (s, text) = call(
        &fleet,
        "POST",
        &format!("/api/v1/devices/{a}/commands"),
        &store_op,
        Some(&drop),
    )
    .await;
    assert_eq!(s, 201, "{text}");
    for target in [
        json!({"site": "sb1"}),
        json!({"devices": [a, b]}),
        json!("all"),
        json!({"tag": "x"}),
    ] {
        let body = json!({"action": "collect_diagnostics", "target": target, "per_minute": 5, "abort_failed_pct": 50, "reason": "scope"});
        let (s, text) = call(&fleet, "POST", "/api/v1/rollouts", &store_op, Some(&body)).await;
        assert_eq!(s, 403, "rollout to {target}: {text}");
    }
    let body = json!({"action": "collect_diagnostics", "target": {"site": "sa1"}, "per_minute": 5, "abort_failed_pct": 50, "reason": "scope"});
    assert_eq!(
        call(&fleet, "POST", "/api/v1/rollouts", &store_op, Some(&body))
            .await
            .0,
        201
    );
    let (s, _) = call(
        &fleet,
        "POST",
        &format!("/api/v1/alerts/{}/ack", alert_of(&a)),
        &store_op,
        Some(&json!({"comment": "mine"})),
    )
    .await;
    assert_eq!(s, 200, "its own alert can be acknowledged");

    // 4. the live stream: its machines, nothing else (an acknowledgement of a B alert is made
    // while it listens)
    let listen = stream_frames(&fleet, &store_op, Duration::from_secs(4));
    let poke = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let v = fleet
            .send(
                Method::POST,
                &format!("/api/v1/alerts/{}/ack", alert_of(&dev[2])),
                &admin,
                Some(json!({"comment": "while listening"})),
            )
            .await
            .unwrap();
        assert_eq!(v.0, 200, "{}", v.1);
    };
    let (frames, ()) = tokio::join!(listen, poke);
    assert!(
        frames.contains(&a) && frames.contains(&dev[1]),
        "its machines stream: {frames}"
    );
    if let Some(w) = leak(&frames, &foreign) {
        panic!("the store token's stream names {w:?}: {frames}");
    }
    let admin_frames = stream_frames(&fleet, &admin, Duration::from_secs(2)).await;
    assert!(
        admin_frames.contains(&b),
        "the unscoped stream carries store B: the check above can fail"
    );

    // 5. a retailer's token sees exactly its stores and their machines
    let estate = json_of(&fleet, "/api/v1/estate", &coop_viewer).await;
    assert_eq!(
        ids(&estate["stores"], "id"),
        ["sa1".to_string(), "sa2".to_string()].into()
    );
    let devices = json_of(&fleet, "/api/v1/devices", &coop_viewer).await;
    assert_eq!(ids(&devices["devices"], "id"), coop);
    let retailer = json_of(&fleet, "/api/v1/estate/retailers/coop", &coop_viewer).await;
    assert_eq!(retailer["stores"].as_array().unwrap().len(), 2);
    for p in ["/api/v1/estate/retailers/zrtl", "/api/v1/estate/stores/sb1"] {
        assert_eq!(call(&fleet, "GET", p, &coop_viewer, None).await.0, 404, "{p}");
    }
    assert_eq!(
        call(
            &fleet,
            "GET",
            &format!("/api/v1/devices/{}", dev[4]),
            &coop_viewer,
            None
        )
        .await
        .0,
        404,
        "a machine of no store is in no scope"
    );
    // /metrics: refused to a scoped token, served to an unscoped one
    let viewer = fleet.token("plain-viewer", Role::Viewer).unwrap();
    assert_eq!(call(&fleet, "GET", "/metrics", &coop_viewer, None).await.0, 403);
    assert_eq!(call(&fleet, "GET", "/metrics", &viewer, None).await.0, 200);
    println!("scope test done in {:?}", t0.elapsed());
    drop_sims(sims);
}

fn drop_sims(mut sims: SimFleet) {
    sims.stop();
}

/// With PostgreSQL the scope lives in `tokens.scope` (migration 0008) and the server reloads
/// the table every 2 s: a scoped token made through the API is still scoped after reloads.
/// (The scope checks themselves are in the HTTP layer, the same on both backends.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scope_a_store_token_stays_scoped_on_postgresql() {
    let fleet = TestFleet::start_on(Backend::Postgres).unwrap();
    let admin = fleet.admin.clone();
    let (s, v) = fleet
        .send(
            Method::PUT,
            "/api/v1/estate/retailers/coop",
            &admin,
            Some(json!({"name": "Coop"})),
        )
        .await
        .unwrap();
    assert_eq!(s, 200, "{v}");
    for id in ["pa1", "pa2"] {
        let store = json!({"id": id, "name": format!("Shop {id}"), "retailer": "coop", "time_zone": "UTC"});
        let (s, v) = fleet
            .send(
                Method::PUT,
                &format!("/api/v1/estate/stores/{id}"),
                &admin,
                Some(store),
            )
            .await
            .unwrap();
        assert_eq!(s, 200, "{v}");
    }
    let body = json!({"name": "pa1-viewer", "role": "viewer", "scope": {"site": "pa1"}});
    let (s, v) = fleet
        .send(Method::POST, "/api/v1/tokens", &admin, Some(body))
        .await
        .unwrap();
    assert_eq!(s, 201, "{v}");
    let token = v["token"].as_str().unwrap().to_string();
    tokio::time::sleep(fleet_server::pg::tokens::TOKEN_REFRESH * 2 + Duration::from_millis(500)).await;
    let estate = json_of(&fleet, "/api/v1/estate", &token).await;
    assert_eq!(ids(&estate["stores"], "id"), ["pa1".to_string()].into());
    assert_eq!(
        call(&fleet, "GET", "/api/v1/estate/stores/pa2", &token, None)
            .await
            .0,
        404
    );
    assert_eq!(
        json_of(&fleet, "/api/v1/whoami", &token).await["scope"],
        json!({"site": "pa1"})
    );
}

#[test]
fn scope_fleetctl_makes_lists_and_refuses_scopes_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin_path("fleetctl"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&[
        "token",
        "create",
        "--name",
        "mgr",
        "--role",
        "operator",
        "--scope",
        "site=oslo-1",
        "--data-dir",
        data,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("rvmf_") && err.contains("site=oslo-1"),
        "{out} {err}"
    );
    let (code, _, err) = run(&[
        "token",
        "create",
        "--name",
        "bad",
        "--scope",
        "shop=x",
        "--data-dir",
        data,
    ]);
    assert!(code != 0 && err.contains("scope"), "{err}");
    let (code, _, err) = run(&[
        "token",
        "create",
        "--name",
        "root",
        "--role",
        "admin",
        "--scope",
        "retailer=coop",
        "--data-dir",
        data,
    ]);
    assert!(code != 0 && err.contains("admin"), "{err}");
    let (code, out, err) = run(&["token", "list", "--data-dir", data]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("mgr\tOperator\tsite=oslo-1") && !out.contains("bad") && !out.contains("root"),
        "{out}"
    );
}
