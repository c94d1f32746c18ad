//! Maintenance windows (pure): recurring times, per site or tag, in an IANA time zone, during
//! which notifications are muted (alerts are still recorded, and marked with the window).
//! [`Windows::muted_by`] takes `now`; nothing here reads a clock.
//!
//! # Config (`[[notify.maintenance]]`, documented in docs/notifications.md)
//! ```toml
//! [[notify.maintenance]]
//! name = "oslo-sundays"          # shown on muted alerts; default "maintenance[i]"
//! sites = ["oslo"]               # machines at one of these sites...
//! tags = ["nightly-clean"]       # ...or with one of these tags (at least one of the two)
//! time_zone = "Europe/Oslo"      # IANA name; default "UTC"
//! days = ["sun"]                 # mon tue wed thu fri sat sun; default every day
//! from = "00:00"                 # local start, default 00:00
//! to = "24:00"                   # local end (not included), default 24:00
//! ```
//! "Sundays all day" is `days = ["sun"]`; "daily 02:00-03:00" is `from = "02:00"`,
//! `to = "03:00"`. A window whose `to` is not after its `from` (`22:00`-`02:00`) crosses
//! midnight and belongs to the day it starts on: `days = ["fri"]` mutes Friday 22:00 to
//! Saturday 02:00.
//!
//! # Wall-clock rule (daylight-saving changes)
//! A window is a range of local wall-clock times. On the day clocks go forward, times in the
//! skipped hour do not happen: a window inside it is empty that day, one spanning it is an hour
//! shorter (Sunday is 23 hours long). On the day clocks go back, the repeated hour is inside a
//! window covering it both times: the window lasts an hour longer (Sunday is 25 hours long).
//!
//! # Time zone data: jiff
//! jiff reads the system's `/usr/share/zoneinfo` (Debian's `tzdata`, updated with the OS when
//! governments change rules) and, built with `tzdb-bundle-always`, falls back to a copy of the
//! IANA database inside the binary when that directory is missing (minimal containers), so the
//! server resolves zones on any machine. chrono-tz was the alternative: it only has the copy
//! compiled in, so a rule change needs a new server build, and its API leaves gaps and folds to
//! the caller; jiff's civil/zoned types make the wall-clock rule above direct.

use std::collections::BTreeSet;

use jiff::Timestamp;
use jiff::civil::Weekday;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

/// Seconds in a day: `to = "24:00"`.
const DAY_S: u32 = 86_400;

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn default_time_zone() -> String {
    "UTC".into()
}
fn default_from() -> String {
    "00:00".into()
}
fn default_to() -> String {
    "24:00".into()
}

/// One `[[notify.maintenance]]` entry as written (and as the API takes and shows it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowFile {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub sites: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Empty: every day.
    #[serde(default)]
    pub days: Vec<String>,
    #[serde(default = "default_from")]
    pub from: String,
    #[serde(default = "default_to")]
    pub to: String,
}

/// A validated window.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub name: String,
    /// As written (the API lists it so), with the name filled in.
    pub written: WindowFile,
    pub sites: BTreeSet<String>,
    pub tags: BTreeSet<String>,
    pub time_zone: TimeZone,
    /// Bit `i`: the day `i` days after Monday.
    days: u8,
    /// Local seconds of the day, `from` included, `to` not; `to <= from` crosses midnight.
    from_s: u32,
    to_s: u32,
}

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

fn parse_day(s: &str) -> Option<u8> {
    let s = s.to_ascii_lowercase();
    DAY_NAMES
        .iter()
        .position(|d| s == *d || (s.len() > 3 && full_day_name(d) == s))
        .map(|i| i as u8)
}

fn full_day_name(short: &str) -> &'static str {
    match short {
        "mon" => "monday",
        "tue" => "tuesday",
        "wed" => "wednesday",
        "thu" => "thursday",
        "fri" => "friday",
        "sat" => "saturday",
        _ => "sunday",
    }
}

