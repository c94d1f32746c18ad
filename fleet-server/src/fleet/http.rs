//! `GET /api/v1/devices` and `GET /api/v1/devices/{id}` (viewer): the fleet actor's summaries
//! and one device's detail.

use actix_web::{HttpRequest, HttpResponse, web};
use common::DeviceId;

use super::actor::{GetDevice, ListDevices};
use crate::auth::Role;
use crate::http::error::ApiError;
use crate::http::scope::authorize_scoped;
use crate::http::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/devices", web::get().to(devices))
        .route("/devices/{id}", web::get().to(device));
}

async fn devices(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (_, vis) = authorize_scoped(&req, &state, Role::Viewer).await?;
    let mut list = state
        .fleet
        .send(ListDevices)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    vis.retain_devices(&mut list);
    Ok(HttpResponse::Ok().json(serde_json::json!({ "devices": list })))
}

async fn device(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (_, vis) = authorize_scoped(&req, &state, Role::Viewer).await?;
    let id = DeviceId::new(id.into_inner()).map_err(|e| ApiError::BadRequest(format!("device id: {e}")))?;
    vis.require_device(&id)?;
    let d = state
        .fleet
        .send(GetDevice(id.clone()))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .ok_or_else(|| ApiError::NotFound(format!("no device {id}")))?;
    Ok(HttpResponse::Ok().json(d))
}
