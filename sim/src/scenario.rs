//! Scenario files: a story of faults on a schedule, replayed by `rvm-sim simulate --scenario FILE`
//! and `rvm-sim demo --scenario FILE`, so the demo, the tests and the benchmarks
//! tell the same story (`scenarios/` holds the shipped ones).
//!
//! ```toml
//! name = "demo"
//! repeat_s = 900            # replay every 15 minutes (0 or absent: once)
//! items_per_s = 4.0         # items people bring each machine a second (absent: about 0.1)
//!
//! [[model]]                 # machines 1 to 5 run another vision model version
//! machines = "1-5"
//! version = "v3.3"
//!
//! [[event]]
//! name = "the v3.3 build regresses"
//! at_s = 60                 # seconds after the simulator started (in each replay)
//! for_s = 180               # absent: until the end (every event needs it when repeat_s is set)
//! fault = "inference_degraded"
//! model_version = "v3.3"    # the target: exactly one of machines, site, model_version
//! ```
//!
//! Faults: `overheating` (GPU at about 88 C, clock throttled, camera fps down),
//! `vision_crash` (the watched vision process is down, its application metrics absent),
//! `inference_degraded`, `camera_stalled`, `camera_missing` (the camera device gone: fps 0
//! and a failing `camera` health check), the camera faults the agent's camera health judges
//! (docs/camera-health.md): `camera_frozen` (the same frame hash), `camera_covered` (a dark
//! picture), `camera_stale` (no new frames) and `fps_drop` (inference at a third of its
//! rate), the machine's own faults (docs/kpis.md): `bin_full` (the bin at 95 %), `jam` (one
//! jam, nothing accepted while it lasts), `printer_out`, `scanner_fault` (everything
//! rejected) and `reject_spike` (30 to 40 % rejected), the look inside (issue 24): `fd_leak` (the
//! vision service opens 7 descriptors a record and never closes them) and `zombie` (one
//! unreaped child), `offline` (network cut: the broker sees the machine
//! vanish, the machine keeps recording and drains its buffer when it comes back; on a `site`
//! it is a site outage), `commands_fail` (commands it accepts end `failed`), and `drift`
//! (`metric` moves by `per_min` every minute since the event began; metrics: see
//! [`DriftMetric::NAMES`]).
//!
//! Machines are selected by their global number (`--first` + index: `rvm0007` is 7), so
//! several simulator processes sharing a fleet apply one file, each to its own machines.
//! Overlapping events combine: a machine shows every fault of every event active on it.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Deserialize;

use crate::source::{Drift, DriftMetric, Fault, SimFault};

