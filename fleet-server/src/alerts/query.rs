//! What `GET /api/v1/alerts` lists: its query parameters parsed into an [`AlertQuery`] and
//! the test of one alert against it. Pure (no clock, no IO); every error names its parameter.
//!
//! | parameter | meaning |
//! | --- | --- |
//! | `state` | `firing`, `pending`, `resolved`, `acknowledged`, `all`; default: active (firing and pending), or `all` when `from` or `to` is given |
//! | `from`, `to` | RFC 3339 (`2026-12-07T10:00:00Z`) or milliseconds since the epoch: alerts active at some time in the range (started at or before `to`, not resolved before `from`) |
//! | `severity` | one or more of `info`, `warning`, `critical`, comma-separated |
//! | `site`, `rule`, `device` | exact values, comma-separated for several |
//! | `limit` | at most this many (after filtering), 1..=[`MAX_LIMIT`] |
//!
//! The alerts filtered are the alerts actor's: the active ones and the resolved history it
//! keeps ([`super::actor::ALERT_HISTORY_CAP`], newest first); older resolved alerts are in PostgreSQL's
//! `fleet_alerts` only (docs/postgres.md).

use std::collections::BTreeMap;

use common::Severity;

use super::alert::{Alert, AlertState};
use super::requests::StateFilter;

/// Largest `limit`.
pub const MAX_LIMIT: usize = 10_000;

/// A bad query parameter: its name and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query parameter {param}: {message}")]
pub struct QueryError {
    pub param: &'static str,
    pub message: String,
}

fn bad(param: &'static str, message: String) -> QueryError {
    QueryError { param, message }
}

/// A parsed `GET /api/v1/alerts` query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlertQuery {
    /// None: active alerts (firing and pending).
    pub state: Option<StateFilter>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    /// Empty: any.
    pub severities: Vec<Severity>,
    pub sites: Vec<String>,
    pub rules: Vec<String>,
    pub devices: Vec<String>,
    pub limit: Option<usize>,
}

/// RFC 3339 or milliseconds since the epoch.
pub fn parse_time(param: &'static str, s: &str) -> Result<i64, QueryError> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return (ms >= 0)
            .then_some(ms)
            .ok_or_else(|| bad(param, format!("{ms} is before 1970")));
    }
    s.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|_| {
            bad(
                param,
                format!("{s:?} is neither RFC 3339 (2026-12-07T10:00:00Z) nor milliseconds since the epoch"),
            )
        })
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect()
}

impl AlertQuery {
    /// Parses the query string's parameters; an unknown parameter is refused by name (a typo
    /// such as `sevrity` would otherwise list everything).
    pub fn parse(params: &BTreeMap<String, String>) -> Result<AlertQuery, QueryError> {
        let mut q = AlertQuery::default();
        for (k, v) in params {
            match k.as_str() {
                "state" => {
                    q.state = Some(v.parse().map_err(|e| bad("state", e))?);
                }
                "from" => q.from_ms = Some(parse_time("from", v)?),
                "to" => q.to_ms = Some(parse_time("to", v)?),
                "severity" => {
                    q.severities = list(v)
                        .iter()
                        .map(|s| match s.as_str() {
                            "info" => Ok(Severity::Info),
                            "warning" => Ok(Severity::Warning),
                            "critical" => Ok(Severity::Critical),
                            other => Err(bad(
                                "severity",
                                format!("{other:?} is not one of info, warning, critical"),
                            )),
                        })
                        .collect::<Result<_, _>>()?;
                }
                "site" => q.sites = list(v),
                "rule" => q.rules = list(v),
                "device" => q.devices = list(v),
                "limit" => {
                    q.limit = Some(
                        v.trim()
                            .parse::<usize>()
                            .ok()
                            .filter(|n| (1..=MAX_LIMIT).contains(n))
                            .ok_or_else(|| bad("limit", format!("{v:?} is not between 1 and {MAX_LIMIT}")))?,
                    );
                }
                other => {
                    return Err(QueryError {
                        param: "query",
                        message: format!(
                            "unknown parameter {other:?} (state, from, to, severity, site, rule, device, limit)"
                        ),
                    });
                }
            }
        }
        if let (Some(f), Some(t)) = (q.from_ms, q.to_ms)
            && f > t
        {
            return Err(bad("from", format!("{f} is after to ({t})")));
        }
        if q.state.is_none() && (q.from_ms.is_some() || q.to_ms.is_some()) {
            q.state = Some(StateFilter::All);
        }
        Ok(q)
    }

