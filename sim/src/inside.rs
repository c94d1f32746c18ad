//! The simulated machine's look inside (schema 2's [`Detail`], issue 24): a process table
//! whose watched vision service can leak file descriptors, a zombie that appears and is
//! never reaped, interfaces with packet rates, TCP connections, an eMMC with its wear
//! indicator, and the broker path's round trip.
//!
//! Pure: the randomness is the caller's (`between(lo, hi)`), the faults are in [`Inputs`].

use common::{BlockDevice, BrokerHealth, Detail, IfaceRates, ProcessInfo, ProcessTable, TcpStates};

/// Open file descriptors of a healthy vision service.
pub const VISION_FDS: u32 = 48;
/// How many descriptors a leaking vision service opens per record.
pub const LEAK_FDS_PER_RECORD: u32 = 7;
/// The simulated eMMC's wear, percent of its rated life (a 0x02 `life_time` estimate).
pub const SIM_WEAR_PCT: f32 = 20.0;

/// What the detail needs to know of the machine and its faults.
/// What makes one simulated machine's look inside its own: figures drawn once from its seed
/// and kept for its life, so machines differ (the overview sorts by them) while each one's
/// figures stay put between records.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Baseline {
    /// Processes beyond the listed ones (services, kernel threads).
    pub other_processes: u32,
    /// Threads of the whole machine.
    pub threads: u32,
    /// Established TCP connections besides the few that come and go.
    pub tcp_established: u32,
}

