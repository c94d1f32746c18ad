//! Plausible Jetson-like metrics for simulated machines (an Orin Nano 8GB running a vision
//! service). Deterministic per seed, so a demo, a test and a benchmark tell the same story.
//!
//! A machine can be told to fail on purpose while it runs ([`SimFault`], [`Fault`]): tests
//! and demos use it to show alerts, cohort regressions and thermal incidents.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use common::{
    CpuStats, DiskStats, GpuBackendKind, GpuStats, MemoryStats, NetStats, PowerRail, Reading, Telemetry,
};

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

/// A fault a simulated machine shows until it is cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Fault {
    #[default]
    None = 0,
    /// Inference takes 350 to 450 ms per frame (a bad model build, a broken TensorRT engine).
    InferenceDegraded = 1,
    /// The camera delivers 3 to 5 frames per second.
    CameraStalled = 2,
    /// The GPU runs at about 88 C with its clock throttled to the minimum under full load.
    Overheating = 3,
}

impl Fault {
    fn from_u8(v: u8) -> Fault {
        match v {
            1 => Fault::InferenceDegraded,
            2 => Fault::CameraStalled,
            3 => Fault::Overheating,
            _ => Fault::None,
        }
    }
}

/// Switches a running simulated machine's fault; clones share it.
#[derive(Debug, Clone, Default)]
pub struct SimFault(Arc<AtomicU8>);

impl SimFault {
    pub fn set(&self, fault: Fault) {
        self.0.store(fault as u8, Ordering::Relaxed);
    }

    pub fn get(&self) -> Fault {
        Fault::from_u8(self.0.load(Ordering::Relaxed))
    }
}

pub struct SimSource {
    rng: Rng,
    fault: SimFault,
    interval_ms: u32,
    started_ms: Option<i64>,
    cpu: Walk,
    mem: Walk,
    gpu: Walk,
    gpu_temp: Walk,
    fps: Walk,
    items: f64,
    errors: f64,
}

impl SimSource {
    pub fn new(seed: u64, interval_ms: u32) -> Self {
        let mut rng = Rng::new(seed);
        let cpu = rng.between(20.0, 45.0);
        let gpu = rng.between(30.0, 60.0);
        SimSource {
            fault: SimFault::default(),
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
}

impl super::MetricSource for SimSource {
    fn collect(&mut self, now_ms: i64) -> Telemetry {
        let started = *self.started_ms.get_or_insert(now_ms);
        let fault = self.fault.get();
        let rng = &mut self.rng;
        let cpu = self.cpu.next(rng);
        let mem_pct = self.mem.next(rng);
        let mut gpu = self.gpu.next(rng);
        let mut gpu_temp = self.gpu_temp.next(rng) + gpu * 0.05;
        let mut fps = self.fps.next(rng);
        let mut inference_ms = 18.0 + gpu * 0.1 + rng.between(0.0, 3.0);
        let mut gpu_freq = if gpu > 50.0 { 624.75 } else { 306.0 };
        match fault {
            Fault::None => {}
            Fault::InferenceDegraded => inference_ms = rng.between(350.0, 450.0),
            Fault::CameraStalled => fps = rng.between(3.0, 5.0),
            Fault::Overheating => {
                gpu = rng.between(95.0, 99.0);
                gpu_temp = rng.between(87.0, 89.0);
                gpu_freq = 306.0;
                fps = rng.between(4.0, 6.0);
            }
        }
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
        Telemetry {
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
            processes: Vec::new(),
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
            app: vec![
                Reading::new("items_recognised", self.items.floor()),
                Reading::new("items_rejected", (self.items * 0.03).floor()),
                Reading::new("inference_ms", inference_ms),
                Reading::new("camera_fps", fps),
                Reading::new("detection_confidence", rng.between(0.86, 0.97)),
                Reading::new("errors", self.errors),
            ],
        }
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
    use crate::collect::MetricSource;

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
        let g = s.collect(3000).gpu.unwrap();
        assert!(g.gpu_temp_c().unwrap() > 85.0 && g.freq_mhz == Some(306.0));
        h.set(Fault::None);
        assert_eq!(h.get(), Fault::None);
        assert!(value(&s.collect(4000), "camera_fps") >= 27.0);
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
