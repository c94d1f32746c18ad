//! RVM Fleet server.
//!
//! # Layout
//! One folder per capability, each with its config, its pure core, its actor, its store
//! access and its routes. Data flows broker -> ingest -> fleet -> alerts -> incidents /
//! notify / republish; commands go back out. No module imports another round a circle
//! (`module-circles.py`): code names the module that defines what it uses.
//!
//! - [`broker`]: the embedded rmqtt broker, its thread, the access policy (pure), the
//!   Mosquitto configuration and ACL for production (`fleetctl broker-config`)
//! - [`ingest`]: the ingest writer every record passes through (journal, decode, dedup,
//!   sled), its store access, and the MQTT ingest client for an external broker
//! - [`fleet`]: per-device state and presence, delivery accounting, the clock guard (pure),
//!   the fleet actor, the live diff of device summaries, the devices routes
//! - [`history`]: rows and minute arithmetic (leaves), rollups, packing, retention job,
//!   metric queries, export and the HTML report, each with its store access and routes
//! - [`alerts`]: input names, rules (`rules.toml`), health checks as alerts, the engine,
//!   silences, maintenance windows' muting, derived inputs (pure), the alerts actor (engine +
//!   correlator + notifications), its persister and store, its routes
//! - [`incidents`]: the correlator (pure), one detector per file (site outage, cohort
//!   regression, thermal chain, outlier)
//! - [`commands`]: remote commands and rollouts (pure), the commands actor, its store, routes
//! - [`notify`]: notifications: config, routing and rate limits, channels (webhook formats,
//!   SMS, email, log), the dispatcher and the durable outbox with its worker, maintenance
//!   windows (pure), the test message, its routes
//! - [`cluster`]: this instance among several on one PostgreSQL store: its id, `[cluster]`,
//!   the registry and heartbeat, the leader leases of the fleet-wide jobs and their fence
//! - [`sessions`]: which instance holds each machine's session (`session_owners`), ending a
//!   stale one, the LISTEN connection that wakes the commands actor
//! - [`estate`]: retailers -> stores (a machine's `site`) -> machines, opening hours, the
//!   stores CSV, availability per machine, store and retailer (pure) and its JSON, CSV, HTML
//!   and PDF reports, the estate routes
//! - [`republish`]: records, alerts and incidents as JSON on `fleet/v1/...`
//! - [`http`]: app state, authorization, the error mapping, the route table, the web view,
//!   the live stream, `/metrics`, tokens and the audit log
//! - [`live`]: the hub that broadcasts what changed to open pages, and its events
//! - leaves: [`alloc`] (glibc malloc's arena cap), [`store`] (the sled database: handle, trees, keys), [`messages`] (messages that
//!   cross features), [`auth`] (API tokens and roles), [`config`] (`fleet-server.toml`,
//!   validation naming every bad key)
//! - [`supervise`]: the supervisor of the server's own actors, tasks and threads: restart
//!   decisions (pure), liveness, slots and inboxes that outlive a restart, test-only faults
//! - [`server`]: starting and stopping everything, and the supervised children in start
//!   order (`server/children.rs`); [`sub`]: `fleetctl sub`; [`provision`]: provisioning
//!   bundles (`fleetctl certs bundle`). The demo is the `rvm-sim` crate's.

pub mod alerts;
pub mod alloc;
pub mod audit;
pub mod auth;
pub mod broker;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod estate;
pub mod fleet;
pub mod history;
pub mod http;
pub mod incidents;
pub mod ingest;
pub mod live;
pub mod messages;
pub mod metric_names;
pub mod notify;
pub mod pg;
pub mod provision;
pub mod republish;
pub mod server;
pub mod sessions;
pub mod storage;
pub mod store;
pub mod sub;
pub mod supervise;

/// Sets TCP_NODELAY on an MQTT client's connections. MQTT packets are small and answered
/// (PUBACK, a command's result): with Nagle's algorithm on, a packet written while an earlier
/// one is unacknowledged waits for the peer's delayed ACK, about 40 ms on Linux.
pub fn mqtt_no_delay(el: &mut rumqttc::EventLoop) {
    let mut net = el.network_options();
    net.set_tcp_nodelay(true);
    el.set_network_options(net);
}
