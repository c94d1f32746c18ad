//! The tegrastats backend: keeps one child process and a reader thread that stores the latest
//! parsed line; `sample()` only reads that, so it never waits for the child.

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use common::{GpuBackendKind, GpuStats};
use tracing::{debug, info, warn};

use super::parse::{TegraSample, bad, parse_line};
use crate::collect::gpu::platform::Platform;
use crate::collect::gpu::{GpuBackend, GpuPaths, metric};

/// A dead tegrastats is restarted at most this often, so a command that exits at once does not
/// turn the agent into a fork loop.
pub const RESTART_MIN_INTERVAL: Duration = Duration::from_secs(10);
/// A sample older than this many intervals means the child is stuck: report nothing.
pub const STALE_AFTER_INTERVALS: u32 = 3;
/// Floor of the staleness limit, for short intervals.
pub const STALE_AFTER_MIN: Duration = Duration::from_secs(5);
/// Longest line kept; longer ones are dropped (a tegrastats line is about 700 bytes).
pub const MAX_LINE_BYTES: usize = 16 * 1024;

/// Splits a command line into words: whitespace separates them, and single or double quotes
/// group them (no escapes), so `sh -c "tegrastats --interval {ms} | tee log"` works. `{ms}` in
/// any word becomes `interval_ms`.
pub fn command_argv(command: &str, interval_ms: u64) -> Result<Vec<String>, TegrastatsError> {
    let mut argv = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in command.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => word.push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                in_word = true;
            }
            None if c.is_whitespace() => {
                if in_word {
                    argv.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            None => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(TegrastatsError::UnbalancedQuote {
            command: command.to_string(),
        });
    }
    if in_word {
        argv.push(word);
    }
    let ms = interval_ms.to_string();
    Ok(argv.into_iter().map(|w| w.replace("{ms}", &ms)).collect())
}

/// Where `program` would be run from: itself when it contains a `/`, else the first executable
/// file of that name on `path_var` (the `PATH` value).
pub fn find_program(program: &str, path_var: Option<&OsString>) -> Option<PathBuf> {
    if program.contains('/') {
        let p = Path::new(program);
        return is_executable_file(p).then(|| p.to_path_buf());
    }
    std::env::split_paths(path_var?)
        .map(|dir| dir.join(program))
        .find(|p| is_executable_file(p))
}

fn is_executable_file(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether a dead child may be started again at `now`.
pub fn restart_due(last_spawn: Instant, now: Instant) -> bool {
    now.saturating_duration_since(last_spawn) >= RESTART_MIN_INTERVAL
}

#[derive(Debug, thiserror::Error)]
pub enum TegrastatsError {
    #[error("empty tegrastats command")]
    EmptyCommand,
    #[error("unbalanced quote in tegrastats command {command:?}")]
    UnbalancedQuote { command: String },
    #[error("program {program:?} not found on PATH or not executable")]
    NotFound { program: String },
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("{program:?} has no stdout pipe")]
    NoStdout { program: String },
}

/// What the reader thread shares with `sample()`.
#[derive(Debug, Default)]
struct Latest {
    sample: Option<(TegraSample, Instant)>,
    lines: u64,
    parse_errors: u64,
    warned_unknown: bool,
    eof: bool,
}

fn lock(latest: &Mutex<Latest>) -> MutexGuard<'_, Latest> {
    // A panic in the reader cannot leave `Latest` half-written in a harmful way: keep going.
    latest.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Running {
    child: Child,
    latest: Arc<Mutex<Latest>>,
}

/// Runs tegrastats and reports its latest line.
pub struct TegrastatsBackend {
    argv: Vec<String>,
    stale_after: Duration,
    platform: Platform,
    run: Option<Running>,
    /// What the last child that ended had read: a short-lived command (`cat capture.txt`)
    /// prints and exits, and its last line stays good until it is stale.
    ended: Option<Arc<Mutex<Latest>>>,
    last_spawn: Instant,
    restarts: u32,
}

