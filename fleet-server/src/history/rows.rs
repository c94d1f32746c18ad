//! The rows of history, shared by the writer, the store, the queries, exports and reports. A
//! leaf: imports nothing of the crate.

use serde::{Deserialize, Serialize};

/// A history row: flat metrics at the record's own time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRow {
    pub ts_ms: i64,
    pub seq: u64,
    pub metrics: Vec<(String, f32)>,
}

/// min / max / sum / count of the samples of one metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Agg {
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub count: u64,
}

impl Agg {
    pub fn of(v: f64) -> Agg {
        Agg {
            min: v,
            max: v,
            sum: v,
            count: 1,
        }
    }

    pub fn merge(&mut self, o: &Agg) {
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.sum += o.sum;
        self.count += o.count;
    }

    pub fn avg(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
}

/// One device's figures for one minute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollupRow {
    pub minute_ms: i64,
    pub metrics: Vec<(String, Agg)>,
}

impl RollupRow {
    pub fn get(&self, name: &str) -> Option<&Agg> {
        self.metrics.iter().find(|(n, _)| n == name).map(|(_, a)| a)
    }
}

/// One point: bucket start, min, max, avg.
pub type Point = (i64, f64, f64, f64);
