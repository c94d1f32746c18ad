//! The server's stores, opened for the configured backend (`[storage] backend`).
//!
//! Each feature keeps its store behind a trait in its own folder, with the sled
//! implementation beside it and a PostgreSQL one:
//!
//! | store | trait | sled (`data_dir`) | PostgreSQL |
//! | --- | --- | --- | --- |
//! | ingest batches, births, delivery | [`IngestStore`] | `fleet.sled` + `ingest.journal` | [`PgIngest`]: one transaction per batch |
//! | metric history | [`HistoryStore`] | `fleet.sled` | [`PgHistory`]: daily partitions |
//! | alerts, silences, incidents | [`AlertStore`] | `fleet.sled` | [`PgAlerts`]: `alerts`, `silences`, `incidents`, ... |
//! | commands, rollouts | [`CommandStore`] | `fleet.sled` | [`PgCommands`] |
//! | API tokens | [`TokenStore`] | `tokens.json` | [`PgTokens`] |
//! | audit log | [`AuditLog`] | `audit.log` | [`PgAudit`] |
//! | presence | [`PresenceStore`] | not stored | [`PgPresence`] |
//! | notification outbox | [`OutboxStore`] | `fleet.sled` | [`PgOutbox`] |
//! | retailers, stores | [`EstateStore`] | `fleet.sled` | [`PgEstate`]: `retailers`, `stores` |
//!
//! [`open`] opens them all (the server); [`open_tokens`] only the tokens (`fleetctl token`,
//! which works beside a running server with either backend). [`health`]: whether the store
//! answers; [`migrate`]: `fleetctl store migrate`, a sled store copied into PostgreSQL.

pub mod health;
pub mod migrate;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use self::health::StorageHealth;
use crate::alerts::pg::PgAlerts;
use crate::alerts::store::AlertStore;
use crate::audit::{AuditFile, AuditLog};
use crate::auth::{TokenError, TokenFile, TokenStore};
use crate::commands::pg::PgCommands;
use crate::commands::store::{CommandStore, SledCommandStore};
use crate::estate::pg::PgEstate;
use crate::estate::store::{EstateStore, SledEstate};
use crate::fleet::pg::PgPresence;
use crate::fleet::store::{NotStored, PresenceStore};
use crate::history::pg::PgHistory;
use crate::history::rollup::HistoryPolicy;
use crate::history::store::HistoryStore;
use crate::ingest::pg::PgIngest;
use crate::ingest::store::IngestStore;
use crate::notify::outbox::OutboxStore;
use crate::notify::outbox::pg_store::PgOutbox;
use crate::notify::outbox::sled_store::SledOutbox;
use crate::pg::PgError;
use crate::pg::audit::PgAudit;
use crate::pg::config::StorageBackend;
use crate::pg::partitions::Retention;
use crate::pg::store::PgStore;
use crate::pg::tokens::PgTokens;
use crate::store::{FleetStore, StoreError};

/// Where the stores are and how to open them (from `[storage]`).
#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub backend: StorageBackend,
    /// sled's files (and nothing else with PostgreSQL).
    pub data_dir: PathBuf,
    pub cache_bytes: u64,
    pub history: HistoryPolicy,
}

