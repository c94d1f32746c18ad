//! GPU backends: where a machine's [`GpuStats`] come from, and which one the agent uses.
//!
//! # Layout
//! - [`sysfs`]: Jetson devfreq, thermal zones, INA3221 hwmon rails, fan and EMC read straight
//!   from sysfs (preferred on every Jetson: it needs no root and no helper process)
//! - [`tegrastats`]: a pure parser of tegrastats lines ([`tegrastats::parse`]) and a backend that
//!   runs the command ([`tegrastats::backend`])
//! - [`nvml`]: NVML through `nvml-wrapper` (discrete GPUs, Jetson Thor)
//! - [`reprobe`]: `auto` looking again, while the agent runs, for a source that appeared later
//! - [`platform`]: board model, L4T/JetPack, nvpmodel mode and NvMap memory, shared by backends
//!
//! # Invariants
//! - A metric a backend cannot read is `None` (or missing from its list) and its name, from
//!   [`metric`], is in `unsupported`: never a made-up 0.
//! - `sample()` never panics and may block on file or FFI IO; the caller runs it on a blocking
//!   thread with a timeout.
//! - [`select`] runs at start-up. For [`GpuChoice::Auto`] the chain is Jetson sysfs ->
//!   tegrastats -> NVML -> none; every backend skipped leaves a note saying why, so an operator
//!   can tell "no GPU" from "GPU present but unreadable". The agent wraps the choice in
//!   [`reprobe::Reprobing`], which moves to a better source that appears later.
//! - Temperatures are keyed by normalised sensor names ([`normalize_sensor_name`]), so the
//!   sysfs zone `CPU-therm`, the zone `cpu-thermal` and tegrastats' `CPU@` all become `cpu`.

pub mod nvml;
pub mod platform;
pub mod reprobe;
pub mod sysfs;
pub mod tegrastats;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use common::{GpuBackendKind, GpuStats};
use serde::Deserialize;
use tracing::{debug, info};

/// A source of GPU figures.
pub trait GpuBackend: Send + 'static {
    fn kind(&self) -> GpuBackendKind;
    /// One sample; blocking IO allowed (the caller runs it on a blocking thread with a timeout).
    fn sample(&mut self) -> Option<GpuStats>;
    /// A change of source since the last call, reported once ([`reprobe::Reprobing`]).
    fn take_change(&mut self) -> Option<reprobe::SourceChange> {
        None
    }
}

/// Names used in [`GpuStats::unsupported`]; one vocabulary for every backend.
pub mod metric {
    pub const LOAD: &str = "load";
    pub const FREQ: &str = "freq";
    pub const MIN_FREQ: &str = "min_freq";
    pub const MAX_FREQ: &str = "max_freq";
    pub const EMC: &str = "emc";
    pub const EMC_FREQ: &str = "emc_freq";
    pub const TEMPERATURES: &str = "temperatures";
    pub const RAILS: &str = "rails";
    pub const FAN: &str = "fan";
    pub const MEMORY: &str = "memory";
    pub const NVPMODEL: &str = "nvpmodel";
    pub const BOARD: &str = "board";
    pub const L4T: &str = "l4t";
    pub const JETPACK: &str = "jetpack";

    /// One temperature sensor that exists but gives no reading (offline, unreadable).
    pub fn temp(sensor: &str) -> String {
        format!("temp:{sensor}")
    }

    /// One power rail whose files exist but cannot be read.
    pub fn rail(name: &str) -> String {
        format!("rail:{name}")
    }
}

/// Adds `name` to `stats.unsupported` once.
pub(crate) fn mark_unsupported(stats: &mut GpuStats, name: &str) {
    if !stats.unsupported.iter().any(|n| n == name) {
        stats.unsupported.push(name.to_string());
    }
}

/// Which backend the configuration asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuChoice {
    /// Try Jetson sysfs, then tegrastats, then NVML; none if all fail.
    #[default]
    Auto,
    Jetson,
    Tegrastats,
    Nvml,
    /// No GPU collection at all.
    None,
}

