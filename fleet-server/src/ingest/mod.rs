//! Ingest: how device records become server state.
//!
//! Records reach the [`writer`] from the embedded broker's publish hook
//! ([`crate::broker`], before the broker acknowledges the publish) or from the [`client`]
//! on an external broker (which acknowledges only after the writer replied).
//!
//! - [`writer`]: the one place records become state: journal, decode, dedup, sled, then the
//!   fleet actor and the republisher
//! - [`journal`]: the write-ahead journal (`kill -9` loses no acknowledged record)
//! - [`decode`]: topic and payload to an [`Ingested`](crate::messages::Ingested) record (pure)
//! - [`store`]: the writer's batches and what it loads on start
//! - [`client`]: the server's MQTT ingest session; [`stats`]: the counters of both

pub mod client;
pub mod decode;
pub mod journal;
pub mod stats;
pub mod store;
pub mod writer;
