//! The correlator's settings: the `[correlate]` section of rules.toml, every key with a
//! default, and a validation that names every bad key.

use serde::{Deserialize, Serialize};

use crate::alerts::names::is_known_input;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SiteOutageConfig {
    pub min_devices: usize,
    pub min_pct: f64,
    /// The percentage rule needs at least this many machines offline.
    pub min_devices_for_pct: usize,
    pub window_s: u64,
}

impl Default for SiteOutageConfig {
    fn default() -> Self {
        SiteOutageConfig {
            min_devices: 3,
            min_pct: 50.0,
            min_devices_for_pct: 2,
            window_s: 120,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CohortConfig {
    /// Device attributes compared, in order of preference on a tie.
    pub attrs: Vec<String>,
    pub min_pct: f64,
    pub min_devices: usize,
    pub max_others_pct: f64,
    pub min_others: usize,
}

impl Default for CohortConfig {
    fn default() -> Self {
        CohortConfig {
            attrs: vec![
                "agent_version".into(),
                "vision_model_version".into(),
                "jetpack".into(),
            ],
            min_pct: 50.0,
            min_devices: 3,
            max_others_pct: 10.0,
            min_others: 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThermalConfig {
    pub window_s: u64,
    pub freq_drop_pct: f64,
    pub min_load_pct: f64,
}

impl Default for ThermalConfig {
    fn default() -> Self {
        ThermalConfig {
            window_s: 600,
            freq_drop_pct: 20.0,
            min_load_pct: 50.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierConfig {
    pub metrics: Vec<String>,
    pub k: f64,
    pub min_cohort: usize,
    pub for_s: u64,
    /// Compare only machines with the same value of this attribute (e.g. `board`).
    pub cohort_by: Option<String>,
    /// MAD floor in percent of the median: identical machines would otherwise make any
    /// difference an outlier.
    pub min_mad_pct: f64,
    pub max_sample_age_s: u64,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            metrics: vec![
                "gpu.temp_c".into(),
                "cpu.usage_pct".into(),
                "app.inference_ms".into(),
            ],
            k: 5.0,
            min_cohort: 8,
            for_s: 300,
            cohort_by: None,
            min_mad_pct: 2.0,
            max_sample_age_s: 120,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorrelatorConfig {
    pub site_outage: SiteOutageConfig,
    pub cohort: CohortConfig,
    pub thermal: ThermalConfig,
    pub outlier: OutlierConfig,
}

/// Longest window accepted (one day).
const MAX_WINDOW_S: u64 = 24 * 3600;

impl CorrelatorConfig {
    /// Every problem, each with its key path under `prefix`.
    pub fn validate(&self, prefix: &str) -> Vec<String> {
        let mut p = Vec::new();
        let pct = |key: &str, v: f64, p: &mut Vec<String>| {
            if !(v.is_finite() && (0.0..=100.0).contains(&v)) {
                p.push(format!("{prefix}.{key}: {v} is not a percentage in 0..=100"));
            }
        };
        pct("site_outage.min_pct", self.site_outage.min_pct, &mut p);
        pct("cohort.min_pct", self.cohort.min_pct, &mut p);
        pct("cohort.max_others_pct", self.cohort.max_others_pct, &mut p);
        pct("thermal.freq_drop_pct", self.thermal.freq_drop_pct, &mut p);
        pct("thermal.min_load_pct", self.thermal.min_load_pct, &mut p);
        pct("outlier.min_mad_pct", self.outlier.min_mad_pct, &mut p);
        let mut at_least_one = |key: &str, v: u64| {
            if v == 0 {
                p.push(format!("{prefix}.{key}: must be at least 1"));
            }
        };
        at_least_one("site_outage.min_devices", self.site_outage.min_devices as u64);
        at_least_one(
            "site_outage.min_devices_for_pct",
            self.site_outage.min_devices_for_pct as u64,
        );
        at_least_one("site_outage.window_s", self.site_outage.window_s);
        at_least_one("cohort.min_devices", self.cohort.min_devices as u64);
        at_least_one("cohort.min_others", self.cohort.min_others as u64);
        at_least_one("thermal.window_s", self.thermal.window_s);
        at_least_one("outlier.max_sample_age_s", self.outlier.max_sample_age_s);
        if self.outlier.min_cohort < 3 {
            p.push(format!(
                "{prefix}.outlier.min_cohort: a median needs at least 3 machines"
            ));
        }
        if self.thermal.freq_drop_pct == 0.0 {
            p.push(format!("{prefix}.thermal.freq_drop_pct: must be above 0"));
        }
        for (key, v) in [
            ("site_outage.window_s", self.site_outage.window_s),
            ("thermal.window_s", self.thermal.window_s),
            ("outlier.for_s", self.outlier.for_s),
            ("outlier.max_sample_age_s", self.outlier.max_sample_age_s),
        ] {
            if v > MAX_WINDOW_S {
                p.push(format!("{prefix}.{key}: {v} s is longer than {MAX_WINDOW_S} s"));
            }
        }
        if !(self.outlier.k.is_finite() && self.outlier.k > 0.0) {
            p.push(format!("{prefix}.outlier.k: must be a positive number"));
        }
        for (i, a) in self.cohort.attrs.iter().enumerate() {
            if a.is_empty() {
                p.push(format!("{prefix}.cohort.attrs[{i}]: must not be empty"));
            }
        }
        for (i, m) in self.outlier.metrics.iter().enumerate() {
            if !is_known_input(m) {
                p.push(format!("{prefix}.outlier.metrics[{i}]: unknown metric {m:?}"));
            }
        }
        if self.outlier.cohort_by.as_deref() == Some("") {
            p.push(format!("{prefix}.outlier.cohort_by: must not be empty"));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_correlator_config_is_valid_and_bad_values_are_named() {
        assert!(CorrelatorConfig::default().validate("correlate").is_empty());
        let mut c = CorrelatorConfig::default();
        c.outlier.min_cohort = 2;
        c.outlier.metrics.push("nope".into());
        c.cohort.max_others_pct = -1.0;
        let p = c.validate("correlate").join("\n");
        for key in [
            "correlate.outlier.min_cohort",
            "correlate.outlier.metrics[3]",
            "correlate.cohort.max_others_pct",
        ] {
            assert!(p.contains(key), "{key} in {p}");
        }
    }
}
