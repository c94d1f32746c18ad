//! REST API v1 and the web view, on actix-web.
//!
//! Every route but `GET /api/v1/health` and the static page needs
//! `Authorization: Bearer <token>`; [`ApiError`] is the one mapping from errors to statuses.
//! Alerting routes are in [`alerts`], metric history in [`history`].
//! The live stream (`GET /api/v1/stream`) is in [`live`], the web view's files in [`ui`].
//! `GET /metrics` ([`metrics`]) is open unless `[http] metrics_token` is set; history export
//! is in [`export`], the HTML fleet report in [`report`].

pub mod alerts;
pub mod commands;
pub mod export;
pub mod history;
pub mod live;
pub mod metrics;
pub mod report;
pub mod ui;

use std::sync::Arc;

use actix::Addr;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use common::DeviceId;
use serde::Serialize;

use crate::actors::fleet::{FleetActor, GetDevice, ListDevices};
use crate::actors::ingest::IngestStats;
use crate::auth::{Principal, Role, TokenStore};
use crate::broker::BrokerStats;

/// Largest request body accepted by any route.
pub const MAX_BODY: usize = 64 * 1024;

pub struct AppState {
    pub fleet: Addr<FleetActor>,
    pub tokens: Arc<TokenStore>,
    pub ingest: Arc<IngestStats>,
    /// Set once the embedded broker runs (none with an external broker).
    pub broker: Arc<std::sync::OnceLock<Arc<BrokerStats>>>,
    pub started_ms: i64,
    pub alerting: alerts::AlertsApi,
    /// What changed, for `GET /api/v1/stream` ([`live`]).
    pub live: crate::live::LiveHub,
    pub commands: commands::CommandsHandle,
    /// `DATA_DIR/audit.log` (JSON lines).
    pub audit_log: std::path::PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or malformed Authorization header (expected `Bearer <token>`)")]
    NoToken,
    #[error("unknown token")]
    BadToken,
    #[error("this needs the {0:?} role")]
    Forbidden(Role),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    /// The request is valid but the state does not allow it (already acknowledged, ...).
    #[error("{0}")]
    Conflict(String),
    #[error("internal error: {0}")]
    Internal(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    message: String,
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            ApiError::NoToken => "unauthenticated",
            ApiError::BadToken => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::Conflict(_) => "conflict",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::NoToken | ApiError::BadToken => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut r = HttpResponse::build(self.status_code());
        if matches!(self, ApiError::NoToken | ApiError::BadToken) {
            r.insert_header(("WWW-Authenticate", "Bearer"));
        }
        r.json(ErrorBody {
            error: self.code(),
            message: self.to_string(),
        })
    }
}

/// Checks the bearer token and that its role is at least `min`.
pub fn authorize(req: &HttpRequest, state: &AppState, min: Role) -> Result<Principal, ApiError> {
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::NoToken)?;
    let token = header.strip_prefix("Bearer ").ok_or(ApiError::NoToken)?.trim();
    let who = state.tokens.verify(token).ok_or(ApiError::BadToken)?;
    if who.role < min {
        return Err(ApiError::Forbidden(min));
    }
    Ok(who)
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::JsonConfig::default().limit(MAX_BODY))
        .app_data(web::PayloadConfig::new(MAX_BODY))
        .route("/", web::get().to(index))
        .configure(ui::configure)
        .configure(metrics::configure)
        .service(
            web::scope("/api/v1")
                .configure(alerts::configure)
                .configure(commands::configure)
                .configure(history::configure)
                .configure(export::configure)
                .configure(report::configure)
                .configure(live::configure)
                .route("/health", web::get().to(health))
                .route("/devices", web::get().to(devices))
                .route("/devices/{id}", web::get().to(device)),
        )
        .default_service(web::to(not_found));
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Content-Security-Policy", ui::CSP))
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-cache"))
        .body(include_str!("../../ui/index.html"))
}

async fn health(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": (common::time::now_ms() - state.started_ms) / 1000,
        "ingest": state.ingest.snapshot(),
        "broker": state.broker.get().map(|b| b.snapshot()),
        "storage": state.alerting.history.snapshot(&state.alerting.history_policy),
        "alerts": state.alerting.alerts.send(crate::actors::alerts::GetSnapshot).await.ok(),
        "notify": state.alerting.notify.snapshot(),
        "live": state.live.snapshot(),
        "memory": common::mem::ProcessMemory::now(),
    }))
}

async fn devices(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Role::Viewer)?;
    let list = state
        .fleet
        .send(ListDevices)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "devices": list })))
}

async fn device(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Role::Viewer)?;
    let id = DeviceId::new(id.into_inner()).map_err(|e| ApiError::BadRequest(format!("device id: {e}")))?;
    let d = state
        .fleet
        .send(GetDevice(id.clone()))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .ok_or_else(|| ApiError::NotFound(format!("no device {id}")))?;
    Ok(HttpResponse::Ok().json(d))
}
