//! Evaluation (pure): one check per observation, with a message a person can act on, and the
//! tracker that decides when a report goes out. Time is an argument.

use std::path::PathBuf;

use common::{ActorStatus, CheckResult, HealthReport, HealthStatus, Telemetry};
use serde::Serialize;

use super::config::{HealthConfig, Threshold};
use crate::shared::http::RequestError;

/// The broker link counts as degraded after it has been down this long.
pub const BROKER_WARN_AFTER_MS: i64 = 60_000;
/// The broker link counts as lost after it has been down this long.
pub const BROKER_CRITICAL_AFTER_MS: i64 = 15 * 60_000;
/// Why a directory is not writable ([`probe_disk_writable`](crate::health::probes::probe_disk_writable)); each names the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiskProbeError {
    #[error("{path}: {reason}")]
    Missing { path: PathBuf, reason: String },
    #[error("{path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("cannot {step} {path}: {reason}")]
    Io {
        step: &'static str,
        path: PathBuf,
        reason: String,
    },
}

/// What systemd says of a unit (`systemctl is-active`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitState {
    Active,
    Reloading,
    Activating,
    Deactivating,
    Inactive,
    Failed,
    /// systemctl is missing, timed out, or answered something else.
    Unknown,
}

impl UnitState {
    /// Maps one line of `systemctl is-active` output.
    pub fn parse(s: &str) -> UnitState {
        match s.trim() {
            "active" => UnitState::Active,
            "reloading" | "refreshing" => UnitState::Reloading,
            "activating" => UnitState::Activating,
            "deactivating" => UnitState::Deactivating,
            "inactive" => UnitState::Inactive,
            "failed" => UnitState::Failed,
            _ => UnitState::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UnitState::Active => "active",
            UnitState::Reloading => "reloading",
            UnitState::Activating => "activating",
            UnitState::Deactivating => "deactivating",
            UnitState::Inactive => "inactive",
            UnitState::Failed => "failed",
            UnitState::Unknown => "unknown",
        }
    }
}

/// Everything one evaluation looks at. A check whose observation is `None` (or absent from a
/// list) is not reported: the actor decides what it probed.
#[derive(Debug, Clone, Default)]
pub struct Observations<'a> {
    /// The latest telemetry; `None` before the first collection.
    pub telemetry: Option<&'a Telemetry>,
    /// Watched process name and whether it is running
    /// ([`probe_processes`](crate::health::probes::probe_processes)).
    pub processes: Vec<(String, bool)>,
    /// Watched unit and its state ([`probe_units`](crate::health::probes::probe_units)).
    pub units: Vec<(String, UnitState)>,
    /// HTTP check name and the status code it got, or why it got none
    /// ([`HttpProbes::probe`](crate::health::probes::HttpProbes::probe)).
    pub http: Vec<(String, Result<u16, RequestError>)>,
    /// Whether a camera device matches the glob
    /// ([`probe_camera`](crate::health::probes::probe_camera)).
    pub camera_present: Option<bool>,
    /// Result of [`probe_disk_writable`](crate::health::probes::probe_disk_writable) on
    /// `data_disk_path`.
    pub disk_writable: Option<Result<(), DiskProbeError>>,
    pub broker_connected: bool,
    /// How long the broker link has been down; ignored while connected.
    pub broker_down_for_ms: i64,
    pub actors: Vec<ActorStatus>,
    /// The camera decisions ([`CameraHealth::evaluate`](crate::health::camera::CameraHealth::evaluate));
    /// empty when camera health is unsupported or off.
    pub cameras: Vec<CheckResult>,
}

