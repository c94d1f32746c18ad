//! The `[recovery]` section of `agent.toml`: what may run, on what, how often, and the ladders
//! (`[[recovery.ladder]]`), with step parsing and validation that names every bad key.

use std::collections::HashSet;
use std::path::PathBuf;

use common::command::Action;
use serde::Deserialize;

use super::clean::valid_temp_dir;
use crate::health::camera::{Aspect, parse_check_name};
use crate::health::config::HealthConfig;
use crate::shared::names::{
    NameError, valid_camera_name, valid_interface_name, valid_process_name, valid_unit_name,
};
use crate::shared::problem::ConfigProblem;

/// Every action name, in the order of [`Action`].
pub const ALL_ACTIONS: [&str; 8] = [
    "restart_unit",
    "restart_process",
    "drop_caches",
    "clean_temp",
    "restart_network",
    "reboot",
    "collect_diagnostics",
    "reset_camera",
];

/// In `camera_reset_command`, replaced by the camera's name.
pub const CAMERA_PLACEHOLDER: &str = "{camera}";

/// The `[recovery]` section of `agent.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoveryConfig {
    /// Local, automatic recovery (the ladders). Remote commands are governed by
    /// `allowed_actions` alone, so an operator can still act on a machine with this off.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Action names that may run at all (default: all eight).
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
    /// The vision service's unit: the first step of a camera ladder restarts it (it must be
    /// in `health.systemd_units` or `extra_units`). Unset: camera ladders start at the reset.
    #[serde(default)]
    pub vision_unit: Option<String>,
    /// The program and arguments that reset a USB camera (`usbreset`, an unbind/bind
    /// script), run without a shell; `{camera}` in an argument is replaced by the camera's
    /// name. Empty: `reset_camera` is never planned and refused when asked for.
    #[serde(default)]
    pub camera_reset_command: Vec<String>,
    /// A camera whose frames go stale (`camera:NAME:frames`) or whose picture freezes
    /// (`camera:NAME:frozen`) gets the ladder: restart `vision_unit`, reset the camera, then
    /// escalate (one critical `escalate` event, which the server's `recovery_failed` rule
    /// pages), each step `retry_after_s` after the last.
    #[serde(default = "default_true")]
    pub camera_ladder: bool,
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
            vision_unit: None,
            camera_reset_command: Vec::new(),
            camera_ladder: true,
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
    /// Still critical `retry_after_s` after the last step: one critical `escalate` event.
    #[serde(default)]
    pub escalate: bool,
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
pub(super) fn default_retry_after_s() -> u64 {
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
    /// After the last step, if the check is still critical: escalate once.
    pub escalate: bool,
}

