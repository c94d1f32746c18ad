//! Health reports of simulated machines, made as a real agent makes them: the agent's own
//! evaluation ([`rvm_agent::health::evaluate`]) of what the machine shows, published through
//! its buffer on every change and at least every [`SIM_HEALTH_REPORT_S`]
//! ([`rvm_agent::health::evaluate::HealthTracker`]), looked at every [`SIM_HEALTH_INTERVAL`].
//!
//! What a simulated machine watches ([`sim_health_config`]), as an RVM's agent would:
//! - its latest telemetry against the agent's default thresholds (CPU, memory, disk, GPU
//!   temperature: an overheating machine warns);
//! - the vision service's process ([`VISION_PROCESS`]) and its local health endpoint
//!   ([`VISION_HTTP_CHECK`]): both fail while the service has crashed ([`Fault::VisionDown`]:
//!   nothing listens, the connection is refused);
//! - the camera, required: gone with [`Fault::CameraMissing`];
//! - the data disk (always writable here) and the broker link (down while the machine's
//!   network is cut: those reports wait in its buffer like its records);
//! - its camera `chamber` through the agent's own camera health
//!   ([`rvm_agent::health::camera`], `[health.vision]` defaults), with the baselines a
//!   machine that has run for days would have ([`sim_camera_health`]): frozen, covered, stale
//!   and slow cameras ([`Fault::CameraFrozen`] and the others) fail their `camera:chamber:*`
//!   checks.
//!
//! A machine that stopped collecting (stopped, or not started yet) reports nothing.

use std::time::Duration;

use std::collections::BTreeMap;

use common::{CheckResult, HealthReport, Telemetry};
use rvm_agent::buffer::{Body, BufferHandle};
use rvm_agent::health::camera::{Baseline, CameraBaselines, CameraHealth};
use rvm_agent::health::config::{HealthConfig, HttpCheck};
use rvm_agent::health::evaluate::{HealthTracker, Observations, evaluate};
use rvm_agent::shared::http::RequestError;

use crate::source::{Fault, Latest, SIM_CAMERA, SimFault, VISION_PROCESS};

/// How often a simulated machine looks at its health (the agent's interval).
pub const SIM_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
/// A simulated machine reports its health at least this often (the agent's default).
pub const SIM_HEALTH_REPORT_S: u64 = 60;
/// The name of the vision service's health endpoint check (`http:vision`).
pub const VISION_HTTP_CHECK: &str = "vision";
/// Where that endpoint is on a machine.
pub const VISION_HTTP_URL: &str = "http://127.0.0.1:8090/health";
/// Where the data disk is on a machine.
pub const DATA_DISK: &str = "/data";
/// Telemetry older than this many collection intervals means the machine stopped collecting.
const STALE_INTERVALS: u32 = 3;
/// The inference fps and detection confidence a healthy simulated camera averages.
pub const SIM_BASELINE_FPS: f64 = 28.5;
pub const SIM_BASELINE_CONFIDENCE: f64 = 0.915;

/// The `[health]` a simulated machine runs with. See the module docs.
pub fn sim_health_config() -> HealthConfig {
    HealthConfig {
        watch_processes: vec![VISION_PROCESS.into()],
        http_checks: vec![HttpCheck {
            name: VISION_HTTP_CHECK.into(),
            url: VISION_HTTP_URL.into(),
            timeout_ms: 1_000,
            expect_status: 200,
            ca_file: None,
        }],
        camera_required: true,
        data_disk_path: Some(DATA_DISK.into()),
        report_interval_s: SIM_HEALTH_REPORT_S,
        ..HealthConfig::default()
    }
}

/// The camera health of a simulated machine: the agent's, with [`SIM_CAMERA`]'s baselines
/// restored as learned (a real machine keeps learning them for days; a simulated one starts
/// with them, so an fps drop shows without a warm-up).
pub fn sim_camera_health(cfg: &HealthConfig, now_ms: i64) -> CameraHealth {
    let mut h = CameraHealth::new(&cfg.vision);
    let learned = |mean| Baseline {
        mean,
        learned_s: cfg.vision.warmup_s as f64,
    };
    h.restore(
        BTreeMap::from([(
            SIM_CAMERA.to_string(),
            CameraBaselines {
                fps: learned(SIM_BASELINE_FPS),
                confidence: learned(SIM_BASELINE_CONFIDENCE),
            },
        )]),
        now_ms,
    );
    h
}

