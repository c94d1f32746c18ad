//! Health checks: the `[health]` config, a pure evaluator, the publish tracker, and the probes.
//!
//! The Health actor gathers [`Observations`] (the latest telemetry plus what the probes in this
//! module return), calls [`evaluate`] and publishes the [`HealthReport`] when
//! [`HealthTracker::should_publish`] says so. [`evaluate`] and the tracker do no IO and take
//! the time as an argument; the probes do the IO, block, and belong on a blocking thread.
//!
//! Check names are stable, because the recovery ladder ([`crate::recovery`]) is keyed by them:
//! `cpu`, `memory`, `disk`, `gpu_temp`, `telemetry`, `process:NAME`, `unit:NAME`, `http:NAME`,
//! `camera`, `data_disk`, `broker`, `actor:NAME`.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{ActorStatus, CheckResult, HealthReport, HealthStatus, Telemetry};
use serde::{Deserialize, Serialize};

use crate::shared::http1::{HTTP_MAX_HEAD, parse_http_url, parse_status_line};
use crate::shared::names::{PROCESS_NAME_MAX, valid_process_name, valid_unit_name};
use crate::shared::problem::ConfigProblem;
use crate::shared::subprocess::{RunResult, run_command};

/// The broker link counts as degraded after it has been down this long.
pub const BROKER_WARN_AFTER_MS: i64 = 60_000;
/// The broker link counts as lost after it has been down this long.
pub const BROKER_CRITICAL_AFTER_MS: i64 = 15 * 60_000;
/// Longest a `systemctl is-active` probe may take.
pub const UNIT_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

/// The `[health]` section of `agent.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// CPU use in percent.
    #[serde(default = "default_cpu_pct")]
    pub cpu_pct: Threshold,
    /// Memory in use in percent of the total.
    #[serde(default = "default_memory_pct")]
    pub memory_pct: Threshold,
    /// The fullest filesystem's use in percent.
    #[serde(default = "default_disk_pct")]
    pub disk_pct: Threshold,
    /// GPU temperature in degrees C.
    #[serde(default = "default_gpu_temp_c")]
    pub gpu_temp_c: Threshold,
    /// Process names (as in `/proc/PID/comm`, at most 15 bytes) that must be running.
    #[serde(default)]
    pub watch_processes: Vec<String>,
    /// systemd units that must be active.
    #[serde(default)]
    pub systemd_units: Vec<String>,
    #[serde(default)]
    pub http_checks: Vec<HttpCheck>,
    /// Camera device pattern; `*` and `?` are allowed in the last path component only.
    #[serde(default = "default_camera_glob")]
    pub camera_glob: String,
    /// A missing camera is critical when true, informational otherwise.
    #[serde(default)]
    pub camera_required: bool,
    /// A directory that must stay writable (the data disk); unset = not checked.
    #[serde(default)]
    pub data_disk_path: Option<PathBuf>,
    /// A report is published on every status change and at least this often.
    #[serde(default = "default_report_interval_s")]
    pub report_interval_s: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            cpu_pct: default_cpu_pct(),
            memory_pct: default_memory_pct(),
            disk_pct: default_disk_pct(),
            gpu_temp_c: default_gpu_temp_c(),
            watch_processes: Vec::new(),
            systemd_units: Vec::new(),
            http_checks: Vec::new(),
            camera_glob: default_camera_glob(),
            camera_required: false,
            data_disk_path: None,
            report_interval_s: default_report_interval_s(),
        }
    }
}

/// A warn and a critical level; a value at or above a level has that status.
/// Written inline: `memory_pct = { warn = 85, critical = 95 }` (both keys are required).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    pub warn: f64,
    pub critical: f64,
}

impl Threshold {
    pub fn status_of(&self, value: f64) -> HealthStatus {
        if value >= self.critical {
            HealthStatus::Critical
        } else if value >= self.warn {
            HealthStatus::Warn
        } else {
            HealthStatus::Ok
        }
    }
}

