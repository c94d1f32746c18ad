//! The fleet: every device's latest state, presence and delivery accounting.
//!
//! - [`state`]: per-device latest values, presence and metadata (pure)
//! - [`delivery`]: dedup by seq, gaps and reported drops (pure; the writer persists it)
//! - [`clock`]: where records of a device with a wrong clock go in history (pure)
//! - [`actor`]: the fleet actor: owns the state, feeds alerting, commands and the live view
//! - [`live`]: which device summaries changed since the last tick (pure)
//! - [`mirror`]: the fleet-wide view, machines served by other instances folded into the
//!   state (pure), [`mirror_pg`]: its reader (PostgreSQL, every second)
//! - [`http`]: `GET /api/v1/devices[/{id}]`
//! - [`store`]: presence for people and Grafana (the seam; nothing with sled), [`pg`]: the
//!   `presence` table

pub mod actor;
pub mod clock;
pub mod delivery;
pub mod http;
pub mod live;
pub mod mirror;
pub mod mirror_pg;
pub mod pg;
pub mod resend;
pub mod state;
pub mod store;