/// The machine's link as its health sees it: connected, or down since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkState {
    pub connected: bool,
    pub down_for_ms: i64,
}

/// The report of a machine showing `fault`, with its latest telemetry, link and camera
/// decisions ([`CameraHealth::evaluate`] of the telemetry) (pure).
pub fn sim_report(
    cfg: &HealthConfig,
    telemetry: &Telemetry,
    fault: &SimFault,
    link: LinkState,
    cameras: Vec<CheckResult>,
) -> HealthReport {
    let vision_down = fault.has(Fault::VisionDown);
    let http = if vision_down {
        Err(RequestError::Connect {
            addr: "127.0.0.1:8090".into(),
            detail: "connection refused".into(),
        })
    } else {
        Ok(200)
    };
    let obs = Observations {
        telemetry: Some(telemetry),
        processes: vec![(VISION_PROCESS.into(), !vision_down)],
        units: Vec::new(),
        http: vec![(VISION_HTTP_CHECK.into(), http)],
        camera_present: Some(!fault.has(Fault::CameraMissing)),
        disk_writable: Some(Ok(())),
        broker_connected: link.connected,
        broker_down_for_ms: link.down_for_ms,
        actors: Vec::new(),
        cameras,
    };
    evaluate(cfg, &obs)
}

/// Reports one machine's health until the process ends: every [`SIM_HEALTH_INTERVAL`] it
/// evaluates what the machine shows and appends a report to its buffer when the tracker says
/// so (the buffer actor wakes the link). `offline` is the machine's network switch.
pub async fn run(
    latest: Latest,
    fault: SimFault,
    offline: tokio::sync::watch::Receiver<bool>,
    buffer: BufferHandle,
    interval: Duration,
) {
    let cfg = sim_health_config();
    let mut tracker = HealthTracker::new(cfg.report_interval_s);
    let stale_ms = i64::try_from(interval.saturating_mul(STALE_INTERVALS).as_millis()).unwrap_or(i64::MAX);
    let mut down_since: Option<i64> = None;
    let mut camera = sim_camera_health(&cfg, common::time::now_ms());
    let mut tick = tokio::time::interval(SIM_HEALTH_INTERVAL);
    loop {
        tick.tick().await;
        let now = common::time::now_ms();
        let connected = !*offline.borrow();
        down_since = if connected { None } else { down_since.or(Some(now)) };
        let link = LinkState {
            connected,
            down_for_ms: down_since.map_or(0, |s| now - s),
        };
        let Some(t) = latest.lock().ok().and_then(|l| {
            l.as_ref()
                .filter(|(at, _)| now - at <= stale_ms)
                .map(|(_, t)| t.clone())
        }) else {
            continue;
        };
        let cameras = camera.evaluate(Some(&t.app), now).checks();
        let report = sim_report(&cfg, &t, &fault, link, cameras);
        if tracker.should_publish(&report, now)
            && let Err(e) = buffer.append(now, Body::Health(report)).await
        {
            tracing::error!(error = %e, "simulated health report not stored");
        }
    }
}

#[cfg(test)]
mod tests {
    use common::HealthStatus;
    use rvm_agent::collect::MetricSource;

    use super::*;
    use crate::source::SimSource;

    const UP: LinkState = LinkState {
        connected: true,
        down_for_ms: 0,
    };

    fn status(r: &HealthReport, check: &str) -> HealthStatus {
        r.checks
            .iter()
            .find(|c| c.name == check)
            .unwrap_or_else(|| panic!("no {check} in {:?}", r.checks))
            .status
    }

    #[test]
    fn a_healthy_simulated_machine_reports_every_check_ok() {
        let mut s = SimSource::new(1, 1000);
        let t = s.collect(0);
        let r = sim_report(&sim_health_config(), &t, &s.fault_handle(), UP, Vec::new());
        assert_eq!(r.status, HealthStatus::Ok, "{:?}", r.checks);
        for check in [
            "cpu",
            "memory",
            "disk",
            "gpu_temp",
            "process:rvm-vision",
            "http:vision",
            "camera",
            "data_disk",
            "broker",
        ] {
            assert_eq!(status(&r, check), HealthStatus::Ok, "{check}");
        }
    }

