//! CPU, memory, load and uptime from kept-open `/proc` files (and the CPU frequency from
//! `cpufreq`), reread each tick with `pread` (see [`super::kept`]).
//!
//! sysinfo opened, read and closed `/proc/stat`, `/proc/meminfo`, `/proc/loadavg`,
//! `/proc/uptime` and, for the frequency, one `scaling_cur_freq` per core every second (or,
//! without cpufreq, the whole `/proc/cpuinfo` once per core). The figures are the same as
//! sysinfo's: usage is busy ticks over all ticks between two reads, busy being everything
//! but `idle` and `iowait`; used memory is `MemTotal - MemAvailable`. sysinfo keeps the
//! process scan, which refreshes its own CPU times for the processes' shares.

use std::path::Path;

use common::{CpuStats, MemoryStats};

use super::kept::KeptFile;

/// Ticks of one CPU line of `/proc/stat`: busy and total (guest time is inside user).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTicks {
    pub busy: u64,
    pub total: u64,
}

/// The `cpu` lines of `/proc/stat`: the machine first, then each core in order. A line that
/// does not parse ends the list (the caller sees fewer cores than before and says nothing:
/// the file's format has not changed since Linux 2.6).
pub fn parse_stat(text: &str) -> Vec<CpuTicks> {
    let mut out = Vec::new();
    for line in text.lines() {
        if !line.starts_with("cpu") {
            // the cpu lines come first
            break;
        }
        // user nice system idle iowait irq softirq steal (guest guest_nice: inside user, nice)
        let mut f = line
            .split_ascii_whitespace()
            .skip(1)
            .take(8)
            .map(|v| v.parse::<u64>());
        let mut v = [0u64; 8];
        let mut n = 0;
        for (slot, x) in v.iter_mut().zip(&mut f) {
            match x {
                Ok(x) => *slot = x,
                Err(_) => return out,
            }
            n += 1;
        }
        if n < 4 {
            return out;
        }
        let total: u64 = v.iter().sum();
        out.push(CpuTicks {
            busy: total - v[3] - v[4],
            total,
        });
    }
    out
}

/// Share of `now` busy since `before`, in percent; 0 when no tick passed.
pub fn usage_pct(now: CpuTicks, before: CpuTicks) -> f32 {
    let total = now.total.saturating_sub(before.total);
    if total == 0 {
        return 0.0;
    }
    (now.busy.saturating_sub(before.busy) as f64 * 100.0 / total as f64).min(100.0) as f32
}

/// `/proc/meminfo` in bytes; None without `MemTotal`. Without `MemAvailable` (Linux before
/// 3.14) available is free + buffers + cached, as sysinfo estimates it.
pub fn parse_meminfo(text: &str) -> Option<MemoryStats> {
    let (mut total, mut avail, mut free, mut buffers, mut cached) = (None, None, 0, 0, 0);
    let (mut swap_total, mut swap_free) = (0, 0);
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let Some(kib) = rest
            .split_ascii_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        else {
            continue;
        };
        let bytes = kib.saturating_mul(1024);
        match key {
            "MemTotal" => total = Some(bytes),
            "MemAvailable" => avail = Some(bytes),
            "MemFree" => free = bytes,
            "Buffers" => buffers = bytes,
            "Cached" => cached = bytes,
            "SwapTotal" => swap_total = bytes,
            "SwapFree" => swap_free = bytes,
            _ => {}
        }
    }
    let total = total?;
    let available = avail.unwrap_or(free + buffers + cached).min(total);
    Some(MemoryStats {
        total_bytes: total,
        used_bytes: total - available,
        available_bytes: available,
        swap_total_bytes: swap_total,
        swap_used_bytes: swap_total.saturating_sub(swap_free),
    })
}

/// The three load averages of `/proc/loadavg`.
pub fn parse_loadavg(text: &str) -> Option<[f32; 3]> {
    let mut f = text.split_ascii_whitespace().map(|v| v.parse::<f32>().ok());
    Some([f.next()??, f.next()??, f.next()??])
}

/// Whole seconds of `/proc/uptime`.
pub fn parse_uptime(text: &str) -> Option<u64> {
    let first = text.split_ascii_whitespace().next()?;
    first.split('.').next()?.parse().ok()
}

