//! Application metric names: `[A-Za-z0-9_.:-]{1,64}`, checked the same way for pushes, scrapes
//! and the `[app] names` allow-list.

/// Longest application metric name.
pub const NAME_MAX_LEN: usize = 64;

/// An application metric name refused by [`validate_name`]; the name is kept shortened to
/// 80 characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetricNameError {
    #[error("the name is empty")]
    Empty,
    #[error("{name:?} is {len} bytes long, at most {NAME_MAX_LEN} are allowed")]
    TooLong { name: String, len: usize },
    #[error("{name:?} has the character {c:?}, outside [A-Za-z0-9_.:-]")]
    BadChar { name: String, c: char },
}

/// Checks `[A-Za-z0-9_.:-]{1,64}`; the error says what is wrong.
pub fn validate_name(name: &str) -> Result<(), MetricNameError> {
    if name.is_empty() {
        return Err(MetricNameError::Empty);
    }
    if name.len() > NAME_MAX_LEN {
        return Err(MetricNameError::TooLong {
            name: shorten(name),
            len: name.len(),
        });
    }
    if let Some(c) = name.chars().find(|c| !is_name_char(*c)) {
        return Err(MetricNameError::BadChar {
            name: shorten(name),
            c,
        });
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
