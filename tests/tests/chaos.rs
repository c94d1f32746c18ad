//! Chaos: 100 simulated machines in 4 `rvm-sim simulate` processes (sled buffers per machine,
//! `--buffer-dir`), a `fleet-server` child process with its embedded broker, and a scheduler
//! with a fixed seed (`CHAOS_SEED`) that `kill -9`s and restarts the server and random
//! simulator processes for `CHAOS_SECS` (default 120; 600 for the long run). Then everything
//! stops gracefully, the simulators drain their backlogs (restarted with collection all but
//! off), and every seq of every machine must be accounted for through the API: delivered once
//! (the server drops duplicates) or reported dropped with a reason (a killed simulator reports,
//! on restart, the seqs it may have lost: see invariant 2 of `agent/src/buffer/mod.rs`). The
//! machines' own buffers must be empty, with the same last seq as the server. No alert may be
//! notified twice (a local webhook receiver counts notifications per `{alert id}/{event}`),
//! except the one redelivery at-least-once delivery allows: a notification the receiver got
//! just before a `kill -9` of the server, before the server recorded it delivered, is
//! delivered again after the restart (receivers drop repeats by `id`).
//!
//! `chaos_kill_9_of_a_buffer_never_reuses_a_seq` is the regression test of the bug the first
//! run found: a buffer killed before sled flushed handed out the same seqs again after the
//! restart, and the server dropped those new records as duplicates.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::time::{Duration, Instant};

use common::pki::{self, CertDir};
use rvm_agent::buffer::Store as _;
use rvm_fleet_tests::harness::{Rng, ServerProc, SimSpec, env_u64, spawn_simulator};
use rvm_fleet_tests::{Child, WebhookReceiver};

const SIMULATORS: usize = 4;
const PER_SIMULATOR: usize = 25;
const INTERVAL_MS: u64 = 500;
const PREFIX: &str = "chaos";
/// A repeat counts as the redelivery of a delivery in flight when the first copy arrived at
/// most this long before a server `kill -9` (the server records a delivery within
/// milliseconds of its answer).
const IN_FLIGHT: Duration = Duration::from_secs(2);
/// Collection interval of the drain phase: the simulators only empty their buffers.
const DRAIN_INTERVAL_MS: u64 = 3_600_000;

fn device_id(i: usize) -> String {
    format!("{PREFIX}{i:04}")
}

#[derive(Debug, Default)]
struct Kills {
    server: u32,
    simulator: u32,
    /// When each server `kill -9` happened.
    server_at: Vec<Instant>,
}

/// `(first_seq, last_seq)` of every "buffer dropped records" line of a simulator log, by device.
fn logged_drops(log: &str) -> BTreeMap<String, Vec<(u64, u64)>> {
    let mut out: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains("buffer dropped records")) {
        let clean = strip_ansi(line);
        let field = |name: &str| {
            clean
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .map(str::to_string)
        };
        if let (Some(d), Some(f), Some(l)) = (field("device"), field("first_seq"), field("last_seq"))
            && let (Ok(f), Ok(l)) = (f.parse(), l.parse())
        {
            out.entry(d).or_default().push((f, l));
        }
    }
    out
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn covered(ranges: &[(u64, u64)], first: u64, last: u64) -> bool {
    // every seq of first..=last lies in some range
    let mut next = first;
    let mut sorted = ranges.to_vec();
    sorted.sort();
    for (a, b) in sorted {
        if a <= next && b >= next {
            next = b + 1;
        }
        if next > last {
            return true;
        }
    }
    next > last
}

