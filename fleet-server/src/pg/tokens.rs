//! API tokens in the `tokens` table (only their SHA-256 is stored).
//!
//! Every request verifies a token, so [`PgTokens::verify_at`] never waits on the database: it
//! reads a copy of the table that a task of the store's runtime reloads every
//! [`TOKEN_REFRESH`] (a token made with `fleetctl token create --config` is accepted within
//! that time; one made through the API at once). Creating one inserts its row: a name that
//! exists is refused by the table's primary key.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use super::PgError;
use super::history::{millis, system_time};
use super::store::PgStore;
use crate::auth::{Principal, Role, Scope, TokenEntry, TokenError, TokenStore, find, new_token};

/// How often the server reloads the tokens table.
pub const TOKEN_REFRESH: Duration = Duration::from_secs(2);

type Entries = Arc<RwLock<Vec<TokenEntry>>>;

/// API tokens on PostgreSQL (module docs).
pub struct PgTokens {
    store: PgStore,
    entries: Entries,
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Viewer => "viewer",
        Role::Operator => "operator",
        Role::Admin => "admin",
    }
}

async fn load(store: &PgStore) -> Result<Vec<TokenEntry>, PgError> {
    let client = store.client().await?;
    let rows = client
        .query(
            "SELECT name, role, sha256, created_at, expires_at, scope FROM tokens ORDER BY created_at, name",
            &[],
        )
        .await
        .map_err(PgError::db("reading tokens"))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            // a scope that does not parse drops the row: never widened to the whole fleet
            let scope = match r.get::<_, Option<&str>>(5) {
                None => None,
                Some(s) => match s.parse::<Scope>() {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::warn!(name = %r.get::<_, &str>(0), error = %e, "token with a bad scope skipped");
                        return None;
                    }
                },
            };
            Some(TokenEntry {
                name: r.get(0),
                role: r.get::<_, &str>(1).parse().ok()?,
                sha256: r.get(2),
                created_ms: millis(r.get(3)),
                expires_ms: r.get::<_, Option<std::time::SystemTime>>(4).map(millis),
                scope,
            })
        })
        .collect())
}

impl PgTokens {
    /// Reads the table once (tools: `fleetctl token`).
    pub fn open(store: PgStore) -> Result<PgTokens, PgError> {
        let s = store.clone();
        let entries = store.run(async move { load(&s).await })?;
        Ok(PgTokens {
            store,
            entries: Arc::new(RwLock::new(entries)),
        })
    }

    /// As [`PgTokens::open`], and reloads the table every [`TOKEN_REFRESH`] while it lives
    /// (the server).
    pub fn refreshing(store: PgStore) -> Result<PgTokens, PgError> {
        let t = PgTokens::open(store)?;
        let weak: Weak<RwLock<Vec<TokenEntry>>> = Arc::downgrade(&t.entries);
        let s = t.store.clone();
        t.store.spawn(async move {
            loop {
                tokio::time::sleep(TOKEN_REFRESH).await;
                let Some(entries) = weak.upgrade() else { return };
                let res = load(&s).await;
                s.note(&res);
                match res {
                    Ok(fresh) => *entries.write().unwrap_or_else(|p| p.into_inner()) = fresh,
                    Err(e) => tracing::warn!(error = %e, "tokens not reloaded"),
                }
            }
        });
        Ok(t)
    }
}

impl TokenStore for PgTokens {
    fn create_scoped(
        &self,
        name: &str,
        role: Role,
        expires_ms: Option<i64>,
        scope: Option<Scope>,
    ) -> Result<String, TokenError> {
        let (token, entry) = new_token(name, role, expires_ms, scope, common::time::now_ms());
        let (s, e) = (self.store.clone(), entry.clone());
        let inserted = self
            .store
            .run(async move {
                let client = s.client().await?;
                client
                    .execute(
                        "INSERT INTO tokens (name, role, sha256, created_at, expires_at, scope)
                         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING",
                        &[
                            &e.name,
                            &role_name(e.role),
                            &e.sha256,
                            &system_time(e.created_ms),
                            &e.expires_ms.map(system_time),
                            &e.scope.as_ref().map(|s| s.to_string()),
                        ],
                    )
                    .await
                    .map_err(PgError::db("writing a token"))
            })
            .map_err(|e| TokenError::Store(e.to_string()))?;
        if inserted == 0 {
            return Err(TokenError::Exists(name.into()));
        }
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(entry);
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
