//! The envelope every agent record travels in.
//!
//! `seq` is monotonic per device and persisted with the record on the agent, so it survives
//! restarts; the server drops duplicates by `(device, seq)`. Presence messages on the `state`
//! topic are not sequenced and carry `seq = 0`.

use serde::{Deserialize, Serialize};

use crate::ids::DeviceId;

/// Version of the envelope and body layout this build writes.
///
/// - 1: the first layout.
/// - 2: [`crate::Telemetry`] gained its last field, `detail` (issue 24); every other body is
///   unchanged. A schema-1 telemetry decodes as [`crate::TelemetryV1`] and converts.
///
/// A decoder accepts `MIN_SCHEMA_VERSION..=SCHEMA_VERSION` and refuses anything else.
pub const SCHEMA_VERSION: u16 = 2;

/// The oldest layout a decoder still accepts: agents in the field and records buffered
/// before an upgrade keep working.
pub const MIN_SCHEMA_VERSION: u16 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Always first: the decoder reads it before anything else.
    pub schema: u16,
    pub device: DeviceId,
    pub seq: u64,
    /// When the record was made on the device, ms since the Unix epoch.
    pub ts_ms: i64,
    pub body: T,
}

impl<T> Envelope<T> {
    pub fn new(device: DeviceId, seq: u64, ts_ms: i64, body: T) -> Self {
        Self {
            schema: SCHEMA_VERSION,
            device,
            seq,
            ts_ms,
            body,
        }
    }
}
