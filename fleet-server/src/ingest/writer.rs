//! The ingest writer: the one place device records become server state.
//!
//! Every record a device publishes reaches [`IngestItem`]s here, from the embedded broker's
//! publish hook (before the broker acknowledges the publish) or from the ingest client on an
//! external broker (which acknowledges only after the reply). For each batch the writer:
//!
//! 1. with sled, journals the raw records with one `write()` ([`super::journal`]): from then
//!    on a `kill -9` of the server cannot lose them;
//! 2. decodes them (a malformed record is counted by reason and acknowledged: retrying it
//!    would never help), drops duplicates by (device, seq) against the persisted
//!    [`DeliveryState`], and applies delivery state, births and history rows (at each record's
//!    own timestamp, unless the device's clock is off: [`crate::fleet::clock`]) to the store
//!    ([`IngestStore::apply`]; with PostgreSQL one transaction, committed when it returns);
//! 3. replies, so the broker acknowledges, and hands the new records to the fleet actor.
//!
//! With sled the journal is fsynced every [`JOURNAL_SYNC`] (the power-loss window); every
//! [`STORE_FLUSH`] sled is flushed and the journal truncated. With PostgreSQL there is no
//! journal: the commit is the durability point, so a record is acknowledged only once the
//! transaction holding it committed. The writer stops when every sender is gone or its stop
//! flag is set (records still queued then were not acknowledged: their devices send them
//! again).
//!
//! A batch the store refuses (PostgreSQL unreachable) is refused as a whole: every reply says
//! so (the broker does not acknowledge: the records stay on the machines, which send them
//! again), the delivery state of its devices is put back as it was before the batch, and
//! nothing of it reaches the fleet actor. The store's health says why
//! ([`crate::storage::health`]).
//!
//! Supervised (`crate::server::children`), one generation at a time: each takes the queue's
//! receiver ([`WriterInbox`], which also makes it the journal's only user), reloads the
//! delivery state from the store (a batch the previous generation did not finish may have
//! counted seqs it never stored) and replays the journal (with sled), exactly as at process
//! start. When
//! the receiver is free ([`open_now`]: the first start, a restart after a panic) that happens
//! before the start returns, so the rest of the server starts on a replayed store; after a
//! stall [`run`] waits on its own thread for the stalled generation to let go.
//! A batch cut short by a panic was not acknowledged (its replies are dropped: the broker
//! refuses the publishes and the devices send them again); what was acknowledged is in the
//! store.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix::Addr;
use common::topics::Kind;
use common::{DeviceId, DeviceState, EventKind};
use tokio::sync::{OwnedMutexGuard, mpsc, oneshot};

use super::decode::decode_record;
use super::journal::Journal;
use super::stats::IngestStats;
use super::store::{IngestStore, WriteBatch};
use crate::fleet::actor::{DeliveryUpdate, FleetActor};
use crate::fleet::clock::{ClockGuard, DEVICE_CLOCK_OFFSET, MAX_CLOCK_SKEW_MS};
use crate::fleet::delivery::DeliveryState;
use crate::history::rows::HistoryRow;
use crate::messages::Ingested;
use crate::republish::item::Item;
use crate::republish::queue::RepublishHandle;
use crate::store::{FleetStore, StoreError};
use crate::supervise::inbox::Inbox;
use crate::supervise::liveness::Liveness;
use crate::supervise::slot::Slot;

/// Journal fsync period: the power-loss window of acknowledged records.
pub const JOURNAL_SYNC: Duration = Duration::from_millis(100);
/// sled flush period, after which the journal is truncated.
pub const STORE_FLUSH: Duration = Duration::from_secs(1);
/// Records taken into one batch at most.
pub const MAX_BATCH: usize = 2048;
/// Queue between producers and the writer.
pub const QUEUE: usize = 65_536;

/// Why a batch of records was not stored. One error answers every record of the batch, so it
/// is shared (`Arc`) rather than copied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("journal: {0}")]
    Journal(Arc<std::io::Error>),
    #[error("{0}")]
    Store(Arc<StoreError>),
}

/// Answered once the record is durable (or refused: the sender keeps it and sends it again).
pub type Reply = oneshot::Sender<Result<(), WriteError>>;

