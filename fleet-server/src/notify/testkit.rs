//! Test helpers of notifications: a `[notify]` section from TOML, a notification, and a
//! routing table with three routes.

use common::Severity;
use serde::Deserialize;

use super::config::NotifySection;
use super::notification::{Notification, Source};

pub(super) fn build_section(text: &str) -> NotifySection {
    #[derive(Deserialize)]
    struct Wrap {
        notify: NotifySection,
    }
    toml::from_str::<Wrap>(text).unwrap().notify
}

pub(super) fn build_notification(severity: Severity, labels: &[(&str, &str)]) -> Notification {
    Notification {
        id: "a/firing".into(),
        source: Source::Alert,
        event: "firing".into(),
        severity,
        at_ms: 0,
        title: String::new(),
        text: String::new(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        alert: None,
        incident: None,
    }
}

pub(super) const ROUTES: &str = r#"
[notify.default]
channels = ["log"]
[[notify.routes]]
name = "hardware"
match = { team = "hardware" }
channels = ["mail"]
[[notify.routes]]
name = "pager"
min_severity = "critical"
channels = ["hook", "mail"]
per_minute = 2
[notify.channels.hook]
type = "webhook"
url = "http://127.0.0.1:9/hook"
[notify.channels.mail]
type = "email"
smtp = "127.0.0.1:25"
from = "fleet@example.com"
to = ["ops@example.com"]
"#;
