//! Helpers for the end-to-end tests: a fleet server on ephemeral ports, agents, raw MQTT
//! clients for probing the broker, and the HTTP API; [`mosquitto`]: the fleet on a Mosquitto
//! child process; [`schema`]: the JSON Schemas of `docs/schemas/` and their validator;
//! [`postgres`]: throwaway PostgreSQL clusters; [`process`]: the workspace's binaries as child
//! processes; [`cluster`]: several `fleet-server` processes on one database; [`rules`]: rule
//! files several suites share.
//!
//! A [`TestFleet`] keeps its state in sled or in PostgreSQL ([`Backend`]): the suites for
//! ingest, store-and-forward, alerts, commands and the web view run their main scenarios on
//! both (a test named `..._on_postgres`: a database of its own on the test process's shared
//! cluster, [`postgres::PgDatabase`], or a cluster of its own for a test that stops
//! PostgreSQL, [`FleetOptions::own_pg_cluster`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pki::{self, CertDir};
use common::tls::ClientIdentity;
use fleet_server::auth::Role;
use fleet_server::config::{AlertingConfig, RulesSource, ServerConfig};
use fleet_server::server::Server;
use fleet_server::supervise::restart::RestartPolicy;
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, TlsConfiguration, Transport};
use serde_json::Value;

pub mod cluster;
pub mod harness;
pub mod mosquitto;
pub mod postgres;
pub mod process;
pub mod receivers;
pub mod routes;
pub mod rules;
pub mod schema;

pub use process::{Child, bin_path, free_port};
pub use receivers::{Received, SmtpReceiver, WebhookReceiver};

/// Which store a [`TestFleet`] keeps its state in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Backend {
    /// The embedded sled store in the fleet's temp dir.
    #[default]
    Sled,
    /// PostgreSQL: a database of the fleet's own on the test process's shared cluster, or a
    /// cluster of its own ([`FleetOptions::own_pg_cluster`]); [`postgres::PgDatabase`].
    Postgres,
}

impl Backend {
    pub const BOTH: [Backend; 2] = [Backend::Sled, Backend::Postgres];
}

/// A fleet server with its embedded broker, certificates and an admin token, in a temp dir.
pub struct TestFleet {
    pub dir: tempfile::TempDir,
    pub certs: CertDir,
    pub server: Server,
    pub admin: String,
    pub http: reqwest::Client,
    cfg: ServerConfig,
    /// Where devices connect when that is not the server's own MQTT port (Mosquitto's device
    /// listener, [`mosquitto`]); None: the embedded broker's port.
    pub device_port: Option<u16>,
    /// The fleet's PostgreSQL database with [`Backend::Postgres`] (dropped after the server,
    /// when the fleet is dropped).
    pub pg: Option<postgres::PgDatabase>,
}

/// How [`TestFleet::start_with`] configures the server.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Text of a rules.toml; None: the rules built into the server.
    pub rules: Option<String>,
    /// Text of a `[notify]` section (TOML, with the `[notify...]` headers); None: log only.
    pub notify: Option<String>,
    pub stale_after_ms: i64,
    pub offline_after_ms: i64,
    /// See `[alerts] hold_offline_s`; None: the site outage window.
    pub hold_offline_ms: Option<i64>,
    /// `[http] metrics_token`; None: `/metrics` is open.
    pub metrics_token: Option<String>,
    pub backend: Backend,
    /// With [`Backend::Postgres`]: a cluster of the fleet's own, which the test may stop or
    /// crash, instead of a database on the process's shared cluster.
    pub own_pg_cluster: bool,
    /// `[supervisor]`; None: the defaults.
    pub supervisor: Option<RestartPolicy>,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            rules: None,
            notify: None,
            stale_after_ms: 15_000,
            offline_after_ms: 60_000,
            hold_offline_ms: None,
            metrics_token: None,
            backend: Backend::Sled,
            own_pg_cluster: false,
            supervisor: None,
        }
    }
}

impl TestFleet {
    pub fn start() -> anyhow::Result<TestFleet> {
        Self::start_with(FleetOptions::default())
    }

    /// A server with the default options on `backend`.
    pub fn start_on(backend: Backend) -> anyhow::Result<TestFleet> {
        Self::start_with(FleetOptions {
            backend,
            ..Default::default()
        })
    }

