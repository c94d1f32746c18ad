//! Device clocks that are wrong must not corrupt history (pure).
//!
//! A record carries its device's timestamp. History rows are keyed by time, so a device whose
//! clock is a day ahead would write rows into tomorrow, one a day behind would bury today's
//! figures in yesterday, and "the last hour" would miss the device. The ingest writer asks a
//! [`ClockGuard`] per device where each telemetry record goes:
//!
//! - a timestamp more than [`MAX_CLOCK_SKEW_MS`] ahead of the server's clock cannot be right:
//!   the row is stored at the receive time;
//! - a *live* record (made on the device's current connection) more than
//!   [`MAX_CLOCK_SKEW_MS`] from the receive time is stored at the receive time too;
//! - *backlog* (made before the current connection, buffered through an outage) is old on
//!   purpose and keeps its timestamp, shifted by the clock offset measured at the
//!   connection's birth when that offset is itself beyond [`MAX_CLOCK_SKEW_MS`], and never
//!   later than the receive time.
//!
//! Whenever a row is moved, the device's own timestamp is kept in the row as the metric
//! [`DEVICE_CLOCK_OFFSET`] (device timestamp minus stored timestamp, in seconds), so nothing
//! is lost and the history shows that the clock was off. The seq is never touched: it comes
//! from the device's buffer, not its clock, so ordering and dedup are unaffected.
//!
//! A record is live when its timestamp is at or after the birth of the current connection
//! (device clock), or when its seq is above the lowest seq already seen live on that
//! connection: seqs are allocated in order, so a record made after a live one is live even if
//! the device's clock jumped back meanwhile. Until the first birth after a server start
//! nothing counts as live. The fleet actor's `clock.skew_s` input
//! ([`crate::alerts::inputs`]) uses the same liveness, so a clock that jumps back mid
//! connection is flagged as well.

/// Beyond this difference to the server's clock a timestamp is not used as the row's time.
pub const MAX_CLOCK_SKEW_MS: i64 = 5 * 60_000;

/// Metric kept in a moved history row: device timestamp minus stored timestamp, seconds.
pub const DEVICE_CLOCK_OFFSET: &str = "clock.device_offset_s";

/// Liveness of a device's records on its current connection (shared with the alert inputs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Liveness {
    /// Device-clock time of the birth of the current connection.
    since_ms: Option<i64>,
    /// Lowest seq seen live on the current connection.
    floor_seq: Option<u64>,
}

impl Liveness {
    /// A new connection began at `birth_ts_ms` (device clock).
    pub fn on_birth(&mut self, birth_ts_ms: i64) {
        self.since_ms = Some(birth_ts_ms);
        self.floor_seq = None;
    }

    /// Device-clock time of the current connection's birth.
    pub fn since_ms(&self) -> Option<i64> {
        self.since_ms
    }

    /// Is the record `seq` stamped `ts_ms` live? Remembers the lowest live seq.
    pub fn observe(&mut self, seq: u64, ts_ms: i64) -> bool {
        let Some(since) = self.since_ms else {
            return false;
        };
        let live = ts_ms >= since || self.floor_seq.is_some_and(|f| seq > f);
        if live {
            self.floor_seq = Some(self.floor_seq.map_or(seq, |f| f.min(seq)));
        }
        live
    }
}

/// Where a telemetry record's history row goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    /// The row's time.
    pub ts_ms: i64,
    /// Device timestamp minus `ts_ms` in seconds, when the row was moved.
    pub moved_by_s: Option<f64>,
}

/// One device's clock view; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct ClockGuard {
    live: Liveness,
    /// Device clock minus server clock at the current connection's birth.
    birth_offset_ms: i64,
}

impl ClockGuard {
    /// A birth stamped `birth_ts_ms` (device clock) received at `now_ms`.
    pub fn on_birth(&mut self, birth_ts_ms: i64, now_ms: i64) {
        self.live.on_birth(birth_ts_ms);
        self.birth_offset_ms = birth_ts_ms.saturating_sub(now_ms);
    }