async fn total_received(server: &ServerProc) -> Option<u64> {
    let list = server.get("/api/v1/devices").await.ok()?;
    Some(
        list["devices"]
            .as_array()?
            .iter()
            .map(|d| d["delivery"]["received"].as_u64().unwrap_or(0))
            .sum(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_kill_9_of_server_and_simulators_accounts_for_every_seq_and_notifies_once() {
    let secs = env_u64("CHAOS_SECS", 120);
    let seed = env_u64("CHAOS_SEED", 0x00C4_A05E);
    let devices = SIMULATORS * PER_SIMULATOR;
    let dir = tempfile::tempdir().unwrap();
    let certs = CertDir::new(dir.path().join("certs"));
    pki::init(&certs, &["localhost".into(), "127.0.0.1".into()], false).unwrap();
    {
        let ca = pki::Ca::load(&certs).unwrap();
        for i in 0..devices {
            ca.ensure_device(&certs, &common::DeviceId::new(device_id(i)).unwrap())
                .unwrap();
        }
    }
    let hook = WebhookReceiver::start().await.unwrap();
    let extra = format!(
        r#"[presence]
stale_after_s = 5
offline_after_s = 10
[alerts]
hold_offline_s = 1
[notify.default]
channels = ["hook"]
per_minute = 100000
[notify.channels.hook]
type = "webhook"
url = "{}"
max_retry_s = 60
"#,
        hook.url
    );
    let mut server = ServerProc::new(dir.path(), &certs, &extra).unwrap();
    server.start().unwrap();
    assert!(
        server.wait_ready(Duration::from_secs(30)).await,
        "server up:\n{}",
        rvm_fleet_tests::read(&server.log)
    );
    let buffers = dir.path().join("buffers");
    let sim_log = |k: usize| dir.path().join(format!("sim{k}.log"));
    let spawn = |k: usize, interval_ms: u64, mqtt: u16| {
        let spec = SimSpec {
            prefix: PREFIX,
            devices: PER_SIMULATOR,
            first: k * PER_SIMULATOR,
            interval_ms,
            sites: 4,
            buffer_dir: Some(&buffers),
        };
        spawn_simulator(&certs, mqtt, &spec, &sim_log(k)).unwrap()
    };
    let mut sims: Vec<Option<Child>> = (0..SIMULATORS)
        .map(|k| Some(spawn(k, INTERVAL_MS, server.mqtt)))
        .collect();
    let t0 = Instant::now();
    loop {
        let n = server
            .get("/api/v1/devices")
            .await
            .ok()
            .and_then(|v| v["devices"].as_array().map(|a| a.len()))
            .unwrap_or(0);
        if n >= devices {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "{n} of {devices} machines after 2 min"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // the chaos
    let mut rng = Rng::new(seed);
    let mut kills = Kills::default();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_millis(rng.range(2_000, 8_000))).await;
        if rng.chance(0.3) {
            server.kill9();
            kills.server += 1;
            kills.server_at.push(Instant::now());
            tokio::time::sleep(Duration::from_millis(rng.range(200, 4_000))).await;
            server.start().unwrap();
        } else {
            let k = rng.range(0, SIMULATORS as u64) as usize;
            if let Some(mut c) = sims[k].take() {
                c.kill9();
                kills.simulator += 1;
            }
            tokio::time::sleep(Duration::from_millis(rng.range(0, 5_000))).await;
            sims[k] = Some(spawn(k, INTERVAL_MS, server.mqtt));
        }
    }
    eprintln!(
        "chaos: {secs} s done ({} server kills, {} simulator kills); draining",
        kills.server, kills.simulator
    );

    // everything up, then a graceful stop and a drain
    assert!(server.wait_ready(Duration::from_secs(30)).await, "server back");
    tokio::time::sleep(Duration::from_secs(10)).await;
    for s in sims.iter_mut() {
        if let Some(mut c) = s.take() {
            c.terminate();
        }
    }
    let mut sims: Vec<Child> = (0..SIMULATORS)
        .map(|k| spawn(k, DRAIN_INTERVAL_MS, server.mqtt))
        .collect();
    let drain = Instant::now();
    let mut last = (None, Instant::now());
    while drain.elapsed() < Duration::from_secs(180) {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = total_received(&server).await;
        if now.is_some() && now == last.0 {
            if last.1.elapsed() >= Duration::from_secs(10) {
                break;
            }
        } else {
            last = (now, Instant::now());
        }
    }
    for c in sims.iter_mut() {
        c.terminate();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    // accounting, device by device
    let mut logs = BTreeMap::new();
    for k in 0..SIMULATORS {
        for (d, mut r) in logged_drops(&rvm_fleet_tests::read(&sim_log(k))) {
            logs.entry(d).or_insert_with(Vec::new).append(&mut r);
        }
    }
    let (mut delivered, mut dups, mut reported, mut missing_total) = (0u64, 0u64, 0u64, 0u64);
    let mut problems = Vec::new();
    for i in 0..devices {
        let id = device_id(i);
        let d = server.get(&format!("/api/v1/devices/{id}")).await.unwrap();
        let v = &d["delivery"];
        let (received, last_seq, dup, missing, rep) = (
            v["received"].as_u64().unwrap_or(0),
            v["last_seq"].as_u64().unwrap_or(0),
            v["duplicates_dropped"].as_u64().unwrap_or(0),
            v["missing"].as_u64().unwrap_or(0),
            v["reported_dropped"].as_u64().unwrap_or(0),
        );
        delivered += received;
        dups += dup;
        reported += rep;
        missing_total += missing;
        let ranges = logs.get(&id).cloned().unwrap_or_default();
        let logged: u64 = ranges.iter().map(|(a, b)| b - a + 1).sum();
        if rep != logged {
            problems.push(format!(
                "{id}: server counts {rep} reported dropped, the simulator logged {logged}"
            ));
        }
        if missing > rep {
            problems.push(format!(
                "{id}: {missing} seqs missing, only {rep} reported dropped"
            ));
        }
        let gaps: Vec<(u64, u64)> = v["gaps"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|g| Some((g[0].as_u64()?, g[1].as_u64()?)))
                    .collect()
            })
            .unwrap_or_default();
        for (a, b) in &gaps {
            if !covered(&ranges, *a, *b) {
                problems.push(format!(
                    "{id}: seqs {a}..={b} never arrived and were not reported dropped"
                ));
            }
        }
        // the machine's own view, from its buffer on disk (the simulator stopped cleanly)
        // (read through the store, not Buffer::open, which would note an unclean stop)
        let store = rvm_agent::buffer::SledStore::open(&buffers.join(&id), None).unwrap();
        let (records, _) = store.count_and_bytes().unwrap();
        let agent_last = store.last_seq().unwrap().unwrap_or(0);
        if records != 0 {
            problems.push(format!(
                "{id}: {records} records still in its buffer after the drain"
            ));
        }
        if agent_last & rvm_agent::buffer::RESERVED_FLAG != 0 {
            problems.push(format!("{id}: the simulator did not stop cleanly"));
        } else if agent_last != last_seq {
            problems.push(format!(
                "{id}: the machine's last seq is {agent_last}, the server's {last_seq}"
            ));
        }
    }
    let mut per_notification: HashMap<String, Vec<Instant>> = HashMap::new();
    for r in hook.received.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let id = r.body["id"].as_str().unwrap_or("").to_string();
        per_notification.entry(id).or_default().push(r.at);
    }
    let notified = per_notification.values().map(Vec::len).sum::<usize>();
    // a second copy is allowed only when a kill -9 cut the first delivery short
    let redelivered = |at: &[Instant]| {
        at.len() == 2
            && kills
                .server_at
                .iter()
                .any(|k| at[0] <= *k && *k <= at[1] && *k - at[0] <= IN_FLIGHT)
    };
    let twice: Vec<(&String, usize)> = per_notification
        .iter()
        .filter(|(_, at)| at.len() > 1 && !redelivered(at))
        .map(|(id, at)| (id, at.len()))
        .collect();
    let in_flight = per_notification
        .values()
        .filter(|at| at.len() > 1 && redelivered(at))
        .count();
    let firing = per_notification.keys().filter(|k| k.ends_with("/firing")).count();
    println!(
        "chaos report (seed {seed:#x}, {secs} s, {devices} machines in {SIMULATORS} simulators at {INTERVAL_MS} ms):\n\
         - kills: server {} x kill -9, simulators {} x kill -9\n\
         - records delivered {delivered}, duplicates dropped by the server {dups}\n\
         - seqs reported dropped {reported} (by killed simulators on restart: {} reports), missing at the server {missing_total}\n\
         - notifications {notified} ({} distinct, {firing} firing), notified twice: {} (and {in_flight} in flight at a kill -9, delivered again)",
        kills.server,
        kills.simulator,
        logs.values().map(Vec::len).sum::<usize>(),
        per_notification.len(),
        twice.len()
    );
    server.terminate();
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(twice.is_empty(), "notified more than once: {twice:?}");
    assert!(delivered > 0 && kills.server + kills.simulator > 0);
}

#[test]
fn chaos_kill_9_of_a_buffer_never_reuses_a_seq() {
    let dir = tempfile::tempdir().unwrap();
    let buf = dir.path().join("buf");
    let mut highest = 0u64;
    for round in 0..6u64 {
        // appends, acknowledges and prints each seq until killed (tests/src/bin/chaos-appender.rs)
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_chaos-appender"))
            .arg(&buf)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(c.stdout.take().unwrap()).lines();
        let mut seen = 0;
        // a different number of records per round, so the kill lands anywhere in a block
        while seen < 100 + round * 61 {
            let Some(Ok(line)) = lines.next() else { break };
            let Some(seq) = line
                .trim()
                .strip_prefix("SEQ ")
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            assert!(
                seq > highest,
                "round {round}: seq {seq} handed out again (highest before: {highest})"
            );
            highest = seq;
            seen += 1;
        }
        let _ = c.kill();
        let _ = c.wait();
        assert!(seen > 0, "round {round}: the helper printed nothing");
    }
}
