//! `fleetctl store migrate --from DATA_DIR --to URL`: a sled installation copied into
//! PostgreSQL.
//!
//! What is copied, in this order: API tokens (`tokens.json`), births, delivery state (the
//! dedup window: a machine's resent records stay duplicates), raw history rows, 1-minute
//! rollups, the alerts state (alerts, silences, incidents), the maintenance windows added
//! through the API, commands, rollouts, the notification outbox, the audit log and the estate
//! (retailers, stores). The sled store must not be in use (sled locks it: stop the server first), and its
//! ingest journal must be empty (records acknowledged but not yet in sled: a start and stop
//! of the server replays them).
//!
//! Idempotent, and never overwrites what the database already holds: rows are inserted with
//! `ON CONFLICT DO NOTHING`; births, delivery, commands, rollouts, tokens, retailers and stores
//! only where their
//! key is missing; the alerts state only into a database without one; audit entries after
//! those a previous run copied (counted in `server_state`). A rerun copies what is new and
//! says what was already there, so a run that was interrupted is finished by running it
//! again. History older than the raw (or rollup) retention has no partition to go to: it is
//! counted as skipped.
//!
//! Verified: after each batch of history and after each kind, the database is asked for the
//! keys of what was read (device, time and seq of a row; device and minute of a rollup; the
//! id or name of the rest): `verified` counts those it has, and fewer than were read and not
//! skipped fails the run ([`MigrateError::Verify`]). Progress is reported as it goes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::DeviceId;
use serde::Serialize;

use super::health::StorageHealth;
use crate::alerts::pg::{PgAlerts, STATE_KEY};
use crate::alerts::store::AlertStore;
use crate::audit::{AuditFile, AuditLog};
use crate::auth::{TokenFile, TokenStore};
use crate::commands::pg::{write_record, write_rollout};
use crate::commands::store::{CommandStore, SledCommandStore};
use crate::estate::pg::PgEstate;
use crate::estate::store::{EstateStore, SledEstate};
use crate::history::store::HistoryStore;
use crate::ingest::journal::Journal;
use crate::ingest::pg::{write_birth, write_delivery};
use crate::ingest::store::IngestStore;
use crate::notify::outbox::OutboxStore;
use crate::notify::outbox::pg_store::PgOutbox;
use crate::notify::outbox::sled_store::SledOutbox;
use crate::pg::PgError;
use crate::pg::config::PgConfig;
use crate::pg::history::{
    MetricAgg, MetricIds, MinuteRollup, RawRow, RawWriter, WriteMode, system_time, write_rollups,
};
use crate::pg::partitions::{AHEAD_DAYS, Retention, day_of, horizon_day};
use crate::pg::store::PgStore;
use crate::store::{FleetStore, StoreError};

/// Rows per transaction of the history copy.
pub const COPY_BATCH: usize = 2_048;

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "--from: {path} holds {records} records not yet in the sled store: start fleet-server on \
         this data directory once and stop it (it replays them), then migrate"
    )]
    Journal { path: PathBuf, records: usize },
    #[error(
        "--from: cannot open the sled store in {path} (is a fleet-server running on it? stop it \
         first): {error}"
    )]
    Sled { path: PathBuf, error: StoreError },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Postgres(#[from] PgError),
    #[error("--from: {0}")]
    Tokens(#[from] crate::auth::TokenError),
    #[error("--from: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Outbox(#[from] crate::notify::outbox::OutboxError),
    #[error(
        "verification failed: {kind}: {expected} copied or already there, but the database has \
         {found} of them"
    )]
    Verify {
        kind: &'static str,
        expected: u64,
        found: u64,
    },
}

/// Of one kind: what was read from sled, what the database did not have yet, what could not
/// go anywhere, and how many of those read (and not skipped) the database has afterwards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Copied {
    pub read: u64,
    pub new: u64,
    pub skipped: u64,
    pub verified: u64,
}

impl Copied {
    /// Read and not skipped: what the database must have.
    fn kept(&self) -> u64 {
        self.read - self.skipped
    }

    /// Already in the database.
    pub fn already(&self) -> u64 {
        self.kept().saturating_sub(self.new)
    }