    /// Any sequenced record (liveness is learnt from every kind); returns where a history
    /// row for it goes.
    pub fn place(&mut self, seq: u64, ts_ms: i64, now_ms: i64) -> Placement {
        let live = self.live.observe(seq, ts_ms);
        let off = ts_ms.saturating_sub(now_ms);
        let max = MAX_CLOCK_SKEW_MS.unsigned_abs();
        let at = if live {
            if off.unsigned_abs() > max { now_ms } else { ts_ms }
        } else if self.birth_offset_ms.unsigned_abs() > max {
            ts_ms.saturating_sub(self.birth_offset_ms).min(now_ms)
        } else if off > MAX_CLOCK_SKEW_MS {
            now_ms
        } else {
            ts_ms
        };
        Placement {
            ts_ms: at,
            moved_by_s: (at != ts_ms).then(|| ts_ms.saturating_sub(at) as f64 / 1000.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const NOW: i64 = 1_700_000_000_000;
    const DAY: i64 = 86_400_000;

    #[test]
    fn a_correct_clock_keeps_every_timestamp() {
        let mut g = ClockGuard::default();
        g.on_birth(NOW, NOW + 20);
        // backlog from an hour-long outage, then live records
        assert_eq!(g.place(1, NOW - 3_600_000, NOW + 50).ts_ms, NOW - 3_600_000);
        let p = g.place(2, NOW + 1_000, NOW + 1_010);
        assert_eq!(
            p,
            Placement {
                ts_ms: NOW + 1_000,
                moved_by_s: None
            }
        );
    }

    #[test]
    fn a_clock_a_day_ahead_or_behind_is_stored_at_receive_time_with_its_offset() {
        for skew in [DAY, -DAY] {
            let mut g = ClockGuard::default();
            g.on_birth(NOW + skew, NOW);
            let p = g.place(7, NOW + skew + 1_000, NOW + 1_000);
            assert_eq!(p.ts_ms, NOW + 1_000, "skew {skew}");
            assert_eq!(p.moved_by_s, Some(skew as f64 / 1000.0));
            // its backlog is shifted by the offset measured at birth
            let p = g.place(3, NOW + skew - 60_000, NOW + 1_100);
            assert_eq!(p.ts_ms, NOW - 60_000, "skew {skew}");
        }
    }

    #[test]
    fn a_clock_jumping_back_mid_connection_is_still_live_by_seq() {
        let mut g = ClockGuard::default();
        g.on_birth(NOW, NOW);
        assert_eq!(g.place(10, NOW + 1_000, NOW + 1_000).ts_ms, NOW + 1_000);
        // the clock jumps back a day: later seqs are live, so stored at receive time
        let p = g.place(11, NOW + 2_000 - DAY, NOW + 2_000);
        assert_eq!(p.ts_ms, NOW + 2_000);
        // backlog with a seq below the live floor keeps its (old, plausible) time
        assert_eq!(g.place(5, NOW - 10_000, NOW + 2_100).ts_ms, NOW - 10_000);
    }

    #[test]
    fn the_future_is_refused_even_before_any_birth() {
        let mut g = ClockGuard::default();
        assert_eq!(g.place(1, NOW + DAY, NOW).ts_ms, NOW);
        assert_eq!(
            g.place(2, NOW - DAY, NOW).ts_ms,
            NOW - DAY,
            "unknown: maybe backlog"
        );
    }

    proptest! {
        #[test]
        fn a_row_is_never_stored_in_the_future(
            birth in any::<i64>(), seq in any::<u64>(), ts in any::<i64>(), now in 0i64..i64::MAX / 2,
        ) {
            let mut g = ClockGuard::default();
            g.on_birth(birth, now);
            let p = g.place(seq, ts, now);
            prop_assert!(p.ts_ms <= now.saturating_add(MAX_CLOCK_SKEW_MS));
        }
    }
}
