//! Plausible Jetson-like metrics for simulated machines (an Orin Nano 8GB running a vision
//! service). Deterministic per seed, so a demo, a test and a benchmark tell the same story.
//!
//! A machine can be told to fail on purpose while it runs ([`SimFault`]: any set of [`Fault`]s
//! at once, and [`Drift`]s of single metrics): tests, demos and scenario files
//! ([`crate::scenario`]) use it to show alerts, cohort regressions and thermal incidents.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use common::{
    CpuStats, DiskStats, GpuBackendKind, GpuStats, MemoryStats, NetStats, PowerRail, ProcessStats, Reading,
    Telemetry,
};
use rvm_agent::collect::MetricSource;
use rvm_agent::health::camera::{CONFIDENCE, FRAME_AGE, FRAME_HASH, INFERENCE_FPS, LUMA};

/// Orin Nano 8GB: what tegrastats reports as RAM total.
pub const SIM_MEMORY_TOTAL: u64 = 7_620 * 1024 * 1024;
const CORES: usize = 6;

/// A small PRNG (xorshift64*): no dependency, reproducible.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
}

/// A bounded random walk.
#[derive(Debug, Clone)]
struct Walk {
    v: f64,
    lo: f64,
    hi: f64,
    step: f64,
}

impl Walk {
    fn next(&mut self, rng: &mut Rng) -> f64 {
        self.v = (self.v + rng.between(-self.step, self.step)).clamp(self.lo, self.hi);
        self.v
    }
}

/// A fault a simulated machine shows until it is cleared. Each is one bit: a machine can show
/// several at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u16)]
pub enum Fault {
    #[default]
    None = 0,
    /// Inference takes 350 to 450 ms per frame (a bad model build, a broken TensorRT engine).
    InferenceDegraded = 1,
    /// The camera delivers 3 to 5 frames per second.
    CameraStalled = 2,
    /// The GPU heats up under full load: for its first [`OVERHEAT_RAMP_SAMPLES`] records at
    /// 83 to 86 C at full clock, then at about 88 C with its clock throttled to the minimum and
    /// the camera down to 4 to 6 fps (the chain the server's correlator recognises).
    Overheating = 4,
    /// The vision service crashed: its watched process is not running and it reports no
    /// application metrics (absent, not 0). When it comes back it has a new pid and the
    /// process's `restarts_seen` counts one more.
    VisionDown = 8,
    /// The camera device is gone (a loose cable): no frames (camera fps 0, the last frame
    /// ages) and the health report's `camera` check fails ([`crate::health`]).
    CameraMissing = 16,
    /// The camera hands out the same frame over and over: frames keep coming, their hash
    /// does not change.
    CameraFrozen = 32,
    /// Something covers the lens: mean luminance 2 to 5, nothing detected.
    CameraCovered = 64,
    /// No new frames (a hung capture): the last frame ages from when the fault began, no
    /// inference.
    CameraStale = 128,
    /// Inference at a third of its usual rate (frames keep coming).
    FpsDrop = 256,
    /// The bin fills up to 95 % and nobody empties it (`rvm.bin_fill_pct`).
    BinFull = 512,
    /// A container jams: the jam counter goes up once and nothing is accepted until it clears.
    Jam = 1024,
    /// The receipt printer is out of paper (`rvm.printer_ok` 0).
    PrinterOut = 2048,
    /// The barcode scanner fails (`rvm.scanner_ok` 0): everything is rejected.
    ScannerFault = 4096,
    /// Rejects at 30 to 40 % instead of 2 to 4 % (a dirty window, a misaligned camera).
    RejectSpike = 8192,
    /// The vision service leaks file descriptors: [`crate::inside::LEAK_FDS_PER_RECORD`] more
    /// open per record, never closed (until the fault clears: a restart of the service).
    FdLeak = 16384,
    /// A child of the vision service exits and is never reaped: one zombie process.
    Zombie = 32768,
}

impl Fault {
    /// Every fault, in the order [`SimFault::get`] reports the first active one.
    pub const ALL: [Fault; 16] = [
        Fault::InferenceDegraded,
        Fault::CameraStalled,
        Fault::Overheating,
        Fault::VisionDown,
        Fault::CameraMissing,
        Fault::CameraFrozen,
        Fault::CameraCovered,
        Fault::CameraStale,
        Fault::FpsDrop,
        Fault::BinFull,
        Fault::Jam,
        Fault::PrinterOut,
        Fault::ScannerFault,
        Fault::RejectSpike,
        Fault::FdLeak,
        Fault::Zombie,
    ];
}