pub struct IngestItem {
    pub device: DeviceId,
    pub kind: Kind,
    pub payload: Vec<u8>,
    pub reply: Option<Reply>,
}

pub type DeliveryMap = Arc<RwLock<BTreeMap<DeviceId, DeliveryState>>>;

/// The writer's queue: producers keep the sender, writer generations take turns with the
/// receiver.
pub type WriterInbox = Inbox<mpsc::Receiver<IngestItem>>;

/// A queue of [`QUEUE`] items for the writer.
pub fn channel() -> (mpsc::Sender<IngestItem>, WriterInbox) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (tx, Inbox::new(rx))
}

/// What every generation of the writer works with.
#[derive(Clone)]
pub struct WriterSetup {
    /// Where `ingest.journal` lives (a store that needs one: sled).
    pub data_dir: PathBuf,
    pub store: Arc<dyn IngestStore>,
    /// New records and delivery updates go to the fleet actor, whichever generation runs.
    pub fleet: Slot<FleetActor>,
    pub stats: Arc<IngestStats>,
    /// New records also go to the republisher (`fleet/v1/devices/...`), when enabled.
    pub republish: Option<RepublishHandle>,
    /// The delivery state, reloaded by each generation.
    pub delivery: DeliveryMap,
}

/// An unsupervised writer ([`start`]: tools, benchmarks, tests).
#[derive(Clone)]
pub struct WriterHandle {
    pub tx: mpsc::Sender<IngestItem>,
    pub delivery: DeliveryMap,
    /// The store the writer writes.
    pub store: FleetStore,
    /// Set to stop the writer thread (it flushes and drops its store).
    pub stop: Arc<AtomicBool>,
}

struct Writer {
    store: Arc<dyn IngestStore>,
    /// None when the store's apply is durable by itself (PostgreSQL).
    journal: Option<Journal>,
    delivery: DeliveryMap,
    fleet: Slot<FleetActor>,
    stats: Arc<IngestStats>,
    journal_dirty: bool,
    /// Per device: where history rows go when its clock is off ([`crate::fleet::clock`]).
    clocks: BTreeMap<DeviceId, ClockGuard>,
    republish: Option<RepublishHandle>,
    /// Devices whose records this generation has judged: one not in here may have been
    /// served by another instance since the delivery state was loaded
    /// ([`Writer::reload_sessions`]).
    served: BTreeSet<DeviceId>,
}

/// Opens the sled store in `data_dir` and runs an unsupervised writer on a thread of its own.
pub fn start(
    data_dir: &Path,
    fleet: Addr<FleetActor>,
    stats: Arc<IngestStats>,
) -> anyhow::Result<WriterHandle> {
    std::fs::create_dir_all(data_dir)?;
    let store = FleetStore::open(&data_dir.join("fleet.sled"))?;
    let setup = WriterSetup {
        data_dir: data_dir.to_path_buf(),
        store: Arc::new(store.clone()),
        fleet: Slot::with(fleet),
        stats,
        republish: None,
        delivery: DeliveryMap::default(),
    };
    let (tx, stop) = spawn(&setup)?;
    Ok(WriterHandle {
        tx,
        delivery: setup.delivery,
        store,
        stop,
    })
}

/// Runs an unsupervised writer of `setup` on a thread of its own: its queue and stop flag.
fn spawn(setup: &WriterSetup) -> anyhow::Result<(mpsc::Sender<IngestItem>, Arc<AtomicBool>)> {
    let (tx, inbox) = channel();
    let stop = Arc::new(AtomicBool::new(false));
    // opened here, so that the handle sees the replayed journal at once
    let open = open_now(setup, &inbox)?.ok_or_else(|| anyhow::anyhow!("a new inbox is free"))?;
    let live = Liveness::new("writer", common::time::now_ms());
    let t_stop = stop.clone();
    std::thread::Builder::new()
        .name("ingest-writer".into())
        .spawn(move || {
            if let Err(e) = open.serve(&live, &t_stop) {
                tracing::error!(error = %e, "ingest writer stopped");
            }
        })?;
    Ok((tx, stop))
}

/// A writer that holds its queue and has replayed the journal: [`OpenWriter::serve`] it.
pub struct OpenWriter {
    rx: OwnedMutexGuard<mpsc::Receiver<IngestItem>>,
    writer: Writer,
}

