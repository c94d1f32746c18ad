//! Security checks on devices that misbehave, each breaking something on purpose (the API,
//! roles and TLS checks are in `security.rs`):
//!
//! - a device whose clock is a day off is flagged (`clock.skew_s`) and does not pollute
//!   history: its rows are stored at receive time with the device's offset kept
//!   (`fleet-server/src/fleet/clock.rs`);
//! - an agent whose clock jumps back and forward keeps seq order (seq comes from the buffer)
//!   and the server flags the skew;
//! - an agent whose disk fills up keeps running and reports it (a 2 MiB tmpfs: needs root).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::codec;
use common::topics::{Kind, Topic};
use common::{DeviceId, DeviceState, Envelope, Telemetry};
use rumqttc::QoS;
use rvm_fleet_tests::{Child, ConnectOutcome, Probe, TestFleet, eventually, tls_for};
use serde_json::{Value, json};

const DAY_MS: i64 = 86_400_000;

/// The alert of rule `rule` on `device` (pending or firing), if any.
async fn alert_of(fleet: &TestFleet, rule: &str, device: &str) -> Option<Value> {
    let v = fleet.get("/api/v1/alerts").await.ok()?;
    v["alerts"]
        .as_array()?
        .iter()
        .find(|a| a["rule"] == rule && a["device"] == device)
        .cloned()
}

async fn points(fleet: &TestFleet, device: &str, name: &str, window: Option<(i64, i64)>) -> Vec<Value> {
    let q = match window {
        Some((f, t)) => format!("/api/v1/devices/{device}/metrics?name={name}&from={f}&to={t}&step=1s"),
        None => format!("/api/v1/devices/{device}/metrics?name={name}&step=1s"),
    };
    fleet.get(&q).await.unwrap()["points"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn build_telemetry(cpu: f64) -> Telemetry {
    let mut t = Telemetry::default();
    t.cpu.usage_pct = cpu as f32;
    t.memory.total_bytes = 8 << 30;
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_a_device_clock_a_day_off_is_flagged_and_history_stays_clean() {
    let fleet = TestFleet::start().unwrap();
    let port = fleet.broker_port();
    for (id, skew) in [("skewahead", DAY_MS), ("skewbehind", -DAY_MS)] {
        let dev = DeviceId::new(id).unwrap();
        let ConnectOutcome::Accepted(client, mut el) =
            Probe::new(id, tls_for(&fleet.device_identity(id).unwrap()))
                .connect(port)
                .await
        else {
            panic!("{id} connects");
        };
        let t0 = common::time::now_ms();
        let birth = common::Birth {
            boot_id: "b1".into(),
            agent_version: "probe".into(),
            ..Default::default()
        };
        let env = Envelope::new(dev.clone(), 0, t0 + skew, DeviceState::Online(birth));
        client
            .publish(
                Topic::device(&dev, Kind::State),
                QoS::AtLeastOnce,
                true,
                codec::encode(&env).unwrap(),
            )
            .await
            .unwrap();
        // the birth first (a record is "live", made on this connection, once its birth is in)
        let birth_seen = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                tokio::select! {
                    ev = el.poll() => { ev.unwrap(); }
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {
                        if let Ok(Some(d)) = fleet.device(id).await
                            && d["birth"]["boot_id"] == "b1"
                        {
                            return;
                        }
                    }
                }
            }
        })
        .await;
        assert!(birth_seen.is_ok(), "{id}: the birth arrives");
        // live records, one a second, stamped by the wrong clock
        for seq in 1..=12u64 {
            let now = common::time::now_ms();
            let env = Envelope::new(dev.clone(), seq, now + skew, build_telemetry(42.0));
            client
                .publish(
                    Topic::device(&dev, Kind::Telemetry),
                    QoS::AtLeastOnce,
                    false,
                    codec::encode(&env).unwrap(),
                )
                .await
                .unwrap();
            // keep the connection going for a second (PUBACKs, pings)
            let _ = tokio::time::timeout(Duration::from_millis(1000), async {
                while el.poll().await.is_ok() {}
            })
            .await;
        }
        let Some(a) = eventually(Duration::from_secs(10), || alert_of(&fleet, "clock_skew", id)).await else {
            panic!(
                "{id}: no clock_skew alert; alerts {} health {} device {}",
                fleet.get("/api/v1/alerts?state=all").await.unwrap(),
                fleet.health().await.unwrap()["alerts"],
                fleet.device(id).await.unwrap().unwrap_or_default()
            );
        };
        let v = a["value"].as_f64().unwrap();
        assert!((v - skew as f64 / 1000.0).abs() < 120.0, "{id}: skew {v}");
        // history: the last hour has the records, the day the clock names has none
        let now = common::time::now_ms();
        let recent = points(&fleet, id, "cpu.usage_pct", None).await;
        assert!(!recent.is_empty(), "{id}: the last hour shows the device");
        for p in &recent {
            let ts = p[0].as_i64().unwrap();
            assert!(
                ts >= now - 3_600_000 && ts <= now + 60_000,
                "{id}: a point at {ts}"
            );
            assert_eq!(p[3].as_f64(), Some(42.0));
        }
        let there = points(
            &fleet,
            id,
            "cpu.usage_pct",
            Some((t0 + skew - 3_600_000, t0 + skew + 3_600_000)),
        )
        .await;
        assert!(
            there.is_empty(),
            "{id}: rows landed at the device's wrong time: {there:?}"
        );
        // the device's own timestamp is kept with each row
        let offs = points(&fleet, id, "clock.device_offset_s", None).await;
        assert!(!offs.is_empty(), "{id}: the offset is kept");
        for p in offs {
            assert!(
                (p[3].as_f64().unwrap() - skew as f64 / 1000.0).abs() < 60.0,
                "{id}: offset {p}"
            );
        }
    }
    let h = fleet.health().await.unwrap();
    assert!(
        h["ingest"]["clock_moved"].as_u64().unwrap() >= 24,
        "{}",
        h["ingest"]
    );
}

