//! Any process's memory as the kernel accounts it, read from `/proc/PID`: `status` (VmRSS,
//! RssAnon, RssFile), `smaps_rollup` (PSS, anonymous pages) and `smaps` (per mapping), and the
//! working set: the pages a process references within a window after `clear_refs`.
//!
//! The measures answer different questions. RSS counts every resident page mapped, including
//! clean pages of the binary and its libraries that the kernel may drop at any time and read
//! back on the next touch; PSS divides shared pages among the processes mapping them. RssAnon
//! is private memory (heap, stacks, written data) that only swap can take away. The working
//! set counts the pages, anonymous or file, the process actually touched within the window:
//! what it needs resident to run without faulting.
//!
//! Parsing is pure (the `parse` functions take the file's text) so it is tested on fixtures;
//! only the `of`/`read`/`clear_refs` functions touch `/proc`. Sizes are bytes.

use std::path::PathBuf;

/// Reading or parsing a `/proc/PID` file failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcfsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{file}: field {field} is missing")]
    Missing { file: &'static str, field: &'static str },
    #[error("{file}: field {field}: {value:?} is not a size in kB")]
    BadSize {
        file: &'static str,
        field: String,
        value: String,
    },
    #[error("smaps: line {line}: {text:?} is neither a mapping header nor a field")]
    BadLine { line: usize, text: String },
}

/// The memory lines of `/proc/PID/status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Status {
    /// `VmRSS`: every resident page mapped.
    pub rss: u64,
    /// `RssAnon`: resident private anonymous pages (heap, stacks, written data).
    pub rss_anon: u64,
    /// `RssFile`: resident pages of mapped files (binary, libraries).
    pub rss_file: u64,
}

impl Status {
    pub fn parse(text: &str) -> Result<Status, ProcfsError> {
        const FILE: &str = "status";
        let get = |field: &'static str| -> Result<u64, ProcfsError> {
            kib_field(FILE, text, field)?.ok_or(ProcfsError::Missing { file: FILE, field })
        };
        Ok(Status {
            rss: get("VmRSS")?,
            rss_anon: get("RssAnon")?,
            rss_file: get("RssFile")?,
        })
    }

    pub fn of(pid: u32) -> Result<Status, ProcfsError> {
        Status::parse(&read(pid, "status")?)
    }
}

/// The totals of `/proc/PID/smaps_rollup`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rollup {
    pub rss: u64,
    /// Proportional set size: shared pages divided among the processes that map them.
    pub pss: u64,
    /// Resident anonymous pages (what `RssAnon` counts, summed over the mappings).
    pub anonymous: u64,
    /// Pages referenced since the last `clear_refs` (or since they were mapped).
    pub referenced: u64,
}

impl Rollup {
    pub fn parse(text: &str) -> Result<Rollup, ProcfsError> {
        const FILE: &str = "smaps_rollup";
        let get = |field: &'static str| -> Result<u64, ProcfsError> {
            kib_field(FILE, text, field)?.ok_or(ProcfsError::Missing { file: FILE, field })
        };
        Ok(Rollup {
            rss: get("Rss")?,
            pss: get("Pss")?,
            anonymous: get("Anonymous")?,
            referenced: get("Referenced")?,
        })
    }

    pub fn of(pid: u32) -> Result<Rollup, ProcfsError> {
        Rollup::parse(&read(pid, "smaps_rollup")?)
    }
}

/// One mapping of `/proc/PID/smaps`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapping {
    /// Its first address and the address after its last byte.
    pub start: u64,
    pub end: u64,
    /// The mapped file's path, a kernel name such as `[heap]` or `[stack]`, or empty for an
    /// anonymous mapping (thread stacks, allocator arenas, `.bss`).
    pub name: String,
    /// `rwxp`/`rwxs` as the header shows them.
    pub perms: String,
    pub size: u64,
    pub rss: u64,
    pub anonymous: u64,
    pub referenced: u64,
}

impl Mapping {
    /// The file name of the mapped path (`libc.so.6`), the kernel name, or empty.
    pub fn short_name(&self) -> &str {
        let name = self.name.strip_suffix(" (deleted)").unwrap_or(&self.name);
        name.rsplit('/').next().unwrap_or(name)
    }
}

