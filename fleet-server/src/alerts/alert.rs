//! What an alert is: the [`Alert`] record notifiers, the API and the correlator see, its
//! [`Transition`]s, and the [`DeviceInfo`] rules are scoped by. The engine ([`super::engine`])
//! makes them; the correlator, notifications, the republisher and the live view read them.

use std::collections::BTreeMap;

use common::{DeviceId, Severity};
use serde::{Deserialize, Serialize};

use super::rules::Op;

/// An alert's (rule, device) pair: at most one active alert each.
pub(crate) type Key = (String, DeviceId);

/// What the engine needs to know about a device: identity, scope and labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub id: DeviceId,
    pub site: Option<String>,
    pub tags: Vec<String>,
    /// Versions and hardware (`agent_version`, `vision_model_version`, `jetpack`, `board`).
    pub attrs: BTreeMap<String, String>,
}

impl DeviceInfo {
    pub fn new(id: DeviceId) -> Self {
        DeviceInfo {
            id,
            site: None,
            tags: Vec::new(),
            attrs: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Pending,
    Firing,
    Resolved,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub by: String,
    pub at_ms: i64,
    pub comment: String,
}

/// Who resolved an alert by hand (`POST /api/v1/alerts/{id}/resolve`), when and why: the
/// alert's history shows it, so a resolve nobody can explain is not possible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    pub by: String,
    pub at_ms: i64,
    pub comment: String,
}

/// One alert: the full record notifiers, the API and the correlator see.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `{rule}:{device}:{generation}`.
    pub id: String,
    pub rule: String,
    pub device: DeviceId,
    pub generation: u64,
    pub metric: String,
    pub severity: Severity,
    /// `rule`, `device`, `severity`, `site` (when known) and the rule's own labels.
    pub labels: BTreeMap<String, String>,
    pub summary: String,
    pub op: Op,
    /// Latest value seen (while active) or the value that resolved it.
    pub value: f64,
    pub threshold: f64,
    pub clear: f64,
    /// First breaching sample.
    pub started_ms: i64,
    pub fired_ms: Option<i64>,
    pub resolved_ms: Option<i64>,
    pub escalated_ms: Option<i64>,
    pub last_sample_ms: i64,
    pub ack: Option<Ack>,
    /// Id of a silence that matches this alert now.
    pub silenced_by: Option<String>,
    /// The maintenance window that muted this alert's firing: nobody was told it fired (its
    /// resolution is not sent either; if it still fires when the window closes, the firing
    /// is sent then). Absent when nothing was muted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub muted_by: Option<String>,
    /// Set when a person resolved the alert (not its samples); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<Resolution>,
    pub state: AlertState,
}

impl Alert {
    /// The (rule, device) pair this alert belongs to.
    pub(crate) fn key(&self) -> Key {
        (self.rule.clone(), self.device.clone())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionKind {
    /// The condition started holding; the alert fires if it holds for the rule's `for`.
    Pending,
    Firing,
    Resolved,
    /// A critical alert stayed unacknowledged for `escalate_after_s`.
    Escalated,
    /// A pending alert's condition stopped holding before `for` elapsed: it never fired.
    Cancelled,
    /// The silence covering a firing alert expired or was removed: notify it now if skipped.
    Unsilenced,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub kind: TransitionKind,
    pub at_ms: i64,
    /// A silence matched the alert at `at_ms`: notifiers skip it.
    pub silenced: bool,
    /// The alert after the transition.
    pub alert: Alert,
}

impl Transition {
    pub(crate) fn of(kind: TransitionKind, alert: &Alert, at_ms: i64) -> Self {
        Transition {
            kind,
            at_ms,
            silenced: alert.silenced_by.is_some(),
            alert: alert.clone(),
        }
    }
}

/// The `severity` label value, as in rules.toml.
pub fn severity_label(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}
