//! History export: `GET /api/v1/export?format=csv|json&from=&to=&devices=a,b&metrics=m1,m2
//! &resolution=raw|minute` (viewer). Pure: the query rules and the text of each row; the
//! route ([`http`]) streams rows from the store as it reads them.
//!
//! - One row per telemetry record (`raw`, kept [`crate::history::rollup::HistoryPolicy`]'s raw
//!   retention) or per device-minute (`minute`: the 1-minute rollups' averages). The default is
//!   `raw` when `from` is within the raw retention, else `minute`.
//! - Rows come device by device (ids sorted), each device's rows in time order.
//! - Columns: `device,time,ts_ms,seq` then one per metric. `metrics` names them; without it,
//!   every metric the selected devices reported last (their latest flat metrics), or
//!   [`DEFAULT_METRICS`] when none is known. A metric a record does not have is an empty cell
//!   (CSV) or left out (JSON). `time` is RFC 3339 UTC; `seq` is empty for minute rows.
//! - JSON is one array of `{"device","time","ts_ms","seq","metrics":{...}}` objects, written
//!   as it is read.

pub mod http;

use std::fmt::Write as _;

use common::DeviceId;
use serde::Deserialize;

use crate::history::minute::HOUR_MS;
use crate::history::query::{MAX_NAME_LEN, MAX_RANGE_MS, QueryError};
use crate::history::rollup::HistoryPolicy;
use crate::history::rows::{HistoryRow, RollupRow};

/// Columns when neither `metrics` nor any device's latest metrics say which.
pub const DEFAULT_METRICS: &[&str] = &[
    "cpu.usage_pct",
    "load1",
    "memory.used_pct",
    "disk.max_used_pct",
    "temp.max_c",
    "gpu.load_pct",
    "gpu.temp_c",
    "power.total_mw",
    "net.rx_bytes_per_s",
    "net.tx_bytes_per_s",
];

/// Metrics one export may name at most.
pub const MAX_METRICS: usize = 256;
/// Devices one export may name at most.
pub const MAX_DEVICES: usize = 10_000;
/// Range of an export without `from`.
pub const DEFAULT_EXPORT_RANGE_MS: i64 = HOUR_MS;

/// The query string, unparsed.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ExportParams {
    pub format: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub devices: Option<String>,
    pub metrics: Option<String>,
    pub resolution: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Json,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8; header=present",
            Format::Json => "application/json",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "json",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportResolution {
    Raw,
    Minute,
}

/// A validated export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportPlan {
    pub format: Format,
    pub from_ms: i64,
    pub to_ms: i64,
    /// None: every device the server knows.
    pub devices: Option<Vec<DeviceId>>,
    /// Empty: decided from the devices' latest metrics ([`columns`]).
    pub metrics: Vec<String>,
    pub resolution: ExportResolution,
}

fn bad(param: &'static str, message: String) -> QueryError {
    QueryError { param, message }
}

fn parse_time(param: &'static str, s: &str) -> Result<i64, QueryError> {
    s.trim().parse::<i64>().ok().filter(|t| *t >= 0).ok_or_else(|| {
        bad(
            param,
            format!("{s:?} is not a time in milliseconds since the epoch"),
        )
    })
}