impl TegrastatsBackend {
    /// Starts the configured command; fails when its program cannot be found or started.
    pub fn start(paths: &GpuPaths) -> Result<Self, TegrastatsError> {
        let argv = command_argv(&paths.tegrastats_command, paths.interval_ms)?;
        let program = argv.first().ok_or(TegrastatsError::EmptyCommand)?;
        if find_program(program, std::env::var_os("PATH").as_ref()).is_none() {
            return Err(TegrastatsError::NotFound {
                program: program.clone(),
            });
        }
        let run = spawn(&argv)?;
        let interval = Duration::from_millis(paths.interval_ms);
        info!(command = %argv.join(" "), "tegrastats started");
        Ok(TegrastatsBackend {
            stale_after: interval
                .checked_mul(STALE_AFTER_INTERVALS)
                .unwrap_or(Duration::MAX)
                .max(STALE_AFTER_MIN),
            argv,
            platform: Platform::read(paths),
            run: Some(run),
            ended: None,
            last_spawn: Instant::now(),
            restarts: 0,
        })
    }

    /// Times the child was started again after dying.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Lines read and lines that failed to parse, since the current child started.
    pub fn line_counts(&self) -> (u64, u64) {
        self.run.as_ref().map_or((0, 0), |r| {
            let l = lock(&r.latest);
            (l.lines, l.parse_errors)
        })
    }

    /// Reaps a dead child; starts a new one when the restart interval allows.
    fn check_child(&mut self, now: Instant) {
        if let Some(run) = &mut self.run {
            match run.child.try_wait() {
                Ok(None) => {
                    if !lock(&run.latest).eof {
                        return;
                    }
                    // Alive but its output is closed: no line will ever come. Let it be restarted.
                    warn!("tegrastats closed its output, killing it");
                    kill_and_reap(&mut run.child);
                }
                Ok(Some(status)) => warn!(status = %status, "tegrastats exited"),
                Err(err) => {
                    warn!(error = %err, "cannot poll tegrastats, killing it");
                    kill_and_reap(&mut run.child);
                }
            }
            self.ended = self.run.take().map(|r| r.latest);
        }
        if !restart_due(self.last_spawn, now) {
            return;
        }
        self.last_spawn = now;
        match spawn(&self.argv) {
            Ok(run) => {
                self.restarts = self.restarts.saturating_add(1);
                info!(restarts = self.restarts, "tegrastats restarted");
                self.run = Some(run);
            }
            Err(err) => warn!(error = %err, "tegrastats restart failed"),
        }
    }
}

fn spawn(argv: &[String]) -> Result<Running, TegrastatsError> {
    let (program, args) = argv.split_first().ok_or(TegrastatsError::EmptyCommand)?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // tegrastats writes nothing useful there; a full stderr pipe would block it.
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| TegrastatsError::Spawn {
            program: program.clone(),
            source,
        })?;
    let Some(stdout) = child.stdout.take() else {
        kill_and_reap(&mut child);
        return Err(TegrastatsError::NoStdout {
            program: program.clone(),
        });
    };
    let latest = Arc::new(Mutex::new(Latest::default()));
    let shared = Arc::clone(&latest);
    let spawned = thread::Builder::new()
        .name("tegrastats-reader".into())
        .spawn(move || read_lines(stdout, &shared));
    if let Err(source) = spawned {
        kill_and_reap(&mut child);
        return Err(TegrastatsError::Spawn {
            program: program.clone(),
            source,
        });
    }
    Ok(Running { child, latest })
}

fn kill_and_reap(child: &mut Child) {
    // Both fail only when the child is already gone, which is the goal.
    let _ = child.kill();
    let _ = child.wait();
}

