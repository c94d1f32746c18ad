//! Prometheus text exposition (format 0.0.4) of the latest telemetry and the agent's own state,
//! and the [`StatusSnapshot`] that `/api/v1/status` shows.
//!
//! [`render`] is pure: the HTTP handler ([`crate::http::server`]) calls it with the latest
//! telemetry and a fresh snapshot. Every metric starts with `rvm_`. The text is written by the
//! `exposition` crate (the server's `/metrics` uses it too, over `prometheus-client`): every
//! family gets its `# HELP` and `# TYPE` line once, its samples together; label values are
//! escaped (`\\`, `\"`, `\n`).
//!
//! Rules worth knowing when reading the output:
//! - A figure the machine cannot measure (`None`) is left out, never written as 0.
//! - Two series with the same labels in one family cannot be told apart by Prometheus: the
//!   first is kept (this can happen with two temperature sensors of the same name).
//! - Processes are grouped by name (several `python3` workers are one series): CPU and RSS are
//!   summed, `rvm_process_up` is 1 when any is running.
//! - Application metric `NAME` becomes `rvm_app_NAME` with every character outside
//!   `[A-Za-z0-9_:]` replaced by `_` (`camera_fps.front` -> `rvm_app_camera_fps_front`), typed
//!   `untyped` (the agent does not know whether the service counts or measures). When two names
//!   sanitise to the same family, the first (by name) is kept.

use std::collections::BTreeMap;

use common::{DeviceId, GpuBackendKind, HealthStatus, Telemetry};
use exposition::Kind::{Counter, Gauge, Untyped};
use exposition::{Exposition, Family, RenderError};

use super::status::StatusSnapshot;

/// Content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = exposition::CONTENT_TYPE;

/// The exposition of `t` and the agent's state.
pub fn render(t: &Telemetry, device: &DeviceId, extra: &StatusSnapshot) -> Result<String, RenderError> {
    let mut x = Exposition::default();
    render_telemetry(&mut x, t);
    render_agent(&mut x, device, extra);
    x.render()
}

/// The agent's state only, for `/metrics` before the first collection (no made-up zeros).
pub fn render_without_telemetry(device: &DeviceId, extra: &StatusSnapshot) -> Result<String, RenderError> {
    let mut x = Exposition::default();
    render_agent(&mut x, device, extra);
    x.render()
}

/// `rvm_app_` + `name` with every character outside `[A-Za-z0-9_:]` replaced by `_`.
pub fn app_family_name(name: &str) -> String {
    let mut out = String::with_capacity(8 + name.len());
    out.push_str("rvm_app_");
    out.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            c
        } else {
            '_'
        }
    }));
    out
}

// ---------------------------------------------------------------------------------------------
// Families
// ---------------------------------------------------------------------------------------------

