//! Camera and vision health (pure): the vision service reports raw numbers per camera; this
//! module decides what they mean. Time is an argument; nothing here does IO.
//!
//! # Input
//!
//! The figures arrive as application metrics (push or scrape, [`crate::appmetrics`]), one
//! gauge per figure with a `camera` label, flattened to `GAUGE.CAMERA` reading names
//! (`rvm_camera_frame_age_seconds{camera="front"}` -> `rvm_camera_frame_age_seconds.front`);
//! the contract is in `docs/camera-health.md`. [`samples_from`] picks them out of a
//! telemetry record's `app` readings; camera names must pass
//! [`valid_camera_name`](crate::shared::names::valid_camera_name), other names are ignored.
//!
//! # Decisions
//!
//! Per camera, one check per figure it reports, named `camera:CAMERA:ASPECT` (so the server's
//! health check alerts are `check.camera.CAMERA.ASPECT`):
//!
//! - `frames` (from the frame age): critical when the last frame is older than
//!   `stale_after_s`, or when a camera seen before has sent no figures for that long.
//! - `frozen` (from the frame hash): critical when the hash has not changed for
//!   `frozen_after_s` while frames are fresh (a driver handing out the same buffer), and the
//!   frame age changed meanwhile: proof that the figures were new and not one scrape kept
//!   while the service's endpoint hung (a service that reports no frame age is judged on the
//!   hash alone).
//! - `covered` (from the mean luminance): critical when it stayed below `dark_luma` for
//!   `dark_after_s` (a black, covered or dead sensor).
//! - `fps` (inference fps): warn when below `fps_min_ratio` of the camera's own baseline for
//!   `fps_low_after_s`.
//! - `confidence` (mean detection confidence): warn when further than
//!   `confidence_max_drift` from its baseline for `confidence_after_s`.
//!
//! While frames are stale, `frozen`, `covered`, `fps` and `confidence` are ok ("not
//! judged"): the picture is not current, and `frames` already fails. No camera figures at all since start (and no restored
//! baseline naming a camera) is [`CameraOutcome::Unsupported`]: no camera checks, neither
//! healthy nor failing.
//!
//! # Baselines
//!
//! Each camera learns its own inference fps and confidence: a cumulative mean for the first
//! `baseline_tau_s`, then a moving average with that time constant. A sample teaches the
//! baseline only while the camera is otherwise healthy (fresh, not frozen, not dark) and the
//! figure is within its band, so a fault is never learned as normal. fps and confidence are
//! judged once `warmup_s` healthy seconds were learned; before that their check is ok with
//! "learning". A figure off its baseline for `relearn_after_s` is the new normal (a new model,
//! camera or lighting): that baseline is learned again. [`CameraHealth::baselines`] and
//! [`CameraHealth::restore`] carry the baselines across restarts.

use std::collections::BTreeMap;

use common::{CheckResult, HealthStatus, Reading};
use serde::{Deserialize, Serialize};

use super::config::VisionHealthConfig;
use crate::shared::names::valid_camera_name;

/// Seconds since the last frame the vision service received from the camera.
pub const FRAME_AGE: &str = "rvm_camera_frame_age_seconds";
/// A hash of the last frame, as an integer below 2^53 (a 32-bit CRC will do).
pub const FRAME_HASH: &str = "rvm_camera_frame_hash";
/// Mean luminance of the last frame, 0 (black) to 255.
pub const LUMA: &str = "rvm_camera_luma_mean";
/// Frames inferred per second.
pub const INFERENCE_FPS: &str = "rvm_vision_inference_fps";
/// Mean confidence of recent detections, 0 to 1 (absent when nothing was detected).
pub const CONFIDENCE: &str = "rvm_vision_confidence_mean";
/// Every gauge of the contract.
pub const GAUGES: [&str; 5] = [FRAME_AGE, FRAME_HASH, LUMA, INFERENCE_FPS, CONFIDENCE];

/// At most this many cameras are tracked (a misbehaving service cannot grow the state).
pub const MAX_CAMERAS: usize = 16;
/// A gap between two looks longer than this teaches a baseline as if it were this long.
const MAX_LEARN_STEP_S: f64 = 60.0;
/// A camera known from restored baselines has this long after the restore to send its first
/// figures before it counts as silent (the vision service starts after the agent at boot).
pub const RESTORED_GRACE_MS: i64 = 120_000;

/// The figures of one camera in one telemetry record; `None`: not reported.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CameraSample {
    pub frame_age_s: Option<f64>,
    pub frame_hash: Option<f64>,
    pub luma: Option<f64>,
    pub fps: Option<f64>,
    pub confidence: Option<f64>,
}

/// The camera figures among a record's application metrics, by camera name.
pub fn samples_from(app: &[Reading]) -> BTreeMap<String, CameraSample> {
    let mut out: BTreeMap<String, CameraSample> = BTreeMap::new();
    for r in app {
        let Some((gauge, camera)) = r.name.split_once('.') else {
            continue;
        };
        if !GAUGES.contains(&gauge) || valid_camera_name(camera).is_err() || !r.value.is_finite() {
            continue;
        }
        if !out.contains_key(camera) && out.len() >= MAX_CAMERAS {
            continue;
        }
        let s = out.entry(camera.to_string()).or_default();
        let slot = match gauge {
            FRAME_AGE => &mut s.frame_age_s,
            FRAME_HASH => &mut s.frame_hash,
            LUMA => &mut s.luma,
            INFERENCE_FPS => &mut s.fps,
            _ => &mut s.confidence,
        };
        slot.get_or_insert(r.value);
    }
    out
}

