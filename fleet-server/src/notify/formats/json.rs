//! The project's own payload, `format = "json"` (the default): version 1, documented in
//! docs/notifications.md with a JSON Schema in docs/notification.schema.json.
//!
//! Version 1 keeps every field of the [`Notification`] (`id`, `source`, `event`, `severity`,
//! `at_ms`, `title`, `text`, `labels`, `alert`, `incident`) as earlier webhooks sent them, and
//! adds `version`, `dedup_key` (stable per alert or incident: pairs a firing with its
//! resolution), `channel`, `at` (RFC 3339) and `message` (the channel's rendered title and
//! text). New fields may be added within a version; a field changing meaning or going away
//! makes version 2.

use serde_json::json;

use super::Input;
use crate::alerts::alert::severity_label;
use crate::notify::notification::Notification;
use crate::notify::template::{rfc3339_ms, subject_id};

/// The `version` of this payload.
pub const VERSION: u32 = 1;

pub fn body(input: &Input<'_>) -> serde_json::Value {
    let n: &Notification = input.notification;
    json!({
        "version": VERSION,
        "id": n.id,
        "dedup_key": subject_id(n),
        "channel": input.channel,
        "source": n.source,
        "event": n.event,
        "severity": severity_label(n.severity),
        "at": rfc3339_ms(n.at_ms),
        "at_ms": n.at_ms,
        "title": n.title,
        "text": n.text,
        "message": {
            "title": input.rendered.title,
            "text": input.rendered.text,
        },
        "labels": n.labels,
        "alert": n.alert,
        "incident": n.incident,
    })
}

#[cfg(test)]
mod tests {
    use super::super::FormatSpec;
    use super::super::testing::{build_body, build_cases, check_all};

    #[test]
    fn json_bodies_match_their_golden_files() {
        check_all("json", &FormatSpec::Json);
    }

    #[test]
    fn json_keeps_the_fields_earlier_webhooks_sent() {
        for (_, n) in build_cases() {
            let old = serde_json::to_value(&n).unwrap();
            let new = build_body(&FormatSpec::Json, &n);
            for (k, v) in old.as_object().unwrap() {
                assert_eq!(&new[k], v, "{k}");
            }
            assert_eq!(new["version"], 1);
        }
    }

    #[test]
    fn a_firing_and_its_resolution_share_the_dedup_key() {
        let cases = build_cases();
        let key = |i: usize| build_body(&FormatSpec::Json, &cases[i].1)["dedup_key"].clone();
        assert_eq!(key(0), key(1));
        assert_eq!(key(0), "notify_test:RVMTEST01:1");
        assert_eq!(key(2), "site_outage-1");
    }
}
