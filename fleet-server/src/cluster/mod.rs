//! Several fleet-server instances on one PostgreSQL store (docs/architecture.md, "Several
//! instances"): who this instance is, and the `[cluster]` section that says how often it
//! proves it is alive and how long a lease it holds lasts.
//!
//! With sled there is one instance and nothing here runs but the identity; with PostgreSQL
//! every instance registers in `instances`, heartbeats, and competes for the leader lease of
//! the fleet-wide jobs.

pub mod config;

pub use config::{ClusterConfig, ClusterSection};