/// `GET url` must answer `expect_status` within `timeout_ms`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCheck {
    /// Names the check (`http:NAME`).
    pub name: String,
    /// `http://host[:port]/path`; https is not supported.
    pub url: String,
    #[serde(default = "default_http_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_expect_status")]
    pub expect_status: u16,
}

fn default_cpu_pct() -> Threshold {
    Threshold {
        warn: 90.0,
        critical: 98.0,
    }
}
fn default_memory_pct() -> Threshold {
    Threshold {
        warn: 85.0,
        critical: 95.0,
    }
}
fn default_disk_pct() -> Threshold {
    Threshold {
        warn: 85.0,
        critical: 95.0,
    }
}
fn default_gpu_temp_c() -> Threshold {
    Threshold {
        warn: 85.0,
        critical: 95.0,
    }
}
fn default_camera_glob() -> String {
    "/dev/video*".into()
}
fn default_report_interval_s() -> u64 {
    60
}
fn default_http_timeout_ms() -> u64 {
    2000
}
fn default_expect_status() -> u16 {
    200
}

impl HealthConfig {
    /// Every problem, each with its key path under `prefix` (`health`).
    pub fn validate(&self, prefix: &str) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        let mut bad = |key: String, message: String| p.push(ConfigProblem { key, message });
        for (name, t, max) in [
            ("cpu_pct", &self.cpu_pct, 100.0),
            ("memory_pct", &self.memory_pct, 100.0),
            ("disk_pct", &self.disk_pct, 100.0),
            ("gpu_temp_c", &self.gpu_temp_c, 150.0),
        ] {
            if !t.warn.is_finite() || t.warn <= 0.0 || t.warn > max {
                bad(
                    format!("{prefix}.{name}.warn"),
                    format!("{} is outside (0, {max}]", t.warn),
                );
            }
            if !t.critical.is_finite() || t.critical <= 0.0 || t.critical > max {
                bad(
                    format!("{prefix}.{name}.critical"),
                    format!("{} is outside (0, {max}]", t.critical),
                );
            } else if t.warn.is_finite() && t.critical < t.warn {
                bad(
                    format!("{prefix}.{name}.critical"),
                    format!("{} is below warn ({})", t.critical, t.warn),
                );
            }
        }
        let mut seen = HashSet::new();
        for (i, name) in self.watch_processes.iter().enumerate() {
            let key = format!("{prefix}.watch_processes[{i}]");
            if let Err(e) = valid_process_name(name) {
                bad(key, e);
            } else if !seen.insert(name) {
                bad(key, format!("{name:?} is listed twice"));
            }
        }
        let mut seen = HashSet::new();
        for (i, unit) in self.systemd_units.iter().enumerate() {
            let key = format!("{prefix}.systemd_units[{i}]");
            if let Err(e) = valid_unit_name(unit) {
                bad(key, e);
            } else if !seen.insert(unit) {
                bad(key, format!("{unit:?} is listed twice"));
            }
        }
        let mut seen = HashSet::new();
        for (i, c) in self.http_checks.iter().enumerate() {
            let key = format!("{prefix}.http_checks[{i}]");
            if c.name.trim().is_empty() || c.name.chars().any(char::is_control) {
                bad(
                    format!("{key}.name"),
                    format!("{:?} is not a usable name", c.name),
                );
            } else if !seen.insert(&c.name) {
                bad(
                    format!("{key}.name"),
                    format!("{:?} is used by another check", c.name),
                );
            }
            if let Err(e) = parse_http_url(&c.url) {
                bad(format!("{key}.url"), e);
            }
            if !(1..=60_000).contains(&c.timeout_ms) {
                bad(
                    format!("{key}.timeout_ms"),
                    format!("{} is outside 1..=60000", c.timeout_ms),
                );
            }
            if !(100..=599).contains(&c.expect_status) {
                bad(
                    format!("{key}.expect_status"),
                    format!("{} is not an HTTP status (100..=599)", c.expect_status),
                );
            }
        }
        if let Err(e) = split_glob(&self.camera_glob) {
            bad(format!("{prefix}.camera_glob"), e);
        }
        if let Some(path) = &self.data_disk_path
            && !path.is_absolute()
        {
            bad(
                format!("{prefix}.data_disk_path"),
                format!("{} is not an absolute path", path.display()),
            );
        }
        if !(5..=86_400).contains(&self.report_interval_s) {
            bad(
                format!("{prefix}.report_interval_s"),
                format!("{} is outside 5..=86400", self.report_interval_s),
            );
        }
        p
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation (pure)
// ---------------------------------------------------------------------------------------------

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
    /// Watched process name and whether it is running ([`probe_processes`]).
    pub processes: Vec<(String, bool)>,
    /// Watched unit and its state ([`probe_units`]).
    pub units: Vec<(String, UnitState)>,
    /// HTTP check name and the status code it got, or why it got none ([`probe_http`]).
    pub http: Vec<(String, Result<u16, String>)>,
    /// Whether a camera device matches the glob ([`probe_camera`]).
    pub camera_present: Option<bool>,
    /// Result of [`probe_disk_writable`] on `data_disk_path`.
    pub disk_writable: Option<Result<(), String>>,
    pub broker_connected: bool,
    /// How long the broker link has been down; ignored while connected.
    pub broker_down_for_ms: i64,
    pub actors: Vec<ActorStatus>,
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

// ---------------------------------------------------------------------------------------------
// Probes (IO, blocking)
// ---------------------------------------------------------------------------------------------

/// State of each unit from one `systemctl is-active` call. Invalid names, a missing systemctl,
/// a timeout or an unexpected answer give [`UnitState::Unknown`].
pub fn probe_units(units: &[String]) -> Vec<(String, UnitState)> {
    let valid: Vec<&str> = units
        .iter()
        .filter(|u| valid_unit_name(u).is_ok())
        .map(String::as_str)
        .collect();
    let mut states: Vec<UnitState> = Vec::new();
    if !valid.is_empty() {
        let mut args = vec!["is-active", "--"];
        args.extend(valid.iter().copied());
        let run = run_command("systemctl", &args, UNIT_PROBE_TIMEOUT, 16 * 1024);
        if matches!(run.result, RunResult::Exited(_)) {
            let lines: Vec<&str> = run.stdout.lines().collect();
            if lines.len() == valid.len() {
                states = lines.iter().map(|l| UnitState::parse(l)).collect();
            } else {
                tracing::warn!(
                    units = valid.len(),
                    lines = lines.len(),
                    "systemctl is-active answered an unexpected number of lines"
                );
            }
        } else {
            tracing::warn!(error = %run.summary(), "systemctl is-active did not run");
        }
    }
    let mut answered = valid.iter().zip(states);
    units
        .iter()
        .map(|u| {
            let state = if valid_unit_name(u).is_ok() {
                answered.next().map_or(UnitState::Unknown, |(_, s)| s)
            } else {
                UnitState::Unknown
            };
            (u.clone(), state)
        })
        .collect()
}

/// Whether a process of each name runs, from `/proc/PID/comm` (names compared on their first
/// 15 bytes, as the kernel keeps them).
pub fn probe_processes(names: &[String]) -> Vec<(String, bool)> {
    probe_processes_in(Path::new("/proc"), names)
}

fn probe_processes_in(proc_root: &Path, names: &[String]) -> Vec<(String, bool)> {
    let mut running: HashSet<String> = HashSet::new();
    if let Ok(entries) = fs::read_dir(proc_root) {
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let is_pid = file_name
                .to_str()
                .is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit()));
            if !is_pid {
                continue;
            }
            if let Ok(comm) = fs::read_to_string(entry.path().join("comm")) {
                running.insert(comm.trim_end_matches('\n').to_string());
            }
        }
    }
    names
        .iter()
        .map(|n| (n.clone(), running.contains(comm_prefix(n))))
        .collect()
}