pub(super) fn secs_to_ms(s: u64) -> i64 {
    i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// A ladder step that does not parse; each variant carries the step as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    #[error("{step:?}: name the unit (restart_unit:NAME) or use it on a unit:NAME check")]
    NoUnit { step: String },
    #[error("{step:?}: name the process (restart_process:NAME) or use it on a process:NAME check")]
    NoProcess { step: String },
    #[error("{step:?}: name the interface (restart_network:eth0)")]
    NoInterface { step: String },
    #[error("{step:?}: name the camera (reset_camera:NAME) or use it on a camera:NAME:ASPECT check")]
    NoCamera { step: String },
    #[error("{step:?}: {action} takes no target")]
    TakesNoTarget { step: String, action: String },
    #[error("{0:?} is not an action (one of {all})", all = ALL_ACTIONS.join(", "))]
    UnknownAction(String),
    #[error(transparent)]
    Name(#[from] NameError),
}

/// Parses one ladder step for `check`.
pub fn parse_step(step: &str, check: &str) -> Result<Action, StepError> {
    let (name, target) = match step.split_once(':') {
        Some((n, t)) => (n.trim(), Some(t.trim())),
        None => (step.trim(), None),
    };
    let from_check = |prefix: &str| check.strip_prefix(prefix).filter(|t| !t.is_empty());
    let action = match name {
        "restart_unit" => {
            let unit = target
                .or_else(|| from_check("unit:"))
                .ok_or_else(|| StepError::NoUnit { step: step.into() })?;
            valid_unit_name(unit)?;
            Action::RestartUnit { unit: unit.into() }
        }
        "restart_process" => {
            let name = target
                .or_else(|| from_check("process:"))
                .ok_or_else(|| StepError::NoProcess { step: step.into() })?;
            valid_process_name(name)?;
            Action::RestartProcess { name: name.into() }
        }
        "restart_network" => {
            let iface = target.ok_or_else(|| StepError::NoInterface { step: step.into() })?;
            valid_interface_name(iface)?;
            Action::RestartNetwork {
                interface: iface.into(),
            }
        }
        "reset_camera" => {
            let camera = target
                .or_else(|| parse_check_name(check).map(|(camera, _)| camera))
                .ok_or_else(|| StepError::NoCamera { step: step.into() })?;
            valid_camera_name(camera)?;
            Action::ResetCamera {
                camera: camera.into(),
            }
        }
        "drop_caches" | "clean_temp" | "reboot" | "collect_diagnostics" if target.is_some() => {
            return Err(StepError::TakesNoTarget {
                step: step.into(),
                action: name.into(),
            });
        }
        "drop_caches" => Action::DropCaches,
        "clean_temp" => Action::CleanTemp,
        "reboot" => Action::Reboot,
        "collect_diagnostics" => Action::CollectDiagnostics,
        other => {
            return Err(StepError::UnknownAction(other.into()));
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
                escalate: rule.escalate,
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
                    escalate: false,
                });
            }
        }
        out
    }

    /// The camera ladder for a check, when `camera_ladder` covers it (`camera:NAME:frames` or
    /// `camera:NAME:frozen`) and no `[[recovery.ladder]]` names the check: restart
    /// `vision_unit` (when set), reset the camera, escalate. Camera names are only known at
    /// run time, so the policy asks for these as the checks appear.
    pub fn camera_ladder_for(&self, check: &str) -> Option<Ladder> {
        if !self.camera_ladder || self.ladder.iter().any(|r| r.check == check) {
            return None;
        }
        let (camera, aspect) = parse_check_name(check)?;
        if !matches!(aspect, Aspect::Frames | Aspect::Frozen) {
            return None;
        }
        let mut steps = Vec::new();
        if let Some(unit) = self.vision_unit.as_ref().filter(|u| valid_unit_name(u).is_ok()) {
            steps.push(Action::RestartUnit { unit: unit.clone() });
        }
        steps.push(Action::ResetCamera {
            camera: camera.into(),
        });
        Some(Ladder {
            check: check.into(),
            steps,
            retry_after_ms: secs_to_ms(self.retry_after_s),
            grace_ms: 0,
            escalate: true,
        })
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
                bad(format!("{prefix}.extra_units[{i}]"), e.to_string());
            }
        }
        for (i, n) in self.extra_processes.iter().enumerate() {
            if let Err(e) = valid_process_name(n) {
                bad(format!("{prefix}.extra_processes[{i}]"), e.to_string());
            }
        }
        for (i, n) in self.network_interfaces.iter().enumerate() {
            if let Err(e) = valid_interface_name(n) {
                bad(format!("{prefix}.network_interfaces[{i}]"), e.to_string());
            }
        }
        for (i, d) in self.temp_dirs.iter().enumerate() {
            if let Err(e) = valid_temp_dir(d) {
                bad(format!("{prefix}.temp_dirs[{i}]"), e.to_string());
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
        if let Some(unit) = &self.vision_unit {
            if let Err(e) = valid_unit_name(unit) {
                bad(format!("{prefix}.vision_unit"), e.to_string());
            } else if !health.systemd_units.contains(unit) && !self.extra_units.contains(unit) {
                bad(
                    format!("{prefix}.vision_unit"),
                    format!(
                        "{unit:?} is in neither health.systemd_units nor recovery.extra_units, so it may not be restarted"
                    ),
                );
            }
        }
        if let Some((program, args)) = self.camera_reset_command.split_first() {
            if !program.starts_with('/') {
                bad(
                    format!("{prefix}.camera_reset_command[0]"),
                    format!("{program:?} is not an absolute path to a program"),
                );
            }
            for (i, a) in args.iter().enumerate() {
                if a.is_empty() || a.chars().any(char::is_control) {
                    bad(
                        format!("{prefix}.camera_reset_command[{}]", i + 1),
                        format!("{a:?} is not a usable argument"),
                    );
                }
            }
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
                            bad(format!("{key}.steps[{j}]"), e.to_string());
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
#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::policy::tests::{build_health, vision_restart};

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
                .to_string()
                .contains("not an action")
        );
    }

    #[test]
    fn a_bad_step_target_is_refused_with_the_name_error() {
        assert_eq!(
            parse_step("restart_unit:bad name", "memory"),
            Err(StepError::Name(NameError::Unit("bad name".into())))
        );
        assert_eq!(
            parse_step("reboot:now", "memory").unwrap_err().to_string(),
            r#""reboot:now": reboot takes no target"#
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
                escalate: false,
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
        assert_eq!(cfg.allowed_actions.len(), ALL_ACTIONS.len());
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

    #[test]
    fn camera_recovery_keys_are_checked_and_named() {
        let text = r#"
vision_unit = "unwatched.service"
camera_reset_command = ["usbreset", "", "{camera}"]
[[ladder]]
check = "camera:front:frozen"
steps = ["reset_camera", "reset_camera:-x", "reset_camera:side"]
escalate = true
"#;
        let cfg: RecoveryConfig = toml::from_str(text).unwrap();
        let keys: Vec<String> = cfg
            .validate("recovery", &build_health())
            .into_iter()
            .map(|p| p.key)
            .collect();
        assert_eq!(
            keys,
            [
                "recovery.vision_unit",
                "recovery.camera_reset_command[0]",
                "recovery.camera_reset_command[1]",
                "recovery.ladder[0].steps[1]",
            ]
        );
        let ladders = cfg.ladders(&build_health());
        assert_eq!(
            ladders[0].steps,
            vec![
                Action::ResetCamera {
                    camera: "front".into()
                },
                Action::ResetCamera {
                    camera: "side".into()
                }
            ]
        );
        assert!(ladders[0].escalate);
        assert_eq!(
            parse_step("reset_camera", "memory"),
            Err(StepError::NoCamera {
                step: "reset_camera".into()
            })
        );
    }

    #[test]
    fn a_camera_ladder_restarts_the_vision_unit_then_resets_the_camera_then_escalates() {
        let cfg = RecoveryConfig {
            vision_unit: Some("vision.service".into()),
            ..Default::default()
        };
        let l = cfg.camera_ladder_for("camera:front:frozen").unwrap();
        assert_eq!(
            l.steps,
            vec![
                vision_restart(),
                Action::ResetCamera {
                    camera: "front".into()
                }
            ]
        );
        assert!(l.escalate);
        assert!(cfg.camera_ladder_for("camera:front:frames").is_some());
        // a covered lens or a slow model needs a person, not a restart
        assert!(cfg.camera_ladder_for("camera:front:covered").is_none());
        assert!(cfg.camera_ladder_for("camera:front:fps").is_none());
        assert!(cfg.camera_ladder_for("camera").is_none());
        let off = RecoveryConfig {
            camera_ladder: false,
            ..cfg.clone()
        };
        assert!(off.camera_ladder_for("camera:front:frozen").is_none());
        let own = RecoveryConfig {
            ladder: vec![LadderRule {
                check: "camera:front:frozen".into(),
                steps: Some(vec![]),
                retry_after_s: None,
                grace_s: 0,
                escalate: false,
            }],
            ..cfg
        };
        assert!(
            own.camera_ladder_for("camera:front:frozen").is_none(),
            "its own rule wins"
        );
    }
}
