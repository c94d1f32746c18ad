//! Starting and stopping a whole fleet server: the stores (sled or PostgreSQL:
//! [`crate::storage`]), the actix system with HTTP, the
//! embedded broker (its own thread and runtime), the instance's registration among several on
//! PostgreSQL ([`crate::cluster`]), then the supervisor, which starts every
//! long-lived actor, task and thread ([`children`]) and restarts one that panics or stalls.
//! Tests start it in-process on ephemeral ports.
//!
//! Past a child's restart intensity the supervisor gives up: [`Server::watch_exit`] turns to
//! [`EXIT_RESTART_LIMIT`] and `fleet-server run` stops and exits with it, for systemd to
//! restart the process. An in-process server keeps running without that child.

mod children;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use actix_web::{App, HttpServer, web};
use common::pki::CertDir;

use self::children::Wiring;
use crate::alerts::persist;
use crate::alerts::stats::AlertsStats;
use crate::auth::TokenStore;
use crate::broker::embedded::{BrokerConfig, BrokerStats};
use crate::broker::thread::BrokerThread;
use crate::cluster::Cluster;
use crate::config::{HttpTls, ServerConfig};
use crate::fleet::state::PresencePolicy;
use crate::history::job::HistoryStats;
use crate::http::{self, state::AppState};
use crate::ingest::client::{IngestConfig, IngestMode};
use crate::ingest::stats::IngestStats;
use crate::ingest::writer::{self, WriterSetup};
use crate::live::LiveHub;
use crate::notify;
use crate::republish::queue::{self, RepublishStats};
use crate::sessions::Sessions;
use crate::storage::{self, StorageConfig};
use crate::store::StoreWatch;
use crate::supervise::inbox::Inbox;
use crate::supervise::slot::Slot;
pub use crate::supervise::supervisor::EXIT_RESTART_LIMIT;
use crate::supervise::supervisor::{Supervisor, SupervisorView};

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
    pub tokens: Arc<dyn TokenStore>,
    pub ingest: Arc<IngestStats>,
    pub broker: Option<BrokerThread>,
    broker_cfg: Option<BrokerConfig>,
    system: Option<actix::System>,
    thread: Option<JoinHandle<()>>,
    /// The sled store, whose closing `stop` waits for; None with PostgreSQL.
    store: Option<StoreWatch>,
    /// The republisher's counters (`[republish] enabled`); None when disabled.
    pub republish: Option<Arc<RepublishStats>>,
    supervisor: Option<Supervisor>,
    view: SupervisorView,
    /// This instance among several (registered in PostgreSQL; alone with sled).
    pub cluster: Cluster,
    #[cfg(any(test, feature = "faults"))]
    faults: crate::supervise::faults::Faults,
}

/// What the actix system's thread hands back once HTTP listens.
struct Http {
    addr: SocketAddr,
    system: actix::System,
    thread: JoinHandle<()>,
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
        let signer = common::pki::load_signer(&dir)
            .map_err(|e| anyhow::anyhow!("{e} (the command-signing key is made by `fleetctl certs init`)"))?;
        #[cfg(any(test, feature = "faults"))]
        let faults = Self::faults_from_env()?;
        let started_ms = common::time::now_ms();
        // with PostgreSQL: connects, migrates and makes partitions (an unreachable database is
        // an error naming storage.url, and the server does not start)
        let mut stores = storage::open(&StorageConfig {
            backend: cfg.storage.clone(),
            data_dir: cfg.data_dir.clone(),
            cache_bytes: cfg.store_cache_bytes,
            history: cfg.history,
        })?;
        if let Some(pg) = &stores.pg {
            // the alerts this instance opens carry its id (`alerts.opened_by`): how it tells
            // its own open alert from another instance's of the same id
            stores.alerts = Arc::new(
                crate::alerts::pg::PgAlerts::new(pg.clone()).opened_by(cfg.cluster.instance_id.clone()),
            );
        }
        let tokens = stores.tokens.clone();
        // registered once the broker and HTTP listen (its row names their addresses)
        let cluster = Cluster::new(cfg.cluster.clone(), stores.pg.clone());
        let ingest_stats = Arc::new(IngestStats::default());
        let history_stats = Arc::new(HistoryStats::default());
        let broker_stats: Arc<OnceLock<Arc<BrokerStats>>> = Arc::default();
        // what changed, for open pages: fed by the fleet, alerts and commands actors
        let live = LiveHub::new();
        let view = SupervisorView::default();
        let (fleet, alerts, commands) = (Slot::default(), Slot::default(), Slot::default());
        // queues that outlive their consumers: producers offer into them from the start
        let (writer_tx, writer_inbox) = writer::channel();
        // the outbox lives in the server's database, beside what decided it; what it holds
        // pending from an earlier process is due at once
        let notify = notify::build(alerting.notify.clone(), stores.outbox.clone());
        let republish = cfg.republish.then(|| queue::channel(queue::QUEUE));
        // several instances on one PostgreSQL store: who holds each machine's session (known
        // only to the embedded broker's hook; with an external broker the commands book sends
        // by itself, as with one instance)
        let sessions = match (&stores.pg, cfg.embedded_broker) {
            (Some(pg), Some(_)) => Some(Sessions::start(pg.clone(), &cfg.cluster.instance_id)),
            _ => None,
        };

