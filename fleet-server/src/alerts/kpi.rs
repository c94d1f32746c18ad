//! The machine's own figures (docs/kpis.md): what the vision service counts of bottles and
//! cans, turned into the inputs rules need. Pure: every call takes the record's time.
//!
//! The vision service reports counters and gauges as application metrics
//! (`app.rvm.accepted_total`, `app.rvm.rejected_total`, `app.rvm.jams_total`,
//! `app.rvm.bin_fill_pct`, `app.rvm.printer_ok`, `app.rvm.scanner_ok`, `app.rvm.door_open`).
//! A scrape spells them with `_` (`rvm_accepted_total`: Prometheus names have no dots); both
//! spellings count. The gauges go to rules under one name whatever the spelling:
//! `kpi.bin_fill_pct`, `kpi.printer_ok`, `kpi.scanner_ok`, `kpi.door_open`. From the counters
//! this module derives:
//!
//! - `kpi.accepted_per_h`, `kpi.rejected_per_h`: the counters' increase over the last
//!   rate window ([`KpiConfig::rate_window_s`], 15 minutes), per hour, once the window spans
//!   [`KpiConfig::min_span_s`] (a minute);
//! - `kpi.reject_ratio`: rejected / (accepted + rejected) over the same window, once
//!   [`KpiConfig::min_items`] items were counted in it (a quiet machine has no ratio, not 0);
//! - `kpi.reject_ratio_vs_baseline`: that ratio divided by the machine's own baseline, a
//!   moving average with a time constant of [`BASELINE_TAU_MS`] (its last week), learned from
//!   every ratio that is not itself a spike, reported once it learned
//!   [`KpiConfig::baseline_warmup_s`] (an hour);
//! - `kpi.jam`: 1 while the jam counter went up within the last [`JAM_WINDOW_MS`], else 0.
//!
//! A counter that goes down was reset (the vision service restarted): the window starts over
//! from that sample, and no rate spans the reset.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::names::{
    KPI_ACCEPTED_PER_H, KPI_BIN_FILL_PCT, KPI_DOOR_OPEN, KPI_JAM, KPI_PRINTER_OK, KPI_REJECT_RATIO,
    KPI_REJECT_RATIO_VS_BASELINE, KPI_REJECTED_PER_H, KPI_SCANNER_OK,
};

/// Counter of bottles and cans accepted.
pub const ACCEPTED_TOTAL: &str = "app.rvm.accepted_total";
/// Counter of items rejected (all reasons; `app.rvm.rejected_total.REASON` per reason).
pub const REJECTED_TOTAL: &str = "app.rvm.rejected_total";
/// Counter of jams.
pub const JAMS_TOTAL: &str = "app.rvm.jams_total";
/// The gauges of the contract and the input each becomes.
pub const GAUGES: [(&str, &str); 4] = [
    ("app.rvm.bin_fill_pct", KPI_BIN_FILL_PCT),
    ("app.rvm.printer_ok", KPI_PRINTER_OK),
    ("app.rvm.scanner_ok", KPI_SCANNER_OK),
    ("app.rvm.door_open", KPI_DOOR_OPEN),
];

/// The baseline's time constant: the machine's last week.
pub const BASELINE_TAU_MS: i64 = 7 * 24 * 3_600_000;
/// A ratio this many times its baseline or more is a spike and is not learned.
pub const SPIKE_FACTOR: f64 = 2.0;
/// `kpi.jam` stays 1 this long after the jam counter went up.
pub const JAM_WINDOW_MS: i64 = 10 * 60_000;
/// Samples kept per device at most (a fast device within the window).
const SAMPLES_CAP: usize = 1024;
/// Samples kept per rate window: one per 1/64 of it (14 s of the default 15 minutes), not
/// one per record. Every record's counters were kept at first: 180 samples a machine at one
/// record per 5 s, 900 at 1 Hz, twice (the fleet actor's checkpoint copies them), about 10
/// and 43 KiB per machine of the server's heap (issue 25 step 3). The rate is still exact
/// over the span it is taken on (from the oldest sample kept to the latest record); that
/// span starts at most one step later than the oldest record in the window.
const SAMPLES_PER_WINDOW: i64 = 64;

