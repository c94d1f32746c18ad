//! Jetson GPU figures read straight from sysfs, as jtop does: the preferred backend on every
//! Jetson (no root, no helper process).
//!
//! - GPU: the devfreq entry under `<sysfs>/class/devfreq/` whose `device/of_node/name` is a
//!   GPU (`ga10b` JP5 Orin, `gpu` JP6/7 Orin, `gv11b` Xavier, `gp10b` TX2, or any name
//!   containing `gpu`); load from `<entry>/device/load` (per-mille), clocks from
//!   `<entry>/{cur,min,max}_freq` (Hz). Files are read relative to the entry, never through
//!   `realpath`, so a fake tree of plain directories behaves like the kernel's symlinks.
//! - Temperatures: `<sysfs>/class/thermal/thermal_zone*/{type,temp}` (millidegrees), keyed by the
//!   normalised zone type; a zone that fails to read or reads -256 C is offline, not a reading.
//! - Power: INA3221 chips (`<sysfs>/bus/i2c/devices/*/name` containing `ina3221`), channels 1-3 of
//!   their `hwmon/hwmon*/`: `in<c>_label`, `in<c>_input` (mV), `curr<c>_input` (mA); unconnected
//!   (`NC`) channels and the `sum of shunt voltages` channel are skipped.
//! - Fan: the hwmon whose `name` is `pwmfan`, `pwm1` 0-255 (JetPack 4: `devices/pwm-fan/target_pwm`).
//! - EMC: debugfs clocks and activity counters, readable by root only; otherwise unsupported.
//!
//! Directories are listed on every sample (a few dozen entries): drivers that load late (the
//! INA3221 after boot) appear without restarting the agent.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use common::{GpuBackendKind, GpuStats, PowerRail, Reading};
use tracing::{debug, info};

use super::platform::Platform;
use super::{GpuBackend, GpuPaths, is_placeholder_sensor, mark_unsupported, metric, normalize_sensor_name};

/// `of_node` names of Jetson GPUs (see the module doc); any name containing `gpu` also counts.
const GPU_NODE_NAMES: [&str; 4] = ["ga10b", "gpu", "gv11b", "gp10b"];
/// INA3221 channels wired to rails; channel 7 is the sum of shunt voltages.
const INA3221_CHANNELS: std::ops::RangeInclusive<u32> = 1..=3;
/// Thermal zones report this (in degrees C) when a sensor is offline; jtop maps read errors to it.
const OFFLINE_TEMP_C: f64 = -256.0;
const PWM_MAX: f64 = 255.0;

/// EMC clock, first readable wins: BPMP debugfs (Xavier, Orin), Nano's clock override
/// debugfs, Thor's bandwidth-manager devfreq. Hz.
const EMC_RATE_FILES: [&str; 3] = [
    "kernel/debug/bpmp/debug/clk/emc/rate",
    "kernel/debug/clk/override.emc/clk_rate",
    "class/devfreq/bwmgr/cur_freq",
];
/// EMC activity counters, first readable wins (JP6 cactmon, Thor BPMP actmon, older actmon).
const EMC_ACTIVITY_FILES: [&str; 3] = [
    "kernel/debug/cactmon/mc_all",
    "kernel/debug/bpmp/debug/actmon/mc_all_avg_activity",
    "kernel/actmon_avg_activity/mc_all",
];

/// The Jetson sysfs backend.
#[derive(Debug, Clone)]
pub struct JetsonSysfs {
    devfreq: PathBuf,
    node_name: String,
    sysfs: PathBuf,
    platform: Platform,
}

impl JetsonSysfs {
    /// Finds the GPU devfreq device under `paths.sysfs`; `None` when there is none.
    pub fn probe(paths: &GpuPaths) -> Option<JetsonSysfs> {
        let (devfreq, node_name) = find_gpu_devfreq(&paths.sysfs)?;
        info!(devfreq = %devfreq.display(), of_node = %node_name, "jetson gpu devfreq found");
        Some(JetsonSysfs {
            devfreq,
            node_name,
            sysfs: paths.sysfs.clone(),
            platform: Platform::read(paths),
        })
    }

    /// `<sysfs>/class/devfreq/<entry>` of the GPU.
    pub fn devfreq_dir(&self) -> &Path {
        &self.devfreq
    }

