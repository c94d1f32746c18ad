//! Ingest: how device records become server state.
//!
//! - [`store`]: the writer's batches and what it loads on start

pub mod store;
