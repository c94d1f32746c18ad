//! The PostgreSQL store: for fleets that outgrow the embedded sled store, and for several
//! fleet-server instances on one database (docs/postgres.md: the schema, the views for people
//! and Grafana, retention, backup).
//!
//! # Layout
//! - [`config`]: the `[storage]` keys that choose the backend and reach the database
//!   (`backend`, `url`, `password_file` / `password_env`, `pool_size`); the password never
//!   appears in logs or `Debug` output
//! - [`pool`]: the connection pool, and the start sequence ([`pool::start`]: connect, migrate,
//!   make partitions) whose errors name `storage.url`
//! - [`migrate`]: versioned migrations (`fleet-server/migrations/*.sql`, embedded), applied at
//!   start in one transaction under an advisory lock; a newer schema is refused
//! - [`partitions`]: daily partitions of raw telemetry and 1-minute rollups, made ahead and
//!   dropped past retention (pure plan + IO)
//! - [`history`]: metric names, the batch writer of raw rows (binary COPY through a staging
//!   table, or multi-row INSERT; both `ON CONFLICT DO NOTHING`), rollups, reads
//!
//! # Invariants
//! - A record's identity is (device, seq): the agent numbers every record of a device once,
//!   across reboots, and never reuses a seq (agent `buffer` module, invariant 2); the envelope
//!   carries no boot id. PostgreSQL requires the partition key in a partitioned table's unique
//!   index, so the raw table's key is (device, time, seq): a resent record lands at the same
//!   time, unless the server's clock guard moved it (a device clock off by minutes). The exact
//!   dedup is the delivery row (the server's seq tracker), written in the same transaction as
//!   the rows it counts; `ON CONFLICT DO NOTHING` makes every replay of a batch harmless.
//! - Nothing here reads a clock: every function that depends on the time takes `now_ms`.
//! - Schema changes only through a new migration file; an applied migration's SQL never
//!   changes (its checksum is recorded and checked at every start).
//!
//! # Transport
//! Connections use plain TCP (or a Unix socket): [`tokio_postgres::NoTls`]. TLS to the database
//! is not supported yet; `sslmode=require` in `storage.url` is refused at validation rather
//! than failing at connect. Run PostgreSQL on the same host or a trusted network, or tunnel.

pub mod config;
pub mod history;
pub mod migrate;
pub mod partitions;
pub mod pool;

pub use config::{Backend, PgConfig, StorageBackend, StorageBackendFile};
pub use deadpool_postgres::Pool;
pub use pool::{Started, start};

/// Errors of the PostgreSQL store.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The database named by `storage.url` could not be reached or refused the login.
    #[error("storage.url: cannot connect to {target}: {detail}")]
    Connect { target: String, detail: String },
    /// A statement failed; `sqlstate` is PostgreSQL's error code when the server sent one.
    #[error("postgres {context}: {detail}")]
    Db {
        context: &'static str,
        detail: String,
        sqlstate: Option<String>,
    },
    /// No connection became free in time (the pool is exhausted or the database is down).
    #[error("postgres pool: {0}")]
    Pool(String),
    #[error(transparent)]
    Migrate(#[from] migrate::MigrateError),
}

impl PgError {
    /// Maps a driver error of the statement described by `context`.
    pub fn db(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> PgError {
        move |e| PgError::Db {
            context,
            detail: describe(&e),
            sqlstate: e.code().map(|c| c.code().to_string()),
        }
    }

    /// PostgreSQL's SQLSTATE, when the server answered with an error.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            PgError::Db { sqlstate, .. } => sqlstate.as_deref(),
            _ => None,
        }
    }
}

/// A driver error with the server's message, detail and hint (tokio-postgres' own `Display`
/// says only "db error"), or the chain of causes of a connection error.
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = db.message().to_string();
        if let Some(d) = db.detail() {
            s.push_str(&format!(" ({d})"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!("; hint: {h}"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    s
}