impl OpenWriter {
    /// Writes until `stop` is set or every sender is gone.
    pub fn serve(mut self, live: &Liveness, stop: &AtomicBool) -> anyhow::Result<()> {
        self.writer.serve(&mut self.rx, live, stop)
    }
}

/// Takes the queue if no generation holds it, reloads the delivery state and replays the
/// journal; None while another generation holds the queue.
pub fn open_now(setup: &WriterSetup, inbox: &WriterInbox) -> anyhow::Result<Option<OpenWriter>> {
    let Some(rx) = inbox.try_take() else {
        return Ok(None);
    };
    Ok(Some(OpenWriter {
        rx,
        writer: Writer::open(setup)?,
    }))
}

/// One supervised generation of the writer on its thread: waits for the queue (a stalled
/// predecessor holds it until it wakes), reloads the delivery state and replays the journal,
/// then writes until `stop` is set or every sender is gone.
pub fn run(
    setup: &WriterSetup,
    inbox: &WriterInbox,
    live: &Liveness,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let Some(mut rx) = inbox.take_blocking(live, stop) else {
        return Ok(());
    };
    Writer::open(setup)?.serve(&mut rx, live, stop)
}

impl Writer {
    /// Reloads the delivery state from the store and replays the journal into it (a store
    /// that needs one: sled).
    fn open(setup: &WriterSetup) -> anyhow::Result<Writer> {
        let loaded = setup.store.load_delivery()?;
        *setup.delivery.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        let journal_path = setup.data_dir.join("ingest.journal");
        let (replay, journal) = if setup.store.needs_journal() {
            std::fs::create_dir_all(&setup.data_dir)?;
            (
                Journal::replay(&journal_path)?,
                Some(Journal::open(&journal_path)?),
            )
        } else {
            (Vec::new(), None)
        };
        let mut w = Writer {
            store: setup.store.clone(),
            journal,
            delivery: setup.delivery.clone(),
            fleet: setup.fleet.clone(),
            stats: setup.stats.clone(),
            journal_dirty: false,
            clocks: BTreeMap::new(),
            republish: setup.republish.clone(),
            served: BTreeSet::new(),
        };
        if !replay.is_empty() {
            tracing::info!(records = replay.len(), "replaying the ingest journal");
            let items = replay
                .into_iter()
                .map(|r| IngestItem {
                    device: r.device,
                    kind: r.kind,
                    payload: r.payload,
                    reply: None,
                })
                .collect();
            w.process(items, true);
        }
        w.flush();
        Ok(w)
    }