/// The kept-open files and the previous CPU ticks.
#[derive(Debug)]
pub struct HostReader {
    stat: KeptFile,
    meminfo: KeptFile,
    loadavg: KeptFile,
    uptime: KeptFile,
    /// `cpuN/cpufreq/scaling_cur_freq` per core, kHz; empty where the kernel has no cpufreq
    /// (then the caller asks sysinfo, at the process scan's cadence).
    freq: Vec<KeptFile>,
    prev: Vec<CpuTicks>,
}

impl HostReader {
    pub fn new(procfs: &Path, sysfs: &Path) -> Self {
        let mut r = HostReader {
            stat: KeptFile::new(procfs.join("stat")),
            meminfo: KeptFile::new(procfs.join("meminfo")),
            loadavg: KeptFile::new(procfs.join("loadavg")),
            uptime: KeptFile::new(procfs.join("uptime")),
            freq: Vec::new(),
            prev: Vec::new(),
        };
        // the first tick's usage is then over the time since start, as sysinfo's was
        r.prev = r.stat.read_str().map(parse_stat).unwrap_or_default();
        let cores = r.prev.len().saturating_sub(1);
        let freq: Vec<KeptFile> = (0..cores)
            .map(|i| KeptFile::new(sysfs.join(format!("devices/system/cpu/cpu{i}/cpufreq/scaling_cur_freq"))))
            .collect();
        if freq.first().is_some_and(|f| f.path().exists()) {
            r.freq = freq;
        }
        r
    }

    /// Usage of the machine and of each core since the previous call; None when
    /// `/proc/stat` is unreadable.
    pub fn cpu(&mut self) -> Option<(f32, Vec<f32>)> {
        let now = parse_stat(self.stat.read_str()?);
        let (total, cores) = now.split_first()?;
        let before = |i: usize| self.prev.get(i).copied().unwrap_or_default();
        let usage = usage_pct(*total, before(0));
        let per_core = cores
            .iter()
            .enumerate()
            .map(|(i, c)| usage_pct(*c, before(i + 1)))
            .collect();
        self.prev = now;
        Some((usage, per_core))
    }

    pub fn has_cpufreq(&self) -> bool {
        !self.freq.is_empty()
    }

    /// Each core's current frequency in MHz, or None without cpufreq.
    pub fn freq_mhz(&mut self) -> Option<Vec<u32>> {
        if self.freq.is_empty() {
            return None;
        }
        Some(
            self.freq
                .iter_mut()
                .map(|f| {
                    f.read_str()
                        .and_then(|t| t.trim().parse::<u64>().ok())
                        .map_or(0, |khz| (khz / 1000) as u32)
                })
                .collect(),
        )
    }

    pub fn memory(&mut self) -> Option<MemoryStats> {
        parse_meminfo(self.meminfo.read_str()?)
    }

    pub fn load(&mut self) -> Option<[f32; 3]> {
        parse_loadavg(self.loadavg.read_str()?)
    }

    pub fn uptime_s(&mut self) -> Option<u64> {
        parse_uptime(self.uptime.read_str()?)
    }

