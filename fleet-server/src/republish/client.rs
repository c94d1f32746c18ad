//! The republisher's MQTT client: takes items from the queue, renders and publishes them (QoS
//! 1, best effort). Supervised (`crate::server::children`) on a thread of its own; the queue
//! outlives it ([`RepublishInbox`]), so a restarted client goes on with what was queued.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::codec::MAX_PAYLOAD;
use common::tls::ClientIdentity;
use rumqttc::{AsyncClient, Event as MqttEvent, Incoming, MqttOptions, QoS, TlsConfiguration, Transport};

use super::item::render;
use super::queue::{RepublishQueue, RepublishStats};
use crate::supervise::inbox::Inbox;

/// Client id of the republisher's session (see [`crate::broker::policy`] for the `:` rule).
pub const REPUBLISH_CLIENT_ID: &str = "fleet-server:republish";
/// rumqttc's request channel between the publishing task and the event loop.
pub const MQTT_CHANNEL: usize = 1_024;
/// QoS 1 publishes not yet acknowledged by the broker.
pub const INFLIGHT: u16 = 512;
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);
pub const RECONNECT_MIN: Duration = Duration::from_millis(200);
pub const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// Where the republisher connects.
#[derive(Debug, Clone)]
pub struct RepublishConfig {
    pub host: String,
    pub port: u16,
    pub identity: ClientIdentity,
}

/// The republisher's queue as its generations take it.
pub type RepublishInbox = Inbox<RepublishQueue>;

/// The client: publishes what the queue holds until the queue's senders are all gone.
pub async fn run(
    cfg: RepublishConfig,
    tls: Arc<rustls::ClientConfig>,
    queue: &mut RepublishQueue,
    stats: Arc<RepublishStats>,
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
    let rx = &mut queue.0;
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
    }
    let _ = client.try_disconnect();
}
