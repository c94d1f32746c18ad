//! How sled 0.34.7's live heap grows with the keys it holds, at a fixed `cache_capacity`: the
//! experiment behind the server's heap growth in the soak (docs/benchmarks.md, "Soak
//! findings"). It writes history-like rows of 1,000 machines at one record per 5 s (24-byte
//! keys, 600-byte values, in time order, flushed every 20,000 rows as the writer does) and
//! prints the heap in use (glibc `mallinfo2`) every 100,000 rows.
//!
//! ```sh
//! GLIBC_TUNABLES=glibc.malloc.tcache_count=0 cargo run --release -p fleet-server \
//!     --example sled_heap_per_key -- ROWS CACHE_MIB MODE
//! ```
//! MODE `row`: one key per row (the store's layout before packing); `minute`: one key per
//! machine and minute, rows appended by a merge operator (the obvious alternative); `store`:
//! the server's own store (`FleetStore`), rows written as the writer does and sealed minutes
//! packed every minute of fleet time as the history job does; then every row is read back
//! (an export of everything) and the heap printed around it.

fn heap_mib() -> f64 {
    proc_mem::ProcessMemory::now().heap_in_use.unwrap_or(0) as f64 / 1048576.0
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || anyhow::anyhow!("usage: sled_heap_per_key ROWS CACHE_MIB row|minute|store");
    let rows: u64 = args.first().and_then(|a| a.parse().ok()).ok_or_else(usage)?;
    let cache_mib: u64 = args.get(1).and_then(|a| a.parse().ok()).ok_or_else(usage)?;
    let per_minute = match args.get(2).map(String::as_str) {
        Some("row") => false,
        Some("minute") => true,
        Some("store") => return packed_store(rows, cache_mib),
        _ => return Err(usage()),
    };
    let dir = std::env::temp_dir().join(format!("sled-heap-per-key-{}", std::process::id()));
    let db = sled::Config::new()
        .path(&dir)
        .cache_capacity(cache_mib << 20)
        .flush_every_ms(None)
        .open()?;
    let tree = db.open_tree("history")?;
    tree.set_merge_operator(|_k: &[u8], old: Option<&[u8]>, new: &[u8]| {
        let mut v = old.map(<[u8]>::to_vec).unwrap_or_default();
        v.extend_from_slice(new);
        Some(v)
    });
    let value = vec![7u8; 600];
    let start = std::time::Instant::now();
    let h0 = heap_mib();
    println!("rows,heap_in_use_mib,keys,seconds");
    let mut n = 0u64;
    // 1,000 machines, one record per 5 s each: 5 ms of fleet time per row
    let mut ts = 0i64;
    while n < rows {
        let mut batch = sled::Batch::default();
        for _ in 0..200 {
            let mut k = format!("fleet{:04}", n % 1000).into_bytes();
            if per_minute {
                k.extend_from_slice(&(ts / 60_000).to_be_bytes());
                tree.merge(k, value.as_slice())?;
            } else {
                k.extend_from_slice(&ts.to_be_bytes());
                k.extend_from_slice(&(n / 1000).to_be_bytes());
                batch.insert(k, value.as_slice());
            }
            n += 1;
            ts += 5;
        }
        tree.apply_batch(batch)?;
        if n.is_multiple_of(20_000) {
            db.flush()?;
        }
        if n.is_multiple_of(100_000) {
            // counted, not read back: a scan would pull pages into the cache
            let keys = if per_minute {
                1000 * (ts / 60_000 + 1) as u64
            } else {
                n
            };
            println!(
                "{n},{:.1},{keys},{:.1}",
                heap_mib(),
                start.elapsed().as_secs_f64()
            );
        }
    }
    eprintln!("heap at start {h0:.1} MiB");
    drop(tree);
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The `store` mode: the same load through `FleetStore`, packing as the history job does.
fn packed_store(rows: u64, cache_mib: u64) -> anyhow::Result<()> {
    use fleet_server::history::job::SEAL_AFTER_MS;
    use fleet_server::history::rows::HistoryRow;
    use fleet_server::ingest::store::{IngestStore, WriteBatch};
    use fleet_server::store::FleetStore;
    let dir = std::env::temp_dir().join(format!("sled-heap-per-key-{}", std::process::id()));
    let store = FleetStore::open_with(&dir, cache_mib << 20)?;
    let devices: Vec<common::DeviceId> = (0..1000)
        .map(|i| common::DeviceId::new(format!("fleet{i:04}")))
        .collect::<Result<_, _>>()?;
    // 30 metrics: about 600 bytes encoded, as the other modes' values
    let metrics: Vec<(String, f32)> = (0..30)
        .map(|i| (format!("metric.number_{i:02}"), i as f32))
        .collect();
    let start = std::time::Instant::now();
    let h0 = heap_mib();
    println!("rows,heap_in_use_mib,keys,seconds");
    let (mut n, mut ts, mut packed_until) = (0u64, 0i64, 0i64);
    while n < rows {
        let mut batch = WriteBatch::default();
        for _ in 0..200 {
            let row = HistoryRow {
                ts_ms: ts,
                seq: n / 1000 + 1,
                metrics: metrics.clone(),
            };
            batch.history(&devices[(n % 1000) as usize], row.clone());
            n += 1;
            ts += 5;
        }
        store.apply(batch, 0)?;
        if n.is_multiple_of(20_000) {
            store.flush()?;
        }
        if ts / 60_000 > packed_until {
            packed_until = ts / 60_000;
            store.pack_sealed(ts - SEAL_AFTER_MS, u64::MAX)?;
        }
        if n.is_multiple_of(100_000) {
            // keys estimated, not counted: a full scan makes sled hold what it read (sled
            // issue #1036; counting every 100,000 rows took the heap to 550 MiB)
            // one packed part per machine and minute (12 rows)
            let keys = 1000 * (ts / 60_000 + 1) as u64;
            println!(
                "{n},{:.1},{keys},{:.1}",
                heap_mib(),
                start.elapsed().as_secs_f64()
            );
        }
    }
    eprintln!("heap at start {h0:.1} MiB");
    // A read of everything (an export of the whole history) holds the pages it read until
    // sled's LRU hears of enough accesses (it takes them in batches of 64 per shard, 256
    // shards); the next packing pass, as live ingest would, lets it evict them.
    let read_all = || -> anyhow::Result<usize> {
        let mut n = 0;
        for d in &devices {
            for r in store.history_iter(d, i64::MIN / 2, i64::MAX / 2) {
                r?;
                n += 1;
            }
        }
        Ok(n)
    };
    eprintln!("heap before reading every row back {:.1} MiB", heap_mib());
    let n = read_all()?;
    eprintln!("heap after reading {n} rows {:.1} MiB", heap_mib());
    for i in 0..24_000u64 {
        let row = HistoryRow {
            ts_ms: ts + 5 * i as i64,
            seq: u64::MAX / 2 + i,
            metrics: metrics.clone(),
        };
        let mut batch = WriteBatch::default();
        batch.history(&devices[(i % 1000) as usize], row.clone());
        store.apply(batch, 0)?;
    }
    store.pack_sealed(i64::MAX, u64::MAX)?;
    eprintln!(
        "heap after 2 minutes more of ingest and a packing pass {:.1} MiB",
        heap_mib()
    );
    let k = store.key_counts();
    eprintln!("single-row keys {}, packed parts {}", k.raw, k.raw_packed);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
