//! REST routes of alerting: alerts, acknowledgements, silences, incidents.
//!
//! | route | role |
//! | --- | --- |
//! | `GET /api/v1/alerts?state=&from=&to=&severity=&site=&rule=&device=&limit=` ([`super::query`]) | viewer |
//! | `POST /api/v1/alerts/{id}/ack` body `{"comment": "..."}` (optional) | operator |
//! | `POST /api/v1/alerts/{id}/resolve` body `{"comment": "..."}` (required): a firing alert, by hand | operator |
//! | `GET /api/v1/silences` | viewer |
//! | `POST /api/v1/silences` body `{"matchers": [{"label", "value"}], "duration_s" or "expires_ms", "comment"}` | operator |
//! | `DELETE /api/v1/silences/{id}` | operator |
//! | `GET /api/v1/incidents` | viewer |
//! | `GET /api/v1/maintenance`: every window, config and API, each with `source` and `open_now` | viewer |
//! | `POST /api/v1/maintenance` body: a `[[notify.maintenance]]` entry as JSON (`name` required) and an optional `comment` | operator |
//! | `DELETE /api/v1/maintenance/{name}` (windows added through the API) | operator |
//!
//! Who acknowledged, resolved, silenced or changed a window is the token's name; each goes to the
//! audit log.
//!
//! A scoped token ([`crate::http::scope`]) sees and acts on the alerts of machines in its scope
//! (any other is 404), the silences pinned to its scope by a `device` or `site` matcher (and
//! adds only such), the incidents touching its machines cut to them, and the windows naming
//! only its stores (changing windows spans the fleet: 403).

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::engine::AlertError;
use super::maintenance::WindowError;
use super::query::AlertQuery;
use super::requests::{
    AckAlert, AddSilence, AddWindow, ListAlerts, ListIncidents, ListSilences, ListWindows, RemoveSilence,
    RemoveWindow, ResolveAlert, StateFilter,
};
use super::silence::Matcher;
use crate::auth::Role;
use crate::http::error::ApiError;
use crate::http::scope::{Visible, authorize_scoped, authorize_unscoped};
use crate::http::state::AppState;
use crate::notify::maintenance::WindowFile;

/// Longest silence accepted (30 days).
pub const MAX_SILENCE_S: u64 = 30 * 24 * 3600;
/// Longest acknowledgement or silence comment.
pub const MAX_COMMENT: usize = 1000;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/alerts", web::get().to(list_alerts))
        .route("/alerts/{id}/ack", web::post().to(ack))
        .route("/alerts/{id}/resolve", web::post().to(resolve))
        .route("/silences", web::get().to(list_silences))
        .route("/silences", web::post().to(add_silence))
        .route("/silences/{id}", web::delete().to(remove_silence))
        .route("/incidents", web::get().to(incidents))
        .route("/maintenance", web::get().to(list_windows))
        .route("/maintenance", web::post().to(add_window))
        .route("/maintenance/{name}", web::delete().to(remove_window));
}

impl From<WindowError> for ApiError {
    fn from(e: WindowError) -> Self {
        match e {
            WindowError::Invalid(_) | WindowError::TooMany => ApiError::BadRequest(e.to_string()),
            WindowError::Duplicate(_) | WindowError::FromConfig(_) => ApiError::Conflict(e.to_string()),
            WindowError::Unknown(_) => ApiError::NotFound(e.to_string()),
        }
    }
}

impl From<AlertError> for ApiError {
    fn from(e: AlertError) -> Self {
        match e {
            AlertError::UnknownAlert(_) | AlertError::UnknownSilence(_) => ApiError::NotFound(e.to_string()),
            AlertError::NotActive(_)
            | AlertError::NotFiring(_)
            | AlertError::AlreadyAcknowledged { .. }
            | AlertError::DuplicateSilence(_) => ApiError::Conflict(e.to_string()),
            AlertError::Invalid(_) => ApiError::BadRequest(e.to_string()),
            AlertError::StateVersion { .. } => ApiError::Internal(e.to_string()),
        }
    }
}

fn mailbox(e: actix::MailboxError) -> ApiError {
    ApiError::Internal(format!("alerts actor: {e}"))
}

/// A JSON body, or None when empty; errors name the bad field.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<Option<T>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|e| ApiError::BadRequest(format!("body: {e}")))
}

