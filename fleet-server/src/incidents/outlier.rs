//! Fleet-relative outlier: a machine's metric stays above median + k × MAD of its cohort (the
//! fleet, or the machines with the same `attrs[cohort_by]`) for `for_s`, with at least
//! `min_cohort` machines reporting; no fixed threshold involved. It resolves when the value
//! comes back.

use super::Correlator;
use super::incident::{Incident, IncidentChange, IncidentKind, IncidentState};
use crate::alerts::alert::DeviceInfo;

/// Outlier samples of a device silent for this many `max_sample_age_s` are forgotten.
pub(super) const OUTLIER_FORGET_FACTOR: i64 = 10;
/// A cohort's median and MAD are computed at most this often (and whenever a machine joins or
/// leaves the metric's samples): computing them per record cost O(fleet) per record, 68 µs at
/// 1,000 machines, on the thread that also evaluates every alert.
const OUTLIER_STATS_REFRESH_MS: i64 = 1000;

/// A cohort's median and raw MAD of one metric, as of `at_ms`.
#[derive(Debug, Clone, Copy)]
pub(super) struct CohortStats {
    pub(super) n: usize,
    pub(super) median: f64,
    pub(super) mad: f64,
    pub(super) at_ms: i64,
    /// Samples of the metric (all cohorts) when computed: a change means a machine came or went.
    pub(super) samples: usize,
}

#[derive(Debug, Clone)]
pub(super) struct OutlierSample {
    pub(super) cohort: Option<String>,
    pub(super) value: f64,
    pub(super) at_ms: i64,
}

impl Correlator {
    pub(super) fn outlier(
        &mut self,
        device: &DeviceInfo,
        metric: &str,
        value: f64,
        now_ms: i64,
        out: &mut Vec<IncidentChange>,
    ) {
        let cfg = &self.config.outlier;
        let cohort = cfg.cohort_by.as_ref().and_then(|k| device.attrs.get(k).cloned());
        let max_age = cfg.max_sample_age_s as i64 * 1000;
        let per_device = self.samples.entry(metric.to_string()).or_default();
        per_device.insert(
            device.id.clone(),
            OutlierSample {
                cohort: cohort.clone(),
                value,
                at_ms: now_ms,
            },
        );
        let stats_key = (metric.to_string(), cohort.clone());
        let stats = match self.stats.get(&stats_key) {
            Some(st)
                if st.samples == per_device.len()
                    && now_ms >= st.at_ms
                    && now_ms - st.at_ms < OUTLIER_STATS_REFRESH_MS =>
            {
                *st
            }
            _ => {
                let mut values: Vec<f64> = per_device
                    .values()
                    .filter(|s| s.cohort == cohort && now_ms - s.at_ms <= max_age)
                    .map(|s| s.value)
                    .collect();
                let median = median_of(&mut values);
                let mut deviations: Vec<f64> = values.iter().map(|v| (v - median).abs()).collect();
                let st = CohortStats {
                    n: values.len(),
                    median,
                    mad: median_of(&mut deviations),
                    at_ms: now_ms,
                    samples: per_device.len(),
                };
                self.stats.insert(stats_key, st);
                st
            }
        };
        let key = (device.id.clone(), metric.to_string());
        let open = self.find_open(|i| {
            i.kind == IncidentKind::Outlier
                && i.metric.as_deref() == Some(metric)
                && i.devices.first() == Some(&device.id)
        });
        let cfg = &self.config.outlier;
        if stats.n < cfg.min_cohort {
            // Too few machines to compare: no new judgement either way.
            self.outlier_since.remove(&key);
            return;
        }
        let (n, median) = (stats.n, stats.median);
        let mad = stats.mad.max(median.abs() * cfg.min_mad_pct / 100.0);
        let bound = median + cfg.k * mad;
        if value <= bound {
            self.outlier_since.remove(&key);
            if let Some(id) = open {
                self.resolve(&id, now_ms, out);
            }
            return;
        }
        let since = *self.outlier_since.entry(key).or_insert(now_ms);
        let for_ms = cfg.for_s as i64 * 1000;
        if open.is_some() || now_ms - since < for_ms {
            return;
        }
        let scope = match (&cfg.cohort_by, &cohort) {
            (Some(k), Some(v)) => format!("machines with {k} = {v}"),
            (Some(k), None) => format!("machines without {k}"),
            _ => "the fleet".to_string(),
        };
        let incident = Incident {
            id: String::new(),
            kind: IncidentKind::Outlier,
            title: format!("{} on {} far above {scope}", metric, device.id),
            probable_cause: format!(
                "a fault of this machine alone: {metric} = {value:.1} has stayed above median {median:.1} + {} x MAD \
                 ({bound:.1}) of {n} {scope} for {} s",
                cfg.k, cfg.for_s
            ),
            site: device.site.clone(),
            attribute: cfg.cohort_by.clone(),
            attribute_value: cohort,
            rule: None,
            metric: Some(metric.to_string()),
            devices: vec![device.id.clone()],
            members: Vec::new(),
            active_members: Vec::new(),
            suppresses_members: false,
            opened_ms: now_ms,
            updated_ms: now_ms,
            resolved_ms: None,
            state: IncidentState::Open,
        };
        self.open_incident(incident, Vec::new(), now_ms, out);
    }
}

