//! What the fleet state keeps of every machine, kept small (issue 25 step 3).
//!
//! At 2,000 simulated machines (heaptrack, docs/benchmarks.md "The server's memory per
//! machine") the fleet actor held about 16 KiB per machine of its own: the latest telemetry
//! decoded (a record with the look inside is about 60 small allocations, 6 to 8 KiB of
//! heap, for about 1 KiB on the wire) and every machine's flat metric names spelled out
//! again (57 names of about 19 bytes, a `String` each: 5.4 KiB). Here the latest record is
//! kept as the codec's bytes, decoded when the API asks for it, and the names are shared by
//! every machine that reports them.

use std::collections::HashSet;
use std::sync::Arc;

use common::{Envelope, Telemetry, codec};

/// Names the fleet state shares at most. Names come from the machines (process, interface
/// and app metric names): past the cap, a new name is kept by the machine that sent it only
/// (allocated, not shared), so a machine that invents a name per record cannot grow the set.
pub const MAX_SHARED_NAMES: usize = 100_000;

/// Metric names, one allocation per distinct name for the whole fleet.
#[derive(Debug, Default)]
pub struct SharedNames {
    set: HashSet<Arc<str>, ahash::RandomState>,
}

impl SharedNames {
    /// The shared copy of `name`, taken in if it is new and there is room.
    pub fn get(&mut self, name: &str) -> Arc<str> {
        if let Some(n) = self.set.get(name) {
            return n.clone();
        }
        let n: Arc<str> = name.into();
        if self.set.len() < MAX_SHARED_NAMES {
            self.set.insert(n.clone());
        }
        n
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

/// A machine's latest telemetry: its seq and time, and the body as the codec's bytes (with
/// the process scan carried over, see [`super::state::FleetState::apply_telemetry`]).
#[derive(Debug, Clone)]
pub struct LatestTelemetry {
    pub seq: u64,
    pub ts_ms: i64,
    /// None only if the body could not be encoded again (larger than the codec's limit once
    /// the scan was carried over); the seq and time still count.
    body: Option<Box<[u8]>>,
}

impl LatestTelemetry {
    pub fn new(env: &Envelope<Telemetry>) -> Self {
        let body = match codec::encode(&env.body) {
            Ok(b) => Some(b.into_boxed_slice()),
            Err(e) => {
                tracing::warn!(device = %env.device, seq = env.seq, error = %e, "latest telemetry not kept");
                None
            }
        };
        LatestTelemetry {
            seq: env.seq,
            ts_ms: env.ts_ms,
            body,
        }
    }

    /// The body, decoded (for the API and the next record's process scan).
    pub fn body(&self) -> Option<Telemetry> {
        let bytes = self.body.as_deref()?;
        match codec::decode_bare(bytes) {
            Ok(t) => Some(t),
            Err(e) => {
                // our own encoding of a value that was just decoded: a bug, not bad input
                tracing::error!(error = %e, "latest telemetry does not decode");
                None
            }
        }
    }

    /// Bytes of heap the body holds.
    pub fn heap_bytes(&self) -> usize {
        self.body.as_ref().map_or(0, |b| b.len())
    }
}

#[cfg(test)]
mod tests {
    use common::DeviceId;

    use super::*;

    #[test]
    fn names_are_shared_and_the_set_is_capped() {
        let mut n = SharedNames::default();
        let a = n.get("cpu.usage_pct");
        let b = n.get("cpu.usage_pct");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(n.len(), 1);
        for i in 0..MAX_SHARED_NAMES + 10 {
            n.get(&format!("proc.top_cpu.p{i}"));
        }
        assert_eq!(n.len(), MAX_SHARED_NAMES);
        // past the cap a name is still given, only not shared
        let c = n.get("app.new_after_cap");
        assert_eq!(&*c, "app.new_after_cap");
        assert_eq!(n.len(), MAX_SHARED_NAMES);
    }

    #[test]
    fn the_latest_body_decodes_to_what_was_kept() {
        let mut t = Telemetry::default();
        t.memory.total_bytes = 8 << 30;
        t.app.push(common::Reading::new("rvm.accepted_total", 7.0));
        t.detail.procs.scanned = true;
        t.detail.procs.total = 213;
        let env = Envelope::new(DeviceId::new("rvm1").unwrap(), 4, 1_000, t.clone());
        let l = LatestTelemetry::new(&env);
        assert_eq!((l.seq, l.ts_ms), (4, 1_000));
        assert_eq!(l.body(), Some(t));
        assert!(l.heap_bytes() > 0 && l.heap_bytes() < 1_000);
    }
}
