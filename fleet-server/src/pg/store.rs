//! The handle every PostgreSQL store of the server shares: a small tokio runtime of its own
//! ([`PG_THREADS`] threads named `pg`) that owns the connection pool, and the store's health.
//!
//! Why a runtime of its own: a pooled connection is a task on the runtime that made it, and
//! the server's callers live on several (the ingest writer's thread, actix arbiters, blocking
//! threads of HTTP routes). A connection made on an arbiter would stall whenever that arbiter
//! is busy or gone. So every statement runs on this runtime: [`PgStore::run`] from blocking
//! code (it waits on a channel, never enters a runtime, so it may be called from anywhere off
//! an actor thread), [`PgStore::spawn`] for write-behind work, [`PgStore::call`] from async
//! code. The pool is reached only from inside them ([`PgStore::client`]).
//!
//! Every outcome is reported to the [`StorageHealth`]: an error that means the database
//! cannot be reached ([`unavailable_reason`]) marks the store unavailable with its reason and
//! message, the
//! next success marks it available again. While it is unavailable a probe (`SELECT 1` every
//! [`PROBE_INTERVAL`]) tries it too, so the health says it is back even when nothing else
//! asks (no machine is sending).

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use deadpool_postgres::Pool;

use super::PgError;
use super::config::PgConfig;
use super::partitions::Retention;
use super::pool::{self, StartReport};
use crate::storage::health::StorageHealth;

/// Worker threads of the store's runtime: statements wait on the database, not on the CPU.
pub const PG_THREADS: usize = 2;
/// How often an unavailable store is tried by the probe.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// The PostgreSQL store (cheap to clone: every clone shares the pool and the runtime).
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    rt: Runtime,
    pool: Pool,
    cfg: PgConfig,
    retention: Retention,
    health: Arc<StorageHealth>,
}

/// A runtime that may be dropped anywhere (a tokio runtime dropped inside another one's
/// context panics; this one shuts down in the background). The handle is kept beside it so
/// that reaching the runtime never has to unwrap the Option only `drop` empties.
struct Runtime {
    handle: tokio::runtime::Handle,
    rt: Option<tokio::runtime::Runtime>,
}

impl Runtime {
    fn new(rt: tokio::runtime::Runtime) -> Self {
        Self {
            handle: rt.handle().clone(),
            rt: Some(rt),
        }
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("target", &self.inner.cfg.target())
            .finish()
    }
}

/// True when `e` means the database cannot be reached (rather than a statement it refused).
pub fn is_unavailable(e: &PgError) -> bool {
    unavailable_reason(e).is_some()
}

/// Why `e` means the database cannot be reached, as the short class the health API and
/// `/metrics` show; None for a statement it refused.
pub fn unavailable_reason(e: &PgError) -> Option<&'static str> {
    match e {
        PgError::Connect { .. } => Some("connect"),
        PgError::Pool(_) => Some("pool_timeout"),
        // no SQLSTATE: the connection broke (closed, reset, timed out)
        PgError::Db { sqlstate: None, .. } => Some("connection_lost"),
        PgError::Db {
            sqlstate: Some(s), ..
        } => match s.as_str() {
            // connection exceptions
            s if s.starts_with("08") => Some("connection_lost"),
            // shutdowns, the database starting up or in recovery
            s if s.starts_with("57P") => Some("shutdown"),
            "53300" => Some("too_many_connections"),
            _ => None,
        },
        PgError::Migrate(_) => None,
    }
}

