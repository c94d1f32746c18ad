//! The estate's routes, under `/api/v1`. Reads are for viewers, writes for operators and
//! admins; every write is audited.
//!
//! | route | role |
//! | --- | --- |
//! | `GET /estate`: every retailer and store, with its machine count | viewer |
//! | `GET /estate/retailers/{id}`: the retailer, its stores with their worst state, today's availability | viewer |
//! | `PUT /estate/retailers/{id}` body `{"name": ...}` | operator |
//! | `DELETE /estate/retailers/{id}` (409 while it has stores) | operator |
//! | `GET /estate/stores/{id}`: the store, its machines and their state, open alerts, today's availability | viewer |
//! | `PUT /estate/stores/{id}` body: a store ([`super::StoreFile`]; 400 names every bad field) | operator |
//! | `DELETE /estate/stores/{id}` | operator |
//! | `GET /estate/unknown-sites`: sites machines report that no store has, with the machines | viewer |
//! | `GET /estate/map`: stores with a position, their worst state and machine count | viewer |
//! | `GET /estate/availability?from=&to=&store=&retailer=&format=json\|csv\|html\|pdf` | viewer |
//!
//! "Today" is the store's calendar day in its own time zone, from midnight to now.

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::report::{self, Filter, Input, Machine, Report, worst_state};
use super::{Estate, EstateError, Retailer, StoreFile};
use crate::alerts::alert::{Alert, AlertState};
use crate::alerts::requests::{ListAlerts, ListWindows, StateFilter};
use crate::auth::Role;
use crate::fleet::actor::ListDevices;
use crate::fleet::state::DeviceSummary;
use crate::history::export::http::compact_time;
use crate::history::minute::DAY_MS;
use crate::history::query::MAX_RANGE_MS;
use crate::http::error::{ApiError, json_body};
use crate::http::scope::{Visible, authorize_scoped, authorize_unscoped, load_estate};
use crate::http::state::AppState;
use crate::notify::maintenance::Window;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/estate", web::get().to(list))
        .route("/estate/unknown-sites", web::get().to(unknown_sites))
        .route("/estate/map", web::get().to(map))
        .route("/estate/availability", web::get().to(availability))
        .route("/estate/retailers/{id}", web::get().to(get_retailer))
        .route("/estate/retailers/{id}", web::put().to(put_retailer))
        .route("/estate/retailers/{id}", web::delete().to(delete_retailer))
        .route("/estate/stores/{id}", web::get().to(get_store))
        .route("/estate/stores/{id}", web::put().to(put_store))
        .route("/estate/stores/{id}", web::delete().to(delete_store));
}

impl From<EstateError> for ApiError {
    fn from(e: EstateError) -> Self {
        match e {
            EstateError::Invalid(_) | EstateError::UnknownRetailer(_) => ApiError::BadRequest(e.to_string()),
            EstateError::RetailerInUse(..) => ApiError::Conflict(e.to_string()),
            EstateError::Store(s) => ApiError::from(s),
        }
    }
}

/// Machines and firing alerts grouped by site once, so a page of thousands of stores is one
/// pass over the fleet rather than one per store.
struct BySite<'a> {
    machines: BTreeMap<&'a str, Vec<&'a DeviceSummary>>,
    alerts: BTreeMap<&'a str, Vec<&'a Alert>>,
}

impl<'a> BySite<'a> {
    fn new(devices: &'a [DeviceSummary], firing: &'a [Alert]) -> BySite<'a> {
        let mut machines: BTreeMap<&str, Vec<&DeviceSummary>> = BTreeMap::new();
        let mut site_of = BTreeMap::new();
        for d in devices {
            if let Some(site) = d.site.as_deref() {
                machines.entry(site).or_default().push(d);
                site_of.insert(&d.id, site);
            }
        }
        let mut alerts: BTreeMap<&str, Vec<&Alert>> = BTreeMap::new();
        for a in firing {
            if let Some(site) = site_of.get(&a.device) {
                alerts.entry(site).or_default().push(a);
            }
        }
        BySite { machines, alerts }
    }

    fn of(&self, site: &str) -> (Vec<&'a DeviceSummary>, Vec<&'a Alert>) {
        (
            self.machines.get(site).cloned().unwrap_or_default(),
            self.alerts.get(site).cloned().unwrap_or_default(),
        )
    }
}

async fn load(state: &AppState) -> Result<Estate, ApiError> {
    load_estate(state).await
}

