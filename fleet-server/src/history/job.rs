//! History job: every [`ROLLUP_EVERY`] rolls the minutes the writer marked dirty up into
//! 1-minute rollups; every [`RETENTION_EVERY_RUNS`] runs it also packs the raw rows of sealed
//! minutes (see [`super::pack`]) and deletes raw rows and rollups past their retention
//! ([`HistoryPolicy`]), through the store's [`HistoryStore`] (with PostgreSQL, retention drops
//! whole daily partitions). Every run measures the disk (a `stat` of sled's files): the job
//! may start before the writer first flushed the store, and the figure is then current within
//! seconds, not a minute. The work is store IO, so it runs on a blocking thread; a run that
//! finds the previous one still busy is skipped and counted.
//!
//! After each packing pass it also hands the allocator's free memory back to the kernel
//! ([`proc_mem::trim`]). The server's heap in use holds flat after warm-up, but its RSS rose
//! 1.1 MiB/min over the soak's hour: glibc keeps the memory freed by the many threads (actix
//! workers, the broker's runtime, sled's IO threads, this job) in their own arenas, and only
//! returns the top of the main heap by itself. Once a minute is cheap beside the pass itself.
//!
//! With several instances on PostgreSQL only the leader of the `history` lease rolls up and
//! enforces retention ([`crate::cluster`]): a run asks [`Leadership`] before each write
//! (every [`ROLLUP_PIECE`] minutes) and hands the store its lease token, which every
//! transaction asserts first; a write the fence refuses is counted and logged by
//! [`Leadership::refused`], changes nothing, and ends this instance's leadership. A follower
//! keeps retention due, so a new leader enforces it within a minute.
//!
//! Supervised (`crate::server::children`): the actor answers the supervisor's beats, and a run
//! that panics on its blocking thread is reported as the job's exit, so a new job (with its
//! own busy flag) takes over. A run that never returns cannot be stopped (it is store IO on a
//! blocking thread): its job keeps counting the runs it skips.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use actix::prelude::*;
use serde::Serialize;

use super::minute::{DAY_MS, HOUR_MS, MINUTE_MS};
use super::rollup::HistoryPolicy;
use super::store::HistoryStore;
use crate::cluster::fence::is_fenced_store;
use crate::cluster::leader::HISTORY;
use crate::cluster::lease::LeaseToken;
use crate::cluster::{Leadership, Role};
use crate::store::StoreError;
use crate::supervise::child::Beat;
use crate::supervise::liveness::{Liveness, panic_message};
use crate::supervise::restart::ExitKind;

/// How often dirty minutes are rolled up.
pub const ROLLUP_EVERY: Duration = Duration::from_secs(10);
/// Sealed spans are packed and the disk measured every this many rollup runs (every minute).
pub const RETENTION_EVERY_RUNS: u64 = 6;
/// Retention is enforced every this many rollup runs (every 10 minutes): its sweep reads the
/// oldest page of four trees of every machine, and rows stay at most this much longer than
/// their 24-hour or 30-day retention.
pub const EXPIRE_EVERY_RUNS: u64 = 60;
/// Dirty minutes rolled up in one run at most (the rest wait for the next run).
pub const ROLLUP_BATCH: usize = 20_000;
/// Dirty minutes rolled up between two looks at the lease: a leader whose lease ran out by
/// its own clock stops within one piece.
pub const ROLLUP_PIECE: usize = 2_000;
/// The fault (test builds, `RVM_FLEET_FAULTS=history-write=stall:MS`) that holds a leader's
/// run between its look at the lease and its first write: the window a frozen process must
/// not be able to use once it lost the lease.
pub const FAULT_BEFORE_WRITE: &str = "history-write";
/// A minute's raw rows are packed once it ended this long ago: records of a connected machine
/// arrive within seconds, so a later row is a backlog, merged into the packed minute next pass.
pub const SEAL_AFTER_MS: i64 = 2 * MINUTE_MS;
/// An hour's rollups are packed once it ended this long ago (a late row rolls its minute up
/// again as a single key, merged into the packed hour next pass).
pub const ROLLUP_SEAL_AFTER_MS: i64 = 10 * MINUTE_MS;
/// Rows one packing pass packs at most (the rest wait a minute).
const PACK_ROWS_MAX: u64 = 1_000_000;