    /// The state asked for, as the answer names it.
    pub fn state_label(&self) -> &'static str {
        match self.state {
            None => "active",
            Some(StateFilter::Firing) => "firing",
            Some(StateFilter::Pending) => "pending",
            Some(StateFilter::Resolved) => "resolved",
            Some(StateFilter::Acknowledged) => "acknowledged",
            Some(StateFilter::All) => "all",
        }
    }

    /// Whether `a` passes every filter but `state` (the actor selects by state).
    pub fn matches(&self, a: &Alert) -> bool {
        let any = |want: &[String], have: Option<&str>| {
            want.is_empty() || have.is_some_and(|h| want.iter().any(|w| w == h))
        };
        if let Some(to) = self.to_ms
            && a.started_ms > to
        {
            return false;
        }
        if let Some(from) = self.from_ms
            && a.state == AlertState::Resolved
            && a.resolved_ms.is_some_and(|r| r < from)
        {
            return false;
        }
        (self.severities.is_empty() || self.severities.contains(&a.severity))
            && any(&self.sites, a.labels.get("site").map(String::as_str))
            && any(&self.rules, Some(&a.rule))
            && any(&self.devices, Some(a.device.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use common::DeviceId;

    use super::*;
    use crate::alerts::rules::Op;

    fn build_alert(rule: &str, site: &str, severity: Severity, started: i64, resolved: Option<i64>) -> Alert {
        Alert {
            id: format!("{rule}:rvm1:1"),
            rule: rule.into(),
            device: DeviceId::new("rvm1").unwrap(),
            generation: 1,
            metric: "m".into(),
            severity,
            labels: BTreeMap::from([("site".to_string(), site.to_string())]),
            summary: String::new(),
            op: Op::Gt,
            value: 1.0,
            threshold: 0.0,
            clear: 0.0,
            started_ms: started,
            fired_ms: Some(started),
            resolved_ms: resolved,
            escalated_ms: None,
            last_sample_ms: started,
            ack: None,
            silenced_by: None,
            muted_by: None,
            resolved_by: None,
            state: if resolved.is_some() {
                AlertState::Resolved
            } else {
                AlertState::Firing
            },
        }
    }

    fn q(pairs: &[(&str, &str)]) -> Result<AlertQuery, QueryError> {
        AlertQuery::parse(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn times_are_rfc3339_or_milliseconds_and_bad_ones_name_their_parameter() {
        let a = q(&[("from", "2026-12-07T10:00:00Z"), ("to", "1796637600000")]).unwrap();
        assert_eq!(a.from_ms, Some(1_796_637_600_000));
        assert_eq!(a.to_ms, Some(1_796_637_600_000));
        assert_eq!(
            a.state,
            Some(StateFilter::All),
            "a range lists resolved alerts too"
        );
        assert_eq!(q(&[("from", "yesterday")]).unwrap_err().param, "from");
        assert_eq!(q(&[("to", "-5")]).unwrap_err().param, "to");
        let e = q(&[("from", "2000"), ("to", "1000")]).unwrap_err();
        assert_eq!(e.param, "from");
        assert_eq!(q(&[("severity", "loud")]).unwrap_err().param, "severity");
        assert_eq!(q(&[("limit", "0")]).unwrap_err().param, "limit");
        assert_eq!(q(&[("state", "x")]).unwrap_err().param, "state");
        let e = q(&[("sevrity", "info")]).unwrap_err();
        assert!(e.to_string().contains("sevrity"), "{e}");
    }

    #[test]
    fn an_alert_matches_when_it_was_active_in_the_range_and_every_filter_holds() {
        let old = build_alert("cpu_high", "oslo", Severity::Warning, 100, Some(200));
        let open = build_alert("gpu_hot", "bergen", Severity::Critical, 300, None);
        let range = q(&[("from", "250"), ("to", "1000")]).unwrap();
        assert!(!range.matches(&old), "resolved before from");
        assert!(range.matches(&open));
        let before = q(&[("to", "150")]).unwrap();
        assert!(before.matches(&old) && !before.matches(&open), "started after to");
        let f = q(&[("severity", "warning,critical"), ("site", "oslo")]).unwrap();
        assert!(f.matches(&old) && !f.matches(&open));
        let r = q(&[("rule", "gpu_hot"), ("device", "rvm1")]).unwrap();
        assert!(!r.matches(&old) && r.matches(&open));
        assert!(q(&[]).unwrap().matches(&old), "no filter matches everything");
    }
}
