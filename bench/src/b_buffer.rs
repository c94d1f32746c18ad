//! Store-and-forward: append throughput through the buffer actor per flush policy beside raw
//! sled; the
//! drain of a one-hour backlog at 10 Hz (36,000 records) to the embedded broker and to
//! Mosquitto beside `mosquitto_pub` pushing as many records of the same size through the same
//! broker; the agent's RSS while it holds that backlog.

use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use common::codec;
use common::pki::CertDir;
use common::topics::Kind;
use common::{DeviceId, Envelope, Telemetry};
use rvm_agent::buffer::{Body, Buffer, BufferParts, Caps, FlushPolicy, SledStore, Store};

use crate::figure::{Figure, GroupResult, at_least, at_most, both};
use crate::procs::{self, Proc};
use crate::setup::{self, AgentSpec, Ctx, FleetServer, ServerSpec};

/// One hour at 10 Hz.
pub const BACKLOG: u64 = 36_000;
const DRAIN_DEVICE: &str = "drain0";
/// Collection all but stopped while draining: the backlog is what is measured.
const NO_COLLECTION_MS: u64 = 3_600_000;
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);

pub fn run(ctx: &Ctx) -> anyhow::Result<GroupResult> {
    let dir = ctx.dir("buffer")?;
    let certs = setup::make_certs(&dir)?;
    let body = crate::mqtt::sample_telemetry(3);
    let mut figures = Vec::new();
    let mut commands = Vec::new();
    let mut notes = Vec::new();

    // 1. append throughput
    let n_every = ctx.n(2_000, 500);
    let n_batched = ctx.n(60_000, 20_000);
    eprintln!("  append: every_record x{n_every}, batched x{n_batched}, and raw sled beside each");
    let every = append_rate(
        &dir.join("append-every"),
        &body,
        n_every,
        FlushPolicy::EveryRecord,
    )?;
    let every_ref = raw_sled_rate(&dir.join("raw-every"), &body, n_every, None)?;
    let batched = append_rate(
        &dir.join("append-batched"),
        &body,
        n_batched,
        FlushPolicy::Batched { ms: 500 },
    )?;
    let batched_ref = raw_sled_rate(&dir.join("raw-batched"), &body, n_batched, Some(500))?;
    figures.push(
        Figure::new("append, flush every_record", every, "records/s")
            .vs("raw sled insert + flush of the same bytes", every_ref)
            .note("through the buffer actor: an append message, then a flush request answered once the actor's flush (fsync) ran, per record"),
    );
    let (ok, why) = at_least(batched, 20_000.0, "records/s");
    figures.push(
        Figure::new("append, flush batched (500 ms)", batched, "records/s")
            .vs("raw sled insert of the same bytes", batched_ref)
            .target(">= 20,000 records/s", ok, why)
            .note("through the buffer actor: an append message per record, answered with its seq; the actor's timer flushes"),
    );

    // 2. the backlog, made once and copied for each run
    eprintln!("  pre-filling a sled buffer with {BACKLOG} records (one hour at 10 Hz)");
    let template = dir.join("backlog-template");
    let (record_bytes, disk_bytes) = prefill(&template, &body, BACKLOG)?;
    notes.push(format!(
        "Backlog records are simulated Jetson telemetry: {record_bytes} bytes each on the wire; \
         the 36,000-record sled buffer takes {:.1} MiB on disk.",
        disk_bytes as f64 / 1048576.0
    ));
    let lines = dir.join("reference-lines.txt");
    write_lines(&lines, BACKLOG, record_bytes)?;

    // 3. RSS while holding it (broker unreachable), beside the same agent with an empty buffer
    eprintln!("  agent RSS holding the backlog (broker unreachable)");
    let hold_for = ctx.secs(15, 8);
    let holding = hold_rss(ctx, &dir, &certs, Some(&template), hold_for)?;
    let empty = hold_rss(ctx, &dir, &certs, None, hold_for)?;
    let (ok, why) = at_most(holding.0 / 1024.0, 16.0, "MiB");
    figures.push(
        Figure::new("agent RSS holding 36,000 records", holding.0 / 1024.0, "MiB")
            .vs("the same agent with an empty buffer", empty.0 / 1024.0)
            .target("< 16 MiB", ok, why)
            .note(format!("max over {hold_for:?}; broker port closed")),
    );
    commands.push(holding.1);

    // 4. drain to the embedded broker
    eprintln!("  drain to the embedded broker");
    let sub = ctx.dir("buffer/embedded")?;
    let mut server = FleetServer::start(ctx, &sub, &certs, &ServerSpec::default())?;
    let d = drain(ctx, &sub, &certs, &template, &server)?;
    eprintln!("    {:.0} records/s; mosquitto_pub reference", d.rate);
    let reference = mosquitto_pub_rate(ctx, &sub, &certs, server.mqtt, &lines)?;
    figures.push(drain_figure("drain to the embedded broker", &d, &reference));
    commands.extend([
        server.proc.cmdline.clone(),
        d.cmdline.clone(),
        reference.1.clone(),
    ]);
    server.proc.terminate(procs::TERM_GRACE);

    // 5. drain to Mosquitto, the server ingesting from it
    eprintln!("  drain to Mosquitto");
    let sub = ctx.dir("buffer/mosquitto")?;
    let (_mosq, port, conf) = setup::mosquitto(&sub, &certs)?;
    let server = FleetServer::start(
        ctx,
        &sub,
        &certs,
        &ServerSpec {
            external: Some(port),
            ..Default::default()
        },
    )?;
    let d = drain(ctx, &sub, &certs, &template, &server)?;
    eprintln!("    {:.0} records/s; mosquitto_pub reference", d.rate);
    let reference = mosquitto_pub_rate(ctx, &sub, &certs, port, &lines)?;
    figures.push(drain_figure(
        "drain to Mosquitto (server ingesting from it)",
        &d,
        &reference,
    ));
    commands.extend([server.proc.cmdline.clone(), reference.1.clone()]);
    commands.extend(conf);
    figures.push(
        Figure::new("agent RSS while draining (max)", d.rss_max_kib / 1024.0, "MiB")
            .note("same agent as above, to Mosquitto"),
    );
    notes.push(
        "Drain time runs from the agent's start (sled open included) until the server's API shows \
         every seq of the backlog; the reference is `mosquitto_pub -l` publishing as many lines of \
         the same size at QoS 1 over mTLS as a device, through the same broker with the same \
         server attached (the server rejects those lines as malformed, which costs it less than \
         storing a record, so the reference is the faster side)."
            .into(),
    );
    Ok(GroupResult {
        key: "buffer".into(),
        title: "Store-and-forward".into(),
        date: String::new(),
        machine: String::new(),
        quick: ctx.quick,
        command: String::new(),
        commands,
        figures,
        notes,
    })
}