    #[test]
    fn a_crashed_vision_service_fails_its_process_and_http_checks_and_a_lost_camera_its_own() {
        let mut s = SimSource::new(2, 1000);
        let f = s.fault_handle();
        let cfg = sim_health_config();
        f.set(Fault::VisionDown);
        let r = sim_report(&cfg, &s.collect(0), &f, UP, Vec::new());
        assert_eq!(status(&r, "process:rvm-vision"), HealthStatus::Critical);
        assert_eq!(status(&r, "http:vision"), HealthStatus::Critical);
        let http = r.checks.iter().find(|c| c.name == "http:vision").unwrap();
        assert!(http.message.contains("connection refused"), "{}", http.message);
        assert_eq!(status(&r, "camera"), HealthStatus::Ok);
        f.set(Fault::CameraMissing);
        let t = s.collect(1000);
        let r = sim_report(&cfg, &t, &f, UP, Vec::new());
        assert_eq!(status(&r, "camera"), HealthStatus::Critical);
        assert_eq!(status(&r, "http:vision"), HealthStatus::Ok);
        let fps = t.app.iter().find(|a| a.name == "camera_fps").unwrap().value;
        assert_eq!(fps, 0.0, "no frames without a camera");
    }

    #[test]
    fn a_cut_network_shows_in_the_broker_check_once_it_lasts() {
        let mut s = SimSource::new(3, 1000);
        let (cfg, f) = (sim_health_config(), s.fault_handle());
        let t = s.collect(0);
        let brief = LinkState {
            connected: false,
            down_for_ms: 5_000,
        };
        assert_eq!(
            status(&sim_report(&cfg, &t, &f, brief, Vec::new()), "broker"),
            HealthStatus::Ok
        );
        let long = LinkState {
            connected: false,
            down_for_ms: 20 * 60_000,
        };
        assert_eq!(
            status(&sim_report(&cfg, &t, &f, long, Vec::new()), "broker"),
            HealthStatus::Critical
        );
    }

    /// Looks at a machine every 5 s up to `to_s`, showing `fault` from 5 s on; the last report.
    fn camera_report(fault: Fault, to_s: i64) -> HealthReport {
        let mut s = SimSource::new(4, 1000);
        let f = s.fault_handle();
        let cfg = sim_health_config();
        let mut cam = sim_camera_health(&cfg, 0);
        let mut last = None;
        for t in (0..=to_s).step_by(5) {
            f.set(if t >= 5 { fault } else { Fault::None });
            let tel = s.collect(t * 1000);
            let cameras = cam.evaluate(Some(&tel.app), t * 1000).checks();
            last = Some(sim_report(&cfg, &tel, &f, UP, cameras));
        }
        last.unwrap()
    }

    #[test]
    fn each_camera_fault_fails_its_own_camera_check_and_no_other() {
        let healthy = camera_report(Fault::None, 120);
        for aspect in ["frames", "frozen", "covered", "fps", "confidence"] {
            assert_eq!(
                status(&healthy, &format!("camera:chamber:{aspect}")),
                HealthStatus::Ok,
                "{aspect}: {:?}",
                healthy.checks
            );
        }
        for (fault, aspect, want) in [
            (Fault::CameraFrozen, "frozen", HealthStatus::Critical),
            (Fault::CameraCovered, "covered", HealthStatus::Critical),
            (Fault::CameraStale, "frames", HealthStatus::Critical),
            (Fault::FpsDrop, "fps", HealthStatus::Warn),
        ] {
            let r = camera_report(fault, 120);
            let failing: Vec<&str> = r
                .checks
                .iter()
                .filter(|c| c.name.starts_with("camera:") && c.status != HealthStatus::Ok)
                .map(|c| c.name.as_str())
                .collect();
            assert_eq!(
                failing,
                [format!("camera:chamber:{aspect}")],
                "{fault:?}: {:?}",
                r.checks
            );
            assert_eq!(status(&r, &format!("camera:chamber:{aspect}")), want);
        }
    }
}