/// One device through the agent's own pipeline (buffer, collector, link) on an actix system
/// of its own; the test owns its buffer and can append records stamped by any clock.
struct Device {
    sys: Option<actix::System>,
    thread: Option<std::thread::JoinHandle<()>>,
    buffer: rvm_agent::buffer::BufferHandle,
}

impl Device {
    fn start(fleet: &TestFleet, id: &str) -> Device {
        let device = DeviceId::new(id).unwrap();
        let identity = fleet.device_identity(id).unwrap();
        let port = fleet.broker_port();
        let b = rvm_agent::buffer::Buffer::open(
            device.clone(),
            Box::new(rvm_agent::buffer::MemStore::default()) as Box<dyn rvm_agent::buffer::Store>,
            rvm_agent::buffer::Caps::default(),
            rvm_agent::buffer::FlushPolicy::EveryRecord,
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let sys = actix::System::new();
            let buffer = sys.block_on(async move {
                let h = rvm_agent::runtime::start_device(rvm_agent::runtime::DeviceParts {
                    device,
                    brokers: vec![rvm_agent::runtime::Broker::new("127.0.0.1", port)],
                    identity,
                    keep_alive: Duration::from_secs(5),
                    window: 64,
                    // the collector stays out of the way: the test makes the records
                    interval: Duration::from_secs(3600),
                    source: Box::new(rvm_sim::source::SimSource::new(1, 1000)),
                    buffer: b,
                    birth: rvm_agent::runtime::build_birth(None, vec![], vec![], false),
                    gate: None,
                })
                .unwrap();
                let b = h.buffer.clone();
                std::mem::forget(h);
                b
            });
            let _ = tx.send((actix::System::current(), buffer));
            let _ = sys.run();
        });
        let (sys, buffer) = rx.recv().unwrap();
        Device {
            sys: Some(sys),
            thread: Some(thread),
            buffer,
        }
    }

    /// Appends through the device's buffer actor (which wakes its link).
    async fn append(&self, ts_ms: i64, cpu: f64) {
        self.buffer
            .append(ts_ms, rvm_agent::buffer::Body::Telemetry(build_telemetry(cpu)))
            .await
            .unwrap();
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Some(s) = self.sys.take() {
            s.stop();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_an_agent_clock_jumping_keeps_seq_order_and_is_flagged() {
    let fleet = TestFleet::start().unwrap();
    let id = "jumpy";
    let dev = Device::start(&fleet, id);
    let now = common::time::now_ms;
    for _ in 0..5 {
        dev.append(now(), 10.0).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eventually(Duration::from_secs(15), || async {
        let d = fleet.device(id).await.ok()??;
        (d["delivery"]["received"].as_u64()? >= 5).then_some(())
    })
    .await
    .expect("the device reports");
    // the clock jumps back a day; the skew input is the largest offset of the last 10 s, so
    // it shows once the jumped clock is all the server has heard for that long
    let jump_back = Instant::now();
    while jump_back.elapsed() < Duration::from_secs(13) {
        dev.append(now() - DAY_MS, 20.0).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let a = eventually(Duration::from_secs(10), || alert_of(&fleet, "clock_skew", id))
        .await
        .expect("a clock jumping back a day is flagged");
    assert!(a["value"].as_f64().unwrap() < -86_000.0, "{a}");
    // and forward
    for _ in 0..5 {
        dev.append(now() + DAY_MS, 30.0).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let last = dev.buffer.stats().last_seq;
    let d = eventually(Duration::from_secs(15), || async {
        let d = fleet.device(id).await.ok()??;
        (d["delivery"]["last_seq"].as_u64()? >= last && dev.buffer.stats().records == 0).then_some(d)
    })
    .await
    .expect("everything delivered");
    let v = &d["delivery"];
    assert_eq!(v["gaps"], json!([]), "{v}");
    assert_eq!(v["missing"], 0, "{v}");
    assert_eq!(v["reordered"], 0, "seq order held whatever the clock said: {v}");
    assert_eq!(v["received"].as_u64(), Some(last), "{v}");
    assert_eq!(v["duplicates_dropped"], 0, "{v}");
    // the latest figures are the newest records (by seq), not the ones the clock calls newest
    assert_eq!(d["metrics"]["cpu.usage_pct"], 30.0, "{}", d["metrics"]);
    // history: every record sits in the last hour; a day before and after are empty
    let t = now();
    let recent = points(&fleet, id, "cpu.usage_pct", None).await;
    // (min and max of each bucket; the collector's own first record may share a bucket)
    let values: BTreeSet<i64> = recent
        .iter()
        .flat_map(|p| [p[1].as_f64(), p[2].as_f64()])
        .flatten()
        .map(|x| x as i64)
        .collect();
    for v in [10, 20, 30] {
        assert!(values.contains(&v), "{v} missing from the last hour: {recent:?}");
    }
    for p in &recent {
        let ts = p[0].as_i64().unwrap();
        assert!(ts >= t - 3_600_000 && ts <= t + 60_000, "a point at {ts}");
    }
    for w in [
        (t - DAY_MS - 3_600_000, t - DAY_MS + 3_600_000),
        (t + DAY_MS - 3_600_000, t + DAY_MS + 3_600_000),
    ] {
        assert!(
            points(&fleet, id, "cpu.usage_pct", Some(w)).await.is_empty(),
            "rows at the jumped time {w:?}"
        );
    }
}

/// A 2 MiB tmpfs mounted for the test and unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

/// Why the test's tmpfs was not mounted.
#[derive(Debug, thiserror::Error)]
enum MountError {
    #[error("cannot create {path}: {source}")]
    Create {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run mount: {0}")]
    Spawn(std::io::Error),
    #[error("mount failed: {0}")]
    Failed(String),
}

impl Tmpfs {
    fn mount(dir: &Path) -> Result<Tmpfs, MountError> {
        std::fs::create_dir_all(dir).map_err(|source| MountError::Create {
            path: dir.to_path_buf(),
            source,
        })?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(dir)
            .output()
            .map_err(MountError::Spawn)?;
        if !out.status.success() {
            return Err(MountError::Failed(
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_an_agent_with_a_full_disk_keeps_running_and_reports_it_needs_root_tmpfs() {
    let fleet = TestFleet::start().unwrap();
    let disk = fleet.dir.path().join("disk");
    let _tmpfs = Tmpfs::mount(&disk).unwrap_or_else(|e| {
        panic!("this test needs root to mount a 2 MiB tmpfs (mount -t tmpfs -o size=2m tmpfs DIR): {e}")
    });
    let id = "fulldisk";
    let extra = rvm_fleet_tests::AgentExtra {
        buffer: String::new(),
        collector: String::new(),
        tail: format!(
            "[health]\ndata_disk_path = \"{}\"\nreport_interval_s = 5\nwatch_processes = []\nsystemd_units = []\n",
            disk.display()
        ),
    };
    let cfg = fleet.agent_config_extra(id, 200, &extra).unwrap();
    // the buffer lives on the small disk
    let text = std::fs::read_to_string(&cfg).unwrap();
    let buffer_dir = disk.join("buffer");
    let text = text
        .lines()
        .map(|l| {
            if l.starts_with("dir = ") {
                format!("dir = \"{}\"", buffer_dir.display())
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&cfg, text).unwrap();
    let log = fleet.dir.path().join("fulldisk.log");
    let mut agent = Child::spawn("rvm-agent", &["--config", cfg.to_str().unwrap()], &log).unwrap();
    let received = |d: &Value| d["delivery"]["received"].as_u64().unwrap_or(0);
    let before = eventually(Duration::from_secs(20), || async {
        let d = fleet.device(id).await.ok()??;
        let writable = d["health_report"]["checks"].as_array()?.iter().any(|c| {
            c["status"] == "ok" && c["message"].as_str().is_some_and(|m| m.ends_with("is writable"))
        });
        (received(&d) > 10 && writable).then_some(received(&d))
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "the agent reports, healthy; log:\n{}",
            rvm_fleet_tests::read(&log)
        )
    });
    // fill the disk
    let filler = disk.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let start = Instant::now();
    let d = eventually(Duration::from_secs(30), || async {
        let d = fleet.device(id).await.ok()??;
        let events = d["recent_events"].as_array()?;
        let said = events.iter().any(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("buffer store refuses writes"))
        });
        // the health report's data-disk check is critical and says why
        let health = d["health_report"]["checks"].as_array().is_some_and(|c| {
            c.iter().any(|c| {
                c["status"] == "critical" && c["message"].as_str().is_some_and(|m| m.contains("not writable"))
            })
        });
        (said && health).then_some(d)
    })
    .await;
    let Some(d) = d else {
        let now = fleet.device(id).await.ok().flatten().unwrap_or_default();
        panic!(
            "the full disk is not reported: events {} health {}; agent log:\n{}",
            now["recent_events"],
            now["health_report"],
            rvm_fleet_tests::read(&log)
        );
    };
    let full_at = received(&d);
    println!("full disk reported after {:.1} s", start.elapsed().as_secs_f64());
    // still running, still sending its figures (from memory)
    let later = eventually(Duration::from_secs(15), || async {
        let d = fleet.device(id).await.ok()??;
        (received(&d) > full_at + 10).then_some(received(&d))
    })
    .await
    .expect("telemetry keeps flowing while the disk is full");
    assert!(
        agent.0.try_wait().unwrap().is_none(),
        "the agent is still running"
    );
    assert!(later > before);
    agent.terminate();
}
