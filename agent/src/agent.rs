//! The real agent: load config, open the buffer, start every actor under the supervisor,
//! stop cleanly.

use std::sync::atomic::AtomicI32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use common::command::SignedCommand;
use common::tls::ClientIdentity;
use common::topics::Kind;
use common::{DeviceId, Event, EventKind, HealthReport, Severity};
use tokio::sync::mpsc;

use crate::appmetrics::scrape::Scraper;
use crate::appmetrics::store::AppMetricsStore;
use crate::buffer::config::FlushMode;
use crate::buffer::{BufferHandle, BufferParts, Caps, FlushPolicy};
use crate::collect::MetricSource;
use crate::collect::actor::{CollectorActor, CollectorParts, CollectorStats, Latest};
use crate::collect::gpu::{self, GpuPaths};
use crate::collect::system::{SystemOptions, SystemSource};
use crate::config::AgentFile;
use crate::health::actor::{HealthActor, HealthParts};
use crate::health::baselines::{BaselineStore, SledBaselines};
use crate::health::camera::CameraHealth;
use crate::health::config::VisionHealthConfig;
use crate::http::status::StatusSnapshot;
use crate::link::actor::{LinkActor, Shutdown};
use crate::link::status::LinkStatus;
use crate::recovery::actor::{RecoveryActor, RecoveryParts};
use crate::recovery::executor::{Executor, SystemExecutor};
use crate::recovery::interlock::Interlock;
use crate::recovery::policy::RecoveryPolicy;
use crate::runtime;
use crate::supervise::actor::{ActorStatuses, AgentSupervisor, FnSpec, StopChildren};

/// What tests (and the fault-injection switch of a test build's binary) may replace.
#[derive(Default)]
pub struct Overrides {
    pub source: Option<Box<dyn MetricSource>>,
    pub executor: Option<Arc<dyn Executor>>,
    /// Test builds only (see [`crate::faults`]).
    #[cfg(any(test, feature = "faults"))]
    pub faults: Option<Arc<crate::faults::Faults>>,
}

/// A running agent.
pub struct AgentHandle {
    pub device: DeviceId,
    pub buffer: BufferHandle,
    pub link: Arc<LinkStatus>,
    pub collector: Arc<CollectorStats>,
    pub actors: ActorStatuses,
    pub latest: Latest,
    pub health: Arc<Mutex<Option<HealthReport>>>,
    pub exit_code: Arc<AtomicI32>,
    pub gpu_notes: Vec<String>,
    pub app: Arc<AppMetricsStore>,
    /// The local HTTP endpoint's address, when enabled.
    pub http_addr: Option<std::net::SocketAddr>,
    pub commands: Option<mpsc::UnboundedReceiver<SignedCommand>>,
    supervisor: Addr<AgentSupervisor>,
    link_addr: Arc<Mutex<Option<Addr<LinkActor>>>>,
    collector_addr: Arc<Mutex<Option<Addr<CollectorActor>>>>,
}

impl AgentHandle {
    /// Stops collecting (the collector is not restarted); the link keeps draining.
    pub fn stop_collecting(&self) {
        // The supervisor would restart a stopped collector: make it a no-op source instead.
        if let Ok(a) = self.collector_addr.lock()
            && let Some(a) = a.as_ref()
        {
            a.do_send(crate::collect::actor::Pause);
        }
    }

    /// Stops every actor: the link says goodbye first, then the supervisor stops the others
    /// in the reverse order of their start, the buffer last (it closes: the exact last seq
    /// written and flushed).
    pub async fn stop(&self) {
        let link = self.link_addr.lock().ok().and_then(|l| l.clone());
        if let Some(l) = link {
            let _ = l.send(Shutdown).await;
        }
        let _ = self.supervisor.send(StopChildren).await;
    }
}