impl PgStore {
    /// Starts the runtime, connects, migrates and makes the partitions needed at `now_ms`
    /// (see [`pool::start`]): every error names `storage.url`.
    pub fn open(
        cfg: &PgConfig,
        retention: Retention,
        health: Arc<StorageHealth>,
        now_ms: i64,
    ) -> Result<(PgStore, StartReport), PgError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(PG_THREADS)
            .thread_name("pg")
            .enable_all()
            .build()
            .map_err(|e| PgError::Pool(format!("cannot start the store's runtime: {e}")))?;
        let rt = Runtime::new(rt);
        let start_cfg = cfg.clone();
        let started = wait(rt.handle(), async move {
            pool::start(&start_cfg, &retention, now_ms).await
        })?;
        let store = PgStore {
            inner: Arc::new(Inner {
                rt,
                pool: started.pool,
                cfg: cfg.clone(),
                retention,
                health,
            }),
        };
        store.spawn(probe(Arc::downgrade(&store.inner)));
        Ok((store, started.report))
    }

    /// Runs `f` on the store's runtime and waits for it (blocking: call it off actor threads).
    pub fn run<T, F>(&self, f: F) -> Result<T, PgError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, PgError>> + Send + 'static,
    {
        let res = wait(self.inner.rt.handle(), f);
        self.note(&res);
        res
    }

    /// Runs `f` on the store's runtime and awaits it from any async context.
    pub async fn call<T, F>(&self, f: F) -> Result<T, PgError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, PgError>> + Send + 'static,
    {
        let res = match self.inner.rt.handle().spawn(f).await {
            Ok(r) => r,
            Err(e) => Err(PgError::Pool(format!("the store's task failed: {e}"))),
        };
        self.note(&res);
        res
    }

    /// Starts `f` on the store's runtime and returns at once (write-behind work; the task
    /// reports its outcomes with [`PgStore::note`]).
    pub fn spawn<F>(&self, f: F) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.inner.rt.handle().spawn(f)
    }

    /// A pooled connection (only inside [`PgStore::run`], [`PgStore::call`] or
    /// [`PgStore::spawn`]: a new connection lives on the runtime that asks for it).
    pub async fn client(&self) -> Result<deadpool_postgres::Client, PgError> {
        pool::get(&self.inner.pool, &self.inner.cfg).await
    }

    /// Reports an outcome to the store's health.
    pub fn note<T>(&self, res: &Result<T, PgError>) {
        match res {
            Ok(_) => self.inner.health.ok(),
            Err(e) => match unavailable_reason(e) {
                // an operator reads this as "check storage.url": say so whichever statement
                // found the database gone (a connect error names the key already)
                Some(reason) => {
                    let text = e.to_string();
                    let text = if text.starts_with("storage.url") {
                        text
                    } else {
                        format!("storage.url ({}): {text}", self.inner.cfg.target())
                    };
                    self.inner
                        .health
                        .unavailable(reason, &text, common::time::now_ms())
                }
                None => self.inner.health.error(&e.to_string()),
            },
        }
    }

    pub fn health(&self) -> &Arc<StorageHealth> {
        &self.inner.health
    }

    pub fn config(&self) -> &PgConfig {
        &self.inner.cfg
    }

    /// How long history is kept (the partitions the store makes and drops).
    pub fn retention(&self) -> Retention {
        self.inner.retention
    }
}

/// While the store is unavailable, `SELECT 1` every [`PROBE_INTERVAL`]; ends with the store
/// (it holds no strong reference between probes, so the store can close).
async fn probe(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if inner.health.is_available() {
            continue;
        }
        let store = PgStore { inner };
        let res = async {
            let client = store.client().await?;
            client
                .simple_query("SELECT 1")
                .await
                .map_err(PgError::db("probing the database"))
        }
        .await;
        store.note(&res);
    }
}

/// Runs `f` on `rt` and blocks the calling thread (which need not be outside a runtime: it
/// waits on a channel) until it is done.
fn wait<T, F>(rt: &tokio::runtime::Handle, f: F) -> Result<T, PgError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, PgError>> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv().unwrap_or_else(|_| {
        Err(PgError::Pool(
            "the store's task ended without an answer (it panicked, or the runtime stopped)".into(),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(sqlstate: Option<&str>) -> PgError {
        PgError::Db {
            context: "x",
            detail: "y".into(),
            sqlstate: sqlstate.map(str::to_string),
        }
    }

    #[test]
    fn errors_of_reachability_are_told_apart_from_refused_statements() {
        assert!(is_unavailable(&PgError::Connect {
            target: "t".into(),
            detail: "refused".into()
        }));
        assert!(is_unavailable(&PgError::Pool("timeout".into())));
        assert!(is_unavailable(&db(None)), "a broken connection");
        assert!(is_unavailable(&db(Some("57P01"))), "admin shutdown");
        assert!(is_unavailable(&db(Some("08006"))), "connection failure");
        assert!(!is_unavailable(&db(Some("23505"))), "a unique violation");
        assert!(!is_unavailable(&db(Some("42P01"))), "a missing table");
    }

    #[test]
    fn each_kind_of_unreachable_database_has_its_reason() {
        let connect = PgError::Connect {
            target: "t".into(),
            detail: "refused".into(),
        };
        assert_eq!(unavailable_reason(&connect), Some("connect"));
        assert_eq!(
            unavailable_reason(&PgError::Pool("timeout".into())),
            Some("pool_timeout")
        );
        assert_eq!(unavailable_reason(&db(None)), Some("connection_lost"));
        assert_eq!(unavailable_reason(&db(Some("08006"))), Some("connection_lost"));
        assert_eq!(unavailable_reason(&db(Some("57P01"))), Some("shutdown"));
        assert_eq!(unavailable_reason(&db(Some("57P03"))), Some("shutdown"));
        assert_eq!(
            unavailable_reason(&db(Some("53300"))),
            Some("too_many_connections")
        );
        assert_eq!(unavailable_reason(&db(Some("23505"))), None);
    }
}
