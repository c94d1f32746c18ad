//! Real receivers for notification tests, on 127.0.0.1:
//! - [`HttpsReceiver`]: an HTTPS server whose certificate comes from a private CA the test
//!   makes (`ca_file` trusts it; nothing else does). It records every request (method, path,
//!   headers, body) and every TLS handshake a client refused, and answers the status it is
//!   told to.
//! - [`SmtpServer`]: Python's `aiosmtpd` (PyPI) in a child process, requiring STARTTLS (or
//!   speaking implicit TLS) and AUTH, with a certificate from the same kind of private CA. The
//!   Python is `$RVM_TEST_PYTHON`, else `target/ci-venv` (where `.ci/run` installs aiosmtpd),
//!   else `python3`. Without aiosmtpd the start fails saying so (never a silent skip).
//! - [`WebhookReceiver`]: plain HTTP that records JSON POSTs and answers 200, or holds them
//!   unanswered while told to (a delivery in flight); [`SmtpReceiver`]: a minimal plain SMTP
//!   server that keeps each message (a local relay).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::pki::{self, CertDir, LeafKind, Validity};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

/// How long the SMTP child may take to be ready.
pub const SMTP_START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long [`SmtpServer::wait_messages`] waits for messages the server has accepted: its
/// output is read on another thread, so a message may show a moment after the 250 reply.
pub const SMTP_MESSAGE_WAIT: Duration = Duration::from_secs(5);
/// Longest request body the HTTPS receiver reads.
const MAX_BODY: usize = 1 << 20;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A private CA in `dir` with a server certificate for 127.0.0.1 and localhost: (CA file,
/// certificate file, key file).
pub fn private_ca(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
    let certs = CertDir::new(dir.join("receiver-ca"));
    pki::init(&certs, &[], false)?;
    let ca = pki::Ca::load(&certs)?;
    let (cert, key) = ca.issue(
        "receiver",
        "RVM Fleet tests",
        LeafKind::Server {
            sans: vec!["127.0.0.1".into(), "localhost".into()],
        },
        Validity::days_from_now(30),
    )?;
    let (cert_path, key_path) = (dir.join("receiver.pem"), dir.join("receiver.key"));
    std::fs::write(&cert_path, cert)?;
    std::fs::write(&key_path, key)?;
    Ok((certs.ca_cert(), cert_path, key_path))
}

/// One request the [`HttpsReceiver`] got.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    pub method: String,
    pub path: String,
    /// Names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ReceivedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (Null when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body as form fields, decoded.
    pub fn form(&self) -> Vec<(String, String)> {
        let decode = |s: &str| {
            let s = s.replace('+', " ");
            let b = s.as_bytes();
            let mut out = Vec::with_capacity(b.len());
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'%'
                    && i + 2 < b.len()
                    && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
                {
                    out.push(v);
                    i += 3;
                } else {
                    out.push(b[i]);
                    i += 1;
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        };
        String::from_utf8_lossy(&self.body)
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect()
    }
}

#[derive(Debug)]
struct Answers {
    /// Answers for the next requests, in order.
    queued: VecDeque<(u16, String)>,
    /// The answer once the queue is empty.
    default: (u16, String),
}

/// An HTTPS server with a certificate from a private CA. See the module docs.
pub struct HttpsReceiver {
    /// `https://127.0.0.1:PORT`
    pub base: String,
    /// The private CA's certificate: the `ca_file` that makes a client trust this receiver.
    pub ca_file: PathBuf,
    requests: Arc<Mutex<Vec<ReceivedRequest>>>,
    tls_failures: Arc<Mutex<Vec<String>>>,
    answers: Arc<Mutex<Answers>>,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl HttpsReceiver {
    /// Starts on an ephemeral port of 127.0.0.1; answers 200 `{"ok":true}` until told
    /// otherwise.
    pub async fn start() -> anyhow::Result<HttpsReceiver> {
        common::tls::install_crypto_provider();
        let dir = tempfile::tempdir()?;
        let (ca_file, cert, key) = private_ca(dir.path())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_single_cert(common::tls::load_certs(&cert)?, common::tls::load_key(&key)?)?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("https://{}", listener.local_addr()?);
        let requests: Arc<Mutex<Vec<ReceivedRequest>>> = Arc::default();
        let tls_failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let answers = Arc::new(Mutex::new(Answers {
            queued: VecDeque::new(),
            default: (200, "{\"ok\":true}".into()),
        }));
        let (req, fails, ans) = (requests.clone(), tls_failures.clone(), answers.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, req, fails, ans) = (acceptor.clone(), req.clone(), fails.clone(), ans.clone());
                tokio::spawn(async move {
                    match acceptor.accept(sock).await {
                        Ok(tls) => serve(tls, req, ans).await,
                        Err(e) => lock(&fails).push(e.to_string()),
                    }
                });
            }
        });
        Ok(HttpsReceiver {
            base,
            ca_file,
            requests,
            tls_failures,
            answers,
            _dir: dir,
            task,
        })
    }

    /// `{base}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Every request from now on gets `status` and `body`.
    pub fn answer_with(&self, status: u16, body: &str) {
        let mut a = lock(&self.answers);
        a.queued.clear();
        a.default = (status, body.into());
    }

    /// The next requests get these answers in turn, then the default one.
    pub fn answer_next(&self, answers: &[(u16, &str)]) {
        lock(&self.answers)
            .queued
            .extend(answers.iter().map(|(s, b)| (*s, b.to_string())));
    }

    pub fn requests(&self) -> Vec<ReceivedRequest> {
        lock(&self.requests).clone()
    }

    /// Handshakes that failed, as the server saw them (a client refusing the certificate
    /// sends an alert: `received fatal alert: UnknownCA`).
    pub fn tls_failures(&self) -> Vec<String> {
        lock(&self.tls_failures).clone()
    }
}

