//! Starting and stopping a whole fleet server: embedded broker (its own thread and runtime),
//! then the actix system with the fleet actor, ingest and HTTP. Tests start it in-process on
//! ephemeral ports.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

use actix::prelude::*;
use actix_web::{App, HttpServer, web};
use common::pki::CertDir;

use crate::alerts::actor::{AlertsActor, AlertsSetup, AlertsStats, AttachRepublisher};
use crate::auth::TokenStore;
use crate::broker::embedded::{BrokerConfig, BrokerStats};
use crate::broker::thread::BrokerThread;
use crate::commands::actor::{CommandsActor, CommandsSetup};
use crate::commands::store::CommandStore;
use crate::config::{HttpTls, ServerConfig};
use crate::fleet::actor::AttachCommands;
use crate::fleet::actor::{AttachAlerts, FleetActor};
use crate::fleet::state::PresencePolicy;
use crate::history::job::{HistoryJob, HistoryStats};
use crate::http::{self, state::AppState};
use crate::ingest::client::{self, IngestConfig, IngestMode};
use crate::ingest::stats::IngestStats;
use crate::ingest::writer;
use crate::live::LiveHub;
use crate::messages::AttachLive;
use crate::notify;
use crate::notify::outbox::sled_store::SledOutbox;
use crate::republish::client::{RepublishConfig, Republisher};
use crate::republish::queue::{self, RepublishStats};
use crate::store::StoreWatch;

/// How long `Server::start` waits for the ingest subscription.
pub const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long `Server::stop` waits for the store to close (so a new server can open it).
pub const STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The rustls configuration of `[http] tls_cert` / `tls_key` (the process's crypto provider).
pub fn http_tls_config(tls: &HttpTls) -> anyhow::Result<rustls::ServerConfig> {
    let certs = common::tls::load_certs(&tls.cert).map_err(|e| anyhow::anyhow!("http.tls_cert: {e}"))?;
    let key = common::tls::load_key(&tls.key).map_err(|e| anyhow::anyhow!("http.tls_key: {e}"))?;
    rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            anyhow::anyhow!(
                "http.tls_cert / http.tls_key ({} and {}): {e}",
                tls.cert.display(),
                tls.key.display()
            )
        })
}

/// A running fleet server.
pub struct Server {
    pub http_addr: SocketAddr,
    pub mqtt_addr: SocketAddr,
    pub tokens: Arc<TokenStore>,
    pub ingest: Arc<IngestStats>,
    pub broker: Option<BrokerThread>,
    broker_cfg: Option<BrokerConfig>,
    system: Option<actix::System>,
    thread: Option<JoinHandle<()>>,
    store: Option<StoreWatch>,
    writer_stop: Arc<AtomicBool>,
    /// The republisher's counters (`[republish] enabled`); None when disabled.
    pub republish: Option<Arc<RepublishStats>>,
    republisher: Option<Republisher>,
}

