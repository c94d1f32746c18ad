//! Record bodies: what an agent reports, in natural units.
//!
//! Every type here is encoded with bincode (a non-self-describing format), so no serde
//! attribute that needs a self-describing format is used (`flatten`, `untagged`, internally
//! tagged enums, `skip_serializing_if`). A metric that a machine cannot measure is `None` (and,
//! for the GPU, named in `unsupported`), never a made-up 0.

use serde::{Deserialize, Serialize};

use crate::detail::Detail;

/// A named value: application metrics, temperatures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub name: String,
    pub value: f64,
}

impl Reading {
    pub fn new(name: impl Into<String>, value: f64) -> Self {
        Self {
            name: name.into(),
            value,
        }
    }
}

/// One collection of everything an agent sees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Telemetry {
    /// Collection interval in force when this was taken.
    pub interval_ms: u32,
    pub uptime_s: u64,
    pub cpu: CpuStats,
    pub memory: MemoryStats,
    pub disks: Vec<DiskStats>,
    pub net: Vec<NetStats>,
    /// Temperatures by sensor name, degrees C.
    pub temperatures: Vec<Reading>,
    /// Watched processes every tick, top processes when the full table was scanned.
    pub processes: Vec<ProcessStats>,
    pub gpu: Option<GpuStats>,
    /// Application metrics of the vision service, by name.
    pub app: Vec<Reading>,
    /// Schema 2: processes, interfaces, TCP, block devices, broker path (issue 24). Last,
    /// so that a schema-1 record is exactly [`TelemetryV1`].
    pub detail: Detail,
}

/// The telemetry body of schema 1, frozen: agents in the field (and records buffered on a
/// machine before its agent was upgraded) still send it. Never change this struct.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TelemetryV1 {
    pub interval_ms: u32,
    pub uptime_s: u64,
    pub cpu: CpuStats,
    pub memory: MemoryStats,
    pub disks: Vec<DiskStats>,
    pub net: Vec<NetStats>,
    pub temperatures: Vec<Reading>,
    pub processes: Vec<ProcessStats>,
    pub gpu: Option<GpuStats>,
    pub app: Vec<Reading>,
}