impl Drop for HttpsReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves HTTP/1.1 requests with a Content-Length body on one connection (keep-alive).
async fn serve<S>(stream: S, requests: Arc<Mutex<Vec<ReceivedRequest>>>, answers: Arc<Mutex<Answers>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut r = tokio::io::BufReader::new(stream);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).await.unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                if k == "content-length" {
                    len = v.parse().unwrap_or(0).min(MAX_BODY);
                }
                headers.push((k, v));
            }
        }
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).await.is_err() {
            return;
        }
        lock(&requests).push(ReceivedRequest {
            method,
            path,
            headers,
            body,
        });
        let (status, text) = {
            let mut a = lock(&answers);
            a.queued.pop_front().unwrap_or_else(|| a.default.clone())
        };
        let resp = format!(
            "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
            reason(status),
            text.len()
        );
        if r.get_mut().write_all(resp.as_bytes()).await.is_err() || r.get_mut().flush().await.is_err() {
            return;
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// How the [`SmtpServer`] protects its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain, STARTTLS required before AUTH and MAIL.
    Starttls,
    /// TLS from the first byte (SMTPS).
    Implicit,
}

/// One message the [`SmtpServer`] accepted.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct SmtpMessage {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    /// The message as received (headers and body).
    pub data: String,
    /// The login it was sent under.
    pub login: Option<String>,
}

const AIOSMTPD_SERVER: &str = r#"
import json, socket, ssl, sys
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

mode, cert, key, user, password = sys.argv[1:6]

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port

class Handler:
    async def handle_DATA(self, server, session, envelope):
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        print(json.dumps({
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "data": envelope.content.decode("utf-8", "replace"),
            "login": login,
        }), flush=True)
        return "250 2.0.0 OK queued"

def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword)
          and auth_data.login == user.encode() and auth_data.password == password.encode())
    return AuthResult(success=ok, handled=False, auth_data=auth_data)

ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
port = free_port()
common = dict(hostname="127.0.0.1", port=port, authenticator=authenticator, auth_required=True)
if mode == "starttls":
    controller = Controller(Handler(), tls_context=ctx, require_starttls=True, auth_require_tls=True, **common)
else:
    # the connection is TLS from the first byte; aiosmtpd's auth_require_tls only knows STARTTLS
    controller = Controller(Handler(), ssl_context=ctx, auth_require_tls=False, **common)
