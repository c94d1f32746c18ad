//! Store-and-forward acceptance: outages and crashes lose nothing, duplicates are dropped by
//! the server, caps hold, a corrupt store is survived. Real embedded broker, the real store
//! (the outage and crash scenarios run on sled and on PostgreSQL, `..._on_postgres`, which
//! adds a restart of PostgreSQL itself mid-stream), agents and servers as child processes
//! wherever a `kill -9` is involved.

use std::time::Duration;

use common::pki::{self, CertDir};
use rvm_fleet_tests::postgres::{PgDatabase, Series};
use rvm_fleet_tests::{
    Agents, Backend, Child, FleetOptions, TestFleet, eventually, free_port, write_agent_config,
};
use serde_json::Value;

fn delivery(d: &Value) -> (u64, u64, u64, Vec<Value>, u64, u64) {
    let v = &d["delivery"];
    (
        v["received"].as_u64().unwrap_or(0),
        v["last_seq"].as_u64().unwrap_or(0),
        v["duplicates_dropped"].as_u64().unwrap_or(0),
        v["gaps"].as_array().cloned().unwrap_or_default(),
        v["missing"].as_u64().unwrap_or(0),
        v["reported_dropped"].as_u64().unwrap_or(0),
    )
}

/// Waits until the agent's buffer is empty and the server has every seq up to the agent's last.
async fn wait_drained(fleet: &TestFleet, agents: &Agents, i: usize, id: &str, within: Duration) -> Value {
    let last = eventually(within, || async {
        let s = agents.buffers[i].stats();
        (s.records == 0).then_some(s.last_seq)
    })
    .await
    .expect("agent buffer drains");
    eventually(within, || async {
        let d = fleet.device(id).await.ok()??;
        (delivery(&d).1 >= last).then_some(d)
    })
    .await
    .expect("server catches up")
}

