//! Remote commands on the agent: verification and at-most-once bookkeeping.
//!
//! A command runs only if its Ed25519 signature verifies with the server's public key, it
//! names this device, it has not expired, and its id was never seen before. The id is recorded
//! durably (written and flushed) *before* anything runs, so a crash or a replay can never run
//! it twice; a repeated id is answered with the stored result instead. What runs, and whether,
//! is then up to the recovery actor's gate (allow-list, interlock, rate limits).
//!
//! - [`config`]: the `[commands]` section (the server's signing key)
//! - [`verify`]: [`verify::check`] decides run, repeat or reject (pure apart from the store
//!   lookup); [`verify::result`] builds a bounded result
//! - [`executed`]: where executed command ids and their results are kept (sled, or memory for
//!   simulated machines)
//!
//! The recovery actor ([`crate::recovery::actor`]) handles a received command with these.

pub mod config;
pub mod executed;
pub mod verify;