/// The name of a simulated machine's one camera (the `camera` label of its figures).
pub const SIM_CAMERA: &str = "chamber";

/// A metric a [`Drift`] moves: the server's names for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriftMetric {
    GpuTemp,
    CpuUsage,
    MemoryUsed,
    InferenceMs,
}

impl DriftMetric {
    /// (name in scenario files and on the server, metric)
    pub const NAMES: [(&'static str, DriftMetric); 4] = [
        ("gpu.temp_c", DriftMetric::GpuTemp),
        ("cpu.usage_pct", DriftMetric::CpuUsage),
        ("memory.used_pct", DriftMetric::MemoryUsed),
        ("app.inference_ms", DriftMetric::InferenceMs),
    ];

    pub fn parse(name: &str) -> Option<DriftMetric> {
        Self::NAMES.iter().find(|(n, _)| *n == name).map(|(_, m)| *m)
    }

    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, m)| *m == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }
}

/// A slow drift: `per_min` added to a metric for every minute since `since_ms` (wall clock).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Drift {
    pub metric: DriftMetric,
    pub per_min: f64,
    pub since_ms: i64,
}

impl Drift {
    fn offset(&self, now_ms: i64) -> f64 {
        self.per_min * ((now_ms - self.since_ms).max(0) as f64 / 60_000.0)
    }
}

/// Switches a running simulated machine's faults and drifts; clones share them.
#[derive(Debug, Clone, Default)]
pub struct SimFault {
    faults: Arc<AtomicU16>,
    drifts: Arc<Mutex<Vec<Drift>>>,
    throughput: Arc<Mutex<Throughput>>,
}

/// How many items people bring, and what a command does to how many are accepted
/// ([`SimFault::set_items_per_s`], [`SimFault::degrade_on_command`]).
#[derive(Debug, Clone, Copy, Default)]
struct Throughput {
    /// Items per second (None: [`ITEMS_PER_S`]).
    items_per_s: Option<f64>,
    /// Share of items accepted that stays accepted (None: all; 0.5 loses half).
    accepted_factor: Option<f64>,
    /// The factor the next command this machine runs (not a dry run) sets: a simulated bad
    /// update that makes the machine accept less, for health-gated rollouts.
    on_command: Option<f64>,
}

impl SimFault {
    /// Shows exactly this fault (`Fault::None`: none).
    pub fn set(&self, fault: Fault) {
        self.faults.store(fault as u16, Ordering::Relaxed);
    }

    /// Shows exactly these faults.
    pub fn set_all(&self, faults: &[Fault]) {
        let bits = faults.iter().fold(0u16, |b, f| b | *f as u16);
        self.faults.store(bits, Ordering::Relaxed);
    }

    /// The first active fault (in [`Fault::ALL`] order), or `Fault::None`.
    pub fn get(&self) -> Fault {
        self.active().first().copied().unwrap_or(Fault::None)
    }

    pub fn has(&self, fault: Fault) -> bool {
        fault != Fault::None && self.faults.load(Ordering::Relaxed) & fault as u16 != 0
    }

    pub fn active(&self) -> Vec<Fault> {
        Fault::ALL.into_iter().filter(|f| self.has(*f)).collect()
    }

    fn throughput(&self) -> Throughput {
        self.throughput.lock().map(|t| *t).unwrap_or_default()
    }

    /// Items people bring per second, as a steady stream (within 10 % of the rate at each
    /// record, where the default [`ITEMS_PER_S`], about 360 an hour, varies by half): a test
    /// that compares a machine's rate over seconds needs more items and less noise.
    pub fn set_items_per_s(&self, v: f64) {
        if let Ok(mut t) = self.throughput.lock() {
            t.items_per_s = Some(v);
        }
    }

    /// From now on, this share of what would be accepted is (1.0: all).
    pub fn set_accepted_factor(&self, v: f64) {
        if let Ok(mut t) = self.throughput.lock() {
            t.accepted_factor = Some(v);
        }
    }

    /// The next command this machine runs for real sets [`SimFault::set_accepted_factor`] to
    /// `v`: the machine gets worse because of the command (rvm-sim answers commands without
    /// running anything, so this is how a harmful rollout is simulated).
    pub fn degrade_on_command(&self, v: f64) {
        if let Ok(mut t) = self.throughput.lock() {
            t.on_command = Some(v);
        }
    }

    /// A command ran (see [`SimFault::degrade_on_command`]).
    pub fn command_ran(&self) {
        if let Ok(mut t) = self.throughput.lock()
            && let Some(v) = t.on_command.take()
        {
            t.accepted_factor = Some(v);
        }
    }

