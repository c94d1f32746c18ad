//! The buffer's core (pure bookkeeping over a [`Store`]): seq allocation and reservation,
//! caps, thinning, drop accounting and the in-memory overflow of a failing store. The
//! invariants it keeps are in the module doc of [`crate::buffer`].

use common::codec::{self, CodecError};
use common::topics::Kind;
use common::{DeviceId, Envelope, Event, EventKind, Severity};
use serde::Serialize;

use super::store::{Flusher, Key, Store, StoreError};

/// Above this fraction of a cap, telemetry is thinned.
pub const THIN_AT: f64 = 0.9;
/// One drop event at most this often while records keep being dropped (invariant 6).
pub const DROP_EVENT_EVERY_MS: i64 = 10_000;

/// Seqs reserved ahead of use (invariant 2): at most this many (plus one) are reported as
/// possibly lost after a crash, and one synchronous flush is paid every half of it (every
/// 32 s at one record a second; sled's own background flush runs every 500 ms anyway).
pub const SEQ_RESERVE: u64 = 64;
/// Set in the stored `last_seq` while it is a reservation rather than the exact last seq.
pub const RESERVED_FLAG: u64 = 1 << 63;
/// Records kept in memory at most while the store refuses writes (invariant 5).
pub const VOLATILE_MAX_RECORDS: usize = 2_000;
/// Reason of the drops while the store refuses writes.
pub const VOLATILE_DROP_REASON: &str =
    "store not writable and the in-memory overflow is full: oldest dropped";

/// Reason of the drop reported after an unclean stop.
pub const UNCLEAN_STOP_REASON: &str =
    "process killed before its buffer was flushed: records not yet acknowledged may be lost";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FullPolicy {
    DropOldest,
    RefuseNewest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    EveryRecord,
    Batched { ms: u64 },
}

#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub max_records: u64,
    pub max_bytes: u64,
    pub policy: FullPolicy,
    /// Keep one telemetry record in this many when above [`THIN_AT`] of a cap (1 = no thinning).
    pub thin_keep_every: u64,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            max_records: 500_000,
            max_bytes: 256 << 20,
            policy: FullPolicy::DropOldest,
            thin_keep_every: 4,
        }
    }
}

/// The kind byte stored in front of each payload.
fn kind_byte(kind: Kind) -> u8 {
    match kind {
        Kind::Telemetry => 0,
        Kind::Health => 1,
        Kind::Event => 2,
        Kind::State => 3,
        Kind::Cmd => 4,
        Kind::CmdResult => 5,
    }
}

fn kind_of(b: u8) -> Option<Kind> {
    Kind::ALL.into_iter().find(|k| kind_byte(*k) == b)
}

fn class_of(kind: Kind) -> u8 {
    if kind == Kind::Telemetry {
        Key::TELEMETRY
    } else {
        Key::PRIORITY
    }
}

/// A stored record ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub key: Key,
    pub kind: Kind,
    pub payload: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("buffer is full ({0}); record refused")]
    Full(&'static str),
}

/// What happened to an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    Stored {
        seq: u64,
    },
    /// Thinned away (counted as dropped).
    Thinned {
        seq: u64,
    },
}

/// Counters, reported in status and health.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BufferStats {
    pub records: u64,
    pub bytes: u64,
    pub appended: u64,
    pub acked: u64,
    pub dropped: u64,
    pub refused: u64,
    pub last_seq: u64,
    pub disk_bytes: u64,
}

/// Drops not yet reported to the server; kept in the store beside the records (invariant 6).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct PendingDrops {
    count: u64,
    first_seq: u64,
    last_seq: u64,
    reason: String,
}

fn drop_event(d: &PendingDrops) -> Event {
    Event {
        severity: Severity::Warning,
        kind: EventKind::RecordsDropped {
            count: d.count,
            first_seq: d.first_seq,
            last_seq: d.last_seq,
            reason: d.reason.clone(),
        },
        message: format!("{} records dropped: {}", d.count, d.reason),
    }
}

/// The buffer's state: owned by the buffer actor (see [`crate::buffer::actor`]), or by a test.
pub struct Buffer<S: Store = Box<dyn Store>> {
    device: DeviceId,
    flush: FlushPolicy,
    store: S,
    caps: Caps,
    next_seq: u64,
    stats: BufferStats,
    pending_drops: Option<PendingDrops>,
    /// When the last drop event was appended (invariant 6).
    last_drop_event_ms: Option<i64>,
    telemetry_seen_near_cap: u64,
    /// Seqs up to this are covered by a durable reservation (invariant 2).
    reserved: u64,
    /// Records the store refused, kept in memory until acknowledged (invariant 5).
    volatile: std::collections::BTreeMap<Key, Vec<u8>>,
    /// Why the store refuses writes, once it did; the event to report it, until taken.
    store_error: Option<String>,
    store_alarm: Option<Event>,
}

/// What a restarted buffer keeps from the one it replaces: what only memory holds (records
/// and drops the store refused, the alarm not yet reported) and the process's counters.
#[derive(Default)]
struct Carried {
    appended: u64,
    acked: u64,
    dropped: u64,
    refused: u64,
    volatile: std::collections::BTreeMap<Key, Vec<u8>>,
    store_error: Option<String>,
    store_alarm: Option<Event>,
    /// Only when the store refused writes: otherwise they are in the store (invariant 6).
    pending_drops: Option<PendingDrops>,
}

/// A buffer whose store could not be read again, unchanged.
pub struct ReopenFailed<S: Store> {
    pub error: BufferError,
    pub buffer: Buffer<S>,
}

impl<S: Store> Buffer<S> {
    pub fn open(device: DeviceId, store: S, caps: Caps, flush: FlushPolicy) -> Result<Self, BufferError> {
        let opening = read_opening(&device, &store, &Default::default())?;
        let (buffer, reported) = Self::build(device, store, caps, flush, opening, Carried::default());
        reported?;
        Ok(buffer)
    }