fn drain_figure(name: &str, d: &Drained, reference: &(f64, String)) -> Figure {
    let ratio = d.rate / reference.0;
    let (ok, why) = both(at_least(d.rate, 5_000.0, "records/s"), at_least(ratio, 0.5, "x"));
    Figure::new(name, d.rate, "records/s")
        .vs(
            "mosquitto_pub, same records count and size, same broker",
            reference.0,
        )
        .target(">= 5,000 records/s and >= 0.5x mosquitto_pub", ok, why)
        .note(format!(
            "{} records in {:.1} s; first record after {:.2} s; CPU while draining: agent {:.0} %, \
             fleet-server {:.0} % of one core",
            BACKLOG,
            d.elapsed.as_secs_f64(),
            d.first.as_secs_f64(),
            d.agent_cpu_pct,
            d.server_cpu_pct
        ))
}

/// A sled buffer as the agent opens it: sled's own flush thread runs beside the buffer
/// actor's flushes, at the period the agent gives it ([`rvm_agent::runtime::sled_thread_ms`]).
fn open_buffer(path: &Path, policy: FlushPolicy) -> anyhow::Result<Buffer<Box<dyn Store>>> {
    let store = SledStore::open(path, Some(rvm_agent::runtime::sled_thread_ms(policy)))?;
    Ok(Buffer::open(
        DeviceId::new(DRAIN_DEVICE)?,
        Box::new(store) as Box<dyn Store>,
        Caps::default(),
        policy,
    )?)
}

/// Records built ahead per batch, outside the clock (the collector makes a fresh one per tick;
/// building it is not the buffer's cost).
const BODIES_PER_BATCH: usize = 1_000;