/// Parses `/proc/PID/smaps`: one [`Mapping`] per header line, with the size fields that
/// follow it. Fields other than Size, Rss, Anonymous and Referenced are skipped.
pub fn parse_smaps(text: &str) -> Result<Vec<Mapping>, ProcfsError> {
    let mut out: Vec<Mapping> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(m) = parse_header(line) {
            out.push(m);
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(ProcfsError::BadLine {
                line: i + 1,
                text: line.into(),
            });
        };
        let Some(m) = out.last_mut() else {
            return Err(ProcfsError::BadLine {
                line: i + 1,
                text: line.into(),
            });
        };
        let slot = match key {
            "Size" => &mut m.size,
            "Rss" => &mut m.rss,
            "Anonymous" => &mut m.anonymous,
            "Referenced" => &mut m.referenced,
            _ => continue,
        };
        *slot = kib_value("smaps", key, value)?;
    }
    Ok(out)
}

/// The mappings of a process.
pub fn smaps(pid: u32) -> Result<Vec<Mapping>, ProcfsError> {
    parse_smaps(&read(pid, "smaps")?)
}

/// Clears the referenced bits of every page of a process (`echo 1 > /proc/PID/clear_refs`):
/// from now on `Referenced:` counts only pages the process touches. Needs the right to
/// write that file (the process's owner or root).
pub fn clear_refs(pid: u32) -> Result<(), ProcfsError> {
    let path = PathBuf::from(format!("/proc/{pid}/clear_refs"));
    std::fs::write(&path, "1").map_err(|source| ProcfsError::Write { path, source })
}

/// The working set: bytes of every page referenced since the last [`clear_refs`], the sum of
/// `Referenced:` over the mappings.
pub fn working_set(mappings: &[Mapping]) -> u64 {
    mappings.iter().map(|m| m.referenced).sum()
}

fn read(pid: u32, file: &str) -> Result<String, ProcfsError> {
    let path = PathBuf::from(format!("/proc/{pid}/{file}"));
    std::fs::read_to_string(&path).map_err(|source| ProcfsError::Read { path, source })
}

/// `start-end perms offset dev inode [name]`, or None when the line is not a header.
fn parse_header(line: &str) -> Option<Mapping> {
    let mut rest = line;
    let mut fields = [""; 5];
    for f in &mut fields {
        rest = rest.trim_start_matches(' ');
        let end = rest.find(' ').unwrap_or(rest.len());
        *f = &rest[..end];
        rest = &rest[end..];
    }
    let [range, perms, offset, dev, inode] = fields;
    let (start, end) = range.split_once('-')?;
    let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !(hex(offset) && perms.len() == 4 && dev.contains(':')) {
        return None;
    }
    inode.parse::<u64>().ok()?;
    Some(Mapping {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        name: rest.trim().to_string(),
        perms: perms.into(),
        ..Mapping::default()
    })
}

/// `Field:   1234 kB` in bytes; None when the field is absent.
fn kib_field(file: &'static str, text: &str, field: &'static str) -> Result<Option<u64>, ProcfsError> {
    text.lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| *k == field))
        .map(|(_, v)| kib_value(file, field, v))
        .transpose()
}

