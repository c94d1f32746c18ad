//! Recovery: the `[recovery]` config, the pure policy (escalation ladder, allow-list, rate
//! limits, interlock) and the executors that carry actions out.
//!
//! The Recovery actor does, for a health report:
//!
//! ```text
//! for planned in policy.on_health(&report, now)            // pure: which ladder steps are due
//!     match policy.decide(&planned.action, &Source::Local, &interlock, now)   // pure gate
//!         Allowed    -> outcome = executor.execute(..) on a blocking thread
//!         Refused(r) -> outcome = Refused, detail = r
//!     policy.record_outcome(&planned, outcome, now)        // advances or holds the ladder
//!     buffer.append(event_for(&planned.action, outcome, detail))
//! ```
//!
//! and for a verified remote command the same with `Source::Remote(id)` and no ladder.
//!
//! Invariants:
//! - Nothing runs that [`RecoveryPolicy::decide`] did not allow, and every allowed or refused
//!   action becomes exactly one [`Event`] (built by [`event_for`]).
//! - Only the seven [`Action`]s exist; restarts only touch units and processes that `[health]`
//!   watches (or that `extra_units` / `extra_processes` name), and network restarts only the
//!   interfaces in `network_interfaces`: a bad or hostile command cannot name anything else.
//! - A reboot needs `allow_reboot = true`; with it false a reboot step is never even planned.
//! - Disruptive actions (restarts, network restart, reboot) are refused while the vision
//!   service reports a transaction ([`Interlock`]); a refused ladder step stays the next step.
//! - Rate limits count allowed actions per action and target over the last hour (and reboots
//!   over the last day). They live in memory: the actor should persist
//!   [`RecoveryPolicy::history`] and give it back with [`RecoveryPolicy::restore_history`] so a
//!   reboot does not reset them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use common::command::{Action, MAX_RESULT_OUTPUT};
use common::{ActionOutcome, Event, EventKind, HealthReport, HealthStatus, Reading, Severity, Telemetry};
use serde::{Deserialize, Serialize};

use crate::health::config::HealthConfig;
use crate::shared::names::{valid_interface_name, valid_process_name, valid_unit_name};
use crate::shared::problem::ConfigProblem;
use crate::shared::subprocess::{RunResult, run_command};

/// Every action name, in the order of [`Action`].
pub const ALL_ACTIONS: [&str; 7] = [
    "restart_unit",
    "restart_process",
    "drop_caches",
    "clean_temp",
    "restart_network",
    "reboot",
    "collect_diagnostics",
];
/// The application metric (in `Telemetry::app`) the vision service sets to 1 during a
/// transaction (`app.transaction_active` in flat metric names).
pub const TRANSACTION_METRIC: &str = "transaction_active";
/// Without a fresh interlock signal for this long, the service counts as not busy.
pub const INTERLOCK_STALE_AFTER_MS: i64 = 30_000;
/// A refused ladder step is tried again after this long (or when its rate limit frees).
pub const REFUSED_RETRY_AFTER_MS: i64 = 30_000;
/// Window of `max_actions_per_hour`.
pub const RATE_WINDOW_MS: i64 = 3_600_000;
/// Window of `max_reboots_per_day`.
pub const REBOOT_WINDOW_MS: i64 = 86_400_000;
/// Longest any recovery command may run (systemd's default start timeout is 90 s).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);
/// Longest each diagnostics command may run.
pub const DIAGNOSTICS_COMMAND_TIMEOUT: Duration = Duration::from_secs(15);
/// Bytes kept of each diagnostics command's output.
pub const DIAGNOSTICS_SECTION_MAX: usize = 256 * 1024;
/// Journal lines per unit in a diagnostics file.
pub const DIAGNOSTICS_JOURNAL_LINES: u32 = 200;
/// Diagnostics files kept; older ones are removed when a new one is written.
pub const MAX_DIAGNOSTICS_FILES: usize = 10;
/// Directory depth `clean_temp` descends to.
pub const CLEAN_MAX_DEPTH: usize = 16;
/// Where `drop_caches` writes.
pub const DROP_CACHES_PATH: &str = "/proc/sys/vm/drop_caches";
/// Directories `clean_temp` must never be pointed at.
const FORBIDDEN_TEMP_DIRS: [&str; 16] = [
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/opt", "/proc", "/root", "/run", "/sbin", "/sys",
    "/usr", "/var", "/var/lib",
];

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

/// The `[recovery]` section of `agent.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoveryConfig {
    /// Local, automatic recovery (the ladders). Remote commands are governed by
    /// `allowed_actions` alone, so an operator can still act on a machine with this off.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Action names that may run at all (default: all seven).
    #[serde(default = "default_allowed_actions")]
    pub allowed_actions: Vec<String>,
    /// A reboot also needs this.
    #[serde(default)]
    pub allow_reboot: bool,
    /// Units that may be restarted besides `health.systemd_units`.
    #[serde(default)]
    pub extra_units: Vec<String>,
    /// Processes that may be restarted besides `health.watch_processes`.
    #[serde(default)]
    pub extra_processes: Vec<String>,
    /// Interfaces `restart_network` may touch; empty = none.
    #[serde(default)]
    pub network_interfaces: Vec<String>,
    /// Directories `clean_temp` cleans (absolute; never `/`, `/etc`, `/var`, ...).
    #[serde(default)]
    pub temp_dirs: Vec<PathBuf>,
    /// `clean_temp` removes regular files not modified for this long.
    #[serde(default = "default_temp_max_age_h")]
    pub temp_max_age_h: u64,
    /// Where `collect_diagnostics` writes its files.
    #[serde(default = "default_diagnostics_dir")]
    pub diagnostics_dir: PathBuf,
    /// Allowed runs of one action on one target per hour.
    #[serde(default = "default_max_actions_per_hour")]
    pub max_actions_per_hour: u32,
    /// Allowed reboots per 24 h.
    #[serde(default = "default_max_reboots_per_day")]
    pub max_reboots_per_day: u32,
    /// Wait between ladder steps, unless a rule says otherwise.
    #[serde(default = "default_retry_after_s")]
    pub retry_after_s: u64,
    /// A ladder starts again from its first step once its check was ok this long.
    #[serde(default = "default_reset_after_ok_s")]
    pub reset_after_ok_s: u64,
    /// Every unit in `health.systemd_units` without its own `[[recovery.ladder]]` gets the
    /// ladder restart_unit, restart_unit, reboot.
    #[serde(default = "default_true")]
    pub ladder_for_units: bool,
    #[serde(default)]
    pub ladder: Vec<LadderRule>,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            allowed_actions: default_allowed_actions(),
            allow_reboot: false,
            extra_units: Vec::new(),
            extra_processes: Vec::new(),
            network_interfaces: Vec::new(),
            temp_dirs: Vec::new(),
            temp_max_age_h: default_temp_max_age_h(),
            diagnostics_dir: default_diagnostics_dir(),
            max_actions_per_hour: default_max_actions_per_hour(),
            max_reboots_per_day: default_max_reboots_per_day(),
            retry_after_s: default_retry_after_s(),
            reset_after_ok_s: default_reset_after_ok_s(),
            ladder_for_units: true,
            ladder: Vec::new(),
        }
    }
}

/// `[[recovery.ladder]]`: what to do, step by step, while one check is critical.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LadderRule {
    /// A check name from the health report: `unit:vision.service`, `process:vision`,
    /// `http:vision`, `memory`, ...
    pub check: String,
    /// Action names, optionally with a target: `restart_unit` (the check's unit),
    /// `restart_unit:other.service`, `restart_process:vision`, `restart_network:eth0`,
    /// `drop_caches`, `clean_temp`, `collect_diagnostics`, `reboot`. Default for `unit:`
    /// checks: restart_unit, restart_unit, reboot; an empty list means no local action.
    #[serde(default)]
    pub steps: Option<Vec<String>>,
    /// Overrides `recovery.retry_after_s` for this ladder.
    #[serde(default)]
    pub retry_after_s: Option<u64>,
    /// The check must be critical this long before the first step.
    #[serde(default)]
    pub grace_s: u64,
}

fn default_true() -> bool {
    true
}
fn default_allowed_actions() -> Vec<String> {
    ALL_ACTIONS.iter().map(|s| s.to_string()).collect()
}
fn default_temp_max_age_h() -> u64 {
    24
}
fn default_diagnostics_dir() -> PathBuf {
    PathBuf::from("/var/lib/rvm-agent/diagnostics")
}
fn default_max_actions_per_hour() -> u32 {
    6
}
fn default_max_reboots_per_day() -> u32 {
    2
}
fn default_retry_after_s() -> u64 {
    120
}
fn default_reset_after_ok_s() -> u64 {
    600
}

/// A ladder as the policy runs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ladder {
    pub check: String,
    pub steps: Vec<Action>,
    pub retry_after_ms: i64,
    pub grace_ms: i64,
}

