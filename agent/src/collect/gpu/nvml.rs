//! NVML backend (`nvml-wrapper`, which loads `libnvidia-ml` at run time).
//!
//! Used for discrete GPUs and Jetson Thor. On Jetson Orin (JetPack 6/7) NVML initialises and
//! lists `Orin (nvgpu)` but answers NotSupported for every metric, and on JetPack 4/5 there is
//! no NVML at all; so [`NvmlBackend::probe`] accepts NVML only when at least one metric returns
//! a value. Metrics that do not answer are `None` and named in `unsupported`, per sample.
//!
//! Only device 0 is read: a Jetson has one GPU, and the wire format holds one `GpuStats`.

use std::ffi::OsStr;
use std::path::PathBuf;

use common::{GpuBackendKind, GpuStats, PowerRail, Reading};
use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::error::NvmlError;
use tracing::{debug, info, warn};

use super::platform::Platform;
use super::{GpuBackend, GpuPaths, mark_unsupported, metric};

/// Library names tried when none is configured. Driver runtime packages (and the NVIDIA
/// container toolkit) ship only the versioned name; the bare name comes with dev packages.
const DEFAULT_LIBRARIES: [&str; 2] = ["libnvidia-ml.so.1", "libnvidia-ml.so"];
/// The device read.
const DEVICE_INDEX: u32 = 0;
/// Rail name under which NVML's board power is reported.
const POWER_RAIL: &str = "GPU";

#[derive(Debug, thiserror::Error)]
pub enum NvmlProbeError {
    #[error("nvml init failed ({library}): {source}")]
    Init {
        library: String,
        #[source]
        source: NvmlError,
    },
    #[error("nvml reports no gpu")]
    NoDevice,
    #[error("nvml device {index} unavailable: {source}")]
    Device {
        index: u32,
        #[source]
        source: NvmlError,
    },
    #[error("nvml answers no metric for device {index} (Jetson iGPUs answer NotSupported)")]
    NothingSupported { index: u32 },
}

/// NVML, initialised, with a device that answers at least one metric.
pub struct NvmlBackend {
    nvml: Nvml,
    platform: Platform,
}

impl std::fmt::Debug for NvmlBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlBackend").finish_non_exhaustive()
    }
}

impl NvmlBackend {
    /// Loads NVML (`paths.nvml_library`, or the default names) and checks that device 0
    /// answers something.
    pub fn probe(paths: &GpuPaths) -> Result<Self, NvmlProbeError> {
        let nvml = match &paths.nvml_library {
            Some(lib) => init(lib.as_os_str())?,
            None => {
                let mut last = None;
                let mut found = None;
                for lib in DEFAULT_LIBRARIES {
                    match init(OsStr::new(lib)) {
                        Ok(nvml) => {
                            found = Some(nvml);
                            break;
                        }
                        Err(err) => last = Some(err),
                    }
                }
                match (found, last) {
                    (Some(nvml), _) => nvml,
                    (None, Some(err)) => return Err(err),
                    (None, None) => return Err(NvmlProbeError::NoDevice),
                }
            }
        };
        let count = nvml.device_count().map_err(|source| NvmlProbeError::Device {
            index: DEVICE_INDEX,
            source,
        })?;
        if count == 0 {
            return Err(NvmlProbeError::NoDevice);
        }
        let backend = NvmlBackend {
            nvml,
            platform: Platform::read(paths),
        };
        let answered = backend.read_device()?;
        if answered == 0 {
            return Err(NvmlProbeError::NothingSupported { index: DEVICE_INDEX });
        }
        info!(devices = count, metrics = answered, "nvml gpu found");
        Ok(backend)
    }

    /// Number of metrics device 0 answers (used by `probe`).
    fn read_device(&self) -> Result<usize, NvmlProbeError> {
        let stats = self.read_stats()?;
        Ok([
            stats.load_pct.is_some(),
            stats.freq_mhz.is_some(),
            stats.max_freq_mhz.is_some(),
            stats.emc_pct.is_some(),
            stats.emc_freq_mhz.is_some(),
            !stats.temperatures.is_empty(),
            !stats.rails.is_empty(),
            stats.fan_pct.is_some(),
            stats.memory_used_bytes.is_some(),
        ]
        .into_iter()
        .filter(|answered| *answered)
        .count())
    }

