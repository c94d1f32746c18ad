//! Ingest into PostgreSQL beside a plain binary `COPY` of the same rows into the same
//! database in the same run, and beside the sled backend.
//!
//! Measured, on one throwaway PostgreSQL 15 cluster with its durable defaults (`fsync`,
//! `synchronous_commit` on: every acknowledged record is on disk):
//! - the whole path through the embedded broker (mTLS publish, the writer's decode, dedup and
//!   delivery state, one transaction per batch, the PUBACK after the commit);
//! - the whole path draining a queued Mosquitto session (the ingest client has up to
//!   Mosquitto's in-flight window outstanding, so the writer's batches are large);
//! - the store's part alone: the history writer (`RawWriter`, multi-row `INSERT ... ON
//!   CONFLICT DO NOTHING` with rollup marks) writing the same rows, 2,048 a transaction;
//! - the reference: the rows the server stored, read back (renamed, so they do not collide)
//!   and sent with one `COPY ... FROM STDIN (FORMAT binary)` in one transaction;
//! - the same embedded-broker load, and the same drain, into the sled backend.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use common::DeviceId;
use fleet_server::pg::history::{MetricIds, RawRow, RawWriter, WriteMode, millis};
use fleet_server::pg::partitions::Retention;
use fleet_server::pg::{Backend, StorageBackend, StorageBackendFile};
use tokio_postgres::NoTls;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

use crate::figure::{Figure, GroupResult, at_least};
use crate::pg::{DB, PgCluster};
use crate::procs::{self, Proc};
use crate::setup::{self, Ctx, FleetServer, ServerSpec};

/// In-flight publishes per device, as the agents' default window.
const WINDOW: u16 = 64;
/// Rows a transaction of the history writer alone (the ingest writer's largest batch).
const WRITER_BATCH: usize = 2_048;
/// How long a drain may take.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);

/// One row of `telemetry` as read back for the reference COPY.
type Row = (SystemTime, String, i64, Vec<Option<f32>>);

/// A whole-path run: records/s, the writer's transactions, the server's command line.
struct Ingest {
    rate: f64,
    batches: u64,
    cmd: String,
}

