//! Availability (pure): how much of the time a machine was expected to serve it did serve,
//! from intervals. Nothing here reads a clock or a store; [`super::report`] gathers the
//! intervals (opening hours, maintenance windows, the alerts that say a machine could not
//! serve) and this module does the arithmetic.
//!
//! # Definition
//! Over a period `[from, to)` a machine's time splits into four disjoint parts:
//! - **closed**: outside its store's opening hours (in the store's time zone);
//! - **maintenance**: inside opening hours and inside a maintenance window that covers the
//!   machine;
//! - **unavailable**: the rest of the opening hours (the *scheduled* time) during which the
//!   machine was offline, unhealthy, or not accepting containers (its vision service down);
//! - **available**: the rest of the scheduled time.
//!
//! Availability = available / scheduled. Closed and maintenance time count for neither side;
//! they are reported beside the figure. A machine with no scheduled time (a store closed all
//! period) has no figure. A store's or retailer's figure weighs each machine by its scheduled
//! time: the sum of available time over the sum of scheduled time of its machines.

use serde::Serialize;

/// Disjoint, sorted intervals `[start, end)` in milliseconds.
pub type Intervals = Vec<(i64, i64)>;

/// Sorts `v`, drops empty intervals and merges the ones that touch or overlap.
pub fn normalize(mut v: Intervals) -> Intervals {
    v.retain(|(a, b)| a < b);
    v.sort_unstable();
    let mut out: Intervals = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// The parts of `a` inside `b` (both normalized).
pub fn intersect(a: &[(i64, i64)], b: &[(i64, i64)]) -> Intervals {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        let (s, e) = (a[i].0.max(b[j].0), a[i].1.min(b[j].1));
        if s < e {
            out.push((s, e));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// The parts of `a` outside `b` (both normalized).
pub fn subtract(a: &[(i64, i64)], b: &[(i64, i64)]) -> Intervals {
    let mut out = Vec::new();
    let mut j = 0;
    for &(mut s, e) in a {
        while j < b.len() && b[j].1 <= s {
            j += 1;
        }
        let mut k = j;
        while k < b.len() && b[k].0 < e {
            if b[k].0 > s {
                out.push((s, b[k].0));
            }
            s = s.max(b[k].1);
            k += 1;
        }
        if s < e {
            out.push((s, e));
        }
    }
    out
}

/// Total length of normalized intervals.
pub fn total(v: &[(i64, i64)]) -> i64 {
    v.iter().map(|(a, b)| b - a).sum()
}

/// What one machine's availability is computed from, all within the period.
#[derive(Debug, Clone, Default)]
pub struct MachineTimes {
    /// The store's opening hours in the period.
    pub open: Intervals,
    /// Maintenance windows covering the machine.
    pub maintenance: Intervals,
    /// Offline, unhealthy or not accepting containers.
    pub down: Intervals,
}

/// The parts of a period (module docs), in milliseconds, and the figure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Figures {
    pub period_ms: i64,
    pub closed_ms: i64,
    pub maintenance_ms: i64,
    pub scheduled_ms: i64,
    pub unavailable_ms: i64,
    pub available_ms: i64,
    /// available / scheduled in percent; None without scheduled time.
    pub availability_pct: Option<f64>,
}

impl Figures {
    /// Sums machines' figures (a store's, a retailer's); the figure is recomputed.
    pub fn sum<'a>(parts: impl IntoIterator<Item = &'a Figures>) -> Figures {
        let mut f = Figures::default();
        for p in parts {
            f.period_ms += p.period_ms;
            f.closed_ms += p.closed_ms;
            f.maintenance_ms += p.maintenance_ms;
            f.scheduled_ms += p.scheduled_ms;
            f.unavailable_ms += p.unavailable_ms;
            f.available_ms += p.available_ms;
        }
        f.availability_pct = pct(f.available_ms, f.scheduled_ms);
        f
    }
}

fn pct(available: i64, scheduled: i64) -> Option<f64> {
    (scheduled > 0).then(|| available as f64 * 100.0 / scheduled as f64)
}

/// One machine's figures over `[from_ms, to_ms)` (module docs). Inputs need not be normalized
/// nor inside the period.
pub fn machine_figures(from_ms: i64, to_ms: i64, t: &MachineTimes) -> Figures {
    let period = vec![(from_ms, to_ms.max(from_ms))];
    let clip = |v: &Intervals| intersect(&normalize(v.clone()), &period);
    let open = clip(&t.open);
    let maintenance = intersect(&open, &clip(&t.maintenance));
    let scheduled = subtract(&open, &maintenance);
    let unavailable = intersect(&scheduled, &clip(&t.down));
    let (scheduled_ms, unavailable_ms) = (total(&scheduled), total(&unavailable));
    Figures {
        period_ms: total(&period),
        closed_ms: total(&period) - total(&open),
        maintenance_ms: total(&maintenance),
        scheduled_ms,
        unavailable_ms,
        available_ms: scheduled_ms - unavailable_ms,
        availability_pct: pct(scheduled_ms - unavailable_ms, scheduled_ms),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::estate::hours::{DayHours, OpeningHours};

    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;

    /// The issue's example: a store open 08:00-20:00 (Europe/Oslo), over one day, a machine
    /// offline 30 minutes during opening hours and 30 minutes after closing, and a one-hour
    /// maintenance window at 14:00. By hand: open 12 h = 720 min, less the 60 min window =
    /// 660 min scheduled; 30 min of it offline (the 30 min after closing is closed time):
    /// 630 / 660 = 95.4545...%; closed 1440 - 720 = 720 min.
    #[test]
    fn the_issue_example_equals_the_hand_computed_figure() {
        let tz = jiff::tz::TimeZone::get("Europe/Oslo").unwrap();
        let at = |t: &str| {
            format!("2026-06-01T{t}:00+02:00[Europe/Oslo]")
                .parse::<jiff::Zoned>()
                .unwrap()
                .timestamp()
                .as_millisecond()
        };
        let hours = OpeningHours(std::array::from_fn(|_| DayHours::parse("08:00-20:00").unwrap()));
        let (from, to) = (at("00:00"), at("00:00") + 24 * HOUR);
        let t = MachineTimes {
            open: hours.open_intervals(&tz, from, to),
            maintenance: vec![(at("14:00"), at("15:00"))],
            down: vec![(at("10:00"), at("10:30")), (at("20:30"), at("21:00"))],
        };
        let f = machine_figures(from, to, &t);
        assert_eq!(f.period_ms, 1440 * MIN);
        assert_eq!(f.closed_ms, 720 * MIN);
        assert_eq!(f.maintenance_ms, 60 * MIN);
        assert_eq!(f.scheduled_ms, 660 * MIN);
        assert_eq!(f.unavailable_ms, 30 * MIN);
        assert_eq!(f.available_ms, 630 * MIN);
        assert_eq!(f.availability_pct, Some(630.0 * 100.0 / 660.0));
    }

    #[test]
    fn downtime_inside_a_maintenance_window_is_not_counted() {
        let t = MachineTimes {
            open: vec![(0, 10 * HOUR)],
            maintenance: vec![(2 * HOUR, 3 * HOUR)],
            down: vec![(2 * HOUR + 10 * MIN, 3 * HOUR + 10 * MIN)],
        };
        let f = machine_figures(0, 10 * HOUR, &t);
        assert_eq!((f.scheduled_ms, f.unavailable_ms), (9 * HOUR, 10 * MIN));
    }

    #[test]
    fn a_store_closed_all_period_has_no_figure() {
        let f = machine_figures(
            0,
            HOUR,
            &MachineTimes {
                down: vec![(0, HOUR)],
                ..Default::default()
            },
        );
        assert_eq!(
            (f.closed_ms, f.unavailable_ms, f.availability_pct),
            (HOUR, 0, None)
        );
    }

    #[test]
    fn a_store_figure_weighs_machines_by_scheduled_time() {
        let a = Figures {
            scheduled_ms: 100,
            available_ms: 100,
            ..Default::default()
        };
        let b = Figures {
            scheduled_ms: 300,
            available_ms: 0,
            ..Default::default()
        };
        assert_eq!(Figures::sum([&a, &b]).availability_pct, Some(25.0));
    }

    fn intervals() -> impl Strategy<Value = Intervals> {
        prop::collection::vec((0i64..1000, 0i64..200).prop_map(|(a, l)| (a, a + l)), 0..8)
    }

    proptest! {
        /// The four parts always add up to the period, and match a minute-by-minute count.
        #[test]
        fn parts_add_up_and_match_a_pointwise_count(open in intervals(), m in intervals(), d in intervals()) {
            let t = MachineTimes { open: open.clone(), maintenance: m.clone(), down: d.clone() };
            let f = machine_figures(100, 900, &t);
            prop_assert_eq!(f.closed_ms + f.maintenance_ms + f.unavailable_ms + f.available_ms, f.period_ms);
            let inside = |v: &Intervals, x: i64| v.iter().any(|(a, b)| *a <= x && x < *b);
            let (mut closed, mut maint, mut down) = (0, 0, 0);
            for x in 100..900 {
                if !inside(&open, x) { closed += 1 }
                else if inside(&m, x) { maint += 1 }
                else if inside(&d, x) { down += 1 }
            }
            prop_assert_eq!((f.closed_ms, f.maintenance_ms, f.unavailable_ms), (closed, maint, down));
        }
    }
}