    fn read_stats(&self) -> Result<GpuStats, NvmlProbeError> {
        let device = self
            .nvml
            .device_by_index(DEVICE_INDEX)
            .map_err(|source| NvmlProbeError::Device {
                index: DEVICE_INDEX,
                source,
            })?;
        let mut stats = GpuStats {
            backend: GpuBackendKind::Nvml,
            ..GpuStats::default()
        };
        let mut gaps = Vec::new();
        if let Some(u) = answer(device.utilization_rates(), metric::LOAD, &mut gaps) {
            stats.load_pct = Some(u.gpu as f32);
            // NVML's memory utilisation is the memory controller's busy time: what EMC % is on a Jetson.
            stats.emc_pct = Some(u.memory as f32);
        } else {
            gaps.push(metric::EMC);
        }
        stats.freq_mhz =
            answer(device.clock_info(Clock::Graphics), metric::FREQ, &mut gaps).map(|f| f as f32);
        stats.max_freq_mhz = answer(
            device.max_clock_info(Clock::Graphics),
            metric::MAX_FREQ,
            &mut gaps,
        )
        .map(|f| f as f32);
        // NVML has no plain minimum clock.
        gaps.push(metric::MIN_FREQ);
        stats.emc_freq_mhz =
            answer(device.clock_info(Clock::Memory), metric::EMC_FREQ, &mut gaps).map(|f| f as f32);
        if let Some(t) = answer(
            device.temperature(TemperatureSensor::Gpu),
            metric::TEMPERATURES,
            &mut gaps,
        ) {
            stats.temperatures.push(Reading::new("gpu", f64::from(t)));
        }
        if let Some(mw) = answer(device.power_usage(), metric::RAILS, &mut gaps) {
            stats.rails.push(PowerRail {
                name: POWER_RAIL.to_string(),
                voltage_mv: None,
                current_ma: None,
                power_mw: f64::from(mw),
                avg_power_mw: None,
            });
        }
        stats.fan_pct = answer(device.fan_speed(0), metric::FAN, &mut gaps).map(|p| p as f32);
        stats.memory_used_bytes = answer(device.memory_info(), metric::MEMORY, &mut gaps).map(|m| m.used);
        for gap in gaps {
            mark_unsupported(&mut stats, gap);
        }
        Ok(stats)
    }
}

fn init(library: &OsStr) -> Result<Nvml, NvmlProbeError> {
    Nvml::builder()
        .lib_path(library)
        .init()
        .map_err(|source| NvmlProbeError::Init {
            library: PathBuf::from(library).display().to_string(),
            source,
        })
}

/// The value, or `None` with the metric's name noted. NotSupported is the normal answer on
/// Jetson iGPUs and is not logged; other errors are.
fn answer<T>(result: Result<T, NvmlError>, name: &'static str, gaps: &mut Vec<&'static str>) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(NvmlError::NotSupported) => {
            gaps.push(name);
            None
        }
        Err(err) => {
            debug!(metric = name, error = %err, "nvml query failed");
            gaps.push(name);
            None
        }
    }
}

impl GpuBackend for NvmlBackend {
    fn kind(&self) -> GpuBackendKind {
        GpuBackendKind::Nvml
    }

    fn sample(&mut self) -> Option<GpuStats> {
        match self.read_stats() {
            Ok(mut stats) => {
                self.platform.fill(&mut stats);
                Some(stats)
            }
            Err(err) => {
                warn!(error = %err, "nvml sample failed");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn build_paths(library: Option<&str>) -> GpuPaths {
        GpuPaths {
            nvml_library: library.map(PathBuf::from),
            ..GpuPaths::under_root(Path::new("/nonexistent/rvm-test"))
        }
    }

    #[test]
    fn nvml_init_fails_gracefully_when_the_library_is_missing() {
        let err =
            NvmlBackend::probe(&build_paths(Some("/nonexistent/rvm-test/libnvidia-ml.so.1"))).unwrap_err();
        assert!(matches!(err, NvmlProbeError::Init { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.starts_with("nvml init failed (/nonexistent/rvm-test/libnvidia-ml.so.1): "),
            "{msg}"
        );
    }

    #[test]
    fn nvml_probe_with_default_libraries_never_panics() {
        // On this project's CI machine there is no NVIDIA driver: init fails. On a machine with
        // a GPU the probe may succeed, and then a sample must be a well-formed NVML sample.
        match NvmlBackend::probe(&build_paths(None)) {
            Err(err) => assert!(!err.to_string().is_empty()),
            Ok(mut backend) => {
                let stats = backend.sample().expect("a probed device samples");
                assert_eq!(stats.backend, GpuBackendKind::Nvml);
                assert!(stats.unsupported.contains(&"min_freq".to_string()));
            }
        }
    }

    #[test]
    fn not_supported_answers_are_listed_as_unsupported() {
        let mut gaps = Vec::new();
        assert_eq!(
            answer::<u32>(Err(NvmlError::NotSupported), metric::LOAD, &mut gaps),
            None
        );
        assert_eq!(
            answer::<u32>(Err(NvmlError::GpuLost), metric::FAN, &mut gaps),
            None
        );
        assert_eq!(answer(Ok(7u32), metric::FREQ, &mut gaps), Some(7));
        assert_eq!(gaps, vec![metric::LOAD, metric::FAN]);
    }
}
