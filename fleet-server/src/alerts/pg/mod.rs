//! The alerts actor's PostgreSQL store: the engine's and the correlator's state in the
//! tables people and Grafana read (`fleet_alerts`).
//!
//! | export | table |
//! | --- | --- |
//! | active and resolved alerts | `alerts`, one row per alert id (resolved ones stay past the engine's cap) |
//! | silences | `silences` (exactly the engine's set) |
//! | generations and cooldowns | `alert_pairs`, one row per (rule, device) |
//! | open and recent incidents | `incidents`, one row per incident id |
//! | versions, the correlator's sequence and firing set | `server_state` key [`STATE_KEY`] |
//! | maintenance windows added through the API | `server_state` key [`WINDOWS_KEY`] (a JSON list) |
//!
//! [`PgAlerts::save`] writes, in one transaction, only what differs from what it wrote (or
//! loaded) last; an alert that left the engine without resolving (a pending one cancelled)
//! is deleted, so the open-alert index `alerts_one_open` holds only open alerts. Resolved
//! alerts are written before open ones, so a new generation of a (rule, device) never meets
//! the open row of the one it follows.
//!
//! Several instances share these tables (docs/architecture.md, "Several instances"): the
//! unique index [`OPEN_INDEX`] allows one open alert per (rule, device), and the row records
//! which instance's insert made it (`opened_by`). [`AlertStore::claim`] is that insert for an
//! alert the actor just opened, and says whose alert is open; [`AlertStore::load_device`]
//! reads one device's open alerts and counters. An export's open alert that the index keeps
//! out (another instance's is open) is skipped inside a savepoint, never failing the rest.
//!
//! - `rows`: an alert's and an incident's row, read and written, and the reads both use
//! - `fleet`: the whole fleet's alerts and incidents, read and written by any instance
//!   (lists, the fleet-wide correlator's fenced writes, a conditional acknowledgement or
//!   resolve of another instance's alert)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::DeviceId;
use serde::Serialize;

use super::alert::{Alert, AlertState};
use super::engine::{self, DeviceAlerts, EngineState, PairCooldown, PairCounter};
use super::maintenance::AddedWindow;
use super::silence::{Matcher, Silence};
use super::store::{AlertStore, Claim, FleetAlerts, HandOutcome, SavedAlerts, SharedIncidents};
use crate::cluster::lease::LeaseToken;
use crate::incidents::incident::{self, CorrelatorState, FiringAlert, Incident};
use crate::pg::PgError;
use crate::pg::history::system_time;
use crate::pg::store::PgStore;
use crate::store::StoreError;
use rows::{
    UPSERT, alert_of, alerts_of, bad, db, insert_alert, json, ms, open_and_recent_alerts,
    open_and_recent_incidents, write_incident,
};

use fleet::ByHand;

mod fleet;
mod rows;

/// `server_state` key of the versions, the correlator's sequence and its firing set.
pub const STATE_KEY: &str = "alerts";
/// `server_state` key of the maintenance windows added through the API.
pub const WINDOWS_KEY: &str = "maintenance";
/// The unique index that allows one open alert per (rule, subject) (migration 0001).
pub const OPEN_INDEX: &str = "alerts_one_open";

/// What the tables do not hold.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
struct Meta {
    engine_version: u32,
    correlator_version: u32,
    next_seq: u64,
    firing: Vec<FiringAlert>,
}

type Pair = (String, DeviceId);

/// What the database holds, as last written or loaded.
#[derive(Debug, Default, Clone)]
struct Written {
    alerts: HashMap<String, Alert>,
    silences: HashMap<String, Silence>,
    pairs: HashMap<Pair, (u64, Option<i64>)>,
    incidents: HashMap<String, Incident>,
    meta: Option<Meta>,
}

/// The alerts actor's state on PostgreSQL (module docs).
pub struct PgAlerts {
    store: PgStore,
    written: Mutex<Arc<Written>>,
    /// `opened_by` of the alerts this instance opens: its `[cluster] instance_id`.
    opened_by: String,
}

impl PgAlerts {
    pub fn new(store: PgStore) -> PgAlerts {
        PgAlerts {
            store,
            written: Mutex::default(),
            opened_by: String::new(),
        }
    }

    /// The instance whose alerts these are (`opened_by` of the rows it opens).
    pub fn opened_by(mut self, instance: impl Into<String>) -> PgAlerts {
        self.opened_by = instance.into();
        self
    }

