//! The fence every leader write passes: `SELECT fleet_assert_lease(name, holder, epoch)` as
//! the first statement of the write's own transaction (`migrations/0001_init.sql`).
//!
//! The function raises SQLSTATE [`FENCED`] (`RVML1`) unless the lease is still held by this
//! holder at this epoch and has not expired by the database's clock, and takes the lease row
//! `FOR SHARE`: a takeover (which updates the row) waits until the transaction ends, so no
//! write of an old leader commits after a new leader took over. A frozen leader's late write
//! fails instead of landing beside the new leader's.
//!
//! The row lock has a price: a leader frozen *inside* a fenced transaction would hold a
//! takeover back for as long as it is frozen. So the transaction sets
//! `idle_in_transaction_session_timeout` to the lease: PostgreSQL ends such a session once it
//! was idle that long, its transaction rolls back, and the takeover proceeds.

use tokio_postgres::Transaction;

use super::lease::LeaseToken;
use crate::pg::PgError;
use crate::store::StoreError;

/// SQLSTATE of a write refused because its lease is no longer held (`fleet_assert_lease`).
pub const FENCED: &str = "RVML1";

/// Asserts `token` in `tx`: call it first in every leader transaction.
pub async fn assert_lease(tx: &Transaction<'_>, token: &LeaseToken) -> Result<(), PgError> {
    // SET takes no parameters; the value is an integer of our own
    tx.batch_execute(&format!(
        "SET LOCAL idle_in_transaction_session_timeout = {}",
        token.lease_ms.max(1)
    ))
    .await
    .map_err(PgError::db("bounding the leader transaction"))?;
    tx.execute(
        "SELECT fleet_assert_lease($1, $2, $3)",
        &[&token.name, &token.holder, &token.epoch],
    )
    .await
    .map_err(PgError::db("asserting the leader lease"))?;
    Ok(())
}

/// Whether `e` is a write the fence refused.
pub fn is_fenced(e: &PgError) -> bool {
    e.sqlstate() == Some(FENCED)
}

/// Whether a store error is a write the fence refused.
pub fn is_fenced_store(e: &StoreError) -> bool {
    matches!(e, StoreError::Postgres(p) if is_fenced(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_lease_sqlstate_counts_as_fenced() {
        let db = |s: Option<&str>| PgError::Db {
            context: "x",
            detail: "y".into(),
            sqlstate: s.map(str::to_string),
        };
        assert!(is_fenced(&db(Some("RVML1"))));
        assert!(!is_fenced(&db(Some("23505"))));
        assert!(!is_fenced(&db(None)));
        assert!(is_fenced_store(&StoreError::Postgres(db(Some("RVML1")))));
        assert!(!is_fenced_store(&StoreError::Encode("x".into())));
    }
}