/// A scenario file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Replay the story every this many seconds (0: once).
    #[serde(default)]
    pub repeat_s: u64,
    /// Items people bring each machine a second, as a steady stream (absent: about 360 an
    /// hour, varying by half). A busy station, or a story of the machine's own figures told in
    /// seconds rather than hours.
    pub items_per_s: Option<f64>,
    #[serde(default)]
    pub model: Vec<ModelFile>,
    #[serde(default)]
    pub event: Vec<EventFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    pub machines: String,
    pub version: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    Overheating,
    VisionCrash,
    InferenceDegraded,
    CameraStalled,
    CameraMissing,
    CameraFrozen,
    CameraCovered,
    CameraStale,
    FpsDrop,
    BinFull,
    Jam,
    PrinterOut,
    ScannerFault,
    RejectSpike,
    FdLeak,
    Zombie,
    Offline,
    CommandsFail,
    Drift,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Overheating => "overheating",
            FaultKind::VisionCrash => "vision_crash",
            FaultKind::InferenceDegraded => "inference_degraded",
            FaultKind::CameraStalled => "camera_stalled",
            FaultKind::CameraMissing => "camera_missing",
            FaultKind::CameraFrozen => "camera_frozen",
            FaultKind::CameraCovered => "camera_covered",
            FaultKind::CameraStale => "camera_stale",
            FaultKind::FpsDrop => "fps_drop",
            FaultKind::BinFull => "bin_full",
            FaultKind::Jam => "jam",
            FaultKind::PrinterOut => "printer_out",
            FaultKind::ScannerFault => "scanner_fault",
            FaultKind::RejectSpike => "reject_spike",
            FaultKind::FdLeak => "fd_leak",
            FaultKind::Zombie => "zombie",
            FaultKind::Offline => "offline",
            FaultKind::CommandsFail => "commands_fail",
            FaultKind::Drift => "drift",
        }
    }

    /// The simulated source's fault, for the kinds that are one.
    fn sim_fault(self) -> Option<Fault> {
        match self {
            FaultKind::Overheating => Some(Fault::Overheating),
            FaultKind::VisionCrash => Some(Fault::VisionDown),
            FaultKind::InferenceDegraded => Some(Fault::InferenceDegraded),
            FaultKind::CameraStalled => Some(Fault::CameraStalled),
            FaultKind::CameraMissing => Some(Fault::CameraMissing),
            FaultKind::CameraFrozen => Some(Fault::CameraFrozen),
            FaultKind::CameraCovered => Some(Fault::CameraCovered),
            FaultKind::CameraStale => Some(Fault::CameraStale),
            FaultKind::FpsDrop => Some(Fault::FpsDrop),
            FaultKind::BinFull => Some(Fault::BinFull),
            FaultKind::Jam => Some(Fault::Jam),
            FaultKind::PrinterOut => Some(Fault::PrinterOut),
            FaultKind::ScannerFault => Some(Fault::ScannerFault),
            FaultKind::RejectSpike => Some(Fault::RejectSpike),
            FaultKind::FdLeak => Some(Fault::FdLeak),
            FaultKind::Zombie => Some(Fault::Zombie),
            FaultKind::Offline | FaultKind::CommandsFail | FaultKind::Drift => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventFile {
    #[serde(default)]
    pub name: String,
    pub at_s: u64,
    pub for_s: Option<u64>,
    pub fault: FaultKind,
    pub machines: Option<String>,
    pub site: Option<String>,
    pub model_version: Option<String>,
    pub metric: Option<String>,
    pub per_min: Option<f64>,
}

/// Machine numbers: `"7"`, `"1-5,9"`, or `"all"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machines(Vec<(usize, usize)>);

impl Machines {
    pub fn parse(s: &str) -> Result<Machines, String> {
        if s.trim() == "all" {
            return Ok(Machines(vec![(0, usize::MAX)]));
        }
        let mut ranges = Vec::new();
        for part in s.split(',').map(str::trim) {
            let num = |x: &str| {
                x.trim()
                    .parse::<usize>()
                    .map_err(|_| format!("{x:?} is not a machine number (\"7\", \"1-5,9\" or \"all\")"))
            };
            let r = match part.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => (num(part)?, num(part)?),
            };
            if r.0 > r.1 {
                return Err(format!("{part:?}: the range runs backwards"));
            }
            ranges.push(r);
        }
        Ok(Machines(ranges))
    }

    pub fn contains(&self, n: usize) -> bool {
        self.0.iter().any(|&(a, b)| (a..=b).contains(&n))
    }
}

/// Which machines an event applies to.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Machines(Machines),
    Site(String),
    ModelVersion(String),
}

impl Target {
    pub fn matches(&self, m: &Machine) -> bool {
        match self {
            Target::Machines(ms) => ms.contains(m.number),
            Target::Site(s) => m.site == *s,
            Target::ModelVersion(v) => m.model_version == *v,
        }
    }

    fn describe(&self) -> String {
        match self {
            Target::Machines(_) => "machines".into(),
            Target::Site(s) => format!("site {s}"),
            Target::ModelVersion(v) => format!("model {v}"),
        }
    }
}

/// A validated event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub name: String,
    pub start_ms: u64,
    /// None: to the end.
    pub end_ms: Option<u64>,
    pub fault: FaultKind,
    pub target: Target,
    /// For `drift`: the metric and its rate per minute.
    pub drift: Option<(DriftMetric, f64)>,
}

impl Event {
    fn active_at(&self, t_ms: u64) -> bool {
        self.start_ms <= t_ms && self.end_ms.is_none_or(|e| t_ms < e)
    }
}

/// More items a second than any machine takes (one every 10 ms).
const MAX_ITEMS_PER_S: f64 = 100.0;

/// A validated scenario: what [`run`] replays.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub repeat_ms: u64,
    /// `items_per_s` of the file.
    pub items_per_s: Option<f64>,
    /// Vision model versions by machine numbers (the first that contains a machine wins).
    pub models: Vec<(Machines, String)>,
    pub events: Vec<Event>,
}

