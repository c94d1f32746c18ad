//! `rvm-sim simulate`: N virtual RVMs in one process, each with its own certificate and
//! MQTT connection, publishing plausible Jetson metrics and health reports
//! ([`crate::health`]) through the same buffer and link code as the real agent (in-memory
//! buffers: nothing to keep across a simulator restart).
//! [`start_with`] sets per-device attributes ([`SimProfile`]) and hands back each machine's
//! fault switch ([`crate::source::SimFault`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::DeviceId;
use common::pki::{Ca, CertDir};
use rvm_agent::buffer::{Body, Buffer, BufferHandle, Caps, FlushPolicy, MemStore, Store};
use rvm_agent::collect::MetricSource;
use rvm_agent::runtime::{self, Broker, DeviceHandle, DeviceParts};

use crate::scenario::{Machine, Scenario};
use crate::source::{SimFault, SimSource};

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub devices: usize,
    pub sites: usize,
    pub prefix: String,
    pub host: String,
    pub port: u16,
    pub certs: std::path::PathBuf,
    pub interval: Duration,
    /// Index of the first device (several simulators can share a fleet).
    pub first: usize,
}

impl SimConfig {
    pub fn device_id(&self, i: usize) -> anyhow::Result<DeviceId> {
        Ok(DeviceId::new(format!("{}{:04}", self.prefix, self.first + i))?)
    }

    pub fn site_of(&self, i: usize) -> String {
        format!("site{}", (self.first + i) % self.sites.max(1) + 1)
    }
}

/// The vision model version a simulated machine reports unless told otherwise.
pub const DEFAULT_MODEL_VERSION: &str = "v3.2";

/// Per-device choices beyond [`SimConfig`], by device index (`0..devices`).
#[derive(Debug, Clone, Default)]
pub struct SimProfile {
    /// Vision model version of chosen devices (the others: [`DEFAULT_MODEL_VERSION`]).
    pub vision_model_versions: BTreeMap<usize, String>,
    /// Site of chosen devices (the others: [`SimConfig::site_of`]).
    pub sites: BTreeMap<usize, String>,
    /// Keep each machine's buffer in sled under `DIR/{device}`, as a real agent does, so a
    /// `kill -9` of the simulator loses nothing acknowledged-pending; None: in memory.
    pub buffer_dir: Option<std::path::PathBuf>,
    /// How long a simulated command "runs" before its result (None: [`SIM_COMMAND_MS`]).
    pub command_ms: Option<u64>,
    /// Brokers after [`SimConfig::host`]:[`SimConfig::port`] that the machines fail over to
    /// (the other instances of one fleet; `rvm-sim simulate --broker A,B,C`): each machine
    /// starts on one of the list and moves round robin when its link is lost, as an agent
    /// given `[mqtt] broker = [...]` does.
    pub more_brokers: Vec<Broker>,
}

impl SimProfile {
    /// Takes the vision model versions a scenario gives machines of this simulator.
    pub fn models_of(&mut self, cfg: &SimConfig, scenario: &Scenario) {
        for i in 0..cfg.devices {
            if let Some(v) = scenario.model_version_of(cfg.first + i) {
                self.vision_model_versions.insert(i, v.to_string());
            }
        }
    }
}

/// Replays `scenario` on these machines, on the current arbiter (see [`crate::scenario`]).
pub fn replay(scenario: Scenario, devices: &[SimDevice]) {
    if let Some(v) = scenario.items_per_s {
        for d in devices {
            d.fault.set_items_per_s(v);
        }
    }
    let machines = devices.iter().map(SimDevice::machine).collect();
    actix::spawn(crate::scenario::run(scenario, machines));
}

/// A running simulated machine and its switches.
pub struct SimDevice {
    pub handle: DeviceHandle,
    pub fault: SimFault,
    /// When set, commands this machine accepts end `failed` (a failing cohort in a rollout).
    pub commands_fail: Arc<AtomicBool>,
    /// `true` cuts the machine's network: the broker sees it vanish (its will), the machine
    /// keeps recording into its buffer, and drains it when set back to `false`.
    pub offline: tokio::sync::watch::Sender<bool>,
    /// Its global number (`first + index`), site and vision model version, as a scenario file
    /// selects machines.
    pub number: usize,
    pub site: String,
    pub model_version: String,
}

