//! API tokens: `GET/POST /api/v1/tokens` (admin) and `GET /api/v1/whoami` (any token).

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::auth::authorize;
use super::error::{ApiError, json_body};
use super::scope::authorize_unscoped;
use super::state::AppState;
use crate::auth::{Role, Scope};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/tokens", web::get().to(list_tokens))
        .route("/tokens", web::post().to(create_token))
        .route("/whoami", web::get().to(whoami));
}

async fn list_tokens(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    authorize_unscoped(&req, &state, Role::Admin, "token management")?;
    let list: Vec<serde_json::Value> = state
        .tokens
        .list()
        .into_iter()
        .map(|t| serde_json::json!({"name": t.name, "role": t.role, "created_ms": t.created_ms, "expires_ms": t.expires_ms, "scope": t.scope}))
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "tokens": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    name: String,
    role: Role,
    /// `{"site": "S"}` or `{"retailer": "R"}`; none or null: the whole fleet.
    /// Read apart so that a bad one is a 400 naming `scope`.
    #[serde(default)]
    scope: Option<serde_json::Value>,
}

/// The body's scope: None for none or null; a 400 naming the field otherwise.
fn scope_of(v: Option<serde_json::Value>, role: Role) -> Result<Option<Scope>, ApiError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let s: Scope = serde_json::from_value(v).map_err(|e| {
        ApiError::BadRequest(format!(
            "scope: {e} (expected {{\"site\": \"STORE\"}} or {{\"retailer\": \"RETAILER\"}})"
        ))
    })?;
    s.validate().map_err(ApiError::BadRequest)?;
    Scope::check_role(role).map_err(ApiError::BadRequest)?;
    Ok(Some(s))
}

async fn create_token(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    // a scoped principal never manages tokens: it could mint a wider one (and an admin
    // token, the only role that reaches here, cannot be scoped)
    let who = authorize_unscoped(&req, &state, Role::Admin, "token management")?;
    let b: TokenBody = json_body(&body)?;
    let scope = scope_of(b.scope.clone(), b.role)?;
    if b.name.is_empty()
        || b.name.len() > 64
        || !b
            .name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
    {
        return Err(ApiError::BadRequest("name: 1 to 64 of [A-Za-z0-9-_.]".into()));
    }
    let (tokens, name, role, made) = (state.tokens.clone(), b.name.clone(), b.role, scope.clone());
    let token = web::block(move || tokens.create_scoped(&name, role, None, made))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(|e| match e {
            crate::auth::TokenError::Exists(_) => ApiError::Conflict(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        })?;
    tracing::info!(by = %who.name, name = %b.name, role = ?b.role, scope = ?scope, "token created");
    Ok(HttpResponse::Created()
        .json(serde_json::json!({ "name": b.name, "role": b.role, "scope": scope, "token": token })))
}

async fn whoami(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let who = authorize(&req, &state, Role::Viewer)?;
    Ok(
        HttpResponse::Ok()
            .json(serde_json::json!({ "name": who.name, "role": who.role, "scope": who.scope })),
    )
}
