//! A dedicated OS thread that owns a blocking source and runs reads on it.
//!
//! Reads of `/proc`, sysfs, NVML or a tegrastats pipe can hang (a wedged driver, an NFS
//! mount). On tokio's blocking pool a hung read would also hang runtime shutdown, which waits
//! for blocking tasks. A worker thread is simply abandoned instead: the caller times out,
//! later reads see the worker busy and are skipped, and the process can still exit. A panic
//! inside a read is caught on the worker and returned as an error; the worker keeps running.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::supervise::liveness::panic_message;

type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

/// How a read on a worker ended.
#[derive(Debug)]
pub enum Sampled<T> {
    Value(T),
    /// The previous read has not returned yet.
    Busy,
    Panicked(String),
    TimedOut,
}

pub struct Worker<S: Send + 'static> {
    tx: mpsc::Sender<Job<S>>,
    busy: Arc<AtomicBool>,
}

impl<S: Send + 'static> Worker<S> {
    pub fn spawn(name: &str, mut state: S) -> std::io::Result<Worker<S>> {
        let (tx, rx) = mpsc::channel::<Job<S>>();
        std::thread::Builder::new().name(name.into()).spawn(move || {
            while let Ok(job) = rx.recv() {
                job(&mut state);
            }
        })?;
        Ok(Worker {
            tx,
            busy: Arc::new(AtomicBool::new(false)),
        })
    }

    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }

    /// Runs `f` on the worker, waiting at most `timeout`.
    pub async fn run<T, F>(&self, timeout: Duration, f: F) -> Sampled<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut S) -> T + Send + 'static,
    {
        if self.busy.swap(true, Ordering::AcqRel) {
            return Sampled::Busy;
        }
        let (tx, rx) = oneshot::channel();
        let busy = self.busy.clone();
        let job: Job<S> = Box::new(move |s: &mut S| {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(s)));
            busy.store(false, Ordering::Release);
            let _ = tx.send(r.map_err(|p| panic_message(&*p)));
        });
        if self.tx.send(job).is_err() {
            self.busy.store(false, Ordering::Release);
            return Sampled::Panicked("worker thread is gone".into());
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(v))) => Sampled::Value(v),
            Ok(Ok(Err(p))) => Sampled::Panicked(p),
            Ok(Err(_)) => Sampled::Panicked("worker dropped the read".into()),
            // still running: `busy` stays set until it returns
            Err(_) => Sampled::TimedOut,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_run_on_the_worker_and_return_values() {
        let w = Worker::spawn("t", 40u32).unwrap();
        assert!(matches!(
            w.run(Duration::from_secs(1), |s| *s + 2).await,
            Sampled::Value(42)
        ));
    }

    #[tokio::test]
    async fn a_hung_read_times_out_and_later_reads_are_skipped_until_it_returns() {
        let w = Worker::spawn("t", ()).unwrap();
        let r = w
            .run(Duration::from_millis(50), |_| {
                std::thread::sleep(Duration::from_millis(400))
            })
            .await;
        assert!(matches!(r, Sampled::TimedOut));
        assert!(matches!(
            w.run(Duration::from_millis(50), |_| 1).await,
            Sampled::Busy
        ));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(matches!(
            w.run(Duration::from_millis(200), |_| 1).await,
            Sampled::Value(1)
        ));
    }

    #[tokio::test]
    async fn a_panicking_read_is_reported_and_the_worker_goes_on() {
        let w = Worker::spawn("t", 0u8).unwrap();
        let r: Sampled<()> = w.run(Duration::from_secs(1), |_| panic!("sensor exploded")).await;
        assert!(
            matches!(r, Sampled::Panicked(ref m) if m == "panic: sensor exploded"),
            "{r:?}"
        );
        assert!(matches!(
            w.run(Duration::from_secs(1), |_| 7).await,
            Sampled::Value(7)
        ));
    }

    #[test]
    fn a_runtime_with_a_hung_read_still_shuts_down() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let w = Worker::spawn("t", ()).unwrap();
        rt.block_on(async {
            let r = w
                .run(Duration::from_millis(20), |_| {
                    std::thread::sleep(Duration::from_secs(3600))
                })
                .await;
            assert!(matches!(r, Sampled::TimedOut));
        });
        let t = std::time::Instant::now();
        drop(rt);
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
