//! Probes (IO, blocking): what the health actor asks the machine on a blocking thread. Each
//! returns what it found, or why it found nothing; the evaluator turns that into checks.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use super::config::{HttpCheck, split_glob};
use super::evaluate::UnitState;
use crate::shared::http1::{HTTP_MAX_HEAD, parse_http_url, parse_status_line};
use crate::shared::names::{PROCESS_NAME_MAX, valid_unit_name};
use crate::shared::subprocess::{RunResult, run_command};

/// Longest a `systemctl is-active` probe may take.
pub const UNIT_PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// State of each unit from one `systemctl is-active` call. Invalid names, a missing systemctl,
/// a timeout or an unexpected answer give [`UnitState::Unknown`].
pub fn probe_units(units: &[String]) -> Vec<(String, UnitState)> {
    let valid: Vec<&str> = units
        .iter()
        .filter(|u| valid_unit_name(u).is_ok())
        .map(String::as_str)
        .collect();
    let mut states: Vec<UnitState> = Vec::new();
    if !valid.is_empty() {
        let mut args = vec!["is-active", "--"];
        args.extend(valid.iter().copied());
        let run = run_command("systemctl", &args, UNIT_PROBE_TIMEOUT, 16 * 1024);
        if matches!(run.result, RunResult::Exited(_)) {
            let lines: Vec<&str> = run.stdout.lines().collect();
            if lines.len() == valid.len() {
                states = lines.iter().map(|l| UnitState::parse(l)).collect();
            } else {
                tracing::warn!(
                    units = valid.len(),
                    lines = lines.len(),
                    "systemctl is-active answered an unexpected number of lines"
                );
            }
        } else {
            tracing::warn!(error = %run.summary(), "systemctl is-active did not run");
        }
    }
    let mut answered = valid.iter().zip(states);
    units
        .iter()
        .map(|u| {
            let state = if valid_unit_name(u).is_ok() {
                answered.next().map_or(UnitState::Unknown, |(_, s)| s)
            } else {
                UnitState::Unknown
            };
            (u.clone(), state)
        })
        .collect()
}

/// Whether a process of each name runs, from `/proc/PID/comm` (names compared on their first
/// 15 bytes, as the kernel keeps them).
pub fn probe_processes(names: &[String]) -> Vec<(String, bool)> {
    probe_processes_in(Path::new("/proc"), names)
}

fn probe_processes_in(proc_root: &Path, names: &[String]) -> Vec<(String, bool)> {
    let mut running: HashSet<String> = HashSet::new();
    if let Ok(entries) = fs::read_dir(proc_root) {
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let is_pid = file_name
                .to_str()
                .is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit()));
            if !is_pid {
                continue;
            }
            if let Ok(comm) = fs::read_to_string(entry.path().join("comm")) {
                running.insert(comm.trim_end_matches('\n').to_string());
            }
        }
    }
    names
        .iter()
        .map(|n| (n.clone(), running.contains(comm_prefix(n))))
        .collect()
}

