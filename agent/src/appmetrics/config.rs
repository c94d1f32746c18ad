//! The `[app]` section of `agent.toml`: where to scrape, how fresh values must be, which names
//! to keep and how many.

use std::collections::HashSet;
use std::path::PathBuf;

use serde::Deserialize;

use super::names::validate_name;
use crate::shared::http::check_url;
use crate::shared::problem::ConfigProblem;

/// The `[app]` section of `agent.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppMetricsConfig {
    /// Prometheus text endpoint of the vision service (`http://` or `https://`); unset = no
    /// scraping.
    #[serde(default)]
    pub scrape_url: Option<String>,
    /// For an `https://` scrape: trust only the certificates in this PEM file. Unset: the
    /// system's roots.
    #[serde(default)]
    pub scrape_ca_file: Option<PathBuf>,
    #[serde(default = "default_scrape_interval_ms")]
    pub scrape_interval_ms: u64,
    #[serde(default = "default_scrape_timeout_ms")]
    pub scrape_timeout_ms: u64,
    /// Pushed values older than this are dropped from telemetry.
    #[serde(default = "default_push_max_age_s")]
    pub push_max_age_s: u64,
    /// Allow-list of metric names; empty = all.
    #[serde(default)]
    pub names: Vec<String>,
    /// Most metrics in one push, and most names kept.
    #[serde(default = "default_max_metrics")]
    pub max_metrics: usize,
}

impl Default for AppMetricsConfig {
    fn default() -> Self {
        Self {
            scrape_url: None,
            scrape_ca_file: None,
            scrape_interval_ms: default_scrape_interval_ms(),
            scrape_timeout_ms: default_scrape_timeout_ms(),
            push_max_age_s: default_push_max_age_s(),
            names: Vec::new(),
            max_metrics: default_max_metrics(),
        }
    }
}

fn default_scrape_interval_ms() -> u64 {
    5000
}
fn default_scrape_timeout_ms() -> u64 {
    1000
}
fn default_push_max_age_s() -> u64 {
    30
}
fn default_max_metrics() -> usize {
    64
}

impl AppMetricsConfig {
    /// Every problem, each with its key path under `prefix` (`app`).
    pub fn validate(&self, prefix: &str) -> Vec<ConfigProblem> {
        let mut p = Vec::new();
        let mut bad = |key: String, message: String| p.push(ConfigProblem { key, message });
        if let Some(url) = &self.scrape_url
            && let Err(e) = check_url(url)
        {
            bad(format!("{prefix}.scrape_url"), e.to_string());
        }
        if let Some(path) = &self.scrape_ca_file
            && !path.exists()
        {
            bad(
                format!("{prefix}.scrape_ca_file"),
                format!("{} does not exist", path.display()),
            );
        }
        if !(100..=3_600_000).contains(&self.scrape_interval_ms) {
            bad(
                format!("{prefix}.scrape_interval_ms"),
                format!("{} is outside 100..=3600000", self.scrape_interval_ms),
            );
        }
        if !(10..=60_000).contains(&self.scrape_timeout_ms) {
            bad(
                format!("{prefix}.scrape_timeout_ms"),
                format!("{} is outside 10..=60000", self.scrape_timeout_ms),
            );
        } else if self.scrape_timeout_ms > self.scrape_interval_ms {
            bad(
                format!("{prefix}.scrape_timeout_ms"),
                format!(
                    "{} is longer than scrape_interval_ms ({})",
                    self.scrape_timeout_ms, self.scrape_interval_ms
                ),
            );
        }
        if !(1..=86_400).contains(&self.push_max_age_s) {
            bad(
                format!("{prefix}.push_max_age_s"),
                format!("{} is outside 1..=86400", self.push_max_age_s),
            );
        }
        if !(1..=1024).contains(&self.max_metrics) {
            bad(
                format!("{prefix}.max_metrics"),
                format!("{} is outside 1..=1024", self.max_metrics),
            );
        }
        let mut seen = HashSet::new();
        for (i, name) in self.names.iter().enumerate() {
            let key = format!("{prefix}.names[{i}]");
            if let Err(e) = validate_name(name) {
                bad(key, e.to_string());
            } else if !seen.insert(name) {
                bad(key, format!("{name:?} is listed twice"));
            }
        }
        p
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_are_named_with_their_keys() {
        let cfg: AppMetricsConfig = toml::from_str("").unwrap();
        assert_eq!(cfg, AppMetricsConfig::default());
        assert!(cfg.validate("app").is_empty());
        assert_eq!(
            (cfg.scrape_interval_ms, cfg.scrape_timeout_ms, cfg.push_max_age_s),
            (5000, 1000, 30)
        );
        assert_eq!(cfg.max_metrics, 64);
        let cfg: AppMetricsConfig = toml::from_str(
            r#"
scrape_url = "ftp://127.0.0.1:8000/metrics"
scrape_ca_file = "/nonexistent/ca.pem"
scrape_interval_ms = 50
scrape_timeout_ms = 5
push_max_age_s = 0
max_metrics = 0
names = ["ok", "bad name", "ok"]
"#,
        )
        .unwrap();
        let keys: Vec<String> = cfg.validate("app").into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            vec![
                "app.scrape_url",
                "app.scrape_ca_file",
                "app.scrape_interval_ms",
                "app.scrape_timeout_ms",
                "app.push_max_age_s",
                "app.max_metrics",
                "app.names[1]",
                "app.names[2]",
            ]
        );
        let cfg = AppMetricsConfig {
            scrape_timeout_ms: 6000,
            ..AppMetricsConfig::default()
        };
        assert_eq!(cfg.validate("app")[0].key, "app.scrape_timeout_ms");
        let err = toml::from_str::<AppMetricsConfig>("scrape_urll = \"http://x/\"").unwrap_err();
        assert!(err.to_string().contains("scrape_urll"), "{err}");
    }
}
