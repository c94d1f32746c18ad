//! The buffer actor: owns the [`Buffer`] (its store, caps and thinning), answers the appends
//! of the collector, health and recovery and the link's reads and acknowledgements, flushes
//! on its own timer, and publishes its counters ([`BufferStats`]) after every change. The
//! others reach it through a [`super::BufferHandle`] ([`BufferParts::handle`]).
//!
//! # Supervision
//!
//! Every handler body runs under `catch_unwind`: a panic answers the message with
//! [`CallError::Panicked`] and stops the actor with the panic as its exit reason; the
//! supervisor restarts it like any other child. However the actor stops (a panic, a stall,
//! shutdown, or its runtime going away), it closes the buffer on the way out: the exact last
//! seq written and flushed, so no seq is skipped or reused; after a panic without the record
//! counts, which the next open recounts from the store ([`Buffer::close_after_panic`]). The
//! closed buffer, store included, waits in a slot for the next incarnation, which reopens it
//! ([`Buffer::reopen`]): counts, last seq and unreported drops read again from the store;
//! records the store refused, and the counters, kept. So a restart loses nothing acknowledged
//! and deletes nothing unacknowledged. The sled database itself stays open across restarts
//! (the executed-command record shares it): it is the actor's state built on it that is
//! rebuilt.
//!
//! # Flushing
//!
//! Appends never wait for a flush. With [`FlushPolicy::EveryRecord`] a flush follows every
//! append, one at a time on a blocking thread (the appends that arrive while one runs share
//! the next); with [`FlushPolicy::Batched`] the actor flushes `ms` after the first change since
//! the last flush (a one-shot timer armed by that change: an idle buffer does not wake).
//! [`Flush`] waits for a flush that started after it arrived. The agent's sled store also runs
//! sled's own flush thread (`sled_thread_ms` in the runtime module): sled cleans its log only
//! there, and a store without it grows in memory and on disk.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use common::command::CommandResult;
use common::topics::Kind;
use common::{Event, HealthReport, Telemetry};
use tokio::sync::{Notify, oneshot, watch};

use super::queue::{Appended, Buffer, BufferError, BufferStats, FlushPolicy, Record};
use super::store::{Flusher, Key, StoreError};
use crate::messages::StopNow;
use crate::supervise::liveness::{Liveness, panic_message};

/// Housekeeping: liveness, drops due to be reported.
pub const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// How often the store's size on disk is measured (it asks the filesystem).
pub const DISK_EVERY: Duration = Duration::from_secs(10);
/// A flush slower than this is logged.
pub const FLUSH_SLOW: Duration = Duration::from_secs(5);

/// Why a call to the buffer actor failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Buffer(#[from] BufferError),
    #[error("the buffer actor is not running (it is being restarted)")]
    Unavailable,
    #[error("the buffer actor panicked: {0}")]
    Panicked(String),
    #[error("buffer flush failed: {0}")]
    Flush(#[from] FlushError),
}

/// Why a flush failed; every [`Flush`] request that waited for it gets the same answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FlushError {
    #[error(transparent)]
    Store(Arc<StoreError>),
    #[error("the flush thread failed: {0}")]
    Thread(String),
}

/// A record to buffer: its body says its kind (and so its topic).
#[derive(Debug, Clone)]
#[allow(
    clippy::large_enum_variant,
    reason = "sent in an Arc (see Append): its size is paid once"
)]
pub enum Body {
    Telemetry(Telemetry),
    Health(HealthReport),
    Event(Event),
    CmdResult(CommandResult),
}

impl Body {
    pub fn kind(&self) -> Kind {
        match self {
            Body::Telemetry(_) => Kind::Telemetry,
            Body::Health(_) => Kind::Health,
            Body::Event(_) => Kind::Event,
            Body::CmdResult(_) => Kind::CmdResult,
        }
    }

    fn append_to(&self, core: &mut Buffer, ts_ms: i64) -> Result<Appended, BufferError> {
        match self {
            Body::Telemetry(t) => core.append(Kind::Telemetry, ts_ms, t),
            Body::Health(h) => core.append(Kind::Health, ts_ms, h),
            Body::Event(e) => core.append(Kind::Event, ts_ms, e),
            Body::CmdResult(r) => core.append(Kind::CmdResult, ts_ms, r),
        }
    }
}

