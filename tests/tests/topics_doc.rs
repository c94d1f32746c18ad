//! `docs/topics.md` and its JSON Schemas (`docs/schemas/`) against the code: the examples
//! (taken from real runs) match their schema and parse into the Rust types; a value of every
//! type with every optional field set and every enum variant matches its schema. A variant
//! added to a wire type stops this file from compiling (the exhaustive matches below) until
//! the schema and the doc say what it looks like.

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::command::{Action, Command, CommandResult, CommandStatus};
use common::{
    ActionOutcome, ActorStatus, Birth, CheckResult, CpuStats, DeviceId, DeviceState, DiskStats, Envelope,
    Event, EventKind, GpuBackendKind, GpuStats, HealthReport, HealthStatus, LastWill, MemoryStats, NetStats,
    PowerRail, ProcessStats, Reading, Severity, Telemetry,
};
use fleet_server::alerts::alert::{Ack, Alert, AlertState, Resolution, Transition, TransitionKind};
use fleet_server::alerts::rules::Op;
use fleet_server::incidents::incident::{
    Incident, IncidentChange, IncidentChangeKind, IncidentKind, IncidentState,
};
use rvm_fleet_tests::schema::Schemas;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn docs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs")
}

fn dev() -> DeviceId {
    DeviceId::new("rvm0042").unwrap()
}

fn env<T>(body: T) -> Envelope<T> {
    Envelope::new(dev(), 9, 1_795_000_000_000, body)
}

fn check<T: Serialize>(schemas: &Schemas, name: &str, value: &T) {
    let v = serde_json::to_value(value).unwrap();
    schemas
        .validate(name, &v)
        .unwrap_or_else(|e| panic!("{name}: {e}\n{v:#}"));
}

fn parses<T: DeserializeOwned + Serialize>(v: &Value, what: &str) {
    let t: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    // and nothing in the example is lost on the way through the type (f32 fields print
    // shorter once parsed into one)
    let back = serde_json::to_value(&t).unwrap();
    assert!(same(&back, v), "{what}: {back}\n!=\n{v}");
}

/// Equal JSON, numbers within f32 precision.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => (x - y).abs() <= 1e-6 * x.abs().max(y.abs()).max(1.0),
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

#[test]
fn every_example_matches_its_schema_and_parses_into_the_wire_type() {
    let schemas = Schemas::load().unwrap();
    let dir = docs().join("examples");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_stem().unwrap().to_str().unwrap().to_string();
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let schema = file.split_once('-').map_or(file.as_str(), |(s, _)| s);
        let schema = if file == "cmd-result" {
            "cmd-result"
        } else {
            schema
        };
        schemas
            .validate(schema, &v)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        match schema {
            "telemetry" => parses::<Envelope<Telemetry>>(&v, &file),
            "health" => parses::<Envelope<HealthReport>>(&v, &file),
            "event" => parses::<Envelope<Event>>(&v, &file),
            "state" => parses::<Envelope<DeviceState>>(&v, &file),
            "cmd-result" => parses::<Envelope<CommandResult>>(&v, &file),
            "alert" => parses::<Transition>(&v, &file),
            "incident" => parses::<IncidentChange>(&v, &file),
            "command" => {
                parses::<Command>(&v["command"], &file);
                assert_eq!(v["signature"].as_str().unwrap().len(), 128, "{file}");
            }
            other => panic!("{}: no schema {other}", path.display()),
        }
        seen.push(schema.to_string());
    }
    seen.sort();
    seen.dedup();
    let mut all: Vec<String> = schemas.by_name.keys().cloned().collect();
    all.sort();
    assert_eq!(seen, all, "every schema has an example");
}

#[test]
fn the_doc_names_every_topic_and_schema() {
    let md = std::fs::read_to_string(docs().join("topics.md")).unwrap();
    for t in [
        "rvm/v1/{device}/telemetry",
        "rvm/v1/{device}/health",
        "rvm/v1/{device}/event",
        "rvm/v1/{device}/state",
        "rvm/v1/{device}/cmd",
        "rvm/v1/{device}/cmd/result",
        "fleet/v1/devices/{device}/telemetry",
        "fleet/v1/devices/{device}/state",
        "fleet/v1/devices/{device}/cmd/result",
        "fleet/v1/alerts",
        "fleet/v1/incidents",
    ] {
        assert!(md.contains(&format!("`{t}`")), "{t} missing in docs/topics.md");
    }
    for name in Schemas::load().unwrap().by_name.keys() {
        let f = format!("schemas/{name}.schema.json");
        assert!(md.contains(&f), "{f} missing in docs/topics.md");
    }
}

