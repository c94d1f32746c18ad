//! Alert rules: the `config/rules.toml` format, its defaults, a validation that names every
//! bad key, and the runtime [`Rule`] the engine evaluates.
//!
//! A rule compares one input of one device with a threshold. Inputs are the flat metric names
//! of [`common::Telemetry::flat_metrics`] (`cpu.usage_pct`, `app.camera_fps`, ...) or one of the
//! [`SPECIAL_INPUTS`] the server derives itself (presence, agent restarts, dropped records,
//! failed recoveries, clock skew).
//!
//! Semantics, for `op = ">"` (the other operators mirror it):
//! - the condition *breaches* when `value > threshold`;
//! - it must breach on every sample for `for_s` before the alert fires (pending until then);
//! - a firing alert resolves when `value > clear` no longer holds, so `clear` below the
//!   threshold is a hysteresis band in which a firing alert stays firing;
//! - with `abs = true` the absolute value is compared (`clock.skew_s` is signed).
//!
//! The file is parsed into [`RulesFile`] (`deny_unknown_fields`), [`RulesFile::validate`]
//! reports every problem as `rules[3].threshold: ...`, and the result is a [`RuleSet`] of
//! runtime [`Rule`]s whose durations are in milliseconds.

use std::collections::BTreeMap;
use std::fmt;

use common::Severity;
use serde::{Deserialize, Serialize};

use super::checks::{CheckRules, HealthChecksFile};
use super::kpi::KpiConfig;
use super::names::{APP_PREFIX, FLAT_METRICS, SPECIAL_INPUTS, is_known_input};
pub use super::names::{MAX_DURATION_S, RESERVED_LABELS};
use crate::incidents::config::CorrelatorConfig;

/// Longest rule name; names are part of alert ids.
pub const MAX_RULE_NAME_LEN: usize = 64;

/// Comparison of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
}

impl Op {
    /// `value op limit`.
    pub fn holds(self, value: f64, limit: f64) -> bool {
        match self {
            Op::Gt => value > limit,
            Op::Ge => value >= limit,
            Op::Lt => value < limit,
            Op::Le => value <= limit,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        }
    }

    /// True for `>` and `>=`: the alert is about a value that is too high.
    pub fn is_upper(self) -> bool {
        matches!(self, Op::Gt | Op::Ge)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which devices a rule applies to. Empty: all devices; with both keys a device must match both.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    #[serde(default)]
    pub site: Option<String>,
    #[serde(default)]
    pub tag: Option<String>,
}

impl Scope {
    pub fn matches(&self, site: Option<&str>, tags: &[String]) -> bool {
        let site_ok = self.site.as_deref().is_none_or(|s| site == Some(s));
        let tag_ok = self.tag.as_deref().is_none_or(|t| tags.iter().any(|x| x == t));
        site_ok && tag_ok
    }
}

/// One `[[rules]]` entry as written in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// `[A-Za-z0-9_-]`, unique; part of every alert id.
    pub name: String,
    /// A flat metric name or a special input.
    pub metric: String,
    /// Compare the absolute value (for signed inputs such as `clock.skew_s`).
    #[serde(default)]
    pub abs: bool,
    pub op: Op,
    pub threshold: f64,
    /// Hysteresis: a firing alert resolves only when `value op clear` no longer holds.
    /// Defaults to `threshold`.
    #[serde(default)]
    pub clear: Option<f64>,
    /// The condition must hold this long before the alert fires.
    #[serde(default)]
    pub for_s: u64,
    pub severity: Severity,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// After a resolve, the same (rule, device) cannot fire again for this long.
    #[serde(default)]
    pub cooldown_s: u64,
    #[serde(default)]
    pub scope: Scope,
    /// Critical rules only: an alert unacknowledged this long after firing escalates once.
    #[serde(default)]
    pub escalate_after_s: Option<u64>,
    /// One line for people (notifications, web view). Defaults to `metric op threshold`.
    #[serde(default)]
    pub summary: Option<String>,
    /// A leak rule: the input is how much `metric` rose over the last `growth_window_s`
    /// seconds without ever falling (see [`super::growth`]), compared with `op` (`>` or
    /// `>=`) and `threshold`.
    #[serde(default)]
    pub growth_window_s: Option<u64>,
}

