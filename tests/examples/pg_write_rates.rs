//! Rows per second of the PostgreSQL history writer, both ways ([`WriteMode::Copy`]: binary
//! COPY into a staging table + INSERT ... ON CONFLICT; [`WriteMode::Insert`]: multi-row
//! INSERT ... ON CONFLICT), beside a plain binary COPY of the same rows straight into the
//! table (no dedup: the reference), on one throwaway cluster. Each run writes into a fresh
//! database, in transactions of `BATCH` rows like the ingest writer's batches.
//!
//! `cargo run --release -p rvm-fleet-tests --example pg_write_rates -- [ROWS] [BATCH]`
//! (defaults 200000 and 2048). Needs PostgreSQL 15 (`apt-get install postgresql`).

use std::time::Instant;

use common::DeviceId;
use fleet_server::pg::history::{MetricIds, RawRow, RawWriter, WriteMode, system_time};
use fleet_server::pg::partitions::{DAY_MS, Retention};
use fleet_server::pg::{Backend, PgConfig, StorageBackend, StorageBackendFile, pool};
use rvm_fleet_tests::postgres::PgCluster;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

/// Machines the rows are spread over.
const DEVICES: u64 = 100;

fn config(url: &str) -> PgConfig {
    let file = StorageBackendFile {
        backend: Backend::Postgres,
        url: Some(url.into()),
        ..Default::default()
    };
    match file.validate_with("storage", &|_| None) {
        Ok(StorageBackend::Postgres(c)) => *c,
        other => panic!("config: {other:?}"),
    }
}

/// `n` records of `DEVICES` machines, one a second each, ending at `now`, with the 20 metrics
/// a Jetson with a GPU and a vision service reports.
fn build_rows(n: u64, now: i64) -> Vec<RawRow> {
    let names = [
        "cpu.usage_pct",
        "load1",
        "memory.total_bytes",
        "memory.used_bytes",
        "memory.used_pct",
        "swap.used_pct",
        "disk.max_used_pct",
        "net.rx_bytes_per_s",
        "net.tx_bytes_per_s",
        "temp.max_c",
        "process.down",
        "gpu.load_pct",
        "gpu.freq_mhz",
        "gpu.temp_c",
        "power.total_mw",
        "power.rail.VDD_IN_mw",
        "power.rail.VDD_CPU_GPU_CV_mw",
        "app.fps",
        "app.inference_ms",
        "app.items_recognised",
    ];
    (0..n)
        .map(|i| {
            let seq = i / DEVICES + 1;
            RawRow {
                device: DeviceId::new(format!("rvm{:04}", i % DEVICES)).unwrap(),
                time_ms: now - (n / DEVICES) as i64 * 1000 + seq as i64 * 1000,
                seq,
                metrics: names
                    .iter()
                    .enumerate()
                    .map(|(k, name)| (name.to_string(), (i as f32) * 0.5 + k as f32))
                    .collect(),
            }
        })
        .collect()
}

async fn writer_rate(
    pg: &PgCluster,
    db: &str,
    mode: WriteMode,
    rows: &[RawRow],
    batch: usize,
    now: i64,
) -> f64 {
    let url = pg.create_database(db).unwrap();
    let started = pool::start(&config(&url), &Retention::default(), now)
        .await
        .unwrap();
    let mut client = started.pool.get().await.unwrap();
    let mut w = RawWriter::new(MetricIds::default(), mode, DAY_MS);
    w.prepare(&client, &rows[..1]).await.unwrap();
    let t = Instant::now();
    let mut inserted = 0;
    for chunk in rows.chunks(batch) {
        inserted += w.write(&mut client, chunk, now).await.unwrap().inserted;
    }
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(inserted, rows.len() as u64);
    rows.len() as f64 / secs
}

/// Plain binary COPY of the same rows into `telemetry` (no staging, no conflict handling).
async fn plain_copy_rate(pg: &PgCluster, rows: &[RawRow], batch: usize, now: i64) -> f64 {
    let url = pg.create_database("plain_copy").unwrap();
    let started = pool::start(&config(&url), &Retention::default(), now)
        .await
        .unwrap();
    let mut client = started.pool.get().await.unwrap();
    let mut ids = MetricIds::default();
    ids.ensure(&client, rows[0].metrics.iter().map(|(n, _)| n.as_str()))
        .await
        .unwrap();
    let t = Instant::now();
    for chunk in rows.chunks(batch) {
        let tx = client.transaction().await.unwrap();
        let sink = tx
            .copy_in("COPY telemetry (time, device, seq, vals) FROM STDIN (FORMAT binary)")
            .await
            .unwrap();
        let w = BinaryCopyInWriter::new(
            sink,
            &[Type::TIMESTAMPTZ, Type::TEXT, Type::INT8, Type::FLOAT4_ARRAY],
        );
        let mut w = std::pin::pin!(w);
        for r in chunk {
            let (vals, _) = ids.encode(r.metrics.iter().map(|(n, v)| (n.as_str(), *v)));
            let (time, device, seq) = (system_time(r.time_ms), r.device.as_str(), r.seq as i64);
            w.as_mut().write(&[&time, &device, &seq, &vals]).await.unwrap();
        }
        w.finish().await.unwrap();
        tx.commit().await.unwrap();
    }
    rows.len() as f64 / t.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map_or(200_000, |a| a.parse().expect("ROWS"));
    let batch: usize = args.next().map_or(2048, |a| a.parse().expect("BATCH"));
    let pg = PgCluster::start().unwrap();
    let now = common::time::now_ms();
    let rows = build_rows(n, now);
    println!("{n} rows of 20 metrics, {DEVICES} machines, {batch} rows a transaction");
    let plain = plain_copy_rate(&pg, &rows, batch, now).await;
    println!("plain binary COPY (reference, no dedup): {plain:>9.0} rows/s");
    for (db, mode) in [("copy", WriteMode::Copy), ("insert", WriteMode::Insert)] {
        let rate = writer_rate(&pg, db, mode, &rows, batch, now).await;
        println!(
            "writer {mode:?} (ON CONFLICT DO NOTHING):{rate:>9.0} rows/s ({:.2}x plain COPY)",
            rate / plain
        );
    }
}