/// Whether `name` is a flat metric name (`[A-Za-z0-9._-]`, at most [`MAX_NAME_LEN`]).
pub fn valid_metric_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Validates the query; every error names its parameter.
pub fn plan(p: &ExportParams, policy: &HistoryPolicy, now_ms: i64) -> Result<ExportPlan, QueryError> {
    let format = match p.format.as_deref().map(str::trim) {
        None | Some("") | Some("csv") => Format::Csv,
        Some("json") => Format::Json,
        Some(other) => return Err(bad("format", format!("{other:?} is not csv or json"))),
    };
    let to_ms = match &p.to {
        Some(t) => parse_time("to", t)?,
        None => now_ms,
    };
    let from_ms = match &p.from {
        Some(f) => parse_time("from", f)?,
        None => to_ms - DEFAULT_EXPORT_RANGE_MS,
    };
    if from_ms >= to_ms {
        return Err(bad("from", format!("{from_ms} is not before to ({to_ms})")));
    }
    if to_ms - from_ms > MAX_RANGE_MS {
        return Err(bad(
            "from",
            format!(
                "the range of {} h is longer than the maximum of {} h",
                (to_ms - from_ms) / HOUR_MS,
                MAX_RANGE_MS / HOUR_MS
            ),
        ));
    }
    let devices = match p.devices.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(list) => {
            let mut out = Vec::new();
            for d in list.split(',').map(str::trim).filter(|d| !d.is_empty()) {
                out.push(DeviceId::new(d).map_err(|e| bad("devices", e.to_string()))?);
            }
            if out.len() > MAX_DEVICES {
                return Err(bad(
                    "devices",
                    format!("{} devices; at most {MAX_DEVICES}", out.len()),
                ));
            }
            out.sort();
            out.dedup();
            Some(out)
        }
    };
    let mut metrics = Vec::new();
    if let Some(list) = p.metrics.as_deref() {
        for m in list.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            if !valid_metric_name(m) {
                return Err(bad(
                    "metrics",
                    format!("{m:?} is not a metric name ([A-Za-z0-9._-], at most {MAX_NAME_LEN})"),
                ));
            }
            if !metrics.iter().any(|x| x == m) {
                metrics.push(m.to_string());
            }
        }
        if metrics.len() > MAX_METRICS {
            return Err(bad(
                "metrics",
                format!("{} metrics; at most {MAX_METRICS}", metrics.len()),
            ));
        }
    }
    let raw_ok = from_ms >= now_ms - policy.raw_retention_ms;
    let resolution = match p.resolution.as_deref().map(str::trim) {
        None | Some("") => {
            if raw_ok {
                ExportResolution::Raw
            } else {
                ExportResolution::Minute
            }
        }
        Some("raw") if raw_ok => ExportResolution::Raw,
        Some("raw") => {
            return Err(bad(
                "resolution",
                format!(
                    "raw rows are kept {} h and from is older: use resolution=minute",
                    policy.raw_retention_ms / HOUR_MS
                ),
            ));
        }
        Some("minute") => ExportResolution::Minute,
        Some(other) => {
            return Err(bad("resolution", format!("{other:?} is not raw or minute")));
        }
    };
    Ok(ExportPlan {
        format,
        from_ms,
        to_ms,
        devices,
        metrics,
        resolution,
    })
}