controller.start()
print(json.dumps({"ready": port}), flush=True)
sys.stdin.read()
controller.stop()
"#;

/// aiosmtpd in a child process. See the module docs. Killed when dropped.
pub struct SmtpServer {
    pub port: u16,
    /// The private CA of its certificate.
    pub ca_file: PathBuf,
    pub username: String,
    messages: Arc<Mutex<Vec<SmtpMessage>>>,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

/// The Python the SMTP server runs on: `$RVM_TEST_PYTHON`, else the venv `.ci/run` makes
/// (`target/ci-venv`), else `python3`.
pub fn python() -> String {
    if let Ok(p) = std::env::var("RVM_TEST_PYTHON") {
        return p;
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ci-venv/bin/python");
    if venv.exists() {
        return venv.to_string_lossy().into_owned();
    }
    "python3".into()
}

impl SmtpServer {
    /// Starts aiosmtpd requiring AUTH as `username` / `password`, with `tls`.
    pub fn start(tls: SmtpTls, username: &str, password: &str) -> anyhow::Result<SmtpServer> {
        let py = python();
        let probe = Command::new(&py).args(["-c", "import aiosmtpd"]).output();
        match probe {
            Ok(o) if o.status.success() => {}
            Ok(o) => anyhow::bail!(
                "aiosmtpd is not installed for {py}: `{py} -m pip install aiosmtpd`, or run .ci/run \
                 (it makes a venv and sets RVM_TEST_PYTHON): {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => anyhow::bail!("cannot run {py} (set RVM_TEST_PYTHON): {e}"),
        }
        let dir = tempfile::tempdir()?;
        let (ca_file, cert, key) = private_ca(dir.path())?;
        let script = dir.path().join("smtp_server.py");
        std::fs::write(&script, AIOSMTPD_SERVER)?;
        let mode = match tls {
            SmtpTls::Starttls => "starttls",
            SmtpTls::Implicit => "implicit",
        };
        let mut child = Command::new(&py)
            .arg(&script)
            .args([
                mode,
                &cert.to_string_lossy(),
                &key.to_string_lossy(),
                username,
                password,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let messages: Arc<Mutex<Vec<SmtpMessage>>> = Arc::default();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<u16>();
        let msgs = messages.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    eprintln!("smtp server: {line}");
                    continue;
                };
                if let Some(port) = v["ready"].as_u64() {
                    let _ = ready_tx.send(port as u16);
                } else if let Ok(m) = serde_json::from_value::<SmtpMessage>(v) {
                    lock(&msgs).push(m);
                }
            }
        });
        let port = match ready_rx.recv_timeout(SMTP_START_TIMEOUT) {
            Ok(p) => p,
            Err(_) => {
                let _ = child.kill();
                anyhow::bail!("aiosmtpd did not start within {SMTP_START_TIMEOUT:?}");
            }
        };
        Ok(SmtpServer {
            port,
            ca_file,
            username: username.into(),
            messages,
            child,
            _dir: dir,
        })
    }

    /// `127.0.0.1:PORT`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn messages(&self) -> Vec<SmtpMessage> {
        lock(&self.messages).clone()
    }