        // 1. HTTP on the actix system's thread
        let state = AppState {
            fleet: fleet.clone(),
            tokens: tokens.clone(),
            ingest: ingest_stats.clone(),
            broker: broker_stats.clone(),
            started_ms,
            alerting: http::state::AlertsApi {
                alerts: alerts.clone(),
                store: stores.history.clone(),
                history_policy: cfg.history,
                history: history_stats.clone(),
                notify: notify.notifier.clone(),
            },
            commands: commands.clone(),
            commands_config: cfg.commands.clone(),
            audit: stores.audit.clone(),
            storage: stores.health.clone(),
            live: live.clone(),
            supervisor: view.clone(),
            cluster: cluster.clone(),
            sessions: sessions.as_ref().map(|s| s.view()),
            pg: stores.pg.clone(),
            estate: stores.estate.clone(),
        };
        let h = start_http(state, &cfg)?;
        let mut server = Server {
            http_addr: h.addr,
            mqtt_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            tokens,
            ingest: ingest_stats.clone(),
            broker: None,
            broker_cfg: None,
            system: Some(h.system.clone()),
            thread: Some(h.thread),
            store: stores.sled.as_ref().map(|s| s.watch()),
            republish: republish.as_ref().map(|(h, _)| h.stats()),
            supervisor: None,
            view: view.clone(),
            cluster: cluster.clone(),
            #[cfg(any(test, feature = "faults"))]
            faults: faults.clone(),
        };