impl GpuChoice {
    const NAMES: [(&'static str, GpuChoice); 5] = [
        ("auto", GpuChoice::Auto),
        ("jetson", GpuChoice::Jetson),
        ("tegrastats", GpuChoice::Tegrastats),
        ("nvml", GpuChoice::Nvml),
        ("none", GpuChoice::None),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GpuChoice::Auto => "auto",
            GpuChoice::Jetson => "jetson",
            GpuChoice::Tegrastats => "tegrastats",
            GpuChoice::Nvml => "nvml",
            GpuChoice::None => "none",
        }
    }
}

impl fmt::Display for GpuChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown gpu backend {0:?}: expected one of auto, jetson, tegrastats, nvml, none")]
pub struct UnknownGpuChoice(pub String);

impl FromStr for GpuChoice {
    type Err = UnknownGpuChoice;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        Self::NAMES
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
            .map(|(_, choice)| *choice)
            .ok_or_else(|| UnknownGpuChoice(s.to_string()))
    }
}

/// Where the backends look. Every path is configurable so tests (and containers that mount the
/// host's `/sys` elsewhere) can point them at another root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuPaths {
    /// Usually `/sys`.
    pub sysfs: PathBuf,
    /// Usually `/proc` (`device-tree/model`, `meminfo`).
    pub procfs: PathBuf,
    /// Root for `etc/nv_tegra_release`, `etc/nvpmodel.conf` and `var/lib/nvpmodel/status`;
    /// usually `/`.
    pub etc_root: PathBuf,
    /// Command line of tegrastats; `{ms}` is replaced by `interval_ms`.
    pub tegrastats_command: String,
    pub interval_ms: u64,
    /// NVML library to load; `None` tries `libnvidia-ml.so.1` then `libnvidia-ml.so`.
    pub nvml_library: Option<PathBuf>,
}

/// tegrastats' own default interval, and the agent's default tick.
pub const DEFAULT_INTERVAL_MS: u64 = 1_000;
pub const DEFAULT_TEGRASTATS_COMMAND: &str = "tegrastats --interval {ms}";

impl Default for GpuPaths {
    fn default() -> Self {
        GpuPaths {
            sysfs: PathBuf::from("/sys"),
            procfs: PathBuf::from("/proc"),
            etc_root: PathBuf::from("/"),
            tegrastats_command: DEFAULT_TEGRASTATS_COMMAND.to_string(),
            interval_ms: DEFAULT_INTERVAL_MS,
            nvml_library: None,
        }
    }
}

impl GpuPaths {
    /// Paths inside a fake root laid out as `<root>/sys`, `<root>/proc`, `<root>/etc`, `<root>/var`.
    pub fn under_root(root: &Path) -> Self {
        GpuPaths {
            sysfs: root.join("sys"),
            procfs: root.join("proc"),
            etc_root: root.to_path_buf(),
            ..GpuPaths::default()
        }
    }
}

/// The backend used when no GPU can be read: every sample is `None`.
#[derive(Debug, Default)]
pub struct NoGpu;

impl GpuBackend for NoGpu {
    fn kind(&self) -> GpuBackendKind {
        GpuBackendKind::None
    }

    fn sample(&mut self) -> Option<GpuStats> {
        None
    }
}

/// Capability string for the birth message (`gpu:jetson_sysfs`, ...).
pub fn capability(kind: GpuBackendKind) -> &'static str {
    match kind {
        GpuBackendKind::JetsonSysfs => "gpu:jetson_sysfs",
        GpuBackendKind::Tegrastats => "gpu:tegrastats",
        GpuBackendKind::Nvml => "gpu:nvml",
        GpuBackendKind::Simulated => "gpu:simulated",
        GpuBackendKind::None => "gpu:none",
    }
}

/// Why a candidate backend could not be opened.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error("no gpu devfreq device under {0}")]
    NoDevfreq(PathBuf),
    #[error(transparent)]
    Tegrastats(#[from] tegrastats::backend::TegrastatsError),
    #[error(transparent)]
    Nvml(#[from] nvml::NvmlProbeError),
}

/// The candidates in chain order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Candidate {
    Jetson,
    Tegrastats,
    Nvml,
}

impl Candidate {
    /// The `auto` chain, best first.
    const AUTO_CHAIN: [Candidate; 3] = [Candidate::Jetson, Candidate::Tegrastats, Candidate::Nvml];

