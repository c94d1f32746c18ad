//! Collector: every interval, one collection from the metric source into the buffer.
//!
//! A blocking source runs on a blocking thread with a timeout ([`COLLECT_TIMEOUT`]); a tick
//! that finds the previous collection still running is skipped (and counted), so a hung
//! sensor read can never pile up threads or stall the actor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use common::Telemetry;
use common::topics::Kind;
use tokio::sync::Notify;

use crate::buffer::{Appended, Buffer, FlushPolicy};
use crate::collect::MetricSource;

/// Longest a collection may take before it is abandoned for this tick.
pub const COLLECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct CollectorStats {
    pub ticks: AtomicU64,
    pub collected: AtomicU64,
    pub skipped_busy: AtomicU64,
    pub timed_out: AtomicU64,
    pub append_errors: AtomicU64,
}

pub struct CollectorActor {
    pub source: Arc<Mutex<Box<dyn MetricSource>>>,
    pub blocking: bool,
    pub buffer: Arc<Buffer>,
    pub wake: Arc<Notify>,
    pub interval: Duration,
    pub stats: Arc<CollectorStats>,
    busy: bool,
}

impl CollectorActor {
    pub fn new(
        source: Box<dyn MetricSource>,
        buffer: Arc<Buffer>,
        wake: Arc<Notify>,
        interval: Duration,
    ) -> Self {
        let blocking = source.is_blocking();
        CollectorActor {
            source: Arc::new(Mutex::new(source)),
            blocking,
            buffer,
            wake,
            interval,
            stats: Arc::default(),
            busy: false,
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        self.stats.ticks.fetch_add(1, Ordering::Relaxed);
        if self.busy {
            self.stats.skipped_busy.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let now = common::time::now_ms();
        if !self.blocking {
            let t = match self.source.lock() {
                Ok(mut s) => s.collect(now),
                Err(_) => return,
            };
            self.store(now, t);
            return;
        }
        self.busy = true;
        let source = self.source.clone();
        let job = tokio::task::spawn_blocking(move || source.lock().ok().map(|mut s| s.collect(now)));
        let fut = async move { tokio::time::timeout(COLLECT_TIMEOUT, job).await };
        ctx.spawn(fut.into_actor(self).map(move |res, act, _| {
            match res {
                Ok(Ok(Some(t))) => {
                    act.busy = false;
                    act.store(now, t);
                }
                Ok(_) => act.busy = false,
                Err(_) => {
                    // The blocking thread is still stuck in the read; it keeps `busy` via
                    // the source lock, so later ticks skip until it returns.
                    act.busy = false;
                    act.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        timeout_ms = COLLECT_TIMEOUT.as_millis() as u64,
                        "collection timed out"
                    );
                }
            }
        }));
    }

    fn store(&mut self, now: i64, t: Telemetry) {
        match self.buffer.append(Kind::Telemetry, now, &t) {
            Ok(Appended::Stored { .. }) | Ok(Appended::Thinned { .. }) => {
                self.stats.collected.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.stats.append_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "telemetry not stored");
            }
        }
        if let Some(ev) = self.buffer.take_drop_event()
            && let Err(e) = self.buffer.append(Kind::Event, now, &ev)
        {
            tracing::error!(error = %e, "drop event not stored");
        }
        if self.buffer.flush_policy() == FlushPolicy::EveryRecord {
            let b = self.buffer.clone();
            tokio::task::spawn_blocking(move || {
                if let Err(e) = b.flush() {
                    tracing::error!(error = %e, "buffer flush failed");
                }
            });
        }
        self.wake.notify_one();
    }
}

impl Actor for CollectorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.tick(ctx);
        ctx.run_interval(self.interval, |act, ctx| act.tick(ctx));
    }
}
