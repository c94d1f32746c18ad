//! An export walked through the history store: header, every row of every device in order,
//! footer, handed to a sink in pieces of about `chunk` bytes. The API's route streams them
//! ([`super::http`]); `fleetctl export --config` writes them to a file.

use common::DeviceId;

use super::{ExportPlan, ExportResolution, ExportRow, Format, JSON_CLOSE, JSON_OPEN};
use crate::history::minute::minute_of;
use crate::history::store::HistoryStore;
use crate::store::StoreError;

/// How a walk ended.
#[derive(Debug)]
pub enum Walked {
    /// Every row went to the sink: how many.
    Done(u64),
    /// The sink said stop (the client went away).
    Stopped,
}

/// Walks `devices` in order (blocking); `sink` gets each piece and returns false to stop.
pub fn walk(
    store: &dyn HistoryStore,
    plan: &ExportPlan,
    devices: &[DeviceId],
    columns: &[String],
    chunk: usize,
    sink: &mut dyn FnMut(String) -> bool,
) -> Result<Walked, StoreError> {
    let mut buf = String::with_capacity(chunk + 4096);
    match plan.format {
        Format::Csv => buf.push_str(&super::csv_header(columns)),
        Format::Json => buf.push_str(JSON_OPEN),
    }
    let (mut rows, mut first) = (0u64, true);
    let mut push = |buf: &mut String, r: &ExportRow<'_>| {
        if !r.has_values() {
            return;
        }
        match plan.format {
            Format::Csv => super::csv_row(buf, r),
            Format::Json => super::json_row(buf, r, columns, first),
        }
        first = false;
        rows += 1;
    };
    for d in devices {
        match plan.resolution {
            ExportResolution::Raw => {
                for row in store.history_iter(d, plan.from_ms, plan.to_ms) {
                    push(&mut buf, &ExportRow::from_raw(d, &row?, columns));
                    if buf.len() >= chunk && !sink(std::mem::take(&mut buf)) {
                        return Ok(Walked::Stopped);
                    }
                }
            }
            ExportResolution::Minute => {
                for row in store.rollups_iter(d, minute_of(plan.from_ms), plan.to_ms) {
                    push(&mut buf, &ExportRow::from_rollup(d, &row?, columns));
                    if buf.len() >= chunk && !sink(std::mem::take(&mut buf)) {
                        return Ok(Walked::Stopped);
                    }
                }
            }
        }
    }
    if plan.format == Format::Json {
        buf.push_str(JSON_CLOSE);
    }
    if !sink(buf) {
        return Ok(Walked::Stopped);
    }
    Ok(Walked::Done(rows))
}