fn kib_value(file: &'static str, field: &str, value: &str) -> Result<u64, ProcfsError> {
    let bad = || ProcfsError::BadSize {
        file,
        field: field.into(),
        value: value.trim().into(),
    };
    let mut words = value.split_whitespace();
    let n: u64 = words.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    match (words.next(), words.next()) {
        (Some("kB"), None) => n.checked_mul(1024).ok_or_else(bad),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = include_str!("../fixtures/smaps.txt");
    const ROLLUP: &str = include_str!("../fixtures/smaps_rollup.txt");
    const STATUS: &str = include_str!("../fixtures/status.txt");
    const KIB: u64 = 1024;

    #[test]
    fn status_gives_rss_and_its_anonymous_and_file_parts_in_bytes() {
        let s = Status::parse(STATUS).unwrap();
        assert_eq!(s.rss, 1708 * KIB);
        assert_eq!(s.rss_anon, 108 * KIB);
        assert_eq!(s.rss_file, 1600 * KIB);
        assert_eq!(s.rss, s.rss_anon + s.rss_file);
    }

    #[test]
    fn a_status_without_rss_anon_names_the_field() {
        let text = STATUS.replace("RssAnon:", "RssAnonymous:");
        let err = Status::parse(&text).unwrap_err();
        assert!(
            matches!(err, ProcfsError::Missing { field: "RssAnon", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("RssAnon"), "{err}");
    }

    #[test]
    fn rollup_gives_pss_anonymous_and_referenced() {
        let r = Rollup::parse(ROLLUP).unwrap();
        assert_eq!(
            r,
            Rollup {
                rss: 1708 * KIB,
                pss: 264 * KIB,
                anonymous: 108 * KIB,
                referenced: 1708 * KIB,
            }
        );
    }

    #[test]
    fn pss_dirty_is_not_taken_for_pss() {
        // Pss_Dirty, Pss_Anon and Pss_File share the prefix; only the exact key counts
        let text = "Rss: 10 kB\nPss_Dirty: 1 kB\nPss: 7 kB\nAnonymous: 2 kB\nReferenced: 9 kB\n";
        assert_eq!(Rollup::parse(text).unwrap().pss, 7 * KIB);
    }

    #[test]
    fn a_size_that_is_not_in_kb_is_an_error_naming_the_field() {
        let text = ROLLUP.replace("Pss:                 264 kB", "Pss: 264 pages");
        let err = Rollup::parse(&text).unwrap_err();
        assert!(
            matches!(&err, ProcfsError::BadSize { field, .. } if field == "Pss"),
            "{err}"
        );
        let text = ROLLUP.replace("Pss:                 264 kB", "Pss: lots kB");
        assert!(Rollup::parse(&text).is_err());
    }

    #[test]
    fn smaps_has_one_mapping_per_header_with_its_sizes() {
        let maps = parse_smaps(SMAPS).unwrap();
        let names: Vec<&str> = maps.iter().map(|m| m.short_name()).collect();
        assert_eq!(
            names,
            [
                "sleep",
                "sleep",
                "sleep",
                "[heap]",
                "",
                "libc.so.6",
                "libc.so.6",
                "libc.so.6",
                "[vdso]",
                "[stack]"
            ]
        );
        let code = &maps[1];
        assert_eq!(code.perms, "r-xp");
        assert_eq!(code.name, "/usr/bin/sleep");
        assert_eq!((code.start, code.end), (0x55d86811d000, 0x55d868122000));
        assert_eq!(code.end - code.start, code.size);
        assert_eq!(
            (code.size, code.rss, code.referenced),
            (20 * KIB, 20 * KIB, 20 * KIB)
        );
        let anon = &maps[4];
        assert_eq!(anon.name, "");
        assert_eq!(anon.anonymous, anon.rss);
        // the fixture's totals, summed by hand with awk
        assert_eq!(working_set(&maps), 1016 * KIB);
        assert_eq!(maps.iter().map(|m| m.anonymous).sum::<u64>(), 48 * KIB);
    }

    #[test]
    fn a_mapped_path_may_hold_spaces_and_be_deleted() {
        let text = "7f00-7f10 r-xp 00000000 fe:00 12 /opt/my app/bin/x (deleted)\nReferenced: 4 kB\n";
        let maps = parse_smaps(text).unwrap();
        assert_eq!(maps[0].name, "/opt/my app/bin/x (deleted)");
        assert_eq!(maps[0].short_name(), "x");
        assert_eq!(maps[0].referenced, 4 * KIB);
    }

    #[test]
    fn a_field_before_any_header_is_an_error_with_its_line() {
        let err = parse_smaps("Rss: 4 kB\n").unwrap_err();
        assert!(matches!(err, ProcfsError::BadLine { line: 1, .. }), "{err}");
        let err = parse_smaps("7f00-7f10 r-xp 00000000 fe:00 12 /x\ngarbage\n").unwrap_err();
        assert!(matches!(err, ProcfsError::BadLine { line: 2, .. }), "{err}");
    }

    #[test]
    fn clear_refs_then_referenced_counts_only_what_was_touched_since() {
        // a child that sleeps touches almost nothing: after clear_refs its working set is a
        // fraction of its RSS
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        // wait for the exec to finish: before clear_refs every resident page counts as referenced
        while std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap()
            .trim()
            != "sleep"
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // past the dynamic loader and into its sleep
        std::thread::sleep(std::time::Duration::from_millis(200));
        let before = Rollup::of(pid).unwrap();
        clear_refs(pid).unwrap();
        let maps = smaps(pid).unwrap();
        let after = working_set(&maps);
        let _ = child.kill();
        let _ = child.wait();
        assert!(before.referenced > 0);
        assert!(
            after < before.referenced / 2,
            "referenced {} KiB before clear_refs, {} KiB after",
            before.referenced / KIB,
            after / KIB
        );
    }

    #[test]
    fn a_process_that_does_not_exist_is_a_read_error_naming_the_file() {
        // above any pid_max the kernel allows (2^22)
        let err = Status::of(u32::MAX).unwrap_err();
        assert!(matches!(err, ProcfsError::Read { .. }), "{err}");
        assert!(err.to_string().contains("/proc/4294967295/status"), "{err}");
        assert!(matches!(clear_refs(u32::MAX), Err(ProcfsError::Write { .. })));
    }
}
