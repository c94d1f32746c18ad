//! What sysinfo does not read (issue 24): block devices (`/proc/diskstats`) with the eMMC/SD
//! wear indicator (`/sys/block/*/device/life_time`, `pre_eol_info`), per-interface drops
//! (`/proc/net/dev`), TCP connections by state (netlink `sock_diag`, else `/proc/net/tcp{,6}`), the machine's thread
//! count (`/proc/loadavg`), one process's threads (`/proc/PID/stat`) and its current name
//! (`/proc/PID/comm`: sysinfo keeps the name it saw first).
//!
//! The files are parsed by `procfs-core` (parsers only: no second syscall layer in the
//! agent) and opened under the configured `[paths] procfs` and `sysfs` roots, so a fixture
//! tree stands in for a machine. A file that cannot be read gives `None` or an empty list.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use super::kept::KeptFile;

use common::{BlockDevice, IfaceRates, NetStats, TcpStates, parse_life_time, parse_pre_eol};
use procfs_core::net::{InterfaceDeviceStatus, TcpNetEntries, TcpState};
use procfs_core::{
    DiskStat, DiskStats, ExplicitSystemInfo, FromBufRead, FromBufReadSI, FromRead, LoadAverage,
};

/// Sector size of `/proc/diskstats` counters, whatever the device's own.
const SECTOR: f64 = 512.0;

#[derive(Debug, Clone, Copy, Default)]
struct DiskCounters {
    sectors_read: u64,
    sectors_written: u64,
    reads: u64,
    writes: u64,
    io_ticks_ms: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct IfaceCounters {
    rx_bytes: u64,
    tx_bytes: u64,
    rx_packets: u64,
    tx_packets: u64,
}

/// Whole block devices are relisted (and their wear reread) this often: a card inserted
/// shows within the process scan's cadence; the counters themselves are read every tick.
const BLOCK_RELIST_MS: i64 = 10_000;

/// A whole block device as last listed from `/sys/block`, with its wear indicator.
#[derive(Debug, Clone)]
struct Listed {
    name: String,
    wear_pct: Option<f32>,
    pre_eol: Option<u8>,
}

/// Reads the machine's pseudo-filesystems; keeps the last counters to turn them into rates.
#[derive(Debug)]
pub struct InsideReader {
    procfs: PathBuf,
    sysfs: PathBuf,
    disks: HashMap<String, (i64, DiskCounters)>,
    ifaces: HashMap<String, (i64, IfaceCounters)>,
    /// Netlink `sock_diag` failed once: the text tables from then on.
    diag_refused: bool,
    /// `/proc/diskstats` and `/proc/net/dev`, read every tick (see [`KeptFile`]).
    diskstats: KeptFile,
    net_dev: KeptFile,
    /// `/sys/block` as of `listed_ms`.
    listed: Vec<Listed>,
    listed_ms: Option<i64>,
    /// `stat` of `/proc/PID/fd` gives the count of open descriptors as its size (Linux 6.2
    /// and later; earlier kernels say 0), known from our own process at start.
    fd_size_counts: bool,
}

fn rate(now: u64, before: u64, dt_s: f64) -> f64 {
    now.saturating_sub(before) as f64 / dt_s
}

/// Loop, RAM and compressed-RAM devices say nothing about the machine's storage.
fn interesting_block(name: &str) -> bool {
    !(name.starts_with("loop") || name.starts_with("ram") || name.starts_with("zram"))
}

impl InsideReader {
    pub fn new(procfs: impl Into<PathBuf>, sysfs: impl Into<PathBuf>) -> Self {
        let procfs: PathBuf = procfs.into();
        // we hold descriptors (stdin at least, the kept files): 0 means an older kernel
        let fd_size_counts = std::fs::metadata(procfs.join("self/fd")).is_ok_and(|m| m.len() > 0);
        InsideReader {
            diskstats: KeptFile::new(procfs.join("diskstats")),
            net_dev: KeptFile::new(procfs.join("net/dev")),
            procfs,
            sysfs: sysfs.into(),
            disks: HashMap::new(),
            ifaces: HashMap::new(),
            diag_refused: false,
            listed: Vec::new(),
            listed_ms: None,
            fd_size_counts,
        }
    }

    fn open(&self, rel: &str) -> Option<BufReader<File>> {
        File::open(self.procfs.join(rel)).ok().map(BufReader::new)
    }

