//! A look inside a machine (issue 24), end to end against a real server (embedded broker,
//! mTLS):
//! - a simulated machine whose vision service leaks file descriptors and leaves a zombie
//!   raises the zombie rule and the fd-leak rule; a healthy one beside it raises neither;
//!   its top lists reach the device API and its counts history;
//! - a real agent on this machine watches a child the test spawns (it leaks descriptors and
//!   leaves a zombie): the same two rules fire from real `/proc` figures, and its network
//!   and disk figures appear in history;
//! - a real agent whose sysfs root is a fixture tree with an eMMC `life_time` raises the
//!   wear rule;
//! - the broker's round trip (PINGREQ -> PINGRESP of the keep-alive) reaches history.

use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use rvm_fleet_tests::{AgentExtra, Agents, FleetOptions, SimFleet, TestFleet, eventually, firing_each};
use rvm_sim::simulate::{SimConfig, SimProfile};
use rvm_sim::source::Fault;
use serde_json::Value;

/// The rules under test, with windows short enough for a test; `zombies` is the zombie
/// count that raises the zombie rule.
fn rules(process: &str, zombies: u64) -> String {
    format!(
        r#"
[[rules]]
name = "zombies_piling_up"
metric = "proc.zombies"
op = ">="
threshold = {zombies}
for_s = 3
severity = "warning"

[[rules]]
name = "fd_leak"
metric = "proc.{process}.fds"
growth_window_s = 10
op = ">"
threshold = 30
severity = "warning"

[[rules]]
name = "rss_leak"
metric = "proc.{process}.rss_bytes"
growth_window_s = 10
op = ">"
threshold = 500000000
severity = "warning"

[[rules]]
name = "storage_wear"
metric = "disk.wear_max_pct"
op = ">="
threshold = 90
severity = "warning"
"#
    )
}

async fn alerts(fleet: &TestFleet) -> Vec<Value> {
    let v = fleet.get("/api/v1/alerts?state=all").await.unwrap_or_default();
    v["alerts"].as_array().cloned().unwrap_or_default()
}

