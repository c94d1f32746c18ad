//! Microsoft Teams: an Adaptive Card (schema 1.2) inside a `message` with one attachment of
//! type `application/vnd.microsoft.card.adaptive`, the shape both Teams incoming webhooks and
//! the Workflows "post to a channel when a webhook request is received" template accept. The
//! title is a coloured bold TextBlock (red for critical, amber for warning, green when
//! resolved), the text one TextBlock a line (a single `\n` inside a TextBlock is not a line
//! break in Teams' markdown), then facts; with a `public_url`, a button opens the server.

use serde_json::json;

use super::{Input, truncate};
use crate::alerts::alert::severity_label;
use crate::notify::template::{is_resolution, subject_id};
use common::Severity;

/// Adaptive Card schema version used; Teams renders up to 1.5, 1.2 is what its docs show.
pub const CARD_VERSION: &str = "1.2";
/// Lines of text shown; more are cut (Teams refuses payloads over about 28 KB).
pub const MAX_LINES: usize = 40;
/// Characters of one line.
pub const LINE_MAX: usize = 1000;

pub fn body(input: &Input<'_>) -> serde_json::Value {
    let n = input.notification;
    let r = input.rendered;
    let color = if is_resolution(&n.event) {
        "Good"
    } else {
        match n.severity {
            Severity::Critical => "Attention",
            Severity::Warning => "Warning",
            Severity::Info => "Default",
        }
    };
    let mut card_body = vec![json!({
        "type": "TextBlock",
        "text": truncate(&r.title, LINE_MAX),
        "weight": "Bolder",
        "size": "Medium",
        "color": color,
        "wrap": true,
    })];
    for (i, line) in r.text.lines().take(MAX_LINES).enumerate() {
        card_body.push(json!({
            "type": "TextBlock",
            "text": truncate(line, LINE_MAX),
            "wrap": true,
            "spacing": if i == 0 { "Medium" } else { "None" },
        }));
    }
    let mut facts = vec![
        json!({"title": "Severity", "value": severity_label(n.severity)}),
        json!({"title": "Event", "value": n.event}),
    ];
    if let Some(a) = &n.alert {
        facts.push(json!({"title": "Machine", "value": a.device.as_str()}));
    }
    if let Some(site) = n.labels.get("site") {
        facts.push(json!({"title": "Site", "value": site}));
    }
    facts.push(json!({"title": "Id", "value": subject_id(n)}));
    card_body.push(json!({"type": "FactSet", "facts": facts}));
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "msteams": {"width": "Full"},
        "body": card_body,
    });
    if let Some(url) = input.public_url {
        card["actions"] = json!([{"type": "Action.OpenUrl", "title": "Open RVM Fleet", "url": url}]);
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::super::FormatSpec;
    use super::super::testing::{build_body, build_cases, check_all};

    #[test]
    fn teams_bodies_match_their_golden_files() {
        check_all("teams", &FormatSpec::Teams);
    }

    #[test]
    fn a_resolution_is_green_and_a_firing_warning_amber() {
        let cases = build_cases();
        let color = |i: usize| {
            build_body(&FormatSpec::Teams, &cases[i].1)["attachments"][0]["content"]["body"][0]["color"]
                .clone()
        };
        assert_eq!(color(0), "Warning");
        assert_eq!(color(1), "Good");
        assert_eq!(color(2), "Attention", "a site outage is critical");
    }
}