impl WindowFile {
    /// Every problem with its key under `key` (`notify.maintenance[i]`), or the window.
    pub fn validate(&self, key: &str, index: usize) -> Result<Window, Vec<String>> {
        let mut p = Vec::new();
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| format!("maintenance[{index}]"));
        if name.trim().is_empty() {
            p.push(format!("{key}.name: must not be empty"));
        }
        if self.sites.is_empty() && self.tags.is_empty() {
            p.push(format!(
                "{key}.sites, {key}.tags: a window needs at least one site or tag"
            ));
        }
        for (field, list) in [("sites", &self.sites), ("tags", &self.tags)] {
            for (i, v) in list.iter().enumerate() {
                if v.trim().is_empty() {
                    p.push(format!("{key}.{field}[{i}]: must not be empty"));
                }
            }
        }
        let time_zone = match TimeZone::get(&self.time_zone) {
            Ok(tz) => tz,
            Err(e) => {
                p.push(format!(
                    "{key}.time_zone: {:?} is not an IANA time zone ({e})",
                    self.time_zone
                ));
                TimeZone::UTC
            }
        };
        let mut days = 0u8;
        for (i, d) in self.days.iter().enumerate() {
            match parse_day(d) {
                Some(bit) => days |= 1 << bit,
                None => p.push(format!(
                    "{key}.days[{i}]: {d:?} is not one of {}",
                    DAY_NAMES.join(" ")
                )),
            }
        }
        if self.days.is_empty() {
            days = 0x7f;
        }
        let from_s = parse_time(&self.from);
        let to_s = parse_time(&self.to);
        if from_s.is_none() || from_s == Some(DAY_S) {
            p.push(format!(
                "{key}.from: {:?} is not a time from 00:00 to 23:59",
                self.from
            ));
        }
        if to_s.is_none() {
            p.push(format!(
                "{key}.to: {:?} is not a time from 00:00 to 24:00",
                self.to
            ));
        }
        if let (Some(f), Some(t)) = (from_s, to_s)
            && f == t
        {
            p.push(format!(
                "{key}.to: equal to from, the window would be empty (all day is 00:00 to 24:00)"
            ));
        }
        if !p.is_empty() {
            return Err(p);
        }
        Ok(Window {
            written: WindowFile {
                name: Some(name.clone()),
                ..self.clone()
            },
            name,
            sites: self.sites.iter().cloned().collect(),
            tags: self.tags.iter().cloned().collect(),
            time_zone,
            days,
            from_s: from_s.unwrap_or(0),
            to_s: to_s.unwrap_or(DAY_S),
        })
    }
}

impl Window {
    /// The machine is in the window's scope: at one of its sites or with one of its tags.
    pub fn applies_to(&self, site: Option<&str>, tags: &[String]) -> bool {
        site.is_some_and(|s| self.sites.contains(s)) || tags.iter().any(|t| self.tags.contains(t))
    }

    fn on(&self, day: Weekday) -> bool {
        self.days & (1 << day.to_monday_zero_offset()) != 0
    }

    /// The window is open at `now_ms`, by the wall clock of its time zone.
    pub fn is_open(&self, now_ms: i64) -> bool {
        let Ok(ts) = Timestamp::from_millisecond(now_ms) else {
            return false;
        };
        let local = self.time_zone.to_datetime(ts);
        let t = local.time();
        let secs = u32::from(t.hour().unsigned_abs()) * 3600
            + u32::from(t.minute().unsigned_abs()) * 60
            + u32::from(t.second().unsigned_abs());
        let day = local.weekday();
        if self.from_s < self.to_s {
            self.on(day) && (self.from_s..self.to_s).contains(&secs)
        } else {
            // crosses midnight: the evening of a listed day, or the morning after one
            (self.on(day) && secs >= self.from_s) || (self.on(day.previous()) && secs < self.to_s)
        }
    }
}

/// Every window of the config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Windows {
    pub windows: Vec<Window>,
}

impl Windows {
    /// Validates `[[notify.maintenance]]` (names must be unique) under `prefix`.
    pub fn from_files(prefix: &str, files: &[WindowFile]) -> Result<Windows, Vec<String>> {
        let mut p = Vec::new();
        let mut windows = Vec::with_capacity(files.len());
        let mut names = BTreeSet::new();
        for (i, f) in files.iter().enumerate() {
            let key = format!("{prefix}[{i}]");
            match f.validate(&key, i) {
                Ok(w) => {
                    if !names.insert(w.name.clone()) {
                        p.push(format!("{key}.name: {:?} is used by an earlier window", w.name));
                    }
                    windows.push(w);
                }
                Err(mut e) => p.append(&mut e),
            }
        }
        if p.is_empty() {
            Ok(Windows { windows })
        } else {
            Err(p)
        }
    }

