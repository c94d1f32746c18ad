//! The `[health]` section of `agent.toml`: thresholds, what to watch, and how often to report.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use common::HealthStatus;
use serde::{Deserialize, Serialize};

use crate::shared::http::check_url;
use crate::shared::names::{valid_process_name, valid_unit_name};
use crate::shared::problem::ConfigProblem;

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
    /// Camera and vision health from the vision service's per-camera figures
    /// (`[health.vision]`, decided by the `camera` module).
    #[serde(default)]
    pub vision: VisionHealthConfig,
}

/// `[health.vision]`: when the per-camera figures of the vision service (docs/camera-health.md)
/// make a camera check fail. Times in seconds; the `camera` module describes each decision.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisionHealthConfig {
    /// Judge the cameras at all (no camera figures: no camera checks either way).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The last frame older than this (or no figures for a known camera this long): stale.
    #[serde(default = "default_stale_after_s")]
    pub stale_after_s: u64,
    /// The same frame hash this long while frames keep coming: a frozen picture.
    #[serde(default = "default_frozen_after_s")]
    pub frozen_after_s: u64,
    /// Mean luminance (0-255) below this ...
    #[serde(default = "default_dark_luma")]
    pub dark_luma: f64,
    /// ... for this long: a black or covered lens.
    #[serde(default = "default_dark_after_s")]
    pub dark_after_s: u64,
    /// Inference fps below this fraction of the camera's own baseline ...
    #[serde(default = "default_fps_min_ratio")]
    pub fps_min_ratio: f64,
    /// ... for this long: a warning.
    #[serde(default = "default_fps_low_after_s")]
    pub fps_low_after_s: u64,
    /// Mean detection confidence (0-1) further than this from its baseline, either way ...
    #[serde(default = "default_confidence_max_drift")]
    pub confidence_max_drift: f64,
    /// ... for this long: a warning.
    #[serde(default = "default_confidence_after_s")]
    pub confidence_after_s: u64,
    /// Healthy seconds a baseline must learn before fps and confidence are judged.
    #[serde(default = "default_warmup_s")]
    pub warmup_s: u64,
    /// Time constant of the baselines' moving average once warm.
    #[serde(default = "default_baseline_tau_s")]
    pub baseline_tau_s: u64,
    /// A known camera without figures this long is forgotten (its checks go away).
    #[serde(default = "default_forget_after_s")]
    pub forget_after_s: u64,
    /// fps or confidence off its baseline this long becomes the new normal: the baseline is
    /// learned again (a new model, a new camera, a new lighting).
    #[serde(default = "default_relearn_after_s")]
    pub relearn_after_s: u64,
}

impl Default for VisionHealthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            stale_after_s: default_stale_after_s(),
            frozen_after_s: default_frozen_after_s(),
            dark_luma: default_dark_luma(),
            dark_after_s: default_dark_after_s(),
            fps_min_ratio: default_fps_min_ratio(),
            fps_low_after_s: default_fps_low_after_s(),
            confidence_max_drift: default_confidence_max_drift(),
            confidence_after_s: default_confidence_after_s(),
            warmup_s: default_warmup_s(),
            baseline_tau_s: default_baseline_tau_s(),
            forget_after_s: default_forget_after_s(),
            relearn_after_s: default_relearn_after_s(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_stale_after_s() -> u64 {
    10
}
fn default_frozen_after_s() -> u64 {
    60
}
fn default_dark_luma() -> f64 {
    12.0
}
fn default_dark_after_s() -> u64 {
    30
}
fn default_fps_min_ratio() -> f64 {
    0.5
}
fn default_fps_low_after_s() -> u64 {
    60
}
fn default_confidence_max_drift() -> f64 {
    0.15
}
fn default_confidence_after_s() -> u64 {
    300
}
fn default_warmup_s() -> u64 {
    600
}
fn default_baseline_tau_s() -> u64 {
    3600
}
fn default_forget_after_s() -> u64 {
    86_400
}
fn default_relearn_after_s() -> u64 {
    86_400
}

impl VisionHealthConfig {
    /// Every problem, each with its key path under `prefix` (`health.vision`).
    pub fn validate(&self, prefix: &str) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        let mut bad = |key: &str, message: String| {
            p.push(ConfigProblem {
                key: format!("{prefix}.{key}"),
                message,
            })
        };
        for (key, v, lo, hi) in [
            ("stale_after_s", self.stale_after_s, 1, 3_600),
            ("frozen_after_s", self.frozen_after_s, 1, 86_400),
            ("dark_after_s", self.dark_after_s, 0, 86_400),
            ("fps_low_after_s", self.fps_low_after_s, 0, 86_400),
            ("confidence_after_s", self.confidence_after_s, 0, 86_400),
            ("warmup_s", self.warmup_s, 1, 7 * 86_400),
            ("baseline_tau_s", self.baseline_tau_s, 1, 30 * 86_400),
            ("forget_after_s", self.forget_after_s, 60, 30 * 86_400),
            ("relearn_after_s", self.relearn_after_s, 3_600, 30 * 86_400),
        ] {
            if !(lo..=hi).contains(&v) {
                bad(key, format!("{v} is outside {lo}..={hi}"));
            }
        }
        if !(self.dark_luma.is_finite() && (0.0..=255.0).contains(&self.dark_luma)) {
            bad("dark_luma", format!("{} is outside 0..=255", self.dark_luma));
        }
        if !(self.fps_min_ratio.is_finite() && self.fps_min_ratio > 0.0 && self.fps_min_ratio < 1.0) {
            bad(
                "fps_min_ratio",
                format!(
                    "{} is outside (0, 1): a fraction of the baseline",
                    self.fps_min_ratio
                ),
            );
        }
        if !(self.confidence_max_drift.is_finite()
            && self.confidence_max_drift > 0.0
            && self.confidence_max_drift < 1.0)
        {
            bad(
                "confidence_max_drift",
                format!("{} is outside (0, 1)", self.confidence_max_drift),
            );
        }
        if self.forget_after_s <= self.stale_after_s {
            bad(
                "forget_after_s",
                format!(
                    "{} must be longer than stale_after_s ({}), or a stale camera is forgotten first",
                    self.forget_after_s, self.stale_after_s
                ),
            );
        }
        p
    }
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
            vision: VisionHealthConfig::default(),
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
    /// `http://host[:port]/path` or `https://...`.
    pub url: String,
    #[serde(default = "default_http_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_expect_status")]
    pub expect_status: u16,
    /// For `https://`: trust only the certificates in this PEM file (a service with a private
    /// CA). Unset: the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
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
                bad(key, e.to_string());
            } else if !seen.insert(name) {
                bad(key, format!("{name:?} is listed twice"));
            }
        }
        let mut seen = HashSet::new();
        for (i, unit) in self.systemd_units.iter().enumerate() {
            let key = format!("{prefix}.systemd_units[{i}]");
            if let Err(e) = valid_unit_name(unit) {
                bad(key, e.to_string());
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
            if let Err(e) = check_url(&c.url) {
                bad(format!("{key}.url"), e.to_string());
            }
            if let Some(path) = &c.ca_file
                && !path.exists()
            {
                bad(
                    format!("{key}.ca_file"),
                    format!("{} does not exist", path.display()),
                );
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
            bad(format!("{prefix}.camera_glob"), e.to_string());
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
        p.extend(self.vision.validate(&format!("{prefix}.vision")));
        p
    }
}

/// Why a camera glob cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GlobError {
    #[error("{0:?} is not an absolute path pattern like /dev/video*")]
    NotAbsolute(String),
    #[error("{0:?}: wildcards are allowed in the last component only")]
    WildcardInDirectory(String),
    #[error("{0:?}: the last component must be a name with * or ? wildcards")]
    BadLastComponent(String),
}