/// Where the buffer waits between two incarnations of the actor.
#[derive(Default)]
struct Slot {
    core: Option<Buffer>,
    /// The core was run (and closed) by an earlier incarnation: reopen it before use.
    reopen: bool,
}

/// What every incarnation of the actor and every handle share.
pub(super) struct Shared {
    slot: Mutex<Slot>,
    /// The running incarnation (what handles send to).
    pub(super) addr: watch::Sender<Option<Addr<BufferActor>>>,
    /// The counters as of the last change.
    pub(super) stats: watch::Sender<BufferStats>,
    /// Notified after every stored append and when an incarnation starts: the link reads.
    pub(super) appended: Arc<Notify>,
    pub(super) device: common::DeviceId,
}

impl Shared {
    fn slot(&self) -> std::sync::MutexGuard<'_, Slot> {
        // the slot is only ever replaced whole: a poisoned lock holds a consistent value
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What each (re)started buffer actor needs; the supervisor's child spec holds it.
#[derive(Clone)]
pub struct BufferParts {
    shared: Arc<Shared>,
    /// Test builds only (see [`crate::faults`]).
    #[cfg(any(test, feature = "faults"))]
    faults: Option<Arc<crate::faults::Faults>>,
}

impl BufferParts {
    /// The actor's parts around an opened buffer; [`BufferParts::handle`] gives the handle
    /// the other actors use.
    pub fn new(core: Buffer) -> BufferParts {
        let (addr, _) = watch::channel(None);
        let (stats, _) = watch::channel(BufferStats {
            disk_bytes: core.disk_bytes(),
            ..core.counters()
        });
        let shared = Arc::new(Shared {
            device: core.device().clone(),
            slot: Mutex::new(Slot {
                core: Some(core),
                reopen: false,
            }),
            addr,
            stats,
            appended: Arc::new(Notify::new()),
        });
        BufferParts {
            shared,
            #[cfg(any(test, feature = "faults"))]
            faults: None,
        }
    }

    pub(super) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// Every incarnation strikes these faults (test builds only).
    #[cfg(any(test, feature = "faults"))]
    pub fn with_faults(self, faults: Option<Arc<crate::faults::Faults>>) -> Self {
        BufferParts { faults, ..self }
    }

    /// Starts an incarnation on the current arbiter and makes it the one handles reach.
    pub fn start(&self, live: Arc<Liveness>) -> Addr<BufferActor> {
        let addr = BufferActor {
            shared: self.shared.clone(),
            live,
            core: None,
            poisoned: false,
            flusher: None,
            flushing: false,
            dirty: false,
            flush_armed: false,
            waiting: Vec::new(),
            disk_bytes: 0,
            disk_measured: None,
            #[cfg(any(test, feature = "faults"))]
            faults: self.faults.clone(),
        }
        .start();
        self.shared.addr.send_replace(Some(addr.clone()));
        addr
    }
}

type FlushWaiter = oneshot::Sender<Result<(), FlushError>>;

pub struct BufferActor {
    shared: Arc<Shared>,
    live: Arc<Liveness>,
    /// Taken from the slot when started, put back (closed) when stopped.
    core: Option<Buffer>,
    /// A handler panicked: the counts are not to be trusted when closing.
    poisoned: bool,
    flusher: Option<Flusher>,
    flushing: bool,
    /// Something changed since the running (or last) flush started.
    dirty: bool,
    /// The batched flush's timer is armed.
    flush_armed: bool,
    /// [`Flush`] requests for the next flush to start.
    waiting: Vec<FlushWaiter>,
    disk_bytes: u64,
    disk_measured: Option<std::time::Instant>,
    #[cfg(any(test, feature = "faults"))]
    faults: Option<Arc<crate::faults::Faults>>,
}

impl BufferActor {
    /// Runs `f` on the buffer under `catch_unwind`; a panic stops the actor with it as the
    /// exit reason (see the module doc).
    fn call<T>(
        &mut self,
        ctx: &mut Context<Self>,
        f: impl FnOnce(&mut Buffer) -> Result<T, BufferError>,
    ) -> Result<T, CallError> {
        let Some(core) = self.core.as_mut() else {
            return Err(CallError::Unavailable);
        };
        self.live.progress(common::time::now_ms());
        match std::panic::catch_unwind(AssertUnwindSafe(|| f(core))) {
            Ok(r) => r.map_err(CallError::from),
            Err(p) => {
                let reason = panic_message(&*p);
                tracing::error!(device = %self.shared.device, reason = %reason, "buffer actor panicked");
                self.live.exit(reason.clone());
                self.poisoned = true;
                ctx.stop();
                Err(CallError::Panicked(reason))
            }
        }
    }

