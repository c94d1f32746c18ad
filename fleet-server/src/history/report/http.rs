//! `GET /api/v1/report?from=&to=&download=1` (viewer): the HTML fleet report of
//! [`crate::history::report`] (how availability is computed is explained there and in the page).
//! `from`/`to` are milliseconds since the epoch (default: the last 24 hours, at most 31 days).
//! The page comes `inline` with a file name; `download=1` makes it an attachment.

use actix_web::{HttpRequest, HttpResponse, web};
use common::DeviceId;
use serde::Deserialize;

use crate::alerts::engine::HISTORY_CAP;
use crate::alerts::requests::{ListAlerts, StateFilter};
use crate::auth::Role;
use crate::fleet::actor::ListDevices;
use crate::fleet::state::Presence;
use crate::history::export::http::compact_time;
use crate::history::minute::{DAY_MS, MINUTE_MS, minute_of};
use crate::history::query::{MAX_RANGE_MS, bucketize};
use crate::history::report::html;
use crate::history::report::{self, AlertRow, AvailabilityCounter, DeviceReport, ReportInput};
use crate::history::rows::Agg;
use crate::history::store::HistoryStore;
use crate::http::error::ApiError;
use crate::http::scope::authorize_scoped;
use crate::http::state::AppState;
use crate::store::StoreError;

/// Range of a report without `from`.
pub const DEFAULT_REPORT_RANGE_MS: i64 = DAY_MS;
/// The most recent minutes are read from raw rows: the rollup job may not have reached them.
pub const RECENT_RAW_MS: i64 = 5 * MINUTE_MS;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/report", web::get().to(report_route));
}

#[derive(Debug, Default, Deserialize)]
struct ReportParams {
    from: Option<String>,
    to: Option<String>,
    download: Option<String>,
}

fn time_param(name: &str, v: &str) -> Result<i64, ApiError> {
    v.trim().parse::<i64>().ok().filter(|t| *t >= 0).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "query parameter {name}: {v:?} is not a time in milliseconds since the epoch"
        ))
    })
}

async fn report_route(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (_, vis) = authorize_scoped(&req, &state, Role::Viewer).await?;
    let p = web::Query::<ReportParams>::from_query(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("query: {e}")))?
        .into_inner();
    let now = common::time::now_ms();
    let to = match &p.to {
        Some(t) => time_param("to", t)?,
        None => now,
    };
    let from = match &p.from {
        Some(f) => time_param("from", f)?,
        None => to - DEFAULT_REPORT_RANGE_MS,
    };
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
    let download = match p.download.as_deref().map(str::trim) {
        None | Some("") | Some("0") | Some("false") => false,
        Some("1") | Some("true") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "query parameter download: {other:?} is not 1 or 0"
            )));
        }
    };
    let mut summaries = state
        .fleet
        .send(ListDevices)
        .await
        .map_err(|e| ApiError::Internal(format!("fleet actor: {e}")))?;
    vis.retain_devices(&mut summaries);
    let alerts = state
        .alerting
        .alerts
        .send(ListAlerts(StateFilter::All))
        .await
        .map_err(|e| ApiError::Internal(format!("alerts actor: {e}")))?;
    let alerts: Vec<AlertRow> = alerts
        .into_iter()
        .filter_map(|a| {
            Some(AlertRow {
                fired_ms: a.fired_ms?,
                device: a.device,
                rule: a.rule,
                severity: a.severity,
                resolved_ms: a.resolved_ms,
            })
        })
        .filter(|a| a.overlaps(from, to) && vis.device(a.device.as_str()))
        .collect();
    let devices: Vec<(DeviceId, Option<String>, Presence)> =
        summaries.into_iter().map(|s| (s.id, s.site, s.status)).collect();
    let store = state.alerting.store.clone();
    let devices = web::block(move || device_reports(&*store, devices, from, to, now))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::from)?;
    let html = html::render(&ReportInput {
        from_ms: from,
        to_ms: to,
        now_ms: now,
        devices,
        alerts,
        alert_history_note: Some(format!(
            "Resolved alerts: the server remembers the last {HISTORY_CAP}; older ones are not counted."
        )),
    });
    let filename = format!(
        "rvm-fleet-report-{}-{}.html",
        compact_time(from),
        compact_time(to)
    );
    Ok(HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            actix_web::http::header::CONTENT_DISPOSITION,
            format!(
                "{}; filename=\"{filename}\"",
                if download { "attachment" } else { "inline" }
            ),
        ))
        .body(html))
}

/// The temperature a chart shows: the GPU's, else the hottest sensor.
const TEMP_METRICS: [&str; 2] = ["gpu.temp_c", "temp.max_c"];

/// Availability and chart series of every device: rollups for the window up to a few minutes
/// ago, raw rows after that (blocking: run off the actix threads).
fn device_reports(
    store: &dyn HistoryStore,
    devices: Vec<(DeviceId, Option<String>, Presence)>,
    from: i64,
    to: i64,
    now: i64,
) -> Result<Vec<DeviceReport>, StoreError> {
    let step = report::chart_step_ms(from, to);
    let cutoff = minute_of(now - RECENT_RAW_MS).max(minute_of(from));
    let mut out = Vec::with_capacity(devices.len());
    for (id, site, status) in devices {
        let first = store.first_data_minute(&id)?;
        let mut counter = AvailabilityCounter::new(from, to, now, first);
        let mut cpu: Vec<(i64, Agg)> = Vec::new();
        let mut temp: Vec<(i64, Agg)> = Vec::new();
        for row in store.rollups_iter(&id, minute_of(from), cutoff.min(to)) {
            let row = row?;
            counter.observe(row.minute_ms);
            if let Some(a) = row.get("cpu.usage_pct") {
                cpu.push((row.minute_ms.max(from), *a));
            }
            if let Some(a) = TEMP_METRICS.iter().find_map(|m| row.get(m)) {
                temp.push((row.minute_ms.max(from), *a));
            }
        }
        if cutoff < to {
            for row in store.history_iter(&id, cutoff.max(from), to) {
                let row = row?;
                counter.observe(minute_of(row.ts_ms));
                let get = |name: &str| {
                    row.metrics
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| f64::from(*v))
                        .filter(|v| v.is_finite())
                };
                if let Some(v) = get("cpu.usage_pct") {
                    cpu.push((row.ts_ms, Agg::of(v)));
                }
                if let Some(v) = TEMP_METRICS.iter().find_map(|m| get(m)) {
                    temp.push((row.ts_ms, Agg::of(v)));
                }
            }
        }
        out.push(DeviceReport {
            id,
            site,
            status,
            availability: counter.finish(),
            cpu: bucketize(cpu, step),
            temp: bucketize(temp, step),
        });
    }
    Ok(out)
}