/// `[kpi]` of the rules file: the windows of the derived figures. The defaults suit a machine
/// that counts a few hundred items an hour; a quiet store may want a longer window, and a
/// test a much shorter warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KpiConfig {
    /// Rates and the ratio are taken over this much of the latest samples, seconds.
    pub rate_window_s: u64,
    /// A window shorter than this gives no rate yet, seconds.
    pub min_span_s: u64,
    /// Fewer items than this in the window give no ratio.
    pub min_items: u64,
    /// The baseline is compared against once it learned this long, seconds.
    pub baseline_warmup_s: u64,
}

impl Default for KpiConfig {
    fn default() -> Self {
        KpiConfig {
            rate_window_s: 15 * 60,
            min_span_s: 60,
            min_items: 10,
            baseline_warmup_s: 3600,
        }
    }
}

/// Longest rate window or warm-up accepted (one week: the baseline's own time constant).
const MAX_KPI_S: u64 = 7 * 24 * 3600;

impl KpiConfig {
    /// Every problem, each with its key path under `prefix`.
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut p = Vec::new();
        for (key, v) in [
            ("rate_window_s", self.rate_window_s),
            ("min_span_s", self.min_span_s),
            ("baseline_warmup_s", self.baseline_warmup_s),
        ] {
            if v == 0 || v > MAX_KPI_S {
                p.push(format!("{prefix}.{key}: {v} s is not in 1..={MAX_KPI_S}"));
            }
        }
        if self.min_span_s >= self.rate_window_s {
            p.push(format!(
                "{prefix}.min_span_s: {} s must be shorter than rate_window_s ({} s)",
                self.min_span_s, self.rate_window_s
            ));
        }
        p
    }

    fn rate_window_ms(&self) -> i64 {
        self.rate_window_s as i64 * 1000
    }

    /// A sample is kept when the last one kept is at least this old.
    fn sample_step_ms(&self) -> i64 {
        (self.rate_window_ms() / SAMPLES_PER_WINDOW).max(1)
    }
}

/// A learned normal reject ratio.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Baseline {
    pub mean: f64,
    /// How long it has learned, ms of record time.
    pub learned_ms: i64,
    /// Record time of the last ratio learned.
    pub at_ms: Option<i64>,
}

impl Baseline {
    fn learn(&mut self, cfg: &KpiConfig, ratio: f64, ts_ms: i64) {
        let dt = self
            .at_ms
            .map_or(0, |at| (ts_ms - at).clamp(0, cfg.rate_window_ms()));
        if self.learned_ms == 0 && self.at_ms.is_none() {
            self.mean = ratio;
        } else {
            // a cumulative mean while young, then an exponential one over the last week
            let weight = (dt as f64 / (self.learned_ms + dt).clamp(1, BASELINE_TAU_MS) as f64).min(1.0);
            self.mean += (ratio - self.mean) * weight;
        }
        self.learned_ms = self.learned_ms.saturating_add(dt);
        self.at_ms = Some(ts_ms);
    }

    pub fn ready(&self, cfg: &KpiConfig) -> bool {
        self.learned_ms >= cfg.baseline_warmup_s as i64 * 1000
    }
}

/// One machine's counters over the window, its baseline and its last jam.
#[derive(Debug, Clone, Default)]
pub struct KpiInputs {
    /// (record time, accepted, rejected), oldest first, one per [`KpiConfig::sample_step_ms`].
    samples: VecDeque<(i64, f64, f64)>,
    /// The latest record's (time, accepted, rejected), kept or not.
    latest: Option<(i64, f64, f64)>,
    jams: Option<f64>,
    last_jam_ms: Option<i64>,
    pub baseline: Baseline,
}

