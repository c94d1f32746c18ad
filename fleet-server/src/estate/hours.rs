//! Opening hours (pure): per weekday, ranges of local wall-clock time, and the instants they
//! cover in a store's IANA time zone over any period.
//!
//! # Text form (the API, the CSV file)
//! One weekday is `closed`, `24h`, or ranges `HH:MM-HH:MM` separated by spaces or `;`
//! (`08:00-12:00 13:00-20:00`). `24:00` ends a day. A range whose end is not after its start
//! (`22:00-02:00`) crosses midnight and belongs to the day it starts on, as maintenance
//! windows do ([`crate::notify::maintenance`]).
//!
//! # Wall-clock rule
//! Local times become instants with jiff's "compatible" rule: a time skipped when clocks go
//! forward is read as the time an hour later, a repeated time as its first occurrence. A store
//! open 00:00-24:00 is therefore open 23 hours on the day clocks go forward and 25 on the day
//! they go back: the day's real length.

use jiff::Timestamp;
use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;

/// Seconds in a day (`24:00`).
const DAY_S: u32 = 86_400;

/// Weekday keys, Monday first (`hours.mon` ... `hours.sun`, CSV columns of the same names).
pub const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// One weekday's opening hours: ranges of local seconds of the day, `open` included,
/// `close` not; `close <= open` crosses midnight.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayHours(pub Vec<(u32, u32)>);

/// A week of opening hours, Monday first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpeningHours(pub [DayHours; 7]);

/// `HH:MM` (00:00 to 24:00) as seconds of the day.
fn parse_time(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    match (h, m) {
        (24, 0) => Some(DAY_S),
        (0..=23, 0..=59) => Some(h * 3600 + m * 60),
        _ => None,
    }
}

fn format_time(s: u32) -> String {
    format!("{:02}:{:02}", s / 3600, s % 3600 / 60)
}

impl DayHours {
    /// Parses one weekday's text (module docs); the error says what is wrong with which range.
    pub fn parse(text: &str) -> Result<DayHours, String> {
        let t = text.trim();
        match t.to_ascii_lowercase().as_str() {
            "" => return Err("empty (write `closed` for a day without opening hours)".into()),
            "closed" => return Ok(DayHours::default()),
            "24h" => return Ok(DayHours(vec![(0, DAY_S)])),
            _ => {}
        }
        let mut ranges = Vec::new();
        for part in t
            .split(|c: char| c == ';' || c.is_whitespace())
            .filter(|p| !p.is_empty())
        {
            let bad = || format!("{part:?} is not HH:MM-HH:MM, closed or 24h");
            let (a, b) = part.split_once('-').ok_or_else(bad)?;
            let (open, close) = (parse_time(a).ok_or_else(bad)?, parse_time(b).ok_or_else(bad)?);
            if open == DAY_S {
                return Err(format!("{part:?}: a range cannot open at 24:00"));
            }
            if open == close {
                return Err(format!("{part:?}: opens and closes at the same time"));
            }
            ranges.push((open, close));
        }
        ranges.sort_unstable();
        for w in ranges.windows(2) {
            let end = if w[0].1 <= w[0].0 { DAY_S } else { w[0].1 };
            if w[1].0 < end {
                return Err(format!(
                    "{}-{} overlaps {}-{}",
                    format_time(w[0].0),
                    format_time(w[0].1),
                    format_time(w[1].0),
                    format_time(w[1].1)
                ));
            }
        }
        Ok(DayHours(ranges))
    }