    /// A fresh start on the same store, as after a restart of the process but without one:
    /// counts, last seq and unreported drops are read again from the store, while what only
    /// memory holds and the counters are kept. The buffer actor calls it when it is restarted,
    /// after [`Buffer::close`] (or [`Buffer::close_after_panic`]) of the previous one. When the
    /// store cannot be read, the buffer comes back unchanged with the error.
    pub fn reopen(self) -> Result<Self, Box<ReopenFailed<S>>> {
        let opening = match read_opening(&self.device, &self.store, &self.volatile) {
            Ok(o) => o,
            Err(error) => return Err(Box::new(ReopenFailed { error, buffer: self })),
        };
        let Buffer {
            device,
            flush,
            store,
            caps,
            stats,
            pending_drops,
            volatile,
            store_error,
            store_alarm,
            ..
        } = self;
        let carried = Carried {
            appended: stats.appended,
            acked: stats.acked,
            dropped: stats.dropped,
            refused: stats.refused,
            pending_drops: pending_drops.filter(|_| store_error.is_some()),
            volatile,
            store_error,
            store_alarm,
        };
        let (buffer, reported) = Self::build(device, store, caps, flush, opening, carried);
        if let Err(e) = reported {
            // the drops stay pending (in the store): reported with the next drop event
            tracing::error!(device = %buffer.device, error = %e, "drop report not stored at reopen");
        }
        Ok(buffer)
    }

    /// The buffer from what the open read, and the result of storing its drop reports.
    fn build(
        device: DeviceId,
        store: S,
        caps: Caps,
        flush: FlushPolicy,
        opening: Opening,
        carried: Carried,
    ) -> (Self, Result<(), BufferError>) {
        let Opening {
            mut stats,
            highest,
            unclean,
            earlier,
        } = opening;
        stats.appended += carried.appended;
        stats.acked += carried.acked;
        stats.dropped += carried.dropped;
        stats.refused += carried.refused;
        let mut buffer = Buffer {
            device,
            flush,
            store,
            caps,
            next_seq: highest + 1,
            stats,
            pending_drops: carried.pending_drops,
            last_drop_event_ms: None,
            telemetry_seen_near_cap: 0,
            reserved: highest,
            volatile: carried.volatile,
            store_error: carried.store_error,
            store_alarm: carried.store_alarm,
        };
        let reported = buffer.report_opening(unclean, earlier);
        (buffer, reported)
    }

    /// The reports go into the store at once, made durable by the reservation's flush: kept
    /// in memory until the next tick, another crash would lose them for good.
    fn report_opening(
        &mut self,
        unclean: Option<PendingDrops>,
        earlier: Option<PendingDrops>,
    ) -> Result<(), BufferError> {
        if let Some(d) = earlier {
            self.append(Kind::Event, common::time::now_ms(), &drop_event(&d))?;
            self.persist_pending();
        }
        if let Some(d) = unclean {
            let event = Event {
                message: format!("up to {} records dropped: {}", d.count, d.reason),
                ..drop_event(&d)
            };
            self.append(Kind::Event, common::time::now_ms(), &event)?;
        }
        Ok(())
    }

    pub fn device(&self) -> &DeviceId {
        &self.device
    }

    pub fn flush_policy(&self) -> FlushPolicy {
        self.flush
    }

    /// Wraps `body` in an envelope with the next seq and stores it.
    pub fn append<T: Serialize>(
        &mut self,
        kind: Kind,
        ts_ms: i64,
        body: &T,
    ) -> Result<Appended, BufferError> {
        let seq = self.next_seq;
        if let Err(e) = self.reserve_through(seq) {
            self.store_failed(&e);
        }
        let env = Envelope::new(self.device.clone(), seq, ts_ms, body);
        let payload = codec::encode(&env)?;
        let class = class_of(kind);
        let size = payload.len() as u64 + 1;

        // Thinning near the cap: telemetry only.
        if class == Key::TELEMETRY && self.near_cap(size) && self.caps.thin_keep_every > 1 {
            self.telemetry_seen_near_cap += 1;
            if !self
                .telemetry_seen_near_cap
                .is_multiple_of(self.caps.thin_keep_every)
            {
                self.next_seq += 1;
                self.stats.last_seq = seq;
                self.note_drop(seq, seq, "thinned near buffer cap");
                return Ok(Appended::Thinned { seq });
            }
        }
        // Make room (or refuse).
        if self.over_cap(size) {
            match self.caps.policy {
                FullPolicy::RefuseNewest => {
                    self.stats.refused += 1;
                    self.note_drop(seq, seq, "buffer full, newest refused");
                    self.next_seq += 1;
                    self.stats.last_seq = seq;
                    return Err(BufferError::Full("refuse_newest"));
                }
                FullPolicy::DropOldest => self.drop_oldest_for(size)?,
            }
        }
        let mut value = Vec::with_capacity(payload.len() + 1);
        value.push(kind_byte(kind));
        value.extend_from_slice(&payload);
        let key = Key { class, seq };
        if self.store_error.is_some() {
            self.keep_volatile(key, value.clone());
        } else if let Err(e) = self.store.insert(key, &value) {
            self.store_failed(&e);
            self.keep_volatile(key, value.clone());
        }
        self.next_seq += 1;
        self.stats.records += 1;
        self.stats.bytes += value.len() as u64;
        self.stats.appended += 1;
        self.stats.last_seq = seq;
        if !self.near_cap(0) {
            self.telemetry_seen_near_cap = 0;
        }
        Ok(Appended::Stored { seq })
    }

