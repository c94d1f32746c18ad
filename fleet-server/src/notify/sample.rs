//! Sample notifications: what a channel's templates are tried on when the config is loaded
//! (a template that fails on any of them is a config error naming the channel), and the
//! message `fleetctl notify test CHANNEL` sends. Built through the same constructors as real
//! notifications ([`Notification::from_transition`], [`Notification::from_incident`]), so they
//! carry every field a real one has.

use std::collections::BTreeMap;

use common::{DeviceId, Severity};

use super::notification::Notification;
use crate::alerts::alert::{Alert, AlertState, Transition, TransitionKind};
use crate::alerts::rules::Op;
use crate::incidents::incident::{Incident, IncidentChange, IncidentChangeKind, IncidentKind, IncidentState};

/// The rule name of the test message.
pub const TEST_RULE: &str = "notify_test";
/// The machine of the sample alerts (a valid device id).
pub const SAMPLE_DEVICE: &str = "RVMTEST01";

fn sample_alert(at_ms: i64, state: AlertState) -> Alert {
    let device = DeviceId::new(SAMPLE_DEVICE).unwrap_or_else(|_| unreachable!("a valid id"));
    let labels = BTreeMap::from([
        ("rule".to_string(), TEST_RULE.to_string()),
        ("device".to_string(), SAMPLE_DEVICE.to_string()),
        ("site".to_string(), "test-site".to_string()),
        ("severity".to_string(), "warning".to_string()),
    ]);
    Alert {
        id: format!("{TEST_RULE}:{SAMPLE_DEVICE}:1"),
        rule: TEST_RULE.into(),
        device,
        generation: 1,
        metric: "test.value".into(),
        severity: Severity::Warning,
        labels,
        summary: "test message from RVM Fleet".into(),
        op: Op::Gt,
        value: 1.0,
        threshold: 0.0,
        clear: 0.0,
        started_ms: at_ms,
        fired_ms: Some(at_ms),
        resolved_ms: (state == AlertState::Resolved).then_some(at_ms),
        escalated_ms: None,
        last_sample_ms: at_ms,
        ack: None,
        silenced_by: None,
        muted_by: None,
        resolved_by: None,
        state,
    }
}

fn from_alert(kind: TransitionKind, alert: Alert, at_ms: i64) -> Notification {
    let t = Transition {
        kind,
        at_ms,
        silenced: false,
        alert,
    };
    Notification::from_transition(&t).unwrap_or_else(|| unreachable!("firing and resolved are news"))
}

/// A firing warning alert on [`SAMPLE_DEVICE`]: the test message.
pub fn firing_alert(at_ms: i64) -> Notification {
    from_alert(
        TransitionKind::Firing,
        sample_alert(at_ms, AlertState::Firing),
        at_ms,
    )
}

/// The same alert, resolved.
pub fn resolved_alert(at_ms: i64) -> Notification {
    from_alert(
        TransitionKind::Resolved,
        sample_alert(at_ms, AlertState::Resolved),
        at_ms,
    )
}

/// A failing health check's alert on [`SAMPLE_DEVICE`] ([`crate::alerts::checks`]).
pub fn failing_check(at_ms: i64) -> Notification {
    let mut a = sample_alert(at_ms, AlertState::Firing);
    a.rule = "check.http.vision".into();
    a.id = format!("{}:{SAMPLE_DEVICE}:1", a.rule);
    a.metric = "health.http:vision".into();
    a.severity = Severity::Critical;
    a.summary = "http vision answered 500 (expected 200)".into();
    a.op = Op::Ge;
    (a.value, a.threshold, a.clear) = (2.0, 1.0, 1.0);
    a.labels.insert("rule".into(), a.rule.clone());
    a.labels.insert("severity".into(), "critical".into());
    a.labels.insert("check".into(), "http:vision".into());
    a.labels.insert("check_kind".into(), "http".into());
    from_alert(TransitionKind::Firing, a, at_ms)
}

/// A site outage opened at `test-site`.
pub fn opened_incident(at_ms: i64) -> Notification {
    let device = DeviceId::new(SAMPLE_DEVICE).unwrap_or_else(|_| unreachable!("a valid id"));
    let incident = Incident {
        id: "site_outage-1".into(),
        kind: IncidentKind::SiteOutage,
        title: "site outage at test-site".into(),
        probable_cause: "power or network at the site".into(),
        site: Some("test-site".into()),
        attribute: None,
        attribute_value: None,
        rule: None,
        metric: None,
        devices: vec![device],
        members: vec![format!("offline:{SAMPLE_DEVICE}:1")],
        active_members: vec![format!("offline:{SAMPLE_DEVICE}:1")],
        suppresses_members: true,
        opened_ms: at_ms,
        updated_ms: at_ms,
        resolved_ms: None,
        state: IncidentState::Open,
    };
    let change = IncidentChange {
        kind: IncidentChangeKind::Opened,
        at_ms,
        incident,
        suppressed: Vec::new(),
    };
    Notification::from_incident(&change).unwrap_or_else(|| unreachable!("an opening is news"))
}

/// Every sample, for trying templates.
pub fn all(at_ms: i64) -> [Notification; 3] {
    [firing_alert(at_ms), resolved_alert(at_ms), opened_incident(at_ms)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_real_notifications_of_each_kind() {
        let [f, r, i] = all(1_000);
        assert_eq!(
            (f.event.as_str(), r.event.as_str(), i.event.as_str()),
            ("firing", "resolved", "opened")
        );
        assert_eq!(f.alert.as_ref().unwrap().id, r.alert.as_ref().unwrap().id);
        assert!(i.incident.is_some() && i.alert.is_none());
        assert_eq!(f.labels.get("source").map(String::as_str), Some("alert"));
    }
}
