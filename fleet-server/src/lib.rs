//! RVM Fleet server.
//!
//! # Layout
//! - [`config`]: `fleet-server.toml`, defaults, validation naming every bad key
//! - [`policy`]: who may connect, publish and subscribe on the broker (pure)
//! - [`broker`]: the embedded rmqtt broker and its policy hooks
//! - [`fleet`]: per-device state and presence (pure); [`delivery`]: dedup and gaps (pure)
//! - [`alerts`]: rules (`rules.toml`) and the alert engine: lifecycle, ack, silences (pure)
//! - [`correlate`]: incidents across alerts and devices with a probable cause (pure)
//! - [`writer`]: the ingest writer (journal, dedup, sled) that every record passes through;
//!   [`journal`], [`store`]
//! - [`history`]: 1-minute rollups, retention and metric queries (pure)
//! - [`notify`]: notification routing, rate limits and channels (webhook, email, log)
//! - [`auth`]: API tokens and roles
//! - [`actors`]: fleet actor, ingest, alerts (engine + correlator + notifications), history job
//! - [`http`]: REST v1 and the web view
//! - [`server`]: starting and stopping everything; [`demo`]: `fleet-server demo`

pub mod actors;
pub mod alerts;
pub mod auth;
pub mod broker;
pub mod config;
pub mod correlate;
pub mod delivery;
pub mod demo;
pub mod fleet;
pub mod history;
pub mod http;
pub mod journal;
pub mod notify;
pub mod policy;
pub mod server;
pub mod store;
pub mod writer;