    /// Fails unless the database has everything kept.
    fn verify(self, kind: &'static str) -> Result<Copied, MigrateError> {
        if self.verified < self.kept() {
            return Err(MigrateError::Verify {
                kind,
                expected: self.kept(),
                found: self.verified,
            });
        }
        Ok(self)
    }
}

/// What one run copied, by kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MigrateReport {
    pub tokens: Copied,
    pub devices: Copied,
    pub delivery: Copied,
    pub raw_rows: Copied,
    pub rollups: Copied,
    pub alerts: Copied,
    pub silences: Copied,
    pub incidents: Copied,
    pub commands: Copied,
    pub rollouts: Copied,
    pub windows: Copied,
    pub outbox: Copied,
    pub audit: Copied,
    pub retailers: Copied,
    pub stores: Copied,
}

impl MigrateReport {
    /// `(kind, copied)` in the order of the copy (for printing).
    pub fn kinds(&self) -> [(&'static str, Copied); 15] {
        [
            ("tokens", self.tokens),
            ("devices", self.devices),
            ("delivery", self.delivery),
            ("raw rows", self.raw_rows),
            ("rollups", self.rollups),
            ("alerts", self.alerts),
            ("silences", self.silences),
            ("incidents", self.incidents),
            ("commands", self.commands),
            ("rollouts", self.rollouts),
            ("windows", self.windows),
            ("outbox", self.outbox),
            ("audit entries", self.audit),
            ("retailers", self.retailers),
            ("stores", self.stores),
        ]
    }
}

/// Progress: the kind being copied and how many of it so far.
pub type Progress<'a> = &'a mut dyn FnMut(&str, u64);

/// The `server_state` key counting the audit entries copied from `data_dir`.
fn audit_key(data_dir: &Path) -> String {
    let dir = data_dir.canonicalize().unwrap_or_else(|_| data_dir.to_path_buf());
    format!("migrate:audit:{}", dir.display())
}

/// Copies the sled store in `data_dir` into the database of `to` (module docs).
pub fn migrate(
    data_dir: &Path,
    to: &PgConfig,
    retention: Retention,
    progress: Progress<'_>,
) -> Result<MigrateReport, MigrateError> {
    let journal = data_dir.join("ingest.journal");
    let pending = Journal::replay(&journal)?.len();
    if pending > 0 {
        return Err(MigrateError::Journal {
            path: journal,
            records: pending,
        });
    }
    let sled_path = data_dir.join("fleet.sled");
    let sled = FleetStore::open(&sled_path).map_err(|error| MigrateError::Sled {
        path: sled_path.clone(),
        error,
    })?;
    let now = common::time::now_ms();
    let health = Arc::new(StorageHealth::new("postgres"));
    let (pg, _) = PgStore::open(to, retention, health, now)?;
    let tokens = copy_tokens(&pg, &TokenFile::open(&data_dir.join("tokens.json"))?)?;
    progress("tokens", tokens.read);
    let (devices, delivery) = copy_devices(&pg, &sled, now)?;
    progress("devices", devices.read);
    let ids = pg.run({
        let s = pg.clone();
        async move { MetricIds::load(&**s.client().await?).await }
    })?;
    let mut writer = RawWriter::new(ids, WriteMode::Insert, retention.raw_ms);
    let (mut raw_rows, mut rollups) = (Copied::default(), Copied::default());
    for device in HistoryStore::known_devices(&sled)? {
        copy_raw(&pg, &sled, &device, &mut writer, now, &mut raw_rows, progress)?;
        copy_rollups(
            &pg,
            &sled,
            &device,
            writer.ids(),
            retention,
            now,
            &mut rollups,
            progress,
        )?;
    }
    let (alerts, silences, incidents) = copy_alerts(&pg, &sled)?;
    progress("alerts", alerts.read);
    let windows = copy_windows(&pg, &sled)?;
    let (commands, rollouts) = copy_commands(&pg, &SledCommandStore::open(&sled)?)?;
    progress("commands", commands.read);
    let outbox = copy_outbox(&pg, &sled)?;
    progress("outbox", outbox.read);
    let audit = copy_audit(&pg, data_dir)?;
    progress("audit entries", audit.read);
    let (retailers, stores) = copy_estate(&pg, &sled)?;
    progress("stores", stores.read);
    Ok(MigrateReport {
        tokens: tokens.verify("tokens")?,
        devices: devices.verify("devices")?,
        delivery: delivery.verify("delivery")?,
        raw_rows: raw_rows.verify("raw rows")?,
        rollups: rollups.verify("rollups")?,
        alerts: alerts.verify("alerts")?,
        silences: silences.verify("silences")?,
        incidents: incidents.verify("incidents")?,
        commands: commands.verify("commands")?,
        rollouts: rollouts.verify("rollouts")?,
        windows: windows.verify("windows")?,
        outbox: outbox.verify("outbox")?,
        audit: audit.verify("audit entries")?,
        retailers: retailers.verify("retailers")?,
        stores: stores.verify("stores")?,
    })
}

/// Those of `keys` the database has (`sql` takes them as `$1`, a text array).
async fn existing(s: &PgStore, sql: &'static str, keys: Vec<String>) -> Result<HashSet<String>, PgError> {
    let client = s.client().await?;
    let rows = client
        .query(sql, &[&keys])
        .await
        .map_err(PgError::db("reading what exists"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// How many of `keys` the database has.
fn count_existing(pg: &PgStore, sql: &'static str, keys: Vec<String>) -> Result<u64, MigrateError> {
    let s = pg.clone();
    let have = pg.run(async move { existing(&s, sql, keys).await })?;
    Ok(have.len() as u64)
}

/// What of `keys` (read from sled) the database lacks, by `sql` (see [`existing`]).
fn missing<'a>(
    pg: &PgStore,
    sql: &'static str,
    keys: impl Iterator<Item = &'a str>,
) -> Result<(Copied, HashSet<String>), MigrateError> {
    let keys: Vec<String> = keys.map(str::to_string).collect();
    let s = pg.clone();
    let k = keys.clone();
    let have = pg.run(async move { existing(&s, sql, k).await })?;
    let copied = Copied {
        read: keys.len() as u64,
        new: keys.iter().filter(|k| !have.contains(*k)).count() as u64,
        ..Default::default()
    };
    Ok((copied, have))
}

const TOKENS_HAVE: &str = "SELECT name FROM tokens WHERE name = ANY($1)";
const DEVICES_HAVE: &str = "SELECT device FROM devices WHERE device = ANY($1)";
const DELIVERY_HAVE: &str = "SELECT device FROM delivery WHERE device = ANY($1)";
const COMMANDS_HAVE: &str = "SELECT id FROM commands WHERE id = ANY($1)";
const ROLLOUTS_HAVE: &str = "SELECT id FROM rollouts WHERE id = ANY($1)";
const ALERTS_HAVE: &str = "SELECT id FROM alerts WHERE id = ANY($1)";
const SILENCES_HAVE: &str = "SELECT id FROM silences WHERE id = ANY($1)";
const INCIDENTS_HAVE: &str = "SELECT id FROM incidents WHERE id = ANY($1)";
const OUTBOX_HAVE: &str = "SELECT dedup_key FROM notification_outbox WHERE dedup_key = ANY($1)";

fn copy_tokens(pg: &PgStore, file: &TokenFile) -> Result<Copied, MigrateError> {
    let entries = file.list();
    let (mut out, have) = missing(pg, TOKENS_HAVE, entries.iter().map(|e| e.name.as_str()))?;
    let fresh: Vec<_> = entries
        .iter()
        .filter(|e| !have.contains(&e.name))
        .cloned()
        .collect();
    let s = pg.clone();
    pg.run(async move {
        let mut client = s.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(PgError::db("tokens transaction"))?;
        for e in &fresh {
            let role = serde_json::to_value(e.role)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string));
            tx.execute(
                "INSERT INTO tokens (name, role, sha256, created_at, expires_at, scope)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                &[
                    &e.name,
                    &role.unwrap_or_default(),
                    &e.sha256,
                    &system_time(e.created_ms),
                    &e.expires_ms.map(system_time),
                    // a scoped token must stay scoped: copied without it, it would see all
                    &e.scope.as_ref().map(|s| s.to_string()),
                ],
            )
            .await
            .map_err(PgError::db("copying a token"))?;
        }
        tx.commit().await.map_err(PgError::db("tokens commit"))
    })?;
    out.verified = count_existing(pg, TOKENS_HAVE, entries.into_iter().map(|e| e.name).collect())?;
    Ok(out)
}

