//! [`Notification`]: one message to people (an alert firing, resolved or escalated; an
//! incident opened, resolved or withdrawn), the same JSON a webhook receives.

use std::collections::BTreeMap;

use common::Severity;
use serde::{Deserialize, Serialize};

use crate::alerts::alert::{Alert, Transition, TransitionKind, severity_label};
use crate::incidents::incident::{Incident, IncidentChange, IncidentChangeKind, IncidentKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Alert,
    Incident,
}

/// One message to people: the JSON body of a webhook, the content of an email.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// `{alert or incident id}/{event}`: a receiver can drop repeats by it.
    pub id: String,
    pub source: Source,
    /// Alerts: `firing`, `resolved`, `escalated`; incidents: `opened`, `resolved`, `withdrawn`.
    pub event: String,
    pub severity: Severity,
    pub at_ms: i64,
    pub title: String,
    pub text: String,
    /// What routes match on: an alert's labels (`rule`, `device`, `site`, `severity`, the
    /// rule's own); for an incident `incident` (its kind), `site`, `severity`. Both have
    /// `source`.
    pub labels: BTreeMap<String, String>,
    pub alert: Option<Alert>,
    pub incident: Option<Incident>,
}

impl Notification {
    /// The notification for an engine transition people hear about, if any: firing,
    /// resolved, escalated, and a firing alert whose silence ended (as `firing`).
    pub fn from_transition(t: &Transition) -> Option<Notification> {
        let event = match t.kind {
            TransitionKind::Firing | TransitionKind::Unsilenced => "firing",
            TransitionKind::Resolved => "resolved",
            TransitionKind::Escalated => "escalated",
            TransitionKind::Pending | TransitionKind::Cancelled => return None,
        };
        let a = &t.alert;
        let mut labels = a.labels.clone();
        labels.insert("source".into(), "alert".into());
        let title = format!("{} on {}: {}", a.rule, a.device, a.summary);
        let measured = match a.labels.get("check") {
            Some(check) => format!("health check {check} failing"),
            None => format!(
                "{metric} = {value} ({op} {threshold}, clears at {clear})",
                metric = a.metric,
                value = a.value,
                op = a.op,
                threshold = a.threshold,
                clear = a.clear,
            ),
        };
        let text = format!(
            "{event}: {title}\nalert {id}, severity {sev}\n{measured}\nlabels: {labels}",
            id = a.id,
            sev = severity_label(a.severity),
            labels = a
                .labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        Some(Notification {
            id: format!("{}/{event}", a.id),
            source: Source::Alert,
            event: event.into(),
            severity: a.severity,
            at_ms: t.at_ms,
            title,
            text,
            labels,
            alert: Some(a.clone()),
            incident: None,
        })
    }

    /// The notification for an incident change people hear about: opened, resolved,
    /// withdrawn (a member joining is not news).
    pub fn from_incident(c: &IncidentChange) -> Option<Notification> {
        let event = match c.kind {
            IncidentChangeKind::Opened => "opened",
            IncidentChangeKind::Resolved => "resolved",
            IncidentChangeKind::Withdrawn => "withdrawn",
            IncidentChangeKind::Joined => return None,
        };
        let i = &c.incident;
        let severity = incident_severity(i.kind);
        let mut labels = BTreeMap::from([
            ("source".to_string(), "incident".to_string()),
            ("incident".to_string(), i.kind.as_str().to_string()),
            ("severity".to_string(), severity_label(severity).to_string()),
        ]);
        if let Some(site) = &i.site {
            labels.insert("site".into(), site.clone());
        }
        if let (Some(k), Some(v)) = (&i.attribute, &i.attribute_value) {
            labels.insert(k.clone(), v.clone());
        }
        let devices: Vec<&str> = i.devices.iter().map(|d| d.as_str()).collect();
        let text = format!(
            "incident {event}: {title}\nincident {id} ({kind})\nprobable cause: {cause}\nmachines ({n}): {devices}",
            title = i.title,
            id = i.id,
            kind = i.kind.as_str(),
            cause = i.probable_cause,
            n = devices.len(),
            devices = devices.join(", "),
        );
        Some(Notification {
            id: format!("{}/{event}", i.id),
            source: Source::Incident,
            event: event.into(),
            severity,
            at_ms: c.at_ms,
            title: i.title.clone(),
            text,
            labels,
            alert: None,
            incident: Some(i.clone()),
        })
    }
}

/// How urgent an incident kind is: a whole site down pages, the others warn or inform.
pub fn incident_severity(kind: IncidentKind) -> Severity {
    match kind {
        IncidentKind::SiteOutage => Severity::Critical,
        IncidentKind::CohortRegression | IncidentKind::ThermalThrottling => Severity::Warning,
        IncidentKind::Outlier => Severity::Info,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_people_care_about_become_notifications_with_labels() {
        use crate::alerts::alert::DeviceInfo;
        use crate::alerts::engine::AlertEngine;
        use crate::alerts::rules::parse_rules;
        let rules = parse_rules(
            "[[rules]]\nname = \"hot\"\nmetric = \"gpu.temp_c\"\nop = \">\"\nthreshold = 80\nfor_s = 1\nseverity = \"warning\"\nlabels = { team = \"hardware\" }\n",
        )
        .unwrap();
        let mut e = AlertEngine::new(rules.rules);
        let mut d = DeviceInfo::new(common::DeviceId::new("rvm1").unwrap());
        d.site = Some("oslo".into());
        let m = |v: f64| vec![("gpu.temp_c".to_string(), v)];
        let pending = e.observe(&d, &m(90.0), 0);
        assert!(
            Notification::from_transition(&pending[0]).is_none(),
            "pending is not news"
        );
        let firing = e.observe(&d, &m(90.0), 1000);
        let n = Notification::from_transition(&firing[0]).unwrap();
        assert_eq!((n.id.as_str(), n.event.as_str()), ("hot:rvm1:1/firing", "firing"));
        for (k, v) in [
            ("source", "alert"),
            ("site", "oslo"),
            ("team", "hardware"),
            ("severity", "warning"),
        ] {
            assert_eq!(n.labels.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert!(n.text.contains("gpu.temp_c = 90"), "{}", n.text);
        let resolved = e.observe(&d, &m(20.0), 2000);
        assert_eq!(
            Notification::from_transition(&resolved[0]).unwrap().event,
            "resolved"
        );
    }

    #[test]
    fn incident_openings_and_resolutions_are_news_joins_are_not() {
        let inc = Incident {
            id: "site_outage-1".into(),
            kind: IncidentKind::SiteOutage,
            title: "site outage at oslo".into(),
            probable_cause: "power".into(),
            site: Some("oslo".into()),
            attribute: None,
            attribute_value: None,
            rule: None,
            metric: None,
            devices: vec![common::DeviceId::new("rvm1").unwrap()],
            members: Vec::new(),
            active_members: Vec::new(),
            suppresses_members: true,
            opened_ms: 0,
            updated_ms: 0,
            resolved_ms: None,
            state: crate::incidents::incident::IncidentState::Open,
        };
        let change = |kind| IncidentChange {
            kind,
            at_ms: 5,
            incident: inc.clone(),
            suppressed: Vec::new(),
        };
        let n = Notification::from_incident(&change(IncidentChangeKind::Opened)).unwrap();
        assert_eq!((n.severity, n.event.as_str()), (Severity::Critical, "opened"));
        assert_eq!(n.labels.get("incident").map(String::as_str), Some("site_outage"));
        assert!(
            n.text.contains("probable cause: power") && n.text.contains("rvm1"),
            "{}",
            n.text
        );
        assert!(Notification::from_incident(&change(IncidentChangeKind::Joined)).is_none());
        assert_eq!(
            Notification::from_incident(&change(IncidentChangeKind::Withdrawn))
                .unwrap()
                .event,
            "withdrawn"
        );
    }
}
