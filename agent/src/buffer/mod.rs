//! Store-and-forward buffer: every record an agent makes stays on disk until the broker has
//! acknowledged it.
//!
//! # Invariants
//!
//! 1. **A record leaves the store only after PUBACK** (or when a cap drops it on purpose, which
//!    is counted and reported as an `RecordsDropped` event). There is no other delete.
//! 2. **seq is allocated here**, once per record, strictly increasing per device, and never
//!    reused, not even after a `kill -9`. A record can be published (and acknowledged) before
//!    sled has flushed it, so the seq counter cannot simply be persisted with each record: a
//!    crash would rewind it and the next records would reuse seqs the server already has (and
//!    drops as duplicates: silent loss, seen in `tests/tests/chaos.rs`). Instead seqs are
//!    *reserved* ahead in blocks of [`SEQ_RESERVE`]: the store's `last_seq` holds the end of the
//!    reservation with [`RESERVED_FLAG`] set, written and flushed synchronously before any seq
//!    past the previous reservation is handed out (one flush per `SEQ_RESERVE / 2` records). On
//!    open after an unclean stop the counter resumes past the reservation and the seqs that may
//!    have been lost (allocated but not yet flushed when the process died, or never used) are
//!    reported as dropped with that reason, by an event stored (durably) on open.
//!    [`Buffer::close`] writes the exact last seq, so a clean stop skips nothing. On open the
//!    counter resumes from `max(last_seq, highest seq stored)`.
//! 3. **Order**: records are kept by (class, seq). Health, events and command results
//!    (class 0) are sent before telemetry (class 1); within a class, in seq order.
//! 4. **Caps**: at most `max_records` records and `max_bytes` bytes of values. Over a cap, the
//!    [`FullPolicy`] decides: drop the oldest telemetry (default) or refuse the newest. Priority
//!    records are dropped only if no telemetry is left. Near the cap (above
//!    [`THIN_AT`] of it) telemetry is thinned: only every `thin_keep_every`-th telemetry
//!    record is kept, so an outage degrades resolution before it loses a stretch of history.
//!
//! 5. **A failing store does not stop the agent.** When the store refuses a write (disk full,
//!    IO error: sled then refuses every later write until the process restarts), new records
//!    are kept in memory ([`VOLATILE_MAX_RECORDS`] at most, oldest telemetry dropped first and
//!    reported) and sent from there, and a critical event says what failed, so the server
//!    hears about it. Such records are not durable, and a crash in that state may reuse seqs
//!    (no reservation can be flushed).
//! 6. **Drops are reported coalesced, and never lost.** Over a cap every tick drops a record,
//!    and an event per drop would fill the buffer with reports. The count of drops not yet
//!    reported is kept in the store beside the records (written with each drop, so it is as
//!    durable as the drop itself) and appended as one `RecordsDropped` event at most every
//!    [`DROP_EVENT_EVERY_MS`], when collection stops, on a clean stop and, for drops counted
//!    before a crash, on the next open. A crash between appending the event and clearing the
//!    count reports those drops twice: over-counted, never lost.
//! 7. **A restart of the buffer actor loses nothing acknowledged and deletes nothing
//!    unacknowledged.** The actor closes the buffer however it stops (after a panic without
//!    trusting its counts) and the next incarnation reopens the same store: see
//!    [`actor`].
//!
//! # Durability
//!
//! An append is in sled's memory at once and on disk after the next flush, which the buffer
//! actor runs on a blocking thread. With [`FlushPolicy::EveryRecord`] a flush follows every
//! append (appends that arrive during one share the next), so a power loss loses at most the
//! records of the last moment; with [`FlushPolicy::Batched`] the actor flushes every `ms`
//! milliseconds when anything changed, which is the power-loss window. Acks need no flush of
//! their own: a lost delete only means a duplicate, which the server drops by (device, seq).
//!
//! # Layout
//!
//! - [`queue`]: [`Buffer`], the pure core over a [`Store`]: seq allocation and reservation,
//!   caps and thinning, drop accounting, the in-memory overflow
//! - [`store`]: the [`Store`] trait, sled on a real machine, memory for simulated ones
//! - [`actor`]: the buffer actor, which owns the [`Buffer`], flushes it and survives restarts
//! - [`handle`]: [`BufferHandle`], how the collector, health, recovery and the link reach it
//! - [`config`]: the `[buffer]` section

pub mod actor;
pub mod config;
pub mod handle;
pub mod queue;
pub mod store;

pub use actor::{Body, BufferParts, CallError, FlushError};
pub use handle::BufferHandle;

pub use queue::{
    Appended, Buffer, BufferError, BufferStats, Caps, DROP_EVENT_EVERY_MS, FlushPolicy, FullPolicy,
    RESERVED_FLAG, Record, ReopenFailed, SEQ_RESERVE, THIN_AT, UNCLEAN_STOP_REASON, VOLATILE_DROP_REASON,
    VOLATILE_MAX_RECORDS,
};
pub use store::{Flusher, Key, MemStore, SledStore, Store, StoreError};
