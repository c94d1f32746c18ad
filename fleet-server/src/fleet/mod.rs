//! The fleet: every device's latest state, presence and delivery accounting.
//!
//! - [`state`]: per-device latest values, presence and metadata (pure)
//! - [`delivery`]: dedup by seq, gaps and reported drops (pure; the writer persists it)
//! - [`clock`]: where records of a device with a wrong clock go in history (pure)
//! - [`actor`]: the fleet actor: owns the state, feeds alerting, commands and the live view
//! - [`live`]: which device summaries changed since the last tick (pure)
//! - [`http`]: `GET /api/v1/devices[/{id}]`

pub mod actor;
pub mod clock;
pub mod delivery;
pub mod http;
pub mod live;
pub mod state;
