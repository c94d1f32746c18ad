//! Mosquitto for the end-to-end tests: the Debian binary as a child process with exactly the
//! configuration `fleetctl broker-config` writes ([`fleet_server::broker::mosquitto::write_config`]),
//! on free ports with its own persistence directory, and a fleet server using it as its
//! external broker. A missing Mosquitto fails the test that needs it, loudly: install the
//! Debian packages `mosquitto` and `mosquitto-clients` (never a system service here).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pki::{self, CertDir};
use common::topics::Kind;
use fleet_server::auth::Role;
use fleet_server::broker::mosquitto::{BrokerConfigRequest, Written, write_config};
use fleet_server::config::{AlertingConfig, RulesSource, ServerConfig};
use fleet_server::server::Server;

use crate::{FleetOptions, TestFleet, free_port};

/// How long Mosquitto gets to open its listeners.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Path of a Mosquitto program (`mosquitto`, `mosquitto_sub`, `mosquitto_pub`); panics with
/// what to install when it is missing: these tests never pass by skipping.
pub fn program(name: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/sbin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    match found {
        Some(p) => p,
        None => panic!(
            "{name} is not installed: `apt-get install -y mosquitto mosquitto-clients` \
             (the Mosquitto tests need the real broker and clients and never skip)"
        ),
    }
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A Mosquitto child process. Stopped (SIGTERM, which saves its database) when dropped.
pub struct Mosquitto {
    /// The device listener (devices, readers).
    pub port: u16,
    /// The server listener (the fleet server's own sessions).
    pub server_port: u16,
    pub written: Written,
    pub log: PathBuf,
    certs: PathBuf,
    child: Option<std::process::Child>,
}

impl Mosquitto {
    /// Writes the configuration for the fleet CA in `certs` into `dir/mosquitto/` and starts
    /// the broker on two free loopback ports.
    pub fn start(certs: &CertDir, dir: &Path) -> anyhow::Result<Mosquitto> {
        let port = free_port();
        let mut server_port = free_port();
        while server_port == port {
            server_port = free_port();
        }
        let persist = dir.join("mosquitto-db");
        std::fs::create_dir_all(&persist)?;
        let written = write_config(&BrokerConfigRequest {
            out: dir.join("mosquitto"),
            certs: certs.root().to_path_buf(),
            listen: format!("127.0.0.1:{port}").parse()?,
            server_listen: format!("127.0.0.1:{server_port}").parse()?,
            broker_certs: None,
            conf_dir: None,
            persistence_dir: persist,
            // as root Mosquitto would switch to `mosquitto`, which cannot read the 0600 key
            run_as: running_as_root().then(|| "root".to_string()),
        })?;
        let mut m = Mosquitto {
            port,
            server_port,
            log: dir.join("mosquitto.log"),
            written,
            certs: certs.root().to_path_buf(),
            child: None,
        };
        m.spawn()?;
        Ok(m)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(program("mosquitto"))
            .arg("-c")
            .arg(&self.written.conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let up = [self.port, self.server_port]
                .iter()
                .all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok());
            if up {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                anyhow::bail!("mosquitto exited with {status}:\n{}", self.log_text());
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "mosquitto did not listen within {START_TIMEOUT:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything Mosquitto logged so far.
    pub fn log_text(&self) -> String {
        crate::read(&self.log)
    }

    /// Writes the ACL again (as after issuing a reader certificate: `fleetctl broker-config`
    /// rerun) and reloads it (SIGHUP, what `systemctl reload mosquitto` sends).
    pub fn regenerate_and_reload(&mut self) -> anyhow::Result<()> {
        let req = BrokerConfigRequest {
            out: self
                .written
                .conf
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            certs: self.certs.clone(),
            listen: self.written.setup.listen,
            server_listen: self.written.setup.server_listen,
            broker_certs: None,
            conf_dir: None,
            persistence_dir: self.written.setup.persistence_dir.clone(),
            run_as: self.written.setup.run_as.clone(),
        };
        self.written = write_config(&req)?;
        self.signal("HUP");
        // Mosquitto reloads in its main loop; give it a moment
        std::thread::sleep(Duration::from_millis(500));
        Ok(())
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(c.id().to_string())
                .status();
        }
    }

    /// SIGTERM (Mosquitto saves its database), then wait up to 10 s, then SIGKILL.
    pub fn stop(&mut self) {
        self.signal("TERM");
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `mosquitto_sub` / `mosquitto_pub` arguments for the device listener as `name` from the
    /// fleet's certificate directory (`reader-NAME`, a device id).
    pub fn client_args(&self, certs: &CertDir, name: &str) -> Vec<String> {
        let (cert, key) = match name.strip_prefix(common::ids::READER_PREFIX) {
            Some(reader) => (certs.reader_cert(reader), certs.reader_key(reader)),
            None => match common::DeviceId::new(name) {
                Ok(id) => (certs.device_cert(&id), certs.device_key(&id)),
                Err(_) => (certs.server_cert(), certs.server_key()),
            },
        };
        vec![
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
            "--cafile".into(),
            certs.ca_cert().display().to_string(),
            "--cert".into(),
            cert.display().to_string(),
            "--key".into(),
            key.display().to_string(),
        ]
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A fleet server whose broker is a Mosquitto child process (`embedded_broker: None`),
/// connecting to Mosquitto's server listener; devices use its device listener
/// ([`TestFleet::broker_port`]). Readers named in `readers` get certificates first, so the
/// generated ACL lists them.
pub fn start_fleet(opts: FleetOptions, readers: &[&str]) -> anyhow::Result<(TestFleet, Mosquitto)> {
    common::tls::install_crypto_provider();
    let dir = tempfile::tempdir()?;
    let certs = CertDir::new(dir.path().join("certs"));
    pki::init(&certs, &["localhost".into(), "127.0.0.1".into()], false)?;
    let ca = pki::Ca::load(&certs)?;
    for r in readers {
        ca.issue_reader(&certs, r, pki::Validity::days_from_now(10), false)?;
    }
    let mosquitto = Mosquitto::start(&certs, dir.path())?;
    let alerting = match &opts.rules {
        Some(text) => {
            let path = dir.path().join("rules.toml");
            std::fs::write(&path, text)?;
            Some(AlertingConfig {
                rules: RulesSource::File(path),
                notify: Default::default(),
                hold_offline_ms: opts.hold_offline_ms,
            })
        }
        None => None,
    };
    let cfg = ServerConfig {
        storage: fleet_server::pg::config::StorageBackend::Sled,
        http: "127.0.0.1:0".parse()?,
        embedded_broker: None,
        mqtt_host: "127.0.0.1".into(),
        mqtt_port: mosquitto.server_port,
        certs: certs.root().to_path_buf(),
        data_dir: dir.path().join("server"),
        store_cache_bytes: fleet_server::store::STORE_CACHE_BYTES,
        stale_after_ms: opts.stale_after_ms,
        offline_after_ms: opts.offline_after_ms,
        alerting,
        history: Default::default(),
        metrics_token: None,
        http_tls: None,
        republish: true,
        supervisor: opts.supervisor.unwrap_or_default(),
        cluster: fleet_server::cluster::ClusterConfig::generated(),
        commands: Default::default(),
    };
    let server = Server::start(cfg.clone())?;
    anyhow::ensure!(
        server.ingest.connected.load(std::sync::atomic::Ordering::Relaxed),
        "the server did not connect to Mosquitto:\n{}",
        mosquitto.log_text()
    );
    let admin = server.tokens.create("test-admin", Role::Admin)?;
    let mut cfg = cfg;
    cfg.http = server.http_addr;
    let device_port = Some(mosquitto.port);
    Ok((
        TestFleet {
            dir,
            certs,
            server,
            admin,
            http: reqwest::Client::new(),
            cfg,
            device_port,
            pg: None,
        },
        mosquitto,
    ))
}

/// Machines whose buffers are filled before their links start: a burst as fast as the links,
/// the broker and the server can take it (what comes back after an outage).
pub struct Prefilled {
    sys: Option<actix::System>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub ids: Vec<String>,
    pub buffers: Vec<rvm_agent::buffer::BufferHandle>,
    pub links: Vec<Arc<rvm_agent::link::status::LinkStatus>>,
    /// When the first link started (after every buffer was filled).
    pub started: Instant,
}

/// A plausible telemetry record of about 600 bytes.
pub fn build_telemetry(i: u64) -> common::Telemetry {
    let mut t = common::Telemetry {
        interval_ms: 1000,
        uptime_s: 3600 + i,
        ..Default::default()
    };
    t.cpu.usage_pct = (i % 100) as f32;
    t.cpu.per_core_pct = vec![10.0, 20.0, 30.0, 40.0, 50.0, 60.0];
    t.cpu.freq_mhz = vec![1510; 6];
    t.memory.total_bytes = 8 << 30;
    t.memory.used_bytes = 3 << 30;
    t.memory.available_bytes = 5 << 30;
    t.disks.push(common::DiskStats {
        mount: "/".into(),
        fs: "ext4".into(),
        total_bytes: 64 << 30,
        used_bytes: 20 << 30,
        ..Default::default()
    });
    t.net.push(common::NetStats {
        iface: "eth0".into(),
        rx_bytes: i * 1000,
        tx_bytes: i * 500,
        ..Default::default()
    });
    t.temperatures = vec![
        common::Reading::new("cpu", 48.5),
        common::Reading::new("gpu", 47.0),
    ];
    t.app = vec![
        common::Reading::new("inference_ms", 42.0),
        common::Reading::new("fps", 14.8),
    ];
    t
}

impl Prefilled {
    /// `devices` machines `{prefix}0000..`, each with `records` telemetry records (seq 1..),
    /// then their links, against the fleet's device port.
    pub fn start(fleet: &TestFleet, prefix: &str, devices: usize, records: u64) -> anyhow::Result<Prefilled> {
        let certs = fleet.certs.clone();
        let port = fleet.broker_port();
        let ca = pki::Ca::load(&certs)?;
        let mut ids = Vec::new();
        let mut idents = Vec::new();
        for i in 0..devices {
            let id = common::DeviceId::new(format!("{prefix}{i:04}"))?;
            idents.push(ca.ensure_device(&certs, &id)?);
            ids.push(id);
        }
        let (mut parts, mut buffers) = (Vec::new(), Vec::new());
        for id in &ids {
            let mut b = rvm_agent::buffer::Buffer::open(
                id.clone(),
                Box::new(rvm_agent::buffer::MemStore::default()) as Box<dyn rvm_agent::buffer::Store>,
                rvm_agent::buffer::Caps {
                    max_records: records + 1000,
                    ..Default::default()
                },
                rvm_agent::buffer::FlushPolicy::Batched { ms: 500 },
            )?;
            let now = common::time::now_ms();
            for s in 0..records {
                b.append(
                    Kind::Telemetry,
                    now - (records - s) as i64 * 10,
                    &build_telemetry(s),
                )?;
            }
            // its actor starts with the link, on the links' arbiter
            let p = rvm_agent::buffer::BufferParts::new(b);
            let h = p.handle();
            parts.push(p);
            buffers.push(h);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let t_buffers = buffers.clone();
        let t_ids = ids.clone();
        let thread = std::thread::spawn(move || {
            let sys = actix::System::new();
            let res = sys.block_on(async move {
                let started = Instant::now();
                let mut links = Vec::new();
                for (((id, ident), buffer), parts) in t_ids.into_iter().zip(idents).zip(t_buffers).zip(parts)
                {
                    parts.start(Arc::new(rvm_agent::supervise::liveness::Liveness::new(
                        common::time::now_ms(),
                    )));
                    let birth = rvm_agent::runtime::build_birth(Some("burst".into()), vec![], vec![], true);
                    let (lp, _commands) = rvm_agent::runtime::link_parts(
                        rvm_agent::runtime::LinkSpec {
                            device: id,
                            brokers: vec![rvm_agent::runtime::Broker::new("127.0.0.1", port)],
                            identity: ident,
                            keep_alive: Duration::from_secs(30),
                            window: 64,
                            birth,
                        },
                        buffer,
                    )?;
                    links.push(lp.status.clone());
                    let live = Arc::new(rvm_agent::supervise::liveness::Liveness::new(
                        common::time::now_ms(),
                    ));
                    actix::Actor::start(rvm_agent::link::actor::LinkActor::new(lp, live));
                }
                anyhow::Ok((links, started))
            });
            match res {
                Ok((links, started)) => {
                    let _ = tx.send(Ok((actix::System::current(), links, started)));
                    let _ = sys.run();
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
        let (sys, links, started) = rx.recv()??;
        Ok(Prefilled {
            sys: Some(sys),
            thread: Some(thread),
            ids: ids.iter().map(|d| d.to_string()).collect(),
            buffers,
            links,
            started,
        })
    }

    /// Records still in the machines' buffers (not yet acknowledged by the broker).
    pub fn buffered(&self) -> u64 {
        self.buffers.iter().map(|b| b.stats().records).sum()
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

impl Drop for Prefilled {
    fn drop(&mut self) {
        self.stop();
    }
}