/// The columns of an export: the plan's metrics, else `latest` (sorted, deduplicated), else
/// [`DEFAULT_METRICS`].
pub fn columns(plan: &ExportPlan, latest: impl IntoIterator<Item = String>) -> Vec<String> {
    if !plan.metrics.is_empty() {
        return plan.metrics.clone();
    }
    let mut v: Vec<String> = latest.into_iter().filter(|m| valid_metric_name(m)).collect();
    v.sort();
    v.dedup();
    v.truncate(MAX_METRICS);
    if v.is_empty() {
        DEFAULT_METRICS.iter().map(|s| s.to_string()).collect()
    } else {
        v
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` of a time in milliseconds since the epoch (proleptic Gregorian).
pub fn rfc3339_ms(ts_ms: i64) -> String {
    let secs = ts_ms.div_euclid(1000);
    let ms = ts_ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    )
}

/// Year, month, day of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// One export row, whichever the resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportRow<'a> {
    pub device: &'a DeviceId,
    pub ts_ms: i64,
    pub seq: Option<u64>,
    /// Value per column, in column order.
    pub values: Vec<Option<f64>>,
}

impl<'a> ExportRow<'a> {
    pub fn from_raw(device: &'a DeviceId, row: &HistoryRow, columns: &[String]) -> Self {
        ExportRow {
            device,
            ts_ms: row.ts_ms,
            seq: Some(row.seq),
            values: columns
                .iter()
                .map(|c| {
                    row.metrics
                        .iter()
                        .find(|(n, _)| n == c)
                        .map(|(_, v)| f64::from(*v))
                        .filter(|v| v.is_finite())
                })
                .collect(),
        }
    }

    /// A minute row: each metric's average over the minute.
    pub fn from_rollup(device: &'a DeviceId, row: &RollupRow, columns: &[String]) -> Self {
        ExportRow {
            device,
            ts_ms: row.minute_ms,
            seq: None,
            values: columns
                .iter()
                .map(|c| row.get(c).map(|a| a.avg()).filter(|v| v.is_finite()))
                .collect(),
        }
    }

    /// Whether the row has any of the columns (rows with none are not exported).
    pub fn has_values(&self) -> bool {
        self.values.iter().any(Option::is_some)
    }
}

/// A value as the shortest text that reads back the same (f32 precision for raw rows).
fn num(out: &mut String, v: f64) {
    let f = v as f32;
    if f64::from(f) == v {
        let _ = write!(out, "{f}");
    } else {
        let _ = write!(out, "{v}");
    }
}

/// The CSV header line. Names are `[A-Za-z0-9._-]`: no quoting needed.
pub fn csv_header(columns: &[String]) -> String {
    let mut s = String::from("device,time,ts_ms,seq");
    for c in columns {
        s.push(',');
        s.push_str(c);
    }
    s.push_str("\r\n");
    s
}

/// Appends one CSV line (RFC 4180 line ending). Device ids are `[A-Za-z0-9]`: no quoting.
pub fn csv_row(out: &mut String, r: &ExportRow<'_>) {
    out.push_str(r.device.as_str());
    out.push(',');
    out.push_str(&rfc3339_ms(r.ts_ms));
    let _ = write!(out, ",{},", r.ts_ms);
    if let Some(s) = r.seq {
        let _ = write!(out, "{s}");
    }
    for v in &r.values {
        out.push(',');
        if let Some(v) = v {
            num(out, *v);
        }
    }
    out.push_str("\r\n");
}

/// Start of the JSON array.
pub const JSON_OPEN: &str = "[\n";
/// End of the JSON array.
pub const JSON_CLOSE: &str = "\n]\n";

/// Appends one JSON object; `first` says whether a separating comma is needed.
pub fn json_row(out: &mut String, r: &ExportRow<'_>, columns: &[String], first: bool) {
    if !first {
        out.push_str(",\n");
    }
    let _ = write!(
        out,
        "{{\"device\":\"{}\",\"time\":\"{}\",\"ts_ms\":{},\"seq\":",
        r.device,
        rfc3339_ms(r.ts_ms),
        r.ts_ms
    );
    match r.seq {
        Some(s) => {
            let _ = write!(out, "{s}");
        }
        None => out.push_str("null"),
    }
    out.push_str(",\"metrics\":{");
    let mut first_metric = true;
    for (c, v) in columns.iter().zip(&r.values) {
        if let Some(v) = v {
            if !first_metric {
                out.push(',');
            }
            first_metric = false;
            // names are [A-Za-z0-9._-]: nothing to escape
            let _ = write!(out, "\"{c}\":");
            num(out, *v);
        }
    }
    out.push_str("}}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::minute::DAY_MS;
    use crate::history::rows::Agg;

    const NOW: i64 = 1_700_000_000_000;

    fn build_params(q: &[(&str, &str)]) -> ExportParams {
        let mut p = ExportParams::default();
        for (k, v) in q {
            let v = Some(v.to_string());
            match *k {
                "format" => p.format = v,
                "from" => p.from = v,
                "to" => p.to = v,
                "devices" => p.devices = v,
                "metrics" => p.metrics = v,
                "resolution" => p.resolution = v,
                _ => panic!("{k}"),
            }
        }
        p
    }

    #[test]
    fn the_defaults_are_csv_raw_over_the_last_hour_for_every_device() {
        let p = plan(&ExportParams::default(), &HistoryPolicy::default(), NOW).unwrap();
        assert_eq!(p.format, Format::Csv);
        assert_eq!((p.from_ms, p.to_ms), (NOW - HOUR_MS, NOW));
        assert_eq!(p.devices, None);
        assert_eq!(p.resolution, ExportResolution::Raw);
        let old = build_params(&[("from", &(NOW - 3 * DAY_MS).to_string())]);
        assert_eq!(
            plan(&old, &HistoryPolicy::default(), NOW).unwrap().resolution,
            ExportResolution::Minute
        );
    }

    #[test]
    fn every_bad_parameter_is_named() {
        let pol = HistoryPolicy::default();
        let err = |q: &[(&str, &str)]| plan(&build_params(q), &pol, NOW).unwrap_err().param;
        assert_eq!(err(&[("format", "xml")]), "format");
        assert_eq!(err(&[("from", "yesterday")]), "from");
        assert_eq!(err(&[("to", "-1")]), "to");
        assert_eq!(err(&[("from", "10"), ("to", "5")]), "from");
        assert_eq!(err(&[("devices", "rvm1,rvm-2")]), "devices");
        assert_eq!(err(&[("metrics", "cpu usage")]), "metrics");
        assert_eq!(err(&[("resolution", "hourly")]), "resolution");
        let old = (NOW - 3 * DAY_MS).to_string();
        assert_eq!(err(&[("from", &old), ("resolution", "raw")]), "resolution");
        let far = (NOW - 40 * DAY_MS).to_string();
        assert_eq!(err(&[("from", &far)]), "from");
    }

    #[test]
    fn devices_and_metrics_lists_are_trimmed_sorted_and_deduplicated() {
        let p = plan(
            &build_params(&[
                ("devices", " rvm2, rvm1 ,rvm2,"),
                ("metrics", "gpu.temp_c,cpu.usage_pct,gpu.temp_c"),
                ("format", "json"),
            ]),
            &HistoryPolicy::default(),
            NOW,
        )
        .unwrap();
        let ids: Vec<&str> = p.devices.as_ref().unwrap().iter().map(|d| d.as_str()).collect();
        assert_eq!(ids, ["rvm1", "rvm2"]);
        assert_eq!(p.metrics, ["gpu.temp_c", "cpu.usage_pct"]);
        assert_eq!(p.format, Format::Json);
        assert_eq!(
            columns(&p, vec!["x".to_string()]),
            ["gpu.temp_c", "cpu.usage_pct"]
        );
        let none = plan(&ExportParams::default(), &HistoryPolicy::default(), NOW).unwrap();
        assert_eq!(
            columns(
                &none,
                vec!["load1".into(), "cpu.usage_pct".into(), "load1".into()]
            ),
            ["cpu.usage_pct", "load1"]
        );
        assert_eq!(columns(&none, Vec::new()).len(), DEFAULT_METRICS.len());
    }

    #[test]
    fn times_are_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn csv_and_json_rows_leave_missing_metrics_out() {
        let d = DeviceId::new("rvm1").unwrap();
        let cols: Vec<String> = vec!["cpu.usage_pct".into(), "gpu.temp_c".into()];
        let raw = HistoryRow {
            ts_ms: 1_700_000_000_000,
            seq: 7,
            metrics: vec![("cpu.usage_pct".into(), 12.5), ("load1".into(), 1.0)],
        };
        let r = ExportRow::from_raw(&d, &raw, &cols);
        assert!(r.has_values());
        let mut s = csv_header(&cols);
        csv_row(&mut s, &r);
        assert_eq!(
            s,
            "device,time,ts_ms,seq,cpu.usage_pct,gpu.temp_c\r\nrvm1,2023-11-14T22:13:20.000Z,1700000000000,7,12.5,\r\n"
        );
        let mut j = String::from(JSON_OPEN);
        json_row(&mut j, &r, &cols, true);
        let roll = RollupRow {
            minute_ms: 1_700_000_040_000,
            metrics: vec![(
                "gpu.temp_c".into(),
                Agg {
                    min: 40.0,
                    max: 50.0,
                    sum: 90.0,
                    count: 2,
                },
            )],
        };
        json_row(&mut j, &ExportRow::from_rollup(&d, &roll, &cols), &cols, false);
        j.push_str(JSON_CLOSE);
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v[0]["metrics"]["cpu.usage_pct"], 12.5);
        assert!(v[0]["metrics"].get("gpu.temp_c").is_none());
        assert_eq!(v[1]["seq"], serde_json::Value::Null);
        assert_eq!(v[1]["metrics"]["gpu.temp_c"], 45.0);
        let empty = HistoryRow {
            ts_ms: 0,
            seq: 1,
            metrics: vec![("load1".into(), 1.0)],
        };
        assert!(!ExportRow::from_raw(&d, &empty, &cols).has_values());
    }
}
