//! Republisher: every new device record, alert transition and incident change as JSON on
//! `fleet/v1/...` for third-party subscribers (topics and schemas: `docs/topics.md`).
//!
//! | source | topic | retained |
//! | --- | --- | --- |
//! | the ingest writer, after a record is stored and found new | `fleet/v1/devices/{id}/{kind}` | `state` only |
//! | the alerts actor: every [`Transition`] | `fleet/v1/alerts` | no |
//! | the alerts actor: every [`IncidentChange`] | `fleet/v1/incidents` | no |
//!
//! Invariants:
//! - it never slows ingest or alerting: producers offer into a bounded queue
//!   ([`RepublishHandle::offer`] is a `try_send`); a full queue drops the message and counts
//!   it (`dropped_full`), and so does a payload past the wire limit (`dropped_too_large`), which
//!   a broker would refuse anyway;
//! - QoS 1 and best effort: its own MQTT client (server identity, client id
//!   [`REPUBLISH_CLIENT_ID`], clean session), so after a reconnect what was in flight is not
//!   sent again. The store and the REST API, not these topics, are the record of truth;
//! - device state is retained, so a new subscriber learns every machine's presence at once;
//! - it runs on its own thread and tokio runtime: encoding a burst never competes with the
//!   actix system (HTTP, fleet and alerts actors).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use common::codec::{self, CodecError, MAX_PAYLOAD};
use common::command::CommandResult;
use common::tls::ClientIdentity;
use common::topics::{Kind, Topic};
use common::{DeviceState, Envelope, Event, HealthReport, Telemetry};
use rumqttc::{AsyncClient, Event as MqttEvent, Incoming, MqttOptions, QoS, TlsConfiguration, Transport};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::alerts::Transition;
use crate::correlate::IncidentChange;
use crate::messages::Ingested;

/// Client id of the republisher's session (see [`crate::policy`] for the `:` rule).
pub const REPUBLISH_CLIENT_ID: &str = "fleet-server:republish";
/// Messages waiting to be encoded and published; past it, offers are dropped and counted.
pub const QUEUE: usize = 16_384;
/// rumqttc's request channel between the publishing task and the event loop.
pub const MQTT_CHANNEL: usize = 1_024;
/// QoS 1 publishes not yet acknowledged by the broker.
pub const INFLIGHT: u16 = 512;
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);
pub const RECONNECT_MIN: Duration = Duration::from_millis(200);
pub const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// One thing to republish.
#[derive(Debug, Clone)]
pub enum Item {
    Telemetry(Box<Envelope<Telemetry>>),
    Health(Box<Envelope<HealthReport>>),
    Event(Box<Envelope<Event>>),
    State(Box<Envelope<DeviceState>>),
    CmdResult(Box<Envelope<CommandResult>>),
    Alert(Box<Transition>),
    Incident(Box<IncidentChange>),
}

impl Item {
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

/// The JSON a third party sees for a device record that arrived in bincode on `topic`
/// (`fleetctl sub` on `rvm/v1/...`): the same rendering as the republisher's.
pub fn record_json(topic: &str, payload: &[u8]) -> Result<Vec<u8>, String> {
    let msg = crate::ingest::decode::decode(topic, payload)
        .map_err(|(label, detail)| format!("{label}: {detail}"))?;
    let item = Item::from_ingested(&msg).ok_or_else(|| format!("{topic}: not a device record"))?;
    render(&item).map(|r| r.payload).map_err(|e| e.to_string())
}

#[derive(Debug, Default)]
pub struct RepublishStats {
    pub connected: AtomicBool,
    pub offered: AtomicU64,
    pub published: AtomicU64,
    pub acked: AtomicU64,
    pub dropped_full: AtomicU64,
    pub dropped_too_large: AtomicU64,
    pub errors: AtomicU64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RepublishSnapshot {
    pub connected: bool,
    pub offered: u64,
    pub published: u64,
    pub acked: u64,
    pub dropped_full: u64,
    pub dropped_too_large: u64,
    pub errors: u64,
}

impl RepublishStats {
    pub fn snapshot(&self) -> RepublishSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RepublishSnapshot {
            connected: self.connected.load(Ordering::Relaxed),
            offered: l(&self.offered),
            published: l(&self.published),
            acked: l(&self.acked),
            dropped_full: l(&self.dropped_full),
            dropped_too_large: l(&self.dropped_too_large),
            errors: l(&self.errors),
        }
    }
}

/// What producers hold: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct RepublishHandle {
    tx: mpsc::Sender<Item>,
    stats: Arc<RepublishStats>,
}

/// The consuming end, handed to [`Republisher::start`].
pub struct RepublishQueue(mpsc::Receiver<Item>);

/// A bounded queue of `capacity` items.
pub fn channel(capacity: usize) -> (RepublishHandle, RepublishQueue) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        RepublishHandle {
            tx,
            stats: Arc::default(),
        },
        RepublishQueue(rx),
    )
}

