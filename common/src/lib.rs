//! Wire protocol of RVM Fleet: everything that crosses the broker, and nothing else (the one
//! exception, [`addr`], is the broker address a provisioning bundle hands a machine: the
//! contract between `fleetctl` and the agent, parsed the same way on both sides).
//!
//! # Layout
//! - [`addr`]: `host:port` parsing (the broker address of the provisioning contract)
//! - [`ids`]: device id validation (`[A-Za-z0-9]{1,64}`), the server's and readers' identities
//! - [`body`]: the record bodies (telemetry, health, events, presence, command results)
//! - [`detail`]: schema 2's look inside a machine (processes, interfaces, TCP, block devices)
//! - [`envelope`]: the versioned envelope every record travels in
//! - [`command`]: signed recovery commands (Ed25519) and their verification
//! - [`codec`]: bincode (wire) and JSON (third parties) codecs with a decode size limit
//! - [`topics`]: building and parsing every MQTT topic; nothing else formats a topic
//! - [`tls`]: loading PEM files and building rustls configs; the crypto provider
//! - [`pki`] (feature `pki`): the fleet CA, server, device and reader certificates
//! - [`time`]: wall-clock milliseconds

pub mod addr;
pub mod body;
pub mod codec;
pub mod command;
pub mod detail;
pub mod envelope;
pub mod ids;
#[cfg(feature = "pki")]
pub mod pki;
pub mod time;
pub mod tls;
pub mod topics;

pub use body::*;
pub use detail::*;
pub use envelope::{Envelope, MIN_SCHEMA_VERSION, SCHEMA_VERSION};
pub use ids::DeviceId;