#[derive(Debug, Default)]
pub struct HistoryStats {
    pub rollups_written: AtomicU64,
    pub raw_rows_expired: AtomicU64,
    pub rollups_expired: AtomicU64,
    /// Daily partitions dropped past retention (PostgreSQL).
    pub partitions_dropped: AtomicU64,
    pub minutes_packed: AtomicU64,
    pub rows_packed: AtomicU64,
    pub rollups_packed: AtomicU64,
    pub runs_skipped_busy: AtomicU64,
    pub errors: AtomicU64,
    pub disk_bytes: AtomicU64,
    pub last_rollup_ms: AtomicI64,
    pub last_retention_ms: AtomicI64,
    /// Allocator trims done, and the RSS they gave back (before minus after, summed).
    pub allocator_trims: AtomicU64,
    pub allocator_released_bytes: AtomicU64,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistorySnapshot {
    pub disk_bytes: u64,
    pub raw_retention_h: i64,
    pub rollup_retention_d: i64,
    pub rollups_written: u64,
    pub raw_rows_expired: u64,
    pub rollups_expired: u64,
    pub partitions_dropped: u64,
    pub minutes_packed: u64,
    pub rows_packed: u64,
    pub rollups_packed: u64,
    pub runs_skipped_busy: u64,
    pub errors: u64,
    pub last_rollup_ms: i64,
    pub last_retention_ms: i64,
    pub allocator_trims: u64,
    pub allocator_released_bytes: u64,
}

impl HistoryStats {
    pub fn snapshot(&self, policy: &HistoryPolicy) -> HistorySnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HistorySnapshot {
            disk_bytes: l(&self.disk_bytes),
            raw_retention_h: policy.raw_retention_ms / HOUR_MS,
            rollup_retention_d: policy.rollup_retention_ms / DAY_MS,
            rollups_written: l(&self.rollups_written),
            raw_rows_expired: l(&self.raw_rows_expired),
            rollups_expired: l(&self.rollups_expired),
            partitions_dropped: l(&self.partitions_dropped),
            minutes_packed: l(&self.minutes_packed),
            rows_packed: l(&self.rows_packed),
            rollups_packed: l(&self.rollups_packed),
            runs_skipped_busy: l(&self.runs_skipped_busy),
            errors: l(&self.errors),
            last_rollup_ms: self.last_rollup_ms.load(Ordering::Relaxed),
            last_retention_ms: self.last_retention_ms.load(Ordering::Relaxed),
            allocator_trims: l(&self.allocator_trims),
            allocator_released_bytes: l(&self.allocator_released_bytes),
        }
    }
}

pub struct HistoryJob {
    store: Arc<dyn HistoryStore>,
    policy: HistoryPolicy,
    stats: Arc<HistoryStats>,
    cadence: Cadence,
    /// A run is on its blocking thread.
    busy: Arc<AtomicBool>,
    /// Where a run's panic is reported, when supervised.
    live: Option<Arc<Liveness>>,
    /// Whether this instance runs the job now (always, on sled).
    leadership: Leadership,
    #[cfg(any(test, feature = "faults"))]
    faults: Option<crate::supervise::faults::Faults>,
}

/// Which of the slower passes are due at a run: packing every [`RETENTION_EVERY_RUNS`],
/// retention every [`EXPIRE_EVERY_RUNS`], both at the first run. A pass not done (the previous
/// run was still busy) stays due.
#[derive(Debug)]
struct Cadence {
    runs: u64,
    pack_due: bool,
    expire_due: bool,
}

impl Cadence {
    fn new() -> Self {
        Cadence {
            runs: 0,
            pack_due: true,
            expire_due: true,
        }
    }

    /// Counts a run.
    fn tick(&mut self) {
        self.runs += 1;
        if self.runs.is_multiple_of(RETENTION_EVERY_RUNS) {
            self.pack_due = true;
        }
        if self.runs.is_multiple_of(EXPIRE_EVERY_RUNS) {
            self.expire_due = true;
        }
    }