/// Records per second through the buffer actor, as the collector, health and recovery append:
/// one `Append` message per record, awaited for its seq. With every_record each append then
/// waits for a flush request (answered once the actor's flush ran on its blocking thread);
/// with batched the actor's timer flushes, and one flush request ends the run.
fn append_rate(path: &Path, body: &Telemetry, n: usize, policy: FlushPolicy) -> anyhow::Result<f64> {
    let core = open_buffer(path, policy)?;
    let body = body.clone();
    actix::System::new().block_on(async move {
        let parts = BufferParts::new(core);
        let h = parts.handle();
        parts.start(std::sync::Arc::new(
            rvm_agent::supervise::liveness::Liveness::new(common::time::now_ms()),
        ));
        let t0 = common::time::now_ms();
        let mut elapsed = Duration::ZERO;
        let mut i = 0;
        while i < n {
            let batch: Vec<Body> = (0..BODIES_PER_BATCH.min(n - i))
                .map(|_| Body::Telemetry(body.clone()))
                .collect();
            let start = Instant::now();
            for b in batch {
                h.append(t0 + i as i64, b).await?;
                if policy == FlushPolicy::EveryRecord {
                    h.flush().await?;
                }
                i += 1;
            }
            elapsed += start.elapsed();
        }
        let start = Instant::now();
        h.flush().await?;
        elapsed += start.elapsed();
        h.close().await?;
        Ok(n as f64 / elapsed.as_secs_f64())
    })
}

/// The same bytes straight into sled, configured as the buffer's store; with batched, sled's
/// own flush thread every 500 ms stands for the buffer actor's timer.
fn raw_sled_rate(path: &Path, body: &Telemetry, n: usize, flush_ms: Option<u64>) -> anyhow::Result<f64> {
    let db = sled::Config::new()
        .path(path)
        .cache_capacity(rvm_agent::buffer::store::SLED_CACHE_BYTES)
        .flush_every_ms(flush_ms)
        .mode(sled::Mode::LowSpace)
        .open()?;
    let tree = db.open_tree("records")?;
    let dev = DeviceId::new(DRAIN_DEVICE)?;
    let t0 = common::time::now_ms();
    // encoded outside the clock: the buffer's encode is part of its cost, not sled's
    let values: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let mut v = vec![0u8];
            v.extend(
                codec::encode(&Envelope::new(dev.clone(), i as u64 + 1, t0 + i as i64, body))
                    .unwrap_or_default(),
            );
            v
        })
        .collect();
    let start = Instant::now();
    for (i, v) in values.iter().enumerate() {
        let mut k = [1u8; 9];
        k[1..].copy_from_slice(&(i as u64 + 1).to_be_bytes());
        tree.insert(k, v.as_slice())?;
        if flush_ms.is_none() {
            db.flush()?;
        }
    }
    db.flush()?;
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Fills a buffer for `drain0` with `n` records an hour old at 10 Hz: (record bytes, disk bytes).
fn prefill(path: &Path, body: &Telemetry, n: u64) -> anyhow::Result<(usize, u64)> {
    let mut b = open_buffer(path, FlushPolicy::Batched { ms: 500 })?;
    let t0 = common::time::now_ms() - n as i64 * 100;
    let mut size = 0;
    for i in 0..n {
        b.append(Kind::Telemetry, t0 + i as i64 * 100, body)?;
        if i == 0 {
            size = codec::encode(&Envelope::new(DeviceId::new(DRAIN_DEVICE)?, 1, t0, body))?.len();
        }
    }
    b.flush()?;
    let st = b.stats();
    anyhow::ensure!(st.records == n, "prefill stored {} of {n}", st.records);
    // a clean close releases the seq reservation; without it the agent that opens this buffer
    // reports the unused reserved seqs as lost by a crash (which the drain would wait out)
    b.close()?;
    Ok((size, st.disk_bytes))
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()?;
    anyhow::ensure!(st.success(), "cp -a {} {}", from.display(), to.display());
    Ok(())
}

/// `n` lines of `size` printable bytes (mosquitto_pub -l sends one message per line).
fn write_lines(path: &Path, n: u64, size: usize) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut line = vec![b'x'; size];
    for i in 0..n {
        for (j, c) in line.iter_mut().enumerate() {
            *c = b'a' + ((i as usize + j * 7) % 26) as u8;
        }
        f.write_all(&line)?;
        f.write_all(b"\n")?;
    }
    f.flush()?;
    Ok(())
}

/// Max RSS (KiB) of an agent holding `backlog` (or nothing) with its broker unreachable.
fn hold_rss(
    ctx: &Ctx,
    dir: &Path,
    certs: &CertDir,
    backlog: Option<&Path>,
    hold_for: Duration,
) -> anyhow::Result<(f64, String)> {
    let name = if backlog.is_some() {
        "hold-full"
    } else {
        "hold-empty"
    };
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub)?;
    let buf = sub.join("buffer");
    if let Some(b) = backlog {
        copy_dir(b, &buf)?;
    }
    let cfg = setup::agent_config(
        &sub,
        certs,
        &AgentSpec {
            id: DRAIN_DEVICE,
            port: procs::free_port()?,
            interval_ms: 1000,
            buffer_dir: &buf,
            http: None,
        },
    )?;
    let mut agent = setup::spawn_agent(ctx, &cfg, &sub.join("agent.log"))?;
    let u = procs::watch(&[agent.pid()], hold_for, Duration::from_millis(250), || {});
    anyhow::ensure!(agent.alive(), "agent exited:\n{}", agent.log_tail());
    let cmd = agent.cmdline.clone();
    agent.terminate(procs::TERM_GRACE);
    Ok((u[0].rss_max_kib as f64, cmd))
}

