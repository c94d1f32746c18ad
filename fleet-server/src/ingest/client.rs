//! The ingest client: the server's MQTT session. With an external broker it subscribes to
//! every device topic and hands each record to the writer, acknowledging it only once stored;
//! with the embedded broker (whose hook feeds the writer) it listens for presence only.
//! Anything that is not a device topic is counted and acknowledged; ingest carries on.
//!
//! Supervised (`crate::server::children`): a restarted client connects with the same client id
//! and persistent session (the broker ends the old connection and keeps what the session
//! held), and feeds the same writer queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::codec;
use common::tls::ClientIdentity;
use common::topics::{self, Kind, Topic};
use rumqttc::{AsyncClient, Event as MqttEvent, Incoming, MqttOptions, QoS, TlsConfiguration, Transport};
use tokio::sync::{mpsc, oneshot};

use super::stats::IngestStats;
use super::writer::{IngestItem, WriteError};

/// Client id of the server's ingest session (see [`crate::broker::policy`] for the `:` rule).
pub const INGEST_CLIENT_ID: &str = "fleet-server:ingest";

#[derive(Clone)]
pub struct IngestConfig {
    pub host: String,
    pub port: u16,
    pub identity: ClientIdentity,
    /// Set once every subscription is acknowledged (opens the embedded broker to devices).
    pub ready: Arc<AtomicBool>,
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

/// A record waiting for the writer's answer before its acknowledgement.
type PendingAck = (oneshot::Receiver<Result<(), WriteError>>, rumqttc::Publish);

/// One task acknowledges every record, in the order they came, each once the writer stored it
/// (the writer answers in that order). A task per record did the same but parked thousands of
/// senders on the client's bounded request queue while the event loop sent one PUBACK per
/// turn, and each woken or dropped sender walked flume's list of waiting ones: 7 % of the
/// server's CPU while it drained a queued stream (`perf`, docs/benchmarks.md).
///
/// The queue is unbounded on purpose: the event loop must never wait for this task (whose
/// acknowledgements only the event loop can send), and it holds at most what the broker has
/// in flight to us (`set_inflight`) plus what the writer's queue holds.
fn spawn_acker(client: AsyncClient) -> mpsc::UnboundedSender<PendingAck> {
    let (tx, mut rx) = mpsc::unbounded_channel::<PendingAck>();
    tokio::spawn(async move {
        while let Some((stored, p)) = rx.recv().await {
            if let Ok(Ok(())) = stored.await
                && client.ack(&p).await.is_err()
            {
                // the event loop is gone: the client is restarting, and the broker sends
                // again what was not acknowledged
                return;
            }
        }
    });
    tx
}

/// Runs the ingest client until the writer's queue is gone. `tls` is `cfg.identity`'s.
pub async fn run(
    cfg: IngestConfig,
    tls: Arc<rustls::ClientConfig>,
    mode: IngestMode,
    writer: mpsc::Sender<IngestItem>,
    stats: Arc<IngestStats>,
) {
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
    let acks = spawn_acker(client.clone());
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
                if writer.send(item).await.is_err() {
                    tracing::error!("ingest writer stopped");
                    return;
                }
                // Acknowledge only once stored; an unacknowledged message comes back after a
                // reconnect.
                if acks.send((rx, p)).is_err() {
                    tracing::error!("ingest acknowledger stopped");
                    return;
                }
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
