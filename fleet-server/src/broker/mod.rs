//! The MQTT broker: the embedded rmqtt broker (the default) and, for production on
//! Mosquitto, its configuration. Both enforce one access policy.
//!
//! - [`policy`]: who may connect, publish and subscribe (pure), from the certificate identity
//! - [`embedded`]: the embedded broker and the hooks that apply the policy and hand device
//!   records to the ingest writer before they are acknowledged; [`thread`]: its own thread
//!   and runtime
//! - [`sessions`]: device sessions as they start and end, and ending one (several instances)
//! - [`mosquitto`]: `fleetctl broker-config`: the Mosquitto configuration and ACL (the ACL
//!   rendered from [`policy`], so the two cannot drift)

pub mod embedded;
pub mod mosquitto;
pub mod policy;
pub mod sessions;
pub mod thread;
