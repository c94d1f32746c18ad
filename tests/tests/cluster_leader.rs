//! Several fleet-server instances on one PostgreSQL store (issue 21): instances register and
//! heartbeat, exactly one leads the history job (rollups and retention), a `kill -9` of the
//! leader is replaced within a lease and a few heartbeats without a hole or a duplicate in the
//! 1-minute rollups, and a leader frozen (SIGSTOP) past its lease has its late write refused
//! by the database's fence (SQLSTATE RVML1), counted on its `/metrics`, and follows after.
//!
//! Real processes on a throwaway PostgreSQL cluster; the instances run with a short lease
//! (`heartbeat_ms = 500`, `lease_ms = 3000`). The frozen-leader test needs the fault hooks of
//! test builds (`RVM_FLEET_FAULTS=history-write=stall:MS` holds the leader's rollup between
//! its look at the lease and its write, the window the SIGSTOP lands in): build the binary
//! with `cargo build -p fleet-server --features faults` (`cargo test --workspace` does).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::pki::{self, CertDir};
use rvm_fleet_tests::postgres::PgDatabase;
use rvm_fleet_tests::{Child, eventually, free_port, write_agent_config};
use serde_json::Value;
use tokio::sync::Mutex;

const HEARTBEAT_MS: u64 = 500;
const LEASE_MS: u64 = 3_000;
/// The longest a takeover may take: the lease, then a few heartbeats.
const TAKEOVER_MAX: Duration = Duration::from_millis(LEASE_MS + 4 * HEARTBEAT_MS);
/// How long the leader stays frozen (SIGSTOP) before SIGCONT: 30 s, as issue 21 asks.
const FROZEN_FOR: Duration = Duration::from_secs(30);
const DEVICE: &str = "lead1";

/// The tests start three servers each: one at a time on a 2-core machine.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// One `fleet-server run` process of the cluster.
struct Instance {
    id: String,
    http: u16,
    mqtt: u16,
    log: PathBuf,
    child: Option<Child>,
}

impl Instance {
    fn start(dir: &Path, certs: &CertDir, pg: &PgDatabase, id: &str, env: &[(&str, &str)]) -> Instance {
        let (http, mqtt) = (free_port(), free_port());
        let config = dir.join(format!("{id}.toml"));
        std::fs::write(
            &config,
            format!(
                "[http]\nlisten = \"127.0.0.1:{http}\"\n[mqtt]\nlisten = \"127.0.0.1:{mqtt}\"\n\
                 [certs]\ndir = \"{}\"\n[storage]\ndata_dir = \"{}\"\nbackend = \"postgres\"\nurl = \"{}\"\n\
                 [cluster]\ninstance_id = \"{id}\"\nheartbeat_ms = {HEARTBEAT_MS}\nlease_ms = {LEASE_MS}\n",
                certs.root().display(),
                dir.join(format!("{id}-data")).display(),
                pg.url()
            ),
        )
        .unwrap();
        let log = dir.join(format!("{id}.log"));
        let child = Child::spawn_env(
            "fleet-server",
            &["run", "--config", config.to_str().unwrap()],
            env,
            &log,
        )
        .unwrap();
        Instance {
            id: id.to_string(),
            http,
            mqtt,
            log,
            child: Some(child),
        }
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").0.id() as i32
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: a signal to our own child process, by its pid
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.pid());
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill9();
        }
    }

    fn log_text(&self) -> String {
        rvm_fleet_tests::read(&self.log)
    }

    async fn get(&self, token: &str, path: &str) -> Option<Value> {
        let r = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}{path}", self.http))
            .bearer_auth(token)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())?;
        r.json().await.ok()
    }

    async fn metrics(&self) -> Option<String> {
        let r = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/metrics", self.http))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        r.text().await.ok()
    }

    /// A sample of `/metrics` (`name{labels}` exactly as written), None when absent.
    async fn sample(&self, series: &str) -> Option<f64> {
        let text = self.metrics().await?;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
    }

    /// 1.0 when this instance says it leads the history job now.
    async fn leads(&self) -> Option<bool> {
        Some(self.sample("rvm_fleet_leader{job=\"history\"}").await? == 1.0)
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    certs: CertDir,
    pg: PgDatabase,
    token: String,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let certs = CertDir::new(dir.path().join("certs"));
    pki::init(&certs, &["localhost".into(), "127.0.0.1".into()], false).unwrap();
    let pg = PgDatabase::shared().unwrap();
    // the schema and a viewer token, before any instance starts
    let cfg = dir.path().join("tokens.toml");
    std::fs::write(
        &cfg,
        format!(
            "[certs]\ndir = \"{}\"\n[storage]\ndata_dir = \"{}\"\nbackend = \"postgres\"\nurl = \"{}\"\n",
            certs.root().display(),
            dir.path().join("tokens-data").display(),
            pg.url()
        ),
    )
    .unwrap();
    let c = fleet_server::config::ServerFile::load(&cfg).unwrap();
    let tokens = fleet_server::storage::open_tokens(&fleet_server::storage::StorageConfig {
        backend: c.storage,
        data_dir: c.data_dir,
        cache_bytes: c.store_cache_bytes,
        history: c.history,
    })
    .unwrap();
    let token = tokens
        .create("cluster-test", fleet_server::auth::Role::Viewer)
        .unwrap();
    Setup {
        dir: dir.path().to_path_buf(),
        _dir: dir,
        certs,
        pg,
        token,
    }
}

