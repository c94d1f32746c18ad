//! [`Cluster`]: this instance among the others, as the server holds it: its registration at
//! start, the heartbeat loop it hands the supervisor, the clean stop, and the reads of the
//! cluster for the API.
//!
//! Start order (`crate::server`): [`Cluster::new`] before HTTP (routes reach it), then
//! [`Cluster::register`] once the broker and HTTP listen (the row names their addresses),
//! then the supervisor starts [`Cluster::heartbeat`]. [`Cluster::stop`] after every child
//! stopped: the row says `stopped_at` and the leases this instance held expire at once, so
//! another instance takes over within a heartbeat instead of a lease.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::config::ClusterConfig;
use super::heartbeat::Heartbeat;
use super::leader::{JOBS, Leadership, LeadershipSnapshot};
use super::lease::LeaseTiming;
use super::pg::{self, Me, Registered};
use super::registry::{self, ClusterView, InstanceRow, LeaseRow};
use crate::pg::PgError;
use crate::pg::store::PgStore;

/// Longest a clean stop waits for the database to record it.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Another live instance registered this id.
    #[error(
        "cluster.instance_id: {id:?} is the id of a running instance (its last heartbeat {age_ms} ms ago); \
         give each instance its own id, or leave it unset"
    )]
    InUse { id: String, age_ms: i64 },
    #[error(transparent)]
    Postgres(#[from] PgError),
}

/// This instance in the cluster (module docs); clones share it.
#[derive(Clone)]
pub struct Cluster {
    config: ClusterConfig,
    leadership: Leadership,
    /// The PostgreSQL store; None with sled (one instance, nothing registered).
    store: Option<PgStore>,
    me: Arc<OnceLock<Me>>,
}

impl Cluster {
    /// With `store` (PostgreSQL) the instance competes for leases; without (sled) it is the
    /// only instance and leads every job.
    pub fn new(config: ClusterConfig, store: Option<PgStore>) -> Cluster {
        let leadership = match &store {
            Some(_) => Leadership::leased(&config.instance_id, self::timing(&config)),
            None => Leadership::single(&config.instance_id),
        };
        Cluster {
            config,
            leadership,
            store,
            me: Arc::default(),
        }
    }

    pub fn id(&self) -> &str {
        &self.config.instance_id
    }

    pub fn leadership(&self) -> &Leadership {
        &self.leadership
    }

    pub fn is_shared(&self) -> bool {
        self.store.is_some()
    }

