//! The agent's one HTTP client, for the health probes ([`crate::health`]) and the app-metrics
//! scrape ([`crate::appmetrics`]): `reqwest` over rustls with ring (the provider the agent
//! installs; no aws-lc, no OpenSSL), HTTP/1.1, `http://` and `https://`.
//!
//! - **Async, on the agent's runtime.** A probe or a scrape waits on the network, which is not
//!   blocking work: the futures run on the actor's arbiter and each step is short (the TLS
//!   handshake's crypto is a fraction of a millisecond). Building a client is blocking (it reads
//!   a `ca_file` or the system's roots): [`build_client`] runs on a blocking thread, once.
//! - **Trust**: with a `ca_file`, that file's certificates only (a service with a private CA);
//!   without one, the system's roots (`/etc/ssl/certs`, read once, only when an `https://` URL
//!   without a `ca_file` is configured). Certificates and host names are always verified.
//! - **Every request stands alone**: no connection is kept between probes (a probe must see
//!   that the service still accepts connections), no redirect is followed (a 3xx is the answer),
//!   no proxy from the environment is used (the services are local), and one timeout covers
//!   the whole exchange, body included.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::RootCertStore;

/// Sent as `User-Agent`.
pub const USER_AGENT: &str = concat!("rvm-agent/", env!("CARGO_PKG_VERSION"));

/// A URL the agent cannot use; the message names what is wrong, the config key names where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("{url:?} is not a URL: {reason}")]
    Parse { url: String, reason: String },
    #[error("{url:?}: scheme {scheme:?} is not supported (http:// or https://)")]
    Scheme { url: String, scheme: String },
    #[error("{url:?} has no host")]
    NoHost { url: String },
    #[error("{url:?}: credentials in the URL are not supported")]
    Credentials { url: String },
}

/// Checks an `http://` or `https://` URL with a host and without credentials.
pub fn check_url(url: &str) -> Result<reqwest::Url, UrlError> {
    let u = reqwest::Url::parse(url).map_err(|e| UrlError::Parse {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(UrlError::Scheme {
            url: url.to_string(),
            scheme: u.scheme().to_string(),
        });
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::NoHost { url: url.to_string() });
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(UrlError::Credentials { url: url.to_string() });
    }
    Ok(u)
}

/// A client that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("ca_file {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("no system root certificates found (install ca-certificates, or set ca_file)")]
    NoSystemRoots,
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("HTTP client: {0}")]
    Build(String),
}

/// Why a request got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("{0}")]
    Url(#[from] UrlError),
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("connect {addr}: {detail}")]
    Connect { addr: String, detail: String },
    #[error("TLS with {addr}: {detail}")]
    Tls { addr: String, detail: String },
    #[error("timed out after {ms} ms")]
    Timeout { ms: u128 },
    #[error("status {status} from {url}")]
    Status { status: u16, url: String },
    #[error("the body is more than {max} bytes")]
    TooLarge { max: usize },
    #[error("{0}")]
    Other(String),
}

/// The system's roots, read once per process.
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

fn roots_from(path: &Path) -> Result<Arc<RootCertStore>, ClientError> {
    let bad = |reason: String| ClientError::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let mut store = RootCertStore::empty();
    for c in common::tls::load_certs(path).map_err(|e| bad(e.to_string()))? {
        store.add(c).map_err(|e| bad(e.to_string()))?;
    }
    Ok(Arc::new(store))
}

/// A client for `http://` and, with the roots the options say, `https://` URLs. Blocking (it
/// may read certificate files): call it from a blocking thread. `https` tells whether the system
/// roots are needed when there is no `ca_file` (they are not read for plain HTTP).
pub fn build_client(ca_file: Option<&Path>, https: bool) -> Result<reqwest::Client, ClientError> {
    let mut b = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .pool_max_idle_per_host(0)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    let roots = match ca_file {
        Some(path) => Some(roots_from(path)?),
        None if https => Some(system_roots()?),
        None => None,
    };
    if let Some(roots) = roots {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        b = b.use_preconfigured_tls(tls);
    }
    b.build().map_err(|e| ClientError::Build(error_chain(&e)))
}

