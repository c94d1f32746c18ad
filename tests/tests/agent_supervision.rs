//! Agent acceptance: supervision (panics restarted, the buffer actor's among them without a
//! record lost or sent twice, restart limit exits non-zero with the buffer closed, a hung GPU
//! read timed out without the link lapsing) and the Jetson backend end to end on a fake tree.
//! The faults come from the agent's test-only hook (`rvm_agent::faults`, the `faults` feature
//! this crate enables as a dev-dependency).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rvm_agent::agent::Overrides;
use rvm_agent::buffer::Store as _;
use rvm_agent::faults::{FAULTS_ENV, Faults};
use rvm_fleet_tests::{AgentExtra, Agents, Child, TestFleet, eventually};

fn fixture(name: &str) -> String {
    format!(
        "{}/../agent/tests/fixtures/jetson/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn jetson_paths(name: &str) -> String {
    let root = fixture(name);
    format!("[paths]\nsysfs = \"{root}/sys\"\nprocfs = \"{root}/proc\"\netc_root = \"{root}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_panics_3_times_is_restarted_each_time_while_the_rest_keeps_publishing() {
    let fleet = TestFleet::start().unwrap();
    let cfg = fleet.agent_config("panicky", 200).unwrap();
    let faults = Faults::default();
    faults.collector_panics.store(3, Ordering::SeqCst);
    let agents = Agents::start_with(vec![(
        cfg,
        Overrides {
            faults: Some(Arc::new(faults)),
            ..Default::default()
        },
    )])
    .unwrap();
    let collector = eventually(Duration::from_secs(20), || async {
        let s = agents.actors[0].lock().ok()?.clone();
        let c = s.into_iter().find(|a| a.name == "collector")?;
        (c.restarts == 3 && c.alive).then_some(c)
    })
    .await
    .expect("collector restarted 3 times and alive");
    assert_eq!(
        collector.last_exit.as_deref(),
        Some("panic: injected collector fault")
    );
    // the other actors were never restarted, and the link stayed up
    for a in agents.actors[0]
        .lock()
        .unwrap()
        .iter()
        .filter(|a| a.name != "collector")
    {
        assert_eq!(a.restarts, 0, "{a:?}");
    }
    assert_eq!(agents.links[0].disconnects.load(Ordering::Relaxed), 0);
    // telemetry flows again, and the restarts reach the server in a health report
    let d = eventually(Duration::from_secs(20), || async {
        let d = fleet.device("panicky").await.ok()??;
        let actors = d["health_report"]["actors"].as_array()?.clone();
        let c = actors.iter().find(|a| a["name"] == "collector")?;
        (c["restarts"] == 3 && d["metrics"]["memory.total_bytes"].as_f64()? > 0.0).then_some(d)
    })
    .await
    .expect("health report with the restart count reaches the server");
    let ev = d["health_report"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["name"] == "actor:collector");
    assert!(ev, "a check names the restarted actor: {}", d["health_report"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_panicking_past_the_restart_limit_makes_the_agent_exit_non_zero() {
    let fleet = TestFleet::start().unwrap();
    let extra = AgentExtra {
        tail:
            "[supervisor]\nmax_restarts = 3\nwindow_s = 60\nbackoff_initial_ms = 50\nbackoff_max_ms = 200\n"
                .into(),
        ..Default::default()
    };
    let cfg = fleet.agent_config_extra("doomed", 100, &extra).unwrap();
    let log = fleet.dir.path().join("doomed.log");
    let mut agent = Child::spawn_env(
        "rvm-agent",
        &["--config", cfg.to_str().unwrap()],
        &[("RVM_AGENT_FAULTS", "collector_panic:1000")],
        &log,
    )
    .unwrap();
    let code = agent.wait_exit(Duration::from_secs(30));
    let log_text = rvm_fleet_tests::read(&log);
    assert!(
        !log_text.contains(&format!("{FAULTS_ENV} ignored")),
        "the rvm-agent binary has no fault injection: build it with \
         `cargo build -p rvm-agent --features faults` (`cargo test --workspace` does)\n{log_text}"
    );
    assert_eq!(code, Some(70), "exit code (log:\n{log_text})");
    assert!(log_text.contains("restart limit exceeded"), "{log_text}");
    // the buffer was closed on the way out (the buffer actor went with the runtime): the exact
    // last seq, not a reservation that the next start would report as possibly lost
    let store = rvm_agent::buffer::SledStore::open(&fleet.dir.path().join("doomed-buffer"), None).unwrap();
    let last = store.last_seq().unwrap().expect("a last seq");
    assert_eq!(last & rvm_agent::buffer::RESERVED_FLAG, 0, "closed: {last:#x}");
    assert!(last > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffer_actor_panicking_mid_drain_is_restarted_and_every_record_arrives_exactly_once() {
    let mut fleet = TestFleet::start().unwrap();
    // the backlog is made before the first connection: nothing is in flight when the broker
    // comes, so a record sent twice could only come from the buffer's restarts
    fleet.server.stop_broker();
    // a health report at least every 5 s: the last restarts may change no check's status (when
    // the health actor saw the buffer running, restarted, before and after them), and the
    // default 60 s until the next report is longer than this test waits for it
    let extra = AgentExtra {
        tail: "[health]\nreport_interval_s = 5\n".into(),
        ..Default::default()
    };
    let cfg = fleet.agent_config_extra("drain1", 50, &extra).unwrap();
    let faults = Arc::new(Faults::default());
    let agents = Agents::start_with(vec![(
        cfg,
        Overrides {
            faults: Some(faults.clone()),
            ..Default::default()
        },
    )])
    .unwrap();
    let backlog = eventually(Duration::from_secs(30), || async {
        let n = agents.buffers[0].stats().records;
        (n >= 300).then_some(n)
    })
    .await
    .expect("a backlog of 300 records at 20 Hz");
    // the first three acknowledgement batches of the drain each panic the buffer actor after
    // deleting one record
    faults.buffer_panics.store(3, Ordering::SeqCst);
    fleet.server.start_broker().unwrap();
    let buffer = eventually(Duration::from_secs(45), || async {
        let s = agents.actors[0].lock().ok()?.clone();
        let b = s.into_iter().find(|a| a.name == "buffer")?;
        (b.restarts == 3 && b.alive).then_some(b)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "the buffer restarted 3 times: {:?}",
            agents.actors[0].lock().unwrap()
        )
    });
    assert_eq!(buffer.last_exit.as_deref(), Some("panic: injected buffer fault"));
    assert_eq!(faults.buffer_panics.load(Ordering::SeqCst), 0);
    for a in agents.actors[0]
        .lock()
        .unwrap()
        .iter()
        .filter(|a| a.name != "buffer")
    {
        assert_eq!(a.restarts, 0, "{a:?}");
    }
    agents.stop_collecting(0);
    let last = eventually(Duration::from_secs(30), || async {
        let s = agents.buffers[0].stats();
        (s.records == 0).then_some(s.last_seq)
    })
    .await
    .expect("the buffer drains");
    let d = eventually(Duration::from_secs(30), || async {
        let d = fleet.device("drain1").await.ok()??;
        (d["delivery"]["last_seq"].as_u64()? >= last).then_some(d)
    })
    .await
    .expect("the server has every seq");
    let v = &d["delivery"];
    println!("buffer panics mid-drain: backlog {backlog}, last seq {last}, delivery {v}");
    assert_eq!(v["received"].as_u64(), Some(last), "every seq once: {v}");
    assert_eq!(v["missing"], 0, "{v}");
    assert_eq!(v["gaps"], serde_json::json!([]), "{v}");
    assert_eq!(v["duplicates_dropped"], 0, "no record sent twice: {v}");
    assert_eq!(v["reported_dropped"], 0, "no seq skipped or reported lost: {v}");
    assert_eq!(
        agents.links[0].disconnects.load(Ordering::Relaxed),
        0,
        "the link stayed up"
    );
    // the supervisor lists the buffer among its children, restarts counted, up to the server
    let d = eventually(Duration::from_secs(20), || async {
        let d = fleet.device("drain1").await.ok()??;
        let actors = d["health_report"]["actors"].as_array()?.clone();
        let b = actors.iter().find(|a| a["name"] == "buffer")?;
        (b["restarts"] == 3).then_some(d)
    })
    .await
    .expect("a health report with the buffer's restarts reaches the server");
    assert!(
        d["health_report"]["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "actor:buffer"),
        "a check names the restarted buffer: {}",
        d["health_report"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_gpu_read_is_timed_out_and_the_mqtt_link_does_not_lapse() {
    let fleet = TestFleet::start().unwrap();
    let extra = AgentExtra {
        collector: "gpu_backend = \"jetson\"\n".into(),
        tail: jetson_paths("orin-nano-jp6"),
        ..Default::default()
    };
    let cfg = fleet.agent_config_extra("hang1", 200, &extra).unwrap();
    let faults = Faults::default();
    faults.gpu_hang.store(true, Ordering::SeqCst);
    let agents = Agents::start_with(vec![(
        cfg,
        Overrides {
            faults: Some(Arc::new(faults)),
            ..Default::default()
        },
    )])
    .unwrap();
    // keep_alive is 5 s in test configs: 15 s spans three keep-alive periods
    tokio::time::sleep(Duration::from_secs(15)).await;
    let c = &agents.collectors[0];
    assert!(
        c.gpu_timed_out.load(Ordering::Relaxed) >= 1,
        "the hung read was timed out"
    );
    assert!(
        c.collected.load(Ordering::Relaxed) >= 40,
        "collection went on without the GPU"
    );
    assert_eq!(
        agents.links[0].disconnects.load(Ordering::Relaxed),
        0,
        "the link never lapsed"
    );
    assert!(agents.links[0].connected.load(Ordering::Relaxed));
    let d = fleet.device("hang1").await.unwrap().expect("reports");
    assert!(d["delivery"]["received"].as_u64().unwrap() >= 40);
    for a in agents.actors[0].lock().unwrap().iter() {
        assert_eq!(a.restarts, 0, "no actor restarted: {a:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jetson_backend_on_a_fake_orin_nano_reports_gpu_figures_to_the_server() {
    let fleet = TestFleet::start().unwrap();
    let extra = AgentExtra {
        collector: "gpu_backend = \"auto\"\n".into(),
        tail: jetson_paths("orin-nano-jp6"),
        ..Default::default()
    };
    let cfg = fleet.agent_config_extra("orin1", 200, &extra).unwrap();
    let _agents = Agents::start(vec![cfg]).unwrap();
    let d = eventually(Duration::from_secs(15), || async {
        let d = fleet.device("orin1").await.ok()??;
        d["telemetry"]["gpu"].is_object().then_some(d)
    })
    .await
    .expect("gpu figures arrive");
    let g = &d["telemetry"]["gpu"];
    assert_eq!(g["backend"], "jetson_sysfs");
    assert!(g["load_pct"].as_f64().is_some(), "{g}");
    assert!(g["freq_mhz"].as_f64().unwrap() > 0.0, "{g}");
    assert!(
        g["rails"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "VDD_IN"),
        "{g}"
    );
    assert!(
        d["birth"]["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "gpu:jetson_sysfs")
    );
    assert!(d["metrics"]["gpu.temp_c"].as_f64().is_some());
    assert!(d["metrics"]["power.total_mw"].as_f64().unwrap() > 0.0);
}