    /// Replaces the machine's drifts.
    pub fn set_drifts(&self, drifts: Vec<Drift>) {
        if let Ok(mut d) = self.drifts.lock() {
            *d = drifts;
        }
    }

    pub fn drifts(&self) -> Vec<Drift> {
        self.drifts.lock().map(|d| d.clone()).unwrap_or_default()
    }

    /// The sum of the active drifts of `metric` at `now_ms`.
    fn drift_of(&self, metric: DriftMetric, now_ms: i64) -> f64 {
        self.drifts
            .lock()
            .map(|d| {
                d.iter()
                    .filter(|d| d.metric == metric)
                    .map(|d| d.offset(now_ms))
                    .sum()
            })
            .unwrap_or(0.0)
    }
}

/// Records an overheating machine stays hot at full clock before it throttles.
pub const OVERHEAT_RAMP_SAMPLES: u32 = 5;

/// The vision service's process as a simulated machine reports it (watched by name).
pub const VISION_PROCESS: &str = "rvm-vision";

/// A machine's latest telemetry and when it was collected, shared with its health reports
/// ([`crate::health`]); clones share it.
pub type Latest = Arc<Mutex<Option<(i64, Telemetry)>>>;

pub struct SimSource {
    rng: Rng,
    fault: SimFault,
    latest: Latest,
    interval_ms: u32,
    started_ms: Option<i64>,
    cpu: Walk,
    mem: Walk,
    gpu: Walk,
    gpu_temp: Walk,
    fps: Walk,
    items: f64,
    errors: f64,
    /// The vision service's pid, and how many times it came back with a new one.
    vision_pid: u32,
    vision_restarts: u32,
    vision_was_down: bool,
    /// Records collected since overheating began.
    hot_samples: u32,
    /// The camera's last frame: its hash and when it arrived.
    frame_hash: u32,
    frame_at_ms: i64,
    /// The machine's own figures (docs/kpis.md).
    kpi: Kpis,
    /// Descriptors the vision service leaked so far ([`Fault::FdLeak`]).
    leaked_fds: u32,
    /// The machine's own process, thread and connection counts.
    inside: crate::inside::Baseline,
    /// When the machine last scanned its process table ([`crate::inside::SCAN_EVERY_MS`]).
    scanned_at_ms: Option<i64>,
}

/// What a simulated RVM counts: items accepted and rejected, jams, how full its bin is.
#[derive(Debug, Clone, Default)]
struct Kpis {
    accepted: f64,
    rejected: f64,
    jams: f64,
    bin_fill_pct: f64,
    /// The jam fault was on at the previous record: a jam counts once per fault.
    jammed: bool,
    /// Record time of the previous collection.
    at_ms: Option<i64>,
}

/// Items a simulated machine takes per second when people are returning: about 360 an hour.
pub const ITEMS_PER_S: f64 = 0.1;
/// The bin's fill rises this much per accepted item, and staff empty it at
/// [`BIN_EMPTIED_AT_PCT`] (unless the bin-full fault holds).
pub const BIN_PCT_PER_ITEM: f64 = 0.05;
pub const BIN_EMPTIED_AT_PCT: f64 = 80.0;

impl Kpis {
    /// One collection at `now_ms`: counters move by the items of the time since the last one.
    fn step(&mut self, f: &SimFault, rng: &mut Rng, now_ms: i64) -> Vec<Reading> {
        let dt_s = self
            .at_ms
            .map_or(0.0, |at| (now_ms - at).clamp(0, 60_000) as f64 / 1000.0);
        self.at_ms = Some(now_ms);
        let jam = f.has(Fault::Jam);
        if jam && !self.jammed {
            self.jams += 1.0;
        }
        self.jammed = jam;
        let tp = f.throughput();
        let items = match (jam, tp.items_per_s) {
            (true, _) => 0.0,
            (false, Some(per_s)) => per_s * dt_s * rng.between(0.9, 1.1),
            (false, None) => ITEMS_PER_S * dt_s * rng.between(0.5, 1.5),
        };
        let reject_share = if f.has(Fault::ScannerFault) {
            1.0
        } else if f.has(Fault::RejectSpike) {
            rng.between(0.30, 0.40)
        } else {
            rng.between(0.02, 0.04)
        };
        // what the machine fails to accept of what it would have (a degraded machine) goes
        // back to the customer: neither accepted nor rejected
        let accepted = items * (1.0 - reject_share) * tp.accepted_factor.unwrap_or(1.0);
        self.accepted += accepted;
        self.rejected += items * reject_share;
        if f.has(Fault::BinFull) {
            self.bin_fill_pct = (self.bin_fill_pct.max(85.0) + 2.0).min(95.0);
        } else {
            if self.bin_fill_pct == 0.0 {
                self.bin_fill_pct = rng.between(10.0, 60.0);
            }
            self.bin_fill_pct += accepted * BIN_PCT_PER_ITEM;
            if self.bin_fill_pct >= BIN_EMPTIED_AT_PCT {
                self.bin_fill_pct = 5.0;
            }
        }
        let ok = |fault| if f.has(fault) { 0.0 } else { 1.0 };
        vec![
            Reading::new("rvm.accepted_total", self.accepted.floor()),
            Reading::new("rvm.rejected_total", self.rejected.floor()),
            Reading::new("rvm.jams_total", self.jams),
            Reading::new("rvm.bin_fill_pct", (self.bin_fill_pct * 10.0).round() / 10.0),
            Reading::new("rvm.printer_ok", ok(Fault::PrinterOut)),
            Reading::new("rvm.scanner_ok", ok(Fault::ScannerFault)),
            Reading::new("rvm.door_open", 0.0),
        ]
    }
}

