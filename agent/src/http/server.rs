//! The local endpoint's server: binds the listen address, routes `/metrics`, `/api/v1/status`,
//! `POST /api/v1/app-metrics` and `/healthz` to their handlers (see [`crate::http`]).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_LENGTH, ContentType};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use common::Telemetry;
use serde::Serialize;

use super::exporter;
use super::status::StatusSnapshot;
use crate::appmetrics::store::AppMetricsStore;

/// Largest pushed body accepted.
pub const PUSH_BODY_LIMIT: usize = 16 * 1024;
/// Seconds a graceful stop waits for requests in progress.
pub const SHUTDOWN_TIMEOUT_S: u64 = 1;
/// A client must send its request head within this time.
pub const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Most connections served at once (local clients only: the vision service, a scraper, a person).
pub const MAX_CONNECTIONS: usize = 64;

/// Gives the current status.
pub type StatusFn = Arc<dyn Fn() -> StatusSnapshot + Send + Sync>;
/// Gives the latest telemetry; `None` before the first collection.
pub type TelemetryFn = Arc<dyn Fn() -> Option<Telemetry> + Send + Sync>;

/// What the handlers read. Pushed values are stamped with [`common::time::now_ms`], so the
/// collector must pass that clock to [`AppMetricsStore::snapshot`] too.
#[derive(Clone)]
pub struct HttpState {
    pub status: StatusFn,
    pub telemetry: TelemetryFn,
    pub app: Arc<AppMetricsStore>,
}

/// Binds `listen` and returns the server (a future: the caller spawns it on the actix system and
/// stops it with `server.handle().stop(true)`) and the bound address (for port 0).
pub fn start(listen: SocketAddr, state: HttpState) -> io::Result<(Server, SocketAddr)> {
    let data = web::Data::new(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            // resources, not `App::route`: a wrong method gets 405 rather than 404
            .service(web::resource("/metrics").get(metrics))
            .service(web::resource("/api/v1/status").get(status))
            .service(web::resource("/api/v1/app-metrics").post(push))
            .service(web::resource("/healthz").get(healthz))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(SHUTDOWN_TIMEOUT_S)
    .max_connections(MAX_CONNECTIONS)
    .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
    .bind(listen)
    .map_err(|e| io::Error::new(e.kind(), format!("http: cannot listen on {listen}: {e}")))?;
    let bound = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| io::Error::other(format!("http: {listen} bound to no address")))?;
    Ok((server.run(), bound))
}

async fn metrics(state: web::Data<HttpState>) -> HttpResponse {
    let snapshot = (state.status)();
    let text = match (state.telemetry)() {
        Some(t) => exporter::render(&t, &snapshot.device, &snapshot),
        None => exporter::render_without_telemetry(&snapshot.device, &snapshot),
    };
    match text {
        Ok(text) => HttpResponse::Ok().content_type(exporter::CONTENT_TYPE).body(text),
        Err(e) => {
            tracing::error!(error = %e, "metrics not rendered");
            HttpResponse::InternalServerError().body(e.to_string())
        }
    }
}

async fn status(state: web::Data<HttpState>) -> HttpResponse {
    HttpResponse::Ok().json((state.status)())
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::plaintext())
        .body("ok")
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

fn error_response(code: StatusCode, error: &str, field: Option<&str>) -> HttpResponse {
    HttpResponse::build(code).json(ErrorBody { error, field })
}

fn too_large(state: &HttpState) -> HttpResponse {
    let why = format!("the body is larger than {PUSH_BODY_LIMIT} bytes");
    state.app.record_rejected_push(&why);
    tracing::debug!(error = %why, "app metrics push refused");
    error_response(StatusCode::PAYLOAD_TOO_LARGE, &why, None)
}