impl StorageConfig {
    /// The sled store in `data_dir` with the default cache and retention.
    pub fn sled(data_dir: &Path) -> StorageConfig {
        StorageConfig {
            backend: StorageBackend::Sled,
            data_dir: data_dir.to_path_buf(),
            cache_bytes: crate::store::STORE_CACHE_BYTES,
            history: HistoryPolicy::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error(transparent)]
    Tokens(#[from] TokenError),
    #[error(transparent)]
    Outbox(#[from] crate::notify::outbox::OutboxError),
    #[error("storage.data_dir: cannot create {path}: {error}")]
    DataDir { path: PathBuf, error: std::io::Error },
}

/// Every store of the server (module docs).
#[derive(Clone)]
pub struct Stores {
    pub health: Arc<StorageHealth>,
    pub ingest: Arc<dyn IngestStore>,
    pub history: Arc<dyn HistoryStore>,
    pub alerts: Arc<dyn AlertStore>,
    pub commands: Arc<dyn CommandStore>,
    pub tokens: Arc<dyn TokenStore>,
    pub audit: Arc<dyn AuditLog>,
    pub presence: Arc<dyn PresenceStore>,
    pub outbox: Arc<dyn OutboxStore>,
    pub estate: Arc<dyn EstateStore>,
    /// The sled database, whose lock is released when its last clone is gone; None with
    /// PostgreSQL.
    pub sled: Option<FleetStore>,
    /// The PostgreSQL store; None with sled.
    pub pg: Option<PgStore>,
}

fn retention(h: &HistoryPolicy) -> Retention {
    Retention {
        raw_ms: h.raw_retention_ms,
        rollup_ms: h.rollup_retention_ms,
    }
}

fn data_dir(cfg: &StorageConfig) -> Result<(), OpenError> {
    std::fs::create_dir_all(&cfg.data_dir).map_err(|error| OpenError::DataDir {
        path: cfg.data_dir.clone(),
        error,
    })
}

/// Opens every store (blocking; with PostgreSQL it connects, migrates and makes partitions:
/// an unreachable database is an error naming `storage.url`).
pub fn open(cfg: &StorageConfig) -> Result<Stores, OpenError> {
    match &cfg.backend {
        StorageBackend::Sled => {
            data_dir(cfg)?;
            let db = FleetStore::open_with(&cfg.data_dir.join("fleet.sled"), cfg.cache_bytes)?;
            Ok(Stores {
                health: Arc::new(StorageHealth::new("sled")),
                ingest: Arc::new(db.clone()),
                history: Arc::new(db.clone()),
                alerts: Arc::new(db.clone()),
                commands: Arc::new(SledCommandStore::open(&db)?),
                tokens: Arc::new(TokenFile::open(&cfg.data_dir.join("tokens.json"))?),
                audit: Arc::new(AuditFile::new(&cfg.data_dir.join("audit.log"))),
                presence: Arc::new(NotStored),
                outbox: Arc::new(SledOutbox::open_in(&db)?),
                estate: Arc::new(SledEstate::open(&db)?),
                sled: Some(db),
                pg: None,
            })
        }
        StorageBackend::Postgres(pg) => {
            let health = Arc::new(StorageHealth::new("postgres"));
            let (store, _) = PgStore::open(
                pg,
                retention(&cfg.history),
                health.clone(),
                common::time::now_ms(),
            )?;
            Ok(Stores {
                health,
                ingest: Arc::new(PgIngest::open(store.clone())?),
                history: Arc::new(PgHistory::new(store.clone())),
                alerts: Arc::new(PgAlerts::new(store.clone())),
                commands: Arc::new(PgCommands::new(store.clone())),
                tokens: Arc::new(PgTokens::refreshing(store.clone())?),
                audit: Arc::new(PgAudit::new(store.clone())),
                presence: Arc::new(PgPresence::new(store.clone())),
                outbox: Arc::new(PgOutbox::new(store.clone(), &worker_name())),
                estate: Arc::new(PgEstate::new(store.clone())),
                sled: None,
                pg: Some(store),
            })
        }
    }
}

/// `claimed_by` of this server's outbox claims: its host, the same after a restart (which
/// then releases them: `OutboxStore::release_all`).
fn worker_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    match host.trim() {
        "" => "fleet-server".to_string(),
        h => h.to_string(),
    }
}

/// Only the API tokens: `DATA_DIR/tokens.json` (which a running sled server does not lock)
/// or the `tokens` table.
pub fn open_tokens(cfg: &StorageConfig) -> Result<Arc<dyn TokenStore>, OpenError> {
    match &cfg.backend {
        StorageBackend::Sled => Ok(Arc::new(TokenFile::open(&cfg.data_dir.join("tokens.json"))?)),
        StorageBackend::Postgres(pg) => {
            let health = Arc::new(StorageHealth::new("postgres"));
            let (store, _) = PgStore::open(pg, retention(&cfg.history), health, common::time::now_ms())?;
            Ok(Arc::new(PgTokens::open(store)?))
        }
    }
}
