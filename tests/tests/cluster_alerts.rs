//! Several fleet-server instances on one PostgreSQL (issue 21, item 5): an alert is evaluated
//! by the instance that holds its machine's session, and notified once however often the
//! machine moves. Real processes on a throwaway PostgreSQL (a database of the binary's shared
//! cluster each), a real webhook receiver on 127.0.0.1; the store-level race between two
//! instances' claims is run against the same PostgreSQL. Needs Debian's PostgreSQL 15
//! (`.ci/run` installs it).

use std::sync::Arc;
use std::time::Duration;

use common::DeviceId;
use common::pki::CertDir;
use fleet_server::alerts::alert::{Alert, AlertState, DeviceInfo};
use fleet_server::alerts::engine::AlertEngine;
use fleet_server::alerts::pg::PgAlerts;
use fleet_server::alerts::rules::parse_rules;
use fleet_server::alerts::store::{AlertStore, Claim};
use fleet_server::incidents::Correlator;
use rvm_fleet_tests::cluster::{Cluster, ClusterOptions, pg_store};
use rvm_fleet_tests::harness::ServerProc;
use rvm_fleet_tests::postgres::PgDatabase;
use rvm_fleet_tests::{Child, WebhookReceiver, eventually};
use serde_json::Value;

/// The simulator's overheating fault holds the GPU at 83 to 89 C; its normal walk stays
/// under 70.
const RULES: &str = r#"
[[rules]]
name = "gpu_hot"
metric = "gpu.temp_c"
op = ">"
threshold = 80
clear = 75
severity = "warning"
summary = "GPU above 80 C"
"#;

/// On instance A: overheating, cooled, overheating again (the second alert of the pair is the
/// one that is firing when the machine moves).
const ON_A: &str = r#"
name = "twice-hot"
[[event]]
name = "hot"
at_s = 0
for_s = 5
fault = "overheating"
machines = "0"
[[event]]
name = "hot again"
at_s = 9
fault = "overheating"
machines = "0"
"#;

/// On instance B, after the move: still hot for a while, then cooled.
const ON_B: &str = r#"
name = "hot-then-cool"
[[event]]
name = "still hot"
at_s = 0
for_s = 12
fault = "overheating"
machines = "0"
"#;

const DEVICE: &str = "move0000";

fn spawn_sim(certs: &CertDir, mqtt: u16, scenario: &std::path::Path, log: &std::path::Path) -> Child {
    let broker = format!("127.0.0.1:{mqtt}");
    let certs = certs.root().to_string_lossy().into_owned();
    let scenario = scenario.to_string_lossy().into_owned();
    #[rustfmt::skip]
    let args = [
        "simulate", "--devices", "1", "--first", "0", "--prefix", "move", "--broker", &broker,
        "--certs", &certs, "--interval", "300", "--sites", "1", "--scenario", &scenario,
    ];
    Child::spawn("rvm-sim", &args, log).unwrap()
}

/// Ids (`{alert}/{event}`) of the notifications the receiver got about `gpu_hot`, in order.
fn received(hook: &WebhookReceiver) -> Vec<String> {
    hook.bodies()
        .iter()
        .filter_map(|b| b["id"].as_str().map(str::to_string))
        .filter(|id| id.starts_with("gpu_hot:"))
        .collect()
}

fn count(ids: &[String], id: &str) -> usize {
    ids.iter().filter(|i| *i == id).count()
}

/// Two instances A and B; a machine overheats on A twice (its alert's second generation
/// fires there and is notified); it moves to B (its simulator restarted on B's broker) while
/// still hot. B adopts the stored alert: the firing is not notified again, the table keeps
/// one open row, and when it cools the resolve of that alert is notified, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_alert_firing_when_its_machine_moves_to_another_instance_is_notified_once_and_resolved_once()
 {
    machine_moves(false).await;
}

/// The same when A is killed (`kill -9`) as the machine leaves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_alert_firing_when_its_instance_is_killed_is_notified_once_and_resolved_once_by_the_next()
{
    machine_moves(true).await;
}