    fn written(&self) -> std::sync::MutexGuard<'_, Arc<Written>> {
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn load(store: PgStore) -> Result<(SavedAlerts, Written), PgError> {
    let client = store.client().await?;
    let alerts = open_and_recent_alerts(&**client).await?;
    let mut active = Vec::new();
    let mut history = Vec::new();
    for a in alerts {
        match a.state {
            AlertState::Resolved => history.push(a),
            _ => active.push(a),
        }
    }
    history.sort_by(|a, b| (a.resolved_ms, &a.id).cmp(&(b.resolved_ms, &b.id)));
    let silences: Vec<Silence> = client
        .query("SELECT * FROM silences ORDER BY id", &[])
        .await
        .map_err(db("reading silences"))?
        .iter()
        .map(|r| {
            Ok(Silence {
                id: r.get("id"),
                matchers: serde_json::from_value::<Vec<Matcher>>(r.get("matchers"))
                    .map_err(|e| bad("reading matchers", e))?,
                expires_ms: ms(r, "expires_at").unwrap_or(0),
                created_by: r.get("created_by"),
                comment: r.get("comment"),
                created_ms: ms(r, "created_at").unwrap_or(0),
            })
        })
        .collect::<Result<_, PgError>>()?;
    let mut pairs = HashMap::new();
    for r in client
        .query(
            "SELECT rule, subject, generation, cooldown_until FROM alert_pairs",
            &[],
        )
        .await
        .map_err(db("reading alert pairs"))?
    {
        let Ok(d) = DeviceId::new(r.get::<_, &str>(1)) else {
            continue;
        };
        pairs.insert(
            (r.get::<_, String>(0), d),
            (r.get::<_, i64>(2) as u64, ms(&r, "cooldown_until")),
        );
    }
    let incidents = open_and_recent_incidents(&**client).await?;
    let mut open = Vec::new();
    let mut recent = Vec::new();
    for i in incidents {
        match i.state {
            incident::IncidentState::Open => open.push(i),
            _ => recent.push(i),
        }
    }
    recent.sort_by_key(|i| (i.resolved_ms.unwrap_or(i.updated_ms), i.id.clone()));
    let meta: Option<Meta> = client
        .query_opt("SELECT value FROM server_state WHERE key = $1", &[&STATE_KEY])
        .await
        .map_err(db("reading server state"))?
        .map(|r| serde_json::from_value(r.get(0)).map_err(|e| bad("reading server state", e)))
        .transpose()?;
    let written = Written {
        alerts: active
            .iter()
            .chain(history.iter())
            .map(|a| (a.id.clone(), a.clone()))
            .collect(),
        silences: silences.iter().map(|s| (s.id.clone(), s.clone())).collect(),
        pairs: pairs.clone(),
        incidents: open
            .iter()
            .chain(recent.iter())
            .map(|i| (i.id.clone(), i.clone()))
            .collect(),
        meta: meta.clone(),
    };
    let any_engine = !active.is_empty() || !history.is_empty() || !silences.is_empty() || !pairs.is_empty();
    let engine = (meta.is_some() || any_engine).then(|| {
        let mut generations = Vec::new();
        let mut cooldowns = Vec::new();
        for ((rule, device), (generation, cooldown)) in &pairs {
            generations.push(PairCounter {
                rule: rule.clone(),
                device: device.clone(),
                generation: *generation,
            });
            if let Some(until_ms) = cooldown {
                cooldowns.push(PairCooldown {
                    rule: rule.clone(),
                    device: device.clone(),
                    until_ms: *until_ms,
                });
            }
        }
        EngineState {
            version: meta.as_ref().map_or(engine::STATE_VERSION, |m| m.engine_version),
            active,
            history,
            silences,
            generations,
            cooldowns,
        }
    });
    let correlator = meta.map(|m| CorrelatorState {
        version: m.correlator_version,
        next_seq: m.next_seq,
        open,
        recent,
        firing: m.firing,
    });
    let windows = client
        .query_opt("SELECT value FROM server_state WHERE key = $1", &[&WINDOWS_KEY])
        .await
        .map_err(db("reading maintenance windows"))?
        .and_then(|r| {
            serde_json::from_value::<Vec<AddedWindow>>(r.get(0))
                .map_err(|e| tracing::error!(error = %e, "persisted maintenance windows ignored"))
                .ok()
        });
    Ok((
        SavedAlerts {
            engine,
            correlator,
            windows,
        },
        written,
    ))
}

/// The export as the tables would hold it.
fn target(engine: &EngineState, corr: &CorrelatorState) -> Written {
    let mut pairs: HashMap<Pair, (u64, Option<i64>)> = HashMap::new();
    for g in &engine.generations {
        pairs.entry((g.rule.clone(), g.device.clone())).or_default().0 = g.generation;
    }
    for c in &engine.cooldowns {
        pairs.entry((c.rule.clone(), c.device.clone())).or_default().1 = Some(c.until_ms);
    }
    Written {
        alerts: engine
            .history
            .iter()
            .chain(engine.active.iter())
            .map(|a| (a.id.clone(), a.clone()))
            .collect(),
        silences: engine
            .silences
            .iter()
            .map(|s| (s.id.clone(), s.clone()))
            .collect(),
        pairs,
        incidents: corr
            .open
            .iter()
            .chain(corr.recent.iter())
            .map(|i| (i.id.clone(), i.clone()))
            .collect(),
        meta: Some(Meta {
            engine_version: engine.version,
            correlator_version: corr.version,
            next_seq: corr.next_seq,
            firing: corr.firing.clone(),
        }),
    }
}

/// Is `e` the unique open alert per (rule, device) refusing a second one?
fn is_open_conflict(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|d| d.constraint() == Some(OPEN_INDEX))
}