impl From<TelemetryV1> for Telemetry {
    /// A schema-1 record: nothing of the detail was measured.
    fn from(t: TelemetryV1) -> Self {
        Telemetry {
            interval_ms: t.interval_ms,
            uptime_s: t.uptime_s,
            cpu: t.cpu,
            memory: t.memory,
            disks: t.disks,
            net: t.net,
            temperatures: t.temperatures,
            processes: t.processes,
            gpu: t.gpu,
            app: t.app,
            detail: Detail::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CpuStats {
    pub usage_pct: f32,
    pub per_core_pct: Vec<f32>,
    pub freq_mhz: Vec<u32>,
    pub load1: f32,
    pub load5: f32,
    pub load15: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MemoryStats {
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub available_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DiskStats {
    pub mount: String,
    pub fs: String,
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub inodes_total: Option<u64>,
    pub inodes_used: Option<u64>,
    pub read_bytes_per_s: Option<f64>,
    pub write_bytes_per_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NetStats {
    pub iface: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_bytes_per_s: f64,
    pub tx_bytes_per_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ProcessStats {
    pub name: String,
    /// 0 when a watched process is not running.
    pub pid: u32,
    pub running: bool,
    pub watched: bool,
    pub cpu_pct: f32,
    pub rss_bytes: u64,
    pub state: String,
    /// Times the agent saw the pid of a watched process change.
    pub restarts_seen: u32,
}

/// Where GPU figures came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum GpuBackendKind {
    JetsonSysfs,
    Tegrastats,
    Nvml,
    Simulated,
    #[default]
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct GpuStats {
    pub backend: GpuBackendKind,
    pub load_pct: Option<f32>,
    pub freq_mhz: Option<f32>,
    pub min_freq_mhz: Option<f32>,
    pub max_freq_mhz: Option<f32>,
    pub emc_pct: Option<f32>,
    pub emc_freq_mhz: Option<f32>,
    /// Thermal zones by type name (`gpu`, `cpu`, `tj`, ...), degrees C.
    pub temperatures: Vec<Reading>,
    pub rails: Vec<PowerRail>,
    pub fan_pct: Option<f32>,
    pub memory_used_bytes: Option<u64>,
    pub nvpmodel: Option<String>,
    pub board: Option<String>,
    pub l4t: Option<String>,
    pub jetpack: Option<String>,
    /// Metric names this backend cannot read on this machine.
    pub unsupported: Vec<String>,
}

impl GpuStats {
    /// Hottest GPU-ish zone: `gpu` if present, else the highest of all zones.
    pub fn gpu_temp_c(&self) -> Option<f64> {
        let by_name = |n: &str| {
            self.temperatures
                .iter()
                .find(|r| r.name.eq_ignore_ascii_case(n))
                .map(|r| r.value)
        };
        by_name("gpu").or_else(|| {
            self.temperatures
                .iter()
                .map(|r| r.value)
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
        })
    }

    /// Board input power: `VDD_IN` / `POM_5V_IN` when present, else the sum of all rails.
    pub fn total_power_mw(&self) -> Option<f64> {
        if self.rails.is_empty() {
            return None;
        }
        self.rails
            .iter()
            .find(|r| r.name == "VDD_IN" || r.name == "POM_5V_IN")
            .map(|r| r.power_mw)
            .or_else(|| Some(self.rails.iter().map(|r| r.power_mw).sum()))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PowerRail {
    pub name: String,
    pub voltage_mv: Option<f64>,
    pub current_ma: Option<f64>,
    pub power_mw: f64,
    pub avg_power_mw: Option<f64>,
}

impl Telemetry {
    /// Memory in use as a percentage of the total (None when the total is unknown).
    pub fn memory_used_pct(&self) -> Option<f64> {
        (self.memory.total_bytes > 0)
            .then(|| self.memory.used_bytes as f64 * 100.0 / self.memory.total_bytes as f64)
    }

    /// The fullest filesystem's use in percent.
    pub fn disk_max_used_pct(&self) -> Option<f64> {
        self.disks
            .iter()
            .filter(|d| d.total_bytes > 0)
            .map(|d| d.used_bytes as f64 * 100.0 / d.total_bytes as f64)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
    }

    /// Flat named metrics, the vocabulary of alert rules, history and the web view.
    /// Names: `cpu.usage_pct`, `load1`, `memory.used_pct`, `memory.total_bytes`,
    /// `swap.used_pct`, `disk.max_used_pct`, `gpu.load_pct`, `gpu.freq_mhz`, `gpu.temp_c`,
    /// `power.total_mw`, `power.rail.<rail>_mw` (each INA3221 rail, e.g. `power.rail.VDD_IN_mw`;
    /// characters outside `[A-Za-z0-9_-]` become `_`), `temp.max_c`, `net.rx_bytes_per_s`, `net.tx_bytes_per_s`,
    /// `process.down` (watched processes not running), `app.<name>`, then the schema-2
    /// detail's names ([`Detail::visit_metrics`]: `proc.*`, `net.<iface>.*`, `tcp.*`,
    /// `disk.<dev>.*`, `broker.*`).
    pub fn flat_metrics(&self) -> Vec<(String, f64)> {
        let mut m: Vec<(String, f64)> = Vec::with_capacity(16 + self.app.len());
        self.visit_metrics(|name, v| m.push((name.to_string(), v)));
        m
    }

    /// [`Telemetry::flat_metrics`] without allocating a name per metric: `f` sees each name
    /// as a borrowed string (a composed one lives in a buffer reused for the next), in the
    /// same order. The ingest path calls this once or twice per record, so the difference
    /// is most of what naming the metrics costs (issue 25).
    pub fn visit_metrics(&self, mut f: impl FnMut(&str, f64)) {
        f("cpu.usage_pct", self.cpu.usage_pct as f64);
        f("load1", self.cpu.load1 as f64);
        f("memory.total_bytes", self.memory.total_bytes as f64);
        f("memory.used_bytes", self.memory.used_bytes as f64);
        if let Some(p) = self.memory_used_pct() {
            f("memory.used_pct", p);
        }
        if self.memory.swap_total_bytes > 0 {
            f(
                "swap.used_pct",
                self.memory.swap_used_bytes as f64 * 100.0 / self.memory.swap_total_bytes as f64,
            );
        }
        if let Some(p) = self.disk_max_used_pct() {
            f("disk.max_used_pct", p);
        }
        let rx: f64 = self.net.iter().map(|n| n.rx_bytes_per_s).sum();
        let tx: f64 = self.net.iter().map(|n| n.tx_bytes_per_s).sum();
        f("net.rx_bytes_per_s", rx);
        f("net.tx_bytes_per_s", tx);
        if let Some(t) = self
            .temperatures
            .iter()
            .map(|r| r.value)
            .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))))
        {
            f("temp.max_c", t);
        }
        let down = self.processes.iter().filter(|p| p.watched && !p.running).count();
        f("process.down", down as f64);
        let mut name = String::new();
        if let Some(g) = &self.gpu {
            if let Some(v) = g.load_pct {
                f("gpu.load_pct", v as f64);
            }
            if let Some(v) = g.freq_mhz {
                f("gpu.freq_mhz", v as f64);
            }
            if let Some(v) = g.gpu_temp_c() {
                f("gpu.temp_c", v);
            }
            if let Some(v) = g.total_power_mw() {
                f("power.total_mw", v);
            }
            for r in &g.rails {
                name.clear();
                name.push_str("power.rail.");
                name.extend(r.name.chars().map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                }));
                name.push_str("_mw");
                f(&name, r.power_mw);
            }
        }
        for r in &self.app {
            name.clear();
            name.push_str("app.");
            name.push_str(&r.name);
            f(&name, r.value);
        }
        self.detail.visit_metrics(&mut name, &mut f);
    }
}

/// ok < warn < critical: the order is used to compute the worst status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    #[default]
    Ok,
    Warn,
    Critical,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct HealthReport {
    /// The worst status of all checks.
    pub status: HealthStatus,
    pub checks: Vec<CheckResult>,
    pub actors: Vec<ActorStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub status: HealthStatus,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActorStatus {
    pub name: String,
    pub alive: bool,
    pub restarts: u32,
    pub last_exit: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// Something that happened on a machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub severity: Severity,
    pub kind: EventKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionOutcome {
    Succeeded,
    Failed,
    /// Not attempted: interlock, rate limit or allow-list.
    Refused,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The agent process started; the previous run's exit reason when known.
    AgentStarted { previous_exit: Option<String> },
    /// An actor was restarted by its supervisor.
    ActorRestarted { actor: String, reason: String },
    /// A local or remote recovery action and its outcome.
    Recovery {
        action: String,
        target: String,
        outcome: ActionOutcome,
        detail: String,
    },
    /// Records the agent dropped on purpose (buffer cap), with the seq range and reason.
    RecordsDropped {
        count: u64,
        first_seq: u64,
        last_seq: u64,
        reason: String,
    },
    /// The local store could not be opened and was moved aside.
    StoreReset { moved_to: String, error: String },
    /// The wall clock jumped by this much between two ticks.
    ClockJump { delta_ms: i64 },
    /// Anything else worth a line in the event log.
    Note,
    /// The GPU figures come from another source now (a better one appeared after the agent
    /// started); `from` and `to` are capabilities such as `gpu:nvml`, `gpu:jetson_sysfs`.
    /// Last among the variants: encodings number them.
    GpuSourceChanged { from: String, to: String },
}

/// Presence, on the retained `state` topic: a birth on connect, the last will on loss.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    Online(Birth),
    Offline(LastWill),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Birth {
    /// Random per process start: a new boot id means the agent restarted.
    pub boot_id: String,
    pub agent_version: String,
    pub hostname: String,
    pub site: Option<String>,
    pub tags: Vec<String>,
    pub board: Option<String>,
    pub jetpack: Option<String>,
    pub vision_model_version: Option<String>,
    pub capabilities: Vec<String>,
    pub started_ms: i64,
    pub simulated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LastWill {
    pub boot_id: String,
    /// `connection lost` when sent by the broker, `shutdown` when the agent said goodbye.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_power_rail_is_a_flat_metric_with_a_safe_name() {
        let t = Telemetry {
            gpu: Some(GpuStats {
                rails: vec![
                    PowerRail {
                        name: "VDD_IN".into(),
                        power_mw: 5000.0,
                        ..Default::default()
                    },
                    PowerRail {
                        name: "VDD CPU/GPU".into(),
                        power_mw: 1200.0,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = t.flat_metrics();
        let get = |n: &str| m.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
        assert_eq!(get("power.total_mw"), Some(5000.0));
        assert_eq!(get("power.rail.VDD_IN_mw"), Some(5000.0));
        assert_eq!(get("power.rail.VDD_CPU_GPU_mw"), Some(1200.0));
    }
}