impl RepublishHandle {
    /// Queues what `make` builds, or drops and counts it when the queue is full (`make` is
    /// not called then). Returns whether it was queued.
    pub fn offer(&self, make: impl FnOnce() -> Option<Item>) -> bool {
        if self.tx.capacity() == 0 {
            self.dropped();
            return false;
        }
        let Some(item) = make() else { return false };
        self.stats.offered.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(_) => {
                self.dropped();
                false
            }
        }
    }

    fn dropped(&self) {
        let n = self.stats.dropped_full.fetch_add(1, Ordering::Relaxed);
        // one line per 1,000 drops: a stalled broker must not flood the log
        if n.is_multiple_of(1_000) {
            tracing::warn!(dropped = n + 1, "republish queue full; message dropped");
        }
    }

    pub fn stats(&self) -> Arc<RepublishStats> {
        self.stats.clone()
    }
}

/// Where the republisher connects.
#[derive(Debug, Clone)]
pub struct RepublishConfig {
    pub host: String,
    pub port: u16,
    pub identity: ClientIdentity,
}

/// The running republisher: its thread, stopped on [`Republisher::stop`] or drop.
pub struct Republisher {
    pub stats: Arc<RepublishStats>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Republisher {
    /// Starts the MQTT client on its own thread; `stats` are the handle's.
    pub fn start(
        cfg: RepublishConfig,
        queue: RepublishQueue,
        stats: Arc<RepublishStats>,
    ) -> anyhow::Result<Republisher> {
        let tls = common::tls::client_config(&cfg.identity)
            .map_err(|e| anyhow::anyhow!("republisher TLS identity: {e}"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| anyhow::anyhow!("republisher runtime: {e}"))?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let t_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("republish".into())
            .spawn(move || rt.block_on(run(cfg, tls, queue, t_stats, stop_rx)))?;
        Ok(Republisher {
            stats,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Republisher {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn run(
    cfg: RepublishConfig,
    tls: Arc<rustls::ClientConfig>,
    queue: RepublishQueue,
    stats: Arc<RepublishStats>,
    stop: oneshot::Receiver<()>,
) {
    let mut opts = MqttOptions::new(REPUBLISH_CLIENT_ID, cfg.host.clone(), cfg.port);
    opts.set_keep_alive(KEEP_ALIVE);
    opts.set_clean_session(true);
    let max = MAX_PAYLOAD + 4096;
    opts.set_max_packet_size(max, max);
    opts.set_inflight(INFLIGHT);
    opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    let (client, mut eventloop) = AsyncClient::new(opts, MQTT_CHANNEL);
    crate::mqtt_no_delay(&mut eventloop);

    let poll_stats = stats.clone();
    let poller = async move {
        let mut backoff = RECONNECT_MIN;
        loop {
            match eventloop.poll().await {
                Ok(MqttEvent::Incoming(Incoming::ConnAck(_))) => {
                    backoff = RECONNECT_MIN;
                    poll_stats.connected.store(true, Ordering::Relaxed);
                    tracing::info!(host = %cfg.host, port = cfg.port, "republisher connected");
                }
                Ok(MqttEvent::Incoming(Incoming::PubAck(_))) => {
                    poll_stats.acked.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => {
                    poll_stats.connected.store(false, Ordering::Relaxed);
                    tracing::warn!(error = %e, "republisher connection lost");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RECONNECT_MAX);
                }
            }
        }
    };

    let pub_client = client.clone();
    let mut rx = queue.0;
    let publisher = async move {
        while let Some(item) = rx.recv().await {
            let r = match render(&item) {
                Ok(r) => r,
                Err(e) => {
                    stats.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "republish: cannot encode");
                    continue;
                }
            };
            if r.payload.len() > MAX_PAYLOAD {
                stats.dropped_too_large.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(topic = %r.topic, bytes = r.payload.len(), "republish: payload over the limit; dropped");
                continue;
            }
            // Waits while rumqttc's channel is full (broker slow or away): the queue in front
            // fills and producers drop, never wait.
            if pub_client
                .publish(r.topic, QoS::AtLeastOnce, r.retain, r.payload)
                .await
                .is_err()
            {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
            stats.published.fetch_add(1, Ordering::Relaxed);
        }
    };

    tokio::select! {
        _ = poller => {}
        _ = publisher => {}
        _ = stop => {
            let _ = client.try_disconnect();
        }
    }
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
        let r = render(&Item::Telemetry(Box::new(Envelope::new(dev(), 5, 1000, t)))).unwrap();
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
                .contains("device_mismatch")
        );
        assert!(record_json("rvm/v1/rvm7/health", b"junk").is_err());
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_building_the_item() {
        let (h, mut q) = channel(2);
        let item = || {
            Some(Item::Health(Box::new(Envelope::new(
                dev(),
                1,
                1,
                HealthReport::default(),
            ))))
        };
        assert!(h.offer(item));
        assert!(h.offer(item));
        let mut built = false;
        assert!(!h.offer(|| {
            built = true;
            item()
        }));
        assert!(!built);
        let s = h.stats().snapshot();
        assert_eq!((s.offered, s.dropped_full), (2, 1));
        assert!(q.0.try_recv().is_ok());
        assert!(h.offer(item));
    }
}
