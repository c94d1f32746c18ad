//! MQTT clients of the bench: a load generator of valid device records, and probe devices
//! that publish one record at a known instant.

use std::time::{Duration, Instant};

use common::codec;
use common::pki::CertDir;
use common::topics::{Kind, Topic};
use common::{Birth, DeviceId, DeviceState, Envelope, Reading, Telemetry};
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, QoS, TlsConfiguration, Transport};
use rvm_agent::collect::MetricSource;
use tokio::sync::mpsc;

use crate::setup::device_identity;

/// A simulated Jetson's telemetry record (what `rvm-sim simulate` sends).
pub fn sample_telemetry(seed: u64) -> Telemetry {
    let mut s = rvm_sim::source::SimSource::new(seed, 1000);
    let now = common::time::now_ms();
    s.collect(now - 1000);
    s.collect(now)
}

fn options(certs: &CertDir, id: &str, port: u16, inflight: u16) -> anyhow::Result<MqttOptions> {
    let ident = device_identity(certs, id)?;
    let tls = common::tls::client_config(&ident)?;
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_clean_session(true);
    o.set_inflight(inflight);
    let max = codec::MAX_PAYLOAD + 4096;
    o.set_max_packet_size(max, max);
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    Ok(o)
}

fn birth_payload(id: &DeviceId, now: i64) -> anyhow::Result<Vec<u8>> {
    let birth = Birth {
        boot_id: common::ids::random_hex(8),
        agent_version: "bench".into(),
        hostname: "bench".into(),
        site: Some("bench".into()),
        started_ms: now,
        simulated: true,
        ..Default::default()
    };
    Ok(codec::encode(&Envelope::new(
        id.clone(),
        0,
        now,
        DeviceState::Online(birth),
    ))?)
}

/// Polls until CONNACK.
async fn connect(el: &mut EventLoop) -> anyhow::Result<()> {
    let r = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(a)))
                    if a.code == rumqttc::ConnectReturnCode::Success =>
                {
                    return Ok(());
                }
                Ok(Event::Incoming(Incoming::ConnAck(a))) => anyhow::bail!("connack {:?}", a.code),
                Ok(_) => {}
                // refused or not up yet: rumqttc reconnects on the next poll
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })
    .await;
    r.map_err(|_| anyhow::anyhow!("no CONNACK within 30 s"))?
}

/// What a load generator run did.
#[derive(Debug, Clone)]
pub struct Published {
    pub elapsed: Duration,
    pub payload_bytes: usize,
}

/// `devices` devices (`{prefix}{i:04}`), each on its own mTLS connection, publish a birth
/// and then `per_device` telemetry records (seq 1..) at QoS 1, as fast as PUBACKs allow with
/// `window` in flight each. Returns when every record is acknowledged.
pub async fn publish_load(
    certs: &CertDir,
    port: u16,
    prefix: &str,
    devices: usize,
    per_device: u64,
    window: u16,
) -> anyhow::Result<Published> {
    publish_load_to(certs, &[(port, prefix.to_string(), devices)], per_device, window).await
}