/// What a camera check looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Aspect {
    Frames,
    Frozen,
    Covered,
    Fps,
    Confidence,
}

impl Aspect {
    pub fn as_str(self) -> &'static str {
        match self {
            Aspect::Frames => "frames",
            Aspect::Frozen => "frozen",
            Aspect::Covered => "covered",
            Aspect::Fps => "fps",
            Aspect::Confidence => "confidence",
        }
    }

    /// `frozen` -> `Aspect::Frozen`.
    pub fn parse(s: &str) -> Option<Aspect> {
        [
            Aspect::Frames,
            Aspect::Frozen,
            Aspect::Covered,
            Aspect::Fps,
            Aspect::Confidence,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
    }
}

/// The check name of a camera decision: `camera:front:frozen`.
pub fn check_name(camera: &str, aspect: Aspect) -> String {
    format!("camera:{camera}:{}", aspect.as_str())
}

/// The camera and aspect of a camera check name (`camera:front:frozen`), if it is one.
pub fn parse_check_name(name: &str) -> Option<(&str, Aspect)> {
    let rest = name.strip_prefix("camera:")?;
    let (camera, aspect) = rest.split_once(':')?;
    valid_camera_name(camera).ok()?;
    Some((camera, Aspect::parse(aspect)?))
}

/// One decision about one camera.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraCheck {
    pub camera: String,
    pub aspect: Aspect,
    pub status: HealthStatus,
    pub message: String,
}

impl CameraCheck {
    pub fn name(&self) -> String {
        check_name(&self.camera, self.aspect)
    }

    pub fn to_check(&self) -> CheckResult {
        CheckResult {
            name: self.name(),
            status: self.status,
            message: self.message.clone(),
        }
    }
}

/// What one look at the cameras decided.
#[derive(Debug, Clone, PartialEq)]
pub enum CameraOutcome {
    /// No camera figures since start: camera health is not supported here (not healthy, not
    /// failing; no checks).
    Unsupported,
    /// `[health.vision] enabled = false`.
    Disabled,
    /// One decision per camera and reported figure, by camera then aspect.
    Checked(Vec<CameraCheck>),
}

impl CameraOutcome {
    /// The decisions as health checks (none when unsupported or disabled).
    pub fn checks(&self) -> Vec<CheckResult> {
        match self {
            CameraOutcome::Checked(c) => c.iter().map(CameraCheck::to_check).collect(),
            _ => Vec::new(),
        }
    }
}

/// A learned normal value: a cumulative mean at first, then a moving average.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub mean: f64,
    /// Healthy seconds learned so far.
    pub learned_s: f64,
}

impl Baseline {
    fn learn(&mut self, value: f64, dt_s: f64, tau_s: f64) {
        if self.learned_s <= 0.0 {
            self.mean = value;
            self.learned_s = dt_s.max(f64::MIN_POSITIVE);
            return;
        }
        // a cumulative mean until tau has been learned, then an EWMA with time constant tau
        let horizon = (self.learned_s + dt_s).min(tau_s);
        let alpha = if horizon <= 0.0 {
            1.0
        } else {
            (dt_s / horizon).min(1.0)
        };
        self.mean += alpha * (value - self.mean);
        self.learned_s += dt_s;
    }

    fn ready(&self, warmup_s: f64) -> bool {
        self.learned_s >= warmup_s
    }
}

/// The baselines of one camera, as persisted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CameraBaselines {
    pub fps: Baseline,
    pub confidence: Baseline,
}

#[derive(Debug, Clone, Copy)]
struct HashRun {
    bits: u64,
    since_ms: i64,
    first_age: Option<u64>,
    new_figures: bool,
}

#[derive(Debug, Clone, Default)]
struct CameraState {
    /// Last time any figure of this camera was seen (or when it was restored).
    last_seen_ms: i64,
    /// Restored and not seen since: not silent before this.
    grace_until_ms: Option<i64>,
    /// The last evaluation that taught the baselines.
    last_learn_ms: Option<i64>,
    /// The current frame hash (its bits), since when it has not changed, the frame age (its
    /// bits) seen with it first, and whether a different frame age came since.
    hash: Option<HashRun>,
    dark_since_ms: Option<i64>,
    fps_low_since_ms: Option<i64>,
    confidence_off_since_ms: Option<i64>,
    base: CameraBaselines,
}

/// One camera as `/api/v1/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CameraSnapshot {
    pub camera: String,
    /// When its figures were last seen (or when its baselines were restored).
    pub last_seen_ms: i64,
    pub baselines: CameraBaselines,
}

/// The per-camera state behind the decisions. Call [`CameraHealth::evaluate`] with every new
/// telemetry record (or on every health tick with the latest one).
#[derive(Debug, Clone)]
pub struct CameraHealth {
    cfg: VisionHealthConfig,
    cameras: BTreeMap<String, CameraState>,
}

fn ms(s: u64) -> i64 {
    i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)
}

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