struct Drained {
    rate: f64,
    elapsed: Duration,
    first: Duration,
    rss_max_kib: f64,
    cmdline: String,
    /// CPU while draining, percent of one core.
    agent_cpu_pct: f64,
    server_cpu_pct: f64,
}

/// Starts an agent on a copy of the backlog against `server`'s broker and times it until the
/// server has every seq of the backlog.
fn drain(
    ctx: &Ctx,
    dir: &Path,
    certs: &CertDir,
    template: &Path,
    server: &FleetServer,
) -> anyhow::Result<Drained> {
    let buf = dir.join("agent-buffer");
    copy_dir(template, &buf)?;
    let cfg = setup::agent_config(
        dir,
        certs,
        &AgentSpec {
            id: DRAIN_DEVICE,
            port: server.mqtt,
            interval_ms: NO_COLLECTION_MS,
            buffer_dir: &buf,
            http: None,
        },
    )?;
    let server_cpu0 = procs::sample(server.proc.pid()).map_or(0, |s| s.cpu_ticks);
    let mut agent = setup::spawn_agent(ctx, &cfg, &dir.join("agent.log"))?;
    let start = Instant::now();
    let mut first = None;
    let mut agent_ticks = 0;
    let mut rss_max = 0u64;
    loop {
        if let Some(s) = procs::sample(agent.pid()) {
            rss_max = rss_max.max(s.rss_kib);
            agent_ticks = s.cpu_ticks;
        }
        let d = ctx.rt.block_on(setup::delivery(
            &ctx.http,
            server.http,
            &server.token,
            DRAIN_DEVICE,
        ));
        if let Some((received, last, missing, _)) = d {
            if received > 0 && first.is_none() {
                first = Some(start.elapsed());
            }
            if last >= BACKLOG && missing == 0 && received >= BACKLOG {
                break;
            }
        }
        anyhow::ensure!(
            start.elapsed() < DRAIN_TIMEOUT,
            "drain not done after {DRAIN_TIMEOUT:?}: {d:?}\n{}",
            agent.log_tail()
        );
        anyhow::ensure!(agent.alive(), "agent exited:\n{}", agent.log_tail());
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = start.elapsed();
    let hz = procs::clock_ticks_per_s() * elapsed.as_secs_f64() / 100.0;
    let server_cpu = procs::sample(server.proc.pid()).map_or(0, |s| s.cpu_ticks) - server_cpu0;
    let cmdline = agent.cmdline.clone();
    agent.terminate(procs::TERM_GRACE);
    Ok(Drained {
        rate: BACKLOG as f64 / elapsed.as_secs_f64(),
        elapsed,
        first: first.unwrap_or(elapsed),
        rss_max_kib: rss_max as f64,
        cmdline,
        agent_cpu_pct: agent_ticks as f64 / hz,
        server_cpu_pct: server_cpu as f64 / hz,
    })
}

/// `mosquitto_pub -l` of every line of `lines` at QoS 1 as device `pubref`: records/s.
fn mosquitto_pub_rate(
    ctx: &Ctx,
    dir: &Path,
    certs: &CertDir,
    port: u16,
    lines: &Path,
) -> anyhow::Result<(f64, String)> {
    let _ = ctx;
    let ident = setup::device_identity(certs, "pubref")?;
    let mut args = setup::mosq_tls_args(certs, &ident.cert, &ident.key, port);
    args.extend(
        ["-i", "pubref", "-q", "1", "-t", "rvm/v1/pubref/telemetry", "-l"]
            .iter()
            .map(|s| s.to_string()),
    );
    let start = Instant::now();
    let mut p = Proc::spawn_io(
        "mosquitto_pub",
        Path::new("/usr/bin/mosquitto_pub"),
        &args,
        &[],
        Some(lines),
        &dir.join("mosquitto_pub.log"),
    )?;
    let st = p.wait_exit(DRAIN_TIMEOUT);
    let elapsed = start.elapsed();
    anyhow::ensure!(
        st.is_some_and(|s| s.success()),
        "mosquitto_pub failed ({st:?}):\n{}",
        p.log_tail()
    );
    Ok((BACKLOG as f64 / elapsed.as_secs_f64(), p.cmdline.clone()))
}
