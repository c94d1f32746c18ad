//! Per-device delivery accounting: duplicates dropped by seq, gaps, and drops the device
//! reported. Pure; the ingest writer keeps a [`DeliveryState`] per device and persists it
//! ([`crate::ingest::store`]).
//!
//! A [`SeqTracker`] remembers every seq seen as `floor` (all seqs <= floor were received)
//! plus the set of seqs above it. A seq at or below the floor, or in the set, is a duplicate.
//! Gaps are the holes between the floor and the highest seq seen. The set is bounded: past
//! [`MAX_SPARSE`] entries the floor moves up and the oldest holes are recorded as lost gaps.
//!
//! Several instances on one PostgreSQL store each keep this state in memory for the devices
//! they serve, and a device moves between them (an instance dies, a link fails over). Their
//! views are joined with [`DeliveryState::merge`]: the union of the seqs both saw, so a view
//! that missed what another instance stored is brought up to date without forgetting its
//! own (`crate::ingest::pg`).

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

    /// Orders two views of one device: the one whose floor is higher (then the one that saw
    /// more) covers everything at or below the other's floor, so it is the base of a merge.
    fn covers(&self, other: &SeqTracker) -> bool {
        (self.floor, self.distinct) >= (other.floor, other.distinct)
    }

    /// Adds what `other` saw above this tracker's floor (this one [`Self::covers`] it);
    /// returns how many seqs were new here.
    fn absorb(&mut self, other: &SeqTracker) -> u64 {
        let mut added = 0;
        for &s in other.above.range(self.floor + 1..) {
            if self.observe(s) {
                added += 1;
            }
        }
        if !other.lost.is_empty() {
            self.lost.extend(other.lost.iter().copied());
            self.lost.sort_unstable();
            self.lost.dedup();
            if self.lost.len() > MAX_GAPS_REPORTED {
                self.lost.drain(..self.lost.len() - MAX_GAPS_REPORTED);
            }
        }
        added
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
    /// Joins another view of the same device (another instance's, or the row in PostgreSQL)
    /// into this one: afterwards a seq either saw is a duplicate here, and `received` counts
    /// the seqs of the union (exact unless a side wrote off holes past [`MAX_SPARSE`]). The
    /// other counters (duplicates, reported drops, reordered) cannot be joined exactly and
    /// take the larger of the two. Merging a view into itself, or an older view of the same
    /// history into a newer one, changes nothing.
    pub fn merge(&mut self, other: &DeliveryState) {
        let (mut base, extra) = if self.seqs.covers(&other.seqs) {
            (std::mem::take(self), other)
        } else {
            (other.clone(), &*self)
        };
        base.received += base.seqs.absorb(&extra.seqs);
        base.duplicates = base.duplicates.max(extra.duplicates);
        base.reported_dropped = base.reported_dropped.max(extra.reported_dropped);
        base.reordered = base.reordered.max(extra.reordered);
        base.last_telemetry_seq = base.last_telemetry_seq.max(extra.last_telemetry_seq);
        *self = base;
    }

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

    fn build_state(seqs: &[u64]) -> DeliveryState {
        let mut st = DeliveryState::default();
        for &s in seqs {
            if st.seqs.observe(s) {
                st.received += 1;
            } else {
                st.duplicates += 1;
            }
        }
        st
    }

    /// A device served by instance A (seqs 1..=100 stored), then by B, whose view was loaded
    /// before (nothing) and saw the resent tail and new records (90..=150).
    #[test]
    fn a_stale_view_merged_with_the_stored_one_knows_both() {
        let a = build_state(&(1..=100).collect::<Vec<_>>());
        let b = build_state(&(90..=150).collect::<Vec<_>>());
        for (mut x, y) in [(a.clone(), b.clone()), (b.clone(), a.clone())] {
            x.merge(&y);
            assert_eq!(x.received, 150);
            assert_eq!(x.seqs.gaps(), vec![]);
            assert_eq!(x.seqs.missing(), 0);
            assert_eq!(x.seqs.last_seq(), 150);
            assert!(!x.seqs.clone().observe(42), "A's seqs are duplicates");
            assert!(!x.seqs.clone().observe(150), "B's seqs are duplicates");
            assert!(x.seqs.clone().observe(151));
        }
    }

    #[test]
    fn merging_a_view_into_itself_or_an_older_one_into_a_newer_changes_nothing() {
        let mut newer = build_state(&[1, 2, 3, 5, 8, 9]);
        let older = build_state(&[1, 2, 3, 5]);
        let copy = newer.clone();
        newer.merge(&copy);
        assert_eq!(newer, copy);
        newer.merge(&older);
        assert_eq!(newer, copy);
        let mut old = older.clone();
        old.merge(&copy);
        assert_eq!(old.seqs, copy.seqs, "an older view takes the newer one whole");
        assert_eq!(old.received, copy.received);
    }

    proptest! {
        #[test]
        fn a_merge_is_the_union_of_both_views(
            a in proptest::collection::vec(1u64..300, 0..300),
            b in proptest::collection::vec(1u64..300, 0..300),
        ) {
            let mut merged = build_state(&a);
            merged.merge(&build_state(&b));
            let union: std::collections::BTreeSet<u64> = a.iter().chain(&b).copied().collect();
            let whole = build_state(&union.iter().copied().collect::<Vec<_>>());
            prop_assert_eq!(merged.received, union.len() as u64);
            prop_assert_eq!(merged.seqs.last_seq(), whole.seqs.last_seq());
            prop_assert_eq!(merged.seqs.missing(), whole.seqs.missing());
            prop_assert_eq!(merged.seqs.gaps(), whole.seqs.gaps());
            for s in 1..300 {
                prop_assert_eq!(merged.seqs.clone().observe(s), !union.contains(&s));
            }
        }

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
