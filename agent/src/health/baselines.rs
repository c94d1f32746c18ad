//! Where the cameras' learned baselines ([`CameraBaselines`]) are kept between runs, so a
//! restart neither forgets a camera nor learns a fault that is under way as normal: one JSON
//! value under one key of the sled tree `camera_baselines` in the agent's buffer database
//! ([`SledBaselines`]), or memory ([`MemBaselines`], tests). Blocking: the health actor saves
//! on a blocking thread every [`BASELINE_SAVE_INTERVAL_MS`]. A stored value that does not
//! parse is an error the caller logs; the baselines are then learned again.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::camera::CameraBaselines;

/// How often the health actor stores the baselines.
pub const BASELINE_SAVE_INTERVAL_MS: i64 = 300_000;
/// The sled tree and key they are stored under.
pub const TREE: &str = "camera_baselines";
const KEY: &[u8] = b"v1";

/// The cameras' baselines by camera name.
pub type Baselines = BTreeMap<String, CameraBaselines>;

/// Why baselines were not loaded or stored.
#[derive(Debug, thiserror::Error)]
pub enum BaselineStoreError {
    #[error("the camera baseline store: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored camera baselines do not parse: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the camera baseline store lock is poisoned")]
    Poisoned,
}

/// Where the baselines are kept.
pub trait BaselineStore: Send + Sync + 'static {
    /// The stored baselines; empty when none were stored.
    fn load(&self) -> Result<Baselines, BaselineStoreError>;
    fn save(&self, baselines: &Baselines) -> Result<(), BaselineStoreError>;
}

/// The sled tree [`TREE`] of the agent's buffer database (flushed with it).
pub struct SledBaselines {
    pub tree: sled::Tree,
}

impl BaselineStore for SledBaselines {
    fn load(&self) -> Result<Baselines, BaselineStoreError> {
        match self.tree.get(KEY)? {
            Some(bytes) => Ok(serde_json::from_slice(&bytes)?),
            None => Ok(Baselines::new()),
        }
    }

    fn save(&self, baselines: &Baselines) -> Result<(), BaselineStoreError> {
        self.tree.insert(KEY, serde_json::to_vec(baselines)?)?;
        Ok(())
    }
}

/// In memory.
#[derive(Default)]
pub struct MemBaselines(Mutex<Baselines>);

impl BaselineStore for MemBaselines {
    fn load(&self) -> Result<Baselines, BaselineStoreError> {
        Ok(self.0.lock().map_err(|_| BaselineStoreError::Poisoned)?.clone())
    }

    fn save(&self, baselines: &Baselines) -> Result<(), BaselineStoreError> {
        *self.0.lock().map_err(|_| BaselineStoreError::Poisoned)? = baselines.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::camera::Baseline;

    fn build_baselines() -> Baselines {
        BTreeMap::from([(
            "front".to_string(),
            CameraBaselines {
                fps: Baseline {
                    mean: 29.5,
                    learned_s: 3600.0,
                },
                confidence: Baseline {
                    mean: 0.91,
                    learned_s: 3600.0,
                },
            },
        )])
    }

    #[test]
    fn sled_baselines_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let s = SledBaselines {
                tree: db.open_tree(TREE).unwrap(),
            };
            assert_eq!(s.load().unwrap(), Baselines::new(), "nothing stored yet");
            s.save(&build_baselines()).unwrap();
            db.flush().unwrap();
        }
        let db = sled::open(dir.path()).unwrap();
        let s = SledBaselines {
            tree: db.open_tree(TREE).unwrap(),
        };
        assert_eq!(s.load().unwrap(), build_baselines());
    }

    #[test]
    fn a_stored_value_that_does_not_parse_is_an_error_not_a_guess() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree(TREE).unwrap();
        tree.insert(KEY, b"{not json".to_vec()).unwrap();
        let err = SledBaselines { tree }.load().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("stored camera baselines do not parse"),
            "{err}"
        );
        let mem = MemBaselines::default();
        mem.save(&build_baselines()).unwrap();
        assert_eq!(mem.load().unwrap(), build_baselines());
    }
}
