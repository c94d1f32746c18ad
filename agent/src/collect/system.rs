//! The machine itself, through sysinfo. Only the refresh kinds needed are asked for:
//! a full `refresh_all` also reads every thread, command line and environment.

use common::{CpuStats, DiskStats, MemoryStats, NetStats, Reading, Telemetry};
use sysinfo::{Components, CpuRefreshKind, Disks, MemoryRefreshKind, Networks, System};

pub struct SystemSource {
    sys: System,
    disks: Disks,
    networks: Networks,
    components: Components,
    last_ms: Option<i64>,
    interval_ms: u32,
}

impl SystemSource {
    pub fn new(interval_ms: u32) -> Self {
        let mut sys = System::new();
        sys.refresh_cpu_specifics(CpuRefreshKind::nothing().with_cpu_usage().with_frequency());
        SystemSource {
            sys,
            disks: Disks::new_with_refreshed_list(),
            networks: Networks::new_with_refreshed_list(),
            components: Components::new_with_refreshed_list(),
            last_ms: None,
            interval_ms,
        }
    }
}

/// Pseudo and container filesystems that say nothing about the machine's storage.
fn interesting_fs(fs: &str) -> bool {
    !matches!(
        fs,
        "overlay" | "tmpfs" | "devtmpfs" | "squashfs" | "proc" | "sysfs" | "cgroup" | "cgroup2" | "nsfs"
    )
}

impl super::MetricSource for SystemSource {
    fn collect(&mut self, now_ms: i64) -> Telemetry {
        let elapsed_s = self
            .last_ms
            .map(|l| ((now_ms - l) as f64 / 1000.0).max(0.001))
            .unwrap_or(self.interval_ms as f64 / 1000.0);
        self.last_ms = Some(now_ms);

        self.sys
            .refresh_cpu_specifics(CpuRefreshKind::nothing().with_cpu_usage().with_frequency());
        self.sys.refresh_memory_specifics(MemoryRefreshKind::everything());
        self.disks.refresh(true);
        self.networks.refresh(true);
        self.components.refresh(true);

        let load = System::load_average();
        let cpu = CpuStats {
            usage_pct: self.sys.global_cpu_usage(),
            per_core_pct: self.sys.cpus().iter().map(|c| c.cpu_usage()).collect(),
            freq_mhz: self.sys.cpus().iter().map(|c| c.frequency() as u32).collect(),
            load1: load.one as f32,
            load5: load.five as f32,
            load15: load.fifteen as f32,
        };
        let memory = MemoryStats {
            total_bytes: self.sys.total_memory(),
            used_bytes: self.sys.used_memory(),
            available_bytes: self.sys.available_memory(),
            swap_total_bytes: self.sys.total_swap(),
            swap_used_bytes: self.sys.used_swap(),
        };
        let disks = self
            .disks
            .iter()
            .filter(|d| interesting_fs(&d.file_system().to_string_lossy()))
            .map(|d| {
                let u = d.usage();
                DiskStats {
                    mount: d.mount_point().to_string_lossy().into_owned(),
                    fs: d.file_system().to_string_lossy().into_owned(),
                    total_bytes: d.total_space(),
                    used_bytes: d.total_space().saturating_sub(d.available_space()),
                    inodes_total: None,
                    inodes_used: None,
                    read_bytes_per_s: Some(u.read_bytes as f64 / elapsed_s),
                    write_bytes_per_s: Some(u.written_bytes as f64 / elapsed_s),
                }
            })
            .collect();
        let net = self
            .networks
            .iter()
            .map(|(name, n)| NetStats {
                iface: name.clone(),
                rx_bytes: n.total_received(),
                tx_bytes: n.total_transmitted(),
                rx_packets: n.total_packets_received(),
                tx_packets: n.total_packets_transmitted(),
                rx_errors: n.total_errors_on_received(),
                tx_errors: n.total_errors_on_transmitted(),
                rx_bytes_per_s: n.received() as f64 / elapsed_s,
                tx_bytes_per_s: n.transmitted() as f64 / elapsed_s,
            })
            .collect();
        let temperatures = self
            .components
            .iter()
            .filter_map(|c| c.temperature().map(|t| Reading::new(c.label(), t as f64)))
            .filter(|r| r.value.is_finite())
            .collect();
        Telemetry {
            interval_ms: self.interval_ms,
            uptime_s: System::uptime(),
            cpu,
            memory,
            disks,
            net,
            temperatures,
            processes: Vec::new(),
            gpu: None,
            app: Vec::new(),
        }
    }

    fn is_blocking(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::MetricSource;

    #[test]
    fn collects_real_memory_and_cpu_figures() {
        let mut s = SystemSource::new(1000);
        let t = s.collect(common::time::now_ms());
        assert!(t.memory.total_bytes > 0);
        assert!(!t.cpu.per_core_pct.is_empty());
        assert!(t.uptime_s > 0);
    }
}
