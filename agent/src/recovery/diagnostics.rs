//! The diagnostics writer behind `collect_diagnostics`: a private file of system facts and
//! journal lines, the newest few kept.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::shared::names::valid_unit_name;
use crate::shared::subprocess::run_command;

/// Longest each diagnostics command may run.
pub const DIAGNOSTICS_COMMAND_TIMEOUT: Duration = Duration::from_secs(15);
/// Bytes kept of each diagnostics command's output.
pub const DIAGNOSTICS_SECTION_MAX: usize = 256 * 1024;
/// Journal lines per unit in a diagnostics file.
pub const DIAGNOSTICS_JOURNAL_LINES: u32 = 200;
/// Diagnostics files kept; older ones are removed when a new one is written.
pub const MAX_DIAGNOSTICS_FILES: usize = 10;

/// Why no diagnostics file was written; each variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum DiagnosticsError {
    #[error("cannot create {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("cannot find a free file name in {0}")]
    NoFreeName(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// Writes `uname -a`, `uptime`, `df -h`, `free -m` and the last journal lines of each unit to
/// a new file `diag-<ms>.txt` (mode 0600) in `dir`, keeps the newest
/// [`MAX_DIAGNOSTICS_FILES`], and returns the file's path. A command that is missing or fails
/// is noted in its section; the file is written anyway.
pub fn write_diagnostics(
    dir: &Path,
    journal_units: &[String],
    now_ms: i64,
) -> Result<PathBuf, DiagnosticsError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| DiagnosticsError::Create {
            path: dir.into(),
            source,
        })?;
    let lines = DIAGNOSTICS_JOURNAL_LINES.to_string();
    let mut commands: Vec<(String, Vec<String>)> = vec![
        ("uname".into(), vec!["-a".into()]),
        ("uptime".into(), vec![]),
        ("df".into(), vec!["-h".into()]),
        ("free".into(), vec!["-m".into()]),
    ];
    for unit in journal_units.iter().filter(|u| valid_unit_name(u).is_ok()) {
        commands.push((
            "journalctl".into(),
            vec![
                "-u".into(),
                unit.clone(),
                "-n".into(),
                lines.clone(),
                "--no-pager".into(),
            ],
        ));
    }
    let mut text = format!("rvm-agent diagnostics at {now_ms} ms since the epoch\n");
    for (program, args) in &commands {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = run_command(
            program,
            &args,
            DIAGNOSTICS_COMMAND_TIMEOUT,
            DIAGNOSTICS_SECTION_MAX,
        );
        let header: Vec<&str> = std::iter::once(program.as_str())
            .chain(args.iter().copied())
            .collect();
        text.push_str(&format!("\n== {} ==\n{}\n", header.join(" "), run.text()));
    }
    let mut file = None;
    for n in 0..10 {
        let name = match n {
            0 => format!("diag-{now_ms:013}.txt"),
            n => format!("diag-{now_ms:013}-{n}.txt"),
        };
        let path = dir.join(name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => {
                file = Some((f, path));
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(DiagnosticsError::Create { path, source }),
        }
    }
    let (mut f, path) = file.ok_or_else(|| DiagnosticsError::NoFreeName(dir.into()))?;
    if let Err(source) = f.write_all(text.as_bytes()).and_then(|()| f.sync_all()) {
        return Err(DiagnosticsError::Write { path, source });
    }
    prune_diagnostics(dir);
    Ok(path)
}

fn prune_diagnostics(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("diag-") && n.ends_with(".txt"))
        .collect();
    names.sort();
    let excess = names.len().saturating_sub(MAX_DIAGNOSTICS_FILES);
    for name in &names[..excess] {
        if let Err(e) = fs::remove_file(dir.join(name)) {
            tracing::warn!(error = %e, file = %name, "old diagnostics file not removed");
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagnostics_are_written_to_a_private_file_and_old_ones_pruned() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let diag = dir.path().join("diag");
        for i in 0..MAX_DIAGNOSTICS_FILES {
            let d = diag.join(format!("diag-{i:013}.txt"));
            fs::create_dir_all(&diag).unwrap();
            fs::write(d, "old").unwrap();
        }
        let path = write_diagnostics(&diag, &["rvm-test-none.service".into()], 1_700_000_000_000).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        for section in ["== uname -a ==", "== uptime ==", "== df -h ==", "== free -m =="] {
            assert!(text.contains(section), "{section} missing from {text}");
        }
        assert!(text.contains("== journalctl -u rvm-test-none.service -n 200 --no-pager =="));
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::read_dir(&diag).unwrap().count(), MAX_DIAGNOSTICS_FILES);
        assert!(
            !diag.join(format!("diag-{:013}.txt", 0)).exists(),
            "the oldest went"
        );
    }
}
