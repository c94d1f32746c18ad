//! Messages that cross features: handled by several actors, or made by one feature for another.
//!
//! - [`AttachLive`]: every actor that publishes on the live hub handles it;
//! - [`Ingested`]: a decoded, deduplicated device record. The ingest writer
//!   ([`crate::ingest::writer`]) makes it, the fleet actor handles it, and the republisher
//!   renders it ([`crate::republish`]). Here, not beside the fleet actor, so the republisher
//!   needs nothing of the actors that feed it.
//!
//! A leaf: it imports only the live hub.

use actix::Message;
use common::command::CommandResult;
use common::{Birth, DeviceId, DeviceState, Envelope, Event, HealthReport, Telemetry};

use crate::live::LiveHub;

/// Starts publishing this actor's changes on the live hub (`GET /api/v1/stream`).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct AttachLive(pub LiveHub);

/// A decoded, deduplicated record from a device (see [`crate::ingest::writer`]).
#[derive(Message)]
#[rtype(result = "()")]
pub enum Ingested {
    Telemetry(Box<Envelope<Telemetry>>),
    Health(Envelope<HealthReport>),
    Event(Envelope<Event>),
    State(Envelope<DeviceState>),
    CmdResult(Envelope<CommandResult>),
    /// Metadata remembered from before a restart.
    Restored(DeviceId, Box<Birth>),
}

impl Ingested {
    /// The device the message is about.
    pub fn device(&self) -> &DeviceId {
        match self {
            Ingested::Telemetry(e) => &e.device,
            Ingested::Health(e) => &e.device,
            Ingested::Event(e) => &e.device,
            Ingested::State(e) => &e.device,
            Ingested::CmdResult(e) => &e.device,
            Ingested::Restored(id, _) => id,
        }
    }

    /// (seq, timestamp) of a sequenced record; None for presence.
    pub fn seq_ts(&self) -> Option<(u64, i64)> {
        match self {
            Ingested::Telemetry(e) => Some((e.seq, e.ts_ms)),
            Ingested::Health(e) => Some((e.seq, e.ts_ms)),
            Ingested::Event(e) => Some((e.seq, e.ts_ms)),
            Ingested::CmdResult(e) => Some((e.seq, e.ts_ms)),
            Ingested::State(_) | Ingested::Restored(..) => None,
        }
    }
}

/// The latest readings of some machines, for a rollout's health gate
/// ([`crate::commands::gate`]): the commands actor asks, the fleet actor answers.
#[derive(Message)]
#[rtype(result = "Vec<MachineReading>")]
pub struct ReadMachines(pub Vec<DeviceId>);

/// One machine's latest record time, KPI counters and health (0 ok, 1 warn, 2 critical).
#[derive(Debug, Clone, PartialEq)]
pub struct MachineReading {
    pub device: DeviceId,
    pub ts_ms: i64,
    pub accepted_total: Option<f64>,
    pub rejected_total: Option<f64>,
    pub health: Option<u8>,
}
