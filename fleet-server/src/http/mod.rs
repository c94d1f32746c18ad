//! REST API v1 and the web view, on actix-web.
//!
//! Every route but `GET /api/v1/health` and the static page needs
//! `Authorization: Bearer <token>` ([`auth::authorize`]); [`error::ApiError`] is the one mapping
//! from errors to statuses; [`state::AppState`] is what every handler reaches.
//! Alerting routes are in [`alerts`]; metric history, its export and the fleet report are
//! served from [`crate::history`].
//! The live stream (`GET /api/v1/stream`) is in [`live`], the web view's files in [`ui`].
//! `GET /metrics` ([`metrics`]) is open unless `[http] metrics_token` is set.

pub mod alerts;
pub mod auth;
pub mod commands;
pub mod error;
pub mod live;
pub mod metrics;
pub mod state;
pub mod ui;

use actix_web::{HttpRequest, HttpResponse, web};
use common::DeviceId;

use self::auth::authorize;
use self::error::ApiError;
use self::state::AppState;
use crate::actors::fleet::{GetDevice, ListDevices};
use crate::auth::Role;

/// Largest request body accepted by any route.
pub const MAX_BODY: usize = 64 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::JsonConfig::default().limit(MAX_BODY))
        .app_data(web::PayloadConfig::new(MAX_BODY))
        .route("/", web::get().to(ui::index))
        .configure(ui::configure)
        .configure(metrics::configure)
        .service(
            web::scope("/api/v1")
                .configure(alerts::configure)
                .configure(commands::configure)
                .configure(crate::history::http::configure)
                .configure(crate::history::export::http::configure)
                .configure(crate::history::report::http::configure)
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