#[test]
fn the_examples_shown_in_the_doc_are_the_example_files() {
    let md = std::fs::read_to_string(docs().join("topics.md")).unwrap();
    let mut shown = 0;
    for part in md.split("<!-- example: ").skip(1) {
        let (name, rest) = part.split_once(" -->").unwrap();
        let block = rest
            .split_once("```json\n")
            .and_then(|(_, b)| b.split_once("\n```"))
            .map(|(b, _)| b)
            .unwrap_or_else(|| panic!("no json block after the {name} marker"));
        let inline: Value = serde_json::from_str(block).unwrap_or_else(|e| panic!("{name}: {e}"));
        let file = docs().join("examples").join(format!("{name}.json"));
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(
            inline,
            v,
            "docs/topics.md shows another {name} than {}",
            file.display()
        );
        shown += 1;
    }
    assert!(shown >= 7, "{shown}");
}

fn build_telemetry() -> Telemetry {
    Telemetry {
        interval_ms: 1000,
        uptime_s: 7,
        cpu: CpuStats {
            usage_pct: 12.5,
            per_core_pct: vec![1.0, 2.0],
            freq_mhz: vec![1510, 1510],
            load1: 0.5,
            load5: 0.4,
            load15: 0.3,
        },
        memory: MemoryStats {
            total_bytes: 8,
            used_bytes: 4,
            available_bytes: 4,
            swap_total_bytes: 2,
            swap_used_bytes: 1,
        },
        disks: vec![DiskStats {
            mount: "/".into(),
            fs: "ext4".into(),
            total_bytes: 10,
            used_bytes: 5,
            inodes_total: Some(100),
            inodes_used: Some(50),
            read_bytes_per_s: Some(1.5),
            write_bytes_per_s: Some(2.5),
        }],
        net: vec![NetStats {
            iface: "eth0".into(),
            rx_bytes: 1,
            tx_bytes: 2,
            rx_packets: 3,
            tx_packets: 4,
            rx_errors: 5,
            tx_errors: 6,
            rx_bytes_per_s: 7.5,
            tx_bytes_per_s: 8.5,
        }],
        temperatures: vec![Reading::new("cpu", 50.0)],
        processes: vec![ProcessStats {
            name: "vision".into(),
            pid: 42,
            running: true,
            watched: true,
            cpu_pct: 80.0,
            rss_bytes: 1 << 30,
            state: "S".into(),
            restarts_seen: 1,
        }],
        gpu: Some(GpuStats {
            backend: GpuBackendKind::JetsonSysfs,
            load_pct: Some(55.0),
            freq_mhz: Some(612.0),
            min_freq_mhz: Some(306.0),
            max_freq_mhz: Some(918.0),
            emc_pct: Some(20.0),
            emc_freq_mhz: Some(2133.0),
            temperatures: vec![Reading::new("gpu", 51.0)],
            rails: vec![PowerRail {
                name: "VDD_IN".into(),
                voltage_mv: Some(5000.0),
                current_ma: Some(1000.0),
                power_mw: 5000.0,
                avg_power_mw: Some(4900.0),
            }],
            fan_pct: Some(30.0),
            memory_used_bytes: Some(1 << 20),
            nvpmodel: Some("15W".into()),
            board: Some("Orin Nano".into()),
            l4t: Some("36.4".into()),
            jetpack: Some("6.2".into()),
            unsupported: vec!["emc".into()],
        }),
        app: vec![Reading::new("inference_ms", 41.0)],
        // every optional field of the detail set
        detail: common::Detail {
            procs: common::ProcessTable {
                total: 3,
                threads: Some(9),
                zombies: 1,
                scanned: true,
                top_cpu: vec![process_info()],
                top_mem: vec![process_info()],
                watched: vec![process_info()],
            },
            ifaces: vec![common::IfaceRates {
                iface: "eth0".into(),
                rx_drops: 2,
                ..Default::default()
            }],
            tcp: Some(common::TcpStates {
                established: 2,
                listen: 1,
                ..Default::default()
            }),
            block: vec![common::BlockDevice {
                name: "mmcblk0".into(),
                wear_pct: Some(30.0),
                pre_eol: Some(1),
                ..Default::default()
            }],
            broker: common::BrokerHealth {
                rtt_ms: Some(3.5),
                dns_ms: Some(1.25),
                dns_ok: Some(true),
            },
        },
    }
}