/// The first 15 bytes of a name, cut at a character boundary.
fn comm_prefix(name: &str) -> &str {
    let mut end = name.len().min(PROCESS_NAME_MAX);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

pub fn probe_http(checks: &[HttpCheck]) -> Vec<(String, Result<u16, String>)> {
    checks
        .iter()
        .map(|c| {
            let timeout = Duration::from_millis(c.timeout_ms.max(1));
            (c.name.clone(), http_get_status(&c.url, timeout))
        })
        .collect()
}

/// A blocking HTTP/1.1 `GET` that reads only as far as the status line, within `timeout`.
pub fn http_get_status(url: &str, timeout: Duration) -> Result<u16, String> {
    let (host, port, path) = parse_http_url(url)?;
    let deadline = Instant::now() + timeout;
    let remaining = || deadline.saturating_duration_since(Instant::now());
    let addrs: Vec<_> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let mut last_err = format!("{host} resolved to no address");
    let mut stream = None;
    for addr in addrs {
        if remaining().is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, remaining()) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_err = format!("connect {addr}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last_err)?;
    let host_header = match (host.contains(':'), port) {
        (true, 80) => format!("[{host}]"),
        (true, p) => format!("[{host}]:{p}"),
        (false, 80) => host.clone(),
        (false, p) => format!("{host}:{p}"),
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: rvm-agent\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    let io_timeout = |what: &str| -> Result<Duration, String> {
        let r = remaining();
        if r.is_zero() {
            Err(format!("timed out after {} ms {what}", timeout.as_millis()))
        } else {
            Ok(r)
        }
    };
    stream
        .set_write_timeout(Some(io_timeout("before sending")?))
        .map_err(|e| format!("socket: {e}"))?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send request: {e}"))?;
    let mut head: Vec<u8> = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    loop {
        if let Some(end) = head.windows(2).position(|w| w == b"\r\n") {
            return parse_status_line(&head[..end]);
        }
        if head.len() >= HTTP_MAX_HEAD {
            return Err(format!("no status line in the first {HTTP_MAX_HEAD} bytes"));
        }
        stream
            .set_read_timeout(Some(io_timeout("waiting for the response")?))
            .map_err(|e| format!("socket: {e}"))?;
        match stream.read(&mut buf) {
            Ok(0) if head.is_empty() => return Err("connection closed without a response".into()),
            Ok(0) => return parse_status_line(&head),
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!(
                    "timed out after {} ms waiting for the response",
                    timeout.as_millis()
                ));
            }
            Err(e) => return Err(format!("read response: {e}")),
        }
    }
}

/// Splits a camera glob into its directory and the pattern of its last component.
fn split_glob(glob: &str) -> Result<(&Path, &str), String> {
    let (dir, pattern) = glob
        .rsplit_once('/')
        .ok_or_else(|| format!("{glob:?} is not an absolute path pattern like /dev/video*"))?;
    if !glob.starts_with('/') {
        return Err(format!(
            "{glob:?} is not an absolute path pattern like /dev/video*"
        ));
    }
    if dir.contains(['*', '?', '[']) {
        return Err(format!(
            "{glob:?}: wildcards are allowed in the last component only"
        ));
    }
    if pattern.is_empty() || pattern.contains('[') {
        return Err(format!(
            "{glob:?}: the last component must be a name with * or ? wildcards"
        ));
    }
    Ok((Path::new(if dir.is_empty() { "/" } else { dir }), pattern))
}

/// `*` matches any run of characters, `?` exactly one.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether any entry of the glob's directory matches its last component. An invalid glob or
/// an unreadable directory counts as no camera (validation reports a bad glob).
pub fn probe_camera(glob: &str) -> bool {
    let Ok((dir, pattern)) = split_glob(glob) else {
        return false;
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries
        .flatten()
        .any(|e| e.file_name().to_str().is_some_and(|n| wildcard_match(pattern, n)))
}

/// Creates, writes, fsyncs and removes a small file in `dir`.
pub fn probe_disk_writable(dir: &Path) -> Result<(), String> {
    let meta = fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let path = dir.join(format!(".rvm-agent-write-test-{}-{nanos}", std::process::id()));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let written = f
        .write_all(b"rvm-agent write test\n")
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
        .and_then(|()| {
            f.sync_all()
                .map_err(|e| format!("cannot fsync {}: {e}", path.display()))
        });
    drop(f);
    let removed = fs::remove_file(&path).map_err(|e| format!("cannot remove {}: {e}", path.display()));
    written.and(removed)
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use common::{DiskStats, GpuStats, MemoryStats, Reading};

    use super::*;

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
            disk_writable: Some(Err("read-only file system".into())),
            ..build_observations(&t)
        };
        let r = evaluate(&cfg, &obs);
        assert_eq!(check(&r, "data_disk").status, HealthStatus::Critical);
        assert_eq!(
            check(&r, "data_disk").message,
            "/data is not writable: read-only file system"
        );
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
    fn defaults_validate_and_bad_values_are_named_with_their_keys() {
        assert!(HealthConfig::default().validate("health").is_empty());
        let text = r#"
memory_pct = { warn = 95, critical = 90 }
cpu_pct = { warn = 0, critical = 101 }
watch_processes = ["a-process-name-too-long", "vision", "vision"]
systemd_units = ["-x.service", "ok.service"]
camera_glob = "/dev/*/video*"
data_disk_path = "relative"
report_interval_s = 1
[[http_checks]]
name = "api"
url = "https://localhost/health"
timeout_ms = 0
expect_status = 42
"#;
        let cfg: HealthConfig = toml::from_str(text).unwrap();
        let keys: Vec<String> = cfg.validate("health").into_iter().map(|p| p.key).collect();
        for k in [
            "health.memory_pct.critical",
            "health.cpu_pct.warn",
            "health.cpu_pct.critical",
            "health.watch_processes[0]",
            "health.watch_processes[2]",
            "health.systemd_units[0]",
            "health.camera_glob",
            "health.data_disk_path",
            "health.report_interval_s",
            "health.http_checks[0].url",
            "health.http_checks[0].timeout_ms",
            "health.http_checks[0].expect_status",
        ] {
            assert!(keys.contains(&k.to_string()), "{k} missing from {keys:?}");
        }
        assert!(!keys.contains(&"health.systemd_units[1]".to_string()));
    }

    #[test]
    fn an_unknown_key_in_the_section_is_an_error_naming_it() {
        let err = toml::from_str::<HealthConfig>("watch_process = [\"x\"]").unwrap_err();
        assert!(err.to_string().contains("watch_process"), "{err}");
        let cfg: HealthConfig = toml::from_str("").unwrap();
        assert_eq!(cfg, HealthConfig::default());
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
    fn an_invalid_unit_name_is_unknown_without_asking_systemctl() {
        let got = probe_units(&["--now".into()]);
        assert_eq!(got, vec![("--now".to_string(), UnitState::Unknown)]);
    }

    #[test]
    fn processes_are_found_by_their_comm_name_in_a_proc_tree() {
        let dir = tempfile::tempdir().unwrap();
        for (pid, comm) in [("1", "systemd\n"), ("42", "vision-inferenc\n")] {
            fs::create_dir(dir.path().join(pid)).unwrap();
            fs::write(dir.path().join(pid).join("comm"), comm).unwrap();
        }
        fs::create_dir(dir.path().join("self")).unwrap();
        fs::write(dir.path().join("self").join("comm"), "uploader\n").unwrap();
        let got = probe_processes_in(
            dir.path(),
            &["vision-inference".into(), "uploader".into(), "systemd".into()],
        );
        assert_eq!(
            got,
            vec![
                ("vision-inference".to_string(), true),
                ("uploader".to_string(), false),
                ("systemd".to_string(), true),
            ]
        );
    }

    #[test]
    fn the_camera_probe_matches_video_devices_in_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let glob = format!("{}/video*", dir.path().display());
        fs::write(dir.path().join("vid"), "").unwrap();
        assert!(!probe_camera(&glob));
        fs::write(dir.path().join("video0"), "").unwrap();
        assert!(probe_camera(&glob));
        assert!(!probe_camera("/nonexistent-rvm-dir/video*"));
        assert!(!probe_camera("video*"));
    }

    #[test]
    fn wildcards_match_like_a_shell() {
        assert!(wildcard_match("video*", "video0"));
        assert!(wildcard_match("video*", "video"));
        assert!(!wildcard_match("video*", "vide"));
        assert!(wildcard_match("v?deo*1", "video11"));
        assert!(wildcard_match("*cam*", "usbcam0"));
        assert!(!wildcard_match("video?", "video10"));
    }

    #[test]
    fn a_temp_dir_is_writable_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(probe_disk_writable(dir.path()), Ok(()));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_missing_path_a_file_and_a_read_only_filesystem_are_not_writable() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = probe_disk_writable(&missing).unwrap_err();
        assert!(err.contains("nope"), "{err}");
        let file = dir.path().join("file");
        fs::write(&file, "").unwrap();
        assert!(
            probe_disk_writable(&file)
                .unwrap_err()
                .contains("not a directory")
        );
        // procfs refuses new files even to root
        let err = probe_disk_writable(Path::new("/proc")).unwrap_err();
        assert!(err.contains("cannot create /proc/"), "{err}");
    }

    /// Serves each accepted connection with `response` (after reading the request head).
    fn serve(responses: Vec<&'static [u8]>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let mut requests = Vec::new();
            for response in responses {
                let (mut s, _) = listener.accept().unwrap();
                let mut req = Vec::new();
                let mut buf = [0u8; 512];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    req.extend_from_slice(&buf[..n]);
                }
                requests.push(String::from_utf8_lossy(&req).into_owned());
                if !response.is_empty() {
                    s.write_all(response).unwrap();
                } else {
                    // say nothing until the client gives up
                    std::thread::sleep(Duration::from_millis(600));
                }
            }
            requests
        });
        (format!("http://{addr}"), handle)
    }

    #[test]
    fn the_http_probe_reads_the_status_of_a_local_server() {
        let (base, server) = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.0 503 Service Unavailable\r\n\r\n",
            b"",
        ]);
        let checks = vec![
            HttpCheck {
                name: "a".into(),
                url: format!("{base}/health?x=1"),
                timeout_ms: 2000,
                expect_status: 200,
            },
            HttpCheck {
                name: "b".into(),
                url: format!("{base}/"),
                timeout_ms: 2000,
                expect_status: 200,
            },
            HttpCheck {
                name: "slow".into(),
                url: format!("{base}/"),
                timeout_ms: 200,
                expect_status: 200,
            },
        ];
        let got = probe_http(&checks);
        assert_eq!(got[0], ("a".to_string(), Ok(200)));
        assert_eq!(got[1], ("b".to_string(), Ok(503)));
        let slow = got[2].1.clone().unwrap_err();
        assert!(slow.contains("timed out"), "{slow}");
        let requests = server.join().unwrap();
        assert!(
            requests[0].starts_with("GET /health?x=1 HTTP/1.1\r\n"),
            "{}",
            requests[0]
        );
        assert!(requests[0].contains("\r\nHost: 127.0.0.1:"), "{}", requests[0]);
    }

    #[test]
    fn the_http_probe_reports_a_refused_connection_and_rejects_https() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = http_get_status(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(2)).unwrap_err();
        assert!(err.starts_with("connect 127.0.0.1:"), "{err}");
        let err = http_get_status("https://127.0.0.1/", Duration::from_secs(1)).unwrap_err();
        assert!(err.contains("http:// only"), "{err}");
    }
    #[test]
    fn durations_read_naturally() {
        assert_eq!(format_duration_ms(12_345), "12 s");
        assert_eq!(format_duration_ms(60_000), "1 min");
        assert_eq!(format_duration_ms(125_000), "2 min 5 s");
        assert_eq!(format_duration_ms(3_900_000), "1 h 5 min");
    }
}