    /// The GPU's device-tree node name (`gpu`, `ga10b`, ...).
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    fn read_gpu(&self, stats: &mut GpuStats) {
        match read_number(&self.devfreq.join("device/load")).map(|p| (p / 10.0) as f32) {
            Ok(pct) if pct.is_finite() => stats.load_pct = Some(pct),
            Ok(pct) => {
                debug!(value = pct, "gpu load out of range");
                mark_unsupported(stats, metric::LOAD);
            }
            Err(err) => {
                debug!(error = %err, "gpu load unreadable");
                mark_unsupported(stats, metric::LOAD);
            }
        }
        for (file, slot, name) in [
            ("cur_freq", &mut stats.freq_mhz, metric::FREQ),
            ("min_freq", &mut stats.min_freq_mhz, metric::MIN_FREQ),
            ("max_freq", &mut stats.max_freq_mhz, metric::MAX_FREQ),
        ] {
            *slot = read_number(&self.devfreq.join(file)).ok().and_then(hz_to_mhz);
            if slot.is_none() {
                stats.unsupported.push(name.to_string());
            }
        }
    }

    fn read_emc(&self, stats: &mut GpuStats) {
        let rate_hz = first_readable(&self.sysfs, &EMC_RATE_FILES).filter(|hz| *hz > 0.0);
        stats.emc_freq_mhz = rate_hz.and_then(hz_to_mhz);
        // jtop's formula: the activity counter divided by the EMC clock in kHz is a percentage
        // (UNCERTAIN: jtop issue #715 reports 0 % on JetPack 6.1).
        stats.emc_pct = rate_hz.and_then(|hz| {
            let activity = first_readable(&self.sysfs, &EMC_ACTIVITY_FILES)?;
            Some((activity / (hz / 1000.0)).clamp(0.0, 100.0) as f32)
        });
        if stats.emc_freq_mhz.is_none() {
            mark_unsupported(stats, metric::EMC_FREQ);
        }
        if stats.emc_pct.is_none() {
            mark_unsupported(stats, metric::EMC);
        }
    }
}

impl GpuBackend for JetsonSysfs {
    fn kind(&self) -> GpuBackendKind {
        GpuBackendKind::JetsonSysfs
    }

    fn sample(&mut self) -> Option<GpuStats> {
        let mut stats = GpuStats {
            backend: GpuBackendKind::JetsonSysfs,
            ..GpuStats::default()
        };
        self.read_gpu(&mut stats);
        self.read_emc(&mut stats);

        let zones = read_thermal_zones(&self.sysfs);
        stats.temperatures = zones.readings;
        for sensor in &zones.offline {
            mark_unsupported(&mut stats, &metric::temp(sensor));
        }
        if stats.temperatures.is_empty() {
            mark_unsupported(&mut stats, metric::TEMPERATURES);
        }

        let rails = read_ina3221_rails(&self.sysfs);
        stats.rails = rails.rails;
        for label in &rails.unreadable {
            mark_unsupported(&mut stats, &metric::rail(label));
        }
        if stats.rails.is_empty() {
            mark_unsupported(&mut stats, metric::RAILS);
        }

        stats.fan_pct = read_fan_pct(&self.sysfs);
        if stats.fan_pct.is_none() {
            mark_unsupported(&mut stats, metric::FAN);
        }

        self.platform.fill(&mut stats);
        Some(stats)
    }
}

/// MHz, or None when the value does not fit an f32 (a corrupt file: found by
/// tests/tests/fuzz.rs; telemetry carries no infinities).
fn hz_to_mhz(hz: f64) -> Option<f32> {
    Some((hz / 1_000_000.0) as f32).filter(|v| v.is_finite())
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} holds {content:?}, not a number")]
    NotANumber { path: PathBuf, content: String },
}

/// Reads a sysfs file holding one value.
fn read_value<T: FromStr>(path: &Path) -> Result<T, ReadError> {
    let text = read_trimmed(path)?;
    text.parse().map_err(|_| ReadError::NotANumber {
        path: path.to_path_buf(),
        content: text.chars().take(32).collect(),
    })
}

/// Reads a sysfs file holding one finite number (`NaN` and `inf` parse as f64 but are not data).
fn read_number(path: &Path) -> Result<f64, ReadError> {
    let v: f64 = read_value(path)?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(ReadError::NotANumber {
            path: path.to_path_buf(),
            content: v.to_string(),
        })
    }
}

