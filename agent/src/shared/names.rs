//! Names of things on the machine that the agent watches and may restart: systemd units,
//! processes and network interfaces. `[health]` watches them, `[recovery]` restarts them, and
//! both validate them here, so a bad or hostile name is refused the same way everywhere.

/// The kernel keeps at most this many bytes of a process name (`/proc/PID/comm`).
pub const PROCESS_NAME_MAX: usize = 15;

/// A systemd unit name: `[A-Za-z0-9:_.@\-]`, at most 256 bytes, not starting with `-`.
pub fn valid_unit_name(unit: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '@' | '-' | '\\');
    if unit.is_empty() || unit.len() > 256 || unit.starts_with('-') || !unit.chars().all(ok_char) {
        return Err(format!(
            "{unit:?} is not a systemd unit name (letters, digits, :_.@\\- ; not starting with -)"
        ));
    }
    Ok(())
}

/// A process name as the kernel keeps it: 1 to 15 bytes of `[A-Za-z0-9._+-]`, not starting
/// with `-`.
pub fn valid_process_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-');
    if name.is_empty() || name.starts_with('-') || !name.chars().all(ok_char) {
        return Err(format!(
            "{name:?} is not a process name (letters, digits, ._+- ; not starting with -)"
        ));
    }
    if name.len() > PROCESS_NAME_MAX {
        return Err(format!(
            "{name:?} is longer than {PROCESS_NAME_MAX} bytes; the kernel keeps only {:?}",
            &name[..PROCESS_NAME_MAX]
        ));
    }
    Ok(())
}

/// A network interface name: 1 to 15 bytes of `[A-Za-z0-9._-]`, not starting with `-`.
pub fn valid_interface_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty()
        || name.len() > 15
        || name.starts_with('-')
        || name == "."
        || name == ".."
        || !name.chars().all(ok_char)
    {
        return Err(format!(
            "{name:?} is not an interface name (1-15 of letters, digits, ._-)"
        ));
    }
    Ok(())
}