    /// The first window muting a machine at `site` with `tags` at `now_ms`, if any.
    pub fn muted_by(&self, site: Option<&str>, tags: &[String], now_ms: i64) -> Option<&Window> {
        self.windows
            .iter()
            .find(|w| w.applies_to(site, tags) && w.is_open(now_ms))
    }

    /// Notifications about a machine at `site` with `tags` are muted at `now_ms`.
    pub fn is_muted(&self, site: Option<&str>, tags: &[String], now_ms: i64) -> bool {
        self.muted_by(site, tags, now_ms).is_some()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn build(text: &str) -> Windows {
        #[derive(Deserialize)]
        struct W {
            maintenance: Vec<WindowFile>,
        }
        let w: W = toml::from_str(text).unwrap();
        Windows::from_files("notify.maintenance", &w.maintenance).unwrap()
    }

    fn ms(rfc3339: &str) -> i64 {
        rfc3339.parse::<Timestamp>().unwrap().as_millisecond()
    }

    fn oslo(site: &str) -> impl Fn(&Windows, &str) -> bool {
        let site = site.to_string();
        move |w, at| w.is_muted(Some(&site), &[], ms(at))
    }

    const OSLO_SUNDAYS: &str = r#"
[[maintenance]]
name = "oslo-sundays"
sites = ["oslo"]
time_zone = "Europe/Oslo"
days = ["sun"]
"#;

    const NIGHTLY: &str = r#"
[[maintenance]]
name = "nightly"
tags = ["nightly-clean"]
time_zone = "Europe/Oslo"
from = "02:00"
to = "03:00"
"#;

    #[test]
    fn sundays_all_day_in_oslo_is_23_hours_on_the_spring_change() {
        // 2026-03-29: 02:00 CET becomes 03:00 CEST at 01:00 UTC
        let w = build(OSLO_SUNDAYS);
        let muted = oslo("oslo");
        assert!(!muted(&w, "2026-03-28T22:59:59Z"), "Saturday 23:59:59 CET");
        assert!(muted(&w, "2026-03-28T23:00:00Z"), "Sunday 00:00 CET");
        assert!(muted(&w, "2026-03-29T00:59:59Z"), "Sunday 01:59:59 CET");
        assert!(muted(&w, "2026-03-29T01:00:00Z"), "Sunday 03:00 CEST");
        assert!(muted(&w, "2026-03-29T21:59:59Z"), "Sunday 23:59:59 CEST");
        assert!(
            !muted(&w, "2026-03-29T22:00:00Z"),
            "Monday 00:00 CEST, not 23:00 UTC+1"
        );
    }

    #[test]
    fn sundays_all_day_in_oslo_is_25_hours_on_the_autumn_change() {
        // 2026-10-25: 03:00 CEST becomes 02:00 CET at 01:00 UTC
        let w = build(OSLO_SUNDAYS);
        let muted = oslo("oslo");
        assert!(!muted(&w, "2026-10-24T21:59:59Z"), "Saturday 23:59:59 CEST");
        assert!(muted(&w, "2026-10-24T22:00:00Z"), "Sunday 00:00 CEST");
        assert!(muted(&w, "2026-10-25T22:59:59Z"), "Sunday 23:59:59 CET");
        assert!(!muted(&w, "2026-10-25T23:00:00Z"), "Monday 00:00 CET");
        // another site is not in this window
        assert!(!w.is_muted(Some("bergen"), &[], ms("2026-10-25T12:00:00Z")));
    }

    #[test]
    fn a_nightly_hour_covers_the_repeated_hour_twice_when_clocks_go_back() {
        let w = build(NIGHTLY);
        let tags = vec!["nightly-clean".to_string()];
        let muted = |at: &str| w.is_muted(Some("any"), &tags, ms(at));
        assert!(!muted("2026-10-24T23:59:59Z"), "01:59:59 CEST");
        assert!(muted("2026-10-25T00:00:00Z"), "02:00 CEST");
        assert!(muted("2026-10-25T00:59:59Z"), "02:59:59 CEST");
        assert!(muted("2026-10-25T01:00:00Z"), "02:00 CET, the second time");
        assert!(muted("2026-10-25T01:59:59Z"), "02:59:59 CET");
        assert!(!muted("2026-10-25T02:00:00Z"), "03:00 CET");
        // the day before, in summer time
        assert!(muted("2026-10-24T00:30:00Z"), "02:30 CEST");
        assert!(!muted("2026-10-24T01:00:00Z"), "03:00 CEST");
    }

    #[test]
    fn a_nightly_hour_inside_the_skipped_hour_is_empty_when_clocks_go_forward() {
        let w = build(NIGHTLY);
        let tags = vec!["nightly-clean".to_string()];
        let muted = |at: &str| w.is_muted(None, &tags, ms(at));
        assert!(muted("2026-03-28T01:30:00Z"), "Saturday 02:30 CET");
        assert!(!muted("2026-03-29T00:59:59Z"), "01:59:59 CET");
        assert!(
            !muted("2026-03-29T01:00:00Z"),
            "03:00 CEST: 02:00-03:00 did not happen"
        );
        assert!(muted("2026-03-30T00:30:00Z"), "Monday 02:30 CEST");
        assert!(!muted("2026-03-30T01:00:00Z"), "Monday 03:00 CEST");
    }

    #[test]
    fn a_window_spanning_the_skipped_hour_is_an_hour_shorter() {
        let w = build(
            "[[maintenance]]\nsites = [\"oslo\"]\ntime_zone = \"Europe/Oslo\"\nfrom = \"01:30\"\nto = \"03:30\"\n",
        );
        let muted = oslo("oslo");
        assert!(!muted(&w, "2026-03-29T00:29:59Z"), "01:29:59 CET");
        assert!(muted(&w, "2026-03-29T00:30:00Z"), "01:30 CET");
        assert!(muted(&w, "2026-03-29T01:00:00Z"), "03:00 CEST");
        assert!(muted(&w, "2026-03-29T01:29:59Z"), "03:29:59 CEST");
        assert!(
            !muted(&w, "2026-03-29T01:30:00Z"),
            "03:30 CEST: one hour after it opened"
        );
    }

    #[test]
    fn sydney_sundays_follow_the_southern_autumn_change() {
        // 2026-04-05: 03:00 AEDT (UTC+11) becomes 02:00 AEST (UTC+10) at 16:00 UTC on the 4th
        let w = build(
            "[[maintenance]]\nsites = [\"syd\"]\ntime_zone = \"Australia/Sydney\"\ndays = [\"sunday\"]\n",
        );
        let muted = oslo("syd");
        assert!(!muted(&w, "2026-04-04T12:59:59Z"), "Saturday 23:59:59 AEDT");
        assert!(muted(&w, "2026-04-04T13:00:00Z"), "Sunday 00:00 AEDT");
        assert!(muted(&w, "2026-04-05T13:59:59Z"), "Sunday 23:59:59 AEST");
        assert!(!muted(&w, "2026-04-05T14:00:00Z"), "Monday 00:00 AEST");
    }

    #[test]
    fn a_window_across_midnight_belongs_to_the_day_it_starts() {
        let w =
            build("[[maintenance]]\nsites = [\"s\"]\ndays = [\"fri\"]\nfrom = \"22:00\"\nto = \"02:00\"\n");
        let muted = oslo("s");
        // 2026-03-06 is a Friday; UTC zone
        assert!(!muted(&w, "2026-03-06T21:59:59Z"));
        assert!(muted(&w, "2026-03-06T22:00:00Z"));
        assert!(muted(&w, "2026-03-07T01:59:59Z"), "Saturday morning");
        assert!(!muted(&w, "2026-03-07T02:00:00Z"));
        assert!(
            !muted(&w, "2026-03-07T23:00:00Z"),
            "Saturday evening is not listed"
        );
        assert!(
            !muted(&w, "2026-03-06T01:00:00Z"),
            "Friday morning follows Thursday"
        );
    }

    #[test]
    fn a_machine_is_in_scope_by_site_or_by_any_tag_and_the_window_is_named() {
        let w = build(&format!(
            "{OSLO_SUNDAYS}{}",
            NIGHTLY.replace("[[maintenance]]", "\n[[maintenance]]")
        ));
        let night = ms("2026-03-30T00:30:00Z"); // Monday 02:30 CEST
        let tags = vec!["x".to_string(), "nightly-clean".to_string()];
        assert_eq!(
            w.muted_by(Some("bergen"), &tags, night).map(|w| w.name.as_str()),
            Some("nightly")
        );
        assert!(
            w.muted_by(Some("oslo"), &[], night).is_none(),
            "Monday: not the Sunday window"
        );
        assert_eq!(
            w.muted_by(Some("oslo"), &[], ms("2026-03-29T12:00:00Z"))
                .map(|w| w.name.as_str()),
            Some("oslo-sundays")
        );
        assert!(!w.is_muted(None, &[], night));
    }

    #[test]
    fn every_bad_window_value_is_named_by_key() {
        let text = r#"
[[maintenance]]
name = "a"
time_zone = "Europe/Olso"
days = ["sun", "funday"]
from = "25:00"
to = "2:00"

[[maintenance]]
name = "a"
sites = ["x"]
from = "03:00"
to = "03:00"
"#;
        #[derive(Deserialize)]
        struct W {
            maintenance: Vec<WindowFile>,
        }
        let w: W = toml::from_str(text).unwrap();
        let p = Windows::from_files("notify.maintenance", &w.maintenance)
            .unwrap_err()
            .join("\n");
        for key in [
            "notify.maintenance[0].sites, notify.maintenance[0].tags",
            "notify.maintenance[0].time_zone: \"Europe/Olso\"",
            "notify.maintenance[0].days[1]: \"funday\"",
            "notify.maintenance[0].from",
            "notify.maintenance[0].to",
            "notify.maintenance[1].to: equal to from",
        ] {
            assert!(p.contains(key), "{key} in:\n{p}");
        }
        let e = toml::from_str::<W>("[[maintenance]]\nsites = [\"x\"]\nzone = \"UTC\"\n")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("zone"), "{e}");
    }