fn secs_to_ms(s: u64) -> i64 {
    i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// Parses one ladder step for `check`.
pub fn parse_step(step: &str, check: &str) -> Result<Action, String> {
    let (name, target) = match step.split_once(':') {
        Some((n, t)) => (n.trim(), Some(t.trim())),
        None => (step.trim(), None),
    };
    let from_check = |prefix: &str| check.strip_prefix(prefix).filter(|t| !t.is_empty());
    let action = match name {
        "restart_unit" => {
            let unit = target.or_else(|| from_check("unit:")).ok_or_else(|| {
                format!("{step:?}: name the unit (restart_unit:NAME) or use it on a unit:NAME check")
            })?;
            valid_unit_name(unit)?;
            Action::RestartUnit { unit: unit.into() }
        }
        "restart_process" => {
            let name = target.or_else(|| from_check("process:")).ok_or_else(|| {
                format!("{step:?}: name the process (restart_process:NAME) or use it on a process:NAME check")
            })?;
            valid_process_name(name)?;
            Action::RestartProcess { name: name.into() }
        }
        "restart_network" => {
            let iface =
                target.ok_or_else(|| format!("{step:?}: name the interface (restart_network:eth0)"))?;
            valid_interface_name(iface)?;
            Action::RestartNetwork {
                interface: iface.into(),
            }
        }
        "drop_caches" | "clean_temp" | "reboot" | "collect_diagnostics" if target.is_some() => {
            return Err(format!("{step:?}: {name} takes no target"));
        }
        "drop_caches" => Action::DropCaches,
        "clean_temp" => Action::CleanTemp,
        "reboot" => Action::Reboot,
        "collect_diagnostics" => Action::CollectDiagnostics,
        other => {
            return Err(format!(
                "{other:?} is not an action (one of {})",
                ALL_ACTIONS.join(", ")
            ));
        }
    };
    Ok(action)
}

fn default_steps(check: &str) -> Option<Vec<String>> {
    check
        .starts_with("unit:")
        .then(|| vec!["restart_unit".into(), "restart_unit".into(), "reboot".into()])
}

impl RecoveryConfig {
    /// The ladders the policy runs: the explicit rules, then (with `ladder_for_units`) the
    /// default ladder for every watched unit without a rule. Steps that do not parse are
    /// left out (and named by [`RecoveryConfig::validate`]).
    pub fn ladders(&self, health: &HealthConfig) -> Vec<Ladder> {
        let mut out: Vec<Ladder> = Vec::new();
        for rule in &self.ladder {
            let steps = rule
                .steps
                .clone()
                .or_else(|| default_steps(&rule.check))
                .unwrap_or_default();
            let steps = steps
                .iter()
                .filter_map(|s| match parse_step(s, &rule.check) {
                    Ok(a) => Some(a),
                    Err(e) => {
                        tracing::warn!(check = %rule.check, error = %e, "ladder step left out");
                        None
                    }
                })
                .collect();
            out.push(Ladder {
                check: rule.check.clone(),
                steps,
                retry_after_ms: secs_to_ms(rule.retry_after_s.unwrap_or(self.retry_after_s)),
                grace_ms: secs_to_ms(rule.grace_s),
            });
        }
        if self.ladder_for_units {
            for unit in &health.systemd_units {
                let check = format!("unit:{unit}");
                if out.iter().any(|l| l.check == check) || valid_unit_name(unit).is_err() {
                    continue;
                }
                let restart = Action::RestartUnit { unit: unit.clone() };
                out.push(Ladder {
                    check,
                    steps: vec![restart.clone(), restart, Action::Reboot],
                    retry_after_ms: secs_to_ms(self.retry_after_s),
                    grace_ms: 0,
                });
            }
        }
        out
    }

    /// Every problem, each with its key path under `prefix` (`recovery`). `health` is the
    /// `[health]` section, which ladders and restart targets refer to.
    pub fn validate(&self, prefix: &str, health: &HealthConfig) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        let mut bad = |key: String, message: String| p.push(ConfigProblem { key, message });
        for (i, a) in self.allowed_actions.iter().enumerate() {
            if !ALL_ACTIONS.contains(&a.as_str()) {
                bad(
                    format!("{prefix}.allowed_actions[{i}]"),
                    format!("{a:?} is not an action (one of {})", ALL_ACTIONS.join(", ")),
                );
            }
        }
        for (i, u) in self.extra_units.iter().enumerate() {
            if let Err(e) = valid_unit_name(u) {
                bad(format!("{prefix}.extra_units[{i}]"), e);
            }
        }
        for (i, n) in self.extra_processes.iter().enumerate() {
            if let Err(e) = valid_process_name(n) {
                bad(format!("{prefix}.extra_processes[{i}]"), e);
            }
        }
        for (i, n) in self.network_interfaces.iter().enumerate() {
            if let Err(e) = valid_interface_name(n) {
                bad(format!("{prefix}.network_interfaces[{i}]"), e);
            }
        }
        for (i, d) in self.temp_dirs.iter().enumerate() {
            if let Err(e) = valid_temp_dir(d) {
                bad(format!("{prefix}.temp_dirs[{i}]"), e);
            }
        }
        if !(1..=24 * 365).contains(&self.temp_max_age_h) {
            bad(
                format!("{prefix}.temp_max_age_h"),
                format!("{} is outside 1..=8760", self.temp_max_age_h),
            );
        }
        if !self.diagnostics_dir.is_absolute() {
            bad(
                format!("{prefix}.diagnostics_dir"),
                format!("{} is not an absolute path", self.diagnostics_dir.display()),
            );
        }
        if !(1..=60).contains(&self.max_actions_per_hour) {
            bad(
                format!("{prefix}.max_actions_per_hour"),
                format!("{} is outside 1..=60", self.max_actions_per_hour),
            );
        }
        if !(1..=24).contains(&self.max_reboots_per_day) {
            bad(
                format!("{prefix}.max_reboots_per_day"),
                format!("{} is outside 1..=24", self.max_reboots_per_day),
            );
        }
        if !(10..=86_400).contains(&self.retry_after_s) {
            bad(
                format!("{prefix}.retry_after_s"),
                format!("{} is outside 10..=86400", self.retry_after_s),
            );
        }
        if self.reset_after_ok_s > 7 * 86_400 {
            bad(
                format!("{prefix}.reset_after_ok_s"),
                format!("{} is above 604800 (a week)", self.reset_after_ok_s),
            );
        }
        let mut seen = HashSet::new();
        for (i, rule) in self.ladder.iter().enumerate() {
            let key = format!("{prefix}.ladder[{i}]");
            if rule.check.trim().is_empty() {
                bad(format!("{key}.check"), "is empty".into());
                continue;
            }
            if !seen.insert(&rule.check) {
                bad(
                    format!("{key}.check"),
                    format!("{:?} has another ladder already", rule.check),
                );
            }
            if let Some(unit) = rule.check.strip_prefix("unit:")
                && !health.systemd_units.iter().any(|u| u == unit)
            {
                bad(
                    format!("{key}.check"),
                    format!("{unit:?} is not in health.systemd_units, so this check never runs"),
                );
            }
            if let Some(name) = rule.check.strip_prefix("process:")
                && !health.watch_processes.iter().any(|n| n == name)
            {
                bad(
                    format!("{key}.check"),
                    format!("{name:?} is not in health.watch_processes, so this check never runs"),
                );
            }
            if let Some(name) = rule.check.strip_prefix("http:")
                && !health.http_checks.iter().any(|c| c.name == name)
            {
                bad(
                    format!("{key}.check"),
                    format!("{name:?} is not in health.http_checks, so this check never runs"),
                );
            }
            match &rule.steps {
                None if default_steps(&rule.check).is_none() => bad(
                    format!("{key}.steps"),
                    format!(
                        "{:?} is not a unit: check, so its steps must be given",
                        rule.check
                    ),
                ),
                None => {}
                Some(steps) => {
                    for (j, s) in steps.iter().enumerate() {
                        if let Err(e) = parse_step(s, &rule.check) {
                            bad(format!("{key}.steps[{j}]"), e);
                        }
                    }
                }
            }
            if let Some(r) = rule.retry_after_s
                && !(10..=86_400).contains(&r)
            {
                bad(
                    format!("{key}.retry_after_s"),
                    format!("{r} is outside 10..=86400"),
                );
            }
            if rule.grace_s > 86_400 {
                bad(
                    format!("{key}.grace_s"),
                    format!("{} is above 86400", rule.grace_s),
                );
            }
        }
        p
    }
}

