//! Alert latency: from a threshold-crossing record leaving a probe device to the webhook
//! receiving the alert, with 1,000 simulated machines at 1 Hz on the same server, for a rule
//! with `for_s = 0` and one with `for_s = 1` (measured beyond the `for`); beside the same
//! records' PUBACK (the embedded broker acknowledges once the record is stored). And the
//! evaluation cost per record beside the cost of decoding it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::codec;
use common::{DeviceId, Envelope, Telemetry};
use fleet_server::alerts::alert::DeviceInfo;
use fleet_server::alerts::engine::AlertEngine;
use fleet_server::alerts::rules::parse_rules;
use fleet_server::incidents::Correlator;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::broadcast;

use crate::figure::{Figure, GroupResult, at_most};
use crate::mqtt::Probe;
use crate::procs::percentile;
use crate::setup::{self, Ctx, FleetServer, ServerSpec};

const PROBES: usize = 10;
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(10);

/// Rules of the bench, in front of the shipped ones.
const BENCH_RULES: &str = r#"
[[rules]]
name = "bench_now"
metric = "app.bench_now"
op = ">"
threshold = 50
severity = "warning"
summary = "bench probe, for = 0"

[[rules]]
name = "bench_for"
metric = "app.bench_for"
op = ">"
threshold = 50
for_s = 1
severity = "warning"
summary = "bench probe, for = 1 s"
"#;

/// (when it arrived, device, rule, event)
type Hook = (Instant, String, String, String);

async fn webhook(tx: broadcast::Sender<Hook>) -> anyhow::Result<u16> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(s);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let h = h.trim_end();
                        if h.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; len];
                    if r.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let at = Instant::now();
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let s = |k: &str| v["labels"][k].as_str().unwrap_or("").to_string();
                    let _ = tx.send((
                        at,
                        s("device"),
                        s("rule"),
                        v["event"].as_str().unwrap_or("").into(),
                    ));
                    let ok = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                    if r.get_mut().write_all(ok.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(port)
}

