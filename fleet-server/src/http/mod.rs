//! REST API v1 and the web view, on actix-web.
//!
//! Every route but `GET /api/v1/health` and the static page needs
//! `Authorization: Bearer <token>` ([`auth::authorize`]); [`error::ApiError`] is the one mapping
//! from errors to statuses; [`state::AppState`] is what every handler reaches.
//! Alerting routes are in [`crate::alerts::http`]; metric history, its export and the fleet report are
//! served from [`crate::history`].
//! The live stream (`GET /api/v1/stream`) is in [`live`], the web view's files in [`ui`].
//! `GET /metrics` ([`metrics`]) is open unless `[http] metrics_token` is set.

pub mod audit;
pub mod auth;
pub mod error;
pub mod live;
pub mod metrics;
pub mod state;
pub mod tokens;
pub mod ui;

use actix_web::{HttpRequest, HttpResponse, web};

use self::error::ApiError;
use self::state::AppState;

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
                .configure(crate::alerts::http::configure)
                .configure(crate::commands::http::configure)
                .configure(audit::configure)
                .configure(tokens::configure)
                .configure(crate::history::http::configure)
                .configure(crate::history::export::http::configure)
                .configure(crate::history::report::http::configure)
                .configure(live::configure)
                .configure(crate::fleet::http::configure)
                .configure(crate::notify::http::configure)
                .route("/health", web::get().to(health)),
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
        "alerts": state.alerting.alerts.send(crate::alerts::requests::GetSnapshot).await.ok(),
        "notify": state.alerting.notify.snapshot(),
        "live": state.live.snapshot(),
        "supervisor": state.supervisor.snapshot(),
        "memory": proc_mem::ProcessMemory::now(),
    }))
}
