//! The audit log in the `audit` table: one row per entry (its time, who, the action and the
//! target as columns for SQL, the whole entry as JSON), appended in one transaction per call.

use serde_json::Value;

use super::PgError;
use super::history::system_time;
use super::store::PgStore;
use crate::audit::AuditLog;
use crate::store::StoreError;

/// The audit log on PostgreSQL (module docs).
pub struct PgAudit {
    store: PgStore,
}

impl PgAudit {
    pub fn new(store: PgStore) -> PgAudit {
        PgAudit { store }
    }
}

/// The columns of an entry: its time (`at_ms` of the alerts actor's entries, `ts_ms` of the
/// commands actor's; else now), `who`, `action` and `target` (a text target, else the
/// command's or the rollout's id).
fn columns(e: &Value, now_ms: i64) -> (std::time::SystemTime, String, String, Option<String>) {
    let s = |k: &str| e.get(k).and_then(Value::as_str).map(str::to_string);
    let at = ["at_ms", "ts_ms"]
        .iter()
        .find_map(|k| e.get(*k).and_then(Value::as_i64))
        .unwrap_or(now_ms);
    let target = s("target").or_else(|| s("command")).or_else(|| s("rollout"));
    (
        system_time(at),
        s("who").unwrap_or_default(),
        s("action").unwrap_or_default(),
        target,
    )
}

/// Inserts `entries` in `tx`, in order.
pub async fn insert(
    tx: &tokio_postgres::Transaction<'_>,
    entries: &[Value],
    now_ms: i64,
) -> Result<(), PgError> {
    for e in entries {
        let (at, who, action, target) = columns(e, now_ms);
        tx.execute(
            "INSERT INTO audit (at, who, action, target, entry) VALUES ($1, $2, $3, $4, $5)",
            &[&at, &who, &action, &target, e],
        )
        .await
        .map_err(PgError::db("writing the audit log"))?;
    }
    Ok(())
}

impl AuditLog for PgAudit {
    fn append(&self, entries: &[Value]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let (s, entries) = (self.store.clone(), entries.to_vec());
        let now = common::time::now_ms();
        self.store.run(async move {
            let mut client = s.client().await?;
            let tx = client
                .transaction()
                .await
                .map_err(PgError::db("audit transaction"))?;
            insert(&tx, &entries, now).await?;
            tx.commit().await.map_err(PgError::db("audit commit"))
        })?;
        Ok(())
    }

    fn newest(&self, limit: usize) -> Result<Vec<Value>, StoreError> {
        let s = self.store.clone();
        let rows = self.store.run(async move {
            let client = s.client().await?;
            client
                .query(
                    "SELECT entry FROM (SELECT id, entry FROM audit ORDER BY id DESC LIMIT $1) n ORDER BY id",
                    &[&(limit.min(i64::MAX as usize) as i64)],
                )
                .await
                .map_err(PgError::db("reading the audit log"))
        })?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_come_from_the_entry_of_either_actor() {
        let (at, who, action, target) = columns(
            &serde_json::json!({"at_ms": 5, "who": "alice", "action": "ack", "target": "a:1"}),
            9,
        );
        assert_eq!(
            (at, who.as_str(), action.as_str(), target.as_deref()),
            (system_time(5), "alice", "ack", Some("a:1"))
        );
        let (at, _, _, target) = columns(
            &serde_json::json!({"ts_ms": 7, "rollout": "r1", "target": {"site": "oslo"}}),
            9,
        );
        assert_eq!((at, target.as_deref()), (system_time(7), Some("r1")));
        let (at, ..) = columns(&serde_json::json!({"command": "c1"}), 9);
        assert_eq!(at, system_time(9));
    }
}