fn render_telemetry(x: &mut Exposition, t: &Telemetry) {
    x.one(
        "rvm_collect_interval_seconds",
        Gauge,
        "Collection interval in force.",
        f64::from(t.interval_ms) / 1000.0,
    );
    x.one(
        "rvm_uptime_seconds",
        Gauge,
        "Time since the machine booted.",
        t.uptime_s,
    );

    // CPU and load
    x.one(
        "rvm_cpu_usage_percent",
        Gauge,
        "CPU use over all cores.",
        t.cpu.usage_pct,
    );
    let mut core = Family::new("rvm_cpu_core_usage_percent", Gauge, "CPU use per core.");
    for (i, v) in t.cpu.per_core_pct.iter().enumerate() {
        core.add(&[("core", &i.to_string())], *v);
    }
    x.push(core);
    let mut freq = Family::new("rvm_cpu_frequency_mhz", Gauge, "CPU frequency per core.");
    for (i, v) in t.cpu.freq_mhz.iter().enumerate() {
        freq.add(&[("core", &i.to_string())], *v);
    }
    x.push(freq);
    x.one("rvm_load1", Gauge, "Load average over 1 minute.", t.cpu.load1);
    x.one("rvm_load5", Gauge, "Load average over 5 minutes.", t.cpu.load5);
    x.one("rvm_load15", Gauge, "Load average over 15 minutes.", t.cpu.load15);

    // memory
    let m = &t.memory;
    x.one(
        "rvm_memory_total_bytes",
        Gauge,
        "Memory installed.",
        m.total_bytes,
    );
    x.one("rvm_memory_used_bytes", Gauge, "Memory in use.", m.used_bytes);
    x.one(
        "rvm_memory_available_bytes",
        Gauge,
        "Memory available to new work.",
        m.available_bytes,
    );
    x.one(
        "rvm_swap_total_bytes",
        Gauge,
        "Swap configured.",
        m.swap_total_bytes,
    );
    x.one("rvm_swap_used_bytes", Gauge, "Swap in use.", m.swap_used_bytes);

    // filesystems and disk IO
    let mut size = Family::new("rvm_filesystem_size_bytes", Gauge, "Filesystem size.");
    let mut used = Family::new("rvm_filesystem_used_bytes", Gauge, "Filesystem space in use.");
    let mut inodes = Family::new("rvm_filesystem_inodes", Gauge, "Filesystem inodes.");
    let mut inodes_used = Family::new("rvm_filesystem_inodes_used", Gauge, "Filesystem inodes in use.");
    let mut read = Family::new(
        "rvm_disk_read_bytes_per_second",
        Gauge,
        "Bytes read per second from the filesystem's device.",
    );
    let mut write = Family::new(
        "rvm_disk_write_bytes_per_second",
        Gauge,
        "Bytes written per second to the filesystem's device.",
    );
    for d in &t.disks {
        let l = [("mount", d.mount.as_str()), ("fs", d.fs.as_str())];
        size.add(&l, d.total_bytes);
        used.add(&l, d.used_bytes);
        inodes.add_opt(&l, d.inodes_total);
        inodes_used.add_opt(&l, d.inodes_used);
        read.add_opt(&l, d.read_bytes_per_s);
        write.add_opt(&l, d.write_bytes_per_s);
    }
    for f in [size, used, inodes, inodes_used, read, write] {
        x.push(f);
    }

    // network
    type NetField = fn(&common::NetStats) -> f64;
    let counters: [(&str, &str, NetField); 6] = [
        ("rvm_network_receive_bytes_total", "Bytes received.", |n| {
            n.rx_bytes as f64
        }),
        ("rvm_network_transmit_bytes_total", "Bytes sent.", |n| {
            n.tx_bytes as f64
        }),
        ("rvm_network_receive_packets_total", "Packets received.", |n| {
            n.rx_packets as f64
        }),
        ("rvm_network_transmit_packets_total", "Packets sent.", |n| {
            n.tx_packets as f64
        }),
        ("rvm_network_receive_errors_total", "Receive errors.", |n| {
            n.rx_errors as f64
        }),
        ("rvm_network_transmit_errors_total", "Transmit errors.", |n| {
            n.tx_errors as f64
        }),
    ];
    for (name, help, get) in counters {
        let mut f = Family::new(name, Counter, help);
        for n in &t.net {
            f.add(&[("iface", &n.iface)], get(n));
        }
        x.push(f);
    }
    let mut rx = Family::new(
        "rvm_network_receive_bytes_per_second",
        Gauge,
        "Bytes received per second.",
    );
    let mut tx = Family::new(
        "rvm_network_transmit_bytes_per_second",
        Gauge,
        "Bytes sent per second.",
    );
    for n in &t.net {
        rx.add(&[("iface", &n.iface)], n.rx_bytes_per_s);
        tx.add(&[("iface", &n.iface)], n.tx_bytes_per_s);
    }
    x.push(rx);
    x.push(tx);

    // temperatures
    let mut temp = Family::new("rvm_temperature_celsius", Gauge, "Temperature by sensor.");
    for r in &t.temperatures {
        temp.add(&[("sensor", &r.name)], r.value);
    }
    x.push(temp);

    render_processes(x, t);
    if let Some(g) = &t.gpu {
        render_gpu(x, g);
    }
    render_app(x, t);
}

#[derive(Default)]
struct ProcessGroup {
    cpu_pct: f64,
    rss_bytes: u64,
    running: u32,
    watched: bool,
    restarts_seen: u32,
}

fn render_processes(x: &mut Exposition, t: &Telemetry) {
    let mut groups: BTreeMap<&str, ProcessGroup> = BTreeMap::new();
    for p in &t.processes {
        let g = groups.entry(p.name.as_str()).or_default();
        if p.running {
            g.cpu_pct += f64::from(p.cpu_pct);
            g.rss_bytes = g.rss_bytes.saturating_add(p.rss_bytes);
            g.running += 1;
        }
        g.watched |= p.watched;
        g.restarts_seen = g.restarts_seen.saturating_add(p.restarts_seen);
    }
    let mut cpu = Family::new(
        "rvm_process_cpu_percent",
        Gauge,
        "CPU use of the processes of this name (100 = one core).",
    );
    let mut rss = Family::new(
        "rvm_process_resident_bytes",
        Gauge,
        "Resident memory of the processes of this name.",
    );
    let mut up = Family::new(
        "rvm_process_up",
        Gauge,
        "1 when a process of this name is running.",
    );
    let mut count = Family::new("rvm_process_running", Gauge, "Processes of this name running.");
    let mut restarts = Family::new(
        "rvm_process_restarts_seen_total",
        Counter,
        "Times the agent saw a watched process change its pid.",
    );
    for (name, g) in &groups {
        let l = [("name", *name)];
        cpu.add(&l, g.cpu_pct);
        rss.add(&l, g.rss_bytes);
        up.add(&l, g.running > 0);
        count.add(&l, g.running);
        if g.watched {
            restarts.add(&l, g.restarts_seen);
        }
    }
    for f in [cpu, rss, up, count, restarts] {
        x.push(f);
    }
}

fn backend_name(kind: GpuBackendKind) -> &'static str {
    match kind {
        GpuBackendKind::JetsonSysfs => "jetson_sysfs",
        GpuBackendKind::Tegrastats => "tegrastats",
        GpuBackendKind::Nvml => "nvml",
        GpuBackendKind::Simulated => "simulated",
        GpuBackendKind::None => "none",
    }
}