impl SimSource {
    pub fn new(seed: u64, interval_ms: u32) -> Self {
        let mut rng = Rng::new(seed);
        let cpu = rng.between(20.0, 45.0);
        let gpu = rng.between(30.0, 60.0);
        SimSource {
            fault: SimFault::default(),
            latest: Latest::default(),
            interval_ms,
            started_ms: None,
            cpu: Walk {
                v: cpu,
                lo: 5.0,
                hi: 75.0,
                step: 4.0,
            },
            mem: Walk {
                v: rng.between(40.0, 60.0),
                lo: 30.0,
                hi: 80.0,
                step: 0.5,
            },
            gpu: Walk {
                v: gpu,
                lo: 10.0,
                hi: 85.0,
                step: 5.0,
            },
            gpu_temp: Walk {
                v: rng.between(45.0, 55.0),
                lo: 38.0,
                hi: 70.0,
                step: 0.4,
            },
            fps: Walk {
                v: 30.0,
                lo: 27.0,
                hi: 30.0,
                step: 0.3,
            },
            items: 0.0,
            errors: 0.0,
            vision_pid: 1200 + (seed % 800) as u32,
            vision_restarts: 0,
            vision_was_down: false,
            hot_samples: 0,
            frame_hash: 0,
            frame_at_ms: 0,
            kpi: Kpis::default(),
            leaked_fds: 0,
            scanned_at_ms: None,
            // its own generator: the machine's walks draw what they drew before it existed
            inside: {
                let mut r = Rng::new(seed ^ 0x1D5E_ED0F_1A5E_0024);
                crate::inside::Baseline::draw(&mut |lo, hi| r.between(lo, hi))
            },
            rng,
        }
    }
}

impl SimSource {
    /// A handle that switches this machine's fault while it runs.
    pub fn fault_handle(&self) -> SimFault {
        self.fault.clone()
    }

    pub fn set_fault(&self, fault: Fault) {
        self.fault.set(fault);
    }

    /// The latest telemetry this source made, as it makes it.
    pub fn latest_handle(&self) -> Latest {
        self.latest.clone()
    }
}

