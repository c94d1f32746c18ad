//! Application metrics of the vision service: the `[app]` config, the push schema, a Prometheus
//! text parser, the scrape client, and the store both sources land in.
//!
//! The vision service reports its own figures (items recognised, rejected, inference ms, camera
//! fps, detection confidence, errors, `transaction_active`) in two ways, either or both:
//!
//! - **push**: it POSTs JSON to the agent's local HTTP endpoint ([`crate::http`]), parsed by
//!   [`push::parse_push`]: `{"metrics": {"items_recognised": 1234, "camera_fps": 29.5}}` or the
//!   flat `{"items_recognised": 1234, "camera_fps": 29.5}`. Values are finite JSON numbers,
//!   names match `[A-Za-z0-9_.:-]{1,64}`, at most `max_metrics` per body. A bad body is refused
//!   as a whole with a [`push::PushError`] naming the bad field.
//! - **scrape**: the agent GETs a Prometheus text endpoint of the service with its one HTTP
//!   client ([`scrape::Scraper`], async), parsed by [`prometheus::parse_prometheus`] (the
//!   `prometheus-parse` crate; lines it cannot read are counted, the rest kept) and flattened by
//!   [`prometheus::samples_to_readings`].
//!
//! Both land in one [`store::AppMetricsStore`], which the collector reads with
//! [`store::AppMetricsStore::snapshot`] into `Telemetry.app` every tick. The store and the
//! parsers do no IO and take the time as an argument.
//!
//! # Flattening a Prometheus sample into a reading name
//!
//! A sample without labels keeps its name: `camera_fps 29.5` -> `camera_fps`. A sample with
//! labels gets the label *values* appended with `.`, in the order of the label names (as
//! Prometheus orders them; a histogram's `le` and a summary's `quantile` last), empty values
//! skipped: `errors_total{stage="io",kind="camera"} 3` -> `errors_total.camera.io`.
//! Characters of a label value outside `[A-Za-z0-9_.:-]` become `_`. A flattened name longer
//! than 64 characters is skipped (truncating could merge two series), as are non-finite values
//! (`NaN`, `+Inf`: telemetry carries no made-up numbers), and a name seen twice keeps its first
//! value. The allow-list (`names`) matches either the flattened name or the sample's own name,
//! so `names = ["camera_fps"]` keeps every `camera_fps.*` series.
//!
//! # Freshness
//!
//! Each value carries the time it arrived. [`store::AppMetricsStore::snapshot`] merges both
//! sources per name, the fresher value winning (a push wins a tie), and drops values that are
//! too old: pushed values after `push_max_age_s`, scraped ones after the longer of
//! `push_max_age_s` and three scrape intervals (so one failed scrape does not blank the
//! figures). An old value is dropped, never reported as if it were current. At most
//! `max_metrics` names are kept: a push that brings new names evicts the oldest ones, and a
//! snapshot keeps the freshest.
//!
//! - [`config`]: the `[app]` section
//! - [`names`]: what a metric name may be
//! - [`push`]: the push schema (pure)
//! - [`prometheus`]: the Prometheus text parser and the flattening into readings (pure)
//! - [`scrape`]: the scrape (async IO; the parse on a blocking thread)
//! - [`store`]: where both sources land, with freshness and the cap (pure, thread-safe)

pub mod config;
pub mod names;
pub mod prometheus;
pub mod push;
pub mod scrape;
pub mod store;
