//! Decoding device records (pure): a publish's topic and payload into an [`Ingested`] record,
//! or the reason it was refused (counted by reason, never retried). The envelope must name the
//! device of its topic.

use common::codec::{self, CodecError};
use common::command::CommandResult;
use common::topics::{Kind, Topic};
use common::{DeviceId, DeviceState, Envelope, Event, HealthReport};

use crate::messages::Ingested;

/// Decodes one publish into a fleet message, or says why not.
pub fn decode(topic: &str, payload: &[u8]) -> Result<Ingested, (&'static str, String)> {
    match Topic::parse(topic) {
        Ok(Topic::Device { device, kind }) if kind.is_from_agent() => decode_record(&device, kind, payload),
        Ok(_) => Err(("unexpected_topic", topic.to_string())),
        Err(e) => Err(("bad_topic", e.to_string())),
    }
}

/// Decodes a record that arrived on `device`'s topic of `kind`; the envelope must name the
/// same device.
pub fn decode_record(
    device: &DeviceId,
    kind: Kind,
    payload: &[u8],
) -> Result<Ingested, (&'static str, String)> {
    fn dec<T: serde::de::DeserializeOwned>(p: &[u8]) -> Result<Envelope<T>, (&'static str, String)> {
        codec::decode::<T>(p).map_err(|e: CodecError| (e.label(), e.to_string()))
    }
    let (msg, named) = match kind {
        Kind::Telemetry => {
            let e = codec::decode_telemetry(payload).map_err(|e| (e.label(), e.to_string()))?;
            let d = e.device.clone();
            (Ingested::Telemetry(Box::new(e)), d)
        }
        Kind::Health => {
            let e = dec::<HealthReport>(payload)?;
            let d = e.device.clone();
            (Ingested::Health(e), d)
        }
        Kind::Event => {
            let e = dec::<Event>(payload)?;
            let d = e.device.clone();
            (Ingested::Event(e), d)
        }
        Kind::State => {
            let e = dec::<DeviceState>(payload)?;
            let d = e.device.clone();
            (Ingested::State(e), d)
        }
        Kind::CmdResult => {
            let e = dec::<CommandResult>(payload)?;
            let d = e.device.clone();
            (Ingested::CmdResult(e), d)
        }
        Kind::Cmd => return Err(("unexpected_topic", format!("rvm/v1/{device}/cmd"))),
    };
    if &named != device {
        return Err((
            "device_mismatch",
            format!("topic names {device}, envelope names {named}"),
        ));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use common::{DeviceId, Telemetry, TelemetryV1};

    use super::*;

    #[test]
    fn random_bytes_are_rejected_with_a_reason() {
        let r = decode("rvm/v1/rvm1/telemetry", b"\xff\xfe garbage");
        assert!(matches!(r, Err((_, _))));
    }

    #[test]
    fn an_envelope_naming_another_device_is_refused() {
        let env = Envelope::new(DeviceId::new("rvm2").unwrap(), 1, 0, Telemetry::default());
        let bytes = codec::encode(&env).unwrap();
        assert_eq!(
            decode("rvm/v1/rvm1/telemetry", &bytes).err().map(|e| e.0),
            Some("device_mismatch")
        );
        assert!(decode("rvm/v1/rvm2/telemetry", &bytes).is_ok());
    }

    #[test]
    fn a_wrong_schema_is_refused_as_unknown_schema() {
        let mut env = Envelope::new(DeviceId::new("rvm1").unwrap(), 1, 0, Telemetry::default());
        env.schema = 7;
        let bytes = codec::encode(&env).unwrap();
        assert_eq!(
            decode("rvm/v1/rvm1/telemetry", &bytes).err().map(|e| e.0),
            Some("unknown_schema")
        );
    }

    #[test]
    fn an_old_agents_schema_1_telemetry_is_accepted_with_an_empty_detail() {
        let mut env = Envelope::new(
            DeviceId::new("rvm1").unwrap(),
            5,
            0,
            TelemetryV1 {
                uptime_s: 99,
                ..Default::default()
            },
        );
        env.schema = 1;
        let bytes = codec::encode(&env).unwrap();
        let Ok(Ingested::Telemetry(t)) = decode("rvm/v1/rvm1/telemetry", &bytes) else {
            panic!("a schema-1 telemetry is refused")
        };
        assert_eq!((t.schema, t.seq, t.body.uptime_s), (1, 5, 99));
        assert_eq!(t.body.detail, common::Detail::default());
        // the other bodies did not change between 1 and 2: an old agent's event still decodes
        let mut ev = Envelope::new(
            DeviceId::new("rvm1").unwrap(),
            6,
            0,
            common::Event {
                severity: common::Severity::Info,
                kind: common::EventKind::Note,
                message: "old".into(),
            },
        );
        ev.schema = 1;
        assert!(decode("rvm/v1/rvm1/event", &codec::encode(&ev).unwrap()).is_ok());
    }
}
