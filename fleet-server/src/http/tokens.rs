//! API tokens: `GET/POST /api/v1/tokens` (admin) and `GET /api/v1/whoami` (any token).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::auth::authorize;
use super::error::{ApiError, json_body};
use super::state::AppState;
use crate::auth::Role;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/tokens", web::get().to(list_tokens))
        .route("/tokens", web::post().to(create_token))
        .route("/whoami", web::get().to(whoami));
}

async fn list_tokens(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Role::Admin)?;
    let list: Vec<serde_json::Value> = state
        .tokens
        .list()
        .into_iter()
        .map(|t| serde_json::json!({"name": t.name, "role": t.role, "created_ms": t.created_ms, "expires_ms": t.expires_ms}))
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "tokens": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    name: String,
    role: Role,
}

async fn create_token(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let who = authorize(&req, &state, Role::Admin)?;
    let b: TokenBody = json_body(&body)?;
    if b.name.is_empty()
        || b.name.len() > 64
        || !b
            .name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
    {
        return Err(ApiError::BadRequest("name: 1 to 64 of [A-Za-z0-9-_.]".into()));
    }
    let token = state
        .tokens
        .create(&b.name, b.role)
        .map_err(|e| ApiError::Conflict(e.to_string()))?;
    tracing::info!(by = %who.name, name = %b.name, role = ?b.role, "token created");
    Ok(HttpResponse::Created().json(serde_json::json!({ "name": b.name, "role": b.role, "token": token })))
}

async fn whoami(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let who = authorize(&req, &state, Role::Viewer)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "name": who.name, "role": who.role })))
}
