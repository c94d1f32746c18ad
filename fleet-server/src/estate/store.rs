//! Where retailers and stores are kept: [`EstateStore`], with the sled implementation here
//! (tree `estate`, keys `r\0{id}` and `s\0{id}`, values JSON) and the PostgreSQL one in
//! [`super::pg`]. The rules (a store's retailer exists, a retailer with stores is not deleted)
//! are checked by the routes on a read of the whole estate; PostgreSQL's foreign key backs the
//! first against a race of two instances.

use super::{Retailer, StoreFile};
use crate::store::{FleetStore, StoreError};

/// The estate's rows (module docs). Blocking: call off the actix threads.
pub trait EstateStore: Send + Sync {
    /// Every retailer and store, ordered by id.
    fn load(&self) -> Result<(Vec<Retailer>, Vec<StoreFile>), StoreError>;
    /// One retailer (a store's write checks its retailer without reading the whole estate).
    fn retailer(&self, id: &str) -> Result<Option<Retailer>, StoreError>;
    /// Inserts or replaces.
    fn put_retailer(&self, r: &Retailer) -> Result<(), StoreError>;
    /// Whether it existed.
    fn delete_retailer(&self, id: &str) -> Result<bool, StoreError>;
    /// Inserts or replaces.
    fn put_store(&self, s: &StoreFile) -> Result<(), StoreError>;
    /// Whether it existed.
    fn delete_store(&self, id: &str) -> Result<bool, StoreError>;
}

/// The estate in the server's sled database.
pub struct SledEstate {
    db: FleetStore,
    tree: sled::Tree,
}

const RETAILER: u8 = b'r';
const STORE: u8 = b's';

fn key(kind: u8, id: &str) -> Vec<u8> {
    let mut k = vec![kind, 0];
    k.extend_from_slice(id.as_bytes());
    k
}

impl SledEstate {
    pub fn open(db: &FleetStore) -> Result<SledEstate, StoreError> {
        Ok(SledEstate {
            db: db.clone(),
            tree: db.tree("estate")?,
        })
    }

    fn put<T: serde::Serialize>(&self, kind: u8, id: &str, v: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(v).map_err(|e| StoreError::Encode(e.to_string()))?;
        self.tree
            .insert(key(kind, id), bytes)
            .map_err(|e| self.db.err(e))?;
        self.tree.flush().map_err(|e| self.db.err(e))?;
        Ok(())
    }

    fn delete(&self, kind: u8, id: &str) -> Result<bool, StoreError> {
        let had = self
            .tree
            .remove(key(kind, id))
            .map_err(|e| self.db.err(e))?
            .is_some();
        self.tree.flush().map_err(|e| self.db.err(e))?;
        Ok(had)
    }

    fn all<T: serde::de::DeserializeOwned>(&self, kind: u8) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix([kind, 0]) {
            let (k, v) = kv.map_err(|e| self.db.err(e))?;
            match serde_json::from_slice(&v) {
                Ok(t) => out.push(t),
                // a row this version cannot read is skipped, not fatal to the whole estate
                Err(e) => {
                    tracing::warn!(key = %String::from_utf8_lossy(&k[2..]), error = %e, "estate row unreadable")
                }
            }
        }
        Ok(out)
    }
}

impl EstateStore for SledEstate {
    fn load(&self) -> Result<(Vec<Retailer>, Vec<StoreFile>), StoreError> {
        Ok((self.all(RETAILER)?, self.all(STORE)?))
    }
    fn retailer(&self, id: &str) -> Result<Option<Retailer>, StoreError> {
        let Some(v) = self.tree.get(key(RETAILER, id)).map_err(|e| self.db.err(e))? else {
            return Ok(None);
        };
        serde_json::from_slice(&v)
            .map(Some)
            .map_err(|e| StoreError::Encode(format!("retailer {id:?}: {e}")))
    }
    fn put_retailer(&self, r: &Retailer) -> Result<(), StoreError> {
        self.put(RETAILER, &r.id, r)
    }
    fn delete_retailer(&self, id: &str) -> Result<bool, StoreError> {
        self.delete(RETAILER, id)
    }
    fn put_store(&self, s: &StoreFile) -> Result<(), StoreError> {
        self.put(STORE, &s.id, s)
    }
    fn delete_store(&self, id: &str) -> Result<bool, StoreError> {
        self.delete(STORE, id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::estate::tests::build_store;

    #[test]
    fn the_sled_estate_keeps_rows_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.sled");
        {
            let db = FleetStore::open(&path).unwrap();
            let e = SledEstate::open(&db).unwrap();
            e.put_retailer(&Retailer {
                id: "coop".into(),
                name: "Coop".into(),
            })
            .unwrap();
            e.put_store(&build_store("b", "coop")).unwrap();
            assert_eq!(
                e.retailer("coop").unwrap().map(|r| r.name),
                Some("Coop".to_string())
            );
            assert_eq!(e.retailer("nope").unwrap(), None);
            e.put_store(&build_store("a", "coop")).unwrap();
            assert!(e.delete_store("b").unwrap());
            assert!(!e.delete_store("b").unwrap());
        }
        let db = FleetStore::open(&path).unwrap();
        let (r, s) = SledEstate::open(&db).unwrap().load().unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(s, vec![build_store("a", "coop")]);
    }
}
