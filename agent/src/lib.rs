//! rvm-agent: runs on each Jetson; collects, checks, repairs and forwards.
//!
//! # Layout
//! - [`config`]: `agent.toml`, defaults and validation naming every bad key
//! - [`buffer`]: store-and-forward buffer (sled or memory), invariants in its module doc
//! - [`link`]: MQTT over mutual TLS; PUBACK bookkeeping ([`link::InFlight`])
//! - [`collect`]: metric sources (the machine through sysinfo; simulated Jetsons)
//! - [`health`]: `[health]` config, the pure health evaluator and publish tracker, the probes
//! - [`recovery`]: `[recovery]` config, escalation ladder, allow-list, rate limits, interlock,
//!   and the executors (system and recording)
//! - [`appmetrics`]: `[app]` config, the vision service's pushed and scraped metrics (push
//!   schema, Prometheus text parser, scrape client) and the store they land in
//! - [`exporter`]: Prometheus text of the telemetry and the agent's state; the status snapshot
//! - [`http`]: the local endpoint: `/metrics`, `/api/v1/status`, the app-metrics push, `/healthz`
//! - [`commands`]: remote command verification and the at-most-once record
//! - [`runtime`]: wiring one device's pipeline; the real agent and simulated ones share it
//! - [`supervise`]: restart decisions (pure) for the actor supervisor
//! - [`simulate`]: `rvm-agent simulate`, N virtual RVMs in one process
//! - [`agent`]: the real agent's start-up and shutdown
//! - [`sdnotify`]: `READY=1` and `WATCHDOG=1` to systemd (`Type=notify`, `WatchdogSec=`), std only

pub mod agent;
pub mod appmetrics;
pub mod buffer;
pub mod collect;
pub mod commands;
pub mod config;
pub mod health;
pub mod http;
pub mod link;
pub mod messages;
pub mod recovery;
pub mod runtime;
pub mod sdnotify;
pub mod shared;
pub mod sim;
pub mod supervise;
