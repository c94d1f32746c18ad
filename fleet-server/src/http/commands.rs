//! Commands, rollouts, the audit log and token management.
//!
//! | route | role |
//! | --- | --- |
//! | `POST /api/v1/devices/{id}/commands` | operator |
//! | `GET /api/v1/devices/{id}/commands`, `GET /api/v1/commands/{id}` | viewer |
//! | `POST /api/v1/rollouts`, `GET /api/v1/rollouts/{id}` | operator / viewer |
//! | `GET /api/v1/audit?limit=` | operator |
//! | `GET/POST /api/v1/tokens` | admin |

use actix::Addr;
use actix_web::{HttpRequest, HttpResponse, web};
use common::DeviceId;
use common::command::Action;
use serde::Deserialize;

use super::auth::authorize;
use super::error::ApiError;
use super::state::AppState;
use crate::actors::commands::{CommandsActor, DeviceCommands, GetCommand, GetRollout, StartRollout, Submit};
use crate::auth::Role;
use crate::commands::{MAX_TTL_S, MIN_TTL_S, Target};
use crate::fleet::actor::{GetDevice, ListDevices};

/// Default time a command may wait for its machine.
pub const DEFAULT_TTL_S: u64 = 300;
/// Lines `GET /api/v1/audit` returns at most.
pub const MAX_AUDIT_LINES: usize = 5000;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/devices/{id}/commands", web::post().to(submit))
        .route("/devices/{id}/commands", web::get().to(device_commands))
        .route("/commands/{id}", web::get().to(get_command))
        .route("/rollouts", web::post().to(rollout))
        .route("/rollouts/{id}", web::get().to(get_rollout))
        .route("/audit", web::get().to(audit))
        .route("/tokens", web::get().to(list_tokens))
        .route("/tokens", web::post().to(create_token))
        .route("/whoami", web::get().to(whoami));
}

fn actor(state: &AppState) -> Result<&Addr<CommandsActor>, ApiError> {
    state
        .commands
        .get()
        .ok_or_else(|| ApiError::Internal("commands are not available yet".into()))
}

fn ttl(v: Option<u64>) -> Result<u64, ApiError> {
    let t = v.unwrap_or(DEFAULT_TTL_S);
    if !(MIN_TTL_S..=MAX_TTL_S).contains(&t) {
        return Err(ApiError::BadRequest(format!(
            "ttl_s: {t} is outside {MIN_TTL_S}..={MAX_TTL_S}"
        )));
    }
    Ok(t)
}

fn reason(r: String) -> Result<String, ApiError> {
    let r = r.trim().to_string();
    if r.is_empty() {
        return Err(ApiError::BadRequest(
            "reason: say why (it goes to the audit log)".into(),
        ));
    }
    if r.len() > 500 {
        return Err(ApiError::BadRequest(format!(
            "reason: {} characters, at most 500",
            r.len()
        )));
    }
    Ok(r)
}

fn device_id(s: String) -> Result<DeviceId, ApiError> {
    DeviceId::new(s).map_err(|e| ApiError::BadRequest(format!("device id: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitBody {
    action: Action,
    ttl_s: Option<u64>,
    reason: String,
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("body: {e}")))
}

async fn submit(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let who = authorize(&req, &state, Role::Operator)?;
    let device = device_id(id.into_inner())?;
    let b: SubmitBody = json_body(&body)?;
    let (ttl_s, reason) = (ttl(b.ttl_s)?, reason(b.reason)?);
    let known = state
        .fleet
        .send(GetDevice(device.clone()))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .is_some();
    if !known {
        return Err(ApiError::NotFound(format!("no device {device}")));
    }
    let v = actor(&state)?
        .send(Submit {
            device,
            action: b.action,
            ttl_s,
            reason,
            who: who.name,
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::Internal)?;
    Ok(HttpResponse::Created().json(v))
}

async fn device_commands(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Role::Viewer)?;
    let device = device_id(id.into_inner())?;
    let list = actor(&state)?
        .send(DeviceCommands(device))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "commands": list })))
}

async fn get_command(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Role::Viewer)?;
    let id = id.into_inner();
    let v = actor(&state)?
        .send(GetCommand(id.clone()))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .ok_or_else(|| ApiError::NotFound(format!("no command {id}")))?;
    Ok(HttpResponse::Ok().json(v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RolloutBody {
    action: Action,
    target: Target,
    per_minute: u32,
    abort_failed_pct: f64,
    #[serde(default = "default_min_finished")]
    min_finished: u32,
    ttl_s: Option<u64>,
    reason: String,
}

fn default_min_finished() -> u32 {
    3
}

async fn rollout(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let who = authorize(&req, &state, Role::Operator)?;
    let b: RolloutBody = json_body(&body)?;
    if b.per_minute == 0 || b.per_minute > 100_000 {
        return Err(ApiError::BadRequest(format!(
            "per_minute: {} is outside 1..=100000",
            b.per_minute
        )));
    }
    if !(0.0..=100.0).contains(&b.abort_failed_pct) {
        return Err(ApiError::BadRequest(format!(
            "abort_failed_pct: {} is outside 0..=100",
            b.abort_failed_pct
        )));
    }
    let (ttl_s, reason) = (ttl(b.ttl_s)?, reason(b.reason)?);
    let all = state
        .fleet
        .send(ListDevices)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let devices: Vec<DeviceId> = match &b.target {
        Target::All => all.iter().map(|d| d.id.clone()).collect(),
        Target::Site(s) => all
            .iter()
            .filter(|d| d.site.as_deref() == Some(s))
            .map(|d| d.id.clone())
            .collect(),
        Target::Tag(t) => all
            .iter()
            .filter(|d| d.tags.contains(t))
            .map(|d| d.id.clone())
            .collect(),
        Target::Devices(v) => v.clone(),
    };
    if devices.is_empty() {
        return Err(ApiError::BadRequest("target: no machine matches".into()));
    }
    let v = actor(&state)?
        .send(StartRollout {
            action: b.action,
            target: b.target,
            devices,
            per_minute: b.per_minute,
            abort_failed_pct: b.abort_failed_pct,
            min_finished: b.min_finished,
            ttl_s,
            reason,
            who: who.name,
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::Internal)?;
    Ok(HttpResponse::Created().json(v))
}

async fn get_rollout(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    authorize(&req, &state, Role::Viewer)?;
    let id = id.into_inner();
    let v = actor(&state)?
        .send(GetRollout(id.clone()))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .ok_or_else(|| ApiError::NotFound(format!("no rollout {id}")))?;
    Ok(HttpResponse::Ok().json(v))
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
