//! `GET /api/v1/devices/{id}/metrics?name=&from=&to=&step=` (viewer): one metric's history as
//! `{"name", "points": [[ts_ms, min, max, avg], ...]}`, from raw rows or 1-minute rollups as
//! [`super::query::plan`] decides. `from`/`to` are milliseconds since the epoch (default:
//! the last hour), `step` a duration (`10s`, `5m`, ...; default: about 720 points). A bad
//! parameter is a 400 that names it.

use actix_web::{HttpRequest, HttpResponse, web};
use common::DeviceId;

use super::minute::minute_of;
use super::query::{self, MAX_RAW_ROWS, MetricsParams, Resolution, bucketize, raw_samples, rollup_samples};
use crate::auth::Role;
use crate::fleet::actor::GetDevice;
use crate::http::error::ApiError;
use crate::http::scope::authorize_scoped;
use crate::http::state::AppState;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/devices/{id}/metrics", web::get().to(metrics));
}

async fn metrics(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (_, vis) = authorize_scoped(&req, &state, Role::Viewer).await?;
    let id = DeviceId::new(id.into_inner()).map_err(|e| ApiError::BadRequest(format!("device id: {e}")))?;
    vis.require_device(&id)?;
    let params = web::Query::<MetricsParams>::from_query(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("query: {e}")))?
        .into_inner();
    let now = common::time::now_ms();
    let plan = query::plan(&params, &state.alerting.history_policy, now)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    state
        .fleet
        .send(GetDevice(id.clone()))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .ok_or_else(|| ApiError::NotFound(format!("no device {id}")))?;
    let store = state.alerting.store.clone();
    let p = plan.clone();
    let dev = id.clone();
    let (points, truncated) = web::block(move || -> Result<_, crate::store::StoreError> {
        Ok(match p.resolution {
            Resolution::Raw => {
                let rows = store.history(&dev, p.from_ms, p.to_ms, MAX_RAW_ROWS)?;
                let truncated = rows.len() >= MAX_RAW_ROWS;
                (bucketize(raw_samples(&rows, &p.name), p.step_ms), truncated)
            }
            Resolution::Rollup => {
                let from = minute_of(p.from_ms);
                let rows = store.rollups(&dev, from, p.to_ms)?;
                (bucketize(rollup_samples(&rows, &p.name), p.step_ms), false)
            }
        })
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(ApiError::from)?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "device": id,
        "name": plan.name,
        "from": plan.from_ms,
        "to": plan.to_ms,
        "step_ms": plan.step_ms,
        "resolution": plan.resolution,
        "truncated": truncated,
        "points": points,
    })))
}