    /// After a change: the counters for the handles, and a flush when every record is to be
    /// flushed.
    fn changed(&mut self, ctx: &mut Context<Self>) {
        self.dirty = true;
        self.publish();
        match self.core.as_ref().map(Buffer::flush_policy) {
            Some(FlushPolicy::EveryRecord) => self.kick_flush(ctx),
            Some(FlushPolicy::Batched { ms }) => self.arm_flush(ctx, ms),
            None => {}
        }
    }

    /// Batched: a flush `ms` from now unless one is already due. It replaced a timer that
    /// woke the agent every `ms` to look whether anything changed (2 wakeups a second for a
    /// record a second).
    fn arm_flush(&mut self, ctx: &mut Context<Self>, ms: u64) {
        if self.flush_armed {
            return;
        }
        self.flush_armed = true;
        ctx.run_later(Duration::from_millis(ms), |act, ctx| {
            act.flush_armed = false;
            if act.dirty {
                act.kick_flush(ctx);
            }
        });
    }

    fn publish(&self) {
        if let Some(core) = &self.core {
            self.shared.stats.send_replace(BufferStats {
                disk_bytes: self.disk_bytes,
                ..core.counters()
            });
        }
    }

    /// Starts a flush on a blocking thread unless one runs (it then starts when that one ends).
    fn kick_flush(&mut self, ctx: &mut Context<Self>) {
        if self.flushing {
            return;
        }
        let Some(flusher) = self.flusher.clone() else {
            // nothing to flush (a store in memory)
            for w in self.waiting.drain(..) {
                let _ = w.send(Ok(()));
            }
            self.dirty = false;
            return;
        };
        self.flushing = true;
        self.dirty = false;
        let waiters = std::mem::take(&mut self.waiting);
        let started = std::time::Instant::now();
        let job = tokio::task::spawn_blocking(move || flusher());
        ctx.spawn(job.into_actor(self).map(move |res, act, ctx| {
            act.flushing = false;
            let res = match res {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(FlushError::Store(Arc::new(e))),
                Err(e) => Err(FlushError::Thread(e.to_string())),
            };
            if let Err(e) = &res {
                tracing::error!(device = %act.shared.device, error = %e, "buffer flush failed");
            }
            if started.elapsed() > FLUSH_SLOW {
                tracing::warn!(device = %act.shared.device, ms = started.elapsed().as_millis() as u64, "slow buffer flush");
            }
            for w in waiters {
                let _ = w.send(res.clone());
            }
            act.live.progress(common::time::now_ms());
            let every_record = act.core.as_ref().map(Buffer::flush_policy) == Some(FlushPolicy::EveryRecord);
            if !act.waiting.is_empty() || (act.dirty && every_record) {
                act.kick_flush(ctx);
            }
        }));
    }

    fn housekeeping(&mut self, ctx: &mut Context<Self>) {
        let now = common::time::now_ms();
        self.live.progress(now);
        if let Some(core) = &self.core
            && self.disk_measured.is_none_or(|t| t.elapsed() >= DISK_EVERY)
        {
            self.disk_bytes = core.disk_bytes();
            self.disk_measured = Some(std::time::Instant::now());
        }
        // drops are reported even when nothing is appended for a while (invariant 6)
        match self.call(ctx, |core| core.append_drop_event(now, false)) {
            Ok(Some(_)) => {
                self.changed(ctx);
                self.shared.appended.notify_one();
            }
            Ok(None) => self.publish(),
            Err(e) => tracing::error!(device = %self.shared.device, error = %e, "drop event not stored"),
        }
    }