    /// The text form: `closed`, `24h` or the ranges.
    pub fn format(&self) -> String {
        match self.0.as_slice() {
            [] => "closed".into(),
            [(0, DAY_S)] => "24h".into(),
            r => r
                .iter()
                .map(|(a, b)| format!("{}-{}", format_time(*a), format_time(*b)))
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// The instant of local `date` at `secs` seconds of the day (86,400: the next midnight).
fn instant(tz: &TimeZone, date: Date, secs: u32) -> Option<i64> {
    let (date, secs) = if secs >= DAY_S {
        (date.tomorrow().ok()?, secs - DAY_S)
    } else {
        (date, secs)
    };
    let time = Time::new(
        (secs / 3600) as i8,
        (secs % 3600 / 60) as i8,
        (secs % 60) as i8,
        0,
    )
    .ok()?;
    Some(
        date.to_datetime(time)
            .to_zoned(tz.clone())
            .ok()?
            .timestamp()
            .as_millisecond(),
    )
}

impl OpeningHours {
    /// Open every day, all day.
    pub fn always() -> OpeningHours {
        OpeningHours(std::array::from_fn(|_| DayHours(vec![(0, DAY_S)])))
    }

    /// The instants `[start, end)` in milliseconds the store is open within `[from_ms, to_ms)`,
    /// sorted and disjoint.
    pub fn open_intervals(&self, tz: &TimeZone, from_ms: i64, to_ms: i64) -> Vec<(i64, i64)> {
        let (Ok(from), Ok(to)) = (
            Timestamp::from_millisecond(from_ms),
            Timestamp::from_millisecond(to_ms),
        ) else {
            return Vec::new();
        };
        // the day before `from` may hold a range crossing midnight into the period
        let Ok(mut day) = tz.to_datetime(from).date().yesterday() else {
            return Vec::new();
        };
        let last = tz.to_datetime(to).date();
        let mut out: Vec<(i64, i64)> = Vec::new();
        while day <= last {
            let hours = &self.0[day.weekday().to_monday_zero_offset() as usize];
            for &(open, close) in &hours.0 {
                let close = if close <= open { close + DAY_S } else { close };
                let (Some(a), Some(b)) = (instant(tz, day, open), instant(tz, day, close)) else {
                    continue;
                };
                let (a, b) = (a.max(from_ms), b.min(to_ms));
                if a < b {
                    out.push((a, b));
                }
            }
            let Ok(next) = day.tomorrow() else { break };
            day = next;
        }
        crate::estate::availability::normalize(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_week(days: [&str; 7]) -> OpeningHours {
        OpeningHours(days.map(|d| DayHours::parse(d).unwrap()))
    }

    fn ms(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn day_text_parses_and_formats_back() {
        for t in [
            "closed",
            "24h",
            "08:00-20:00",
            "08:00-12:00 13:00-20:00",
            "22:00-02:00",
        ] {
            assert_eq!(DayHours::parse(t).unwrap().format(), t);
        }
        assert_eq!(
            DayHours::parse("13:00-20:00;08:00-12:00").unwrap().format(),
            "08:00-12:00 13:00-20:00"
        );
        assert_eq!(DayHours::parse("00:00-24:00").unwrap().format(), "24h");
    }

    #[test]
    fn bad_day_text_says_what_is_wrong() {
        assert!(
            DayHours::parse("8-20")
                .unwrap_err()
                .contains("\"8-20\" is not HH:MM-HH:MM")
        );
        assert!(DayHours::parse("08:00-25:00").is_err());
        assert!(DayHours::parse("").unwrap_err().contains("closed"));
        assert!(DayHours::parse("08:00-08:00").unwrap_err().contains("same time"));
        assert!(
            DayHours::parse("08:00-12:00 11:00-13:00")
                .unwrap_err()
                .contains("overlaps")
        );
    }

    #[test]
    fn open_intervals_follow_the_store_time_zone() {
        let w = build_week(["08:00-20:00"; 7]);
        let tz = TimeZone::get("Europe/Oslo").unwrap();
        // Monday 2026-06-01, CEST (UTC+2): open 06:00Z to 18:00Z
        let got = w.open_intervals(&tz, ms("2026-06-01T00:00:00Z"), ms("2026-06-02T00:00:00Z"));
        assert_eq!(
            got,
            vec![(ms("2026-06-01T06:00:00Z"), ms("2026-06-01T18:00:00Z"))]
        );
    }

    #[test]
    fn a_range_crossing_midnight_belongs_to_its_day_and_is_clipped() {
        let mut days = ["closed"; 7];
        days[4] = "22:00-02:00"; // Friday
        let w = build_week(days);
        // Friday 2026-06-05 .. Saturday 01:00 UTC
        let got = w.open_intervals(
            &TimeZone::UTC,
            ms("2026-06-05T00:00:00Z"),
            ms("2026-06-06T01:00:00Z"),
        );
        assert_eq!(
            got,
            vec![(ms("2026-06-05T22:00:00Z"), ms("2026-06-06T01:00:00Z"))]
        );
        // from Saturday 00:30: Friday's range is still open until 02:00
        let got = w.open_intervals(
            &TimeZone::UTC,
            ms("2026-06-06T00:30:00Z"),
            ms("2026-06-07T00:00:00Z"),
        );
        assert_eq!(
            got,
            vec![(ms("2026-06-06T00:30:00Z"), ms("2026-06-06T02:00:00Z"))]
        );
    }

    #[test]
    fn a_whole_day_is_23_hours_when_clocks_go_forward() {
        let tz = TimeZone::get("Europe/Oslo").unwrap();
        // 2026-03-29: clocks go from 02:00 to 03:00
        let got = OpeningHours::always().open_intervals(
            &tz,
            ms("2026-03-28T23:00:00Z"),
            ms("2026-03-29T22:00:00Z"),
        );
        let total: i64 = got.iter().map(|(a, b)| b - a).sum();
        assert_eq!(total, 23 * 3_600_000);
    }
}
