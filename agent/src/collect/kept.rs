//! A `/proc` or `/sys` file kept open and reread from offset 0 every tick.
//!
//! Opening, reading and closing the per-tick files was about 30 % of the agent's CPU
//! (`perf`, 2026-12-07: path walk, file allocation, close, on every file every second). The
//! kernel regenerates a seq_file's text (`/proc/stat`, `meminfo`, `net/dev`, `diskstats`) and a
//! sysfs attribute on every read from offset 0, so one descriptor serves the agent's life;
//! `pread` needs no seek. The buffer is reused and grows to the file's largest size.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Initial buffer: `/proc/stat` on a 6-core Jetson is about 3 KiB, `meminfo` 1.5 KiB.
const INITIAL: usize = 1024;

#[derive(Debug)]
pub struct KeptFile {
    path: PathBuf,
    file: Option<File>,
    buf: Vec<u8>,
}

impl KeptFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        KeptFile {
            path: path.into(),
            file: None,
            buf: Vec::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's whole current content; None when it cannot be opened or read (it is
    /// reopened at the next call: a file that appears later is found).
    pub fn read(&mut self) -> Option<&[u8]> {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let f = self.file.as_ref()?;
        match read_all_at(f, &mut self.buf) {
            Ok(n) => Some(&self.buf[..n]),
            Err(_) => {
                self.file = None;
                None
            }
        }
    }

    /// The content as text (the files read here are ASCII); None as for [`Self::read`] or
    /// when it is not UTF-8.
    pub fn read_str(&mut self) -> Option<&str> {
        self.read().and_then(|b| std::str::from_utf8(b).ok())
    }
}

/// Reads `f` from offset 0 to its end into `buf` (grown as needed, never shrunk); the length.
fn read_all_at(f: &File, buf: &mut Vec<u8>) -> io::Result<usize> {
    let mut n = 0;
    loop {
        if n == buf.len() {
            let grow = buf.len().max(INITIAL);
            buf.resize(n + grow, 0);
        }
        match f.read_at(&mut buf[n..], n as u64) {
            Ok(0) => return Ok(n),
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_file_sees_each_new_content_of_a_proc_file_and_of_a_rewritten_file() {
        // /proc/self/stat changes between reads (the CPU time and, here, the minor faults of
        // the allocation in between); rereading at offset 0 gives the new text, whole
        let mut f = KeptFile::new("/proc/self/stat");
        let first = f.read_str().unwrap().to_string();
        assert!(first.ends_with('\n') && first.starts_with(&std::process::id().to_string()));
        let _touch: Vec<u8> = vec![1; 8 << 20];
        let second = f.read_str().unwrap().to_string();
        assert!(second.ends_with('\n'));
        let faults = |s: &str| {
            s.rsplit(')')
                .next()
                .unwrap()
                .split_whitespace()
                .nth(7)
                .unwrap()
                .parse::<u64>()
                .unwrap()
        };
        assert!(faults(&second) > faults(&first), "{first} / {second}");
        // a file larger than the first buffer is read whole
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big");
        let text = "x".repeat(5000) + "\n";
        std::fs::write(&p, &text).unwrap();
        let mut k = KeptFile::new(&p);
        assert_eq!(k.read_str(), Some(text.as_str()));
        // rewritten in place (same inode, shorter): the new content only
        std::fs::write(&p, "short\n").unwrap();
        assert_eq!(k.read_str(), Some("short\n"));
        // gone: still read through the open descriptor (the last content), as /proc's files
        // of a live machine never go; a file that never existed is None, and found once made
        let mut missing = KeptFile::new(dir.path().join("later"));
        assert!(missing.read().is_none());
        std::fs::write(dir.path().join("later"), "now\n").unwrap();
        assert_eq!(missing.read_str(), Some("now\n"));
    }
}
