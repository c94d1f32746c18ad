//! The estate on PostgreSQL: tables `retailers` and `stores` (migration 0005), one statement
//! per call. Every instance reads the same rows, so an edit made through one instance is seen
//! by the next request to any other.

use super::store::EstateStore;
use super::{Retailer, StoreFile, WeekFile};
use crate::pg::PgError;
use crate::pg::store::PgStore;
use crate::store::StoreError;

/// The estate on PostgreSQL (module docs).
pub struct PgEstate {
    store: PgStore,
}

impl PgEstate {
    pub fn new(store: PgStore) -> PgEstate {
        PgEstate { store }
    }

    /// Runs one statement with its parameters (owned, so they cross onto the store's runtime).
    fn execute(
        &self,
        context: &'static str,
        sql: &'static str,
        params: Vec<Box<dyn tokio_postgres::types::ToSql + Send + Sync>>,
    ) -> Result<u64, StoreError> {
        let s = self.store.clone();
        Ok(self.store.run(async move {
            let client = s.client().await?;
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
                .iter()
                .map(|p| &**p as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            client.execute(sql, &refs).await.map_err(PgError::db(context))
        })?)
    }
}

impl EstateStore for PgEstate {
    fn load(&self) -> Result<(Vec<Retailer>, Vec<StoreFile>), StoreError> {
        let s = self.store.clone();
        let (r, st) = self.store.run(async move {
            let client = s.client().await?;
            let r = client
                .query("SELECT id, name FROM retailers ORDER BY id", &[])
                .await
                .map_err(PgError::db("reading retailers"))?;
            let st = client
                .query(
                    "SELECT id, name, retailer, address, time_zone, hours, latitude, longitude \
                     FROM stores ORDER BY id",
                    &[],
                )
                .await
                .map_err(PgError::db("reading stores"))?;
            Ok((r, st))
        })?;
        let retailers = r
            .iter()
            .map(|r| Retailer {
                id: r.get(0),
                name: r.get(1),
            })
            .collect();
        let mut stores = Vec::with_capacity(st.len());
        for row in &st {
            let id: String = row.get(0);
            let hours: serde_json::Value = row.get(5);
            let hours: WeekFile = match serde_json::from_value(hours) {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(store = %id, error = %e, "stores.hours unreadable, store skipped");
                    continue;
                }
            };
            stores.push(StoreFile {
                id,
                name: row.get(1),
                retailer: row.get(2),
                address: row.get(3),
                time_zone: row.get(4),
                hours,
                latitude: row.get(6),
                longitude: row.get(7),
            });
        }
        Ok((retailers, stores))
    }

    fn retailer(&self, id: &str) -> Result<Option<Retailer>, StoreError> {
        let (s, id) = (self.store.clone(), id.to_string());
        let row = self.store.run(async move {
            let client = s.client().await?;
            client
                .query_opt("SELECT id, name FROM retailers WHERE id = $1", &[&id])
                .await
                .map_err(PgError::db("reading a retailer"))
        })?;
        Ok(row.map(|r| Retailer {
            id: r.get(0),
            name: r.get(1),
        }))
    }

    fn put_retailer(&self, r: &Retailer) -> Result<(), StoreError> {
        self.execute(
            "writing a retailer",
            "INSERT INTO retailers (id, name) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, updated_at = now()",
            vec![Box::new(r.id.clone()), Box::new(r.name.clone())],
        )?;
        Ok(())
    }

    fn delete_retailer(&self, id: &str) -> Result<bool, StoreError> {
        let n = self.execute(
            "deleting a retailer",
            "DELETE FROM retailers WHERE id = $1",
            vec![Box::new(id.to_string())],
        )?;
        Ok(n > 0)
    }

    fn put_store(&self, s: &StoreFile) -> Result<(), StoreError> {
        let hours = serde_json::to_value(&s.hours).map_err(|e| StoreError::Encode(e.to_string()))?;
        self.execute(
            "writing a store",
            "INSERT INTO stores (id, retailer, name, address, time_zone, hours, latitude, longitude) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (id) DO UPDATE SET retailer = EXCLUDED.retailer, name = EXCLUDED.name, \
             address = EXCLUDED.address, time_zone = EXCLUDED.time_zone, hours = EXCLUDED.hours, \
             latitude = EXCLUDED.latitude, longitude = EXCLUDED.longitude, updated_at = now()",
            vec![
                Box::new(s.id.clone()),
                Box::new(s.retailer.clone()),
                Box::new(s.name.clone()),
                Box::new(s.address.clone()),
                Box::new(s.time_zone.clone()),
                Box::new(hours),
                Box::new(s.latitude),
                Box::new(s.longitude),
            ],
        )?;
        Ok(())
    }

    fn delete_store(&self, id: &str) -> Result<bool, StoreError> {
        let n = self.execute(
            "deleting a store",
            "DELETE FROM stores WHERE id = $1",
            vec![Box::new(id.to_string())],
        )?;
        Ok(n > 0)
    }
}