impl SimDevice {
    /// This machine as a scenario sees it: how to select it and its switches.
    pub fn machine(&self) -> Machine {
        Machine {
            device: self.handle.device.to_string(),
            number: self.number,
            site: self.site.clone(),
            model_version: self.model_version.clone(),
            fault: self.fault.clone(),
            offline: self.offline.clone(),
            commands_fail: self.commands_fail.clone(),
        }
    }
}

/// How long a simulated command "runs" unless [`SimProfile::command_ms`] says otherwise.
pub const SIM_COMMAND_MS: u64 = 50;

/// Answers commands like an agent would (verification, at most once, accepted, running, a
/// result) without running anything.
async fn respond(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<common::command::SignedCommand>,
    device: DeviceId,
    key: Option<[u8; 32]>,
    buffer: BufferHandle,
    fail: Arc<AtomicBool>,
    fault: SimFault,
    run_for: Duration,
) {
    use common::command::CommandStatus;

    use rvm_agent::commands::executed::{ExecutedStore, MemExecuted};
    use rvm_agent::commands::verify::{self, Verdict};
    let store = MemExecuted::default();
    // in order, each stored before the next (the buffer actor wakes the link)
    let report = async |r: common::command::CommandResult| {
        if let Err(e) = buffer.append(common::time::now_ms(), Body::CmdResult(r)).await {
            tracing::error!(error = %e, "simulated command result not stored");
        }
    };
    while let Some(signed) = rx.recv().await {
        match verify::check(&signed, key.as_ref(), &device, &store, common::time::now_ms()) {
            Verdict::Reject { id, reason } => {
                report(verify::result(
                    &id,
                    CommandStatus::Rejected,
                    String::new(),
                    Some(reason),
                ))
                .await
            }
            Verdict::Repeat(prev) => report(prev).await,
            // no gate on a simulated machine: every dry run would run
            Verdict::DryRun(cmd) => {
                let r = rvm_agent::recovery::actor::dry_run_result(
                    &cmd,
                    &rvm_agent::recovery::policy::Decision::Allowed,
                );
                let _ = store.put(&cmd.id, &r);
                report(r).await
            }
            Verdict::Run(cmd) => {
                let acc = verify::result(&cmd.id, CommandStatus::Accepted, String::new(), None);
                let _ = store.put(&cmd.id, &acc);
                report(acc).await;
                report(verify::result(
                    &cmd.id,
                    CommandStatus::Running,
                    String::new(),
                    None,
                ))
                .await;
                if !run_for.is_zero() {
                    tokio::time::sleep(run_for).await;
                }
                let done = if fail.load(Ordering::Relaxed) {
                    verify::result(
                        &cmd.id,
                        CommandStatus::Failed,
                        format!("simulated failure of {}", cmd.action),
                        Some("the action failed".into()),
                    )
                } else {
                    fault.command_ran();
                    verify::result(
                        &cmd.id,
                        CommandStatus::Succeeded,
                        format!("simulated {}", cmd.action),
                        None,
                    )
                };
                let _ = store.put(&cmd.id, &done);
                report(done).await;
            }
        }
    }
}

/// Issues missing certificates and starts every device on the current actix arbiter.
pub fn start(cfg: &SimConfig) -> anyhow::Result<Vec<DeviceHandle>> {
    Ok(start_with(cfg, &SimProfile::default())?
        .into_iter()
        .map(|d| d.handle)
        .collect())
}

