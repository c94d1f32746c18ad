//! Health check alerts (pure): each failing check of an agent's health report raises an alert
//! that names the check and the machine, with the check's severity, and resolves when the
//! check passes. `[health_checks]` in `rules.toml` turns them on (the default) and sets
//! which kinds count, how long a check must fail first, escalation and labels.
//!
//! # The alert
//! - One alert per (check, machine): its rule is `check.` and the check's name with `:` as
//!   `.` and anything outside `[A-Za-z0-9_.@-]` as `_` (`http:vision` -> `check.http.vision`,
//!   `unit:rvm-vision.service` -> `check.unit.rvm-vision.service`), so its id is
//!   `check.http.vision:rvm0042:1`; labels `check` (the name as the agent reports it) and
//!   `check_kind` (`http`, `process`, `unit`, `camera`, `data_disk`, `broker`, `actor`).
//! - Its summary is the check's message when it fired (`http vision answered 500 (expected
//!   200)`); its value the check's status: 1 warn, 2 critical.
//! - Severity: warn is a warning, critical is critical. A check that gets worse while its
//!   alert fires (warn -> critical) resolves the warning alert and fires a critical one, so
//!   the worse state pages; one that gets better stays in its alert until it passes.
//! - An `actor:*` check counts only when critical (the actor is not running): its warn says
//!   the actor was restarted some time, which is a count (`agent.restarted`, the events), not
//!   a failure now. Threshold checks (`cpu`, `memory`, `disk`, `gpu_temp`) and `telemetry`
//!   are not here: the metric rules cover them with their own thresholds and `for_s`.
//! - A check missing from a later report (taken out of the agent's config) resolves.

use std::collections::{BTreeMap, BTreeSet};

use common::{HealthStatus, Severity};
use serde::{Deserialize, Serialize};

use super::names::{MAX_DURATION_S, RESERVED_LABELS};

/// Prefix of every health check alert's rule name (no rule of the file can have a `.`).
pub const CHECK_RULE_PREFIX: &str = "check.";

/// The kinds of check that raise alerts, by the prefix of their name.
pub const KINDS: &[&str] = &[
    "http",
    "process",
    "unit",
    "camera",
    "data_disk",
    "broker",
    "actor",
];

/// Labels every health check alert has, besides the engine's.
pub const CHECK_LABELS: &[&str] = &["check", "check_kind"];

fn yes() -> bool {
    true
}

fn default_kinds() -> Vec<String> {
    KINDS.iter().map(|k| k.to_string()).collect()
}

/// `[health_checks]` as written in `rules.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthChecksFile {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Which kinds of check raise alerts (default: all of [`KINDS`]).
    #[serde(default = "default_kinds")]
    pub kinds: Vec<String>,
    /// A check must fail in every report this long before its alert fires.
    #[serde(default)]
    pub for_s: u64,
    /// Critical check alerts unacknowledged this long escalate once.
    #[serde(default)]
    pub escalate_after_s: Option<u64>,
    /// Extra labels on every health check alert (`team = "field-service"`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Default for HealthChecksFile {
    fn default() -> Self {
        HealthChecksFile {
            enabled: true,
            kinds: default_kinds(),
            for_s: 0,
            escalate_after_s: None,
            labels: BTreeMap::new(),
        }
    }
}

/// The validated `[health_checks]`: how a check becomes a rule.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckRules {
    pub kinds: BTreeSet<String>,
    pub for_ms: i64,
    pub escalate_after_ms: Option<i64>,
    pub labels: BTreeMap<String, String>,
}

impl HealthChecksFile {
    /// Every problem with its key under `prefix`, or the rules (None when turned off).
    pub fn validate(&self, prefix: &str) -> Result<Option<CheckRules>, Vec<String>> {
        let mut p = Vec::new();
        let k = |field: &str| format!("{prefix}.{field}");
        for (i, kind) in self.kinds.iter().enumerate() {
            if !KINDS.contains(&kind.as_str()) {
                p.push(format!(
                    "{}: {kind:?} is not one of {}",
                    k(&format!("kinds[{i}]")),
                    KINDS.join(", ")
                ));
            }
        }
        if self.for_s > MAX_DURATION_S {
            p.push(format!(
                "{}: {} s is longer than the maximum of {MAX_DURATION_S} s",
                k("for_s"),
                self.for_s
            ));
        }
        if let Some(e) = self.escalate_after_s
            && (e == 0 || e > MAX_DURATION_S)
        {
            p.push(format!(
                "{}: {e} s is not between 1 and {MAX_DURATION_S} s",
                k("escalate_after_s")
            ));
        }
        for (label, value) in &self.labels {
            let key = k(&format!("labels.{label}"));
            if label.is_empty() || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                p.push(format!("{key}: label names are [A-Za-z0-9_]+"));
            } else if RESERVED_LABELS.contains(&label.as_str()) || CHECK_LABELS.contains(&label.as_str()) {
                p.push(format!("{key}: {label:?} is set by the engine"));
            }
            if value.is_empty() {
                p.push(format!("{key}: must not be empty"));
            }
        }
        if !p.is_empty() {
            return Err(p);
        }
        Ok(self.enabled.then(|| CheckRules {
            kinds: self.kinds.iter().cloned().collect(),
            for_ms: self.for_s as i64 * 1000,
            escalate_after_ms: self.escalate_after_s.map(|e| e as i64 * 1000),
            labels: self.labels.clone(),
        }))
    }
}