    /// Up to `n` records of `class` after seq `after`, in order.
    pub fn next(&self, class: u8, after: Option<u64>, n: usize) -> Result<Vec<Record>, BufferError> {
        let mut rows = match self.store.scan(class, after, n) {
            Ok(r) => r,
            Err(_) if !self.volatile.is_empty() => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        if !self.volatile.is_empty() {
            // merge what the store refused, in seq order (invariant 5)
            let from = Key {
                class,
                seq: after.map_or(0, |a| a.saturating_add(1)),
            };
            let to = Key { class, seq: u64::MAX };
            rows.extend(
                self.volatile
                    .range(from..=to)
                    .take(n)
                    .map(|(k, v)| (*k, v.clone())),
            );
            rows.sort_by_key(|(k, _)| *k);
            rows.truncate(n);
        }
        let mut out = Vec::with_capacity(rows.len());
        for (key, mut v) in rows {
            let Some(kind) = v.first().copied().and_then(kind_of) else {
                return Err(StoreError::Corrupt(key.to_bytes().to_vec()).into());
            };
            v.remove(0);
            out.push(Record {
                key,
                kind,
                payload: v,
            });
        }
        Ok(out)
    }

    /// The broker acknowledged this record: forget it.
    pub fn ack(&mut self, key: Key) -> Result<bool, BufferError> {
        if let Some(v) = self.volatile.remove(&key) {
            self.stats.records -= 1;
            self.stats.bytes -= v.len() as u64;
            self.stats.acked += 1;
            return Ok(true);
        }
        match self.store.remove(key)? {
            Some(n) => {
                self.stats.records -= 1;
                self.stats.bytes -= n as u64;
                self.stats.acked += 1;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Blocking: make everything durable. The buffer actor flushes on a blocking thread
    /// through [`Buffer::flusher`] instead.
    pub fn flush(&self) -> Result<(), BufferError> {
        self.store.flush()?;
        Ok(())
    }

    /// What makes the store durable from another thread; `None` for a store in memory.
    pub fn flusher(&self) -> Option<Flusher> {
        self.store.flusher()
    }

    /// Blocking: a clean stop. Writes the exact last seq in place of the reservation and
    /// flushes, so the next open skips no seq (invariant 2). Appending afterwards is allowed
    /// (it takes a new reservation).
    pub fn close(&mut self) -> Result<(), BufferError> {
        self.append_drop_event(common::time::now_ms(), true)?;
        // records kept in memory are not in the store: its count would be wrong
        if self.store_error.is_none() && self.volatile.is_empty() {
            let (records, bytes) = (self.stats.records, self.stats.bytes);
            self.store.save_counts(records, bytes)?;
        }
        self.seal()
    }

    /// Blocking: the stop of a buffer whose owner panicked. As [`Buffer::close`], except that
    /// its counts are not kept (a panic may have come between a store write and the count
    /// that follows it): the next open counts the records in the store.
    pub fn close_after_panic(&mut self) -> Result<(), BufferError> {
        self.seal()
    }

    /// The exact last seq in place of the reservation, flushed.
    fn seal(&mut self) -> Result<(), BufferError> {
        let last = self.next_seq - 1;
        self.store.set_last_seq(last)?;
        self.store.flush()?;
        self.reserved = last;
        Ok(())
    }

    /// Counters and state, with the disk space of the store (which asks the filesystem).
    pub fn stats(&self) -> BufferStats {
        BufferStats {
            disk_bytes: self.store.disk_bytes(),
            ..self.counters()
        }
    }

    /// Counters and state without the disk space (`disk_bytes` 0): cheap, for every message.
    pub fn counters(&self) -> BufferStats {
        BufferStats {
            disk_bytes: 0,
            ..self.stats.clone()
        }
    }

    /// Bytes the store takes on disk (asks the filesystem).
    pub fn disk_bytes(&self) -> u64 {
        self.store.disk_bytes()
    }

    /// Why the store refuses writes, if it did (invariant 5).
    pub fn store_error(&self) -> Option<String> {
        self.store_error.clone()
    }

    /// Records kept in memory because the store refused them (invariant 5).
    pub fn volatile_records(&self) -> usize {
        self.volatile.len()
    }

    /// Drops not yet reported, or a store that started refusing writes, as an event to append
    /// (and clears it). `None` if none.
    pub fn take_drop_event(&mut self) -> Option<Event> {
        if let Some(alarm) = self.store_alarm.take() {
            return Some(alarm);
        }
        let d = self.pending_drops.take()?;
        self.persist_pending();
        Some(drop_event(&d))
    }

    /// Appends what [`Buffer::take_drop_event`] gives when it is due: at most one drop event
    /// every [`DROP_EVENT_EVERY_MS`], unless `now` (collection stops) or a failing store is to
    /// be reported (invariant 6). Makes room for the event first: the records dropped for that
    /// room are counted in the same event. Appending the event could otherwise drop a record
    /// itself, a drop reported only with the next append, which never comes when collection
    /// stops there (seen as one seq missing and unreported).
    pub fn append_drop_event(&mut self, ts_ms: i64, now: bool) -> Result<Option<Appended>, BufferError> {
        let due = now
            || self.store_alarm.is_some()
            || self
                .last_drop_event_ms
                .is_none_or(|t| ts_ms < t || ts_ms - t >= DROP_EVENT_EVERY_MS);
        if !due || (self.pending_drops.is_none() && self.store_alarm.is_none()) {
            return Ok(None);
        }
        if self.caps.policy == FullPolicy::DropOldest
            && self.store_error.is_none()
            && self.store_alarm.is_none()
            && let Some(d) = &self.pending_drops
        {
            // as large as this event can get: counts and seqs at their widest, and slack
            // for a longer reason than the current one
            let widest = drop_event(&PendingDrops {
                count: u64::MAX,
                first_seq: u64::MAX,
                last_seq: u64::MAX,
                reason: d.reason.clone(),
            });
            let env = Envelope::new(self.device.clone(), u64::MAX, ts_ms, &widest);
            let size = codec::encode(&env)?.len() as u64 + 1 + 64;
            self.drop_oldest_for(size)?;
        }
        let Some(ev) = self.take_drop_event() else {
            return Ok(None);
        };
        if let EventKind::RecordsDropped {
            count,
            first_seq,
            last_seq,
            reason,
        } = &ev.kind
        {
            tracing::warn!(count, first_seq, last_seq, reason = %reason, "buffer dropped records");
        }
        let appended = self.append(Kind::Event, ts_ms, &ev);
        self.last_drop_event_ms = Some(ts_ms);
        // drops the append itself made stay pending, and kept
        self.persist_pending();
        appended.map(Some)
    }
}

/// What an open reads from the store.
struct Opening {
    stats: BufferStats,
    /// The highest seq ever handed out, as far as the store (and memory) knows.
    highest: u64,
    /// Seqs a stop without [`Buffer::close`] may have lost (invariant 2).
    unclean: Option<PendingDrops>,
    /// Drops counted before the last stop and not reported then (invariant 6).
    earlier: Option<PendingDrops>,
}

fn read_opening<S: Store>(
    device: &DeviceId,
    store: &S,
    volatile: &std::collections::BTreeMap<Key, Vec<u8>>,
) -> Result<Opening, BufferError> {
    let (mut records, mut bytes) = store.count_and_bytes()?;
    records += volatile.len() as u64;
    bytes += volatile.values().map(|v| v.len() as u64).sum::<u64>();
    let stored_last = store.last_seq()?.unwrap_or(0);
    // A reservation left behind: the last run did not stop cleanly (invariant 2).
    let reservation = (stored_last & RESERVED_FLAG != 0).then_some(stored_last & !RESERVED_FLAG);
    let mut highest = stored_last & !RESERVED_FLAG;
    let mut highest_record = volatile.keys().map(|k| k.seq).max().unwrap_or(0);
    for class in [Key::PRIORITY, Key::TELEMETRY] {
        if let Some(k) = store.last(class)? {
            highest_record = highest_record.max(k.seq);
        }
    }
    highest = highest.max(highest_record);
    let mut stats = BufferStats {
        records,
        bytes,
        last_seq: highest,
        disk_bytes: store.disk_bytes(),
        ..Default::default()
    };
    // Everything below the reservation's block was flushed when it was taken; what lies
    // between that, the last stored record and the reservation's end may be lost.
    let unclean = reservation.filter(|r| *r > highest_record).map(|r| {
        let first = (highest_record + 1).max(r.saturating_sub(SEQ_RESERVE)).max(1);
        stats.dropped += r - first + 1;
        tracing::warn!(device = %device, first_seq = first, last_seq = r, reason = UNCLEAN_STOP_REASON, "buffer dropped records");
        PendingDrops {
            count: r - first + 1,
            first_seq: first,
            last_seq: r,
            reason: UNCLEAN_STOP_REASON.to_string(),
        }
    });
    let earlier = match store.pending_drops()? {
        Some(v) => match codec::decode_bare::<PendingDrops>(&v) {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::error!(error = %e, "unreadable pending drop count ignored");
                None
            }
        },
        None => None,
    };
    Ok(Opening {
        stats,
        highest,
        unclean,
        earlier,
    })
}

impl<S: Store> Buffer<S> {
    /// The store refused a write: from now on new records stay in memory (invariant 5).
    fn store_failed(&mut self, e: &StoreError) {
        if self.store_error.is_none() {
            tracing::error!(error = %e, "buffer store refuses writes; keeping new records in memory");
            self.store_error = Some(e.to_string());
            self.store_alarm = Some(Event {
                severity: Severity::Critical,
                kind: EventKind::Note,
                message: format!(
                    "buffer store refuses writes ({e}); new records are kept in memory (at most \
                     {VOLATILE_MAX_RECORDS}, not durable) until the agent restarts with a writable disk"
                ),
            });
        }
    }

    /// Keeps a refused record in memory, dropping the oldest (telemetry first) past the cap.
    fn keep_volatile(&mut self, key: Key, value: Vec<u8>) {
        while self.volatile.len() >= VOLATILE_MAX_RECORDS {
            let victim = self
                .volatile
                .range(
                    Key {
                        class: Key::TELEMETRY,
                        seq: 0,
                    }..,
                )
                .next()
                .map(|(k, _)| *k)
                .or_else(|| self.volatile.keys().next().copied());
            let Some(vk) = victim else { break };
            if let Some(v) = self.volatile.remove(&vk) {
                self.stats.records -= 1;
                self.stats.bytes -= v.len() as u64;
                self.note_drop(vk.seq, vk.seq, VOLATILE_DROP_REASON);
            }
        }
        self.volatile.insert(key, value);
    }

    /// Makes sure `seq` is covered by a durable reservation, taking the next block (and
    /// flushing: every record before `seq` becomes durable too) when half of it is used.
    fn reserve_through(&mut self, seq: u64) -> Result<(), StoreError> {
        if seq + SEQ_RESERVE / 2 <= self.reserved || self.store_error.is_some() {
            return Ok(());
        }
        let end = seq + SEQ_RESERVE;
        self.store.set_last_seq(end | RESERVED_FLAG)?;
        self.store.flush()?;
        self.reserved = end;
        Ok(())
    }

    fn over_cap(&self, incoming: u64) -> bool {
        self.stats.records + 1 > self.caps.max_records || self.stats.bytes + incoming > self.caps.max_bytes
    }

    fn near_cap(&self, incoming: u64) -> bool {
        (self.stats.records + 1) as f64 > self.caps.max_records as f64 * THIN_AT
            || (self.stats.bytes + incoming) as f64 > self.caps.max_bytes as f64 * THIN_AT
    }

    /// Drops the oldest telemetry (else the oldest priority) records until `size` more bytes
    /// and one more record fit, each counted and noted for the next drop event.
    fn drop_oldest_for(&mut self, size: u64) -> Result<(), StoreError> {
        while self.over_cap(size) {
            let victim = match self.store.first(Key::TELEMETRY)? {
                Some(v) => Some(v),
                None => self.store.first(Key::PRIORITY)?,
            };
            let Some((vk, _)) = victim else { break };
            match self.store.remove(vk) {
                Ok(Some(n)) => {
                    self.stats.records -= 1;
                    self.stats.bytes -= n as u64;
                    self.note_drop(vk.seq, vk.seq, "buffer full, oldest dropped");
                }
                Ok(None) => {}
                // a store that refuses writes cannot make room (invariant 5)
                Err(e) => {
                    self.store_failed(&e);
                    break;
                }
            }
        }
        Ok(())
    }

    fn note_drop(&mut self, first: u64, last: u64, reason: &'static str) {
        self.stats.dropped += last - first + 1;
        tracing::debug!(
            first_seq = first,
            last_seq = last,
            reason,
            "buffer dropped records"
        );
        match &mut self.pending_drops {
            Some(d) => {
                d.count += last - first + 1;
                d.first_seq = d.first_seq.min(first);
                d.last_seq = d.last_seq.max(last);
                if d.reason != reason {
                    d.reason = reason.to_string();
                }
            }
            None => {
                self.pending_drops = Some(PendingDrops {
                    count: last - first + 1,
                    first_seq: first,
                    last_seq: last,
                    reason: reason.to_string(),
                })
            }
        }
        self.persist_pending();
    }

    /// Writes the unreported drops beside the records (or clears them), so a crash before
    /// their event is appended does not lose them (invariant 6).
    fn persist_pending(&mut self) {
        if self.store_error.is_some() {
            return;
        }
        let res = match &self.pending_drops {
            Some(d) => match codec::encode(d) {
                Ok(v) => self.store.set_pending_drops(Some(&v)),
                Err(e) => {
                    tracing::error!(error = %e, "pending drop count not encoded");
                    return;
                }
            },
            None => self.store.set_pending_drops(None),
        };
        if let Err(e) = res {
            self.store_failed(&e);
        }
    }
}

#[cfg(test)]
mod tests {
    use common::Telemetry;

    use super::*;
    use crate::buffer::store::{MemStore, SledStore};

    /// A record an agent of schema 1 buffered before it was upgraded: the buffer keeps the
    /// bytes it was given, so after the upgrade the same bytes are published, and the server
    /// decodes them as schema 1 (`codec::decode_telemetry`).
    #[test]
    fn a_schema_1_record_buffered_before_an_upgrade_is_sent_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let dev = DeviceId::new("t1").unwrap();
        let old = {
            let mut env = Envelope::new(
                dev.clone(),
                1,
                7,
                common::TelemetryV1 {
                    uptime_s: 4242,
                    ..Default::default()
                },
            );
            env.schema = 1;
            codec::encode(&env).unwrap()
        };
        {
            // what the old agent left on disk: its record 1 and its seq bookkeeping
            let mut b = Buffer::open(
                dev.clone(),
                SledStore::open(&path, None).unwrap(),
                Caps::default(),
                FlushPolicy::EveryRecord,
            )
            .unwrap();
            assert_eq!(
                b.append(Kind::Telemetry, 7, &Telemetry::default()).unwrap(),
                Appended::Stored { seq: 1 }
            );
            b.close().unwrap();
            drop(b);
            let mut s = SledStore::open(&path, None).unwrap();
            let mut value = vec![kind_byte(Kind::Telemetry)];
            value.extend_from_slice(&old);
            s.insert(
                Key {
                    class: Key::TELEMETRY,
                    seq: 1,
                },
                &value,
            )
            .unwrap();
            s.flush().unwrap();
        }
        // the upgraded agent opens the same buffer and appends schema-2 records after it
        let mut b = Buffer::open(
            dev,
            SledStore::open(&path, None).unwrap(),
            Caps::default(),
            FlushPolicy::EveryRecord,
        )
        .unwrap();
        b.append(Kind::Telemetry, 8, &Telemetry::default()).unwrap();
        let out = b.next(Key::TELEMETRY, None, 10).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].payload, old, "published byte for byte");
        let first = codec::decode_telemetry(&out[0].payload).unwrap();
        assert_eq!((first.schema, first.seq, first.body.uptime_s), (1, 1, 4242));
        let second = codec::decode_telemetry(&out[1].payload).unwrap();
        assert_eq!((second.schema, second.seq), (common::SCHEMA_VERSION, 2));
    }

