//! The MQTT link: publishes buffered records over mutual TLS and deletes them on PUBACK.
//!
//! One task owns the rumqttc `EventLoop`. Its `poll()` future is pinned and never cancelled;
//! publishes are issued from the same task, only while connected. rumqttc drains its request
//! channel when a connection fails and drops that backlog on a clean-session CONNACK, so after
//! every CONNACK the `Outgoing::Publish(pkid)` events arrive exactly in the order of our
//! publishes since that CONNACK: [`inflight::InFlight`] maps them to buffer keys by that order,
//! and a PUBACK for a pkid deletes exactly the record that carried it.
//!
//! On every CONNACK: birth (retained), subscribe to our command topic, and resend from the
//! buffer head. Reconnects back off with jitter ([`backoff`]), reset by a CONNACK. Given
//! several brokers (the instances of one fleet), the link stays on one while it works and
//! moves to the next, round robin, when the connection is lost or an attempt fails
//! ([`brokers`]); the buffer contract does not change with a move.
//!
//! A [`task::LinkHandles::gate`] that reads `true` holds the link down: the connection is
//! dropped without a DISCONNECT (the broker publishes our last will, as when a shop's router
//! dies) and not retried until the gate reads `false`; records keep going to the buffer
//! meanwhile. The simulator's `offline` fault uses it; the agent runs without one.
//!
//! - [`brokers`]: the broker list and which broker comes next (pure)
//! - [`config`]: the `[mqtt]` section
//! - [`inflight`]: [`inflight::InFlight`], the pkid -> buffer key bookkeeping (pure)
//! - [`probe`]: the broker path: keep-alive round trip and DNS resolution of its name
//! - [`status`]: [`status::LinkStatus`], the link's counters and state, shared with health and
//!   the status page
//! - [`task`]: the link task that owns the rumqttc event loop
//! - [`actor`]: the link actor: owns the task, reports its liveness, stops it on shutdown

pub mod actor;
pub mod brokers;
pub mod config;
pub mod inflight;
pub mod probe;
pub mod status;
pub mod task;
