//! The helper process of `chaos_kill_9_of_a_buffer_never_reuses_a_seq` (`tests/tests/chaos.rs`),
//! which runs it by its path and `kill -9`s it: opens a sled buffer in DIR as the agent does,
//! and through the buffer actor appends a record, "delivers" it (reads and acknowledges what is
//! buffered) and prints its seq (`SEQ n`), over and over until killed. A program of its own, not
//! a test: nothing here passes or fails.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rvm_agent::buffer::{Appended, Body, BufferParts, Caps, FlushPolicy, Key};
use rvm_agent::supervise::liveness::Liveness;

/// Records appended before the helper stops by itself (the test kills it long before).
const RECORDS: usize = 100_000;
/// Between records, so that a kill lands anywhere in a reservation block.
const PAUSE: Duration = Duration::from_millis(3);

fn main() -> anyhow::Result<()> {
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .context("usage: chaos-appender DIR")?
        .into();
    let dev = common::DeviceId::new("seq1")?;
    let (core, _, _db) =
        rvm_agent::runtime::open_sled_buffer(&dev, &dir, Caps::default(), FlushPolicy::Batched { ms: 500 })?;
    let ev = common::Event {
        severity: common::Severity::Info,
        kind: common::EventKind::Note,
        message: "x".into(),
    };
    actix::System::new().block_on(async move {
        let parts = BufferParts::new(core);
        let buffer = parts.handle();
        parts.start(Arc::new(Liveness::new(common::time::now_ms())));
        let mut out = std::io::stdout();
        for _ in 0..RECORDS {
            let seq = match buffer
                .append(common::time::now_ms(), Body::Event(ev.clone()))
                .await?
            {
                Appended::Stored { seq } | Appended::Thinned { seq } => seq,
            };
            let delivered = buffer.read(Key::PRIORITY, None, 100).await?;
            buffer.ack(delivered.iter().map(|r| r.key).collect()).await?;
            writeln!(out, "SEQ {seq}")?;
            out.flush()?;
            tokio::time::sleep(PAUSE).await;
        }
        anyhow::Ok(())
    })
}