fn check_comment(c: &str) -> Result<(), ApiError> {
    if c.len() > MAX_COMMENT {
        return Err(ApiError::BadRequest(format!(
            "comment: {} bytes is longer than {MAX_COMMENT}",
            c.len()
        )));
    }
    Ok(())
}

async fn list_alerts(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (_, vis) = authorize_scoped(&req, &state, Role::Viewer).await?;
    let params = web::Query::<BTreeMap<String, String>>::from_query(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("query: {e}")))?;
    let q = AlertQuery::parse(&params).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let label = q.state_label();
    let ask = |f| state.alerting.alerts.send(ListAlerts(f));
    let mut alerts = match q.state {
        Some(f) => ask(f).await.map_err(mailbox)?,
        None => {
            let mut v = ask(StateFilter::Firing).await.map_err(mailbox)?;
            v.extend(ask(StateFilter::Pending).await.map_err(mailbox)?);
            v
        }
    };
    alerts.retain(|a| q.matches(a) && vis.device(a.device.as_str()));
    if let Some(n) = q.limit {
        alerts.truncate(n);
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "state": label, "alerts": alerts })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AckBody {
    #[serde(default)]
    comment: String,
}

async fn ack(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (who, vis) = authorize_scoped(&req, &state, Role::Operator).await?;
    require_alert(&vis, &id)?;
    let b: AckBody = parse_body(&body)?.unwrap_or_default();
    check_comment(&b.comment)?;
    let alert = state
        .alerting
        .alerts
        .send(AckAlert {
            id: id.into_inner(),
            who: who.name,
            comment: b.comment,
        })
        .await
        .map_err(mailbox)??;
    Ok(HttpResponse::Ok().json(alert))
}

/// `POST /api/v1/alerts/{id}/resolve`: a person closes a firing alert; the comment says why
/// (required: a resolve nobody can explain later is what the audit log is for).
async fn resolve(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (who, vis) = authorize_scoped(&req, &state, Role::Operator).await?;
    require_alert(&vis, &id)?;
    let b: AckBody = parse_body(&body)?.unwrap_or_default();
    check_comment(&b.comment)?;
    if b.comment.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "comment: required (why the alert is resolved by hand)".into(),
        ));
    }
    let alert = state
        .alerting
        .alerts
        .send(ResolveAlert {
            id: id.into_inner(),
            who: who.name,
            comment: b.comment,
        })
        .await
        .map_err(mailbox)??;
    Ok(HttpResponse::Ok().json(alert))
}

/// 404 (as for an alert that does not exist) unless the alert is about a machine in scope.
fn require_alert(vis: &Visible, id: &str) -> Result<(), ApiError> {
    if vis.alert(id) {
        Ok(())
    } else {
        Err(AlertError::UnknownAlert(id.to_string()).into())
    }
}

/// Whether a silence is pinned inside the scope: one of its matchers names a machine or a
/// store in it (matchers all have to match, so it can silence nothing else).
fn silence_in_scope(vis: &Visible, matchers: &[Matcher]) -> bool {
    !vis.is_scoped()
        || matchers.iter().any(|m| {
            (m.label == "device" && vis.device(&m.value)) || (m.label == "site" && vis.site(&m.value))
        })
}