fn valid_temp_dir(dir: &Path) -> Result<(), String> {
    if !dir.is_absolute() {
        return Err(format!("{} is not an absolute path", dir.display()));
    }
    let normal: PathBuf = dir.components().collect();
    if dir
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!("{} contains ..", dir.display()));
    }
    if FORBIDDEN_TEMP_DIRS.iter().any(|f| Path::new(f) == normal) {
        return Err(format!(
            "{} is a system directory, not a temp directory",
            dir.display()
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Interlock (pure)
// ---------------------------------------------------------------------------------------------

/// The vision service's "do not disturb": while it reports a transaction in progress,
/// disruptive actions are refused. A signal older than [`INTERLOCK_STALE_AFTER_MS`] no
/// longer counts (a dead service must not block its own recovery forever).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Interlock {
    busy: bool,
    last_signal_ms: Option<i64>,
}

impl Interlock {
    pub fn new() -> Self {
        Self::default()
    }

    /// An explicit signal from the vision service.
    pub fn set_busy(&mut self, busy: bool, now_ms: i64) {
        self.busy = busy;
        self.last_signal_ms = Some(now_ms);
    }

    /// Reads `transaction_active` from application metrics taken at `at_ms` (the time the
    /// service reported them). Returns whether the metric was there.
    pub fn observe_app_metrics(&mut self, app: &[Reading], at_ms: i64) -> bool {
        match app.iter().find(|r| r.name == TRANSACTION_METRIC) {
            Some(r) if r.value.is_finite() => {
                self.set_busy(r.value >= 0.5, at_ms);
                true
            }
            _ => false,
        }
    }

    /// [`Interlock::observe_app_metrics`] on a telemetry record.
    pub fn observe_telemetry(&mut self, telemetry: &Telemetry, at_ms: i64) -> bool {
        self.observe_app_metrics(&telemetry.app, at_ms)
    }

    /// Busy by a signal younger than [`INTERLOCK_STALE_AFTER_MS`]. A signal up to that much
    /// in the future (the wall clock stepped back) still counts; one further off does not.
    pub fn is_busy(&self, now_ms: i64) -> bool {
        self.busy
            && self
                .last_signal_ms
                .is_some_and(|at| (now_ms - at).abs() < INTERLOCK_STALE_AFTER_MS)
    }

    /// Actions that would interrupt a transaction: restarts of services, processes, the
    /// network, and reboot. Freeing caches, cleaning temp files and collecting diagnostics
    /// do not.
    pub fn guards(action: &Action) -> bool {
        matches!(
            action,
            Action::RestartUnit { .. }
                | Action::RestartProcess { .. }
                | Action::RestartNetwork { .. }
                | Action::Reboot
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Policy (pure)
// ---------------------------------------------------------------------------------------------

/// Who asked for an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The agent's own ladder.
    Local,
    /// A verified command, by its id.
    Remote(String),
}

impl Source {
    pub fn describe(&self) -> String {
        match self {
            Source::Local => "local".into(),
            Source::Remote(id) => format!("command {id}"),
        }
    }
}

/// The gate's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Not attempted; the reason goes into the event's detail.
    Refused(String),
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed)
    }
}

/// A ladder step that is due.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedAction {
    /// The failing check whose ladder this is.
    pub check: String,
    /// 0-based index of the step.
    pub step: usize,
    /// Steps in the ladder.
    pub of: usize,
    pub action: Action,
}