impl Scenario {
    pub fn load(path: &Path) -> anyhow::Result<Scenario> {
        let text =
            std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("scenario {}: {e}", path.display()))?;
        Scenario::parse(&text).map_err(|e| anyhow::anyhow!("scenario {}: {e}", path.display()))
    }

    /// Parses and checks a scenario; errors name the event and the field.
    pub fn parse(text: &str) -> Result<Scenario, String> {
        let f: ScenarioFile = toml::from_str(text).map_err(|e| e.to_string())?;
        if let Some(v) = f.items_per_s
            && !(v.is_finite() && v > 0.0 && v <= MAX_ITEMS_PER_S)
        {
            return Err(format!("items_per_s: {v} is not in (0, {MAX_ITEMS_PER_S}]"));
        }
        let mut models = Vec::new();
        for (i, m) in f.model.iter().enumerate() {
            let at = format!("model[{i}]");
            let ms = Machines::parse(&m.machines).map_err(|e| format!("{at}.machines: {e}"))?;
            if m.version.trim().is_empty() {
                return Err(format!("{at}.version: empty"));
            }
            models.push((ms, m.version.clone()));
        }
        let mut events = Vec::new();
        for (i, e) in f.event.iter().enumerate() {
            let at = if e.name.is_empty() {
                format!("event[{i}]")
            } else {
                format!("event[{i}] ({:?})", e.name)
            };
            if e.for_s == Some(0) {
                return Err(format!(
                    "{at}.for_s: 0; at least 1, or leave it out for \"until the end\""
                ));
            }
            let target = match (&e.machines, &e.site, &e.model_version) {
                (Some(m), None, None) => {
                    Target::Machines(Machines::parse(m).map_err(|err| format!("{at}.machines: {err}"))?)
                }
                (None, Some(s), None) => Target::Site(s.clone()),
                (None, None, Some(v)) => Target::ModelVersion(v.clone()),
                _ => {
                    return Err(format!(
                        "{at}: give exactly one of `machines`, `site` and `model_version`"
                    ));
                }
            };
            let drift = match (e.fault, &e.metric, e.per_min) {
                (FaultKind::Drift, Some(m), Some(rate)) => {
                    let metric = DriftMetric::parse(m).ok_or_else(|| {
                        let names: Vec<_> = DriftMetric::NAMES.iter().map(|(n, _)| *n).collect();
                        format!("{at}.metric: {m:?} cannot drift; one of {}", names.join(", "))
                    })?;
                    if !rate.is_finite() {
                        return Err(format!("{at}.per_min: not a number"));
                    }
                    Some((metric, rate))
                }
                (FaultKind::Drift, _, _) => {
                    return Err(format!("{at}: `drift` needs `metric` and `per_min`"));
                }
                (_, None, None) => None,
                (k, _, _) => {
                    return Err(format!(
                        "{at}: `metric` and `per_min` belong to `drift`, not `{}`",
                        k.name()
                    ));
                }
            };
            let start_ms = e.at_s.saturating_mul(1000);
            let end_ms = e.for_s.map(|d| start_ms.saturating_add(d.saturating_mul(1000)));
            if f.repeat_s > 0 {
                match e.for_s {
                    None => return Err(format!("{at}.for_s: needed when the story repeats (repeat_s)")),
                    Some(d) if e.at_s + d > f.repeat_s => {
                        return Err(format!(
                            "{at}: ends at {} s, after the story repeats (repeat_s = {})",
                            e.at_s + d,
                            f.repeat_s
                        ));
                    }
                    _ => {}
                }
            }
            events.push(Event {
                name: if e.name.is_empty() {
                    format!("{} on {}", e.fault.name(), target.describe())
                } else {
                    e.name.clone()
                },
                start_ms,
                end_ms,
                fault: e.fault,
                target,
                drift,
            });
        }
        Ok(Scenario {
            name: f.name,
            repeat_ms: f.repeat_s.saturating_mul(1000),
            items_per_s: f.items_per_s,
            models,
            events,
        })
    }

    /// The same story told `speed` times faster: times divided, drift rates multiplied (tests
    /// replay the demo's story in a tenth of its time with rules whose `for_s` are shorter).
    pub fn speed_up(mut self, speed: f64) -> Scenario {
        if !(speed.is_finite() && speed > 0.0) || speed == 1.0 {
            return self;
        }
        let scale = |ms: u64| (ms as f64 / speed).round() as u64;
        self.repeat_ms = scale(self.repeat_ms);
        for e in &mut self.events {
            e.start_ms = scale(e.start_ms);
            e.end_ms = e.end_ms.map(scale);
            if let Some((_, rate)) = &mut e.drift {
                *rate *= speed;
            }
        }
        self
    }

    /// One line for people: `"demo", 6 events, replayed every 900 s`.
    pub fn summary(&self) -> String {
        let repeat = if self.repeat_ms > 0 {
            format!(", replayed every {} s", self.repeat_ms / 1000)
        } else {
            String::new()
        };
        format!("{:?}, {} events{repeat}", self.name, self.events.len())
    }

    /// The vision model version of machine `number`, if the scenario sets one.
    pub fn model_version_of(&self, number: usize) -> Option<&str> {
        self.models
            .iter()
            .find(|(m, _)| m.contains(number))
            .map(|(_, v)| v.as_str())
    }

    /// The times (ms into a replay) at which some machine's state may change.
    fn boundaries(&self) -> Vec<u64> {
        let mut b = BTreeSet::from([0]);
        for e in &self.events {
            b.insert(e.start_ms);
            if let Some(end) = e.end_ms {
                b.insert(end);
            }
        }
        if self.repeat_ms > 0 {
            b.retain(|t| *t < self.repeat_ms);
        }
        b.into_iter().collect()
    }

    /// What `m` shows `t_ms` into a replay that began at wall clock `replay_wall_ms`.
    pub fn state_at(&self, m: &Machine, t_ms: u64, replay_wall_ms: i64) -> MachineState {
        let mut s = MachineState::default();
        for e in self
            .events
            .iter()
            .filter(|e| e.active_at(t_ms) && e.target.matches(m))
        {
            if let Some(f) = e.fault.sim_fault()
                && !s.faults.contains(&f)
            {
                s.faults.push(f);
            }
            match e.fault {
                FaultKind::Offline => s.offline = true,
                FaultKind::CommandsFail => s.commands_fail = true,
                _ => {}
            }
            if let Some((metric, per_min)) = e.drift {
                s.drifts.push(Drift {
                    metric,
                    per_min,
                    since_ms: replay_wall_ms + e.start_ms as i64,
                });
            }
        }
        s.faults.sort_by_key(|f| *f as u16);
        s
    }
}