/// The kind of a check by its name: `http:vision` -> `http`, `camera` -> `camera`.
pub fn check_kind(name: &str) -> &str {
    name.split_once(':').map_or(name, |(kind, _)| kind)
}

/// The rule name of a check's alerts. See the module docs.
pub fn rule_name(check: &str) -> String {
    let mut out = String::with_capacity(CHECK_RULE_PREFIX.len() + check.len());
    out.push_str(CHECK_RULE_PREFIX);
    out.extend(check.chars().map(|c| match c {
        ':' => '.',
        c if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@' | '-') => c,
        _ => '_',
    }));
    out
}

/// Is `rule` the rule name of health check alerts?
pub fn is_check_rule(rule: &str) -> bool {
    rule.starts_with(CHECK_RULE_PREFIX)
}

/// A check's status as the alert's value: 0 ok, 1 warn, 2 critical.
pub fn level(status: HealthStatus) -> f64 {
    match status {
        HealthStatus::Ok => 0.0,
        HealthStatus::Warn => 1.0,
        HealthStatus::Critical => 2.0,
    }
}

/// The severity of a failing check's alert.
pub fn severity_of(status: HealthStatus) -> Severity {
    if status == HealthStatus::Critical {
        Severity::Critical
    } else {
        Severity::Warning
    }
}

impl CheckRules {
    /// Does a check of this name raise alerts?
    pub fn covers(&self, check: &str) -> bool {
        self.kinds.contains(check_kind(check))
    }

    /// The value fed for a check: its level, except that an actor's warn is not a failure.
    pub fn value(&self, check: &str, status: HealthStatus) -> f64 {
        if check_kind(check) == "actor" && status == HealthStatus::Warn {
            0.0
        } else {
            level(status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_keep_the_check_readable_and_never_contain_a_colon() {
        assert_eq!(rule_name("http:vision"), "check.http.vision");
        assert_eq!(
            rule_name("unit:rvm-vision.service"),
            "check.unit.rvm-vision.service"
        );
        assert_eq!(
            rule_name("process:python3 main.py"),
            "check.process.python3_main.py"
        );
        assert_eq!(rule_name("camera"), "check.camera");
        assert!(is_check_rule(&rule_name("actor:collector")));
        assert!(!rule_name("a:b:c/d é").contains([':', '/', ' ']));
        assert_eq!(check_kind("unit:x.service"), "unit");
        assert_eq!(check_kind("data_disk"), "data_disk");
    }

    #[test]
    fn every_kind_is_on_by_default_and_bad_keys_are_named() {
        let c = HealthChecksFile::default()
            .validate("health_checks")
            .unwrap()
            .unwrap();
        for k in KINDS {
            assert!(c.covers(&format!("{k}:x")) || c.covers(k), "{k}");
        }
        assert!(!c.covers("cpu") && !c.covers("telemetry") && !c.covers("gpu_temp"));
        let bad = HealthChecksFile {
            kinds: vec!["http".into(), "cpu".into()],
            escalate_after_s: Some(0),
            labels: BTreeMap::from([("check".into(), "x".into())]),
            ..HealthChecksFile::default()
        };
        let p = bad.validate("health_checks").unwrap_err().join("\n");
        for key in [
            "health_checks.kinds[1]",
            "health_checks.escalate_after_s",
            "health_checks.labels.check",
        ] {
            assert!(p.contains(key), "{key} in {p}");
        }
        let off = HealthChecksFile {
            enabled: false,
            ..HealthChecksFile::default()
        };
        assert_eq!(off.validate("health_checks").unwrap(), None);
    }

    #[test]
    fn an_actor_that_restarted_is_not_a_failing_check_but_one_not_running_is() {
        let c = HealthChecksFile::default().validate("h").unwrap().unwrap();
        assert_eq!(c.value("actor:collector", HealthStatus::Warn), 0.0);
        assert_eq!(c.value("actor:collector", HealthStatus::Critical), 2.0);
        assert_eq!(c.value("http:vision", HealthStatus::Warn), 1.0);
    }
}