async fn machine_moves(kill_a: bool) {
    // two instances with the default leases
    let mut cl = Cluster::start(
        &["a", "b"],
        ClusterOptions {
            rules: Some(RULES),
            ..Default::default()
        },
    )
    .await;
    let (pg, hook, certs, dir) = (&cl.pg, &cl.hook, &cl.certs, &cl.dir);
    let (on_a, on_b) = (dir.path().join("on_a.toml"), dir.path().join("on_b.toml"));
    std::fs::write(&on_a, ON_A).unwrap();
    std::fs::write(&on_b, ON_B).unwrap();
    let started = std::time::Instant::now();
    let mut sim = spawn_sim(certs, cl.servers[0].mqtt, &on_a, &dir.path().join("sim_a.log"));
    let second = format!("gpu_hot:{DEVICE}:2");
    let fired = eventually(Duration::from_secs(40), || async {
        received(hook).contains(&format!("{second}/firing")).then_some(())
    })
    .await;
    assert!(
        fired.is_some(),
        "no second firing on A: {:?}\n{}",
        received(hook),
        rvm_fleet_tests::read(&cl.servers[0].log)
    );
    let on_a_ids = received(hook);
    println!("on A after {:?}: {on_a_ids:?}", started.elapsed());
    assert_eq!(
        on_a_ids,
        [
            format!("gpu_hot:{DEVICE}:1/firing"),
            format!("gpu_hot:{DEVICE}:1/resolved"),
            format!("{second}/firing"),
        ]
    );

    // the machine moves to B, still hot
    sim.kill9();
    if kill_a {
        cl.servers[0].kill9();
    }
    let b = &cl.servers[1];
    let moved = std::time::Instant::now();
    let _sim_b = spawn_sim(certs, b.mqtt, &on_b, &dir.path().join("sim_b.log"));
    let open = || {
        pg.psql("SELECT id || '|' || state || '|' || coalesce(opened_by, '') FROM alerts WHERE state IN ('pending', 'firing') ORDER BY id")
            .unwrap()
    };
    // B evaluates it (its records arrive there) for a while, hot
    let on_b = eventually(Duration::from_secs(20), || async {
        let s = b.get("/api/v1/alerts").await.ok()?;
        let ids = alert_ids(&s);
        ids.contains(&second).then_some(ids)
    })
    .await;
    assert!(
        on_b.is_some(),
        "B never held {second}: {}",
        rvm_fleet_tests::read(&b.log)
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        open(),
        format!("{second}|firing|a"),
        "one open row, the one A opened"
    );
    assert_eq!(
        received(hook),
        on_a_ids,
        "nothing more notified while it stays hot on B"
    );

    // it cools on B: the resolve of the alert A fired, once
    let resolved = eventually(Duration::from_secs(40), || async {
        received(hook)
            .contains(&format!("{second}/resolved"))
            .then_some(())
    })
    .await;
    assert!(
        resolved.is_some(),
        "the resolve never came: {:?}\n{}",
        received(hook),
        rvm_fleet_tests::read(&b.log)
    );
    println!("resolved {:?} after the move", moved.elapsed());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let all = received(hook);
    assert_eq!(count(&all, &format!("{second}/firing")), 1, "{all:?}");
    assert_eq!(count(&all, &format!("{second}/resolved")), 1, "{all:?}");
    assert_eq!(all.len(), 4, "nothing else about the rule: {all:?}");
    assert_eq!(open(), "", "nothing left open");
    let rows = pg
        .psql("SELECT id || '|' || state || '|' || coalesce(opened_by, '') FROM alerts ORDER BY id")
        .unwrap();
    assert_eq!(
        rows,
        format!("gpu_hot:{DEVICE}:1|resolved|a\n{second}|resolved|a"),
        "no alert of B's own"
    );
    // before, B's export met A's open alert at every tick and was refused whole
    for s in &cl.servers {
        let log = rvm_fleet_tests::read(&s.log);
        let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
        println!("{}: {} error lines {errors:#?}", s.log.display(), errors.len());
        let refused = errors.iter().filter(|l| l.contains("alerts_one_open")).count();
        assert_eq!(refused, 0, "{errors:#?}");
    }
    // B took A's alert in (on the machine's first records, or by losing its claim), and the
    // store always answered
    let health = b.get("/api/v1/health").await.unwrap();
    let stats = health.pointer("/alerts").cloned().unwrap_or(Value::Null);
    println!("B's alerts actor: {stats}");
    assert!(stats["adopted"].as_u64() >= Some(1), "{stats}");
    assert_eq!(stats["shared_errors"], 0, "{stats}");
}