pub fn gpu_paths(file: &AgentFile) -> GpuPaths {
    GpuPaths {
        sysfs: file.paths.sysfs.clone(),
        procfs: file.paths.procfs.clone(),
        etc_root: file.paths.etc_root.clone(),
        tegrastats_command: file.collector.tegrastats_command.clone(),
        interval_ms: file.collector.interval_ms,
        ..GpuPaths::default()
    }
}

/// Camera health with the baselines stored by the last run (none: they are learned again).
fn camera_health(cfg: &VisionHealthConfig, store: &dyn BaselineStore) -> CameraHealth {
    let mut h = CameraHealth::new(cfg);
    match store.load() {
        Ok(b) => {
            if !b.is_empty() {
                tracing::info!(cameras = b.len(), "camera baselines restored");
            }
            h.restore(b, common::time::now_ms());
        }
        Err(e) => tracing::warn!(error = %e, "camera baselines not restored; learning them again"),
    }
    h
}

pub fn start(file: &AgentFile) -> anyhow::Result<AgentHandle> {
    start_with(file, Overrides::default())
}

/// Builds and starts the agent on the current actix arbiter.
pub fn start_with(file: &AgentFile, o: Overrides) -> anyhow::Result<AgentHandle> {
    let device = DeviceId::new(file.device_id.clone())?;
    let brokers = file.mqtt.broker.brokers();
    anyhow::ensure!(
        brokers.len() == file.mqtt.broker.entries().len() && !brokers.is_empty(),
        "mqtt.broker {:?}: not host:port (check-config names the entry)",
        file.mqtt.broker.entries()
    );
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
    let (mut buffer, reset, db) = runtime::open_sled_buffer(&device, &file.buffer.dir, caps, flush)?;
    let baselines: Arc<dyn BaselineStore> = Arc::new(SledBaselines {
        tree: db.open_tree(crate::health::baselines::TREE)?,
    });
    let executed: Arc<dyn crate::commands::executed::ExecutedStore> =
        Arc::new(crate::commands::executed::SledExecuted {
            tree: db.open_tree("commands")?,
            db,
        });
    let command_key = file.commands.load_key();
    if command_key.is_none() {
        tracing::warn!("no commands.public_key: remote commands will be rejected");
    }
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
    // from here on the buffer actor owns it
    let buffer_parts = BufferParts::new(buffer);
    let buffer = buffer_parts.handle();
    #[cfg(any(test, feature = "faults"))]
    let buffer_parts = buffer_parts.with_faults(o.faults.clone());

    // sources
    let interval = Duration::from_millis(file.collector.interval_ms);
    let (gpu_backend, gpu_notes) = gpu::select(file.collector.gpu_backend, &gpu_paths(file));
    for n in &gpu_notes {
        tracing::info!(note = %n, "gpu backend");
    }
    let gpu_kind = gpu_backend.kind();
    let source: Box<dyn MetricSource> = match o.source {
        Some(s) => s,
        None => Box::new(SystemSource::with_options(SystemOptions {
            interval_ms: file.collector.interval_ms as u32,
            watch: file.health.watch_processes.clone(),
            scan_every_ms: file.collector.process_scan_interval_ms as i64,
            procfs: file.paths.procfs.clone(),
            sysfs: file.paths.sysfs.clone(),
        })),
    };
    let mut capabilities = source.capabilities();
    capabilities.push(gpu::capability(gpu_kind).to_string());
    let mut birth = runtime::build_birth(file.site.clone(), file.tags.clone(), capabilities, false);
    birth.vision_model_version = file.vision_model_version.clone();

    // shared parts
    let identity = ClientIdentity {
        ca: file.mqtt.ca.clone(),
        cert: file.mqtt.cert.clone(),
        key: file.mqtt.key.clone(),
    };
    let (lp, commands) = runtime::link_parts(
        runtime::LinkSpec {
            device: device.clone(),
            brokers,
            identity,
            keep_alive: Duration::from_secs(file.mqtt.keep_alive_s),
            window: file.mqtt.inflight_window,
            birth,
        },
        buffer.clone(),
    )?;
    let mut cp = CollectorParts::new(source, buffer.clone(), interval)?;
    cp.broker = Some(lp.status.clone());
    let app = Arc::new(AppMetricsStore::new(&file.app));
    {
        let app = app.clone();
        cp.app = Some(Arc::new(move |now| app.snapshot(now)));
    }
    if let Some(url) = file.app.scrape_url.clone() {
        let (app, every) = (app.clone(), Duration::from_millis(file.app.scrape_interval_ms));
        let timeout = Duration::from_millis(file.app.scrape_timeout_ms);
        let ca_file = file.app.scrape_ca_file.clone();
        actix::spawn(async move {
            // building the client may read certificate files: a blocking thread, once
            let scraper =
                tokio::task::spawn_blocking(move || Scraper::build(&url, ca_file.as_deref(), timeout))
                    .await
                    .map_err(anyhow::Error::from)
                    .and_then(|built| built.map_err(anyhow::Error::from));
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let scraper = match &scraper {
                    Ok(s) => s,
                    Err(e) => {
                        app.scrape_failed(&e.to_string(), common::time::now_ms());
                        continue;
                    }
                };
                match scraper.scrape().await {
                    Ok(got) => {
                        app.set_scraped(got.readings, common::time::now_ms());
                        if let Some(first) = got.first_bad {
                            app.scrape_bad_lines(got.bad_lines, &first.to_string());
                        }
                    }
                    Err(e) => app.scrape_failed(&e.to_string(), common::time::now_ms()),
                }
            }
        });
    }
    // A source that opens later replaces a worse one (jtop's JetPack 7 case: NVML first, the
    // devfreq node later). A machine where nothing opened at start is not a Jetson (tegrastats
    // is on every JetPack) and is not probed again: that would cost a thread for no GPU.
    if gpu_kind != common::GpuBackendKind::None {
        let gpu: Box<dyn gpu::GpuBackend> = Box::new(gpu::reprobe::Reprobing::new(
            gpu_backend,
            file.collector.gpu_backend,
            gpu_paths(file),
        ));
        cp.gpu = Some(Arc::new(crate::collect::worker::Worker::spawn(
            "collector-gpu",
            gpu,
        )?));
    }
    #[cfg(any(test, feature = "faults"))]
    if let Some(f) = o.faults.clone() {
        cp.faults = f;
    }
    let executor: Arc<dyn Executor> = match o.executor {
        Some(e) => e,
        None => Arc::new(SystemExecutor::new(
            &file.recovery,
            file.health.systemd_units.clone(),
        )),
    };
    let health_cfg = Arc::new(file.health.clone());
    let rp = RecoveryParts {
        commands: Some(crate::recovery::actor::CommandParts {
            device: device.clone(),
            key: command_key,
            executed,
        }),
        policy: Arc::new(Mutex::new(RecoveryPolicy::new(&file.recovery, &file.health))),
        interlock: Arc::new(Mutex::new(Interlock::new())),
        executor,
        buffer: buffer.clone(),
        latest: cp.latest.clone(),
    };
    let health_last: Arc<Mutex<Option<HealthReport>>> = Arc::default();
    let recovery_addr: Arc<Mutex<Option<Addr<RecoveryActor>>>> = Arc::default();
    let link_addr: Arc<Mutex<Option<Addr<LinkActor>>>> = Arc::default();
    let collector_addr: Arc<Mutex<Option<Addr<CollectorActor>>>> = Arc::default();
    let statuses: ActorStatuses = Arc::default();

    let camera = Arc::new(Mutex::new(camera_health(&file.health.vision, &*baselines)));
    let collector_stats = cp.stats.clone();
    let latest = cp.latest.clone();
    let link_status = lp.status.clone();
    let specs = {
        let (cp, ca) = (cp.clone(), collector_addr.clone());
        let (lp2, la) = (lp.clone(), link_addr.clone());
        let (rp2, ra) = (rp.clone(), recovery_addr.clone());
        let hp = HealthParts {
            cfg: health_cfg,
            buffer: buffer.clone(),
            latest: cp.latest.clone(),
            link: lp.status.clone(),
            actors: statuses.clone(),
            recovery: None,
            last: health_last.clone(),
            camera: camera.clone(),
            baselines: Some(baselines.clone()),
        };
        let ra2 = recovery_addr.clone();
        vec![
            // first: the others append to it from their start
            FnSpec::boxed("buffer", move |live| buffer_parts.start(live)),
            FnSpec::boxed("link", move |live| {
                let a = LinkActor::new(lp2.clone(), live).start();
                if let Ok(mut s) = la.lock() {
                    *s = Some(a.clone());
                }
                a
            }),
            FnSpec::boxed("collector", move |live| {
                let a = CollectorActor::new(cp.clone(), live).start();
                if let Ok(mut s) = ca.lock() {
                    *s = Some(a.clone());
                }
                a
            }),
            FnSpec::boxed("recovery", move |live| {
                let a = RecoveryActor::new(rp2.clone(), live).start();
                if let Ok(mut s) = ra.lock() {
                    *s = Some(a.clone());
                }
                a
            }),
            FnSpec::boxed("health", move |live| {
                let mut hp = hp.clone();
                hp.recovery = ra2.lock().ok().and_then(|r| r.clone()).map(|a| a.recipient());
                HealthActor::new(hp, live).start()
            }),
        ]
    };
    let http_addr = if file.http.listen.is_empty() {
        None
    } else {
        let listen: std::net::SocketAddr = file.http.listen.parse()?;
        let (device2, buffer2, link2, statuses2, health2, app2) = (
            device.clone(),
            buffer.clone(),
            link_status.clone(),
            statuses.clone(),
            health_last.clone(),
            app.clone(),
        );
        let notes = gpu_notes.clone();
        let latest2 = latest.clone();
        let camera2 = camera.clone();
        let state = crate::http::server::HttpState {
            status: Arc::new(move || StatusSnapshot {
                device: device2.clone(),
                agent_version: runtime::AGENT_VERSION.into(),
                health: health2.lock().ok().and_then(|h| h.clone()),
                actors: statuses2.lock().map(|a| a.clone()).unwrap_or_default(),
                buffer: buffer2.stats(),
                link: link2.snapshot(),
                gpu_backend: gpu_kind,
                gpu_notes: notes.clone(),
                app_metrics: app2.counters(),
                memory: proc_mem::ProcessMemory::now(),
                cameras: camera2.lock().map(|c| c.snapshot()).unwrap_or_default(),
            }),
            telemetry: Arc::new(move || latest2.lock().ok().and_then(|l| l.clone())),
            app: app.clone(),
        };
        let (server, addr) = crate::http::server::start(listen, state)
            .map_err(|e| anyhow::anyhow!("http.listen {listen}: {e}"))?;
        actix::spawn(server);
        tracing::info!(addr = %addr, "local endpoint: /metrics, /api/v1/status, POST /api/v1/app-metrics");
        Some(addr)
    };
    // commands from the link go to whichever recovery actor is running now
    let mut commands = commands;
    {
        let ra = recovery_addr.clone();
        actix::spawn(async move {
            while let Some(cmd) = commands.recv().await {
                let addr = ra.lock().ok().and_then(|a| a.clone());
                match addr {
                    Some(a) => a.do_send(crate::recovery::actor::RemoteCommand(cmd)),
                    None => {
                        tracing::warn!("command received before recovery started; the server will re-send it")
                    }
                }
            }
        });
    }
    let mut sup = AgentSupervisor::new(file.supervisor, specs);
    sup.statuses = statuses.clone();
    let exit_code = sup.exit_code.clone();
    let supervisor = sup.start();
    Ok(AgentHandle {
        device,
        buffer,
        link: link_status,
        collector: collector_stats,
        actors: statuses,
        latest,
        health: health_last,
        exit_code,
        gpu_notes,
        app,
        http_addr,
        commands: None,
        supervisor,
        link_addr,
        collector_addr,
    })
}