/// A counter of the contract by its pushed name (`app.rvm.accepted_total`) or its scraped
/// one (`app.rvm_accepted_total`: Prometheus names have no dots); without a total, the sum of
/// its labelled series (`app.rvm_rejected_total.REASON`, a scrape's `{reason="..."}`).
pub fn find(metrics: &[(String, f64)], name: &str) -> Option<f64> {
    let scraped = name.replacen("app.rvm.", "app.rvm_", 1);
    let names = [name, scraped.as_str()];
    if let Some((_, v)) = metrics.iter().find(|(n, _)| names.contains(&n.as_str())) {
        return Some(*v);
    }
    let labelled = |n: &str| {
        names
            .iter()
            .any(|base| n.strip_prefix(base).is_some_and(|rest| rest.starts_with('.')))
    };
    let mut parts = metrics.iter().filter(|(n, _)| labelled(n)).peekable();
    parts.peek()?;
    Some(parts.map(|(_, v)| v).sum())
}

impl KpiInputs {
    /// A live record's flat metrics at record time `ts_ms`: the derived inputs it yields.
    pub fn on_metrics(
        &mut self,
        cfg: &KpiConfig,
        metrics: &[(String, f64)],
        ts_ms: i64,
    ) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = GAUGES
            .iter()
            .filter_map(|(name, input)| find(metrics, name).map(|v| (input.to_string(), v)))
            .collect();
        if let Some(jams) = find(metrics, JAMS_TOTAL) {
            if self.jams.is_some_and(|before| jams > before) {
                self.last_jam_ms = Some(ts_ms);
            }
            self.jams = Some(jams);
            out.push((KPI_JAM.to_string(), self.jam_now(ts_ms)));
        }
        let (Some(acc), Some(rej)) = (find(metrics, ACCEPTED_TOTAL), find(metrics, REJECTED_TOTAL)) else {
            return out;
        };
        if self
            .latest
            .is_some_and(|(t, a, r)| acc < a || rej < r || ts_ms < t)
        {
            // a counter went down (the service restarted) or time went back: start over
            self.samples.clear();
        }
        self.latest = Some((ts_ms, acc, rej));
        if self
            .samples
            .back()
            .is_none_or(|(t, _, _)| ts_ms - *t >= cfg.sample_step_ms())
        {
            self.samples.push_back((ts_ms, acc, rej));
        }
        while self.samples.len() > SAMPLES_CAP
            || self
                .samples
                .front()
                .is_some_and(|(t, _, _)| ts_ms - *t > cfg.rate_window_ms())
        {
            self.samples.pop_front();
        }
        let Some(&(t0, a0, r0)) = self.samples.front() else {
            return out;
        };
        let span = ts_ms - t0;
        if span < cfg.min_span_s as i64 * 1000 {
            return out;
        }
        let (da, dr) = (acc - a0, rej - r0);
        let per_h = 3_600_000.0 / span as f64;
        out.push((KPI_ACCEPTED_PER_H.to_string(), da * per_h));
        out.push((KPI_REJECTED_PER_H.to_string(), dr * per_h));
        if da + dr >= cfg.min_items as f64 {
            let ratio = dr / (da + dr);
            out.push((KPI_REJECT_RATIO.to_string(), ratio));
            let base = self.baseline;
            let ready = base.ready(cfg) && base.mean > 0.0;
            let spike = ready && ratio >= SPIKE_FACTOR * base.mean;
            if ready {
                out.push((KPI_REJECT_RATIO_VS_BASELINE.to_string(), ratio / base.mean));
            }
            if !spike {
                self.baseline.learn(cfg, ratio, ts_ms);
            }
        }
        out
    }

    fn jam_now(&self, ts_ms: i64) -> f64 {
        match self.last_jam_ms {
            Some(at) if ts_ms - at < JAM_WINDOW_MS => 1.0,
            _ => 0.0,
        }
    }

    /// The periodic evaluation at server time `now_ms` (used as record time when the machine
    /// has gone quiet): `kpi.jam` back to 0 once its window passed.
    pub fn tick(&mut self, now_ms: i64) -> Vec<(String, f64)> {
        match self.last_jam_ms {
            Some(at) if now_ms - at >= JAM_WINDOW_MS => {
                self.last_jam_ms = None;
                vec![(KPI_JAM.to_string(), 0.0)]
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: KpiConfig = KpiConfig {
        rate_window_s: 15 * 60,
        min_span_s: 60,
        min_items: 10,
        baseline_warmup_s: 3600,
    };

    fn m(acc: f64, rej: f64) -> Vec<(String, f64)> {
        vec![
            (ACCEPTED_TOTAL.to_string(), acc),
            (REJECTED_TOTAL.to_string(), rej),
        ]
    }

    fn value(out: &[(String, f64)], name: &str) -> Option<f64> {
        out.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    #[test]
    fn rates_and_ratio_come_from_the_counters_over_the_window() {
        let mut k = KpiInputs::default();
        assert!(k.on_metrics(&D, &m(0.0, 0.0), 0).is_empty());
        assert!(
            k.on_metrics(&D, &m(5.0, 0.0), 30_000).is_empty(),
            "no rate before a minute"
        );
        // 100 accepted and 5 rejected in 10 minutes: 600/h and 30/h
        let out = k.on_metrics(&D, &m(100.0, 5.0), 600_000);
        assert_eq!(value(&out, KPI_ACCEPTED_PER_H), Some(600.0));
        assert_eq!(value(&out, KPI_REJECTED_PER_H), Some(30.0));
        assert!((value(&out, KPI_REJECT_RATIO).unwrap() - 5.0 / 105.0).abs() < 1e-12);
        assert_eq!(value(&out, KPI_REJECT_RATIO_VS_BASELINE), None, "no baseline yet");
    }

    #[test]
    fn scraped_names_and_per_reason_series_count_too() {
        let scraped = |acc: f64, bottle: f64, can: f64| {
            vec![
                ("app.rvm_accepted_total".to_string(), acc),
                ("app.rvm_rejected_total.unreadable_barcode".to_string(), bottle),
                ("app.rvm_rejected_total.crushed".to_string(), can),
            ]
        };
        let mut k = KpiInputs::default();
        k.on_metrics(&D, &scraped(0.0, 0.0, 0.0), 0);
        let out = k.on_metrics(&D, &scraped(90.0, 6.0, 4.0), 600_000);
        assert_eq!(value(&out, KPI_ACCEPTED_PER_H), Some(540.0));
        assert_eq!(value(&out, KPI_REJECTED_PER_H), Some(60.0));
        assert_eq!(value(&out, KPI_REJECT_RATIO), Some(0.1));
    }

    #[test]
    fn gauges_become_inputs_whatever_their_spelling() {
        let mut k = KpiInputs::default();
        let out = k.on_metrics(
            &D,
            &[
                ("app.rvm.bin_fill_pct".to_string(), 91.0),
                ("app.rvm_printer_ok".to_string(), 0.0),
            ],
            0,
        );
        assert_eq!(value(&out, KPI_BIN_FILL_PCT), Some(91.0));
        assert_eq!(value(&out, KPI_PRINTER_OK), Some(0.0));
        assert_eq!(value(&out, KPI_SCANNER_OK), None, "absent, not 0");
    }

    #[test]
    fn a_quiet_machine_has_rates_but_no_ratio() {
        let mut k = KpiInputs::default();
        k.on_metrics(&D, &m(0.0, 0.0), 0);
        let out = k.on_metrics(&D, &m(3.0, 1.0), 120_000);
        assert_eq!(value(&out, KPI_ACCEPTED_PER_H), Some(90.0));
        assert_eq!(value(&out, KPI_REJECT_RATIO), None, "4 items are no ratio");
    }

    #[test]
    fn a_counter_reset_starts_the_window_over() {
        let mut k = KpiInputs::default();
        k.on_metrics(&D, &m(0.0, 0.0), 0);
        k.on_metrics(&D, &m(500.0, 10.0), 300_000);
        // the vision service restarted: its counters start at 0 again
        let out = k.on_metrics(&D, &m(2.0, 0.0), 310_000);
        assert_eq!(value(&out, KPI_ACCEPTED_PER_H), None, "no rate across a reset");
        let out = k.on_metrics(&D, &m(62.0, 0.0), 370_000);
        assert_eq!(value(&out, KPI_ACCEPTED_PER_H), Some(3600.0));
    }

    #[test]
    fn a_machine_at_1_hz_keeps_a_sample_per_step_and_its_rate_stays_exact() {
        let mut k = KpiInputs::default();
        let mut out = Vec::new();
        // an hour at 1 Hz, 1 item accepted every 2 s (1,800/h), 1 rejected every 20 s
        for s in 0..3600i64 {
            out = k.on_metrics(&D, &m((s / 2) as f64, (s / 20) as f64), s * 1000);
        }
        assert!(
            k.samples.len() <= SAMPLES_PER_WINDOW as usize + 1,
            "{}",
            k.samples.len()
        );
        let per_h = value(&out, KPI_ACCEPTED_PER_H).unwrap();
        assert!((per_h - 1800.0).abs() < 5.0, "{per_h}");
        let ratio = value(&out, KPI_REJECT_RATIO).unwrap();
        assert!((ratio - 1.0 / 11.0).abs() < 0.005, "{ratio}");
    }

    #[test]
    fn old_samples_leave_the_window() {
        let mut k = KpiInputs::default();
        k.on_metrics(&D, &m(0.0, 0.0), 0);
        // a burst in the first minutes, then 1 item a minute
        k.on_metrics(&D, &m(1000.0, 0.0), 60_000);
        let mut out = Vec::new();
        for i in 1..=20 {
            out = k.on_metrics(&D, &m(1000.0 + i as f64, 0.0), 60_000 + i * 60_000);
        }
        // the window is the last 15 minutes: 15 items, 60/h
        assert_eq!(value(&out, KPI_ACCEPTED_PER_H), Some(60.0));
    }

    /// `minutes` of record time at one sample a minute, with `ratio` rejected of 100 items each.
    fn run(
        k: &mut KpiInputs,
        from_ms: i64,
        minutes: i64,
        ratio: f64,
        counters: &mut (f64, f64),
    ) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        for i in 1..=minutes {
            counters.0 += 100.0 * (1.0 - ratio);
            counters.1 += 100.0 * ratio;
            out = k.on_metrics(&D, &m(counters.0, counters.1), from_ms + i * 60_000);
        }
        out
    }

    #[test]
    fn a_spike_is_measured_against_the_machines_own_baseline_and_not_learned() {
        let mut k = KpiInputs::default();
        let mut c = (0.0, 0.0);
        k.on_metrics(&D, &m(0.0, 0.0), 0);
        // 30 minutes: still learning
        let out = run(&mut k, 0, 30, 0.04, &mut c);
        assert_eq!(value(&out, KPI_REJECT_RATIO_VS_BASELINE), None);
        // two hours at 4 %: the baseline is 4 %, a ratio of 1x
        let out = run(&mut k, 30 * 60_000, 120, 0.04, &mut c);
        assert!((value(&out, KPI_REJECT_RATIO_VS_BASELINE).unwrap() - 1.0).abs() < 1e-6);
        // rejects jump to 20 %: within the 15-minute window the ratio climbs to 5x
        let out = run(&mut k, 150 * 60_000, 15, 0.20, &mut c);
        // (the first minutes of the climb, below twice the baseline, were still learned)
        let vs = value(&out, KPI_REJECT_RATIO_VS_BASELINE).unwrap();
        assert!((vs - 5.0).abs() < 0.1, "{vs}");
        assert!(
            (k.baseline.mean - 0.04).abs() < 0.005,
            "a spike is not learned: {}",
            k.baseline.mean
        );
    }

    #[test]
    fn another_machine_normal_is_its_own_baseline() {
        // a machine whose normal is 20 % rejects (a store where people bring much glass)
        let mut k = KpiInputs::default();
        let mut c = (0.0, 0.0);
        k.on_metrics(&D, &m(0.0, 0.0), 0);
        let out = run(&mut k, 0, 180, 0.20, &mut c);
        assert!((value(&out, KPI_REJECT_RATIO_VS_BASELINE).unwrap() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn a_jam_holds_the_input_for_its_window_then_ticks_back_to_zero() {
        let mut k = KpiInputs::default();
        let jams = |n: f64| vec![(JAMS_TOTAL.to_string(), n)];
        assert_eq!(
            value(&k.on_metrics(&D, &jams(3.0), 0), KPI_JAM),
            Some(0.0),
            "a count, not a new jam"
        );
        assert_eq!(value(&k.on_metrics(&D, &jams(4.0), 1_000), KPI_JAM), Some(1.0));
        assert_eq!(value(&k.on_metrics(&D, &jams(4.0), 60_000), KPI_JAM), Some(1.0));
        assert!(k.tick(1_000 + JAM_WINDOW_MS - 1).is_empty());
        assert_eq!(value(&k.tick(1_000 + JAM_WINDOW_MS), KPI_JAM), Some(0.0));
        assert!(k.tick(1_000 + JAM_WINDOW_MS + 1).is_empty(), "said once");
    }

    #[test]
    fn the_shipped_windows_are_the_defaults_and_bad_ones_are_named() {
        assert_eq!(KpiConfig::default(), D);
        assert!(D.validate("kpi").is_empty());
        let bad = KpiConfig {
            rate_window_s: 30,
            min_span_s: 30,
            min_items: 10,
            baseline_warmup_s: 0,
        };
        let p = bad.validate("kpi");
        assert!(p.iter().any(|e| e.starts_with("kpi.baseline_warmup_s")), "{p:?}");
        assert!(p.iter().any(|e| e.starts_with("kpi.min_span_s")), "{p:?}");
        let e = crate::alerts::rules::parse_rules("[kpi]\nrate_window = 20\n").unwrap_err();
        assert!(e.to_string().contains("rate_window"), "{e}");
        let set = crate::alerts::rules::parse_rules("[kpi]\nbaseline_warmup_s = 30\n").unwrap();
        assert_eq!(set.kpi.baseline_warmup_s, 30);
        assert_eq!(set.kpi.rate_window_s, D.rate_window_s);
    }

    #[test]
    fn a_shorter_warm_up_and_window_judge_a_spike_in_seconds() {
        let fast = KpiConfig {
            rate_window_s: 20,
            min_span_s: 5,
            min_items: 10,
            baseline_warmup_s: 30,
        };
        let mut k = KpiInputs::default();
        let (mut acc, mut rej) = (0.0, 0.0);
        let mut vs = None;
        // a record a second, 4 items each: 3 % rejected for 40 s, then 35 %
        for s in 0..=60i64 {
            let share = if s < 40 { 0.03 } else { 0.35 };
            acc += 4.0 * (1.0 - share);
            rej += 4.0 * share;
            let out = k.on_metrics(&fast, &m(acc, rej), s * 1000);
            vs = value(&out, KPI_REJECT_RATIO_VS_BASELINE);
            if s == 39 {
                let v = vs.expect("ready after 30 s of learning");
                assert!((v - 1.0).abs() < 1e-6, "{v}");
            }
        }
        // 20 s into the spike the whole window is at 35 %: about 11.7 times the baseline
        let v = vs.unwrap();
        assert!((v - 0.35 / 0.03).abs() < 0.2, "{v}");
        assert!((k.baseline.mean - 0.03).abs() < 0.01, "{}", k.baseline.mean);
    }
}
