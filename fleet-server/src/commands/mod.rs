//! Remote recovery commands: a durable per-device queue, signing, dispatch over MQTT,
//! re-sending on reconnect, TTL, results, rollouts across the fleet, and the audit log.
//!
//! - [`book`]: each command's lifecycle and the per-device queue (pure)
//! - [`rollout`]: one action to many machines at a rate, with an abort threshold (pure)
//! - [`actor`]: the commands actor: persists, publishes, audits
//! - [`store`]: its store access (the seam; sled's `commands` and `rollouts` trees), [`pg`]:
//!   the `commands` and `rollouts` tables
//! - [`outbox`]: several instances: claims of `command_outbox` by the instance holding the
//!   machine's session, and the reads that keep each instance's book current
//! - [`http`]: commands and rollouts routes

pub mod actor;
pub mod book;
pub mod config;
pub mod gate;
pub mod http;
pub mod outbox;
pub mod pg;
pub mod rollout;
pub mod store;

#[cfg(test)]
mod testkit;