/// Writes an alert; an open one that another instance's open alert of its (rule, device)
/// keeps out is skipped (false), inside a savepoint, so the rest of the export is written:
/// the alerts actor's claim ([`AlertStore::claim`]) makes this instance adopt that alert.
async fn write_alert(
    tx: &tokio_postgres::Transaction<'_>,
    a: &Alert,
    opened_by: &str,
) -> Result<bool, PgError> {
    if a.state == AlertState::Resolved {
        insert_alert(tx, a, opened_by, UPSERT)
            .await
            .map_err(db("writing an alert"))?;
        return Ok(true);
    }
    tx.batch_execute("SAVEPOINT open_alert")
        .await
        .map_err(db("writing an alert"))?;
    match insert_alert(tx, a, opened_by, UPSERT).await {
        Ok(_) => {
            tx.batch_execute("RELEASE SAVEPOINT open_alert")
                .await
                .map_err(db("writing an alert"))?;
            Ok(true)
        }
        Err(e) if is_open_conflict(&e) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT open_alert")
                .await
                .map_err(db("writing an alert"))?;
            tracing::warn!(alert = %a.id, "alert not written: another instance holds the open alert of its rule and device");
            Ok(false)
        }
        Err(e) => Err(db("writing an alert")(e)),
    }
}

/// Writes what differs between `old` and `new`.
async fn write_diff(
    tx: &tokio_postgres::Transaction<'_>,
    old: &Written,
    new: &Written,
    opened_by: &str,
) -> Result<(), PgError> {
    // alerts that left the engine open (a pending one cancelled): gone, unless another
    // instance resolved the row meanwhile (the engine dropped it on adopting the device)
    for (id, a) in &old.alerts {
        if a.state != AlertState::Resolved && !new.alerts.contains_key(id) {
            tx.execute(
                "DELETE FROM alerts WHERE id = $1 AND state IN ('pending', 'firing')",
                &[id],
            )
            .await
            .map_err(db("deleting an alert"))?;
        }
    }
    let changed = |a: &&Alert| old.alerts.get(&a.id) != Some(*a);
    let (resolved, open): (Vec<&Alert>, Vec<&Alert>) = new
        .alerts
        .values()
        .filter(changed)
        .partition(|a| a.state == AlertState::Resolved);
    for a in resolved.into_iter().chain(open) {
        write_alert(tx, a, opened_by).await?;
    }
    for id in old.silences.keys().filter(|id| !new.silences.contains_key(*id)) {
        tx.execute("DELETE FROM silences WHERE id = $1", &[id])
            .await
            .map_err(db("deleting a silence"))?;
    }
    for s in new
        .silences
        .values()
        .filter(|s| old.silences.get(&s.id) != Some(*s))
    {
        tx.execute(
            "INSERT INTO silences (id, matchers, expires_at, created_by, comment, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO UPDATE SET matchers = EXCLUDED.matchers,
                 expires_at = EXCLUDED.expires_at, created_by = EXCLUDED.created_by,
                 comment = EXCLUDED.comment, created_at = EXCLUDED.created_at",
            &[
                &s.id,
                &json(&s.matchers)?,
                &system_time(s.expires_ms),
                &s.created_by,
                &s.comment,
                &system_time(s.created_ms),
            ],
        )
        .await
        .map_err(db("writing a silence"))?;
    }
    for (rule, device) in old.pairs.keys().filter(|k| !new.pairs.contains_key(*k)) {
        tx.execute(
            "DELETE FROM alert_pairs WHERE rule = $1 AND subject = $2",
            &[rule, &device.as_str()],
        )
        .await
        .map_err(db("deleting an alert pair"))?;
    }
    for ((rule, device), v) in new.pairs.iter().filter(|(k, v)| old.pairs.get(*k) != Some(*v)) {
        tx.execute(
            "INSERT INTO alert_pairs (rule, subject, generation, cooldown_until)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (rule, subject) DO UPDATE SET generation = EXCLUDED.generation,
                 cooldown_until = EXCLUDED.cooldown_until",
            &[rule, &device.as_str(), &(v.0 as i64), &v.1.map(system_time)],
        )
        .await
        .map_err(db("writing an alert pair"))?;
    }
    for i in new
        .incidents
        .values()
        .filter(|i| old.incidents.get(&i.id) != Some(*i))
    {
        write_incident(tx, i).await?;
    }
    if new.meta != old.meta {
        tx.execute(
            "INSERT INTO server_state (key, value, updated_at) VALUES ($1, $2, now())
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
            &[&STATE_KEY, &json(&new.meta)?],
        )
        .await
        .map_err(db("writing server state"))?;
    }
    Ok(())
}

