//! The agent's local HTTP endpoint (default `127.0.0.1:9101`, `[http] listen`).
//!
//! - `GET /metrics`: Prometheus text ([`exporter::render`]) of the latest telemetry and
//!   the agent's state; the agent doubles as a Jetson-aware node exporter.
//! - `GET /api/v1/status`: the [`status::StatusSnapshot`] as JSON.
//! - `POST /api/v1/app-metrics`: the vision service pushes its figures
//!   ([`crate::appmetrics::push::parse_push`]); 200 `{"accepted": N, "ignored": M}` (`ignored`:
//!   not in the `[app] names` allow-list), 400 `{"error": "...", "field": "..."}` naming the
//!   bad field, 413 above [`server::PUSH_BODY_LIMIT`].
//! - `GET /healthz`: 200 `ok` while the server answers.
//!
//! The server listens only on the address it is given and has no authentication: keep it on
//! loopback. One worker thread (footprint, docs/architecture.md); it installs no signal handlers, the
//! agent's shutdown stops it through the [`actix_web::dev::ServerHandle`].
//!
//! The handlers call the [`server::HttpState`] closures on the worker thread: they must be
//! cheap and never block (read counters and clone the latest values, no IO).
//!
//! - [`config`]: the `[http]` section
//! - [`server`]: the actix-web server and its handlers
//! - [`exporter`]: the Prometheus text exposition (pure)
//! - [`status`]: [`status::StatusSnapshot`], what `/api/v1/status` shows

pub mod config;
pub mod exporter;
pub mod server;
pub mod status;