fn render_gpu(x: &mut Exposition, g: &common::GpuStats) {
    let mut info = Family::new(
        "rvm_gpu_info",
        Gauge,
        "Where GPU figures come from and what board this is; always 1.",
    );
    info.add(
        &[
            ("backend", backend_name(g.backend)),
            ("board", g.board.as_deref().unwrap_or("")),
            ("l4t", g.l4t.as_deref().unwrap_or("")),
            ("jetpack", g.jetpack.as_deref().unwrap_or("")),
            ("nvpmodel", g.nvpmodel.as_deref().unwrap_or("")),
        ],
        1u32,
    );
    x.push(info);
    x.one_opt("rvm_gpu_load_percent", Gauge, "GPU load.", g.load_pct);
    x.one_opt("rvm_gpu_frequency_mhz", Gauge, "GPU frequency.", g.freq_mhz);
    x.one_opt(
        "rvm_gpu_min_frequency_mhz",
        Gauge,
        "Lowest GPU frequency allowed now.",
        g.min_freq_mhz,
    );
    x.one_opt(
        "rvm_gpu_max_frequency_mhz",
        Gauge,
        "Highest GPU frequency allowed now.",
        g.max_freq_mhz,
    );
    x.one_opt(
        "rvm_gpu_emc_percent",
        Gauge,
        "External memory controller load.",
        g.emc_pct,
    );
    x.one_opt(
        "rvm_gpu_emc_frequency_mhz",
        Gauge,
        "External memory controller frequency.",
        g.emc_freq_mhz,
    );
    x.one_opt("rvm_gpu_fan_percent", Gauge, "Fan speed.", g.fan_pct);
    x.one_opt(
        "rvm_gpu_memory_used_bytes",
        Gauge,
        "GPU memory in use.",
        g.memory_used_bytes,
    );
    let mut zones = Family::new(
        "rvm_gpu_temperature_celsius",
        Gauge,
        "Jetson thermal zones by type (gpu, cpu, tj, ...).",
    );
    for r in &g.temperatures {
        zones.add(&[("zone", &r.name)], r.value);
    }
    x.push(zones);
    let mut power = Family::new("rvm_power_rail_milliwatts", Gauge, "Power rail draw.");
    let mut avg = Family::new(
        "rvm_power_rail_average_milliwatts",
        Gauge,
        "Power rail draw, averaged by the monitor.",
    );
    let mut volts = Family::new("rvm_power_rail_millivolts", Gauge, "Power rail voltage.");
    let mut amps = Family::new("rvm_power_rail_milliamps", Gauge, "Power rail current.");
    for r in &g.rails {
        let l = [("rail", r.name.as_str())];
        power.add(&l, r.power_mw);
        avg.add_opt(&l, r.avg_power_mw);
        volts.add_opt(&l, r.voltage_mv);
        amps.add_opt(&l, r.current_ma);
    }
    for f in [power, avg, volts, amps] {
        x.push(f);
    }
    x.one_opt(
        "rvm_power_total_milliwatts",
        Gauge,
        "Board input power (VDD_IN) or the sum of all rails.",
        g.total_power_mw(),
    );
    let mut unsupported = Family::new(
        "rvm_gpu_unsupported",
        Gauge,
        "A GPU metric this backend cannot read on this machine; always 1.",
    );
    for m in &g.unsupported {
        unsupported.add(&[("metric", m)], 1u32);
    }
    x.push(unsupported);
}

fn render_app(x: &mut Exposition, t: &Telemetry) {
    let mut app: Vec<&common::Reading> = t.app.iter().collect();
    app.sort_by(|a, b| a.name.cmp(&b.name));
    for r in app {
        x.one(
            &app_family_name(&r.name),
            Untyped,
            &format!("Vision service metric {}.", r.name),
            r.value,
        );
    }
}

fn status_value(s: HealthStatus) -> u32 {
    match s {
        HealthStatus::Ok => 0,
        HealthStatus::Warn => 1,
        HealthStatus::Critical => 2,
    }
}

