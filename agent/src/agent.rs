//! The real agent: load config, open the buffer, start the pipeline, stop cleanly.

use std::sync::Arc;
use std::time::Duration;

use common::tls::ClientIdentity;
use common::topics::Kind;
use common::{DeviceId, Event, EventKind, Severity};

use crate::buffer::{Caps, FlushPolicy};
use crate::collect::MetricSource;
use crate::collect::system::SystemSource;
use crate::config::{AgentFile, FlushMode, split_host_port};
use crate::runtime::{self, DeviceHandle, DeviceParts};

/// Builds and starts the agent's pipeline on the current actix arbiter.
pub fn start(file: &AgentFile) -> anyhow::Result<DeviceHandle> {
    let device = DeviceId::new(file.device_id.clone())?;
    let (host, port) = split_host_port(&file.mqtt.broker)
        .ok_or_else(|| anyhow::anyhow!("mqtt.broker {:?} is not host:port", file.mqtt.broker))?;
    let caps = Caps {
        max_records: file.buffer.max_records,
        max_bytes: file.buffer.max_bytes,
        policy: file.buffer.full_policy,
        thin_keep_every: file.buffer.thin_keep_every,
    };
    let flush = match file.buffer.flush {
        FlushMode::EveryRecord => FlushPolicy::EveryRecord,
        FlushMode::Batched => FlushPolicy::Batched {
            ms: file.buffer.flush_ms,
        },
    };
    std::fs::create_dir_all(file.buffer.dir.parent().unwrap_or(&file.buffer.dir))?;
    let (buffer, reset) = runtime::open_sled_buffer(&device, &file.buffer.dir, caps, flush)?;
    let now = common::time::now_ms();
    if let Some(ev) = reset {
        buffer.append(Kind::Event, now, &ev)?;
    }
    buffer.append(
        Kind::Event,
        now,
        &Event {
            severity: Severity::Info,
            kind: EventKind::AgentStarted { previous_exit: None },
            message: format!("rvm-agent {} started", runtime::AGENT_VERSION),
        },
    )?;
    let interval = Duration::from_millis(file.collector.interval_ms);
    let source = SystemSource::new(file.collector.interval_ms as u32);
    let mut birth = runtime::build_birth(file.site.clone(), file.tags.clone(), source.capabilities(), false);
    birth.vision_model_version = file.vision_model_version.clone();
    runtime::start_device(DeviceParts {
        device,
        host,
        port,
        identity: ClientIdentity {
            ca: file.mqtt.ca.clone(),
            cert: file.mqtt.cert.clone(),
            key: file.mqtt.key.clone(),
        },
        keep_alive: Duration::from_secs(file.mqtt.keep_alive_s),
        window: file.mqtt.inflight_window,
        interval,
        source: Box::new(source),
        buffer: Arc::new(buffer),
        birth,
    })
}
