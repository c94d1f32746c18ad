//! Metric history: raw rows (one per telemetry record) and 1-minute rollups (min, max, sum and
//! count per metric), their retention, queries, exports and the fleet report.
//!
//! - [`rows`], [`minute`]: the rows and the minute arithmetic (leaves: they import nothing of
//!   the crate, so the writer, the store and the API share them)
//! - [`rollup`]: a minute's rollup from its raw rows, and [`rollup::HistoryPolicy`] (retention)
//! - [`store`]: reads in time order, dirty-minute marks, rollups, retention;
//!   [`pack`]: sealed spans packed into a few values (the trees' second layout)
//! - [`job`]: the history job (rollups every 10 s; packing, retention and disk size)
//! - [`query`]: `GET /api/v1/devices/{id}/metrics` (pure), served by [`http`]
//! - [`export`]: CSV / JSON export rows and their query, with its route ([`export::http`])
//! - [`report`]: the HTML fleet report, with its route ([`report::http`])
//!
//! Invariants:
//! - a rollup row is always recomputed from all raw rows of its minute, never patched, so a
//!   backlog that lands in an old minute (the writer marks it dirty) gives the right figures;
//! - raw rows are kept [`rollup::HistoryPolicy::raw_retention_ms`] (24 h), rollups
//!   [`rollup::HistoryPolicy::rollup_retention_ms`] (30 days), both by the record's own
//!   timestamp;
//! - a query reads raw rows only for a step under a minute within the raw retention, else
//!   rollups; either way it returns at most [`query::MAX_POINTS`] points.

pub mod export;
pub mod http;
pub mod job;
pub mod minute;
pub mod pack;
pub mod query;
pub mod report;
pub mod rollup;
pub mod rows;
pub mod store;