/// The device's open alerts and its pairs' counters; a generation is the larger of the
/// pair's row and its alerts' (a claim writes the alert before the pair's row is exported).
async fn load_device(store: PgStore, device: DeviceId) -> Result<DeviceAlerts, PgError> {
    let client = store.client().await?;
    let open = alerts_of(
        &client
            .query(
                "SELECT * FROM alerts WHERE subject = $1 AND state IN ('pending', 'firing')",
                &[&device.as_str()],
            )
            .await
            .map_err(db("reading a device's alerts"))?,
    )?;
    let rows = client
        .query(
            "SELECT rule, max(generation) AS generation, max(cooldown_until) AS cooldown_until
             FROM (SELECT rule, generation, cooldown_until FROM alert_pairs WHERE subject = $1
                   UNION ALL
                   SELECT rule, max(generation), NULL FROM alerts WHERE subject = $1 GROUP BY rule) p
             GROUP BY rule",
            &[&device.as_str()],
        )
        .await
        .map_err(db("reading a device's alert pairs"))?;
    let mut out = DeviceAlerts {
        open,
        ..Default::default()
    };
    for r in &rows {
        let rule: String = r.get("rule");
        out.generations.push(PairCounter {
            rule: rule.clone(),
            device: device.clone(),
            generation: r.get::<_, i64>("generation") as u64,
        });
        if let Some(until_ms) = ms(r, "cooldown_until") {
            out.cooldowns.push(PairCooldown {
                rule,
                device: device.clone(),
                until_ms,
            });
        }
    }
    Ok(out)
}

/// Inserts the alert unless its (rule, device) has an open alert (or its id exists), then
/// says whose the open one is ([`Claim`]).
async fn claim(store: PgStore, alert: Alert, opened_by: String) -> Result<Claim, PgError> {
    let client = store.client().await?;
    let inserted = insert_alert(&**client, &alert, &opened_by, "ON CONFLICT DO NOTHING")
        .await
        .map_err(db("claiming an alert"))?;
    if inserted == 1 {
        return Ok(Claim::Won);
    }
    let open = client
        .query_opt(
            "SELECT * FROM alerts WHERE rule = $1 AND subject = $2 AND state IN ('pending', 'firing')",
            &[&alert.rule, &alert.device.as_str()],
        )
        .await
        .map_err(db("reading the open alert"))?;
    if let Some(r) = open {
        let stored = alert_of(&r)?;
        let mine = r.get::<_, Option<String>>("opened_by").as_deref() == Some(opened_by.as_str());
        // this instance's persister wrote it first: still this instance's insert
        return Ok(if stored.id == alert.id && mine {
            Claim::Won
        } else {
            Claim::Lost(Box::new(stored))
        });
    }
    let r = client
        .query_one(
            "SELECT greatest(
                 (SELECT max(generation) FROM alerts WHERE rule = $1 AND subject = $2),
                 (SELECT generation FROM alert_pairs WHERE rule = $1 AND subject = $2)) AS g",
            &[&alert.rule, &alert.device.as_str()],
        )
        .await
        .map_err(db("reading an alert pair's generation"))?;
    let generation = r.get::<_, Option<i64>>("g").unwrap_or(0) as u64;
    Ok(Claim::Stale {
        generation: generation.max(alert.generation),
    })
}

