//! Collector: every interval, one collection into the buffer.
//!
//! The machine's figures and the GPU's are read on their own worker threads, each with its
//! own timeout ([`COLLECT_TIMEOUT`], [`GPU_TIMEOUT`]), so a hung sensor or GPU read can never
//! stall the actor, the other figures, the MQTT link, or shutdown. A read still stuck keeps its
//! worker busy; later ticks skip that source, so threads never pile up.
//! A panic in a read or in the tick itself stops the actor with the panic as exit reason; the
//! supervisor restarts it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use common::{Reading, Telemetry};

use crate::buffer::{Body, BufferHandle};
use crate::collect::MetricSource;
use crate::collect::gpu::reprobe::SourceChange;
use crate::collect::gpu::{GpuBackend, capability};
use crate::collect::worker::{Sampled, Worker};
use crate::messages::StopNow;
use crate::supervise::liveness::{Liveness, guarded, panic_message};

/// Longest a collection of the machine's figures may take.
pub const COLLECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a GPU sample may take; past it the record goes out without GPU figures.
pub const GPU_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub struct CollectorStats {
    pub ticks: AtomicU64,
    pub collected: AtomicU64,
    pub skipped_busy: AtomicU64,
    pub timed_out: AtomicU64,
    pub gpu_timed_out: AtomicU64,
    pub append_errors: AtomicU64,
}

/// Where collections run: inline for sources that do no IO, on a dedicated thread otherwise
/// (see [`crate::collect::worker`]).
#[derive(Clone)]
pub enum SourceRunner {
    Inline(Arc<Mutex<Box<dyn MetricSource>>>),
    Worker(Arc<Worker<Box<dyn MetricSource>>>),
}
pub type SharedGpu = Arc<Worker<Box<dyn GpuBackend>>>;
pub type AppMetrics = Arc<dyn Fn(i64) -> Vec<Reading> + Send + Sync>;
pub type Latest = Arc<Mutex<Option<Telemetry>>>;

/// Everything a collector needs; cloned into each (re)started collector.
#[derive(Clone)]
pub struct CollectorParts {
    pub source: SourceRunner,
    pub gpu: Option<SharedGpu>,
    pub app: Option<AppMetrics>,
    pub buffer: BufferHandle,
    pub interval: Duration,
    pub stats: Arc<CollectorStats>,
    pub latest: Latest,
    /// The link's view of the broker path (round trip, DNS), added to each record; None:
    /// the source reports it itself (the simulator) or nobody does.
    pub broker: Option<Arc<crate::link::status::LinkStatus>>,
    /// Test builds only (see [`crate::faults`]).
    #[cfg(any(test, feature = "faults"))]
    pub faults: Arc<crate::faults::Faults>,
}

/// Why a collector could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// No thread for a blocking source (thread exhaustion). The agent does not start, so
    /// systemd restarts it, rather than report figures it did not read.
    #[error("no worker thread for the metric source")]
    WorkerThread(#[source] std::io::Error),
}

impl CollectorParts {
    pub fn new(
        source: Box<dyn MetricSource>,
        buffer: BufferHandle,
        interval: Duration,
    ) -> Result<Self, CollectorError> {
        let source = if source.is_blocking() {
            let worker = Worker::spawn("collector-source", source).map_err(CollectorError::WorkerThread)?;
            SourceRunner::Worker(Arc::new(worker))
        } else {
            SourceRunner::Inline(Arc::new(Mutex::new(source)))
        };
        Ok(CollectorParts {
            source,
            gpu: None,
            app: None,
            buffer,
            interval,
            stats: Arc::default(),
            latest: Arc::default(),
            broker: None,
            #[cfg(any(test, feature = "faults"))]
            faults: Arc::default(),
        })
    }
}

pub struct CollectorActor {
    p: CollectorParts,
    live: Arc<Liveness>,
    busy: bool,
    paused: bool,
}

/// Stop collecting but stay alive (the supervisor would restart a stopped collector).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Pause;

impl Handler<Pause> for CollectorActor {
    type Result = ();
    fn handle(&mut self, _: Pause, _: &mut Context<Self>) {
        self.paused = true;
        // no tick will report the drops not yet reported
        let buffer = self.p.buffer.clone();
        actix::spawn(async move {
            if let Err(e) = buffer.report_drops(common::time::now_ms()).await {
                tracing::error!(error = %e, "drop event not stored");
            }
        });
    }
}