pub fn run(ctx: &Ctx) -> anyhow::Result<GroupResult> {
    let dir = ctx.dir("postgres")?;
    let certs = setup::make_certs(&dir)?;
    let devices = ctx.n(50, 20);
    let per_device = ctx.n(2_000, 1_000) as u64;
    let total = devices as u64 * per_device;
    let pg = PgCluster::start(&dir.join("pg"))?;
    let storage = format!("backend = \"postgres\"\nurl = \"{}\"\n", pg.url(DB));
    let settings = format!(
        "fsync {}, synchronous_commit {}, shared_buffers {}",
        pg.setting("fsync"),
        pg.setting("synchronous_commit"),
        pg.setting("shared_buffers")
    );
    let count = |prefix: &str| -> anyhow::Result<u64> {
        Ok(pg
            .psql(
                DB,
                &format!("SELECT count(*) FROM telemetry WHERE device LIKE '{prefix}%'"),
            )?
            .parse()?)
    };

    eprintln!("  fleet-server on PostgreSQL, embedded broker: {total} records from {devices} devices");
    let embedded = through_embedded(
        ctx,
        &ctx.dir("postgres/embedded")?,
        &certs,
        &storage,
        "pg",
        devices,
        per_device,
    )?;
    anyhow::ensure!(
        count("pg")? == total,
        "PostgreSQL holds {} of {total} rows",
        count("pg")?
    );

    eprintln!("  fleet-server on PostgreSQL draining a queued Mosquitto session");
    let (mosq, port, conf) = setup::mosquitto(&dir, &certs)?;
    let drained = drain(
        ctx,
        &ctx.dir("postgres/mosquitto")?,
        &certs,
        &storage,
        port,
        "mq",
        devices,
        per_device,
    )?;
    eprintln!("  fleet-server on sled draining the same queued load");
    let drained_sled = drain(
        ctx,
        &ctx.dir("postgres/mosquitto-sled")?,
        &certs,
        "",
        port,
        "ms",
        devices,
        per_device,
    )?;
    drop(mosq);
    anyhow::ensure!(
        count("mq")? == total,
        "PostgreSQL holds {} of {total} drained rows",
        count("mq")?
    );

    eprintln!("  plain COPY, and the history writer alone, of the same {total} rows");
    let rows = ctx.rt.block_on(read_rows(&pg))?;
    let copy_rate = ctx.rt.block_on(plain_copy(&pg, &rows))?;
    let writer_rate = ctx.rt.block_on(writer_alone(&pg, &rows))?;

    eprintln!("  fleet-server on sled: the embedded-broker load");
    let sled = through_embedded(
        ctx,
        &ctx.dir("postgres/sled")?,
        &certs,
        "",
        "sl",
        devices,
        per_device,
    )?;

    let per_tx = |i: &Ingest| total as f64 / i.batches.max(1) as f64;
    let target = |rate: f64| at_least(rate / copy_rate, 0.5, "x");
    let copy_ref = "plain binary COPY of the same rows into the same database";
    let (ok1, why1) = target(embedded.rate);
    let (ok2, why2) = target(drained.rate);
    let (ok3, why3) = target(writer_rate);
    let mut commands = vec![
        embedded.cmd.clone(),
        drained.cmd.clone(),
        sled.cmd.clone(),
        drained_sled.cmd.clone(),
    ];
    commands.extend(conf);
    Ok(GroupResult {
        key: "postgres".into(),
        title: "Ingest into PostgreSQL".into(),
        date: String::new(),
        machine: String::new(),
        quick: ctx.quick,
        command: String::new(),
        commands,
        figures: vec![
            Figure::new(
                "ingest into PostgreSQL through the embedded broker (PUBACK after the commit)",
                embedded.rate,
                "records/s",
            )
            .vs(copy_ref, copy_rate)
            .target(">= 0.5x plain COPY", ok1, why1)
            .note(format!(
                "{total} records from {devices} devices, {WINDOW} in flight each; {} \
                 transactions, {:.0} records each on average; {settings}",
                embedded.batches,
                per_tx(&embedded)
            )),
            Figure::new(
                "ingest into PostgreSQL draining a Mosquitto session (acknowledged after the commit)",
                drained.rate,
                "records/s",
            )
            .vs(copy_ref, copy_rate)
            .target(">= 0.5x plain COPY", ok2, why2)
            .note(format!(
                "the same records queued in Mosquitto first; {} transactions, {:.0} records each",
                drained.batches,
                per_tx(&drained)
            )),
            Figure::new(
                "the history writer alone (INSERT ... ON CONFLICT DO NOTHING, 2,048 rows a transaction)",
                writer_rate,
                "rows/s",
            )
            .vs(copy_ref, copy_rate)
            .target(">= 0.5x plain COPY", ok3, why3)
            .note("the store's part of ingest: rows and rollup marks, no decoding, no delivery state"),
            Figure::new(
                "ingest into PostgreSQL through the embedded broker",
                embedded.rate,
                "records/s",
            )
            .vs("the same load into the sled backend, same run", sled.rate)
            .note(format!(
                "sled: {} batches ({:.0} records each), journal fsynced every 100 ms",
                sled.batches,
                per_tx(&sled)
            )),
            Figure::new(
                "ingest into PostgreSQL draining a Mosquitto session",
                drained.rate,
                "records/s",
            )
            .vs(
                "the same drain into the sled backend, same run",
                drained_sled.rate,
            )
            .note(format!(
                "sled: {} batches ({:.0} records each)",
                drained_sled.batches,
                per_tx(&drained_sled)
            )),
        ],
        notes: vec![
            "Whole-path rates run from the first publish to the last PUBACK (embedded broker), or \
             from the server's first received record to the last accepted one (Mosquitto drain); \
             the rows are then counted in `telemetry`. The reference reads those rows back and \
             sends all of them in one `COPY telemetry FROM STDIN (FORMAT binary)` and one \
             transaction over the same loopback TCP: no dedup, no delivery state, no rollup \
             marks, no MQTT, no decoding."
                .into(),
            "Through the embedded broker a connection has one record in the server at a time \
             (rmqtt awaits each publish's hook before it reads the next), so a batch holds at \
             most one record per connected machine and every batch pays a commit (an fsync). \
             Draining Mosquitto, the ingest client has many records outstanding and the batches \
             fill up."
                .into(),
        ],
    })
}