impl AlertStore for PgAlerts {
    fn shared(&self) -> bool {
        true
    }

    fn load_device(&self, device: &DeviceId) -> Result<DeviceAlerts, StoreError> {
        Ok(self.store.run(load_device(self.store.clone(), device.clone()))?)
    }

    fn shared_incidents(&self) -> Result<SharedIncidents, StoreError> {
        Ok(self.store.run(fleet::shared_incidents(self.store.clone()))?)
    }

    fn fleet_alerts(&self) -> Result<FleetAlerts, StoreError> {
        Ok(self.store.run(fleet::fleet_alerts(self.store.clone()))?)
    }

    fn write_incidents(&self, token: &LeaseToken, incidents: &[Incident]) -> Result<(), StoreError> {
        let (s, token, incidents) = (self.store.clone(), token.clone(), incidents.to_vec());
        Ok(self.store.run(fleet::write_incidents(s, token, incidents))?)
    }

    fn stored_alerts(&self) -> Result<Vec<Alert>, StoreError> {
        Ok(self.store.run(fleet::stored_alerts(self.store.clone()))?)
    }

    fn stored_incidents(&self) -> Result<Vec<Incident>, StoreError> {
        Ok(self.store.run(fleet::stored_incidents(self.store.clone()))?)
    }

    fn ack_stored(&self, id: &str, who: &str, comment: &str, now_ms: i64) -> Result<HandOutcome, StoreError> {
        let what = (id.to_string(), who.to_string(), comment.to_string());
        Ok(self
            .store
            .run(fleet::by_hand(self.store.clone(), ByHand::Ack, what, now_ms))?)
    }

    fn resolve_stored(
        &self,
        id: &str,
        who: &str,
        comment: &str,
        now_ms: i64,
    ) -> Result<HandOutcome, StoreError> {
        let what = (id.to_string(), who.to_string(), comment.to_string());
        Ok(self
            .store
            .run(fleet::by_hand(self.store.clone(), ByHand::Resolve, what, now_ms))?)
    }

    fn handled_elsewhere(&self, ids: &[String]) -> Result<Vec<Alert>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .store
            .run(fleet::handled_elsewhere(self.store.clone(), ids.to_vec()))?)
    }

    fn claim(&self, alert: &Alert) -> Result<Claim, StoreError> {
        Ok(self
            .store
            .run(claim(self.store.clone(), alert.clone(), self.opened_by.clone()))?)
    }

    fn load(&self) -> Result<SavedAlerts, StoreError> {
        let (saved, written) = self.store.run(load(self.store.clone()))?;
        *self.written() = Arc::new(written);
        Ok(saved)
    }

    fn save(&self, engine: &EngineState, correlator: &CorrelatorState) -> Result<(), StoreError> {
        let new = Arc::new(target(engine, correlator));
        let old = self.written().clone();
        let (s, next, opener) = (self.store.clone(), new.clone(), self.opened_by.clone());
        self.store.run(async move {
            let mut client = s.client().await?;
            let tx = client.transaction().await.map_err(db("alerts transaction"))?;
            write_diff(&tx, &old, &next, &opener).await?;
            tx.commit().await.map_err(db("alerts commit"))
        })?;
        // resolved alerts and incidents past the cores' caps stay in the tables, unwritten
        *self.written() = new;
        Ok(())
    }

    fn save_windows(&self, windows: &[AddedWindow]) -> Result<(), StoreError> {
        let value = serde_json::to_value(windows).map_err(|e| bad("encoding maintenance windows", e))?;
        let s = self.store.clone();
        self.store.run(async move {
            let client = s.client().await?;
            client
                .execute(
                    "INSERT INTO server_state (key, value, updated_at) VALUES ($1, $2, now())
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
                    &[&WINDOWS_KEY, &value],
                )
                .await
                .map_err(db("writing maintenance windows"))
        })?;
        Ok(())
    }
}
