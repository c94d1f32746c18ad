//! Rollups and retention (pure): the 1-minute rollup of raw rows, and how long each is kept.
//!
//! Invariants:
//! - a rollup row is always recomputed from all raw rows of its minute, never patched, so a
//!   backlog that lands in an old minute (the writer marks it dirty) gives the right figures;
//! - raw rows are kept [`HistoryPolicy::raw_retention_ms`] (24 h), rollups
//!   [`HistoryPolicy::rollup_retention_ms`] (30 days), both by the record's own timestamp.

use std::collections::BTreeMap;

use super::minute::{DAY_MS, minute_of};
use super::rows::{Agg, HistoryRow, RollupRow};

/// How long history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPolicy {
    pub raw_retention_ms: i64,
    pub rollup_retention_ms: i64,
}

impl Default for HistoryPolicy {
    fn default() -> Self {
        HistoryPolicy {
            raw_retention_ms: DAY_MS,
            rollup_retention_ms: 30 * DAY_MS,
        }
    }
}

/// The rollup of one minute from its raw rows (rows outside the minute and non-finite values
/// are ignored). None when nothing is left.
pub fn rollup(minute_ms: i64, rows: &[HistoryRow]) -> Option<RollupRow> {
    let mut by_name: BTreeMap<&str, Agg> = BTreeMap::new();
    for r in rows.iter().filter(|r| minute_of(r.ts_ms) == minute_ms) {
        for (name, v) in &r.metrics {
            let v = f64::from(*v);
            if !v.is_finite() {
                continue;
            }
            by_name
                .entry(name.as_str())
                .and_modify(|a| a.merge(&Agg::of(v)))
                .or_insert_with(|| Agg::of(v));
        }
    }
    (!by_name.is_empty()).then(|| RollupRow {
        minute_ms,
        metrics: by_name.into_iter().map(|(n, a)| (n.to_string(), a)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::minute::MINUTE_MS;

    fn build_row(ts_ms: i64, cpu: f32) -> HistoryRow {
        HistoryRow {
            ts_ms,
            seq: ts_ms as u64,
            metrics: vec![("cpu.usage_pct".into(), cpu), ("load1".into(), 1.0)],
        }
    }

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn a_minute_rolls_up_into_min_max_and_avg() {
        let m = minute_of(NOW);
        let rows = [
            build_row(m, 10.0),
            build_row(m + 20_000, 30.0),
            build_row(m + 59_999, 20.0),
            build_row(m + 60_000, 99.0), // next minute
        ];
        let r = rollup(m, &rows).unwrap();
        let cpu = r.get("cpu.usage_pct").unwrap();
        assert_eq!((cpu.min, cpu.max, cpu.count), (10.0, 30.0, 3));
        assert_eq!(cpu.avg(), 20.0);
        assert_eq!(r.get("load1").unwrap().count, 3);
        assert!(rollup(m - MINUTE_MS, &rows).is_none());
    }
}
