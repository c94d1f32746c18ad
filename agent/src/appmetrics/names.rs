//! Application metric names: `[A-Za-z0-9_.:-]{1,64}`, checked the same way for pushes, scrapes
//! and the `[app] names` allow-list.

/// Longest application metric name.
pub const NAME_MAX_LEN: usize = 64;

/// Checks `[A-Za-z0-9_.:-]{1,64}`; the error says what is wrong.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > NAME_MAX_LEN {
        return Err(format!(
            "{:?} is {} bytes long, at most {NAME_MAX_LEN} are allowed",
            shorten(name),
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|c| !is_name_char(*c)) {
        return Err(format!(
            "{:?} has the character {c:?}, outside [A-Za-z0-9_.:-]",
            shorten(name)
        ));
    }
    Ok(())
}

pub(super) fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')
}

/// At most 80 characters of something quoted in an error.
pub(super) fn shorten(s: &str) -> String {
    s.chars().take(80).collect()
}