fn process_info() -> common::ProcessInfo {
    common::ProcessInfo {
        pid: 42,
        name: "vision".into(),
        user: "rvm".into(),
        state: "Runnable".into(),
        threads: Some(12),
        fds: Some(40),
        cpu_pct: 50.0,
        rss_bytes: 1 << 28,
        read_bytes_per_s: Some(10.0),
        write_bytes_per_s: Some(20.0),
        start_time_s: 1_795_000_000,
    }
}

/// Every variant; the match makes a new one a compile error here.
fn every_gpu_backend() -> Vec<GpuBackendKind> {
    let all = vec![
        GpuBackendKind::JetsonSysfs,
        GpuBackendKind::Tegrastats,
        GpuBackendKind::Nvml,
        GpuBackendKind::Simulated,
        GpuBackendKind::None,
    ];
    for b in &all {
        match b {
            GpuBackendKind::JetsonSysfs
            | GpuBackendKind::Tegrastats
            | GpuBackendKind::Nvml
            | GpuBackendKind::Simulated
            | GpuBackendKind::None => {}
        }
    }
    all
}

fn every_event_kind() -> Vec<EventKind> {
    let all = vec![
        EventKind::AgentStarted {
            previous_exit: Some("signal".into()),
        },
        EventKind::AgentStarted { previous_exit: None },
        EventKind::ActorRestarted {
            actor: "collector".into(),
            reason: "panic".into(),
        },
        EventKind::Recovery {
            action: "restart_unit".into(),
            target: "vision.service".into(),
            outcome: ActionOutcome::Succeeded,
            detail: String::new(),
        },
        EventKind::Recovery {
            action: "reboot".into(),
            target: String::new(),
            outcome: ActionOutcome::Failed,
            detail: "x".into(),
        },
        EventKind::Recovery {
            action: "reboot".into(),
            target: String::new(),
            outcome: ActionOutcome::Refused,
            detail: "interlock".into(),
        },
        EventKind::RecordsDropped {
            count: 3,
            first_seq: 1,
            last_seq: 3,
            reason: "cap".into(),
        },
        EventKind::StoreReset {
            moved_to: "/x".into(),
            error: "e".into(),
        },
        EventKind::ClockJump { delta_ms: -5000 },
        EventKind::Note,
        EventKind::GpuSourceChanged {
            from: "gpu:nvml".into(),
            to: "gpu:jetson_sysfs".into(),
        },
    ];
    for k in &all {
        match k {
            EventKind::AgentStarted { .. }
            | EventKind::ActorRestarted { .. }
            | EventKind::Recovery { .. }
            | EventKind::RecordsDropped { .. }
            | EventKind::StoreReset { .. }
            | EventKind::ClockJump { .. }
            | EventKind::Note
            | EventKind::GpuSourceChanged { .. } => {}
        }
    }
    all
}

fn every_action() -> Vec<Action> {
    let all = vec![
        Action::RestartUnit {
            unit: "vision.service".into(),
        },
        Action::RestartProcess {
            name: "vision".into(),
        },
        Action::DropCaches,
        Action::CleanTemp,
        Action::RestartNetwork {
            interface: "eth0".into(),
        },
        Action::Reboot,
        Action::CollectDiagnostics,
        Action::ResetCamera {
            camera: "front".into(),
        },
    ];
    for a in &all {
        match a {
            Action::RestartUnit { .. }
            | Action::RestartProcess { .. }
            | Action::DropCaches
            | Action::CleanTemp
            | Action::RestartNetwork { .. }
            | Action::Reboot
            | Action::CollectDiagnostics
            | Action::ResetCamera { .. } => {}
        }
    }
    all
}

