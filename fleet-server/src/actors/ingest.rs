//! Ingest: the server's MQTT client. Subscribes to every device topic, decodes, checks that
//! the envelope names the device of its topic, and routes to the fleet actor. Anything that
//! does not decode is counted by reason and logged; ingest carries on.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::codec::{self, CodecError};
use common::command::CommandResult;
use common::tls::ClientIdentity;
use common::topics::{self, Kind, Topic};
use common::{DeviceState, Envelope, Event, HealthReport, Telemetry};
use rumqttc::{AsyncClient, Event as MqttEvent, Incoming, MqttOptions, QoS, TlsConfiguration, Transport};
use serde::Serialize;

use common::DeviceId;
use tokio::sync::oneshot;

use crate::messages::Ingested;
use crate::writer::{IngestItem, WriterHandle};

/// Client id of the server's ingest session (see [`crate::policy`] for the `:` rule).
pub const INGEST_CLIENT_ID: &str = "fleet-server:ingest";

#[derive(Debug, Default)]
pub struct IngestStats {
    pub connected: AtomicBool,
    pub received: AtomicU64,
    pub accepted: AtomicU64,
    pub duplicates: AtomicU64,
    pub rejected: Mutex<BTreeMap<String, u64>>,
    /// Batches the ingest writer has processed (`/metrics`).
    pub writer_batches: AtomicU64,
    /// Records waiting in the writer's queue after its last batch (`/metrics`).
    pub writer_queue: AtomicU64,
    /// Telemetry whose history row was not stored at its own timestamp: the device's clock
    /// was off ([`crate::fleet::clock`]).
    pub clock_moved: AtomicU64,
}

#[derive(Debug, Serialize)]
pub struct IngestSnapshot {
    pub connected: bool,
    pub received: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected_total: u64,
    pub rejected: BTreeMap<String, u64>,
    pub clock_moved: u64,
}

impl IngestStats {
    pub fn reject(&self, reason: &str, topic: &str, detail: &str) {
        if let Ok(mut m) = self.rejected.lock() {
            *m.entry(reason.to_string()).or_default() += 1;
        }
        tracing::warn!(reason, topic, detail, "record rejected");
    }

    pub fn snapshot(&self) -> IngestSnapshot {
        let rejected = self.rejected.lock().map(|m| m.clone()).unwrap_or_default();
        IngestSnapshot {
            connected: self.connected.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            rejected_total: rejected.values().sum(),
            rejected,
            clock_moved: self.clock_moved.load(Ordering::Relaxed),
        }
    }
}

pub struct IngestConfig {
    pub host: String,
    pub port: u16,
    pub identity: ClientIdentity,
    /// Set once every subscription is acknowledged (opens the embedded broker to devices).
    pub ready: Arc<AtomicBool>,
}

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
            let e = dec::<Telemetry>(payload)?;
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

/// How the server reaches device records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestMode {
    /// The embedded broker's hook hands records to the writer; this client only listens for
    /// presence (last wills are published by the broker itself, past the hook).
    Embedded,
    /// Everything through this client: persistent session, acknowledged after the writer stored it.
    External,
}

/// Runs the ingest client until the process ends.
pub async fn run(cfg: IngestConfig, mode: IngestMode, writer: WriterHandle, stats: Arc<IngestStats>) {
    let tls = match common::tls::client_config(&cfg.identity) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "ingest cannot load its TLS identity");
            return;
        }
    };
    let mut opts = MqttOptions::new(INGEST_CLIENT_ID, cfg.host.clone(), cfg.port);
    opts.set_keep_alive(Duration::from_secs(30));
    // A persistent session: an external broker keeps our QoS 1 messages while we restart.
    opts.set_clean_session(false);
    opts.set_manual_acks(true);
    let max = codec::MAX_PAYLOAD + 4096;
    opts.set_max_packet_size(max, max);
    opts.set_inflight(1024);
    opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    let (client, mut eventloop) = AsyncClient::new(opts, 1024);
    crate::mqtt_no_delay(&mut eventloop);
    let mut backoff = Duration::from_millis(200);
    let filters = match mode {
        IngestMode::Embedded => vec![topics::all_devices_filter(Kind::State)],
        IngestMode::External => topics::server_filters(),
    };
    let mut subacks = 0;
    loop {
        match eventloop.poll().await {
            Ok(MqttEvent::Incoming(Incoming::SubAck(ack))) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                {
                    tracing::error!("the broker refused an ingest subscription");
                    continue;
                }
                subacks += 1;
                if subacks == filters.len() {
                    cfg.ready.store(true, Ordering::Release);
                    tracing::info!("ingest subscribed");
                }
            }
            Ok(MqttEvent::Incoming(Incoming::ConnAck(_))) => {
                subacks = 0;
                backoff = Duration::from_millis(200);
                stats.connected.store(true, Ordering::Relaxed);
                tracing::info!(host = %cfg.host, port = cfg.port, "ingest connected");
                for f in filters.iter().cloned() {
                    if let Err(e) = client.subscribe(f, QoS::AtLeastOnce).await {
                        tracing::error!(error = %e, "ingest subscribe failed");
                    }
                }
            }
            Ok(MqttEvent::Incoming(Incoming::Publish(p))) => {
                let parsed = match Topic::parse(&p.topic) {
                    Ok(Topic::Device { device, kind }) if kind.is_from_agent() => Some((device, kind)),
                    _ => None,
                };
                let Some((device, kind)) = parsed else {
                    stats.reject("unexpected_topic", &p.topic, "not a device topic");
                    let _ = client.ack(&p).await;
                    continue;
                };
                let (tx, rx) = oneshot::channel();
                let item = IngestItem {
                    device,
                    kind,
                    payload: p.payload.to_vec(),
                    reply: Some(tx),
                };
                if writer.tx.send(item).await.is_err() {
                    tracing::error!("ingest writer stopped");
                    return;
                }
                // Acknowledge only once stored; an unacknowledged message comes back after a
                // reconnect.
                let client = client.clone();
                tokio::spawn(async move {
                    if let Ok(Ok(())) = rx.await {
                        let _ = client.ack(&p).await;
                    }
                });
            }
            Ok(_) => {}
            Err(e) => {
                stats.connected.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "ingest connection lost");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use common::DeviceId;

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
}