async fn list_silences(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (_, vis) = authorize_scoped(&req, &state, Role::Viewer).await?;
    let mut s = state.alerting.alerts.send(ListSilences).await.map_err(mailbox)?;
    s.retain(|s| silence_in_scope(&vis, &s.matchers));
    Ok(HttpResponse::Ok().json(serde_json::json!({ "silences": s })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SilenceBody {
    matchers: Vec<Matcher>,
    #[serde(default)]
    duration_s: Option<u64>,
    #[serde(default)]
    expires_ms: Option<i64>,
    #[serde(default)]
    comment: String,
}

async fn add_silence(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let (who, vis) = authorize_scoped(&req, &state, Role::Operator).await?;
    let b: SilenceBody =
        parse_body(&body)?.ok_or_else(|| ApiError::BadRequest("body: a silence is required".into()))?;
    check_comment(&b.comment)?;
    if b.matchers.is_empty() {
        return Err(ApiError::BadRequest(
            "matchers: at least one {\"label\", \"value\"} is needed (a silence of everything is refused)"
                .into(),
        ));
    }
    if !silence_in_scope(&vis, &b.matchers) {
        return Err(ApiError::Refused(
            "matchers: a scoped token needs a device or site matcher naming a machine or store in its scope"
                .into(),
        ));
    }
    if let Some(i) = b
        .matchers
        .iter()
        .position(|m| m.label.is_empty() || m.value.is_empty())
    {
        return Err(ApiError::BadRequest(format!(
            "matchers[{i}]: label and value must not be empty"
        )));
    }
    let now = common::time::now_ms();
    let expires_ms = match (b.duration_s, b.expires_ms) {
        (Some(d), None) if (1..=MAX_SILENCE_S).contains(&d) => now + d as i64 * 1000,
        (Some(d), None) => {
            return Err(ApiError::BadRequest(format!(
                "duration_s: {d} is not between 1 and {MAX_SILENCE_S}"
            )));
        }
        (None, Some(e)) if e > now && e - now <= MAX_SILENCE_S as i64 * 1000 => e,
        (None, Some(e)) => {
            return Err(ApiError::BadRequest(format!(
                "expires_ms: {e} is not in the next {MAX_SILENCE_S} s"
            )));
        }
        _ => {
            return Err(ApiError::BadRequest(
                "duration_s: give either duration_s or expires_ms".into(),
            ));
        }
    };
    let s = state
        .alerting
        .alerts
        .send(AddSilence {
            matchers: b.matchers,
            expires_ms,
            who: who.name,
            comment: b.comment,
        })
        .await
        .map_err(mailbox)??;
    Ok(HttpResponse::Created().json(s))
}

async fn remove_silence(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (who, vis) = authorize_scoped(&req, &state, Role::Operator).await?;
    if vis.is_scoped() {
        let all = state.alerting.alerts.send(ListSilences).await.map_err(mailbox)?;
        if !all
            .iter()
            .any(|s| s.id == id.as_str() && silence_in_scope(&vis, &s.matchers))
        {
            return Err(AlertError::UnknownSilence(id.into_inner()).into());
        }
    }
    state
        .alerting
        .alerts
        .send(RemoveSilence {
            id: id.into_inner(),
            who: who.name,
        })
        .await
        .map_err(mailbox)??;
    Ok(HttpResponse::NoContent().finish())
}

async fn incidents(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (_, vis) = authorize_scoped(&req, &state, Role::Viewer).await?;
    let mut list = state.alerting.alerts.send(ListIncidents).await.map_err(mailbox)?;
    if vis.is_scoped() {
        let cut = |v: &mut Vec<crate::incidents::incident::Incident>| {
            *v = v
                .iter()
                .filter_map(|i| i.restricted(|d| vis.device(d), |s| vis.site(s)))
                .collect();
        };
        cut(&mut list.open);
        cut(&mut list.recent);
    }
    Ok(HttpResponse::Ok().json(list))
}

async fn list_windows(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (_, vis) = authorize_scoped(&req, &state, Role::Viewer).await?;
    let mut w = state.alerting.alerts.send(ListWindows).await.map_err(mailbox)?;
    // a window by tag, or naming another store, reaches beyond the scope
    if vis.is_scoped() {
        w.retain(|w| {
            w.window.tags.is_empty()
                && !w.window.sites.is_empty()
                && w.window.sites.iter().all(|s| vis.site(s))
        });
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "windows": w })))
}

async fn add_window(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let who = authorize_unscoped(&req, &state, Role::Operator, "changing maintenance windows")?;
    let mut v: serde_json::Value =
        parse_body(&body)?.ok_or_else(|| ApiError::BadRequest("body: a window is required".into()))?;
    // the window's own keys, plus a comment for the audit log
    let comment = match v.as_object_mut().and_then(|o| o.remove("comment")) {
        None => String::new(),
        Some(serde_json::Value::String(c)) => c,
        Some(other) => {
            return Err(ApiError::BadRequest(format!("comment: {other} is not a string")));
        }
    };
    check_comment(&comment)?;
    let window: WindowFile =
        serde_json::from_value(v).map_err(|e| ApiError::BadRequest(format!("body: {e}")))?;
    let w = state
        .alerting
        .alerts
        .send(AddWindow {
            window,
            who: who.name,
            comment,
        })
        .await
        .map_err(mailbox)??;
    Ok(HttpResponse::Created().json(w))
}

async fn remove_window(
    req: HttpRequest,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let who = authorize_unscoped(&req, &state, Role::Operator, "changing maintenance windows")?;
    state
        .alerting
        .alerts
        .send(RemoveWindow {
            name: name.into_inner(),
            who: who.name,
        })
        .await
        .map_err(mailbox)??;
    Ok(HttpResponse::NoContent().finish())
}
