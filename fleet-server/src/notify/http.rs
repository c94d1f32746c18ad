//! REST routes of notifications.
//!
//! | route | role |
//! | --- | --- |
//! | `GET /api/v1/notify`: channels (kind, format, redacted target, counters, last error), the outbox by state, routing counters | viewer |
//! | `GET /api/v1/notify/outbox?state=pending\|delivered\|failed&limit=`: outbox entries, by key | viewer |
//! | `POST /api/v1/notify/channels/{name}/test` body `{"resolved": false}` (optional): a sample notification now, in one attempt; what the receiver answered | operator |

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::outbox::{EntryState, OutboxEntry};
use super::worker::blocking;
use super::{Notifier, NotifyError};
use crate::auth::Role;
use crate::http::error::ApiError;
use crate::http::scope::authorize_unscoped;
use crate::http::state::AppState;

/// Entries `GET /api/v1/notify/outbox` returns at most.
pub const MAX_OUTBOX_LIST: usize = 1000;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/notify", web::get().to(overview))
        .route("/notify/outbox", web::get().to(outbox))
        .route("/notify/channels/{name}/test", web::post().to(test));
}

impl From<NotifyError> for ApiError {
    fn from(e: NotifyError) -> Self {
        match e {
            NotifyError::UnknownChannel { .. } => ApiError::NotFound(e.to_string()),
        }
    }
}

fn notifier(state: &AppState) -> &Notifier {
    &state.alerting.notify
}

async fn overview(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    authorize_unscoped(
        &req,
        &state,
        Role::Viewer,
        "notification channels and their outbox",
    )?;
    let n = notifier(&state);
    let s = n.snapshot();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "channels": n.channels(),
        "outbox": s.outbox,
        "routed": s.routed,
        "rate_limited": s.rate_limited,
        "queue_full": s.queue_full,
        "enqueue_errors": s.enqueue_errors,
        "outbox_errors": s.outbox_errors,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutboxQuery {
    state: Option<String>,
    limit: Option<usize>,
}

/// An outbox entry as the API shows it (the notification by id, not in full).
#[derive(Serialize)]
struct EntryView {
    key: String,
    channel: String,
    notification: String,
    event: String,
    title: String,
    state: EntryState,
    attempts: u32,
    created_ms: i64,
    next_attempt_ms: i64,
    finished_ms: Option<i64>,
    last_error: Option<String>,
    /// What the receiver answered (JSON), once delivered.
    receipt: Option<serde_json::Value>,
}

impl From<OutboxEntry> for EntryView {
    fn from(e: OutboxEntry) -> Self {
        EntryView {
            receipt: e.receipt.as_deref().map(|r| {
                serde_json::from_str(r).unwrap_or_else(|_| serde_json::Value::String(r.to_string()))
            }),
            key: e.key,
            channel: e.channel,
            notification: e.notification.id,
            event: e.notification.event,
            title: e.notification.title,
            state: e.state,
            attempts: e.attempts,
            created_ms: e.created_ms,
            next_attempt_ms: e.next_attempt_ms,
            finished_ms: e.finished_ms,
            last_error: e.last_error,
        }
    }
}

async fn outbox(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    authorize_unscoped(
        &req,
        &state,
        Role::Viewer,
        "notification channels and their outbox",
    )?;
    let q = web::Query::<OutboxQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("query: {e}")))?;
    let filter = match q.state.as_deref() {
        None | Some("all") => None,
        Some("pending") => Some(EntryState::Pending),
        Some("delivered") => Some(EntryState::Delivered),
        Some("failed") => Some(EntryState::Failed),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "query parameter state: {other:?} is not one of pending, delivered, failed, all"
            )));
        }
    };
    let limit = q.limit.unwrap_or(100).min(MAX_OUTBOX_LIST);
    let store = notifier(&state).outbox().clone();
    let entries = blocking(move || store.list(filter, limit))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let entries: Vec<EntryView> = entries.into_iter().map(EntryView::from).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "entries": entries })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TestBody {
    /// Send the sample's resolution instead of its firing (closes what a test opened in
    /// PagerDuty or Alertmanager).
    #[serde(default)]
    resolved: bool,
}

async fn test(
    req: HttpRequest,
    state: web::Data<AppState>,
    name: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    authorize_unscoped(&req, &state, Role::Operator, "notification channels")?;
    let b: TestBody = if body.iter().all(u8::is_ascii_whitespace) {
        TestBody::default()
    } else {
        crate::http::error::json_body(&body)?
    };
    let outcome = notifier(&state)
        .send_test(&name, b.resolved, common::time::now_ms())
        .await?;
    Ok(HttpResponse::Ok().json(outcome))
}
