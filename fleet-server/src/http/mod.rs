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
pub mod scope;
pub mod state;
pub mod tokens;
pub mod ui;

use actix_web::{HttpRequest, HttpResponse, web};

use self::error::ApiError;
use self::state::AppState;

/// Largest request body accepted by any route.
pub const MAX_BODY: usize = 64 * 1024;
/// The memory figures of `/api/v1/health` are at most this old: reading the allocator's
/// statistics locks it ([`proc_mem::ProcessMemory::now`]).
const MEMORY_SAMPLE_AGE: std::time::Duration = std::time::Duration::from_secs(1);

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
                .configure(crate::cluster::http::configure)
                .configure(crate::estate::http::configure)
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

/// `storage`: whether the store answers (backend, status, the error while unavailable)
/// beside the history job's figures.
fn storage(state: &AppState) -> serde_json::Value {
    let mut v = serde_json::to_value(state.storage.status()).unwrap_or_default();
    if let (Some(m), Ok(serde_json::Value::Object(h))) = (
        v.as_object_mut(),
        serde_json::to_value(state.alerting.history.snapshot(&state.alerting.history_policy)),
    ) {
        m.extend(h);
    }
    v
}

async fn health(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        // degraded: the store cannot be reached (`storage` says why), records are refused
        "status": if state.storage.is_available() { "ok" } else { "degraded" },
        "version": env!("CARGO_PKG_VERSION"),
        // which instance answered, and the leader-only jobs it runs now
        "instance": state.cluster.id(),
        "cluster": state.cluster.snapshot(),
        "uptime_s": (common::time::now_ms() - state.started_ms) / 1000,
        "ingest": state.ingest.snapshot(),
        "broker": state.broker.get().map(|b| b.snapshot()),
        "storage": storage(&state),
        "alerts": state.alerting.alerts.send(crate::alerts::requests::GetSnapshot).await.ok(),
        "notify": state.alerting.notify.snapshot(),
        "live": state.live.snapshot(),
        "supervisor": state.supervisor.snapshot(),
        "sessions": state.sessions.as_ref().map(|s| s.snapshot()),
        "memory": proc_mem::ProcessMemory::recent(MEMORY_SAMPLE_AGE),
    }))
}
