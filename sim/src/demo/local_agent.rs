//! The demo's own machine: the whole agent (supervisor, buffer, collector, health, recovery,
//! commands, link), started through the agent's real start-up path
//! ([`rvm_agent::agent::start_with`]) from an `agent.toml` the demo writes, so a command sent
//! to this machine from the web view runs through the same verification, allow-list and
//! at-most-once record as on an RVM, and its health checks show.
//!
//! Three things differ from an RVM, because this is the operator's laptop:
//! - recovery actions are recorded, never carried out ([`DemoExecutor`]): no unit is
//!   restarted, no process killed, no cache dropped, and the machine is never rebooted;
//! - the health checks are the ones that mean something here (CPU, memory, disk and GPU
//!   thresholds, the demo's data directory writable, the broker link, the actors' liveness),
//!   with no vision service, systemd unit or camera required;
//! - it runs on its own actix system and thread, so an agent that gives up (past its restart
//!   intensity it stops its system, as the real agent exits for systemd) leaves the server and
//!   the simulated machines running.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::DeviceId;
use common::command::Action;
use common::tls::ClientIdentity;
use rvm_agent::agent::{self, Overrides};
use rvm_agent::config::AgentFile;
use rvm_agent::recovery::executor::{ExecOutcome, Executor};

/// How often the demo's agent reports its health at the least (it also reports every change):
/// often enough that its page fills within the demo's first minute.
pub const LOCAL_HEALTH_REPORT_S: u64 = 15;

/// What the demo's `agent.toml` is made of.
#[derive(Debug, Clone)]
pub struct LocalAgentSpec {
    pub device: DeviceId,
    /// `host:port` of the demo's broker.
    pub broker: String,
    pub identity: ClientIdentity,
    /// The server's command-signing public key (`command-signing.pub` in the demo's certs).
    pub signing_pub: PathBuf,
    /// The demo's data directory, absolute: the agent's buffer, diagnostics and the disk it
    /// checks are under it.
    pub data_dir: PathBuf,
    pub interval: Duration,
}

/// A path or name as a TOML string (quoted and escaped).
fn toml_str(s: impl AsRef<str>) -> String {
    toml::Value::String(s.as_ref().to_string()).to_string()
}

fn toml_path(p: &Path) -> String {
    toml_str(p.to_string_lossy())
}

/// The demo's `agent.toml` (pure: see [`write_config`]).
pub fn render_config(spec: &LocalAgentSpec) -> String {
    let data = &spec.data_dir;
    format!(
        r#"# Written by `rvm-sim demo` at every start (edits are overwritten): this machine's own agent,
# run inside the demo. Whatever this file says, recovery actions are recorded and never
# carried out: the demo never restarts a unit, kills a process or reboots this machine.
device_id = {device}
site = "site1"
tags = ["local"]

[mqtt]
broker = {broker}
ca = {ca}
cert = {cert}
key = {key}

[collector]
interval_ms = {interval_ms}

[buffer]
dir = {buffer}

[http]
# off: the port of a real agent on this machine (9101) stays free
listen = ""

[commands]
public_key = {signing_pub}

[health]
# what means something on a laptop: the thresholds, the demo's data directory, the broker
# link and the actors; no vision service, systemd unit or camera to require
watch_processes = []
systemd_units = []
camera_required = false
data_disk_path = {data}
report_interval_s = {report_s}

[recovery]
# no ladders (nothing is watched); commands are recorded, not carried out
temp_dirs = []
diagnostics_dir = {diagnostics}
"#,
        device = toml_str(spec.device.as_str()),
        broker = toml_str(&spec.broker),
        ca = toml_path(&spec.identity.ca),
        cert = toml_path(&spec.identity.cert),
        key = toml_path(&spec.identity.key),
        interval_ms = spec.interval.as_millis(),
        buffer = toml_path(&data.join("agent-buffer")),
        signing_pub = toml_path(&spec.signing_pub),
        data = toml_path(data),
        report_s = LOCAL_HEALTH_REPORT_S,
        diagnostics = toml_path(&data.join("agent-diagnostics")),
    )
}

/// Writes `DATA/agent.toml` and loads it back as the agent would (every key checked).
pub fn write_config(spec: &LocalAgentSpec) -> anyhow::Result<(PathBuf, AgentFile)> {
    let path = spec.data_dir.join("agent.toml");
    std::fs::write(&path, render_config(spec))?;
    let file = AgentFile::load(&path)?;
    Ok((path, file))
}

/// Carries out nothing: the demo's agent runs on the operator's own machine. An action (a
/// command from the web view or `fleetctl`, a ladder step) is logged and answered as done,
/// with an output that says it was not carried out.
#[derive(Debug, Default)]
pub struct DemoExecutor {
    recorded: AtomicU64,
}

impl DemoExecutor {
    /// Actions asked for so far.
    pub fn recorded(&self) -> u64 {
        self.recorded.load(Ordering::Relaxed)
    }
}

impl Executor for DemoExecutor {
    fn execute(&self, action: &Action) -> ExecOutcome {
        self.recorded.fetch_add(1, Ordering::Relaxed);
        tracing::info!(action = %action, "demo: recovery action recorded, not carried out on this machine");
        ExecOutcome::new(
            true,
            format!("demo: {action} recorded, not carried out on this machine"),
        )
    }
}

