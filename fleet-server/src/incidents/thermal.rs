//! Thermal throttling, a causal chain on one machine: the GPU temperature alert is active when
//! the GPU clock drops by `freq_drop_pct` from its recent maximum under load, and a camera fps
//! / inference time alert fires within `window_s` after that drop.

use std::collections::VecDeque;

use common::DeviceId;

use super::Correlator;
use super::incident::{FiringAlert, Incident, IncidentChange, IncidentKind, IncidentState, utc};

/// GPU temperature: the first step of the thermal chain.
pub const TEMP_METRIC: &str = "gpu.temp_c";
/// GPU clock: a drop under load is the throttling step.
pub const FREQ_METRIC: &str = "gpu.freq_mhz";
/// GPU load: a clock drop on an idle GPU is DVFS saving power, not throttling.
pub const LOAD_METRIC: &str = "gpu.load_pct";
/// Vision performance: the last step of the thermal chain.
pub const PERF_METRICS: &[&str] = &["app.camera_fps", "app.inference_ms"];
/// Cap of GPU clock samples kept per device for the throttle window.
const FREQ_SAMPLES_CAP: usize = 4096;

#[derive(Debug, Clone, Default)]
pub(super) struct ThermalTrack {
    /// (time, GPU clock) within the thermal window that may still be its maximum: each
    /// lower than the one before it.
    pub(super) freq: VecDeque<(i64, f64)>,
    pub(super) throttled: bool,
    /// Start of the latest clock drop, kept for the window after it.
    pub(super) last_onset_ms: Option<i64>,
}

impl Correlator {
    /// Records a GPU clock sample; true when a drop (throttling) starts with this sample.
    pub(super) fn observe_gpu_clock(
        &mut self,
        device: &DeviceId,
        freq: f64,
        load: Option<f64>,
        now_ms: i64,
    ) -> bool {
        let cfg = &self.config.thermal;
        let window = cfg.window_s as i64 * 1000;
        let t = self.thermal.entry(device.clone()).or_default();
        while t.freq.front().is_some_and(|(at, _)| *at < now_ms - window) || t.freq.len() >= FREQ_SAMPLES_CAP
        {
            t.freq.pop_front();
        }
        // a sample at or below a newer one is never the window's maximum again: dropped, so
        // the deque holds the falling run of maxima (one sample while the clock is steady),
        // not every record of the window (120 at one record per 5 s, 600 at 1 Hz)
        while t.freq.back().is_some_and(|(_, f)| *f <= freq) {
            t.freq.pop_back();
        }
        t.freq.push_back((now_ms, freq));
        let max = t.freq.iter().map(|(_, f)| *f).fold(f64::MIN, f64::max);
        let busy = load.is_none_or(|l| l >= cfg.min_load_pct);
        let dropped = max > 0.0 && freq <= max * (1.0 - cfg.freq_drop_pct / 100.0) && busy;
        let onset = dropped && !t.throttled;
        t.throttled = dropped;
        if onset {
            t.last_onset_ms = Some(now_ms);
        }
        onset
    }