/// What a reader may see: the estate cut to its scope and the machines in it (everything
/// for an unscoped token). Every read route starts here, so a store or retailer outside the
/// scope is absent (404) and no figure counts a machine outside it.
async fn seen(
    req: &HttpRequest,
    state: &AppState,
) -> Result<(Estate, Vec<DeviceSummary>, Visible), ApiError> {
    let (_, vis) = authorize_scoped(req, state, Role::Viewer).await?;
    let estate = vis.estate(load(state).await?);
    let mut devices = state
        .fleet
        .send(ListDevices)
        .await
        .map_err(|e| ApiError::Internal(format!("fleet actor: {e}")))?;
    vis.retain_devices(&mut devices);
    Ok((estate, devices, vis))
}

/// Writes change what every token sees: unscoped operators and admins only.
const WRITES: &str = "changing the estate";

async fn alerts(state: &AppState, f: StateFilter) -> Result<Vec<Alert>, ApiError> {
    state
        .alerting
        .alerts
        .send(ListAlerts(f))
        .await
        .map_err(|e| ApiError::Internal(format!("alerts actor: {e}")))
}

/// Every maintenance window, config and API, validated again from its written form.
async fn windows(state: &AppState) -> Result<Vec<Window>, ApiError> {
    let views = state
        .alerting
        .alerts
        .send(ListWindows)
        .await
        .map_err(|e| ApiError::Internal(format!("alerts actor: {e}")))?;
    Ok(views
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.window.validate("maintenance", i).ok())
        .collect())
}

fn machines(d: &[DeviceSummary]) -> Vec<Machine> {
    d.iter()
        .map(|s| Machine {
            id: s.id.clone(),
            site: s.site.clone(),
            tags: s.tags.clone(),
        })
        .collect()
}

/// Writes an audit entry (best effort: a failed append is logged, the change stands).
async fn audit(state: &AppState, who: &str, action: &str, target: &str) {
    let entry = serde_json::json!({
        "at_ms": common::time::now_ms(), "who": who, "action": action, "target": target, "comment": "",
    });
    let log = state.audit.clone();
    if let Ok(Err(e)) = web::block(move || log.append(&[entry])).await {
        tracing::warn!(error = %e, action, "audit append failed");
    }
}

async fn list(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (estate, devices, _) = seen(&req, &state).await?;
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &devices {
        if let Some(s) = estate.store_of(d.site.as_deref()) {
            *count.entry(s.file.id.as_str()).or_default() += 1;
        }
    }
    let stores: Vec<serde_json::Value> = estate
        .stores
        .values()
        .map(|s| {
            let mut v = serde_json::to_value(&s.file).unwrap_or_default();
            v["machines"] = count.get(s.file.id.as_str()).copied().unwrap_or(0).into();
            v
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "retailers": estate.retailers.values().collect::<Vec<_>>(),
        "stores": stores,
    })))
}

async fn unknown_sites(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (estate, devices, _) = seen(&req, &state).await?;
    let sites = estate.unknown_sites(devices.iter().map(|d| (d.id.as_str(), d.site.as_deref())));
    Ok(HttpResponse::Ok().json(serde_json::json!({ "sites": sites })))
}

/// A store on the map.
#[derive(Serialize)]
struct MapPoint<'a> {
    id: &'a str,
    name: &'a str,
    retailer: &'a str,
    latitude: f64,
    longitude: f64,
    machines: usize,
    state: &'static str,
}

async fn map(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (estate, devices, _) = seen(&req, &state).await?;
    let firing = alerts(&state, StateFilter::Firing).await?;
    let by_site = BySite::new(&devices, &firing);
    let mut points = Vec::new();
    for s in estate.stores.values() {
        let (Some(latitude), Some(longitude)) = (s.file.latitude, s.file.longitude) else {
            continue;
        };
        let (m, a) = by_site.of(&s.file.id);
        points.push(MapPoint {
            id: &s.file.id,
            name: &s.file.name,
            retailer: &s.file.retailer,
            latitude,
            longitude,
            machines: m.len(),
            state: worst_state(&m, &a),
        });
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({ "stores": points })))
}

/// The start of the store's current calendar day.
fn local_midnight(tz: &jiff::tz::TimeZone, now_ms: i64) -> i64 {
    jiff::Timestamp::from_millisecond(now_ms)
        .ok()
        .and_then(|t| t.to_zoned(tz.clone()).start_of_day().ok())
        .map_or(now_ms - DAY_MS, |z| z.timestamp().as_millisecond())
}

