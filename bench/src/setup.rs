//! What every benchmark starts: certificates, a release `fleet-server` (embedded broker or
//! behind Mosquitto), Mosquitto with the fleet's mTLS identity rules, agents, and the API.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::pki::{self, CertDir};
use serde_json::Value;

use crate::procs::{self, Proc};

/// How long a server, broker or agent gets to come up.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The run's shared state.
pub struct Ctx {
    /// Where the release binaries are.
    pub bins: PathBuf,
    pub work: PathBuf,
    pub quick: bool,
    pub rt: tokio::runtime::Runtime,
    pub http: reqwest::Client,
}

impl Ctx {
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bins.join(name)
    }

    /// A fresh directory for one benchmark.
    pub fn dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let d = self.work.join(name);
        if d.exists() {
            std::fs::remove_dir_all(&d)?;
        }
        std::fs::create_dir_all(&d)?;
        Ok(d)
    }

    /// Seconds: `full`, or `quick` with `--quick`.
    pub fn secs(&self, full: u64, quick: u64) -> Duration {
        Duration::from_secs(if self.quick { quick } else { full })
    }

    pub fn n(&self, full: usize, quick: usize) -> usize {
        if self.quick { quick } else { full }
    }
}

/// A fleet CA, server certificate and signing key in `dir/certs`.
pub fn make_certs(dir: &Path) -> anyhow::Result<CertDir> {
    common::tls::install_crypto_provider();
    let certs = CertDir::new(dir.join("certs"));
    pki::init(&certs, &["localhost".into(), "127.0.0.1".into()], false)?;
    Ok(certs)
}

pub fn device_identity(certs: &CertDir, id: &str) -> anyhow::Result<common::tls::ClientIdentity> {
    let ca = pki::Ca::load(certs)?;
    Ok(ca.ensure_device(certs, &common::DeviceId::new(id)?)?)
}

/// How a fleet server is configured.
#[derive(Debug, Clone, Default)]
pub struct ServerSpec {
    /// `None`: embedded broker; `Some(port)`: ingest from the broker on that port.
    pub external: Option<u16>,
    /// Text of a rules file; None: the built-in rules.
    pub rules: Option<String>,
    /// `[notify...]` sections; None: log only.
    pub notify: Option<String>,
    /// More `[storage]` lines (`backend = "postgres"`, `url`); empty: sled.
    pub storage: String,
}

/// A release `fleet-server run` with its own ports, data directory and an admin token.
pub struct FleetServer {
    pub proc: Proc,
    pub http: u16,
    pub mqtt: u16,
    pub token: String,
    pub config: PathBuf,
}

impl FleetServer {
    pub fn start(ctx: &Ctx, dir: &Path, certs: &CertDir, spec: &ServerSpec) -> anyhow::Result<FleetServer> {
        let (http, mqtt) = (procs::free_port()?, procs::free_port()?);
        let data = dir.join("server-data");
        std::fs::create_dir_all(&data)?;
        let mut text = format!(
            "[http]\nlisten = \"127.0.0.1:{http}\"\n[mqtt]\nembedded = {}\nlisten = \"127.0.0.1:{mqtt}\"\n",
            spec.external.is_none()
        );
        if let Some(p) = spec.external {
            text.push_str(&format!("connect = \"127.0.0.1:{p}\"\n"));
        }
        text.push_str(&format!(
            "[certs]\ndir = \"{}\"\n[storage]\ndata_dir = \"{}\"\n{}",
            certs.root().display(),
            data.display(),
            spec.storage
        ));
        if let Some(r) = &spec.rules {
            let p = dir.join("rules.toml");
            std::fs::write(&p, r)?;
            text.push_str(&format!("[alerts]\nrules = \"{}\"\n", p.display()));
        }
        if let Some(n) = &spec.notify {
            text.push_str(n);
        }
        let config = dir.join("fleet-server.toml");
        std::fs::write(&config, text)?;
        // the admin token in the configured store (sled's tokens.json, or PostgreSQL)
        let c = fleet_server::config::ServerFile::load(&config)?;
        let tokens = fleet_server::storage::open_tokens(&fleet_server::storage::StorageConfig {
            backend: c.storage,
            data_dir: c.data_dir,
            cache_bytes: c.store_cache_bytes,
            history: c.history,
        })?;
        // named per server: several servers of a run may share one database
        let token = tokens.create(
            &format!("bench-{}", common::ids::random_hex(3)),
            fleet_server::auth::Role::Admin,
        )?;
        drop(tokens);
        let proc = spawn_server(ctx, &config, dir)?;
        let mut s = FleetServer {
            proc,
            http,
            mqtt: spec.external.unwrap_or(mqtt),
            token,
            config,
        };
        s.wait_ready(ctx)?;
        Ok(s)
    }

