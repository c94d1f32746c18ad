//! The HTTP client of every notification channel: reqwest over rustls with ring (the provider
//! `common::tls` installs), HTTP/1.1 only. The agent is meant to reuse the same reqwest feature
//! set for its probes and scrapes (no native-tls, no OpenSSL, no http2).
//!
//! - **Trust**: the system's roots (`rustls-native-certs`: on Debian the `ca-certificates`
//!   bundle, so an operator's own corporate CA and the distribution's updates count, and no
//!   root list is frozen into the binary), or, when a channel sets `ca_file`, that file's
//!   certificates *only* (a receiver with a private CA). Certificates and host names are always
//!   verified; there is no switch to turn that off.
//! - **Timeout** per attempt (the whole exchange, body included), **extra headers** (marked
//!   sensitive: tokens live there), **no redirects** (a 3xx is an answer to report, and
//!   following one would carry the headers elsewhere).
//! - **Retries**: connection errors, timeouts, 408, 425, 429 and 5xx are retried with the
//!   `backoff` crate's exponential backoff (jittered ±50 %, capped at [`RETRY_MAX_INTERVAL`]),
//!   honouring a `Retry-After` in seconds, until the channel's `max_retry` has passed; a TLS
//!   error or any other status is final at once.
//! - **Result**: what the receiver answered ([`Answer`]: status and a body excerpt of at most
//!   [`BODY_EXCERPT_BYTES`]) or a typed [`SendError`] (tls, connect, timeout, status).
//!
//! URLs appear in errors and logs as `scheme://host:port` only ([`redact_url`]): Slack and
//! Teams webhook paths and Telegram's bot token are credentials.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use backoff::ExponentialBackoff;
use backoff::backoff::Backoff;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use rustls::RootCertStore;

use super::secret::Secret;

/// The longest body excerpt kept from an answer.
pub const BODY_EXCERPT_BYTES: usize = 2048;
/// First wait before a retry.
pub const RETRY_INITIAL: Duration = Duration::from_millis(500);
/// Longest wait between two attempts, `Retry-After` included.
pub const RETRY_MAX_INTERVAL: Duration = Duration::from_secs(30);
/// Longest time to set up a connection (TCP and TLS), within the attempt's timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Headers a channel may not set: the client owns them.
pub const RESERVED_HEADERS: [&str; 4] = ["host", "content-length", "transfer-encoding", "connection"];

const USER_AGENT: &str = concat!("rvm-fleet-server/", env!("CARGO_PKG_VERSION"));

/// How a channel talks HTTP.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpOptions {
    /// One attempt, from connecting to the last byte of the answer.
    pub timeout: Duration,
    /// Retries stop once this much time has passed since the first attempt.
    pub max_retry: Duration,
    /// Trust only these certificates (PEM) instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Sent with every request; values are never shown.
    pub headers: Vec<(String, Secret)>,
}

impl HttpOptions {
    pub fn new(timeout: Duration, max_retry: Duration) -> Self {
        HttpOptions {
            timeout,
            max_retry,
            ca_file: None,
            headers: Vec::new(),
        }
    }
}

/// A client that cannot be built: a config problem of the channel.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("ca_file: {0}")]
    CaFile(String),
    #[error("no system root certificates found (install ca-certificates, or set ca_file)")]
    NoSystemRoots,
    #[error("headers.{name}: {problem}")]
    Header { name: String, problem: String },
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error("HTTP client: {0}")]
    Build(String),
}

/// The body of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Json(serde_json::Value),
    /// `application/x-www-form-urlencoded`, in this order.
    Form(Vec<(String, String)>),
    Empty,
}

/// One request a channel makes.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: reqwest::Method,
    pub url: String,
    pub body: Body,
    /// HTTP basic authentication (user, password).
    pub basic_auth: Option<(String, Secret)>,
}

impl Request {
    pub fn post_json(url: impl Into<String>, body: serde_json::Value) -> Self {
        Request {
            method: reqwest::Method::POST,
            url: url.into(),
            body: Body::Json(body),
            basic_auth: None,
        }
    }
}

