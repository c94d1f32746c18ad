//! `GET /api/v1/stream` (viewer): Server-Sent Events carrying what changed ([`crate::live`]).
//!
//! EventSource cannot set headers, so the token may come as `?token=` instead of the
//! `Authorization` header. The token never reaches a log line: the server has no access log
//! and nothing here logs the request. Keep it so (or redact `token`) if one is added.
//!
//! The stream opens with a `retry:` hint and a `hello` event naming the caller, then carries
//! one `data:` line of JSON per [`crate::live::event::LiveEvent`]; a comment line every
//! [`KEEPALIVE`] keeps proxies from closing it and notices a page that went away.
//!
//! A scoped token's connection gets each frame cut to its machines
//! ([`crate::live::scoped::ScopedFilter`], its scope resolved when it connects).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, MessageBody};
use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};

use super::auth::authorize;
use super::error::ApiError;
use super::state::AppState;
use crate::auth::{Principal, Role};
use crate::live::LiveHub;
use crate::live::event::{LiveEvent, LiveFrame};
use crate::live::scoped::ScopedFilter;

/// A comment line this often keeps the connection open and finds closed ones.
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// How long EventSource waits before reconnecting after the stream broke.
pub const RETRY_MS: u64 = 2_000;
/// Frames queued for one connection between the hub and the socket.
const CONNECTION_QUEUE: usize = 16;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/stream", web::get().to(stream));
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The `Authorization` header when present, else `?token=`.
fn authorize_stream(req: &HttpRequest, state: &AppState) -> Result<Principal, ApiError> {
    if req.headers().contains_key(header::AUTHORIZATION) {
        return authorize(req, state, Role::Viewer);
    }
    // The parse error is not shown: it could quote the query string, token included.
    let q = web::Query::<TokenQuery>::from_query(req.query_string())
        .map_err(|_| ApiError::BadRequest("query: not a valid query string".into()))?;
    let token = q.token.as_deref().map(str::trim).ok_or(ApiError::NoToken)?;
    let who = state.tokens.verify(token).ok_or(ApiError::BadToken)?;
    if who.role < Role::Viewer {
        return Err(ApiError::Forbidden(Role::Viewer));
    }
    Ok(who)
}

async fn stream(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let who = authorize_stream(&req, &state)?;
    let vis = super::scope::visible(&state, &who).await?;
    let filter = match (vis.sites(), vis.devices()) {
        (Some(sites), Some(devices)) => Some(ScopedFilter::new(sites.clone(), devices.clone())),
        _ => None,
    };
    let hello = serde_json::json!({"type": "hello", "name": who.name, "role": who.role, "scope": who.scope});
    let first = format!("retry: {RETRY_MS}\ndata: {hello}\n\n");
    let (tx, rx) = mpsc::channel::<Bytes>(CONNECTION_QUEUE);
    let hub = state.live.clone();
    let sub = hub.subscribe();
    actix_web::rt::spawn(forward(hub, sub, tx, Bytes::from(first), filter));
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache, no-store"))
        .insert_header(("X-Accel-Buffering", "no"))
        .body(SseBody(rx)))
}

/// Copies hub frames to one connection until it closes (its body, and so `tx`'s receiver,
/// is dropped) or the hub ends.
async fn forward(
    hub: LiveHub,
    mut sub: broadcast::Receiver<LiveFrame>,
    tx: mpsc::Sender<Bytes>,
    first: Bytes,
    mut filter: Option<ScopedFilter>,
) {
    if tx.send(first).await.is_err() {
        return;
    }
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.tick().await;
    loop {
        let out = tokio::select! {
            r = sub.recv() => match r {
                Ok(frame) => match filter.as_mut() {
                    None => Bytes::from_owner(SharedFrame(frame)),
                    Some(f) => match f.frame(&frame) {
                        Some(own) => Bytes::from(own),
                        None => continue,
                    },
                },
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    hub.note_lagged(n);
                    match (LiveEvent::Resync { missed: n }).frame() {
                        Ok(f) => Bytes::copy_from_slice(f.as_bytes()),
                        Err(_) => return,
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = keepalive.tick() => Bytes::from_static(b": keepalive\n\n"),
            _ = tx.closed() => return,
        };
        if tx.send(out).await.is_err() {
            return;
        }
    }
}

/// A frame shared with the hub: written to each connection without a copy.
struct SharedFrame(LiveFrame);

impl AsRef<[u8]> for SharedFrame {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// A streaming body fed by [`forward`].
struct SseBody(mpsc::Receiver<Bytes>);

impl MessageBody for SseBody {
    type Error = std::convert::Infallible;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        self.0.poll_recv(cx).map(|f| f.map(Ok))
    }
}