impl CameraHealth {
    pub fn new(cfg: &VisionHealthConfig) -> Self {
        Self {
            cfg: cfg.clone(),
            cameras: BTreeMap::new(),
        }
    }

    /// Every tracked camera: when it was last seen and its baselines.
    pub fn snapshot(&self) -> Vec<CameraSnapshot> {
        self.cameras
            .iter()
            .map(|(camera, st)| CameraSnapshot {
                camera: camera.clone(),
                last_seen_ms: st.last_seen_ms,
                baselines: st.base,
            })
            .collect()
    }

    /// The learned baselines, to persist.
    pub fn baselines(&self) -> BTreeMap<String, CameraBaselines> {
        self.cameras.iter().map(|(k, s)| (k.clone(), s.base)).collect()
    }

    /// Puts persisted baselines back; their cameras count as seen at `now_ms`, so one that
    /// reports nothing after a restart turns stale (after [`RESTORED_GRACE_MS`]) instead of
    /// unsupported.
    pub fn restore(&mut self, baselines: BTreeMap<String, CameraBaselines>, now_ms: i64) {
        for (camera, base) in baselines {
            if valid_camera_name(&camera).is_err()
                || (!self.cameras.contains_key(&camera) && self.cameras.len() >= MAX_CAMERAS)
            {
                continue;
            }
            let st = self.cameras.entry(camera).or_default();
            st.base = base;
            st.last_seen_ms = st.last_seen_ms.max(now_ms);
            st.grace_until_ms = Some(now_ms.saturating_add(RESTORED_GRACE_MS));
        }
    }

    /// Decides on every camera from the latest application metrics (`app` of the latest
    /// telemetry; `None` before the first collection), and learns.
    pub fn evaluate(&mut self, app: Option<&[Reading]>, now_ms: i64) -> CameraOutcome {
        if !self.cfg.enabled {
            return CameraOutcome::Disabled;
        }
        let samples = samples_from(app.unwrap_or_default());
        for camera in samples.keys() {
            if !self.cameras.contains_key(camera) && self.cameras.len() < MAX_CAMERAS {
                self.cameras.insert(camera.clone(), CameraState::default());
            }
        }
        let forget = ms(self.cfg.forget_after_s);
        self.cameras.retain(|camera, st| {
            samples.contains_key(camera) || now_ms.saturating_sub(st.last_seen_ms) < forget
        });
        if self.cameras.is_empty() {
            return CameraOutcome::Unsupported;
        }
        let cfg = self.cfg.clone();
        let mut checks = Vec::new();
        for (camera, st) in &mut self.cameras {
            match samples.get(camera) {
                Some(sample) => judge(&cfg, camera, st, sample, now_ms, &mut checks),
                None => missing(&cfg, camera, st, now_ms, &mut checks),
            }
        }
        CameraOutcome::Checked(checks)
    }
}

/// A known camera without figures in this record.
fn missing(
    cfg: &VisionHealthConfig,
    camera: &str,
    st: &mut CameraState,
    now_ms: i64,
    out: &mut Vec<CameraCheck>,
) {
    // the picture's timers restart when figures come back
    st.hash = None;
    st.dark_since_ms = None;
    st.fps_low_since_ms = None;
    st.confidence_off_since_ms = None;
    st.last_learn_ms = None;
    let silent_ms = now_ms.saturating_sub(st.last_seen_ms).max(0);
    let (status, message) = match st.grace_until_ms {
        Some(until) if now_ms < until => (
            HealthStatus::Ok,
            format!(
                "camera {camera}: waiting {:.0} s more for the vision service's first figures",
                secs(until - now_ms)
            ),
        ),
        _ if silent_ms > ms(cfg.stale_after_s) => (
            HealthStatus::Critical,
            format!(
                "camera {camera}: no figures from the vision service for {:.0} s (stale after {} s)",
                secs(silent_ms),
                cfg.stale_after_s
            ),
        ),
        _ => (
            HealthStatus::Ok,
            format!(
                "camera {camera}: no figures from the vision service for {:.0} s (stale after {} s)",
                secs(silent_ms),
                cfg.stale_after_s
            ),
        ),
    };
    out.push(CameraCheck {
        camera: camera.into(),
        aspect: Aspect::Frames,
        status,
        message,
    });
}

/// Since when `cond` holds, kept in `since`.
/// How a figure judged against its own learned baseline (fps, confidence) learns and is
/// worded, for one camera at one instant.
struct Learning<'a> {
    camera: &'a str,
    /// Frames arrive: without them nothing is judged.
    fresh: bool,
    /// The picture is fresh, moving and lit: only then is a figure worth learning.
    healthy_picture: bool,
    dt_s: f64,
    tau_s: f64,
    warmup_s: f64,
    /// `warmup_s` as configured, for messages.
    warmup_cfg_s: u64,
    /// A figure off its baseline this long is the machine's new normal: learn it afresh.
    relearn_after_ms: i64,
    now_ms: i64,
}