impl Server {
    pub fn start(cfg: ServerConfig) -> anyhow::Result<Server> {
        common::tls::install_crypto_provider();
        let dir = CertDir::new(&cfg.certs);
        anyhow::ensure!(
            dir.ca_cert().exists() && dir.server_cert().exists(),
            "no certificates in {} (run `fleetctl certs init --dir {}`)",
            cfg.certs.display(),
            cfg.certs.display()
        );
        std::fs::create_dir_all(&cfg.data_dir)?;
        let alerting = cfg.alerting.clone().unwrap_or_default();
        let rules = alerting.rules.load()?;
        let tokens = Arc::new(TokenStore::open(&cfg.data_dir.join("tokens.json"))?);
        let ready = Arc::new(AtomicBool::new(false));
        let ready_probe = ready.clone();
        let ingest_stats = Arc::new(IngestStats::default());
        let mode = if cfg.embedded_broker.is_some() {
            IngestMode::Embedded
        } else {
            IngestMode::External
        };

        // 1. the actix system: fleet actor, ingest writer, HTTP
        let signer = common::pki::load_signer(&dir)
            .map_err(|e| anyhow::anyhow!("{e} (the command-signing key is made by `fleetctl certs init`)"))?;
        let commands_handle: crate::http::state::CommandsHandle = Arc::default();
        let t_commands = commands_handle.clone();
        let (tx, rx) = std_mpsc::channel();
        let t_tokens = tokens.clone();
        // what changed, for open pages: fed by the fleet, alerts and commands actors
        let live_hub = LiveHub::new();
        let t_live = live_hub.clone();
        let t_ingest = ingest_stats.clone();
        let broker_stats: Arc<std::sync::OnceLock<Arc<BrokerStats>>> = Arc::default();
        let t_broker_stats = broker_stats.clone();
        let t_cfg = cfg.clone();
        // the republisher's queue exists before its MQTT client: the writer and the alerts
        // actor offer into it from their start
        let (republish_handle, republish_queue) = match cfg.republish {
            true => {
                let (h, q) = queue::channel(queue::QUEUE);
                (Some(h), Some(q))
            }
            false => (None, None),
        };
        let t_republish = republish_handle.clone();
        let thread = std::thread::Builder::new()
            .name("fleet-server".into())
            .spawn(move || {
                let sys = actix::System::new();
                let res = sys.block_on(async move {
                    let fleet = FleetActor::new(PresencePolicy {
                        stale_after_ms: t_cfg.stale_after_ms,
                        offline_after_ms: t_cfg.offline_after_ms,
                    })
                    .start();
                    let writer = writer::start_with(
                        &t_cfg.data_dir,
                        t_cfg.store_cache_bytes,
                        fleet.clone(),
                        t_ingest.clone(),
                        t_republish.clone(),
                    )?;
                    // the outbox lives in the server's database, beside what decided it
                    let outbox = Arc::new(SledOutbox::open_in(&writer.store)?);
                    let (notify, notifier) = notify::spawn(alerting.notify.clone(), outbox);
                    let alerts_actor = AlertsActor::new(
                        AlertsSetup {
                            rules,
                            notify,
                            store: writer.store.clone(),
                            audit_log: t_cfg.data_dir.join("audit.log"),
                            hold_offline_ms: alerting.hold_offline_ms,
                            maintenance: alerting.notify.maintenance.clone(),
                        },
                        Arc::new(AlertsStats::default()),
                    )?;
                    // Alert rules, the correlator and notifications get their own thread, so
                    // the fleet actor (presence, live view, the API's device reads) never
                    // waits behind them: at fleet scale both are busy at once.
                    let alerts_arbiter = actix::Arbiter::new();
                    let alerts =
                        AlertsActor::start_in_arbiter(&alerts_arbiter.handle(), move |_| alerts_actor);
                    fleet.do_send(AttachAlerts(alerts.clone().recipient()));
                    if let Some(r) = t_republish {
                        alerts.do_send(AttachRepublisher(r));
                    }
                    let live = t_live;
                    fleet.do_send(AttachLive(live.clone()));
                    alerts.do_send(AttachLive(live.clone()));
                    let history_stats = Arc::new(HistoryStats::default());
                    HistoryJob::new(writer.store.clone(), t_cfg.history, history_stats.clone()).start();
                    let state = web::Data::new(AppState {
                        fleet,
                        tokens: t_tokens,
                        ingest: t_ingest,
                        broker: t_broker_stats,
                        started_ms: common::time::now_ms(),
                        alerting: http::state::AlertsApi {
                            alerts,
                            store: writer.store.clone(),
                            history_policy: t_cfg.history,
                            history: history_stats,
                            notify: notifier,
                        },
                        commands: t_commands,
                        audit_log: t_cfg.data_dir.join("audit.log"),
                        live,
                    });
                    let fleet_out = state.fleet.clone();
                    let metrics_auth = web::Data::new(http::metrics::MetricsAuth {
                        token: t_cfg.metrics_token.clone(),
                    });
                    let server = HttpServer::new(move || {
                        App::new()
                            .app_data(state.clone())
                            .app_data(metrics_auth.clone())
                            .configure(http::configure)
                    })
                    .workers(2)
                    .disable_signals();
                    let server = match &t_cfg.http_tls {
                        Some(tls) => server.bind_rustls_0_23(t_cfg.http, http_tls_config(tls)?)?,
                        None => server.bind(t_cfg.http)?,
                    };
                    let addr = server
                        .addrs()
                        .first()
                        .copied()
                        .ok_or_else(|| anyhow::anyhow!("no HTTP address"))?;
                    actix::spawn(server.run());
                    anyhow::Ok((addr, writer, fleet_out))
                });
                match res {
                    Ok((addr, writer, fleet)) => {
                        let _ = tx.send(Ok((addr, writer, fleet, actix::System::current())));
                        let _ = sys.run();
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        // Let the actors already started stop inside the runtime.
                        actix::System::current().stop();
                        let _ = sys.run();
                    }
                }
            })?;
        let (http_addr, writer, fleet, system) = rx.recv()??;
        let store = writer.store.watch();
        let writer_stop = writer.stop.clone();

        // 2. the embedded broker, whose hook stores records through the writer
        let broker_cfg = cfg.embedded_broker.map(|listen| BrokerConfig {
            listen,
            ca: dir.ca_cert(),
            cert: dir.server_cert(),
            key: dir.server_key(),
            ready: ready.clone(),
            writer: writer.tx.clone(),
        });
        let broker = match &broker_cfg {
            Some(b) => {
                let t = BrokerThread::start(b.clone())?;
                let _ = broker_stats.set(t.stats.clone());
                Some(t)
            }
            None => None,
        };
        let (mqtt_host, mqtt_addr) = match &broker {
            // An ephemeral embedded port is known only now.
            Some(b) => (b.addr.ip().to_string(), b.addr),
            None => {
                let addr = format!("{}:{}", cfg.mqtt_host, cfg.mqtt_port);
                let resolved = std::net::ToSocketAddrs::to_socket_addrs(&addr)?
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("cannot resolve {addr}"))?;
                (cfg.mqtt_host.clone(), resolved)
            }
        };