    pub(super) fn thermal_chain(&mut self, device: &DeviceId, now_ms: i64, out: &mut Vec<IncidentChange>) {
        let of_device: Vec<FiringAlert> = self
            .firing
            .values()
            .filter(|f| &f.device == device)
            .filter(|f| f.metric == TEMP_METRIC || PERF_METRICS.contains(&f.metric.as_str()))
            .cloned()
            .collect();
        let open = self
            .find_open(|i| i.kind == IncidentKind::ThermalThrottling && i.devices.first() == Some(device));
        if let Some(id) = open {
            for f in &of_device {
                self.join(&id, f, now_ms, out);
            }
            return;
        }
        let Some(onset) = self.thermal.get(device).and_then(|t| t.last_onset_ms) else {
            return;
        };
        let window = self.config.thermal.window_s as i64 * 1000;
        let temp = of_device
            .iter()
            .filter(|f| f.metric == TEMP_METRIC && f.started_ms <= onset)
            .min_by_key(|f| f.started_ms);
        let perf: Vec<&FiringAlert> = of_device
            .iter()
            .filter(|f| PERF_METRICS.contains(&f.metric.as_str()))
            .filter(|f| f.fired_ms >= onset && f.fired_ms - onset <= window)
            .collect();
        let Some(temp) = temp else {
            return;
        };
        if perf.is_empty() {
            return;
        }
        let mut members = vec![temp.id.clone()];
        members.extend(perf.iter().map(|f| f.id.clone()));
        let perf_names: Vec<&str> = perf.iter().map(|f| f.metric.as_str()).collect();
        let incident = Incident {
            id: String::new(),
            kind: IncidentKind::ThermalThrottling,
            title: format!("thermal throttling on {device}"),
            probable_cause: format!(
                "GPU overheating (alert {} since {}) throttled the GPU clock at {}, then {} degraded: \
                 check fan, heatsink, dust and enclosure temperature",
                temp.rule,
                utc(temp.started_ms),
                utc(onset),
                perf_names.join(" and ")
            ),
            site: temp.site.clone(),
            attribute: None,
            attribute_value: None,
            rule: Some(temp.rule.clone()),
            metric: Some(TEMP_METRIC.into()),
            devices: vec![device.clone()],
            members: members.clone(),
            active_members: members,
            suppresses_members: false,
            opened_ms: now_ms,
            updated_ms: now_ms,
            resolved_ms: None,
            state: IncidentState::Open,
        };
        self.open_incident(incident, Vec::new(), now_ms, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incidents::testkit::*;

    fn build_thermal_device() -> Harness {
        Harness::build(vec![build_device("rvm1", "oslo", &[])])
    }

    /// Hot GPU from t = 0 (temperature alert fires at 60 s), clock drops at `drop_at` under
    /// `load`, camera fps falls from `fps_at` (the fps alert fires 60 s later).
    fn thermal_story(h: &mut Harness, drop_at: Option<i64>, load: f64, fps_at: i64) {
        for s in (0..=fps_at / S + 70).step_by(10) {
            let now = s * S;
            let freq = if drop_at.is_some_and(|d| now >= d) {
                600.0
            } else {
                1000.0
            };
            let fps = if now >= fps_at { 5.0 } else { 30.0 };
            h.feed(
                "rvm1",
                &[
                    ("gpu.temp_c", 88.0),
                    (FREQ_METRIC, freq),
                    (LOAD_METRIC, load),
                    ("app.camera_fps", fps),
                ],
                now,
            );
        }
    }

    #[test]
    fn hot_gpu_then_throttled_clock_then_low_fps_is_one_thermal_incident() {
        let mut h = build_thermal_device();
        thermal_story(&mut h, Some(90 * S), 95.0, 120 * S);
        let opened = h.opened();
        assert_eq!(opened.len(), 1, "{opened:#?}");
        let inc = opened[0];
        assert_eq!(inc.kind, IncidentKind::ThermalThrottling);
        assert_eq!(inc.members, ["gpu_temp_high:rvm1:1", "camera_fps_low:rvm1:1"]);
        // times read as times (RFC 3339 UTC; the web view shows them in the viewer's zone)
        assert!(
            inc.probable_cause.starts_with(
                "GPU overheating (alert gpu_temp_high since 1970-01-01T00:00:00Z) throttled the GPU clock at 1970-01-01T00:01:30Z"
            ),
            "{}",
            inc.probable_cause
        );
        // Cooling down resolves both alerts and the incident.
        h.feed("rvm1", &[("gpu.temp_c", 60.0), ("app.camera_fps", 30.0)], 400 * S);
        assert!(h.corr.open().is_empty());
    }

    #[test]
    fn a_hot_gpu_and_low_fps_without_a_clock_drop_is_not_thermal_throttling() {
        let mut h = build_thermal_device();
        thermal_story(&mut h, None, 95.0, 120 * S);
        assert!(h.opened().is_empty());
    }

    #[test]
    fn a_clock_drop_on_an_idle_gpu_is_not_throttling() {
        let mut h = build_thermal_device();
        thermal_story(&mut h, Some(90 * S), 10.0, 120 * S);
        assert!(h.opened().is_empty());
    }

    #[test]
    fn low_fps_long_after_the_clock_drop_is_not_part_of_the_chain() {
        let mut h = build_thermal_device();
        thermal_story(&mut h, Some(90 * S), 95.0, 700 * S);
        assert!(h.opened().is_empty(), "{:#?}", h.opened());
    }

    /// A steady clock keeps one sample, not one per record; a drop is still judged against
    /// the highest clock of the window, also once that sample was followed by lower ones.
    #[test]
    fn the_clock_window_keeps_only_possible_maxima() {
        let mut h = build_thermal_device();
        let id = DeviceId::new("rvm1").unwrap();
        for s in 0..300 {
            h.corr.observe_gpu_clock(&id, 1000.0, Some(95.0), s * S);
        }
        assert_eq!(h.corr.thermal[&id].freq.len(), 1);
        // a slow fall within the threshold, then below 1000 by more than it
        assert!(!h.corr.observe_gpu_clock(&id, 950.0, Some(95.0), 300 * S));
        assert!(!h.corr.observe_gpu_clock(&id, 900.0, Some(95.0), 301 * S));
        assert_eq!(h.corr.thermal[&id].freq.len(), 3);
        assert!(h.corr.observe_gpu_clock(&id, 600.0, Some(95.0), 302 * S));
    }

    #[test]
    fn tick_forgets_old_clock_samples() {
        let mut h = build_thermal_device();
        h.feed("rvm1", &[(FREQ_METRIC, 1000.0)], 0);
        h.tick(10_000 * S);
        assert!(h.corr.thermal.is_empty());
    }
}
