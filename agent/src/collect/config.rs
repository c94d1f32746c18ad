//! The `[collector]` and `[paths]` sections of `agent.toml`: how often and how the machine is
//! read, and where its pseudo-filesystems are.

use std::path::PathBuf;

use serde::Deserialize;

use crate::collect::gpu::GpuChoice;
use crate::shared::problem::ConfigProblem;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorSection {
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// `auto` (Jetson sysfs -> tegrastats -> NVML -> none), or one of them.
    #[serde(default)]
    pub gpu_backend: GpuChoice,
    /// `{ms}` is replaced by the interval.
    #[serde(default = "default_tegrastats")]
    pub tegrastats_command: String,
    /// How often the full process table is scanned (watched processes are read every tick).
    #[serde(default = "default_scan_ms")]
    pub process_scan_interval_ms: u64,
}

impl Default for CollectorSection {
    fn default() -> Self {
        Self {
            interval_ms: default_interval_ms(),
            gpu_backend: Default::default(),
            tegrastats_command: default_tegrastats(),
            process_scan_interval_ms: default_scan_ms(),
        }
    }
}

fn default_interval_ms() -> u64 {
    1000
}
fn default_tegrastats() -> String {
    "tegrastats --interval {ms}".into()
}
fn default_scan_ms() -> u64 {
    10_000
}

impl CollectorSection {
    /// Every problem, each with its key path under `prefix` (`collector`).
    pub fn validate(&self, prefix: &str) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        let mut bad = |key: &str, message: String| {
            p.push(ConfigProblem {
                key: format!("{prefix}.{key}"),
                message,
            })
        };
        if !(10..=3_600_000).contains(&self.interval_ms) {
            bad(
                "interval_ms",
                format!("{} is outside 10..=3600000", self.interval_ms),
            );
        }
        if self.process_scan_interval_ms < 1000 {
            bad(
                "process_scan_interval_ms",
                format!(
                    "{} is below 1000 (a full scan costs ~50 µs per process)",
                    self.process_scan_interval_ms
                ),
            );
        }
        if self.tegrastats_command.trim().is_empty() {
            bad("tegrastats_command", "is empty".into());
        }
        p
    }
}

/// Where the machine's pseudo-filesystems are (as node_exporter's `--path.sysfs`), so the
/// Jetson backend can be pointed at a fake tree.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathsSection {
    #[serde(default = "default_sysfs")]
    pub sysfs: PathBuf,
    #[serde(default = "default_procfs")]
    pub procfs: PathBuf,
    /// Root of `etc/nv_tegra_release`, `etc/nvpmodel.conf`, `var/lib/nvpmodel/status`.
    #[serde(default = "default_etc_root")]
    pub etc_root: PathBuf,
}

impl Default for PathsSection {
    fn default() -> Self {
        Self {
            sysfs: default_sysfs(),
            procfs: default_procfs(),
            etc_root: default_etc_root(),
        }
    }
}

fn default_sysfs() -> PathBuf {
    PathBuf::from("/sys")
}
fn default_procfs() -> PathBuf {
    PathBuf::from("/proc")
}
fn default_etc_root() -> PathBuf {
    PathBuf::from("/")
}