fn copy_devices(pg: &PgStore, sled: &FleetStore, now: i64) -> Result<(Copied, Copied), MigrateError> {
    let births = sled.load_births()?;
    let delivery = sled.load_delivery()?;
    let (mut b, have_births) = missing(pg, DEVICES_HAVE, births.keys().map(DeviceId::as_str))?;
    let (mut d, have_delivery) = missing(pg, DELIVERY_HAVE, delivery.keys().map(DeviceId::as_str))?;
    let birth_ids: Vec<String> = births.keys().map(|d| d.to_string()).collect();
    let delivery_ids: Vec<String> = delivery.keys().map(|d| d.to_string()).collect();
    let births: Vec<_> = births
        .into_iter()
        .filter(|(d, _)| !have_births.contains(d.as_str()))
        .collect();
    let delivery: Vec<_> = delivery
        .into_iter()
        .filter(|(d, _)| !have_delivery.contains(d.as_str()))
        .collect();
    let s = pg.clone();
    pg.run(async move {
        let mut client = s.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(PgError::db("devices transaction"))?;
        for (device, birth) in &births {
            write_birth(&tx, device, birth, now).await?;
        }
        write_delivery(&tx, &delivery).await?;
        tx.commit().await.map_err(PgError::db("devices commit"))
    })?;
    b.verified = count_existing(pg, DEVICES_HAVE, birth_ids)?;
    d.verified = count_existing(pg, DELIVERY_HAVE, delivery_ids)?;
    Ok((b, d))
}