/// Waits until every instance in `all` answers `GET /api/v1/cluster` with `all` alive and
/// `leader` leading; the view of the first.
async fn wait_cluster(s: &Setup, all: &[&Instance], leader: &str, within: Duration) -> Value {
    let ids: Vec<&str> = all.iter().map(|i| i.id.as_str()).collect();
    let got = eventually(within, || async {
        let mut first = None;
        for i in all {
            let v = i.get(&s.token, "/api/v1/cluster").await?;
            let alive: Vec<&str> = v["instances"]
                .as_array()?
                .iter()
                .filter(|x| x["state"] == "alive")
                .filter_map(|x| x["id"].as_str())
                .collect();
            let lead = v["leaders"].as_array()?.iter().find(|l| l["job"] == "history")?["leader"]
                .as_str()?
                .to_string();
            if !ids.iter().all(|id| alive.contains(id)) || lead != leader {
                return None;
            }
            first.get_or_insert(v);
        }
        first
    })
    .await;
    got.unwrap_or_else(|| {
        let logs: Vec<String> = all
            .iter()
            .map(|i| format!("--- {}\n{}", i.id, i.log_text()))
            .collect();
        panic!(
            "the cluster did not settle with {leader} leading\n{}",
            logs.join("\n")
        )
    })
}

/// How many of `all` say they lead the history job (instances that do not answer count 0).
async fn leaders(all: &[&Instance]) -> Vec<String> {
    let mut out = Vec::new();
    for i in all {
        if i.leads().await == Some(true) {
            out.push(i.id.clone());
        }
    }
    out
}