/// Reader thread: parses every line and keeps the latest good one. Ends at EOF, which comes
/// when the child exits or is killed.
fn read_lines(stdout: ChildStdout, latest: &Mutex<Latest>) {
    let mut reader = BufReader::new(stdout);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let truncated = match read_bounded_line(&mut reader, &mut buf, MAX_LINE_BYTES) {
            Ok(None) => break,
            Ok(Some(truncated)) => truncated,
            Err(err) => {
                warn!(error = %err, "reading tegrastats output failed");
                break;
            }
        };
        let text = String::from_utf8_lossy(&buf);
        let line = text.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = if truncated {
            Err(bad("line", "longer than the line limit"))
        } else {
            parse_line(line)
        };
        let mut l = lock(latest);
        l.lines += 1;
        match parsed {
            Ok(sample) => {
                // New JetPack releases add fields: say so once, the rest of the line still counts.
                if !sample.unknown.is_empty() && !l.warned_unknown {
                    l.warned_unknown = true;
                    warn!(tokens = ?sample.unknown, "tegrastats line has fields the parser does not know");
                }
                l.sample = Some((sample, Instant::now()));
            }
            Err(err) => {
                l.parse_errors += 1;
                // The first failure is news; repeats of a format we do not read are noise.
                if l.parse_errors == 1 {
                    warn!(error = %err, "tegrastats line not parsed");
                } else {
                    debug!(error = %err, errors = l.parse_errors, "tegrastats line not parsed");
                }
            }
        }
    }
    lock(latest).eof = true;
    debug!("tegrastats output ended");
}

/// Reads one line into `buf`, keeping at most `max` bytes of it. `Ok(None)` at EOF, else
/// whether the line was cut.
fn read_bounded_line(r: &mut impl BufRead, buf: &mut Vec<u8>, max: usize) -> io::Result<Option<bool>> {
    let mut consumed = 0usize;
    let mut truncated = false;
    loop {
        let available = r.fill_buf()?;
        if available.is_empty() {
            return Ok((consumed > 0).then_some(truncated));
        }
        let (chunk_len, done) = match available.iter().position(|b| *b == b'\n') {
            Some(p) => (p + 1, true),
            None => (available.len(), false),
        };
        let room = max.saturating_sub(buf.len());
        let keep = chunk_len.min(room);
        truncated |= keep < chunk_len;
        buf.extend_from_slice(&available[..keep]);
        r.consume(chunk_len);
        consumed += chunk_len;
        if done {
            return Ok(Some(truncated));
        }
    }
}

impl GpuBackend for TegrastatsBackend {
    fn kind(&self) -> GpuBackendKind {
        GpuBackendKind::Tegrastats
    }

    fn sample(&mut self) -> Option<GpuStats> {
        let now = Instant::now();
        self.check_child(now);
        // the running child's latest line, else the last one of the child that ended
        let (tegra, at) = [self.run.as_ref().map(|r| &r.latest), self.ended.as_ref()]
            .into_iter()
            .flatten()
            .find_map(|latest| lock(latest).sample.clone())?;
        if now.saturating_duration_since(at) > self.stale_after {
            debug!(
                age_ms = now.saturating_duration_since(at).as_millis() as u64,
                "tegrastats sample stale"
            );
            return None;
        }
        let mut stats = tegra.to_gpu_stats();
        stats.unsupported.retain(|n| {
            ![
                metric::BOARD,
                metric::L4T,
                metric::JETPACK,
                metric::NVPMODEL,
                metric::MEMORY,
            ]
            .contains(&n.as_str())
        });
        self.platform.fill(&mut stats);
        Some(stats)
    }
}

