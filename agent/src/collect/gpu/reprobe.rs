//! Looking again for a better GPU source while the agent runs.
//!
//! [`super::select`] runs once at start-up, and a source can appear later: on JetPack 7 the
//! Jetson devfreq node may show up after the agent started (jtop's users hit this: their
//! service fell back to NVML, which answers NotSupported on Orin, and showed 0 % until it was
//! restarted). With `gpu_backend = "auto"`, [`Reprobing`] tries the sources ranked above the
//! one it has every [`REPROBE_EVERY`] and moves to the best that opens, handing the change to
//! the collector once ([`GpuBackend::take_change`]), which reports it as an event. An explicit
//! choice is never second-guessed.

use std::time::{Duration, Instant};

use common::{GpuBackendKind, GpuStats};
use tracing::{debug, info};

use super::{Candidate, GpuBackend, GpuChoice, GpuPaths, capability};

/// How often `auto` looks for a better source than the one it has.
pub const REPROBE_EVERY: Duration = Duration::from_secs(60);

/// The GPU source changed while the agent ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceChange {
    pub from: GpuBackendKind,
    pub to: GpuBackendKind,
}

impl SourceChange {
    /// The line for the event log.
    pub fn message(&self) -> String {
        format!(
            "gpu source changed from {} to {}: a better source appeared after the agent started",
            capability(self.from),
            capability(self.to)
        )
    }
}

/// How good a source is, in the `auto` chain's order (higher is better).
pub fn rank(kind: GpuBackendKind) -> u8 {
    match kind {
        GpuBackendKind::JetsonSysfs => 3,
        GpuBackendKind::Tegrastats => 2,
        GpuBackendKind::Nvml => 1,
        GpuBackendKind::Simulated | GpuBackendKind::None => 0,
    }
}

/// The candidates worth trying when the current source is `current`: those of the `auto`
/// chain ranked above it, best first. None for an explicit choice.
pub(super) fn better_than(choice: GpuChoice, current: GpuBackendKind) -> Vec<Candidate> {
    if choice != GpuChoice::Auto || current == GpuBackendKind::Simulated {
        return Vec::new();
    }
    Candidate::AUTO_CHAIN
        .iter()
        .copied()
        .filter(|c| rank(c.kind()) > rank(current))
        .collect()
}

/// The backend [`super::select`] chose, looking again for a better one (module docs).
pub struct Reprobing {
    current: Box<dyn GpuBackend>,
    choice: GpuChoice,
    paths: GpuPaths,
    every: Duration,
    last_probe: Instant,
    change: Option<SourceChange>,
}

impl Reprobing {
    pub fn new(current: Box<dyn GpuBackend>, choice: GpuChoice, paths: GpuPaths) -> Self {
        Self::with_period(current, choice, paths, REPROBE_EVERY)
    }

    /// With another period (tests).
    pub fn with_period(
        current: Box<dyn GpuBackend>,
        choice: GpuChoice,
        paths: GpuPaths,
        every: Duration,
    ) -> Self {
        Self {
            current,
            choice,
            paths,
            every,
            last_probe: Instant::now(),
            change: None,
        }
    }

    /// Tries the better sources when the period is up; moves to the first that opens.
    fn reprobe(&mut self, now: Instant) {
        if now.saturating_duration_since(self.last_probe) < self.every {
            return;
        }
        self.last_probe = now;
        let from = self.current.kind();
        for candidate in better_than(self.choice, from) {
            match candidate.open(&self.paths) {
                Ok(backend) => {
                    let change = SourceChange {
                        from,
                        to: backend.kind(),
                    };
                    info!(
                        from = capability(from),
                        to = capability(change.to),
                        "gpu source changed"
                    );
                    // the old source is dropped here (a tegrastats child is killed and reaped)
                    self.current = backend;
                    self.change = Some(change);
                    return;
                }
                Err(reason) => {
                    debug!(backend = candidate.name(), reason = %reason, "better gpu source still absent")
                }
            }
        }
    }
}

