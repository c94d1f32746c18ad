//! Commands and rollouts. (The audit log and tokens are served by [`crate::http::audit`] and
//! [`crate::http::tokens`].)
//!
//! | route | role |
//! | --- | --- |
//! | `POST /api/v1/devices/{id}/commands` | operator |
//! | `GET /api/v1/devices/{id}/commands`, `GET /api/v1/commands/{id}` | viewer |
//! | `GET /api/v1/commands?state=awaiting_approval` | viewer |
//! | `POST /api/v1/commands/{id}/approve` | operator, not the requester |
//! | `POST /api/v1/rollouts`, `GET /api/v1/rollouts`, `GET /api/v1/rollouts/{id}` | operator / viewer |
//! | `POST /api/v1/rollouts/{id}/resume`, `POST /api/v1/rollouts/{id}/abort` | operator |
//!
//! A scoped token ([`crate::http::scope`]) reaches the commands of machines in its scope (any
//! other, or its command, is 404) and the rollouts whose target lies inside it ([`in_scope`]):
//! a rollout it starts must target its store (`site`) or machines of its scope by id.

use actix::Addr;
use actix_web::{HttpRequest, HttpResponse, web};
use common::DeviceId;
use common::command::Action;
use serde::Deserialize;

use super::actor::{
    Approve, ApproveCmdError, AwaitingApproval, CommandsActor, DeviceCommands, GetCommand, GetRollout,
    ListRollouts, OperateRollout, RolloutOpError, StartRollout, Submit, SubmitError,
};
use super::book::{ApproveError, MAX_TTL_S, MIN_TTL_S};
use super::gate::GateSpec;
use super::rollout::Target;
use crate::auth::Role;
use crate::fleet::actor::{GetDevice, ListDevices};
use crate::http::error::{ApiError, json_body};
use crate::http::scope::{Visible, authorize_scoped};
use crate::http::state::AppState;

/// Default time a command may wait for its machine.
pub const DEFAULT_TTL_S: u64 = 300;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/devices/{id}/commands", web::post().to(submit))
        .route("/devices/{id}/commands", web::get().to(device_commands))
        .route("/commands/{id}", web::get().to(get_command))
        .route("/commands", web::get().to(awaiting_approval))
        .route("/commands/{id}/approve", web::post().to(approve))
        .route("/rollouts", web::post().to(rollout))
        .route("/rollouts", web::get().to(list_rollouts))
        .route("/rollouts/{id}", web::get().to(get_rollout))
        .route("/rollouts/{id}/resume", web::post().to(resume_rollout))
        .route("/rollouts/{id}/abort", web::post().to(abort_rollout));
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Sign { .. } | SubmitError::Vanished(_) => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<ApproveCmdError> for ApiError {
    fn from(e: ApproveCmdError) -> Self {
        match e {
            ApproveCmdError::Approve(a @ ApproveError::NotFound(_)) => ApiError::NotFound(a.to_string()),
            ApproveCmdError::Approve(a @ ApproveError::OwnRequest { .. }) => ApiError::Refused(a.to_string()),
            ApproveCmdError::Approve(a @ ApproveError::NotAwaiting { .. }) => {
                ApiError::Conflict(a.to_string())
            }
            ApproveCmdError::Submit(s) => s.into(),
        }
    }
}

impl From<RolloutOpError> for ApiError {
    fn from(e: RolloutOpError) -> Self {
        match e {
            RolloutOpError::NotFound(_) => ApiError::NotFound(e.to_string()),
            RolloutOpError::State(_) => ApiError::Conflict(e.to_string()),
        }
    }
}

fn actor(state: &AppState) -> Result<Addr<CommandsActor>, ApiError> {
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
    /// The agent validates and answers what would happen, without doing it.
    #[serde(default)]
    dry_run: bool,
}

