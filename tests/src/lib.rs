//! Helpers for the end-to-end tests: a fleet server on ephemeral ports, agents, raw MQTT
//! clients for probing the broker, and the HTTP API.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::pki::{self, CertDir};
use common::tls::ClientIdentity;
use fleet_server::auth::Role;
use fleet_server::config::ServerConfig;
use fleet_server::server::Server;
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, TlsConfiguration, Transport};
use serde_json::Value;

/// A fleet server with its embedded broker, certificates and an admin token, in a temp dir.
pub struct TestFleet {
    pub dir: tempfile::TempDir,
    pub certs: CertDir,
    pub server: Server,
    pub admin: String,
    pub http: reqwest::Client,
}

impl TestFleet {
    pub fn start() -> anyhow::Result<TestFleet> {
        common::tls::install_crypto_provider();
        let dir = tempfile::tempdir()?;
        let certs = CertDir::new(dir.path().join("certs"));
        pki::init(&certs, &["localhost".into(), "127.0.0.1".into()], false)?;
        let server = Server::start(ServerConfig {
            http: "127.0.0.1:0".parse()?,
            embedded_broker: Some("127.0.0.1:0".parse()?),
            mqtt_host: "127.0.0.1".into(),
            mqtt_port: 0,
            certs: certs.root().to_path_buf(),
            data_dir: dir.path().join("server"),
            stale_after_ms: 15_000,
            offline_after_ms: 60_000,
        })?;
        let admin = server.tokens.create("test-admin", Role::Admin)?;
        Ok(TestFleet {
            dir,
            certs,
            server,
            admin,
            http: reqwest::Client::new(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.server.http_addr, path)
    }

    pub fn broker_port(&self) -> u16 {
        self.server.mqtt_addr.port()
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
    {
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
[buffer]
dir = "{buf}"
{buffer_extra}
[http]
listen = ""
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

/// Path of a workspace binary built next to this test executable (`target/debug/NAME`).
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --bins` (cargo test --workspace builds it)",
        p.display()
    );
    p
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process killed (SIGKILL) when dropped.
pub struct Child(pub std::process::Child);

impl Child {
    pub fn spawn(bin: &str, args: &[&str], log: &Path) -> anyhow::Result<Child> {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let c = std::process::Command::new(bin_path(bin))
            .args(args)
            .env("RVM_LOG", "info")
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        Ok(Child(c))
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM, then wait up to 10 s.
    pub fn terminate(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Agents running in their own actix system on a thread.
pub struct Agents {
    sys: Option<actix::System>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub links: Vec<Arc<rvm_agent::link::LinkStatus>>,
    pub buffers: Vec<Arc<rvm_agent::buffer::Buffer>>,
    stop_collecting: Vec<Box<dyn Fn() + Send>>,
}

impl Agents {
    /// Starts one real agent per config file.
    pub fn start(configs: Vec<PathBuf>) -> anyhow::Result<Agents> {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let sys = actix::System::new();
            let (stop_tx, stop_rx) = std::sync::mpsc::channel::<usize>();
            let res = sys.block_on(async move {
                let mut hs = Vec::new();
                for c in &configs {
                    let file = rvm_agent::config::AgentFile::load(c)?;
                    hs.push(rvm_agent::agent::start(&file)?);
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
                    let stops: Vec<Box<dyn Fn() + Send>> = (0..hs.len())
                        .map(|i| {
                            let t = stop_tx.clone();
                            Box::new(move || {
                                let _ = t.send(i);
                            }) as Box<dyn Fn() + Send>
                        })
                        .collect();
                    let _ = tx.send(Ok((actix::System::current(), links, buffers, stops)));
                    let _ = sys.run();
                    drop(hs);
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        });
        let (sys, links, buffers, stop_collecting) = rx.recv()??;
        Ok(Agents {
            sys: Some(sys),
            thread: Some(thread),
            links,
            buffers,
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
