//! Several `fleet-server` instances on one PostgreSQL (issue 21, item 4): the correlator is a
//! fleet-wide job on one leader, so a cause spread over the instances is one incident.
//!
//! Three `fleet-server run` processes (`heartbeat_ms = 500`, `lease_ms = 3000`), one throwaway
//! PostgreSQL, a real webhook receiver, one `rvm-sim simulate` process with fifteen machines
//! given all three brokers (each starts on the broker its id hashes to, so the test knows
//! where each machine is before it starts). Two machines on each instance run vision model
//! v3.3, the other nine v3.2; the scenario slows inference on one v3.3 machine of each
//! instance, then, later, on the other three. No instance holds more than two failing machines,
//! below the cohort's `min_devices = 3`: only a correlator that sees the whole fleet finds it.
//! In order:
//! 1. the first three fire: exactly one `cohort_regression` incident naming v3.3 opens,
//!    notified once, stored once, and `GET /api/v1/incidents` on each of the three instances
//!    lists it, with the members notified (the followers read it from the store);
//! 2. the instance leading `correlator` is killed (`kill -9`) and another takes the lease;
//! 3. the other three fire under the new leader: they join the incident the old one opened
//!    (six members), and no second incident opens;
//! 4. the faults end: the incident resolves, notified once; every alert was notified once.
//!
//! And at the store's level: an incident write with a lease token whose epoch another
//! instance took over is refused (`RVML1`) and lands nothing.
//!
//! Needs PostgreSQL 15 and the workspace's binaries (`cargo build --bins`); never skips.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::DeviceId;
use fleet_server::alerts::pg::PgAlerts;
use fleet_server::alerts::store::AlertStore;
use fleet_server::cluster::fence::is_fenced_store;
use fleet_server::cluster::lease::LeaseToken;
use fleet_server::incidents::incident::{Incident, IncidentKind, IncidentState};
use rvm_agent::link::brokers::start_index;
use rvm_fleet_tests::cluster::{Cluster, ClusterOptions, leader as leader_of, pg_store};
use rvm_fleet_tests::harness::ServerProc;
use rvm_fleet_tests::postgres::PgDatabase;
use rvm_fleet_tests::{Child, WebhookReceiver, eventually};
use serde_json::Value;

const IDS: [&str; 3] = ["a", "b", "c"];
const MACHINES: usize = 15;
const PREFIX: &str = "coh";
/// The first slow machines start at this second of the simulator's clock, the others later.
const FIRST_AT_S: u64 = 12;
const SECOND_AT_S: u64 = 40;
/// Both end here.
const COOL_AT_S: u64 = 65;
const RULES: &str = r#"
[[rules]]
name = "inference_slow"
metric = "app.inference_ms"
op = ">"
threshold = 150
clear = 120
for_s = 2
severity = "warning"
summary = "inference slower than 150 ms per frame"

[correlate.cohort]
min_devices = 3
min_pct = 50.0
max_others_pct = 10.0
min_others = 3
"#;

fn machine(i: usize) -> String {
    format!("{PREFIX}{i:04}")
}

/// The scenario: v3.3 on `v33`, inference slow on `first` then on `second`.
fn scenario(v33: &[usize], first: &[usize], second: &[usize]) -> String {
    let list = |m: &[usize]| m.iter().map(usize::to_string).collect::<Vec<_>>().join(",");
    format!(
        r#"name = "cohort-over-instances"
[[model]]
machines = "{}"
version = "v3.3"
[[event]]
name = "one v3.3 machine of each instance slows"
at_s = {FIRST_AT_S}
for_s = {}
fault = "inference_degraded"
machines = "{}"
[[event]]
name = "the other v3.3 machines slow"
at_s = {SECOND_AT_S}
for_s = {}
fault = "inference_degraded"
machines = "{}"
"#,
        list(v33),
        COOL_AT_S - FIRST_AT_S,
        list(first),
        COOL_AT_S - SECOND_AT_S,
        list(second),
    )
}

