//! The HTML fleet report of `GET /api/v1/report?from=&to=` (viewer): availability per
//! machine, alerts, the worst machines and small inline SVG charts, in one self-contained page
//! (no scripts, no external assets; it prints and can be mailed). Pure: the route
//! ([`http`]) reads the store and the alerts, this module computes availability and ranks
//! the machines, and [`html::render`] writes the page.
//!
//! # Availability
//!
//! A machine is *up* in a minute when the server holds at least one telemetry record stamped
//! in that minute (by the record's own timestamp). The agent collects every second and keeps
//! what it could not send on disk, so a machine that ran but lost its network for an hour
//! still counts as up once its backlog arrived: this measures whether the machine ran and
//! collected, not whether it was reachable (presence and the `device_offline` alert speak for
//! that). Minutes are read from the 1-minute rollups, and from raw rows for the last few
//! minutes the rollup job may not have reached yet.
//!
//! Availability = up minutes / observed minutes, where observed minutes run from the start of
//! the window, or from the machine's first record if it came later (a machine installed
//! mid-window is not blamed for the time before), to the end of the window or now; the current,
//! unfinished minute counts only if it already has data. A machine with no record at all
//! before the window's end has no availability ("no data").

pub mod html;
pub mod http;

use std::collections::BTreeMap;

use common::{DeviceId, Severity};

use crate::fleet::state::Presence;
use crate::history::minute::{MINUTE_MS, minute_of};
use crate::history::rows::Point;

/// Points per time-series chart, about.
pub const CHART_POINTS: i64 = 60;
/// Smallest chart step.
pub const MIN_CHART_STEP_MS: i64 = 1_000;
/// Machines in the "worst machines" table.
pub const WORST: usize = 10;
/// Machines in the availability bar chart, at most (the worst first).
pub const MAX_BARS: usize = 30;
/// Availability at or above this is green.
pub const GOOD_PCT: f64 = 99.0;
/// ...at or above this amber, below it red.
pub const FAIR_PCT: f64 = 95.0;

/// Counts up and observed minutes of one machine, fed the minutes with data in ascending
/// order (duplicates are ignored); nothing is kept per minute.
#[derive(Debug, Clone)]
pub struct AvailabilityCounter {
    start: i64,
    end: i64,
    up: u64,
    last: Option<i64>,
    longest_gap: i64,
}

/// The result of an [`AvailabilityCounter`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Availability {
    pub observed_minutes: u64,
    pub up_minutes: u64,
    /// None when nothing was observed (no data).
    pub pct: Option<f64>,
    /// Longest run of minutes without data.
    pub longest_gap_minutes: u64,
}

impl Availability {
    pub fn down_minutes(&self) -> u64 {
        self.observed_minutes.saturating_sub(self.up_minutes)
    }
}

impl AvailabilityCounter {
    /// The window `[from_ms, to_ms)` at `now_ms`, for a machine whose first record (ever, within
    /// retention) is in `first_minute`.
    pub fn new(from_ms: i64, to_ms: i64, now_ms: i64, first_minute: Option<i64>) -> Self {
        let end = to_ms.min(now_ms);
        let start = match first_minute {
            Some(f) => minute_of(from_ms).max(f),
            None => end, // nothing observed
        };
        AvailabilityCounter {
            start,
            end,
            up: 0,
            last: None,
            longest_gap: 0,
        }
    }

    /// A minute (its start) with at least one record.
    pub fn observe(&mut self, minute_ms: i64) {
        if minute_ms < self.start || minute_ms >= self.end {
            return;
        }
        if self.last.is_some_and(|l| minute_ms <= l) {
            return;
        }
        let prev = self.last.unwrap_or(self.start - MINUTE_MS);
        self.longest_gap = self.longest_gap.max((minute_ms - prev) / MINUTE_MS - 1);
        self.last = Some(minute_ms);
        self.up += 1;
    }

    pub fn finish(&self) -> Availability {
        if self.start >= self.end {
            return Availability {
                observed_minutes: 0,
                up_minutes: 0,
                pct: None,
                longest_gap_minutes: 0,
            };
        }
        // whole minutes, plus the unfinished last one when it has data
        let complete = (self.end - self.start) / MINUTE_MS;
        let partial_start = self.start + complete * MINUTE_MS;
        let partial_up = partial_start < self.end && self.last.is_some_and(|l| l >= partial_start);
        let observed = complete as u64 + u64::from(partial_up);
        // the gap after the last minute with data, up to the last complete minute
        let prev = self.last.unwrap_or(self.start - MINUTE_MS);
        let tail = (partial_start - prev) / MINUTE_MS - 1;
        let longest = self.longest_gap.max(tail).max(0) as u64;
        Availability {
            observed_minutes: observed,
            up_minutes: self.up.min(observed),
            pct: (observed > 0).then(|| self.up.min(observed) as f64 * 100.0 / observed as f64),
            longest_gap_minutes: longest,
        }
    }
}