fn render_agent(x: &mut Exposition, device: &DeviceId, s: &StatusSnapshot) {
    let mut info = Family::new("rvm_agent_info", Gauge, "The agent and its device; always 1.");
    info.add(
        &[
            ("device", device.as_str()),
            ("version", &s.agent_version),
            ("gpu_backend", backend_name(s.gpu_backend)),
        ],
        1u32,
    );
    x.push(info);
    if let Some(h) = s.memory.heap_in_use {
        x.one(
            "rvm_agent_heap_in_use_bytes",
            Gauge,
            "Heap bytes the agent has allocated and not freed (allocator statistics).",
            h,
        );
    }
    if let Some(r) = s.memory.rss {
        x.one(
            "rvm_agent_resident_memory_bytes",
            Gauge,
            "Resident set size of the agent process.",
            r,
        );
    }

    if let Some(h) = &s.health {
        x.one(
            "rvm_agent_health_status",
            Gauge,
            "Worst health check status: 0 ok, 1 warn, 2 critical.",
            status_value(h.status),
        );
        let mut checks = Family::new(
            "rvm_agent_check_status",
            Gauge,
            "Health check status: 0 ok, 1 warn, 2 critical.",
        );
        for c in &h.checks {
            checks.add(&[("check", &c.name)], status_value(c.status));
        }
        x.push(checks);
    }

    let mut alive = Family::new("rvm_agent_actor_alive", Gauge, "1 while the actor runs.");
    let mut restarts = Family::new(
        "rvm_agent_actor_restarts_total",
        Counter,
        "Times the supervisor restarted the actor.",
    );
    for a in &s.actors {
        alive.add(&[("actor", &a.name)], a.alive);
        restarts.add(&[("actor", &a.name)], a.restarts);
    }
    x.push(alive);
    x.push(restarts);

    let b = &s.buffer;
    x.one(
        "rvm_agent_buffer_records",
        Gauge,
        "Records waiting in the buffer.",
        b.records,
    );
    x.one(
        "rvm_agent_buffer_bytes",
        Gauge,
        "Bytes of records waiting in the buffer.",
        b.bytes,
    );
    x.one(
        "rvm_agent_buffer_disk_bytes",
        Gauge,
        "Disk space the buffer's store takes.",
        b.disk_bytes,
    );
    x.one(
        "rvm_agent_buffer_appended_total",
        Counter,
        "Records appended to the buffer.",
        b.appended,
    );
    x.one(
        "rvm_agent_buffer_acked_total",
        Counter,
        "Records deleted after the broker acknowledged them.",
        b.acked,
    );
    x.one(
        "rvm_agent_buffer_dropped_total",
        Counter,
        "Records dropped by the full-buffer policy.",
        b.dropped,
    );
    x.one(
        "rvm_agent_buffer_refused_total",
        Counter,
        "Records refused by a full buffer.",
        b.refused,
    );

    let l = &s.link;
    x.one(
        "rvm_agent_link_connected",
        Gauge,
        "1 while connected to the broker.",
        l.connected,
    );
    x.one(
        "rvm_agent_link_connects_total",
        Counter,
        "Connections made to the broker.",
        l.connects,
    );
    x.one(
        "rvm_agent_link_disconnects_total",
        Counter,
        "Connections to the broker lost.",
        l.disconnects,
    );
    x.one(
        "rvm_agent_link_published_total",
        Counter,
        "Records published to the broker.",
        l.published,
    );
    x.one(
        "rvm_agent_link_acked_total",
        Counter,
        "Records the broker acknowledged.",
        l.acked,
    );
    x.one(
        "rvm_agent_link_in_flight",
        Gauge,
        "Records published and not yet acknowledged.",
        l.in_flight,
    );
    x.one(
        "rvm_agent_link_failovers_total",
        Counter,
        "Moves to another broker of the list after a lost connection or a failed attempt.",
        l.failovers,
    );
    let mut broker = Family::new(
        "rvm_agent_link_broker_info",
        Gauge,
        "The broker the link is on (connected) or trying next; always 1.",
    );
    broker.add(&[("broker", l.broker.as_str())], 1u32);
    x.push(broker);

    let a = &s.app_metrics;
    x.one(
        "rvm_agent_app_pushes_accepted_total",
        Counter,
        "Application metric pushes accepted.",
        a.pushes_accepted,
    );
    x.one(
        "rvm_agent_app_pushes_rejected_total",
        Counter,
        "Application metric pushes refused.",
        a.pushes_rejected,
    );
    x.one(
        "rvm_agent_app_scrapes_ok_total",
        Counter,
        "Scrapes of the vision service that succeeded.",
        a.scrapes_ok,
    );
    x.one(
        "rvm_agent_app_scrapes_failed_total",
        Counter,
        "Scrapes of the vision service that failed.",
        a.scrapes_failed,
    );
    x.one(
        "rvm_agent_app_scrape_bad_lines_total",
        Counter,
        "Lines of the vision service's scraped metrics that were not Prometheus text.",
        a.scrape_bad_lines,
    );
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::{HashMap, HashSet};

    use common::{
        ActorStatus, CheckResult, CpuStats, DiskStats, GpuStats, HealthReport, MemoryStats, NetStats,
        PowerRail, ProcessStats, Reading,
    };

    use super::*;
    use crate::appmetrics::prometheus::{Sample, parse_prometheus};
    use crate::appmetrics::store::AppMetricsCounters;
    use crate::buffer::BufferStats;
    use crate::link::status::LinkSnapshot;

    pub(crate) fn build_status() -> StatusSnapshot {
        StatusSnapshot {
            device: DeviceId::new("rvm0042").unwrap(),
            agent_version: "0.1.0".into(),
            health: Some(HealthReport {
                status: HealthStatus::Warn,
                checks: vec![
                    CheckResult {
                        name: "cpu".into(),
                        status: HealthStatus::Ok,
                        message: "12 %".into(),
                    },
                    CheckResult {
                        name: "http:vision \"api\"".into(),
                        status: HealthStatus::Warn,
                        message: "slow".into(),
                    },
                ],
                actors: vec![],
            }),
            actors: vec![
                ActorStatus {
                    name: "collector".into(),
                    alive: true,
                    restarts: 2,
                    last_exit: Some("panic: boom".into()),
                },
                ActorStatus {
                    name: "link".into(),
                    alive: false,
                    restarts: 0,
                    last_exit: None,
                },
            ],
            buffer: BufferStats {
                records: 10,
                bytes: 15_000,
                appended: 100,
                acked: 90,
                dropped: 3,
                refused: 0,
                last_seq: 100,
                disk_bytes: 65_536,
            },
            link: LinkSnapshot {
                connected: true,
                connects: 4,
                disconnects: 3,
                published: 95,
                acked: 90,
                in_flight: 5,
                last_error: None,
                broker: "b.example:8883".into(),
                failovers: 2,
            },
            gpu_backend: GpuBackendKind::JetsonSysfs,
            gpu_notes: vec!["nvml: not present".into()],
            app_metrics: AppMetricsCounters {
                pushes_accepted: 7,
                pushes_rejected: 1,
                ..Default::default()
            },
            memory: proc_mem::ProcessMemory::default(),
            cameras: Vec::new(),
        }
    }

    pub(crate) fn build_telemetry() -> Telemetry {
        Telemetry {
            interval_ms: 1000,
            uptime_s: 86_400,
            cpu: CpuStats {
                usage_pct: 12.5,
                per_core_pct: vec![10.0, 15.0],
                freq_mhz: vec![1510, 1510],
                load1: 0.5,
                load5: 0.25,
                load15: 0.1,
            },
            memory: MemoryStats {
                total_bytes: 8 << 30,
                used_bytes: 3 << 30,
                available_bytes: 5 << 30,
                swap_total_bytes: 4 << 30,
                swap_used_bytes: 0,
            },
            disks: vec![
                DiskStats {
                    mount: "/".into(),
                    fs: "ext4".into(),
                    total_bytes: 64 << 30,
                    used_bytes: 20 << 30,
                    inodes_total: Some(4_000_000),
                    inodes_used: Some(300_000),
                    read_bytes_per_s: Some(1024.0),
                    write_bytes_per_s: Some(2048.5),
                },
                DiskStats {
                    // a mount point with characters that need escaping
                    mount: "/media/usb \"stick\"\\x".into(),
                    fs: "vfat".into(),
                    total_bytes: 1 << 30,
                    used_bytes: 1 << 20,
                    inodes_total: None,
                    inodes_used: None,
                    read_bytes_per_s: None,
                    write_bytes_per_s: None,
                },
            ],
            net: vec![NetStats {
                iface: "eth0".into(),
                rx_bytes: 1_000_000,
                tx_bytes: 500_000,
                rx_packets: 1000,
                tx_packets: 800,
                rx_errors: 1,
                tx_errors: 0,
                rx_bytes_per_s: 1200.5,
                tx_bytes_per_s: 300.0,
            }],
            temperatures: vec![
                Reading::new("cpu-thermal", 48.5),
                Reading::new("cpu-thermal", 99.0),
                Reading::new("line\nbreak", 40.0),
            ],
            processes: vec![
                ProcessStats {
                    name: "vision".into(),
                    pid: 1234,
                    running: true,
                    watched: true,
                    cpu_pct: 150.0,
                    rss_bytes: 900 << 20,
                    state: "S".into(),
                    restarts_seen: 1,
                },
                ProcessStats {
                    name: "python3".into(),
                    pid: 2000,
                    running: true,
                    watched: false,
                    cpu_pct: 1.5,
                    rss_bytes: 50 << 20,
                    state: "S".into(),
                    restarts_seen: 0,
                },
                ProcessStats {
                    name: "python3".into(),
                    pid: 2001,
                    running: true,
                    watched: false,
                    cpu_pct: 2.0,
                    rss_bytes: 70 << 20,
                    state: "R".into(),
                    restarts_seen: 0,
                },
                ProcessStats {
                    name: "camerad".into(),
                    pid: 0,
                    running: false,
                    watched: true,
                    cpu_pct: 0.0,
                    rss_bytes: 0,
                    state: String::new(),
                    restarts_seen: 0,
                },
            ],
            gpu: Some(GpuStats {
                backend: GpuBackendKind::JetsonSysfs,
                load_pct: Some(61.3),
                freq_mhz: Some(624.75),
                min_freq_mhz: Some(306.0),
                max_freq_mhz: Some(918.0),
                emc_pct: Some(12.0),
                emc_freq_mhz: Some(2133.0),
                temperatures: vec![Reading::new("gpu", 51.5), Reading::new("tj", 53.0)],
                rails: vec![
                    PowerRail {
                        name: "VDD_IN".into(),
                        voltage_mv: Some(5080.0),
                        current_ma: Some(1400.0),
                        power_mw: 7112.0,
                        avg_power_mw: Some(7000.0),
                    },
                    PowerRail {
                        name: "VDD_CPU_GPU_CV".into(),
                        voltage_mv: None,
                        current_ma: None,
                        power_mw: 2500.0,
                        avg_power_mw: None,
                    },
                ],
                fan_pct: None,
                memory_used_bytes: None,
                nvpmodel: Some("15W".into()),
                board: Some("Orin NX 16GB".into()),
                l4t: Some("36.3.0".into()),
                jetpack: Some("6.0".into()),
                unsupported: vec!["fan_pct".into()],
            }),
            app: vec![
                Reading::new("items_recognised", 1234.0),
                Reading::new("camera_fps.front", 29.5),
                Reading::new("confidence", 0.1),
                Reading::new("transaction_active", 1.0),
            ],
            detail: Default::default(),
        }
    }

    /// The samples of an exposition that has no line a Prometheus parser could not read.
    pub(crate) fn parse_strict(text: &str) -> Vec<Sample> {
        let parsed = parse_prometheus(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(parsed.bad_lines, 0, "{:?}\n{text}", parsed.first_bad);
        parsed.samples
    }

    fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
        samples.iter().find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
    }

    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
        find(samples, name, labels)
            .unwrap_or_else(|| panic!("{name}{labels:?} missing"))
            .value
    }

    #[test]
    fn the_exposition_parses_back_with_every_family_and_the_same_values() {
        let t = build_telemetry();
        let status = build_status();
        let text = render(&t, &status.device, &status).unwrap();
        let samples = parse_strict(&text);

        let families: HashSet<&str> = samples.iter().map(|s| s.name.as_str()).collect();
        for f in [
            "rvm_collect_interval_seconds",
            "rvm_uptime_seconds",
            "rvm_cpu_usage_percent",
            "rvm_cpu_core_usage_percent",
            "rvm_cpu_frequency_mhz",
            "rvm_load1",
            "rvm_load5",
            "rvm_load15",
            "rvm_memory_total_bytes",
            "rvm_memory_used_bytes",
            "rvm_memory_available_bytes",
            "rvm_swap_total_bytes",
            "rvm_swap_used_bytes",
            "rvm_filesystem_size_bytes",
            "rvm_filesystem_used_bytes",
            "rvm_filesystem_inodes",
            "rvm_filesystem_inodes_used",
            "rvm_disk_read_bytes_per_second",
            "rvm_disk_write_bytes_per_second",
            "rvm_network_receive_bytes_total",
            "rvm_network_transmit_bytes_total",
            "rvm_network_receive_packets_total",
            "rvm_network_transmit_packets_total",
            "rvm_network_receive_errors_total",
            "rvm_network_transmit_errors_total",
            "rvm_network_receive_bytes_per_second",
            "rvm_network_transmit_bytes_per_second",
            "rvm_temperature_celsius",
            "rvm_process_cpu_percent",
            "rvm_process_resident_bytes",
            "rvm_process_up",
            "rvm_process_running",
            "rvm_process_restarts_seen_total",
            "rvm_gpu_info",
            "rvm_gpu_load_percent",
            "rvm_gpu_frequency_mhz",
            "rvm_gpu_min_frequency_mhz",
            "rvm_gpu_max_frequency_mhz",
            "rvm_gpu_emc_percent",
            "rvm_gpu_emc_frequency_mhz",
            "rvm_gpu_temperature_celsius",
            "rvm_power_rail_milliwatts",
            "rvm_power_rail_average_milliwatts",
            "rvm_power_rail_millivolts",
            "rvm_power_rail_milliamps",
            "rvm_power_total_milliwatts",
            "rvm_gpu_unsupported",
            "rvm_app_items_recognised",
            "rvm_app_camera_fps_front",
            "rvm_app_confidence",
            "rvm_app_transaction_active",
            "rvm_agent_info",
            "rvm_agent_health_status",
            "rvm_agent_check_status",
            "rvm_agent_actor_alive",
            "rvm_agent_actor_restarts_total",
            "rvm_agent_buffer_records",
            "rvm_agent_buffer_bytes",
            "rvm_agent_buffer_disk_bytes",
            "rvm_agent_buffer_appended_total",
            "rvm_agent_buffer_acked_total",
            "rvm_agent_buffer_dropped_total",
            "rvm_agent_buffer_refused_total",
            "rvm_agent_link_connected",
            "rvm_agent_link_connects_total",
            "rvm_agent_link_disconnects_total",
            "rvm_agent_link_published_total",
            "rvm_agent_link_acked_total",
            "rvm_agent_link_in_flight",
            "rvm_agent_link_failovers_total",
            "rvm_agent_link_broker_info",
            "rvm_agent_app_pushes_accepted_total",
            "rvm_agent_app_pushes_rejected_total",
            "rvm_agent_app_scrapes_ok_total",
            "rvm_agent_app_scrapes_failed_total",
            "rvm_agent_app_scrape_bad_lines_total",
        ] {
            assert!(families.contains(f), "{f} missing from\n{text}");
        }
        // figures that are None are left out, not written as 0
        assert!(!families.contains("rvm_gpu_fan_percent"), "{text}");
        assert!(!families.contains("rvm_gpu_memory_used_bytes"), "{text}");
        assert!(
            find(
                &samples,
                "rvm_power_rail_millivolts",
                &[("rail", "VDD_CPU_GPU_CV")]
            )
            .is_none()
        );

        let usb = "/media/usb \"stick\"\\x";
        for (name, labels, want) in [
            ("rvm_collect_interval_seconds", vec![], 1.0),
            ("rvm_uptime_seconds", vec![], 86_400.0),
            ("rvm_cpu_usage_percent", vec![], 12.5),
            ("rvm_cpu_core_usage_percent", vec![("core", "1")], 15.0),
            ("rvm_cpu_frequency_mhz", vec![("core", "0")], 1510.0),
            ("rvm_load5", vec![], 0.25),
            ("rvm_load15", vec![], 0.1),
            ("rvm_memory_total_bytes", vec![], (8u64 << 30) as f64),
            ("rvm_swap_used_bytes", vec![], 0.0),
            (
                "rvm_filesystem_size_bytes",
                vec![("mount", "/"), ("fs", "ext4")],
                (64u64 << 30) as f64,
            ),
            (
                "rvm_filesystem_used_bytes",
                vec![("mount", usb), ("fs", "vfat")],
                (1u64 << 20) as f64,
            ),
            (
                "rvm_filesystem_inodes_used",
                vec![("mount", "/"), ("fs", "ext4")],
                300_000.0,
            ),
            (
                "rvm_disk_write_bytes_per_second",
                vec![("mount", "/"), ("fs", "ext4")],
                2048.5,
            ),
            (
                "rvm_network_receive_bytes_total",
                vec![("iface", "eth0")],
                1_000_000.0,
            ),
            ("rvm_network_receive_errors_total", vec![("iface", "eth0")], 1.0),
            (
                "rvm_network_receive_bytes_per_second",
                vec![("iface", "eth0")],
                1200.5,
            ),
            ("rvm_temperature_celsius", vec![("sensor", "cpu-thermal")], 48.5),
            ("rvm_temperature_celsius", vec![("sensor", "line\nbreak")], 40.0),
            ("rvm_process_cpu_percent", vec![("name", "python3")], 3.5),
            (
                "rvm_process_resident_bytes",
                vec![("name", "python3")],
                (120u64 << 20) as f64,
            ),
            ("rvm_process_running", vec![("name", "python3")], 2.0),
            ("rvm_process_up", vec![("name", "vision")], 1.0),
            ("rvm_process_up", vec![("name", "camerad")], 0.0),
            ("rvm_process_restarts_seen_total", vec![("name", "vision")], 1.0),
            ("rvm_gpu_load_percent", vec![], f64::from(61.3f32)),
            ("rvm_gpu_frequency_mhz", vec![], 624.75),
            ("rvm_gpu_max_frequency_mhz", vec![], 918.0),
            ("rvm_gpu_emc_frequency_mhz", vec![], 2133.0),
            ("rvm_gpu_temperature_celsius", vec![("zone", "tj")], 53.0),
            (
                "rvm_power_rail_milliwatts",
                vec![("rail", "VDD_CPU_GPU_CV")],
                2500.0,
            ),
            ("rvm_power_rail_millivolts", vec![("rail", "VDD_IN")], 5080.0),
            ("rvm_power_rail_milliamps", vec![("rail", "VDD_IN")], 1400.0),
            (
                "rvm_power_rail_average_milliwatts",
                vec![("rail", "VDD_IN")],
                7000.0,
            ),
            ("rvm_power_total_milliwatts", vec![], 7112.0),
            ("rvm_gpu_unsupported", vec![("metric", "fan_pct")], 1.0),
            ("rvm_app_items_recognised", vec![], 1234.0),
            ("rvm_app_camera_fps_front", vec![], 29.5),
            ("rvm_app_confidence", vec![], 0.1),
            ("rvm_app_transaction_active", vec![], 1.0),
            ("rvm_agent_health_status", vec![], 1.0),
            (
                "rvm_agent_check_status",
                vec![("check", "http:vision \"api\"")],
                1.0,
            ),
            ("rvm_agent_actor_alive", vec![("actor", "link")], 0.0),
            (
                "rvm_agent_actor_restarts_total",
                vec![("actor", "collector")],
                2.0,
            ),
            ("rvm_agent_buffer_records", vec![], 10.0),
            ("rvm_agent_buffer_bytes", vec![], 15_000.0),
            ("rvm_agent_buffer_dropped_total", vec![], 3.0),
            ("rvm_agent_link_connected", vec![], 1.0),
            ("rvm_agent_link_published_total", vec![], 95.0),
            ("rvm_agent_link_acked_total", vec![], 90.0),
            ("rvm_agent_link_in_flight", vec![], 5.0),
            ("rvm_agent_link_failovers_total", vec![], 2.0),
            (
                "rvm_agent_link_broker_info",
                vec![("broker", "b.example:8883")],
                1.0,
            ),
            ("rvm_agent_app_pushes_accepted_total", vec![], 7.0),
            ("rvm_agent_app_pushes_rejected_total", vec![], 1.0),
        ] {
            let got = value(&samples, name, &labels);
            // f32 figures are written as their own shortest text: compare as f32
            let same = got == want || (got as f32 == want as f32 && name.starts_with("rvm_gpu_load"));
            assert!(same, "{name}{labels:?}: got {got}, want {want}");
        }
        let info = find(
            &samples,
            "rvm_gpu_info",
            &[
                ("backend", "jetson_sysfs"),
                ("board", "Orin NX 16GB"),
                ("l4t", "36.3.0"),
                ("jetpack", "6.0"),
                ("nvpmodel", "15W"),
            ],
        );
        assert_eq!(info.map(|s| s.value), Some(1.0), "{text}");
        let agent = find(
            &samples,
            "rvm_agent_info",
            &[
                ("device", "rvm0042"),
                ("version", "0.1.0"),
                ("gpu_backend", "jetson_sysfs"),
            ],
        );
        assert_eq!(agent.map(|s| s.value), Some(1.0), "{text}");
    }

    #[test]
    fn help_and_type_appear_once_per_family_before_its_samples() {
        let t = build_telemetry();
        let status = build_status();
        let text = render(&t, &status.device, &status).unwrap();
        let mut help: HashMap<&str, usize> = HashMap::new();
        let mut types: HashMap<&str, &str> = HashMap::new();
        let mut finished: HashSet<&str> = HashSet::new();
        let mut current = "";
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                *help.entry(name).or_default() += 1;
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut w = rest.split(' ');
                let name = w.next().unwrap();
                assert!(
                    types.insert(name, w.next().unwrap()).is_none(),
                    "TYPE {name} twice"
                );
                assert!(help.contains_key(name), "TYPE {name} before its HELP");
                finished.insert(current);
                current = name;
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(name, current, "sample {line:?} outside its family");
                assert!(!finished.contains(name), "family {name} is split");
                assert!(name.starts_with("rvm_"), "{name}");
            }
        }
        assert!(help.values().all(|n| *n == 1), "{help:?}");
        assert_eq!(help.len(), types.len());
        assert_eq!(types["rvm_network_receive_bytes_total"], "counter");
        assert_eq!(types["rvm_memory_used_bytes"], "gauge");
        assert_eq!(types["rvm_app_items_recognised"], "untyped");
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn label_values_are_escaped_and_duplicate_series_are_written_once() {
        let t = build_telemetry();
        let status = build_status();
        let text = render(&t, &status.device, &status).unwrap();
        assert!(
            text.contains(
                r#"rvm_filesystem_size_bytes{mount="/media/usb \"stick\"\\x",fs="vfat"} 1073741824"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"rvm_temperature_celsius{sensor="line\nbreak"} 40"#),
            "{text}"
        );
        assert!(
            text.contains(r#"rvm_agent_check_status{check="http:vision \"api\""} 1"#),
            "{text}"
        );
        // two sensors called cpu-thermal: the first is kept
        assert_eq!(text.matches("sensor=\"cpu-thermal\"").count(), 1, "{text}");
        assert!(text.contains("rvm_temperature_celsius{sensor=\"cpu-thermal\"} 48.5\n"));
    }

    #[test]
    fn app_names_are_sanitised_and_colliding_ones_kept_once() {
        assert_eq!(app_family_name("camera_fps.front"), "rvm_app_camera_fps_front");
        assert_eq!(app_family_name("a-b:c"), "rvm_app_a_b:c");
        let t = Telemetry {
            app: vec![Reading::new("a_b", 2.0), Reading::new("a.b", 1.0)],
            ..Default::default()
        };
        let status = build_status();
        let text = render(&t, &status.device, &status).unwrap();
        assert_eq!(text.matches("# TYPE rvm_app_a_b ").count(), 1, "{text}");
        // sorted by name: `a.b` comes first and wins
        assert!(text.contains("\nrvm_app_a_b 1\n"), "{text}");
        assert!(!parse_strict(&text).is_empty());
    }

    /// Prometheus' own checker (Debian package `prometheus`; fails when it is missing, as the
    /// server's test in `tests/tests/prometheus.rs` does).
    #[test]
    fn promtool_checks_the_agent_exposition() {
        use std::io::Write as _;
        use std::process::{Command, Stdio};
        let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("promtool is not installed: apt-get install -y prometheus");
        let status = build_status();
        for text in [
            render(&build_telemetry(), &status.device, &status).unwrap(),
            render_without_telemetry(&status.device, &status).unwrap(),
        ] {
            let mut child = Command::new(promtool)
                .args(["check", "metrics"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("promtool runs");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("exposition written to promtool");
            let o = child.wait_with_output().expect("promtool finishes");
            // exit 3: lint findings only (the text parsed). One is known and kept: the rail
            // voltage is in millivolts as the INA3221 reports it, and the name is documented.
            let lint = String::from_utf8_lossy(&o.stdout);
            let known_only = o.status.code() == Some(3)
                && lint.lines().filter(|l| !l.trim().is_empty()).all(|l| {
                    l == "rvm_power_rail_millivolts use base unit \"volts\" instead of \"millivolts\""
                });
            assert!(
                o.status.success() || known_only,
                "promtool check metrics: {:?}\n{}{}\n--- exposition\n{text}",
                o.status.code(),
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }

    #[test]
    fn without_telemetry_only_the_agent_state_is_written() {
        let status = build_status();
        let text = render_without_telemetry(&status.device, &status).unwrap();
        let samples = parse_strict(&text);
        assert!(samples.iter().all(|s| s.name.starts_with("rvm_agent_")), "{text}");
        assert!(!text.contains("rvm_cpu_usage_percent"));
        assert_eq!(value(&samples, "rvm_agent_buffer_records", &[]), 10.0);
    }

    #[test]
    fn the_status_snapshot_serialises_to_json() {
        let v = serde_json::to_value(build_status()).unwrap();
        assert_eq!(v["device"], "rvm0042");
        assert_eq!(v["gpu_backend"], "jetson_sysfs");
        assert_eq!(v["buffer"]["records"], 10);
        assert_eq!(v["link"]["connected"], true);
        assert_eq!(v["actors"][0]["restarts"], 2);
        assert_eq!(v["health"]["status"], "warn");
        assert_eq!(v["app_metrics"]["pushes_accepted"], 7);
    }
}