/// A sysfs text file without surrounding whitespace or the NUL that device-tree strings end in.
fn read_trimmed(path: &Path) -> Result<String, ReadError> {
    let bytes = fs::read(path).map_err(|source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(String::from_utf8_lossy(&bytes)
        .trim_matches(|c: char| c == '\0' || c.is_whitespace())
        .to_string())
}

fn first_readable(root: &Path, files: &[&str]) -> Option<f64> {
    files.iter().find_map(|f| read_number(&root.join(f)).ok())
}

/// Entries of `dir`, sorted by name, for a stable order across samples.
fn sorted_entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut entries: Vec<(String, PathBuf)> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| (e.file_name().to_string_lossy().to_string(), e.path()))
                .collect()
        })
        .unwrap_or_default();
    entries.sort();
    entries
}

fn is_gpu_node_name(name: &str) -> bool {
    GPU_NODE_NAMES.contains(&name) || name.contains("gpu")
}

/// The GPU's devfreq entry and its `of_node` name. Known Jetson names win over other names
/// containing `gpu` (Thor lists `gpu-gpc-0` and `gpu-nvd-0`; the first in name order is used).
fn find_gpu_devfreq(sysfs: &Path) -> Option<(PathBuf, String)> {
    let mut fallback = None;
    for (entry_name, entry) in sorted_entries(&sysfs.join("class/devfreq")) {
        let Ok(node) = read_trimmed(&entry.join("device/of_node/name")) else {
            debug!(entry = %entry_name, "devfreq entry without of_node name");
            continue;
        };
        if GPU_NODE_NAMES.contains(&node.as_str()) {
            return Some((entry, node));
        }
        if is_gpu_node_name(&node) && fallback.is_none() {
            fallback = Some((entry, node));
        } else {
            debug!(entry = %entry_name, of_node = %node, "devfreq entry is not a gpu");
        }
    }
    fallback
}

#[derive(Debug, Default, PartialEq)]
struct Zones {
    readings: Vec<Reading>,
    /// Normalised names of zones that exist but gave no reading.
    offline: Vec<String>,
}

fn zone_index(name: &str) -> Option<u32> {
    name.strip_prefix("thermal_zone")?.parse().ok()
}

fn read_thermal_zones(sysfs: &Path) -> Zones {
    let mut zones: Vec<(u32, PathBuf)> = sorted_entries(&sysfs.join("class/thermal"))
        .into_iter()
        .filter_map(|(name, path)| Some((zone_index(&name)?, path)))
        .collect();
    // Numeric order (zone2 before zone10), matching tegrastats and jtop listings.
    zones.sort();
    let mut out = Zones::default();
    for (index, zone) in zones {
        let Ok(kind) = read_trimmed(&zone.join("type")) else {
            debug!(zone = index, "thermal zone without type");
            continue;
        };
        let name = normalize_sensor_name(&kind);
        if is_placeholder_sensor(&name) {
            out.offline.push(name);
            continue;
        }
        match read_number(&zone.join("temp")) {
            Ok(milli_c) if milli_c / 1000.0 > OFFLINE_TEMP_C && milli_c != OFFLINE_TEMP_C => {
                out.readings.push(Reading::new(name, milli_c / 1000.0));
            }
            Ok(milli_c) => {
                debug!(zone = index, sensor = %name, value = milli_c, "thermal zone offline");
                out.offline.push(name);
            }
            Err(err) => {
                debug!(zone = index, sensor = %name, error = %err, "thermal zone unreadable");
                out.offline.push(name);
            }
        }
    }
    out
}

#[derive(Debug, Default, PartialEq)]
struct Rails {
    rails: Vec<PowerRail>,
    /// Labels of connected channels whose voltage or current could not be read.
    unreadable: Vec<String>,
}

/// `NC` = not connected. Matched as a whole word so a rail named e.g. `VDD_SYNC` is kept.
fn is_unconnected_label(label: &str) -> bool {
    label
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| w == "NC")
        || label.eq_ignore_ascii_case("sum of shunt voltages")
}