        // 2. the embedded broker, whose hook stores records through the writer's queue
        let ready = Arc::new(AtomicBool::new(false));
        server.broker_cfg = cfg.embedded_broker.map(|listen| BrokerConfig {
            listen,
            ca: dir.ca_cert(),
            cert: dir.server_cert(),
            key: dir.server_key(),
            ready: ready.clone(),
            writer: writer_tx.clone(),
            sessions: sessions.as_ref().map(|s| s.observer()),
        });
        if let Some(b) = &server.broker_cfg {
            let t = BrokerThread::start(b.clone())?;
            let _ = broker_stats.set(t.stats.clone());
            server.broker = Some(t);
        }
        let (mqtt_host, mqtt_addr) = match &server.broker {
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
        server.mqtt_addr = mqtt_addr;
        // with PostgreSQL: the row in `instances` (an id a live instance holds is refused)
        cluster.register(mqtt_addr, server.http_addr)?;

        // 3. every long-lived actor, task and thread, under the supervisor
        let mode = match cfg.embedded_broker {
            Some(_) => IngestMode::Embedded,
            None => IngestMode::External,
        };
        let wiring = Wiring {
            started_ms,
            stores: stores.clone(),
            live,
            fleet: fleet.clone(),
            alerts,
            commands,
            commands_cfg: cfg.commands.clone(),
            cluster: sessions.as_ref().map(|s| s.link()),
            presence: PresencePolicy {
                stale_after_ms: cfg.stale_after_ms,
                offline_after_ms: cfg.offline_after_ms,
            },
            writer: WriterSetup {
                data_dir: cfg.data_dir.clone(),
                store: stores.ingest.clone(),
                fleet,
                stats: ingest_stats.clone(),
                republish: republish.as_ref().map(|(h, _)| h.clone()),
                delivery: Default::default(),
            },
            writer_inbox,
            notify,
            maintenance: alerting.notify.maintenance.clone(),
            persist: persist::queue(),
            rules,
            hold_offline_ms: alerting.hold_offline_ms,
            alerts_stats: Arc::new(AlertsStats::default()),
            history: (cfg.history, history_stats),
            signer: Arc::new(signer),
            mqtt: (mqtt_host.clone(), mqtt_addr.port(), dir.server_identity()),
            republish: republish.map(|(h, q)| (h.clone(), Inbox::new(q), h.stats())),
            ingest: (
                IngestConfig {
                    host: mqtt_host,
                    port: mqtt_addr.port(),
                    identity: dir.server_identity(),
                    ready: ready.clone(),
                },
                mode,
                writer_tx,
                ingest_stats,
            ),
            instance: cluster,
            #[cfg(any(test, feature = "faults"))]
            faults: faults.clone(),
        };
        drop(stores);
        // from here the broker's configuration holds the only reporters of the sessions task
        drop(sessions);
        server.supervisor = Some(Supervisor::start(
            h.system,
            cfg.supervisor,
            children::specs(wiring),
            view,
            #[cfg(any(test, feature = "faults"))]
            faults,
        )?);

        // Return only once the server's own session is subscribed: before that the embedded
        // broker turns devices away.
        let deadline = std::time::Instant::now() + READY_TIMEOUT;
        while !ready.load(Ordering::Acquire) {
            if std::time::Instant::now() > deadline {
                tracing::warn!(
                    "ingest not subscribed after {READY_TIMEOUT:?}; devices are refused until it is"
                );
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        tracing::info!(http = %server.http_addr, mqtt = %server.mqtt_addr, "fleet server running");
        Ok(server)
    }

    /// Faults armed by [`crate::supervise::faults::FAULTS_ENV`] (test builds only).
    #[cfg(any(test, feature = "faults"))]
    fn faults_from_env() -> anyhow::Result<crate::supervise::faults::Faults> {
        use crate::supervise::faults::{FAULTS_ENV, Faults};
        match std::env::var(FAULTS_ENV) {
            Ok(spec) => {
                tracing::warn!(faults = %spec, "fault injection armed from {FAULTS_ENV}");
                Ok(Faults::parse(&spec)?)
            }
            Err(_) => Ok(Faults::default()),
        }
    }

    /// The faults to arm on the server's children (test builds only).
    #[cfg(any(test, feature = "faults"))]
    pub fn faults(&self) -> &crate::supervise::faults::Faults {
        &self.faults
    }

    /// The supervisor's children: restarts and last exit reasons.
    pub fn supervisor(&self) -> &SupervisorView {
        &self.view
    }

    /// Turns to `Some(EXIT_RESTART_LIMIT)` when a child went past its restart intensity.
    pub fn watch_exit(&self) -> tokio::sync::watch::Receiver<Option<i32>> {
        self.view.watch_exit()
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
        cfg.ready.store(false, Ordering::Release);
        self.broker = Some(BrokerThread::start(cfg)?);
        Ok(())
    }

    /// Stops every child (ingest first, the writer, which flushes, and the fleet last), HTTP
    /// and the embedded broker, then waits (up to [`STOP_TIMEOUT`]) for the store to close, so
    /// a server started next on the same data directory can open it.
    pub fn stop(&mut self) {
        // first: nothing is restarted while the rest stops
        let supervised = self.supervisor.is_some();
        if let Some(mut s) = self.supervisor.take() {
            s.stop();
        }
        // every job stopped: the leases can go to another instance now
        if supervised {
            self.cluster.stop();
        }
        if let Some(s) = self.system.take() {
            s.stop();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(mut b) = self.broker.take() {
            b.stop();
        }
        // the broker's hook held the writer's queue
        self.broker_cfg = None;
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

/// Starts the actix system on a thread of its own with the HTTP server; returns once it
/// listens.
fn start_http(state: AppState, cfg: &ServerConfig) -> anyhow::Result<Http> {
    let (tx, rx) = std_mpsc::channel();
    let (listen, tls, metrics_token) = (cfg.http, cfg.http_tls.clone(), cfg.metrics_token.clone());
    let thread = std::thread::Builder::new()
        .name("fleet-server".into())
        .spawn(move || {
            let sys = actix::System::new();
            let res = sys.block_on(async move {
                let state = web::Data::new(state);
                let metrics_auth = web::Data::new(http::metrics::MetricsAuth { token: metrics_token });
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(state.clone())
                        .app_data(metrics_auth.clone())
                        .configure(http::configure)
                })
                .workers(2)
                .disable_signals();
                let server = match &tls {
                    Some(tls) => server.bind_rustls_0_23(listen, http_tls_config(tls)?)?,
                    None => server.bind(listen)?,
                };
                let addr = server
                    .addrs()
                    .first()
                    .copied()
                    .ok_or_else(|| anyhow::anyhow!("no HTTP address"))?;
                actix::spawn(server.run());
                anyhow::Ok(addr)
            });
            match res {
                Ok(addr) => {
                    let _ = tx.send(Ok((addr, actix::System::current())));
                    let _ = sys.run();
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    // Let what already started stop inside the runtime.
                    actix::System::current().stop();
                    let _ = sys.run();
                }
            }
        })?;
    match rx.recv()? {
        Ok((addr, system)) => Ok(Http { addr, system, thread }),
        Err(e) => {
            let _ = thread.join();
            Err(e)
        }
    }
}
