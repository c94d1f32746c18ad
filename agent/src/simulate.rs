//! `rvm-agent simulate`: N virtual RVMs in one process, each with its own certificate and
//! MQTT connection, publishing plausible Jetson metrics through the same buffer and link code
//! as the real agent (in-memory buffers: nothing to keep across a simulator restart).
//! [`start_with`] sets per-device attributes ([`SimProfile`]) and hands back each machine's
//! fault switch ([`crate::collect::sim::SimFault`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::DeviceId;
use common::pki::{Ca, CertDir};

use crate::buffer::{Buffer, Caps, FlushPolicy, MemStore, Store};
use crate::collect::MetricSource;
use crate::collect::sim::{SimFault, SimSource};
use crate::runtime::{self, DeviceHandle, DeviceParts};

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
}

/// A running simulated machine and the switch of its fault.
pub struct SimDevice {
    pub handle: DeviceHandle,
    pub fault: SimFault,
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
    let mut handles = Vec::with_capacity(cfg.devices);
    for i in 0..cfg.devices {
        let device = cfg.device_id(i)?;
        let identity = ca.ensure_device(&dir, &device)?;
        let site = profile.sites.get(&i).cloned().unwrap_or_else(|| cfg.site_of(i));
        let source = SimSource::new((cfg.first + i) as u64 + 1, cfg.interval.as_millis() as u32);
        let fault = source.fault_handle();
        let mut birth =
            runtime::build_birth(Some(site), vec!["simulated".into()], source.capabilities(), true);
        birth.board = Some("NVIDIA Jetson Orin Nano Developer Kit (simulated)".into());
        birth.jetpack = Some("6.2".into());
        birth.vision_model_version = Some(
            profile
                .vision_model_versions
                .get(&i)
                .cloned()
                .unwrap_or_else(|| DEFAULT_MODEL_VERSION.into()),
        );
        let buffer = Buffer::open(
            device.clone(),
            Box::new(MemStore::default()) as Box<dyn Store>,
            Caps {
                max_records: 36_000,
                ..Caps::default()
            },
            FlushPolicy::Batched { ms: 500 },
        )?;
        let handle = runtime::start_device(DeviceParts {
            device,
            host: cfg.host.clone(),
            port: cfg.port,
            identity,
            keep_alive: Duration::from_secs(30),
            window: 64,
            interval: cfg.interval,
            source: Box::new(source),
            buffer: Arc::new(buffer),
            birth,
        })?;
        handles.push(SimDevice { handle, fault });
    }
    Ok(handles)
}
