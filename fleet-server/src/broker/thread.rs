//! The embedded broker on its own thread and multi-threaded tokio runtime, so MQTT traffic
//! never competes with the actix system; stopping it ends the runtime (every session closes,
//! as in a crash).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::embedded::{BrokerConfig, BrokerStats, EmbeddedBroker};

/// Worker threads of the embedded broker's runtime.
pub const BROKER_THREADS: usize = 2;

/// The embedded broker on its own thread and multi-threaded runtime. Stopping it ends the
/// runtime, which closes every session, as a crashed broker would.
pub struct BrokerThread {
    pub addr: SocketAddr,
    pub stats: Arc<BrokerStats>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl BrokerThread {
    pub fn start(cfg: BrokerConfig) -> anyhow::Result<BrokerThread> {
        let (tx, rx) = std_mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("broker".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(BROKER_THREADS)
                .thread_name("broker-rt")
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(anyhow::anyhow!(e)));
                    return;
                }
            };
            rt.block_on(async move {
                match EmbeddedBroker::start(&cfg).await {
                    Ok(b) => {
                        let _ = tx.send(Ok((b.local_addr, b.stats.clone())));
                        let _ = stop_rx.await;
                        b.stop();
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
            rt.shutdown_background();
        })?;
        let (addr, stats) = rx.recv()??;
        Ok(BrokerThread {
            addr,
            stats,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for BrokerThread {
    fn drop(&mut self) {
        self.stop();
    }
}
