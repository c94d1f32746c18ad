//! `GET /api/v1/audit?limit=` (operator): the newest entries of the audit log
//! ([`crate::audit`], written by the alerts and commands actors).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::auth::authorize;
use super::error::ApiError;
use super::state::AppState;
use crate::audit::MAX_AUDIT_ENTRIES;
use crate::auth::Role;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/audit", web::get().to(audit));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<usize>,
}

async fn audit(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Role::Operator)?;
    let q = web::Query::<AuditQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("query: {e}")))?;
    let limit = q.limit.unwrap_or(500).min(MAX_AUDIT_ENTRIES);
    let audit = state.audit.clone();
    let lines = web::block(move || audit.newest(limit))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::from)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "entries": lines })))
}
