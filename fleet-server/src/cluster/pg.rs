//! The cluster's statements on PostgreSQL: `instances` (register, heartbeat, stop) and
//! `leader_lease` (look, acquire-or-renew), and the read of both for the API.
//!
//! Each runs on the store's runtime ([`crate::pg::store::PgStore`]). The heartbeat and the
//! leases use a connection of their own ([`connect`]), not the pool: a pool exhausted by
//! ingest must not cost the leader its lease. That session's `statement_timeout` and
//! `lock_timeout` keep a statement from outliving the heartbeat (an acquire waits on the lease
//! row while a leader transaction holds it `FOR SHARE`).
//!
//! Every time is the database's clock (`clock_timestamp()`): instances compare nothing but
//! their own monotonic clocks ([`super::lease`]) and the database's.

use std::time::{Duration, SystemTime};

use tokio_postgres::{Client, GenericClient, NoTls};

use super::lease::{Answer, mono_ms};
use super::registry::{InstanceRow, LeaseRow};
use crate::pg::config::PgConfig;
use crate::pg::history::millis;
use crate::pg::{PgError, describe};

/// Instances silent (or stopped) for longer than this are deleted at a registration: a
/// generated id is new with every process, and the table would otherwise only grow.
pub const PRUNE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// What an instance says of itself in `instances`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Me {
    pub id: String,
    pub mqtt_addr: Option<String>,
    pub http_addr: Option<String>,
    pub version: String,
}

/// The outcome of [`register`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    Yes,
    /// A live instance (heartbeat younger than the lease, not stopped) has this id.
    InUse {
        heartbeat_age_ms: i64,
    },
}

/// A session of its own for the heartbeat and the leases, its connection task on the
/// current runtime; every statement bounded by `timeout`.
pub async fn connect(cfg: &PgConfig, timeout: Duration) -> Result<Client, PgError> {
    let (client, conn) = cfg
        .driver_config()
        .connect(NoTls)
        .await
        .map_err(|e| PgError::Connect {
            target: cfg.target().to_string(),
            detail: describe(&e),
        })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %describe(&e), "cluster session ended");
        }
    });
    let ms = timeout.as_millis().max(1);
    client
        .batch_execute(&format!(
            "SET application_name = 'fleet-server cluster'; SET statement_timeout = {ms}; \
             SET lock_timeout = {ms}"
        ))
        .await
        .map_err(PgError::db("setting up the cluster session"))?;
    Ok(client)
}

fn interval_ms(ms: i64) -> f64 {
    ms as f64
}

/// Inserts this instance (or takes over the row of a dead or stopped one with its id), and
/// prunes instances gone for [`PRUNE_AFTER`].
pub async fn register(client: &impl GenericClient, me: &Me, lease_ms: i64) -> Result<Registered, PgError> {
    let row = client
        .query_opt(
            "INSERT INTO instances AS i (id, started_at, heartbeat_at, mqtt_addr, http_addr, version)
             VALUES ($1, clock_timestamp(), clock_timestamp(), $2, $3, $4)
             ON CONFLICT (id) DO UPDATE
             SET started_at = EXCLUDED.started_at, heartbeat_at = EXCLUDED.heartbeat_at,
                 mqtt_addr = EXCLUDED.mqtt_addr, http_addr = EXCLUDED.http_addr,
                 version = EXCLUDED.version, stopped_at = NULL
             WHERE i.stopped_at IS NOT NULL
                OR i.heartbeat_at <= clock_timestamp() - $5::float8 * interval '1 millisecond'
             RETURNING id",
            &[
                &me.id,
                &me.mqtt_addr,
                &me.http_addr,
                &me.version,
                &interval_ms(lease_ms),
            ],
        )
        .await
        .map_err(PgError::db("registering the instance"))?;
    if row.is_none() {
        let age = client
            .query_one(
                "SELECT (extract(epoch FROM clock_timestamp() - heartbeat_at) * 1000)::bigint
                 FROM instances WHERE id = $1",
                &[&me.id],
            )
            .await
            .map_err(PgError::db("reading the instance"))?;
        return Ok(Registered::InUse {
            heartbeat_age_ms: age.get(0),
        });
    }
    client
        .execute(
            "DELETE FROM instances WHERE id <> $1
               AND coalesce(stopped_at, heartbeat_at) < clock_timestamp() - $2::float8 * interval '1 second'",
            &[&me.id, &(PRUNE_AFTER.as_secs() as f64)],
        )
        .await
        .map_err(PgError::db("pruning instances"))?;
    Ok(Registered::Yes)
}

/// Proves this instance alive (and writes its row again if it was pruned meanwhile).
pub async fn heartbeat(client: &impl GenericClient, me: &Me) -> Result<(), PgError> {
    client
        .execute(
            "INSERT INTO instances AS i (id, started_at, heartbeat_at, mqtt_addr, http_addr, version)
             VALUES ($1, clock_timestamp(), clock_timestamp(), $2, $3, $4)
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = clock_timestamp(), stopped_at = NULL",
            &[&me.id, &me.mqtt_addr, &me.http_addr, &me.version],
        )
        .await
        .map_err(PgError::db("heartbeat"))?;
    Ok(())
}