    /// The whole CPU figure but the frequency (the caller fills it).
    pub fn cpu_stats(&mut self) -> CpuStats {
        let (usage_pct, per_core_pct) = self.cpu().unwrap_or_default();
        let [load1, load5, load15] = self.load().unwrap_or_default();
        CpuStats {
            usage_pct,
            per_core_pct,
            freq_mhz: Vec::new(),
            load1,
            load5,
            load15,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/stat` in the kernel's format for six cores (numbers made up for the arithmetic,
    /// the `intr` line cut); the real file is read in `this_machine_agrees_with_sysinfo`.
    const ORIN_STAT: &str = "cpu  3507 0 2990 1213372 437 0 152 0 0 0\n\
cpu0 1058 0 901 201093 88 0 92 0 0 0\n\
cpu1 472 0 428 202498 58 0 13 0 0 0\n\
cpu2 497 0 421 202437 82 0 12 0 0 0\n\
cpu3 487 0 431 202473 74 0 12 0 0 0\n\
cpu4 498 0 406 202459 69 0 11 0 0 0\n\
cpu5 495 0 403 202412 66 0 12 0 0 0\n\
intr 1262064 0 0 0 0\n\
ctxt 2046127\n\
btime 1733600000\n\
processes 4171\n\
procs_running 1\n\
procs_blocked 0\n\
softirq 552946 0 92071 3 5165 0 0 15236 234066 0 206405\n";

    #[test]
    fn proc_stat_gives_the_machine_then_each_core() {
        let t = parse_stat(ORIN_STAT);
        assert_eq!(t.len(), 7);
        assert_eq!(t[0].total, 3507 + 2990 + 1213372 + 437 + 152);
        assert_eq!(t[0].busy, 3507 + 2990 + 152);
        assert_eq!(t[1].busy, 1058 + 901 + 92);
        let later = CpuTicks {
            busy: t[1].busy + 25,
            total: t[1].total + 100,
        };
        assert_eq!(usage_pct(later, t[1]), 25.0);
        assert_eq!(usage_pct(t[1], t[1]), 0.0, "no tick passed");
        // a 2.6.11-era line without iowait and the rest still parses; garbage ends the list
        assert_eq!(parse_stat("cpu 1 2 3 4\ncpu0 x\n").len(), 1);
    }

    /// This machine's files, read through the kept-open reader, agree with sysinfo's reading.
    #[test]
    fn this_machine_agrees_with_sysinfo() {
        let mut h = HostReader::new(Path::new("/proc"), Path::new("/sys"));
        let mut s = sysinfo::System::new();
        s.refresh_memory();
        let m = h.memory().unwrap();
        assert_eq!(m.total_bytes, s.total_memory());
        assert_eq!(m.swap_total_bytes, s.total_swap());
        // available moves between the two reads; within 64 MiB
        assert!(m.available_bytes.abs_diff(s.available_memory()) < 64 << 20);
        let (_, cores) = h.cpu().unwrap();
        assert_eq!(
            cores.len(),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        // burn a core a little: the next read shows some use
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(300) {
            std::hint::black_box(0u64);
        }
        let (usage, cores) = h.cpu().unwrap();
        assert!(usage > 0.0 && usage <= 100.0, "{usage}");
        assert!(cores.iter().all(|c| (0.0..=100.0).contains(c)));
        assert!(h.load().is_some());
        let up = h.uptime_s().unwrap();
        assert!(up.abs_diff(sysinfo::System::uptime()) <= 1);
        // this machine has no cpufreq (a VM): None, and the caller asks sysinfo
        if !Path::new("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq").exists() {
            assert!(h.freq_mhz().is_none());
        } else {
            assert!(h.freq_mhz().unwrap().iter().all(|f| *f > 0));
        }
    }

    #[test]
    fn meminfo_in_bytes_with_the_estimate_for_old_kernels() {
        // the format of the kernel's file (values made up; NvMapMemUsed as on a Jetson)
        let now = "MemTotal:        7620656 kB\nMemFree:          402512 kB\n\
MemAvailable:    5327404 kB\nBuffers:           76500 kB\nCached:          4736412 kB\n\
SwapCached:            0 kB\nSwapTotal:       3810304 kB\nSwapFree:        3800064 kB\n\
NvMapMemUsed:     181396 kB\n";
        let m = parse_meminfo(now).unwrap();
        assert_eq!(m.total_bytes, 7620656 * 1024);
        assert_eq!(m.used_bytes, (7620656 - 5327404) * 1024);
        assert_eq!(m.swap_used_bytes, (3810304 - 3800064) * 1024);
        let old = now.replace("MemAvailable:    5327404 kB\n", "");
        let m = parse_meminfo(&old).unwrap();
        assert_eq!(m.available_bytes, (402512 + 76500 + 4736412) * 1024);
        assert!(parse_meminfo("garbage\n").is_none());
        assert_eq!(
            parse_loadavg("0.52 0.58 0.59 2/1234 5678\n"),
            Some([0.52, 0.58, 0.59])
        );
        assert_eq!(parse_uptime("35.21 120.10\n"), Some(35));
    }
}
