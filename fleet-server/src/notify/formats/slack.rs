//! Slack incoming webhooks: `text` (the fallback shown in notifications) and `blocks` (a
//! header with the title, a `mrkdwn` section with the text, a context line). Block limits:
//! header 150 characters, section 3,000 (Slack refuses longer ones).

use serde_json::json;

use super::{Input, truncate};
use crate::alerts::alert::severity_label;
use crate::notify::template::{slack_escape, subject_id};

/// Slack's limit for a header block's text.
pub const HEADER_MAX: usize = 150;
/// Slack's limit for a section block's text.
pub const SECTION_MAX: usize = 3000;

pub fn body(input: &Input<'_>) -> serde_json::Value {
    let n = input.notification;
    let r = input.rendered;
    let context = format!(
        "*{}* · {} · {}",
        severity_label(n.severity),
        slack_escape(&n.event),
        slack_escape(subject_id(n))
    );
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&r.title, HEADER_MAX), "emoji": true}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": truncate(&r.text, SECTION_MAX)}}),
        json!({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]}),
    ];
    if r.text.is_empty() {
        // Slack refuses a section with empty text.
        blocks.remove(1);
    }
    json!({
        "text": truncate(&r.title, SECTION_MAX),
        "blocks": blocks,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{build_cases, build_rendered, check_all};
    use super::super::{Format, FormatSpec, Input};
    use super::*;

    #[test]
    fn slack_bodies_match_their_golden_files() {
        check_all("slack", &FormatSpec::Slack);
    }

    #[test]
    fn long_text_is_cut_to_slack_block_limits() {
        let (_, n) = build_cases().remove(0);
        let mut r = build_rendered(Format::Slack, &n);
        r.title = "t".repeat(500);
        r.text = "x".repeat(5000);
        let b = body(&Input {
            notification: &n,
            rendered: &r,
            channel: "ops",
            public_url: None,
        });
        assert_eq!(
            b["blocks"][0]["text"]["text"].as_str().unwrap().chars().count(),
            HEADER_MAX
        );
        assert_eq!(
            b["blocks"][1]["text"]["text"].as_str().unwrap().chars().count(),
            SECTION_MAX
        );
    }
}