/// A clean stop: `stopped_at` set, and every lease this instance holds expires now, so that
/// another instance takes it over at its next heartbeat instead of a lease later. How many
/// leases it gave up.
pub async fn stopped(client: &impl GenericClient, id: &str) -> Result<u64, PgError> {
    client
        .execute(
            "UPDATE instances SET stopped_at = clock_timestamp() WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(PgError::db("marking the instance stopped"))?;
    client
        .execute(
            "UPDATE leader_lease SET expires_at = clock_timestamp()
             WHERE holder = $1 AND expires_at > clock_timestamp()",
            &[&id],
        )
        .await
        .map_err(PgError::db("releasing leases"))
}

/// Who holds lease `name`, at which epoch, and whether it expired; None: nobody ever did.
pub async fn look(client: &impl GenericClient, name: &str) -> Result<Option<(String, i64, bool)>, PgError> {
    let row = client
        .query_opt(
            "SELECT holder, epoch, expires_at <= clock_timestamp() FROM leader_lease WHERE name = $1",
            &[&name],
        )
        .await
        .map_err(PgError::db("reading a lease"))?;
    Ok(row.map(|r| (r.get(0), r.get(1), r.get(2))))
}

/// The one statement that decides: lease `name` becomes (or stays) `holder`'s for `lease_ms`
/// from the database's now when it expired, never existed, or is already `holder`'s. Taking
/// it (over, or back after it lapsed) bumps the epoch; a renewal keeps it. The epoch when it
/// is `holder`'s now; None when another holds it.
pub async fn acquire(
    client: &impl GenericClient,
    name: &str,
    holder: &str,
    lease_ms: i64,
) -> Result<Option<i64>, PgError> {
    let row = client
        .query_opt(
            "INSERT INTO leader_lease AS l (name, holder, epoch, expires_at)
             VALUES ($1, $2, 1, clock_timestamp() + $3::float8 * interval '1 millisecond')
             ON CONFLICT (name) DO UPDATE
             SET holder = EXCLUDED.holder,
                 epoch = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > clock_timestamp()
                              THEN l.epoch ELSE l.epoch + 1 END,
                 expires_at = EXCLUDED.expires_at
             WHERE l.holder = EXCLUDED.holder OR l.expires_at <= clock_timestamp()
             RETURNING epoch",
            &[&name, &holder, &interval_ms(lease_ms)],
        )
        .await
        .map_err(PgError::db("acquiring a lease"))?;
    Ok(row.map(|r| r.get(0)))
}

/// One attempt on lease `name`: a leader renews at once; a follower first looks (a plain read
/// takes no lock, so followers never queue behind the leader's transactions) and tries to take
/// it only when it lapsed. The time the deciding statement was sent (this process's monotonic
/// clock), and the answer.
pub async fn attempt(
    client: &impl GenericClient,
    name: &str,
    holder: &str,
    lease_ms: i64,
    believes_held: bool,
) -> Result<(i64, Answer), PgError> {
    if !believes_held
        && let Some((h, epoch, false)) = look(client, name).await?
        && h != holder
    {
        return Ok((mono_ms(), Answer::Taken { holder: h, epoch }));
    }
    let sent = mono_ms();
    if let Some(epoch) = acquire(client, name, holder, lease_ms).await? {
        return Ok((sent, Answer::Held { epoch }));
    }
    // taken between the look and the acquire, or from under a leader
    Ok((
        sent,
        match look(client, name).await? {
            Some((h, epoch, _)) => Answer::Taken { holder: h, epoch },
            None => Answer::Failed,
        },
    ))
}

/// The database's now, every instance and every lease.
pub async fn read(client: &impl GenericClient) -> Result<(i64, Vec<InstanceRow>, Vec<LeaseRow>), PgError> {
    let now: SystemTime = client
        .query_one("SELECT clock_timestamp()", &[])
        .await
        .map_err(PgError::db("reading the clock"))?
        .get(0);
    let instances = client
        .query(
            "SELECT id, started_at, heartbeat_at, mqtt_addr, http_addr, version, stopped_at
             FROM instances",
            &[],
        )
        .await
        .map_err(PgError::db("reading instances"))?
        .iter()
        .map(|r| InstanceRow {
            id: r.get(0),
            started_ms: millis(r.get(1)),
            heartbeat_ms: millis(r.get(2)),
            mqtt_addr: r.get(3),
            http_addr: r.get(4),
            version: r.get(5),
            stopped_ms: r.get::<_, Option<SystemTime>>(6).map(millis),
        })
        .collect();
    let leases = client
        .query(
            "SELECT name, holder, epoch, expires_at FROM leader_lease ORDER BY name",
            &[],
        )
        .await
        .map_err(PgError::db("reading leases"))?
        .iter()
        .map(|r| LeaseRow {
            name: r.get(0),
            holder: r.get(1),
            epoch: r.get(2),
            expires_ms: millis(r.get(3)),
        })
        .collect();
    Ok((millis(now), instances, leases))
}