    /// Takes what is due now: (pack, expire). Retention runs with packing only.
    fn take(&mut self) -> (bool, bool) {
        let pack = std::mem::take(&mut self.pack_due);
        (pack, pack && std::mem::take(&mut self.expire_due))
    }

    /// Retention taken by a follower stays due, for when it leads.
    fn keep_expiry(&mut self) {
        self.expire_due = true;
    }
}

impl HistoryJob {
    pub fn new(store: Arc<dyn HistoryStore>, policy: HistoryPolicy, stats: Arc<HistoryStats>) -> Self {
        stats.disk_bytes.store(store.disk_bytes(), Ordering::Relaxed);
        HistoryJob {
            store,
            policy,
            stats,
            cadence: Cadence::new(),
            busy: Arc::default(),
            live: None,
            leadership: Leadership::single("local"),
            #[cfg(any(test, feature = "faults"))]
            faults: None,
        }
    }

    /// A job that runs only while `leadership` says this instance leads [`HISTORY`].
    pub fn led_by(mut self, leadership: Leadership) -> Self {
        self.leadership = leadership;
        self
    }

    /// A job whose leader writes may be held by [`FAULT_BEFORE_WRITE`] (test builds).
    #[cfg(any(test, feature = "faults"))]
    pub fn with_faults(mut self, faults: crate::supervise::faults::Faults) -> Self {
        self.faults = Some(faults);
        self
    }

    /// A job whose runs report a panic to its supervisor through `live`.
    pub fn supervised(mut self, live: Arc<Liveness>) -> Self {
        self.live = Some(live);
        self
    }

    fn run(&mut self) {
        self.cadence.tick();
        if self.busy.swap(true, Ordering::AcqRel) {
            self.stats.runs_skipped_busy.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let (retention, expiry) = self.cadence.take();
        if expiry && self.leadership.role(HISTORY) == Role::Follower {
            self.cadence.keep_expiry();
        }
        let (store, policy, stats) = (self.store.clone(), self.policy, self.stats.clone());
        let (busy, live) = (self.busy.clone(), self.live.clone());
        let leadership = self.leadership.clone();
        #[cfg(any(test, feature = "faults"))]
        let faults = self.faults.clone();
        tokio::task::spawn_blocking(move || {
            let hold = || {
                #[cfg(any(test, feature = "faults"))]
                if let Some(f) = &faults {
                    f.strike(FAULT_BEFORE_WRITE);
                }
            };
            let pass = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let led = Led {
                    leadership: &leadership,
                    hold: &hold,
                };
                run_pass(&*store, &policy, &stats, &led, retention, expiry)
            }));
            if let Err(p) = pass {
                let message = panic_message(&*p);
                tracing::error!(error = %message, "history run panicked");
                stats.errors.fetch_add(1, Ordering::Relaxed);
                if let Some(l) = live {
                    l.exit(ExitKind::Panic, format!("history run: {message}"));
                }
            }
            busy.store(false, Ordering::Release);
        });
    }
}

/// Who may write, asked before each write.
struct Led<'a> {
    leadership: &'a Leadership,
    /// Called between the look at the lease and the first write (a test fault).
    hold: &'a dyn Fn(),
}

impl Led<'_> {
    /// The token to write with now, or None: a follower does not write.
    fn token(&self) -> Option<Option<LeaseToken>> {
        match self.leadership.role(HISTORY) {
            Role::Leader(t) => Some(t),
            Role::Follower => None,
        }
    }

    /// `res` of a write with `token`: a refusal by the fence is counted and logged (and ends
    /// the leadership), not an error of the store; Some(error) for any other failure.
    fn judge<T>(
        &self,
        token: &Option<LeaseToken>,
        res: Result<T, StoreError>,
    ) -> Result<Option<T>, StoreError> {
        match (res, token) {
            (Ok(v), _) => Ok(Some(v)),
            (Err(e), Some(t)) if is_fenced_store(&e) => {
                self.leadership.refused(t, &e);
                Ok(None)
            }
            (Err(e), _) => Err(e),
        }
    }
}