    /// The messages once there are at least `n`, or what there is after
    /// [`SMTP_MESSAGE_WAIT`].
    pub fn wait_messages(&self, n: usize) -> Vec<SmtpMessage> {
        let until = std::time::Instant::now() + SMTP_MESSAGE_WAIT;
        loop {
            let m = self.messages();
            if m.len() >= n || std::time::Instant::now() >= until {
                return m;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = stdin.flush();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request a [`WebhookReceiver`] got: its path and JSON body, and when.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub body: Value,
    pub at: Instant,
}

/// How often a held request looks whether it may go.
const HOLD_POLL: Duration = Duration::from_millis(50);

/// A tiny HTTP server that records JSON POSTs and answers 200; while told to hold
/// ([`WebhookReceiver::hold`]) it keeps each request in [`WebhookReceiver::held`] without an
/// answer, and closes its connection unanswered once released (a delivery in flight).
pub struct WebhookReceiver {
    pub url: String,
    pub received: Arc<std::sync::Mutex<Vec<Received>>>,
    held: Arc<std::sync::Mutex<Vec<Received>>>,
    holding: Arc<std::sync::atomic::AtomicBool>,
}

impl WebhookReceiver {
    pub async fn start() -> anyhow::Result<WebhookReceiver> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", l.local_addr()?);
        let received: Arc<std::sync::Mutex<Vec<Received>>> = Arc::default();
        let held: Arc<std::sync::Mutex<Vec<Received>>> = Arc::default();
        let holding = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (rec, hel, hold) = (received.clone(), held.clone(), holding.clone());
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                let (rec, hel, hold) = (rec.clone(), hel.clone(), hold.clone());
                tokio::spawn(async move {
                    let mut r = BufReader::new(s);
                    // keep-alive: several requests per connection
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                        let mut len = 0usize;
                        loop {
                            let mut h = String::new();
                            if r.read_line(&mut h).await.unwrap_or(0) == 0 {
                                return;
                            }
                            let h = h.trim_end();
                            if h.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = h.split_once(':')
                                && k.eq_ignore_ascii_case("content-length")
                            {
                                len = v.trim().parse().unwrap_or(0);
                            }
                        }
                        let mut body = vec![0u8; len];
                        if r.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let got = Received {
                            path,
                            body,
                            at: Instant::now(),
                        };
                        if hold.load(std::sync::atomic::Ordering::Acquire) {
                            hel.lock().unwrap_or_else(|p| p.into_inner()).push(got);
                            while hold.load(std::sync::atomic::Ordering::Acquire) {
                                tokio::time::sleep(HOLD_POLL).await;
                            }
                            return;
                        }
                        rec.lock().unwrap_or_else(|p| p.into_inner()).push(got);
                        let ok = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                        if r.get_mut().write_all(ok.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(WebhookReceiver {
            url,
            received,
            held,
            holding,
        })
    }

    /// While `on`, requests are kept unanswered (see the type's docs).
    pub fn hold(&self, on: bool) {
        self.holding.store(on, std::sync::atomic::Ordering::Release);
    }

    /// Bodies of the requests kept unanswered.
    pub fn held(&self) -> Vec<Value> {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|r| r.body.clone())
            .collect()
    }

    /// Bodies received so far.
    pub fn bodies(&self) -> Vec<Value> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|r| r.body.clone())
            .collect()
    }
}

/// A minimal SMTP server (RFC 5321: greeting, EHLO/HELO, MAIL, RCPT, DATA, QUIT) that keeps
/// every message's data.
pub struct SmtpReceiver {
    pub addr: std::net::SocketAddr,
    pub messages: Arc<std::sync::Mutex<Vec<String>>>,
}

impl SmtpReceiver {
    pub async fn start() -> anyhow::Result<SmtpReceiver> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = l.local_addr()?;
        let messages: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let msgs = messages.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                let msgs = msgs.clone();
                tokio::spawn(async move {
                    let mut r = BufReader::new(s);
                    if r.get_mut().write_all(b"220 test-smtp ready\r\n").await.is_err() {
                        return;
                    }
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                        let reply: &[u8] = match verb.as_str() {
                            "EHLO" | "HELO" => b"250 test-smtp\r\n",
                            "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 ok\r\n",
                            "QUIT" => {
                                let _ = r.get_mut().write_all(b"221 bye\r\n").await;
                                return;
                            }
                            "DATA" => {
                                if r.get_mut().write_all(b"354 go ahead\r\n").await.is_err() {
                                    return;
                                }
                                let mut data = String::new();
                                loop {
                                    let mut l = String::new();
                                    if r.read_line(&mut l).await.unwrap_or(0) == 0 {
                                        return;
                                    }
                                    if l == ".\r\n" || l == ".\n" {
                                        break;
                                    }
                                    data.push_str(l.strip_prefix('.').unwrap_or(&l));
                                }
                                msgs.lock().unwrap_or_else(|p| p.into_inner()).push(data);
                                b"250 queued\r\n"
                            }
                            _ => b"502 not implemented\r\n",
                        };
                        if r.get_mut().write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(SmtpReceiver { addr, messages })
    }

    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}
