//! API tokens and roles: viewer < operator < admin.
//!
//! Tokens are random (`rvmf_` + 32 hex characters) and stored only as SHA-256 hashes; the
//! clear token is shown once, when made. A token may carry an expiry (`expires_ms`, optional
//! in the file so older files still load); past it, [`TokenStore::verify`] refuses the token
//! like an unknown one.
//!
//! A token may carry a [`Scope`] (a store or a retailer): its holder sees only the machines of
//! that part of the estate (`crate::http::scope` applies it; docs/estate.md, "Scoped access").
//! Files and rows without one are unscoped, as before scopes existed.
//!
//! [`TokenStore`] is the seam: [`TokenFile`] keeps them in `DATA_DIR/tokens.json` (with the
//! sled backend), `crate::pg::tokens` in the `tokens` table (with PostgreSQL, where
//! `fleetctl token create --config` reaches a running server within seconds).

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

/// The part of the estate a token is limited to; none: the whole fleet.
///
/// As JSON `{"site": "S"}` or `{"retailer": "R"}`; as text (`fleetctl --scope`, the
/// PostgreSQL column) `site=S` or `retailer=R`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Scope {
    /// One store: machines whose `site` is this store's id (and the store exists).
    Site(String),
    /// Every store of this retailer.
    Retailer(String),
}

impl Scope {
    /// Checks the id by the rule of site ids (`common::ids::is_site_id`, which the estate's
    /// stores and retailers follow too); the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        let (field, id) = match self {
            Scope::Site(s) => ("scope.site", s),
            Scope::Retailer(r) => ("scope.retailer", r),
        };
        if common::ids::is_site_id(id) {
            Ok(())
        } else {
            Err(format!(
                "{field}: {id:?} is not 1 to {} of letters, digits, space, '.', '_', '-'",
                common::ids::SITE_ID_MAX_LEN
            ))
        }
    }

    /// Whether a role may carry a scope: an admin manages tokens and the whole estate, so an
    /// admin token is never scoped (a scoped principal can then never make tokens).
    pub fn check_role(role: Role) -> Result<(), String> {
        if role == Role::Admin {
            return Err("scope: an admin token cannot be scoped (viewer or operator)".into());
        }
        Ok(())
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Site(s) => write!(f, "site={s}"),
            Scope::Retailer(r) => write!(f, "retailer={r}"),
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let scope = match s.split_once('=') {
            Some(("site", v)) => Scope::Site(v.to_string()),
            Some(("retailer", v)) => Scope::Retailer(v.to_string()),
            _ => return Err(format!("scope: {s:?} is not site=STORE or retailer=RETAILER")),
        };
        scope.validate()?;
        Ok(scope)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenEntry {
    pub name: String,
    pub role: Role,
    pub sha256: String,
    pub created_ms: i64,
    /// Refused from this time on (ms since the epoch); None: never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
    /// None: the whole fleet (and every file written before scopes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
}

/// Where API tokens are kept (module docs). `verify` is called on every request: it never
/// waits on IO; `create` may (call it off actor threads).
pub trait TokenStore: Send + Sync {
    /// Makes a token refused from `expires_ms` on (None: never expires), limited to `scope`
    /// (None: the whole fleet); returns it in clear (the only time it is visible).
    fn create_scoped(
        &self,
        name: &str,
        role: Role,
        expires_ms: Option<i64>,
        scope: Option<Scope>,
    ) -> Result<String, TokenError>;

    /// Makes an unscoped token refused from `expires_ms` on; returns it in clear.
    fn create_with_expiry(
        &self,
        name: &str,
        role: Role,
        expires_ms: Option<i64>,
    ) -> Result<String, TokenError> {
        self.create_scoped(name, role, expires_ms, None)
    }

    /// Who holds `token` at `now_ms`; None for an unknown or expired token.
    fn verify_at(&self, token: &str, now_ms: i64) -> Option<Principal>;

    fn list(&self) -> Vec<TokenEntry>;

    /// Makes a token that never expires; returns it in clear.
    fn create(&self, name: &str, role: Role) -> Result<String, TokenError> {
        self.create_with_expiry(name, role, None)
    }

    /// Who holds `token` now; None for an unknown or expired token.
    fn verify(&self, token: &str) -> Option<Principal> {
        self.verify_at(token, common::time::now_ms())
    }
}

/// A new random token and its entry (not stored yet).
pub fn new_token(
    name: &str,
    role: Role,
    expires_ms: Option<i64>,
    scope: Option<Scope>,
    now_ms: i64,
) -> (String, TokenEntry) {
    let token = format!("rvmf_{}", common::ids::random_hex(16));
    let entry = TokenEntry {
        name: name.into(),
        role,
        sha256: hash(&token),
        created_ms: now_ms,
        expires_ms,
        scope,
    };
    (token, entry)
}

/// The holder of `token` among `entries` at `now_ms` (shared by every store).
pub fn find<'a>(
    entries: impl IntoIterator<Item = &'a TokenEntry>,
    token: &str,
    now_ms: i64,
) -> Option<Principal> {
    let h = hash(token);
    // Comparing hashes of random tokens leaks nothing useful through timing.
    let e = entries.into_iter().find(|e| e.sha256 == h)?;
    if e.expires_ms.is_some_and(|x| x <= now_ms) {
        tracing::info!(name = %e.name, "expired token refused");
        return None;
    }
    Some(Principal {
        name: e.name.clone(),
        role: e.role,
        scope: e.scope.clone(),
    })
}

