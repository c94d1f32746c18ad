//! The audit log: who asked what, when, why, and the outcome (commands, acknowledgements,
//! silences), one JSON object per entry, append-only. Written by the alerts and commands
//! actors (off their threads), read by `GET /api/v1/audit`.
//!
//! [`AuditLog`] is the seam: [`AuditFile`] appends JSON lines to `DATA_DIR/audit.log` (with
//! the sled backend), `crate::pg::audit` inserts rows into the `audit` table. A leaf:
//! imports nothing of the crate but the store's error.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::store::StoreError;

/// Entries `GET /api/v1/audit` returns at most.
pub const MAX_AUDIT_ENTRIES: usize = 5000;

/// Where audit entries go (module docs). Both methods block: call them off actor threads.
pub trait AuditLog: Send + Sync {
    /// Appends `entries` durably, in order.
    fn append(&self, entries: &[Value]) -> Result<(), StoreError>;

    /// The newest `limit` entries, oldest first.
    fn newest(&self, limit: usize) -> Result<Vec<Value>, StoreError>;
}

/// `DATA_DIR/audit.log`: JSON lines, fsynced after every append.
#[derive(Debug, Clone)]
pub struct AuditFile {
    path: PathBuf,
}

impl AuditFile {
    pub fn new(path: &Path) -> AuditFile {
        AuditFile {
            path: path.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, e: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            error: e,
        }
    }
}

impl AuditLog for AuditFile {
    fn append(&self, entries: &[Value]) -> Result<(), StoreError> {
        let mut buf = Vec::new();
        for l in entries {
            buf.extend_from_slice(l.to_string().as_bytes());
            buf.push(b'\n');
        }
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| self.io(e))?;
        f.write_all(&buf).map_err(|e| self.io(e))?;
        f.sync_data().map_err(|e| self.io(e))
    }

    fn newest(&self, limit: usize) -> Result<Vec<Value>, StoreError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(self.io(e)),
        };
        let mut v: Vec<Value> = text
            .lines()
            .rev()
            .take(limit)
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        v.reverse();
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_back_newest_last_and_limited() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditFile::new(&dir.path().join("audit.log"));
        assert!(log.newest(10).unwrap().is_empty(), "no file yet");
        log.append(&[serde_json::json!({"n": 1}), serde_json::json!({"n": 2})])
            .unwrap();
        log.append(&[serde_json::json!({"n": 3})]).unwrap();
        let n: Vec<i64> = log
            .newest(2)
            .unwrap()
            .iter()
            .map(|v| v["n"].as_i64().unwrap())
            .collect();
        assert_eq!(n, [2, 3]);
    }
}
