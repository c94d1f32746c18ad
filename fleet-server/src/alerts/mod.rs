//! Alerts: rules from `config/rules.toml` and the engine that turns samples into alerts.
//! Both are pure (no IO, no clock: every call takes `now_ms`); the alerts actor owns an
//! [`engine::AlertEngine`] and a [`crate::incidents::Correlator`], persists their exports, and
//! hands transitions to notifiers.
//!
//! - [`names`]: the inputs a rule may name (a leaf)
//! - [`rules`]: the file format, defaults, validation naming every bad key, runtime
//!   [`rules::Rule`]
//! - [`alert`]: the alert record, its transitions, the device info rules are scoped by
//! - [`checks`]: failing health checks as alerts (`[health_checks]`, rule names, values)
//! - [`engine`]: per (rule, device) lifecycle pending -> firing -> resolved, `for`, hysteresis,
//!   cooldown, acknowledgement, escalation, export/import; [`silence`]: silences
//! - [`inputs`]: the inputs the server derives (presence, restarts, drops, recoveries, skew)
//! - [`kpi`]: the machine's own figures (accepted and rejected per hour, reject ratio against
//!   its baseline, jams) derived from the vision service's counters (docs/kpis.md)
//! - [`maintenance`]: the maintenance windows of the config and the API, and which
//!   notifications they mute (pure)
//! - [`actor`]: the alerts actor (engine, correlator, notifications, audit); [`requests`]:
//!   what it answers for the API; [`stats`]: its counters; [`persist`]: the thread that
//!   writes its exports, audit lines and maintenance windows; [`store`]: its persisted state
//!   (the seam, and the sled store), [`pg`]: the same in PostgreSQL's tables; [`http`]:
//!   alerts, silences, incidents and maintenance windows routes ([`query`]: the alert list's
//!   filters); [`shared`]: the actor's
//!   device loads and claims when several instances share a PostgreSQL store; [`fleetcorr`]:
//!   the fleet-wide correlation it runs while this instance leads the `correlator` job;
//!   [`fleetwide`]: the whole fleet's alerts listed, acknowledged and resolved on any instance
//!
//! Invariants: one active alert per (rule, device); transitions only for changes (an imported
//! state is not notified again); a silenced alert still changes state, its transitions say
//! `silenced: true`.

pub mod actor;
pub mod alert;
pub mod checks;
pub mod engine;
pub mod fleetcorr;
pub mod fleetwide;
pub mod growth;
pub mod http;
pub mod inputs;
pub mod kpi;
pub mod maintenance;
pub mod names;
pub mod persist;
pub mod pg;
pub mod query;
pub mod requests;
pub mod rules;
pub mod shared;
pub mod silence;
pub mod stats;
pub mod store;
