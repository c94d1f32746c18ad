//! rvm-agent: runs on each Jetson; collects, checks, repairs and forwards.
//!
//! # Layout
//!
//! One folder per capability, holding its `[section]` config, its pure core, its IO and its
//! actor; a change to a capability stays inside its folder. Imports go one way: features use
//! [`shared`] and [`messages`], never [`config`], and no two modules import each other.
//!
//! - [`collect`]: `[collector]`/`[paths]`; the machine through sysinfo, the GPU backends
//!   (Jetson sysfs, tegrastats, NVML), worker threads, the collector actor
//! - [`health`]: `[health]`; the pure evaluator and publish tracker, camera and vision health
//!   (pure, with its baselines' store), the probes, the health actor
//! - [`recovery`]: `[recovery]`; escalation ladders (camera ladders too), allow-list, rate
//!   limits, interlock (pure), events, the executors (system and recording), temp cleaner,
//!   diagnostics, the recovery actor
//! - [`appmetrics`]: `[app]`; the vision service's pushed and scraped metrics (push schema,
//!   Prometheus text parser, scrape client) and the store they land in
//! - [`buffer`]: `[buffer]`; store-and-forward buffer (sled or memory), invariants in its
//!   module doc; the pure core, the buffer actor that owns it, and the handle the others use
//! - [`link`]: `[mqtt]`; MQTT over mutual TLS, PUBACK bookkeeping ([`link::inflight`]), the
//!   link actor
//! - [`commands`]: `[commands]`; remote command verification and the at-most-once record
//! - [`http`]: `[http]`; the local endpoint (`/metrics`, `/api/v1/status`, the app-metrics
//!   push, `/healthz`), the Prometheus exposition and the status snapshot
//! - [`supervise`]: `[supervisor]`; restart decisions (pure), liveness, the supervisor actor
//!
//! Leaf modules, which import no feature:
//! - [`shared`]: helpers several features use (config problems, `host:port`, unit and process
//!   names, the subprocess runner, HTTP/1.1 URL and status line)
//! - [`messages`]: messages passed between several actors
//!
//! Composition:
//! - [`config`]: `agent.toml`: composes the sections, validation naming every bad key
//! - [`runtime`]: wiring one device's pipeline; the real agent and simulated ones share it
//! - [`agent`]: the real agent's start-up and shutdown
//! - [`sdnotify`]: `READY=1` and `WATCHDOG=1` to systemd (`Type=notify`, `WatchdogSec=`), std
//!   only
//! - `faults` (test builds only: the `faults` feature): panics and hangs on demand, for the
//!   supervision tests
//!
//! The actors are thin shells: decisions live in the pure modules beside them; the actor does
//! the IO.
//!
//! ```text
//! AgentSupervisor   one_for_one, restart intensity, exits non-zero past it   supervise::actor
//!  |- buffer        appends, reads, acks; caps, thinning, flush timer (sled) buffer::actor
//!  |- link          buffer -> MQTT (mTLS), PUBACK -> buffer delete; commands link::actor
//!  |- collector     machine + GPU + app metrics -> buffer                    collect::actor
//!  |- recovery      ladder, allow-list, interlock -> executor -> events      recovery::actor
//!  `- health        probes + evaluation -> buffer, -> recovery               health::actor
//! ```

pub mod agent;
pub mod appmetrics;
pub mod buffer;
pub mod collect;
pub mod commands;
pub mod config;
#[cfg(any(test, feature = "faults"))]
pub mod faults;
pub mod health;
pub mod http;
pub mod link;
pub mod messages;
pub mod recovery;
pub mod runtime;
pub mod sdnotify;
pub mod shared;
pub mod supervise;
