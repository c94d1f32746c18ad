//! `GET /api/v1/audit?limit=` (operator): the newest entries of the audit log
//! ([`crate::audit`], written by the alerts and commands actors).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::error::ApiError;
use super::scope::authorize_scoped;
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
    let (_, vis) = authorize_scoped(&req, &state, Role::Operator).await?;
    let q = web::Query::<AuditQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("query: {e}")))?;
    let limit = q.limit.unwrap_or(500).min(MAX_AUDIT_ENTRIES);
    let audit = state.audit.clone();
    let mut lines = web::block(move || audit.newest(limit))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::from)?;
    // a scoped token sees the entries whose target is a machine in scope or an alert of
    // one; rollouts, silences, windows, the estate and tokens span more than a store
    if vis.is_scoped() {
        lines.retain(|e| {
            e["target"]
                .as_str()
                .is_some_and(|t| (!t.contains(':') && vis.device(t)) || (t.contains(':') && vis.alert(t)))
        });
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "entries": lines })))
}