    #[test]
    fn duplicate_window_names_are_refused() {
        let f = WindowFile {
            name: Some("w".into()),
            sites: vec!["s".into()],
            tags: Vec::new(),
            time_zone: "UTC".into(),
            days: Vec::new(),
            from: "00:00".into(),
            to: "24:00".into(),
        };
        let p = Windows::from_files("m", &[f.clone(), f]).unwrap_err();
        assert_eq!(p, ["m[1].name: \"w\" is used by an earlier window"]);
    }

    #[test]
    fn the_bundled_time_zone_data_agrees_with_the_system_across_both_changes() {
        // the fallback for a machine without /usr/share/zoneinfo
        let bundled = jiff::tz::TimeZoneDatabase::bundled().get("Europe/Oslo").unwrap();
        let system = TimeZone::get("Europe/Oslo").unwrap();
        for at in [
            "2026-03-29T00:59:59Z",
            "2026-03-29T01:00:00Z",
            "2026-10-25T00:59:59Z",
            "2026-10-25T01:00:00Z",
        ] {
            let ts: Timestamp = at.parse().unwrap();
            assert_eq!(bundled.to_datetime(ts), system.to_datetime(ts), "{at}");
        }
    }

    proptest! {
        /// In UTC a window is plain arithmetic on the epoch: the model is seconds of the day
        /// and the weekday (1970-01-01 was a Thursday).
        #[test]
        fn a_utc_window_agrees_with_epoch_arithmetic(
            now_s in 0i64..4_000_000_000,
            days in 1u8..=0x7f,
            from_min in 0u32..1440,
            to_min in 1u32..=1440,
        ) {
            prop_assume!(from_min != to_min);
            let w = Window {
                name: "p".into(),
                // only shown by the API; is_open reads the fields below
                written: WindowFile {
                    name: Some("p".into()),
                    sites: vec!["s".into()],
                    tags: vec![],
                    time_zone: "UTC".into(),
                    days: vec![],
                    from: String::new(),
                    to: String::new(),
                },
                sites: BTreeSet::from(["s".to_string()]),
                tags: BTreeSet::new(),
                time_zone: TimeZone::UTC,
                days,
                from_s: from_min * 60,
                to_s: to_min * 60,
            };
            let secs = now_s.rem_euclid(86_400) as u32;
            let weekday = ((now_s.div_euclid(86_400) + 3).rem_euclid(7)) as u8; // Monday = 0
            let on = |d: u8| days & (1 << d) != 0;
            let (f, t) = (from_min * 60, to_min * 60);
            let expected = if f < t {
                on(weekday) && secs >= f && secs < t
            } else {
                (on(weekday) && secs >= f) || (on((weekday + 6) % 7) && secs < t)
            };
            prop_assert_eq!(w.is_open(now_s * 1000), expected);
        }
    }
}