/// As [`start`], with per-device attributes, returning each machine's fault switch.
pub fn start_with(cfg: &SimConfig, profile: &SimProfile) -> anyhow::Result<Vec<SimDevice>> {
    let dir = CertDir::new(&cfg.certs);
    let ca = Ca::load(&dir)?;
    // the server's command-signing public key, if the certificate directory has it
    let key = std::fs::read_to_string(dir.signing_pub())
        .ok()
        .and_then(|s| common::command::public_key_from_hex(&s).ok());
    let brokers: Vec<Broker> = std::iter::once(Broker::new(cfg.host.clone(), cfg.port))
        .chain(profile.more_brokers.iter().cloned())
        .collect();
    let mut handles = Vec::with_capacity(cfg.devices);
    for i in 0..cfg.devices {
        let device = cfg.device_id(i)?;
        let identity = ca.ensure_device(&dir, &device)?;
        let site = profile.sites.get(&i).cloned().unwrap_or_else(|| cfg.site_of(i));
        let (offline, gate) = tokio::sync::watch::channel(false);
        let source = SimSource::new((cfg.first + i) as u64 + 1, cfg.interval.as_millis() as u32);
        let fault = source.fault_handle();
        let latest = source.latest_handle();
        let mut birth = runtime::build_birth(
            Some(site.clone()),
            vec!["simulated".into()],
            source.capabilities(),
            true,
        );
        birth.board = Some("NVIDIA Jetson Orin Nano Developer Kit (simulated)".into());
        birth.jetpack = Some("6.2".into());
        let model_version = profile
            .vision_model_versions
            .get(&i)
            .cloned()
            .unwrap_or_else(|| DEFAULT_MODEL_VERSION.into());
        birth.vision_model_version = Some(model_version.clone());
        let caps = Caps {
            max_records: 36_000,
            ..Caps::default()
        };
        let flush = FlushPolicy::Batched { ms: 500 };
        let buffer = match &profile.buffer_dir {
            None => Buffer::open(
                device.clone(),
                Box::new(MemStore::default()) as Box<dyn Store>,
                caps,
                flush,
            )?,
            Some(dir) => {
                let (mut buffer, reset, _db) =
                    runtime::open_sled_buffer(&device, &dir.join(device.as_str()), caps, flush)?;
                if let Some(ev) = reset {
                    buffer.append(common::topics::Kind::Event, common::time::now_ms(), &ev)?;
                }
                buffer
            }
        };
        let mut handle = runtime::start_device(DeviceParts {
            device,
            brokers: brokers.clone(),
            identity,
            keep_alive: Duration::from_secs(30),
            window: 64,
            interval: cfg.interval,
            source: Box::new(source),
            buffer,
            birth,
            gate: Some(gate),
        })?;
        actix::spawn(crate::health::run(
            latest,
            fault.clone(),
            offline.subscribe(),
            handle.buffer.clone(),
            cfg.interval,
        ));
        let commands_fail = Arc::new(AtomicBool::new(false));
        if let Some(rx) = handle.commands.take() {
            actix::spawn(respond(
                rx,
                handle.device.clone(),
                key,
                handle.buffer.clone(),
                commands_fail.clone(),
                fault.clone(),
                Duration::from_millis(profile.command_ms.unwrap_or(SIM_COMMAND_MS)),
            ));
        }
        handles.push(SimDevice {
            handle,
            fault,
            commands_fail,
            offline,
            number: cfg.first + i,
            site,
            model_version,
        });
    }
    Ok(handles)
}

/// One machine at the end of a run ([`drain_and_report`]): what it made and where it was.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DeviceReport {
    pub device: String,
    /// Telemetry records collected into its buffer.
    pub telemetry: u64,
    /// Telemetry records still in the buffer (not acknowledged by any broker).
    pub telemetry_pending: u64,
    /// The last seq its buffer allocated (every kind of record).
    pub last_seq: u64,
    /// Records of every kind still in the buffer.
    pub buffered: u64,
    /// The broker its link was on at the end, and how often it moved.
    pub broker: String,
    pub failovers: u64,
    pub connects: u64,
    pub connected: bool,
}

/// How often [`drain_and_report`] looks at the buffers.
const DRAIN_POLL: Duration = Duration::from_millis(200);

/// Stops collecting on every machine, waits (up to `within`) until no telemetry waits in any
/// buffer (every record collected was acknowledged by a broker: committed by a server), and
/// reports each machine. Health reports go on meanwhile; the links stay up.
pub async fn drain_and_report(handles: &[DeviceHandle], within: Duration) -> Vec<DeviceReport> {
    for h in handles {
        h.stop_collecting();
    }
    // a collection under way when the collector stopped still appends
    tokio::time::sleep(DRAIN_POLL).await;
    let deadline = tokio::time::Instant::now() + within;
    let mut pending = vec![0u64; handles.len()];
    loop {
        for (p, h) in pending.iter_mut().zip(handles) {
            *p = match h
                .buffer
                .read(rvm_agent::buffer::Key::TELEMETRY, None, 100_000)
                .await
            {
                Ok(r) => r.len() as u64,
                Err(_) => u64::MAX,
            };
        }
        if pending.iter().all(|&p| p == 0) || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
    handles
        .iter()
        .zip(pending)
        .map(|(h, telemetry_pending)| {
            let b = h.buffer.stats();
            let l = h.link.snapshot();
            DeviceReport {
                device: h.device.to_string(),
                telemetry: h.collector.collected.load(Ordering::Relaxed),
                telemetry_pending,
                last_seq: b.last_seq,
                buffered: b.records,
                broker: l.broker,
                failovers: l.failovers,
                connects: l.connects,
                connected: l.connected,
            }
        })
        .collect()
}
