//! Ingest into PostgreSQL: the whole path (mTLS publish, the embedded broker, the ingest
//! writer's decode, dedup and delivery state, one transaction per batch, the PUBACK after the
//! commit) beside a plain binary `COPY` of the same rows into the same database in the same
//! run, and beside the same load into the sled backend.
//!
//! The cluster keeps PostgreSQL's durable defaults (`fsync`, `synchronous_commit` on): every
//! acknowledged record is on disk, as an installation needs. The reference reads back the rows
//! the server stored (under other device names, so they do not collide) and sends them with
//! one `COPY ... FROM STDIN (FORMAT binary)` in one transaction: the cheapest way PostgreSQL
//! takes these rows, without deduplication, delivery state or rollup marks.

use std::time::{Duration, Instant, SystemTime};

use tokio_postgres::NoTls;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

use crate::figure::{Figure, GroupResult, at_least};
use crate::pg::{DB, PgCluster};
use crate::procs;
use crate::setup::{self, Ctx, FleetServer, ServerSpec};

/// In-flight publishes per device, as the agents' default window.
const WINDOW: u16 = 64;

/// One row of `telemetry` as read back for the reference COPY.
type Row = (SystemTime, String, i64, Vec<Option<f32>>);

pub fn run(ctx: &Ctx) -> anyhow::Result<GroupResult> {
    let dir = ctx.dir("postgres")?;
    let certs = setup::make_certs(&dir)?;
    let devices = ctx.n(50, 20);
    let per_device = ctx.n(2_000, 1_000) as u64;
    let total = devices as u64 * per_device;
    let pg = PgCluster::start(&dir.join("pg"))?;
    let settings = format!(
        "fsync {}, synchronous_commit {}, shared_buffers {}",
        pg.setting("fsync"),
        pg.setting("synchronous_commit"),
        pg.setting("shared_buffers")
    );

    eprintln!("  fleet-server on PostgreSQL: {total} records from {devices} devices");
    let pg_dir = ctx.dir("postgres/server")?;
    let mut server = FleetServer::start(
        ctx,
        &pg_dir,
        &certs,
        &ServerSpec {
            storage: format!("backend = \"postgres\"\nurl = \"{}\"\n", pg.url(DB)),
            ..Default::default()
        },
    )?;
    let published = ctx.rt.block_on(crate::mqtt::publish_load(
        &certs,
        server.mqtt,
        "pg",
        devices,
        per_device,
        WINDOW,
    ))?;
    let pg_rate = total as f64 / published.elapsed.as_secs_f64();
    let h = ctx.rt.block_on(server.get(ctx, "/api/v1/health"))?;
    let n = |k: &str| h["ingest"][k].as_u64().unwrap_or(0);
    let (accepted, batches, refused) = (n("accepted"), n("writer_batches"), n("refused_batches"));
    let server_cmd = server.proc.cmdline.clone();
    server.proc.terminate(procs::TERM_GRACE);
    let stored: u64 = pg
        .psql(DB, "SELECT count(*) FROM telemetry WHERE device LIKE 'pg%'")?
        .parse()?;
    anyhow::ensure!(
        stored == total,
        "PostgreSQL holds {stored} of {total} rows (accepted {accepted}, refused batches {refused})"
    );

    eprintln!("  plain COPY of the same {total} rows into the same database");
    let copy_rate = ctx.rt.block_on(plain_copy(&pg))?;

    eprintln!("  fleet-server on sled: the same load");
    let sled_dir = ctx.dir("postgres/sled")?;
    let mut sled = FleetServer::start(ctx, &sled_dir, &certs, &ServerSpec::default())?;
    let published_sled = ctx.rt.block_on(crate::mqtt::publish_load(
        &certs, sled.mqtt, "sl", devices, per_device, WINDOW,
    ))?;
    let sled_rate = total as f64 / published_sled.elapsed.as_secs_f64();
    let sled_cmd = sled.proc.cmdline.clone();
    sled.proc.terminate(procs::TERM_GRACE);

    let ratio = pg_rate / copy_rate;
    let (ok, why) = at_least(ratio, 0.5, "x");
    Ok(GroupResult {
        key: "postgres".into(),
        title: "Ingest into PostgreSQL".into(),
        date: String::new(),
        machine: String::new(),
        quick: ctx.quick,
        command: String::new(),
        commands: vec![server_cmd, sled_cmd],
        figures: vec![
            Figure::new(
                "fleet-server ingest into PostgreSQL (embedded broker, PUBACK after the commit)",
                pg_rate,
                "records/s",
            )
            .vs(
                "plain binary COPY of the same rows into the same database",
                copy_rate,
            )
            .target(">= 0.5x plain COPY", ok, why)
            .note(format!(
                "{total} records from {devices} devices, {WINDOW} in flight each, {} bytes each \
                 on the wire; {batches} transactions (about {:.0} records each); {settings}",
                published.payload_bytes,
                accepted as f64 / batches.max(1) as f64
            )),
            Figure::new("fleet-server ingest into PostgreSQL", pg_rate, "records/s")
                .vs("the same load into the sled backend, same run", sled_rate)
                .note("sled: journal fsynced every 100 ms, PUBACK after the journal write"),
        ],
        notes: vec![
            "Ingest rates run from the first publish to the last PUBACK of the load generator \
             (every record acknowledged, hence committed), and the rows are then counted in \
             `telemetry`. The reference reads those rows back and sends all of them in one \
             `COPY telemetry FROM STDIN (FORMAT binary)` and one transaction over the same \
             loopback TCP: no dedup, no delivery state, no rollup marks, no MQTT."
                .into(),
            "Each record is a simulated Jetson's telemetry (about 20 metrics, stored as one row \
             of a real[] array); the database is a throwaway PostgreSQL 15 cluster on the same \
             machine with its durable defaults."
                .into(),
        ],
    })
}

/// Rows/s of one plain binary COPY of the server's rows (renamed) into `telemetry`.
async fn plain_copy(pg: &PgCluster) -> anyhow::Result<f64> {
    let (mut client, conn) = tokio_postgres::connect(&pg.url(DB), NoTls).await?;
    let conn = tokio::spawn(conn);
    let rows: Vec<Row> = client
        .query(
            "SELECT time, 'c' || device, seq, vals FROM telemetry WHERE device LIKE 'pg%'",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
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
    for (time, device, seq, vals) in &rows {
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
    drop(client);
    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
    Ok(rows.len() as f64 / secs)
}
