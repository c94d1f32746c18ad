//! API tokens and roles: viewer < operator < admin.
//!
//! Tokens are random (`rvmf_` + 32 hex characters) and stored only as SHA-256 hashes in
//! `DATA_DIR/tokens.json`; the clear token is shown once, when made.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use ring::digest::{SHA256, digest};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            _ => Err(format!("unknown role {s:?} (viewer, operator, admin)")),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenEntry {
    pub name: String,
    pub role: Role,
    pub sha256: String,
    pub created_ms: i64,
}

#[derive(Debug)]
pub struct TokenStore {
    path: PathBuf,
    entries: RwLock<Vec<TokenEntry>>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{path}: {error}")]
    Json { path: PathBuf, error: serde_json::Error },
    #[error("a token named {0:?} exists")]
    Exists(String),
}

pub fn hash(token: &str) -> String {
    digest(&SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Who a request is.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

impl TokenStore {
    pub fn open(path: &Path) -> Result<TokenStore, TokenError> {
        let entries = match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|error| TokenError::Json {
                path: path.to_path_buf(),
                error,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => {
                return Err(TokenError::Io {
                    path: path.to_path_buf(),
                    error,
                });
            }
        };
        Ok(TokenStore {
            path: path.to_path_buf(),
            entries: RwLock::new(entries),
        })
    }

    /// Makes a token; returns it in clear (the only time it is visible).
    pub fn create(&self, name: &str, role: Role) -> Result<String, TokenError> {
        let token = format!("rvmf_{}", common::ids::random_hex(16));
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.iter().any(|e| e.name == name) {
            return Err(TokenError::Exists(name.into()));
        }
        entries.push(TokenEntry {
            name: name.into(),
            role,
            sha256: hash(&token),
            created_ms: common::time::now_ms(),
        });
        self.save(&entries)?;
        Ok(token)
    }

    fn save(&self, entries: &[TokenEntry]) -> Result<(), TokenError> {
        let io = |error| TokenError::Io {
            path: self.path.clone(),
            error,
        };
        if let Some(p) = self.path.parent() {
            std::fs::create_dir_all(p).map_err(io)?;
        }
        let json = serde_json::to_vec_pretty(entries).map_err(|error| TokenError::Json {
            path: self.path.clone(),
            error,
        })?;
        let tmp = self.path.with_extension("json.tmp");
        common::pki::write_file(&tmp, &json, 0o600, true)
            .map_err(|e| io(std::io::Error::other(e.to_string())))?;
        std::fs::rename(&tmp, &self.path).map_err(io)
    }

    pub fn verify(&self, token: &str) -> Option<Principal> {
        let h = hash(token);
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        // Comparing hashes of random tokens leaks nothing useful through timing.
        entries.iter().find(|e| e.sha256 == h).map(|e| Principal {
            name: e.name.clone(),
            role: e.role,
        })
    }

    pub fn list(&self) -> Vec<TokenEntry> {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_by_hash_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens.json");
        let s = TokenStore::open(&p).unwrap();
        let t = s.create("alice", Role::Operator).unwrap();
        assert_eq!(s.verify(&t).unwrap().role, Role::Operator);
        assert!(s.verify("rvmf_wrong").is_none());
        assert!(matches!(
            s.create("alice", Role::Admin),
            Err(TokenError::Exists(_))
        ));
        let s = TokenStore::open(&p).unwrap();
        assert_eq!(s.verify(&t).unwrap().name, "alice");
        assert!(
            !std::fs::read_to_string(&p).unwrap().contains(&t),
            "clear token never stored"
        );
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
    }
}