/// Step of the time-series charts for a window.
pub fn chart_step_ms(from_ms: i64, to_ms: i64) -> i64 {
    let range = (to_ms - from_ms).max(1);
    ((range + CHART_POINTS - 1) / CHART_POINTS).max(MIN_CHART_STEP_MS)
}

/// One machine in the report.
#[derive(Debug, Clone)]
pub struct DeviceReport {
    pub id: DeviceId,
    pub site: Option<String>,
    pub status: Presence,
    pub availability: Availability,
    /// CPU % per chart step: `[ts, min, max, avg]`.
    pub cpu: Vec<Point>,
    /// GPU temperature per chart step (or the hottest sensor when the GPU has none).
    pub temp: Vec<Point>,
}

/// An alert that fired in (or was firing during) the window.
#[derive(Debug, Clone)]
pub struct AlertRow {
    pub device: DeviceId,
    pub rule: String,
    pub severity: Severity,
    pub fired_ms: i64,
    pub resolved_ms: Option<i64>,
}

impl AlertRow {
    /// Firing at some point in `[from_ms, to_ms)`.
    pub fn overlaps(&self, from_ms: i64, to_ms: i64) -> bool {
        self.fired_ms < to_ms && self.resolved_ms.is_none_or(|r| r >= from_ms)
    }
}

/// Everything [`html::render`] needs.
#[derive(Debug, Clone)]
pub struct ReportInput {
    pub from_ms: i64,
    pub to_ms: i64,
    pub now_ms: i64,
    pub devices: Vec<DeviceReport>,
    /// Already limited to the window ([`AlertRow::overlaps`]).
    pub alerts: Vec<AlertRow>,
    /// Resolved alerts the server still remembers (the report cannot see older ones).
    pub alert_history_note: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlertCounts {
    pub critical: u64,
    pub warning: u64,
    pub info: u64,
}

impl AlertCounts {
    pub fn total(&self) -> u64 {
        self.critical + self.warning + self.info
    }

    fn add(&mut self, s: Severity) {
        match s {
            Severity::Critical => self.critical += 1,
            Severity::Warning => self.warning += 1,
            Severity::Info => self.info += 1,
        }
    }
}

/// Alerts per device.
pub fn alert_counts(alerts: &[AlertRow]) -> BTreeMap<DeviceId, AlertCounts> {
    let mut m: BTreeMap<DeviceId, AlertCounts> = BTreeMap::new();
    for a in alerts {
        m.entry(a.device.clone()).or_default().add(a.severity);
    }
    m
}

/// Machines worst first: lowest availability (no data last), then most critical alerts, then
/// most alerts, then id.
pub fn rank_worst<'a>(
    devices: &'a [DeviceReport],
    counts: &BTreeMap<DeviceId, AlertCounts>,
) -> Vec<&'a DeviceReport> {
    let mut v: Vec<&DeviceReport> = devices.iter().collect();
    let c = |d: &DeviceReport| counts.get(&d.id).copied().unwrap_or_default();
    v.sort_by(|a, b| {
        let pa = a.availability.pct.unwrap_or(f64::INFINITY);
        let pb = b.availability.pct.unwrap_or(f64::INFINITY);
        pa.total_cmp(&pb)
            .then(c(b).critical.cmp(&c(a).critical))
            .then(c(b).total().cmp(&c(a).total()))
            .then(a.id.cmp(&b.id))
    });
    v
}

/// Fleet availability: all up minutes over all observed minutes.
pub fn fleet_availability(devices: &[DeviceReport]) -> Option<f64> {
    let (up, obs) = devices.iter().fold((0u64, 0u64), |(u, o), d| {
        (u + d.availability.up_minutes, o + d.availability.observed_minutes)
    });
    (obs > 0).then(|| up as f64 * 100.0 / obs as f64)
}

