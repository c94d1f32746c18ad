//! `GET /api/v1/cluster` (viewer): every instance with its state (`alive`, `dead`,
//! `stopped`), addresses, version and heartbeat age, which instance leads each leader-only
//! job, and which instance answered (`"self": true`); read from the database at each request
//! (with sled: this instance alone, the leader of every job).

use actix_web::{HttpRequest, HttpResponse, web};

use super::instance::ClusterError;
use crate::auth::Role;
use crate::http::auth::authorize;
use crate::http::error::ApiError;
use crate::http::state::AppState;
use crate::store::StoreError;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/cluster", web::get().to(cluster));
}

async fn cluster(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Role::Viewer)?;
    let c = state.cluster.clone();
    let view = web::block(move || c.read())
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| match e {
            // unavailable (503) or internal, as for every store error
            ClusterError::Postgres(p) => ApiError::from(StoreError::Postgres(p)),
            other => ApiError::Internal(other.to_string()),
        })?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "instance": view.instance,
        "backend": view.backend,
        "lease_ms": view.lease_ms,
        "now_ms": view.now_ms,
        "instances": view.instances,
        "leaders": view.leaders,
        "this": state.cluster.snapshot(),
    })))
}