async fn push(state: web::Data<HttpState>, req: HttpRequest, payload: web::Payload) -> HttpResponse {
    // a declared size over the limit is refused before reading anything
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > PUSH_BODY_LIMIT as u64) {
        return too_large(&state);
    }
    let body = match payload.to_bytes_limited(PUSH_BODY_LIMIT).await {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => {
            let why = format!("cannot read the body: {e}");
            state.app.record_rejected_push(&why);
            return error_response(StatusCode::BAD_REQUEST, &why, None);
        }
        Err(_) => return too_large(&state),
    };
    match state.app.push_json(&body, common::time::now_ms()) {
        Ok(outcome) => HttpResponse::Ok().json(outcome),
        Err(e) => {
            tracing::debug!(error = %e, "app metrics push refused");
            error_response(StatusCode::BAD_REQUEST, &e.to_string(), e.field.as_deref())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use common::Reading;

    use super::*;
    use crate::appmetrics::config::AppMetricsConfig;
    use crate::http::exporter::tests::{build_status, build_telemetry, parse_strict};

    struct Response {
        status: u16,
        head: String,
        body: String,
    }

    /// Sends `head` (without the final blank line) and `body` on a fresh connection and reads
    /// the response until the server closes.
    fn request(addr: SocketAddr, head: &str, body: &[u8]) -> Response {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut raw = format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n\r\n").into_bytes();
        raw.extend_from_slice(body);
        s.write_all(&raw).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                // the server may reset a connection whose body it did not read, after answering
                Err(e) if !got.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("reading the response to {head:?}: {e}"),
            }
        }
        let text = String::from_utf8(got).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        Response {
            status,
            head: head.to_string(),
            body: body.to_string(),
        }
    }

    fn post(addr: SocketAddr, body: &[u8]) -> Response {
        request(
            addr,
            &format!(
                "POST /api/v1/app-metrics HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}",
                body.len()
            ),
            body,
        )
    }

    fn get(addr: SocketAddr, path: &str) -> Response {
        request(addr, &format!("GET {path} HTTP/1.1"), b"")
    }

    #[test]
    fn the_server_serves_metrics_status_and_pushes_on_an_ephemeral_port() {
        let store = Arc::new(AppMetricsStore::new(&AppMetricsConfig::default()));
        let app = store.clone();
        // telemetry appears with the first push, so both /metrics shapes are seen
        let telemetry: TelemetryFn = Arc::new(move || {
            let values = app.snapshot(common::time::now_ms());
            (!values.is_empty()).then(|| Telemetry {
                app: values,
                ..build_telemetry()
            })
        });
        let state = HttpState {
            status: Arc::new(build_status),
            telemetry,
            app: store.clone(),
        };
        actix_web::rt::System::new().block_on(async move {
            let (server, addr) = start("127.0.0.1:0".parse().unwrap(), state).unwrap();
            assert_eq!(addr.ip().to_string(), "127.0.0.1");
            assert_ne!(addr.port(), 0);
            let handle = server.handle();
            actix_web::rt::spawn(server);

            let client = actix_web::rt::task::spawn_blocking(move || {
                let r = get(addr, "/healthz");
                assert_eq!((r.status, r.body.as_str()), (200, "ok"));

                let r = get(addr, "/metrics");
                assert_eq!(r.status, 200);
                assert!(
                    r.head
                        .to_ascii_lowercase()
                        .contains("content-type: text/plain; version=0.0.4"),
                    "{}",
                    r.head
                );
                assert!(r.body.contains("rvm_agent_buffer_records 10\n"), "{}", r.body);
                assert!(!r.body.contains("rvm_cpu_usage_percent"), "{}", r.body);

                let r = get(addr, "/api/v1/status");
                assert_eq!(r.status, 200);
                let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
                assert_eq!(v["device"], "rvm0042");
                assert_eq!(v["link"]["published"], 95);

                let r = post(
                    addr,
                    br#"{"metrics": {"items_recognised": 1234, "camera_fps": 29.5}}"#,
                );
                assert_eq!(r.status, 200, "{}", r.body);
                let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
                assert_eq!((&v["accepted"], &v["ignored"]), (&2.into(), &0.into()), "{v}");

                let r = get(addr, "/metrics");
                let samples = parse_strict(&r.body);
                let fps = samples
                    .iter()
                    .find(|s| s.name == "rvm_app_camera_fps")
                    .map(|s| s.value);
                assert_eq!(fps, Some(29.5), "{}", r.body);
                assert!(r.body.contains("rvm_cpu_usage_percent 12.5\n"), "{}", r.body);

                let r = post(addr, br#"{"items_recognised": 1, "camera_fps": "fast"}"#);
                assert_eq!(r.status, 400, "{}", r.body);
                let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
                assert_eq!(v["field"], "camera_fps", "{}", r.body);
                assert!(v["error"].as_str().unwrap().contains("camera_fps"), "{}", r.body);

                // declared too large
                let big = format!(r#"{{"a": 1, "pad": "{}"}}"#, "x".repeat(PUSH_BODY_LIMIT));
                let r = post(addr, big.as_bytes());
                assert_eq!(r.status, 413, "{}", r.body);
                assert!(r.body.contains("16384"), "{}", r.body);

                // too large without a declared length
                let mut chunked = format!("{:x}\r\n", big.len()).into_bytes();
                chunked.extend_from_slice(big.as_bytes());
                chunked.extend_from_slice(b"\r\n0\r\n\r\n");
                let r = request(
                    addr,
                    "POST /api/v1/app-metrics HTTP/1.1\r\nTransfer-Encoding: chunked",
                    &chunked,
                );
                assert_eq!(r.status, 413, "{}", r.body);

                let r = get(addr, "/api/v1/app-metrics");
                assert_eq!(r.status, 405);
                let r = get(addr, "/nothing");
                assert_eq!(r.status, 404);
            });
            let outcome = client.await;
            handle.stop(true).await;
            if let Err(e) = outcome {
                std::panic::resume_unwind(e.into_panic());
            }
        });
        assert_eq!(
            store.snapshot(common::time::now_ms()),
            vec![
                Reading::new("camera_fps", 29.5),
                Reading::new("items_recognised", 1234.0)
            ]
        );
        let c = store.counters();
        assert_eq!((c.pushes_accepted, c.pushes_rejected), (1, 3));
    }

    #[test]
    fn an_address_in_use_is_an_error_naming_it() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let state = HttpState {
            status: Arc::new(build_status),
            telemetry: Arc::new(|| None),
            app: Arc::new(AppMetricsStore::new(&AppMetricsConfig::default())),
        };
        actix_web::rt::System::new().block_on(async move {
            let err = start(addr, state).map(|_| ()).unwrap_err();
            assert!(err.to_string().contains(&addr.to_string()), "{err}");
        });
    }
}