    /// A server with its own rules, notifications and presence timings.
    pub fn start_with(opts: FleetOptions) -> anyhow::Result<TestFleet> {
        common::tls::install_crypto_provider();
        let dir = tempfile::tempdir()?;
        let certs = CertDir::new(dir.path().join("certs"));
        pki::init(&certs, &["localhost".into(), "127.0.0.1".into()], false)?;
        let alerting = if opts.rules.is_some() || opts.notify.is_some() || opts.hold_offline_ms.is_some() {
            let rules = match &opts.rules {
                Some(text) => {
                    let path = dir.path().join("rules.toml");
                    std::fs::write(&path, text)?;
                    RulesSource::File(path)
                }
                None => RulesSource::Builtin,
            };
            let notify = match &opts.notify {
                Some(text) => {
                    #[derive(serde::Deserialize)]
                    struct Wrap {
                        notify: fleet_server::notify::config::NotifySection,
                    }
                    toml::from_str::<Wrap>(text)?
                        .notify
                        .validate("notify")
                        .map_err(|p| anyhow::anyhow!(p.join("; ")))?
                }
                None => Default::default(),
            };
            Some(AlertingConfig {
                rules,
                notify,
                hold_offline_ms: opts.hold_offline_ms,
            })
        } else {
            None
        };
        let pg = match opts.backend {
            Backend::Sled => None,
            Backend::Postgres if opts.own_pg_cluster => Some(postgres::PgDatabase::own()?),
            Backend::Postgres => Some(postgres::PgDatabase::shared()?),
        };
        let storage = match &pg {
            None => fleet_server::pg::config::StorageBackend::Sled,
            Some(pg) => fleet_server::pg::config::StorageBackendFile {
                backend: fleet_server::pg::config::Backend::Postgres,
                url: Some(pg.url()),
                pool_size: Some(8),
                ..Default::default()
            }
            .validate("storage")
            .map_err(|p| anyhow::anyhow!(p.join("; ")))?,
        };
        let cfg = ServerConfig {
            storage,
            http: "127.0.0.1:0".parse()?,
            embedded_broker: Some("127.0.0.1:0".parse()?),
            mqtt_host: "127.0.0.1".into(),
            mqtt_port: 0,
            certs: certs.root().to_path_buf(),
            data_dir: dir.path().join("server"),
            store_cache_bytes: fleet_server::store::STORE_CACHE_BYTES,
            stale_after_ms: opts.stale_after_ms,
            offline_after_ms: opts.offline_after_ms,
            alerting,
            history: Default::default(),
            metrics_token: opts.metrics_token.clone(),
            http_tls: None,
            republish: true,
            supervisor: opts.supervisor.unwrap_or_default(),
            cluster: fleet_server::cluster::ClusterConfig::generated(),
            commands: Default::default(),
        };
        let server = Server::start(cfg.clone())?;
        let admin = server.tokens.create("test-admin", Role::Admin)?;
        // A restart keeps the ports, so agents and clients find the server again.
        let mut cfg = cfg;
        cfg.http = server.http_addr;
        cfg.embedded_broker = Some(server.mqtt_addr);
        Ok(TestFleet {
            dir,
            certs,
            server,
            admin,
            http: reqwest::Client::new(),
            cfg,
            device_port: None,
            pg,
        })
    }

    /// The fleet's PostgreSQL database (panics on a sled fleet: a test bug).
    pub fn pg(&self) -> &postgres::PgDatabase {
        self.pg.as_ref().expect("a fleet started with Backend::Postgres")
    }

    pub fn backend(&self) -> Backend {
        if self.pg.is_some() {
            Backend::Postgres
        } else {
            Backend::Sled
        }
    }