fn build_alert(state: AlertState, op: Op, severity: Severity, ack: bool) -> Alert {
    Alert {
        id: "cpu_high:rvm0042:1".into(),
        rule: "cpu_high".into(),
        device: dev(),
        generation: 1,
        metric: "cpu.usage_pct".into(),
        severity,
        labels: BTreeMap::from([("site".to_string(), "oslo".to_string())]),
        summary: "CPU high".into(),
        op,
        value: 97.5,
        threshold: 80.0,
        clear: 75.0,
        started_ms: 1,
        fired_ms: Some(2),
        resolved_ms: Some(3),
        escalated_ms: Some(4),
        last_sample_ms: 5,
        ack: ack.then(|| Ack {
            by: "ops".into(),
            at_ms: 6,
            comment: "on it".into(),
        }),
        silenced_by: Some("s-1".into()),
        muted_by: Some("oslo-sundays".into()),
        // a resolved one was resolved by hand, so the schema covers `resolved_by`
        resolved_by: (state == AlertState::Resolved).then(|| Resolution {
            by: "ops".into(),
            at_ms: 7,
            comment: "replaced the fan".into(),
        }),
        state,
    }
}

fn build_incident(kind: IncidentKind, state: IncidentState) -> Incident {
    Incident {
        id: format!("{}-1", kind.as_str()),
        kind,
        title: "t".into(),
        probable_cause: "c".into(),
        site: Some("oslo".into()),
        attribute: Some("vision_model_version".into()),
        attribute_value: Some("v3.3".into()),
        rule: Some("inference_slow".into()),
        metric: Some("app.inference_ms".into()),
        devices: vec![dev()],
        members: vec!["a".into()],
        active_members: vec![],
        suppresses_members: true,
        opened_ms: 1,
        updated_ms: 2,
        resolved_ms: Some(3),
        state,
    }
}

