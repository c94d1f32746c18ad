//! A tiny `sd_notify(3)` for `Type=notify` + `WatchdogSec=` units, with std only.
//!
//! systemd passes `NOTIFY_SOCKET` (a path, or `@name` for the abstract namespace) and, with a
//! watchdog, `WATCHDOG_USEC` (and `WATCHDOG_PID`: the watchdog is ours only when it names our
//! pid). The agent's supervisor owns one [`SdNotify`] and calls [`SdNotify::on_tick`] every
//! supervise tick:
//!
//! - `READY=1` once, the first tick every child runs (systemd then considers the unit started);
//! - `WATCHDOG=1` every half watchdog period while the supervisor ticks. A hung actix thread
//!   stops the ticks, systemd kills the process (`SIGABRT`) and `Restart=on-failure` starts it
//!   again. Children that die are the supervisor's business (restart intensity, then exit 70).
//!
//! Without `NOTIFY_SOCKET` (run by hand, in tests) everything here is a no-op. A failed send
//! is logged once and counted; it never stops the agent.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Environment variables systemd sets.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";

/// What the supervisor should send now (pure decisions, see [`Plan::due`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Half the watchdog period, if the watchdog is ours.
    pub watchdog_every: Option<Duration>,
    ready_sent: bool,
    last_watchdog_ms: Option<i64>,
}

impl Plan {
    pub fn new(watchdog_every: Option<Duration>) -> Self {
        Plan {
            watchdog_every,
            ready_sent: false,
            last_watchdog_ms: None,
        }
    }

    /// The messages due at `now_ms`; marks them as sent.
    pub fn due(&mut self, now_ms: i64, all_running: bool) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !self.ready_sent && all_running {
            self.ready_sent = true;
            out.push("READY=1");
        }
        if let Some(every) = self.watchdog_every {
            let every_ms = every.as_millis() as i64;
            if self.last_watchdog_ms.is_none_or(|t| now_ms - t >= every_ms) {
                self.last_watchdog_ms = Some(now_ms);
                out.push("WATCHDOG=1");
            }
        }
        out
    }

    pub fn ready_sent(&self) -> bool {
        self.ready_sent
    }
}

/// Half of `WATCHDOG_USEC`, when the watchdog is set and (per `WATCHDOG_PID`) meant for `pid`.
pub fn watchdog_interval(usec: Option<&str>, watchdog_pid: Option<&str>, pid: u32) -> Option<Duration> {
    if let Some(p) = watchdog_pid
        && p.trim().parse::<u32>().ok() != Some(pid)
    {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

/// Sends one datagram (`state`, e.g. `READY=1`) to the socket named like `NOTIFY_SOCKET`.
pub fn send_to(socket: &str, state: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    sock.set_nonblocking(true)?;
    if let Some(name) = socket.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), socket)?;
    }
    Ok(())
}

/// The supervisor's notifier: [`Plan`] plus the socket from the environment.
#[derive(Debug)]
pub struct SdNotify {
    socket: Option<String>,
    plan: Plan,
    failures: u64,
}

impl SdNotify {
    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok();
        Self::new(
            var(NOTIFY_SOCKET),
            watchdog_interval(
                var(WATCHDOG_USEC).as_deref(),
                var(WATCHDOG_PID).as_deref(),
                std::process::id(),
            ),
        )
    }

    pub fn new(socket: Option<String>, watchdog_every: Option<Duration>) -> Self {
        let socket = socket.filter(|s| !s.is_empty());
        SdNotify {
            plan: Plan::new(socket.as_ref().and(watchdog_every)),
            socket,
            failures: 0,
        }
    }

    /// Whether systemd listens at all.
    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// Sends failed so far.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Call every supervisor tick; `all_running`: every child has a running actor.
    pub fn on_tick(&mut self, now_ms: i64, all_running: bool) {
        let Some(socket) = &self.socket else {
            return;
        };
        for state in self.plan.due(now_ms, all_running) {
            match send_to(socket, state) {
                Ok(()) if state == "READY=1" => {
                    tracing::info!(socket = %socket, "told systemd the agent is ready")
                }
                Ok(()) => {}
                Err(e) => {
                    self.failures += 1;
                    if self.failures == 1 {
                        tracing::warn!(socket = %socket, state, error = %e, "sd_notify failed");
                    }
                }
            }
        }
    }

    /// `STOPPING=1`, best effort (at shutdown).
    pub fn stopping(&self) {
        if let Some(s) = &self.socket {
            let _ = send_to(s, "STOPPING=1");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_is_sent_once_when_every_child_runs_and_the_watchdog_every_half_period() {
        let mut p = Plan::new(Some(Duration::from_secs(15)));
        assert_eq!(p.due(0, false), vec!["WATCHDOG=1"]);
        assert!(p.due(1000, false).is_empty());
        assert_eq!(p.due(2000, true), vec!["READY=1"]);
        assert!(p.due(3000, true).is_empty());
        assert_eq!(p.due(15_000, true), vec!["WATCHDOG=1"]);
        assert!(p.ready_sent());
        let mut no_watchdog = Plan::new(None);
        assert_eq!(no_watchdog.due(0, true), vec!["READY=1"]);
        assert!(no_watchdog.due(100_000, true).is_empty());
    }

    #[test]
    fn the_watchdog_interval_is_half_of_watchdog_usec_and_only_for_our_pid() {
        assert_eq!(
            watchdog_interval(Some("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_interval(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("x"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
    }

    #[test]
    fn datagrams_reach_a_path_socket_and_an_abstract_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        let mut n = SdNotify::new(Some(path.display().to_string()), Some(Duration::from_secs(10)));
        n.on_tick(0, true);
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        for _ in 0..2 {
            let len = rx.recv(&mut buf).unwrap();
            got.push(String::from_utf8_lossy(&buf[..len]).to_string());
        }
        assert_eq!(got, vec!["READY=1", "WATCHDOG=1"]);
        assert_eq!(n.failures(), 0);

        use std::os::linux::net::SocketAddrExt;
        let name = format!("rvm-agent-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        send_to(&format!("@{name}"), "WATCHDOG=1").unwrap();
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
    }

    #[test]
    fn without_notify_socket_nothing_is_sent_and_a_dead_socket_is_counted_not_fatal() {
        let mut n = SdNotify::new(None, Some(Duration::from_secs(1)));
        assert!(!n.enabled());
        n.on_tick(0, true);
        let mut dead = SdNotify::new(Some("/nonexistent/notify.sock".into()), None);
        dead.on_tick(0, true);
        assert_eq!(dead.failures(), 1);
    }
}
