//! What is republished and how (pure): an [`Item`] rendered to its `fleet/v1/...` topic, JSON
//! payload and retain flag.

use common::codec::{self, CodecError};
use common::command::CommandResult;
use common::topics::{Kind, Topic};
use common::{DeviceState, Envelope, Event, HealthReport, Telemetry};

use crate::alerts::alert::Transition;
use crate::incidents::incident::IncidentChange;
use crate::messages::Ingested;

/// One thing to republish.
#[derive(Debug, Clone)]
pub enum Item {
    Telemetry(Box<Envelope<Telemetry>>),
    /// A telemetry record as it arrived (bincode, already checked by the writer), decoded
    /// again on the republisher's thread: cloning the decoded record on the ingest writer's
    /// thread was 4 % of the server's CPU at 5,000 machines (issue 25), and that thread is
    /// the one every acknowledgement waits for.
    TelemetryWire(Vec<u8>),
    Health(Box<Envelope<HealthReport>>),
    Event(Box<Envelope<Event>>),
    State(Box<Envelope<DeviceState>>),
    CmdResult(Box<Envelope<CommandResult>>),
    Alert(Box<Transition>),
    Incident(Box<IncidentChange>),
}

impl Item {
    /// The record of an ingested message that arrived as `payload`: telemetry goes as its
    /// bytes ([`Item::TelemetryWire`]), the rest as a copy.
    pub fn from_wire(m: &Ingested, payload: Vec<u8>) -> Option<Item> {
        match m {
            Ingested::Telemetry(_) => Some(Item::TelemetryWire(payload)),
            _ => Item::from_ingested(m),
        }
    }

    /// The record of an ingested message; None for what is not a device record.
    pub fn from_ingested(m: &Ingested) -> Option<Item> {
        Some(match m {
            Ingested::Telemetry(e) => Item::Telemetry(e.clone()),
            Ingested::Health(e) => Item::Health(Box::new(e.clone())),
            Ingested::Event(e) => Item::Event(Box::new(e.clone())),
            Ingested::State(e) => Item::State(Box::new(e.clone())),
            Ingested::CmdResult(e) => Item::CmdResult(Box::new(e.clone())),
            _ => return None,
        })
    }
}

/// A message ready for the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// Topic, JSON payload and retain flag of an item (pure).
pub fn render(item: &Item) -> Result<Rendered, CodecError> {
    let device = |e_device: &common::DeviceId, kind: Kind, payload: Vec<u8>| Rendered {
        topic: Topic::fleet_device(e_device, kind),
        payload,
        retain: kind == Kind::State,
    };
    Ok(match item {
        Item::Telemetry(e) => device(&e.device, Kind::Telemetry, codec::to_json(e)?),
        Item::TelemetryWire(p) => {
            let e = codec::decode_telemetry(p)?;
            device(&e.device, Kind::Telemetry, codec::to_json(&e)?)
        }
        Item::Health(e) => device(&e.device, Kind::Health, codec::to_json(e)?),
        Item::Event(e) => device(&e.device, Kind::Event, codec::to_json(e)?),
        Item::State(e) => device(&e.device, Kind::State, codec::to_json(e)?),
        Item::CmdResult(e) => device(&e.device, Kind::CmdResult, codec::to_json(e)?),
        Item::Alert(t) => Rendered {
            topic: Topic::FleetAlerts.build(),
            payload: codec::to_json(t)?,
            retain: false,
        },
        Item::Incident(c) => Rendered {
            topic: Topic::FleetIncidents.build(),
            payload: codec::to_json(c)?,
            retain: false,
        },
    })
}

/// Why a bincode record could not be shown as JSON.
#[derive(Debug, thiserror::Error)]
pub enum RecordJsonError {
    /// Ingest refused it; `label` is its rejection counter's label (`device_mismatch`, ...).
    #[error("{label}: {detail}")]
    Decode { label: &'static str, detail: String },
    #[error("{0}: not a device record")]
    NotARecord(String),
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// The JSON a third party sees for a device record that arrived in bincode on `topic`
/// (`fleetctl sub` on `rvm/v1/...`): the same rendering as the republisher's.
pub fn record_json(topic: &str, payload: &[u8]) -> Result<Vec<u8>, RecordJsonError> {
    let msg = crate::ingest::decode::decode(topic, payload)
        .map_err(|(label, detail)| RecordJsonError::Decode { label, detail })?;
    let item = Item::from_ingested(&msg).ok_or_else(|| RecordJsonError::NotARecord(topic.into()))?;
    Ok(render(&item)?.payload)
}

#[cfg(test)]
mod tests {
    use common::DeviceId;

    use super::*;

    fn dev() -> DeviceId {
        DeviceId::new("rvm7").unwrap()
    }

    #[test]
    fn records_go_to_their_fleet_topic_as_json_and_only_state_is_retained() {
        let mut t = Telemetry::default();
        t.memory.total_bytes = 42;
        let env = Envelope::new(dev(), 5, 1000, t);
        let r = render(&Item::Telemetry(Box::new(env.clone()))).unwrap();
        let wire = Item::from_wire(
            &Ingested::Telemetry(Box::new(env.clone())),
            codec::encode(&env).unwrap(),
        );
        assert!(matches!(wire, Some(Item::TelemetryWire(_))));
        assert_eq!(
            render(&wire.unwrap()).unwrap(),
            r,
            "the same from the bytes it arrived in"
        );
        assert_eq!(r.topic, "fleet/v1/devices/rvm7/telemetry");
        assert!(!r.retain);
        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        assert_eq!(v["seq"], 5);
        assert_eq!(v["device"], "rvm7");
        assert_eq!(v["body"]["memory"]["total_bytes"], 42);

        let s = Envelope::new(
            dev(),
            0,
            1000,
            DeviceState::Offline(common::LastWill {
                boot_id: "b".into(),
                reason: "shutdown".into(),
            }),
        );
        let r = render(&Item::State(Box::new(s))).unwrap();
        assert_eq!(r.topic, "fleet/v1/devices/rvm7/state");
        assert!(r.retain);
        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        assert_eq!(v["body"]["offline"]["reason"], "shutdown");

        let res = CommandResult {
            command_id: "c1".into(),
            status: common::command::CommandStatus::Succeeded,
            output: String::new(),
            reason: None,
        };
        let r = render(&Item::CmdResult(Box::new(Envelope::new(dev(), 9, 1, res)))).unwrap();
        assert_eq!(r.topic, "fleet/v1/devices/rvm7/cmd/result");
    }

    #[test]
    fn a_bincode_record_becomes_the_same_json_as_the_republished_one() {
        let env = Envelope::new(dev(), 3, 77, HealthReport::default());
        let bytes = codec::encode(&env).unwrap();
        let json = record_json("rvm/v1/rvm7/health", &bytes).unwrap();
        assert_eq!(json, render(&Item::Health(Box::new(env))).unwrap().payload);
        assert!(
            record_json("rvm/v1/rvm8/health", &bytes)
                .unwrap_err()
                .to_string()
                .contains("device_mismatch")
        );
        assert!(record_json("rvm/v1/rvm7/health", b"junk").is_err());
    }
}
