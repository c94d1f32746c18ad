//! Server ingest ceiling: how many records per second the fleet server fully processes
//! (journal, decode, dedup, delivery state, history, fleet state, alerts) from a Mosquitto
//! broker, beside `mosquitto_sub` alone draining the same queued stream from the same broker;
//! and through the embedded broker.
//!
//! The stream is queued first: the server's persistent session (and mosquitto_sub's) exist,
//! both are offline, the load generator publishes every record, then each consumer connects
//! and drains its queue while the clock runs.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::figure::{Figure, GroupResult, at_least};
use crate::procs::{self, Proc};
use crate::setup::{self, Ctx, FleetServer, ServerSpec};

const INGEST_TIMEOUT: Duration = Duration::from_secs(600);
const SUB_CLIENT: &str = "fleet-server:benchsub";

pub fn run(ctx: &Ctx) -> anyhow::Result<GroupResult> {
    let dir = ctx.dir("ingest")?;
    let certs = setup::make_certs(&dir)?;
    let devices = ctx.n(50, 20);
    let per_device = ctx.n(2_000, 1_000) as u64;
    let total = devices as u64 * per_device;
    let (mosq, port, conf) = setup::mosquitto(&dir, &certs)?;

    eprintln!("  creating the persistent sessions (server ingest, mosquitto_sub)");
    let mut server = FleetServer::start(
        ctx,
        &dir,
        &certs,
        &ServerSpec {
            external: Some(port),
            ..Default::default()
        },
    )?;
    server.proc.terminate(procs::TERM_GRACE);
    let mut sub_args = setup::mosq_tls_args(&certs, &certs.server_cert(), &certs.server_key(), port);
    sub_args.extend(
        ["-c", "-i", SUB_CLIENT, "-q", "1", "-t", "rvm/v1/+/telemetry"]
            .iter()
            .map(|s| s.to_string()),
    );
    let mut first = sub_args.clone();
    first.extend(["-W".into(), "1".into()]);
    let mut p = Proc::spawn(
        "mosquitto_sub",
        Path::new("/usr/bin/mosquitto_sub"),
        &first,
        &[],
        &dir.join("mosquitto_sub-session.log"),
    )?;
    p.wait_exit(Duration::from_secs(10));

    eprintln!("  queueing {total} records from {devices} devices in Mosquitto");
    let published = ctx.rt.block_on(crate::mqtt::publish_load(
        &certs, port, "ing", devices, per_device, 64,
    ))?;
    let queued_rate = total as f64 / published.elapsed.as_secs_f64();

    eprintln!("  fleet-server drains its session");
    let started = Instant::now();
    server.proc = Proc::spawn(
        "fleet-server",
        &ctx.bin("fleet-server"),
        &[
            "run".into(),
            "--config".into(),
            server.config.display().to_string(),
        ],
        &[],
        &dir.join("fleet-server.log"),
    )?;
    // births come through the state topic besides the telemetry
    let expected = total + devices as u64;
    let mut t_first: Option<(Instant, u64)> = None;
    // the server's CPU (every thread, user + system) over the same span as its rate: on a
    // shared machine the rate moves with the neighbours, the CPU a record costs much less
    let pid = server.proc.pid();
    let mut ticks_first = None;
    let done = loop {
        anyhow::ensure!(
            server.proc.alive(),
            "fleet-server exited:\n{}",
            server.proc.log_tail()
        );
        if let Ok(h) = ctx.rt.block_on(server.get(ctx, "/api/v1/health")) {
            let i = &h["ingest"];
            let n = |k: &str| i[k].as_u64().unwrap_or(0);
            let received = n("received");
            if received > 0 && t_first.is_none() {
                t_first = Some((Instant::now(), received));
                ticks_first = procs::cpu_ticks(pid);
            }
            if n("accepted") + n("duplicates") + n("rejected_total") >= expected {
                break (Instant::now(), procs::cpu_ticks(pid));
            }
        }
        anyhow::ensure!(
            started.elapsed() < INGEST_TIMEOUT,
            "server ingest not done after {INGEST_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(25));
    };
    let (done, ticks_done) = done;
    let (t1, at_first) = t_first.unwrap_or((started, 0));
    let server_rate = (expected - at_first) as f64 / (done - t1).as_secs_f64();
    let cpu_per_record_us = match (ticks_first, ticks_done) {
        (Some(a), Some(b)) => {
            Some((b - a) as f64 / procs::clock_ticks_per_s() * 1e6 / (expected - at_first) as f64)
        }
        _ => None,
    };
    let cpu_share = cpu_per_record_us.map(|us| us * server_rate / 1e6);
    let health = ctx.rt.block_on(server.get(ctx, "/api/v1/health"))?;
    let rejected = health["ingest"]["rejected_total"].as_u64().unwrap_or(0);
    let server_cmd = server.proc.cmdline.clone();
    server.proc.terminate(procs::TERM_GRACE);

    eprintln!("  mosquitto_sub drains its session");
    let mut drain_args = sub_args.clone();
    drain_args.extend(["-C".into(), total.to_string()]);
    let start = Instant::now();
    let mut p = Proc::spawn(
        "mosquitto_sub",
        Path::new("/usr/bin/mosquitto_sub"),
        &drain_args,
        &[],
        Path::new("/dev/null"),
    )?;
    let st = p.wait_exit(INGEST_TIMEOUT);
    let sub_elapsed = start.elapsed();
    anyhow::ensure!(st.is_some_and(|s| s.success()), "mosquitto_sub: {st:?}");
    let sub_rate = total as f64 / sub_elapsed.as_secs_f64();
    let sub_cmd = p.cmdline.clone();
    drop(mosq);

    eprintln!("  through the embedded broker");
    let sub = ctx.dir("ingest/embedded")?;
    let embedded = FleetServer::start(ctx, &sub, &certs, &ServerSpec::default())?;
    let published = ctx.rt.block_on(crate::mqtt::publish_load(
        &certs,
        embedded.mqtt,
        "emb",
        devices,
        per_device,
        64,
    ))?;
    let emb_rate = total as f64 / published.elapsed.as_secs_f64();
    let h = ctx.rt.block_on(embedded.get(ctx, "/api/v1/health"))?;
    let accepted = h["ingest"]["accepted"].as_u64().unwrap_or(0);
    anyhow::ensure!(accepted >= total, "embedded: {accepted} of {total} accepted");

    let ratio = server_rate / sub_rate;
    let (ok, why) = at_least(ratio, 0.5, "x");
    let mut commands = vec![server_cmd, sub_cmd, embedded.proc.cmdline.clone()];
    commands.extend(conf);
    Ok(GroupResult {
        key: "ingest".into(),
        title: "Server ingest ceiling".into(),
        date: String::new(),
        machine: String::new(),
        quick: ctx.quick,
        command: String::new(),
        commands,
        figures: vec![
            Figure::new(
                "fleet-server ingest from Mosquitto (QoS 1, mTLS)",
                server_rate,
                "records/s",
            )
            .vs("mosquitto_sub draining the same queue", sub_rate)
            .target(">= 0.5x mosquitto_sub (issue 25)", ok, why)
            .note(format!(
                "{total} records from {devices} devices, {} bytes each; {rejected} rejected",
                published.payload_bytes
            )),
            Figure::new(
                "fleet-server ingest through the embedded broker",
                emb_rate,
                "records/s",
            )
            .vs(
                "the same load generator into Mosquitto (queued, nobody consuming)",
                queued_rate,
            )
            .note(format!(
                "{devices} devices x {per_device} records, 64 in flight each; a PUBACK only \
                     after the record is stored"
            )),
        ],
        notes: vec![
            format!(
                "The server's rate counts from its first received record to the moment every \
                 record is accepted (polled every 25 ms); mosquitto_sub's from its start to its \
                 exit after the last message (`-C {total}`), payloads to /dev/null. Mosquitto's \
                 in-flight window is {} per client for both.",
                setup::MOSQUITTO_INFLIGHT
            ),
            "Fully processed = journaled, decoded, deduplicated by (device, seq), delivery state \
             and history rows written to sled, fleet state and alert rules updated."
                .into(),
            match (cpu_per_record_us, cpu_share) {
                (Some(us), Some(cores)) => format!(
                    "The server's CPU over the same span (every thread, user + system, from \
                     /proc/PID/stat): {us:.0} µs a record, {cores:.2} cores busy on average. \
                     Less than the machine's cores busy means the server waits, not computes."
                ),
                _ => "The server's CPU could not be read from /proc.".into(),
            },
        ],
    })
}