    fn serve(
        mut self,
        rx: &mut mpsc::Receiver<IngestItem>,
        live: &Liveness,
        stop: &AtomicBool,
    ) -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .map_err(|e| anyhow::anyhow!("ingest writer runtime: {e}"))?;
        let mut last_sync = Instant::now();
        let mut last_flush = Instant::now();
        loop {
            live.beat(common::time::now_ms());
            if stop.load(Ordering::Acquire) {
                self.flush();
                return Ok(());
            }
            let first = rt.block_on(async { tokio::time::timeout(JOURNAL_SYNC, rx.recv()).await });
            match first {
                Ok(Some(item)) => {
                    let mut items = vec![item];
                    while items.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(i) => items.push(i),
                            Err(_) => break,
                        }
                    }
                    self.process(items, false);
                    self.stats.writer_batches.fetch_add(1, Ordering::Relaxed);
                    self.stats.writer_queue.store(rx.len() as u64, Ordering::Relaxed);
                }
                Ok(None) => {
                    self.flush();
                    return Ok(());
                }
                Err(_) => {}
            }
            if self.journal_dirty && last_sync.elapsed() >= JOURNAL_SYNC {
                if let Some(j) = &self.journal
                    && let Err(e) = j.sync()
                {
                    tracing::error!(error = %e, "journal fsync failed");
                }
                self.journal_dirty = false;
                last_sync = Instant::now();
            }
            if last_flush.elapsed() >= STORE_FLUSH && self.journal.as_ref().is_some_and(|j| j.bytes() > 0) {
                self.flush();
                last_flush = Instant::now();
            }
        }
    }

    fn flush(&mut self) {
        match self.store.flush() {
            Ok(()) => {
                if let Some(j) = &mut self.journal
                    && let Err(e) = j.truncate()
                {
                    tracing::error!(error = %e, "journal truncate failed");
                }
            }
            Err(e) => tracing::error!(error = %e, "store flush failed; the journal is kept"),
        }
    }

    /// `replay`: the items come from the journal at start, not from a broker.
    fn process(&mut self, items: Vec<IngestItem>, replay: bool) {
        if !replay && let Some(journal) = &mut self.journal {
            let recs = items.iter().map(|i| (&i.device, i.kind, i.payload.as_slice()));
            if let Err(e) = journal.append(recs) {
                tracing::error!(error = %e, "journal write failed; records refused");
                let e = WriteError::Journal(Arc::new(e));
                for i in items {
                    if let Some(r) = i.reply {
                        let _ = r.send(Err(e.clone()));
                    }
                }
                return;
            }
            self.journal_dirty = true;
        }
        self.reload_sessions(&items);
        let mut batch = WriteBatch::default();
        let mut forward = Vec::new();
        let mut dirty = BTreeSet::new();
        let mut replies = Vec::with_capacity(items.len());
        let now_ms = common::time::now_ms();
        // each device's delivery state before this batch: put back if the store refuses it
        let mut before: BTreeMap<DeviceId, Option<DeliveryState>> = BTreeMap::new();
        let (mut accepted, mut duplicates, mut clock_moved) = (0u64, 0u64, 0u64);
        {
            let mut map = self.delivery.write().unwrap_or_else(|p| p.into_inner());
            for item in items {
                if let Some(r) = item.reply {
                    replies.push(r);
                }
                self.stats.received.fetch_add(1, Ordering::Relaxed);
                let msg = match decode_record(&item.device, item.kind, &item.payload) {
                    Ok(m) => m,
                    Err((reason, detail)) => {
                        self.stats
                            .reject(reason, &format!("{}/{}", item.device, item.kind), &detail);
                        continue;
                    }
                };
                let Some((seq, ts_ms)) = msg.seq_ts() else {
                    // presence: not sequenced
                    if let Ingested::State(env) = &msg
                        && let DeviceState::Online(_) = &env.body
                    {
                        self.clocks
                            .entry(item.device.clone())
                            .or_default()
                            .on_birth(env.ts_ms, now_ms);
                    }
                    if let Ingested::State(env) = &msg
                        && let DeviceState::Online(b) = &env.body
                    {
                        batch.birth(&item.device, b);
                    }
                    accepted += 1;
                    forward.push((msg, item.payload));
                    continue;
                };
                before
                    .entry(item.device.clone())
                    .or_insert_with(|| map.get(&item.device).cloned());
                let st = map.entry(item.device.clone()).or_default();
                if !st.seqs.observe(seq) {
                    st.duplicates += 1;
                    dirty.insert(item.device.clone());
                    duplicates += 1;
                    if replay && let Ingested::Telemetry(env) = &msg {
                        // Counted before a crash, but its row may not have reached the disk
                        // (the store writes key by key): write it again, at the same key. Only
                        // a row stamped near the server's time, which the clock guard never
                        // moves; an older one (a backlog) relies on sled recovering its log in
                        // order, delivery state after rows ([`FleetStore::apply`]).
                        if ts_ms.abs_diff(now_ms) <= MAX_CLOCK_SKEW_MS.unsigned_abs() {
                            batch.history(&item.device, history_row(env, seq, ts_ms, None));
                        }
                    }
                    continue;
                }
                st.received += 1;
                if matches!(msg, Ingested::Telemetry(_)) {
                    if seq < st.last_telemetry_seq {
                        st.reordered += 1;
                    }
                    st.last_telemetry_seq = st.last_telemetry_seq.max(seq);
                }
                if let Ingested::Event(env) = &msg
                    && let EventKind::RecordsDropped { count, .. } = env.body.kind
                {
                    st.reported_dropped += count;
                }
                let placed = self
                    .clocks
                    .entry(item.device.clone())
                    .or_default()
                    .place(seq, ts_ms, now_ms);
                if let Ingested::Telemetry(env) = &msg {
                    if placed.moved_by_s.is_some() {
                        clock_moved += 1;
                    }
                    batch.history(
                        &item.device,
                        history_row(env, seq, placed.ts_ms, placed.moved_by_s),
                    );
                }
                dirty.insert(item.device.clone());
                accepted += 1;
                forward.push((msg, item.payload));
            }
            for d in &dirty {
                if let Some(st) = map.get(d) {
                    batch.delivery(d, st);
                }
            }
        }
        let result = self.apply(batch, now_ms, before);
        if result.is_ok() {
            self.stats.accepted.fetch_add(accepted, Ordering::Relaxed);
            self.stats.duplicates.fetch_add(duplicates, Ordering::Relaxed);
            self.stats.clock_moved.fetch_add(clock_moved, Ordering::Relaxed);
        }
        for r in replies {
            let _ = r.send(result.clone());
        }
        if result.is_err() {
            return;
        }
        // the fleet actor now, whichever generation that is (none while it restarts: it
        // reloads from the store)
        let fleet = self.fleet.get();
        for (m, payload) in forward {
            if let Some(r) = &self.republish {
                r.offer(|| Item::from_wire(&m, payload));
            }
            if let Some(f) = &fleet {
                f.do_send(m);
            }
        }
        let Some(fleet) = fleet else { return };
        let map = self.delivery.read().unwrap_or_else(|p| p.into_inner());
        for d in dirty {
            if let Some(st) = map.get(&d) {
                fleet.do_send(DeliveryUpdate(d, st.view()));
            }
        }
    }
}