/// This machine's agent, running on its own thread.
pub struct LocalAgent {
    pub device: DeviceId,
    pub config: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LocalAgent {
    /// Writes the config and starts the agent; returns once it runs (or failed to start).
    pub fn start(spec: &LocalAgentSpec) -> anyhow::Result<LocalAgent> {
        let (config, file) = write_config(spec)?;
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("demo-local-agent".into())
            .spawn(move || run(file, started_tx, stop_rx))?;
        started_rx.recv()??;
        Ok(LocalAgent {
            device: spec.device.clone(),
            config,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Stops every actor (the link says goodbye first) and flushes the buffer.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for LocalAgent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The agent's thread: its own actix system, until told to stop or the agent gives up.
fn run(
    file: AgentFile,
    started: std::sync::mpsc::Sender<anyhow::Result<()>>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let sys = actix::System::new();
    let overrides = Overrides {
        executor: Some(Arc::new(DemoExecutor::default())),
        ..Default::default()
    };
    let handle = match sys.block_on(async { agent::start_with(&file, overrides) }) {
        Ok(h) => h,
        Err(e) => {
            let _ = started.send(Err(e.context("this machine's agent")));
            return;
        }
    };
    let (exit_code, device) = (handle.exit_code.clone(), handle.device.clone());
    sys.block_on(async move {
        actix::spawn(async move {
            // the sender dropped counts as a stop too
            let _ = stop.await;
            handle.stop().await;
            actix::System::current().stop();
        });
    });
    let _ = started.send(Ok(()));
    // the buffer is closed by now (the supervisor stops it last; see `AgentHandle::stop`)
    let code = sys.run_with_code().unwrap_or(1);
    let code = code.max(exit_code.load(Ordering::SeqCst));
    if code != 0 {
        tracing::error!(device = %device, code, "this machine's agent gave up (restart limit); the demo goes on without it");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_spec(dir: &Path) -> LocalAgentSpec {
        let certs = dir.join("certs dir \"quoted\"");
        std::fs::create_dir_all(&certs).unwrap();
        for f in ["ca.pem", "dev.pem", "dev.key"] {
            std::fs::write(certs.join(f), "x").unwrap();
        }
        let signing_pub = certs.join("command-signing.pub");
        std::fs::write(&signing_pub, "00".repeat(32)).unwrap();
        LocalAgentSpec {
            device: DeviceId::new("laptop1").unwrap(),
            broker: "127.0.0.1:8883".into(),
            identity: ClientIdentity {
                ca: certs.join("ca.pem"),
                cert: certs.join("dev.pem"),
                key: certs.join("dev.key"),
            },
            signing_pub,
            data_dir: dir.to_path_buf(),
            interval: Duration::from_millis(1000),
        }
    }

    #[test]
    fn the_written_config_passes_the_agents_own_validation() {
        let dir = tempfile::tempdir().unwrap();
        let spec = build_spec(dir.path());
        let (path, file) = write_config(&spec).unwrap();
        assert_eq!(path, dir.path().join("agent.toml"));
        assert_eq!(file.device_id, "laptop1");
        assert_eq!(file.mqtt.broker.entries(), ["127.0.0.1:8883"]);
        assert_eq!(
            file.mqtt.ca, spec.identity.ca,
            "a path with quotes and spaces survives"
        );
        assert_eq!(file.commands.public_key.as_ref(), Some(&spec.signing_pub));
        assert!(
            file.commands.load_key().is_some(),
            "commands are verified, not rejected"
        );
        assert_eq!(file.buffer.dir, dir.path().join("agent-buffer"));
        assert!(file.http.listen.is_empty());
    }

    #[test]
    fn the_demo_agent_watches_nothing_a_laptop_lacks_and_allows_no_reboot() {
        let dir = tempfile::tempdir().unwrap();
        let (_, file) = write_config(&build_spec(dir.path())).unwrap();
        assert!(file.health.watch_processes.is_empty());
        assert!(file.health.systemd_units.is_empty());
        assert!(file.health.http_checks.is_empty());
        assert!(!file.health.camera_required);
        assert_eq!(file.health.data_disk_path.as_deref(), Some(dir.path()));
        assert_eq!(file.health.report_interval_s, LOCAL_HEALTH_REPORT_S);
        assert!(!file.recovery.allow_reboot);
        assert!(file.recovery.temp_dirs.is_empty());
        assert!(file.recovery.ladders(&file.health).is_empty(), "no local ladder");
    }

    #[test]
    fn the_demo_executor_answers_every_action_without_carrying_it_out() {
        let ex = DemoExecutor::default();
        for action in [
            Action::Reboot,
            Action::RestartUnit {
                unit: "vision.service".into(),
            },
            Action::DropCaches,
        ] {
            let out = ex.execute(&action);
            assert!(out.ok);
            assert!(out.output.contains("not carried out"), "{}", out.output);
            assert!(out.output.contains(action.name()), "{}", out.output);
        }
        assert_eq!(ex.recorded(), 3);
    }
}