/// One run on a blocking thread: rollups and retention when this instance leads, packing and
/// the trim when due.
fn run_pass(
    store: &dyn HistoryStore,
    policy: &HistoryPolicy,
    stats: &HistoryStats,
    led: &Led<'_>,
    retention: bool,
    expiry: bool,
) {
    let now = common::time::now_ms();
    if let Err(e) = roll_up_led(store, stats, led) {
        stats.errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!(error = %e, "history rollup failed");
    }
    stats.last_rollup_ms.store(now, Ordering::Relaxed);
    stats.disk_bytes.store(store.disk_bytes(), Ordering::Relaxed);
    if retention {
        if let Err(e) = pack(store, stats, now) {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "history packing failed");
        }
        if expiry
            && let Some(token) = led.token()
            && let Err(e) = led.judge(&token, expire(store, policy, stats, now, token.as_ref()))
        {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "history retention failed");
        }
        stats.disk_bytes.store(store.disk_bytes(), Ordering::Relaxed);
        stats.last_retention_ms.store(now, Ordering::Relaxed);
        trim_allocator(stats);
    }
}

/// Returns the allocator's free memory to the kernel and counts what RSS it gave back.
fn trim_allocator(stats: &HistoryStats) {
    let before = proc_mem::rss_bytes();
    proc_mem::trim();
    let after = proc_mem::rss_bytes();
    stats.allocator_trims.fetch_add(1, Ordering::Relaxed);
    if let (Some(b), Some(a)) = (before, after) {
        stats
            .allocator_released_bytes
            .fetch_add(b.saturating_sub(a), Ordering::Relaxed);
    }
}

/// Rolls dirty minutes up (one batch) while this instance leads, looking at the lease again
/// before each piece; the first piece is written with the token of the first look (after
/// `led.hold`). Blocking.
fn roll_up_led(store: &dyn HistoryStore, stats: &HistoryStats, led: &Led<'_>) -> Result<usize, StoreError> {
    let mut done = 0;
    let Some(mut token) = led.token() else {
        return Ok(0);
    };
    (led.hold)();
    loop {
        let Some(n) = led.judge(&token, roll_up(store, stats, ROLLUP_PIECE, token.as_ref()))? else {
            return Ok(done);
        };
        done += n;
        if n < ROLLUP_PIECE || done >= ROLLUP_BATCH {
            return Ok(done);
        }
        match led.token() {
            Some(t) => token = t,
            None => return Ok(done),
        }
    }
}

/// Rolls up to `limit` dirty minutes up, as the holder of `fence` when given. Blocking.
pub fn roll_up(
    store: &dyn HistoryStore,
    stats: &HistoryStats,
    limit: usize,
    fence: Option<&LeaseToken>,
) -> Result<usize, StoreError> {
    let n = store.roll_up(limit, fence)?;
    stats.rollups_written.fetch_add(n as u64, Ordering::Relaxed);
    Ok(n)
}

/// Packs the raw rows of sealed minutes and the rollups of sealed hours. Blocking.
pub fn pack(store: &dyn HistoryStore, stats: &HistoryStats, now_ms: i64) -> Result<(), StoreError> {
    let (raw, rollups) = store.pack(
        now_ms - SEAL_AFTER_MS,
        now_ms - ROLLUP_SEAL_AFTER_MS,
        PACK_ROWS_MAX,
    )?;
    stats.minutes_packed.fetch_add(raw.spans, Ordering::Relaxed);
    stats.rows_packed.fetch_add(raw.rows, Ordering::Relaxed);
    stats.rollups_packed.fetch_add(rollups.rows, Ordering::Relaxed);
    Ok(())
}

/// Deletes what is past retention, as the holder of `fence` when given. Blocking.
pub fn expire(
    store: &dyn HistoryStore,
    policy: &HistoryPolicy,
    stats: &HistoryStats,
    now_ms: i64,
    fence: Option<&LeaseToken>,
) -> Result<(), StoreError> {
    let done = store.expire(policy, now_ms, fence)?;
    stats.raw_rows_expired.fetch_add(done.raw_rows, Ordering::Relaxed);
    stats.rollups_expired.fetch_add(done.rollups, Ordering::Relaxed);
    stats
        .partitions_dropped
        .fetch_add(done.partitions, Ordering::Relaxed);
    Ok(())
}

