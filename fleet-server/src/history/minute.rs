//! Minute arithmetic of history: the spans rows are grouped by. A leaf: imports nothing of
//! the crate.

pub const MINUTE_MS: i64 = 60_000;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// Start of the minute `ts_ms` falls in.
pub fn minute_of(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(MINUTE_MS) * MINUTE_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_are_aligned_for_negative_times_too() {
        assert_eq!(minute_of(61_000), 60_000);
        assert_eq!(minute_of(-1), -60_000);
    }
}
