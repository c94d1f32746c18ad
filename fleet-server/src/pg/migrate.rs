//! Versioned schema migrations, applied at start.
//!
//! Each migration is a file `fleet-server/migrations/NNNN_name.sql`, embedded in the binary.
//! [`migrate`] runs in one transaction that first takes an advisory lock
//! ([`MIGRATION_LOCK`]), so instances starting together apply each migration once: the others
//! wait, then find it applied. Applied versions are recorded in `schema_migrations` with the
//! SHA-256 of their SQL. [`plan`] (pure) refuses a database whose schema is newer than this
//! binary (an older binary must not write a schema it does not know) and one whose applied
//! migration differs from the file of the same version (edited after release).

use ring::digest::{SHA256, digest};
use tokio_postgres::Client;

use super::PgError;

/// One schema change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in version order, versions 1, 2, ... without holes.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "outbox_receipt",
        sql: include_str!("../../migrations/0002_outbox_receipt.sql"),
    },
    Migration {
        version: 3,
        name: "alert_muted_by",
        sql: include_str!("../../migrations/0003_alert_muted_by.sql"),
    },
    Migration {
        version: 4,
        name: "alert_opened_by",
        sql: include_str!("../../migrations/0004_alert_opened_by.sql"),
    },
    Migration {
        version: 5,
        name: "estate",
        sql: include_str!("../../migrations/0005_estate.sql"),
    },
    Migration {
        version: 6,
        name: "alert_resolved_by",
        sql: include_str!("../../migrations/0006_alert_resolved_by.sql"),
    },
    Migration {
        version: 7,
        name: "command_approval",
        sql: include_str!("../../migrations/0007_command_approval.sql"),
    },
    Migration {
        version: 8,
        name: "token_scope",
        sql: include_str!("../../migrations/0008_token_scope.sql"),
    },
];

/// Advisory lock key held while migrating (`pg_locks.objid` shows it): "rvmfmigr".
pub const MIGRATION_LOCK: i64 = 0x7276_6d66_6d69_6772;

/// The schema version this binary writes.
pub fn latest() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Hex SHA-256 of a migration's SQL.
pub fn checksum(sql: &str) -> String {
    digest(&SHA256, sql.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A row of `schema_migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub version: u32,
    pub checksum: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "storage.url: the database's schema is version {database}, newer than this fleet-server \
         (version {binary}): run the newer fleet-server, or restore a backup of the older schema"
    )]
    Newer { database: u32, binary: u32 },
    #[error(
        "storage.url: migration {version} ({name}) applied to the database differs from this \
         fleet-server's (checksum {database} vs {binary})"
    )]
    Changed {
        version: u32,
        name: &'static str,
        database: String,
        binary: String,
    },
}

/// The migrations to apply, in order, given what the database has applied (pure).
pub fn plan<'a>(applied: &[Applied], known: &'a [Migration]) -> Result<Vec<&'a Migration>, MigrateError> {
    let binary = known.last().map_or(0, |m| m.version);
    if let Some(newest) = applied.iter().map(|a| a.version).max()
        && newest > binary
    {
        return Err(MigrateError::Newer {
            database: newest,
            binary,
        });
    }
    let mut todo = Vec::new();
    for m in known {
        match applied.iter().find(|a| a.version == m.version) {
            Some(a) => {
                let sum = checksum(m.sql);
                if a.checksum != sum {
                    return Err(MigrateError::Changed {
                        version: m.version,
                        name: m.name,
                        database: a.checksum.clone(),
                        binary: sum,
                    });
                }
            }
            None => todo.push(m),
        }
    }
    Ok(todo)
}

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateReport {
    /// Versions applied by this call.
    pub applied: Vec<u32>,
    /// The schema version now.
    pub current: u32,
}

/// Brings the database's schema to [`latest`] (see the module docs).
pub async fn migrate(client: &mut Client) -> Result<MigrateReport, PgError> {
    migrate_to(client, MIGRATIONS).await
}

/// As [`migrate`], with another list of migrations (tests of newer schemas).
pub async fn migrate_to(client: &mut Client, known: &[Migration]) -> Result<MigrateReport, PgError> {
    let tx = client
        .transaction()
        .await
        .map_err(PgError::db("migration transaction"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(PgError::db("migration lock"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version integer PRIMARY KEY,
             name text NOT NULL,
             checksum text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(PgError::db("schema_migrations"))?;
    let applied: Vec<Applied> = tx
        .query(
            "SELECT version, checksum FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .map_err(PgError::db("reading schema_migrations"))?
        .iter()
        .map(|r| Applied {
            version: r.get::<_, i32>(0).max(0) as u32,
            checksum: r.get(1),
        })
        .collect();
    let todo = plan(&applied, known)?;
    let mut done = Vec::new();
    for m in todo {
        tx.batch_execute(m.sql)
            .await
            .map_err(PgError::db("applying a migration"))?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&(m.version as i32), &m.name, &checksum(m.sql)],
        )
        .await
        .map_err(PgError::db("recording a migration"))?;
        tracing::info!(version = m.version, name = m.name, "schema migration applied");
        done.push(m.version);
    }
    tx.commit().await.map_err(PgError::db("migration commit"))?;
    let current = applied
        .iter()
        .map(|a| a.version)
        .chain(done.iter().copied())
        .max()
        .unwrap_or(0);
    Ok(MigrateReport {
        applied: done,
        current,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: Migration = Migration {
        version: 1,
        name: "one",
        sql: "CREATE TABLE a (x int);",
    };
    const TWO: Migration = Migration {
        version: 2,
        name: "two",
        sql: "CREATE TABLE b (x int);",
    };

    fn applied(m: &Migration) -> Applied {
        Applied {
            version: m.version,
            checksum: checksum(m.sql),
        }
    }

    #[test]
    fn an_empty_database_gets_every_migration_in_order() {
        let todo = plan(&[], &[ONE, TWO]).unwrap();
        assert_eq!(todo.iter().map(|m| m.version).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn applied_migrations_are_not_applied_again() {
        let todo = plan(&[applied(&ONE)], &[ONE, TWO]).unwrap();
        assert_eq!(todo.iter().map(|m| m.version).collect::<Vec<_>>(), [2]);
        assert!(
            plan(&[applied(&ONE), applied(&TWO)], &[ONE, TWO])
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let e = plan(&[applied(&ONE), applied(&TWO)], &[ONE]).unwrap_err();
        assert_eq!(
            e,
            MigrateError::Newer {
                database: 2,
                binary: 1
            }
        );
        assert!(
            e.to_string()
                .starts_with("storage.url: the database's schema is version 2")
        );
    }

    #[test]
    fn an_applied_migration_that_was_edited_is_refused() {
        let edited = Applied {
            version: 1,
            checksum: checksum("CREATE TABLE a (x bigint);"),
        };
        let e = plan(&[edited], &[ONE, TWO]).unwrap_err();
        assert!(matches!(e, MigrateError::Changed { version: 1, .. }), "{e}");
    }

    #[test]
    fn shipped_migrations_are_numbered_from_one_without_holes() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.name);
            assert!(!m.sql.trim().is_empty());
        }
        assert_eq!(latest(), MIGRATIONS.len() as u32);
    }
}