/// Median (sorts the slice); 0 for an empty one.
fn median_of(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    let upper = values.get(mid).copied().unwrap_or(0.0);
    if values.len() % 2 == 1 {
        upper
    } else {
        let lower = mid
            .checked_sub(1)
            .and_then(|i| values.get(i))
            .copied()
            .unwrap_or(upper);
        (lower + upper) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use common::DeviceId;

    use super::*;
    use crate::incidents::testkit::*;

    fn build_outlier_fleet(n: usize) -> Harness {
        Harness::build(
            (0..n)
                .map(|i| build_device(&format!("rvm{i}"), "oslo", &[]))
                .collect(),
        )
    }

    /// Every 10 s until `until_s`, `rvm0` reports a GPU temperature of `hot_c` and the others
    /// 50 to 52 C.
    fn outlier_story(h: &mut Harness, n: usize, hot_c: f64, until_s: i64) {
        for s in (0..=until_s).step_by(10) {
            for i in 0..n {
                let temp = if i == 0 { hot_c } else { 50.0 + (i % 3) as f64 };
                h.feed(&format!("rvm{i}"), &[("gpu.temp_c", temp)], s * S);
            }
        }
    }

    #[test]
    fn a_machine_far_above_its_fleet_for_long_enough_is_an_outlier_below_any_threshold() {
        let mut h = build_outlier_fleet(10);
        outlier_story(&mut h, 10, 70.0, 310);
        let opened = h.opened();
        assert_eq!(opened.len(), 1, "{opened:#?}");
        let inc = opened[0];
        assert_eq!(inc.kind, IncidentKind::Outlier);
        assert_eq!(inc.devices, [DeviceId::new("rvm0").unwrap()]);
        assert_eq!(inc.metric.as_deref(), Some("gpu.temp_c"));
        // Judged from 10 s, when every machine had reported once; 300 s later it opens.
        assert_eq!(inc.opened_ms, 310 * S);
        assert!(h.engine.active().is_empty(), "70 C is below the 80 C rule");
        h.feed("rvm0", &[("gpu.temp_c", 51.0)], 320 * S);
        assert!(h.corr.open().is_empty());
    }

    #[test]
    fn a_step_of_the_whole_fleet_is_no_outlier_although_statistics_are_kept_for_a_second() {
        let mut h = build_outlier_fleet(10);
        for s in (0..=600).step_by(10) {
            for i in 0..10 {
                // every machine jumps from ~50 C to ~75 C at 100 s: the first to report after
                // the jump meets statistics of the old fleet, then they catch up
                let base = if s >= 100 { 75.0 } else { 50.0 };
                h.feed(
                    &format!("rvm{i}"),
                    &[("gpu.temp_c", base + (i % 3) as f64)],
                    s * S,
                );
            }
        }
        assert!(h.opened().is_empty(), "{:#?}", h.opened());
    }

    #[test]
    fn an_outlier_for_less_than_the_duration_is_not_an_incident() {
        let mut h = build_outlier_fleet(10);
        outlier_story(&mut h, 10, 70.0, 290);
        assert!(h.opened().is_empty());
    }

    #[test]
    fn a_cohort_of_seven_machines_is_too_small_to_name_an_outlier() {
        let mut h = build_outlier_fleet(7);
        outlier_story(&mut h, 7, 70.0, 600);
        assert!(h.opened().is_empty());
    }

    #[test]
    fn a_machine_within_the_spread_of_the_fleet_is_not_an_outlier() {
        let mut h = build_outlier_fleet(10);
        outlier_story(&mut h, 10, 54.0, 600);
        assert!(h.opened().is_empty());
    }

    #[test]
    fn median_of_odd_and_even_lengths() {
        assert_eq!(median_of(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median_of(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median_of(&mut []), 0.0);
    }
}
