//! Fault injection for tests: make a named child panic or stall on demand. Compiled only into
//! test builds (the `faults` cargo feature, which the end-to-end tests crate enables as a
//! dev-dependency, or this crate's own unit tests); a release build of the server has none of
//! it (`cargo build --release -p fleet-server`, the package).
//!
//! A fault strikes at the child's next beat ([`super::liveness::Liveness::beat`]), on the
//! child's own thread: inside an actor's message handler, the writer's or the persister's
//! loop, or an MQTT client's task. In-process tests arm faults through
//! [`crate::server::Server::faults`]; the `fleet-server` binary reads [`FAULTS_ENV`] at start
//! (`RVM_FLEET_FAULTS=alerts=panic_always,writer=stall:5000`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Faults armed at start by the binary: `NAME=panic|panic_always|stall:MS`, comma-separated.
pub const FAULTS_ENV: &str = "RVM_FLEET_FAULTS";

/// What an armed child does at its next beat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Panic once (the restarted child runs normally).
    Panic,
    /// Panic at every beat, restarted or not: past the restart intensity the process exits.
    PanicAlways,
    /// Block the child's thread this long, once (no progress: the supervisor sees a stall).
    Stall(Duration),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{env}: {entry:?}: {reason}")]
pub struct FaultSpecError {
    pub env: &'static str,
    pub entry: String,
    pub reason: &'static str,
}

/// The faults armed per child name; clones share them.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Mutex<BTreeMap<String, Fault>>>);

impl Faults {
    pub fn arm(&self, child: &str, fault: Fault) {
        self.lock().insert(child.to_string(), fault);
    }

    pub fn disarm(&self, child: &str) {
        self.lock().remove(child);
    }

    /// Whether a fault is still armed for `child` (a one-shot fault is gone once it struck).
    pub fn is_armed(&self, child: &str) -> bool {
        self.lock().contains_key(child)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Fault>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called by `child` at each beat: does what is armed for it.
    pub fn strike(&self, child: &str) {
        let fault = {
            let mut armed = self.lock();
            match armed.get(child).copied() {
                Some(Fault::PanicAlways) => Some(Fault::PanicAlways),
                Some(_) => armed.remove(child),
                None => None,
            }
        };
        match fault {
            Some(Fault::Panic | Fault::PanicAlways) => panic!("fault injected: {child} panics"),
            Some(Fault::Stall(d)) => {
                tracing::warn!(
                    actor = child,
                    stall_ms = d.as_millis() as u64,
                    "fault injected: stalling"
                );
                std::thread::sleep(d);
            }
            None => {}
        }
    }

    /// Faults from a spec like `alerts=panic_always,writer=stall:5000`.
    pub fn parse(spec: &str) -> Result<Faults, FaultSpecError> {
        let faults = Faults::default();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = |reason| FaultSpecError {
                env: FAULTS_ENV,
                entry: entry.to_string(),
                reason,
            };
            let (name, what) = entry.split_once('=').ok_or_else(|| bad("not NAME=FAULT"))?;
            let fault = match what.split_once(':') {
                None if what == "panic" => Fault::Panic,
                None if what == "panic_always" => Fault::PanicAlways,
                Some(("stall", ms)) => Fault::Stall(Duration::from_millis(
                    ms.parse().map_err(|_| bad("stall:MS needs milliseconds"))?,
                )),
                _ => return Err(bad("the fault is one of panic, panic_always, stall:MS")),
            };
            faults.arm(name.trim(), fault);
        }
        Ok(faults)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_shot_panic_strikes_once_and_only_its_child() {
        let f = Faults::default();
        f.arm("alerts", Fault::Panic);
        f.strike("fleet");
        assert!(f.is_armed("alerts"));
        let r = std::panic::catch_unwind(|| f.strike("alerts"));
        assert!(r.is_err());
        assert!(!f.is_armed("alerts"));
        f.strike("alerts");
    }

    #[test]
    fn panic_always_stays_armed() {
        let f = Faults::default();
        f.arm("writer", Fault::PanicAlways);
        for _ in 0..3 {
            assert!(std::panic::catch_unwind(|| f.strike("writer")).is_err());
        }
        f.disarm("writer");
        f.strike("writer");
    }

    #[test]
    fn a_spec_arms_each_named_fault_and_a_bad_one_names_the_entry() {
        let f = Faults::parse("alerts=panic_always, writer=stall:25,fleet=panic").unwrap();
        assert!(f.is_armed("alerts") && f.is_armed("writer") && f.is_armed("fleet"));
        let t = std::time::Instant::now();
        f.strike("writer");
        assert!(t.elapsed() >= Duration::from_millis(25));
        assert!(!f.is_armed("writer"));
        let e = Faults::parse("alerts=explode").unwrap_err();
        assert_eq!(e.entry, "alerts=explode");
        assert!(
            e.to_string()
                .starts_with("RVM_FLEET_FAULTS: \"alerts=explode\": "),
            "{e}"
        );
        assert!(Faults::parse("writer=stall:soon").is_err());
        assert!(Faults::parse("nothing").is_err());
    }
}