/// The whole path: a server with `storage` and its embedded broker, the load
/// generator publishing `per_device` records from each of `devices` machines.
fn through_embedded(
    ctx: &Ctx,
    dir: &Path,
    certs: &common::pki::CertDir,
    storage: &str,
    prefix: &str,
    devices: usize,
    per_device: u64,
) -> anyhow::Result<Ingest> {
    let mut server = FleetServer::start(
        ctx,
        dir,
        certs,
        &ServerSpec {
            storage: storage.to_string(),
            ..Default::default()
        },
    )?;
    let published = ctx.rt.block_on(crate::mqtt::publish_load(
        certs,
        server.mqtt,
        prefix,
        devices,
        per_device,
        WINDOW,
    ))?;
    let batches = ctx.rt.block_on(writer_batches(ctx, server.http))?;
    let cmd = server.proc.cmdline.clone();
    server.proc.terminate(procs::TERM_GRACE);
    Ok(Ingest {
        rate: (devices as u64 * per_device) as f64 / published.elapsed.as_secs_f64(),
        batches,
        cmd,
    })
}

/// The server's persistent session on Mosquitto at `port` is made, the records are queued
/// while it is stopped, then it starts and drains them.
#[allow(clippy::too_many_arguments)] // one measurement of `run`, with its setup
fn drain(
    ctx: &Ctx,
    dir: &Path,
    certs: &common::pki::CertDir,
    storage: &str,
    port: u16,
    prefix: &str,
    devices: usize,
    per_device: u64,
) -> anyhow::Result<Ingest> {
    let mut server = FleetServer::start(
        ctx,
        dir,
        certs,
        &ServerSpec {
            external: Some(port),
            storage: storage.to_string(),
            ..Default::default()
        },
    )?;
    server.proc.terminate(procs::TERM_GRACE);
    ctx.rt.block_on(crate::mqtt::publish_load(
        certs, port, prefix, devices, per_device, WINDOW,
    ))?;
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
    let expected = devices as u64 * (per_device + 1);
    let started = Instant::now();
    let mut first: Option<(Instant, u64)> = None;
    let done = loop {
        anyhow::ensure!(
            server.proc.alive(),
            "fleet-server exited:\n{}",
            server.proc.log_tail()
        );
        if let Ok(h) = ctx.rt.block_on(server.get(ctx, "/api/v1/health")) {
            let n = |k: &str| h["ingest"][k].as_u64().unwrap_or(0);
            if n("received") > 0 && first.is_none() {
                first = Some((Instant::now(), n("received")));
            }
            if n("accepted") + n("duplicates") + n("rejected_total") >= expected {
                break Instant::now();
            }
        }
        anyhow::ensure!(
            started.elapsed() < DRAIN_TIMEOUT,
            "not drained after {DRAIN_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(25));
    };
    let (t1, at_first) = first.unwrap_or((started, 0));
    let batches = ctx.rt.block_on(writer_batches(ctx, server.http))?;
    let cmd = server.proc.cmdline.clone();
    server.proc.terminate(procs::TERM_GRACE);
    Ok(Ingest {
        rate: (expected - at_first) as f64 / (done - t1).as_secs_f64(),
        batches,
        cmd,
    })
}

/// `rvm_fleet_writer_batches_total` from the server's `/metrics`.
async fn writer_batches(ctx: &Ctx, http: u16) -> anyhow::Result<u64> {
    let text = ctx
        .http
        .get(format!("http://127.0.0.1:{http}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix("rvm_fleet_writer_batches_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .ok_or_else(|| anyhow::anyhow!("no rvm_fleet_writer_batches_total in /metrics"))
}

async fn connect(pg: &PgCluster) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(&pg.url(DB), NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// The rows the server stored from the embedded-broker run.
async fn read_rows(pg: &PgCluster) -> anyhow::Result<Vec<Row>> {
    let client = connect(pg).await?;
    Ok(client
        .query(
            "SELECT time, device, seq, vals FROM telemetry WHERE device LIKE 'pg%' ORDER BY device, seq",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect())
}

/// Rows/s of one plain binary COPY of `rows` (renamed `c...`) into `telemetry`.
async fn plain_copy(pg: &PgCluster, rows: &[Row]) -> anyhow::Result<f64> {
    let mut client = connect(pg).await?;
    let renamed: Vec<String> = rows.iter().map(|r| format!("c{}", r.1)).collect();
    let started = Instant::now();
    let tx = client.transaction().await?;
    let sink = tx
        .copy_in("COPY telemetry (time, device, seq, vals) FROM STDIN (FORMAT binary)")
        .await?;
    let w = BinaryCopyInWriter::new(
        sink,
        &[Type::TIMESTAMPTZ, Type::TEXT, Type::INT8, Type::FLOAT4_ARRAY],
    );
    let mut w = std::pin::pin!(w);
    for ((time, _, seq, vals), device) in rows.iter().zip(&renamed) {
        w.as_mut().write(&[time, device, seq, vals]).await?;
    }
    let copied = w.finish().await?;
    tx.commit().await?;
    let secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        copied == rows.len() as u64,
        "COPY took {copied} of {} rows",
        rows.len()
    );
    Ok(rows.len() as f64 / secs)
}

/// Rows/s of the server's history writer writing `rows` (renamed `w...`), [`WRITER_BATCH`] a
/// transaction, on a pool made as the server makes it.
async fn writer_alone(pg: &PgCluster, rows: &[Row]) -> anyhow::Result<f64> {
    let cfg = match (StorageBackendFile {
        backend: Backend::Postgres,
        url: Some(pg.url(DB)),
        ..Default::default()
    })
    .validate("storage")
    {
        Ok(StorageBackend::Postgres(c)) => *c,
        other => anyhow::bail!("storage: {other:?}"),
    };
    let now = common::time::now_ms();
    let started = fleet_server::pg::start(&cfg, &Retention::default(), now).await?;
    let mut client = started.pool.get().await?;
    let ids = MetricIds::load(&**client).await?;
    let raw: Vec<RawRow> = rows
        .iter()
        .map(|(time, device, seq, vals)| {
            let metrics = vals
                .iter()
                .enumerate()
                .filter_map(|(i, v)| Some((ids.name(i as i16 + 1)?.to_string(), (*v)?)))
                .collect();
            Ok(RawRow {
                device: DeviceId::new(format!("w{device}"))?,
                time_ms: millis(*time),
                seq: *seq as u64,
                metrics,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let mut w = RawWriter::new(ids, WriteMode::Insert, Retention::default().raw_ms);
    w.prepare(&client, &raw[..1]).await?;
    let t = Instant::now();
    let mut inserted = 0;
    for chunk in raw.chunks(WRITER_BATCH) {
        inserted += w.write(&mut client, chunk, now).await?.inserted;
    }
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        inserted == raw.len() as u64,
        "the writer stored {inserted} of {} rows",
        raw.len()
    );
    Ok(raw.len() as f64 / secs)
}