/// The first 15 bytes of a name, cut at a character boundary.
fn comm_prefix(name: &str) -> &str {
    let mut end = name.len().min(PROCESS_NAME_MAX);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

pub fn probe_http(checks: &[HttpCheck]) -> Vec<(String, Result<u16, String>)> {
    checks
        .iter()
        .map(|c| {
            let timeout = Duration::from_millis(c.timeout_ms.max(1));
            (c.name.clone(), http_get_status(&c.url, timeout))
        })
        .collect()
}

/// A blocking HTTP/1.1 `GET` that reads only as far as the status line, within `timeout`.
pub fn http_get_status(url: &str, timeout: Duration) -> Result<u16, String> {
    let (host, port, path) = parse_http_url(url)?;
    let deadline = Instant::now() + timeout;
    let remaining = || deadline.saturating_duration_since(Instant::now());
    let addrs: Vec<_> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let mut last_err = format!("{host} resolved to no address");
    let mut stream = None;
    for addr in addrs {
        if remaining().is_zero() {
            break;
        }
        match TcpStream::connect_timeout(&addr, remaining()) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_err = format!("connect {addr}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last_err)?;
    let host_header = match (host.contains(':'), port) {
        (true, 80) => format!("[{host}]"),
        (true, p) => format!("[{host}]:{p}"),
        (false, 80) => host.clone(),
        (false, p) => format!("{host}:{p}"),
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: rvm-agent\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    let io_timeout = |what: &str| -> Result<Duration, String> {
        let r = remaining();
        if r.is_zero() {
            Err(format!("timed out after {} ms {what}", timeout.as_millis()))
        } else {
            Ok(r)
        }
    };
    stream
        .set_write_timeout(Some(io_timeout("before sending")?))
        .map_err(|e| format!("socket: {e}"))?;
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send request: {e}"))?;
    let mut head: Vec<u8> = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    loop {
        if let Some(end) = head.windows(2).position(|w| w == b"\r\n") {
            return parse_status_line(&head[..end]);
        }
        if head.len() >= HTTP_MAX_HEAD {
            return Err(format!("no status line in the first {HTTP_MAX_HEAD} bytes"));
        }
        stream
            .set_read_timeout(Some(io_timeout("waiting for the response")?))
            .map_err(|e| format!("socket: {e}"))?;
        match stream.read(&mut buf) {
            Ok(0) if head.is_empty() => return Err("connection closed without a response".into()),
            Ok(0) => return parse_status_line(&head),
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!(
                    "timed out after {} ms waiting for the response",
                    timeout.as_millis()
                ));
            }
            Err(e) => return Err(format!("read response: {e}")),
        }
    }
}
/// `*` matches any run of characters, `?` exactly one.
pub fn wildcard_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether any entry of the glob's directory matches its last component. An invalid glob or
/// an unreadable directory counts as no camera (validation reports a bad glob).
pub fn probe_camera(glob: &str) -> bool {
    let Ok((dir, pattern)) = split_glob(glob) else {
        return false;
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return false;
    };
    entries
        .flatten()
        .any(|e| e.file_name().to_str().is_some_and(|n| wildcard_match(pattern, n)))
}

/// Creates, writes, fsyncs and removes a small file in `dir`.
pub fn probe_disk_writable(dir: &Path) -> Result<(), String> {
    let meta = fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let path = dir.join(format!(".rvm-agent-write-test-{}-{nanos}", std::process::id()));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let written = f
        .write_all(b"rvm-agent write test\n")
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
        .and_then(|()| {
            f.sync_all()
                .map_err(|e| format!("cannot fsync {}: {e}", path.display()))
        });
    drop(f);
    let removed = fs::remove_file(&path).map_err(|e| format!("cannot remove {}: {e}", path.display()));
    written.and(removed)
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn an_invalid_unit_name_is_unknown_without_asking_systemctl() {
        let got = probe_units(&["--now".into()]);
        assert_eq!(got, vec![("--now".to_string(), UnitState::Unknown)]);
    }

    #[test]
    fn processes_are_found_by_their_comm_name_in_a_proc_tree() {
        let dir = tempfile::tempdir().unwrap();
        for (pid, comm) in [("1", "systemd\n"), ("42", "vision-inferenc\n")] {
            fs::create_dir(dir.path().join(pid)).unwrap();
            fs::write(dir.path().join(pid).join("comm"), comm).unwrap();
        }
        fs::create_dir(dir.path().join("self")).unwrap();
        fs::write(dir.path().join("self").join("comm"), "uploader\n").unwrap();
        let got = probe_processes_in(
            dir.path(),
            &["vision-inference".into(), "uploader".into(), "systemd".into()],
        );
        assert_eq!(
            got,
            vec![
                ("vision-inference".to_string(), true),
                ("uploader".to_string(), false),
                ("systemd".to_string(), true),
            ]
        );
    }

    #[test]
    fn the_camera_probe_matches_video_devices_in_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let glob = format!("{}/video*", dir.path().display());
        fs::write(dir.path().join("vid"), "").unwrap();
        assert!(!probe_camera(&glob));
        fs::write(dir.path().join("video0"), "").unwrap();
        assert!(probe_camera(&glob));
        assert!(!probe_camera("/nonexistent-rvm-dir/video*"));
        assert!(!probe_camera("video*"));
    }

    #[test]
    fn wildcards_match_like_a_shell() {
        assert!(wildcard_match("video*", "video0"));
        assert!(wildcard_match("video*", "video"));
        assert!(!wildcard_match("video*", "vide"));
        assert!(wildcard_match("v?deo*1", "video11"));
        assert!(wildcard_match("*cam*", "usbcam0"));
        assert!(!wildcard_match("video?", "video10"));
    }

    #[test]
    fn a_temp_dir_is_writable_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(probe_disk_writable(dir.path()), Ok(()));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_missing_path_a_file_and_a_read_only_filesystem_are_not_writable() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let err = probe_disk_writable(&missing).unwrap_err();
        assert!(err.contains("nope"), "{err}");
        let file = dir.path().join("file");
        fs::write(&file, "").unwrap();
        assert!(
            probe_disk_writable(&file)
                .unwrap_err()
                .contains("not a directory")
        );
        // procfs refuses new files even to root
        let err = probe_disk_writable(Path::new("/proc")).unwrap_err();
        assert!(err.contains("cannot create /proc/"), "{err}");
    }

    /// Serves each accepted connection with `response` (after reading the request head).
    fn serve(responses: Vec<&'static [u8]>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let mut requests = Vec::new();
            for response in responses {
                let (mut s, _) = listener.accept().unwrap();
                let mut req = Vec::new();
                let mut buf = [0u8; 512];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    req.extend_from_slice(&buf[..n]);
                }
                requests.push(String::from_utf8_lossy(&req).into_owned());
                if !response.is_empty() {
                    s.write_all(response).unwrap();
                } else {
                    // say nothing until the client gives up
                    std::thread::sleep(Duration::from_millis(600));
                }
            }
            requests
        });
        (format!("http://{addr}"), handle)
    }

    #[test]
    fn the_http_probe_reads_the_status_of_a_local_server() {
        let (base, server) = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.0 503 Service Unavailable\r\n\r\n",
            b"",
        ]);
        let checks = vec![
            HttpCheck {
                name: "a".into(),
                url: format!("{base}/health?x=1"),
                timeout_ms: 2000,
                expect_status: 200,
            },
            HttpCheck {
                name: "b".into(),
                url: format!("{base}/"),
                timeout_ms: 2000,
                expect_status: 200,
            },
            HttpCheck {
                name: "slow".into(),
                url: format!("{base}/"),
                timeout_ms: 200,
                expect_status: 200,
            },
        ];
        let got = probe_http(&checks);
        assert_eq!(got[0], ("a".to_string(), Ok(200)));
        assert_eq!(got[1], ("b".to_string(), Ok(503)));
        let slow = got[2].1.clone().unwrap_err();
        assert!(slow.contains("timed out"), "{slow}");
        let requests = server.join().unwrap();
        assert!(
            requests[0].starts_with("GET /health?x=1 HTTP/1.1\r\n"),
            "{}",
            requests[0]
        );
        assert!(requests[0].contains("\r\nHost: 127.0.0.1:"), "{}", requests[0]);
    }

    #[test]
    fn the_http_probe_reports_a_refused_connection_and_rejects_https() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = http_get_status(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(2)).unwrap_err();
        assert!(err.starts_with("connect 127.0.0.1:"), "{err}");
        let err = http_get_status("https://127.0.0.1/", Duration::from_secs(1)).unwrap_err();
        assert!(err.contains("http:// only"), "{err}");
    }
}