/// [`publish_load`] to several brokers at once: each `(port, prefix, devices)` target gets
/// its own machines. Every connection is made before the clock starts, so `elapsed` runs from
/// the first publish to the last PUBACK of all targets together.
pub async fn publish_load_to(
    certs: &CertDir,
    targets: &[(u16, String, usize)],
    per_device: u64,
    window: u16,
) -> anyhow::Result<Published> {
    let body = sample_telemetry(7);
    let first = targets.first().map(|t| t.1.as_str()).unwrap_or("probe");
    let size = codec::encode(&Envelope::new(
        DeviceId::new(format!("{first}0000"))?,
        1,
        0,
        &body,
    ))?
    .len();
    // connect everyone first, so the clock measures publishing
    let mut conns = Vec::new();
    for (port, prefix, devices) in targets {
        for i in 0..*devices {
            let id = format!("{prefix}{i:04}");
            let (client, mut el) = AsyncClient::new(options(certs, &id, *port, window)?, window as usize * 2);
            connect(&mut el).await?;
            conns.push((DeviceId::new(id)?, client, el));
        }
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (id, client, mut el) in conns {
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let now = common::time::now_ms();
            let pubber = {
                let id = id.clone();
                let client = client.clone();
                tokio::spawn(async move {
                    client
                        .publish(
                            Topic::device(&id, Kind::State),
                            QoS::AtLeastOnce,
                            true,
                            birth_payload(&id, now)?,
                        )
                        .await?;
                    let topic = Topic::device(&id, Kind::Telemetry);
                    for seq in 1..=per_device {
                        let p = codec::encode(&Envelope::new(id.clone(), seq, now + seq as i64, &body))?;
                        client.publish(topic.clone(), QoS::AtLeastOnce, false, p).await?;
                    }
                    anyhow::Ok(())
                })
            };
            let mut acked = 0u64;
            while acked < per_device + 1 {
                match el.poll().await {
                    Ok(Event::Incoming(Incoming::PubAck(_))) => acked += 1,
                    Ok(_) => {}
                    Err(e) => anyhow::bail!("{id}: connection lost after {acked} acks: {e}"),
                }
            }
            pubber.await??;
            let _ = client.disconnect().await;
            let _ = tokio::time::timeout(Duration::from_secs(2), async { while el.poll().await.is_ok() {} })
                .await;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(Published {
        elapsed: start.elapsed(),
        payload_bytes: size,
    })
}

/// A probe device: one connection, a birth, then records published on demand.
pub struct Probe {
    pub id: DeviceId,
    client: AsyncClient,
    seq: u64,
    body: Telemetry,
    acks: mpsc::UnboundedReceiver<Instant>,
}

impl Probe {
    pub async fn connect(certs: &CertDir, port: u16, id: &str, seed: u64) -> anyhow::Result<Probe> {
        let (client, mut el) = AsyncClient::new(options(certs, id, port, 64)?, 128);
        connect(&mut el).await?;
        let did = DeviceId::new(id)?;
        let now = common::time::now_ms();
        client
            .publish(
                Topic::device(&did, Kind::State),
                QoS::AtLeastOnce,
                true,
                birth_payload(&did, now)?,
            )
            .await?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Incoming::PubAck(_))) => {
                        let _ = tx.send(Instant::now());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        let mut p = Probe {
            id: did,
            client,
            seq: 0,
            body: sample_telemetry(seed),
            acks: rx,
        };
        // the birth's
        p.wait_ack().await;
        Ok(p)
    }

    /// When the next PUBACK arrived (publish one record at a time to pair them up).
    pub async fn wait_ack(&mut self) -> Option<Instant> {
        tokio::time::timeout(Duration::from_secs(10), self.acks.recv())
            .await
            .ok()
            .flatten()
    }

    /// Forgets PUBACKs not waited for.
    pub fn drain_acks(&mut self) {
        while self.acks.try_recv().is_ok() {}
    }

    /// Publishes the next record with the given app metrics; its seq, its ts and when it left.
    pub async fn publish(&mut self, app: &[(&str, f64)]) -> anyhow::Result<(u64, i64, Instant)> {
        self.seq += 1;
        let mut body = self.body.clone();
        for (name, value) in app {
            body.app.retain(|r| r.name != *name);
            body.app.push(Reading {
                name: name.to_string(),
                value: *value,
            });
        }
        let ts = common::time::now_ms();
        let payload = codec::encode(&Envelope::new(self.id.clone(), self.seq, ts, &body))?;
        let at = Instant::now();
        self.client
            .publish(
                Topic::device(&self.id, Kind::Telemetry),
                QoS::AtLeastOnce,
                false,
                payload,
            )
            .await?;
        Ok((self.seq, ts, at))
    }
}