    /// Every line of `/proc/diskstats` (partitions included); empty when unreadable.
    pub fn diskstats(&mut self) -> Vec<DiskStat> {
        self.diskstats
            .read()
            .and_then(|b| DiskStats::from_buf_read(b).ok())
            .map(|d| d.0)
            .unwrap_or_default()
    }

    /// Whole block devices (those with a `/sys/block/<name>`, not partitions) with their
    /// rates since the previous call (0 at the first), and the wear indicator where the
    /// device has one. A device with a wear node but no diskstats line (a fixture tree)
    /// is listed with its wear and zero rates.
    pub fn block(&mut self, now_ms: i64) -> Vec<BlockDevice> {
        let stats = self.diskstats();
        self.block_from(now_ms, &stats)
    }

    /// [`Self::block`] from diskstats already read this tick.
    pub fn block_from(&mut self, now_ms: i64, stats: &[DiskStat]) -> Vec<BlockDevice> {
        if self
            .listed_ms
            .is_none_or(|t| now_ms - t >= BLOCK_RELIST_MS || now_ms < t)
        {
            self.relist_block();
            self.listed_ms = Some(now_ms);
        }
        let mut out = Vec::new();
        for l in &self.listed {
            let mut dev = BlockDevice {
                name: l.name.clone(),
                wear_pct: l.wear_pct,
                pre_eol: l.pre_eol,
                ..Default::default()
            };
            let Some(d) = stats.iter().find(|d| d.name == l.name) else {
                if dev.wear_pct.is_some() || dev.pre_eol.is_some() {
                    out.push(dev);
                }
                continue;
            };
            let c = DiskCounters {
                sectors_read: d.sectors_read,
                sectors_written: d.sectors_written,
                reads: d.reads,
                writes: d.writes,
                io_ticks_ms: d.time_in_progress,
            };
            if let Some((at, p)) = self.disks.insert(d.name.clone(), (now_ms, c)) {
                let dt_ms = (now_ms - at).max(1) as f64;
                let dt_s = dt_ms / 1000.0;
                dev.read_bytes_per_s = rate(c.sectors_read, p.sectors_read, dt_s) * SECTOR;
                dev.write_bytes_per_s = rate(c.sectors_written, p.sectors_written, dt_s) * SECTOR;
                dev.reads_per_s = rate(c.reads, p.reads, dt_s);
                dev.writes_per_s = rate(c.writes, p.writes, dt_s);
                dev.util_pct =
                    (c.io_ticks_ms.saturating_sub(p.io_ticks_ms) as f64 * 100.0 / dt_ms).min(100.0) as f32;
            }
            out.push(dev);
        }
        out
    }

    /// Lists `/sys/block` (whole devices only) and reads each one's wear indicator.
    fn relist_block(&mut self) {
        let block_dir = self.sysfs.join("block");
        self.listed.clear();
        if let Ok(dir) = std::fs::read_dir(&block_dir) {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !interesting_block(&name) {
                    continue;
                }
                let (wear_pct, pre_eol) = wear(&e.path());
                self.listed.push(Listed {
                    name,
                    wear_pct,
                    pre_eol,
                });
            }
        }
        self.listed.sort_by(|a, b| a.name.cmp(&b.name));
        self.disks.retain(|n, _| self.listed.iter().any(|l| &l.name == n));
    }

    /// Every interface of `/proc/net/dev` but loopback, with rates since the previous call.
    pub fn ifaces(&mut self, now_ms: i64) -> Vec<IfaceRates> {
        self.net(now_ms, 0.0).1
    }