async fn history_points(fleet: &TestFleet, device: &str, metric: &str) -> Vec<Value> {
    let path = format!("/api/v1/devices/{device}/metrics?name={metric}&step=1s");
    fleet
        .get(&path)
        .await
        .ok()
        .and_then(|v| v["points"].as_array().cloned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_machine_leaking_descriptors_with_a_zombie_raises_both_rules_and_a_healthy_one_neither() {
    let fleet = TestFleet::start_with(FleetOptions {
        rules: Some(rules(rvm_sim::source::VISION_PROCESS, 1)),
        ..Default::default()
    })
    .unwrap();
    let cfg = SimConfig {
        devices: 2,
        sites: 1,
        prefix: "leak".into(),
        host: String::new(),
        port: 0,
        certs: Default::default(),
        interval: Duration::from_millis(500),
        first: 0,
    };
    let mut sims = SimFleet::start(&fleet, cfg, SimProfile::default()).unwrap();
    let (sick, healthy) = (sims.ids[0].clone(), sims.ids[1].clone());
    sims.faults[0].set_all(&[Fault::FdLeak, Fault::Zombie]);

    let expected = [
        (sick.as_str(), "fd_leak", "warning"),
        (sick.as_str(), "zombies_piling_up", "warning"),
    ];
    let started = std::time::Instant::now();
    let fired = eventually(Duration::from_secs(60), || async {
        firing_each(&alerts(&fleet).await, &expected)
    })
    .await;
    assert!(
        fired.is_some(),
        "not both rules fired: {:#?}",
        alerts(&fleet).await
    );
    println!(
        "fd_leak and zombies_piling_up firing after {:?}",
        started.elapsed()
    );

    // the top lists are in the device's latest telemetry (the Processes tab reads them),
    // whether it is the record of a scan (every 10 s) or one between scans, which the server
    // fills from the last scan it kept: read over three records
    for _ in 0..3 {
        let d = fleet.device(&sick).await.unwrap().unwrap();
        let procs = &d["telemetry"]["detail"]["procs"];
        assert_eq!(
            procs["top_cpu"].as_array().map(Vec::len),
            Some(common::TOP_N),
            "{procs:#}"
        );
        assert_eq!(
            procs["top_mem"][0]["name"],
            rvm_sim::source::VISION_PROCESS,
            "{procs:#}"
        );
        assert_eq!(procs["zombies"], 1);
        assert_eq!(procs["scanned"], true);
        assert_eq!(d["metrics"]["proc.zombies"], 1.0, "{:#}", d["metrics"]);
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    // counts, top lists and the leaking process's descriptors are kept in history
    for metric in [
        "proc.zombies",
        "proc.count",
        "proc.rvm-vision.fds",
        "proc.top_mem.rvm-vision",
    ] {
        let p = eventually(Duration::from_secs(20), || async {
            let p = history_points(&fleet, &sick, metric).await;
            (!p.is_empty()).then_some(p)
        })
        .await;
        assert!(p.is_some(), "{metric} not in history");
    }

    // the healthy machine raised none of them, and the constant RSS no leak either
    let stray: Vec<Value> = alerts(&fleet)
        .await
        .into_iter()
        .filter(|a| a["device"] == healthy.as_str() || a["rule"] == "rss_leak")
        .filter(|a| {
            ["fd_leak", "zombies_piling_up", "rss_leak", "storage_wear"]
                .contains(&a["rule"].as_str().unwrap_or(""))
        })
        .collect();
    assert!(stray.is_empty(), "{stray:#?}");
    sims.stop();
}

/// Zombie processes on this machine now.
fn zombies_here() -> u64 {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .count() as u64
}

/// A process named `fdleaker` that forks a child which exits unreaped (a zombie named
/// `fdzombie`), then opens a descriptor every 50 ms and never closes one.
///
/// Python runs through a link named `fdleaker` in `dir`, so the kernel names the process at
/// exec. Renaming itself afterwards (`prctl`) was not enough: a process table that saw the
/// process before the rename kept calling it `python3`, and the watch never found it (2 runs
/// of 3 under load).
fn spawn_leaker(dir: &Path) -> Child {
    let script = r#"
import ctypes, os, time
libc = ctypes.CDLL(None)
libc.prctl(15, b"fdleaker", 0, 0, 0)
if os.fork() == 0:
    libc.prctl(15, b"fdzombie", 0, 0, 0)
    os._exit(0)
held = []
while True:
    held.append(open("/dev/null"))
    time.sleep(0.05)
"#;
    let python = std::fs::canonicalize("/usr/bin/python3").expect("python3");
    let link = dir.join("fdleaker");
    std::os::unix::fs::symlink(&python, &link).expect("a link to python3");
    Command::new(&link)
        .arg("-c")
        .arg(script)
        .spawn()
        .expect("python3")
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A sysfs tree with one eMMC whose `life_time` says 90-100 % of its life is used.
fn worn_sysfs(root: &Path) {
    let dev = root.join("block/mmcblk0/device");
    std::fs::create_dir_all(&dev).unwrap();
    std::fs::write(dev.join("life_time"), "0x0a 0x03\n").unwrap();
    std::fs::write(dev.join("pre_eol_info"), "0x01\n").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_agents_report_a_leaking_child_a_zombie_worn_storage_and_this_machines_network_and_disks() {
    // Any zombie raises the rule: the one the child leaves is enough. (Another process on a
    // shared machine may leave one too, and reap it a moment later; a threshold above a
    // baseline read at the start would race with it.)
    let bin = tempfile::tempdir().unwrap();
    let child = KillOnDrop(spawn_leaker(bin.path()));
    let fleet = TestFleet::start_with(FleetOptions {
        rules: Some(rules("fdleaker", 1)),
        ..Default::default()
    })
    .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            (zombies_here() >= 1).then_some(())
        })
        .await
        .is_some(),
        "the child left no zombie"
    );
    let sysfs = fleet.dir.path().join("worn-sysfs");
    worn_sysfs(&sysfs);
    let watching = fleet
        .agent_config_extra(
            "here0001",
            500,
            &AgentExtra {
                collector: "process_scan_interval_ms = 1000".into(),
                tail: "[health]\nwatch_processes = [\"fdleaker\"]\n".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let worn = fleet
        .agent_config_extra(
            "worn0001",
            500,
            &AgentExtra {
                tail: format!("[paths]\nsysfs = \"{}\"\n", sysfs.display()),
                ..Default::default()
            },
        )
        .unwrap();
    let mut agents = Agents::start(vec![watching, worn]).unwrap();

    let expected = [
        ("here0001", "fd_leak", "warning"),
        ("here0001", "zombies_piling_up", "warning"),
        ("worn0001", "storage_wear", "warning"),
    ];
    let started = std::time::Instant::now();
    let fired = eventually(Duration::from_secs(60), || async {
        firing_each(&alerts(&fleet).await, &expected)
    })
    .await;
    assert!(
        fired.is_some(),
        "not every rule fired: {:#?}",
        alerts(&fleet).await
    );
    println!(
        "fd_leak, zombies_piling_up and storage_wear firing after {:?}",
        started.elapsed()
    );
    assert!(
        !alerts(&fleet)
            .await
            .iter()
            .any(|a| a["device"] == "here0001" && a["rule"] == "storage_wear"),
        "this machine's own disks have no wear node"
    );

    // the watched child as the agent saw it
    let d = fleet.device("here0001").await.unwrap().unwrap();
    let detail = &d["telemetry"]["detail"];
    let leaker = detail["procs"]["watched"]
        .as_array()
        .and_then(|w| w.iter().find(|p| p["name"] == "fdleaker").cloned())
        .unwrap_or_else(|| panic!("{detail:#}"));
    assert_eq!(leaker["pid"], child.0.id());
    assert!(leaker["fds"].as_u64().unwrap() > 30, "{leaker:#}");
    assert!(
        detail["procs"]["top_cpu"]
            .as_array()
            .is_some_and(|t| !t.is_empty())
    );

    // this machine's own network and disks, in history: the first interface and block device
    let iface = detail["ifaces"][0]["iface"]
        .as_str()
        .expect("an interface")
        .to_string();
    let disk = detail["block"][0]["name"]
        .as_str()
        .expect("a block device")
        .to_string();
    for metric in [
        format!("net.{iface}.rx_bytes_per_s"),
        format!("net.{iface}.tx_packets_per_s"),
        format!("net.{iface}.drops"),
        format!("disk.{disk}.write_bytes_per_s"),
        format!("disk.{disk}.util_pct"),
        "tcp.established".to_string(),
        "proc.threads".to_string(),
        // the keep-alive (5 s in a test agent's config) timed in the link
        "broker.rtt_ms".to_string(),
    ] {
        let p = eventually(Duration::from_secs(20), || async {
            let p = history_points(&fleet, "here0001", &metric).await;
            (p.len() >= 2).then_some(p)
        })
        .await;
        assert!(p.is_some(), "{metric} not in history");
    }
    let worn_detail = &fleet.device("worn0001").await.unwrap().unwrap()["telemetry"]["detail"];
    let mmc = worn_detail["block"]
        .as_array()
        .and_then(|b| b.iter().find(|d| d["name"] == "mmcblk0").cloned())
        .unwrap_or_else(|| panic!("{worn_detail:#}"));
    assert_eq!(
        (mmc["wear_pct"].as_f64(), mmc["pre_eol"].as_u64()),
        (Some(100.0), Some(1))
    );
    agents.stop();
    drop(child);
}
