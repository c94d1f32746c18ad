//! Names of things on the machine that the agent watches and may restart: systemd units,
//! processes, network interfaces and cameras. `[health]` watches them, `[recovery]` restarts them, and
//! both validate them here, so a bad or hostile name is refused the same way everywhere.

/// The kernel keeps at most this many bytes of a process name (`/proc/PID/comm`).
pub const PROCESS_NAME_MAX: usize = 15;

/// A name refused by one of the checks below; each variant carries the offending name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{0:?} is not a systemd unit name (letters, digits, :_.@\\- ; not starting with -)")]
    Unit(String),
    #[error("{0:?} is not a process name (letters, digits, ._+- ; not starting with -)")]
    Process(String),
    #[error("{name:?} is longer than {PROCESS_NAME_MAX} bytes; the kernel keeps only {kept:?}")]
    ProcessTooLong { name: String, kept: String },
    #[error("{0:?} is not an interface name (1-15 of letters, digits, ._-)")]
    Interface(String),
    #[error("{0:?} is not a camera name (1-32 of letters, digits, _-; not starting with -)")]
    Camera(String),
}

/// Longest camera name (the vision service's `camera` label).
pub const CAMERA_NAME_MAX: usize = 32;

/// A camera name as the vision service labels it: `[A-Za-z0-9_-]{1,32}`, not starting with
/// `-` (it may be passed to the camera reset command as an argument).
pub fn valid_camera_name(name: &str) -> Result<(), NameError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-');
    if name.is_empty() || name.len() > CAMERA_NAME_MAX || name.starts_with('-') || !name.chars().all(ok_char)
    {
        return Err(NameError::Camera(name.into()));
    }
    Ok(())
}

/// A systemd unit name: `[A-Za-z0-9:_.@\-]`, at most 256 bytes, not starting with `-`.
pub fn valid_unit_name(unit: &str) -> Result<(), NameError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '@' | '-' | '\\');
    if unit.is_empty() || unit.len() > 256 || unit.starts_with('-') || !unit.chars().all(ok_char) {
        return Err(NameError::Unit(unit.into()));
    }
    Ok(())
}

/// A process name as the kernel keeps it: 1 to 15 bytes of `[A-Za-z0-9._+-]`, not starting
/// with `-`.
pub fn valid_process_name(name: &str) -> Result<(), NameError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-');
    if name.is_empty() || name.starts_with('-') || !name.chars().all(ok_char) {
        return Err(NameError::Process(name.into()));
    }
    if name.len() > PROCESS_NAME_MAX {
        return Err(NameError::ProcessTooLong {
            name: name.into(),
            kept: name[..PROCESS_NAME_MAX].into(),
        });
    }
    Ok(())
}

/// A network interface name: 1 to 15 bytes of `[A-Za-z0-9._-]`, not starting with `-`.
pub fn valid_interface_name(name: &str) -> Result<(), NameError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty()
        || name.len() > 15
        || name.starts_with('-')
        || name == "."
        || name == ".."
        || !name.chars().all(ok_char)
    {
        return Err(NameError::Interface(name.into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_name_is_quoted_in_its_error() {
        assert_eq!(valid_unit_name("-x"), Err(NameError::Unit("-x".into())));
        assert_eq!(
            valid_unit_name("a b").unwrap_err().to_string(),
            r#""a b" is not a systemd unit name (letters, digits, :_.@\- ; not starting with -)"#
        );
        assert_eq!(
            valid_process_name("abcdefghijklmnopq").unwrap_err().to_string(),
            r#""abcdefghijklmnopq" is longer than 15 bytes; the kernel keeps only "abcdefghijklmno""#
        );
        assert_eq!(valid_interface_name(".."), Err(NameError::Interface("..".into())));
    }

    #[test]
    fn camera_names_are_short_plain_words() {
        for ok in ["front", "chamber_2", "cam-1"] {
            assert_eq!(valid_camera_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "-rf", "a.b", "a b", "../x", &"c".repeat(CAMERA_NAME_MAX + 1)] {
            assert_eq!(
                valid_camera_name(bad),
                Err(NameError::Camera(bad.into())),
                "{bad}"
            );
        }
    }
}