impl MetricSource for SimSource {
    fn collect(&mut self, now_ms: i64) -> Telemetry {
        let started = *self.started_ms.get_or_insert(now_ms);
        let f = self.fault.clone();
        let rng = &mut self.rng;
        let drift = |m| f.drift_of(m, now_ms);
        let cpu = (self.cpu.next(rng) + drift(DriftMetric::CpuUsage)).clamp(0.0, 100.0);
        let mem_pct = (self.mem.next(rng) + drift(DriftMetric::MemoryUsed)).clamp(0.0, 99.5);
        let mut gpu = self.gpu.next(rng);
        let mut gpu_temp = self.gpu_temp.next(rng) + gpu * 0.05;
        let mut fps = self.fps.next(rng);
        let mut inference_ms = 18.0 + gpu * 0.1 + rng.between(0.0, 3.0);
        let mut gpu_freq = if gpu > 50.0 { 624.75 } else { 306.0 };
        if f.has(Fault::InferenceDegraded) {
            inference_ms = rng.between(350.0, 450.0);
        }
        if f.has(Fault::CameraStalled) {
            fps = rng.between(3.0, 5.0);
        }
        if f.has(Fault::CameraMissing) {
            fps = 0.0;
        }
        if f.has(Fault::Overheating) {
            gpu = rng.between(95.0, 99.0);
            if self.hot_samples < OVERHEAT_RAMP_SAMPLES {
                gpu_temp = rng.between(83.0, 86.0);
                gpu_freq = 624.75;
            } else {
                gpu_temp = rng.between(87.0, 89.0);
                gpu_freq = 306.0;
                fps = fps.min(rng.between(4.0, 6.0));
            }
            self.hot_samples += 1;
        } else {
            self.hot_samples = 0;
        }
        gpu_temp += drift(DriftMetric::GpuTemp);
        inference_ms = (inference_ms + drift(DriftMetric::InferenceMs)).max(1.0);
        let vision_down = f.has(Fault::VisionDown);
        if vision_down {
            self.vision_was_down = true;
        } else if self.vision_was_down {
            // systemd brought it back: a new pid
            self.vision_was_down = false;
            self.vision_restarts += 1;
            self.vision_pid += 7 + (rng.next_u64() % 50) as u32;
        }
        // the camera's figures (docs/camera-health.md): a new frame every record unless the
        // capture hung or the camera is gone; a frozen camera repeats its last frame
        let no_frames = f.has(Fault::CameraStale) || f.has(Fault::CameraMissing);
        if !no_frames {
            self.frame_at_ms = now_ms;
            if !f.has(Fault::CameraFrozen) || self.frame_hash == 0 {
                self.frame_hash = (rng.next_u64() >> 32) as u32 | 1;
            }
        }
        let frame_age_s = ((now_ms - self.frame_at_ms).max(0) as f64 / 1000.0) + rng.between(0.02, 0.06);
        let covered = f.has(Fault::CameraCovered);
        let luma = if covered {
            rng.between(2.0, 5.0)
        } else {
            rng.between(95.0, 125.0)
        };
        let mut inference_fps = if no_frames {
            0.0
        } else {
            fps.min(1000.0 / inference_ms)
        };
        if f.has(Fault::FpsDrop) {
            inference_fps /= 3.0;
        }
        let confidence = (!covered && !no_frames).then(|| rng.between(0.86, 0.97));
        self.items += rng.between(0.0, 0.4);
        if rng.unit() < 0.002 {
            self.errors += 1.0;
        }
        let used = (SIM_MEMORY_TOTAL as f64 * mem_pct / 100.0) as u64;
        let vdd_in = 4_500.0 + gpu * 60.0 + cpu * 20.0;
        let rails = vec![
            rail("VDD_IN", 5_080.0, vdd_in),
            rail("VDD_CPU_GPU_CV", 5_070.0, 400.0 + gpu * 35.0 + cpu * 10.0),
            rail("VDD_SOC", 5_070.0, 1_300.0 + rng.between(0.0, 150.0)),
        ];
        // a leak grows while the fault holds; a restart of the service (the fault cleared)
        // closes what it had opened
        self.leaked_fds = if f.has(Fault::FdLeak) && !vision_down {
            self.leaked_fds + crate::inside::LEAK_FDS_PER_RECORD
        } else {
            0
        };
        let scan = self
            .scanned_at_ms
            .is_none_or(|t| now_ms - t >= crate::inside::SCAN_EVERY_MS || now_ms < t);
        if scan {
            self.scanned_at_ms = Some(now_ms);
        }
        let detail = crate::inside::detail(
            crate::inside::Inputs {
                baseline: self.inside,
                vision: VISION_PROCESS,
                vision_pid: (!vision_down).then_some(self.vision_pid),
                vision_cpu_pct: if vision_down { 0.0 } else { (gpu * 0.6) as f32 },
                vision_rss: 1_310 << 20,
                leaked_fds: self.leaked_fds,
                zombie: f.has(Fault::Zombie),
                interval_s: self.interval_ms as f64 / 1000.0,
                started_s: (started / 1000).max(0) as u64,
                scan,
            },
            &mut |lo, hi| rng.between(lo, hi),
        );
        let t = Telemetry {
            interval_ms: self.interval_ms,
            uptime_s: ((now_ms - started) / 1000).max(0) as u64 + 3_600,
            cpu: CpuStats {
                usage_pct: cpu as f32,
                per_core_pct: (0..CORES)
                    .map(|_| (cpu + rng.between(-8.0, 8.0)).clamp(0.0, 100.0) as f32)
                    .collect(),
                freq_mhz: vec![1510; CORES],
                load1: (cpu / 100.0 * CORES as f64) as f32,
                load5: (cpu / 100.0 * CORES as f64 * 0.9) as f32,
                load15: (cpu / 100.0 * CORES as f64 * 0.8) as f32,
            },
            memory: MemoryStats {
                total_bytes: SIM_MEMORY_TOTAL,
                used_bytes: used,
                available_bytes: SIM_MEMORY_TOTAL - used,
                swap_total_bytes: 3_810 * 1024 * 1024,
                swap_used_bytes: 0,
            },
            disks: vec![DiskStats {
                mount: "/".into(),
                fs: "ext4".into(),
                total_bytes: 116 << 30,
                used_bytes: 41 << 30,
                inodes_total: Some(7_700_000),
                inodes_used: Some(610_000),
                read_bytes_per_s: Some(rng.between(0.0, 50_000.0)),
                write_bytes_per_s: Some(rng.between(10_000.0, 200_000.0)),
            }],
            net: vec![NetStats {
                iface: "eth0".into(),
                rx_bytes_per_s: rng.between(2_000.0, 20_000.0),
                tx_bytes_per_s: rng.between(2_000.0, 30_000.0),
                ..Default::default()
            }],
            temperatures: vec![
                Reading::new("cpu-thermal", gpu_temp - 2.0),
                Reading::new("gpu-thermal", gpu_temp),
                Reading::new("tj-thermal", gpu_temp + 1.5),
            ],
            processes: vec![ProcessStats {
                name: VISION_PROCESS.into(),
                pid: if vision_down { 0 } else { self.vision_pid },
                running: !vision_down,
                watched: true,
                cpu_pct: if vision_down { 0.0 } else { (gpu * 0.6) as f32 },
                rss_bytes: if vision_down { 0 } else { 1_310 << 20 },
                state: if vision_down { String::new() } else { "S".into() },
                restarts_seen: self.vision_restarts,
            }],
            gpu: Some(GpuStats {
                backend: GpuBackendKind::Simulated,
                load_pct: Some(gpu as f32),
                freq_mhz: Some(gpu_freq),
                min_freq_mhz: Some(306.0),
                max_freq_mhz: Some(624.75),
                temperatures: vec![
                    Reading::new("cpu", gpu_temp - 2.0),
                    Reading::new("gpu", gpu_temp),
                    Reading::new("tj", gpu_temp + 1.5),
                ],
                rails,
                fan_pct: Some(((gpu_temp - 35.0) * 2.5).clamp(0.0, 100.0) as f32),
                nvpmodel: Some("15W".into()),
                board: Some("NVIDIA Jetson Orin Nano Developer Kit (simulated)".into()),
                l4t: Some("36.4.3".into()),
                jetpack: Some("6.2".into()),
                unsupported: vec!["emc".into()],
                ..Default::default()
            }),
            // a crashed service reports nothing: absent, never 0
            app: if vision_down {
                Vec::new()
            } else {
                let cam = |gauge: &str| format!("{gauge}.{SIM_CAMERA}");
                let mut app = vec![
                    Reading::new("items_recognised", self.items.floor()),
                    Reading::new("items_rejected", (self.items * 0.03).floor()),
                    Reading::new("inference_ms", inference_ms),
                    Reading::new("camera_fps", fps),
                    Reading::new("detection_confidence", rng.between(0.86, 0.97)),
                    Reading::new("errors", self.errors),
                    Reading::new(cam(FRAME_AGE), frame_age_s),
                    Reading::new(cam(FRAME_HASH), f64::from(self.frame_hash)),
                    Reading::new(cam(LUMA), luma),
                    Reading::new(cam(INFERENCE_FPS), inference_fps),
                ];
                if let Some(c) = confidence {
                    app.push(Reading::new(cam(CONFIDENCE), c));
                }
                app.extend(self.kpi.step(&f, rng, now_ms));
                app
            },
            detail,
        };
        if let Ok(mut l) = self.latest.lock() {
            *l = Some((now_ms, t.clone()));
        }
        t
    }

