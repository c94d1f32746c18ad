//! The machine itself. Every tick: CPU, memory, load and uptime from kept-open `/proc`
//! files ([`super::host`]), interfaces from one read of `/proc/net/dev` and disk I/O from one
//! of `/proc/diskstats` ([`super::inside`]), space by `statvfs`, temperatures through
//! sysinfo's components. sysinfo lists the mounts and the sensors and scans the processes,
//! at the scan's cadence (every 10 s; the watched processes every tick). Only the refresh
//! kinds needed are asked for: a full `refresh_all` also reads every thread, command line and
//! environment.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;

use common::{
    Detail, DiskStats, ProcessInfo, ProcessStats, ProcessTable, Reading, TOP_N, TcpStates, Telemetry,
};
use sysinfo::{
    Components, CpuRefreshKind, DiskRefreshKind, Disks, Pid, Process, ProcessRefreshKind, ProcessStatus,
    ProcessesToUpdate, System, UpdateKind, Users,
};

use super::host::HostReader;
use super::inside::InsideReader;

/// Top processes (by CPU) reported after each full process scan.
pub const TOP_PROCESSES: usize = 5;

/// What to collect beyond the fixed set.
#[derive(Debug, Clone)]
pub struct SystemOptions {
    pub interval_ms: u32,
    /// Process names (as in `/proc/PID/comm`) read every tick.
    pub watch: Vec<String>,
    /// The full process table is scanned this often (top processes, rediscovery): it costs
    /// about 50 µs per process, too much for every tick on a busy machine.
    pub scan_every_ms: i64,
    /// Roots of `/proc` and `/sys` (`[paths]`), for what sysinfo does not read.
    pub procfs: PathBuf,
    pub sysfs: PathBuf,
}