/// What a scenario sets on one machine at one time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MachineState {
    pub faults: Vec<Fault>,
    pub offline: bool,
    pub commands_fail: bool,
    pub drifts: Vec<Drift>,
}

/// A simulated machine as a scenario sees it: how to select it and its switches.
#[derive(Clone)]
pub struct Machine {
    pub device: String,
    pub number: usize,
    pub site: String,
    pub model_version: String,
    pub fault: SimFault,
    pub offline: tokio::sync::watch::Sender<bool>,
    pub commands_fail: Arc<AtomicBool>,
}

impl Machine {
    fn apply(&self, s: &MachineState) {
        self.fault.set_all(&s.faults);
        self.fault.set_drifts(s.drifts.clone());
        self.commands_fail.store(s.commands_fail, Ordering::Relaxed);
        self.offline.send_if_modified(|v| {
            let changed = *v != s.offline;
            *v = s.offline;
            changed
        });
    }
}

/// Replays `scenario` on `machines` (once, or forever when it repeats); each change is logged.
pub async fn run(scenario: Scenario, machines: Vec<Machine>) {
    let label = if scenario.name.is_empty() {
        "scenario".to_string()
    } else {
        scenario.name.clone()
    };
    for e in &scenario.events {
        let n = machines.iter().filter(|m| e.target.matches(m)).count();
        if n == 0 {
            tracing::warn!(scenario = %label, event = %e.name, "no machine of this simulator matches the event");
        }
    }
    let boundaries = scenario.boundaries();
    let mut applied = vec![MachineState::default(); machines.len()];
    let mut replay_start = tokio::time::Instant::now();
    let mut replay_wall = common::time::now_ms();
    let mut replay = 0u64;
    loop {
        for &t in &boundaries {
            tokio::time::sleep_until(replay_start + Duration::from_millis(t)).await;
            for e in &scenario.events {
                let hit: Vec<&str> = machines
                    .iter()
                    .filter(|m| e.target.matches(m))
                    .map(|m| m.device.as_str())
                    .collect();
                if hit.is_empty() {
                    continue;
                }
                let what = if e.start_ms == t {
                    "begins"
                } else if e.end_ms == Some(t) {
                    "ends"
                } else {
                    continue;
                };
                tracing::info!(
                    scenario = %label,
                    replay,
                    t_s = t / 1000,
                    machines = hit.len(),
                    first = hit[0],
                    "{}: {what}",
                    e.name
                );
            }
            for (m, last) in machines.iter().zip(applied.iter_mut()) {
                let s = scenario.state_at(m, t, replay_wall);
                if s != *last {
                    m.apply(&s);
                    *last = s;
                }
            }
        }
        if scenario.repeat_ms == 0 {
            return;
        }
        replay_start += Duration::from_millis(scenario.repeat_ms);
        replay_wall += scenario.repeat_ms as i64;
        replay += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: &str = include_str!("../../scenarios/demo.toml");

    fn machine(number: usize, site: &str, model: &str) -> Machine {
        Machine {
            device: format!("rvm{number:04}"),
            number,
            site: site.into(),
            model_version: model.into(),
            fault: SimFault::default(),
            offline: tokio::sync::watch::channel(false).0,
            commands_fail: Arc::default(),
        }
    }

    #[test]
    fn the_shipped_scenarios_parse() {
        for f in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios")).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_some_and(|e| e == "toml") {
                Scenario::load(&p).unwrap();
            }
        }
        let s = Scenario::parse(DEMO).unwrap();
        // the demo tells the whole story
        for k in [
            FaultKind::Overheating,
            FaultKind::VisionCrash,
            FaultKind::Offline,
            FaultKind::InferenceDegraded,
            FaultKind::Drift,
        ] {
            assert!(s.events.iter().any(|e| e.fault == k), "{k:?}");
        }
        assert!(s.events.iter().any(|e| matches!(e.target, Target::Site(_))));
        assert!(
            s.events
                .iter()
                .any(|e| matches!(e.target, Target::ModelVersion(_)))
        );
    }

    #[test]
    fn the_camera_faults_parse_and_set_their_source_faults() {
        let s = Scenario::parse(include_str!("../../scenarios/camera-faults.toml")).unwrap();
        let m = |n: usize| machine(n, "site1", "v3.2");
        let at = |n: usize| s.state_at(&m(n), 60_000, 0).faults;
        assert_eq!(at(1), vec![Fault::CameraFrozen]);
        assert_eq!(at(2), vec![Fault::CameraCovered]);
        assert_eq!(at(3), vec![Fault::CameraStale]);
        assert_eq!(at(4), vec![Fault::FpsDrop]);
        assert_eq!(at(5), vec![], "the healthy control");
        assert_eq!(FaultKind::FpsDrop.name(), "fps_drop");
    }

    #[test]
    fn targets_and_overlaps_make_each_machines_state() {
        let s = Scenario::parse(
            r#"
            [[model]]
            machines = "1-2"
            version = "v9"
            [[event]]
            at_s = 10
            for_s = 20
            fault = "overheating"
            machines = "1,3-4"
            [[event]]
            at_s = 15
            fault = "inference_degraded"
            model_version = "v9"
            [[event]]
            at_s = 5
            for_s = 5
            fault = "offline"
            site = "site2"
            [[event]]
            at_s = 0
            fault = "drift"
            machines = "all"
            metric = "gpu.temp_c"
            per_min = 0.5
            "#,
        )
        .unwrap();
        assert_eq!(s.model_version_of(2), Some("v9"));
        assert_eq!(s.model_version_of(3), None);
        let m1 = machine(1, "site1", "v9");
        let m4 = machine(4, "site2", "v3.2");
        assert_eq!(s.boundaries(), vec![0, 5_000, 10_000, 15_000, 30_000]);
        let at = |m: &Machine, t: u64| s.state_at(m, t * 1000, 1_000_000);
        assert_eq!(at(&m1, 0).faults, vec![]);
        assert_eq!(at(&m1, 0).drifts[0].since_ms, 1_000_000);
        assert!(at(&m4, 5).offline && !at(&m4, 10).offline && !at(&m1, 5).offline);
        assert_eq!(at(&m1, 12).faults, vec![Fault::Overheating]);
        assert_eq!(
            at(&m1, 20).faults,
            vec![Fault::InferenceDegraded, Fault::Overheating]
        );
        assert_eq!(at(&m4, 20).faults, vec![Fault::Overheating]);
        assert_eq!(
            at(&m1, 30).faults,
            vec![Fault::InferenceDegraded],
            "until the end"
        );
        assert_eq!(
            at(&m4, 30),
            MachineState {
                drifts: at(&m4, 30).drifts,
                ..Default::default()
            }
        );
        m1.apply(&at(&m1, 20));
        assert_eq!(
            m1.fault.active(),
            vec![Fault::InferenceDegraded, Fault::Overheating]
        );
        m4.apply(&at(&m4, 5));
        assert!(*m4.offline.borrow());
    }

    #[test]
    fn a_faster_replay_divides_times_and_multiplies_drift_rates() {
        let s = Scenario::parse(
            "repeat_s = 100\n[[event]]\nat_s = 50\nfor_s = 20\nfault = \"drift\"\nmachines = \"1\"\n\
             metric = \"cpu.usage_pct\"\nper_min = 1.5",
        )
        .unwrap()
        .speed_up(10.0);
        assert_eq!(
            (s.repeat_ms, s.events[0].start_ms, s.events[0].end_ms),
            (10_000, 5_000, Some(7_000))
        );
        assert_eq!(s.events[0].drift, Some((DriftMetric::CpuUsage, 15.0)));
    }

    #[test]
    fn errors_name_the_event_and_the_field() {
        let err = |text: &str| Scenario::parse(text).unwrap_err();
        assert!(err("[[event]]\nat_s = 1\nfault = \"melting\"\nmachines = \"1\"").contains("melting"));
        assert!(err("[[event]]\nat_s = 1\nfault = \"offline\"\nmachine = \"1\"").contains("machine"));
        let e = err("[[event]]\nname = \"x\"\nat_s = 1\nfault = \"offline\"\nmachines = \"1\"\nsite = \"a\"");
        assert!(e.contains("event[0] (\"x\")") && e.contains("exactly one"), "{e}");
        let e = err(
            "[[event]]\nat_s = 1\nfault = \"drift\"\nmachines = \"1\"\nmetric = \"gpu.temp\"\nper_min = 1.0",
        );
        assert!(e.contains("event[0].metric") && e.contains("gpu.temp_c"), "{e}");
        let e = err("[[event]]\nat_s = 1\nfault = \"drift\"\nmachines = \"1\"");
        assert!(e.contains("needs `metric` and `per_min`"), "{e}");
        let e = err("[[event]]\nat_s = 1\nfault = \"offline\"\nmachines = \"1\"\nper_min = 1.0");
        assert!(e.contains("belong to `drift`"), "{e}");
        let e = err("[[event]]\nat_s = 1\nfault = \"offline\"\nmachines = \"5-2\"");
        assert!(e.contains("event[0].machines") && e.contains("backwards"), "{e}");
        let e = err("repeat_s = 60\n[[event]]\nat_s = 50\nfor_s = 20\nfault = \"offline\"\nmachines = \"1\"");
        assert!(e.contains("ends at 70 s"), "{e}");
        let e = err("repeat_s = 60\n[[event]]\nat_s = 50\nfault = \"offline\"\nmachines = \"1\"");
        assert!(e.contains("event[0].for_s"), "{e}");
        let e = err("[[event]]\nat_s = 1\nfor_s = 0\nfault = \"offline\"\nmachines = \"1\"");
        assert!(e.contains("event[0].for_s"), "{e}");
        let e = err("[[model]]\nmachines = \"x\"\nversion = \"v1\"");
        assert!(e.contains("model[0].machines"), "{e}");
        for bad in ["0.0", "-1.0", "nan", "1000.0"] {
            let e = err(&format!("items_per_s = {bad}"));
            assert!(e.contains("items_per_s"), "{bad}: {e}");
        }
        assert_eq!(
            Scenario::parse("items_per_s = 4.0").unwrap().items_per_s,
            Some(4.0)
        );
    }

    #[tokio::test]
    async fn a_replay_switches_machines_on_time_and_repeats() {
        let s = Scenario::parse(
            "repeat_s = 1\n[[event]]\nat_s = 0\nfor_s = 1\nfault = \"vision_crash\"\nmachines = \"1\"\n\
             [[event]]\nat_s = 0\nfor_s = 1\nfault = \"commands_fail\"\nsite = \"s\"",
        )
        .unwrap();
        // 1 s granularity: use an event that lasts the whole replay and one that does not
        let s = Scenario {
            events: vec![
                s.events[0].clone(),
                Event {
                    end_ms: Some(300),
                    ..s.events[1].clone()
                },
            ],
            repeat_ms: 600,
            ..s
        };
        let m = machine(1, "s", "v");
        let task = tokio::spawn(run(s, vec![m.clone()]));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(m.fault.active(), vec![Fault::VisionDown]);
        assert!(m.commands_fail.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!m.commands_fail.load(Ordering::Relaxed), "ended at 300 ms");
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(
            m.commands_fail.load(Ordering::Relaxed),
            "the second replay began at 600 ms"
        );
        task.abort();
    }
}