fn alert_ids(v: &Value) -> Vec<String> {
    let list = v
        .get("alerts")
        .or_else(|| v.get("active"))
        .and_then(Value::as_array)
        .cloned()
        .or_else(|| v.as_array().cloned())
        .unwrap_or_default();
    list.iter()
        .filter_map(|a| a["id"].as_str().map(str::to_string))
        .collect()
}

/// Generation `g` of gpu_hot on rvm1 as an engine opens it at `at`.
fn build_alert(g: u64, at: i64) -> Alert {
    let mut e = AlertEngine::new(parse_rules(RULES).unwrap().rules);
    let d = DeviceInfo::new(DeviceId::new("rvm1").unwrap());
    let hot = [("gpu.temp_c".to_string(), 90.0)];
    let cool = [("gpu.temp_c".to_string(), 10.0)];
    for _ in 1..g {
        e.observe(&d, &hot, 0);
        e.observe(&d, &cool, 0);
    }
    e.observe(&d, &hot, at)[0].alert.clone()
}

/// Both instances open an alert of one (rule, device) at once: the unique open alert decides,
/// one claim wins, the other is told the winner's alert; the same id made by two instances
/// is still one instance's; a generation taken meanwhile says so; an export holding the
/// loser's alert is written without it instead of failing.
#[test]
fn postgres_two_instances_claiming_one_rule_and_device_one_wins_and_the_other_gets_its_alert() {
    let pg = PgDatabase::shared().unwrap();
    let store = pg_store(&pg, 4);
    let a = Arc::new(PgAlerts::new(store.clone()).opened_by("a"));
    let b = Arc::new(PgAlerts::new(store.clone()).opened_by("b"));
    a.load().unwrap();
    b.load().unwrap();
    let (mine, theirs) = (build_alert(1, 1_000), build_alert(2, 2_000));
    // at once, many times over: exactly one winner each round
    let t0 = std::time::Instant::now();
    for round in 0..20u64 {
        let (x, y) = (
            build_alert(1 + 2 * round, 1_000),
            build_alert(2 + 2 * round, 2_000),
        );
        let (ta, tb) = (a.clone(), b.clone());
        let (xa, yb) = (x.clone(), y.clone());
        let ha = std::thread::spawn(move || ta.claim(&xa).unwrap());
        let hb = std::thread::spawn(move || tb.claim(&yb).unwrap());
        let (ra, rb) = (ha.join().unwrap(), hb.join().unwrap());
        match (&ra, &rb) {
            (Claim::Won, Claim::Lost(s)) => assert_eq!(**s, x, "round {round}"),
            (Claim::Lost(s), Claim::Won) => assert_eq!(**s, y, "round {round}"),
            other => panic!("round {round}: {other:?}"),
        }
        let open = pg
            .psql("SELECT count(*) FROM alerts WHERE state IN ('pending', 'firing')")
            .unwrap();
        assert_eq!(open, "1", "round {round}");
        pg.psql("UPDATE alerts SET state = 'resolved', resolved_at = now()")
            .unwrap();
    }
    println!("20 rounds of two concurrent claims in {:?}", t0.elapsed());
    pg.psql("DELETE FROM alerts").unwrap();

    // the same id from both: the one whose insert made the row
    assert_eq!(a.claim(&mine).unwrap(), Claim::Won);
    assert_eq!(a.claim(&mine).unwrap(), Claim::Won, "asked again: still a's");
    let mut same_id = mine.clone();
    same_id.fired_ms = Some(5_000);
    assert_eq!(b.claim(&same_id).unwrap(), Claim::Lost(Box::new(mine.clone())));

    // resolved on a; b, behind, opens generation 1 again: taken
    let corr = Correlator::new(parse_rules(RULES).unwrap().correlate).export();
    let mut done = mine.clone();
    done.state = AlertState::Resolved;
    done.resolved_ms = Some(3_000);
    let mut engine_a = AlertEngine::new(parse_rules(RULES).unwrap().rules).export();
    engine_a.history = vec![done];
    a.save(&engine_a, &corr).unwrap();
    assert_eq!(b.claim(&mine).unwrap(), Claim::Stale { generation: 1 });

    // b's export with its own open alert while a's is open: written without it
    assert_eq!(a.claim(&theirs).unwrap(), Claim::Won);
    let mut engine_b = AlertEngine::new(parse_rules(RULES).unwrap().rules).export();
    let mut b_own = build_alert(3, 4_000);
    b_own.labels.insert("by".into(), "b".into());
    engine_b.active = vec![b_own];
    b.save(&engine_b, &corr).unwrap();
    let rows = pg
        .psql("SELECT id || '|' || state || '|' || opened_by FROM alerts ORDER BY id")
        .unwrap();
    assert_eq!(rows, "gpu_hot:rvm1:1|resolved|a\ngpu_hot:rvm1:2|firing|a");
    // and the device as a newcomer instance reads it
    let loaded = b.load_device(&DeviceId::new("rvm1").unwrap()).unwrap();
    assert_eq!(loaded.open, vec![theirs]);
    assert_eq!(loaded.generations[0].generation, 2);
}

