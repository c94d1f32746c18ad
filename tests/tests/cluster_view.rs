//! Several `fleet-server` instances on one PostgreSQL (issue 21, items 6 and 7): every instance
//! shows the whole fleet, and presence and site outages are judged fleet-wide, once.
//!
//! Three `fleet-server run` processes (`heartbeat_ms = 500`, `lease_ms = 3000`, presence
//! stale after 3 s and offline after 6 s), one throwaway PostgreSQL, a real webhook receiver,
//! two `rvm-sim simulate` processes: `dn`, six machines of site `site1` given the brokers of
//! the two instances that do *not* lead `presence` (so they spread over two instances, and
//! the presence judge knows them only through the store), and `up`, twelve machines of sites
//! `site1` and `site2` given all three brokers. In order:
//! 1. `GET /api/v1/devices` on each instance lists all 18 machines, online, with a record
//!    stored less than [`FRESH`] ago and their metrics, whichever instance holds them;
//! 2. the live stream of one instance carries updates of the machines held by another, each
//!    within [`LIVE_BOUND`] of that one storing it (the delays are printed);
//! 3. the `dn` simulator is killed (`kill -9`): a real site outage spread over two instances
//!    (neither of them the presence judge) opens exactly one `site_outage` incident, notified
//!    exactly once, and no machine's offline alert is notified alone;
//! 4. the instance leading `presence` is killed (`kill -9`): its machines move, and no other
//!    incident is opened, no offline alert fires for an `up` machine, nothing more is notified;
//! 5. site1's machines come back: the new judge resolves the outage the old one opened, and
//!    its resolution is notified once.
//!
//! Needs PostgreSQL 15 and the workspace's binaries (`cargo build --bins`); never skips.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::pki::CertDir;
use rvm_fleet_tests::cluster::{Cluster, ClusterOptions, leader as leader_of};
use rvm_fleet_tests::harness::ServerProc;
use rvm_fleet_tests::postgres::PgDatabase;
use rvm_fleet_tests::{Child, WebhookReceiver, eventually};
use serde_json::Value;

const IDS: [&str; 3] = ["a", "b", "c"];
/// `dn` machines (site1, brokers A and B) and `up` machines (site1 and site2, every broker).
const DN: usize = 6;
const UP: usize = 12;
const INTERVAL_MS: &str = "500";
/// A listed machine's last record was stored at most this long ago (its collection
/// interval, a batch, the fleet-wide view's read every second).
const FRESH: Duration = Duration::from_secs(3);
/// What the fleet-wide view promises the live stream: its read every second and the fleet
/// actor's tick every second, plus a second for a loaded 2-core machine.
const LIVE_BOUND: Duration = Duration::from_secs(3);
/// Offline after 6 s of silence; the site outage window and the offline hold are 30 s.
const PRESENCE: &str = "[presence]\nstale_after_s = 3\noffline_after_s = 6\n";
const RULES: &str = r#"
[[rules]]
name = "device_offline"
metric = "presence.offline"
op = ">"
threshold = 0
severity = "critical"
summary = "device is offline"

[correlate.site_outage]
min_devices = 3
min_pct = 50.0
min_devices_for_pct = 2
window_s = 30
"#;

fn now_ms() -> i64 {
    common::time::now_ms()
}

fn psql_rows(pg: &PgDatabase, sql: &str) -> Vec<Vec<String>> {
    pg.psql(sql)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('|').map(|f| f.trim().to_string()).collect())
        .collect()
}

/// Machine -> instance holding its session.
fn owners(pg: &PgDatabase) -> BTreeMap<String, String> {
    psql_rows(pg, "SELECT device, instance FROM session_owners")
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect()
}