    /// The kind of backend it opens.
    fn kind(self) -> GpuBackendKind {
        match self {
            Candidate::Jetson => GpuBackendKind::JetsonSysfs,
            Candidate::Tegrastats => GpuBackendKind::Tegrastats,
            Candidate::Nvml => GpuBackendKind::Nvml,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Candidate::Jetson => "jetson sysfs",
            Candidate::Tegrastats => "tegrastats",
            Candidate::Nvml => "nvml",
        }
    }

    fn open(self, paths: &GpuPaths) -> Result<Box<dyn GpuBackend>, OpenError> {
        Ok(match self {
            Candidate::Jetson => Box::new(
                sysfs::JetsonSysfs::probe(paths)
                    .ok_or_else(|| OpenError::NoDevfreq(paths.sysfs.join("class/devfreq")))?,
            ),
            Candidate::Tegrastats => Box::new(tegrastats::backend::TegrastatsBackend::start(paths)?),
            Candidate::Nvml => Box::new(nvml::NvmlBackend::probe(paths)?),
        })
    }
}

/// Picks the backend for `choice`. The notes say why each earlier backend in the chain was
/// skipped (and, for an explicit choice that fails, why GPU collection is off).
pub fn select(choice: GpuChoice, paths: &GpuPaths) -> (Box<dyn GpuBackend>, Vec<String>) {
    let chain: &[Candidate] = match choice {
        GpuChoice::Auto => &Candidate::AUTO_CHAIN,
        GpuChoice::Jetson => &[Candidate::Jetson],
        GpuChoice::Tegrastats => &[Candidate::Tegrastats],
        GpuChoice::Nvml => &[Candidate::Nvml],
        GpuChoice::None => &[],
    };
    let mut notes = Vec::new();
    if choice == GpuChoice::None {
        notes.push("gpu collection disabled by configuration".to_string());
    }
    for candidate in chain {
        match candidate.open(paths) {
            Ok(backend) => {
                info!(choice = %choice, backend = capability(backend.kind()), "gpu backend selected");
                return (backend, notes);
            }
            Err(reason) => {
                debug!(backend = candidate.name(), reason = %reason, "gpu backend skipped");
                notes.push(format!("{}: {reason}", candidate.name()));
            }
        }
    }
    info!(choice = %choice, "no gpu backend available");
    (Box::new(NoGpu), notes)
}

/// Normalised sensor name: lowercase, without the `-thermal` / `-therm` / `_tegra` / `-die`
/// suffixes, so sysfs zone types and tegrastats labels of one sensor compare equal
/// (`CPU-therm`, `cpu-thermal`, `CPU` -> `cpu`; `Tboard_tegra` -> `tboard`).
pub fn normalize_sensor_name(raw: &str) -> String {
    let lower = raw.trim().to_ascii_lowercase();
    // tegrastats prints the zone `thermal-fan-est` as `thermal`.
    if lower == "thermal-fan-est" {
        return "thermal".to_string();
    }
    for suffix in ["-thermal", "-therm", "_tegra", "-die"] {
        if let Some(stem) = lower.strip_suffix(suffix)
            && !stem.is_empty()
        {
            return stem.to_string();
        }
    }
    lower
}

