//! The demo's story (`scenarios/demo.toml`) replayed 10 times faster by an `rvm-sim simulate`
//! process against a real server (embedded broker, mTLS), with the shipped rules' timings cut
//! to match: the server must tell every part of it, and lose nothing while machines and a
//! whole site are offline.

use std::time::{Duration, Instant};

use rvm_fleet_tests::{Child, FleetOptions, TestFleet, bin_path, eventually};
use serde_json::Value;

const SPEED: f64 = 10.0;
const INTERVAL_MS: u64 = 500;

/// The shipped rules that the story exercises, with `for_s` shortened for the faster replay.
const RULES: &str = r#"
[[rules]]
name = "gpu_temp_high"
metric = "gpu.temp_c"
op = ">"
threshold = 80
clear = 75
for_s = 2
severity = "warning"

[[rules]]
name = "service_down"
metric = "process.down"
op = ">"
threshold = 0
for_s = 1
severity = "critical"

[[rules]]
name = "device_offline"
metric = "presence.offline"
op = ">"
threshold = 0
severity = "critical"

[[rules]]
name = "camera_fps_low"
metric = "app.camera_fps"
op = "<"
threshold = 10
clear = 12
for_s = 2
severity = "warning"

[[rules]]
name = "inference_slow"
metric = "app.inference_ms"
op = ">"
threshold = 150
clear = 120
for_s = 2
severity = "warning"

[correlate.site_outage]
min_devices = 3
window_s = 12

[correlate.thermal]
window_s = 60

[correlate.outlier]
metrics = ["gpu.temp_c"]
k = 5.0
min_cohort = 8
for_s = 5
max_sample_age_s = 20
"#;

async fn incidents(fleet: &TestFleet) -> Vec<Value> {
    let v = fleet.get("/api/v1/incidents").await.unwrap_or_default();
    let mut all = v["open"].as_array().cloned().unwrap_or_default();
    all.extend(v["recent"].as_array().cloned().unwrap_or_default());
    all
}

/// Does the server tell this part (from its incidents and its alerts)?
type Check = Box<dyn Fn(&[Value], &[Value]) -> bool + Send + Sync>;