/// True when the raw writer stores `r` at `now` (its seq is valid and a partition keeps its
/// day), as [`RawWriter::write_in`] decides.
fn kept_raw(r: &RawRow, first_day: i64, last_day: i64) -> bool {
    i64::try_from(r.seq).is_ok_and(|s| s > 0) && (first_day..=last_day).contains(&day_of(r.time_ms))
}

fn copy_raw(
    pg: &PgStore,
    sled: &FleetStore,
    device: &DeviceId,
    writer: &mut RawWriter,
    now: i64,
    out: &mut Copied,
    progress: Progress<'_>,
) -> Result<(), MigrateError> {
    let (first_day, last_day) = (
        horizon_day(now, writer.raw_retention_ms()),
        day_of(now) + AHEAD_DAYS,
    );
    let mut rows = FleetStore::history_iter(sled, device, i64::MIN / 2, i64::MAX / 2).peekable();
    while rows.peek().is_some() {
        let batch: Vec<RawRow> = rows
            .by_ref()
            .take(COPY_BATCH)
            .map(|r| {
                r.map(|r| RawRow {
                    device: device.clone(),
                    time_ms: r.ts_ms,
                    seq: r.seq,
                    metrics: r.metrics,
                })
            })
            .collect::<Result<_, _>>()?;
        let kept: Vec<&RawRow> = batch
            .iter()
            .filter(|r| kept_raw(r, first_day, last_day))
            .collect();
        let keys = (
            kept.iter().map(|r| r.device.to_string()).collect::<Vec<_>>(),
            kept.iter().map(|r| system_time(r.time_ms)).collect::<Vec<_>>(),
            kept.iter().map(|r| r.seq as i64).collect::<Vec<_>>(),
        );
        let (s, mut w) = (pg.clone(), writer.clone());
        let (w, report, found) = pg.run(async move {
            let mut client = s.client().await?;
            let report = w.write(&mut client, &batch, now).await?;
            let found: i64 = client
                .query_one(
                    "SELECT count(*) FROM telemetry t
                     JOIN unnest($1::text[], $2::timestamptz[], $3::int8[]) AS k(device, time, seq)
                       ON t.device = k.device AND t.time = k.time AND t.seq = k.seq",
                    &[&keys.0, &keys.1, &keys.2],
                )
                .await
                .map_err(PgError::db("verifying raw rows"))?
                .get(0);
            Ok((w, report, found))
        })?;
        *writer = w;
        out.read += report.inserted + report.duplicates + report.outside_retention + report.invalid;
        out.new += report.inserted;
        out.skipped += report.outside_retention + report.invalid;
        out.verified += found.max(0) as u64;
        progress("raw rows", out.read);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // one step of `migrate`, with its running totals
fn copy_rollups(
    pg: &PgStore,
    sled: &FleetStore,
    device: &DeviceId,
    ids: &MetricIds,
    retention: Retention,
    now: i64,
    out: &mut Copied,
    progress: Progress<'_>,
) -> Result<(), MigrateError> {
    let (first, last) = (horizon_day(now, retention.rollup_ms), day_of(now) + AHEAD_DAYS);
    let mut rows = FleetStore::rollups_iter(sled, device, i64::MIN / 2, i64::MAX / 2).peekable();
    while rows.peek().is_some() {
        let mut batch = Vec::new();
        for r in rows.by_ref().take(COPY_BATCH) {
            let r = r?;
            out.read += 1;
            if !(first..=last).contains(&day_of(r.minute_ms)) {
                out.skipped += 1;
                continue;
            }
            batch.push(MinuteRollup {
                device: device.clone(),
                minute_ms: r.minute_ms,
                metrics: r
                    .metrics
                    .into_iter()
                    .map(|(n, a)| {
                        (
                            n,
                            MetricAgg {
                                min: a.min,
                                max: a.max,
                                sum: a.sum,
                                count: a.count,
                            },
                        )
                    })
                    .collect(),
            });
        }
        let (s, ids) = (pg.clone(), ids.clone());
        // names of rollups are those of raw rows, numbered by the raw copy; a minute whose raw
        // rows are gone may name one that is not: number it first
        let names: Vec<String> = batch
            .iter()
            .flat_map(|r| r.metrics.iter().map(|(n, _)| n.clone()))
            .collect();
        let (fresh, found) = pg.run(async move {
            let mut client = s.client().await?;
            let mut ids = ids;
            ids.ensure(&client, names.iter().map(String::as_str)).await?;
            let devices: Vec<&str> = batch.iter().map(|r| r.device.as_str()).collect();
            let minutes: Vec<std::time::SystemTime> =
                batch.iter().map(|r| system_time(r.minute_ms)).collect();
            const HAVE: &str = "SELECT r.minute FROM rollups_1m r
                 JOIN unnest($1::text[], $2::timestamptz[]) AS k(device, minute)
                   ON r.device = k.device AND r.minute = k.minute";
            let tx = client
                .transaction()
                .await
                .map_err(PgError::db("rollups transaction"))?;
            // only minutes the database does not have: the server may have rolled them up since
            let have: HashSet<i64> = tx
                .query(HAVE, &[&devices, &minutes])
                .await
                .map_err(PgError::db("reading rollups"))?
                .iter()
                .map(|r| crate::pg::history::millis(r.get(0)))
                .collect();
            let fresh: Vec<MinuteRollup> = batch
                .iter()
                .filter(|r| !have.contains(&r.minute_ms))
                .cloned()
                .collect();
            write_rollups(&tx, &ids, &fresh).await?;
            tx.commit().await.map_err(PgError::db("rollups commit"))?;
            let found = client
                .query(HAVE, &[&devices, &minutes])
                .await
                .map_err(PgError::db("verifying rollups"))?
                .len();
            Ok((fresh.len() as u64, found as u64))
        })?;
        out.new += fresh;
        out.verified += found;
        progress("rollups", out.read);
    }
    Ok(())
}

/// Alerts, silences and incidents: copied into a database without an alerts state; a
/// database with one of its own keeps it (what it lacks of the sled state is skipped).
fn copy_alerts(pg: &PgStore, sled: &FleetStore) -> Result<(Copied, Copied, Copied), MigrateError> {
    let saved = AlertStore::load(sled)?;
    let Some(engine) = saved.engine else {
        return Ok(Default::default());
    };
    let corr = saved.correlator.unwrap_or_else(|| {
        crate::incidents::Correlator::new(crate::incidents::config::CorrelatorConfig::default()).export()
    });
    let alert_ids: Vec<String> = engine
        .active
        .iter()
        .chain(&engine.history)
        .map(|a| a.id.clone())
        .collect();
    let silence_ids: Vec<String> = engine.silences.iter().map(|s| s.id.clone()).collect();
    let incident_ids: Vec<String> = corr
        .open
        .iter()
        .chain(&corr.recent)
        .map(|i| i.id.clone())
        .collect();
    let s = pg.clone();
    let has_state = pg.run(async move {
        let client = s.client().await?;
        let r = client
            .query_opt("SELECT 1 FROM server_state WHERE key = $1", &[&STATE_KEY])
            .await
            .map_err(PgError::db("reading server state"))?;
        Ok(r.is_some())
    })?;
    if !has_state {
        PgAlerts::new(pg.clone()).save(&engine, &corr)?;
    }
    let mut out = [
        (alert_ids, ALERTS_HAVE),
        (silence_ids, SILENCES_HAVE),
        (incident_ids, INCIDENTS_HAVE),
    ]
    .into_iter()
    .map(|(ids, sql)| {
        let read = ids.len() as u64;
        let verified = count_existing(pg, sql, ids)?;
        Ok(Copied {
            read,
            new: if has_state { 0 } else { read },
            // a database with an alerts state of its own keeps it
            skipped: if has_state { read - verified } else { 0 },
            verified,
        })
    })
    .collect::<Result<Vec<_>, MigrateError>>()?
    .into_iter();
    let mut next = || out.next().unwrap_or_default();
    Ok((next(), next(), next()))
}

/// The maintenance windows added through the API: copied into a database without any (a
/// database with a list of its own keeps it).
fn copy_windows(pg: &PgStore, sled: &FleetStore) -> Result<Copied, MigrateError> {
    let windows = AlertStore::load(sled)?.windows.unwrap_or_default();
    let pg_alerts = PgAlerts::new(pg.clone());
    let had = pg_alerts.load()?.windows;
    let copy = had.is_none() && !windows.is_empty();
    if copy {
        pg_alerts.save_windows(&windows)?;
    }
    let there = pg_alerts.load()?.windows.unwrap_or_default();
    let verified = windows.iter().filter(|w| there.contains(w)).count() as u64;
    let read = windows.len() as u64;
    Ok(Copied {
        read,
        new: if copy { read } else { 0 },
        skipped: if had.is_some() { read - verified } else { 0 },
        verified,
    })
}

/// Every outbox entry, in whatever state (delivered ones keep dropping a repeated decision),
/// where its key is missing.
fn copy_outbox(pg: &PgStore, sled: &FleetStore) -> Result<Copied, MigrateError> {
    let entries = SledOutbox::open_in(sled)?.list(None, usize::MAX)?;
    let target = PgOutbox::new(pg.clone(), "fleetctl-store-migrate");
    let mut out = Copied {
        read: entries.len() as u64,
        ..Default::default()
    };
    for e in &entries {
        if target.enqueue(e)? {
            out.new += 1;
        }
    }
    out.verified = count_existing(pg, OUTBOX_HAVE, entries.into_iter().map(|e| e.key).collect())?;
    Ok(out)
}

fn copy_commands(pg: &PgStore, sled: &SledCommandStore) -> Result<(Copied, Copied), MigrateError> {
    let records = sled.records()?;
    let rollouts = sled.rollouts()?;
    let (mut c, have) = missing(pg, COMMANDS_HAVE, records.iter().map(|r| r.id.as_str()))?;
    let (mut r, have_r) = missing(pg, ROLLOUTS_HAVE, rollouts.iter().map(|r| r.id.as_str()))?;
    let command_ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    let rollout_ids: Vec<String> = rollouts.iter().map(|r| r.id.clone()).collect();
    let records: Vec<_> = records.into_iter().filter(|r| !have.contains(&r.id)).collect();
    let rollouts: Vec<_> = rollouts.into_iter().filter(|r| !have_r.contains(&r.id)).collect();
    let s = pg.clone();
    pg.run(async move {
        let mut client = s.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(PgError::db("commands transaction"))?;
        for r in &records {
            write_record(&tx, r).await?;
        }
        for r in &rollouts {
            write_rollout(&tx, r).await?;
        }
        tx.commit().await.map_err(PgError::db("commands commit"))
    })?;
    c.verified = count_existing(pg, COMMANDS_HAVE, command_ids)?;
    r.verified = count_existing(pg, ROLLOUTS_HAVE, rollout_ids)?;
    Ok((c, r))
}

/// Audit entries have no key: the copy counts those it copied from `data_dir` in
/// `server_state` and copies the ones after them; `verified` is that count after the commit.
fn copy_audit(pg: &PgStore, data_dir: &Path) -> Result<Copied, MigrateError> {
    let entries = AuditFile::new(&data_dir.join("audit.log")).newest(usize::MAX)?;
    let key = audit_key(data_dir);
    let read_done = |pg: &PgStore, key: String| -> Result<u64, MigrateError> {
        let s = pg.clone();
        Ok(pg.run(async move {
            let client = s.client().await?;
            let r = client
                .query_opt("SELECT value FROM server_state WHERE key = $1", &[&key])
                .await
                .map_err(PgError::db("reading server state"))?;
            Ok(r.and_then(|r| r.get::<_, serde_json::Value>(0).as_u64())
                .unwrap_or(0))
        })?)
    };
    let done = read_done(pg, key.clone())?;
    let fresh: Vec<serde_json::Value> = entries.iter().skip(done as usize).cloned().collect();
    let mut out = Copied {
        read: entries.len() as u64,
        new: fresh.len() as u64,
        ..Default::default()
    };
    let total = entries.len() as u64;
    let s = pg.clone();
    let now = common::time::now_ms();
    let k = key.clone();
    pg.run(async move {
        let mut client = s.client().await?;
        let tx = client
            .transaction()
            .await
            .map_err(PgError::db("audit transaction"))?;
        crate::pg::audit::insert(&tx, &fresh, now).await?;
        tx.execute(
            "INSERT INTO server_state (key, value, updated_at) VALUES ($1, $2, now())
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
            &[&k, &serde_json::json!(total.max(done))],
        )
        .await
        .map_err(PgError::db("recording the audit copy"))?;
        tx.commit().await.map_err(PgError::db("audit commit"))
    })?;
    out.verified = read_done(pg, key)?.min(total);
    Ok(out)
}

/// Retailers, then stores, where their id is missing (a store needs its retailer).
fn copy_estate(pg: &PgStore, sled: &FleetStore) -> Result<(Copied, Copied), MigrateError> {
    let (retailers, stores) = SledEstate::open(sled)?.load()?;
    let target = PgEstate::new(pg.clone());
    let (had_r, had_s) = target.load()?;
    let had_r: HashSet<String> = had_r.into_iter().map(|r| r.id).collect();
    let had_s: HashSet<String> = had_s.into_iter().map(|s| s.id).collect();
    let mut r = Copied {
        read: retailers.len() as u64,
        ..Default::default()
    };
    for x in retailers.iter().filter(|x| !had_r.contains(&x.id)) {
        target.put_retailer(x)?;
        r.new += 1;
    }
    let mut s = Copied {
        read: stores.len() as u64,
        ..Default::default()
    };
    for x in stores.iter().filter(|x| !had_s.contains(&x.id)) {
        target.put_store(x)?;
        s.new += 1;
    }
    let (now_r, now_s) = target.load()?;
    let now_r: HashSet<String> = now_r.into_iter().map(|r| r.id).collect();
    let now_s: HashSet<String> = now_s.into_iter().map(|s| s.id).collect();
    r.verified = retailers.iter().filter(|x| now_r.contains(&x.id)).count() as u64;
    s.verified = stores.iter().filter(|x| now_s.contains(&x.id)).count() as u64;
    Ok((r, s))
}