impl Writer {
    /// Joins the stored delivery state of the devices whose sessions start in `items` into
    /// this writer's view, before their records are judged: devices with a state record (the
    /// birth every session begins with) and devices this generation has not judged records
    /// of yet. The second catches a device's first session here even when its birth comes
    /// after its first records (with the embedded broker, records reach the writer from the
    /// publish hook, births through the server's own subscription). With one store shared by
    /// several instances (PostgreSQL) the device may have been served elsewhere since this
    /// instance last saw it: its stale view would take the resent tail of that session for
    /// new records. A store that cannot answer is logged and skipped: the batch's own write
    /// joins the stored state anyway ([`super::store::Applied::delivery`]), and the rows are
    /// written `ON CONFLICT DO NOTHING`.
    fn reload_sessions(&mut self, items: &[IngestItem]) {
        let mut devices: Vec<DeviceId> = items
            .iter()
            .filter(|i| i.kind == Kind::State || !self.served.contains(&i.device))
            .map(|i| i.device.clone())
            .collect();
        if devices.is_empty() {
            return;
        }
        devices.sort();
        devices.dedup();
        match self.store.reload_delivery(&devices) {
            Ok(stored) => {
                self.served.extend(devices);
                if stored.is_empty() {
                    return;
                }
                self.stats
                    .delivery_reloads
                    .fetch_add(stored.len() as u64, Ordering::Relaxed);
                let mut map = self.delivery.write().unwrap_or_else(|p| p.into_inner());
                for (d, st) in stored {
                    map.entry(d).or_default().merge(&st);
                }
            }
            Err(e) => tracing::warn!(error = %e, devices = devices.len(), "delivery state not reloaded"),
        }
    }

    /// Applies `batch`; if the store refuses it, puts the delivery state of its devices back
    /// as it was (`before`), so the records are taken as new when their machines send them
    /// again.
    fn apply(
        &mut self,
        batch: WriteBatch,
        now_ms: i64,
        before: BTreeMap<DeviceId, Option<DeliveryState>>,
    ) -> Result<(), WriteError> {
        if batch.is_empty() {
            return Ok(());
        }
        match self.store.apply(batch, now_ms) {
            Ok(applied) => {
                if !applied.delivery.is_empty() {
                    // what the store holds now: this batch joined with what other instances
                    // stored for these devices
                    let mut map = self.delivery.write().unwrap_or_else(|p| p.into_inner());
                    for (d, st) in applied.delivery {
                        map.insert(d, st);
                    }
                }
                if applied.rows_past_retention > 0 {
                    self.stats
                        .rows_past_retention
                        .fetch_add(applied.rows_past_retention, Ordering::Relaxed);
                    tracing::warn!(
                        rows = applied.rows_past_retention,
                        "history rows older than the raw retention not stored"
                    );
                }
                Ok(())
            }
            Err(e) => {
                let mut map = self.delivery.write().unwrap_or_else(|p| p.into_inner());
                for (d, st) in before {
                    match st {
                        Some(st) => map.insert(d, st),
                        None => map.remove(&d),
                    };
                }
                self.stats.refused_batches.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, journaled = self.journal.is_some(), "store write failed; records refused");
                Err(WriteError::Store(Arc::new(e)))
            }
        }
    }
}