/// Splits a camera glob into its directory and the pattern of its last component.
pub(super) fn split_glob(glob: &str) -> Result<(&Path, &str), GlobError> {
    let (dir, pattern) = glob
        .rsplit_once('/')
        .ok_or_else(|| GlobError::NotAbsolute(glob.to_string()))?;
    if !glob.starts_with('/') {
        return Err(GlobError::NotAbsolute(glob.to_string()));
    }
    if dir.contains(['*', '?', '[']) {
        return Err(GlobError::WildcardInDirectory(glob.to_string()));
    }
    if pattern.is_empty() || pattern.contains('[') {
        return Err(GlobError::BadLastComponent(glob.to_string()));
    }
    Ok((Path::new(if dir.is_empty() { "/" } else { dir }), pattern))
}
#[cfg(test)]
mod tests {
    use super::*;

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
url = "ftp://localhost/health"
timeout_ms = 0
expect_status = 42
ca_file = "/nonexistent/ca.pem"
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
            "health.http_checks[0].ca_file",
        ] {
            assert!(keys.contains(&k.to_string()), "{k} missing from {keys:?}");
        }
        assert!(!keys.contains(&"health.systemd_units[1]".to_string()));
    }

    #[test]
    fn the_vision_section_has_defaults_and_every_bad_value_is_named() {
        let cfg: HealthConfig = toml::from_str("[vision]\n").unwrap();
        assert_eq!(cfg.vision, VisionHealthConfig::default());
        assert!(cfg.validate("health").is_empty());
        let text = r#"
[vision]
stale_after_s = 0
frozen_after_s = 100000
dark_luma = 300
fps_min_ratio = 1.5
confidence_max_drift = 0
warmup_s = 0
forget_after_s = 60
"#;
        let cfg: HealthConfig = toml::from_str(text).unwrap();
        let keys: Vec<String> = cfg.validate("health").into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            vec![
                "health.vision.stale_after_s",
                "health.vision.frozen_after_s",
                "health.vision.warmup_s",
                "health.vision.dark_luma",
                "health.vision.fps_min_ratio",
                "health.vision.confidence_max_drift",
            ]
        );
        let cfg = VisionHealthConfig {
            stale_after_s: 120,
            forget_after_s: 120,
            ..Default::default()
        };
        assert_eq!(cfg.validate("v")[0].key, "v.forget_after_s");
        let err = toml::from_str::<HealthConfig>("[vision]\nstale_after = 5").unwrap_err();
        assert!(err.to_string().contains("stale_after"), "{err}");
    }

    #[test]
    fn an_unknown_key_in_the_section_is_an_error_naming_it() {
        let err = toml::from_str::<HealthConfig>("watch_process = [\"x\"]").unwrap_err();
        assert!(err.to_string().contains("watch_process"), "{err}");
        let cfg: HealthConfig = toml::from_str("").unwrap();
        assert_eq!(cfg, HealthConfig::default());
    }
}