/// Webhook bodies about incidents, as (incident id, event).
fn incident_events(hook: &WebhookReceiver) -> Vec<(String, String)> {
    hook.bodies()
        .iter()
        .filter(|b| b["source"] == "incident")
        .map(|b| {
            (
                b["incident"]["id"].as_str().unwrap_or_default().to_string(),
                b["event"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Ids (`{alert}/{event}`) of the alert notifications.
fn alert_ids(hook: &WebhookReceiver) -> Vec<String> {
    hook.bodies()
        .iter()
        .filter(|b| b["source"] == "alert")
        .filter_map(|b| b["id"].as_str().map(str::to_string))
        .collect()
}

/// The strings of a JSON array, sorted.
fn names(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// The members of incident `id` among the open ones `GET /api/v1/incidents` on `s` lists.
async fn listed_open(s: &ServerProc, id: &str) -> Option<Vec<String>> {
    let list = s.get("/api/v1/incidents").await.ok()?;
    let open = list["open"].as_array()?;
    open.iter().find(|i| i["id"] == id).map(|i| names(&i["members"]))
}

/// The stored cohort incidents: (id, state, members).
fn stored_cohorts(pg: &PgDatabase) -> Vec<(String, String, usize)> {
    pg.psql(
        "SELECT id, state, coalesce(array_length(members, 1), 0) FROM incidents
         WHERE kind = 'cohort_regression' ORDER BY id",
    )
    .unwrap()
    .lines()
    .filter(|l| !l.trim().is_empty())
    .map(|l| {
        let f: Vec<&str> = l.split('|').map(str::trim).collect();
        (f[0].to_string(), f[1].to_string(), f[2].parse().unwrap_or(0))
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cohort_spread_over_three_instances_is_one_incident_notified_once_through_a_kill_of_the_correlator()
{
    // where each machine starts: two v3.3 machines on each instance, the rest v3.2
    let mut on: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..MACHINES {
        on.entry(start_index(&machine(i), IDS.len())).or_default().push(i);
    }
    assert!(
        on.values().all(|m| m.len() >= 4),
        "every instance starts with at least four machines: {on:?}"
    );
    let first: Vec<usize> = on.values().map(|m| m[0]).collect();
    let second: Vec<usize> = on.values().map(|m| m[1]).collect();
    let v33: Vec<usize> = first.iter().chain(&second).copied().collect();
    println!("machines by instance {on:?}; v3.3: {v33:?}");

    let mut cl = Cluster::start(
        &IDS,
        ClusterOptions {
            rules: Some(RULES),
            per_minute: Some(100),
            fast_leases: true,
            ..Default::default()
        },
    )
    .await;
    let scenario_file = cl.dir.path().join("scenario.toml");
    std::fs::write(&scenario_file, scenario(&v33, &first, &second)).unwrap();
    let leader = eventually(Duration::from_secs(15), || async {
        leader_of(&cl.servers[0], "correlator").await
    })
    .await
    .unwrap_or_else(|| panic!("nobody leads correlator\n{}", cl.logs()));
    println!("correlator led by {leader}");

    let (n, certs_dir, brokers) = (
        MACHINES.to_string(),
        cl.certs.root().to_string_lossy().into_owned(),
        cl.brokers().join(","),
    );
    let scenario_arg = scenario_file.to_string_lossy().into_owned();
    #[rustfmt::skip]
    let args = [
        "simulate", "--devices", &n, "--prefix", PREFIX, "--sites", "1", "--broker", &brokers,
        "--certs", &certs_dir, "--interval", "500", "--scenario", &scenario_arg,
    ];
    let _sim = Child::spawn("rvm-sim", &args, &cl.dir.path().join("sim.log")).unwrap();
    let (pg, hook) = (&cl.pg, &cl.hook);
    let started = Instant::now();

    // 1. one incident for the first three, which no instance holds more than one of
    let opened = eventually(Duration::from_secs(FIRST_AT_S + 30), || async {
        incident_events(hook).into_iter().find(|(_, e)| e == "opened")
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "no incident opened; stored {:?}, alerts notified {:?}\n{}",
            stored_cohorts(pg),
            alert_ids(hook),
            cl.logs()
        )
    });
    let incident = opened.0.clone();
    println!(
        "{incident} opened {:?} after the simulator started",
        started.elapsed()
    );
    let body = hook
        .bodies()
        .into_iter()
        .find(|b| b["source"] == "incident")
        .unwrap();
    assert_eq!(body["incident"]["kind"], "cohort_regression", "{body:#}");
    assert_eq!(body["incident"]["attribute"], "vision_model_version");
    assert_eq!(body["incident"]["attribute_value"], "v3.3");
    let owners: BTreeMap<String, String> = pg
        .psql("SELECT device, instance FROM session_owners")
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(d, o)| (d.trim().to_string(), o.trim().to_string()))
        .collect();
    let members: Vec<String> = body["incident"]["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d.as_str().map(str::to_string))
        .collect();
    let holders: std::collections::BTreeSet<&String> = members.iter().filter_map(|d| owners.get(d)).collect();
    println!("its machines {members:?} held by {holders:?}");
    assert_eq!(holders.len(), 3, "spread over the three instances: {owners:?}");

    // every instance lists it (the followers from the store), with the members notified
    let notified = names(&body["incident"]["members"]);
    let asked = Instant::now();
    for (s, id) in cl.servers.iter().zip(IDS) {
        let listed = eventually(Duration::from_secs(5), || async {
            listed_open(s, &incident).await.filter(|m| *m == notified)
        })
        .await;
        assert!(
            listed.is_some(),
            "instance {id} lists {incident} with {:?}, notified with {notified:?}",
            listed_open(s, &incident).await
        );
    }
    println!(
        "listed by all three with its {} members {:?} after the notification",
        notified.len(),
        asked.elapsed()
    );

    // 2. the correlator's leader dies
    let li = cl.index(&leader);
    cl.servers[li].kill9();
    let killed = Instant::now();
    let survivor = &cl.servers[(li + 1) % IDS.len()];
    let next = eventually(Duration::from_secs(10), || async {
        leader_of(survivor, "correlator").await.filter(|l| *l != leader)
    })
    .await
    .unwrap_or_else(|| panic!("nobody took correlator over\n{}", cl.logs()));
    println!("{next} leads correlator {:?} after the kill", killed.elapsed());

    // 3. the other three join the same incident
    let joined = eventually(Duration::from_secs(SECOND_AT_S + 30), || async {
        let c = stored_cohorts(pg);
        (c.len() == 1 && c[0].2 == 6).then_some(c)
    })
    .await;
    assert!(
        joined.is_some(),
        "stored {:?}; notified {:?}\n{}",
        stored_cohorts(pg),
        incident_events(hook),
        cl.logs()
    );
    println!("six members {:?} after the simulator started", started.elapsed());

    // 4. everything cools: resolved once, nothing opened twice
    let resolved = eventually(Duration::from_secs(COOL_AT_S + 40), || async {
        incident_events(hook).into_iter().find(|(_, e)| e == "resolved")
    })
    .await;
    assert!(
        resolved.is_some(),
        "never resolved: stored {:?}, notified {:?}\n{}",
        stored_cohorts(pg),
        incident_events(hook),
        cl.logs()
    );
    println!("resolved {:?} after the simulator started", started.elapsed());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let events = incident_events(hook);
    assert_eq!(
        events,
        [
            (incident.clone(), "opened".into()),
            (incident.clone(), "resolved".into())
        ],
        "one incident, opened and resolved once each"
    );
    let stored = stored_cohorts(pg);
    assert_eq!(stored, [(incident.clone(), "resolved".into(), 6)]);
    let all: i64 = pg
        .psql("SELECT count(*) FROM incidents")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(all, 1, "no other incident of any kind");
    let open = pg
        .psql("SELECT id || '|' || state || '|' || coalesce(opened_by, '') FROM alerts WHERE state <> 'resolved' ORDER BY id")
        .unwrap();
    assert_eq!(open, "", "every alert resolved in the store");
    let alerts = alert_ids(hook);
    let mut per: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &alerts {
        *per.entry(a.as_str()).or_default() += 1;
    }
    let firing = per.keys().filter(|a| a.ends_with("/firing")).count();
    assert_eq!(firing, 6, "every slow machine's alert notified: {alerts:?}");
    assert!(per.values().all(|n| *n == 1), "each notification once: {per:?}");
    for s in cl.servers.iter().filter(|s| s.pid().is_some()) {
        let h = s.get("/api/v1/health").await.unwrap();
        println!("{}: alerts {}", s.log.display(), h["alerts"]);
    }
}

/// The correlator's incident writes pass the lease fence: written while the token's epoch
/// holds the lease, refused with `RVML1` once another instance took it over (a leader frozen
/// past its lease), and nothing of the refused write lands.
#[test]
fn postgres_a_correlator_that_lost_its_lease_cannot_write_incidents() {
    let pg = PgDatabase::shared().unwrap();
    let alerts = PgAlerts::new(pg_store(&pg, 2)).opened_by("a");
    pg.psql(
        "INSERT INTO leader_lease (name, holder, epoch, expires_at)
         VALUES ('correlator', 'a', 7, now() + interval '1 hour')",
    )
    .unwrap();
    let token = LeaseToken {
        name: "correlator".into(),
        holder: "a".into(),
        epoch: 7,
        lease_ms: 3_000,
    };
    let mut incident = Incident {
        id: "cohort_regression-1".into(),
        kind: IncidentKind::CohortRegression,
        title: "inference_slow on machines with vision_model_version = v3.3".into(),
        probable_cause: "vision_model_version = v3.3: 3 of 6".into(),
        site: None,
        attribute: Some("vision_model_version".into()),
        attribute_value: Some("v3.3".into()),
        rule: Some("inference_slow".into()),
        metric: Some("app.inference_ms".into()),
        devices: vec![DeviceId::new("coh0000").unwrap()],
        members: vec!["inference_slow:coh0000:1".into()],
        active_members: vec!["inference_slow:coh0000:1".into()],
        suppresses_members: false,
        opened_ms: 1_000,
        updated_ms: 1_000,
        resolved_ms: None,
        state: IncidentState::Open,
    };
    alerts.write_incidents(&token, &[incident.clone()]).unwrap();
    let stored = || {
        pg.psql("SELECT id || '|' || state || '|' || array_length(members, 1) FROM incidents")
            .unwrap()
    };
    assert_eq!(stored(), "cohort_regression-1|open|1");
    // another instance takes the lease over
    pg.psql("UPDATE leader_lease SET holder = 'b', epoch = 8 WHERE name = 'correlator'")
        .unwrap();
    incident.members.push("inference_slow:coh0001:1".into());
    let refused = alerts.write_incidents(&token, &[incident.clone()]).unwrap_err();
    assert!(is_fenced_store(&refused), "{refused}");
    assert_eq!(stored(), "cohort_regression-1|open|1", "nothing of it landed");
    // the new holder writes
    let theirs = LeaseToken {
        holder: "b".into(),
        epoch: 8,
        ..token
    };
    alerts.write_incidents(&theirs, &[incident]).unwrap();
    assert_eq!(stored(), "cohort_regression-1|open|2");
}
