//! Fault injection for tests: make the collector or the buffer actor panic, or GPU reads hang,
//! on demand. Compiled only into test builds: the `faults` cargo feature, which the end-to-end
//! tests crate enables as a dev-dependency, or this crate's own unit tests. A release build of
//! the agent has none of it (`cargo build --release -p rvm-agent`, the package), and its
//! binary ignores [`FAULTS_ENV`] with a warning.
//!
//! In-process tests pass [`Faults`] in [`crate::agent::Overrides`]; the `rvm-agent` binary
//! of a test build reads [`FAULTS_ENV`] at start
//! (`RVM_AGENT_FAULTS=collector_panic:3,buffer_panic:1,gpu_hang`). A leaf module: it imports no
//! feature; the collector and the buffer actor call it.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

/// Faults armed at start by the binary: `collector_panic:N`, `buffer_panic:N`, `gpu_hang`,
/// comma-separated.
pub const FAULTS_ENV: &str = "RVM_AGENT_FAULTS";

/// How long a hung GPU read hangs (longer than any test).
const GPU_HANG: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{FAULTS_ENV}: {entry:?}: {reason}")]
pub struct FaultSpecError {
    pub entry: String,
    pub reason: &'static str,
}

/// The faults armed; shared between the test (or the binary) and the actors.
#[derive(Debug, Default)]
pub struct Faults {
    /// Collections that panic before collections work again.
    pub collector_panics: AtomicU32,
    /// Every GPU read hangs.
    pub gpu_hang: AtomicBool,
    /// Acknowledgements that panic the buffer actor mid-drain, after it deleted the first
    /// record of the batch, before the buffer works again.
    pub buffer_panics: AtomicU32,
}

/// Takes one of `n` armed faults; whether one was left.
fn take_one(n: &AtomicU32) -> bool {
    n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

impl Faults {
    /// In a collection, on the collector's thread (or its source's worker).
    pub fn strike_collector(&self) {
        if take_one(&self.collector_panics) {
            panic!("injected collector fault");
        }
    }

    /// In a GPU read, on the GPU worker's thread.
    pub fn strike_gpu(&self) {
        if self.gpu_hang.load(Ordering::Relaxed) {
            std::thread::sleep(GPU_HANG);
        }
    }

    /// In the buffer actor's acknowledgement handler, after the first record was deleted.
    pub fn strike_buffer_drain(&self) {
        if take_one(&self.buffer_panics) {
            panic!("injected buffer fault");
        }
    }

    /// Parses `collector_panic:N,buffer_panic:N,gpu_hang`.
    pub fn parse(s: &str) -> Result<Faults, FaultSpecError> {
        let f = Faults::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = |reason| FaultSpecError {
                entry: part.to_string(),
                reason,
            };
            let count = |n: &str| n.parse::<u32>().map_err(|_| bad("N must be a number"));
            match part.split_once(':') {
                Some(("collector_panic", n)) => f.collector_panics.store(count(n)?, Ordering::Relaxed),
                Some(("buffer_panic", n)) => f.buffer_panics.store(count(n)?, Ordering::Relaxed),
                None if part == "gpu_hang" => f.gpu_hang.store(true, Ordering::Relaxed),
                _ => return Err(bad("unknown fault (collector_panic:N, buffer_panic:N, gpu_hang)")),
            }
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_and_bad_ones_are_named() {
        let f = Faults::parse("collector_panic:3, gpu_hang, buffer_panic:2").unwrap();
        assert_eq!(f.collector_panics.load(Ordering::Relaxed), 3);
        assert_eq!(f.buffer_panics.load(Ordering::Relaxed), 2);
        assert!(f.gpu_hang.load(Ordering::Relaxed));
        assert!(Faults::parse("nope").unwrap_err().to_string().contains("nope"));
        assert_eq!(
            Faults::parse("collector_panic:x").unwrap_err(),
            FaultSpecError {
                entry: "collector_panic:x".into(),
                reason: "N must be a number"
            }
        );
    }

    #[test]
    fn an_armed_panic_strikes_as_often_as_armed() {
        let f = Faults::parse("buffer_panic:2").unwrap();
        for _ in 0..2 {
            assert!(std::panic::catch_unwind(|| f.strike_buffer_drain()).is_err());
        }
        f.strike_buffer_drain();
        f.strike_collector();
    }
}
