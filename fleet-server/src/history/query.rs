//! Metric queries (pure): the rules for answering `GET /api/v1/devices/{id}/metrics`.
//!
//! A query reads raw rows only for a step under a minute within the raw retention, else
//! rollups; either way it returns at most [`MAX_POINTS`] points `[ts_ms, min, max, avg]`, each
//! the bucket `[ts, ts + step)` aligned on multiples of the step.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::minute::{DAY_MS, HOUR_MS, MINUTE_MS};
use super::rollup::HistoryPolicy;
use super::rows::{Agg, HistoryRow, Point, RollupRow};

/// Points one query may return at most.
pub const MAX_POINTS: i64 = 10_000;
/// Points a query without `step` aims at.
pub const DEFAULT_POINTS: i64 = 720;
/// Range of a query without `from`.
pub const DEFAULT_RANGE_MS: i64 = HOUR_MS;
/// Smallest step accepted.
pub const MIN_STEP_MS: i64 = 100;
/// Longest range one query may cover.
pub const MAX_RANGE_MS: i64 = 31 * DAY_MS;
/// Raw rows one query reads at most (the answer says `truncated`).
pub const MAX_RAW_ROWS: usize = 200_000;
/// Longest metric name accepted.
pub const MAX_NAME_LEN: usize = 128;

/// The query string of `GET /api/v1/devices/{id}/metrics`, unparsed.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MetricsParams {
    pub name: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub step: Option<String>,
}

/// A bad query parameter, named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    pub param: &'static str,
    pub message: String,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "query parameter {}: {}", self.param, self.message)
    }
}

impl std::error::Error for QueryError {}

fn bad(param: &'static str, message: String) -> QueryError {
    QueryError { param, message }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    Raw,
    Rollup,
}

/// What a query reads and how it groups it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub name: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub step_ms: i64,
    pub resolution: Resolution,
}

/// Parses `500ms`, `10s`, `5m`, `1h`, `1d` or a number of milliseconds.
pub fn parse_duration_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: i64 = num.parse().ok()?;
    let mult = match unit {
        "" | "ms" => 1,
        "s" => 1000,
        "m" => MINUTE_MS,
        "h" => HOUR_MS,
        "d" => DAY_MS,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn parse_time(param: &'static str, s: &str) -> Result<i64, QueryError> {
    s.trim().parse::<i64>().ok().filter(|t| *t >= 0).ok_or_else(|| {
        bad(
            param,
            format!("{s:?} is not a time in milliseconds since the epoch"),
        )
    })
}

/// Validates a query and decides what to read. Every error names its parameter.
pub fn plan(p: &MetricsParams, policy: &HistoryPolicy, now_ms: i64) -> Result<Plan, QueryError> {
    let name = p
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("name", "required (a flat metric such as cpu.usage_pct)".into()))?;
    if name.len() > MAX_NAME_LEN
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(bad(
            "name",
            format!("{name:?} is not a metric name ([A-Za-z0-9._-], at most {MAX_NAME_LEN})"),
        ));
    }
    let to_ms = match &p.to {
        Some(t) => parse_time("to", t)?,
        None => now_ms,
    };
    let from_ms = match &p.from {
        Some(f) => parse_time("from", f)?,
        None => to_ms.saturating_sub(DEFAULT_RANGE_MS),
    };
    if from_ms >= to_ms {
        return Err(bad("from", format!("{from_ms} is not before to ({to_ms})")));
    }
    let range = to_ms - from_ms;
    if range > MAX_RANGE_MS {
        return Err(bad(
            "from",
            format!(
                "the range of {} h is longer than the maximum of {} h",
                range / HOUR_MS,
                MAX_RANGE_MS / HOUR_MS
            ),
        ));
    }
    let asked = match &p.step {
        Some(s) => {
            let step = parse_duration_ms(s).ok_or_else(|| {
                bad(
                    "step",
                    format!("{s:?} is not a duration (500ms, 10s, 5m, 1h, 1d or milliseconds)"),
                )
            })?;
            if step < MIN_STEP_MS {
                return Err(bad("step", format!("{s:?} is shorter than {MIN_STEP_MS} ms")));
            }
            // a step longer than the longest range is one bucket anyway (and keeps the
            // arithmetic below from overflowing: found by tests/tests/fuzz.rs)
            step.min(MAX_RANGE_MS)
        }
        None => ((range + DEFAULT_POINTS - 1) / DEFAULT_POINTS).max(1000),
    };
    let raw_ok = from_ms >= now_ms.saturating_sub(policy.raw_retention_ms);
    let (resolution, step_ms) = if asked < MINUTE_MS && raw_ok {
        (Resolution::Raw, asked)
    } else {
        // Rollup buckets are whole minutes.
        let minutes = (asked + MINUTE_MS - 1) / MINUTE_MS;
        (Resolution::Rollup, minutes.max(1) * MINUTE_MS)
    };
    let points = (range + step_ms - 1) / step_ms;
    if points > MAX_POINTS {
        return Err(bad(
            "step",
            format!("{step_ms} ms over {range} ms makes {points} points; at most {MAX_POINTS}"),
        ));
    }
    Ok(Plan {
        name: name.to_string(),
        from_ms,
        to_ms,
        step_ms,
        resolution,
    })
}