/// Today's report for a filter, in the zone of `tz` (the store's, or UTC for a retailer).
async fn today(
    state: &AppState,
    estate: &Estate,
    devices: &[DeviceSummary],
    filter: Filter,
    tz: &jiff::tz::TimeZone,
) -> Result<Report, ApiError> {
    let all = alerts(state, StateFilter::All).await?;
    let windows = windows(state).await?;
    let now = common::time::now_ms();
    let machines = machines(devices);
    Ok(report::build(&Input {
        estate,
        machines: &machines,
        alerts: &all,
        windows: &windows,
        from_ms: local_midnight(tz, now),
        to_ms: now,
        now_ms: now,
        filter: &filter,
    }))
}

async fn get_store(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (estate, devices, _) = seen(&req, &state).await?;
    let store = estate
        .stores
        .get(id.as_str())
        .ok_or_else(|| ApiError::NotFound(format!("no store {:?}", id.as_str())))?;
    let here: Vec<&DeviceSummary> = devices
        .iter()
        .filter(|d| d.site.as_deref() == Some(id.as_str()))
        .collect();
    let firing = alerts(&state, StateFilter::All).await?;
    let open: Vec<&Alert> = firing
        .iter()
        .filter(|a| a.state != AlertState::Resolved && here.iter().any(|d| d.id == a.device))
        .collect();
    let firing_now: Vec<&Alert> = open
        .iter()
        .copied()
        .filter(|a| a.state == AlertState::Firing)
        .collect();
    let filter = Filter {
        store: Some(id.to_string()),
        retailer: None,
    };
    let today = today(&state, &estate, &devices, filter, &store.time_zone).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "store": store.file,
        "retailer": estate.retailers.get(&store.file.retailer),
        "state": worst_state(&here, &firing_now),
        "machines": here,
        "alerts": open,
        "today": { "from_ms": today.from_ms, "to_ms": today.until_ms, "store": today.stores.first(), "machines": today.machines },
    })))
}