    /// One read of `/proc/net/dev`: every interface's totals with their byte rates over
    /// `elapsed_s` (the record's `net`, loopback included; 0 at the first call), and the
    /// interfaces but loopback with all their rates and drops (the detail's `ifaces`).
    /// `elapsed_s` 0 takes the time since the interface's previous read.
    pub fn net(&mut self, now_ms: i64, elapsed_s: f64) -> (Vec<NetStats>, Vec<IfaceRates>) {
        let Some(all) = self
            .net_dev
            .read()
            .and_then(|r| InterfaceDeviceStatus::from_buf_read(r).ok())
        else {
            return (Vec::new(), Vec::new());
        };
        let mut totals = Vec::with_capacity(all.0.len());
        let mut rates = Vec::with_capacity(all.0.len());
        for d in all.0.into_values() {
            let c = IfaceCounters {
                rx_bytes: d.recv_bytes,
                tx_bytes: d.sent_bytes,
                rx_packets: d.recv_packets,
                tx_packets: d.sent_packets,
            };
            let mut t = NetStats {
                iface: d.name.clone(),
                rx_bytes: c.rx_bytes,
                tx_bytes: c.tx_bytes,
                rx_packets: c.rx_packets,
                tx_packets: c.tx_packets,
                rx_errors: d.recv_errs,
                tx_errors: d.sent_errs,
                ..Default::default()
            };
            let mut i = IfaceRates {
                iface: d.name.clone(),
                rx_errors: d.recv_errs,
                tx_errors: d.sent_errs,
                rx_drops: d.recv_drop,
                tx_drops: d.sent_drop,
                ..Default::default()
            };
            if let Some((at, p)) = self.ifaces.insert(d.name.clone(), (now_ms, c)) {
                let dt_s = (now_ms - at).max(1) as f64 / 1000.0;
                i.rx_bytes_per_s = rate(c.rx_bytes, p.rx_bytes, dt_s);
                i.tx_bytes_per_s = rate(c.tx_bytes, p.tx_bytes, dt_s);
                i.rx_packets_per_s = rate(c.rx_packets, p.rx_packets, dt_s);
                i.tx_packets_per_s = rate(c.tx_packets, p.tx_packets, dt_s);
                let dt_s = if elapsed_s > 0.0 { elapsed_s } else { dt_s };
                t.rx_bytes_per_s = rate(c.rx_bytes, p.rx_bytes, dt_s);
                t.tx_bytes_per_s = rate(c.tx_bytes, p.tx_bytes, dt_s);
            }
            if d.name != "lo" {
                rates.push(i);
            }
            totals.push(t);
        }
        totals.sort_by(|a, b| a.iface.cmp(&b.iface));
        rates.sort_by(|a, b| a.iface.cmp(&b.iface));
        (totals, rates)
    }

    /// TCP connections by state, IPv4 and IPv6 together: by netlink `sock_diag` when the
    /// procfs root is the machine's own `/proc` (a fixture or a host's `/proc` mounted
    /// elsewhere is read as text), else, or when netlink is refused, from the text tables.
    /// None if nothing is readable.
    pub fn tcp(&mut self) -> Option<TcpStates> {
        if self.procfs == Path::new("/proc") && !self.diag_refused {
            match super::sockdiag::tcp_states() {
                Ok(t) => return Some(t),
                Err(e) => {
                    tracing::warn!(error = %e, "netlink sock_diag refused; reading /proc/net/tcp instead");
                    self.diag_refused = true;
                }
            }
        }
        self.tcp_text()
    }

    /// TCP connections by state from `/proc/net/tcp` and `tcp6`; None if neither is readable.
    pub fn tcp_text(&self) -> Option<TcpStates> {
        // the parser needs no system figure for these tables
        let si = ExplicitSystemInfo {
            boot_time_secs: 0,
            ticks_per_second: 100,
            page_size: 4096,
            is_little_endian: cfg!(target_endian = "little"),
        };
        let mut t = TcpStates::default();
        let mut any = false;
        for table in ["net/tcp", "net/tcp6"] {
            let Some(entries) = self
                .open(table)
                .and_then(|r| TcpNetEntries::from_buf_read(r, &si).ok())
            else {
                continue;
            };
            any = true;
            for e in entries.0 {
                let n = match e.state {
                    TcpState::Established => &mut t.established,
                    TcpState::SynSent => &mut t.syn_sent,
                    TcpState::SynRecv | TcpState::NewSynRecv => &mut t.syn_recv,
                    TcpState::FinWait1 => &mut t.fin_wait1,
                    TcpState::FinWait2 => &mut t.fin_wait2,
                    TcpState::TimeWait => &mut t.time_wait,
                    TcpState::Close => &mut t.close,
                    TcpState::CloseWait => &mut t.close_wait,
                    TcpState::LastAck => &mut t.last_ack,
                    TcpState::Listen => &mut t.listen,
                    TcpState::Closing => &mut t.closing,
                };
                *n += 1;
            }
        }
        any.then_some(t)
    }

    /// Threads of the whole machine: `/proc/loadavg`'s count of scheduling entities.
    pub fn total_threads(&self) -> Option<u32> {
        self.open("loadavg")
            .and_then(|r| LoadAverage::from_read(r).ok())
            .map(|l| l.max)
    }