    /// Stops the server (broker, ingest, HTTP, store) and starts it again on the same ports
    /// and data directory.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.server.stop();
        self.server = Server::start(self.cfg.clone())?;
        Ok(())
    }

    /// A token with `role`, named `name` (the name is who acknowledges).
    pub fn token(&self, name: &str, role: Role) -> anyhow::Result<String> {
        Ok(self.server.tokens.create(name, role)?)
    }

    /// POST (or DELETE with `body = None` and `delete`) as admin; the status and JSON body.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut r = self.http.request(method, self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, v))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.server.http_addr, path)
    }

    pub fn broker_port(&self) -> u16 {
        self.device_port.unwrap_or(self.server.mqtt_addr.port())
    }

    /// `rvm-sim simulate` against this fleet's broker: `devices` machines `{prefix}0001`, ...
    /// on one site, a record a second, replaying `scenario` (a path); its output goes to `log`.
    pub fn simulate_scenario(
        &self,
        devices: usize,
        prefix: &str,
        scenario: &str,
        log: &Path,
    ) -> anyhow::Result<Child> {
        let broker = format!("127.0.0.1:{}", self.broker_port());
        let certs = self.certs.root().display().to_string();
        let devices = devices.to_string();
        Child::spawn(
            "rvm-sim",
            &[
                "simulate",
                "--devices",
                &devices,
                "--first",
                "1",
                "--prefix",
                prefix,
                "--sites",
                "1",
                "--broker",
                &broker,
                "--certs",
                &certs,
                "--interval",
                "1000",
                "--scenario",
                scenario,
            ],
            log,
        )
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.admin)
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "GET {path}: {}", r.status());
        Ok(r.json().await?)
    }

    pub async fn devices(&self) -> anyhow::Result<Vec<Value>> {
        Ok(self.get("/api/v1/devices").await?["devices"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// A device's detail, or None if the server does not know it.
    pub async fn device(&self, id: &str) -> anyhow::Result<Option<Value>> {
        let r = self
            .http
            .get(self.url(&format!("/api/v1/devices/{id}")))
            .bearer_auth(&self.admin)
            .send()
            .await?;
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        anyhow::ensure!(r.status().is_success(), "GET device {id}: {}", r.status());
        Ok(Some(r.json().await?))
    }

    pub async fn health(&self) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(self.url("/api/v1/health"))
            .send()
            .await?
            .json()
            .await?)
    }

    /// Issues a device certificate in the fleet's CA directory.
    pub fn device_identity(&self, id: &str) -> anyhow::Result<ClientIdentity> {
        let ca = pki::Ca::load(&self.certs)?;
        Ok(ca.ensure_device(&self.certs, &common::DeviceId::new(id)?)?)
    }

    /// Writes an agent.toml for `id` and returns its path.
    pub fn agent_config(&self, id: &str, interval_ms: u64) -> anyhow::Result<PathBuf> {
        self.agent_config_with(id, interval_ms, "")
    }

    /// As [`TestFleet::agent_config`], with extra lines appended to the `[buffer]` section.
    pub fn agent_config_with(
        &self,
        id: &str,
        interval_ms: u64,
        buffer_extra: &str,
    ) -> anyhow::Result<PathBuf> {
        write_agent_config(
            self.dir.path(),
            &self.certs,
            id,
            self.broker_port(),
            interval_ms,
            buffer_extra,
        )
    }

    /// As [`TestFleet::agent_config`], with extra `[collector]` lines and extra sections.
    pub fn agent_config_extra(
        &self,
        id: &str,
        interval_ms: u64,
        extra: &AgentExtra,
    ) -> anyhow::Result<PathBuf> {
        write_agent_config_extra(
            self.dir.path(),
            &self.certs,
            id,
            self.broker_port(),
            interval_ms,
            extra,
        )
    }
}

/// Extra lines for a test agent's config.
#[derive(Debug, Default, Clone)]
pub struct AgentExtra {
    pub buffer: String,
    pub collector: String,
    /// Whole sections appended at the end (`[paths]`, `[supervisor]`, ...).
    pub tail: String,
}

/// Writes `DIR/{id}.toml` for an agent talking to the broker on `port`.
pub fn write_agent_config(
    dir: &Path,
    certs: &CertDir,
    id: &str,
    port: u16,
    interval_ms: u64,
    buffer_extra: &str,
) -> anyhow::Result<PathBuf> {
    let extra = AgentExtra {
        buffer: buffer_extra.to_string(),
        ..Default::default()
    };
    write_agent_config_extra(dir, certs, id, port, interval_ms, &extra)
}

pub fn write_agent_config_extra(
    dir: &Path,
    certs: &CertDir,
    id: &str,
    port: u16,
    interval_ms: u64,
    extra: &AgentExtra,
) -> anyhow::Result<PathBuf> {
    {
        let buffer_extra = &extra.buffer;
        let collector_extra = &extra.collector;
        let tail = &extra.tail;
        let ca = pki::Ca::load(certs)?;
        let ident = ca.ensure_device(certs, &common::DeviceId::new(id)?)?;
        let path = dir.join(format!("{id}.toml"));
        std::fs::write(
            &path,
            format!(
                r#"device_id = "{id}"
site = "test"
[mqtt]
broker = "127.0.0.1:{port}"
ca = "{ca}"
cert = "{cert}"
key = "{key}"
keep_alive_s = 5
[collector]
interval_ms = {interval_ms}
{collector_extra}
[buffer]
dir = "{buf}"
{buffer_extra}
[http]
listen = ""
{tail}
"#,
                ca = ident.ca.display(),
                cert = ident.cert.display(),
                key = ident.key.display(),
                buf = dir.join(format!("{id}-buffer")).display(),
            ),
        )?;
        Ok(path)
    }
}