async fn submit(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (who, vis) = authorize_scoped(&req, &state, Role::Operator).await?;
    let device = device_id(id.into_inner())?;
    vis.require_device(&device)?;
    let b: SubmitBody = json_body(&body)?;
    let (ttl_s, reason) = (ttl(b.ttl_s)?, reason(b.reason)?);
    let known = state
        .fleet
        .send(GetDevice(device.clone()))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .is_some();
    // several instances: a machine that has only ever connected to another one is known
    // from its birth in the shared store
    let known = match (&state.pg, known) {
        (Some(pg), false) => {
            let (s, d) = (pg.clone(), device.clone());
            pg.call(async move { super::outbox::device_known(&s, &d).await })
                .await
                .map_err(|e| ApiError::Unavailable(e.to_string()))?
        }
        _ => known,
    };
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
            dry_run: b.dry_run,
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(HttpResponse::Created().json(v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandsQuery {
    state: String,
}

/// The commands awaiting approval (the only listing across machines: the web view's queue).
async fn awaiting_approval(
    req: HttpRequest,
    state: web::Data<AppState>,
    q: web::Query<CommandsQuery>,
) -> Result<HttpResponse, ApiError> {
    let (_, vis) = authorize_scoped(&req, &state, Role::Viewer).await?;
    if q.state != "awaiting_approval" {
        return Err(ApiError::BadRequest(format!(
            "state: {:?}; only awaiting_approval is listed across machines",
            q.state
        )));
    }
    let mut list = actor(&state)?
        .send(AwaitingApproval)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    list.retain(|c| vis.device(c.device.as_str()));
    Ok(HttpResponse::Ok().json(serde_json::json!({ "commands": list })))
}

/// A second operator approves a disruptive command; the requester gets a 403 saying why.
/// `_body`: read (and refused over [`crate::http::MAX_BODY`] with 413) though nothing in it
/// is used, as on every POST route.
async fn approve(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    _body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (who, vis) = authorize_scoped(&req, &state, Role::Operator).await?;
    command_in_scope(&state, &vis, &id).await?;
    let v = actor(&state)?
        .send(Approve {
            id: id.into_inner(),
            who: who.name,
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(HttpResponse::Ok().json(v))
}

async fn device_commands(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (_, vis) = authorize_scoped(&req, &state, Role::Viewer).await?;
    let device = device_id(id.into_inner())?;
    vis.require_device(&device)?;
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
    let (_, vis) = authorize_scoped(&req, &state, Role::Viewer).await?;
    Ok(HttpResponse::Ok().json(command_in_scope(&state, &vis, &id).await?))
}

/// The command `id` if it exists and its machine is in scope; 404 otherwise.
async fn command_in_scope(
    state: &AppState,
    vis: &Visible,
    id: &str,
) -> Result<super::book::CommandView, ApiError> {
    actor(state)?
        .send(GetCommand(id.to_string()))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .filter(|c| vis.device(c.device.as_str()))
        .ok_or_else(|| ApiError::NotFound(format!("no command {id}")))
}

/// Whether a rollout's target lies inside the scope: its store, or machines in scope by id.
/// A rollout to every machine or by tag reaches beyond any store: unscoped tokens only.
pub fn in_scope(vis: &Visible, target: &Target) -> bool {
    match target {
        _ if !vis.is_scoped() => true,
        Target::Site(s) => vis.site(s),
        Target::Devices(v) => v.iter().all(|d| vis.device(d.as_str())),
        Target::All | Target::Tag(_) => false,
    }
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
    /// Pause, then abort, when machines that ran it got worse ([`super::gate`]).
    gate: Option<GateSpec>,
    /// Machines per batch of a gated rollout (default: `per_minute`).
    batch_size: Option<u32>,
}

fn default_min_finished() -> u32 {
    3
}

async fn rollout(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (who, vis) = authorize_scoped(&req, &state, Role::Operator).await?;
    let b: RolloutBody = json_body(&body)?;
    if !in_scope(&vis, &b.target) {
        return Err(ApiError::Refused(
            "target: reaches machines outside this token's scope (give its site, or machines of it by id)"
                .into(),
        ));
    }
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
    if let Some(g) = &b.gate {
        g.validate().map_err(ApiError::BadRequest)?;
    }
    let batch_size = b.batch_size.unwrap_or(0);
    if b.batch_size.is_some() && (batch_size == 0 || batch_size > b.per_minute) {
        return Err(ApiError::BadRequest(format!(
            "batch_size: {batch_size} is outside 1..=per_minute ({})",
            b.per_minute
        )));
    }
    if state.commands_config.needs_approval(b.action.name()) {
        return Err(ApiError::BadRequest(format!(
            "action: {} needs a second operator's approval per machine ([commands] approval_required); send it to machines one by one",
            b.action.name()
        )));
    }
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
            gate: b.gate,
            batch_size,
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(HttpResponse::Created().json(v))
}

async fn list_rollouts(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (_, vis) = authorize_scoped(&req, &state, Role::Viewer).await?;
    let mut list = actor(&state)?
        .send(ListRollouts)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    list.retain(|r| in_scope(&vis, &r.target));
    Ok(HttpResponse::Ok().json(serde_json::json!({ "rollouts": list })))
}

async fn operate(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    resume: bool,
) -> Result<HttpResponse, ApiError> {
    let (who, vis) = authorize_scoped(&req, &state, Role::Operator).await?;
    rollout_in_scope(&state, &vis, id.as_str()).await?;
    let v = actor(&state)?
        .send(OperateRollout {
            id: id.into_inner(),
            who: who.name,
            resume,
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(HttpResponse::Ok().json(v))
}

async fn resume_rollout(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    _body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    operate(req, state, id, true).await
}

async fn abort_rollout(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    _body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    operate(req, state, id, false).await
}

async fn get_rollout(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (_, vis) = authorize_scoped(&req, &state, Role::Viewer).await?;
    Ok(HttpResponse::Ok().json(rollout_in_scope(&state, &vis, id.as_str()).await?))
}

/// The rollout `id` if it exists and its target is in scope; 404 otherwise.
async fn rollout_in_scope(
    state: &AppState,
    vis: &Visible,
    id: &str,
) -> Result<super::actor::RolloutView, ApiError> {
    actor(state)?
        .send(GetRollout(id.to_string()))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .filter(|r| in_scope(vis, &r.target))
        .ok_or_else(|| ApiError::NotFound(format!("no rollout {id}")))
}
