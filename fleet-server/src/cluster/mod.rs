//! Several fleet-server instances on one PostgreSQL store (docs/architecture.md, "Several
//! instances"): who this instance is, the `[cluster]` section that says how often it proves it
//! is alive and how long a lease it holds lasts, the registry of instances and the leader
//! leases of the fleet-wide jobs.
//!
//! With sled there is one instance: it registers nowhere and leads every job. With PostgreSQL
//! every instance registers in `instances`, heartbeats, and competes for one lease per
//! leader-only job; every write of a leader asserts its lease in its own transaction, so a
//! frozen leader's late writes are refused (SQLSTATE `RVML1`) rather than applied.
//!
//! # Layout
//! - [`config`]: `[cluster]`: `instance_id`, `heartbeat_ms`, `lease_ms`
//! - [`lease`]: the lease as this instance sees it, pure: when to renew, whether it leads, when
//!   its own clock says the lease is surely over (before the database lets another take it)
//! - [`registry`]: instances alive, dead or stopped, and who leads, pure, from the rows
//! - [`leader`]: [`Leadership`], what each job may do now; the refused writes, counted
//! - [`fence`]: `fleet_assert_lease` in a leader transaction, and how a refusal is recognised
//! - [`pg`]: the statements on `instances` and `leader_lease`
//! - [`heartbeat`]: the supervised loop: heartbeat, renew or take leases, read the cluster
//! - [`instance`]: [`Cluster`], what the server holds: register, heartbeat, stop, read
//! - [`http`]: `GET /api/v1/cluster`

pub mod config;
pub mod fence;
pub mod heartbeat;
pub mod http;
pub mod instance;
pub mod leader;
pub mod lease;
pub mod pg;
pub mod registry;

pub use config::{ClusterConfig, ClusterSection};
pub use instance::{Cluster, ClusterError};
pub use leader::{Leadership, Role};
