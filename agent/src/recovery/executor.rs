//! Executors (IO): what carries an allowed action out. [`SystemExecutor`] runs it on this
//! machine (systemctl, pkill, ip, `/proc/sys/vm/drop_caches`, the temp cleaner, the
//! diagnostics writer); [`RecordingExecutor`] records it, for tests. Blocking: the actor runs
//! them on a blocking thread.

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use common::ActionOutcome;
use common::command::{Action, MAX_RESULT_OUTPUT};

use super::clean::clean_temp_dirs;
use super::config::{CAMERA_PLACEHOLDER, RecoveryConfig};
use super::diagnostics::write_diagnostics;
use super::events::bound_output;
use crate::shared::names::{valid_camera_name, valid_interface_name, valid_process_name, valid_unit_name};
use crate::shared::subprocess::{RunResult, run_command};

/// Longest any recovery command may run (systemd's default start timeout is 90 s).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);
/// Where `drop_caches` writes.
pub const DROP_CACHES_PATH: &str = "/proc/sys/vm/drop_caches";

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
    camera_reset_command: Vec<String>,
}

impl SystemExecutor {
    /// `journal_units`: the units whose journal goes into diagnostics (`health.systemd_units`).
    pub fn new(cfg: &RecoveryConfig, journal_units: Vec<String>) -> Self {
        Self {
            temp_dirs: cfg.temp_dirs.clone(),
            temp_max_age: Duration::from_secs(cfg.temp_max_age_h.saturating_mul(3600)),
            diagnostics_dir: cfg.diagnostics_dir.clone(),
            journal_units,
            camera_reset_command: cfg.camera_reset_command.clone(),
        }
    }

    fn command(program: &str, args: &[&str]) -> ExecOutcome {
        let run = run_command(program, args, COMMAND_TIMEOUT, MAX_RESULT_OUTPUT);
        ExecOutcome::new(run.success(), run.text())
    }

    fn restart_process(name: &str) -> ExecOutcome {
        if let Err(e) = valid_process_name(name) {
            return ExecOutcome::new(false, e.to_string());
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
            return ExecOutcome::new(false, e.to_string());
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

    /// Runs `camera_reset_command` (no shell) with `{camera}` replaced by the camera's name.
    fn reset_camera(&self, camera: &str) -> ExecOutcome {
        if let Err(e) = valid_camera_name(camera) {
            return ExecOutcome::new(false, e.to_string());
        }
        let Some((program, args)) = self.camera_reset_command.split_first() else {
            return ExecOutcome::new(false, "recovery.camera_reset_command is not set");
        };
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace(CAMERA_PLACEHOLDER, camera))
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::command(program, &args)
    }

    fn collect_diagnostics(&self) -> ExecOutcome {
        match write_diagnostics(&self.diagnostics_dir, &self.journal_units, common::time::now_ms()) {
            Ok(path) => ExecOutcome::new(true, path.display().to_string()),
            Err(e) => ExecOutcome::new(false, e.to_string()),
        }
    }
}

impl Executor for SystemExecutor {
    fn execute(&self, action: &Action) -> ExecOutcome {
        match action {
            Action::RestartUnit { unit } => match valid_unit_name(unit) {
                Ok(()) => Self::command("systemctl", &["restart", "--", unit]),
                Err(e) => ExecOutcome::new(false, e.to_string()),
            },
            Action::RestartProcess { name } => Self::restart_process(name),
            Action::DropCaches => Self::drop_caches(),
            Action::CleanTemp => self.clean_temp(),
            Action::RestartNetwork { interface } => Self::restart_network(interface),
            Action::Reboot => Self::command("systemctl", &["reboot"]),
            Action::CollectDiagnostics => self.collect_diagnostics(),
            Action::ResetCamera { camera } => self.reset_camera(camera),
        }
    }
}

fn mem_available_kb() -> Option<u64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::clean::tests::set_age;

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
    fn the_system_executor_resets_a_camera_with_the_configured_command_and_its_name() {
        let cfg = RecoveryConfig {
            camera_reset_command: vec!["/bin/echo".into(), "reset".into(), "usb-{camera}".into()],
            ..Default::default()
        };
        let ex = SystemExecutor::new(&cfg, vec![]);
        let out = ex.execute(&Action::ResetCamera {
            camera: "front".into(),
        });
        assert!(out.ok, "{}", out.output);
        assert!(out.output.contains("reset usb-front"), "{}", out.output);
        let out = ex.execute(&Action::ResetCamera {
            camera: "--all".into(),
        });
        assert!(
            !out.ok && out.output.contains("not a camera name"),
            "{}",
            out.output
        );
        let unset = SystemExecutor::new(&RecoveryConfig::default(), vec![]).execute(&Action::ResetCamera {
            camera: "front".into(),
        });
        assert!(!unset.ok && unset.output.contains("camera_reset_command is not set"));
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
}