/// Polls until exactly one of `candidates` leads; that one and how long it took.
async fn wait_takeover(candidates: &[&Instance], since: Instant) -> (String, Duration) {
    loop {
        let l = leaders(candidates).await;
        if l.len() == 1 {
            return (l[0].clone(), since.elapsed());
        }
        assert!(l.len() <= 1, "two leaders at once: {l:?}");
        assert!(
            since.elapsed() < TAKEOVER_MAX * 3,
            "no takeover after {:?}",
            since.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every minute of `DEVICE`'s CPU samples has its rollup, each with exactly as many samples as
/// the raw rows of the minute (no hole, nothing counted twice), nothing left to roll up, and
/// every seq stored once; the samples span at least `min_minutes` minutes. (raw minutes, first
/// minute, last minute).
fn assert_rollups_whole(pg: &PgDatabase, min_minutes: u64) -> (u64, String, String) {
    let out = pg
        .psql(&format!(
            "WITH m AS (SELECT id FROM metric_names WHERE name = 'cpu.usage_pct'),
             raw AS (SELECT date_trunc('minute', t.time) AS minute, count(*) AS n
                     FROM telemetry t, m WHERE t.device = '{DEVICE}' AND t.vals[m.id] IS NOT NULL
                     GROUP BY 1),
             r AS (SELECT r.minute, r.counts[m.id]::bigint AS n FROM rollups_1m r, m
                   WHERE r.device = '{DEVICE}')
             SELECT (SELECT count(*) FROM raw),
                    (SELECT count(*) FROM raw FULL JOIN r USING (minute) WHERE raw.n IS DISTINCT FROM r.n),
                    (SELECT count(*) FROM generate_series((SELECT min(minute) FROM raw),
                                                          (SELECT max(minute) FROM raw),
                                                          interval '1 minute') g
                     WHERE g NOT IN (SELECT minute FROM r)),
                    (SELECT coalesce(sum(n), 0) FROM raw),
                    (SELECT coalesce(sum(n), 0) FROM r),
                    (SELECT count(*) FROM rollup_dirty),
                    (SELECT count(*) - count(DISTINCT seq) FROM telemetry WHERE device = '{DEVICE}'),
                    (SELECT min(minute) FROM raw), (SELECT max(minute) FROM raw)"
        ))
        .unwrap();
    let f: Vec<&str> = out.split('|').collect();
    let n = |i: usize| f[i].trim().parse::<u64>().unwrap();
    println!(
        "rollups of {DEVICE}: {} minutes ({} to {}), {} raw samples, {} in rollups, {} minutes differing, {} holes, {} marks left, {} duplicate seqs",
        n(0),
        f[7],
        f[8],
        n(3),
        n(4),
        n(1),
        n(2),
        n(5),
        n(6)
    );
    assert!(
        n(0) >= min_minutes,
        "the publishing spans {min_minutes} minutes: {out}"
    );
    assert_eq!(
        n(1),
        0,
        "every minute's rollup counts its raw samples exactly: {out}"
    );
    assert_eq!(n(2), 0, "no minute without a rollup: {out}");
    assert_eq!(n(3), n(4), "every sample rolled up once: {out}");
    assert_eq!(n(5), 0, "nothing left to roll up: {out}");
    assert_eq!(n(6), 0, "every seq stored once: {out}");
    (n(0), f[7].to_string(), f[8].to_string())
}

/// Rollups the history job of `i` wrote since it started (`/api/v1/health`).
async fn rollups_written(i: &Instance, token: &str) -> u64 {
    let h = i.get(token, "/api/v1/health").await.expect("health");
    h["storage"]["rollups_written"].as_u64().expect("rollups_written")
}

/// Waits until nothing is left to roll up (the leader's next run, at most 10 s away).
async fn wait_rolled_up(pg: &PgDatabase) {
    let done = eventually(Duration::from_secs(40), || async {
        (pg.psql("SELECT count(*) FROM rollup_dirty").ok()?.trim() == "0").then_some(())
    })
    .await;
    assert!(done.is_some(), "rollup_dirty never emptied");
}

fn start_agent(s: &Setup, mqtt: u16) -> Child {
    let cfg = write_agent_config(&s.dir, &s.certs, DEVICE, mqtt, 500, "").unwrap();
    Child::spawn(
        "rvm-agent",
        &["--config", cfg.to_str().unwrap()],
        &s.dir.join("agent.log"),
    )
    .unwrap()
}

/// Waits until the database holds at least `at_least` rows of `DEVICE`; how many it holds.
async fn wait_rows(pg: &PgDatabase, at_least: u64) -> u64 {
    eventually(Duration::from_secs(40), || async {
        let n: u64 = pg
            .psql(&format!(
                "SELECT count(*) FROM telemetry WHERE device = '{DEVICE}'"
            ))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        (n >= at_least).then_some(n)
    })
    .await
    .unwrap_or_else(|| panic!("{DEVICE} did not reach {at_least} rows"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leader_is_replaced_within_the_lease_and_rollups_keep_no_hole_and_no_duplicate() {
    let _serial = SERIAL.lock().await;
    let s = setup();
    let mut a = Instance::start(&s.dir, &s.certs, &s.pg, "fleet-a", &[]);
    wait_cluster(&s, &[&a], "fleet-a", Duration::from_secs(30)).await;
    let b = Instance::start(&s.dir, &s.certs, &s.pg, "fleet-b", &[]);
    let c = Instance::start(&s.dir, &s.certs, &s.pg, "fleet-c", &[]);
    let view = wait_cluster(&s, &[&a, &b, &c], "fleet-a", Duration::from_secs(30)).await;
    assert_eq!(view["backend"], "postgres", "{view}");
    assert_eq!(leaders(&[&a, &b, &c]).await, ["fleet-a"], "exactly one leader");
    let health = a.get(&s.token, "/api/v1/health").await.unwrap();
    assert_eq!(health["instance"], "fleet-a", "{health}");
    let alive = eventually(Duration::from_secs(5), || async {
        let n = c.sample("rvm_fleet_cluster_instances{state=\"alive\"}").await?;
        (n == 3.0).then_some(n)
    })
    .await;
    assert_eq!(alive, Some(3.0), "three alive on /metrics");

    // a machine publishes to fleet-c through the takeover
    let mut agent = start_agent(&s, c.mqtt);
    wait_rows(&s.pg, 40).await;
    tokio::time::sleep(Duration::from_secs(15)).await;

    let (killed, killed_ms) = (Instant::now(), common::time::now_ms());
    a.kill9();
    let (leader, took) = wait_takeover(&[&b, &c], killed).await;
    println!(
        "takeover after kill -9 of the leader: {leader} leads after {} ms (lease {LEASE_MS} ms, heartbeat {HEARTBEAT_MS} ms)",
        took.as_millis()
    );
    assert!(took <= TAKEOVER_MAX, "takeover took {took:?}");
    // the dead instance is named dead once its heartbeat is a lease old
    let other = if leader == "fleet-b" { &c } else { &b };
    let dead = eventually(Duration::from_secs(10), || async {
        let v = other.get(&s.token, "/api/v1/cluster").await?;
        let a = v["instances"]
            .as_array()?
            .iter()
            .find(|i| i["id"] == "fleet-a")?
            .clone();
        (a["state"] == "dead").then_some(v)
    })
    .await
    .expect("fleet-a shown dead");
    println!("cluster after the kill: {}", dead["instances"]);
    // /metrics counts from its heartbeat's read of the cluster: a heartbeat later at most
    let counted = eventually(Duration::from_secs(5), || async {
        let n = other
            .sample("rvm_fleet_cluster_instances{state=\"dead\"}")
            .await?;
        (n == 1.0).then_some(n)
    })
    .await;
    assert_eq!(counted, Some(1.0), "one dead instance on /metrics");

    // publishing goes on past the takeover into the next minute, then the last rollups
    let before = wait_rows(&s.pg, 0).await;
    wait_rows(&s.pg, before + 70).await;
    agent.terminate();
    wait_rolled_up(&s.pg).await;
    let (minutes, first, last) = assert_rollups_whole(&s.pg, 2);
    // the rollups checked cover the takeover: rows from before the kill to after the new
    // leader took over
    let span = s
        .pg
        .psql(&format!(
            "SELECT (extract(epoch FROM min(time)) * 1000)::bigint, (extract(epoch FROM max(time)) * 1000)::bigint
             FROM telemetry WHERE device = '{DEVICE}'"
        ))
        .unwrap();
    let (from, to) = span.split_once('|').unwrap();
    let (from, to): (i64, i64) = (from.parse().unwrap(), to.parse().unwrap());
    assert!(
        from < killed_ms - 10_000 && to > killed_ms + took.as_millis() as i64 + 10_000,
        "rows from {from} to {to}, killed at {killed_ms}"
    );
    // the new leader rolled up (and only it: the follower wrote none)
    let led = if leader == "fleet-b" { &b } else { &c };
    let (lw, ow) = (
        rollups_written(led, &s.token).await,
        rollups_written(other, &s.token).await,
    );
    println!(
        "rollups written after the takeover: leader {leader} {lw}, follower {ow}; {minutes} minutes {first} .. {last}"
    );
    assert!(lw > 0, "the new leader rolled up");
    assert_eq!(ow, 0, "a follower never rolls up");
    assert_eq!(leaders(&[&b, &c]).await, [leader.as_str()], "exactly one leader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_frozen_past_its_lease_has_its_late_write_refused_and_follows_after() {
    let _serial = SERIAL.lock().await;
    let s = setup();
    // fleet-a's first rollup as leader waits 2 s between its look at the lease and its write
    let fault = [(
        fleet_server::supervise::faults::FAULTS_ENV,
        "history-write=stall:2000",
    )];
    let a = Instance::start(&s.dir, &s.certs, &s.pg, "fleet-a", &fault);
    wait_cluster(&s, &[&a], "fleet-a", Duration::from_secs(30)).await;
    assert!(
        a.log_text().contains("fault injection armed"),
        "the fleet-server binary has no fault injection: build it with \
         `cargo build -p fleet-server --features faults`\n{}",
        a.log_text()
    );
    let b = Instance::start(&s.dir, &s.certs, &s.pg, "fleet-b", &[]);
    let c = Instance::start(&s.dir, &s.certs, &s.pg, "fleet-c", &[]);
    wait_cluster(&s, &[&a, &b, &c], "fleet-a", Duration::from_secs(30)).await;
    let mut agent = start_agent(&s, b.mqtt);
    let epoch_before: i64 =
        s.pg.psql("SELECT epoch FROM leader_lease WHERE name = 'history'")
            .unwrap()
            .parse()
            .unwrap();

    // the leader's rollup is under way (its token in hand): freeze the whole process
    let held = eventually(Duration::from_secs(30), || async {
        a.log_text()
            .lines()
            .any(|l| l.contains("fault injected: stalling") && l.contains("history-write"))
            .then_some(())
    })
    .await;
    assert!(held.is_some(), "fleet-a never held a write:\n{}", a.log_text());
    let frozen = Instant::now();
    a.signal(libc::SIGSTOP);
    let (leader, took) = wait_takeover(&[&b, &c], frozen).await;
    println!(
        "takeover from the frozen leader: {leader} leads after {} ms",
        took.as_millis()
    );
    assert!(took <= TAKEOVER_MAX, "takeover took {took:?}");
    // as long as the acceptance asks: ten leases and more
    let until = frozen + FROZEN_FOR;
    tokio::time::sleep_until(until.into()).await;
    assert_eq!(leaders(&[&b, &c]).await, [leader.as_str()]);
    a.signal(libc::SIGCONT);

    // its held write went to the database with the old epoch, and was refused
    let fenced = eventually(Duration::from_secs(20), || async {
        let n = a
            .sample("rvm_fleet_leader_fenced_writes_total{job=\"history\"}")
            .await?;
        (n >= 1.0).then_some(n)
    })
    .await
    .unwrap_or_else(|| panic!("no refused write on fleet-a's /metrics:\n{}", a.log_text()));
    let log = a.log_text();
    println!("fleet-a after SIGCONT: {fenced} refused write(s)");
    assert!(log.contains("leader write refused by the lease fence"), "{log}");
    assert!(log.contains("RVML1") || log.contains("is not held by"), "{log}");
    assert_eq!(a.leads().await, Some(false), "fleet-a follows");
    // exactly one leader, and it stays so
    for _ in 0..6 {
        assert_eq!(
            leaders(&[&a, &b, &c]).await,
            [leader.as_str()],
            "exactly one leader"
        );
        tokio::time::sleep(Duration::from_millis(HEARTBEAT_MS)).await;
    }
    let row =
        s.pg.psql("SELECT holder, epoch FROM leader_lease WHERE name = 'history'")
            .unwrap();
    println!("history lease: {row} (fleet-a held epoch {epoch_before})");
    let (holder, epoch) = row.split_once('|').unwrap();
    assert_eq!(holder, leader);
    assert!(epoch.parse::<i64>().unwrap() > epoch_before, "{row}");
    let health = a.get(&s.token, "/api/v1/health").await.unwrap();
    assert_eq!(
        health["cluster"]["fenced_writes"]["history"], 1,
        "{}",
        health["cluster"]
    );

    // nothing the refused write held was lost: the new leader rolled it all up
    wait_rows(&s.pg, 60).await;
    agent.terminate();
    wait_rolled_up(&s.pg).await;
    assert_rollups_whole(&s.pg, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_a_live_instance_holds_is_refused_naming_the_key() {
    let _serial = SERIAL.lock().await;
    let s = setup();
    let a = Instance::start(&s.dir, &s.certs, &s.pg, "fleet-a", &[]);
    wait_cluster(&s, &[&a], "fleet-a", Duration::from_secs(30)).await;
    let dir = s.dir.join("second");
    std::fs::create_dir_all(&dir).unwrap();
    let mut twin = Instance::start(&dir, &s.certs, &s.pg, "fleet-a", &[]);
    // it waits a lease for a predecessor's heartbeat to go stale, then gives up
    let code = twin.child.as_mut().unwrap().wait_exit(Duration::from_secs(30));
    let log = twin.log_text();
    assert!(matches!(code, Some(c) if c != 0), "exit {code:?}\n{log}");
    assert!(
        log.contains("cluster.instance_id: \"fleet-a\" is the id of a running instance"),
        "{log}"
    );
    twin.child = None;
    // the running instance was not disturbed
    let v = a.get(&s.token, "/api/v1/cluster").await.unwrap();
    let row = v["instances"].as_array().unwrap()[0].clone();
    assert_eq!(
        (row["id"].as_str(), row["state"].as_str()),
        (Some("fleet-a"), Some("alive")),
        "{v}"
    );
    assert_eq!(a.leads().await, Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sled_the_only_instance_leads_every_job_without_a_database() {
    let fleet = rvm_fleet_tests::TestFleet::start().unwrap();
    let v = fleet.get("/api/v1/cluster").await.unwrap();
    assert_eq!(v["backend"], "sled", "{v}");
    let instances = v["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 1, "{v}");
    assert_eq!(instances[0]["state"], "alive");
    assert_eq!(instances[0]["self"], true);
    assert_eq!(
        instances[0]["leads"],
        serde_json::json!(fleet_server::cluster::leader::JOBS),
        "every job"
    );
    assert_eq!(v["this"]["mode"], "single", "{v}");
    let health = fleet.health().await.unwrap();
    assert_eq!(health["instance"], v["instance"], "{health}");
    let metrics = reqwest::get(fleet.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("rvm_fleet_leader{job=\"history\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("rvm_fleet_cluster_instances{state=\"alive\"} 1\n"));
    assert!(metrics.contains("rvm_fleet_leader_fenced_writes_total{job=\"history\"} 0\n"));
}
