//! The temp cleaner behind `clean_temp`: removes old regular files in the configured
//! directories, never following a symlink, never crossing a filesystem, never touching a
//! system directory.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Directory depth `clean_temp` descends to.
pub const CLEAN_MAX_DEPTH: usize = 16;
/// Directories `clean_temp` must never be pointed at.
const FORBIDDEN_TEMP_DIRS: [&str; 16] = [
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/opt", "/proc", "/root", "/run", "/sbin", "/sys",
    "/usr", "/var", "/var/lib",
];

/// A `recovery.temp_dirs` entry `clean_temp` refuses; each variant carries the path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TempDirError {
    #[error("{0} is not an absolute path")]
    NotAbsolute(PathBuf),
    #[error("{0} contains ..")]
    ParentDir(PathBuf),
    #[error("{0} is a system directory, not a temp directory")]
    SystemDir(PathBuf),
}

pub(super) fn valid_temp_dir(dir: &Path) -> Result<(), TempDirError> {
    if !dir.is_absolute() {
        return Err(TempDirError::NotAbsolute(dir.into()));
    }
    let normal: PathBuf = dir.components().collect();
    if dir
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(TempDirError::ParentDir(dir.into()));
    }
    if FORBIDDEN_TEMP_DIRS.iter().any(|f| Path::new(f) == normal) {
        return Err(TempDirError::SystemDir(dir.into()));
    }
    Ok(())
}

/// What a temp clean did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanReport {
    pub removed_files: u64,
    pub removed_bytes: u64,
    pub skipped_symlinks: u64,
    /// At most 20.
    pub errors: Vec<String>,
}

impl CleanReport {
    fn error(&mut self, e: String) {
        if self.errors.len() < 20 {
            self.errors.push(e);
        }
    }

    pub fn describe(&self) -> String {
        let mut s = format!(
            "removed {} file(s), {} bytes; left {} symlink(s) alone",
            self.removed_files, self.removed_bytes, self.skipped_symlinks
        );
        if !self.errors.is_empty() {
            s.push_str(&format!("; errors: {}", self.errors.join("; ")));
        }
        s
    }
}

/// Removes regular files whose modification time is older than `max_age` before `now`, in
/// each directory and its subdirectories (to [`CLEAN_MAX_DEPTH`]). Never follows a symlink
/// (symlinks are left alone), never crosses into another filesystem, never removes
/// directories, and re-checks before descending that a directory still resolves inside its
/// root.
pub fn clean_temp_dirs(dirs: &[PathBuf], max_age: Duration, now: SystemTime) -> CleanReport {
    let mut report = CleanReport::default();
    let Some(cutoff) = now.checked_sub(max_age) else {
        return report;
    };
    for dir in dirs {
        if let Err(e) = valid_temp_dir(dir) {
            report.error(e.to_string());
            continue;
        }
        let root = match fs::canonicalize(dir) {
            Ok(r) => r,
            Err(e) => {
                report.error(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        if let Err(e) = valid_temp_dir(&root) {
            report.error(format!("{} resolves to {}: {e}", dir.display(), root.display()));
            continue;
        }
        let dev = match fs::metadata(&root) {
            Ok(m) if m.is_dir() => m.dev(),
            Ok(_) => {
                report.error(format!("{} is not a directory", root.display()));
                continue;
            }
            Err(e) => {
                report.error(format!("{}: {e}", root.display()));
                continue;
            }
        };
        clean_dir(&root, &root, dev, 0, cutoff, &mut report);
    }
    report
}

fn clean_dir(root: &Path, dir: &Path, dev: u64, depth: usize, cutoff: SystemTime, report: &mut CleanReport) {
    if depth > CLEAN_MAX_DEPTH {
        return;
    }
    // a directory swapped for a symlink since we looked would resolve elsewhere
    match fs::canonicalize(dir) {
        Ok(real) if real == dir && real.starts_with(root) => {}
        _ => return,
    }
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            report.error(format!("{}: {e}", dir.display()));
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(_) => continue,
        };
        let ft = meta.file_type();
        if ft.is_symlink() {
            report.skipped_symlinks += 1;
        } else if meta.dev() != dev {
            // a mount point inside the temp dir
        } else if ft.is_dir() {
            clean_dir(root, &path, dev, depth + 1, cutoff, report);
        } else if ft.is_file() && meta.modified().is_ok_and(|m| m < cutoff) {
            // remove_file unlinks the name; it never follows a symlink
            match fs::remove_file(&path) {
                Ok(()) => {
                    report.removed_files += 1;
                    report.removed_bytes += meta.len();
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => report.error(format!("{}: {e}", path.display())),
            }
        }
    }
}
#[cfg(test)]
pub(crate) mod tests {
    use std::fs::OpenOptions;

    use super::*;

    pub(crate) fn set_age(path: &Path, age: Duration) {
        let f = OpenOptions::new().write(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
    }

    #[test]
    fn clean_temp_removes_only_old_files_inside_the_dir_and_does_not_follow_a_symlink_out() {
        let day = Duration::from_secs(86_400);
        let temp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let root = temp.path();
        fs::write(root.join("old.bin"), vec![0u8; 100]).unwrap();
        set_age(&root.join("old.bin"), 2 * day);
        fs::write(root.join("new.bin"), "x").unwrap();
        fs::create_dir(root.join("sub")).unwrap();
        fs::write(root.join("sub/old.txt"), "x").unwrap();
        set_age(&root.join("sub/old.txt"), 2 * day);
        fs::write(outside.path().join("precious"), "keep").unwrap();
        set_age(&outside.path().join("precious"), 2 * day);
        std::os::unix::fs::symlink(outside.path(), root.join("link-dir")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("precious"), root.join("link-file")).unwrap();

        let report = clean_temp_dirs(&[root.to_path_buf()], day, SystemTime::now());
        assert_eq!(report.removed_files, 2, "{report:?}");
        assert_eq!(report.removed_bytes, 101);
        assert_eq!(report.skipped_symlinks, 2);
        assert!(report.errors.is_empty(), "{report:?}");
        assert!(!root.join("old.bin").exists());
        assert!(!root.join("sub/old.txt").exists());
        assert!(root.join("new.bin").exists());
        assert!(root.join("sub").is_dir(), "directories stay");
        assert!(
            outside.path().join("precious").exists(),
            "nothing outside is touched"
        );
        assert!(fs::symlink_metadata(root.join("link-file")).is_ok());
    }

    #[test]
    fn clean_temp_refuses_system_directories_and_reports_missing_ones() {
        let report = clean_temp_dirs(
            &[PathBuf::from("/etc"), PathBuf::from("/nonexistent-rvm-temp")],
            Duration::from_secs(3600),
            SystemTime::now(),
        );
        assert_eq!(report.removed_files, 0);
        assert_eq!(report.errors.len(), 2, "{report:?}");
        assert!(report.errors[0].contains("system directory"));
    }
}