    /// Closes the buffer and leaves it in the slot for the next incarnation.
    fn release(&mut self) {
        let Some(mut core) = self.core.take() else { return };
        let poisoned = self.poisoned;
        let closed = std::panic::catch_unwind(AssertUnwindSafe(|| {
            if poisoned {
                core.close_after_panic()
            } else {
                core.close()
            }
        }));
        match closed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(device = %self.shared.device, error = %e, "buffer not closed cleanly")
            }
            Err(p) => {
                tracing::error!(device = %self.shared.device, reason = %panic_message(&*p), "buffer close panicked")
            }
        }
        self.shared.stats.send_replace(BufferStats {
            disk_bytes: self.disk_bytes,
            ..core.counters()
        });
        for w in self.waiting.drain(..) {
            let _ = w.send(Ok(()));
        }
        *self.shared.slot() = Slot {
            core: Some(core),
            reopen: true,
        };
    }
}

impl Actor for BufferActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let taken = std::mem::take(&mut *self.shared.slot());
        let Some(core) = taken.core else {
            // the previous incarnation has not let go of it yet: the supervisor tries again
            self.live.exit("buffer still held by the previous buffer actor");
            ctx.stop();
            return;
        };
        let core = if taken.reopen {
            match std::panic::catch_unwind(AssertUnwindSafe(|| core.reopen())) {
                Ok(Ok(core)) => core,
                Ok(Err(failed)) => {
                    let e = failed.error;
                    tracing::error!(device = %self.shared.device, error = %e, "buffer store would not reopen");
                    *self.shared.slot() = Slot {
                        core: Some(failed.buffer),
                        reopen: true,
                    };
                    self.live.exit(format!("buffer store would not reopen: {e}"));
                    ctx.stop();
                    return;
                }
                Err(p) => {
                    // the buffer went with the panic; its store is still on disk, and the
                    // agent reopens it when the supervisor gives up and systemd restarts it
                    self.live.exit(format!("buffer reopen {}", panic_message(&*p)));
                    ctx.stop();
                    return;
                }
            }
        } else {
            core
        };
        self.flusher = core.flusher();
        self.disk_bytes = core.disk_bytes();
        self.disk_measured = Some(std::time::Instant::now());
        // a restart may leave changes of the last incarnation unflushed
        if let FlushPolicy::Batched { ms } = core.flush_policy() {
            self.flush_armed = false;
            self.dirty = true;
            self.arm_flush(ctx, ms);
        }
        self.core = Some(core);
        self.publish();
        ctx.run_interval(HOUSEKEEPING, |act, ctx| act.housekeeping(ctx));
        // whatever came in while the buffer was down is to be read now
        self.shared.appended.notify_one();
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.release();
    }
}

impl Drop for BufferActor {
    /// The last resort: an actor dropped without `stopped` (its runtime went away).
    fn drop(&mut self) {
        self.release();
    }
}

/// Append a record; the answer is its seq (or that it was thinned away).
#[derive(Message)]
#[rtype(result = "Result<Appended, CallError>")]
pub struct Append {
    pub ts_ms: i64,
    /// Shared, so that a handle can send it again to a restarted actor.
    pub body: Arc<Body>,
}

impl Handler<Append> for BufferActor {
    type Result = Result<Appended, CallError>;

    fn handle(&mut self, m: Append, ctx: &mut Context<Self>) -> Self::Result {
        let r = self.call(ctx, |core| {
            let appended = m.body.append_to(core, m.ts_ms);
            // a drop this append made, or earlier ones, reported when due (invariant 6)
            if let Err(e) = core.append_drop_event(m.ts_ms, false) {
                tracing::error!(error = %e, "drop event not stored");
            }
            appended
        });
        self.changed(ctx);
        if matches!(r, Ok(Appended::Stored { .. })) {
            self.shared.appended.notify_one();
        }
        r
    }
}

/// Report the drops not yet reported now (collection stops: no later append will).
#[derive(Message)]
#[rtype(result = "Result<(), CallError>")]
pub struct ReportDrops {
    pub ts_ms: i64,
}

impl Handler<ReportDrops> for BufferActor {
    type Result = Result<(), CallError>;

    fn handle(&mut self, m: ReportDrops, ctx: &mut Context<Self>) -> Self::Result {
        let r = self.call(ctx, |core| core.append_drop_event(m.ts_ms, true));
        self.changed(ctx);
        if matches!(r, Ok(Some(_))) {
            self.shared.appended.notify_one();
        }
        r.map(|_| ())
    }
}

/// Up to `n` records of `class` after seq `after`, in order (what the link publishes next).
#[derive(Message)]
#[rtype(result = "Result<Vec<Record>, CallError>")]
pub struct Read {
    pub class: u8,
    pub after: Option<u64>,
    pub n: usize,
}