    /// Inserts this instance into `instances` (PostgreSQL; nothing with sled). A row of the
    /// same id whose heartbeat is fresh is waited for up to a lease and a heartbeat (a
    /// restart right after a `kill -9` with a configured id), then refused. Blocking.
    pub fn register(&self, mqtt: SocketAddr, http: SocketAddr) -> Result<(), ClusterError> {
        let me = Me {
            id: self.config.instance_id.clone(),
            mqtt_addr: Some(mqtt.to_string()),
            http_addr: Some(http.to_string()),
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let Some(store) = &self.store else {
            let _ = self.me.set(me);
            return Ok(());
        };
        let lease_ms = self.config.lease_ms as i64;
        let deadline =
            Instant::now() + Duration::from_millis(self.config.lease_ms + self.config.heartbeat_ms);
        loop {
            let (s, m) = (store.clone(), me.clone());
            let outcome = store.run(async move {
                let client = s.client().await?;
                pg::register(&**client, &m, lease_ms).await
            })?;
            match outcome {
                Registered::Yes => break,
                Registered::InUse { heartbeat_age_ms } if Instant::now() >= deadline => {
                    return Err(ClusterError::InUse {
                        id: me.id,
                        age_ms: heartbeat_age_ms,
                    });
                }
                Registered::InUse { .. } => {
                    std::thread::sleep(Duration::from_millis(self.config.heartbeat_ms));
                }
            }
        }
        tracing::info!(
            instance = %me.id,
            mqtt = %mqtt,
            http = %http,
            heartbeat_ms = self.config.heartbeat_ms,
            lease_ms = self.config.lease_ms,
            "instance registered"
        );
        let _ = self.me.set(me);
        self.first_attempt(store);
        Ok(())
    }

    /// One attempt on every lease before the jobs start, so that the first instance of a
    /// cluster leads from its first run rather than a heartbeat later. Failures are left to
    /// the heartbeat loop (logged).
    fn first_attempt(&self, store: &PgStore) {
        let (s, id) = (store.clone(), self.config.instance_id.clone());
        let (lease_ms, wait_ms) = (self.config.lease_ms as i64, self.config.heartbeat_ms);
        let answers = store.run(async move {
            let mut client = s.client().await?;
            let mut answers = Vec::new();
            for job in JOBS {
                let tx = client
                    .transaction()
                    .await
                    .map_err(PgError::db("lease transaction"))?;
                // a lease row held by a frozen leader's transaction: do not wait for it here
                tx.batch_execute(&format!("SET LOCAL lock_timeout = {wait_ms}"))
                    .await
                    .map_err(PgError::db("bounding the lease attempt"))?;
                let answer = pg::attempt(&*tx, job, &id, lease_ms, false).await?;
                tx.commit().await.map_err(PgError::db("lease commit"))?;
                answers.push((*job, answer));
            }
            Ok(answers)
        });
        match answers {
            Ok(answers) => {
                for (job, (sent, answer)) in answers {
                    self.leadership.answered(job, sent, answer);
                }
            }
            Err(e) => tracing::warn!(error = %e, "first lease attempt failed; the heartbeat tries again"),
        }
    }

    /// The heartbeat loop for the supervisor; None with sled, or before [`Cluster::register`].
    pub fn heartbeat(&self) -> Option<Heartbeat> {
        Some(Heartbeat {
            store: self.store.clone()?,
            me: self.me.get()?.clone(),
            leadership: self.leadership.clone(),
            timing: self::timing(&self.config),
        })
    }

    /// Records a clean stop and gives up every lease (PostgreSQL; waits at most
    /// [`STOP_TIMEOUT`]: a database that does not answer lets the leases run out instead).
    pub fn stop(&self) {
        let (Some(store), Some(_)) = (&self.store, self.me.get()) else {
            return;
        };
        let (s, id) = (store.clone(), self.config.instance_id.clone());
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        store.spawn(async move {
            let res = async {
                let client = s.client().await?;
                pg::stopped(&**client, &id).await
            }
            .await;
            let _ = tx.send(res);
        });
        match rx.recv_timeout(STOP_TIMEOUT) {
            Ok(Ok(released)) => tracing::info!(
                instance = %self.config.instance_id,
                leases_released = released,
                "instance stopped"
            ),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot record the instance's stop; its leases run out"),
            Err(_) => tracing::warn!(
                "the database did not record the instance's stop within {STOP_TIMEOUT:?}; its leases run out"
            ),
        }
    }

    /// Every instance and lease as the database has them now (sled: this instance alone).
    /// Blocking.
    pub fn read(&self) -> Result<ClusterView, ClusterError> {
        let lease_ms = self.config.lease_ms as i64;
        let Some(store) = &self.store else {
            let now = common::time::now_ms();
            // the only instance, and the leader of every job for as long as it runs
            let leases = JOBS
                .iter()
                .map(|j| LeaseRow {
                    name: j.to_string(),
                    holder: self.id().to_string(),
                    epoch: 0,
                    expires_ms: i64::MAX,
                })
                .collect();
            let mut v = registry::view(
                self.id(),
                lease_ms,
                now,
                vec![InstanceRow {
                    id: self.id().to_string(),
                    started_ms: now,
                    heartbeat_ms: now,
                    mqtt_addr: self.me.get().and_then(|m| m.mqtt_addr.clone()),
                    http_addr: self.me.get().and_then(|m| m.http_addr.clone()),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    stopped_ms: None,
                }],
                leases,
            );
            v.backend = "sled";
            return Ok(v);
        };
        let s = store.clone();
        let (now, rows, leases) = store.run(async move {
            let client = s.client().await?;
            pg::read(&**client).await
        })?;
        Ok(registry::view(self.id(), lease_ms, now, rows, leases))
    }

    /// This instance's leaderships, for health and `/metrics`.
    pub fn snapshot(&self) -> LeadershipSnapshot {
        self.leadership.snapshot()
    }
}

fn timing(c: &ClusterConfig) -> LeaseTiming {
    LeaseTiming::new(c.heartbeat_ms, c.lease_ms)
}