    /// Until the API answers and the ingest session is connected.
    pub fn wait_ready(&mut self, ctx: &Ctx) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            anyhow::ensure!(
                self.proc.alive(),
                "fleet-server exited:\n{}",
                self.proc.log_tail()
            );
            if let Ok(h) = ctx.rt.block_on(self.get(ctx, "/api/v1/health"))
                && h["ingest"]["connected"] == true
            {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "fleet-server not ready:\n{}",
                self.proc.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub async fn get(&self, ctx: &Ctx, path: &str) -> anyhow::Result<Value> {
        get(&ctx.http, self.http, &self.token, path).await
    }
}

fn spawn_server(ctx: &Ctx, config: &Path, dir: &Path) -> anyhow::Result<Proc> {
    Proc::spawn(
        "fleet-server",
        &ctx.bin("fleet-server"),
        &["run".into(), "--config".into(), config.display().to_string()],
        &[],
        &dir.join("fleet-server.log"),
    )
}

/// GET a JSON document from the API on loopback.
pub async fn get(http: &reqwest::Client, port: u16, token: &str, path: &str) -> anyhow::Result<Value> {
    let r = http
        .get(format!("http://127.0.0.1:{port}{path}"))
        .bearer_auth(token)
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "GET {path}: {}", r.status());
    Ok(r.json().await?)
}

/// A device's delivery accounting: (received, last_seq, missing, gaps).
pub async fn delivery(
    http: &reqwest::Client,
    port: u16,
    token: &str,
    id: &str,
) -> Option<(u64, u64, u64, usize)> {
    let d = get(http, port, token, &format!("/api/v1/devices/{id}"))
        .await
        .ok()?;
    let v = &d["delivery"];
    Some((
        v["received"].as_u64()?,
        v["last_seq"].as_u64()?,
        v["missing"].as_u64().unwrap_or(0),
        v["gaps"].as_array().map_or(0, |g| g.len()),
    ))
}

/// Mosquitto with the fleet's rules: mTLS required, the certificate CN is the username, the
/// server may do anything, a device only under `rvm/v1/{CN}/`. No persistence, no queue limit
/// (the server's persistent session must not lose a burst).
pub fn mosquitto(dir: &Path, certs: &CertDir) -> anyhow::Result<(Proc, u16, Vec<String>)> {
    let port = procs::free_port()?;
    let acl = dir.join("mosquitto.acl");
    std::fs::write(
        &acl,
        "user fleet-server\ntopic readwrite #\n\npattern readwrite rvm/v1/%u/#\n",
    )?;
    let conf = dir.join("mosquitto.conf");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let settings = [
        // as root Mosquitto would switch to user `mosquitto`, who cannot read our 0600 keys
        if root {
            "user root"
        } else {
            "# not root: no user switch"
        }
        .to_string(),
        "per_listener_settings false".to_string(),
        "allow_anonymous false".into(),
        "persistence false".into(),
        "max_queued_messages 0".into(),
        "max_queued_bytes 0".into(),
        format!("max_inflight_messages {MOSQUITTO_INFLIGHT}"),
        format!("acl_file {}", acl.display()),
        format!("log_dest file {}", dir.join("mosquitto.log").display()),
        "log_type error".into(),
        "log_type warning".into(),
        format!("listener {port} 127.0.0.1"),
        format!("cafile {}", certs.ca_cert().display()),
        format!("certfile {}", certs.server_cert().display()),
        format!("keyfile {}", certs.server_key().display()),
        "require_certificate true".into(),
        "use_identity_as_username true".into(),
    ];
    std::fs::write(&conf, settings.join("\n") + "\n")?;
    let p = Proc::spawn(
        "mosquitto",
        Path::new("/usr/sbin/mosquitto"),
        &["-c".into(), conf.display().to_string()],
        &[],
        &dir.join("mosquitto.out"),
    )?;
    procs::wait_port(port, START_TIMEOUT)?;
    let mut conf_lines = vec![format!("# {}", conf.display())];
    conf_lines.extend(settings.iter().map(|l| format!("#   {l}")));
    Ok((p, port, conf_lines))
}

/// In-flight QoS 1 window of the bench's Mosquitto per client (Mosquitto's default is 20;
/// the embedded broker's is 512): the server acknowledges only after storing, so a window of
/// 20 would measure round trips, not the server.
pub const MOSQUITTO_INFLIGHT: u32 = 1000;

/// mosquitto_pub / mosquitto_sub arguments for TLS with a client identity.
pub fn mosq_tls_args(certs: &CertDir, cert: &Path, key: &Path, port: u16) -> Vec<String> {
    vec![
        "-h".into(),
        "127.0.0.1".into(),
        "-p".into(),
        port.to_string(),
        "--cafile".into(),
        certs.ca_cert().display().to_string(),
        "--cert".into(),
        cert.display().to_string(),
        "--key".into(),
        key.display().to_string(),
    ]
}

