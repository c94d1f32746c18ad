//! The republisher's MQTT client, on its own thread and runtime: takes items from the queue,
//! renders and publishes them (QoS 1, best effort).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use common::codec::MAX_PAYLOAD;
use common::tls::ClientIdentity;
use rumqttc::{AsyncClient, Event as MqttEvent, Incoming, MqttOptions, QoS, TlsConfiguration, Transport};
use tokio::sync::oneshot;

use super::item::render;
use super::queue::{RepublishQueue, RepublishStats};

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