/// One check per observation, with a message a person can act on; `status` is the worst.
pub fn evaluate(cfg: &HealthConfig, obs: &Observations<'_>) -> HealthReport {
    let mut checks = Vec::new();
    let mut push = |name: String, status: HealthStatus, message: String| {
        checks.push(CheckResult {
            name,
            status,
            message,
        })
    };

    match obs.telemetry {
        None => push(
            "telemetry".into(),
            HealthStatus::Warn,
            "no telemetry collected yet".into(),
        ),
        Some(t) => {
            let (s, m) = threshold_check("cpu", t.cpu.usage_pct as f64, &cfg.cpu_pct, "%", " used");
            push("cpu".into(), s, m);
            match t.memory_used_pct() {
                Some(v) => {
                    let (s, m) = threshold_check("memory", v, &cfg.memory_pct, "%", " used");
                    push("memory".into(), s, m);
                }
                None => push(
                    "memory".into(),
                    HealthStatus::Warn,
                    "memory total is unknown".into(),
                ),
            }
            let (s, m) = disk_check(t, &cfg.disk_pct);
            push("disk".into(), s, m);
            match t.gpu.as_ref().and_then(|g| g.gpu_temp_c()) {
                Some(v) => {
                    let (s, m) = threshold_check("gpu temperature", v, &cfg.gpu_temp_c, "°C", "");
                    push("gpu_temp".into(), s, m);
                }
                None => push(
                    "gpu_temp".into(),
                    HealthStatus::Ok,
                    "no GPU temperature on this machine".into(),
                ),
            }
        }
    }

    for (name, running) in &obs.processes {
        if *running {
            push(
                format!("process:{name}"),
                HealthStatus::Ok,
                format!("process {name} is running"),
            );
        } else {
            push(
                format!("process:{name}"),
                HealthStatus::Critical,
                format!("process {name} is not running"),
            );
        }
    }

    for (unit, state) in &obs.units {
        let status = match state {
            UnitState::Active | UnitState::Reloading => HealthStatus::Ok,
            UnitState::Activating | UnitState::Deactivating | UnitState::Unknown => HealthStatus::Warn,
            UnitState::Inactive | UnitState::Failed => HealthStatus::Critical,
        };
        let message = match state {
            UnitState::Unknown => format!("state of unit {unit} is unknown"),
            s => format!("unit {unit} is {}", s.as_str()),
        };
        push(format!("unit:{unit}"), status, message);
    }

    for (name, result) in &obs.http {
        let expect = cfg
            .http_checks
            .iter()
            .find(|c| &c.name == name)
            .map_or(200, |c| c.expect_status);
        let (status, message) = match result {
            Ok(code) if *code == expect => (HealthStatus::Ok, format!("http {name} answered {code}")),
            Ok(code) => (
                HealthStatus::Critical,
                format!("http {name} answered {code} (expected {expect})"),
            ),
            Err(e) => (HealthStatus::Critical, format!("http {name} failed: {e}")),
        };
        push(format!("http:{name}"), status, message);
    }

    if let Some(present) = obs.camera_present {
        let glob = &cfg.camera_glob;
        let (status, message) = match (present, cfg.camera_required) {
            (true, _) => (HealthStatus::Ok, format!("a camera device matches {glob}")),
            (false, true) => (HealthStatus::Critical, format!("no camera device matches {glob}")),
            (false, false) => (
                HealthStatus::Ok,
                format!("no camera device matches {glob} (camera_required = false)"),
            ),
        };
        push("camera".into(), status, message);
    }

    if let Some(result) = &obs.disk_writable {
        let path = cfg
            .data_disk_path
            .as_ref()
            .map_or_else(|| "data disk".to_string(), |p| p.display().to_string());
        let (status, message) = match result {
            Ok(()) => (HealthStatus::Ok, format!("{path} is writable")),
            Err(e) => (HealthStatus::Critical, format!("{path} is not writable: {e}")),
        };
        push("data_disk".into(), status, message);
    }

    let (status, message) = broker_check(obs.broker_connected, obs.broker_down_for_ms);
    push("broker".into(), status, message);
    // the broker's name (link/probe.rs): while connected a failing resolver does no harm
    // yet, but the next reconnect would fail; none for a broker given as an address
    if let Some(b) = obs.telemetry.map(|t| t.detail.broker)
        && let Some(ok) = b.dns_ok
    {
        let took = b.dns_ms.map_or(String::new(), |ms| format!(" ({ms:.1} ms)"));
        let (status, message) = if ok {
            (HealthStatus::Ok, format!("the broker's name resolves{took}"))
        } else {
            (
                HealthStatus::Warn,
                format!(
                    "the broker's name does not resolve{took}: a lost connection could not be re-established"
                ),
            )
        };
        push("broker_dns".into(), status, message);
    }

    for a in &obs.actors {
        let exit = a
            .last_exit
            .as_deref()
            .map(|e| format!(" (last exit: {e})"))
            .unwrap_or_default();
        let (status, message) = if !a.alive {
            (
                HealthStatus::Critical,
                format!("actor {} is not running{exit}", a.name),
            )
        } else if a.restarts > 0 {
            (
                HealthStatus::Warn,
                format!("actor {} restarted {} time(s){exit}", a.name, a.restarts),
            )
        } else {
            (HealthStatus::Ok, format!("actor {} is running", a.name))
        };
        push(format!("actor:{}", a.name), status, message);
    }

    checks.extend(obs.cameras.iter().cloned());

    let status = checks.iter().map(|c| c.status).max().unwrap_or_default();
    HealthReport {
        status,
        checks,
        actors: obs.actors.clone(),
    }
}