/// The whole `rules.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    #[serde(default)]
    pub rules: Vec<RuleFile>,
    /// Correlator settings (`[correlate.site_outage]`, ...); every key has a default.
    #[serde(default)]
    pub correlate: CorrelatorConfig,
    /// Alerts for failing health checks ([`super::checks`]); on by default.
    #[serde(default)]
    pub health_checks: HealthChecksFile,
    /// Windows of the machine's derived figures (`[kpi]`, docs/kpis.md); every key has a
    /// default.
    #[serde(default)]
    pub kpi: KpiConfig,
}

/// A validated rule, durations in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    pub name: String,
    pub metric: String,
    pub abs: bool,
    pub op: Op,
    pub threshold: f64,
    pub clear: f64,
    pub for_ms: i64,
    pub severity: Severity,
    pub labels: BTreeMap<String, String>,
    pub cooldown_ms: i64,
    pub scope: Scope,
    pub escalate_after_ms: Option<i64>,
    pub summary: String,
    /// A leak rule's window ([`RuleFile::growth_window_s`]).
    pub growth_window_ms: Option<i64>,
}

impl Rule {
    fn input(&self, value: f64) -> f64 {
        if self.abs { value.abs() } else { value }
    }

    /// The condition that starts (and keeps) an alert pending holds for this sample.
    pub fn breaches(&self, value: f64) -> bool {
        self.op.holds(self.input(value), self.threshold)
    }

    /// A firing alert stays firing for this sample (it has not crossed `clear`).
    pub fn holds_firing(&self, value: f64) -> bool {
        self.op.holds(self.input(value), self.clear)
    }
}

/// Validated rules and correlator settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    pub correlate: CorrelatorConfig,
    /// None: health checks raise no alerts (`[health_checks] enabled = false`).
    pub health_checks: Option<CheckRules>,
    /// `[kpi]`: the windows of the `kpi.*` inputs.
    pub kpi: KpiConfig,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RulesError {
    /// Not TOML, or a key or value the format does not know; the message names the key and,
    /// inside a `[[rules]]` entry, its index (`rules[3]: unknown field ...`).
    #[error("{0}")]
    Parse(String),
    /// Every problem [`RulesFile::validate`] found, each with its key path.
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
}

