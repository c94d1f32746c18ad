//! Health actor: every [`HEALTH_INTERVAL`] probes the machine (processes, units, camera and disk
//! on a blocking thread; the HTTP checks on the actor's runtime, see [`probes::HttpProbes`]), evaluates
//! every check ([`crate::health::evaluate::evaluate`]), publishes a `HealthReport` when
//! anything changed and at least every `report_interval_s`, and hands every report to the
//! recovery actor.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::prelude::*;
use common::HealthReport;

use crate::buffer::{Body, BufferHandle};
use crate::collect::actor::Latest;
use crate::health::baselines::{BASELINE_SAVE_INTERVAL_MS, BaselineStore};
use crate::health::camera::CameraHealth;
use crate::health::config::HealthConfig;
use crate::health::evaluate::{self, DiskProbeError, HealthTracker, Observations, UnitState};
use crate::health::probes::{self, HttpProbes};
use crate::link::status::LinkStatus;
use crate::messages::{HealthUpdate, StopNow};
use crate::shared::http::RequestError;
use crate::supervise::actor::ActorStatuses;
use crate::supervise::liveness::Liveness;

/// How often health is evaluated.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// Longest the probes (systemctl, HTTP checks, disk) may take together.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct HealthParts {
    pub cfg: Arc<HealthConfig>,
    pub buffer: BufferHandle,
    pub latest: Latest,
    pub link: Arc<LinkStatus>,
    pub actors: ActorStatuses,
    pub recovery: Option<Recipient<HealthUpdate>>,
    /// The last report, for `/api/v1/status`.
    pub last: Arc<std::sync::Mutex<Option<HealthReport>>>,
    /// Camera timers and learned baselines; survive restarts of the actor.
    pub camera: Arc<std::sync::Mutex<CameraHealth>>,
    /// Where the baselines are stored every [`BASELINE_SAVE_INTERVAL_MS`]; None: not kept.
    pub baselines: Option<Arc<dyn BaselineStore>>,
}

pub struct HealthActor {
    p: HealthParts,
    live: Arc<Liveness>,
    tracker: HealthTracker,
    busy: bool,
    link_down_since_ms: Option<i64>,
    /// The HTTP checks' clients, built on the first tick's blocking thread.
    http: Option<Arc<HttpProbes>>,
    baselines_saved_ms: i64,
}

struct Probed {
    processes: Vec<(String, bool)>,
    units: Vec<(String, UnitState)>,
    http: Vec<(String, Result<u16, RequestError>)>,
    camera: Option<bool>,
    disk: Option<Result<(), DiskProbeError>>,
}

impl HealthActor {
    pub fn new(p: HealthParts, live: Arc<Liveness>) -> Self {
        let tracker = HealthTracker::new(p.cfg.report_interval_s);
        HealthActor {
            p,
            live,
            tracker,
            busy: false,
            link_down_since_ms: None,
            http: None,
            baselines_saved_ms: common::time::now_ms(),
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        self.busy = true;
        let cfg = self.p.cfg.clone();
        let http = self.http.clone();
        let job = tokio::task::spawn_blocking(move || {
            let http = http.unwrap_or_else(|| Arc::new(HttpProbes::build(&cfg.http_checks)));
            let probed = Probed {
                processes: probes::probe_processes(&cfg.watch_processes),
                units: probes::probe_units(&cfg.systemd_units),
                http: Vec::new(),
                camera: Some(probes::probe_camera(&cfg.camera_glob)),
                disk: cfg.data_disk_path.as_deref().map(probes::probe_disk_writable),
            };
            (probed, http)
        });
        let fut = async move {
            tokio::time::timeout(PROBE_TIMEOUT, async move {
                let (mut probed, http) = job.await?;
                probed.http = http.probe().await;
                Ok::<_, tokio::task::JoinError>((probed, http))
            })
            .await
        };
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            act.busy = false;
            match res {
                Ok(Ok((probed, http))) => {
                    act.http = Some(http);
                    act.evaluate(probed)
                }
                Ok(Err(e)) if e.is_panic() => {
                    act.live
                        .exit(crate::supervise::liveness::panic_message(&*e.into_panic()));
                    ctx.stop();
                }
                Ok(Err(e)) => tracing::error!(error = %e, "health probes failed"),
                Err(_) => tracing::warn!(timeout_s = PROBE_TIMEOUT.as_secs(), "health probes timed out"),
            }
        }));
    }

    fn evaluate(&mut self, probed: Probed) {
        let now = common::time::now_ms();
        let connected = self.p.link.connected.load(Ordering::Relaxed);
        if connected {
            self.link_down_since_ms = None;
        } else if self.link_down_since_ms.is_none() {
            self.link_down_since_ms = Some(now);
        }
        let latest = self.p.latest.lock().ok().and_then(|l| l.clone());
        let actors = self.p.actors.lock().map(|a| a.clone()).unwrap_or_default();
        let cameras = match self.p.camera.lock() {
            Ok(mut c) => c
                .evaluate(latest.as_ref().map(|t| t.app.as_slice()), now)
                .checks(),
            Err(_) => Vec::new(),
        };
        self.save_baselines(now);
        let obs = Observations {
            telemetry: latest.as_ref(),
            processes: probed.processes,
            units: probed.units,
            http: probed.http,
            camera_present: probed.camera,
            disk_writable: probed.disk,
            broker_connected: connected,
            broker_down_for_ms: self.link_down_since_ms.map_or(0, |s| now - s),
            actors,
            cameras,
        };
        let report = evaluate::evaluate(&self.p.cfg, &obs);
        if self.tracker.should_publish(&report, now) {
            let (buffer, report) = (self.p.buffer.clone(), report.clone());
            actix::spawn(async move {
                if let Err(e) = buffer.append(now, Body::Health(report)).await {
                    tracing::error!(error = %e, "health report not stored");
                }
            });
        }
        if let Some(r) = &self.p.recovery {
            r.do_send(HealthUpdate(report.clone()));
        }
        if let Ok(mut l) = self.p.last.lock() {
            *l = Some(report);
        }
        self.live.progress(now);
    }
}

impl HealthActor {
    /// Stores the cameras' baselines on a blocking thread when [`BASELINE_SAVE_INTERVAL_MS`]
    /// passed since the last time.
    fn save_baselines(&mut self, now: i64) {
        let Some(store) = self.p.baselines.clone() else {
            return;
        };
        if (now - self.baselines_saved_ms).abs() < BASELINE_SAVE_INTERVAL_MS {
            return;
        }
        self.baselines_saved_ms = now;
        let Ok(baselines) = self.p.camera.lock().map(|c| c.baselines()) else {
            return;
        };
        if baselines.is_empty() {
            return;
        }
        tokio::task::spawn_blocking(move || {
            if let Err(e) = store.save(&baselines) {
                tracing::warn!(error = %e, "camera baselines not stored");
            }
        });
    }
}

impl Actor for HealthActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(HEALTH_INTERVAL, |act, ctx| act.tick(ctx));
        // first evaluation once a collection had a chance to happen
        ctx.run_later(Duration::from_millis(1500), |act, ctx| act.tick(ctx));
    }
}

impl Handler<StopNow> for HealthActor {
    type Result = ();
    fn handle(&mut self, _: StopNow, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