impl Actor for HistoryJob {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.run();
        ctx.run_interval(ROLLUP_EVERY, |act, _| act.run());
    }
}

impl Handler<Beat> for HistoryJob {
    type Result = ();
    fn handle(&mut self, m: Beat, _: &mut Context<Self>) {
        m.record();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_runs_every_minute_and_retention_every_ten_both_at_start() {
        let mut c = Cadence::new();
        let mut packs = Vec::new();
        let mut expiries = Vec::new();
        for run in 0..=120u64 {
            if run > 0 {
                c.tick();
            }
            let (pack, expire) = c.take();
            if pack {
                packs.push(run);
            }
            if expire {
                expiries.push(run);
            }
        }
        assert_eq!(packs, (0..=120).step_by(6).collect::<Vec<_>>());
        assert_eq!(expiries, [0, 60, 120]);
        // a run skipped because the previous one was busy: what was due stays due
        let mut c = Cadence::new();
        for _ in 0..60 {
            c.tick();
        }
        c.tick();
        assert_eq!(c.take(), (true, true), "due at run 60, taken at run 61");
        assert_eq!(c.take(), (false, false));
    }
    use common::DeviceId;

    use crate::fleet::delivery::DeliveryState;
    use crate::history::rows::HistoryRow;
    use crate::ingest::store::{IngestStore, WriteBatch};
    use crate::store::FleetStore;

    #[test]
    fn a_run_rolls_up_packs_sealed_minutes_and_expires_with_reads_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let store = FleetStore::open(dir.path()).unwrap();
        let stats = HistoryStats::default();
        let d = DeviceId::new("rvm1").unwrap();
        let now = 10 * HOUR_MS;
        // one row every 5 s for the last 30 minutes, and one 25 h old (past raw retention)
        let mut b = WriteBatch::default();
        let ts: Vec<i64> = std::iter::once(now - 25 * HOUR_MS)
            .chain((1..=360).map(|i| now - 30 * MINUTE_MS + 5_000 * i))
            .filter(|t| *t < now)
            .collect();
        for (i, t) in ts.iter().enumerate() {
            let row = HistoryRow {
                ts_ms: *t,
                seq: i as u64 + 1,
                metrics: vec![("cpu.usage_pct".into(), i as f32)],
            };
            b.history(&d, row);
        }
        b.delivery(&d, &DeliveryState::default());
        store.apply(b, 0).unwrap();
        let read = |from, to| store.history(&d, from, to, 100_000).unwrap();
        let before = read(now - 40 * MINUTE_MS, now);

        assert_eq!(
            roll_up(&store, &stats, ROLLUP_BATCH, None).unwrap(),
            31,
            "30 minutes and the old one"
        );
        pack(&store, &stats, now).unwrap();
        expire(&store, &HistoryPolicy::default(), &stats, now, None).unwrap();
        // sealed: minutes that ended 2 minutes before now; the old row was packed, then expired
        let s = stats.snapshot(&HistoryPolicy::default());
        assert_eq!((s.minutes_packed, s.rows_packed), (29, 1 + 11 + 27 * 12));
        assert_eq!(s.raw_rows_expired, 1);
        let k = store.key_counts();
        assert_eq!((k.raw, k.raw_packed), (24, 28));
        assert_eq!(read(now - 40 * MINUTE_MS, now), before);
        assert_eq!(store.rollups(&d, now - 40 * MINUTE_MS, now).unwrap().len(), 30);
        assert!(read(0, now - 24 * HOUR_MS).is_empty());

        // an hour later every raw minute and the rollup hours are sealed and packed
        let rollups = store.rollups(&d, i64::MIN / 2, now).unwrap();
        assert_eq!(rollups.len(), 31);
        pack(&store, &stats, now + HOUR_MS).unwrap();
        let s = stats.snapshot(&HistoryPolicy::default());
        assert_eq!((s.rows_packed, s.rollups_packed), (1 + 11 + 29 * 12, 31));
        let k = store.key_counts();
        assert_eq!((k.raw, k.rollups), (0, 0));
        assert_eq!(read(now - 40 * MINUTE_MS, now), before);
        assert_eq!(store.rollups(&d, i64::MIN / 2, now).unwrap(), rollups);
    }
}