/// A telemetry record's history row: every flat metric, and the clock offset when the row was
/// moved off the device's timestamp ([`crate::fleet::clock`]).
fn history_row(
    env: &common::Envelope<common::Telemetry>,
    seq: u64,
    ts_ms: i64,
    moved_by_s: Option<f64>,
) -> HistoryRow {
    let mut metrics: Vec<(String, f32)> = Vec::with_capacity(24 + env.body.app.len());
    env.body
        .visit_metrics(|k, v| metrics.push((k.to_string(), v as f32)));
    if let Some(off) = moved_by_s {
        metrics.push((DEVICE_CLOCK_OFFSET.to_string(), off as f32));
    }
    HistoryRow { ts_ms, seq, metrics }
}

#[cfg(test)]
mod tests {
    use actix::Actor as _;
    use common::{Envelope, Telemetry};

    use super::*;
    use crate::fleet::state::PresencePolicy;
    use crate::ingest::journal::JournalRecord;

    /// What the look inside (schema 2) costs a history row, measured on the documented
    /// example (a simulated Jetson: 5 + 5 top entries, one watched process, one interface,
    /// TCP, one eMMC, broker round trip): the row grows by its flat metrics, each a name and
    /// an f32. The budget keeps a change that multiplies them from passing unnoticed.
    #[test]
    fn the_look_inside_costs_a_history_row_under_a_kilobyte() {
        let env: Envelope<Telemetry> =
            serde_json::from_str(include_str!("../../../docs/examples/telemetry.json")).unwrap();
        let mut old = env.clone();
        old.body.detail = Default::default();
        let size =
            |e: &Envelope<Telemetry>| common::codec::encode(&history_row(e, 1, 0, None)).unwrap().len();
        let wire = |e: &Envelope<Telemetry>| common::codec::encode(e).unwrap().len();
        let (with, without) = (size(&env), size(&old));
        let added_metrics =
            history_row(&env, 1, 0, None).metrics.len() - history_row(&old, 1, 0, None).metrics.len();
        // as the sled store keeps it: names as ids of its name book
        let dir = tempfile::tempdir().unwrap();
        let store = FleetStore::open(dir.path()).unwrap();
        let stored = |e: &Envelope<Telemetry>| {
            crate::history::pack::encode_row(&history_row(e, 1, 0, None), &store.names)
                .unwrap()
                .len()
        };
        let (stored_with, stored_without) = (stored(&env), stored(&old));
        println!(
            "history row: {without} -> {with} bytes (+{} for {added_metrics} metrics), stored \
             {stored_without} -> {stored_with}; wire record: {} -> {} bytes",
            with - without,
            wire(&old),
            wire(&env)
        );
        assert!(added_metrics >= 30, "{added_metrics}");
        assert!(with - without < 1024, "{without} -> {with}");
        assert!(stored_with * 3 < with, "stored {stored_with} of {with} bytes");
    }

    fn record(device: &DeviceId, seq: u64, ts_ms: i64) -> JournalRecord {
        let env = Envelope::new(device.clone(), seq, ts_ms, Telemetry::default());
        JournalRecord {
            device: device.clone(),
            kind: Kind::Telemetry,
            payload: common::codec::encode(&env).unwrap(),
        }
    }

