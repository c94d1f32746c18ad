//! Alertmanager's webhook payload (`version: "4"`), so receivers people already run behind an
//! Alertmanager (alertmanager-discord, prometheus-msteams, Karma's webhook, home-made ones)
//! accept the fleet directly. One notification is one group of one alert:
//! - `labels`: the notification's labels plus `alertname` (the rule, or the incident kind),
//!   names made Prometheus-valid (`[a-zA-Z_][a-zA-Z0-9_]*`);
//! - `annotations`: `summary` (the rendered title) and `description` (the rendered text);
//! - `startsAt` when it fired, `endsAt` when it resolved (`0001-01-01T00:00:00Z` while
//!   firing, as Alertmanager sends it);
//! - `fingerprint`: Prometheus' label-set fingerprint (FNV-1a 64 over the sorted labels), so
//!   a firing and its resolution match;
//! - `groupKey` `{}:{alertname="..."}`, `groupLabels` `{alertname}`, `receiver` the channel's
//!   name, `externalURL` and `generatorURL` the server's `public_url` (or empty).

use std::collections::BTreeMap;

use serde_json::json;

use super::Input;
use crate::notify::template::{is_resolution, rfc3339_ms};

/// What Alertmanager sends for an alert that has not ended.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A Prometheus label name: invalid characters become `_`, a leading digit gets a `_` before it.
pub fn label_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Prometheus' `LabelSet.Fingerprint()`: FNV-1a 64 over each name and value (sorted by name),
/// each followed by the separator byte 0xff; printed as 16 hex digits.
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    const OFFSET: u64 = 14_695_981_039_346_656_037;
    const PRIME: u64 = 1_099_511_628_211;
    let mut h = OFFSET;
    let mut add = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    for (k, v) in labels {
        add(k.as_bytes());
        add(&[0xff]);
        add(v.as_bytes());
        add(&[0xff]);
    }
    format!("{h:016x}")
}

pub fn body(input: &Input<'_>) -> serde_json::Value {
    let n = input.notification;
    let alertname = match (&n.alert, &n.incident) {
        (Some(a), _) => a.rule.clone(),
        (None, Some(i)) => i.kind.as_str().to_string(),
        (None, None) => n
            .labels
            .get("rule")
            .cloned()
            .unwrap_or_else(|| "rvm_fleet".into()),
    };
    let mut labels: BTreeMap<String, String> =
        n.labels.iter().map(|(k, v)| (label_name(k), v.clone())).collect();
    labels.insert("alertname".into(), alertname.clone());
    let annotations = BTreeMap::from([
        ("summary".to_string(), input.rendered.title.clone()),
        ("description".to_string(), input.rendered.text.clone()),
    ]);
    let (started_ms, resolved_ms) = match (&n.alert, &n.incident) {
        (Some(a), _) => (a.fired_ms.unwrap_or(a.started_ms), a.resolved_ms),
        (None, Some(i)) => (i.opened_ms, i.resolved_ms),
        (None, None) => (n.at_ms, None),
    };
    let resolved = is_resolution(&n.event);
    let status = if resolved { "resolved" } else { "firing" };
    let ends_at = if resolved {
        rfc3339_ms(resolved_ms.unwrap_or(n.at_ms))
    } else {
        ZERO_TIME.to_string()
    };
    let url = input.public_url.unwrap_or("");
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname={alertname:?}}}"),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": input.channel,
        "groupLabels": {"alertname": alertname},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": url,
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": annotations,
            "startsAt": rfc3339_ms(started_ms),
            "endsAt": ends_at,
            "generatorURL": url,
            "fingerprint": fingerprint(&labels),
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::super::FormatSpec;
    use super::super::testing::{build_body, build_cases, check_all};
    use super::*;

    #[test]
    fn alertmanager_bodies_match_their_golden_files() {
        check_all("alertmanager", &FormatSpec::Alertmanager);
    }

    #[test]
    fn a_firing_and_its_resolution_have_one_fingerprint() {
        let cases = build_cases();
        let f = build_body(&FormatSpec::Alertmanager, &cases[0].1);
        let r = build_body(&FormatSpec::Alertmanager, &cases[1].1);
        assert_eq!(f["alerts"][0]["fingerprint"], r["alerts"][0]["fingerprint"]);
        assert_eq!(
            (f["status"].as_str(), r["status"].as_str()),
            (Some("firing"), Some("resolved"))
        );
        assert_eq!(f["alerts"][0]["endsAt"], ZERO_TIME);
        assert_ne!(r["alerts"][0]["endsAt"], ZERO_TIME);
    }

    #[test]
    fn the_fingerprint_is_prometheus_label_set_fingerprint() {
        // FNV-1a 64 offset basis: Prometheus' fingerprint of the empty label set
        assert_eq!(fingerprint(&BTreeMap::new()), "cbf29ce484222325");
        // prometheus/common model's TestMetricToFingerprint: {name="garland, briggs",
        // fear="love is not enough"} = 5799056148416392346
        let labels = BTreeMap::from([
            ("name".to_string(), "garland, briggs".to_string()),
            ("fear".to_string(), "love is not enough".to_string()),
        ]);
        assert_eq!(
            fingerprint(&labels),
            format!("{:016x}", 5_799_056_148_416_392_346u64)
        );
    }

    #[test]
    fn label_names_are_made_prometheus_valid() {
        assert_eq!(label_name("team"), "team");
        assert_eq!(label_name("app.version"), "app_version");
        assert_eq!(label_name("9lives"), "_9lives");
        assert_eq!(label_name(""), "_");
    }
}