/// Groups `(ts, agg)` samples into step buckets aligned on multiples of `step_ms`.
pub fn bucketize(samples: impl IntoIterator<Item = (i64, Agg)>, step_ms: i64) -> Vec<Point> {
    let step = step_ms.max(1);
    let mut buckets: BTreeMap<i64, Agg> = BTreeMap::new();
    for (ts, a) in samples {
        buckets
            .entry(ts.div_euclid(step) * step)
            .and_modify(|b| b.merge(&a))
            .or_insert(a);
    }
    buckets
        .into_iter()
        .map(|(ts, a)| (ts, a.min, a.max, a.avg()))
        .collect()
}

/// A metric's samples from raw rows.
pub fn raw_samples<'a>(rows: &'a [HistoryRow], name: &'a str) -> impl Iterator<Item = (i64, Agg)> + 'a {
    rows.iter().filter_map(move |r| {
        r.metrics
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| f64::from(*v))
            .filter(|v| v.is_finite())
            .map(|v| (r.ts_ms, Agg::of(v)))
    })
}

/// A metric's samples from rollup rows.
pub fn rollup_samples<'a>(rows: &'a [RollupRow], name: &'a str) -> impl Iterator<Item = (i64, Agg)> + 'a {
    rows.iter()
        .filter_map(move |r| r.get(name).map(|a| (r.minute_ms, *a)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::minute::minute_of;
    use crate::history::rollup::rollup;

    fn build_row(ts_ms: i64, cpu: f32) -> HistoryRow {
        HistoryRow {
            ts_ms,
            seq: ts_ms as u64,
            metrics: vec![("cpu.usage_pct".into(), cpu), ("load1".into(), 1.0)],
        }
    }

    fn build_params(name: &str, from: Option<i64>, to: Option<i64>, step: Option<&str>) -> MetricsParams {
        MetricsParams {
            name: Some(name.into()),
            from: from.map(|f| f.to_string()),
            to: to.map(|t| t.to_string()),
            step: step.map(str::to_string),
        }
    }

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn a_huge_step_is_one_bucket_not_an_overflow() {
        let p = build_params(
            "cpu.usage_pct",
            Some(NOW - HOUR_MS),
            Some(NOW),
            Some("9223372036854775807"),
        );
        let plan = plan(&p, &HistoryPolicy::default(), NOW).unwrap();
        assert_eq!(
            (plan.resolution, plan.step_ms),
            (Resolution::Rollup, MAX_RANGE_MS)
        );
        let p = build_params("cpu.usage_pct", None, Some(0), None);
        let _ = super::plan(&p, &HistoryPolicy::default(), i64::MIN);
    }

    #[test]
    fn buckets_merge_samples_and_rollups_agree_with_raw() {
        let m = minute_of(NOW);
        let rows: Vec<HistoryRow> = (0..120).map(|i| build_row(m + i * 1000, i as f32)).collect();
        let raw = bucketize(raw_samples(&rows, "cpu.usage_pct"), MINUTE_MS);
        let rolled: Vec<RollupRow> = [m, m + MINUTE_MS]
            .iter()
            .filter_map(|min| rollup(*min, &rows))
            .collect();
        let from_rollups = bucketize(rollup_samples(&rolled, "cpu.usage_pct"), MINUTE_MS);
        assert_eq!(raw, from_rollups);
        assert_eq!(
            raw,
            vec![(m, 0.0, 59.0, 29.5), (m + MINUTE_MS, 60.0, 119.0, 89.5)]
        );
        let two = bucketize(rollup_samples(&rolled, "cpu.usage_pct"), 2 * MINUTE_MS);
        assert_eq!(two.len(), 1 + usize::from(m % (2 * MINUTE_MS) != 0));
    }

    #[test]
    fn a_short_recent_query_reads_raw_rows_and_a_long_one_rollups() {
        let pol = HistoryPolicy::default();
        let p = plan(&build_params("cpu.usage_pct", None, None, None), &pol, NOW).unwrap();
        assert_eq!(
            (p.resolution, p.from_ms, p.to_ms, p.step_ms),
            (Resolution::Raw, NOW - HOUR_MS, NOW, 5000)
        );
        let day = build_params("cpu.usage_pct", Some(NOW - 7 * DAY_MS), Some(NOW), None);
        let p = plan(&day, &pol, NOW).unwrap();
        assert_eq!(p.resolution, Resolution::Rollup);
        assert_eq!(p.step_ms % MINUTE_MS, 0);
        // a fine step beyond the raw retention: rollups, whole minutes
        let old = build_params(
            "cpu.usage_pct",
            Some(NOW - 2 * DAY_MS),
            Some(NOW - 2 * DAY_MS + HOUR_MS),
            Some("10s"),
        );
        let p = plan(&old, &pol, NOW).unwrap();
        assert_eq!((p.resolution, p.step_ms), (Resolution::Rollup, MINUTE_MS));
        let coarse = build_params("cpu.usage_pct", Some(NOW - HOUR_MS), Some(NOW), Some("5m"));
        assert_eq!(plan(&coarse, &pol, NOW).unwrap().resolution, Resolution::Rollup);
    }

    #[test]
    fn every_bad_parameter_is_named() {
        let pol = HistoryPolicy::default();
        let err = |p: MetricsParams| plan(&p, &pol, NOW).unwrap_err();
        assert_eq!(err(MetricsParams::default()).param, "name");
        assert_eq!(err(build_params("cpu usage", None, None, None)).param, "name");
        let mut p = build_params("cpu.usage_pct", None, None, None);
        p.from = Some("yesterday".into());
        assert_eq!(err(p).param, "from");
        let mut p = build_params("cpu.usage_pct", None, None, None);
        p.to = Some("-5".into());
        assert_eq!(err(p).param, "to");
        assert_eq!(
            err(build_params("cpu.usage_pct", Some(NOW), Some(NOW), None)).param,
            "from"
        );
        assert_eq!(
            err(build_params(
                "cpu.usage_pct",
                Some(NOW - 40 * DAY_MS),
                Some(NOW),
                None
            ))
            .param,
            "from"
        );
        assert_eq!(
            err(build_params("cpu.usage_pct", None, None, Some("10x"))).param,
            "step"
        );
        assert_eq!(
            err(build_params("cpu.usage_pct", None, None, Some("1ms"))).param,
            "step"
        );
        let e = err(build_params(
            "cpu.usage_pct",
            Some(NOW - DAY_MS / 2),
            Some(NOW),
            Some("1s"),
        ));
        assert_eq!(e.param, "step");
        assert!(e.to_string().starts_with("query parameter step:"), "{e}");
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration_ms("500ms"), Some(500));
        assert_eq!(parse_duration_ms("10s"), Some(10_000));
        assert_eq!(parse_duration_ms("5m"), Some(300_000));
        assert_eq!(parse_duration_ms("2h"), Some(7_200_000));
        assert_eq!(parse_duration_ms("1d"), Some(DAY_MS));
        assert_eq!(parse_duration_ms("250"), Some(250));
        assert_eq!(parse_duration_ms("h"), None);
        assert_eq!(parse_duration_ms("99999999999999999999s"), None);
    }
}
