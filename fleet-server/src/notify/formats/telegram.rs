//! Telegram Bot API `sendMessage` (`POST https://api.telegram.org/bot<token>/sendMessage`,
//! the token in the channel's `url`): `chat_id`, `text` in HTML parse mode (the templates
//! escape for HTML), link previews off. The title is bold, then a blank line and the text, at
//! most 4,096 characters counted before entity parsing (Telegram counts after it, so this stays
//! within its limit); the cut never splits an HTML entity.

use serde_json::json;

use super::{Input, truncate};

/// Telegram's limit for a message's text.
pub const TEXT_MAX: usize = 4096;

/// `chat_id` as Telegram takes it: an integer when it is one, else the `@channel` string.
fn chat_id_value(chat_id: &str) -> serde_json::Value {
    match chat_id.parse::<i64>() {
        Ok(n) => json!(n),
        Err(_) => json!(chat_id),
    }
}

/// [`truncate`], backing off so that no `&...;` entity is cut in half.
fn truncate_html(s: &str, max: usize) -> String {
    let cut = truncate(s, max);
    if cut.len() == s.len() {
        return cut;
    }
    let body = cut.trim_end_matches('…');
    match (body.rfind('&'), body.rfind(';')) {
        (Some(amp), semi) if semi.is_none_or(|semi| semi < amp) => format!("{}…", &body[..amp]),
        _ => cut,
    }
}

pub fn body(chat_id: &str, input: &Input<'_>) -> serde_json::Value {
    let r = input.rendered;
    // the title is short; the text takes what is left
    let title = truncate_html(&r.title, TEXT_MAX / 4);
    let room = TEXT_MAX - title.chars().count() - "<b></b>\n\n".len();
    let text = if r.text.is_empty() {
        format!("<b>{title}</b>")
    } else {
        format!("<b>{title}</b>\n\n{}", truncate_html(&r.text, room))
    };
    json!({
        "chat_id": chat_id_value(chat_id),
        "text": text,
        "parse_mode": "HTML",
        "link_preview_options": {"is_disabled": true},
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{build_cases, build_rendered, check_all};
    use super::super::{Format, FormatSpec};
    use super::*;

    #[test]
    fn telegram_bodies_match_their_golden_files() {
        check_all(
            "telegram",
            &FormatSpec::Telegram {
                chat_id: "-1001234567890".into(),
            },
        );
    }

    #[test]
    fn a_channel_name_chat_id_stays_a_string() {
        assert_eq!(chat_id_value("@rvm_ops"), json!("@rvm_ops"));
        assert_eq!(chat_id_value("42"), json!(42));
    }

    #[test]
    fn long_text_is_cut_to_the_limit_without_splitting_an_entity() {
        let (_, n) = build_cases().remove(0);
        let mut r = build_rendered(Format::Telegram, &n);
        r.text = "&amp;".repeat(2000);
        let b = body(
            "1",
            &Input {
                notification: &n,
                rendered: &r,
                channel: "ops",
                public_url: None,
            },
        );
        let text = b["text"].as_str().unwrap();
        assert!(text.chars().count() <= TEXT_MAX, "{}", text.chars().count());
        assert!(text.ends_with("&amp;…"), "{}", &text[text.len() - 20..]);
        assert_eq!(truncate_html("ab&amp;cd", 5), "ab…");
    }
}