impl Handler<Read> for BufferActor {
    type Result = Result<Vec<Record>, CallError>;

    fn handle(&mut self, m: Read, ctx: &mut Context<Self>) -> Self::Result {
        self.call(ctx, |core| core.next(m.class, m.after, m.n))
    }
}

/// The broker acknowledged these records: delete them. The answer is how many were there
/// (an acknowledgement repeated after a restart finds its record gone).
#[derive(Message)]
#[rtype(result = "Result<u64, CallError>")]
pub struct Ack(pub Vec<Key>);

impl Handler<Ack> for BufferActor {
    type Result = Result<u64, CallError>;

    fn handle(&mut self, Ack(keys): Ack, ctx: &mut Context<Self>) -> Self::Result {
        let r = self.call_acking(ctx, keys, |_| Ok(()));
        self.acked(ctx);
        r.map(|(deleted, ())| deleted)
    }
}

/// The link's turn, in one message: delete what the broker acknowledged, then up to `n`
/// records to publish next: priority records after `after[0]` first, then telemetry after
/// `after[1]`.
#[derive(Message)]
#[rtype(result = "Result<Vec<Record>, CallError>")]
pub struct Drain {
    pub acks: Vec<Key>,
    pub after: [Option<u64>; Key::CLASSES],
    pub n: usize,
}

impl Handler<Drain> for BufferActor {
    type Result = Result<Vec<Record>, CallError>;

    fn handle(&mut self, m: Drain, ctx: &mut Context<Self>) -> Self::Result {
        let acking = !m.acks.is_empty();
        let r = self.call_acking(ctx, m.acks, |core| {
            let mut out = Vec::new();
            for class in [Key::PRIORITY, Key::TELEMETRY] {
                let room = m.n - out.len();
                if room == 0 {
                    break;
                }
                out.extend(core.next(class, m.after[class as usize], room)?);
            }
            Ok(out)
        });
        if acking {
            self.acked(ctx);
        }
        r.map(|(_, records)| records)
    }
}

impl BufferActor {
    /// Deletes `keys`, then runs `then`, all under [`BufferActor::call`].
    fn call_acking<T>(
        &mut self,
        ctx: &mut Context<Self>,
        keys: Vec<Key>,
        then: impl FnOnce(&mut Buffer) -> Result<T, BufferError>,
    ) -> Result<(u64, T), CallError> {
        #[cfg(any(test, feature = "faults"))]
        let faults = self.faults.clone();
        self.call(ctx, |core| {
            let mut deleted = 0;
            for key in keys {
                deleted += u64::from(core.ack(key)?);
                #[cfg(any(test, feature = "faults"))]
                if let Some(f) = &faults {
                    f.strike_buffer_drain();
                }
            }
            Ok((deleted, then(core)?))
        })
    }

    /// After deletions: acks need no flush of their own (a lost delete is a duplicate the
    /// server drops), but the batched timer makes them durable with the rest.
    fn acked(&mut self, ctx: &mut Context<Self>) {
        self.dirty = true;
        self.publish();
        if let Some(FlushPolicy::Batched { ms }) = self.core.as_ref().map(Buffer::flush_policy) {
            self.arm_flush(ctx, ms);
        }
    }
}

/// Make everything appended so far durable; answered when a flush that started after this
/// message arrived is done.
#[derive(Message)]
#[rtype(result = "Result<(), CallError>")]
pub struct Flush;

impl Handler<Flush> for BufferActor {
    type Result = ResponseFuture<Result<(), CallError>>;

    fn handle(&mut self, _: Flush, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.waiting.push(tx);
        self.kick_flush(ctx);
        Box::pin(async move {
            match rx.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(CallError::from(e)),
                Err(_) => Err(CallError::Unavailable),
            }
        })
    }
}

/// Close the buffer and stop, for good (a buffer without a supervisor: the simulator's).
#[derive(Message)]
#[rtype(result = "Result<(), CallError>")]
pub struct Close;

impl Handler<Close> for BufferActor {
    type Result = Result<(), CallError>;

    fn handle(&mut self, _: Close, ctx: &mut Context<Self>) -> Self::Result {
        self.release();
        ctx.stop();
        Ok(())
    }
}

impl Handler<StopNow> for BufferActor {
    type Result = ();

    fn handle(&mut self, _: StopNow, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