fn read_ina3221_rails(sysfs: &Path) -> Rails {
    let mut out = Rails::default();
    for (dev_name, dev) in sorted_entries(&sysfs.join("bus/i2c/devices")) {
        let is_ina = read_trimmed(&dev.join("name")).is_ok_and(|n| n.contains("ina3221"));
        if !is_ina {
            continue;
        }
        let hwmons: Vec<PathBuf> = sorted_entries(&dev.join("hwmon"))
            .into_iter()
            .filter(|(name, _)| name.starts_with("hwmon"))
            .map(|(_, path)| path)
            .collect();
        if hwmons.is_empty() {
            debug!(device = %dev_name, "ina3221 without hwmon directory");
        }
        for hwmon in hwmons {
            for c in INA3221_CHANNELS {
                let Ok(label) = read_trimmed(&hwmon.join(format!("in{c}_label"))) else {
                    continue;
                };
                if label.is_empty() || is_unconnected_label(&label) {
                    continue;
                }
                let mv = read_number(&hwmon.join(format!("in{c}_input")));
                let ma = read_number(&hwmon.join(format!("curr{c}_input")));
                match (mv, ma) {
                    // (a product out of range is as unreadable as a bad file)
                    (Ok(mv), Ok(ma)) if (mv * ma / 1000.0).is_finite() => out.rails.push(PowerRail {
                        power_mw: mv * ma / 1000.0,
                        name: label,
                        voltage_mv: Some(mv),
                        current_ma: Some(ma),
                        avg_power_mw: None,
                    }),
                    (mv, ma) => {
                        let err = mv.err().or(ma.err()).map(|e| e.to_string()).unwrap_or_default();
                        debug!(device = %dev_name, rail = %label, error = %err, "ina3221 channel unreadable");
                        out.unreadable.push(label);
                    }
                }
            }
        }
    }
    out
}