/// `"memory 91.2 % used (warn at 85 %)"`.
fn threshold_check(what: &str, value: f64, t: &Threshold, unit: &str, verb: &str) -> (HealthStatus, String) {
    if !value.is_finite() {
        return (HealthStatus::Warn, format!("{what} reading is not a number"));
    }
    let status = t.status_of(value);
    let base = format!("{what} {value:.1} {unit}{verb}");
    let message = match status {
        HealthStatus::Ok => base,
        HealthStatus::Warn => format!("{base} (warn at {} {unit})", t.warn),
        HealthStatus::Critical => format!("{base} (critical at {} {unit})", t.critical),
    };
    (status, message)
}

/// Read-only image filesystems are always full and say nothing about free space.
fn counts_for_space(fs: &str) -> bool {
    !matches!(fs, "squashfs" | "iso9660" | "udf" | "erofs")
}

fn disk_check(t: &Telemetry, threshold: &Threshold) -> (HealthStatus, String) {
    let fullest = t
        .disks
        .iter()
        .filter(|d| d.total_bytes > 0 && counts_for_space(&d.fs))
        .map(|d| {
            (
                d.used_bytes as f64 * 100.0 / d.total_bytes as f64,
                d.mount.as_str(),
            )
        })
        .fold(None, |m: Option<(f64, &str)>, (v, mount)| match m {
            Some((mv, _)) if mv >= v => m,
            _ => Some((v, mount)),
        });
    match fullest {
        Some((v, mount)) => threshold_check(&format!("disk {mount}"), v, threshold, "%", " used"),
        None => (HealthStatus::Ok, "no filesystems reported".into()),
    }
}

fn broker_check(connected: bool, down_for_ms: i64) -> (HealthStatus, String) {
    if connected {
        return (HealthStatus::Ok, "broker connected".into());
    }
    let down = format_duration_ms(down_for_ms.max(0));
    if down_for_ms >= BROKER_CRITICAL_AFTER_MS {
        (
            HealthStatus::Critical,
            format!(
                "broker disconnected for {down} (critical after {})",
                format_duration_ms(BROKER_CRITICAL_AFTER_MS)
            ),
        )
    } else if down_for_ms >= BROKER_WARN_AFTER_MS {
        (
            HealthStatus::Warn,
            format!(
                "broker disconnected for {down} (warn after {})",
                format_duration_ms(BROKER_WARN_AFTER_MS)
            ),
        )
    } else {
        (HealthStatus::Ok, format!("broker disconnected for {down}"))
    }
}

