//! The link task: owns the rumqttc event loop, publishes from the buffer head while connected,
//! deletes on PUBACK, reconnects with backoff, and passes received commands on (see the module
//! doc of [`crate::link`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use backoff::ExponentialBackoff;
use backoff::backoff::Backoff as _;
use common::codec;
use common::command::SignedCommand;
use common::topics::{Kind, Topic};
use common::{DeviceId, DeviceState, Envelope, LastWill};
use rumqttc::{
    AsyncClient, Event, EventLoop, Incoming, MqttOptions, Outgoing, QoS, TlsConfiguration, Transport,
};
use tokio::sync::{Notify, mpsc, watch};

use super::brokers::{Broker, BrokerRing, LinkLoss};
use super::inflight::InFlight;
use super::probe::{DNS_EVERY, PingClock, dns_loop};
use super::status::LinkStatus;
use crate::buffer::{BufferHandle, CallError, Key, Record};

/// Longest wait between reconnect attempts.
pub const RECONNECT_MAX: Duration = Duration::from_secs(10);
/// First wait after a failure.
pub const RECONNECT_MIN: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct LinkConfig {
    pub device: DeviceId,
    /// The brokers, in failover order (at least one); the link starts on the device's own
    /// ([`super::brokers::start_index`]).
    pub brokers: Vec<Broker>,
    pub tls: Arc<rustls::ClientConfig>,
    pub client_id: String,
    pub keep_alive: Duration,
    /// Records published but not yet acknowledged, at most.
    pub window: usize,
    pub birth: common::Birth,
}

/// Handles given to the link task.
pub struct LinkHandles {
    pub buffer: BufferHandle,
    /// Notified when a record was appended (or the buffer actor restarted).
    pub wake: Arc<Notify>,
    pub status: Arc<LinkStatus>,
    /// Commands received on our command topic.
    pub commands: mpsc::UnboundedSender<SignedCommand>,
    /// Notified to stop: the link sends an `offline (shutdown)` state and disconnects.
    pub shutdown: Arc<Notify>,
    /// While it reads `true` the link is held down (a simulated network cut).
    pub gate: Option<watch::Receiver<bool>>,
}

/// Resolves when the gate changes; never without a gate (or once its sender is gone).
async fn gate_changed(gate: &mut Option<watch::Receiver<bool>>) {
    let open = match gate {
        Some(g) => g.changed().await.is_ok(),
        None => false,
    };
    if !open {
        std::future::pending::<()>().await
    }
}

fn gate_closed(gate: &Option<watch::Receiver<bool>>) -> bool {
    gate.as_ref().is_some_and(|g| *g.borrow())
}

fn state_payload(device: &DeviceId, state: &DeviceState) -> Vec<u8> {
    // seq 0: presence is not a buffered record (see common::envelope)
    codec::encode(&Envelope::new(device.clone(), 0, common::time::now_ms(), state)).unwrap_or_default()
}

/// The options of a connection to `broker`. rumqttc checks the broker's TLS certificate
/// against the host of these options, so each broker of the list is checked by its own name.
fn mqtt_options(cfg: &LinkConfig, broker: &Broker) -> MqttOptions {
    let mut opts = MqttOptions::new(cfg.client_id.clone(), broker.host.clone(), broker.port);
    opts.set_keep_alive(cfg.keep_alive);
    opts.set_clean_session(true);
    // rumqttc's own window must never be the limit: ours is.
    opts.set_inflight((cfg.window as u16).saturating_add(8));
    let max = codec::MAX_PAYLOAD + 4096;
    opts.set_max_packet_size(max, max);
    opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
        cfg.tls.clone(),
    )));
    let will = DeviceState::Offline(LastWill {
        boot_id: cfg.birth.boot_id.clone(),
        reason: "connection lost".into(),
    });
    opts.set_last_will(rumqttc::LastWill::new(
        Topic::device(&cfg.device, Kind::State),
        state_payload(&cfg.device, &will),
        QoS::AtLeastOnce,
        true,
    ));
    opts
}