impl Learning<'_> {
    /// Judges `value` against `base`: how long it has been off (`off` says what off is, given
    /// the baseline; never before the warm-up), relearning a baseline that has been off for
    /// `relearn_after_ms`, and learning from `value` while the picture is healthy and it is
    /// not off. Returns the baseline `value` was judged against and how long it has been off.
    fn judge(
        &self,
        base: &mut Baseline,
        off_since: &mut Option<i64>,
        value: f64,
        off: impl Fn(&Baseline) -> bool,
    ) -> (Baseline, Option<i64>) {
        let is_off = base.ready(self.warmup_s) && off(base);
        let mut off_for = holding(off_since, is_off, self.now_ms);
        if off_for.is_some_and(|d| d >= self.relearn_after_ms) {
            *base = Baseline::default();
            *off_since = None;
            off_for = None;
        }
        let judged = *base;
        if self.healthy_picture && off_for.is_none() {
            base.learn(value, self.dt_s, self.tau_s);
        }
        (judged, off_for)
    }

    /// The status and message of a figure judged against its baseline: not judged without
    /// fresh frames, Ok while learning, Warn once it has been off long enough (`off_for`),
    /// else Ok.
    fn verdict(
        &self,
        base: &Baseline,
        figure: &str,
        off_for: Option<i64>,
        warn: impl FnOnce(&Baseline, i64) -> String,
        ok: impl FnOnce(&Baseline) -> String,
    ) -> (HealthStatus, String) {
        let camera = self.camera;
        if !self.fresh {
            (
                HealthStatus::Ok,
                format!("camera {camera}: not judged, no fresh frames"),
            )
        } else if !base.ready(self.warmup_s) {
            (
                HealthStatus::Ok,
                format!(
                    "camera {camera}: {figure}; learning its baseline ({:.0} of {} s)",
                    base.learned_s, self.warmup_cfg_s
                ),
            )
        } else if let Some(d) = off_for {
            (HealthStatus::Warn, format!("camera {camera}: {}", warn(base, d)))
        } else {
            (HealthStatus::Ok, format!("camera {camera}: {}", ok(base)))
        }
    }
}

fn holding(since: &mut Option<i64>, cond: bool, now_ms: i64) -> Option<i64> {
    if cond {
        Some(now_ms.saturating_sub(*since.get_or_insert(now_ms)).max(0))
    } else {
        *since = None;
        None
    }
}