/// `45 s`, `3 min 5 s`, `2 h 10 min`.
pub fn format_duration_ms(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        ..60 => format!("{s} s"),
        60..3600 if s % 60 == 0 => format!("{} min", s / 60),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// Decides when a report goes out: on any check's status change (including a check appearing
/// or disappearing) and otherwise every `report_interval_s`.
#[derive(Debug, Clone)]
pub struct HealthTracker {
    interval_ms: i64,
    last: Option<(Vec<(String, HealthStatus)>, i64)>,
}

impl HealthTracker {
    pub fn new(report_interval_s: u64) -> Self {
        Self {
            interval_ms: i64::try_from(report_interval_s.saturating_mul(1000)).unwrap_or(i64::MAX),
            last: None,
        }
    }

    /// True when `report` should be published now; it is then remembered as the last one.
    pub fn should_publish(&mut self, report: &HealthReport, now_ms: i64) -> bool {
        let mut signature: Vec<(String, HealthStatus)> =
            report.checks.iter().map(|c| (c.name.clone(), c.status)).collect();
        signature.sort();
        let publish = match &self.last {
            None => true,
            Some((prev, at)) => {
                let elapsed = now_ms - at;
                // a clock that went backwards restarts the period
                *prev != signature || elapsed >= self.interval_ms || elapsed < 0
            }
        };
        if publish {
            self.last = Some((signature, now_ms));
        }
        publish
    }
}
#[cfg(test)]
mod tests {
    use common::{DiskStats, GpuStats, MemoryStats, Reading};

    use super::*;
    use crate::health::config::HttpCheck;

    fn build_telemetry(cpu: f32, mem_used_pct: f64, disk_used_pct: f64, gpu_c: Option<f64>) -> Telemetry {
        let mut t = Telemetry::default();
        t.cpu.usage_pct = cpu;
        t.memory = MemoryStats {
            total_bytes: 1000,
            used_bytes: (mem_used_pct * 10.0).round() as u64,
            ..Default::default()
        };
        t.disks = vec![
            DiskStats {
                mount: "/".into(),
                fs: "ext4".into(),
                total_bytes: 1000,
                used_bytes: 100,
                ..Default::default()
            },
            DiskStats {
                mount: "/data".into(),
                fs: "ext4".into(),
                total_bytes: 1000,
                used_bytes: (disk_used_pct * 10.0).round() as u64,
                ..Default::default()
            },
            DiskStats {
                mount: "/snap/core".into(),
                fs: "squashfs".into(),
                total_bytes: 1000,
                used_bytes: 1000,
                ..Default::default()
            },
        ];
        t.gpu = gpu_c.map(|c| GpuStats {
            temperatures: vec![Reading::new("gpu", c)],
            ..Default::default()
        });
        t
    }

    fn build_observations(t: &Telemetry) -> Observations<'_> {
        Observations {
            telemetry: Some(t),
            broker_connected: true,
            ..Default::default()
        }
    }

    fn check<'r>(r: &'r HealthReport, name: &str) -> &'r CheckResult {
        r.checks
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no check {name} in {:?}", r.checks))
    }

    #[test]
    fn a_quiet_machine_is_ok_on_every_check() {
        let t = build_telemetry(12.0, 40.0, 30.0, Some(50.0));
        let r = evaluate(&HealthConfig::default(), &build_observations(&t));
        assert_eq!(r.status, HealthStatus::Ok, "{:?}", r.checks);
        assert_eq!(check(&r, "cpu").message, "cpu 12.0 % used");
        assert_eq!(check(&r, "gpu_temp").message, "gpu temperature 50.0 °C");
        assert_eq!(check(&r, "broker").message, "broker connected");
    }

    #[test]
    fn memory_over_the_warn_level_says_the_value_and_the_level() {
        let t = build_telemetry(12.0, 91.2, 30.0, None);
        let r = evaluate(&HealthConfig::default(), &build_observations(&t));
        let m = check(&r, "memory");
        assert_eq!(m.status, HealthStatus::Warn);
        assert_eq!(m.message, "memory 91.2 % used (warn at 85 %)");
        assert_eq!(r.status, HealthStatus::Warn);
    }

    #[test]
    fn the_fullest_real_disk_is_named_and_image_filesystems_are_ignored() {
        let t = build_telemetry(12.0, 40.0, 96.0, None);
        let r = evaluate(&HealthConfig::default(), &build_observations(&t));
        let d = check(&r, "disk");
        assert_eq!(d.status, HealthStatus::Critical);
        assert_eq!(d.message, "disk /data 96.0 % used (critical at 95 %)");
    }

    #[test]
    fn a_hot_gpu_is_critical() {
        let t = build_telemetry(12.0, 40.0, 30.0, Some(97.5));
        let r = evaluate(&HealthConfig::default(), &build_observations(&t));
        assert_eq!(check(&r, "gpu_temp").status, HealthStatus::Critical);
        assert_eq!(
            check(&r, "gpu_temp").message,
            "gpu temperature 97.5 °C (critical at 95 °C)"
        );
    }

    #[test]
    fn no_telemetry_yet_is_a_warning_not_a_guess() {
        let r = evaluate(
            &HealthConfig::default(),
            &Observations {
                broker_connected: true,
                ..Default::default()
            },
        );
        assert_eq!(check(&r, "telemetry").status, HealthStatus::Warn);
        assert!(r.checks.iter().all(|c| c.name != "cpu"));
    }

    #[test]
    fn units_processes_and_http_produce_one_check_each_with_clear_messages() {
        let t = build_telemetry(12.0, 40.0, 30.0, None);
        let cfg = HealthConfig {
            http_checks: vec![HttpCheck {
                name: "vision".into(),
                url: "http://127.0.0.1:8080/health".into(),
                timeout_ms: 500,
                expect_status: 204,
                ca_file: None,
            }],
            ..Default::default()
        };
        let obs = Observations {
            processes: vec![("vision".into(), true), ("uploader".into(), false)],
            units: vec![
                ("vision.service".into(), UnitState::Failed),
                ("printer.service".into(), UnitState::Activating),
                ("ok.service".into(), UnitState::Active),
            ],
            http: vec![("vision".into(), Ok(500))],
            ..build_observations(&t)
        };
        let r = evaluate(&cfg, &obs);
        assert_eq!(
            check(&r, "unit:vision.service").message,
            "unit vision.service is failed"
        );
        assert_eq!(check(&r, "unit:vision.service").status, HealthStatus::Critical);
        assert_eq!(check(&r, "unit:printer.service").status, HealthStatus::Warn);
        assert_eq!(check(&r, "unit:ok.service").status, HealthStatus::Ok);
        assert_eq!(
            check(&r, "process:uploader").message,
            "process uploader is not running"
        );
        assert_eq!(check(&r, "process:vision").status, HealthStatus::Ok);
        assert_eq!(
            check(&r, "http:vision").message,
            "http vision answered 500 (expected 204)"
        );
        assert_eq!(r.status, HealthStatus::Critical);
    }

    #[test]
    fn a_missing_camera_is_critical_only_when_required() {
        let t = build_telemetry(12.0, 40.0, 30.0, None);
        let obs = Observations {
            camera_present: Some(false),
            ..build_observations(&t)
        };
        let relaxed = evaluate(&HealthConfig::default(), &obs);
        assert_eq!(check(&relaxed, "camera").status, HealthStatus::Ok);
        let required = HealthConfig {
            camera_required: true,
            ..Default::default()
        };
        let r = evaluate(&required, &obs);
        assert_eq!(check(&r, "camera").status, HealthStatus::Critical);
        assert_eq!(
            check(&r, "camera").message,
            "no camera device matches /dev/video*"
        );
    }

    #[test]
    fn an_unwritable_data_disk_is_critical_and_names_the_path() {
        let t = build_telemetry(12.0, 40.0, 30.0, None);
        let cfg = HealthConfig {
            data_disk_path: Some("/data".into()),
            ..Default::default()
        };
        let obs = Observations {
            disk_writable: Some(Err(DiskProbeError::Io {
                step: "create",
                path: "/data/.rvm-agent-write-test".into(),
                reason: "Read-only file system (os error 30)".into(),
            })),
            ..build_observations(&t)
        };
        let r = evaluate(&cfg, &obs);
        assert_eq!(check(&r, "data_disk").status, HealthStatus::Critical);
        assert_eq!(
            check(&r, "data_disk").message,
            "/data is not writable: cannot create /data/.rvm-agent-write-test: Read-only file \
             system (os error 30)"
        );
    }

    #[test]
    fn a_broker_name_that_stops_resolving_warns_and_an_address_has_no_dns_check() {
        let mut t = Telemetry::default();
        let report = |t: &Telemetry| evaluate(&HealthConfig::default(), &build_observations(t));
        assert!(
            report(&t).checks.iter().all(|c| c.name != "broker_dns"),
            "an address: nothing to resolve"
        );
        t.detail.broker = common::BrokerHealth {
            rtt_ms: Some(2.0),
            dns_ms: Some(1.5),
            dns_ok: Some(true),
        };
        assert_eq!(check(&report(&t), "broker_dns").status, HealthStatus::Ok);
        t.detail.broker.dns_ok = Some(false);
        let r = report(&t);
        assert_eq!(check(&r, "broker_dns").status, HealthStatus::Warn);
        assert!(check(&r, "broker_dns").message.contains("does not resolve"));
    }

    #[test]
    fn the_broker_link_warns_after_a_minute_and_is_critical_after_fifteen() {
        let t = build_telemetry(12.0, 40.0, 30.0, None);
        let at = |down_ms: i64| {
            let obs = Observations {
                broker_connected: false,
                broker_down_for_ms: down_ms,
                ..build_observations(&t)
            };
            check(&evaluate(&HealthConfig::default(), &obs), "broker").clone()
        };
        assert_eq!(at(59_000).status, HealthStatus::Ok);
        assert_eq!(at(60_000).status, HealthStatus::Warn);
        assert_eq!(
            at(65_000).message,
            "broker disconnected for 1 min 5 s (warn after 1 min)"
        );
        assert_eq!(at(BROKER_CRITICAL_AFTER_MS - 1).status, HealthStatus::Warn);
        assert_eq!(at(BROKER_CRITICAL_AFTER_MS).status, HealthStatus::Critical);
    }

    #[test]
    fn a_dead_actor_is_critical_and_a_restarted_one_is_a_warning() {
        let t = build_telemetry(12.0, 40.0, 30.0, None);
        let obs = Observations {
            actors: vec![
                ActorStatus {
                    name: "link".into(),
                    alive: true,
                    restarts: 2,
                    last_exit: Some("handler failed".into()),
                },
                ActorStatus {
                    name: "collector".into(),
                    alive: true,
                    restarts: 0,
                    last_exit: None,
                },
            ],
            ..build_observations(&t)
        };
        let r = evaluate(&HealthConfig::default(), &obs);
        assert_eq!(check(&r, "actor:link").status, HealthStatus::Warn);
        assert_eq!(
            check(&r, "actor:link").message,
            "actor link restarted 2 time(s) (last exit: handler failed)"
        );
        assert_eq!(r.status, HealthStatus::Warn);
        assert_eq!(r.actors.len(), 2);

        let mut dead = obs.clone();
        dead.actors[1].alive = false;
        let r = evaluate(&HealthConfig::default(), &dead);
        assert_eq!(check(&r, "actor:collector").status, HealthStatus::Critical);
        assert_eq!(r.status, HealthStatus::Critical);
    }

    #[test]
    fn the_tracker_publishes_on_a_status_change_and_periodically_only() {
        let cfg = HealthConfig::default();
        let quiet = build_telemetry(12.0, 40.0, 30.0, None);
        let busier = build_telemetry(30.0, 41.0, 30.0, None);
        let full = build_telemetry(12.0, 90.0, 30.0, None);
        let report = |t: &Telemetry| evaluate(&cfg, &build_observations(t));
        let mut tracker = HealthTracker::new(60);
        assert!(
            tracker.should_publish(&report(&quiet), 0),
            "the first report goes out"
        );
        assert!(!tracker.should_publish(&report(&quiet), 5_000));
        assert!(
            !tracker.should_publish(&report(&busier), 10_000),
            "a changed message with the same statuses is not a change"
        );
        assert!(
            tracker.should_publish(&report(&full), 15_000),
            "memory went to warn"
        );
        assert!(!tracker.should_publish(&report(&full), 74_999));
        assert!(
            tracker.should_publish(&report(&full), 75_000),
            "the period elapsed"
        );
        assert!(
            tracker.should_publish(&report(&quiet), 76_000),
            "memory back to ok"
        );
        assert!(!tracker.should_publish(&report(&quiet), 77_000));
    }

    #[test]
    fn the_tracker_publishes_when_a_check_appears() {
        let t = build_telemetry(12.0, 40.0, 30.0, None);
        let cfg = HealthConfig::default();
        let mut tracker = HealthTracker::new(60);
        assert!(tracker.should_publish(&evaluate(&cfg, &build_observations(&t)), 0));
        let more = Observations {
            camera_present: Some(true),
            ..build_observations(&t)
        };
        assert!(tracker.should_publish(&evaluate(&cfg, &more), 1_000));
    }

    #[test]
    fn camera_decisions_join_the_report_and_count_for_its_status() {
        let t = build_telemetry(12.0, 40.0, 30.0, None);
        let obs = Observations {
            cameras: vec![CheckResult {
                name: "camera:front:frozen".into(),
                status: HealthStatus::Critical,
                message: "camera front: the same picture for 60 s (frozen after 60 s)".into(),
            }],
            ..build_observations(&t)
        };
        let r = evaluate(&HealthConfig::default(), &obs);
        assert_eq!(check(&r, "camera:front:frozen").status, HealthStatus::Critical);
        assert_eq!(r.status, HealthStatus::Critical);
    }

    #[test]
    fn unit_states_map_from_systemctl_words() {
        assert_eq!(UnitState::parse("active\n"), UnitState::Active);
        assert_eq!(UnitState::parse("failed"), UnitState::Failed);
        assert_eq!(UnitState::parse("inactive"), UnitState::Inactive);
        assert_eq!(UnitState::parse("activating"), UnitState::Activating);
        assert_eq!(UnitState::parse("maintenance"), UnitState::Unknown);
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration_ms(12_345), "12 s");
        assert_eq!(format_duration_ms(60_000), "1 min");
        assert_eq!(format_duration_ms(125_000), "2 min 5 s");
        assert_eq!(format_duration_ms(3_900_000), "1 h 5 min");
    }
}