fn read_fan_pct(sysfs: &Path) -> Option<f32> {
    let pwm = sorted_entries(&sysfs.join("class/hwmon"))
        .into_iter()
        .filter(|(_, dir)| read_trimmed(&dir.join("name")).is_ok_and(|n| n == "pwmfan"))
        .find_map(|(_, dir)| read_number(&dir.join("pwm1")).ok())
        // JetPack 4 (Nano, TX2, Xavier on L4T R32) has no pwmfan hwmon.
        .or_else(|| read_number(&sysfs.join("devices/pwm-fan/target_pwm")).ok())?;
    Some((pwm * 100.0 / PWM_MAX).clamp(0.0, 100.0) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_paths(name: &str) -> GpuPaths {
        GpuPaths::under_root(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/jetson")
                .join(name),
        )
    }

    fn temp(stats: &GpuStats, name: &str) -> Option<f64> {
        stats
            .temperatures
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.value)
    }

    fn assert_close(got: f64, want: f64) {
        assert!((got - want).abs() < 1e-6, "got {got}, want {want}");
    }

    fn has(stats: &GpuStats, name: &str) -> bool {
        stats.unsupported.iter().any(|n| n == name)
    }

    #[test]
    fn orin_nano_jp6_tree_reports_gpu_temperatures_rails_fan_and_platform() {
        let mut backend = JetsonSysfs::probe(&fixture_paths("orin-nano-jp6")).expect("gpu devfreq found");
        assert_eq!(backend.node_name(), "gpu");
        assert!(backend.devfreq_dir().ends_with("class/devfreq/17000000.gpu"));
        let stats = backend.sample().unwrap();
        assert_eq!(stats.backend, GpuBackendKind::JetsonSysfs);
        assert_eq!(stats.load_pct, Some(41.5));
        assert_eq!(stats.freq_mhz, Some(612.0));
        assert_eq!(stats.min_freq_mhz, Some(306.0));
        assert_eq!(stats.max_freq_mhz, Some(918.0));

        let names: Vec<&str> = stats.temperatures.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, vec!["cpu", "gpu", "soc0", "tj"]);
        assert_eq!(temp(&stats, "cpu"), Some(47.5));
        assert_eq!(temp(&stats, "gpu"), Some(46.812));
        assert_eq!(temp(&stats, "soc0"), Some(45.937));
        assert_eq!(temp(&stats, "tj"), Some(48.062));
        assert_eq!(temp(&stats, "cv0"), None);
        assert!(has(&stats, "temp:cv0"), "{:?}", stats.unsupported);
        assert_eq!(stats.gpu_temp_c(), Some(46.812));

        let rails: Vec<(&str, f64)> = stats
            .rails
            .iter()
            .map(|r| (r.name.as_str(), r.power_mw))
            .collect();
        assert_eq!(rails.len(), 3, "{rails:?}");
        assert_eq!(rails[0].0, "VDD_IN");
        assert_close(rails[0].1, 4795.52);
        assert_eq!(rails[1].0, "VDD_CPU_GPU_CV");
        assert_close(rails[1].1, 568.064);
        assert_eq!(rails[2].0, "VDD_SOC");
        assert_close(rails[2].1, 1433.112);
        assert_eq!(stats.rails[0].voltage_mv, Some(5080.0));
        assert_eq!(stats.rails[0].current_ma, Some(944.0));
        assert_eq!(stats.rails[0].avg_power_mw, None);
        assert_close(stats.total_power_mw().unwrap(), 4795.52);

        assert_eq!(stats.fan_pct, Some(40.0));
        assert_eq!(stats.memory_used_bytes, Some(204_800 * 1024));
        assert_eq!(
            stats.board.as_deref(),
            Some("NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super")
        );
        assert_eq!(stats.l4t.as_deref(), Some("36.4.3"));
        assert_eq!(stats.jetpack.as_deref(), Some("6.2"));
        assert_eq!(stats.nvpmodel.as_deref(), Some("25W"));

        // No debugfs in this tree: EMC is unsupported, not 0.
        assert_eq!((stats.emc_pct, stats.emc_freq_mhz), (None, None));
        assert!(has(&stats, "emc") && has(&stats, "emc_freq"));
        let mut unsupported = stats.unsupported.clone();
        unsupported.sort();
        assert_eq!(unsupported, vec!["emc", "emc_freq", "temp:cv0"]);
    }

    #[test]
    fn agx_orin_jp5_tree_reports_jp5_names_two_ina3221_chips_and_emc() {
        let mut backend = JetsonSysfs::probe(&fixture_paths("agx-orin-jp5")).expect("gpu devfreq found");
        assert_eq!(backend.node_name(), "ga10b");
        let stats = backend.sample().unwrap();
        assert_eq!(stats.load_pct, Some(8.7));
        assert_eq!(stats.freq_mhz, Some(306.0));
        assert_eq!(stats.max_freq_mhz, Some(1300.5));

        let names: Vec<&str> = stats.temperatures.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, vec!["cpu", "gpu", "tboard"]);
        assert_eq!(temp(&stats, "cpu"), Some(42.593));
        assert_eq!(temp(&stats, "gpu"), Some(38.156));
        assert_eq!(temp(&stats, "tboard"), Some(32.0));
        // CV0-therm reads -256000: offline, not a reading.
        assert!(has(&stats, "temp:cv0"), "{:?}", stats.unsupported);

        let rails: Vec<(&str, f64)> = stats
            .rails
            .iter()
            .map(|r| (r.name.as_str(), r.power_mw))
            .collect();
        let want = [
            ("VDD_GPU_SOC", 2398.832),
            ("VDD_CPU_CV", 400.64),
            ("VIN_SYS_5V0", 4032.0),
            ("VDDQ_VDD2_1V8AO", 301.92),
        ];
        assert_eq!(rails.len(), want.len(), "{rails:?}");
        for ((got_name, got_mw), (want_name, want_mw)) in rails.iter().zip(want) {
            assert_eq!(*got_name, want_name);
            assert_close(*got_mw, want_mw);
        }
        // No VDD_IN on AGX Orin: the total is the sum of the rails.
        assert_close(
            stats.total_power_mw().unwrap(),
            2398.832 + 400.64 + 4032.0 + 301.92,
        );

        assert_eq!(stats.emc_freq_mhz, Some(2133.0));
        assert_eq!(stats.emc_pct, Some(12.0));

        assert_eq!(stats.fan_pct, None);
        assert!(has(&stats, "fan"));
        assert_eq!(stats.memory_used_bytes, None);
        assert!(has(&stats, "memory"));
        assert_eq!(
            stats.board.as_deref(),
            Some("NVIDIA Jetson AGX Orin Developer Kit")
        );
        assert_eq!(stats.l4t.as_deref(), Some("35.4.1"));
        assert_eq!(stats.jetpack.as_deref(), Some("5.1.2"));
        assert_eq!(stats.nvpmodel.as_deref(), Some("MAXN"));
        let mut unsupported = stats.unsupported.clone();
        unsupported.sort();
        assert_eq!(unsupported, vec!["fan", "memory", "temp:cv0"]);
    }

    #[test]
    fn probe_finds_nothing_in_an_empty_tree() {
        let dir = tempfile::tempdir().unwrap();
        assert!(JetsonSysfs::probe(&GpuPaths::under_root(dir.path())).is_none());
    }

    #[test]
    fn probe_skips_devfreq_entries_that_are_not_gpus_and_falls_back_to_names_with_gpu() {
        let dir = tempfile::tempdir().unwrap();
        let devfreq = dir.path().join("sys/class/devfreq");
        for (entry, node) in [
            ("15340000.vic", "vic\0"),
            ("gpu-nvd-0", "nvd-gpu\0"),
            ("a.emc", "emc\0"),
        ] {
            fs::create_dir_all(devfreq.join(entry).join("device/of_node")).unwrap();
            fs::write(devfreq.join(entry).join("device/of_node/name"), node).unwrap();
        }
        fs::create_dir_all(devfreq.join("no-node")).unwrap();
        let backend = JetsonSysfs::probe(&GpuPaths::under_root(dir.path())).unwrap();
        assert_eq!(backend.node_name(), "nvd-gpu");

        // A known name wins over a fallback that sorts earlier.
        fs::create_dir_all(devfreq.join("z.gv11b/device/of_node")).unwrap();
        fs::write(devfreq.join("z.gv11b/device/of_node/name"), "gv11b\0").unwrap();
        let mut backend = JetsonSysfs::probe(&GpuPaths::under_root(dir.path())).unwrap();
        assert_eq!(backend.node_name(), "gv11b");

        // Nothing else in this tree: every metric is unsupported, nothing is reported as 0.
        let stats = backend.sample().unwrap();
        assert_eq!(stats.load_pct, None);
        assert_eq!(stats.freq_mhz, None);
        assert!(stats.temperatures.is_empty() && stats.rails.is_empty());
        for name in [
            "load",
            "freq",
            "min_freq",
            "max_freq",
            "emc",
            "temperatures",
            "rails",
            "fan",
            "board",
        ] {
            assert!(has(&stats, name), "{name}: {:?}", stats.unsupported);
        }
    }

    #[test]
    fn unreadable_rail_values_are_reported_not_zeroed() {
        let dir = tempfile::tempdir().unwrap();
        let hwmon = dir.path().join("sys/bus/i2c/devices/1-0040/hwmon/hwmon1");
        fs::create_dir_all(&hwmon).unwrap();
        fs::write(dir.path().join("sys/bus/i2c/devices/1-0040/name"), "ina3221\n").unwrap();
        fs::write(hwmon.join("in1_label"), "VDD_IN\n").unwrap();
        fs::write(hwmon.join("in1_input"), "5000\n").unwrap();
        fs::write(hwmon.join("curr1_input"), "garbage\n").unwrap();
        fs::write(hwmon.join("in2_label"), "VDD_SYNC\n").unwrap();
        fs::write(hwmon.join("in2_input"), "1000\n").unwrap();
        fs::write(hwmon.join("curr2_input"), "20\n").unwrap();
        let rails = read_ina3221_rails(&dir.path().join("sys"));
        assert_eq!(rails.unreadable, vec!["VDD_IN".to_string()]);
        assert_eq!(rails.rails.len(), 1);
        assert_eq!(rails.rails[0].name, "VDD_SYNC");
        assert_close(rails.rails[0].power_mw, 20.0);
    }

    #[test]
    fn values_out_of_range_are_unreadable_not_infinite() {
        let dir = tempfile::tempdir().unwrap();
        let hwmon = dir.path().join("sys/bus/i2c/devices/1-0040/hwmon/hwmon1");
        fs::create_dir_all(&hwmon).unwrap();
        fs::write(dir.path().join("sys/bus/i2c/devices/1-0040/name"), "ina3221\n").unwrap();
        fs::write(hwmon.join("in1_label"), "VDD_IN\n").unwrap();
        fs::write(hwmon.join("in1_input"), "5072\n").unwrap();
        fs::write(hwmon.join("curr1_input"), "1e308\n").unwrap();
        let rails = read_ina3221_rails(&dir.path().join("sys"));
        assert_eq!(rails.unreadable, vec!["VDD_IN".to_string()]);
        assert!(rails.rails.is_empty());
        assert_eq!(hz_to_mhz(1e300), None);
        assert_eq!(hz_to_mhz(918_000_000.0), Some(918.0));
    }

    #[test]
    fn unconnected_labels_are_whole_word_nc_or_the_shunt_sum() {
        assert!(is_unconnected_label("NC"));
        assert!(is_unconnected_label("sum of shunt voltages"));
        assert!(!is_unconnected_label("VDD_SYNC"));
        assert!(!is_unconnected_label("VDD_IN"));
    }

    #[test]
    fn read_errors_name_the_file() {
        let err = read_value::<u32>(Path::new("/nonexistent/rvm/load")).unwrap_err();
        assert!(
            err.to_string().starts_with("cannot read /nonexistent/rvm/load"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("load");
        fs::write(&f, "abc\n").unwrap();
        let err = read_value::<u32>(&f).unwrap_err();
        assert!(err.to_string().ends_with("holds \"abc\", not a number"), "{err}");
    }
}