/// `GET url` within `timeout`: the status of the answer, without reading its body.
pub async fn get_status(client: &reqwest::Client, url: &str, timeout: Duration) -> Result<u16, RequestError> {
    let u = check_url(url)?;
    let addr = authority(&u);
    let resp = client
        .get(u)
        .header(reqwest::header::ACCEPT, "*/*")
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| classify(&e, &addr, timeout))?;
    Ok(resp.status().as_u16())
}

/// `GET url` within `timeout`: the body of a 200 answer, at most `max` bytes.
pub async fn get_body(
    client: &reqwest::Client,
    url: &str,
    accept: &str,
    timeout: Duration,
    max: usize,
) -> Result<Vec<u8>, RequestError> {
    let u = check_url(url)?;
    let addr = authority(&u);
    let mut resp = client
        .get(u)
        .header(reqwest::header::ACCEPT, accept)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| classify(&e, &addr, timeout))?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(RequestError::Status {
            status,
            url: url.to_string(),
        });
    }
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(RequestError::TooLarge { max });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| classify(&e, &addr, timeout))? {
        if chunk.len() > max - body.len() {
            return Err(RequestError::TooLarge { max });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `host:port` of a URL, as errors show it.
fn authority(u: &reqwest::Url) -> String {
    // an IPv6 host comes with its brackets
    let host = u.host_str().unwrap_or("");
    match u.port_or_known_default() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

fn classify(e: &reqwest::Error, addr: &str, timeout: Duration) -> RequestError {
    if let Some(detail) = find_tls_error(e) {
        return RequestError::Tls {
            addr: addr.to_string(),
            detail,
        };
    }
    if e.is_timeout() {
        return RequestError::Timeout {
            ms: timeout.as_millis(),
        };
    }
    // reqwest's own message repeats the URL: the sources say what happened
    let detail = std::error::Error::source(e).map_or_else(|| e.to_string(), innermost);
    if e.is_connect() {
        RequestError::Connect {
            addr: addr.to_string(),
            detail,
        }
    } else {
        RequestError::Other(detail)
    }
}

/// The message of the deepest error in the chain (an `io::Error`'s own text, where there is
/// one: "Connection refused (os error 111)").
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    loop {
        let next = match cur.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => cur.source(),
        };
        match next {
            Some(n) => cur = n,
            None => return cur.to_string(),
        }
    }
}

/// Every message of the chain, `: `-joined.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let msg = err.to_string();
        if parts.last().is_none_or(|last| !last.contains(&msg)) {
            parts.push(msg);
        }
        cur = err.source();
    }
    parts.join(": ")
}

/// The rustls error somewhere in the chain, if any.
fn find_tls_error(e: &(dyn std::error::Error + 'static)) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_and_https_urls_with_a_host_are_accepted() {
        let u = check_url("http://localhost:8080/a/b?c=d").unwrap();
        assert_eq!(
            (u.host_str(), u.port(), u.path(), u.query()),
            (Some("localhost"), Some(8080), "/a/b", Some("c=d"))
        );
        assert_eq!(authority(&check_url("http://host").unwrap()), "host:80");
        assert_eq!(authority(&check_url("https://host/x").unwrap()), "host:443");
        assert_eq!(authority(&check_url("http://[::1]:81/x").unwrap()), "[::1]:81");
        assert!(matches!(
            check_url("http://:80/"),
            Err(UrlError::Parse { .. } | UrlError::NoHost { .. })
        ));
        assert!(matches!(
            check_url("http://h:99999/"),
            Err(UrlError::Parse { .. })
        ));
        assert!(matches!(check_url("localhost:80"), Err(UrlError::Scheme { .. })));
        assert!(matches!(check_url("ftp://h/x"), Err(UrlError::Scheme { .. })));
        assert!(matches!(
            check_url("http://u:p@h/"),
            Err(UrlError::Credentials { .. })
        ));
        let e = check_url("ftp://h/x").unwrap_err().to_string();
        assert!(e.contains("http:// or https://"), "{e}");
    }

    #[test]
    fn a_missing_ca_file_is_a_client_error_naming_it() {
        let e = build_client(Some(Path::new("/nonexistent/ca.pem")), true).unwrap_err();
        assert!(matches!(e, ClientError::CaFile { .. }), "{e}");
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }
}