/// Merges per-device points of the same steps: average of the averages (CPU) or the maximum
/// (temperature).
pub fn merge_points(series: &[&[Point]], max: bool) -> Vec<(i64, f64)> {
    let mut m: BTreeMap<i64, (f64, u32)> = BTreeMap::new();
    for s in series {
        for &(ts, _, hi, avg) in s.iter() {
            let e = m.entry(ts).or_insert((if max { f64::MIN } else { 0.0 }, 0));
            if max {
                e.0 = e.0.max(hi);
            } else {
                e.0 += avg;
            }
            e.1 += 1;
        }
    }
    m.into_iter()
        .map(|(ts, (v, n))| (ts, if max { v } else { v / f64::from(n.max(1)) }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = MINUTE_MS;
    const T0: i64 = 1_700_000_040_000; // a minute boundary

    fn build_device(
        id: &str,
        pct_up: &[i64],
        first: Option<i64>,
        from: i64,
        to: i64,
        now: i64,
    ) -> DeviceReport {
        let mut c = AvailabilityCounter::new(from, to, now, first);
        for m in pct_up {
            c.observe(*m);
        }
        DeviceReport {
            id: DeviceId::new(id).unwrap(),
            site: Some("s1".into()),
            status: Presence::Online,
            availability: c.finish(),
            cpu: vec![(from, 1.0, 30.0, 20.0), (from + 10 * M, 1.0, 90.0, 40.0)],
            temp: vec![(from, 40.0, 55.0, 50.0)],
        }
    }

    #[test]
    fn availability_counts_minutes_with_data_from_the_first_record() {
        assert_eq!(T0 % M, 0);
        // 10 minutes window, data in 8 of them, minutes 3 and 4 missing
        let minutes: Vec<i64> = (0..10)
            .filter(|i| *i != 3 && *i != 4)
            .map(|i| T0 + i * M)
            .collect();
        let mut c = AvailabilityCounter::new(T0, T0 + 10 * M, T0 + 60 * M, Some(T0 - 100 * M));
        for m in &minutes {
            c.observe(*m);
            c.observe(*m); // duplicates are ignored
        }
        let a = c.finish();
        assert_eq!(
            (a.observed_minutes, a.up_minutes, a.longest_gap_minutes),
            (10, 8, 2)
        );
        assert_eq!(a.pct, Some(80.0));
        assert_eq!(a.down_minutes(), 2);

        // installed mid-window: counted from its first minute
        let mut c = AvailabilityCounter::new(T0, T0 + 10 * M, T0 + 60 * M, Some(T0 + 5 * M));
        for i in 5..10 {
            c.observe(T0 + i * M);
        }
        assert_eq!(c.finish().pct, Some(100.0));

        // no data at all
        let c = AvailabilityCounter::new(T0, T0 + 10 * M, T0 + 60 * M, None);
        assert_eq!(c.finish().pct, None);
    }

    #[test]
    fn the_unfinished_minute_counts_only_with_data_and_a_silent_tail_is_a_gap() {
        let now = T0 + 2 * M + 30_000;
        let mut c = AvailabilityCounter::new(T0, T0 + 60 * M, now, Some(T0));
        c.observe(T0);
        c.observe(T0 + M);
        let a = c.finish();
        assert_eq!((a.observed_minutes, a.up_minutes), (2, 2));
        c.observe(T0 + 2 * M);
        assert_eq!(c.finish().observed_minutes, 3);
        assert_eq!(c.finish().pct, Some(100.0));
        // silent for the last 5 complete minutes
        let mut c = AvailabilityCounter::new(T0, T0 + 10 * M, T0 + 10 * M, Some(T0));
        for i in 0..5 {
            c.observe(T0 + i * M);
        }
        let a = c.finish();
        assert_eq!(
            (a.up_minutes, a.observed_minutes, a.longest_gap_minutes),
            (5, 10, 5)
        );
    }

    #[test]
    fn the_worst_machines_come_first_and_no_data_last() {
        let (from, to) = (T0, T0 + 10 * M);
        let all: Vec<i64> = (0..10).map(|i| T0 + i * M).collect();
        let devices = vec![
            build_device("good", &all, Some(T0), from, to, to),
            build_device("nodata", &[], None, from, to, to),
            build_device("half", &all[..5], Some(T0), from, to, to),
            build_device("alerty", &all, Some(T0), from, to, to),
        ];
        let alerts = vec![AlertRow {
            device: DeviceId::new("alerty").unwrap(),
            rule: "gpu_hot".into(),
            severity: Severity::Critical,
            fired_ms: T0,
            resolved_ms: None,
        }];
        let counts = alert_counts(&alerts);
        let order: Vec<&str> = rank_worst(&devices, &counts)
            .iter()
            .map(|d| d.id.as_str())
            .collect();
        assert_eq!(order, ["half", "alerty", "good", "nodata"]);
        assert_eq!(
            fleet_availability(&devices).map(|p| (p * 100.0).round() / 100.0),
            Some(83.33)
        );
    }

    #[test]
    fn alerts_overlap_the_window_when_they_were_firing_in_it() {
        let a = |fired, resolved| AlertRow {
            device: DeviceId::new("d").unwrap(),
            rule: "r".into(),
            severity: Severity::Warning,
            fired_ms: fired,
            resolved_ms: resolved,
        };
        assert!(a(5, None).overlaps(0, 10));
        assert!(a(-5, Some(3)).overlaps(0, 10));
        assert!(!a(-5, Some(-1)).overlaps(0, 10));
        assert!(!a(10, None).overlaps(0, 10));
    }

    #[test]
    fn merged_points_average_cpu_and_take_the_hottest_temperature() {
        let a: Vec<Point> = vec![(0, 0.0, 10.0, 10.0), (60, 0.0, 50.0, 30.0)];
        let b: Vec<Point> = vec![(0, 0.0, 70.0, 20.0)];
        assert_eq!(merge_points(&[&a, &b], false), vec![(0, 15.0), (60, 30.0)]);
        assert_eq!(merge_points(&[&a, &b], true), vec![(0, 70.0), (60, 50.0)]);
        assert_eq!(chart_step_ms(0, 600_000), 10_000);
        assert_eq!(chart_step_ms(0, 30_000), 1_000);
        assert_eq!(chart_step_ms(0, 7 * 24 * 3_600_000), 10_080_000);
    }
}