impl PlannedAction {
    /// `ladder unit:vision.service step 2/3`.
    pub fn describe(&self) -> String {
        format!("ladder {} step {}/{}", self.check, self.step + 1, self.of)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct LadderState {
    /// Index of the next step.
    step: usize,
    next_due_ms: i64,
    /// Since when the check is ok (or absent) again.
    ok_since_ms: Option<i64>,
}

/// One ladder's progress, for the status page and tests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LadderSnapshot {
    pub check: String,
    pub next_step: usize,
    pub steps: usize,
    pub next_due_ms: i64,
    pub ok_since_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicySnapshot {
    pub enabled: bool,
    pub ladders: Vec<LadderSnapshot>,
    /// Allowed actions in the last day: `restart_unit(vision.service)` and when.
    pub recent_actions: Vec<(String, i64)>,
}

/// The escalation ladders and the gate every action passes. Pure: time is an argument.
#[derive(Debug, Clone)]
pub struct RecoveryPolicy {
    enabled: bool,
    allowed: HashSet<String>,
    allow_reboot: bool,
    units: HashSet<String>,
    processes: HashSet<String>,
    interfaces: HashSet<String>,
    max_per_hour: usize,
    max_reboots_per_day: usize,
    reset_after_ok_ms: i64,
    ladders: Vec<Ladder>,
    states: HashMap<String, LadderState>,
    /// Allowed actions and when, oldest first, the last [`REBOOT_WINDOW_MS`].
    history: VecDeque<(Action, i64)>,
}

impl RecoveryPolicy {
    pub fn new(cfg: &RecoveryConfig, health: &HealthConfig) -> Self {
        Self {
            enabled: cfg.enabled,
            allowed: cfg.allowed_actions.iter().cloned().collect(),
            allow_reboot: cfg.allow_reboot,
            units: health
                .systemd_units
                .iter()
                .chain(&cfg.extra_units)
                .cloned()
                .collect(),
            processes: health
                .watch_processes
                .iter()
                .chain(&cfg.extra_processes)
                .cloned()
                .collect(),
            interfaces: cfg.network_interfaces.iter().cloned().collect(),
            max_per_hour: cfg.max_actions_per_hour as usize,
            max_reboots_per_day: cfg.max_reboots_per_day as usize,
            reset_after_ok_ms: secs_to_ms(cfg.reset_after_ok_s),
            ladders: cfg.ladders(health),
            states: HashMap::new(),
            history: VecDeque::new(),
        }
    }

    pub fn ladders(&self) -> &[Ladder] {
        &self.ladders
    }

    /// Why config alone forbids `action` (allow-list, `allow_reboot`, targets), if it does.
    fn config_refusal(&self, action: &Action) -> Option<String> {
        let name = action.name();
        if !self.allowed.contains(name) {
            return Some(format!("{name} is not in recovery.allowed_actions"));
        }
        match action {
            Action::Reboot if !self.allow_reboot => Some("reboot needs recovery.allow_reboot = true".into()),
            Action::RestartUnit { unit } => valid_unit_name(unit).err().or_else(|| {
                (!self.units.contains(unit))
                    .then(|| format!("unit {unit} is not in health.systemd_units or recovery.extra_units"))
            }),
            Action::RestartProcess { name } => valid_process_name(name).err().or_else(|| {
                (!self.processes.contains(name)).then(|| {
                    format!("process {name} is not in health.watch_processes or recovery.extra_processes")
                })
            }),
            Action::RestartNetwork { interface } => valid_interface_name(interface).err().or_else(|| {
                (!self.interfaces.contains(interface))
                    .then(|| format!("interface {interface} is not in recovery.network_interfaces"))
            }),
            _ => None,
        }
    }

    fn prune(&mut self, now_ms: i64) {
        while self
            .history
            .front()
            .is_some_and(|(_, at)| now_ms - at >= REBOOT_WINDOW_MS)
        {
            self.history.pop_front();
        }
    }

    /// Times of allowed runs of the same action on the same target within the hour.
    fn recent_same(&self, action: &Action, now_ms: i64) -> Vec<i64> {
        self.history
            .iter()
            .filter(|(a, at)| {
                a.name() == action.name() && a.target() == action.target() && now_ms - at < RATE_WINDOW_MS
            })
            .map(|(_, at)| *at)
            .collect()
    }

    fn recent_reboots(&self, now_ms: i64) -> Vec<i64> {
        self.history
            .iter()
            .filter(|(a, at)| *a == Action::Reboot && now_ms - at < REBOOT_WINDOW_MS)
            .map(|(_, at)| *at)
            .collect()
    }

    /// Why the rate limits refuse `action` now, and when they would allow it.
    fn rate_refusal(&self, action: &Action, now_ms: i64) -> Option<(String, i64)> {
        let same = self.recent_same(action, now_ms);
        if same.len() >= self.max_per_hour {
            let free_at = same[same.len() - self.max_per_hour] + RATE_WINDOW_MS;
            return Some((
                format!(
                    "rate limit: {action} ran {} time(s) in the last hour (max {})",
                    same.len(),
                    self.max_per_hour
                ),
                free_at,
            ));
        }
        if *action == Action::Reboot {
            let reboots = self.recent_reboots(now_ms);
            if reboots.len() >= self.max_reboots_per_day {
                let free_at = reboots[reboots.len() - self.max_reboots_per_day] + REBOOT_WINDOW_MS;
                return Some((
                    format!(
                        "rate limit: {} reboot(s) in the last 24 h (max {})",
                        reboots.len(),
                        self.max_reboots_per_day
                    ),
                    free_at,
                ));
            }
        }
        None
    }

    /// The ladder steps due now for the report's critical checks. A step whose action config
    /// forbids (not allowed, reboot without `allow_reboot`, unknown target) is skipped and
    /// never planned. Each planned action must be answered with
    /// [`RecoveryPolicy::record_outcome`]; until then the same step is planned again only
    /// after its ladder's `retry_after`.
    pub fn on_health(&mut self, report: &HealthReport, now_ms: i64) -> Vec<PlannedAction> {
        self.prune(now_ms);
        let mut planned: Vec<PlannedAction> = Vec::new();
        if !self.enabled {
            return planned;
        }
        for li in 0..self.ladders.len() {
            let ladder = &self.ladders[li];
            let status = report
                .checks
                .iter()
                .find(|c| c.name == ladder.check)
                .map(|c| c.status);
            let check = ladder.check.clone();
            if status != Some(HealthStatus::Critical) {
                if let Some(st) = self.states.get_mut(&check) {
                    if status == Some(HealthStatus::Warn) {
                        st.ok_since_ms = None;
                    } else {
                        let since = *st.ok_since_ms.get_or_insert(now_ms);
                        if now_ms - since >= self.reset_after_ok_ms {
                            self.states.remove(&check);
                        }
                    }
                }
                continue;
            }
            let grace_ms = ladder.grace_ms;
            let skip: Vec<bool> = ladder
                .steps
                .iter()
                .map(|a| self.config_refusal(a).is_some())
                .collect();
            let st = self.states.entry(check.clone()).or_insert(LadderState {
                step: 0,
                next_due_ms: now_ms.saturating_add(grace_ms),
                ok_since_ms: None,
            });
            st.ok_since_ms = None;
            while st.step < skip.len() && skip[st.step] {
                st.step += 1;
            }
            if st.step >= skip.len() || now_ms < st.next_due_ms {
                continue;
            }
            let ladder = &self.ladders[li];
            let action = ladder.steps[st.step].clone();
            if planned.iter().any(|p| p.action == action) {
                // another ladder already asks for the same thing this round
                continue;
            }
            st.next_due_ms = now_ms.saturating_add(ladder.retry_after_ms);
            planned.push(PlannedAction {
                check,
                step: st.step,
                of: ladder.steps.len(),
                action,
            });
        }
        planned
    }

    /// Moves a ladder on after its planned step ran (succeeded or failed), or holds it after
    /// a refusal: the step is tried again after [`REFUSED_RETRY_AFTER_MS`], or when the rate
    /// limit that refused it frees.
    pub fn record_outcome(&mut self, planned: &PlannedAction, outcome: ActionOutcome, now_ms: i64) {
        let retry_ms = self
            .ladders
            .iter()
            .find(|l| l.check == planned.check)
            .map_or(secs_to_ms(default_retry_after_s()), |l| l.retry_after_ms);
        let free_at = self
            .rate_refusal(&planned.action, now_ms)
            .map_or(now_ms, |(_, at)| at);
        let Some(st) = self.states.get_mut(&planned.check) else {
            return;
        };
        if st.step != planned.step {
            return;
        }
        match outcome {
            ActionOutcome::Refused => {
                st.next_due_ms = now_ms.saturating_add(REFUSED_RETRY_AFTER_MS).max(free_at);
            }
            ActionOutcome::Succeeded | ActionOutcome::Failed => {
                st.step += 1;
                st.next_due_ms = now_ms.saturating_add(retry_ms);
            }
        }
    }

    /// The gate: `enabled` (local actions only), the allow-list, `allow_reboot`, the allowed
    /// targets, the interlock, then the rate limits. An allowed action counts against the
    /// rate limits from now on, so call this right before executing.
    pub fn decide(
        &mut self,
        action: &Action,
        source: &Source,
        interlock: &Interlock,
        now_ms: i64,
    ) -> Decision {
        self.prune(now_ms);
        if !self.enabled && *source == Source::Local {
            return Decision::Refused("local recovery is off (recovery.enabled = false)".into());
        }
        if let Some(reason) = self.config_refusal(action) {
            return Decision::Refused(reason);
        }
        if Interlock::guards(action) && interlock.is_busy(now_ms) {
            return Decision::Refused("interlock: transaction in progress".into());
        }
        if let Some((reason, _)) = self.rate_refusal(action, now_ms) {
            return Decision::Refused(reason);
        }
        self.history.push_back((action.clone(), now_ms));
        Decision::Allowed
    }

    /// Allowed actions of the last day, oldest first: persist them to keep rate limits across
    /// restarts and reboots.
    pub fn history(&self) -> Vec<(Action, i64)> {
        self.history.iter().cloned().collect()
    }

    /// Puts persisted history back (before any decision); entries older than a day are dropped.
    pub fn restore_history(&mut self, entries: impl IntoIterator<Item = (Action, i64)>, now_ms: i64) {
        let mut all: Vec<(Action, i64)> = self.history.drain(..).chain(entries).collect();
        all.sort_by_key(|(_, at)| *at);
        self.history = all.into();
        self.prune(now_ms);
    }

    pub fn snapshot(&self) -> PolicySnapshot {
        let mut ladders: Vec<LadderSnapshot> = self
            .ladders
            .iter()
            .filter_map(|l| {
                self.states.get(&l.check).map(|st| LadderSnapshot {
                    check: l.check.clone(),
                    next_step: st.step,
                    steps: l.steps.len(),
                    next_due_ms: st.next_due_ms,
                    ok_since_ms: st.ok_since_ms,
                })
            })
            .collect();
        ladders.sort_by(|a, b| a.check.cmp(&b.check));
        PolicySnapshot {
            enabled: self.enabled,
            ladders,
            recent_actions: self.history.iter().map(|(a, at)| (a.to_string(), *at)).collect(),
        }
    }
}

/// [`event_for`], with who asked (`Source::describe`, `PlannedAction::describe`) appended to
/// the message: `reboot refused: interlock: transaction in progress (ladder unit:x step 3/3)`.
pub fn event_with_origin(
    action: &Action,
    outcome: ActionOutcome,
    detail: impl Into<String>,
    origin: &str,
) -> Event {
    let mut e = event_for(action, outcome, detail);
    if !origin.is_empty() {
        e.message = format!("{} ({origin})", e.message);
    }
    e
}

/// The event for an executed or refused action. `detail` is the refusal reason or the
/// command's (bounded) output.
pub fn event_for(action: &Action, outcome: ActionOutcome, detail: impl Into<String>) -> Event {
    let detail = bound_output(detail.into());
    let (severity, word) = match outcome {
        ActionOutcome::Succeeded if *action == Action::Reboot => (Severity::Warning, "succeeded"),
        ActionOutcome::Succeeded => (Severity::Info, "succeeded"),
        ActionOutcome::Refused => (Severity::Warning, "refused"),
        ActionOutcome::Failed => (Severity::Critical, "failed"),
    };
    let first_line: String = detail.lines().next().unwrap_or("").chars().take(200).collect();
    let message = if first_line.is_empty() {
        format!("{action} {word}")
    } else {
        format!("{action} {word}: {first_line}")
    };
    Event {
        severity,
        kind: EventKind::Recovery {
            action: action.name().to_string(),
            target: action.target().to_string(),
            outcome,
            detail,
        },
        message,
    }
}

// ---------------------------------------------------------------------------------------------
// Executors (IO)
// ---------------------------------------------------------------------------------------------

/// What running an action gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    pub ok: bool,
    /// At most [`MAX_RESULT_OUTPUT`] bytes.
    pub output: String,
}

impl ExecOutcome {
    pub fn new(ok: bool, output: impl Into<String>) -> Self {
        Self {
            ok,
            output: bound_output(output.into()),
        }
    }

    pub fn outcome(&self) -> ActionOutcome {
        if self.ok {
            ActionOutcome::Succeeded
        } else {
            ActionOutcome::Failed
        }
    }
}

/// Carries out an allowed action. Blocking: run it on a blocking thread.
pub trait Executor: Send + Sync + 'static {
    fn execute(&self, action: &Action) -> ExecOutcome;
}

/// Cuts `s` to [`MAX_RESULT_OUTPUT`] bytes at a character boundary, marking the cut.
pub fn bound_output(s: String) -> String {
    bound_to(s, MAX_RESULT_OUTPUT)
}