    fn build_buffer(caps: Caps) -> Buffer<MemStore> {
        Buffer::open(
            DeviceId::new("t1").unwrap(),
            MemStore::default(),
            caps,
            FlushPolicy::EveryRecord,
        )
        .unwrap()
    }

    fn ev() -> Event {
        Event {
            severity: Severity::Info,
            kind: EventKind::Note,
            message: "x".into(),
        }
    }

    #[test]
    fn seq_increases_and_priority_records_come_first() {
        let mut b = build_buffer(Caps::default());
        b.append(Kind::Telemetry, 1, &Telemetry::default()).unwrap();
        b.append(Kind::Event, 2, &ev()).unwrap();
        let p = b.next(Key::PRIORITY, None, 10).unwrap();
        let t = b.next(Key::TELEMETRY, None, 10).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].key.seq, 2);
        assert_eq!(p[0].kind, Kind::Event);
        assert_eq!(t[0].key.seq, 1);
        let env: Envelope<Telemetry> = codec::decode(&t[0].payload).unwrap();
        assert_eq!(env.seq, 1);
    }

    #[test]
    fn a_record_leaves_only_when_acked() {
        let mut b = build_buffer(Caps::default());
        b.append(Kind::Telemetry, 1, &Telemetry::default()).unwrap();
        let r = b.next(Key::TELEMETRY, None, 10).unwrap();
        assert_eq!(b.stats().records, 1);
        assert!(b.ack(r[0].key).unwrap());
        assert!(!b.ack(r[0].key).unwrap(), "second ack of the same key is a no-op");
        assert_eq!(b.stats().records, 0);
    }

    #[test]
    fn seq_resumes_after_reopen_even_when_everything_was_acked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let dev = DeviceId::new("t1").unwrap();
        {
            let mut b = Buffer::open(
                dev.clone(),
                SledStore::open(&path, None).unwrap(),
                Caps::default(),
                FlushPolicy::EveryRecord,
            )
            .unwrap();
            for _ in 0..3 {
                b.append(Kind::Telemetry, 1, &Telemetry::default()).unwrap();
            }
            for r in b.next(Key::TELEMETRY, None, 10).unwrap() {
                b.ack(r.key).unwrap();
            }
            b.close().unwrap();
        }
        let mut b = Buffer::open(
            dev,
            SledStore::open(&path, None).unwrap(),
            Caps::default(),
            FlushPolicy::EveryRecord,
        )
        .unwrap();
        assert_eq!(
            b.append(Kind::Telemetry, 1, &Telemetry::default()).unwrap(),
            Appended::Stored { seq: 4 }
        );
    }

    #[test]
    fn after_an_unclean_stop_no_seq_is_reused_and_the_possibly_lost_ones_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b");
        let dev = DeviceId::new("t1").unwrap();
        let open = || {
            Buffer::open(
                dev.clone(),
                SledStore::open(&path, None).unwrap(),
                Caps::default(),
                FlushPolicy::Batched { ms: 500 },
            )
            .unwrap()
        };
        {
            let mut b = open();
            for _ in 0..300 {
                b.append(Kind::Telemetry, 1, &Telemetry::default()).unwrap();
            }
            for r in b.next(Key::TELEMETRY, None, 1000).unwrap() {
                b.ack(r.key).unwrap();
            }
            // dropped without close(): what a kill -9 leaves (at best)
        }
        let mut b = open();
        // the report is the first record after the skipped seqs, already in the store
        let first = b.next(Key::PRIORITY, None, 10).unwrap();
        assert_eq!(first.len(), 1, "one drop report");
        let report: common::Envelope<Event> = codec::decode(&first[0].payload).unwrap();
        let Appended::Stored { seq } = b.append(Kind::Telemetry, 1, &Telemetry::default()).unwrap() else {
            panic!("stored");
        };
        assert!(seq > 300, "seq {seq} reuses one handed out before the stop");
        assert_eq!(report.seq, seq - 1);
        let EventKind::RecordsDropped {
            count,
            first_seq,
            last_seq,
            reason,
        } = report.body.kind
        else {
            panic!("{report:?}");
        };
        assert_eq!(last_seq, seq - 2);
        assert_eq!(count, last_seq - first_seq + 1);
        assert!(
            first_seq <= 301 && count <= SEQ_RESERVE + 1,
            "{first_seq}..={last_seq}"
        );
        assert_eq!(reason, UNCLEAN_STOP_REASON);
        b.close().unwrap();
        drop(b);
        let mut b = open();
        assert!(b.take_drop_event().is_none(), "a clean stop reports nothing");
        assert_eq!(
            b.append(Kind::Telemetry, 1, &Telemetry::default()).unwrap(),
            Appended::Stored { seq: seq + 1 }
        );
    }

    /// A store whose writes fail once `full` is set, as sled's do on a full disk.
    struct FullDisk {
        inner: MemStore,
        full: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }

    impl FullDisk {
        fn check(&self) -> Result<(), StoreError> {
            if self.full.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(StoreError::Corrupt(b"No space left on device".to_vec()));
            }
            Ok(())
        }
    }

    impl Store for FullDisk {
        fn insert(&mut self, key: Key, value: &[u8]) -> Result<(), StoreError> {
            self.check()?;
            self.inner.insert(key, value)
        }
        fn remove(&mut self, key: Key) -> Result<Option<usize>, StoreError> {
            self.check()?;
            self.inner.remove(key)
        }
        fn scan(&self, class: u8, after: Option<u64>, n: usize) -> Result<Vec<(Key, Vec<u8>)>, StoreError> {
            self.inner.scan(class, after, n)
        }
        fn first(&self, class: u8) -> Result<Option<(Key, usize)>, StoreError> {
            self.inner.first(class)
        }
        fn last(&self, class: u8) -> Result<Option<Key>, StoreError> {
            self.inner.last(class)
        }
        fn count_and_bytes(&self) -> Result<(u64, u64), StoreError> {
            self.inner.count_and_bytes()
        }
        fn last_seq(&self) -> Result<Option<u64>, StoreError> {
            self.inner.last_seq()
        }
        fn set_last_seq(&mut self, seq: u64) -> Result<(), StoreError> {
            self.check()?;
            self.inner.set_last_seq(seq)
        }
        fn pending_drops(&self) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.pending_drops()
        }
        fn set_pending_drops(&mut self, value: Option<&[u8]>) -> Result<(), StoreError> {
            self.check()?;
            self.inner.set_pending_drops(value)
        }
        fn flush(&self) -> Result<(), StoreError> {
            self.check()
        }
        fn disk_bytes(&self) -> u64 {
            0
        }
    }

    #[test]
    fn a_store_that_refuses_writes_keeps_records_in_memory_sends_them_and_says_so() {
        let full = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let store = FullDisk {
            inner: MemStore::default(),
            full: full.clone(),
        };
        let mut b = Buffer::open(
            DeviceId::new("t1").unwrap(),
            store,
            Caps::default(),
            FlushPolicy::EveryRecord,
        )
        .unwrap();
        b.append(Kind::Telemetry, 1, &Telemetry::default()).unwrap();
        full.store(true, std::sync::atomic::Ordering::SeqCst);
        for _ in 0..(VOLATILE_MAX_RECORDS + 10) {
            b.append(Kind::Telemetry, 2, &Telemetry::default()).unwrap();
        }
        assert!(b.store_error().is_some());
        assert_eq!(b.volatile_records(), VOLATILE_MAX_RECORDS);
        let alarm = b.take_drop_event().expect("the failing store is reported");
        assert_eq!(alarm.severity, Severity::Critical);
        let dropped = b.take_drop_event().expect("then the drops past the cap");
        assert!(
            matches!(dropped.kind, EventKind::RecordsDropped { count: 10, .. }),
            "{dropped:?}"
        );
        // the link sees stored and in-memory records in one seq order, and acks both
        let recs = b.next(Key::TELEMETRY, None, 5).unwrap();
        assert_eq!(recs[0].key.seq, 1, "the stored one first");
        assert!(recs.windows(2).all(|w| w[0].key.seq < w[1].key.seq));
        let after = b.next(Key::TELEMETRY, Some(recs[4].key.seq), 3).unwrap();
        assert_eq!(after.len(), 3);
        assert!(after[0].key.seq > recs[4].key.seq);
        full.store(false, std::sync::atomic::Ordering::SeqCst);
        for r in b.next(Key::TELEMETRY, None, 10_000).unwrap() {
            assert!(b.ack(r.key).unwrap());
        }
        assert_eq!(b.stats().records, 0);
        assert_eq!(b.volatile_records(), 0);
    }

    #[test]
    fn a_drop_event_makes_its_own_room_so_no_drop_is_left_unreported_when_collection_stops() {
        let mut one = build_buffer(Caps::default());
        one.append(Kind::Telemetry, 0, &Telemetry::default()).unwrap();
        let record_bytes = one.stats().bytes;
        // room for 40 records by count, or for 40 telemetry records by bytes
        for caps in [
            Caps {
                max_records: 40,
                max_bytes: u64::MAX,
                policy: FullPolicy::DropOldest,
                thin_keep_every: 1,
            },
            Caps {
                max_records: u64::MAX,
                max_bytes: 40 * record_bytes,
                policy: FullPolicy::DropOldest,
                thin_keep_every: 1,
            },
        ] {
            let mut b = build_buffer(caps);
            // a collector's ticks into a full buffer (telemetry, then the drop event), then
            // it stops: the last event's own room must not be a drop nobody reports
            for t in 0..50 {
                b.append(Kind::Telemetry, t * 1000, &Telemetry::default())
                    .unwrap();
                b.append_drop_event(t * 1000, false).unwrap();
            }
            b.append_drop_event(50_000, true).unwrap();
            assert!(b.take_drop_event().is_none(), "nothing left pending: {caps:?}");
            let reported = drop_counts(&b, |_| true);
            let s = b.stats();
            assert!(s.dropped > 0 && b.stats().records > 0);
            assert_eq!(
                reported.iter().sum::<u64>(),
                s.dropped,
                "every drop is in a stored event: {caps:?}"
            );
            // 50 ticks 1 s apart: events at 0, 10, 20, 30 and 40 s, and when collection stopped
            assert!(reported.len() <= 6, "coalesced: {reported:?}");
            assert!(
                s.records <= caps.max_records && s.bytes <= caps.max_bytes,
                "{s:?}"
            );
        }
    }

    /// The counts of the stored drop events whose reason passes `keep`, oldest first.
    fn drop_counts<S: Store>(b: &Buffer<S>, keep: impl Fn(&str) -> bool) -> Vec<u64> {
        b.next(Key::PRIORITY, None, 1000)
            .unwrap()
            .iter()
            .filter_map(|r| match codec::decode::<Event>(&r.payload).ok()?.body.kind {
                EventKind::RecordsDropped { count, reason, .. } if keep(&reason) => Some(count),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn drops_not_yet_reported_survive_a_crash_and_are_reported_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let caps = Caps {
            max_records: 10,
            max_bytes: u64::MAX,
            policy: FullPolicy::DropOldest,
            thin_keep_every: 1,
        };
        let open = |caps| {
            let store = SledStore::open(dir.path(), None).unwrap();
            Buffer::open(
                DeviceId::new("t1").unwrap(),
                store,
                caps,
                FlushPolicy::EveryRecord,
            )
            .unwrap()
        };
        let dropped = {
            let mut b = open(caps);
            for t in 0..30 {
                b.append(Kind::Telemetry, t * 100, &Telemetry::default()).unwrap();
                b.append_drop_event(t * 100, false).unwrap();
            }
            // one event at the first drop; the rest are not due within 10 s
            let reported: u64 = drop_counts(&b, |_| true).iter().sum();
            b.flush().unwrap();
            let dropped = b.stats().dropped;
            assert!(reported > 0 && reported < dropped, "{reported} of {dropped}");
            dropped
            // no close: a crash
        };
        // reopened with room, so the reports appended at open drop nothing themselves
        let roomy = Caps {
            max_records: 1000,
            ..caps
        };
        let b = open(roomy);
        let reported = drop_counts(&b, |r| r != UNCLEAN_STOP_REASON);
        assert_eq!(reported.iter().sum::<u64>(), dropped, "{reported:?}");
        drop(b);
        // reported once: reopening again adds no event
        let b = open(roomy);
        assert_eq!(
            drop_counts(&b, |r| r != UNCLEAN_STOP_REASON).iter().sum::<u64>(),
            dropped
        );
    }

    #[test]
    fn counts_after_a_clean_stop_and_after_a_crash_match_what_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            let store = SledStore::open(dir.path(), None).unwrap();
            Buffer::open(
                DeviceId::new("t1").unwrap(),
                store,
                Caps::default(),
                FlushPolicy::EveryRecord,
            )
            .unwrap()
        };
        let stored = |b: &Buffer<SledStore>| {
            let all: Vec<Record> = [Key::PRIORITY, Key::TELEMETRY]
                .iter()
                .flat_map(|c| b.next(*c, None, 1000).unwrap())
                .collect();
            let bytes: u64 = all.iter().map(|r| r.payload.len() as u64 + 1).sum();
            (all.len() as u64, bytes)
        };
        let mut b = open();
        for t in 0..5 {
            b.append(Kind::Telemetry, t, &Telemetry::default()).unwrap();
        }
        b.ack(Key { class: 1, seq: 1 }).unwrap();
        b.close().unwrap();
        drop(b);
        let mut b = open();
        let s = b.stats();
        assert_eq!(
            (s.records, s.bytes),
            stored(&b),
            "from the count the clean stop kept"
        );
        assert_eq!(s.records, 4);
        b.append(Kind::Telemetry, 9, &Telemetry::default()).unwrap();
        b.flush().unwrap();
        drop(b); // a crash
        let b = open();
        let s = b.stats();
        assert_eq!((s.records, s.bytes), stored(&b), "counted after the crash");
    }

    #[test]
    fn drop_oldest_keeps_the_count_cap_and_reports_the_drops() {
        let mut b = build_buffer(Caps {
            max_records: 5,
            max_bytes: u64::MAX,
            policy: FullPolicy::DropOldest,
            thin_keep_every: 1,
        });
        for _ in 0..8 {
            b.append(Kind::Telemetry, 1, &Telemetry::default()).unwrap();
        }
        let s = b.stats();
        assert_eq!(s.records, 5);
        assert_eq!(s.dropped, 3);
        let seqs: Vec<u64> = b
            .next(Key::TELEMETRY, None, 10)
            .unwrap()
            .iter()
            .map(|r| r.key.seq)
            .collect();
        assert_eq!(seqs, vec![4, 5, 6, 7, 8]);
        match b.take_drop_event().unwrap().kind {
            EventKind::RecordsDropped {
                count,
                first_seq,
                last_seq,
                ..
            } => {
                assert_eq!((count, first_seq, last_seq), (3, 1, 3));
            }
            k => panic!("{k:?}"),
        }
        assert!(b.take_drop_event().is_none());
    }

    #[test]
    fn refuse_newest_keeps_what_is_stored() {
        let mut b = build_buffer(Caps {
            max_records: 2,
            max_bytes: u64::MAX,
            policy: FullPolicy::RefuseNewest,
            thin_keep_every: 1,
        });
        b.append(Kind::Telemetry, 1, &Telemetry::default()).unwrap();
        b.append(Kind::Telemetry, 1, &Telemetry::default()).unwrap();
        assert!(matches!(
            b.append(Kind::Telemetry, 1, &Telemetry::default()),
            Err(BufferError::Full(_))
        ));
        let seqs: Vec<u64> = b
            .next(Key::TELEMETRY, None, 10)
            .unwrap()
            .iter()
            .map(|r| r.key.seq)
            .collect();
        assert_eq!(seqs, vec![1, 2]);
        assert_eq!(b.stats().refused, 1);
    }

    #[test]
    fn telemetry_is_dropped_before_priority_records() {
        let mut b = build_buffer(Caps {
            max_records: 3,
            max_bytes: u64::MAX,
            policy: FullPolicy::DropOldest,
            thin_keep_every: 1,
        });
        b.append(Kind::Event, 1, &ev()).unwrap();
        b.append(Kind::Telemetry, 1, &Telemetry::default()).unwrap();
        b.append(Kind::Telemetry, 1, &Telemetry::default()).unwrap();
        b.append(Kind::Event, 1, &ev()).unwrap();
        assert_eq!(b.next(Key::PRIORITY, None, 10).unwrap().len(), 2);
        assert_eq!(b.next(Key::TELEMETRY, None, 10).unwrap().len(), 1);
    }

    #[test]
    fn byte_cap_is_never_exceeded() {
        let mut b = build_buffer(Caps {
            max_records: u64::MAX,
            max_bytes: 2_000,
            policy: FullPolicy::DropOldest,
            thin_keep_every: 1,
        });
        for _ in 0..200 {
            b.append(Kind::Telemetry, 1, &Telemetry::default()).unwrap();
            assert!(b.stats().bytes <= 2_000);
        }
    }

    #[test]
    fn telemetry_is_thinned_near_the_cap() {
        let mut b = build_buffer(Caps {
            max_records: 100,
            max_bytes: u64::MAX,
            policy: FullPolicy::DropOldest,
            thin_keep_every: 4,
        });
        let mut thinned = 0;
        for _ in 0..120 {
            if let Appended::Thinned { .. } = b.append(Kind::Telemetry, 1, &Telemetry::default()).unwrap() {
                thinned += 1;
            }
        }
        assert!(thinned > 0);
        assert!(b.stats().records <= 100);
        // events are never thinned
        assert!(matches!(
            b.append(Kind::Event, 1, &ev()).unwrap(),
            Appended::Stored { .. }
        ));
    }

    /// The model: what the buffer must hold, as a plain list.
    #[derive(Debug, Default)]
    struct Model {
        items: Vec<(u8, u64)>,
        next_seq: u64,
        dropped: u64,
        max_records: u64,
    }

    impl Model {
        fn append(&mut self, class: u8) {
            self.next_seq += 1;
            if self.items.len() as u64 + 1 > self.max_records {
                // drop the oldest telemetry, else the oldest priority record
                let victim = self
                    .items
                    .iter()
                    .enumerate()
                    .filter(|(_, (c, _))| *c == Key::TELEMETRY)
                    .map(|(i, _)| i)
                    .next()
                    .or_else(|| (!self.items.is_empty()).then_some(0));
                if let Some(i) = victim {
                    self.items.remove(i);
                    self.dropped += 1;
                }
            }
            self.items.push((class, self.next_seq));
            self.items.sort();
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Append {
            telemetry: bool,
        },
        /// Ack the n-th record the link would send next (priority first).
        AckNth(usize),
        /// Ack a key that is not there (a late or repeated PUBACK).
        AckMissing,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            3 => any::<bool>().prop_map(|telemetry| Op::Append { telemetry }),
            2 => (0usize..8).prop_map(Op::AckNth),
            1 => Just(Op::AckMissing),
        ]
    }

    fn check_against_model(b: &mut Buffer<Box<dyn Store>>, ops: Vec<Op>, max_records: u64) {
        let mut m = Model {
            max_records,
            ..Default::default()
        };
        for op in ops {
            match op {
                Op::Append { telemetry } => {
                    let kind = if telemetry { Kind::Telemetry } else { Kind::Event };
                    let r = if telemetry {
                        b.append(kind, 1, &Telemetry::default())
                    } else {
                        b.append(kind, 1, &ev())
                    };
                    assert!(matches!(r, Ok(Appended::Stored { .. })), "{r:?}");
                    m.append(class_of(kind));
                }
                Op::AckNth(n) => {
                    let mut all = b.next(Key::PRIORITY, None, 1000).unwrap();
                    all.extend(b.next(Key::TELEMETRY, None, 1000).unwrap());
                    if let Some(r) = all.get(n) {
                        assert!(b.ack(r.key).unwrap());
                        m.items.retain(|&(c, s)| (c, s) != (r.key.class, r.key.seq));
                    }
                }
                Op::AckMissing => {
                    assert!(
                        !b.ack(Key {
                            class: Key::TELEMETRY,
                            seq: u64::MAX
                        })
                        .unwrap()
                    );
                }
            }
            let mut got: Vec<(u8, u64)> = b
                .next(Key::PRIORITY, None, 1000)
                .unwrap()
                .iter()
                .map(|r| (r.key.class, r.key.seq))
                .collect();
            got.extend(
                b.next(Key::TELEMETRY, None, 1000)
                    .unwrap()
                    .iter()
                    .map(|r| (r.key.class, r.key.seq)),
            );
            assert_eq!(got, m.items);
            let st = b.stats();
            assert_eq!(st.records, m.items.len() as u64);
            assert_eq!(st.dropped, m.dropped);
            assert!(st.records <= max_records);
        }
        // every seq is accounted for: stored, acked or reported dropped
        let st = b.stats();
        assert_eq!(st.appended, m.next_seq);
    }

    proptest::proptest! {
        #[test]
        fn the_buffer_matches_its_model_in_memory(
            ops in proptest::collection::vec(op(), 0..120),
            max_records in 1u64..12,
        ) {
            let mut b = Buffer::open(
                DeviceId::new("m").unwrap(),
                Box::new(MemStore::default()) as Box<dyn Store>,
                Caps { max_records, max_bytes: u64::MAX, policy: FullPolicy::DropOldest, thin_keep_every: 1 },
                FlushPolicy::EveryRecord,
            ).unwrap();
            check_against_model(&mut b, ops, max_records);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        #[test]
        fn the_buffer_matches_its_model_on_sled(
            ops in proptest::collection::vec(op(), 0..80),
            max_records in 1u64..12,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut b = Buffer::open(
                DeviceId::new("m").unwrap(),
                Box::new(SledStore::open(&dir.path().join("b"), None).unwrap()) as Box<dyn Store>,
                Caps { max_records, max_bytes: u64::MAX, policy: FullPolicy::DropOldest, thin_keep_every: 1 },
                FlushPolicy::EveryRecord,
            ).unwrap();
            check_against_model(&mut b, ops, max_records);
        }
    }
}