impl GpuBackend for Reprobing {
    fn kind(&self) -> GpuBackendKind {
        self.current.kind()
    }

    fn sample(&mut self) -> Option<GpuStats> {
        self.reprobe(Instant::now());
        self.current.sample()
    }

    fn take_change(&mut self) -> Option<SourceChange> {
        self.change.take()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::collect::gpu::NoGpu;

    #[test]
    fn only_auto_looks_again_and_only_upwards() {
        use GpuBackendKind::*;
        let names = |v: Vec<Candidate>| v.into_iter().map(Candidate::name).collect::<Vec<_>>();
        assert_eq!(
            names(better_than(GpuChoice::Auto, None)),
            ["jetson sysfs", "tegrastats", "nvml"]
        );
        assert_eq!(
            names(better_than(GpuChoice::Auto, Nvml)),
            ["jetson sysfs", "tegrastats"]
        );
        assert_eq!(names(better_than(GpuChoice::Auto, Tegrastats)), ["jetson sysfs"]);
        assert!(better_than(GpuChoice::Auto, JetsonSysfs).is_empty());
        assert!(better_than(GpuChoice::Auto, Simulated).is_empty());
        for explicit in [
            GpuChoice::Nvml,
            GpuChoice::Tegrastats,
            GpuChoice::None,
            GpuChoice::Jetson,
        ] {
            assert!(better_than(explicit, None).is_empty(), "{explicit}");
        }
    }

    /// Copies the Orin Nano sysfs fixture's devfreq tree into `root/sys` (the node "appears").
    fn copy_tree(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let target = to.join(e.file_name());
            let ty = std::fs::symlink_metadata(e.path()).unwrap().file_type();
            if ty.is_dir() {
                copy_tree(&e.path(), &target);
            } else if ty.is_symlink() {
                std::os::unix::fs::symlink(std::fs::read_link(e.path()).unwrap(), &target).unwrap();
            } else {
                std::fs::copy(e.path(), &target).unwrap();
            }
        }
    }

    #[test]
    fn a_jetson_node_that_appears_later_is_taken_once_and_reported_once() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jetson/orin-nano-jp6");
        assert!(
            fixture.join("sys").is_dir(),
            "fixture {} missing",
            fixture.display()
        );
        let root = tempfile::tempdir().unwrap();
        let paths = GpuPaths {
            tegrastats_command: "/nonexistent/rvm-test/tegrastats --interval {ms}".into(),
            nvml_library: Some("/nonexistent/rvm-test/libnvidia-ml.so.1".into()),
            ..GpuPaths::under_root(root.path())
        };
        let (first, _) = crate::collect::gpu::select(GpuChoice::Auto, &paths);
        assert_eq!(first.kind(), GpuBackendKind::None, "nothing to read yet");
        let mut gpu = Reprobing::with_period(first, GpuChoice::Auto, paths, Duration::ZERO);
        assert_eq!(gpu.sample(), Option::None);
        assert_eq!(gpu.take_change(), Option::None, "still nothing better");

        copy_tree(&fixture.join("sys"), &root.path().join("sys"));
        let stats = gpu.sample().expect("figures from the new source");
        assert_eq!(stats.backend, GpuBackendKind::JetsonSysfs);
        assert!(stats.load_pct.is_some(), "{stats:?}");
        assert_eq!(
            gpu.take_change(),
            Some(SourceChange {
                from: GpuBackendKind::None,
                to: GpuBackendKind::JetsonSysfs
            })
        );
        gpu.sample();
        assert_eq!(gpu.take_change(), Option::None, "reported once");
        assert_eq!(gpu.kind(), GpuBackendKind::JetsonSysfs);
    }

    #[test]
    fn the_period_holds_back_probing() {
        let mut gpu = Reprobing::with_period(
            Box::new(NoGpu),
            GpuChoice::Auto,
            GpuPaths::under_root(Path::new("/nonexistent/rvm-test")),
            Duration::from_secs(3600),
        );
        let before = gpu.last_probe;
        gpu.sample();
        assert_eq!(gpu.last_probe, before, "not probed before the period is up");
    }
}
