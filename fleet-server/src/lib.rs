//! RVM Fleet server.
//!
//! # Layout
//! - [`policy`]: who may connect, publish and subscribe on the broker (pure)
//! - [`broker`]: the embedded rmqtt broker and its policy hooks
pub mod broker;
pub mod policy;