/// Runs the link until `shutdown` is notified.
pub async fn run(cfg: LinkConfig, mut h: LinkHandles) {
    let mut ring = BrokerRing::for_device(cfg.device.as_str(), cfg.brokers.clone());
    note_broker(&h.status, ring.current());
    let (client, mut eventloop) = AsyncClient::new(mqtt_options(&cfg, ring.current()), cfg.window + 64);
    // PUBACKs and command results are small and awaited: no Nagle delay (about 40 ms with the
    // peer's delayed ACK).
    let mut net = eventloop.network_options();
    net.set_tcp_nodelay(true);
    eventloop.set_network_options(net);
    let mut inflight = InFlight::default();
    // acknowledged by the broker, not yet deleted from the buffer (it was down)
    let mut acks: Vec<Key> = Vec::new();
    let mut connected = false;
    let mut backoff = ExponentialBackoff {
        initial_interval: RECONNECT_MIN,
        max_interval: RECONNECT_MAX,
        randomization_factor: 0.5,
        multiplier: 2.0,
        max_elapsed_time: None,
        ..Default::default()
    };
    let cmd_topic = Topic::device(&cfg.device, Kind::Cmd);
    let mut gate = h.gate.take();
    let mut ping = PingClock::default();
    // the DNS check runs beside the event loop (a slow resolver must not hold it up) and
    // ends with it
    let _dns = AbortOnDrop(tokio::spawn(dns_loop(h.status.clone(), DNS_EVERY)));
    loop {
        if gate_closed(&gate) {
            // a network cut: drop the connection as a dead router would (no DISCONNECT, so the
            // broker sends our will); what was in flight stays in the buffer for the next session
            eventloop.clean();
            if connected {
                h.status.disconnects.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(device = %cfg.device, "link cut (held down by its gate)");
            }
            connected = false;
            h.status.connected.store(false, Ordering::Relaxed);
            h.status.in_flight.store(0, Ordering::Relaxed);
            note_error(&h.status, "network cut (simulated)".into());
            // the machine's own network, not the broker: it comes back to the same one
            ring.after(LinkLoss::NetworkCut);
            while gate_closed(&gate) {
                tokio::select! {
                    _ = gate_changed(&mut gate) => {}
                    _ = h.shutdown.notified() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {
                        h.status.last_loop_ms.store(common::time::now_ms(), Ordering::Relaxed);
                    }
                }
            }
            backoff.reset();
        }
        let event = {
            let poll = eventloop.poll();
            tokio::pin!(poll);
            loop {
                tokio::select! {
                    biased;
                    ev = &mut poll => break Some(Some(ev)),
                    _ = h.shutdown.notified() => break None,
                    _ = gate_changed(&mut gate) => if gate_closed(&gate) { break Some(None) },
                    _ = h.wake.notified(), if connected => {
                        fill_window(&cfg, &client, &h, &mut inflight, &mut acks).await;
                    }
                }
            }
        };
        let Some(event) = event else {
            goodbye(&cfg, &client, &mut eventloop).await;
            return;
        };
        // the gate closed: cut at the top of the loop
        let Some(event) = event else { continue };
        match event {
            Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                if ack.code != rumqttc::ConnectReturnCode::Success {
                    note_error(&h.status, format!("connection refused: {:?}", ack.code));
                    continue;
                }
                connected = true;
                backoff.reset();
                // Events rumqttc queued on the previous connection and had not handed out when
                // it broke (an `Outgoing::Publish` whose write failed, a PUBACK read together
                // with the close) are still in its queue, and come after this CONNACK. One
                // stale `Outgoing::Publish` would give the new session's pkids to the wrong
                // records, one step off: the birth's PUBACK (allowed at once) would delete the
                // first record, which the server may be refusing (PostgreSQL down). They
                // belong to a session that is gone: drop them (what they were about is resent
                // from the buffer's head).
                eventloop.state.events.clear();
                inflight.reset();
                h.status.connected.store(true, Ordering::Relaxed);
                h.status.connects.fetch_add(1, Ordering::Relaxed);
                tracing::info!(device = %cfg.device, broker = %ring.current(), "link up");
                // Subscribe before the birth: the broker handles our packets in order, so when
                // the server sees the birth (and sends pending commands) we already listen.
                let _ = client.try_subscribe(cmd_topic.clone(), QoS::AtLeastOnce);
                let birth = state_payload(&cfg.device, &DeviceState::Online(cfg.birth.clone()));
                if client
                    .try_publish(
                        Topic::device(&cfg.device, Kind::State),
                        QoS::AtLeastOnce,
                        true,
                        birth,
                    )
                    .is_ok()
                {
                    inflight.sent(None);
                }
                fill_window(&cfg, &client, &h, &mut inflight, &mut acks).await;
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => inflight.pkid_assigned(pkid),
            Ok(Event::Outgoing(Outgoing::PingReq)) => ping.sent(std::time::Instant::now()),
            Ok(Event::Incoming(Incoming::PingResp)) => {
                if let Some(rtt) = ping.answered(std::time::Instant::now()) {
                    h.status.note_ping(rtt);
                }
            }
            Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                if let Some(key) = inflight.acked(ack.pkid) {
                    acks.push(key);
                }
                fill_window(&cfg, &client, &h, &mut inflight, &mut acks).await;
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                if p.topic == cmd_topic {
                    match codec::decode_bare::<SignedCommand>(&p.payload) {
                        Ok(cmd) => {
                            let _ = h.commands.send(cmd);
                        }
                        Err(e) => tracing::warn!(error = %e, "undecodable command ignored"),
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                ping.lost();
                let loss = if connected {
                    h.status.disconnects.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(device = %cfg.device, broker = %ring.current(), error = %e, "link down");
                    LinkLoss::Lost
                } else {
                    LinkLoss::ConnectFailed
                };
                connected = false;
                h.status.connected.store(false, Ordering::Relaxed);
                note_error(&h.status, format!("{}: {e}", ring.current()));
                let from = ring.current().clone();
                if ring.after(loss) {
                    // the next attempt goes to the next broker (its own TLS name); what was in
                    // flight is resent from the buffer's head after its CONNACK
                    eventloop.mqtt_options = mqtt_options(&cfg, ring.current());
                    h.status.failovers.fetch_add(1, Ordering::Relaxed);
                    note_broker(&h.status, ring.current());
                    tracing::info!(device = %cfg.device, from = %from, to = %ring.current(), ?loss, "link failing over");
                }
                let wait = backoff.next_backoff().unwrap_or(RECONNECT_MAX);
                h.status
                    .last_loop_ms
                    .store(common::time::now_ms(), Ordering::Relaxed);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = h.shutdown.notified() => return,
                    _ = gate_changed(&mut gate) => {}
                }
            }
        }
        h.status.in_flight.store(inflight.len() as u64, Ordering::Relaxed);
        h.status
            .last_loop_ms
            .store(common::time::now_ms(), Ordering::Relaxed);
    }
}