/// Tokens in `DATA_DIR/tokens.json`, read once at open.
#[derive(Debug)]
pub struct TokenFile {
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
    #[error("tokens: {0}")]
    Store(String),
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
    /// None: the whole fleet.
    pub scope: Option<Scope>,
}

impl TokenFile {
    pub fn open(path: &Path) -> Result<TokenFile, TokenError> {
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
        Ok(TokenFile {
            path: path.to_path_buf(),
            entries: RwLock::new(entries),
        })
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
}

impl TokenStore for TokenFile {
    fn create_scoped(
        &self,
        name: &str,
        role: Role,
        expires_ms: Option<i64>,
        scope: Option<Scope>,
    ) -> Result<String, TokenError> {
        let (token, entry) = new_token(name, role, expires_ms, scope, common::time::now_ms());
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.iter().any(|e| e.name == name) {
            return Err(TokenError::Exists(name.into()));
        }
        entries.push(entry);
        self.save(&entries)?;
        Ok(token)
    }

    fn verify_at(&self, token: &str, now_ms: i64) -> Option<Principal> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        find(entries.iter(), token, now_ms)
    }

    fn list(&self) -> Vec<TokenEntry> {
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
        let s = TokenFile::open(&p).unwrap();
        let t = s.create("alice", Role::Operator).unwrap();
        assert_eq!(s.verify(&t).unwrap().role, Role::Operator);
        assert!(s.verify("rvmf_wrong").is_none());
        assert!(matches!(
            s.create("alice", Role::Admin),
            Err(TokenError::Exists(_))
        ));
        let s = TokenFile::open(&p).unwrap();
        assert_eq!(s.verify(&t).unwrap().name, "alice");
        assert!(
            !std::fs::read_to_string(&p).unwrap().contains(&t),
            "clear token never stored"
        );
    }

    #[test]
    fn an_expired_token_is_refused_and_old_files_without_expiry_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens.json");
        let s = TokenFile::open(&p).unwrap();
        let t = s.create_with_expiry("temp", Role::Admin, Some(1_000)).unwrap();
        assert_eq!(s.verify_at(&t, 999).unwrap().name, "temp");
        assert!(s.verify_at(&t, 1_000).is_none());
        assert!(s.verify(&t).is_none(), "expired long ago");
        let forever = s.create("ops", Role::Viewer).unwrap();
        assert!(s.verify_at(&forever, i64::MAX).is_some());
        // a file written before tokens could expire
        std::fs::write(
            &p,
            format!(
                r#"[{{"name":"old","role":"viewer","sha256":"{}","created_ms":5}}]"#,
                hash("rvmf_old")
            ),
        )
        .unwrap();
        let s = TokenFile::open(&p).unwrap();
        assert_eq!(s.verify("rvmf_old").unwrap().name, "old");
        assert_eq!(s.list()[0].expires_ms, None);
    }

    #[test]
    fn a_scope_survives_reopen_and_parses_from_text_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens.json");
        let s = TokenFile::open(&p).unwrap();
        let t = s
            .create_scoped("mgr", Role::Operator, None, Some(Scope::Site("oslo-1".into())))
            .unwrap();
        let s = TokenFile::open(&p).unwrap();
        assert_eq!(s.verify(&t).unwrap().scope, Some(Scope::Site("oslo-1".into())));
        assert_eq!(
            "retailer=coop".parse::<Scope>(),
            Ok(Scope::Retailer("coop".into()))
        );
        assert_eq!(Scope::Site("a b".into()).to_string(), "site=a b");
        assert!("store=x".parse::<Scope>().unwrap_err().starts_with("scope:"));
        assert!("site=".parse::<Scope>().unwrap_err().starts_with("scope.site:"));
        assert!(Scope::check_role(Role::Admin).is_err() && Scope::check_role(Role::Operator).is_ok());
        let v: Scope = serde_json::from_str(r#"{"retailer": "coop"}"#).unwrap();
        assert_eq!(v, Scope::Retailer("coop".into()));
        assert!(serde_json::from_str::<Scope>(r#"{"shop": "x"}"#).is_err());
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
    }
}