        // 3. the ingest client, on the actix system
        let icfg_host = mqtt_host.clone();
        let republisher = match (republish_queue, &republish_handle) {
            (Some(queue), Some(h)) => Some(Republisher::start(
                RepublishConfig {
                    host: mqtt_host.clone(),
                    port: mqtt_addr.port(),
                    identity: dir.server_identity(),
                },
                queue,
                h.stats(),
            )?),
            _ => None,
        };
        let icfg = IngestConfig {
            host: mqtt_host,
            port: mqtt_addr.port(),
            identity: dir.server_identity(),
            ready,
        };
        let i_stats = ingest_stats.clone();
        let i_writer = writer.clone();
        system.arbiter().spawn(async move {
            client::run(icfg, mode, i_writer, i_stats).await;
        });
        // 4. the commands actor: it publishes on the broker, so it starts now
        let setup = CommandsSetup {
            signer,
            store: CommandStore::open(&writer.store)?,
            audit_log: cfg.data_dir.join("audit.log"),
            host: icfg_host,
            port: mqtt_addr.port(),
            identity: dir.server_identity(),
        };
        system.arbiter().spawn(async move {
            let a = CommandsActor::new(setup).start();
            let _ = commands_handle.set(a.clone());
            a.do_send(AttachLive(live_hub));
            fleet.do_send(AttachCommands(a.recipient()));
        });
        // Return only once the server's own session is subscribed: before that the embedded
        // broker turns devices away.
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        while !ready_probe.load(std::sync::atomic::Ordering::Acquire) {
            if std::time::Instant::now() > deadline {
                tracing::warn!(
                    "ingest not subscribed after {READY_TIMEOUT:?}; devices are refused until it is"
                );
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        tracing::info!(http = %http_addr, mqtt = %mqtt_addr, "fleet server running");
        Ok(Server {
            http_addr,
            mqtt_addr,
            tokens,
            ingest: ingest_stats,
            broker,
            broker_cfg,
            system: Some(system),
            thread: Some(thread),
            store: Some(store),
            writer_stop,
            republish: republish_handle.map(|h| h.stats()),
            republisher,
        })
    }

    /// Stops the embedded broker (every session ends, as in a crash) and keeps the rest running.
    pub fn stop_broker(&mut self) {
        if let Some(mut b) = self.broker.take() {
            b.stop();
        }
    }

    /// Starts the embedded broker again on the same address.
    pub fn start_broker(&mut self) -> anyhow::Result<()> {
        if self.broker.is_some() {
            return Ok(());
        }
        let mut cfg = self
            .broker_cfg
            .clone()
            .ok_or_else(|| anyhow::anyhow!("no embedded broker"))?;
        cfg.listen = self.mqtt_addr;
        cfg.ready.store(false, std::sync::atomic::Ordering::Release);
        self.broker = Some(BrokerThread::start(cfg)?);
        Ok(())
    }

    /// Stops HTTP, ingest and the embedded broker, then waits (up to [`STOP_TIMEOUT`]) for
    /// the store to close, so a server started next on the same data directory can open it.
    pub fn stop(&mut self) {
        if let Some(s) = self.system.take() {
            s.stop();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(mut r) = self.republisher.take() {
            r.stop();
        }
        if let Some(mut b) = self.broker.take() {
            b.stop();
        }
        self.writer_stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(w) = self.store.take() {
            let deadline = std::time::Instant::now() + STOP_TIMEOUT;
            while w.is_open() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            if w.is_open() {
                tracing::warn!("the store is still open {STOP_TIMEOUT:?} after stop");
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}
