//! Probes (IO, blocking): what the health actor asks the machine on a blocking thread. Each
//! returns what it found, or why it found nothing; the evaluator turns that into checks.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use super::config::{HttpCheck, split_glob};
use super::evaluate::{DiskProbeError, UnitState};
use crate::shared::http::{ClientError, RequestError, build_client, get_status};
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

/// The HTTP checks with their clients (one per check: each may name its own `ca_file`).
/// Built once, on a blocking thread ([`HttpProbes::build`] may read certificate files); probed
/// on the actor's runtime ([`HttpProbes::probe`]: network waits, not blocking work).
pub struct HttpProbes {
    checks: Vec<(HttpCheck, Result<reqwest::Client, ClientError>)>,
}

impl HttpProbes {
    /// Blocking: call it from a blocking thread. A client that cannot be built (an unreadable
    /// `ca_file`) makes its check fail with that error at every probe.
    pub fn build(checks: &[HttpCheck]) -> HttpProbes {
        let checks = checks
            .iter()
            .map(|c| {
                let https = c.url.starts_with("https:");
                (c.clone(), build_client(c.ca_file.as_deref(), https))
            })
            .collect();
        HttpProbes { checks }
    }

    /// `GET` each check's URL within its timeout, one after the other; the status or why none.
    pub async fn probe(&self) -> Vec<(String, Result<u16, RequestError>)> {
        let mut out = Vec::with_capacity(self.checks.len());
        for (c, client) in &self.checks {
            let timeout = Duration::from_millis(c.timeout_ms.max(1));
            let result = match client {
                Ok(client) => get_status(client, &c.url, timeout).await,
                Err(e) => Err(RequestError::Client(e.clone())),
            };
            out.push((c.name.clone(), result));
        }
        out
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
pub fn probe_disk_writable(dir: &Path) -> Result<(), DiskProbeError> {
    let meta = fs::metadata(dir).map_err(|e| DiskProbeError::Missing {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    if !meta.is_dir() {
        return Err(DiskProbeError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let path = dir.join(format!(".rvm-agent-write-test-{}-{nanos}", std::process::id()));
    let io = |step: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| DiskProbeError::Io {
            step,
            path,
            reason: e.to_string(),
        }
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io("create", &path))?;
    let written = f
        .write_all(b"rvm-agent write test\n")
        .map_err(io("write", &path))
        .and_then(|()| f.sync_all().map_err(io("fsync", &path)));
    drop(f);
    let removed = fs::remove_file(&path).map_err(io("remove", &path));
    written.and(removed)
}

#[cfg(test)]
mod tests {
    use std::io::Read;
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
        let err = probe_disk_writable(&missing).unwrap_err().to_string();
        assert!(err.contains("nope"), "{err}");
        let file = dir.path().join("file");
        fs::write(&file, "").unwrap();
        assert!(
            probe_disk_writable(&file)
                .unwrap_err()
                .to_string()
                .contains("not a directory")
        );
        // procfs refuses new files even to root
        let err = probe_disk_writable(Path::new("/proc")).unwrap_err().to_string();
        assert!(err.contains("cannot create /proc/"), "{err}");
    }

    /// Reads a request head from `s`.
    fn read_head(s: &mut impl Read) -> String {
        let mut req = Vec::new();
        let mut buf = [0u8; 512];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            req.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&req).into_owned()
    }

    /// Serves each accepted connection with `response` (after reading the request head).
    fn serve(responses: Vec<&'static [u8]>) -> (String, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let mut requests = Vec::new();
            for response in responses {
                let (mut s, _) = listener.accept().unwrap();
                requests.push(read_head(&mut s));
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

    fn build_check(name: &str, url: String, timeout_ms: u64) -> HttpCheck {
        HttpCheck {
            name: name.into(),
            url,
            timeout_ms,
            expect_status: 200,
            ca_file: None,
        }
    }

    /// Probes on a blocking thread and a runtime, as the health actor does.
    async fn probe(checks: Vec<HttpCheck>) -> Vec<(String, Result<u16, RequestError>)> {
        let probes = tokio::task::spawn_blocking(move || HttpProbes::build(&checks))
            .await
            .unwrap();
        probes.probe().await
    }

    #[tokio::test]
    async fn the_http_probe_reads_the_status_of_a_local_server() {
        let (base, server) = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.0 503 Service Unavailable\r\n\r\n",
            b"",
        ]);
        let got = probe(vec![
            build_check("a", format!("{base}/health?x=1"), 2000),
            build_check("b", format!("{base}/"), 2000),
            build_check("slow", format!("{base}/"), 200),
        ])
        .await;
        assert_eq!(got[0], ("a".to_string(), Ok(200)));
        assert_eq!(got[1], ("b".to_string(), Ok(503)));
        let slow = got[2].1.clone().unwrap_err().to_string();
        assert!(slow.contains("timed out"), "{slow}");
        let requests = server.join().unwrap();
        assert!(
            requests[0].starts_with("GET /health?x=1 HTTP/1.1\r\n"),
            "{}",
            requests[0]
        );
        // header names are case-insensitive (the client writes them in lower case)
        assert!(
            requests[0].to_ascii_lowercase().contains("\r\nhost: 127.0.0.1:"),
            "{}",
            requests[0]
        );
    }

    #[tokio::test]
    async fn the_http_probe_reports_a_refused_connection() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let got = probe(vec![build_check(
            "refused",
            format!("http://127.0.0.1:{port}/"),
            2000,
        )])
        .await;
        let err = got[0].1.clone().unwrap_err().to_string();
        assert!(err.starts_with("connect 127.0.0.1:"), "{err}");
    }

    /// An HTTPS server with the certificate of `certs` (a private CA), answering 204 once.
    fn serve_tls(certs: &common::pki::CertDir) -> (String, std::thread::JoinHandle<String>) {
        let chain = common::tls::load_certs(&certs.server_cert()).unwrap();
        let key = common::tls::load_key(&certs.server_key()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let cfg = std::sync::Arc::new(cfg);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            let conn = rustls::ServerConnection::new(cfg).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let head = read_head(&mut tls);
            let _ = tls.write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
            let _ = tls.flush();
            tls.conn.send_close_notify();
            let _ = tls.flush();
            head
        });
        (format!("https://127.0.0.1:{}", addr.port()), handle)
    }

    #[tokio::test]
    async fn an_https_probe_trusts_its_ca_file_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let certs = common::pki::CertDir::new(dir.path().join("a"));
        common::pki::init(&certs, &["127.0.0.1".into()], false).unwrap();
        let (url, server) = serve_tls(&certs);
        let mut check = build_check("tls", format!("{url}/health"), 5000);
        check.ca_file = Some(certs.ca_cert());
        let got = probe(vec![check]).await;
        assert_eq!(got[0], ("tls".to_string(), Ok(204)));
        assert!(server.join().unwrap().starts_with("GET /health HTTP/1.1\r\n"));

        // another CA's certificate: refused, named as a TLS failure
        let other = common::pki::CertDir::new(dir.path().join("b"));
        common::pki::init(&other, &["127.0.0.1".into()], false).unwrap();
        let (url, server) = serve_tls(&certs);
        let mut check = build_check("tls", format!("{url}/health"), 5000);
        check.ca_file = Some(other.ca_cert());
        let got = probe(vec![check]).await;
        let err = got[0].1.clone().unwrap_err();
        assert!(matches!(err, RequestError::Tls { .. }), "{err:?}");
        assert!(err.to_string().starts_with("TLS with 127.0.0.1:"), "{err}");
        let _ = server.join();

        // a ca_file that cannot be read fails the check with the file's name
        let mut check = build_check("tls", format!("{url}/health"), 5000);
        check.ca_file = Some(dir.path().join("missing.pem"));
        let got = probe(vec![check]).await;
        let err = got[0].1.clone().unwrap_err().to_string();
        assert!(err.contains("missing.pem"), "{err}");
    }
}