impl Drop for TegrastatsBackend {
    fn drop(&mut self) {
        if let Some(mut run) = self.run.take() {
            kill_and_reap(&mut run.child);
            debug!("tegrastats stopped");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::collect::gpu::tegrastats::parse::tests::{fixtures_dir, lines_of};

    #[test]
    fn command_line_splits_on_whitespace_keeps_quoted_words_and_substitutes_the_interval() {
        assert_eq!(
            command_argv("tegrastats --interval {ms}", 500).unwrap(),
            vec!["tegrastats", "--interval", "500"]
        );
        assert_eq!(command_argv("  a   b ", 1).unwrap(), vec!["a", "b"]);
        assert!(command_argv("   ", 1).unwrap().is_empty());
        assert_eq!(
            command_argv("sh -c \"grep -v '^#' f; sleep {ms}\" ''", 7).unwrap(),
            vec!["sh", "-c", "grep -v '^#' f; sleep 7", ""]
        );
        let err = command_argv("sh -c 'oops", 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unbalanced quote in tegrastats command \"sh -c 'oops\""
        );
    }

    #[test]
    fn program_lookup_searches_path_or_takes_a_path_as_is() {
        let path = OsString::from("/nonexistent/dir:/bin:/usr/bin");
        assert!(find_program("sh", Some(&path)).is_some());
        assert!(find_program("rvm-no-such-program", Some(&path)).is_none());
        assert!(find_program("sh", None).is_none());
        assert!(find_program("/bin/sh", None).is_some());
        assert!(find_program("/nonexistent/tegrastats", None).is_none());
        // A directory is not a program.
        assert!(find_program("/bin", None).is_none());
    }

    #[test]
    fn restart_waits_the_minimum_interval() {
        let spawned = Instant::now();
        assert!(!restart_due(spawned, spawned));
        assert!(!restart_due(
            spawned,
            spawned + RESTART_MIN_INTERVAL - Duration::from_millis(1)
        ));
        assert!(restart_due(spawned, spawned + RESTART_MIN_INTERVAL));
        // A clock that seems to go backwards never triggers a restart storm.
        assert!(!restart_due(spawned + RESTART_MIN_INTERVAL, spawned));
    }

    #[test]
    fn bounded_line_reader_cuts_long_lines_and_keeps_the_next_one() {
        let data = format!("{}\nshort\nlast-without-newline", "x".repeat(100));
        let mut r = io::Cursor::new(data.into_bytes());
        let mut buf = Vec::new();
        assert_eq!(read_bounded_line(&mut r, &mut buf, 10).unwrap(), Some(true));
        assert_eq!(buf, b"xxxxxxxxxx");
        buf.clear();
        assert_eq!(read_bounded_line(&mut r, &mut buf, 10).unwrap(), Some(false));
        assert_eq!(buf, b"short\n");
        buf.clear();
        assert_eq!(read_bounded_line(&mut r, &mut buf, 100).unwrap(), Some(false));
        assert_eq!(buf, b"last-without-newline");
        buf.clear();
        assert_eq!(read_bounded_line(&mut r, &mut buf, 100).unwrap(), None);
    }

    fn build_paths(command: String) -> GpuPaths {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jetson/orin-nano-jp6");
        GpuPaths {
            tegrastats_command: command,
            ..GpuPaths::under_root(&root)
        }
    }

    /// Samples until `done` accepts one or `limit` passes.
    fn sample_until(
        backend: &mut TegrastatsBackend,
        limit: Duration,
        done: impl Fn(&GpuStats) -> bool,
    ) -> Option<GpuStats> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(s) = backend.sample()
                && done(&s)
            {
                return Some(s);
            }
            thread::sleep(Duration::from_millis(20));
        }
        None
    }

    #[test]
    fn backend_runs_a_fake_tegrastats_and_reports_its_last_line() {
        let file = fixtures_dir().join("orin-nano-jp6.txt");
        // `exec` so that killing the child kills the sleeping process that holds the pipe.
        let command = format!("sh -c \"grep -v '^#' '{}'; exec sleep 5\"", file.display());
        let mut backend = TegrastatsBackend::start(&build_paths(command)).expect("fake tegrastats starts");
        assert_eq!(backend.kind(), GpuBackendKind::Tegrastats);
        let stats = sample_until(&mut backend, Duration::from_secs(5), |s| {
            s.rails.iter().any(|r| r.name == "VDD_IN" && r.power_mw == 6626.0)
        })
        .expect("the last fixture line arrives");
        assert_eq!(stats.backend, GpuBackendKind::Tegrastats);
        assert_eq!(stats.load_pct, Some(0.0));
        assert_eq!(stats.freq_mhz, None);
        assert_eq!(stats.gpu_temp_c(), Some(50.562));
        let vdd_in = stats.rails.iter().find(|r| r.name == "VDD_IN").unwrap();
        assert_eq!((vdd_in.power_mw, vdd_in.avg_power_mw), (6626.0, Some(6625.0)));
        // Platform facts come from the fake root, not from tegrastats.
        assert_eq!(
            stats.board.as_deref(),
            Some("NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super")
        );
        assert_eq!(stats.l4t.as_deref(), Some("36.4.3"));
        assert_eq!(stats.jetpack.as_deref(), Some("6.2"));
        assert_eq!(stats.nvpmodel.as_deref(), Some("25W"));
        assert_eq!(stats.memory_used_bytes, Some(204_800 * 1024));
        for name in ["board", "l4t", "jetpack", "nvpmodel", "memory"] {
            assert!(
                !stats.unsupported.contains(&name.to_string()),
                "{name}: {:?}",
                stats.unsupported
            );
        }
        for name in ["freq", "emc", "min_freq", "max_freq", "fan"] {
            assert!(
                stats.unsupported.contains(&name.to_string()),
                "{name}: {:?}",
                stats.unsupported
            );
        }
        assert_eq!(backend.line_counts(), (10, 0));
        assert_eq!(backend.restarts(), 0);
    }