async fn wait_hook(
    rx: &mut broadcast::Receiver<Hook>,
    device: &str,
    rule: &str,
    event: &str,
) -> Option<Instant> {
    tokio::time::timeout(NOTIFY_TIMEOUT, async {
        loop {
            match rx.recv().await {
                Ok((at, d, r, e)) if d == device && r == rule && e == event => return Some(at),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

#[derive(Default)]
struct Samples {
    now_ms: Vec<f64>,
    for_ms: Vec<f64>,
    /// From the first breaching record (the `for` included).
    for_total_ms: Vec<f64>,
    ack_ms: Vec<f64>,
    missed: usize,
}

pub fn run(ctx: &Ctx) -> anyhow::Result<GroupResult> {
    let dir = ctx.dir("alerts")?;
    let certs = setup::make_certs(&dir)?;
    let (tx, _) = broadcast::channel::<Hook>(65_536);
    let hook_port = ctx.rt.block_on(webhook(tx.clone()))?;
    let rules = format!("{BENCH_RULES}\n{}", fleet_server::config::BUILTIN_RULES);
    let notify = format!(
        "[notify.default]\nchannels = [\"hook\"]\nper_minute = 1000000\n[notify.channels.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{hook_port}/hook\"\nmax_retry_s = 5\n"
    );
    let server = FleetServer::start(
        ctx,
        &dir,
        &certs,
        &ServerSpec {
            rules: Some(rules),
            notify: Some(notify),
            ..Default::default()
        },
    )?;
    let machines = 1000;
    eprintln!("  starting {machines} simulated machines at 1 Hz");
    let sim = setup::spawn_simulator(
        ctx,
        &certs,
        server.mqtt,
        "sim",
        machines,
        0,
        1000,
        &dir.join("sim.log"),
        &[],
    )?;
    let took = setup::wait_online(ctx, &server, "sim", machines, Duration::from_secs(300))?;
    eprintln!("    all online after {:.0} s; settling", took.as_secs_f64());
    std::thread::sleep(ctx.secs(15, 5));
    let per_probe = ctx.n(30, 10);
    eprintln!("  {PROBES} probes x {per_probe} crossings per rule");
    let samples = ctx.rt.block_on(probe_all(&certs, server.mqtt, &tx, per_probe))?;
    let cmds = vec![server.proc.cmdline.clone(), sim.cmdline.clone()];
    drop(sim);
    drop(server);

    eprintln!("  evaluation cost per record");
    let (eval_ns, corr_ns, decode_ns) = eval_cost(ctx.n(200_000, 50_000))?;

    let ack50 = percentile(&samples.ack_ms, 50.0);
    let ack99 = percentile(&samples.ack_ms, 99.0);
    let now99 = percentile(&samples.now_ms, 99.0);
    let for99 = percentile(&samples.for_ms, 99.0);
    let mut figures = vec![
        Figure::new(
            "alert latency p50, for = 0",
            percentile(&samples.now_ms, 50.0),
            "ms",
        )
        .vs("PUBACK of the same record p50 (stored)", ack50),
        {
            let (ok, why) = at_most(now99, 250.0, "ms");
            Figure::new("alert latency p99, for = 0", now99, "ms")
                .vs("PUBACK of the same record p99 (stored)", ack99)
                .target("p99 < 250 ms", ok, why)
                .note(format!("{} crossings", samples.now_ms.len()))
        },
        Figure::new(
            "alert latency p50, for = 1 s (from the record completing the `for`)",
            percentile(&samples.for_ms, 50.0),
            "ms",
        )
        .vs("PUBACK p50", ack50),
        {
            let (ok, why) = at_most(for99, 250.0, "ms");
            Figure::new(
                "alert latency p99, for = 1 s (from the record completing the `for`)",
                for99,
                "ms",
            )
            .vs("PUBACK p99", ack99)
            .target("p99 < 250 ms", ok, why)
            .note(format!(
                "{} crossings; breaching records every 200 ms; from the first breaching \
                     record to the webhook: p50 {:.0} ms, p99 {:.0} ms (for = 1 s included)",
                samples.for_ms.len(),
                percentile(&samples.for_total_ms, 50.0),
                percentile(&samples.for_total_ms, 99.0)
            ))
        },
        Figure::new("rule evaluation per record (engine)", eval_ns, "ns")
            .vs("decoding the same record", decode_ns)
            .note("AlertEngine::observe with the shipped rules, 1,000 devices round robin"),
        Figure::new("rule evaluation + correlator per record", eval_ns + corr_ns, "ns")
            .vs("decoding the same record", decode_ns),
    ];
    if samples.missed > 0 {
        figures[1] = figures[1].clone().note(format!(
            "{} crossings got no notification within {NOTIFY_TIMEOUT:?}",
            samples.missed
        ));
    }
    Ok(GroupResult {
        key: "alerts".into(),
        title: "Alert latency".into(),
        date: String::new(),
        machine: String::new(),
        quick: ctx.quick,
        command: String::new(),
        commands: cmds,
        figures,
        notes: vec![format!(
            "{PROBES} probe devices (own mTLS connections, births, live records) publish beside \
             {machines} simulated machines at 1 Hz; the server has the shipped rules plus two \
             bench rules and one webhook channel to the bench's receiver. Latency runs from the \
             probe's publish call to the webhook request arriving, on the same clock."
        )],
    })
}

async fn probe_all(
    certs: &common::pki::CertDir,
    port: u16,
    tx: &broadcast::Sender<Hook>,
    per_probe: usize,
) -> anyhow::Result<Samples> {
    let samples = Arc::new(std::sync::Mutex::new(Samples::default()));
    let mut tasks = Vec::new();
    for i in 0..PROBES {
        let id = format!("probe{i:02}");
        let mut probe = Probe::connect(certs, port, &id, 100 + i as u64).await?;
        let mut rx = tx.subscribe();
        let samples = samples.clone();
        tasks.push(tokio::spawn(async move {
            // stagger the probes
            tokio::time::sleep(Duration::from_millis(97 * i as u64)).await;
            let quiet = [("bench_now", 10.0), ("bench_for", 10.0)];
            probe.publish(&quiet).await?;
            probe.wait_ack().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            for _ in 0..per_probe {
                // for = 0: one crossing record
                probe.drain_acks();
                let (_, _, at) = probe.publish(&[("bench_now", 90.0), ("bench_for", 10.0)]).await?;
                let acked = probe.wait_ack().await;
                let got = wait_hook(&mut rx, &id, "bench_now", "firing").await;
                {
                    let mut s = samples.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(a) = acked {
                        s.ack_ms.push((a - at).as_secs_f64() * 1e3);
                    }
                    match got {
                        Some(g) => s.now_ms.push((g - at).as_secs_f64() * 1e3),
                        None => s.missed += 1,
                    }
                }
                probe.publish(&quiet).await?;
                probe.wait_ack().await;
                let _ = wait_hook(&mut rx, &id, "bench_now", "resolved").await;
                tokio::time::sleep(Duration::from_millis(300)).await;

                // for = 1 s: breaching records every 200 ms until it fires
                let breach = [("bench_now", 10.0), ("bench_for", 90.0)];
                let (_, _, first) = probe.publish(&breach).await?;
                let mut sent = vec![first];
                let deadline = first + NOTIFY_TIMEOUT;
                let mut every = tokio::time::interval(Duration::from_millis(200));
                every.tick().await;
                let mut fired = None;
                while Instant::now() < deadline {
                    tokio::select! {
                        m = rx.recv() => match m {
                            Ok((at, d, r, e)) if d == id && r == "bench_for" && e == "firing" => {
                                fired = Some(at);
                                break;
                            }
                            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                            Err(_) => break,
                        },
                        _ = every.tick() => {
                            sent.push(probe.publish(&breach).await?.2);
                        }
                    }
                }
                {
                    let mut s = samples.lock().unwrap_or_else(|p| p.into_inner());
                    match fired {
                        // from the record that completed the `for`: the last one sent before
                        Some(g) => {
                            let trigger = sent.iter().rev().find(|t| **t <= g).copied().unwrap_or(first);
                            s.for_ms.push((g - trigger).as_secs_f64() * 1e3);
                            s.for_total_ms.push((g - first).as_secs_f64() * 1e3);
                        }
                        None => s.missed += 1,
                    }
                }
                probe.publish(&quiet).await?;
                let _ = wait_hook(&mut rx, &id, "bench_for", "resolved").await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let s = std::mem::take(&mut *samples.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(s)
}

/// ns per record: engine observe, correlator on_metrics, and decoding the record.
fn eval_cost(n: usize) -> anyhow::Result<(f64, f64, f64)> {
    let set = parse_rules(fleet_server::config::BUILTIN_RULES)?;
    let mut engine = AlertEngine::new(set.rules.clone());
    let mut corr = Correlator::new(set.correlate.clone());
    let devices: Vec<DeviceInfo> = (0..1000)
        .map(|i| DeviceId::new(format!("sim{i:04}")).map(DeviceInfo::new))
        .collect::<Result<_, _>>()?;
    let bodies: Vec<Telemetry> = (0..16).map(crate::mqtt::sample_telemetry).collect();
    let metrics: Vec<Vec<(String, f64)>> = bodies.iter().map(|b| b.flat_metrics()).collect();
    let t0 = common::time::now_ms();
    let start = Instant::now();
    for i in 0..n {
        let t = engine.observe(
            &devices[i % devices.len()],
            &metrics[i % metrics.len()],
            t0 + i as i64,
        );
        std::hint::black_box(t);
    }
    let eval = start.elapsed().as_secs_f64() * 1e9 / n as f64;
    let start = Instant::now();
    for i in 0..n {
        let c = corr.on_metrics(
            &devices[i % devices.len()],
            &metrics[i % metrics.len()],
            t0 + i as i64,
        );
        std::hint::black_box(c);
    }
    let corr_ns = start.elapsed().as_secs_f64() * 1e9 / n as f64;
    let encoded: Vec<Vec<u8>> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| codec::encode(&Envelope::new(devices[i].id.clone(), i as u64 + 1, t0, b)))
        .collect::<Result<_, _>>()?;
    let start = Instant::now();
    for i in 0..n {
        let e: Envelope<Telemetry> = codec::decode(&encoded[i % encoded.len()])?;
        std::hint::black_box(e);
    }
    let decode = start.elapsed().as_secs_f64() * 1e9 / n as f64;
    Ok((eval, corr_ns, decode))
}