fn names_device(i: &Value, device: &str) -> bool {
    i["devices"]
        .as_array()
        .is_some_and(|d| d.iter().any(|d| d == device))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_story_replayed_ten_times_faster_is_told_by_the_server_with_nothing_lost() {
    let fleet = TestFleet::start_with(FleetOptions {
        rules: Some(RULES.into()),
        stale_after_ms: 3_000,
        offline_after_ms: 6_000,
        ..Default::default()
    })
    .unwrap();
    let log = fleet.dir.path().join("simulate.log");
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/demo.toml");
    let broker = format!("127.0.0.1:{}", fleet.broker_port());
    let certs = fleet.certs.root().display().to_string();
    let interval = INTERVAL_MS.to_string();
    let speed = SPEED.to_string();
    let started = Instant::now();
    let mut sim = Child::spawn(
        "rvm-sim",
        &[
            "simulate",
            "--devices",
            "20",
            "--first",
            "1",
            "--prefix",
            "rvm",
            "--sites",
            "3",
            "--broker",
            &broker,
            "--certs",
            &certs,
            "--interval",
            &interval,
            "--scenario",
            scenario,
            "--speed",
            &speed,
        ],
        &log,
    )
    .unwrap();
    assert!(bin_path("rvm-sim").exists());
    let sim_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // Each part of the story, as the server tells it. The replay lasts 90 s; its last event
    // (site3 offline) ends at 66 s.
    let want: [(&str, Check); 7] = [
        (
            "thermal incident on rvm0007",
            Box::new(|inc, _| {
                inc.iter()
                    .any(|i| i["kind"] == "thermal_throttling" && names_device(i, "rvm0007"))
            }),
        ),
        (
            "service_down on rvm0012",
            Box::new(|_, al| {
                al.iter()
                    .any(|a| a["rule"] == "service_down" && a["device"] == "rvm0012")
            }),
        ),
        (
            "rvm0010's camera health check fails as an alert of its own",
            Box::new(|_, al| {
                al.iter().any(|a| {
                    a["rule"] == "check.camera" && a["device"] == "rvm0010" && a["severity"] == "critical"
                })
            }),
        ),
        (
            "cohort incident naming v3.3",
            Box::new(|inc, _| {
                inc.iter().any(|i| {
                    i["kind"] == "cohort_regression"
                        && i["attribute"] == "vision_model_version"
                        && i["attribute_value"] == "v3.3"
                })
            }),
        ),
        (
            "rvm0009 offline",
            Box::new(|_, al| {
                al.iter()
                    .any(|a| a["rule"] == "device_offline" && a["device"] == "rvm0009")
            }),
        ),
        (
            "site3 outage with its 7 machines",
            Box::new(|inc, _| {
                inc.iter().any(|i| {
                    i["kind"] == "site_outage"
                        && i["site"] == "site3"
                        && i["devices"].as_array().is_some_and(|d| d.len() == 7)
                })
            }),
        ),
        (
            "outlier incident on rvm0016's GPU temperature",
            Box::new(|inc, _| {
                inc.iter().any(|i| {
                    i["kind"] == "outlier" && i["metric"] == "gpu.temp_c" && names_device(i, "rvm0016")
                })
            }),
        ),
    ];
    let mut seen = vec![None; want.len()];
    let deadline = Duration::from_secs(100);
    while started.elapsed() < deadline && seen.iter().any(Option::is_none) {
        let inc = incidents(&fleet).await;
        let al = fleet
            .get("/api/v1/alerts?state=all")
            .await
            .ok()
            .and_then(|v| v["alerts"].as_array().cloned())
            .unwrap_or_default();
        for (k, (_, check)) in want.iter().enumerate() {
            if seen[k].is_none() && check(&inc, &al) {
                seen[k] = Some(started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for (k, (what, _)) in want.iter().enumerate() {
        println!("{what}: {:?}", seen[k]);
    }
    let missing: Vec<&str> = want
        .iter()
        .zip(&seen)
        .filter(|(_, s)| s.is_none())
        .map(|((w, _), _)| *w)
        .collect();
    assert!(
        missing.is_empty(),
        "the server did not tell: {missing:?}\nincidents: {:#}\nsimulator log:\n{}",
        Value::Array(incidents(&fleet).await),
        sim_log()
    );
    // One site incident, not one per machine; rvm0009 (site1) alone is no site outage.
    let inc = incidents(&fleet).await;
    let sites: Vec<&Value> = inc.iter().filter(|i| i["kind"] == "site_outage").collect();
    assert_eq!(sites.len(), 1, "{sites:#?}");

    // Nothing lost: once site3 is back (66 s into the replay) and drained, every machine's
    // records arrived without a gap, and the machines that were offline kept recording.
    let wait = Duration::from_secs(80).saturating_sub(started.elapsed());
    tokio::time::sleep(wait).await;
    let settled = eventually(Duration::from_secs(20), || async {
        let ds = fleet.devices().await.ok()?;
        let ours: Vec<&Value> = ds
            .iter()
            .filter(|d| d["id"].as_str().is_some_and(|s| s.starts_with("rvm")))
            .collect();
        (ours.len() == 20
            && ours
                .iter()
                .all(|d| d["status"] == "online" || d["status"] == "degraded"))
        .then_some(())
    })
    .await;
    assert!(settled.is_some(), "{:#?}", fleet.devices().await.unwrap());
    let mut last = Vec::new();
    for n in 1..=20 {
        let id = format!("rvm{n:04}");
        let d = fleet.device(&id).await.unwrap().unwrap();
        let del = &d["delivery"];
        assert_eq!(del["gaps"], Value::Array(vec![]), "{id}: {del}");
        assert_eq!(del["missing"], 0, "{id}: {del}");
        assert_eq!(del["reported_dropped"], 0, "{id}: {del}");
        last.push((id, del["last_seq"].as_u64().unwrap()));
    }
    // rvm0009 was cut off 12 s and site3 18 s at 2 records/s: had they stopped recording they
    // would be 24 and 36 records behind; their buffers kept everything.
    let max = last.iter().map(|(_, s)| *s).max().unwrap();
    for (id, seq) in &last {
        assert!(
            max - seq <= 10,
            "{id} is {} records behind the others: {last:?}",
            max - seq
        );
    }
    let log = sim_log();
    assert!(
        log.contains("site3's router dies: begins") && log.contains("site3's router dies: ends"),
        "{log}"
    );
    sim.terminate();
}