/// Sensors whose value is a constant, not a measurement: `PMIC-Die` reads a fixed 100 C (50 C
/// on some images) on Nano, TX and Xavier boards; jtop skips it too. Reported as unsupported.
pub(crate) fn is_placeholder_sensor(normalized: &str) -> bool {
    normalized == "pmic"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_root(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/jetson")
            .join(name)
    }

    /// Paths that cannot reach a real tegrastats or NVML, whatever the test machine has.
    fn build_isolated_paths(root: &Path) -> GpuPaths {
        GpuPaths {
            tegrastats_command: "/nonexistent/rvm-test/tegrastats --interval {ms}".into(),
            nvml_library: Some(PathBuf::from("/nonexistent/rvm-test/libnvidia-ml.so.1")),
            ..GpuPaths::under_root(root)
        }
    }

    #[test]
    fn gpu_choice_parses_every_name_in_any_case() {
        for (name, choice) in GpuChoice::NAMES {
            assert_eq!(name.parse::<GpuChoice>(), Ok(choice));
            assert_eq!(name.to_uppercase().parse::<GpuChoice>(), Ok(choice));
            assert_eq!(choice.to_string(), name);
        }
    }

    #[test]
    fn unknown_gpu_choice_error_names_the_value_and_the_options() {
        let err = "cuda".parse::<GpuChoice>().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("\"cuda\""), "{msg}");
        assert!(msg.contains("auto, jetson, tegrastats, nvml, none"), "{msg}");
    }

    #[test]
    fn gpu_choice_deserializes_from_snake_case() {
        #[derive(Deserialize)]
        struct Conf {
            gpu: GpuChoice,
        }
        let conf: Conf = toml::from_str("gpu = \"tegrastats\"").unwrap();
        assert_eq!(conf.gpu, GpuChoice::Tegrastats);
        let conf: Conf = toml::from_str("gpu = \"none\"").unwrap();
        assert_eq!(conf.gpu, GpuChoice::None);
        assert!(toml::from_str::<Conf>("gpu = \"Jetson\"").is_err());
    }

    #[test]
    fn sensor_names_from_sysfs_and_tegrastats_normalise_alike() {
        for (raw, want) in [
            ("cpu-thermal", "cpu"),
            ("CPU-therm", "cpu"),
            ("CPU", "cpu"),
            ("tj-thermal", "tj"),
            ("tj-therm", "tj"),
            ("SOC0-therm", "soc0"),
            ("soc0", "soc0"),
            ("Tboard_tegra", "tboard"),
            ("Tdiode", "tdiode"),
            ("PMIC-Die", "pmic"),
            ("thermal-fan-est", "thermal"),
            ("thermal", "thermal"),
            ("-thermal", "-thermal"),
        ] {
            assert_eq!(normalize_sensor_name(raw), want, "{raw}");
        }
    }

    #[test]
    fn auto_selects_jetson_sysfs_on_the_fake_orin_nano_tree() {
        let paths = build_isolated_paths(&fixture_root("orin-nano-jp6"));
        let (mut backend, notes) = select(GpuChoice::Auto, &paths);
        assert_eq!(backend.kind(), GpuBackendKind::JetsonSysfs);
        assert!(notes.is_empty(), "{notes:?}");
        let stats = backend.sample().expect("sysfs always samples");
        assert_eq!(stats.backend, GpuBackendKind::JetsonSysfs);
    }

    #[test]
    fn auto_selects_none_on_an_empty_root_and_says_why_for_each_backend() {
        let dir = tempfile::tempdir().unwrap();
        let paths = build_isolated_paths(dir.path());
        let (mut backend, notes) = select(GpuChoice::Auto, &paths);
        assert_eq!(backend.kind(), GpuBackendKind::None);
        assert!(backend.sample().is_none());
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(
            notes[0].starts_with("jetson sysfs: no gpu devfreq device under"),
            "{notes:?}"
        );
        assert!(notes[1].starts_with("tegrastats: "), "{notes:?}");
        assert!(notes[1].contains("/nonexistent/rvm-test/tegrastats"), "{notes:?}");
        assert!(notes[2].starts_with("nvml: "), "{notes:?}");
    }

    #[test]
    fn explicit_choice_does_not_fall_through_the_chain() {
        let paths = build_isolated_paths(&fixture_root("orin-nano-jp6"));
        let (backend, notes) = select(GpuChoice::Nvml, &paths);
        assert_eq!(backend.kind(), GpuBackendKind::None);
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].starts_with("nvml: "), "{notes:?}");

        let (backend, notes) = select(GpuChoice::None, &paths);
        assert_eq!(backend.kind(), GpuBackendKind::None);
        assert_eq!(
            notes,
            vec!["gpu collection disabled by configuration".to_string()]
        );

        let (backend, _) = select(GpuChoice::Jetson, &paths);
        assert_eq!(backend.kind(), GpuBackendKind::JetsonSysfs);
    }

    #[test]
    fn capability_names_match_the_wire_kind_names() {
        assert_eq!(capability(GpuBackendKind::JetsonSysfs), "gpu:jetson_sysfs");
        assert_eq!(capability(GpuBackendKind::None), "gpu:none");
    }
}