    /// The kernel's current name of a process (`/proc/PID/comm`): what exec and
    /// `prctl(PR_SET_NAME)` set, and what the health check matches. None when it is gone.
    pub fn comm(&self, pid: u32) -> Option<String> {
        let mut name = std::fs::read_to_string(self.procfs.join(format!("{pid}/comm"))).ok()?;
        name.truncate(name.trim_end_matches('\n').len());
        Some(name)
    }

    /// Open descriptors of one process. Listing `/proc/PID/fd` (what sysinfo's `open_files`
    /// does) makes the kernel look up every descriptor: 30 % of the agent's CPU in `perf`
    /// with a neighbour holding 4,000 sockets among the top processes. Since Linux 6.2 the
    /// directory's size is the count; earlier kernels (JetPack 5 and 6: 5.10, 5.15) list it.
    pub fn fd_count(&self, pid: u32) -> Option<u32> {
        let dir = self.procfs.join(format!("{pid}/fd"));
        if self.fd_size_counts {
            return std::fs::metadata(&dir)
                .ok()
                .and_then(|m| u32::try_from(m.len()).ok());
        }
        let n = std::fs::read_dir(&dir).ok()?.count();
        u32::try_from(n).ok()
    }

    /// Threads of one process (`/proc/PID/stat`).
    pub fn threads_of(&self, pid: u32) -> Option<u32> {
        let r = self.open(&format!("{pid}/stat"))?;
        procfs_core::process::Stat::from_read(r)
            .ok()
            .and_then(|s| u32::try_from(s.num_threads).ok())
    }
}

