//! `rvm-sim demo`: one command on a fresh machine. Makes dev certificates if missing,
//! starts the embedded broker, the server and web view, N simulated RVMs across 3 sites and
//! this machine's own agent, and prints the URL and an admin token.
//!
//! - [`local_agent`]: this machine's whole agent, whose recovery actions are recorded and
//!   never carried out

pub mod local_agent;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::DeviceId;
use common::pki::{self, Ca, CertDir};
use fleet_server::auth::{Role, TokenStore};
use fleet_server::config::ServerConfig;
use fleet_server::server::Server;
use rvm_agent::runtime::{self, DeviceHandle};

use self::local_agent::{LocalAgent, LocalAgentSpec};
use crate::scenario::Scenario;
use crate::simulate::{self, SimConfig, SimProfile};

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub data_dir: PathBuf,
    pub http: SocketAddr,
    pub mqtt: SocketAddr,
    pub devices: usize,
    pub sites: usize,
    pub interval: Duration,
    /// Also run an agent for this machine.
    pub local_agent: bool,
    /// The story the simulated machines replay (None: no faults).
    pub scenario: Option<Scenario>,
}

/// The story the demo replays unless told otherwise: `scenarios/demo.toml`.
pub const DEMO_SCENARIO: &str = include_str!("../../../scenarios/demo.toml");

/// `scenarios/demo.toml`, built in (a unit test of [`crate::scenario`] checks that it parses).
pub fn demo_scenario() -> anyhow::Result<Scenario> {
    Scenario::parse(DEMO_SCENARIO).map_err(|e| anyhow::anyhow!("built-in scenarios/demo.toml: {e}"))
}

/// Everything the demo started.
pub struct Demo {
    pub server: Server,
    pub admin_token: String,
    pub url: String,
    /// This machine's agent (unless `--no-local-agent`).
    pub local: Option<LocalAgent>,
    simulated: Option<(actix::System, std::thread::JoinHandle<()>)>,
}

impl Demo {
    /// Stops this machine's agent (it says goodbye and flushes), the simulated machines, then
    /// the server.
    pub fn stop(&mut self) {
        if let Some(mut a) = self.local.take() {
            a.stop();
        }
        if let Some((sys, t)) = self.simulated.take() {
            sys.stop();
            let _ = t.join();
        }
        self.server.stop();
    }
}

/// This machine's device id: the hostname's letters and digits, or `local`.
pub fn local_device_id() -> DeviceId {
    let h: String = runtime::hostname()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(64)
        .collect();
    DeviceId::new(h).unwrap_or_else(|_| DeviceId::new("local").expect("static id is valid"))
}

/// The admin token in `DIR/admin.token`, made if missing or no longer valid.
pub fn ensure_admin_token(data_dir: &Path, tokens: &dyn TokenStore) -> anyhow::Result<String> {
    let path = data_dir.join("admin.token");
    if let Ok(t) = std::fs::read_to_string(&path)
        && tokens.verify(t.trim()).is_some()
    {
        return Ok(t.trim().to_string());
    }
    let name = format!("demo-admin-{}", common::ids::random_hex(3));
    let t = tokens.create(&name, Role::Admin)?;
    pki::write_file(&path, format!("{t}\n").as_bytes(), 0o600, true)?;
    Ok(t)
}

pub fn start(opts: &DemoOptions) -> anyhow::Result<Demo> {
    let certs = opts.data_dir.join("certs");
    let dir = CertDir::new(&certs);
    let report = pki::init(&dir, &["localhost".into(), "127.0.0.1".into()], false)?;
    if !report.written.is_empty() {
        eprintln!("made dev certificates in {}", certs.display());
    }
    let server = Server::start(ServerConfig {
        http: opts.http,
        embedded_broker: Some(opts.mqtt),
        mqtt_host: opts.mqtt.ip().to_string(),
        mqtt_port: opts.mqtt.port(),
        certs: certs.clone(),
        storage: fleet_server::pg::config::StorageBackend::Sled,
        data_dir: opts.data_dir.join("server"),
        store_cache_bytes: fleet_server::store::STORE_CACHE_BYTES,
        stale_after_ms: 15_000,
        offline_after_ms: 60_000,
        alerting: None,
        history: Default::default(),
        metrics_token: None,
        http_tls: None,
        republish: true,
        supervisor: Default::default(),
        cluster: fleet_server::cluster::ClusterConfig::generated(),
        commands: Default::default(),
    })?;
    let admin_token = ensure_admin_token(&opts.data_dir, &*server.tokens)?;
    let url = format!("http://{}/", server.http_addr);

    let sim = SimConfig {
        devices: opts.devices,
        sites: opts.sites,
        prefix: "rvm".into(),
        host: server.mqtt_addr.ip().to_string(),
        port: server.mqtt_addr.port(),
        certs: certs.clone(),
        interval: opts.interval,
        first: 1,
    };
    let scenario = opts.scenario.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("demo-simulated".into())
        .spawn(move || {
            let sys = actix::System::new();
            let started = sys.block_on(async move {
                let mut profile = SimProfile::default();
                if let Some(s) = &scenario {
                    profile.models_of(&sim, s);
                }
                let devices = simulate::start_with(&sim, &profile)?;
                if let Some(s) = scenario {
                    simulate::replay(s, &devices);
                }
                let handles: Vec<DeviceHandle> = devices.into_iter().map(|d| d.handle).collect();
                anyhow::Ok(handles)
            });
            match started {
                Ok(handles) => {
                    let _ = tx.send(Ok(actix::System::current()));
                    let _ = sys.run();
                    drop(handles);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })?;
    let simulated_sys = rx.recv()??;
    let mut demo = Demo {
        server,
        admin_token,
        url,
        simulated: Some((simulated_sys, thread)),
        local: None,
    };
    if opts.local_agent {
        let broker = demo.server.mqtt_addr;
        match start_local_agent(opts, &certs, broker) {
            Ok(a) => demo.local = Some(a),
            Err(e) => {
                demo.stop();
                return Err(e);
            }
        }
    }
    Ok(demo)
}

/// This machine's whole agent, from the `agent.toml` the demo writes (see [`local_agent`]).
fn start_local_agent(opts: &DemoOptions, certs: &Path, broker: SocketAddr) -> anyhow::Result<LocalAgent> {
    let dir = CertDir::new(certs);
    let device = local_device_id();
    let identity = Ca::load(&dir)?.ensure_device(&dir, &device)?;
    LocalAgent::start(&LocalAgentSpec {
        device,
        broker: broker.to_string(),
        identity,
        signing_pub: dir.signing_pub(),
        data_dir: std::path::absolute(&opts.data_dir)?,
        interval: opts.interval,
    })
}
