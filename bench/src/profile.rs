//! Fixed workloads of the hot paths, small enough to run under
//! `valgrind --tool=callgrind` (instruction counts do not care how busy the machine is):
//! `rvm-bench profile append|open|drain|writer|rollup|rollup-spelled --n N`.

use std::sync::Arc;
use std::time::Instant;

use actix::Actor;
use common::topics::Kind;
use common::{DeviceId, Envelope, codec};
use rvm_agent::buffer::{Buffer, Caps, FlushPolicy, Key, SledStore, Store};

fn open(path: &std::path::Path) -> anyhow::Result<Buffer<Box<dyn Store>>> {
    Ok(Buffer::open(
        DeviceId::new("prof0")?,
        Box::new(SledStore::open(path, Some(500))?) as Box<dyn Store>,
        Caps::default(),
        FlushPolicy::Batched { ms: 500 },
    )?)
}

fn fill(b: &mut Buffer<Box<dyn Store>>, n: usize) -> anyhow::Result<()> {
    let body = crate::mqtt::sample_telemetry(3);
    let t0 = common::time::now_ms();
    for i in 0..n {
        b.append(Kind::Telemetry, t0 + i as i64, &body)?;
    }
    b.flush()?;
    Ok(())
}

pub fn run(what: &str, n: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("buf");
    let start = Instant::now();
    match what {
        "append" => fill(&mut open(&path)?, n)?,
        "open" => {
            fill(&mut open(&path)?, n)?;
            let t = Instant::now();
            let b = open(&path)?;
            eprintln!("open of {n} records: {:?}; {:?}", t.elapsed(), b.stats());
        }
        "drain" => {
            fill(&mut open(&path)?, n)?;
            let mut b = open(&path)?;
            let t = Instant::now();
            // what the link does: a window of 64, then per PUBACK an ack and a refill of one
            let mut inflight: std::collections::VecDeque<Key> = b
                .next(Key::TELEMETRY, None, 64)?
                .into_iter()
                .map(|r| r.key)
                .collect();
            let mut cursor = inflight.back().map(|k| k.seq);
            while let Some(k) = inflight.pop_front() {
                b.ack(k)?;
                let _ = b.next(Key::PRIORITY, None, 1)?;
                for r in b.next(Key::TELEMETRY, cursor, 1)? {
                    cursor = Some(r.key.seq);
                    inflight.push_back(r.key);
                }
            }
            eprintln!("drain of {n} records: {:?}", t.elapsed());
        }
        "writer" => writer(dir.path(), n)?,
        "rollup" => rollup(dir.path(), n, false)?,
        "rollup-spelled" => rollup(dir.path(), n, true)?,
        other => {
            anyhow::bail!("profile {other:?}: one of append, open, drain, writer, rollup, rollup-spelled")
        }
    }
    eprintln!("{what} x{n}: {:?}", start.elapsed());
    Ok(())
}

/// n telemetry records from 50 devices through the server's ingest writer, in batches as
/// the embedded broker's hook hands them over.
fn writer(dir: &std::path::Path, n: usize) -> anyhow::Result<()> {
    let sys = actix::System::new();
    sys.block_on(async move {
        let fleet = fleet_server::fleet::actor::FleetActor::new(Default::default()).start();
        let stats = Arc::new(fleet_server::ingest::stats::IngestStats::default());
        let w = fleet_server::ingest::writer::start(dir, fleet, stats.clone())?;
        let body = crate::mqtt::sample_telemetry(5);
        let t0 = common::time::now_ms();
        let devices: Vec<DeviceId> = (0..50)
            .map(|i| DeviceId::new(format!("prof{i:02}")))
            .collect::<Result<_, _>>()?;
        let items: Vec<(DeviceId, Vec<u8>)> = (0..n)
            .map(|i| {
                let d = devices[i % devices.len()].clone();
                let seq = (i / devices.len()) as u64 + 1;
                let p =
                    codec::encode(&Envelope::new(d.clone(), seq, t0 + i as i64, &body)).unwrap_or_default();
                (d, p)
            })
            .collect();
        let t = Instant::now();
        let mut replies = Vec::with_capacity(n);
        for (device, payload) in items {
            let (tx, rx) = tokio::sync::oneshot::channel();
            w.tx.send(fleet_server::ingest::writer::IngestItem {
                device,
                kind: Kind::Telemetry,
                payload,
                reply: Some(tx),
            })
            .await
            .map_err(|_| anyhow::anyhow!("writer gone"))?;
            replies.push(rx);
        }
        for r in replies {
            let _ = r.await;
        }
        eprintln!(
            "writer: {n} records in {:?}; accepted {}",
            t.elapsed(),
            stats.accepted.load(std::sync::atomic::Ordering::Relaxed)
        );
        w.stop.store(true, std::sync::atomic::Ordering::Release);
        anyhow::Ok(())
    })
}

/// The history job's rollup pass over n raw rows (simulated Jetsons' flat metrics, 50
/// devices, one row per 5 s): `rollup` as the server does it, from the rows as stored (names
/// as ids); `rollup-spelled` the way it did before, each row read back with its names
/// spelled out, rolled up by name and written again.
fn rollup(dir: &std::path::Path, n: usize, spelled: bool) -> anyhow::Result<()> {
    use fleet_server::history::minute::{MINUTE_MS, minute_of};
    use fleet_server::history::rows::HistoryRow;
    use fleet_server::history::store::HistoryStore;
    use fleet_server::ingest::store::{IngestStore, WriteBatch};

    let store = fleet_server::store::FleetStore::open(dir)?;
    let body = crate::mqtt::sample_telemetry(5);
    let mut metrics: Vec<(String, f32)> = Vec::new();
    body.visit_metrics(|k, v| metrics.push((k.to_string(), v as f32)));
    let devices: Vec<DeviceId> = (0..50)
        .map(|i| DeviceId::new(format!("prof{i:02}")))
        .collect::<Result<_, _>>()?;
    let t0 = minute_of(common::time::now_ms()) - 60 * MINUTE_MS;
    let mut minutes = std::collections::BTreeSet::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut b = WriteBatch::default();
        for &i in chunk {
            let seq = (i / devices.len()) as u64;
            let ts_ms = t0 + seq as i64 * 5_000;
            minutes.insert((i % devices.len(), minute_of(ts_ms)));
            let mut m = metrics.clone();
            m[0].1 = (i % 100) as f32;
            b.history(
                &devices[i % devices.len()],
                HistoryRow {
                    ts_ms,
                    seq,
                    metrics: m,
                },
            );
        }
        store.apply(b, common::time::now_ms())?;
    }
    let t = Instant::now();
    let rolled = if spelled {
        for (d, minute) in &minutes {
            let rows = store.history(&devices[*d], *minute, minute + MINUTE_MS, usize::MAX)?;
            let r = fleet_server::history::rollup::rollup(*minute, &rows);
            store.put_rollup(&devices[*d], *minute, r.as_ref())?;
        }
        minutes.len()
    } else {
        HistoryStore::roll_up(&store, usize::MAX, None)?
    };
    eprintln!(
        "rollup{}: {rolled} minutes of {n} rows ({} metrics a row) in {:?}",
        if spelled { " (names spelled out)" } else { "" },
        metrics.len(),
        t.elapsed()
    );
    Ok(())
}