    #[test]
    fn after_the_child_exits_its_last_line_counts_until_stale() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("one-line");
        let line = &lines_of("orin-nx.txt")[0];
        fs::write(&exe, format!("#!/bin/sh\necho '{line}'\n")).unwrap();
        fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let mut backend = TegrastatsBackend::start(&build_paths(format!("'{}'", exe.display()))).unwrap();
        // The child prints one line and exits (a saved capture behaves so: `cat capture.txt`).
        let latest = Arc::clone(&backend.run.as_ref().unwrap().latest);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(lock(&latest).eof
            && backend
                .run
                .as_mut()
                .is_none_or(|r| matches!(r.child.try_wait(), Ok(Some(_)))))
        {
            assert!(Instant::now() < deadline, "child did not exit");
            thread::sleep(Duration::from_millis(20));
        }
        let stats = backend.sample().expect("the last line of the child that ended");
        assert_eq!(stats.backend, GpuBackendKind::Tegrastats);
        assert!(backend.run.is_none(), "not restarted before the restart interval");
        assert_eq!(backend.restarts(), 0);
        // once the line is older than the staleness limit, nothing is reported
        backend.stale_after = Duration::ZERO;
        thread::sleep(Duration::from_millis(5));
        assert!(backend.sample().is_none(), "a stale line is not reported");
    }

    #[test]
    fn backend_kills_a_child_that_closed_its_output() {
        let mut backend =
            TegrastatsBackend::start(&build_paths("sh -c 'exec >&-; exec sleep 30'".into())).unwrap();
        let pid = backend.run.as_mut().unwrap().child.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !lock(&backend.run.as_ref().unwrap().latest).eof {
            assert!(
                Instant::now() < deadline,
                "reader never saw the end of the output"
            );
            thread::sleep(Duration::from_millis(20));
        }
        assert!(backend.sample().is_none());
        assert!(backend.run.is_none(), "not restarted before the restart interval");
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        assert!(!status.contains("sleep"), "child {pid} still alive: {status}");
    }

    #[test]
    fn backend_start_fails_with_the_program_name_when_it_is_missing() {
        let Err(err) =
            TegrastatsBackend::start(&build_paths("/nonexistent/tegrastats --interval {ms}".into()))
        else {
            panic!("a missing program must not start");
        };
        assert!(err.to_string().contains("/nonexistent/tegrastats"), "{err}");
        let Err(err) = TegrastatsBackend::start(&build_paths("   ".into())) else {
            panic!("an empty command must not start");
        };
        assert_eq!(err.to_string(), "empty tegrastats command");
    }

    #[test]
    fn dropping_the_backend_kills_the_child() {
        let mut backend = TegrastatsBackend::start(&build_paths("sleep 30".into())).unwrap();
        let pid = backend.run.as_mut().unwrap().child.id();
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        drop(backend);
        // Reaped by Drop: the pid is gone (or, rarely, reused by an unrelated process).
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        assert!(!status.contains("sleep"), "child {pid} still alive: {status}");
    }
}
