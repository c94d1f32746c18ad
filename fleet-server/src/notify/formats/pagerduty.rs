//! PagerDuty Events API v2 (`POST https://events.pagerduty.com/v2/enqueue`): a firing alert,
//! an escalation or an opened incident is a `trigger`; a resolution or a withdrawal is a
//! `resolve` with the same `dedup_key` (the alert's or the incident's id, at most 255
//! characters), so PagerDuty closes what it opened. The `routing_key` is the channel's own.
//!
//! `payload.severity` uses PagerDuty's values: critical, warning, info (the fleet has no
//! `error`). `payload.source` is the machine (alerts) or the site (incidents).

use serde_json::json;

use super::{Input, truncate};
use crate::alerts::alert::severity_label;
use crate::notify::secret::Secret;
use crate::notify::template::{is_resolution, rfc3339_ms, subject_id};

/// PagerDuty's limit for `dedup_key`.
pub const DEDUP_KEY_MAX: usize = 255;
/// PagerDuty's limit for `payload.summary`.
pub const SUMMARY_MAX: usize = 1024;
/// Where events go unless the channel's `url` says otherwise.
pub const EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// The subject id, or, past [`DEDUP_KEY_MAX`], its head and a SHA-256 of the whole (stable).
pub fn dedup_key(subject: &str) -> String {
    if subject.len() <= DEDUP_KEY_MAX {
        return subject.to_string();
    }
    let hash = ring::digest::digest(&ring::digest::SHA256, subject.as_bytes());
    let hex: String = hash.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
    let mut head = DEDUP_KEY_MAX - hex.len() - 1;
    while !subject.is_char_boundary(head) {
        head -= 1;
    }
    format!("{}~{hex}", &subject[..head])
}

pub fn body(routing_key: &Secret, input: &Input<'_>) -> serde_json::Value {
    let n = input.notification;
    let key = dedup_key(subject_id(n));
    if is_resolution(&n.event) {
        return json!({
            "routing_key": routing_key.expose(),
            "event_action": "resolve",
            "dedup_key": key,
        });
    }
    let source = match (&n.alert, n.labels.get("site")) {
        (Some(a), _) => a.device.as_str().to_string(),
        (None, Some(site)) => site.clone(),
        (None, None) => "rvm-fleet".into(),
    };
    let mut payload = json!({
        "summary": truncate(&input.rendered.title, SUMMARY_MAX),
        "source": source,
        "severity": severity_label(n.severity),
        "timestamp": rfc3339_ms(n.at_ms),
        "custom_details": {
            "text": input.rendered.text,
            "event": n.event,
            "notification": n.id,
            "labels": n.labels,
        },
    });
    if let Some(a) = &n.alert {
        payload["class"] = json!(a.rule);
        payload["component"] = json!(a.metric);
    } else if let Some(i) = &n.incident {
        payload["class"] = json!(i.kind.as_str());
    }
    if let Some(site) = n.labels.get("site") {
        payload["group"] = json!(site);
    }
    let mut body = json!({
        "routing_key": routing_key.expose(),
        "event_action": "trigger",
        "dedup_key": key,
        "payload": payload,
        "client": "RVM Fleet",
    });
    if let Some(url) = input.public_url {
        body["client_url"] = json!(url);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::super::FormatSpec;
    use super::super::testing::{build_body, build_cases, check_all};
    use super::*;

    fn build_spec() -> FormatSpec {
        FormatSpec::Pagerduty {
            routing_key: Secret::new("R0UT1NGKEY"),
        }
    }

    #[test]
    fn pagerduty_bodies_match_their_golden_files() {
        check_all("pagerduty", &build_spec());
    }

    #[test]
    fn a_resolution_resolves_with_the_dedup_key_of_its_trigger() {
        let cases = build_cases();
        let trigger = build_body(&build_spec(), &cases[0].1);
        let resolve = build_body(&build_spec(), &cases[1].1);
        assert_eq!(trigger["event_action"], "trigger");
        assert_eq!(resolve["event_action"], "resolve");
        assert_eq!(trigger["dedup_key"], resolve["dedup_key"]);
        assert_eq!(resolve["routing_key"], "R0UT1NGKEY");
    }

    #[test]
    fn a_long_subject_gets_a_stable_dedup_key_within_the_limit() {
        let long = format!("{}:RVM1:1", "r".repeat(300));
        let k = dedup_key(&long);
        assert!(k.len() <= DEDUP_KEY_MAX, "{}", k.len());
        assert_eq!(k, dedup_key(&long));
        assert_ne!(k, dedup_key(&format!("{}:RVM2:1", "r".repeat(300))));
        assert_eq!(dedup_key("cpu:rvm1:1"), "cpu:rvm1:1");
    }
}