/// Aborts a spawned task when the link ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn note_broker(status: &LinkStatus, b: &Broker) {
    if let Ok(mut g) = status.broker.lock() {
        *g = b.to_string();
    }
}

fn note_error(status: &LinkStatus, e: String) {
    if let Ok(mut g) = status.last_error.lock() {
        *g = Some(e);
    }
}

/// Deletes what the broker acknowledged, then publishes records from the buffer head until
/// the window is full, in one call to the buffer actor. Acknowledgements go first: a record
/// whose deletion is still pending would otherwise be sent again after a reconnect.
async fn fill_window(
    cfg: &LinkConfig,
    client: &AsyncClient,
    h: &LinkHandles,
    inflight: &mut InFlight,
    acks: &mut Vec<Key>,
) {
    let room = cfg.window.saturating_sub(inflight.len());
    if room == 0 && acks.is_empty() {
        return;
    }
    let after = [inflight.cursor(Key::PRIORITY), inflight.cursor(Key::TELEMETRY)];
    let batch: Vec<Record> = match h.buffer.drain(acks.clone(), after, room).await {
        Ok(b) => {
            h.status.acked.fetch_add(acks.len() as u64, Ordering::Relaxed);
            acks.clear();
            b
        }
        // the acknowledgements are kept, and sent again when the restarted buffer wakes the link
        Err(e) => {
            buffer_call_failed(&e, "buffer drain failed");
            return;
        }
    };
    for r in batch {
        let topic = Topic::device(&cfg.device, r.kind);
        if client
            .try_publish(topic, QoS::AtLeastOnce, false, r.payload)
            .is_err()
        {
            // channel full: the next PUBACK or wake tries again from the cursor
            return;
        }
        inflight.sent(Some(r.key));
        h.status.published.fetch_add(1, Ordering::Relaxed);
    }
}

/// A buffer being restarted is expected now and then (the supervisor logs it); anything else
/// is an error.
fn buffer_call_failed(e: &CallError, what: &str) {
    match e {
        CallError::Unavailable | CallError::Panicked(_) => tracing::warn!(error = %e, "{what}"),
        _ => tracing::error!(error = %e, "{what}"),
    }
}

/// Clean shutdown: say `offline (shutdown)` and disconnect, within a bound.
async fn goodbye(cfg: &LinkConfig, client: &AsyncClient, eventloop: &mut EventLoop) {
    let bye = DeviceState::Offline(LastWill {
        boot_id: cfg.birth.boot_id.clone(),
        reason: "shutdown".into(),
    });
    let _ = client.try_publish(
        Topic::device(&cfg.device, Kind::State),
        QoS::AtLeastOnce,
        true,
        state_payload(&cfg.device, &bye),
    );
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                _ => {}
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_config(brokers: Vec<Broker>) -> LinkConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        LinkConfig {
            device: DeviceId::new("rvm0042").unwrap(),
            brokers,
            tls: Arc::new(tls),
            client_id: "rvm0042".into(),
            keep_alive: Duration::from_secs(30),
            window: 64,
            birth: common::Birth::default(),
        }
    }

    /// rumqttc dials, and checks the TLS certificate against, the host of the options: each
    /// broker of the list gets options of its own.
    #[test]
    fn each_broker_is_dialled_and_checked_by_its_own_host() {
        let brokers = vec![
            Broker::new("a.fleet.example", 8883),
            Broker::new("10.0.0.7", 8884),
            Broker::new("::1", 8885),
        ];
        let cfg = build_config(brokers.clone());
        for b in &brokers {
            let opts = mqtt_options(&cfg, b);
            assert_eq!(opts.broker_address(), (b.host.clone(), b.port));
            assert_eq!(opts.client_id(), "rvm0042", "the same identity on every broker");
        }
    }
}
