//! Running a program: no shell, stdin closed, each output stream kept to a limit, killed after
//! a timeout. Blocking: call it from a blocking thread. The health probes (`systemctl
//! is-active`) and the recovery executors and diagnostics use it.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How often a running command is polled for exit.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How long output readers may lag behind the exit of their command.
const READER_GRACE: Duration = Duration::from_secs(2);

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RunResult {
    /// Exit code; `None` when a signal ended it.
    Exited(Option<i32>),
    /// Killed after the timeout.
    TimedOut(Duration),
    NotStarted(String),
}

/// A command's bounded output and how it ended.
#[derive(Debug, Clone)]
pub(crate) struct CommandRun {
    pub program: String,
    pub stdout: String,
    pub stderr: String,
    pub result: RunResult,
}

impl CommandRun {
    pub fn success(&self) -> bool {
        self.result == RunResult::Exited(Some(0))
    }

    /// How it ended, in words.
    pub fn summary(&self) -> String {
        match &self.result {
            RunResult::Exited(Some(0)) => "ok".into(),
            RunResult::Exited(Some(c)) => format!("{} exited with status {c}", self.program),
            RunResult::Exited(None) => format!("{} was killed by a signal", self.program),
            RunResult::TimedOut(t) => format!("{} timed out after {} s", self.program, t.as_secs()),
            RunResult::NotStarted(e) => format!("cannot run {}: {e}", self.program),
        }
    }

    /// Output and, unless it succeeded, how it ended.
    pub fn text(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        for s in [&self.stdout, &self.stderr] {
            let t = s.trim_end();
            if !t.is_empty() {
                parts.push(t.to_string());
            }
        }
        if !self.success() || parts.is_empty() {
            parts.push(self.summary());
        }
        parts.join("\n")
    }
}

/// Runs `program args` without a shell, stdin closed, output kept to `limit` bytes per
/// stream; kills it after `timeout`.
pub(crate) fn run_command(program: &str, args: &[&str], timeout: Duration, limit: usize) -> CommandRun {
    let done = |stdout: String, stderr: String, result: RunResult| CommandRun {
        program: program.to_string(),
        stdout,
        stderr,
        result,
    };
    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return done(String::new(), String::new(), RunResult::NotStarted(e.to_string())),
    };
    let (tx, rx) = mpsc::channel::<(bool, String)>();
    let mut readers = 0;
    if let Some(out) = child.stdout.take() {
        let tx = tx.clone();
        if spawn_reader(out, limit, move |s| tx.send((true, s))) {
            readers += 1;
        }
    }
    if let Some(err) = child.stderr.take() {
        let tx = tx.clone();
        if spawn_reader(err, limit, move |s| tx.send((false, s))) {
            readers += 1;
        }
    }
    drop(tx);
    let deadline = Instant::now() + timeout;
    let result = loop {
        match child.try_wait() {
            Ok(Some(status)) => break RunResult::Exited(status.code()),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break RunResult::TimedOut(timeout);
            }
            Ok(None) => {
                std::thread::sleep(POLL_INTERVAL.min(deadline.saturating_duration_since(Instant::now())))
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                break RunResult::NotStarted(format!("wait failed: {e}"));
            }
        }
    };
    let (mut stdout, mut stderr) = (String::new(), String::new());
    for _ in 0..readers {
        // a grandchild holding the pipe open must not hold us
        match rx.recv_timeout(READER_GRACE) {
            Ok((true, s)) => stdout = s,
            Ok((false, s)) => stderr = s,
            Err(_) => break,
        }
    }
    done(stdout, stderr, result)
}

fn spawn_reader<R, F, E>(mut r: R, limit: usize, send: F) -> bool
where
    R: Read + Send + 'static,
    F: FnOnce(String) -> Result<(), E> + Send + 'static,
{
    std::thread::Builder::new()
        .name("rvm-cmd-output".into())
        .spawn(move || {
            let mut kept: Vec<u8> = Vec::new();
            let mut truncated = false;
            let mut buf = [0u8; 4096];
            loop {
                match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let room = limit.saturating_sub(kept.len());
                        kept.extend_from_slice(&buf[..n.min(room)]);
                        truncated |= n > room;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let mut s = String::from_utf8_lossy(&kept).into_owned();
            if truncated {
                s.push_str("\n[truncated]");
            }
            let _ = send(s);
        })
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_is_reported_not_a_panic() {
        let run = run_command("rvm-no-such-program", &[], Duration::from_secs(1), 100);
        assert!(!run.success());
        assert!(
            run.text().starts_with("cannot run rvm-no-such-program"),
            "{}",
            run.text()
        );
    }

    #[test]
    fn a_command_that_outlives_its_timeout_is_killed_needs_sleep() {
        let started = Instant::now();
        let run = run_command("sleep", &["10"], Duration::from_millis(200), 100);
        assert_eq!(run.result, RunResult::TimedOut(Duration::from_millis(200)));
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn command_output_is_kept_to_its_limit_needs_sh() {
        let run = run_command(
            "sh",
            &["-c", "yes | head -c 100000; echo err >&2; exit 3"],
            Duration::from_secs(10),
            1000,
        );
        assert_eq!(run.result, RunResult::Exited(Some(3)));
        assert!(run.stdout.len() <= 1000 + "\n[truncated]".len());
        assert!(run.stdout.ends_with("[truncated]"));
        assert_eq!(run.stderr, "err\n");
        assert!(run.text().ends_with("sh exited with status 3"), "{}", run.text());
    }
}
