//! RVM Fleet server.
//!
//! # Layout
//! - [`config`]: `fleet-server.toml`, defaults, validation naming every bad key
//! - [`policy`]: who may connect, publish and subscribe on the broker (pure)
//! - [`broker`]: the embedded rmqtt broker and its policy hooks; [`mosquitto`]: the Mosquitto
//!   configuration and ACL for production (`fleetctl broker-config`)
//! - [`fleet`]: per-device state and presence (pure); [`delivery`]: dedup and gaps (pure);
//!   [`clock`]: where records of devices with a wrong clock go in history (pure)
//! - [`alerts`]: rules (`rules.toml`) and the alert engine: lifecycle, ack, silences (pure)
//! - [`correlate`]: incidents across alerts and devices with a probable cause (pure)
//! - [`writer`]: the ingest writer (journal, dedup, sled) that every record passes through;
//!   [`journal`], [`store`]
//! - [`history`]: 1-minute rollups, retention and metric queries (pure)
//! - [`notify`]: notification routing, rate limits and channels (webhook, email, log)
//! - [`commands`]: remote commands: lifecycle, resends, expiry, rollouts (pure)
//! - [`auth`]: API tokens and roles
//! - [`actors`]: fleet actor, ingest, alerts (engine + correlator + notifications), history job
//! - [`http`]: REST v1 and the web view; [`live`]: what changed, broadcast to open pages
//! - [`server`]: starting and stopping everything; [`demo`]: `fleet-server demo`
//! - [`sub`]: `fleetctl sub`, one JSON line per broker message (records decoded)
//! - [`export`]: history export rows (CSV, JSON) and their query (pure); [`report`]: the HTML
//!   fleet report (availability, alerts, inline SVG charts; pure)
//! - [`provision`]: provisioning bundles for `fleetctl certs bundle` and `config/install.sh`

pub mod alerts;
pub mod auth;
pub mod broker;
pub mod commands;
pub mod config;
pub mod demo;
pub mod fleet;
pub mod history;
pub mod http;
pub mod incidents;
pub mod ingest;
pub mod live;
pub mod messages;
pub mod notify;
pub mod provision;
pub mod republish;
pub mod server;
pub mod store;
pub mod sub;

/// Sets TCP_NODELAY on an MQTT client's connections. MQTT packets are small and answered
/// (PUBACK, a command's result): with Nagle's algorithm on, a packet written while an earlier
/// one is unacknowledged waits for the peer's delayed ACK, about 40 ms on Linux.
pub fn mqtt_no_delay(el: &mut rumqttc::EventLoop) {
    let mut net = el.network_options();
    net.set_tcp_nodelay(true);
    el.set_network_options(net);
}