/// An agent.toml for a real `rvm-agent --config`.
pub struct AgentSpec<'a> {
    pub id: &'a str,
    pub port: u16,
    pub interval_ms: u64,
    pub buffer_dir: &'a Path,
    /// Local status endpoint port; None: disabled.
    pub http: Option<u16>,
}

pub fn agent_config(dir: &Path, certs: &CertDir, a: &AgentSpec) -> anyhow::Result<PathBuf> {
    let ident = device_identity(certs, a.id)?;
    let path = dir.join(format!("{}.toml", a.id));
    std::fs::write(
        &path,
        format!(
            "device_id = \"{id}\"\nsite = \"bench\"\n[mqtt]\nbroker = \"127.0.0.1:{port}\"\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n[collector]\ninterval_ms = {interval}\n[buffer]\ndir = \"{buf}\"\n[http]\nlisten = \"{http}\"\n",
            id = a.id,
            port = a.port,
            ca = ident.ca.display(),
            cert = ident.cert.display(),
            key = ident.key.display(),
            interval = a.interval_ms,
            buf = a.buffer_dir.display(),
            http = a.http.map(|p| format!("127.0.0.1:{p}")).unwrap_or_default(),
        ),
    )?;
    Ok(path)
}

/// The agent's systemd unit, whose `Environment=` lines the bench applies.
const AGENT_UNIT: &str = include_str!("../../config/rvm-agent.service");

/// `Environment=NAME=VALUE` lines of a systemd unit, in order (no quoting: ours has none).
pub fn unit_environment(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix("Environment="))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Starts `rvm-agent --config` with the environment of its systemd unit
/// (`config/rvm-agent.service`: the malloc settings the agent ships with), so the bench
/// measures the agent as it runs on a machine and cannot drift from the unit.
pub fn spawn_agent(ctx: &Ctx, config: &Path, log: &Path) -> anyhow::Result<Proc> {
    let env = unit_environment(AGENT_UNIT);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Proc::spawn(
        "rvm-agent",
        &ctx.bin("rvm-agent"),
        &["--config".into(), config.display().to_string()],
        &env,
        log,
    )
}

/// `rvm-sim simulate`: `devices` machines from index `first`, then `extra` arguments.
#[allow(clippy::too_many_arguments)]
pub fn spawn_simulator(
    ctx: &Ctx,
    certs: &CertDir,
    port: u16,
    prefix: &str,
    devices: usize,
    first: usize,
    interval_ms: u64,
    log: &Path,
    extra: &[&str],
) -> anyhow::Result<Proc> {
    let mut args: Vec<String> = [
        "simulate",
        "--devices",
        &devices.to_string(),
        "--first",
        &first.to_string(),
        "--prefix",
        prefix,
        "--sites",
        "20",
        "--broker",
        &format!("127.0.0.1:{port}"),
        "--certs",
        &certs.root().display().to_string(),
        "--interval",
        &interval_ms.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    Proc::spawn(
        "rvm-sim simulate",
        &ctx.bin("rvm-sim"),
        &args,
        &[("MALLOC_ARENA_MAX", "2"), ("RVM_LOG", "warn")],
        log,
    )
}

/// Waits until at least `n` devices whose id starts with `prefix` are online.
pub fn wait_online(
    ctx: &Ctx,
    s: &FleetServer,
    prefix: &str,
    n: usize,
    within: Duration,
) -> anyhow::Result<Duration> {
    let (online, took) = count_online(ctx, s, prefix, n, within);
    anyhow::ensure!(
        online >= n,
        "only {online} of {n} {prefix}* machines online after {within:?}"
    );
    Ok(took)
}

/// Waits up to `within` for `n` devices of `prefix` online: how many were, and when.
pub fn count_online(
    ctx: &Ctx,
    s: &FleetServer,
    prefix: &str,
    n: usize,
    within: Duration,
) -> (usize, Duration) {
    let t = Instant::now();
    let mut last = 0;
    loop {
        if let Ok(v) = ctx.rt.block_on(s.get(ctx, "/api/v1/devices")) {
            last = v["devices"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|d| d["id"].as_str().is_some_and(|i| i.starts_with(prefix)))
                        .filter(|d| d["status"] == "online" || d["status"] == "degraded")
                        .count()
                })
                .unwrap_or(0);
            if last >= n {
                return (last, t.elapsed());
            }
        }
        if t.elapsed() >= within {
            return (last, t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_runs_with_its_units_environment() {
        let env = unit_environment(AGENT_UNIT);
        assert!(env.contains(&("MALLOC_ARENA_MAX".into(), "2".into())), "{env:?}");
        assert!(env.iter().any(|(k, _)| k == "GLIBC_TUNABLES"), "{env:?}");
        assert_eq!(
            unit_environment("[Service]\nEnvironment=A=b=c\nEnvironmentFile=-/x\n"),
            vec![("A".to_string(), "b=c".to_string())]
        );
    }
}