fn sim(
    certs: &CertDir,
    prefix: &str,
    devices: usize,
    sites: &str,
    brokers: &[String],
    log: &std::path::Path,
) -> Child {
    let (n, certs, brokers) = (
        devices.to_string(),
        certs.root().to_string_lossy().into_owned(),
        brokers.join(","),
    );
    #[rustfmt::skip]
    let args = [
        "simulate", "--devices", &n, "--prefix", prefix, "--sites", sites, "--broker", &brokers,
        "--certs", &certs, "--interval", INTERVAL_MS,
    ];
    Child::spawn("rvm-sim", &args, log).unwrap()
}

/// Notification ids (`{alert or incident}/{event}`) the receiver got.
fn received(hook: &WebhookReceiver) -> Vec<String> {
    hook.bodies()
        .iter()
        .filter_map(|b| b["id"].as_str().map(str::to_string))
        .collect()
}

/// An open event stream (as tests/tests/web.rs reads one).
struct Stream {
    resp: reqwest::Response,
    buf: String,
}

impl Stream {
    async fn open(s: &ServerProc) -> Stream {
        let url = s.url(&format!("/api/v1/stream?token={}", s.token));
        let resp = reqwest::Client::new().get(url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        Stream {
            resp,
            buf: String::new(),
        }
    }

    /// The next JSON event, or None after `within`.
    async fn next(&mut self, within: Duration) -> Option<Value> {
        let deadline = Instant::now() + within;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                for line in frame.lines() {
                    if let Some(data) = line.strip_prefix("data: ") {
                        return Some(serde_json::from_str(data).unwrap());
                    }
                }
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.resp.chunk()).await {
                Ok(Ok(Some(c))) => self.buf.push_str(&String::from_utf8_lossy(&c)),
                _ => return None,
            }
        }
    }
}