async fn get_retailer(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (estate, devices, _) = seen(&req, &state).await?;
    let retailer = estate
        .retailers
        .get(id.as_str())
        .ok_or_else(|| ApiError::NotFound(format!("no retailer {:?}", id.as_str())))?;
    let firing = alerts(&state, StateFilter::Firing).await?;
    let filter = Filter {
        retailer: Some(id.to_string()),
        store: None,
    };
    let today = today(&state, &estate, &devices, filter, &jiff::tz::TimeZone::UTC).await?;
    let by_site = BySite::new(&devices, &firing);
    let stores: Vec<serde_json::Value> = estate
        .stores_of(id.as_str())
        .map(|s| {
            let (m, a) = by_site.of(&s.file.id);
            serde_json::json!({
                "store": s.file,
                "machines": m.len(),
                "state": worst_state(&m, &a),
                "firing_alerts": a.len(),
                "today": today.stores.iter().find(|g| g.id == s.file.id),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "retailer": retailer,
        "stores": stores,
        "today": { "from_ms": today.from_ms, "to_ms": today.until_ms, "retailer": today.retailers.first() },
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetailerBody {
    name: String,
}

async fn put_retailer(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let who = authorize_unscoped(&req, &state, Role::Operator, WRITES)?;
    let b: RetailerBody = json_body(&body)?;
    let r = Retailer {
        id: id.into_inner(),
        name: b.name,
    };
    r.validate().map_err(EstateError::Invalid)?;
    let (store, row) = (state.estate.clone(), r.clone());
    web::block(move || store.put_retailer(&row))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    audit(&state, &who.name, "estate_retailer_put", &r.id).await;
    Ok(HttpResponse::Ok().json(r))
}

async fn delete_retailer(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let who = authorize_unscoped(&req, &state, Role::Operator, WRITES)?;
    let estate = load(&state).await?;
    let stores: Vec<&str> = estate
        .stores_of(id.as_str())
        .map(|s| s.file.id.as_str())
        .collect();
    if !stores.is_empty() {
        return Err(EstateError::RetailerInUse(id.to_string(), stores.join(", ")).into());
    }
    let (store, key) = (state.estate.clone(), id.to_string());
    if !web::block(move || store.delete_retailer(&key))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??
    {
        return Err(ApiError::NotFound(format!("no retailer {:?}", id.as_str())));
    }
    audit(&state, &who.name, "estate_retailer_delete", &id).await;
    Ok(HttpResponse::NoContent().finish())
}

async fn put_store(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let who = authorize_unscoped(&req, &state, Role::Operator, WRITES)?;
    let s: StoreFile = json_body(&body)?;
    if s.id != *id {
        return Err(ApiError::BadRequest(format!(
            "id: {:?} in the body is not the path's {:?}",
            s.id,
            id.as_str()
        )));
    }
    s.validate().map_err(EstateError::Invalid)?;
    let (store, row) = (state.estate.clone(), s.clone());
    web::block(move || {
        if store.retailer(&row.retailer)?.is_none() {
            return Err(EstateError::UnknownRetailer(row.retailer.clone()));
        }
        Ok(store.put_store(&row)?)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))??;
    audit(&state, &who.name, "estate_store_put", &s.id).await;
    Ok(HttpResponse::Ok().json(s))
}

async fn delete_store(
    req: HttpRequest,
    state: web::Data<AppState>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let who = authorize_unscoped(&req, &state, Role::Operator, WRITES)?;
    let (store, key) = (state.estate.clone(), id.to_string());
    if !web::block(move || store.delete_store(&key))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??
    {
        return Err(ApiError::NotFound(format!("no store {:?}", id.as_str())));
    }
    audit(&state, &who.name, "estate_store_delete", &id).await;
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AvailabilityParams {
    from: Option<String>,
    to: Option<String>,
    store: Option<String>,
    retailer: Option<String>,
    format: Option<String>,
}

fn time_param(name: &str, v: &str) -> Result<i64, ApiError> {
    v.trim().parse::<i64>().ok().filter(|t| *t >= 0).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "query parameter {name}: {v:?} is not a time in milliseconds since the epoch"
        ))
    })
}

async fn availability(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (estate, devices, _) = seen(&req, &state).await?;
    let p = web::Query::<AvailabilityParams>::from_query(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("query: {e}")))?
        .into_inner();
    let now = common::time::now_ms();
    let to =
        p.to.as_deref()
            .map(|t| time_param("to", t))
            .transpose()?
            .unwrap_or(now);
    let from = p
        .from
        .as_deref()
        .map(|t| time_param("from", t))
        .transpose()?
        .unwrap_or(to - DAY_MS);
    if from >= to {
        return Err(ApiError::BadRequest(format!(
            "query parameter from: {from} is not before to ({to})"
        )));
    }
    if to - from > MAX_RANGE_MS {
        return Err(ApiError::BadRequest(format!(
            "query parameter from: the range is longer than {} days",
            MAX_RANGE_MS / DAY_MS
        )));
    }
    let format = p.format.as_deref().unwrap_or("json");
    if !matches!(format, "json" | "csv" | "html" | "pdf") {
        return Err(ApiError::BadRequest(format!(
            "query parameter format: {format:?} is not json, csv, html or pdf"
        )));
    }
    if let Some(s) = p.store.as_deref().filter(|s| !estate.stores.contains_key(*s)) {
        return Err(ApiError::NotFound(format!("no store {s:?}")));
    }
    if let Some(r) = p
        .retailer
        .as_deref()
        .filter(|r| !estate.retailers.contains_key(*r))
    {
        return Err(ApiError::NotFound(format!("no retailer {r:?}")));
    }
    let all = alerts(&state, StateFilter::All).await?;
    let windows = windows(&state).await?;
    let machines = machines(&devices);
    let filter = Filter {
        store: p.store,
        retailer: p.retailer,
    };
    let r = report::build(&Input {
        estate: &estate,
        machines: &machines,
        alerts: &all,
        windows: &windows,
        from_ms: from,
        to_ms: to,
        now_ms: now,
        filter: &filter,
    });
    let name = format!(
        "rvm-availability-{}-{}.{format}",
        compact_time(from),
        compact_time(to)
    );
    let disposition = (
        actix_web::http::header::CONTENT_DISPOSITION,
        format!("inline; filename=\"{name}\""),
    );
    Ok(match format {
        "csv" => HttpResponse::Ok()
            .content_type("text/csv; charset=utf-8")
            .insert_header(disposition)
            .body(report::to_csv(&r).map_err(|e| ApiError::Internal(e.to_string()))?),
        "html" => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .insert_header(disposition)
            .body(report::to_html(&r)),
        "pdf" => HttpResponse::Ok()
            .content_type("application/pdf")
            .insert_header(disposition)
            .body(super::pdf::render(&r)),
        _ => HttpResponse::Ok().json(r),
    })
}
