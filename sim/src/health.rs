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
//!   network is cut: those reports wait in its buffer like its records).
//!
//! A machine that stopped collecting (stopped, or not started yet) reports nothing.

use std::time::Duration;

use common::{HealthReport, Telemetry};
use rvm_agent::buffer::{Body, BufferHandle};
use rvm_agent::health::config::{HealthConfig, HttpCheck};
use rvm_agent::health::evaluate::{HealthTracker, Observations, evaluate};
use rvm_agent::shared::http::RequestError;

use crate::source::{Fault, Latest, SimFault, VISION_PROCESS};

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

/// The machine's link as its health sees it: connected, or down since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkState {
    pub connected: bool,
    pub down_for_ms: i64,
}

/// The report of a machine showing `fault`, with its latest telemetry and link (pure).
pub fn sim_report(
    cfg: &HealthConfig,
    telemetry: &Telemetry,
    fault: &SimFault,
    link: LinkState,
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
        let report = sim_report(&cfg, &t, &fault, link);
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
        let r = sim_report(&sim_health_config(), &t, &s.fault_handle(), UP);
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
        let r = sim_report(&cfg, &s.collect(0), &f, UP);
        assert_eq!(status(&r, "process:rvm-vision"), HealthStatus::Critical);
        assert_eq!(status(&r, "http:vision"), HealthStatus::Critical);
        let http = r.checks.iter().find(|c| c.name == "http:vision").unwrap();
        assert!(http.message.contains("connection refused"), "{}", http.message);
        assert_eq!(status(&r, "camera"), HealthStatus::Ok);
        f.set(Fault::CameraMissing);
        let t = s.collect(1000);
        let r = sim_report(&cfg, &t, &f, UP);
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
            status(&sim_report(&cfg, &t, &f, brief), "broker"),
            HealthStatus::Ok
        );
        let long = LinkState {
            connected: false,
            down_for_ms: 20 * 60_000,
        };
        assert_eq!(
            status(&sim_report(&cfg, &t, &f, long), "broker"),
            HealthStatus::Critical
        );
    }
}