/// With PostgreSQL: every row of `device` once, and its CPU series in `fleet_metrics` without
/// a hole longer than `max_gap_ms`.
fn assert_whole_series(pg: &PgDatabase, device: &str, max_gap_ms: u64) -> Series {
    let s = pg.series(device, "cpu.usage_pct").unwrap();
    println!("{device} in postgres: {s:?}");
    assert!(s.rows > 0, "{device}: {s:?}");
    assert_eq!(s.rows, s.seqs, "{device}: each seq stored once: {s:?}");
    assert_eq!(s.points, s.rows, "{device}: every row in fleet_metrics: {s:?}");
    assert!(
        s.max_gap_ms <= max_gap_ms,
        "{device}: a hole in the series: {s:?}"
    );
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30s_broker_outage_at_10hz_loses_nothing_and_keeps_order() {
    broker_outage(Backend::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_30s_broker_outage_at_10hz_loses_nothing_and_keeps_order_on_postgres() {
    broker_outage(Backend::Postgres).await;
}

async fn broker_outage(backend: Backend) {
    let mut fleet = TestFleet::start_on(backend).unwrap();
    let agents = Agents::start(vec![fleet.agent_config("out1", 100).unwrap()]).unwrap();
    eventually(Duration::from_secs(10), || async {
        let d = fleet.device("out1").await.ok()??;
        (delivery(&d).0 >= 20).then_some(())
    })
    .await
    .expect("publishing before the outage");

    fleet.server.stop_broker();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let backlog = agents.buffers[0].stats().records;
    assert!(
        backlog >= 250,
        "about 300 records queued during 30 s at 10 Hz, got {backlog}"
    );
    fleet.server.start_broker().unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    agents.stop_collecting(0);

    let d = wait_drained(&fleet, &agents, 0, "out1", Duration::from_secs(30)).await;
    let (received, last_seq, dups, gaps, missing, _) = delivery(&d);
    println!(
        "outage: received {received}, last seq {last_seq}, duplicates dropped {dups}, backlog {backlog}"
    );
    assert!(gaps.is_empty(), "gaps: {gaps:?}");
    assert_eq!(missing, 0);
    assert_eq!(received, last_seq, "every seq exactly once");
    assert_eq!(last_seq, agents.buffers[0].stats().last_seq);
    assert_eq!(
        d["delivery"]["reordered"], 0,
        "records arrived in seq order: {}",
        d["delivery"]
    );
    if let Some(pg) = &fleet.pg {
        assert_whole_series(pg, "out1", 2_000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_agent_while_it_drains_a_backlog_loses_nothing() {
    agent_killed_mid_drain(Backend::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_agent_while_it_drains_a_backlog_loses_nothing_on_postgres() {
    agent_killed_mid_drain(Backend::Postgres).await;
}

async fn agent_killed_mid_drain(backend: Backend) {
    let mut fleet = TestFleet::start_on(backend).unwrap();
    let cfg = fleet.agent_config("kill1", 20).unwrap();
    let log = fleet.dir.path().join("kill1.log");
    let mut agent = Child::spawn("rvm-agent", &["--config", cfg.to_str().unwrap()], &log).unwrap();
    eventually(Duration::from_secs(15), || async {
        fleet.device("kill1").await.ok()?
    })
    .await
    .expect("agent reports");
    // a backlog: 15 s at 50 Hz
    fleet.server.stop_broker();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let before = delivery(&fleet.device("kill1").await.unwrap().unwrap()).0;
    fleet.server.start_broker().unwrap();
    // kill it as soon as the drain is under way
    // (the agent's reconnect backoff is capped at 10 s, jittered by half)
    eventually(Duration::from_secs(40), || async {
        let d = fleet.device("kill1").await.ok()??;
        (delivery(&d).0 > before + 50).then_some(())
    })
    .await
    .expect("drain starts");
    agent.kill9();
    let mid = delivery(&fleet.device("kill1").await.unwrap().unwrap());
    println!("killed mid-drain: received {} of last seq {}", mid.0, mid.1);

    // restart, then drain with collection all but stopped
    let drain_cfg = write_agent_config(
        fleet.dir.path(),
        &fleet.certs,
        "kill1",
        fleet.broker_port(),
        3_600_000,
        "",
    )
    .unwrap();
    let _agent = Child::spawn("rvm-agent", &["--config", drain_cfg.to_str().unwrap()], &log).unwrap();
    // Every seq arrives or is reported dropped: the restarted agent skips the seqs it had
    // reserved but not flushed before the kill, and reports them (it never reuses one; see
    // invariant 2 of agent/src/buffer/mod.rs and tests/tests/chaos.rs).
    let settled = eventually(Duration::from_secs(40), || async {
        let d = fleet.device("kill1").await.ok()??;
        let (received, last, _, _, missing, reported) = delivery(&d);
        (received + missing == last && missing <= reported && last > mid.1).then_some(d)
    })
    .await;
    let d = settled.unwrap_or_else(|| panic!("not settled; agent log:\n{}", rvm_fleet_tests::read(&log)));
    let (received, last_seq, dups, _, missing, reported) = delivery(&d);
    println!(
        "after restart: received {received}, last seq {last_seq}, duplicates dropped {dups}, missing {missing}, reported dropped {reported}"
    );
    assert!(
        missing <= reported,
        "missing {missing}, reported dropped {reported}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_agent_with_its_buffer_closed_so_the_next_start_skips_no_seq() {
    let fleet = TestFleet::start().unwrap();
    let cfg = fleet.agent_config("term1", 20).unwrap();
    let log = fleet.dir.path().join("term1.log");
    let mut agent = Child::spawn("rvm-agent", &["--config", cfg.to_str().unwrap()], &log).unwrap();
    eventually(Duration::from_secs(15), || async {
        let d = fleet.device("term1").await.ok()??;
        (delivery(&d).0 >= 50).then_some(())
    })
    .await
    .expect("agent reports");
    let term = std::process::Command::new("kill")
        .args(["-TERM", &agent.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let code = agent.wait_exit(Duration::from_secs(10));
    assert_eq!(
        code,
        Some(0),
        "a clean exit; log:\n{}",
        rvm_fleet_tests::read(&log)
    );
    // the supervisor stopped the buffer last, which closed it: the exact last seq
    let buf = fleet.dir.path().join("term1-buffer");
    let last = {
        use rvm_agent::buffer::Store as _;
        let store = rvm_agent::buffer::SledStore::open(&buf, None).unwrap();
        store.last_seq().unwrap().expect("a last seq")
    };
    assert_eq!(last & rvm_agent::buffer::RESERVED_FLAG, 0, "closed: {last:#x}");
    // the next start goes on from there: no seq skipped, none reported lost
    let _agent = Child::spawn("rvm-agent", &["--config", cfg.to_str().unwrap()], &log).unwrap();
    let d = eventually(Duration::from_secs(20), || async {
        let d = fleet.device("term1").await.ok()??;
        let (received, last_seq, ..) = delivery(&d);
        (last_seq > last + 20 && received == last_seq).then_some(d)
    })
    .await
    .unwrap_or_else(|| panic!("not caught up; agent log:\n{}", rvm_fleet_tests::read(&log)));
    let (_, _, _, gaps, missing, reported) = delivery(&d);
    assert!(gaps.is_empty(), "gaps: {gaps:?}");
    assert_eq!((missing, reported), (0, 0), "{}", d["delivery"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_server_mid_stream_loses_nothing() {
    server_killed_mid_stream(Backend::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_server_mid_stream_loses_nothing_on_postgres() {
    server_killed_mid_stream(Backend::Postgres).await;
}

async fn server_killed_mid_stream(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let certs = CertDir::new(dir.path().join("certs"));
    pki::init(&certs, &["localhost".into(), "127.0.0.1".into()], false).unwrap();
    let (http, mqtt) = (free_port(), free_port());
    let data = dir.path().join("data");
    let server_cfg = dir.path().join("server.toml");
    let pg = match backend {
        Backend::Sled => None,
        Backend::Postgres => Some(PgDatabase::shared().unwrap()),
    };
    let storage = match &pg {
        None => String::new(),
        Some(pg) => format!("backend = \"postgres\"\nurl = \"{}\"\n", pg.url()),
    };
    std::fs::write(
        &server_cfg,
        format!(
            "[http]\nlisten = \"127.0.0.1:{http}\"\n[mqtt]\nlisten = \"127.0.0.1:{mqtt}\"\n[certs]\ndir = \"{}\"\n[storage]\ndata_dir = \"{}\"\n{storage}",
            certs.root().display(),
            data.display()
        ),
    )
    .unwrap();
    let c = fleet_server::config::ServerFile::load(&server_cfg).unwrap();
    let tokens = fleet_server::storage::open_tokens(&fleet_server::storage::StorageConfig {
        backend: c.storage,
        data_dir: c.data_dir,
        cache_bytes: c.store_cache_bytes,
        history: c.history,
    })
    .unwrap();
    let token = tokens.create("t", fleet_server::auth::Role::Viewer).unwrap();
    let slog = dir.path().join("server.log");
    let run = ["run", "--config", server_cfg.to_str().unwrap()];
    let mut server = Child::spawn("fleet-server", &run, &slog).unwrap();

    let acfg = write_agent_config(dir.path(), &certs, "srv1", mqtt, 50, "").unwrap();
    let alog = dir.path().join("agent.log");
    let mut agent = Child::spawn("rvm-agent", &["--config", acfg.to_str().unwrap()], &alog).unwrap();
    let client = reqwest::Client::new();
    let get = |c: reqwest::Client, t: String| async move {
        let r = c
            .get(format!("http://127.0.0.1:{http}/api/v1/devices/srv1"))
            .bearer_auth(t)
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())?;
        r.json::<Value>().await.ok()
    };
    eventually(Duration::from_secs(20), || {
        let (c, t) = (client.clone(), token.clone());
        async move { get(c, t).await.filter(|d| delivery(d).0 > 40) }
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "server log:\n{}\nagent log:\n{}",
            rvm_fleet_tests::read(&slog),
            rvm_fleet_tests::read(&alog)
        )
    });

    server.kill9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut server = Child::spawn("fleet-server", &run, &slog).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    agent.terminate();
    // drain what is left with collection all but stopped
    let drain = write_agent_config(dir.path(), &certs, "srv1", mqtt, 3_600_000, "").unwrap();
    let _agent = Child::spawn("rvm-agent", &["--config", drain.to_str().unwrap()], &alog).unwrap();
    let d = eventually(Duration::from_secs(40), || {
        let (c, t) = (client.clone(), token.clone());
        async move {
            let d = get(c, t).await?;
            let (received, last, _, gaps, _, _) = delivery(&d);
            (gaps.is_empty() && received == last && last > 100).then_some(d)
        }
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "server log:\n{}\nagent log:\n{}",
            rvm_fleet_tests::read(&slog),
            rvm_fleet_tests::read(&alog)
        )
    });
    let (received, last_seq, dups, _, missing, _) = delivery(&d);
    println!("server killed: received {received}, last seq {last_seq}, duplicates dropped {dups}");
    assert_eq!(missing, 0);
    server.terminate();
    if let Some(pg) = &pg {
        assert_whole_series(pg, "srv1", 2_000);
    }
}

/// PostgreSQL itself crashes (`pg_ctl stop -m immediate`) while three machines stream: the
/// server stops acknowledging and says why, the machines keep their records, and once it is
/// back everything drains: every seq once, every series whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_of_postgresql_mid_stream_loses_nothing_on_postgres() {
    let mut fleet = TestFleet::start_with(FleetOptions {
        backend: Backend::Postgres,
        own_pg_cluster: true,
        ..Default::default()
    })
    .unwrap();
    let ids = ["pgr1", "pgr2", "pgr3"];
    let agents = Agents::start(
        ids.iter()
            .map(|id| fleet.agent_config(id, 100).unwrap())
            .collect(),
    )
    .unwrap();
    for id in ids {
        eventually(Duration::from_secs(15), || async {
            let d = fleet.device(id).await.ok()??;
            (delivery(&d).0 >= 10).then_some(())
        })
        .await
        .expect("publishing before the crash");
    }
    fleet.pg.as_mut().unwrap().own_cluster().crash().unwrap();
    let down = eventually(Duration::from_secs(15), || async {
        let h = fleet.health().await.ok()?;
        (h["storage"]["status"] == "unavailable").then_some(h)
    })
    .await
    .expect("the health API says the store is unavailable");
    let storage = &down["storage"];
    assert_eq!(down["status"], "degraded", "{down}");
    assert_eq!(storage["backend"], "postgres", "{storage}");
    assert!(
        storage["error"].as_str().unwrap_or("").starts_with("storage.url"),
        "the error names the key: {storage}"
    );
    let metrics = fleet
        .http
        .get(fleet.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("rvm_fleet_storage_up{backend=\"postgres\"} 0"),
        "/metrics says it too"
    );
    let reason = storage["reason"].as_str().unwrap_or("");
    assert!(
        ["connect", "connection_lost", "shutdown", "pool_timeout"].contains(&reason),
        "the health API says why in short: {storage}"
    );
    // (scraped after the health: the reason may have moved on from one kind of refusal to
    // another, never to none while the database is down)
    let said = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "rvm_fleet_storage_unavailable_since_timestamp_seconds{backend=\"postgres\",reason=\"",
            )
        })
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("/metrics says why too:\n{metrics}"));
    assert!(
        ["connect", "connection_lost", "shutdown", "pool_timeout"].contains(&said),
        "{said}"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let queued: u64 = (0..ids.len()).map(|i| agents.buffers[i].stats().records).sum();
    assert!(queued > 0, "the machines keep what was not acknowledged");
    let h = fleet.health().await.unwrap();
    assert!(
        h["ingest"]["refused_batches"].as_u64().unwrap_or(0) > 0,
        "refused batches are counted: {}",
        h["ingest"]
    );
    fleet.pg.as_mut().unwrap().own_cluster().start_again().unwrap();
    eventually(Duration::from_secs(30), || async {
        let h = fleet.health().await.ok()?;
        (h["storage"]["status"] == "ok").then_some(())
    })
    .await
    .expect("available again");
    let metrics = fleet
        .http
        .get(fleet.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("rvm_fleet_storage_up{backend=\"postgres\"} 1"));
    assert!(
        !metrics.contains("rvm_fleet_storage_unavailable_since_timestamp_seconds"),
        "no reason once it answers"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..ids.len() {
        agents.stop_collecting(i);
    }
    for (i, id) in ids.iter().enumerate() {
        let d = wait_drained(&fleet, &agents, i, id, Duration::from_secs(60)).await;
        let (received, last_seq, dups, gaps, missing, _) = delivery(&d);
        println!("{id}: received {received}, last seq {last_seq}, duplicates dropped {dups}");
        assert!(gaps.is_empty(), "{id} gaps: {gaps:?}; delivery {}", d["delivery"]);
        assert_eq!(missing, 0, "{id}");
        assert_eq!(received, last_seq, "{id}: every seq exactly once");
        assert_whole_series(fleet.pg(), id, 2_000);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_keeps_the_buffer_under_its_byte_cap_and_reports_the_drops() {
    let mut fleet = TestFleet::start().unwrap();
    let cfg = fleet
        .agent_config_with("cap1", 20, "max_bytes = 65536\nthin_keep_every = 1\n")
        .unwrap();
    let agents = Agents::start(vec![cfg]).unwrap();
    eventually(Duration::from_secs(10), || async {
        fleet.device("cap1").await.ok()?
    })
    .await
    .expect("reports");
    fleet.server.stop_broker();
    let mut max_bytes = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        max_bytes = max_bytes.max(agents.buffers[0].stats().bytes);
    }
    let st = agents.buffers[0].stats();
    assert!(max_bytes <= 65_536, "buffer bytes {max_bytes} over the cap");
    assert!(st.dropped > 0, "a 10 s outage at 50 Hz overflows 64 KiB: {st:?}");
    fleet.server.start_broker().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    agents.stop_collecting(0);
    let d = wait_drained(&fleet, &agents, 0, "cap1", Duration::from_secs(30)).await;
    // A record appended after collection stopped (a health report) may still drop one more
    // while the buffer is at its cap: that drop is reported by the buffer's housekeeping when
    // the next drop event is due, within DROP_EVENT_EVERY_MS of the last one (invariant 6).
    let within = Duration::from_millis(rvm_agent::buffer::DROP_EVENT_EVERY_MS as u64 + 5_000);
    let d = eventually(within, || async {
        let d = fleet.device("cap1").await.ok()??;
        let (_, _, _, _, missing, reported) = delivery(&d);
        (missing <= reported).then_some(d)
    })
    .await
    .unwrap_or(d);
    let (received, last_seq, _, _, missing, reported) = delivery(&d);
    println!("cap: received {received}, last seq {last_seq}, missing {missing}, reported dropped {reported}");
    assert!(reported > 0, "the drop count arrived");
    // Every seq is delivered or reported dropped. A record in flight when the broker died can
    // have reached the server and then be dropped by the cap too, so the report may exceed
    // what is missing by at most the in-flight window (64).
    assert!(
        missing > 0 && missing <= reported,
        "missing {missing}, reported {reported}"
    );
    assert!(reported - missing <= 64, "missing {missing}, reported {reported}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_buffer_directory_is_moved_aside_reported_and_the_agent_carries_on() {
    let fleet = TestFleet::start().unwrap();
    let cfg = fleet.agent_config("corrupt1", 200).unwrap();
    let buf = fleet.dir.path().join("corrupt1-buffer");
    std::fs::create_dir_all(&buf).unwrap();
    std::fs::write(buf.join("conf"), b"\x00\xffnot a sled config at all").unwrap();
    std::fs::write(buf.join("db"), vec![0xA5u8; 4096]).unwrap();
    let _agents = Agents::start(vec![cfg]).unwrap();
    let d = eventually(Duration::from_secs(15), || async {
        let d = fleet.device("corrupt1").await.ok()??;
        let reset = d["recent_events"]
            .as_array()?
            .iter()
            .any(|e| e["kind"].get("store_reset").is_some());
        (reset && delivery(&d).0 > 3).then_some(d)
    })
    .await
    .expect("store reset reported and telemetry flowing");
    let moved: Vec<_> = std::fs::read_dir(fleet.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("corrupt1-buffer.corrupt-")
        })
        .collect();
    assert_eq!(
        moved.len(),
        1,
        "the corrupt directory was kept aside for inspection"
    );
    assert!(d["metrics"]["memory.total_bytes"].as_f64().unwrap() > 0.0);
}