/// The lock even if an earlier panic poisoned it (a source keeps no invariant across a
/// collection).
fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl CollectorActor {
    pub fn new(p: CollectorParts, live: Arc<Liveness>) -> Self {
        CollectorActor {
            p,
            live,
            busy: false,
            paused: false,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        self.p.stats.ticks.fetch_add(1, Ordering::Relaxed);
        if self.paused {
            self.live.progress(common::time::now_ms());
            return;
        }
        if self.busy {
            self.p.stats.skipped_busy.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let now = common::time::now_ms();
        #[cfg(any(test, feature = "faults"))]
        let faults = self.p.faults.clone();
        let collect = move |s: &mut Box<dyn MetricSource>| {
            #[cfg(any(test, feature = "faults"))]
            faults.strike_collector();
            s.collect(now)
        };
        let source = match &self.p.source {
            SourceRunner::Inline(m) if self.p.gpu.is_none() => {
                let live = self.live.clone();
                let m = m.clone();
                match guarded(&live, || collect(&mut lock(&m))) {
                    Some(t) => self.store(now, t),
                    None => ctx.stop(),
                }
                return;
            }
            r => r.clone(),
        };
        let gpu = self.p.gpu.clone();
        #[cfg(any(test, feature = "faults"))]
        let gfaults = self.p.faults.clone();
        self.busy = true;
        let fut = async move {
            let t = match source {
                SourceRunner::Worker(w) => w.run(COLLECT_TIMEOUT, collect).await,
                SourceRunner::Inline(m) => {
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| collect(&mut lock(&m)))) {
                        Ok(t) => Sampled::Value(t),
                        Err(p) => Sampled::Panicked(panic_message(&*p)),
                    }
                }
            };
            let g = match gpu {
                Some(w) => Some(
                    w.run(GPU_TIMEOUT, move |g| {
                        #[cfg(any(test, feature = "faults"))]
                        gfaults.strike_gpu();
                        let sample = g.sample();
                        (sample, g.take_change())
                    })
                    .await,
                ),
                None => None,
            };
            (t, g)
        };
        ctx.spawn(fut.into_actor(self).map(move |(t, g), act, ctx| {
            act.busy = false;
            if act.paused {
                // collection stopped while this sample was read: Pause has written the last
                // drop event, and a record stored now could drop one more, unreported
                return;
            }
            let mut telemetry = match t {
                Sampled::Value(t) => t,
                Sampled::Busy => {
                    act.p.stats.skipped_busy.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Sampled::TimedOut => {
                    act.p.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        timeout_ms = COLLECT_TIMEOUT.as_millis() as u64,
                        "collection timed out"
                    );
                    return;
                }
                Sampled::Panicked(reason) => {
                    act.live.exit(reason);
                    ctx.stop();
                    return;
                }
            };
            match g {
                Some(Sampled::Value((gpu, change))) => {
                    telemetry.gpu = gpu;
                    if let Some(change) = change {
                        act.report_gpu_change(now, change);
                    }
                }
                Some(Sampled::TimedOut) => {
                    act.p.stats.gpu_timed_out.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        timeout_ms = GPU_TIMEOUT.as_millis() as u64,
                        "gpu read timed out; record sent without gpu figures"
                    );
                }
                Some(Sampled::Panicked(reason)) => tracing::error!(reason = %reason, "gpu backend panicked"),
                Some(Sampled::Busy) | None => {}
            }
            act.store(now, telemetry);
        }));
    }

    /// The event saying the GPU figures come from another source from now on.
    fn report_gpu_change(&self, now: i64, change: SourceChange) {
        let event = common::Event {
            severity: common::Severity::Info,
            message: change.message(),
            kind: common::EventKind::GpuSourceChanged {
                from: capability(change.from).to_string(),
                to: capability(change.to).to_string(),
            },
        };
        let buffer = self.p.buffer.clone();
        actix::spawn(async move {
            if let Err(e) = buffer.append(now, Body::Event(event)).await {
                tracing::warn!(error = %e, "gpu source change event not stored");
            }
        });
    }

    /// Hands the record to the buffer actor (which flushes it and wakes the link); the
    /// collector does not wait for it.
    fn store(&mut self, now: i64, mut t: Telemetry) {
        if let Some(app) = &self.p.app {
            t.app = app(now);
        }
        if let Some(link) = &self.p.broker {
            t.detail.broker = link.broker_health();
        }
        if let Ok(mut l) = self.p.latest.lock() {
            *l = Some(t.clone());
        }
        self.live.progress(now);
        let (buffer, stats) = (self.p.buffer.clone(), self.p.stats.clone());
        actix::spawn(async move {
            match buffer.append(now, Body::Telemetry(t)).await {
                Ok(_) => {
                    stats.collected.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    stats.append_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "telemetry not stored");
                }
            }
        });
    }
}

impl Actor for CollectorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.tick(ctx);
        ctx.run_interval(self.p.interval, |act, ctx| act.tick(ctx));
    }
}

impl Handler<StopNow> for CollectorActor {
    type Result = ();
    fn handle(&mut self, _: StopNow, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