/// Agents running in their own actix system on a thread.
pub struct Agents {
    sys: Option<actix::System>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub links: Vec<Arc<rvm_agent::link::status::LinkStatus>>,
    pub buffers: Vec<rvm_agent::buffer::BufferHandle>,
    pub actors: Vec<rvm_agent::supervise::actor::ActorStatuses>,
    pub collectors: Vec<Arc<rvm_agent::collect::actor::CollectorStats>>,
    stop_collecting: Vec<Box<dyn Fn() + Send>>,
}

impl Agents {
    /// Starts one real agent per config file.
    pub fn start(configs: Vec<PathBuf>) -> anyhow::Result<Agents> {
        let n = configs.len();
        Self::start_with(
            configs
                .into_iter()
                .zip((0..n).map(|_| rvm_agent::agent::Overrides::default()))
                .collect(),
        )
    }

    /// Starts one real agent per config file, each with its overrides (faults, executor).
    pub fn start_with(agents: Vec<(PathBuf, rvm_agent::agent::Overrides)>) -> anyhow::Result<Agents> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let sys = actix::System::new();
            let (stop_tx, stop_rx) = std::sync::mpsc::channel::<usize>();
            let res = sys.block_on(async move {
                let mut hs = Vec::new();
                for (c, o) in agents {
                    let file = rvm_agent::config::AgentFile::load(&c)?;
                    hs.push(rvm_agent::agent::start_with(&file, o)?);
                }
                let hs = Arc::new(hs);
                // stop requests reach the actors through this arbiter
                let hs2 = hs.clone();
                actix::spawn(async move {
                    loop {
                        while let Ok(i) = stop_rx.try_recv() {
                            if let Some(h) = hs2.get(i) {
                                h.stop_collecting();
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                });
                anyhow::Ok(hs)
            });
            match res {
                Ok(hs) => {
                    let links = hs.iter().map(|h| h.link.clone()).collect();
                    let buffers = hs.iter().map(|h| h.buffer.clone()).collect();
                    let actors = hs.iter().map(|h| h.actors.clone()).collect();
                    let collectors = hs.iter().map(|h| h.collector.clone()).collect();
                    let stops: Vec<Box<dyn Fn() + Send>> = (0..hs.len())
                        .map(|i| {
                            let t = stop_tx.clone();
                            Box::new(move || {
                                let _ = t.send(i);
                            }) as Box<dyn Fn() + Send>
                        })
                        .collect();
                    let _ = tx.send(Ok((
                        actix::System::current(),
                        links,
                        buffers,
                        actors,
                        collectors,
                        stops,
                    )));
                    let _ = sys.run();
                    drop(hs);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
        let (sys, links, buffers, actors, collectors, stop_collecting) = rx.recv()??;
        Ok(Agents {
            sys: Some(sys),
            thread: Some(thread),
            links,
            buffers,
            actors,
            collectors,
            stop_collecting,
        })
    }

    /// Stops agent `i`'s collector; its link keeps draining.
    pub fn stop_collecting(&self, i: usize) {
        (self.stop_collecting[i])();
    }

    pub fn stop(&mut self) {
        if let Some(s) = self.sys.take() {
            s.stop();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Simulated machines (`rvm_sim::simulate`) in their own actix system on a thread, with
/// their fault switches and a way to stop one (it says goodbye: offline at once).
pub struct SimFleet {
    sys: Option<actix::System>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub ids: Vec<String>,
    pub faults: Vec<rvm_sim::source::SimFault>,
    /// Per machine: make the commands it accepts fail.
    pub commands_fail: Vec<Arc<std::sync::atomic::AtomicBool>>,
    stop_tx: std::sync::mpsc::Sender<usize>,
}

impl SimFleet {
    /// Starts `cfg.devices` machines against the fleet's broker.
    pub fn start(
        fleet: &TestFleet,
        cfg: rvm_sim::simulate::SimConfig,
        profile: rvm_sim::simulate::SimProfile,
    ) -> anyhow::Result<SimFleet> {
        let mut cfg = cfg;
        cfg.host = "127.0.0.1".into();
        cfg.port = fleet.broker_port();
        cfg.certs = fleet.certs.root().to_path_buf();
        let ids = (0..cfg.devices)
            .map(|i| cfg.device_id(i).map(|d| d.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<usize>();
        let thread = std::thread::spawn(move || {
            let sys = actix::System::new();
            let res = sys.block_on(async move {
                let devices = rvm_sim::simulate::start_with(&cfg, &profile)?;
                let faults: Vec<_> = devices.iter().map(|d| d.fault.clone()).collect();
                let fails: Vec<_> = devices.iter().map(|d| d.commands_fail.clone()).collect();
                let handles: Vec<_> = devices.into_iter().map(|d| d.handle).collect();
                actix::spawn(async move {
                    loop {
                        while let Ok(i) = stop_rx.try_recv() {
                            if let Some(h) = handles.get(i) {
                                h.stop().await;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                });
                anyhow::Ok((faults, fails))
            });
            match res {
                Ok((faults, fails)) => {
                    let _ = tx.send(Ok((actix::System::current(), faults, fails)));
                    let _ = sys.run();
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
        let (sys, faults, commands_fail) = rx.recv()??;
        Ok(SimFleet {
            sys: Some(sys),
            thread: Some(thread),
            ids,
            faults,
            commands_fail,
            stop_tx,
        })
    }

    /// Stops machine `i` cleanly: it says goodbye and disconnects.
    pub fn stop_device(&self, i: usize) {
        let _ = self.stop_tx.send(i);
    }

    pub fn set_fault(&self, i: usize, fault: rvm_sim::source::Fault) {
        if let Some(f) = self.faults.get(i) {
            f.set(fault);
        }
    }

    pub fn stop(&mut self) {
        if let Some(s) = self.sys.take() {
            s.stop();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SimFleet {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `f` until it returns Some or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `f` until it returns Some or `timeout` passes (blocking: for tests without a runtime).
pub fn eventually_blocking<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How a raw MQTT connection attempt ended.
#[allow(clippy::large_enum_variant)] // test helper, made a handful of times
pub enum ConnectOutcome {
    Accepted(AsyncClient, EventLoop),
    Refused(String),
}

/// Options for a raw probe client.
pub struct Probe {
    pub client_id: String,
    pub username: Option<String>,
    pub will: Option<(String, Vec<u8>)>,
    pub tls: Arc<rustls::ClientConfig>,
}

impl Probe {
    pub fn new(client_id: &str, tls: Arc<rustls::ClientConfig>) -> Probe {
        Probe {
            client_id: client_id.into(),
            username: None,
            will: None,
            tls,
        }
    }

    /// Connects and waits for CONNACK (or a refusal) for up to 5 s.
    pub async fn connect(self, port: u16) -> ConnectOutcome {
        let mut o = MqttOptions::new(self.client_id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(5));
        if let Some(u) = self.username {
            o.set_credentials(u, "x");
        }
        if let Some((t, p)) = self.will {
            o.set_last_will(rumqttc::LastWill::new(t, p, rumqttc::QoS::AtLeastOnce, false));
        }
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(self.tls)));
        let (client, mut el) = AsyncClient::new(o, 64);
        let r = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(a))) => {
                        return if a.code == rumqttc::ConnectReturnCode::Success {
                            Ok(())
                        } else {
                            Err(format!("connack {:?}", a.code))
                        };
                    }
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await;
        match r {
            Ok(Ok(())) => ConnectOutcome::Accepted(client, el),
            Ok(Err(e)) => ConnectOutcome::Refused(e),
            Err(_) => ConnectOutcome::Refused("timeout".into()),
        }
    }
}

pub fn tls_for(identity: &ClientIdentity) -> Arc<rustls::ClientConfig> {
    common::tls::client_config(identity).expect("test identity loads")
}

/// Reads one file's text (test diagnostics).
pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// The firing alert of each `(device, rule, _)` of `expected` among `alerts` (the JSON of
/// `GET /api/v1/alerts`), in that order; None until every one fires.
pub fn firing_each(alerts: &[Value], expected: &[(&str, &str, &str)]) -> Option<Vec<Value>> {
    expected
        .iter()
        .map(|(device, rule, _)| {
            alerts
                .iter()
                .find(|a| a["device"] == *device && a["rule"] == *rule && a["state"] == "firing")
                .cloned()
        })
        .collect()
}