impl Baseline {
    /// A machine's baseline, drawn with `between(lo, hi)` (the machine's own generator,
    /// seeded apart from its walks: see `SimSource::new`).
    pub fn draw(between: &mut impl FnMut(f64, f64) -> f64) -> Self {
        Baseline {
            other_processes: between(150.0, 230.0) as u32,
            threads: between(520.0, 900.0) as u32,
            tcp_established: between(2.0, 12.0) as u32,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    pub baseline: Baseline,
    pub vision: &'a str,
    /// None while the vision service is down.
    pub vision_pid: Option<u32>,
    pub vision_cpu_pct: f32,
    pub vision_rss: u64,
    /// Extra descriptors the leak has opened so far.
    pub leaked_fds: u32,
    /// A child of the vision service exited and was never reaped.
    pub zombie: bool,
    pub interval_s: f64,
    pub started_s: u64,
    /// This record is the one of a full process scan ([`SCAN_EVERY_MS`]): only it carries
    /// the table's counts and top lists, as an agent's does.
    pub scan: bool,
}

/// How often a simulated machine scans its whole process table (the agent's default
/// `scan_every_ms`).
pub const SCAN_EVERY_MS: i64 = 10_000;

/// What a simulated process uses: CPU %, RSS bytes, open fds, threads.
#[derive(Debug, Clone, Copy)]
struct Use(f32, u64, u32, u32);

fn info(pid: u32, name: &str, user: &str, Use(cpu, rss, fds, threads): Use, started_s: u64) -> ProcessInfo {
    ProcessInfo {
        pid,
        name: name.into(),
        user: user.into(),
        state: "Sleeping".into(),
        threads: Some(threads),
        fds: Some(fds),
        cpu_pct: cpu,
        rss_bytes: rss,
        read_bytes_per_s: Some(0.0),
        write_bytes_per_s: Some(0.0),
        start_time_s: started_s,
    }
}

/// One record's detail.
pub fn detail(i: Inputs<'_>, between: &mut impl FnMut(f64, f64) -> f64) -> Detail {
    let mut procs: Vec<ProcessInfo> = vec![
        info(
            1,
            "systemd",
            "root",
            Use(between(0.0, 0.5) as f32, 12 << 20, 90, 1),
            i.started_s,
        ),
        info(
            410,
            "rvm-agent",
            "rvm",
            Use(between(0.2, 1.5) as f32, 9 << 20, 24, 6),
            i.started_s,
        ),
        info(
            530,
            "nvargus-daemon",
            "root",
            Use(between(2.0, 8.0) as f32, 60 << 20, 35, 14),
            i.started_s,
        ),
        info(
            611,
            "Xorg",
            "root",
            Use(between(0.5, 3.0) as f32, 80 << 20, 60, 4),
            i.started_s,
        ),
        info(
            702,
            "dockerd",
            "root",
            Use(between(0.1, 1.0) as f32, 70 << 20, 40, 18),
            i.started_s,
        ),
        info(
            880,
            "journald",
            "root",
            Use(between(0.0, 0.4) as f32, 20 << 20, 30, 1),
            i.started_s,
        ),
    ];
    if let Some(pid) = i.vision_pid {
        let mut v = info(
            pid,
            i.vision,
            "rvm",
            Use(i.vision_cpu_pct, i.vision_rss, VISION_FDS + i.leaked_fds, 23),
            i.started_s + 60,
        );
        v.state = "Runnable".into();
        v.read_bytes_per_s = Some(between(0.0, 40_000.0));
        v.write_bytes_per_s = Some(between(1_000.0, 90_000.0));
        procs.push(v);
    }
    let mut watched = procs
        .iter()
        .filter(|p| p.name == i.vision)
        .cloned()
        .collect::<Vec<_>>();
    let mut zombies = 0;
    if i.zombie {
        zombies = 1;
        let mut z = info(
            i.vision_pid.unwrap_or(1200) + 7,
            "capture-helper",
            "rvm",
            Use(0.0, 0, 0, 1),
            i.started_s + 90,
        );
        z.state = "Zombie".into();
        z.fds = None;
        procs.push(z);
    }
    let mut top_cpu = procs.clone();
    top_cpu.sort_by(|a, b| b.cpu_pct.total_cmp(&a.cpu_pct));
    top_cpu.truncate(common::TOP_N);
    let mut top_mem = procs.clone();
    top_mem.sort_by_key(|p| std::cmp::Reverse(p.rss_bytes));
    top_mem.truncate(common::TOP_N);
    watched.sort_by(|a, b| a.name.cmp(&b.name));
    let rx = between(2_000.0, 20_000.0);
    let tx = between(2_000.0, 30_000.0);
    let dt = i.interval_s.max(0.001);
    let writes = between(2.0, 30.0);
    let procs = if i.scan {
        ProcessTable {
            total: i.baseline.other_processes + procs.len() as u32,
            threads: Some(i.baseline.threads),
            zombies,
            scanned: true,
            top_cpu,
            top_mem,
            watched,
        }
    } else {
        ProcessTable {
            watched,
            ..Default::default()
        }
    };
    Detail {
        procs,
        ifaces: vec![IfaceRates {
            iface: "eth0".into(),
            rx_bytes_per_s: rx,
            tx_bytes_per_s: tx,
            rx_packets_per_s: rx / 900.0,
            tx_packets_per_s: tx / 700.0,
            rx_errors: 0,
            tx_errors: 0,
            rx_drops: 3,
            tx_drops: 0,
        }],
        tcp: Some(TcpStates {
            established: i.baseline.tcp_established + (between(0.0, 1.0) * 3.0) as u32,
            listen: 3,
            time_wait: (between(0.0, 1.0) * 4.0) as u32,
            ..Default::default()
        }),
        block: vec![BlockDevice {
            name: "mmcblk0".into(),
            read_bytes_per_s: between(0.0, 50_000.0),
            write_bytes_per_s: writes * 4096.0,
            reads_per_s: between(0.0, 10.0),
            writes_per_s: writes,
            util_pct: (writes * 0.4 / dt) as f32,
            wear_pct: Some(SIM_WEAR_PCT),
            pre_eol: Some(1),
        }],
        broker: BrokerHealth {
            rtt_ms: Some(between(2.0, 15.0) as f32),
            dns_ms: None,
            dns_ok: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn baseline(seed: u64) -> Baseline {
        let mut rng = crate::source::Rng::new(seed);
        Baseline::draw(&mut |lo, hi| rng.between(lo, hi))
    }

    fn inputs(leaked_fds: u32, zombie: bool) -> Inputs<'static> {
        Inputs {
            baseline: baseline(1),
            vision: "vision",
            vision_pid: Some(1234),
            vision_cpu_pct: 40.0,
            vision_rss: 1_310 << 20,
            leaked_fds,
            zombie,
            interval_s: 1.0,
            started_s: 1_700_000_000,
            scan: true,
        }
    }

    #[test]
    fn a_leak_shows_in_the_watched_process_and_a_zombie_in_the_counts() {
        let mut rng = crate::source::Rng::new(1);
        let mut rng = |lo, hi| rng.between(lo, hi);
        let healthy = detail(inputs(0, false), &mut rng);
        assert_eq!(healthy.procs.zombies, 0);
        assert_eq!(healthy.procs.watched[0].fds, Some(VISION_FDS));
        let sick = detail(inputs(70, true), &mut rng);
        assert_eq!(sick.procs.zombies, 1);
        assert_eq!(sick.procs.watched[0].fds, Some(VISION_FDS + 70));
        assert!(sick.procs.top_cpu.len() == common::TOP_N && sick.procs.top_mem.len() == common::TOP_N);
        assert_eq!(
            sick.procs.top_mem[0].name, "vision",
            "the biggest process leads the memory list"
        );
    }

    #[test]
    fn a_record_between_scans_carries_the_watched_process_only() {
        let mut rng = crate::source::Rng::new(1);
        let mut rng = |lo, hi| rng.between(lo, hi);
        let mut i = inputs(70, true);
        i.scan = false;
        let p = detail(i, &mut rng).procs;
        assert!(
            !p.scanned && p.top_cpu.is_empty() && p.top_mem.is_empty(),
            "{p:?}"
        );
        assert_eq!((p.total, p.zombies, p.threads), (0, 0, None));
        assert_eq!(
            p.watched[0].fds,
            Some(VISION_FDS + 70),
            "the leak shows every record"
        );
    }

    #[test]
    fn machines_differ_by_their_baseline_and_each_keeps_its_own() {
        let all: Vec<Baseline> = (0..6).map(baseline).collect();
        assert_eq!(baseline(3), all[3], "the same seed, the same machine");
        let mut threads: Vec<u32> = all.iter().map(|b| b.threads).collect();
        threads.sort();
        threads.dedup();
        assert!(threads.len() >= 5, "six machines, threads {threads:?}");
        let mut rng = crate::source::Rng::new(1);
        let mut rng = |lo, hi| rng.between(lo, hi);
        let mut i = inputs(0, false);
        i.baseline = all[2];
        let a = detail(i, &mut rng);
        let b = detail(i, &mut rng);
        assert_eq!(a.procs.threads, Some(all[2].threads));
        assert_eq!((a.procs.total, a.procs.threads), (b.procs.total, b.procs.threads));
    }
}