impl Default for SystemOptions {
    fn default() -> Self {
        SystemOptions {
            interval_ms: 1000,
            watch: Vec::new(),
            scan_every_ms: 10_000,
            procfs: PathBuf::from("/proc"),
            sysfs: PathBuf::from("/sys"),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Watched {
    pid: Option<Pid>,
    restarts_seen: u32,
}

pub struct SystemSource {
    sys: System,
    host: HostReader,
    /// The mounts (sysinfo's list, relisted at `lists_at_ms`) with each one's
    /// `/proc/diskstats` name (the device, `/dev/mapper` links resolved).
    disks: Disks,
    disk_devs: Vec<String>,
    /// sysinfo's sensors, relisted at `lists_at_ms`, each reread every tick.
    components: Components,
    lists_at_ms: Option<i64>,
    /// Per-disk sector counters of the previous tick, by diskstats name.
    disk_io: HashMap<String, (u64, u64)>,
    /// The cores' frequencies where the kernel has no cpufreq: sysinfo's reading of
    /// `/proc/cpuinfo`, refreshed at the scan's cadence (each read of it costs the kernel
    /// a frequency measurement per core).
    freq_mhz: Vec<u32>,
    last_ms: Option<i64>,
    opts: SystemOptions,
    watched: HashMap<String, Watched>,
    last_scan_ms: Option<i64>,
    top: Vec<ProcessStats>,
    /// The process table of the next record: the counts and top lists of a full scan made
    /// since the last record (taken by it: the others carry only the watched list, every
    /// tick), so the scan-only parts travel once per scan instead of in every record.
    table: ProcessTable,
    inside: InsideReader,
    /// User names by uid, read once: a new account appears as its uid until a restart.
    users: Users,
    /// When each watched process was last refreshed (its I/O counters are since then).
    watched_at_ms: Option<i64>,
    /// TCP connections by state as of `tcp_at_ms`, read at the process scan's cadence:
    /// reading `/proc/net/tcp` and `tcp6` cost 7.9 ms of kernel time with 50 sockets on the
    /// bench machine (the kernel walks its whole connection hash table, however few sockets
    /// there are), which every second made the agent busier than node_exporter. Netlink
    /// `sock_diag` (see `sockdiag`) replaced the text tables where it is allowed; it walks
    /// the same hash table (7.6 % of the agent's CPU in `perf` at this cadence).
    tcp: Option<TcpStates>,
    tcp_at_ms: Option<i64>,
    /// Each process's current name (`/proc/PID/comm`), read at every full scan for every
    /// process and every tick for the watched ones. sysinfo keeps the name it saw first: it
    /// rereads a known pid's name only when the pid's start time changed, so a process that
    /// renamed itself (`prctl(PR_SET_NAME)`, or exec, which keeps pid and start time) kept
    /// its old name, and the watch missed it while the health check (comm) found it.
    names: HashMap<Pid, String>,
}

impl SystemSource {
    pub fn new(interval_ms: u32) -> Self {
        Self::with_options(SystemOptions {
            interval_ms,
            ..Default::default()
        })
    }

    pub fn with_options(opts: SystemOptions) -> Self {
        let inside = InsideReader::new(opts.procfs.clone(), opts.sysfs.clone());
        SystemSource {
            sys: System::new(),
            host: HostReader::new(&opts.procfs, &opts.sysfs),
            disks: Disks::new(),
            disk_devs: Vec::new(),
            components: Components::new(),
            lists_at_ms: None,
            disk_io: HashMap::new(),
            freq_mhz: Vec::new(),
            last_ms: None,
            watched: opts
                .watch
                .iter()
                .map(|n| (n.clone(), Watched::default()))
                .collect(),
            opts,
            last_scan_ms: None,
            top: Vec::new(),
            table: ProcessTable::default(),
            inside,
            users: Users::new_with_refreshed_list(),
            watched_at_ms: None,
            tcp: None,
            tcp_at_ms: None,
            names: HashMap::new(),
        }
    }

    /// Relists the mounts and the sensors (and, without cpufreq, the cores' frequencies):
    /// each costs directory walks and a read of `/proc/mounts` or `/proc/cpuinfo`, too much
    /// for every tick, and they change about never.
    fn relist(&mut self, now_ms: i64) {
        self.lists_at_ms = Some(now_ms);
        // the list only: space and I/O are read each tick (statvfs, diskstats)
        self.disks.refresh_specifics(true, DiskRefreshKind::nothing());
        self.disk_devs = self.disks.iter().map(|d| diskstats_name(d.name())).collect();
        self.components.refresh(true);
        if !self.host.has_cpufreq() {
            self.sys
                .refresh_cpu_specifics(CpuRefreshKind::nothing().with_frequency());
            self.freq_mhz = self.sys.cpus().iter().map(|c| c.frequency() as u32).collect();
        }
    }

    /// One process as the detail reports it; its I/O counters cover the last `dt_s`.
    fn info(&self, pid: Pid, p: &Process, dt_s: f64) -> ProcessInfo {
        let io = p.disk_usage();
        let user = p.user_id().map(|u| {
            self.users
                .get_user_by_id(u)
                .map_or_else(|| u.to_string(), |n| n.name().to_string())
        });
        ProcessInfo {
            pid: pid.as_u32(),
            name: self.name_of(pid, p).into_owned(),
            user: user.unwrap_or_default(),
            state: p.status().to_string(),
            threads: self.inside.threads_of(pid.as_u32()),
            fds: self.inside.fd_count(pid.as_u32()),
            cpu_pct: p.cpu_usage(),
            rss_bytes: p.memory(),
            read_bytes_per_s: Some(io.read_bytes as f64 / dt_s),
            write_bytes_per_s: Some(io.written_bytes as f64 / dt_s),
            start_time_s: p.start_time(),
        }
    }

    /// A process's current name: comm as last read, else sysinfo's (its first) name.
    fn name_of<'a>(&'a self, pid: Pid, p: &'a Process) -> Cow<'a, str> {
        self.names
            .get(&pid)
            .map_or_else(|| p.name().to_string_lossy(), |n| Cow::Borrowed(n.as_str()))
    }

    /// Rereads the name of every process in the table (after a full refresh): one small
    /// read each, beside the stat, statm and io files the refresh itself reads per process
    /// (88 processes: 0.5 to 0.8 ms in a debug build, against 24 ms for the whole collection
    /// with its full scan; 2026-12-07, this 2-core machine).
    fn refresh_names(&mut self) {
        let procs = self.sys.processes();
        self.names.retain(|pid, _| procs.contains_key(pid));
        for pid in procs.keys() {
            match self.inside.comm(pid.as_u32()) {
                Some(n) => {
                    self.names.insert(*pid, n);
                }
                None => {
                    self.names.remove(pid);
                }
            }
        }
    }

    /// The running process of watch `name`: its pid is still alive and still so named.
    fn current(&self, name: &str, w: &Watched) -> Option<(Pid, &Process)> {
        let pid = w.pid?;
        let p = self.sys.process(pid)?;
        (self.name_of(pid, p) == name).then_some((pid, p))
    }

    /// Counts and top lists of a full scan (the table's watched list is left alone).
    fn scan_table(&mut self, dt_s: f64) {
        let procs = self.sys.processes();
        let zombies = procs
            .values()
            .filter(|p| p.status() == ProcessStatus::Zombie)
            .count();
        let top = |key: &dyn Fn(&Process) -> f64| {
            let mut all: Vec<(&Pid, &Process)> = procs.iter().collect();
            all.sort_by(|a, b| key(b.1).total_cmp(&key(a.1)).then(a.0.cmp(b.0)));
            all.truncate(TOP_N);
            all.into_iter()
                .map(|(pid, p)| self.info(*pid, p, dt_s))
                .collect::<Vec<_>>()
        };
        let top_cpu = top(&|p| p.cpu_usage() as f64);
        let top_mem = top(&|p| p.memory() as f64);
        self.table = ProcessTable {
            total: u32::try_from(procs.len()).unwrap_or(u32::MAX),
            threads: self.inside.total_threads(),
            zombies: u32::try_from(zombies).unwrap_or(u32::MAX),
            scanned: true,
            top_cpu,
            top_mem,
            watched: std::mem::take(&mut self.table.watched),
        };
    }

    fn processes(&mut self, now_ms: i64) -> Vec<ProcessStats> {
        // without tasks: sysinfo would list every thread as a process of its own (the top
        // lists filled with one program's threads, the count inflated, the table 10x larger)
        let kind = ProcessRefreshKind::nothing()
            .without_tasks()
            .with_cpu()
            .with_memory()
            .with_disk_usage()
            .with_user(UpdateKind::OnlyIfNotSet);
        let since_scan_s = self
            .last_scan_ms
            .map_or(self.opts.scan_every_ms as f64, |t| (now_ms - t).max(1) as f64)
            / 1000.0;
        // a watched process may have renamed itself away since the last tick
        for w in self.watched.values() {
            if let Some(pid) = w.pid {
                match self.inside.comm(pid.as_u32()) {
                    Some(n) => self.names.insert(pid, n),
                    None => self.names.remove(&pid),
                };
            }
        }
        let lost = self
            .watched
            .iter()
            .any(|(name, w)| self.current(name, w).is_none());
        let scan_due = self
            .last_scan_ms
            .is_none_or(|t| now_ms - t >= self.opts.scan_every_ms);
        if scan_due
            || (lost && !self.watched.is_empty() && self.last_scan_ms.is_none_or(|t| now_ms - t >= 1000))
        {
            self.sys
                .refresh_processes_specifics(ProcessesToUpdate::All, true, kind);
            self.last_scan_ms = Some(now_ms);
            self.refresh_names();
            let mut all: Vec<ProcessStats> = self
                .sys
                .processes()
                .iter()
                .map(|(pid, p)| ProcessStats {
                    name: self.name_of(*pid, p).into_owned(),
                    pid: pid.as_u32(),
                    running: true,
                    watched: false,
                    cpu_pct: p.cpu_usage(),
                    rss_bytes: p.memory(),
                    state: p.status().to_string(),
                    restarts_seen: 0,
                })
                .collect();
            all.sort_by(|a, b| b.cpu_pct.total_cmp(&a.cpu_pct));
            for (name, w) in self.watched.iter_mut() {
                let found = self
                    .sys
                    .processes()
                    .keys()
                    .find(|pid| self.names.get(pid) == Some(name))
                    .copied();
                if found.is_some() && w.pid.is_some() && found != w.pid {
                    w.restarts_seen += 1;
                }
                if found.is_some() {
                    w.pid = found;
                }
            }
            all.truncate(TOP_PROCESSES);
            self.top = all;
            self.scan_table(since_scan_s);
        } else if !self.watched.is_empty() {
            let pids: Vec<Pid> = self.watched.values().filter_map(|w| w.pid).collect();
            self.sys
                .refresh_processes_specifics(ProcessesToUpdate::Some(&pids), true, kind);
        }
        let since_watched_s = self
            .watched_at_ms
            .map_or(self.opts.interval_ms as f64, |t| (now_ms - t).max(1) as f64)
            / 1000.0;
        self.watched_at_ms = Some(now_ms);
        let mut watched: Vec<ProcessInfo> = self
            .watched
            .iter()
            .filter_map(|(name, w)| {
                let (pid, p) = self.current(name, w)?;
                let mut i = self.info(pid, p, since_watched_s);
                // the configured name, as the rules name it
                i.name = name.clone();
                Some(i)
            })
            .collect();
        watched.sort_by(|a, b| a.name.cmp(&b.name));
        self.table.watched = watched;
        let mut out: Vec<ProcessStats> = self
            .watched
            .iter()
            .map(|(name, w)| match self.current(name, w) {
                Some((pid, p)) => ProcessStats {
                    name: name.clone(),
                    pid: pid.as_u32(),
                    running: true,
                    watched: true,
                    cpu_pct: p.cpu_usage(),
                    rss_bytes: p.memory(),
                    state: p.status().to_string(),
                    restarts_seen: w.restarts_seen,
                },
                None => ProcessStats {
                    name: name.clone(),
                    watched: true,
                    state: "not running".into(),
                    restarts_seen: w.restarts_seen,
                    ..Default::default()
                },
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.extend(
            self.top
                .iter()
                .filter(|t| !self.watched.contains_key(&t.name))
                .cloned(),
        );
        out
    }
}

/// Bytes total, bytes available, and inodes (total, used) when the filesystem counts them.
type Space = (u64, u64, Option<(u64, u64)>);

/// Space of a mounted filesystem by `statvfs`: bytes total and available, inodes total and
/// used (None when the filesystem has no inode count); None when it cannot be asked.
fn space(mount: &std::path::Path) -> Option<Space> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(mount.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    // the block size sysinfo used (f_bsize; equal to f_frsize on the filesystems we meet)
    let bsize = st.f_bsize as u64;
    let total = bsize.saturating_mul(st.f_blocks as u64);
    let avail = bsize.saturating_mul(st.f_bavail as u64);
    let files = st.f_files as u64;
    let inodes = (files > 0).then(|| (files, files.saturating_sub(st.f_ffree as u64)));
    Some((total, avail, inodes))
}

/// The `/proc/diskstats` name of a mount's device: `/dev/mmcblk0p1` is `mmcblk0p1`, a
/// `/dev/mapper` link is resolved to its `dm-N` (as sysinfo names it).
fn diskstats_name(device: &std::ffi::OsStr) -> String {
    let p = std::path::Path::new(device);
    let real = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    real.strip_prefix("/dev")
        .unwrap_or(&real)
        .to_string_lossy()
        .into_owned()
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
            .unwrap_or(self.opts.interval_ms as f64 / 1000.0);
        self.last_ms = Some(now_ms);

        if self
            .lists_at_ms
            .is_none_or(|t| now_ms - t >= self.opts.scan_every_ms || now_ms < t)
        {
            self.relist(now_ms);
        } else {
            for c in self.components.iter_mut() {
                c.refresh();
            }
        }
        let mut cpu = self.host.cpu_stats();
        cpu.freq_mhz = self.host.freq_mhz().unwrap_or_else(|| self.freq_mhz.clone());
        let memory = self.host.memory().unwrap_or_default();
        let stats = self.inside.diskstats();
        let disks = self
            .disks
            .iter()
            .zip(&self.disk_devs)
            .filter(|(d, _)| interesting_fs(&d.file_system().to_string_lossy()))
            .map(|(d, dev)| {
                let (total, avail, ino) = space(d.mount_point()).unwrap_or_default();
                let mut s = DiskStats {
                    mount: d.mount_point().to_string_lossy().into_owned(),
                    fs: d.file_system().to_string_lossy().into_owned(),
                    total_bytes: total,
                    used_bytes: total.saturating_sub(avail),
                    inodes_total: ino.map(|i| i.0),
                    inodes_used: ino.map(|i| i.1),
                    read_bytes_per_s: None,
                    write_bytes_per_s: None,
                };
                if let Some(st) = stats.iter().find(|s| &s.name == dev) {
                    let now = (st.sectors_read, st.sectors_written);
                    let (r, w) = self.disk_io.get(dev).copied().unwrap_or(now);
                    s.read_bytes_per_s = Some(now.0.saturating_sub(r) as f64 * 512.0 / elapsed_s);
                    s.write_bytes_per_s = Some(now.1.saturating_sub(w) as f64 * 512.0 / elapsed_s);
                }
                s
            })
            .collect();
        self.disk_io = self
            .disk_devs
            .iter()
            .filter_map(|dev| {
                let st = stats.iter().find(|s| &s.name == dev)?;
                Some((dev.clone(), (st.sectors_read, st.sectors_written)))
            })
            .collect();
        let (net, ifaces) = self.inside.net(now_ms, elapsed_s);
        let temperatures = self
            .components
            .iter()
            .filter_map(|c| c.temperature().map(|t| Reading::new(c.label(), t as f64)))
            .filter(|r| r.value.is_finite())
            .collect();
        let processes = self.processes(now_ms);
        if self
            .tcp_at_ms
            .is_none_or(|t| now_ms - t >= self.opts.scan_every_ms || now_ms < t)
        {
            self.tcp = self.inside.tcp();
            self.tcp_at_ms = Some(now_ms);
        }
        let detail = Detail {
            // taken: the next record carries the scan's counts and top lists only if it scans
            // again (the server keeps the last scanned table per machine)
            procs: std::mem::take(&mut self.table),
            ifaces,
            tcp: self.tcp,
            block: self.inside.block_from(now_ms, &stats),
            // the link measures the broker path and adds it (see `link`)
            broker: Default::default(),
        };
        Telemetry {
            interval_ms: self.opts.interval_ms,
            uptime_s: self.host.uptime_s().unwrap_or_else(System::uptime),
            cpu,
            memory,
            disks,
            net,
            temperatures,
            processes,
            gpu: None,
            app: Vec::new(),
            detail,
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
    fn a_watched_process_is_found_and_a_missing_one_reported_not_running() {
        let me = std::fs::read_to_string("/proc/self/comm")
            .unwrap()
            .trim()
            .to_string();
        let mut s = SystemSource::with_options(SystemOptions {
            interval_ms: 1000,
            watch: vec![me.clone(), "no-such-proc".into()],
            scan_every_ms: 10_000,
            ..Default::default()
        });
        let t = s.collect(common::time::now_ms());
        let mine = t.processes.iter().find(|p| p.name == me).unwrap();
        assert!(mine.running && mine.watched && mine.pid == std::process::id());
        let gone = t.processes.iter().find(|p| p.name == "no-such-proc").unwrap();
        assert!(!gone.running && gone.watched);
        assert!(
            t.processes.iter().any(|p| !p.watched),
            "top processes from the full scan"
        );
        assert!(t.disks.iter().any(|d| d.inodes_total.is_some()), "{:?}", t.disks);
    }

    /// The scan-only parts of the process table (counts, top lists) travel in the record of
    /// the scan that made them; the records between scans carry the watched processes only.
    #[test]
    fn only_the_record_of_a_scan_carries_the_scanned_table() {
        let me = std::fs::read_to_string("/proc/self/comm")
            .unwrap()
            .trim()
            .to_string();
        let mut s = SystemSource::with_options(SystemOptions {
            interval_ms: 1000,
            watch: vec![me.clone()],
            scan_every_ms: 10_000,
            ..Default::default()
        });
        let t0 = common::time::now_ms();
        let first = s.collect(t0).detail.procs;
        assert!(first.scanned && first.total > 0, "{first:?}");
        assert!(!first.top_cpu.is_empty() && !first.top_mem.is_empty());
        assert_eq!(first.watched.len(), 1);
        for k in 1..10 {
            let p = s.collect(t0 + k * 1000).detail.procs;
            assert!(!p.scanned, "tick {k}: {p:?}");
            assert_eq!((p.total, p.zombies, p.threads), (0, 0, None), "tick {k}");
            assert!(p.top_cpu.is_empty() && p.top_mem.is_empty(), "tick {k}");
            let w = p.watched.iter().find(|w| w.name == me);
            assert_eq!(w.map(|w| w.pid), Some(std::process::id()), "tick {k}: watched");
        }
        let again = s.collect(t0 + 10_000).detail.procs;
        assert!(
            again.scanned && again.total > 0 && !again.top_mem.is_empty(),
            "{again:?}"
        );
        assert_eq!(again.watched.len(), 1);
    }
    #[test]
    fn collects_real_memory_and_cpu_figures() {
        let mut s = SystemSource::new(1000);
        let t = s.collect(common::time::now_ms());
        // the mounts and their space as sysinfo reads them (statvfs both; space moves)
        let d = sysinfo::Disks::new_with_refreshed_list();
        for ours in &t.disks {
            let theirs = d
                .iter()
                .find(|x| x.mount_point().to_string_lossy() == ours.mount)
                .unwrap();
            assert_eq!(ours.total_bytes, theirs.total_space(), "{ours:?}");
            let used = theirs.total_space() - theirs.available_space();
            assert!(ours.used_bytes.abs_diff(used) < 256 << 20, "{ours:?}");
        }
        assert!(!t.disks.is_empty() && !t.net.is_empty());
        assert!(
            t.disks.iter().any(|d| d.read_bytes_per_s.is_some()),
            "{:?}",
            t.disks
        );
        let s2 = SystemSource::new(1000).collect(common::time::now_ms());
        assert_eq!(s2.memory.total_bytes, t.memory.total_bytes);
        assert!(t.memory.total_bytes > 0);
        assert!(!t.cpu.per_core_pct.is_empty());
        assert!(t.uptime_s > 0);
    }

    /// A child that renames itself after the collector first saw it: by `prctl(PR_SET_NAME)`
    /// (python3) and by exec through a link (sh). sysinfo keeps a process's first name (it
    /// never rereads it for a pid whose start time is unchanged), so the watch must read comm.
    #[test]
    fn a_watched_process_that_renamed_itself_after_first_sight_is_found_under_its_new_name() {
        use std::io::Write;
        use std::process::{Command, Stdio};
        struct Kill(std::process::Child);
        impl Drop for Kill {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("ex-renamed");
        std::os::unix::fs::symlink(std::fs::canonicalize("/bin/sleep").unwrap(), &link).unwrap();
        // both wait for a line on stdin, then rename themselves and sleep
        let prctl = r#"
import ctypes, sys, time
sys.stdin.readline()
ctypes.CDLL(None).prctl(15, b"pr-renamed", 0, 0, 0)
time.sleep(60)
"#;
        let spawn = |cmd: &mut Command| {
            Kill(
                cmd.stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("python3 and sh"),
            )
        };
        let mut py = spawn(Command::new("python3").arg("-c").arg(prctl));
        let mut sh = spawn(
            Command::new("sh")
                .arg("-c")
                .arg(format!("read x; exec {} 60", link.display())),
        );
        let comm = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let mut s = SystemSource::with_options(SystemOptions {
            interval_ms: 1000,
            watch: vec!["pr-renamed".into(), "ex-renamed".into()],
            scan_every_ms: 10_000,
            ..Default::default()
        });
        // the first scan sees both under their first names
        let t0 = common::time::now_ms();
        while !comm(py.0.id()).starts_with("python") || !comm(sh.0.id()).starts_with("sh") {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let t = s.collect(t0);
        assert!(
            t.processes.iter().filter(|p| p.watched).all(|p| !p.running),
            "{:?}",
            t.processes
        );
        for c in [&mut py, &mut sh] {
            c.0.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while comm(py.0.id()).trim() != "pr-renamed" || comm(sh.0.id()).trim() != "ex-renamed" {
            assert!(
                std::time::Instant::now() < deadline,
                "the children did not rename themselves"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // a watched process is missing: the next tick a second later scans again
        let t = s.collect(t0 + 1_500);
        for (name, child) in [("pr-renamed", &py), ("ex-renamed", &sh)] {
            let p = t.processes.iter().find(|p| p.name == name).unwrap();
            assert!(p.watched && p.running, "{name}: {p:?}");
            assert_eq!(p.pid, child.0.id(), "{name}");
            let w = t.detail.procs.watched.iter().find(|w| w.name == name);
            assert_eq!(w.map(|w| w.pid), Some(child.0.id()), "{name} in the detail");
        }
        // and keeps finding them tick after tick, between full scans
        let t = s.collect(t0 + 2_500);
        assert!(
            t.processes.iter().filter(|p| p.watched).all(|p| p.running),
            "{:?}",
            t.processes
        );
    }
}