/// What the receiver answered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Answer {
    pub status: u16,
    /// At most [`BODY_EXCERPT_BYTES`] of the body, lossily decoded as UTF-8.
    pub body: String,
    /// The body was longer than the excerpt.
    pub truncated: bool,
    /// Attempts it took, this one included.
    pub attempts: u32,
}

/// Why one attempt failed. `url` is redacted ([`redact_url`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The TLS handshake failed: an untrusted or expired certificate, a wrong host name.
    #[error("{url}: TLS: {detail}")]
    Tls { url: String, detail: String },
    #[error("{url}: cannot connect: {detail}")]
    Connect { url: String, detail: String },
    #[error("{url}: no complete answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: the receiver answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
        /// A `Retry-After` in seconds that came with it.
        retry_after: Option<Duration>,
    },
    #[error("{url}: {detail}")]
    Other { url: String, detail: String },
}

impl SendError {
    /// Worth another attempt.
    pub fn is_transient(&self) -> bool {
        match self {
            SendError::Connect { .. } | SendError::Timeout { .. } => true,
            SendError::Status { status, .. } => is_retryable(*status),
            SendError::Tls { .. } | SendError::Other { .. } => false,
        }
    }

    /// A short name for counters and the API: `tls`, `connect`, `timeout`, `status`, `other`.
    pub fn kind(&self) -> &'static str {
        match self {
            SendError::Tls { .. } => "tls",
            SendError::Connect { .. } => "connect",
            SendError::Timeout { .. } => "timeout",
            SendError::Status { .. } => "status",
            SendError::Other { .. } => "other",
        }
    }
}

/// The last error after every attempt the channel allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error} (attempts: {attempts})")]
pub struct SendFailure {
    #[source]
    pub error: SendError,
    pub attempts: u32,
}

/// 408, 425, 429 and 5xx.
pub fn is_retryable(status: u16) -> bool {
    matches!(status, 408 | 425 | 429) || (500..=599).contains(&status)
}

/// `scheme://host[:port]`, and `/…` when the URL has more: what logs and errors show.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("");
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            let more = if u.path() != "/" || u.query().is_some() {
                "/…"
            } else {
                ""
            };
            format!("{}://{host}{port}{more}", u.scheme())
        }
        Err(_) => "(invalid URL)".into(),
    }
}

/// Accepts `http://` and `https://` URLs with a host and without credentials in them. The
/// error does not repeat the URL (it may hold a token).
pub fn check_url(url: &str) -> Result<reqwest::Url, String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("scheme {:?} is not http or https", u.scheme()));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".into());
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("credentials in the URL are not accepted: use headers or the channel's keys".into());
    }
    Ok(u)
}

/// Checks a header a channel wants to send.
pub fn check_header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| "not a valid header name".to_string())?;
    if RESERVED_HEADERS.contains(&n.as_str()) {
        return Err("set by the client, not by a channel".into());
    }
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| "the value has characters a header cannot carry".to_string())?;
    v.set_sensitive(true);
    Ok((n, v))
}

/// The system's roots, loaded once per process.
fn system_roots() -> Result<Arc<RootCertStore>, ClientError> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    let roots = ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "a system root certificate could not be loaded");
        }
        let mut store = RootCertStore::empty();
        let (added, ignored) = store.add_parsable_certificates(found.certs);
        tracing::debug!(added, ignored, "system root certificates loaded");
        Arc::new(store)
    });
    if roots.is_empty() {
        return Err(ClientError::NoSystemRoots);
    }
    Ok(roots.clone())
}