/// Reads `<dev>/device/life_time` and `pre_eol_info` (eMMC and some SD cards).
fn wear(dev_dir: &Path) -> (Option<f32>, Option<u8>) {
    let read = |f: &str| std::fs::read_to_string(dev_dir.join("device").join(f)).ok();
    (
        read("life_time").and_then(|t| parse_life_time(&t)),
        read("pre_eol_info").and_then(|t| parse_pre_eol(&t)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixture_tree_gives_rates_wear_drops_and_tcp_states() {
        let dir = tempfile::tempdir().unwrap();
        let proc_ = dir.path().join("proc");
        let sys = dir.path().join("sys");
        std::fs::create_dir_all(proc_.join("net")).unwrap();
        let mmc = sys.join("block/mmcblk0/device");
        std::fs::create_dir_all(&mmc).unwrap();
        std::fs::create_dir_all(sys.join("block/loop0")).unwrap();
        std::fs::write(mmc.join("life_time"), "0x03 0x09\n").unwrap();
        std::fs::write(mmc.join("pre_eol_info"), "0x02\n").unwrap();
        let disk = |reads: u64, sectors: u64, ticks: u64| {
            format!(
                "   7       0 loop0 1 0 2 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n \
                 179       0 mmcblk0 {reads} 0 {sectors} 10 {reads} 0 {sectors} 20 0 {ticks} 30 0 0 0 0 0 0\n \
                 179       1 mmcblk0p1 {reads} 0 {sectors} 10 {reads} 0 {sectors} 20 0 {ticks} 30 0 0 0 0 0 0\n"
            )
        };
        let netdev = |bytes: u64| {
            format!(
                "Inter-|   Receive                                                |  Transmit\n \
                 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
                 lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n  \
                 eth0: {bytes} 10 1 4 0 0 0 0 {bytes} 20 2 5 0 0 0 0\n"
            )
        };
        std::fs::write(proc_.join("diskstats"), disk(100, 1000, 0)).unwrap();
        std::fs::write(proc_.join("net/dev"), netdev(1000)).unwrap();
        std::fs::write(
            proc_.join("net/tcp"),
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
             0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0\n   \
             1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1\n",
        )
        .unwrap();
        std::fs::write(proc_.join("loadavg"), "0.50 0.40 0.30 2/1234 5678\n").unwrap();
        let mut r = InsideReader::new(&proc_, &sys);
        let first = r.block(0);
        assert_eq!(
            first.len(),
            1,
            "partitions and loop devices are left out: {first:?}"
        );
        assert_eq!(first[0].wear_pct, Some(90.0));
        assert_eq!(first[0].pre_eol, Some(2));
        r.ifaces(0);
        std::fs::write(proc_.join("diskstats"), disk(150, 3000, 500)).unwrap();
        std::fs::write(proc_.join("net/dev"), netdev(3000)).unwrap();
        let b = r.block(2000);
        assert_eq!(b[0].reads_per_s, 25.0);
        assert_eq!(b[0].read_bytes_per_s, 1000.0 * 512.0);
        assert_eq!(b[0].util_pct, 25.0);
        let i = r.ifaces(2000);
        assert_eq!(i.len(), 1, "loopback is left out");
        assert_eq!(
            (i[0].rx_bytes_per_s, i[0].rx_drops, i[0].tx_drops),
            (1000.0, 4, 5)
        );
        let t = r.tcp().unwrap();
        assert_eq!((t.listen, t.established), (1, 1));
        assert_eq!(r.total_threads(), Some(1234));
    }

    #[test]
    fn a_device_with_only_a_wear_node_is_listed_and_missing_files_give_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mmc = dir.path().join("sys/block/mmcblk1/device");
        std::fs::create_dir_all(&mmc).unwrap();
        std::fs::write(mmc.join("life_time"), "0x0a 0x01\n").unwrap();
        let mut r = InsideReader::new(dir.path().join("proc"), dir.path().join("sys"));
        let b = r.block(0);
        assert_eq!((b.len(), b[0].wear_pct), (1, Some(100.0)));
        assert!(r.ifaces(0).is_empty() && r.tcp().is_none() && r.total_threads().is_none());
    }

    /// One read of this machine's `/proc/net/dev` gives what sysinfo read from
    /// `/sys/class/net` (the agent's source before): the same interfaces and their totals.
    #[test]
    fn this_machines_interfaces_agree_with_sysinfo() {
        let mut r = InsideReader::new("/proc", "/sys");
        let (totals, rates) = r.net(0, 1.0);
        let nets = sysinfo::Networks::new_with_refreshed_list();
        let mut ours: Vec<&str> = totals.iter().map(|t| t.iface.as_str()).collect();
        let mut theirs: Vec<&str> = nets.list().keys().map(String::as_str).collect();
        ours.sort_unstable();
        theirs.sort_unstable();
        assert_eq!(ours, theirs);
        for t in &totals {
            let n = &nets.list()[&t.iface];
            // counters move between the two reads: within a megabyte and a thousand packets
            assert!(n.total_received().abs_diff(t.rx_bytes) < 1 << 20, "{t:?}");
            assert!(n.total_transmitted().abs_diff(t.tx_bytes) < 1 << 20, "{t:?}");
            assert!(n.total_packets_received().abs_diff(t.rx_packets) < 1000, "{t:?}");
            assert_eq!(n.total_errors_on_received(), t.rx_errors, "{t:?}");
        }
        assert!(rates.iter().all(|i| i.iface != "lo"));
        assert_eq!(rates.len() + usize::from(ours.contains(&"lo")), totals.len());
        // the second read gives rates over the elapsed time given
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (again, _) = r.net(1000, 1.0);
        assert!(again.iter().all(|t| t.rx_bytes_per_s >= 0.0));
    }

    /// Both ways of counting a process's descriptors agree on our own process, whatever
    /// this kernel supports (the listing is the fallback for kernels before 6.2).
    #[test]
    fn descriptors_are_counted_alike_by_size_and_by_listing() {
        let dir = tempfile::tempdir().unwrap();
        let _open: Vec<File> = (0..20)
            .map(|i| File::create(dir.path().join(i.to_string())).unwrap())
            .collect();
        let mut r = InsideReader::new("/proc", "/sys");
        let me = std::process::id();
        let by_size = r.fd_size_counts.then(|| r.fd_count(me));
        r.fd_size_counts = false;
        let listed = r.fd_count(me).unwrap();
        assert!(listed >= 20, "{listed}");
        if let Some(n) = by_size {
            // other tests open and close files meanwhile
            assert!(n.unwrap().abs_diff(listed) <= 10, "{n:?} / {listed}");
        }
        assert_eq!(r.fd_count(u32::MAX), None);
    }

    #[test]
    fn this_machine_has_threads_and_an_interface() {
        let mut r = InsideReader::new("/proc", "/sys");
        assert!(r.total_threads().is_some_and(|n| n > 1));
        assert!(r.threads_of(std::process::id()).is_some_and(|n| n >= 1));
        assert!(r.tcp().is_some());
        let _ = r.block(0);
        assert!(!r.ifaces(0).is_empty() || !Path::new("/proc/net/dev").exists());
    }
}