    /// A crash after a record's delivery state reached the disk but before its history row
    /// did: the journal replay finds the record already counted and still writes its row.
    #[actix::test]
    async fn the_journal_replay_writes_the_rows_of_records_already_counted() {
        let dir = tempfile::tempdir().unwrap();
        let rvm = DeviceId::new("rvm1").unwrap();
        let now = common::time::now_ms();
        {
            let store = FleetStore::open(&dir.path().join("fleet.sled")).unwrap();
            let mut st = DeliveryState::default();
            assert!(st.seqs.observe(5));
            st.received = 1;
            let mut b = WriteBatch::default();
            b.delivery(&rvm, &st);
            store.apply(b, now).unwrap();
            store.flush().unwrap();
        }
        {
            let mut j = Journal::open(&dir.path().join("ingest.journal")).unwrap();
            j.append(
                [record(&rvm, 5, now - 2_000), record(&rvm, 6, now - 1_000)]
                    .iter()
                    .map(JournalRecord::parts),
            )
            .unwrap();
            j.sync().unwrap();
        }
        let fleet = FleetActor::new(PresencePolicy::default()).start();
        let stats = Arc::new(IngestStats::default());
        let w = start(dir.path(), fleet, stats.clone()).unwrap();
        let rows = w.store.history(&rvm, 0, i64::MAX, 10).unwrap();
        let seqs: Vec<u64> = rows.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [5, 6], "both rows are in history after the replay");
        let map = w.delivery.read().unwrap();
        let st = &map[&rvm];
        assert_eq!((st.received, st.duplicates), (2, 1), "seq 5 is counted once");
        drop(map);
        w.stop.store(true, Ordering::Release);
    }

    /// A store that refuses every batch while `down` is set, like a PostgreSQL that cannot
    /// be reached (no journal: its apply is durable by itself).
    struct Unreachable {
        inner: FleetStore,
        down: AtomicBool,
    }

    impl IngestStore for Unreachable {
        fn needs_journal(&self) -> bool {
            false
        }
        fn apply(
            &self,
            b: WriteBatch,
            now_ms: i64,
        ) -> Result<super::super::store::Applied, crate::store::StoreError> {
            if self.down.load(Ordering::Acquire) {
                return Err(crate::store::StoreError::Encode("unreachable".into()));
            }
            self.inner.apply(b, now_ms)
        }
        fn flush(&self) -> Result<(), crate::store::StoreError> {
            Ok(())
        }
        fn load_delivery(&self) -> Result<BTreeMap<DeviceId, DeliveryState>, crate::store::StoreError> {
            self.inner.load_delivery()
        }
        fn load_births(&self) -> Result<BTreeMap<DeviceId, common::Birth>, crate::store::StoreError> {
            self.inner.load_births()
        }
    }

    /// A store another instance writes too: what it reloads is what the shared store holds.
    struct Shared {
        inner: FleetStore,
    }

    impl IngestStore for Shared {
        fn needs_journal(&self) -> bool {
            false
        }
        fn apply(
            &self,
            b: WriteBatch,
            now_ms: i64,
        ) -> Result<super::super::store::Applied, crate::store::StoreError> {
            self.inner.apply(b, now_ms)
        }
        fn flush(&self) -> Result<(), crate::store::StoreError> {
            Ok(())
        }
        fn load_delivery(&self) -> Result<BTreeMap<DeviceId, DeliveryState>, crate::store::StoreError> {
            self.inner.load_delivery()
        }
        fn reload_delivery(
            &self,
            devices: &[DeviceId],
        ) -> Result<BTreeMap<DeviceId, DeliveryState>, crate::store::StoreError> {
            let mut all = self.inner.load_delivery()?;
            all.retain(|d, _| devices.contains(d));
            Ok(all)
        }
        fn load_births(&self) -> Result<BTreeMap<DeviceId, common::Birth>, crate::store::StoreError> {
            self.inner.load_births()
        }
    }

    fn another_instance_stored(store: &FleetStore, device: &DeviceId, seqs: std::ops::RangeInclusive<u64>) {
        let mut st = store.load_delivery().unwrap().remove(device).unwrap_or_default();
        for s in seqs {
            if st.seqs.observe(s) {
                st.received += 1;
            }
        }
        let mut b = WriteBatch::default();
        b.delivery(device, &st);
        store.apply(b, 0).unwrap();
    }

    fn birth_of(device: &DeviceId) -> JournalRecord {
        let env = Envelope::new(
            device.clone(),
            0,
            common::time::now_ms(),
            DeviceState::Online(common::Birth::default()),
        );
        JournalRecord {
            device: device.clone(),
            kind: Kind::State,
            payload: common::codec::encode(&env).unwrap(),
        }
    }

    /// A device served by another instance on the same store arrives here (its first
    /// records, before its birth), leaves, and comes back (a new birth): each time the
    /// resent tail is a duplicate, and the counts continue the other instance's.
    #[actix::test]
    async fn a_device_served_elsewhere_meanwhile_is_judged_against_the_stored_state() {
        let dir = tempfile::tempdir().unwrap();
        let rvm = DeviceId::new("rvm1").unwrap();
        let now = common::time::now_ms();
        let store = Arc::new(Shared {
            inner: FleetStore::open(&dir.path().join("fleet.sled")).unwrap(),
        });
        let fleet = FleetActor::new(PresencePolicy::default()).start();
        let stats = Arc::new(IngestStats::default());
        let setup = WriterSetup {
            data_dir: dir.path().to_path_buf(),
            store: store.clone(),
            fleet: Slot::with(fleet),
            stats: stats.clone(),
            republish: None,
            delivery: DeliveryMap::default(),
        };
        let (tx, stop) = spawn(&setup).unwrap();
        // after this writer loaded its (empty) view, another instance stored 1..=10
        another_instance_stored(&store.inner, &rvm, 1..=10);
        send(&tx, record(&rvm, 9, now)).await.unwrap();
        send(&tx, record(&rvm, 11, now)).await.unwrap();
        let st = setup.delivery.read().unwrap()[&rvm].clone();
        assert_eq!((st.received, st.duplicates), (11, 1), "9 was stored elsewhere");
        assert_eq!(st.seqs.missing(), 0);
        // away again: the other instance stores 12..=20; back here with a birth
        another_instance_stored(&store.inner, &rvm, 12..=20);
        send(&tx, birth_of(&rvm)).await.unwrap();
        send(&tx, record(&rvm, 20, now)).await.unwrap();
        send(&tx, record(&rvm, 21, now)).await.unwrap();
        let st = setup.delivery.read().unwrap()[&rvm].clone();
        assert_eq!((st.received, st.duplicates), (21, 2));
        assert_eq!(st.seqs.missing(), 0);
        assert_eq!(stats.snapshot().delivery_reloads, 2);
        let stored = store.inner.load_delivery().unwrap()[&rvm].clone();
        assert_eq!(stored.received, 21, "the row is not regressed");
        stop.store(true, Ordering::Release);
    }

    async fn send(tx_items: &mpsc::Sender<IngestItem>, r: JournalRecord) -> Result<(), WriteError> {
        let (tx, rx) = oneshot::channel();
        tx_items
            .send(IngestItem {
                device: r.device,
                kind: r.kind,
                payload: r.payload,
                reply: Some(tx),
            })
            .await
            .unwrap();
        rx.await.unwrap()
    }

    #[actix::test]
    async fn a_refused_batch_is_not_acknowledged_and_counts_nothing_until_it_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let rvm = DeviceId::new("rvm1").unwrap();
        let now = common::time::now_ms();
        let store = Arc::new(Unreachable {
            inner: FleetStore::open(&dir.path().join("fleet.sled")).unwrap(),
            down: AtomicBool::new(true),
        });
        let fleet = FleetActor::new(PresencePolicy::default()).start();
        let stats = Arc::new(IngestStats::default());
        let setup = WriterSetup {
            data_dir: dir.path().to_path_buf(),
            store: store.clone(),
            fleet: Slot::with(fleet),
            stats: stats.clone(),
            republish: None,
            delivery: DeliveryMap::default(),
        };
        let (tx, stop) = spawn(&setup).unwrap();
        assert!(
            matches!(send(&tx, record(&rvm, 1, now)).await, Err(WriteError::Store(_))),
            "refused while down"
        );
        assert!(
            !setup.delivery.read().unwrap().contains_key(&rvm),
            "the seq is not counted"
        );
        assert!(!dir.path().join("ingest.journal").exists(), "no journal");
        store.down.store(false, Ordering::Release);
        send(&tx, record(&rvm, 1, now)).await.unwrap();
        send(&tx, record(&rvm, 1, now)).await.unwrap();
        let st = setup.delivery.read().unwrap()[&rvm].clone();
        assert_eq!(
            (st.received, st.duplicates),
            (1, 1),
            "stored once, then a duplicate"
        );
        let rows = store.inner.history(&rvm, 0, i64::MAX, 10).unwrap();
        assert_eq!(rows.len(), 1);
        let s = stats.snapshot();
        assert_eq!((s.accepted, s.duplicates, s.refused_batches), (1, 1, 1));
        stop.store(true, Ordering::Release);
    }
}