/// The rustls config of a channel: ring, TLS 1.2 and 1.3, the roots the options say.
pub fn tls_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, ClientError> {
    let roots = match ca_file {
        Some(path) => {
            let certs = common::tls::load_certs(path).map_err(|e| ClientError::CaFile(e.to_string()))?;
            let mut store = RootCertStore::empty();
            for c in certs {
                store
                    .add(c)
                    .map_err(|e| ClientError::CaFile(format!("{}: {e}", path.display())))?;
            }
            Arc::new(store)
        }
        None => system_roots()?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// One channel's client. Cheap to clone (connections are shared).
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
    options: HttpOptions,
}

impl HttpClient {
    pub fn new(options: HttpOptions) -> Result<HttpClient, ClientError> {
        let mut headers = HeaderMap::new();
        for (name, value) in &options.headers {
            let (n, v) = check_header(name, value.expose()).map_err(|problem| ClientError::Header {
                name: name.clone(),
                problem,
            })?;
            headers.insert(n, v);
        }
        let tls = tls_config(options.ca_file.as_deref())?;
        let inner = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .user_agent(USER_AGENT)
            .default_headers(headers)
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(CONNECT_TIMEOUT))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError::Build(error_chain(&e)))?;
        Ok(HttpClient { inner, options })
    }

    pub fn options(&self) -> &HttpOptions {
        &self.options
    }

    /// Sends the request, retrying as the module docs say.
    pub async fn send(&self, req: &Request) -> Result<Answer, SendFailure> {
        let mut policy = backoff_policy(self.options.max_retry);
        let started = Instant::now();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let error = match self.attempt(req).await {
                Ok(mut answer) => {
                    answer.attempts = attempts;
                    return Ok(answer);
                }
                Err(e) => e,
            };
            if !error.is_transient() {
                return Err(SendFailure { error, attempts });
            }
            let Some(mut wait) = policy.next_backoff() else {
                return Err(SendFailure { error, attempts });
            };
            if let SendError::Status {
                retry_after: Some(after),
                ..
            } = &error
            {
                wait = wait.max(*after).min(RETRY_MAX_INTERVAL);
            }
            if started.elapsed() + wait > self.options.max_retry {
                return Err(SendFailure { error, attempts });
            }
            tracing::warn!(error = %error, attempt = attempts, wait_ms = wait.as_millis() as u64, "http attempt failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    /// One attempt, without retries.
    pub async fn attempt(&self, req: &Request) -> Result<Answer, SendError> {
        let url = redact_url(&req.url);
        let mut b = self.inner.request(req.method.clone(), &req.url);
        b = match &req.body {
            Body::Json(v) => b.json(v),
            Body::Form(fields) => b.form(fields),
            Body::Empty => b,
        };
        if let Some((user, password)) = &req.basic_auth {
            b = b.basic_auth(user, Some(password.expose()));
        }
        let mut resp = b
            .send()
            .await
            .map_err(|e| classify(&e, &url, self.options.timeout))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let mut bytes = Vec::new();
        let mut truncated = false;
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    let room = BODY_EXCERPT_BYTES - bytes.len();
                    if chunk.len() > room {
                        bytes.extend_from_slice(&chunk[..room]);
                        truncated = true;
                        break;
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(classify(&e, &url, self.options.timeout)),
            }
        }
        let body = excerpt(&bytes);
        if (200..300).contains(&status) {
            Ok(Answer {
                status,
                body,
                truncated,
                attempts: 1,
            })
        } else {
            Err(SendError::Status {
                url,
                status,
                body,
                retry_after,
            })
        }
    }
}

fn backoff_policy(max_retry: Duration) -> ExponentialBackoff {
    ExponentialBackoff {
        initial_interval: RETRY_INITIAL,
        current_interval: RETRY_INITIAL,
        randomization_factor: 0.5,
        multiplier: 2.0,
        max_interval: RETRY_MAX_INTERVAL,
        max_elapsed_time: Some(max_retry),
        ..Default::default()
    }
}

/// The excerpt as text: lossy UTF-8 (a character cut at the byte limit becomes U+FFFD),
/// trailing whitespace trimmed.
fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.trim_end().to_string()
}

/// The messages of an error and its sources, `: `-joined, looking inside `io::Error`s (whose
/// `source()` skips the error they wrap).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let msg = err.to_string();
        if parts.last().is_none_or(|last| !last.contains(&msg)) {
            parts.push(msg);
        }
        cur = match err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner),
            None => err.source(),
        };
    }
    parts.join(": ")
}

/// The rustls error somewhere in the chain, if any (the SMTP channel uses it too).
pub(crate) fn find_tls_error(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t.to_string());
        }
        cur = match err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner),
            None => err.source(),
        };
    }
    None
}