/// Parses and validates the text of a rules file.
pub fn parse_rules(text: &str) -> Result<RuleSet, RulesError> {
    RulesFile::parse(text)?.validate().map_err(RulesError::Invalid)
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn check_duration(p: &mut Vec<String>, key: String, s: u64) {
    if s > MAX_DURATION_S {
        p.push(format!(
            "{key}: {s} s is longer than the maximum of {MAX_DURATION_S} s"
        ));
    }
}

impl RulesFile {
    /// Parses TOML. An unknown or mistyped key inside a `[[rules]]` entry is reported with
    /// the entry's index.
    pub fn parse(text: &str) -> Result<RulesFile, RulesError> {
        toml::from_str::<RulesFile>(text).map_err(|e| {
            let message = e.message().trim_end().to_string();
            let at = e.span().map(|span| line_of(text, span.start));
            let entry = e.span().and_then(|span| rule_index_at(text, span.start));
            let mut out = String::new();
            if let Some(i) = entry {
                out.push_str(&format!("rules[{i}]: "));
            }
            out.push_str(&message);
            if let Some(line) = at {
                out.push_str(&format!(" (line {line})"));
            }
            RulesError::Parse(out)
        })
    }

    /// Every problem with its key path, or the runtime rules.
    pub fn validate(&self) -> Result<RuleSet, Vec<String>> {
        let mut p = Vec::new();
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let mut rules = Vec::with_capacity(self.rules.len());
        for (i, r) in self.rules.iter().enumerate() {
            let k = |field: &str| format!("rules[{i}].{field}");
            if r.name.is_empty() {
                p.push(format!("{}: must not be empty", k("name")));
            } else if r.name.len() > MAX_RULE_NAME_LEN || !r.name.chars().all(is_name_char) {
                p.push(format!(
                    "{}: {:?} must be 1 to {MAX_RULE_NAME_LEN} characters of [A-Za-z0-9_-]",
                    k("name"),
                    r.name
                ));
            } else if let Some(first) = seen.insert(r.name.as_str(), i) {
                p.push(format!(
                    "{}: {:?} is already the name of rules[{first}]",
                    k("name"),
                    r.name
                ));
            }
            if !is_known_input(&r.metric) {
                p.push(format!(
                    "{}: unknown input {:?}; use a flat metric ({}), {APP_PREFIX}<name>, or one of {}",
                    k("metric"),
                    r.metric,
                    FLAT_METRICS.join(", "),
                    SPECIAL_INPUTS.join(", ")
                ));
            }
            if !r.threshold.is_finite() {
                p.push(format!("{}: must be a finite number", k("threshold")));
            }
            let clear = r.clear.unwrap_or(r.threshold);
            if !clear.is_finite() {
                p.push(format!("{}: must be a finite number", k("clear")));
            } else if r.threshold.is_finite() {
                if r.op.is_upper() && clear > r.threshold {
                    p.push(format!(
                        "{}: {clear} is above the threshold {}; with op \"{}\" clear must be <= threshold",
                        k("clear"),
                        r.threshold,
                        r.op
                    ));
                }
                if !r.op.is_upper() && clear < r.threshold {
                    p.push(format!(
                        "{}: {clear} is below the threshold {}; with op \"{}\" clear must be >= threshold",
                        k("clear"),
                        r.threshold,
                        r.op
                    ));
                }
            }
            check_duration(&mut p, k("for_s"), r.for_s);
            check_duration(&mut p, k("cooldown_s"), r.cooldown_s);
            if let Some(e) = r.escalate_after_s {
                check_duration(&mut p, k("escalate_after_s"), e);
                if e == 0 {
                    p.push(format!("{}: must be at least 1 s", k("escalate_after_s")));
                }
                if r.severity != Severity::Critical {
                    p.push(format!(
                        "{}: only critical rules escalate (severity is {:?})",
                        k("escalate_after_s"),
                        r.severity
                    ));
                }
            }
            for (label, value) in &r.labels {
                if label.is_empty() || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    p.push(format!(
                        "{}: label names are [A-Za-z0-9_]+",
                        k(&format!("labels.{label}"))
                    ));
                } else if RESERVED_LABELS.contains(&label.as_str()) {
                    p.push(format!(
                        "{}: {label:?} is set by the engine ({})",
                        k(&format!("labels.{label}")),
                        RESERVED_LABELS.join(", ")
                    ));
                }
                if value.is_empty() {
                    p.push(format!("{}: must not be empty", k(&format!("labels.{label}"))));
                }
            }
            if r.scope.site.as_deref() == Some("") {
                p.push(format!("{}: must not be empty", k("scope.site")));
            }
            if r.scope.tag.as_deref() == Some("") {
                p.push(format!("{}: must not be empty", k("scope.tag")));
            }
            if let Some(w) = r.growth_window_s {
                check_duration(&mut p, k("growth_window_s"), w);
                if w == 0 {
                    p.push(format!("{}: must be at least 1 s", k("growth_window_s")));
                }
                if !r.op.is_upper() || r.abs {
                    p.push(format!(
                        "{}: a growth rule compares a rise: op must be \">\" or \">=\" and abs false",
                        k("growth_window_s")
                    ));
                }
            }
            rules.push(Rule {
                name: r.name.clone(),
                metric: r.metric.clone(),
                abs: r.abs,
                op: r.op,
                threshold: r.threshold,
                clear,
                for_ms: r.for_s.min(MAX_DURATION_S) as i64 * 1000,
                severity: r.severity,
                labels: r.labels.clone(),
                cooldown_ms: r.cooldown_s.min(MAX_DURATION_S) as i64 * 1000,
                scope: r.scope.clone(),
                escalate_after_ms: r.escalate_after_s.map(|e| e.min(MAX_DURATION_S) as i64 * 1000),
                summary: r.summary.clone().unwrap_or_else(|| match r.growth_window_s {
                    Some(w) => format!("{} rose {} {} within {w} s", r.metric, r.op, r.threshold),
                    None => {
                        let abs = if r.abs { "|" } else { "" };
                        format!("{abs}{}{abs} {} {}", r.metric, r.op, r.threshold)
                    }
                }),
                growth_window_ms: r.growth_window_s.map(|w| w.min(MAX_DURATION_S) as i64 * 1000),
            });
        }
        p.extend(self.correlate.validate("correlate"));
        p.extend(self.kpi.validate("kpi"));
        let health_checks = self.health_checks.validate("health_checks").unwrap_or_else(|e| {
            p.extend(e);
            None
        });
        if p.is_empty() {
            Ok(RuleSet {
                rules,
                correlate: self.correlate.clone(),
                health_checks,
                kpi: self.kpi,
            })
        } else {
            Err(p)
        }
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(0, |before| before.matches('\n').count())
        + 1
}

/// Index of the `[[rules]]` entry a byte offset falls in, if any.
fn rule_index_at(text: &str, offset: usize) -> Option<usize> {
    let mut index: Option<usize> = None;
    let mut in_rules = false;
    let mut pos = 0usize;
    for line in text.split_inclusive('\n') {
        if pos > offset {
            break;
        }
        let t = line.trim_start();
        if t.starts_with("[[") {
            let header: String = t.chars().filter(|c| !c.is_whitespace()).collect();
            in_rules = header.starts_with("[[rules]]");
            if in_rules {
                index = Some(index.map_or(0, |i| i + 1));
            }
        } else if t.starts_with('[') {
            // `[rules.labels]`-style sub-tables belong to the current entry; any other table
            // ends it.
            let header: String = t.chars().filter(|c| !c.is_whitespace()).collect();
            in_rules = in_rules && header.starts_with("[rules.");
        }
        pos += line.len();
    }
    if in_rules { index } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::names::CLOCK_SKEW;

    const SHIPPED: &str = include_str!("../../../config/rules.toml");

    fn build_rule(extra: &str) -> String {
        format!(
            "[[rules]]\nname = \"r\"\nmetric = \"cpu.usage_pct\"\nop = \">\"\nthreshold = 80\nseverity = \"warning\"\n{extra}"
        )
    }

    #[test]
    fn the_shipped_rules_file_parses_and_validates() {
        let set = parse_rules(SHIPPED).unwrap();
        assert!(set.rules.len() >= 14, "{}", set.rules.len());
    }

    #[test]
    fn a_growth_rule_needs_a_window_and_an_upper_comparison() {
        let set = parse_rules(&build_rule("growth_window_s = 600")).unwrap();
        assert_eq!(set.rules[0].growth_window_ms, Some(600_000));
        assert!(
            set.rules[0].summary.contains("within 600 s"),
            "{}",
            set.rules[0].summary
        );
        let bad = parse_rules(&build_rule("growth_window_s = 0").replace("\">\"", "\"<\"")).unwrap_err();
        let text = bad.to_string();
        assert!(
            text.contains("rules[0].growth_window_s: must be at least 1 s"),
            "{text}"
        );
        assert!(text.contains("op must be"), "{text}");
        // the shipped leak and zombie rules name the inside figures
        let shipped = parse_rules(SHIPPED).unwrap();
        for (name, metric) in [
            ("zombies_piling_up", "proc.zombies"),
            ("vision_fd_leak", "proc.vision.fds"),
            ("vision_rss_leak", "proc.vision.rss_bytes"),
            ("storage_wear", "disk.wear_max_pct"),
        ] {
            assert!(
                shipped.rules.iter().any(|r| r.name == name && r.metric == metric),
                "{name}"
            );
        }
    }

    #[test]
    fn the_shipped_rules_file_contains_the_nine_rules_of_the_old_system() {
        let set = parse_rules(SHIPPED).unwrap();
        let find = |metric: &str, threshold: f64, severity: Severity| {
            set.rules
                .iter()
                .find(|r| r.metric == metric && r.threshold == threshold && r.severity == severity)
                .unwrap_or_else(|| panic!("no rule {metric} > {threshold} {severity:?}"))
        };
        let nine = [
            find("cpu.usage_pct", 80.0, Severity::Warning),
            find("cpu.usage_pct", 95.0, Severity::Critical),
            find("memory.used_pct", 85.0, Severity::Warning),
            find("memory.used_pct", 95.0, Severity::Critical),
            find("disk.max_used_pct", 90.0, Severity::Warning),
            find("gpu.load_pct", 90.0, Severity::Info),
            find("gpu.temp_c", 80.0, Severity::Warning),
            // watched processes and, since issue 19, watched systemd units
            find("service.down", 0.0, Severity::Critical),
            find("app.errors", 10.0, Severity::Warning),
        ];
        for r in nine {
            assert_eq!(r.op, Op::Gt, "{}", r.name);
        }
        let cpu = find("cpu.usage_pct", 80.0, Severity::Warning);
        assert_eq!((cpu.for_ms, cpu.clear), (60_000, 75.0));
        for special in SPECIAL_INPUTS {
            assert!(
                set.rules.iter().any(|r| r.metric == *special),
                "no rule on {special}"
            );
        }
        for kpi in [
            crate::alerts::names::KPI_JAM,
            crate::alerts::names::KPI_REJECT_RATIO_VS_BASELINE,
            crate::alerts::names::KPI_BIN_FILL_PCT,
            crate::alerts::names::KPI_PRINTER_OK,
            crate::alerts::names::KPI_SCANNER_OK,
        ] {
            assert!(set.rules.iter().any(|r| r.metric == kpi), "no rule on {kpi}");
        }
        let skew = set.rules.iter().find(|r| r.metric == CLOCK_SKEW).unwrap();
        assert!(skew.abs && skew.breaches(-31.0) && skew.breaches(31.0) && !skew.breaches(-29.0));
    }

    #[test]
    fn an_unknown_key_is_named_with_the_rule_index() {
        let text = format!(
            "{}\n{}",
            build_rule(""),
            build_rule("thresold = 3\n").replace("\"r\"", "\"s\"")
        );
        let e = RulesFile::parse(&text).unwrap_err().to_string();
        assert!(e.contains("rules[1]") && e.contains("thresold"), "{e}");
    }

    #[test]
    fn an_unknown_operator_is_named_with_the_rule_index() {
        let e = RulesFile::parse(&build_rule("").replace("\">\"", "\"=>\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("rules[0]") && e.contains("=>"), "{e}");
    }

    #[test]
    fn an_unknown_key_in_the_correlator_section_is_named() {
        let e = RulesFile::parse("[correlate.site_outage]\nmin_machines = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("min_machines") && !e.contains("rules["), "{e}");
    }

    #[test]
    fn every_bad_value_is_reported_with_its_key_path() {
        let text = [
            build_rule("clear = 85\nescalate_after_s = 60\n[rules.labels]\nsite = \"x\"\n"),
            build_rule("").replace("cpu.usage_pct", "cpu.usage"),
            build_rule("for_s = 99999999\n[rules.scope]\nsite = \"\"\n").replace("\"r\"", "\"bad:name\""),
            build_rule("").replace("threshold = 80", "threshold = nan"),
            "[correlate.site_outage]\nmin_pct = 150.0\n".to_string(),
        ]
        .join("\n");
        let problems = RulesFile::parse(&text).unwrap().validate().unwrap_err();
        let all = problems.join("\n");
        for key in [
            "rules[0].clear",
            "rules[0].escalate_after_s",
            "rules[0].labels.site",
            "rules[1].metric",
            "rules[1].name",
            "rules[2].name",
            "rules[2].for_s",
            "rules[2].scope.site",
            "rules[3].threshold",
            "correlate.site_outage.min_pct",
        ] {
            assert!(all.contains(key), "{key} missing in:\n{all}");
        }
    }

    #[test]
    fn clear_defaults_to_the_threshold_and_durations_become_milliseconds() {
        let set = parse_rules(&build_rule("for_s = 5\ncooldown_s = 7\n")).unwrap();
        let r = &set.rules[0];
        assert_eq!((r.clear, r.for_ms, r.cooldown_ms), (80.0, 5000, 7000));
        assert_eq!(r.summary, "cpu.usage_pct > 80");
    }

    #[test]
    fn a_lower_bound_rule_needs_clear_above_the_threshold() {
        let text = build_rule("clear = 70\n").replace("\">\"", "\"<\"");
        let p = parse_rules(&text).unwrap_err().to_string();
        assert!(p.contains("rules[0].clear"), "{p}");
        let ok = parse_rules(&build_rule("clear = 90\n").replace("\">\"", "\"<=\"")).unwrap();
        let r = &ok.rules[0];
        assert!(r.breaches(80.0) && !r.breaches(81.0) && r.holds_firing(85.0) && !r.holds_firing(91.0));
    }

    #[test]
    fn scope_matches_site_and_tag() {
        let tags = vec!["pilot".to_string()];
        let site = Scope {
            site: Some("oslo".into()),
            tag: None,
        };
        assert!(
            site.matches(Some("oslo"), &[])
                && !site.matches(Some("bergen"), &tags)
                && !site.matches(None, &[])
        );
        let tag = Scope {
            site: None,
            tag: Some("pilot".into()),
        };
        assert!(tag.matches(None, &tags) && !tag.matches(Some("oslo"), &[]));
        assert!(Scope::default().matches(None, &[]));
    }
}
