//! Starting one device's pipeline (collector -> buffer -> link) inside an actix system.
//! The real agent goes through here, and so does each of `rvm-sim`'s virtual machines (the
//! simulator is a crate of its own: the agent carries none of it).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use common::command::SignedCommand;
use common::tls::ClientIdentity;
use common::{Birth, DeviceId};
use tokio::sync::mpsc;

use crate::buffer::{Buffer, BufferHandle, BufferParts};
use crate::collect::MetricSource;
use crate::collect::actor::{CollectorActor, CollectorParts, CollectorStats};
use crate::link::actor::{LinkActor, LinkParts, Shutdown};
pub use crate::link::brokers::Broker;
use crate::link::status::LinkStatus;
use crate::link::task::LinkConfig;
use crate::messages::StopNow;
use crate::supervise::liveness::Liveness;

pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// What a running simulated device exposes.
pub struct DeviceHandle {
    pub device: DeviceId,
    pub buffer: BufferHandle,
    pub link: Arc<LinkStatus>,
    pub collector: Arc<CollectorStats>,
    pub commands: Option<mpsc::UnboundedReceiver<SignedCommand>>,
    collector_addr: Addr<CollectorActor>,
    link_addr: Addr<LinkActor>,
}

impl DeviceHandle {
    /// Stops collecting; the link keeps draining the buffer.
    pub fn stop_collecting(&self) {
        self.collector_addr.do_send(StopNow);
    }

    /// Stops collecting, says goodbye on the link, then closes the buffer (the exact last seq
    /// written and flushed).
    pub async fn stop(&self) {
        self.collector_addr.do_send(StopNow);
        let _ = self.link_addr.send(Shutdown).await;
        if let Err(e) = self.buffer.close().await {
            tracing::error!(device = %self.device, error = %e, "final buffer flush failed");
        }
    }
}

pub struct DeviceParts {
    pub device: DeviceId,
    /// The brokers, in failover order ([`crate::link::brokers`]); at least one.
    pub brokers: Vec<Broker>,
    pub identity: ClientIdentity,
    pub keep_alive: Duration,
    pub window: usize,
    pub interval: Duration,
    pub source: Box<dyn MetricSource>,
    /// The opened buffer: the device's buffer actor takes it.
    pub buffer: Buffer,
    pub birth: Birth,
    /// Holds the link down while it reads `true` (a simulated network cut).
    pub gate: Option<tokio::sync::watch::Receiver<bool>>,
}