/// The machines `s` lists online, with a record stored less than [`FRESH`] ago and metrics.
async fn listed(s: &ServerProc) -> Option<BTreeSet<String>> {
    let list = s.get("/api/v1/devices").await.ok()?;
    let now = now_ms();
    let fresh = list["devices"]
        .as_array()?
        .iter()
        .filter(|d| d["status"] == "online")
        .filter(|d| now - d["last_seen_ms"].as_i64().unwrap_or(0) < FRESH.as_millis() as i64)
        .filter(|d| d["metrics"]["cpu.usage_pct"].is_number())
        .filter_map(|d| d["id"].as_str().map(str::to_string))
        .collect();
    Some(fresh)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_shows_the_whole_fleet_and_one_site_outage_is_one_incident_whichever_instances_hold_it()
 {
    let mut cl = Cluster::start(
        &IDS,
        ClusterOptions {
            rules: Some(RULES),
            fast_leases: true,
            extra: PRESENCE,
            ..Default::default()
        },
    )
    .await;
    let (pg, hook, certs, dir) = (&cl.pg, &cl.hook, &cl.certs, &cl.dir);
    // the site goes to the two instances that do not judge presence: the judge sees all of
    // its machines only through the store
    let judge = eventually(Duration::from_secs(15), || async {
        leader_of(&cl.servers[0], "presence").await
    })
    .await
    .unwrap_or_else(|| panic!("nobody leads presence\n{}", cl.logs()));
    let others: Vec<usize> = (0..IDS.len()).filter(|i| IDS[*i] != judge).collect();
    let (src, viewer) = (IDS[others[0]], IDS[others[1]]);
    println!("presence judged by {judge}; site1's dn machines on {src} and {viewer}");
    let brokers = cl.brokers();
    let dn_brokers: Vec<String> = others.iter().map(|i| brokers[*i].clone()).collect();
    let mut dn = sim(certs, "dn", DN, "1", &dn_brokers, &dir.path().join("dn.log"));
    let _up = sim(certs, "up", UP, "2", &brokers, &dir.path().join("up.log"));

    // 1. every instance lists every machine, fresh, wherever it is served
    let all = DN + UP;
    let started = Instant::now();
    for (s, id) in cl.servers.iter().zip(IDS) {
        let whole = eventually(Duration::from_secs(45), || async {
            listed(s).await.filter(|f| f.len() == all)
        })
        .await;
        assert!(
            whole.is_some(),
            "instance {id} lists {:?} fresh of {all}\n{}",
            listed(s).await,
            cl.logs()
        );
    }
    println!(
        "every instance lists all {all} machines fresh {:?} after the simulators started",
        started.elapsed()
    );
    let held = owners(pg);
    let mut per: BTreeMap<&str, usize> = BTreeMap::new();
    for o in held.values() {
        *per.entry(o.as_str()).or_default() += 1;
    }
    println!("sessions per instance: {per:?}");
    let dn_on = |inst: &str| {
        held.iter()
            .filter(|(d, o)| d.starts_with("dn") && *o == inst)
            .count()
    };
    assert!(
        dn_on(src) > 0 && dn_on(viewer) > 0,
        "site1's dn machines not spread over {src} and {viewer}: {held:?}\n--- dn:\n{}\n{}",
        rvm_fleet_tests::read(&dir.path().join("dn.log")),
        cl.logs()
    );
    // a second look, a few seconds on: still every machine, still fresh, on every instance
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (s, id) in cl.servers.iter().zip(IDS) {
        let n = listed(s).await.map_or(0, |f| f.len());
        assert_eq!(n, all, "instance {id}");
    }

    // 2. B's live stream carries A's machines
    let on_src: BTreeSet<String> = held
        .iter()
        .filter(|(_, o)| *o == src)
        .map(|(d, _)| d.clone())
        .collect();
    let mut stream = Stream::open(&cl.servers[others[1]]).await;
    let mut delays: Vec<i64> = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        let Some(ev) = stream.next(Duration::from_secs(3)).await else {
            break;
        };
        if ev["type"] != "devices" {
            continue;
        }
        let at = now_ms();
        for d in ev["devices"].as_array().into_iter().flatten() {
            let id = d["id"].as_str().unwrap_or_default();
            if on_src.contains(id) && d["status"] == "online" {
                seen.insert(id.to_string());
                delays.push(at - d["last_seen_ms"].as_i64().unwrap_or(0));
            }
        }
    }
    drop(stream);
    delays.sort_unstable();
    assert!(
        !delays.is_empty(),
        "no update of {src}'s machines {on_src:?} on {viewer}'s stream"
    );
    let (p50, max) = (delays[delays.len() / 2], delays[delays.len() - 1]);
    println!(
        "{viewer}'s stream: {} updates of {} of {src}'s {} machines in 8 s; stored by {src} -> on {viewer}'s stream: median {p50} ms, max {max} ms",
        delays.len(),
        seen.len(),
        on_src.len()
    );
    assert_eq!(
        seen, on_src,
        "every machine of {src} updated on {viewer}'s stream"
    );
    assert!(max < LIVE_BOUND.as_millis() as i64, "delays {delays:?}");

    // 3. a real site outage spread over a and b: one incident, notified once
    let outage = Instant::now();
    dn.kill9();
    let opened = || {
        received(hook)
            .into_iter()
            .filter(|id| id.starts_with("site_outage") && id.ends_with("/opened"))
            .collect::<Vec<_>>()
    };
    let first = eventually(Duration::from_secs(40), || async {
        let o = opened();
        (!o.is_empty()).then_some(o)
    })
    .await;
    assert!(
        first.is_some(),
        "no site outage notified: {:?}\n{}",
        received(hook),
        cl.logs()
    );
    println!("site outage notified {:?} after the kill of dn", outage.elapsed());
    // past the offline hold (30 s), so a separately notified offline alert would be in
    tokio::time::sleep(Duration::from_secs(32)).await;
    let incidents = psql_rows(
        pg,
        "SELECT id, site, cardinality(devices) FROM incidents ORDER BY id",
    );
    println!("incidents: {incidents:?}; notifications: {:?}", received(hook));
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!(incidents[0][1], "site1");
    assert_eq!(incidents[0][2], DN.to_string(), "every dn machine a member");
    assert_eq!(opened().len(), 1, "{:?}", received(hook));
    let offline_alone: Vec<String> = received(hook)
        .into_iter()
        .filter(|id| id.starts_with("device_offline"))
        .collect();
    assert!(offline_alone.is_empty(), "{offline_alone:?}");

    // 4. the presence leader dies; its machines move; nothing else is opened or notified
    let leader = leader_of(&cl.servers[0], "presence")
        .await
        .expect("a presence leader");
    assert_eq!(leader, judge, "the judge changed during the test");
    let k = IDS.iter().position(|i| *i == leader).unwrap();
    let notified_before = received(hook).len();
    let moved: Vec<String> = owners(pg)
        .into_iter()
        .filter(|(d, o)| d.starts_with("up") && *o == leader)
        .map(|(d, _)| d)
        .collect();
    println!(
        "killing the presence leader {leader}, holding {} up machines",
        moved.len()
    );
    let killed_at = now_ms();
    cl.servers[k].kill9();
    let survivors: Vec<&ServerProc> = cl
        .servers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != k)
        .map(|(_, s)| s)
        .collect();
    let back = eventually(Duration::from_secs(20), || async {
        let o = owners(pg);
        moved
            .iter()
            .all(|d| o.get(d).is_some_and(|i| *i != leader))
            .then_some(())
    })
    .await;
    assert!(
        back.is_some(),
        "machines of {leader} did not move: {:?}",
        owners(pg)
    );
    // a new presence judge, then past the offline timeout, the hold and a margin
    tokio::time::sleep(Duration::from_secs(20)).await;
    let next = leader_of(survivors[0], "presence").await;
    assert!(
        next.as_ref().is_some_and(|j| *j != leader),
        "presence led by {next:?}"
    );
    println!("presence judged by {next:?} after the kill");
    let up_offline = psql_rows(
        pg,
        "SELECT id, state FROM alerts WHERE rule = 'device_offline' AND subject LIKE 'up%'",
    );
    assert!(
        up_offline.is_empty(),
        "moved machines judged offline: {up_offline:?}"
    );
    let incidents = psql_rows(pg, "SELECT id, state, cardinality(devices) FROM incidents");
    println!(
        "after the judge's kill: incidents {incidents:?}; offline alerts {:?}",
        psql_rows(
            pg,
            "SELECT id, state, opened_by FROM alerts WHERE rule = 'device_offline' ORDER BY id"
        )
    );
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!(
        received(hook)[notified_before..]
            .iter()
            .filter(|id| !id.starts_with("site_outage"))
            .count(),
        0,
        "{:?}",
        received(hook)
    );
    // 5. site1 comes back: the new judge resolves the outage the old one opened, once
    let _dn = sim(certs, "dn", DN, "1", &dn_brokers, &dir.path().join("dn2.log"));
    let resolved = eventually(Duration::from_secs(40), || async {
        received(hook)
            .iter()
            .any(|id| id.starts_with("site_outage") && id.ends_with("/resolved"))
            .then_some(())
    })
    .await;
    assert!(
        resolved.is_some(),
        "the outage was not resolved after site1 came back: {:?} {:?}\n{}",
        received(hook),
        psql_rows(pg, "SELECT id, state, active_members FROM incidents"),
        cl.logs()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let site: Vec<String> = received(hook)
        .into_iter()
        .filter(|id| id.starts_with("site_outage"))
        .collect();
    println!("site1 back: notifications about it {site:?}");
    assert_eq!(site, ["site_outage-1/opened", "site_outage-1/resolved"]);
    assert_eq!(
        psql_rows(pg, "SELECT id, state FROM incidents"),
        [["site_outage-1", "resolved"]]
    );
    for (s, n) in survivors.iter().zip(0..) {
        let list = s.get("/api/v1/devices").await.unwrap();
        let online = list["devices"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["status"] == "online" && d["id"].as_str().is_some_and(|i| i.starts_with("up")))
            .filter(|d| d["last_seen_ms"].as_i64().unwrap_or(0) > killed_at)
            .count();
        assert_eq!(online, UP, "survivor {n}: every up machine online after the kill");
    }
}