fn classify(e: &reqwest::Error, url: &str, timeout: Duration) -> SendError {
    let url = url.to_string();
    if let Some(detail) = find_tls_error(e) {
        return SendError::Tls { url, detail };
    }
    if e.is_timeout() {
        return SendError::Timeout { url, timeout };
    }
    // reqwest's own message repeats the full URL: leave it out.
    let detail = match std::error::Error::source(e) {
        Some(src) => error_chain(src),
        None => "request failed".into(),
    };
    if e.is_connect() {
        SendError::Connect { url, detail }
    } else {
        SendError::Other { url, detail }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A plain-HTTP receiver answering `answers[i]` (status, extra header lines, body) to the
    /// i-th request, then 200; it keeps every request's raw text.
    async fn build_receiver(
        answers: Vec<(u16, &'static str, String)>,
    ) -> (String, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<String>>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/secret/path", l.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let (h, s) = (hits.clone(), seen.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = l.accept().await else {
                    return;
                };
                let i = h.fetch_add(1, Ordering::SeqCst);
                let (status, extra, body) = answers.get(i).cloned().unwrap_or((200, "", String::new()));
                let mut buf = vec![0u8; 65536];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                s.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let resp = format!(
                    "HTTP/1.1 {status} X\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            }
        });
        (url, hits, seen)
    }

    fn build_client(max_retry_ms: u64) -> HttpClient {
        common::tls::install_crypto_provider();
        let mut o = HttpOptions::new(Duration::from_secs(2), Duration::from_millis(max_retry_ms));
        o.headers = vec![("Authorization".into(), Secret::new("Bearer t0ken"))];
        HttpClient::new(o).unwrap()
    }

    #[tokio::test]
    async fn a_server_error_is_retried_and_the_answer_says_how_many_attempts() {
        let (url, hits, _) = build_receiver(vec![(503, "", "busy".into()), (500, "", String::new())]).await;
        let a = build_client(10_000)
            .send(&Request::post_json(url, serde_json::json!({"a": 1})))
            .await
            .unwrap();
        assert_eq!((a.status, a.attempts), (200, 3));
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_client_error_is_final_and_carries_the_body_excerpt() {
        let (url, hits, _) = build_receiver(vec![(400, "", "invalid_payload".into())]).await;
        let f = build_client(10_000)
            .send(&Request::post_json(url, serde_json::json!({})))
            .await
            .unwrap_err();
        assert_eq!(f.attempts, 1);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        match &f.error {
            SendError::Status { status, body, .. } => {
                assert_eq!((*status, body.as_str()), (400, "invalid_payload"))
            }
            other => panic!("{other:?}"),
        }
        assert!(!f.to_string().contains("secret/path"), "{f}");
    }

    #[tokio::test]
    async fn retries_stop_when_the_channel_retry_time_is_used_up() {
        let (url, hits, _) = build_receiver(vec![(503, "", String::new()); 20]).await;
        let started = Instant::now();
        let f = build_client(1_000)
            .send(&Request::post_json(url, serde_json::json!({})))
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(f.attempts >= 2 && f.attempts < 20, "{f}");
        assert_eq!(hits.load(Ordering::SeqCst) as u32, f.attempts);
        assert_eq!(f.error.kind(), "status");
    }

    #[tokio::test]
    async fn a_retry_after_longer_than_the_retry_time_ends_the_retries() {
        let (url, hits, _) = build_receiver(vec![(429, "retry-after: 20\r\n", String::new())]).await;
        let f = build_client(5_000)
            .send(&Request::post_json(url, serde_json::json!({})))
            .await
            .unwrap_err();
        assert_eq!(f.attempts, 1, "waiting 20 s would pass max_retry: {f}");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert!(
            matches!(f.error, SendError::Status { status: 429, retry_after: Some(d), .. } if d == Duration::from_secs(20))
        );
    }

    #[tokio::test]
    async fn a_long_answer_is_cut_to_the_excerpt() {
        let (url, _, _) = build_receiver(vec![(200, "", "x".repeat(10_000))]).await;
        let a = build_client(1_000)
            .send(&Request::post_json(url, serde_json::json!({})))
            .await
            .unwrap();
        assert_eq!(a.body.len(), BODY_EXCERPT_BYTES);
        assert!(a.truncated);
    }

    #[tokio::test]
    async fn headers_form_bodies_and_basic_auth_reach_the_receiver() {
        let (url, _, seen) = build_receiver(vec![]).await;
        let req = Request {
            method: reqwest::Method::POST,
            url,
            body: Body::Form(vec![
                ("To".into(), "+4712345678".into()),
                ("Body".into(), "a b&c".into()),
            ]),
            basic_auth: Some(("AC123".into(), Secret::new("tok"))),
        };
        build_client(1_000).send(&req).await.unwrap();
        let raw = seen.lock().unwrap()[0].to_ascii_lowercase();
        assert!(raw.contains("authorization: basic"), "{raw}");
        assert!(
            raw.contains("content-type: application/x-www-form-urlencoded"),
            "{raw}"
        );
        assert!(raw.contains("to=%2b4712345678&body=a+b%26c"), "{raw}");
        assert!(raw.contains("user-agent: rvm-fleet-server/"), "{raw}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error_and_transient() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/x", l.local_addr().unwrap());
        drop(l);
        let e = build_client(1_000)
            .attempt(&Request::post_json(url, serde_json::json!({})))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), "connect", "{e}");
        assert!(e.is_transient());
    }

    #[tokio::test]
    async fn a_silent_receiver_is_a_timeout() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/x", l.local_addr().unwrap());
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        common::tls::install_crypto_provider();
        let c = HttpClient::new(HttpOptions::new(
            Duration::from_millis(300),
            Duration::from_millis(100),
        ))
        .unwrap();
        let e = c
            .attempt(&Request::post_json(url, serde_json::json!({})))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), "timeout", "{e}");
    }

    #[test]
    fn urls_are_shown_without_their_path_or_query() {
        assert_eq!(
            redact_url("https://hooks.slack.com/services/T0/B0/XXXX"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(redact_url("http://127.0.0.1:9000/"), "http://127.0.0.1:9000");
        assert_eq!(
            redact_url("https://api.telegram.org/bot123:ABC/sendMessage"),
            "https://api.telegram.org/…"
        );
    }

    #[test]
    fn only_http_urls_with_a_host_and_no_credentials_are_accepted() {
        assert!(check_url("https://events.pagerduty.com/v2/enqueue").is_ok());
        assert!(check_url("http://127.0.0.1:9/hook").is_ok());
        assert!(check_url("ftp://x/").unwrap_err().contains("ftp"));
        assert!(
            check_url("https://user:pw@x/")
                .unwrap_err()
                .contains("credentials")
        );
        assert!(check_url("not a url").is_err());
        assert!(!check_url("https://user:pw@x/").unwrap_err().contains("pw"));
    }

    #[test]
    fn reserved_or_malformed_headers_are_refused() {
        assert!(check_header("X-Api-Key", "abc").is_ok());
        assert!(check_header("Content-Length", "1").is_err());
        assert!(check_header("bad header", "x").is_err());
        assert!(check_header("X-A", "line\nbreak").is_err());
    }

    #[test]
    fn a_missing_ca_file_is_a_client_error_naming_it() {
        common::tls::install_crypto_provider();
        let mut o = HttpOptions::new(Duration::from_secs(1), Duration::from_secs(1));
        o.ca_file = Some("/nonexistent/ca.pem".into());
        let e = HttpClient::new(o).unwrap_err().to_string();
        assert!(e.contains("ca_file") && e.contains("/nonexistent/ca.pem"), "{e}");
    }

    #[test]
    fn retryable_statuses_are_the_transient_ones() {
        for s in [408, 425, 429, 500, 502, 503, 599] {
            assert!(is_retryable(s), "{s}");
        }
        for s in [200, 301, 400, 401, 403, 404, 422] {
            assert!(!is_retryable(s), "{s}");
        }
    }

    #[test]
    fn debug_output_of_options_hides_header_values() {
        let mut o = HttpOptions::new(Duration::from_secs(1), Duration::from_secs(1));
        o.headers = vec![("Authorization".into(), Secret::new("Bearer s3cr3t"))];
        assert!(!format!("{o:?}").contains("s3cr3t"));
    }
}