/// A birth message with this process's boot id and versions.
pub fn build_birth(
    site: Option<String>,
    tags: Vec<String>,
    capabilities: Vec<String>,
    simulated: bool,
) -> Birth {
    Birth {
        boot_id: common::ids::random_hex(8),
        agent_version: AGENT_VERSION.into(),
        hostname: hostname(),
        site,
        tags,
        capabilities,
        started_ms: common::time::now_ms(),
        simulated,
        ..Default::default()
    }
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Where and how one device's link connects.
pub struct LinkSpec {
    pub device: DeviceId,
    /// The brokers, in failover order ([`crate::link::brokers`]); at least one.
    pub brokers: Vec<Broker>,
    pub identity: ClientIdentity,
    pub keep_alive: Duration,
    pub window: usize,
    pub birth: Birth,
}

/// The link's configuration and shared state for one device.
pub fn link_parts(
    spec: LinkSpec,
    buffer: BufferHandle,
) -> anyhow::Result<(LinkParts, mpsc::UnboundedReceiver<SignedCommand>)> {
    let LinkSpec {
        device,
        brokers,
        identity,
        keep_alive,
        window,
        birth,
    } = spec;
    let device = &device;
    anyhow::ensure!(!brokers.is_empty(), "{device}: no broker to connect to");
    let tls = common::tls::client_config(&identity)?;
    let (tx, rx) = mpsc::unbounded_channel();
    Ok((
        LinkParts {
            cfg: LinkConfig {
                device: device.clone(),
                brokers,
                tls,
                client_id: device.to_string(),
                keep_alive,
                window,
                birth,
            },
            buffer,
            status: Arc::default(),
            commands: tx,
            gate: None,
        },
        rx,
    ))
}

/// Starts a lightweight device (buffer, collector and link, no supervisor, health or
/// recovery) on the current actix arbiter: what each of `rvm-sim`'s virtual machines runs. The
/// real agent is [`crate::agent::start`].
pub fn start_device(parts: DeviceParts) -> anyhow::Result<DeviceHandle> {
    let now = common::time::now_ms();
    let buffer_parts = BufferParts::new(parts.buffer);
    let buffer = buffer_parts.handle();
    buffer_parts.start(Arc::new(Liveness::new(now)));
    let (mut lp, rx) = link_parts(
        LinkSpec {
            device: parts.device.clone(),
            brokers: parts.brokers,
            identity: parts.identity,
            keep_alive: parts.keep_alive,
            window: parts.window,
            birth: parts.birth,
        },
        buffer.clone(),
    )?;
    lp.gate = parts.gate;
    let cp = CollectorParts::new(parts.source, buffer.clone(), parts.interval)?;
    let collector_stats = cp.stats.clone();
    let link_status = lp.status.clone();
    let link_addr = LinkActor::new(lp, Arc::new(Liveness::new(now))).start();
    let collector_addr = CollectorActor::new(cp, Arc::new(Liveness::new(now))).start();
    Ok(DeviceHandle {
        device: parts.device,
        buffer,
        link: link_status,
        collector: collector_stats,
        commands: Some(rx),
        collector_addr,
        link_addr,
    })
}

/// How often sled's own flush thread runs with the buffer's flush policy: with batched flushes
/// their period but never more often than [`SLED_CLEAN_EVERY_MS`] (at the default 500 ms it
/// woke the agent twice a second only to find the actor's flush had done the work), else
/// [`SLED_CLEAN_EVERY_MS`]. The buffer actor makes records durable itself
/// (its timer, [`crate::buffer::FlushPolicy::EveryRecord`], `Flush`); sled's thread is kept
/// because it is the only caller of sled's log cleaning (sled 0.34 `flusher.rs`:
/// `attempt_gc`, which rewrites the live pages of old segments so they can be freed). Without
/// it the agent's heap grew about 120 KiB/min at one record per second (the soak,
/// `tests/tests/soak.rs`), and its log on disk with it.
pub fn sled_thread_ms(flush: crate::buffer::FlushPolicy) -> u64 {
    match flush {
        crate::buffer::FlushPolicy::Batched { ms } => ms.max(SLED_CLEAN_EVERY_MS),
        crate::buffer::FlushPolicy::EveryRecord => SLED_CLEAN_EVERY_MS,
    }
}

/// sled's flush thread period (its log cleaning) when every record is flushed by the actor.
pub const SLED_CLEAN_EVERY_MS: u64 = 1000;

/// Opens the sled buffer; a directory that will not open is moved aside and a fresh one
/// started. Returns the buffer and, when that happened, the store-reset event to report.
/// sled's own flush thread runs beside the buffer actor's flushes ([`sled_thread_ms`]).
pub fn open_sled_buffer(
    device: &DeviceId,
    dir: &Path,
    caps: crate::buffer::Caps,
    flush: crate::buffer::FlushPolicy,
) -> anyhow::Result<(Buffer, Option<common::Event>, sled::Db)> {
    use crate::buffer::SledStore;
    let thread_ms = sled_thread_ms(flush);
    let open = |d: &Path| -> anyhow::Result<(Buffer, sled::Db)> {
        // sled can panic on some corruptions rather than return an error: treat both alike.
        let store = std::panic::catch_unwind(|| SledStore::open(d, Some(thread_ms)))
            .map_err(|_| anyhow::anyhow!("sled panicked while opening {}", d.display()))??;
        let db = store.db();
        Ok((
            Buffer::open(
                device.clone(),
                Box::new(store) as Box<dyn crate::buffer::Store>,
                caps,
                flush,
            )?,
            db,
        ))
    };
    match open(dir) {
        Ok((b, db)) => Ok((b, None, db)),
        // not corrupt: in use (another agent on the same directory); moving it aside would
        // orphan that agent's backlog
        Err(e) if e.to_string().contains("could not acquire lock") => Err(e.context(format!(
            "buffer {} is in use by another process (is another rvm-agent running?)",
            dir.display()
        ))),
        Err(e) => {
            let moved = dir.with_extension(format!("corrupt-{}", common::time::now_ms()));
            tracing::error!(error = %e, dir = %dir.display(), moved_to = %moved.display(), "buffer store will not open; moving it aside and starting empty");
            std::fs::rename(dir, &moved)?;
            let (b, db) = open(dir)?;
            let ev = common::Event {
                severity: common::Severity::Critical,
                kind: common::EventKind::StoreReset {
                    moved_to: moved.display().to_string(),
                    error: e.to_string(),
                },
                message: format!("buffer store would not open ({e}); moved aside, started empty"),
            };
            Ok((b, Some(ev), db))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::{Caps, FlushPolicy};

    #[test]
    fn a_buffer_in_use_by_another_agent_is_refused_not_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let buf = dir.path().join("buffer");
        let d = DeviceId::new("rvm1").unwrap();
        let caps = Caps::default();
        let (_first, reset, _db) = open_sled_buffer(&d, &buf, caps, FlushPolicy::EveryRecord).unwrap();
        assert!(reset.is_none());
        let err = open_sled_buffer(&d, &buf, caps, FlushPolicy::EveryRecord)
            .err()
            .expect("a second agent on the same buffer is refused");
        assert!(
            format!("{err:#}").contains("in use by another process"),
            "{err:#}"
        );
        let entries = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(entries, 1, "nothing was moved aside");
    }
}