#[test]
fn every_variant_of_every_payload_matches_its_schema() {
    let s = Schemas::load().unwrap();

    let mut t = build_telemetry();
    check(&s, "telemetry", &env(t.clone()));
    for b in every_gpu_backend() {
        if let Some(g) = t.gpu.as_mut() {
            g.backend = b;
        }
        check(&s, "telemetry", &env(t.clone()));
    }
    t.gpu = None;
    t.disks[0].inodes_total = None;
    t.disks[0].read_bytes_per_s = None;
    check(&s, "telemetry", &env(t.clone()));
    // a record between process scans: the watched processes only
    t.detail.procs = common::ProcessTable {
        watched: vec![process_info()],
        ..Default::default()
    };
    check(&s, "telemetry", &env(t));
    check(&s, "telemetry", &env(Telemetry::default()));

    for status in [HealthStatus::Ok, HealthStatus::Warn, HealthStatus::Critical] {
        let h = HealthReport {
            status,
            checks: vec![CheckResult {
                name: "disk".into(),
                status,
                message: "m".into(),
            }],
            actors: vec![
                ActorStatus {
                    name: "link".into(),
                    alive: true,
                    restarts: 0,
                    last_exit: None,
                },
                ActorStatus {
                    name: "collector".into(),
                    alive: false,
                    restarts: 2,
                    last_exit: Some("panic".into()),
                },
            ],
        };
        check(&s, "health", &env(h));
    }

    for kind in every_event_kind() {
        for severity in [Severity::Info, Severity::Warning, Severity::Critical] {
            let e = Event {
                severity,
                kind: kind.clone(),
                message: "m".into(),
            };
            check(&s, "event", &env(e));
        }
    }

    let birth = Birth {
        boot_id: "b".into(),
        agent_version: "0.1.0".into(),
        hostname: "h".into(),
        site: Some("oslo".into()),
        tags: vec!["t".into()],
        board: Some("Orin".into()),
        jetpack: Some("6.2".into()),
        vision_model_version: Some("v3.2".into()),
        capabilities: vec!["gpu:jetson_sysfs".into()],
        started_ms: 1,
        simulated: false,
    };
    for st in [
        DeviceState::Online(birth),
        DeviceState::Online(Birth::default()),
        DeviceState::Offline(LastWill {
            boot_id: "b".into(),
            reason: "connection lost".into(),
        }),
    ] {
        match &st {
            DeviceState::Online(_) | DeviceState::Offline(_) => {}
        }
        check(&s, "state", &Envelope::new(dev(), 0, 1, st));
    }

    for status in [
        CommandStatus::Accepted,
        CommandStatus::Running,
        CommandStatus::Succeeded,
        CommandStatus::Failed,
        CommandStatus::Rejected,
    ] {
        match status {
            CommandStatus::Accepted
            | CommandStatus::Running
            | CommandStatus::Succeeded
            | CommandStatus::Failed
            | CommandStatus::Rejected => {}
        }
        let r = CommandResult {
            command_id: "c1".into(),
            status,
            output: "ok".into(),
            reason: (status == CommandStatus::Rejected).then(|| "expired".into()),
        };
        check(&s, "cmd-result", &env(r));
    }

    let kinds = [
        TransitionKind::Pending,
        TransitionKind::Firing,
        TransitionKind::Resolved,
        TransitionKind::Escalated,
        TransitionKind::Cancelled,
        TransitionKind::Unsilenced,
    ];
    for (i, kind) in kinds.into_iter().enumerate() {
        match kind {
            TransitionKind::Pending
            | TransitionKind::Firing
            | TransitionKind::Resolved
            | TransitionKind::Escalated
            | TransitionKind::Cancelled
            | TransitionKind::Unsilenced => {}
        }
        let state = [AlertState::Pending, AlertState::Firing, AlertState::Resolved][i % 3];
        match state {
            AlertState::Pending | AlertState::Firing | AlertState::Resolved => {}
        }
        let op = [Op::Gt, Op::Ge, Op::Lt, Op::Le][i % 4];
        match op {
            Op::Gt | Op::Ge | Op::Lt | Op::Le => {}
        }
        let t = Transition {
            kind,
            at_ms: 10,
            silenced: i % 2 == 0,
            alert: build_alert(state, op, Severity::Critical, i % 2 == 1),
        };
        check(&s, "alert", &t);
    }

    let changes = [
        IncidentChangeKind::Opened,
        IncidentChangeKind::Joined,
        IncidentChangeKind::Resolved,
        IncidentChangeKind::Withdrawn,
    ];
    let incident_kinds = [
        IncidentKind::SiteOutage,
        IncidentKind::CohortRegression,
        IncidentKind::ThermalThrottling,
        IncidentKind::Outlier,
    ];
    let states = [
        IncidentState::Open,
        IncidentState::Resolved,
        IncidentState::Withdrawn,
    ];
    for (i, kind) in changes.into_iter().enumerate() {
        match kind {
            IncidentChangeKind::Opened
            | IncidentChangeKind::Joined
            | IncidentChangeKind::Resolved
            | IncidentChangeKind::Withdrawn => {}
        }
        for ik in incident_kinds {
            match ik {
                IncidentKind::SiteOutage
                | IncidentKind::CohortRegression
                | IncidentKind::ThermalThrottling
                | IncidentKind::Outlier => {}
            }
            let st = states[i % 3];
            match st {
                IncidentState::Open | IncidentState::Resolved | IncidentState::Withdrawn => {}
            }
            let c = IncidentChange {
                kind,
                at_ms: 1,
                incident: build_incident(ik, st),
                suppressed: vec!["device_offline:rvm0042:1".into()],
            };
            check(&s, "incident", &c);
        }
    }

    for action in every_action() {
        let cmd = Command {
            id: "c1".into(),
            device: dev(),
            action,
            issued_ms: 1,
            expires_ms: 2,
            issued_by: "ops".into(),
            reason: "r".into(),
        };
        let v = serde_json::json!({ "command": cmd, "signature": "00".repeat(64) });
        s.validate("command", &v)
            .unwrap_or_else(|e| panic!("command: {e}\n{v:#}"));
    }
}

#[test]
fn a_payload_off_the_schema_is_caught() {
    let s = Schemas::load().unwrap();
    let mut v = serde_json::to_value(Envelope::new(dev(), 1, 1, build_telemetry())).unwrap();
    v["body"]["cpu"]["extra"] = Value::from(1);
    assert!(
        s.validate("telemetry", &v)
            .unwrap_err()
            .to_string()
            .contains("extra")
    );
    let mut v = serde_json::to_value(Envelope::new(dev(), 1, 1, build_telemetry())).unwrap();
    v["body"]["gpu"]["backend"] = Value::from("cuda");
    assert!(s.validate("telemetry", &v).is_err());
    let mut v = serde_json::to_value(Envelope::new(dev(), 1, 1, build_telemetry())).unwrap();
    v["schema"] = Value::from(3);
    assert!(s.validate("telemetry", &v).is_err(), "schemas 1 and 2 only");
    let mut v = serde_json::to_value(Envelope::new(dev(), 1, 1, build_telemetry())).unwrap();
    v["body"].as_object_mut().unwrap().remove("detail");
    assert!(
        s.validate("telemetry", &v).is_err(),
        "detail is always there (empty for schema 1)"
    );
}
