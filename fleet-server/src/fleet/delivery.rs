//! Per-device delivery accounting: duplicates dropped by seq, gaps, and drops the device
//! reported. Pure; the ingest writer keeps a [`DeliveryState`] per device and persists it
//! ([`crate::ingest::store`]).
//!
//! A [`SeqTracker`] remembers every seq seen as `floor` (all seqs <= floor were received)
//! plus the set of seqs above it. A seq at or below the floor, or in the set, is a duplicate.
//! Gaps are the holes between the floor and the highest seq seen. The set is bounded: past
//! [`MAX_SPARSE`] entries the floor moves up and the oldest holes are recorded as lost gaps.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Seqs kept above the floor before old holes are written off.
pub const MAX_SPARSE: usize = 100_000;

/// Gap ranges reported, at most (the count of missing seqs stays exact).
pub const MAX_GAPS_REPORTED: usize = 100;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeqTracker {
    /// Every seq <= floor was received (or written off as lost). 0 = nothing yet.
    floor: u64,
    above: BTreeSet<u64>,
    /// Holes written off when the sparse set was full.
    lost: Vec<(u64, u64)>,
    /// Distinct seqs seen: `missing` is exact even when the gap list is cut.
    #[serde(default)]
    distinct: u64,
}

impl SeqTracker {
    /// Records `seq`; returns false if it was seen before (a duplicate).
    pub fn observe(&mut self, seq: u64) -> bool {
        if seq <= self.floor || !self.above.insert(seq) {
            return false;
        }
        self.distinct += 1;
        while self.above.first() == Some(&(self.floor + 1)) {
            self.above.pop_first();
            self.floor += 1;
        }
        if self.above.len() > MAX_SPARSE
            && let Some(&first) = self.above.first()
        {
            self.lost.push((self.floor + 1, first - 1));
            if self.lost.len() > MAX_GAPS_REPORTED {
                self.lost.remove(0);
            }
            self.floor = first - 1;
            while self.above.first() == Some(&(self.floor + 1)) {
                self.above.pop_first();
                self.floor += 1;
            }
        }
        true
    }

    pub fn last_seq(&self) -> u64 {
        self.above.last().copied().unwrap_or(self.floor)
    }

    /// Seq ranges never received, oldest first (at most [`MAX_GAPS_REPORTED`]).
    pub fn gaps(&self) -> Vec<(u64, u64)> {
        let mut out = self.lost.clone();
        let mut prev = self.floor;
        for &s in &self.above {
            if s > prev + 1 {
                out.push((prev + 1, s - 1));
            }
            prev = s;
        }
        if out.len() > MAX_GAPS_REPORTED {
            out.drain(..out.len() - MAX_GAPS_REPORTED);
        }
        out
    }

    /// Seqs up to the highest seen that never arrived (exact; the gap list may be cut).
    pub fn missing(&self) -> u64 {
        self.last_seq().saturating_sub(self.distinct)
    }
}

/// What `GET /api/v1/devices/{id}` shows as `delivery`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    pub received: u64,
    pub duplicates_dropped: u64,
    pub last_seq: u64,
    pub gaps: Vec<(u64, u64)>,
    pub missing: u64,
    pub reported_dropped: u64,
    /// Telemetry records that arrived after a higher telemetry seq.
    pub reordered: u64,
}

/// What the ingest writer keeps per device (and persists, [`crate::ingest::store`]): the seqs
/// seen and the counts behind [`Delivery`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliveryState {
    pub seqs: SeqTracker,
    pub received: u64,
    pub duplicates: u64,
    pub reported_dropped: u64,
    /// Telemetry records that arrived after a higher telemetry seq (health, events and
    /// command results overtake telemetry on purpose and do not count).
    pub reordered: u64,
    #[serde(default)]
    pub last_telemetry_seq: u64,
}

impl DeliveryState {
    pub fn view(&self) -> Delivery {
        Delivery {
            received: self.received,
            duplicates_dropped: self.duplicates,
            last_seq: self.seqs.last_seq(),
            gaps: self.seqs.gaps(),
            missing: self.seqs.missing(),
            reported_dropped: self.reported_dropped,
            reordered: self.reordered,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn in_order_seqs_have_no_gaps_and_repeats_are_duplicates() {
        let mut t = SeqTracker::default();
        for s in 1..=5 {
            assert!(t.observe(s));
        }
        assert!(!t.observe(3));
        assert!(!t.observe(5));
        assert_eq!(t.gaps(), vec![]);
        assert_eq!(t.last_seq(), 5);
    }

    #[test]
    fn holes_are_gaps_until_filled() {
        let mut t = SeqTracker::default();
        for s in [1, 2, 5, 6, 9] {
            t.observe(s);
        }
        assert_eq!(t.gaps(), vec![(3, 4), (7, 8)]);
        assert_eq!(t.missing(), 4);
        t.observe(3);
        t.observe(4);
        assert_eq!(t.gaps(), vec![(7, 8)]);
        assert!(!t.observe(4));
    }

    #[test]
    fn missing_stays_exact_when_the_gap_list_is_cut() {
        let mut t = SeqTracker::default();
        for s in (1..=1000).step_by(2) {
            t.observe(s);
        }
        assert_eq!(t.gaps().len(), MAX_GAPS_REPORTED);
        assert_eq!(t.missing(), 499);
    }

    #[test]
    fn a_first_seq_above_one_is_a_gap_from_one() {
        let mut t = SeqTracker::default();
        t.observe(3);
        assert_eq!(t.gaps(), vec![(1, 2)]);
    }

    proptest! {
        #[test]
        fn duplicates_are_exactly_the_repeats(seqs in proptest::collection::vec(1u64..300, 0..600)) {
            let mut t = SeqTracker::default();
            let mut seen = std::collections::HashSet::new();
            for s in seqs {
                prop_assert_eq!(t.observe(s), seen.insert(s));
            }
            let max = seen.iter().max().copied().unwrap_or(0);
            let missing = (1..=max).filter(|s| !seen.contains(s)).count() as u64;
            prop_assert_eq!(t.missing(), missing);
            prop_assert_eq!(t.last_seq(), max);
        }
    }
}
