//! `GET /api/v1/export?format=csv|json&from=&to=&devices=a,b&metrics=m1,m2&resolution=raw|minute`
//! (viewer): metric history as a download, streamed. The query rules and the row format are
//! in [`crate::history::export`].
//!
//! The response body is a channel: a blocking task walks the store device by device and sends
//! chunks of about [`CHUNK_BYTES`] as it goes, at most [`CHANNEL_CHUNKS`] ahead of the client,
//! so memory stays flat however large the export. A client that goes away stops the walk. A
//! store error in the middle ends the body early (the connection is closed without the final
//! chunk, so the client sees a truncated transfer rather than a silently short file).

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, MessageBody};
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, web};
use common::DeviceId;
use tokio::sync::mpsc;

use crate::auth::Role;
use crate::fleet::actor::ListDevices;
use crate::history::export::walk::{Walked, walk};
use crate::history::export::{self, ExportParams, ExportPlan};
use crate::history::store::HistoryStore;
use crate::http::error::ApiError;
use crate::http::scope::authorize_scoped;
use crate::http::state::AppState;

/// Bytes gathered before a chunk is sent.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks in flight between the store walk and the client at most.
pub const CHANNEL_CHUNKS: usize = 4;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/export", web::get().to(export_route));
}

/// A response body fed by a channel.
pub struct ChannelBody(pub mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl MessageBody for ChannelBody {
    type Error = std::io::Error;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Self::Error>>> {
        self.0.poll_recv(cx)
    }
}

/// `20231114T221320Z` of a time in milliseconds (file names).
pub fn compact_time(ts_ms: i64) -> String {
    let t = export::rfc3339_ms(ts_ms);
    let date = t.get(..10).unwrap_or("").replace('-', "");
    let time = t.get(11..19).unwrap_or("").replace(':', "");
    format!("{date}T{time}Z")
}

async fn export_route(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let (_, vis) = authorize_scoped(&req, &state, Role::Viewer).await?;
    let params = web::Query::<ExportParams>::from_query(req.query_string())
        .map_err(|e| ApiError::BadRequest(format!("query: {e}")))?
        .into_inner();
    let now = common::time::now_ms();
    let plan = export::plan(&params, &state.alerting.history_policy, now)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut summaries = state
        .fleet
        .send(ListDevices)
        .await
        .map_err(|e| ApiError::Internal(format!("fleet actor: {e}")))?;
    // a machine outside the scope is unknown here, as everywhere
    vis.retain_devices(&mut summaries);
    let devices: Vec<DeviceId> = match &plan.devices {
        Some(list) => {
            if let Some(unknown) = list.iter().find(|d| !summaries.iter().any(|s| &s.id == *d)) {
                return Err(ApiError::NotFound(format!(
                    "query parameter devices: no device {unknown}"
                )));
            }
            list.clone()
        }
        None => {
            let mut v: Vec<DeviceId> = summaries.iter().map(|s| s.id.clone()).collect();
            v.sort();
            v
        }
    };
    let columns = export::columns(
        &plan,
        summaries
            .iter()
            .filter(|s| devices.contains(&s.id))
            .flat_map(|s| s.metrics.keys().cloned()),
    );
    let filename = format!(
        "rvm-fleet-export-{}-{}.{}",
        compact_time(plan.from_ms),
        compact_time(plan.to_ms),
        plan.format.extension()
    );
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    let store = state.alerting.store.clone();
    let content_type = plan.format.content_type();
    tokio::task::spawn_blocking(move || produce(&*store, &plan, &devices, &columns, &tx));
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((
            actix_web::http::header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{filename}\""),
        ))
        .body(ChannelBody(rx)))
}

/// Walks the store and sends the export in chunks; returns when done, on a store error (sent
/// as the body's error) or when the client is gone.
fn produce(
    store: &dyn HistoryStore,
    plan: &ExportPlan,
    devices: &[DeviceId],
    columns: &[String],
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    let mut send = |piece: String| tx.blocking_send(Ok(Bytes::from(piece))).is_ok();
    match walk(store, plan, devices, columns, CHUNK_BYTES, &mut send) {
        Ok(Walked::Done(rows)) => tracing::info!(rows, devices = devices.len(), "export sent"),
        Ok(Walked::Stopped) => {}
        Err(e) => {
            tracing::error!(error = %e, "export stopped by a store error");
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_carry_compact_utc_times() {
        assert_eq!(compact_time(1_700_000_000_123), "20231114T221320Z");
    }
}
