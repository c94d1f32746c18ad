//! `GET /api/v1/audit?limit=` (operator): the newest lines of the audit log
//! (`DATA_DIR/audit.log`, JSON lines written by the alerts and commands actors).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::auth::authorize;
use super::error::ApiError;
use super::state::AppState;
use crate::auth::Role;

/// Lines `GET /api/v1/audit` returns at most.
pub const MAX_AUDIT_LINES: usize = 5000;

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
    let limit = q.limit.unwrap_or(500).min(MAX_AUDIT_LINES);
    let path = state.audit_log.clone();
    let lines = web::block(move || -> std::io::Result<Vec<serde_json::Value>> {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut v: Vec<serde_json::Value> = text
            .lines()
            .rev()
            .take(limit)
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        v.reverse();
        Ok(v)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(format!("audit log: {e}")))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "entries": lines })))
}