fn bound_to(mut s: String, max: usize) -> String {
    const MARK: &str = "\n[truncated]";
    if s.len() <= max {
        return s;
    }
    let mut end = max.saturating_sub(MARK.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(MARK);
    s
}

/// Records every action it is asked to run and answers with a configured outcome per action
/// name (default: success). For tests, in this crate and others.
#[derive(Debug, Default)]
pub struct RecordingExecutor {
    calls: Mutex<Vec<Action>>,
    outcomes: Mutex<HashMap<String, ExecOutcome>>,
}

impl RecordingExecutor {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builder: answer `action_name` (`restart_unit`, ...) with this outcome.
    pub fn with_outcome(self, action_name: &str, ok: bool, output: &str) -> Self {
        self.set_outcome(action_name, ok, output);
        self
    }

    pub fn set_outcome(&self, action_name: &str, ok: bool, output: &str) {
        self.outcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(action_name.to_string(), ExecOutcome::new(ok, output));
    }

    /// Every action asked for so far, in order.
    pub fn calls(&self) -> Vec<Action> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Executor for RecordingExecutor {
    fn execute(&self, action: &Action) -> ExecOutcome {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(action.clone());
        self.outcomes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(action.name())
            .cloned()
            .unwrap_or_else(|| ExecOutcome::new(true, format!("recorded {action}")))
    }
}

/// Runs actions on this machine: systemctl, pkill, ip, `/proc/sys/vm/drop_caches`.
#[derive(Debug, Clone)]
pub struct SystemExecutor {
    temp_dirs: Vec<PathBuf>,
    temp_max_age: Duration,
    diagnostics_dir: PathBuf,
    journal_units: Vec<String>,
}

impl SystemExecutor {
    /// `journal_units`: the units whose journal goes into diagnostics (`health.systemd_units`).
    pub fn new(cfg: &RecoveryConfig, journal_units: Vec<String>) -> Self {
        Self {
            temp_dirs: cfg.temp_dirs.clone(),
            temp_max_age: Duration::from_secs(cfg.temp_max_age_h.saturating_mul(3600)),
            diagnostics_dir: cfg.diagnostics_dir.clone(),
            journal_units,
        }
    }

    fn command(program: &str, args: &[&str]) -> ExecOutcome {
        let run = run_command(program, args, COMMAND_TIMEOUT, MAX_RESULT_OUTPUT);
        ExecOutcome::new(run.success(), run.text())
    }

    fn restart_process(name: &str) -> ExecOutcome {
        if let Err(e) = valid_process_name(name) {
            return ExecOutcome::new(false, e);
        }
        // pkill -x takes an extended regex: escape the two metacharacters names may hold
        let pattern = name.replace('.', "\\.").replace('+', "\\+");
        let run = run_command(
            "pkill",
            &["-TERM", "-x", "--", &pattern],
            COMMAND_TIMEOUT,
            MAX_RESULT_OUTPUT,
        );
        match run.result {
            RunResult::Exited(Some(0)) => ExecOutcome::new(
                true,
                format!("sent SIGTERM to {name}; its supervisor is expected to start it again"),
            ),
            RunResult::Exited(Some(1)) => ExecOutcome::new(false, format!("no process named {name}")),
            _ => ExecOutcome::new(false, run.text()),
        }
    }

    fn drop_caches() -> ExecOutcome {
        let before = mem_available_kb();
        let sync = run_command("sync", &[], COMMAND_TIMEOUT, 1024);
        let mut out = String::new();
        if !sync.success() {
            out.push_str(&format!("sync: {}\n", sync.text()));
        }
        if let Err(e) = fs::write(DROP_CACHES_PATH, "3") {
            out.push_str(&format!("cannot write 3 to {DROP_CACHES_PATH}: {e}"));
            return ExecOutcome::new(false, out);
        }
        let after = mem_available_kb();
        match (before, after) {
            (Some(b), Some(a)) => out.push_str(&format!("MemAvailable {b} kB -> {a} kB")),
            _ => out.push_str("caches dropped"),
        }
        ExecOutcome::new(true, out)
    }

    fn clean_temp(&self) -> ExecOutcome {
        if self.temp_dirs.is_empty() {
            return ExecOutcome::new(false, "recovery.temp_dirs is empty: nothing to clean");
        }
        let report = clean_temp_dirs(&self.temp_dirs, self.temp_max_age, SystemTime::now());
        ExecOutcome::new(report.errors.is_empty(), report.describe())
    }

    fn restart_network(interface: &str) -> ExecOutcome {
        if let Err(e) = valid_interface_name(interface) {
            return ExecOutcome::new(false, e);
        }
        let down = run_command(
            "ip",
            &["link", "set", "dev", interface, "down"],
            COMMAND_TIMEOUT,
            1024,
        );
        // bring it up even when down failed: never leave an interface down
        let up = run_command(
            "ip",
            &["link", "set", "dev", interface, "up"],
            COMMAND_TIMEOUT,
            1024,
        );
        let ok = down.success() && up.success();
        ExecOutcome::new(
            ok,
            format!("{interface} down: {}; up: {}", down.text(), up.text()),
        )
    }

    fn collect_diagnostics(&self) -> ExecOutcome {
        match write_diagnostics(&self.diagnostics_dir, &self.journal_units, common::time::now_ms()) {
            Ok(path) => ExecOutcome::new(true, path.display().to_string()),
            Err(e) => ExecOutcome::new(false, e),
        }
    }
}

impl Executor for SystemExecutor {
    fn execute(&self, action: &Action) -> ExecOutcome {
        match action {
            Action::RestartUnit { unit } => match valid_unit_name(unit) {
                Ok(()) => Self::command("systemctl", &["restart", "--", unit]),
                Err(e) => ExecOutcome::new(false, e),
            },
            Action::RestartProcess { name } => Self::restart_process(name),
            Action::DropCaches => Self::drop_caches(),
            Action::CleanTemp => self.clean_temp(),
            Action::RestartNetwork { interface } => Self::restart_network(interface),
            Action::Reboot => Self::command("systemctl", &["reboot"]),
            Action::CollectDiagnostics => self.collect_diagnostics(),
        }
    }
}

fn mem_available_kb() -> Option<u64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// What a temp clean did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanReport {
    pub removed_files: u64,
    pub removed_bytes: u64,
    pub skipped_symlinks: u64,
    /// At most 20.
    pub errors: Vec<String>,
}

impl CleanReport {
    fn error(&mut self, e: String) {
        if self.errors.len() < 20 {
            self.errors.push(e);
        }
    }

    pub fn describe(&self) -> String {
        let mut s = format!(
            "removed {} file(s), {} bytes; left {} symlink(s) alone",
            self.removed_files, self.removed_bytes, self.skipped_symlinks
        );
        if !self.errors.is_empty() {
            s.push_str(&format!("; errors: {}", self.errors.join("; ")));
        }
        s
    }
}

/// Removes regular files whose modification time is older than `max_age` before `now`, in
/// each directory and its subdirectories (to [`CLEAN_MAX_DEPTH`]). Never follows a symlink
/// (symlinks are left alone), never crosses into another filesystem, never removes
/// directories, and re-checks before descending that a directory still resolves inside its
/// root.
pub fn clean_temp_dirs(dirs: &[PathBuf], max_age: Duration, now: SystemTime) -> CleanReport {
    let mut report = CleanReport::default();
    let Some(cutoff) = now.checked_sub(max_age) else {
        return report;
    };
    for dir in dirs {
        if let Err(e) = valid_temp_dir(dir) {
            report.error(e);
            continue;
        }
        let root = match fs::canonicalize(dir) {
            Ok(r) => r,
            Err(e) => {
                report.error(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        if let Err(e) = valid_temp_dir(&root) {
            report.error(format!("{} resolves to {}: {e}", dir.display(), root.display()));
            continue;
        }
        let dev = match fs::metadata(&root) {
            Ok(m) if m.is_dir() => m.dev(),
            Ok(_) => {
                report.error(format!("{} is not a directory", root.display()));
                continue;
            }
            Err(e) => {
                report.error(format!("{}: {e}", root.display()));
                continue;
            }
        };
        clean_dir(&root, &root, dev, 0, cutoff, &mut report);
    }
    report
}

fn clean_dir(root: &Path, dir: &Path, dev: u64, depth: usize, cutoff: SystemTime, report: &mut CleanReport) {
    if depth > CLEAN_MAX_DEPTH {
        return;
    }
    // a directory swapped for a symlink since we looked would resolve elsewhere
    match fs::canonicalize(dir) {
        Ok(real) if real == dir && real.starts_with(root) => {}
        _ => return,
    }
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            report.error(format!("{}: {e}", dir.display()));
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(_) => continue,
        };
        let ft = meta.file_type();
        if ft.is_symlink() {
            report.skipped_symlinks += 1;
        } else if meta.dev() != dev {
            // a mount point inside the temp dir
        } else if ft.is_dir() {
            clean_dir(root, &path, dev, depth + 1, cutoff, report);
        } else if ft.is_file() && meta.modified().is_ok_and(|m| m < cutoff) {
            // remove_file unlinks the name; it never follows a symlink
            match fs::remove_file(&path) {
                Ok(()) => {
                    report.removed_files += 1;
                    report.removed_bytes += meta.len();
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => report.error(format!("{}: {e}", path.display())),
            }
        }
    }
}

/// Writes `uname -a`, `uptime`, `df -h`, `free -m` and the last journal lines of each unit to
/// a new file `diag-<ms>.txt` (mode 0600) in `dir`, keeps the newest
/// [`MAX_DIAGNOSTICS_FILES`], and returns the file's path. A command that is missing or fails
/// is noted in its section; the file is written anyway.
pub fn write_diagnostics(dir: &Path, journal_units: &[String], now_ms: i64) -> Result<PathBuf, String> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let lines = DIAGNOSTICS_JOURNAL_LINES.to_string();
    let mut commands: Vec<(String, Vec<String>)> = vec![
        ("uname".into(), vec!["-a".into()]),
        ("uptime".into(), vec![]),
        ("df".into(), vec!["-h".into()]),
        ("free".into(), vec!["-m".into()]),
    ];
    for unit in journal_units.iter().filter(|u| valid_unit_name(u).is_ok()) {
        commands.push((
            "journalctl".into(),
            vec![
                "-u".into(),
                unit.clone(),
                "-n".into(),
                lines.clone(),
                "--no-pager".into(),
            ],
        ));
    }
    let mut text = format!("rvm-agent diagnostics at {now_ms} ms since the epoch\n");
    for (program, args) in &commands {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = run_command(
            program,
            &args,
            DIAGNOSTICS_COMMAND_TIMEOUT,
            DIAGNOSTICS_SECTION_MAX,
        );
        let header: Vec<&str> = std::iter::once(program.as_str())
            .chain(args.iter().copied())
            .collect();
        text.push_str(&format!("\n== {} ==\n{}\n", header.join(" "), run.text()));
    }
    let mut file = None;
    for n in 0..10 {
        let name = match n {
            0 => format!("diag-{now_ms:013}.txt"),
            n => format!("diag-{now_ms:013}-{n}.txt"),
        };
        let path = dir.join(name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => {
                file = Some((f, path));
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
        }
    }
    let (mut f, path) = file.ok_or_else(|| format!("cannot find a free file name in {}", dir.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    prune_diagnostics(dir);
    Ok(path)
}

fn prune_diagnostics(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("diag-") && n.ends_with(".txt"))
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(MAX_DIAGNOSTICS_FILES);
    for name in &names[..excess] {
        if let Err(e) = fs::remove_file(dir.join(name)) {
            tracing::warn!(error = %e, file = %name, "old diagnostics file not removed");
        }
    }
}

#[cfg(test)]
mod tests {
    use common::CheckResult;

    use super::*;

    const S: i64 = 1000;

    fn build_health() -> HealthConfig {
        HealthConfig {
            systemd_units: vec!["vision.service".into()],
            watch_processes: vec!["vision".into()],
            ..Default::default()
        }
    }

    fn build_recovery(allow_reboot: bool) -> RecoveryConfig {
        RecoveryConfig {
            allow_reboot,
            ..Default::default()
        }
    }

    fn build_report(check: &str, status: HealthStatus) -> HealthReport {
        HealthReport {
            status,
            checks: vec![CheckResult {
                name: check.into(),
                status,
                message: format!("{check} is {status:?}"),
            }],
            actors: vec![],
        }
    }

    fn vision_restart() -> Action {
        Action::RestartUnit {
            unit: "vision.service".into(),
        }
    }

    /// The Recovery actor's loop, without threads: plan, gate, execute, record, report.
    struct Harness {
        policy: RecoveryPolicy,
        interlock: Interlock,
        executor: RecordingExecutor,
        planned: Vec<PlannedAction>,
        events: Vec<(i64, Event)>,
    }

    impl Harness {
        fn new(recovery: RecoveryConfig) -> Self {
            Self {
                policy: RecoveryPolicy::new(&recovery, &build_health()),
                interlock: Interlock::new(),
                executor: RecordingExecutor::new(),
                planned: Vec::new(),
                events: Vec::new(),
            }
        }

        fn tick(&mut self, report: &HealthReport, now_ms: i64) {
            for p in self.policy.on_health(report, now_ms) {
                self.planned.push(p.clone());
                let (outcome, detail) =
                    match self
                        .policy
                        .decide(&p.action, &Source::Local, &self.interlock, now_ms)
                    {
                        Decision::Allowed => {
                            let out = self.executor.execute(&p.action);
                            (out.outcome(), out.output)
                        }
                        Decision::Refused(reason) => (ActionOutcome::Refused, reason),
                    };
                self.policy.record_outcome(&p, outcome, now_ms);
                self.events.push((
                    now_ms,
                    event_with_origin(&p.action, outcome, detail, &p.describe()),
                ));
            }
        }

        fn outcomes(&self) -> Vec<(i64, String, ActionOutcome, String)> {
            self.events
                .iter()
                .map(|(at, e)| match &e.kind {
                    EventKind::Recovery {
                        action,
                        target,
                        outcome,
                        ..
                    } => (*at / S, action.clone(), *outcome, target.clone()),
                    other => panic!("not a recovery event: {other:?}"),
                })
                .collect()
        }
    }

    #[test]
    fn a_watched_unit_that_keeps_failing_gets_restart_restart_then_reboot_only_when_the_interlock_allows() {
        let mut h = Harness::new(build_recovery(true));
        let failing = build_report("unit:vision.service", HealthStatus::Critical);
        for t in (0..=900).step_by(10) {
            let now = t * S;
            if (200..=260).contains(&t) {
                // the vision service reports a transaction every 10 s
                h.interlock.set_busy(true, now);
            } else if t == 270 {
                h.interlock.set_busy(false, now);
            }
            h.tick(&failing, now);
        }
        assert_eq!(
            h.executor.calls(),
            vec![vision_restart(), vision_restart(), Action::Reboot],
            "the refused reboot never reached the executor"
        );
        use ActionOutcome::*;
        assert_eq!(
            h.outcomes(),
            vec![
                (0, "restart_unit".into(), Succeeded, "vision.service".into()),
                (120, "restart_unit".into(), Succeeded, "vision.service".into()),
                (240, "reboot".into(), Refused, "".into()),
                (270, "reboot".into(), Succeeded, "".into()),
            ]
        );
        let (_, refused) = &h.events[2];
        assert_eq!(refused.severity, Severity::Warning);
        match &refused.kind {
            EventKind::Recovery { detail, .. } => assert_eq!(detail, "interlock: transaction in progress"),
            k => panic!("{k:?}"),
        }
        assert_eq!(
            refused.message,
            "reboot refused: interlock: transaction in progress (ladder unit:vision.service step 3/3)"
        );
        assert_eq!(
            h.planned.iter().map(|p| p.describe()).collect::<Vec<_>>(),
            vec![
                "ladder unit:vision.service step 1/3",
                "ladder unit:vision.service step 2/3",
                "ladder unit:vision.service step 3/3",
                "ladder unit:vision.service step 3/3",
            ]
        );
    }

    #[test]
    fn reboot_is_never_planned_when_allow_reboot_is_false() {
        let mut h = Harness::new(build_recovery(false));
        let failing = build_report("unit:vision.service", HealthStatus::Critical);
        for t in (0..=7200).step_by(10) {
            h.tick(&failing, t * S);
        }
        assert!(
            h.planned.iter().all(|p| p.action != Action::Reboot),
            "{:?}",
            h.planned
        );
        assert_eq!(h.executor.calls(), vec![vision_restart(), vision_restart()]);
        assert_eq!(h.events.len(), 2);
    }

    #[test]
    fn a_failed_restart_is_a_critical_event_and_the_ladder_still_moves_on() {
        let mut h = Harness::new(build_recovery(true));
        h.executor
            .set_outcome("restart_unit", false, "Job for vision.service failed.");
        let failing = build_report("unit:vision.service", HealthStatus::Critical);
        for t in (0..=300).step_by(10) {
            h.tick(&failing, t * S);
        }
        let outcomes: Vec<_> = h.outcomes().into_iter().map(|(t, a, o, _)| (t, a, o)).collect();
        assert_eq!(
            outcomes,
            vec![
                (0, "restart_unit".into(), ActionOutcome::Failed),
                (120, "restart_unit".into(), ActionOutcome::Failed),
                (240, "reboot".into(), ActionOutcome::Succeeded),
            ]
        );
        assert_eq!(h.events[0].1.severity, Severity::Critical);
        assert_eq!(
            h.events[0].1.message,
            "restart_unit(vision.service) failed: Job for vision.service failed. \
             (ladder unit:vision.service step 1/3)"
        );
    }

    #[test]
    fn the_ladder_starts_over_only_after_the_check_was_ok_for_a_while() {
        let mut h = Harness::new(build_recovery(false));
        let failing = build_report("unit:vision.service", HealthStatus::Critical);
        let ok = build_report("unit:vision.service", HealthStatus::Ok);
        h.tick(&failing, 0);
        h.tick(&ok, 10 * S);
        h.tick(&ok, 100 * S);
        h.tick(&failing, 130 * S);
        assert_eq!(
            h.planned.last().map(|p| p.step),
            Some(1),
            "a short recovery does not reset the ladder"
        );
        h.tick(&ok, 140 * S);
        h.tick(&ok, 700 * S);
        h.tick(&ok, 740 * S);
        h.tick(&failing, 750 * S);
        assert_eq!(h.planned.len(), 3);
        assert_eq!(h.planned[2].step, 0, "ten minutes ok resets the ladder");
        assert!(h.policy.snapshot().ladders.iter().all(|l| l.next_step == 1));
    }

    #[test]
    fn a_warning_or_an_unrelated_check_plans_nothing() {
        let mut h = Harness::new(build_recovery(true));
        h.tick(&build_report("unit:vision.service", HealthStatus::Warn), 0);
        h.tick(&build_report("memory", HealthStatus::Critical), S);
        assert!(h.planned.is_empty());
    }

    #[test]
    fn the_rate_limit_refuses_the_same_action_on_the_same_target_within_the_hour() {
        let cfg = RecoveryConfig {
            max_actions_per_hour: 2,
            ..Default::default()
        };
        let mut p = RecoveryPolicy::new(&cfg, &build_health());
        let lock = Interlock::new();
        let remote = Source::Remote("c-1".into());
        assert_eq!(p.decide(&vision_restart(), &remote, &lock, 0), Decision::Allowed);
        assert_eq!(
            p.decide(&vision_restart(), &remote, &lock, 60 * S),
            Decision::Allowed
        );
        let third = p.decide(&vision_restart(), &remote, &lock, 120 * S);
        assert_eq!(
            third,
            Decision::Refused(
                "rate limit: restart_unit(vision.service) ran 2 time(s) in the last hour (max 2)".into()
            )
        );
        let other = Action::RestartProcess {
            name: "vision".into(),
        };
        assert!(
            p.decide(&other, &remote, &lock, 120 * S).is_allowed(),
            "other targets are counted apart"
        );
        assert!(
            !p.decide(&vision_restart(), &remote, &lock, 3600 * S - 1)
                .is_allowed()
        );
        assert!(p.decide(&vision_restart(), &remote, &lock, 3600 * S).is_allowed());
    }

    #[test]
    fn a_rate_limited_step_waits_for_the_limit_instead_of_retrying_every_half_minute() {
        let cfg = RecoveryConfig {
            max_actions_per_hour: 1,
            ..Default::default()
        };
        let mut h = Harness::new(cfg);
        let failing = build_report("unit:vision.service", HealthStatus::Critical);
        for t in (0..=3700).step_by(10) {
            h.tick(&failing, t * S);
        }
        let outcomes: Vec<_> = h.outcomes().into_iter().map(|(t, _, o, _)| (t, o)).collect();
        assert_eq!(
            outcomes,
            vec![
                (0, ActionOutcome::Succeeded),
                (120, ActionOutcome::Refused),
                (3600, ActionOutcome::Succeeded),
            ]
        );
    }

    #[test]
    fn reboots_are_limited_per_day_and_the_history_survives_a_restart() {
        let cfg = RecoveryConfig {
            allow_reboot: true,
            max_reboots_per_day: 1,
            ..Default::default()
        };
        let lock = Interlock::new();
        let mut before = RecoveryPolicy::new(&cfg, &build_health());
        assert!(
            before
                .decide(&Action::Reboot, &Source::Local, &lock, 0)
                .is_allowed()
        );
        let saved = before.history();
        let mut after = RecoveryPolicy::new(&cfg, &build_health());
        after.restore_history(saved, 300 * S);
        let d = after.decide(&Action::Reboot, &Source::Local, &lock, 7200 * S);
        assert_eq!(
            d,
            Decision::Refused("rate limit: 1 reboot(s) in the last 24 h (max 1)".into())
        );
        assert!(
            after
                .decide(&Action::Reboot, &Source::Local, &lock, 86_400 * S)
                .is_allowed()
        );
    }

    #[test]
    fn the_allow_list_refuses_a_disabled_action_and_never_plans_it() {
        let health = build_health();
        let cfg = RecoveryConfig {
            allowed_actions: vec!["restart_unit".into(), "collect_diagnostics".into()],
            ladder: vec![LadderRule {
                check: "memory".into(),
                steps: Some(vec!["drop_caches".into(), "collect_diagnostics".into()]),
                retry_after_s: Some(60),
                grace_s: 0,
            }],
            ..Default::default()
        };
        let mut p = RecoveryPolicy::new(&cfg, &health);
        let lock = Interlock::new();
        assert_eq!(
            p.decide(&Action::DropCaches, &Source::Remote("c-9".into()), &lock, 0),
            Decision::Refused("drop_caches is not in recovery.allowed_actions".into())
        );
        let planned = p.on_health(&build_report("memory", HealthStatus::Critical), 0);
        assert_eq!(planned.len(), 1);
        assert_eq!(planned[0].action, Action::CollectDiagnostics);
        assert_eq!(planned[0].describe(), "ladder memory step 2/2");
    }

    #[test]
    fn a_reboot_or_an_unwatched_target_is_refused_even_from_a_command() {
        let mut p = RecoveryPolicy::new(&build_recovery(false), &build_health());
        let lock = Interlock::new();
        let remote = Source::Remote("c-2".into());
        assert_eq!(
            p.decide(&Action::Reboot, &remote, &lock, 0),
            Decision::Refused("reboot needs recovery.allow_reboot = true".into())
        );
        let sshd = Action::RestartUnit {
            unit: "ssh.service".into(),
        };
        assert_eq!(
            p.decide(&sshd, &remote, &lock, 0),
            Decision::Refused(
                "unit ssh.service is not in health.systemd_units or recovery.extra_units".into()
            )
        );
        let everything = Action::RestartProcess { name: ".*".into() };
        assert!(!p.decide(&everything, &remote, &lock, 0).is_allowed());
        let net = Action::RestartNetwork {
            interface: "eth0".into(),
        };
        assert!(!p.decide(&net, &remote, &lock, 0).is_allowed());
    }

    #[test]
    fn with_recovery_disabled_nothing_is_planned_but_commands_still_pass_the_gate() {
        let cfg = RecoveryConfig {
            enabled: false,
            ..Default::default()
        };
        let mut p = RecoveryPolicy::new(&cfg, &build_health());
        let lock = Interlock::new();
        assert!(
            p.on_health(&build_report("unit:vision.service", HealthStatus::Critical), 0)
                .is_empty()
        );
        assert!(!p.decide(&vision_restart(), &Source::Local, &lock, 0).is_allowed());
        assert!(
            p.decide(&vision_restart(), &Source::Remote("c-3".into()), &lock, 0)
                .is_allowed()
        );
    }

    #[test]
    fn the_interlock_blocks_disruptive_actions_until_its_signal_is_stale() {
        let mut p = RecoveryPolicy::new(&build_recovery(true), &build_health());
        let mut lock = Interlock::new();
        let app = vec![Reading::new("fps", 30.0), Reading::new(TRANSACTION_METRIC, 1.0)];
        assert!(lock.observe_app_metrics(&app, 0));
        assert!(lock.is_busy(29_999));
        assert!(
            lock.is_busy(-1_000),
            "a clock stepped back a little keeps the signal"
        );
        assert!(
            !lock.is_busy(-INTERLOCK_STALE_AFTER_MS),
            "one stepped back far does not"
        );
        assert!(
            !lock.is_busy(INTERLOCK_STALE_AFTER_MS),
            "a silent service does not block for ever"
        );
        assert_eq!(
            p.decide(&vision_restart(), &Source::Local, &lock, 10 * S),
            Decision::Refused("interlock: transaction in progress".into())
        );
        assert!(
            p.decide(&Action::DropCaches, &Source::Local, &lock, 10 * S)
                .is_allowed(),
            "freeing caches does not disturb a transaction"
        );
        assert!(
            p.decide(&vision_restart(), &Source::Local, &lock, 30 * S)
                .is_allowed()
        );
        let t = Telemetry {
            app: vec![Reading::new(TRANSACTION_METRIC, 0.0)],
            ..Default::default()
        };
        assert!(lock.observe_telemetry(&t, 40 * S));
        assert!(!lock.is_busy(41 * S));
        assert!(!lock.observe_app_metrics(&[Reading::new("fps", 1.0)], 42 * S));
    }

    #[test]
    fn events_carry_the_action_target_outcome_and_detail() {
        let e = event_for(&vision_restart(), ActionOutcome::Succeeded, "done");
        assert_eq!(e.severity, Severity::Info);
        assert_eq!(e.message, "restart_unit(vision.service) succeeded: done");
        assert_eq!(
            e.kind,
            EventKind::Recovery {
                action: "restart_unit".into(),
                target: "vision.service".into(),
                outcome: ActionOutcome::Succeeded,
                detail: "done".into(),
            }
        );
        let long = event_for(
            &Action::CollectDiagnostics,
            ActionOutcome::Failed,
            "é".repeat(5000),
        );
        match long.kind {
            EventKind::Recovery { detail, .. } => assert!(detail.len() <= MAX_RESULT_OUTPUT),
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn output_is_bounded_at_a_character_boundary() {
        let s = bound_output("é".repeat(5000));
        assert!(s.len() <= MAX_RESULT_OUTPUT);
        assert!(s.ends_with("[truncated]"));
        assert_eq!(bound_output("short".into()), "short");
    }

    #[test]
    fn the_recording_executor_records_calls_and_answers_as_configured() {
        let ex = RecordingExecutor::new().with_outcome("reboot", false, "no");
        assert!(ex.execute(&Action::DropCaches).ok);
        let out = ex.execute(&Action::Reboot);
        assert_eq!(out, ExecOutcome::new(false, "no"));
        assert_eq!(out.outcome(), ActionOutcome::Failed);
        assert_eq!(ex.calls(), vec![Action::DropCaches, Action::Reboot]);
    }

    #[test]
    fn ladder_steps_parse_with_targets_from_the_check() {
        assert_eq!(
            parse_step("restart_unit", "unit:vision.service"),
            Ok(vision_restart())
        );
        assert_eq!(
            parse_step("restart_process:vision", "http:vision"),
            Ok(Action::RestartProcess {
                name: "vision".into()
            })
        );
        assert_eq!(parse_step("reboot", "memory"), Ok(Action::Reboot));
        assert!(parse_step("restart_unit", "memory").is_err());
        assert!(parse_step("restart_network", "broker").is_err());
        assert!(parse_step("reboot:now", "memory").is_err());
        assert!(
            parse_step("rebot", "memory")
                .unwrap_err()
                .contains("not an action")
        );
    }

    #[test]
    fn the_default_ladder_covers_every_watched_unit_without_a_rule() {
        let health = HealthConfig {
            systemd_units: vec!["vision.service".into(), "printer.service".into()],
            ..Default::default()
        };
        let cfg = RecoveryConfig {
            ladder: vec![LadderRule {
                check: "unit:printer.service".into(),
                steps: Some(vec![]),
                retry_after_s: None,
                grace_s: 0,
            }],
            ..Default::default()
        };
        let ladders = cfg.ladders(&health);
        assert_eq!(ladders.len(), 2);
        assert_eq!(ladders[0].check, "unit:printer.service");
        assert!(ladders[0].steps.is_empty(), "an empty rule opts a unit out");
        assert_eq!(ladders[1].check, "unit:vision.service");
        assert_eq!(
            ladders[1].steps,
            vec![vision_restart(), vision_restart(), Action::Reboot]
        );
        assert_eq!(ladders[1].retry_after_ms, 120_000);
    }

    #[test]
    fn the_section_parses_with_defaults_and_every_bad_value_is_named() {
        let cfg: RecoveryConfig = toml::from_str("").unwrap();
        assert_eq!(cfg, RecoveryConfig::default());
        assert!(cfg.validate("recovery", &build_health()).is_empty());
        assert_eq!(cfg.allowed_actions.len(), 7);
        assert!(!cfg.allow_reboot);

        let text = r#"
allowed_actions = ["restart_unit", "rebot"]
temp_dirs = ["/", "relative", "/tmp/rvm"]
diagnostics_dir = "diag"
max_actions_per_hour = 0
retry_after_s = 1
network_interfaces = ["eth0; rm"]
[[ladder]]
check = "unit:unwatched.service"
[[ladder]]
check = "memory"
[[ladder]]
check = "http:vision"
steps = ["restart_process", "drop_caches:x"]
"#;
        let cfg: RecoveryConfig = toml::from_str(text).unwrap();
        let problems = cfg.validate("recovery", &build_health());
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for k in [
            "recovery.allowed_actions[1]",
            "recovery.temp_dirs[0]",
            "recovery.temp_dirs[1]",
            "recovery.diagnostics_dir",
            "recovery.max_actions_per_hour",
            "recovery.retry_after_s",
            "recovery.network_interfaces[0]",
            "recovery.ladder[0].check",
            "recovery.ladder[1].steps",
            "recovery.ladder[2].check",
            "recovery.ladder[2].steps[0]",
            "recovery.ladder[2].steps[1]",
        ] {
            assert!(keys.contains(&k), "{k} missing from {problems:?}");
        }
        assert!(!keys.contains(&"recovery.temp_dirs[2]"));
        let err = toml::from_str::<RecoveryConfig>("allow_reboots = true").unwrap_err();
        assert!(err.to_string().contains("allow_reboots"), "{err}");
    }

    fn set_age(path: &Path, age: Duration) {
        let f = OpenOptions::new().write(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
    }

    #[test]
    fn clean_temp_removes_only_old_files_inside_the_dir_and_does_not_follow_a_symlink_out() {
        let day = Duration::from_secs(86_400);
        let temp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = temp.path();
        fs::write(root.join("old.bin"), vec![0u8; 100]).unwrap();
        set_age(&root.join("old.bin"), 2 * day);
        fs::write(root.join("new.bin"), "x").unwrap();
        fs::create_dir(root.join("sub")).unwrap();
        fs::write(root.join("sub/old.txt"), "x").unwrap();
        set_age(&root.join("sub/old.txt"), 2 * day);
        fs::write(outside.path().join("precious"), "keep").unwrap();
        set_age(&outside.path().join("precious"), 2 * day);
        std::os::unix::fs::symlink(outside.path(), root.join("link-dir")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("precious"), root.join("link-file")).unwrap();

        let report = clean_temp_dirs(&[root.to_path_buf()], day, SystemTime::now());
        assert_eq!(report.removed_files, 2, "{report:?}");
        assert_eq!(report.removed_bytes, 101);
        assert_eq!(report.skipped_symlinks, 2);
        assert!(report.errors.is_empty(), "{report:?}");
        assert!(!root.join("old.bin").exists());
        assert!(!root.join("sub/old.txt").exists());
        assert!(root.join("new.bin").exists());
        assert!(root.join("sub").is_dir(), "directories stay");
        assert!(
            outside.path().join("precious").exists(),
            "nothing outside is touched"
        );
        assert!(fs::symlink_metadata(root.join("link-file")).is_ok());
    }

    #[test]
    fn clean_temp_refuses_system_directories_and_reports_missing_ones() {
        let report = clean_temp_dirs(
            &[PathBuf::from("/etc"), PathBuf::from("/nonexistent-rvm-temp")],
            Duration::from_secs(3600),
            SystemTime::now(),
        );
        assert_eq!(report.removed_files, 0);
        assert_eq!(report.errors.len(), 2, "{report:?}");
        assert!(report.errors[0].contains("system directory"));
    }

    #[test]
    fn the_system_executor_cleans_its_configured_temp_dirs() {
        let temp = tempfile::tempdir().unwrap();
        fs::write(temp.path().join("old"), "x").unwrap();
        set_age(&temp.path().join("old"), Duration::from_secs(7200));
        let cfg = RecoveryConfig {
            temp_dirs: vec![temp.path().to_path_buf()],
            temp_max_age_h: 1,
            ..Default::default()
        };
        let out = SystemExecutor::new(&cfg, vec![]).execute(&Action::CleanTemp);
        assert!(out.ok, "{}", out.output);
        assert!(out.output.starts_with("removed 1 file(s)"), "{}", out.output);
        let none = SystemExecutor::new(&RecoveryConfig::default(), vec![]).execute(&Action::CleanTemp);
        assert!(!none.ok);
    }

    #[test]
    fn the_system_executor_refuses_bad_names_without_running_anything() {
        let ex = SystemExecutor::new(&RecoveryConfig::default(), vec![]);
        let out = ex.execute(&Action::RestartUnit { unit: "--all".into() });
        assert!(
            !out.ok && out.output.contains("not a systemd unit name"),
            "{}",
            out.output
        );
        let out = ex.execute(&Action::RestartProcess { name: ".*".into() });
        assert!(
            !out.ok && out.output.contains("not a process name"),
            "{}",
            out.output
        );
        let out = ex.execute(&Action::RestartNetwork {
            interface: "eth0 down".into(),
        });
        assert!(
            !out.ok && out.output.contains("not an interface name"),
            "{}",
            out.output
        );
    }

    #[test]
    fn diagnostics_are_written_to_a_private_file_and_old_ones_pruned() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let diag = dir.path().join("diag");
        for i in 0..MAX_DIAGNOSTICS_FILES {
            let d = diag.join(format!("diag-{i:013}.txt"));
            fs::create_dir_all(&diag).unwrap();
            fs::write(d, "old").unwrap();
        }
        let path = write_diagnostics(&diag, &["rvm-test-none.service".into()], 1_700_000_000_000).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        for section in ["== uname -a ==", "== uptime ==", "== df -h ==", "== free -m =="] {
            assert!(text.contains(section), "{section} missing from {text}");
        }
        assert!(text.contains("== journalctl -u rvm-test-none.service -n 200 --no-pager =="));
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(&diag).unwrap().count(), MAX_DIAGNOSTICS_FILES);
        assert!(
            !diag.join(format!("diag-{:013}.txt", 0)).exists(),
            "the oldest went"
        );
    }
}
