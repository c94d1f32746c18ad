//! The connection pool and the start sequence of the PostgreSQL store.
//!
//! [`start`] connects (a bad address, a refused login or a missing database is an error naming
//! `storage.url`), applies the migrations ([`super::migrate`]) and makes the partitions that
//! must exist now ([`super::partitions`]). Pooled connections are checked cheaply when taken
//! (closed ones are replaced), so a restart of PostgreSQL costs the statements in flight,
//! not the pool: the next [`Pool::get`] connects again.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use super::config::{CONNECT_TIMEOUT, PgConfig};
use super::migrate::{self, MigrateReport};
use super::partitions::{self, PartitionReport, Retention};
use super::{PgError, describe};

/// How long a caller waits for a free connection before the pool reports it exhausted.
pub const POOL_WAIT: Duration = Duration::from_secs(10);
/// How long checking a pooled connection may take before it is replaced.
pub const RECYCLE_TIMEOUT: Duration = Duration::from_secs(2);

/// A pool of at most `cfg.pool_size()` connections (made on demand), without TLS.
pub fn pool(cfg: &PgConfig) -> Result<Pool, PgError> {
    let manager = Manager::from_config(
        cfg.driver_config().clone(),
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(cfg.pool_size())
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        // the driver's own connect_timeout applies per host; this bounds the whole attempt
        .create_timeout(Some(CONNECT_TIMEOUT * 2))
        .recycle_timeout(Some(RECYCLE_TIMEOUT))
        .build()
        .map_err(|e| PgError::Pool(e.to_string()))
}

/// A connection from `pool`; errors say whether the database is unreachable or the pool is
/// exhausted.
pub async fn get(pool: &Pool, cfg: &PgConfig) -> Result<deadpool_postgres::Client, PgError> {
    pool.get().await.map_err(|e| pool_error(cfg, e))
}

fn pool_error(cfg: &PgConfig, e: PoolError) -> PgError {
    match e {
        PoolError::Backend(e) => PgError::Connect {
            target: cfg.target().to_string(),
            detail: describe(&e),
        },
        PoolError::Timeout(deadpool_postgres::TimeoutType::Create) => PgError::Connect {
            target: cfg.target().to_string(),
            detail: format!("no answer within {:?}", CONNECT_TIMEOUT * 2),
        },
        other => PgError::Pool(other.to_string()),
    }
}

/// What [`start`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartReport {
    pub migrations: MigrateReport,
    pub partitions: PartitionReport,
}

/// A pool on a database whose schema is current.
pub struct Started {
    pub pool: Pool,
    pub report: StartReport,
}

/// Connects, migrates and makes the partitions needed at `now_ms` (see the module docs).
pub async fn start(cfg: &PgConfig, retention: &Retention, now_ms: i64) -> Result<Started, PgError> {
    let pool = pool(cfg)?;
    let mut client = get(&pool, cfg).await?;
    let migrations = migrate::migrate(&mut client).await?;
    let partitions = partitions::ensure(&mut client, retention, now_ms, None).await?;
    drop(client);
    tracing::info!(
        target_db = %cfg.target(),
        schema = migrations.current,
        applied = migrations.applied.len(),
        partitions_created = partitions.created.len(),
        partitions_dropped = partitions.dropped.len(),
        "postgres store ready"
    );
    Ok(Started {
        pool,
        report: StartReport {
            migrations,
            partitions,
        },
    })
}
