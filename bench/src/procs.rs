//! Child processes that cannot outlive the bench, and what /proc says about a process.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use proc_mem::procfs::Status;

/// How long a child gets between SIGTERM and SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(10);

/// A child process: killed when the bench dies (PR_SET_PDEATHSIG) or when dropped.
pub struct Proc {
    pub name: String,
    pub child: std::process::Child,
    pub log: PathBuf,
    pub cmdline: String,
}

impl Proc {
    /// Starts `program args` with `env`, output appended to `log`. Call from the main thread:
    /// the death signal follows the thread that spawned the child.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log: &Path,
    ) -> anyhow::Result<Proc> {
        Self::spawn_io(name, program, args, env, None, log)
    }

    /// As [`Proc::spawn`], reading standard input from `stdin`.
    pub fn spawn_io(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
        stdin: Option<&Path>,
        log: &Path,
    ) -> anyhow::Result<Proc> {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let input = match stdin {
            Some(p) => Stdio::from(std::fs::File::open(p)?),
            None => Stdio::null(),
        };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(env.iter().copied())
            .stdin(input)
            .stdout(out.try_clone()?)
            .stderr(out);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", program.display()))?;
        let envs: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut cmdline = [envs, vec![program.display().to_string()], args.to_vec()]
            .concat()
            .join(" ");
        if let Some(p) = stdin {
            cmdline.push_str(&format!(" < {}", p.display()));
        }
        Ok(Proc {
            name: name.into(),
            child,
            log: log.to_path_buf(),
            cmdline,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn terminate(&mut self, grace: Duration) {
        if !self.alive() {
            return;
        }
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit by itself, up to `within`: its exit status, None on time-out.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.terminate(TERM_GRACE);
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_port(port: u16, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "nothing listens on port {port} after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Resident set size (VmRSS) and CPU time (utime + stime, clock ticks) of a process. The
/// footprint group's finer measures (PSS, RssAnon, working set) are in [`crate::memory`].
#[derive(Debug, Clone, Copy)]
pub struct ProcSample {
    pub rss_kib: u64,
    pub cpu_ticks: u64,
}

pub fn sample(pid: u32) -> Option<ProcSample> {
    let status = Status::of(pid).ok()?;
    Some(ProcSample {
        rss_kib: status.rss / 1024,
        cpu_ticks: cpu_ticks(pid)?,
    })
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // fields after the command name, which may hold spaces: state is field 3, utime 14, stime 15
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

pub fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// What a process did over a sampling window.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub rss_max_kib: u64,
    /// CPU time over wall time, percent of one core.
    pub cpu_pct: f64,
}

/// Samples several processes once per `every` for `duration`; `tick` runs once per sample
/// (a scrape, say) and is not counted against the sampled processes.
pub fn watch(pids: &[u32], duration: Duration, every: Duration, mut tick: impl FnMut()) -> Vec<Usage> {
    let first: Vec<Option<ProcSample>> = pids.iter().map(|p| sample(*p)).collect();
    let start = Instant::now();
    let mut rss: Vec<Vec<u64>> = vec![Vec::new(); pids.len()];
    let mut last = first.clone();
    let mut n = 0u64;
    while start.elapsed() < duration {
        tick();
        n += 1;
        for (i, p) in pids.iter().enumerate() {
            if let Some(s) = sample(*p) {
                rss[i].push(s.rss_kib);
                last[i] = Some(s);
            }
        }
        let next = start + every * n as u32;
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let hz = clock_ticks_per_s();
    (0..pids.len())
        .map(|i| {
            let cpu = match (first[i], last[i]) {
                (Some(a), Some(b)) => (b.cpu_ticks - a.cpu_ticks) as f64 / hz / wall * 100.0,
                _ => f64::NAN,
            };
            let r = &rss[i];
            Usage {
                rss_max_kib: r.iter().copied().max().unwrap_or(0),
                cpu_pct: cpu,
            }
        })
        .collect()
}

/// A plain HTTP/1.0 GET on loopback: the body length and how long it took.
pub fn http_get(port: u16, path: &str) -> anyhow::Result<(usize, Duration)> {
    let t = Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    Ok((buf.len(), t.elapsed()))
}

/// Percentile (0..=100) of unsorted values, nearest rank.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}