    fn is_blocking(&self) -> bool {
        false
    }

    fn capabilities(&self) -> Vec<String> {
        vec!["gpu:simulated".into(), "app:simulated".into()]
    }
}

fn rail(name: &str, mv: f64, mw: f64) -> PowerRail {
    PowerRail {
        name: name.into(),
        voltage_mv: Some(mv),
        current_ma: Some(mw * 1000.0 / mv),
        power_mw: mw,
        avg_power_mw: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_tells_the_same_story() {
        let mut a = SimSource::new(7, 1000);
        let mut b = SimSource::new(7, 1000);
        for i in 0..5 {
            assert_eq!(a.collect(i * 1000), b.collect(i * 1000));
        }
    }

    #[test]
    fn a_fault_shows_while_it_is_set() {
        let mut s = SimSource::new(3, 1000);
        let h = s.fault_handle();
        let value =
            |t: &Telemetry, name: &str| t.app.iter().find(|r| r.name == name).map(|r| r.value).unwrap();
        assert!(value(&s.collect(0), "inference_ms") < 40.0);
        h.set(Fault::InferenceDegraded);
        assert!(value(&s.collect(1000), "inference_ms") >= 350.0);
        s.set_fault(Fault::CameraStalled);
        let t = s.collect(2000);
        assert!(value(&t, "camera_fps") <= 5.0 && value(&t, "inference_ms") < 40.0);
        h.set(Fault::Overheating);
        // hot at full clock first, then throttled
        let g = s.collect(3000).gpu.unwrap();
        assert!(g.gpu_temp_c().unwrap() > 82.0 && g.freq_mhz == Some(624.75));
        for i in 1..OVERHEAT_RAMP_SAMPLES as i64 {
            s.collect(3000 + i);
        }
        let g = s.collect(3100).gpu.unwrap();
        assert!(g.gpu_temp_c().unwrap() > 85.0 && g.freq_mhz == Some(306.0));
        h.set(Fault::None);
        assert_eq!(h.get(), Fault::None);
        assert!(value(&s.collect(4000), "camera_fps") >= 27.0);
    }

    #[test]
    fn the_machine_counts_returns_and_each_kpi_fault_shows_in_its_own_figure() {
        let mut s = SimSource::new(11, 1000);
        let h = s.fault_handle();
        let value = |t: &Telemetry, name: &str| {
            t.app
                .iter()
                .find(|r| r.name == name)
                .map(|r| r.value)
                .unwrap_or_else(|| panic!("no {name}"))
        };
        let mut t = s.collect(0);
        for i in 1..=600 {
            t = s.collect(i * 1000);
        }
        // ten minutes at about 0.1 items a second, 2 to 4 % rejected
        let (acc, rej) = (value(&t, "rvm.accepted_total"), value(&t, "rvm.rejected_total"));
        assert!((30.0..=90.0).contains(&acc), "{acc}");
        assert!(rej <= acc * 0.1, "{rej} of {acc}");
        assert!(value(&t, "rvm.bin_fill_pct") < BIN_EMPTIED_AT_PCT);
        assert_eq!(
            (
                value(&t, "rvm.printer_ok"),
                value(&t, "rvm.scanner_ok"),
                value(&t, "rvm.jams_total")
            ),
            (1.0, 1.0, 0.0)
        );

        h.set(Fault::Jam);
        for i in 601..=700 {
            t = s.collect(i * 1000);
        }
        assert_eq!(value(&t, "rvm.jams_total"), 1.0, "one jam per fault");
        assert!(
            value(&t, "rvm.accepted_total") - acc <= 1.0,
            "nothing accepted while jammed"
        );

        h.set_all(&[Fault::BinFull, Fault::PrinterOut, Fault::ScannerFault]);
        for i in 701..=720 {
            t = s.collect(i * 1000);
        }
        assert_eq!(value(&t, "rvm.bin_fill_pct"), 95.0);
        assert_eq!(
            (value(&t, "rvm.printer_ok"), value(&t, "rvm.scanner_ok")),
            (0.0, 0.0)
        );

        h.set(Fault::RejectSpike);
        let (a0, r0) = (value(&t, "rvm.accepted_total"), value(&t, "rvm.rejected_total"));
        for i in 721..=2520 {
            t = s.collect(i * 1000);
        }
        let (da, dr) = (
            value(&t, "rvm.accepted_total") - a0,
            value(&t, "rvm.rejected_total") - r0,
        );
        let ratio = dr / (da + dr);
        assert!((0.25..=0.45).contains(&ratio), "{ratio}");
        assert_eq!(value(&t, "rvm.jams_total"), 1.0);
    }

    #[test]
    fn faults_combine_and_a_crashed_vision_service_reports_no_app_metrics() {
        let mut s = SimSource::new(5, 1000);
        let h = s.fault_handle();
        let vision = |t: &Telemetry| {
            t.processes
                .iter()
                .find(|p| p.name == VISION_PROCESS)
                .cloned()
                .unwrap()
        };
        let t = s.collect(0);
        let pid = vision(&t).pid;
        assert!(vision(&t).running && pid > 0 && !t.app.is_empty());
        h.set_all(&[Fault::Overheating, Fault::VisionDown]);
        assert_eq!(h.active(), vec![Fault::Overheating, Fault::VisionDown]);
        let t = s.collect(1000);
        assert!(t.app.is_empty(), "absent, not 0: {:?}", t.app);
        assert!(!vision(&t).running && vision(&t).pid == 0);
        assert!(
            t.flat_metrics()
                .iter()
                .any(|(n, v)| n == "process.down" && *v == 1.0)
        );
        assert!(t.gpu.as_ref().unwrap().gpu_temp_c().unwrap() > 82.0);
        h.set_all(&[]);
        let t = s.collect(2000);
        assert!(vision(&t).running && vision(&t).pid != pid && vision(&t).restarts_seen == 1);
        assert!(t.app.iter().any(|r| r.name == "camera_fps"));
    }

    #[test]
    fn a_drift_adds_its_rate_per_minute_since_it_began() {
        let mut a = SimSource::new(9, 1000);
        let mut b = SimSource::new(9, 1000);
        b.fault_handle().set_drifts(vec![Drift {
            metric: DriftMetric::GpuTemp,
            per_min: 2.0,
            since_ms: 0,
        }]);
        let temp = |t: Telemetry| t.gpu.unwrap().gpu_temp_c().unwrap();
        // same seed, same walk: the difference is the drift alone
        assert!((temp(b.collect(0)) - temp(a.collect(0))).abs() < 1e-6);
        let d = temp(b.collect(600_000)) - temp(a.collect(600_000));
        assert!((d - 20.0).abs() < 1e-3, "10 min at 2 C/min: {d}");
        assert_eq!(
            DriftMetric::parse("memory.used_pct"),
            Some(DriftMetric::MemoryUsed)
        );
        assert_eq!(DriftMetric::GpuTemp.name(), "gpu.temp_c");
        assert_eq!(DriftMetric::parse("gpu.temp"), None);
    }

    #[test]
    fn each_camera_fault_shows_in_the_camera_figures() {
        let mut s = SimSource::new(11, 1000);
        let h = s.fault_handle();
        let value = |t: &Telemetry, gauge: &str| {
            t.app
                .iter()
                .find(|r| r.name == format!("{gauge}.{SIM_CAMERA}"))
                .map(|r| r.value)
        };
        let t = s.collect(0);
        assert!(value(&t, FRAME_AGE).unwrap() < 0.1);
        assert!(value(&t, LUMA).unwrap() > 90.0);
        assert!(value(&t, INFERENCE_FPS).unwrap() >= 27.0);
        assert!(value(&t, CONFIDENCE).is_some());
        let first = value(&t, FRAME_HASH).unwrap();
        assert_ne!(value(&s.collect(1000), FRAME_HASH).unwrap(), first, "a new frame");

        h.set(Fault::CameraFrozen);
        let a = value(&s.collect(2000), FRAME_HASH);
        assert_eq!(value(&s.collect(3000), FRAME_HASH), a, "the same frame");
        assert!(value(&s.collect(4000), FRAME_AGE).unwrap() < 0.1, "still coming");

        h.set(Fault::CameraCovered);
        let t = s.collect(5000);
        assert!(value(&t, LUMA).unwrap() <= 5.0 && value(&t, CONFIDENCE).is_none());

        h.set(Fault::CameraStale);
        s.collect(6000);
        let t = s.collect(16_000);
        assert!(value(&t, FRAME_AGE).unwrap() >= 10.0, "aged from the last frame");
        assert_eq!(value(&t, INFERENCE_FPS), Some(0.0));

        h.set(Fault::FpsDrop);
        let t = s.collect(17_000);
        let fps = value(&t, INFERENCE_FPS).unwrap();
        assert!((9.0..=10.0).contains(&fps), "{fps}");
        assert!(value(&t, FRAME_AGE).unwrap() < 0.1);
    }

    /// Like the agent: the process table's counts and top lists every 10 s, the watched
    /// vision service every record.
    #[test]
    fn the_process_table_is_scanned_every_ten_seconds() {
        let mut s = SimSource::new(1, 1000);
        let scanned: Vec<i64> = (0..25)
            .filter(|&i| {
                let p = s.collect(i * 1000).detail.procs;
                assert!(!p.watched.is_empty(), "record {i}");
                assert_eq!(p.scanned, p.total > 0 && !p.top_cpu.is_empty(), "record {i}");
                p.scanned
            })
            .collect();
        assert_eq!(scanned, vec![0, 10, 20]);
    }

    #[test]
    fn figures_stay_plausible() {
        let mut s = SimSource::new(1, 1000);
        for i in 0..1000 {
            let t = s.collect(i * 1000);
            assert!((0.0..=100.0).contains(&t.cpu.usage_pct));
            assert!(t.memory.used_bytes < t.memory.total_bytes);
            let g = t.gpu.unwrap();
            assert!((0.0..=100.0).contains(&g.load_pct.unwrap()));
            assert!(g.total_power_mw().unwrap() > 4_000.0);
        }
    }
}