fn judge(
    cfg: &VisionHealthConfig,
    camera: &str,
    st: &mut CameraState,
    s: &CameraSample,
    now_ms: i64,
    out: &mut Vec<CameraCheck>,
) {
    st.last_seen_ms = now_ms;
    st.grace_until_ms = None;
    let mut push = |aspect: Aspect, status: HealthStatus, message: String| {
        out.push(CameraCheck {
            camera: camera.into(),
            aspect,
            status,
            message,
        })
    };

    let fresh = s.frame_age_s.is_none_or(|a| a <= cfg.stale_after_s as f64);
    if let Some(age) = s.frame_age_s {
        if fresh {
            push(
                Aspect::Frames,
                HealthStatus::Ok,
                format!("camera {camera}: last frame {age:.1} s ago"),
            );
        } else {
            push(
                Aspect::Frames,
                HealthStatus::Critical,
                format!(
                    "camera {camera}: last frame {age:.0} s ago (stale after {} s)",
                    cfg.stale_after_s
                ),
            );
        }
    }

    let mut frozen = false;
    if let Some(hash) = s.frame_hash {
        let bits = hash.to_bits();
        let age = s.frame_age_s.map(f64::to_bits);
        let run = match st.hash {
            Some(mut run) if run.bits == bits => {
                run.new_figures |= age != run.first_age;
                run
            }
            _ => HashRun {
                bits,
                since_ms: now_ms,
                first_age: age,
                new_figures: false,
            },
        };
        st.hash = Some(run);
        let same_ms = now_ms.saturating_sub(run.since_ms).max(0);
        let proven = run.new_figures || age.is_none();
        if !fresh {
            push(
                Aspect::Frozen,
                HealthStatus::Ok,
                format!("camera {camera}: not judged, no fresh frames"),
            );
        } else if same_ms >= ms(cfg.frozen_after_s) && proven {
            frozen = true;
            push(
                Aspect::Frozen,
                HealthStatus::Critical,
                format!(
                    "camera {camera}: the same picture for {:.0} s (frozen after {} s)",
                    secs(same_ms),
                    cfg.frozen_after_s
                ),
            );
        } else {
            push(
                Aspect::Frozen,
                HealthStatus::Ok,
                format!("camera {camera}: the picture changes"),
            );
        }
    }

    let mut dark = false;
    if let Some(luma) = s.luma {
        let dark_for = holding(&mut st.dark_since_ms, luma < cfg.dark_luma, now_ms);
        dark = dark_for.is_some();
        match dark_for {
            _ if !fresh => push(
                Aspect::Covered,
                HealthStatus::Ok,
                format!("camera {camera}: not judged, no fresh frames"),
            ),
            Some(d) if d >= ms(cfg.dark_after_s) => push(
                Aspect::Covered,
                HealthStatus::Critical,
                format!(
                    "camera {camera}: picture dark (mean luminance {luma:.1}, floor {}) for {:.0} s: lens covered or sensor dead",
                    cfg.dark_luma,
                    secs(d)
                ),
            ),
            _ => push(
                Aspect::Covered,
                HealthStatus::Ok,
                format!("camera {camera}: mean luminance {luma:.1}"),
            ),
        }
    }

    let healthy_picture = fresh && !frozen && !dark;
    let dt_s = st.last_learn_ms.map_or(0.0, |at| {
        secs(now_ms.saturating_sub(at).max(0)).min(MAX_LEARN_STEP_S)
    });
    let tau_s = cfg.baseline_tau_s as f64;
    let warmup_s = cfg.warmup_s as f64;

    let learning = Learning {
        camera,
        fresh,
        healthy_picture,
        dt_s,
        tau_s,
        warmup_s,
        warmup_cfg_s: cfg.warmup_s,
        relearn_after_ms: ms(cfg.relearn_after_s),
        now_ms,
    };

    if let Some(fps) = s.fps {
        let floor = cfg.fps_min_ratio;
        let (base, low_for) = learning.judge(&mut st.base.fps, &mut st.fps_low_since_ms, fps, |b| {
            fps < floor * b.mean
        });
        let (status, message) = learning.verdict(
            &base,
            &format!("inference {fps:.1} fps"),
            low_for.filter(|d| *d >= ms(cfg.fps_low_after_s)),
            |b, d| {
                format!(
                    "inference {fps:.1} fps, below {:.0} % of its baseline {:.1} fps for {:.0} s",
                    floor * 100.0,
                    b.mean,
                    secs(d)
                )
            },
            |b| format!("inference {fps:.1} fps (baseline {:.1})", b.mean),
        );
        push(Aspect::Fps, status, message);
    }

    if let Some(conf) = s.confidence {
        let max_drift = cfg.confidence_max_drift;
        let (base, off_for) = learning.judge(
            &mut st.base.confidence,
            &mut st.confidence_off_since_ms,
            conf,
            |b| (conf - b.mean).abs() > max_drift,
        );
        let (status, message) = learning.verdict(
            &base,
            &format!("detection confidence {conf:.2}"),
            off_for.filter(|d| *d >= ms(cfg.confidence_after_s)),
            |b, d| {
                format!(
                    "detection confidence {conf:.2}, {:.2} from its baseline {:.2} (max {max_drift}) for {:.0} s",
                    (conf - b.mean).abs(),
                    b.mean,
                    secs(d)
                )
            },
            |b| format!("detection confidence {conf:.2} (baseline {:.2})", b.mean),
        );
        push(Aspect::Confidence, status, message);
    }
    st.last_learn_ms = Some(now_ms);
}
#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;

    fn build_cfg() -> VisionHealthConfig {
        VisionHealthConfig {
            stale_after_s: 10,
            frozen_after_s: 30,
            dark_luma: 12.0,
            dark_after_s: 20,
            fps_min_ratio: 0.5,
            fps_low_after_s: 30,
            confidence_max_drift: 0.15,
            confidence_after_s: 60,
            warmup_s: 100,
            baseline_tau_s: 1000,
            forget_after_s: 600,
            relearn_after_s: 3600,
            ..Default::default()
        }
    }

    /// The five figures of one camera as the agent's app readings carry them.
    fn build_app(camera: &str, age: f64, hash: f64, luma: f64, fps: f64, conf: f64) -> Vec<Reading> {
        [
            (FRAME_AGE, age),
            (FRAME_HASH, hash),
            (LUMA, luma),
            (INFERENCE_FPS, fps),
            (CONFIDENCE, conf),
        ]
        .into_iter()
        .map(|(g, v)| Reading::new(format!("{g}.{camera}"), v))
        .collect()
    }

    /// A healthy camera: fresh frames, a new hash every look, a lit picture, 30 fps, 0.9.
    fn healthy(camera: &str, t: i64) -> Vec<Reading> {
        build_app(camera, 0.05, t as f64, 110.0, 30.0, 0.9)
    }

    fn checks(o: &CameraOutcome) -> &[CameraCheck] {
        match o {
            CameraOutcome::Checked(c) => c,
            other => panic!("no checks: {other:?}"),
        }
    }

    fn get<'o>(o: &'o CameraOutcome, camera: &str, aspect: Aspect) -> &'o CameraCheck {
        checks(o)
            .iter()
            .find(|c| c.camera == camera && c.aspect == aspect)
            .unwrap_or_else(|| panic!("no {camera}/{aspect:?} in {o:?}"))
    }

    /// Feeds `app(t)` every 5 s from `from` to `to` (inclusive); the last outcome.
    fn run(h: &mut CameraHealth, from: i64, to: i64, app: impl Fn(i64) -> Vec<Reading>) -> CameraOutcome {
        let mut last = None;
        let mut t = from;
        while t <= to {
            last = Some(h.evaluate(Some(&app(t)), t * S));
            t += 5;
        }
        last.expect("at least one look")
    }

    /// A camera whose baselines are learned (30 fps, confidence 0.9).
    fn build_warm(camera: &str) -> CameraHealth {
        let mut h = CameraHealth::new(&build_cfg());
        run(&mut h, 0, 200, |t| healthy(camera, t));
        h
    }

    #[test]
    fn no_camera_figures_at_all_is_unsupported_not_healthy_and_not_failing() {
        let mut h = CameraHealth::new(&build_cfg());
        assert_eq!(h.evaluate(None, 0), CameraOutcome::Unsupported);
        let other = vec![
            Reading::new("camera_fps", 30.0),
            Reading::new("rvm_camera_frame_age_seconds", 0.1),
            Reading::new("unknown_gauge.front", 1.0),
        ];
        let o = h.evaluate(Some(&other), 5 * S);
        assert_eq!(o, CameraOutcome::Unsupported);
        assert!(o.checks().is_empty(), "no check: neither ok nor failing");
    }

    #[test]
    fn a_disabled_section_decides_nothing() {
        let mut h = CameraHealth::new(&VisionHealthConfig {
            enabled: false,
            ..build_cfg()
        });
        assert_eq!(h.evaluate(Some(&healthy("front", 0)), 0), CameraOutcome::Disabled);
    }

    #[test]
    fn a_healthy_camera_passes_every_check_it_has_figures_for() {
        let mut h = CameraHealth::new(&build_cfg());
        let o = h.evaluate(Some(&healthy("front", 0)), 0);
        let names: Vec<String> = o.checks().into_iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "camera:front:frames",
                "camera:front:frozen",
                "camera:front:covered",
                "camera:front:fps",
                "camera:front:confidence"
            ]
        );
        assert!(checks(&o).iter().all(|c| c.status == HealthStatus::Ok), "{o:?}");
        assert_eq!(
            get(&o, "front", Aspect::Frames).message,
            "camera front: last frame 0.1 s ago"
        );
        // a camera that reports only its frame age gets only that check
        let o = h.evaluate(Some(&[Reading::new(format!("{FRAME_AGE}.side"), 0.2)]), 5 * S);
        assert!(
            checks(&o).iter().filter(|c| c.camera == "side").count() == 1,
            "{o:?}"
        );
    }

    #[test]
    fn an_old_last_frame_is_stale_and_critical() {
        let mut h = CameraHealth::new(&build_cfg());
        let o = h.evaluate(Some(&build_app("front", 10.0, 1.0, 100.0, 30.0, 0.9)), 0);
        assert_eq!(
            get(&o, "front", Aspect::Frames).status,
            HealthStatus::Ok,
            "at the limit"
        );
        let o = h.evaluate(Some(&build_app("front", 42.0, 2.0, 100.0, 30.0, 0.9)), 5 * S);
        let c = get(&o, "front", Aspect::Frames);
        assert_eq!(c.status, HealthStatus::Critical);
        assert_eq!(c.message, "camera front: last frame 42 s ago (stale after 10 s)");
        // the picture and the model are not judged on stale frames
        assert_eq!(get(&o, "front", Aspect::Frozen).status, HealthStatus::Ok);
        for a in [Aspect::Covered, Aspect::Fps, Aspect::Confidence] {
            assert!(get(&o, "front", a).message.contains("not judged"), "{a:?}");
        }
        let mut warm = build_warm("front");
        let o = run(&mut warm, 205, 300, |t| {
            build_app("front", 30.0, t as f64, 110.0, 0.0, 0.1)
        });
        assert_eq!(get(&o, "front", Aspect::Frames).status, HealthStatus::Critical);
        assert_eq!(
            get(&o, "front", Aspect::Fps).status,
            HealthStatus::Ok,
            "no second alert"
        );
    }

    #[test]
    fn a_known_camera_that_stops_reporting_turns_stale_and_is_forgotten_much_later() {
        let mut h = CameraHealth::new(&build_cfg());
        h.evaluate(Some(&healthy("front", 0)), 0);
        let o = h.evaluate(Some(&[]), 10 * S);
        assert_eq!(get(&o, "front", Aspect::Frames).status, HealthStatus::Ok);
        assert_eq!(checks(&o).len(), 1, "only the frames check while silent: {o:?}");
        let o = h.evaluate(None, 11 * S);
        let c = get(&o, "front", Aspect::Frames);
        assert_eq!(c.status, HealthStatus::Critical);
        assert_eq!(
            c.message,
            "camera front: no figures from the vision service for 11 s (stale after 10 s)"
        );
        assert_eq!(h.evaluate(None, 600 * S), CameraOutcome::Unsupported, "forgotten");
    }

    #[test]
    fn the_same_frame_hash_for_the_threshold_is_a_frozen_picture() {
        let mut h = CameraHealth::new(&build_cfg());
        // frames keep coming (their age varies), the picture does not change
        let frozen = |t: i64| build_app("front", 0.01 * (t % 7) as f64, 1234.0, 110.0, 30.0, 0.9);
        let o = run(&mut h, 0, 25, frozen);
        assert_eq!(get(&o, "front", Aspect::Frozen).status, HealthStatus::Ok);
        let o = run(&mut h, 30, 30, frozen);
        let c = get(&o, "front", Aspect::Frozen);
        assert_eq!(c.status, HealthStatus::Critical);
        assert_eq!(
            c.message,
            "camera front: the same picture for 30 s (frozen after 30 s)"
        );
        // a new picture clears it at once
        let o = h.evaluate(Some(&healthy("front", 35)), 35 * S);
        assert_eq!(get(&o, "front", Aspect::Frozen).status, HealthStatus::Ok);
    }

    #[test]
    fn one_scrape_kept_while_the_service_hangs_is_not_a_frozen_picture() {
        let mut h = CameraHealth::new(&build_cfg());
        // every figure identical look after look: the same sample, not a frozen camera
        let kept = |_t: i64| build_app("front", 0.05, 1234.0, 110.0, 30.0, 0.9);
        let o = run(&mut h, 0, 60, kept);
        assert_eq!(get(&o, "front", Aspect::Frozen).status, HealthStatus::Ok);
        // a service without a frame age is judged on the hash alone
        let mut h = CameraHealth::new(&build_cfg());
        let no_age = |_t: i64| vec![Reading::new(format!("{FRAME_HASH}.front"), 1234.0)];
        let o = run(&mut h, 0, 30, no_age);
        assert_eq!(get(&o, "front", Aspect::Frozen).status, HealthStatus::Critical);
    }

    #[test]
    fn a_dark_picture_for_the_threshold_is_a_covered_lens_and_a_brief_shadow_is_not() {
        let mut h = CameraHealth::new(&build_cfg());
        let dark = |t: i64| build_app("front", 0.05, t as f64, 3.0, 30.0, 0.9);
        let o = run(&mut h, 0, 15, dark);
        assert_eq!(
            get(&o, "front", Aspect::Covered).status,
            HealthStatus::Ok,
            "a shadow"
        );
        let o = run(&mut h, 20, 20, dark);
        let c = get(&o, "front", Aspect::Covered);
        assert_eq!(c.status, HealthStatus::Critical);
        assert_eq!(
            c.message,
            "camera front: picture dark (mean luminance 3.0, floor 12) for 20 s: lens covered or sensor dead"
        );
        let o = h.evaluate(Some(&healthy("front", 25)), 25 * S);
        assert_eq!(get(&o, "front", Aspect::Covered).status, HealthStatus::Ok);
        // dark again: the timer starts over
        let o = run(&mut h, 30, 45, dark);
        assert_eq!(get(&o, "front", Aspect::Covered).status, HealthStatus::Ok);
    }

    #[test]
    fn fps_and_confidence_are_not_judged_while_their_baseline_learns() {
        let mut h = CameraHealth::new(&build_cfg());
        let o = run(&mut h, 0, 50, |t| {
            build_app("front", 0.05, t as f64, 110.0, 2.0, 0.1)
        });
        let c = get(&o, "front", Aspect::Fps);
        assert_eq!(c.status, HealthStatus::Ok);
        assert!(
            c.message.contains("learning its baseline (45 of 100 s)"),
            "{}",
            c.message
        );
        assert!(get(&o, "front", Aspect::Confidence).message.contains("learning"));
    }

    #[test]
    fn inference_fps_below_half_its_own_baseline_for_the_threshold_warns() {
        let mut h = build_warm("front");
        let slow = |t: i64| build_app("front", 0.05, t as f64, 110.0, 12.0, 0.9);
        let o = run(&mut h, 205, 230, slow);
        let c = get(&o, "front", Aspect::Fps);
        assert_eq!(c.status, HealthStatus::Ok, "not yet: {}", c.message);
        assert_eq!(c.message, "camera front: inference 12.0 fps (baseline 30.0)");
        let o = run(&mut h, 235, 235, slow);
        let c = get(&o, "front", Aspect::Fps);
        assert_eq!(c.status, HealthStatus::Warn);
        assert_eq!(
            c.message,
            "camera front: inference 12.0 fps, below 50 % of its baseline 30.0 fps for 30 s"
        );
        // the fault was not learned: the baseline is still 30
        assert!((h.baselines()["front"].fps.mean - 30.0).abs() < 1e-9);
        // 16 fps is above half of 30: fine
        let o = h.evaluate(Some(&build_app("front", 0.05, 1.0, 110.0, 16.0, 0.9)), 240 * S);
        assert_eq!(get(&o, "front", Aspect::Fps).status, HealthStatus::Ok);
    }

    #[test]
    fn the_baseline_is_the_machines_own_so_a_slower_board_is_not_a_fault() {
        let mut h = CameraHealth::new(&build_cfg());
        let o = run(&mut h, 0, 300, |t| {
            build_app("front", 0.05, t as f64, 110.0, 8.0, 0.9)
        });
        let c = get(&o, "front", Aspect::Fps);
        assert_eq!(c.status, HealthStatus::Ok);
        assert_eq!(c.message, "camera front: inference 8.0 fps (baseline 8.0)");
    }

    #[test]
    fn a_figure_off_its_baseline_for_the_relearn_time_becomes_the_new_normal() {
        let mut h = build_warm("front");
        let slow = |t: i64| build_app("front", 0.05, t as f64, 110.0, 12.0, 0.9);
        let o = run(&mut h, 205, 205 + 3595, slow);
        assert_eq!(get(&o, "front", Aspect::Fps).status, HealthStatus::Warn);
        let o = run(&mut h, 3805, 3805, slow);
        let c = get(&o, "front", Aspect::Fps);
        assert_eq!(c.status, HealthStatus::Ok, "{}", c.message);
        assert!(c.message.contains("learning its baseline"), "{}", c.message);
        let o = run(&mut h, 3810, 3950, slow);
        assert_eq!(
            get(&o, "front", Aspect::Fps).message,
            "camera front: inference 12.0 fps (baseline 12.0)"
        );
        // confidence was on its baseline all along: untouched
        assert!((h.baselines()["front"].confidence.mean - 0.9).abs() < 1e-9);
    }

    #[test]
    fn mean_confidence_drifting_from_its_baseline_either_way_warns_after_the_threshold() {
        let mut h = build_warm("front");
        let low = |t: i64| build_app("front", 0.05, t as f64, 110.0, 30.0, 0.6);
        let o = run(&mut h, 205, 260, low);
        assert_eq!(get(&o, "front", Aspect::Confidence).status, HealthStatus::Ok);
        let o = run(&mut h, 265, 265, low);
        let c = get(&o, "front", Aspect::Confidence);
        assert_eq!(c.status, HealthStatus::Warn);
        assert_eq!(
            c.message,
            "camera front: detection confidence 0.60, 0.30 from its baseline 0.90 (max 0.15) for 60 s"
        );
        let mut h = build_warm("front");
        let o = run(&mut h, 205, 265, |t| {
            build_app("front", 0.05, t as f64, 110.0, 30.0, 0.99)
        });
        assert_eq!(
            get(&o, "front", Aspect::Confidence).status,
            HealthStatus::Ok,
            "0.09 is within"
        );
    }

    #[test]
    fn a_faulty_picture_teaches_the_baselines_nothing() {
        let mut h = CameraHealth::new(&build_cfg());
        run(&mut h, 0, 50, |t| healthy("front", t));
        let learned = h.baselines()["front"];
        // covered: dark frames at 5 fps
        run(&mut h, 55, 200, |t| {
            build_app("front", 0.05, t as f64, 2.0, 5.0, 0.2)
        });
        assert_eq!(h.baselines()["front"].fps.mean, learned.fps.mean);
        assert!(h.baselines()["front"].fps.learned_s < 100.0, "still warming up");
    }

    #[test]
    fn restored_baselines_judge_at_once_and_a_silent_restored_camera_turns_stale() {
        let warm = build_warm("front");
        let saved = warm.baselines();
        let snap = warm.snapshot();
        assert_eq!(
            (snap.len(), snap[0].camera.as_str(), snap[0].last_seen_ms),
            (1, "front", 200 * S)
        );
        assert_eq!(snap[0].baselines, saved["front"]);
        let mut h = CameraHealth::new(&build_cfg());
        h.restore(saved.clone(), 1_000 * S);
        let o = run(&mut h, 1_000, 1_030, |t| {
            build_app("front", 0.05, t as f64, 110.0, 10.0, 0.9)
        });
        assert_eq!(get(&o, "front", Aspect::Fps).status, HealthStatus::Warn);
        let mut h = CameraHealth::new(&build_cfg());
        h.restore(saved, 1_000 * S);
        // the vision service starts after the agent: a grace first
        let o = h.evaluate(None, 1_011 * S);
        let c = get(&o, "front", Aspect::Frames);
        assert_eq!(c.status, HealthStatus::Ok);
        assert_eq!(
            c.message,
            "camera front: waiting 109 s more for the vision service's first figures"
        );
        let o = h.evaluate(None, 1_000 * S + RESTORED_GRACE_MS);
        let c = get(&o, "front", Aspect::Frames);
        assert_eq!(c.status, HealthStatus::Critical);
        assert_eq!(
            c.message,
            "camera front: no figures from the vision service for 120 s (stale after 10 s)"
        );
    }

    #[test]
    fn each_camera_is_judged_on_its_own_figures() {
        let mut h = build_warm("front");
        let o = run(&mut h, 205, 240, |t| {
            let mut app = healthy("front", t);
            app.extend(build_app("side", 0.01 * (t % 7) as f64, 7.0, 110.0, 30.0, 0.9));
            app
        });
        assert_eq!(get(&o, "front", Aspect::Frozen).status, HealthStatus::Ok);
        assert_eq!(get(&o, "side", Aspect::Frozen).status, HealthStatus::Critical);
    }

    #[test]
    fn bad_camera_names_and_non_finite_values_are_ignored() {
        let app = vec![
            Reading::new(format!("{FRAME_AGE}.a_b-1"), 0.1),
            Reading::new(format!("{FRAME_AGE}.-x"), 0.1),
            Reading::new(format!("{FRAME_AGE}.a.b"), 0.1),
            Reading::new(format!("{LUMA}.a_b-1"), f64::NAN),
        ];
        let s = samples_from(&app);
        assert_eq!(s.keys().collect::<Vec<_>>(), ["a_b-1"]);
        assert_eq!(s["a_b-1"].luma, None);
        let many: Vec<Reading> = (0..MAX_CAMERAS + 5)
            .map(|i| Reading::new(format!("{FRAME_AGE}.c{i}"), 0.1))
            .collect();
        assert_eq!(samples_from(&many).len(), MAX_CAMERAS);
    }

    #[test]
    fn camera_check_names_round_trip() {
        assert_eq!(check_name("front", Aspect::Frozen), "camera:front:frozen");
        assert_eq!(
            parse_check_name("camera:front:frozen"),
            Some(("front", Aspect::Frozen))
        );
        assert_eq!(parse_check_name("camera"), None);
        assert_eq!(parse_check_name("camera:front:melted"), None);
        assert_eq!(parse_check_name("unit:front:frozen"), None);
    }
}