/// Every machine overheats for a minute.
const ALL_HOT: &str = r#"
name = "all-hot"
[[event]]
name = "hot"
at_s = 2
for_s = 90
fault = "overheating"
machines = "0-5"
"#;

async fn post(s: &ServerProc, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(s.url(path))
        .bearer_auth(&s.token)
        .json(&body)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The firing alerts `s` lists, sorted.
async fn firing(s: &ServerProc) -> Option<Vec<String>> {
    let mut v = alert_ids(&s.get("/api/v1/alerts?state=firing").await.ok()?);
    v.sort();
    Some(v)
}

fn audited(pg: &PgDatabase, action: &str, target: &str) -> usize {
    pg.psql(&format!(
        "SELECT count(*) FROM audit WHERE action = '{action}' AND target = '{target}'"
    ))
    .unwrap()
    .trim()
    .parse()
    .unwrap()
}

/// Three instances, six overheating machines spread over them (issue 21, item 7 for alerts):
/// every instance lists the same six firing alerts; an acknowledgement sent to B of an alert
/// A evaluates takes effect once (a second one, to C, is refused with 409), is audited once,
/// is taken in by A and survives A's later exports; a resolve by hand sent to C of another of
/// A's alerts resolves it, A notifies its resolution once, and it is audited once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_every_instance_lists_acks_and_resolves_the_whole_fleets_alerts_once() {
    let ids = ["a", "b", "c"];
    let cl = Cluster::start(
        &ids,
        ClusterOptions {
            rules: Some(RULES),
            per_minute: Some(100),
            fast_leases: true,
            ..Default::default()
        },
    )
    .await;
    let (pg, hook, certs, dir, servers) = (&cl.pg, &cl.hook, &cl.certs, &cl.dir, &cl.servers);
    let scenario = dir.path().join("hot.toml");
    std::fs::write(&scenario, ALL_HOT).unwrap();
    let brokers = cl.brokers();
    let (brokers, certs_dir, scenario) = (
        brokers.join(","),
        certs.root().to_string_lossy().into_owned(),
        scenario.to_string_lossy().into_owned(),
    );
    #[rustfmt::skip]
    let args = [
        "simulate", "--devices", "6", "--prefix", "hot", "--broker", &brokers, "--certs",
        &certs_dir, "--interval", "300", "--sites", "1", "--scenario", &scenario,
    ];
    let _sim = Child::spawn("rvm-sim", &args, &dir.path().join("sim.log")).unwrap();

    // every instance lists all six, whichever instance fired them
    let t0 = std::time::Instant::now();
    let mut lists = Vec::new();
    for (s, id) in servers.iter().zip(ids) {
        let six = eventually(Duration::from_secs(40), || async {
            firing(s).await.filter(|v| v.len() == 6)
        })
        .await;
        assert!(
            six.is_some(),
            "{id} lists {:?}\n{}",
            firing(s).await,
            rvm_fleet_tests::read(&s.log)
        );
        lists.push(six.unwrap());
    }
    println!(
        "every instance lists the six alerts {:?} after the simulator started",
        t0.elapsed()
    );
    assert!(lists.iter().all(|l| *l == lists[0]), "{lists:?}");
    let opened_by: Vec<(String, String)> = pg
        .psql("SELECT id, opened_by FROM alerts WHERE state = 'firing' ORDER BY id")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(i, o)| (i.trim().to_string(), o.trim().to_string()))
        .collect();
    let per: std::collections::BTreeSet<&str> = opened_by.iter().map(|(_, o)| o.as_str()).collect();
    println!("alerts by instance {opened_by:?}");
    // the first instance holding two or more: one to acknowledge, one to resolve
    let holder = ids
        .iter()
        .copied()
        .find(|i| opened_by.iter().filter(|(_, o)| o == i).count() >= 2)
        .unwrap_or_else(|| panic!("no instance holds two: {opened_by:?}"));
    assert!(per.len() >= 2, "spread over instances: {opened_by:?}");
    let hi = ids.iter().position(|i| *i == holder).unwrap();
    let (other, third) = (&servers[(hi + 1) % 3], &servers[(hi + 2) % 3]);
    let mine: Vec<&String> = opened_by
        .iter()
        .filter(|(_, o)| o == holder)
        .map(|(i, _)| i)
        .collect();
    let (to_ack, to_resolve) = (mine[0].clone(), mine[1].clone());

    // acknowledged on another instance: once
    let (status, body) = post(
        other,
        &format!("/api/v1/alerts/{to_ack}/ack"),
        serde_json::json!({"comment": "on it"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ack"]["comment"], "on it", "{body}");
    let (status, body) = post(
        third,
        &format!("/api/v1/alerts/{to_ack}/ack"),
        serde_json::json!({"comment": "me too"}),
    )
    .await;
    assert_eq!(status, 409, "a second acknowledgement: {body}");
    let holder_log = servers[hi].log.clone();
    let taken = eventually(Duration::from_secs(10), || async {
        let log = rvm_fleet_tests::read(&holder_log);
        log.lines()
            .any(|l| l.contains("acknowledged on another instance") && l.contains(&to_ack))
            .then_some(())
    })
    .await;
    assert!(
        taken.is_some(),
        "{holder} never took it in\n{}",
        rvm_fleet_tests::read(&holder_log)
    );
    // the holder keeps exporting the hot machine's samples: the acknowledgement stays
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (s, id) in servers.iter().zip(ids) {
        let list = s.get("/api/v1/alerts?state=acknowledged").await.unwrap();
        let acked = list["alerts"].as_array().unwrap();
        assert_eq!(acked.len(), 1, "{id}: {list}");
        assert_eq!(acked[0]["id"], to_ack.as_str());
        assert_eq!(acked[0]["ack"]["comment"], "on it");
    }
    assert_eq!(audited(pg, "ack", &to_ack), 1);

    // resolved by hand on the third instance: notified once, by the holder
    let (status, body) = post(
        third,
        &format!("/api/v1/alerts/{to_resolve}/resolve"),
        serde_json::json!({"comment": "fan replaced"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "resolved", "{body}");
    let (status, _) = post(
        other,
        &format!("/api/v1/alerts/{to_resolve}/resolve"),
        serde_json::json!({"comment": "again"}),
    )
    .await;
    assert_eq!(status, 409, "resolved already");
    let resolved = format!("{to_resolve}/resolved");
    let notified = eventually(Duration::from_secs(15), || async {
        received(hook).contains(&resolved).then_some(())
    })
    .await;
    assert!(
        notified.is_some(),
        "{:?}\n{}",
        received(hook),
        rvm_fleet_tests::read(&holder_log)
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let all = received(hook);
    assert_eq!(count(&all, &resolved), 1, "{all:?}");
    assert_eq!(count(&all, &format!("{to_ack}/firing")), 1, "{all:?}");
    let row = pg
        .psql(&format!("SELECT state || '|' || resolved_by || '|' || resolve_comment FROM alerts WHERE id = '{to_resolve}'"))
        .unwrap();
    assert!(
        row.starts_with("resolved|") && row.ends_with("|fan replaced"),
        "{row}"
    );
    assert_eq!(audited(pg, "resolve", &to_resolve), 1);
    for s in servers {
        let listed = firing(s).await.unwrap();
        assert!(!listed.contains(&to_resolve), "{listed:?}");
    }
}
