//! The commands actor's PostgreSQL store: `commands` (one row per command, with the signed
//! bytes sent to the agent), `rollouts` (one JSON document each), and the `command_outbox`
//! rows of new commands and of answered ones ([`super::outbox`]).
//!
//! With several instances each one's book is a copy that can lag (it catches up every
//! [`super::actor::CLUSTER_POLL`]); so an upsert never moves a command backwards: a final
//! state is never overwritten, a state never replaced by an earlier one, and `expired` only
//! replaces a command not yet accepted (the same rules as [`super::book`]).
//!
//! Writes never block the actor: [`PgCommands`] hands each change to a writer task on the
//! store's runtime, which coalesces a burst (the latest change of each id wins) and upserts it
//! in one transaction; a failed transaction is retried after [`RETRY_AFTER`] with whatever
//! changed meanwhile. A command is durable a few milliseconds after the actor changed it, as
//! it was with sled (whose writes reach the disk with the next flush).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::DeviceId;
use common::command::SignedCommand;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use super::book::CommandRecord;
use super::rollout::Rollout;
use super::store::CommandStore;
use super::store::LeaderWrite;
use crate::pg::PgError;
use crate::pg::history::{millis, system_time};
use crate::pg::store::PgStore;
use crate::store::StoreError;

/// Wait before a failed write is tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long dropping the store waits for the writer to write what is pending.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

enum Change {
    Put(Box<CommandRecord>),
    Remove(String),
    Rollout(Box<Rollout>, Option<LeaderWrite>),
    /// A new command's outbox row (written after the command, in the same transaction).
    Enqueue(String, DeviceId),
    /// The agent answered: the outbox row is done.
    Delivered(String),
}

/// The commands actor's store on PostgreSQL (module docs).
pub struct PgCommands {
    store: PgStore,
    tx: Option<mpsc::UnboundedSender<Change>>,
    done: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl PgCommands {
    /// Starts the writer task on the store's runtime.
    pub fn new(store: PgStore) -> PgCommands {
        let (tx, rx) = mpsc::unbounded_channel();
        let (done_tx, done) = std::sync::mpsc::channel();
        let s = store.clone();
        store.spawn(async move {
            writer(s, rx).await;
            let _ = done_tx.send(());
        });
        PgCommands {
            store,
            tx: Some(tx),
            done: std::sync::Mutex::new(done),
        }
    }

    fn send(&self, c: Change) {
        if self.tx.as_ref().is_none_or(|tx| tx.send(c).is_err()) {
            tracing::error!("command not persisted: the store's writer stopped");
        }
    }
}

impl Drop for PgCommands {
    /// Lets the writer write what is pending (a server started next reads it).
    fn drop(&mut self) {
        self.tx.take();
        let done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        if done.recv_timeout(DRAIN_TIMEOUT).is_err() {
            tracing::warn!("commands still pending when the store closed");
        }
    }
}

fn bad(context: &'static str, detail: impl ToString) -> PgError {
    PgError::Db {
        context,
        detail: detail.to_string(),
        sqlstate: None,
    }
}

fn label<T: Serialize>(x: &T) -> String {
    match serde_json::to_value(x) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

fn parse<T: DeserializeOwned>(v: serde_json::Value) -> Result<T, PgError> {
    serde_json::from_value(v).map_err(|e| bad("reading a command", e))
}

pub(super) fn record_of(r: &tokio_postgres::Row) -> Result<CommandRecord, PgError> {
    let t = |c: &str| r.get::<_, Option<std::time::SystemTime>>(c).map(millis);
    Ok(CommandRecord {
        id: r.get("id"),
        device: DeviceId::new(r.get::<_, &str>("device")).map_err(|e| bad("reading a command", e))?,
        action: parse(r.get("action"))?,
        reason: r.get("reason"),
        issued_by: r.get("issued_by"),
        created_ms: t("created_at").unwrap_or(0),
        expires_ms: t("expires_at").unwrap_or(0),
        state: parse(serde_json::Value::String(r.get("state")))?,
        updated_ms: t("updated_at").unwrap_or(0),
        output: r.get("output"),
        detail: r.get("detail"),
        sends: r.get::<_, i32>("sends").max(0) as u32,
        last_sent_ms: t("last_sent_at"),
        accepted_ms: t("accepted_at"),
        rollout: r.get("rollout"),
        signed: SignedCommand {
            payload: r.get("signed_payload"),
            signature: r.get("signature"),
        },
        dry_run: r.get("dry_run"),
        approved_by: r.get("approved_by"),
        approved_ms: t("approved_at"),
    })
}

/// Upserts one command record.
pub async fn write_record(tx: &tokio_postgres::Transaction<'_>, r: &CommandRecord) -> Result<(), PgError> {
    let action = serde_json::to_value(&r.action).map_err(|e| bad("encoding a command", e))?;
    tx.execute(
        "INSERT INTO commands (id, device, action, reason, issued_by, created_at, expires_at, state,
             updated_at, output, detail, sends, last_sent_at, accepted_at, rollout, signed_payload,
             signature, dry_run, approved_by, approved_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
             $19, $20)
         ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, updated_at = EXCLUDED.updated_at,
             output = EXCLUDED.output, detail = EXCLUDED.detail, sends = EXCLUDED.sends,
             last_sent_at = EXCLUDED.last_sent_at, accepted_at = EXCLUDED.accepted_at,
             rollout = EXCLUDED.rollout, expires_at = EXCLUDED.expires_at,
             approved_by = coalesce(commands.approved_by, EXCLUDED.approved_by),
             approved_at = coalesce(commands.approved_at, EXCLUDED.approved_at),
             -- signed once, when approved (empty while awaiting approval)
             signed_payload = CASE WHEN commands.state = 'awaiting_approval'
                 THEN EXCLUDED.signed_payload ELSE commands.signed_payload END,
             signature = CASE WHEN commands.state = 'awaiting_approval'
                 THEN EXCLUDED.signature ELSE commands.signature END
         WHERE commands.state NOT IN ('succeeded', 'failed', 'rejected', 'expired', 'timed_out')
           AND (CASE EXCLUDED.state WHEN 'awaiting_approval' THEN 0 WHEN 'queued' THEN 0
                    WHEN 'sent' THEN 1 WHEN 'accepted' THEN 2 WHEN 'running' THEN 3 ELSE 4 END)
               >= (CASE commands.state WHEN 'awaiting_approval' THEN 0 WHEN 'queued' THEN 0
                    WHEN 'sent' THEN 1 WHEN 'accepted' THEN 2 WHEN 'running' THEN 3 ELSE 4 END)
           AND NOT (EXCLUDED.state = 'awaiting_approval' AND commands.state <> 'awaiting_approval')
           AND NOT (EXCLUDED.state = 'expired'
                    AND commands.state NOT IN ('awaiting_approval', 'queued', 'sent'))",
        &[
            &r.id,
            &r.device.as_str(),
            &action,
            &r.reason,
            &r.issued_by,
            &system_time(r.created_ms),
            &system_time(r.expires_ms),
            &label(&r.state),
            &system_time(r.updated_ms),
            &r.output,
            &r.detail,
            &(r.sends.min(i32::MAX as u32) as i32),
            &r.last_sent_ms.map(system_time),
            &r.accepted_ms.map(system_time),
            &r.rollout,
            &r.signed.payload,
            &r.signed.signature,
            &r.dry_run,
            &r.approved_by,
            &r.approved_ms.map(system_time),
        ],
    )
    .await
    .map_err(PgError::db("writing a command"))?;
    Ok(())
}

/// Upserts one rollout.
pub async fn write_rollout(tx: &tokio_postgres::Transaction<'_>, r: &Rollout) -> Result<(), PgError> {
    let record = serde_json::to_value(r).map_err(|e| bad("encoding a rollout", e))?;
    tx.execute(
        "INSERT INTO rollouts (id, state, created_at, updated_at, record) VALUES ($1, $2, $3, now(), $4)
         ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, updated_at = now(),
             record = EXCLUDED.record
         -- an operator's resume or abort (on any instance) is not undone by an older copy
         WHERE coalesce((EXCLUDED.record ->> 'operated')::int, 0)
               >= coalesce((rollouts.record ->> 'operated')::int, 0)",
        &[&r.id, &label(&r.state), &system_time(r.created_ms), &record],
    )
    .await
    .map_err(PgError::db("writing a rollout"))?;
    Ok(())
}

/// The latest change of each id, waiting to be written.
#[derive(Default)]
struct Pending {
    commands: BTreeMap<String, Option<Box<CommandRecord>>>,
    rollouts: BTreeMap<String, (Box<Rollout>, Option<LeaderWrite>)>,
    enqueued: BTreeMap<String, DeviceId>,
    delivered: BTreeSet<String>,
}

impl Pending {
    fn add(&mut self, c: Change) {
        match c {
            Change::Put(r) => {
                self.commands.insert(r.id.clone(), Some(r));
            }
            Change::Remove(id) => {
                self.commands.insert(id, None);
            }
            Change::Rollout(r, lead) => {
                self.rollouts.insert(r.id.clone(), (r, lead));
            }
            Change::Enqueue(id, device) => {
                self.enqueued.insert(id, device);
            }
            Change::Delivered(id) => {
                self.delivered.insert(id);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.commands.is_empty()
            && self.rollouts.is_empty()
            && self.enqueued.is_empty()
            && self.delivered.is_empty()
    }
}

async fn write_pending(store: &PgStore, p: &Pending) -> Result<(), PgError> {
    let mut client = store.client().await?;
    let tx = client
        .transaction()
        .await
        .map_err(PgError::db("commands transaction"))?;
    for (id, change) in &p.commands {
        match change {
            Some(r) => write_record(&tx, r).await?,
            None => {
                tx.execute("DELETE FROM commands WHERE id = $1", &[id])
                    .await
                    .map_err(PgError::db("deleting a command"))?;
                tx.execute("DELETE FROM command_outbox WHERE command_id = $1", &[id])
                    .await
                    .map_err(PgError::db("deleting an outbox row"))?;
            }
        }
    }
    for (r, _) in p.rollouts.values().filter(|(_, lead)| lead.is_none()) {
        write_rollout(&tx, r).await?;
    }
    for (id, device) in &p.enqueued {
        // after the command's row: a claimer that wakes on the NOTIFY finds both
        tx.execute(
            "INSERT INTO command_outbox (command_id, device) VALUES ($1, $2)
             ON CONFLICT (command_id) DO NOTHING",
            &[id, &device.as_str()],
        )
        .await
        .map_err(PgError::db("queueing a command"))?;
    }
    for id in &p.delivered {
        tx.execute(
            "UPDATE command_outbox SET delivered_at = now(), claimed_until = NULL
             WHERE command_id = $1 AND delivered_at IS NULL",
            &[id],
        )
        .await
        .map_err(PgError::db("marking a command delivered"))?;
    }
    tx.commit().await.map_err(PgError::db("commands commit"))?;
    write_led_rollouts(&mut client, p).await
}

/// The leader's rollout writes, each in a transaction that first asserts its lease; a write
/// the fence refuses is dropped and ends that leadership ([`crate::cluster::fence`]).
async fn write_led_rollouts(client: &mut deadpool_postgres::Client, p: &Pending) -> Result<(), PgError> {
    for (r, lead) in p.rollouts.values() {
        let Some(lead) = lead else { continue };
        let res = async {
            let tx = client
                .transaction()
                .await
                .map_err(PgError::db("rollout transaction"))?;
            crate::cluster::fence::assert_lease(&tx, &lead.token).await?;
            write_rollout(&tx, r).await?;
            tx.commit().await.map_err(PgError::db("rollout commit"))
        }
        .await;
        match res {
            Err(e) if crate::cluster::fence::is_fenced(&e) => {
                tracing::warn!(rollout = %r.id, "rollout write of a former leader refused by the fence");
                lead.leadership.refused(&lead.token, &e);
            }
            other => other?,
        }
    }
    Ok(())
}

/// Writes changes until every sender is gone (then what is pending, once more).
async fn writer(store: PgStore, mut rx: mpsc::UnboundedReceiver<Change>) {
    let mut pending = Pending::default();
    let mut open = true;
    while open || !pending.is_empty() {
        if pending.is_empty() {
            match rx.recv().await {
                Some(c) => pending.add(c),
                None => break,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(c) => pending.add(c),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let res = write_pending(&store, &pending).await;
        store.note(&res);
        match res {
            Ok(()) => pending = Pending::default(),
            Err(e) if open => {
                tracing::error!(error = %e, commands = pending.commands.len(), "commands not persisted yet; retrying");
                tokio::time::sleep(RETRY_AFTER).await;
            }
            Err(e) => {
                tracing::error!(error = %e, commands = pending.commands.len(), "commands not persisted at shutdown");
                break;
            }
        }
    }
}

impl CommandStore for PgCommands {
    fn records(&self) -> Result<Vec<CommandRecord>, StoreError> {
        let s = self.store.clone();
        let rows = self.store.run(async move {
            let client = s.client().await?;
            client
                .query("SELECT * FROM commands ORDER BY created_at, id", &[])
                .await
                .map_err(PgError::db("reading commands"))
        })?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            match record_of(r) {
                Ok(c) => out.push(c),
                Err(e) => tracing::error!(error = %e, "unreadable command record skipped"),
            }
        }
        Ok(out)
    }

    fn rollouts(&self) -> Result<Vec<Rollout>, StoreError> {
        let s = self.store.clone();
        let rows = self.store.run(async move {
            let client = s.client().await?;
            client
                .query("SELECT record FROM rollouts ORDER BY created_at, id", &[])
                .await
                .map_err(PgError::db("reading rollouts"))
        })?;
        Ok(rows
            .iter()
            .filter_map(|r| serde_json::from_value::<Rollout>(r.get(0)).ok())
            .collect())
    }

    fn put(&self, r: &CommandRecord) {
        self.send(Change::Put(Box::new(r.clone())));
    }

    fn remove(&self, id: &str) {
        self.send(Change::Remove(id.to_string()));
    }

    fn put_rollout(&self, r: &Rollout) {
        self.send(Change::Rollout(Box::new(r.clone()), None));
    }

    fn put_rollout_led(&self, r: &Rollout, lead: Option<LeaderWrite>) {
        self.send(Change::Rollout(Box::new(r.clone()), lead));
    }

    fn enqueue(&self, r: &CommandRecord) {
        self.send(Change::Enqueue(r.id.clone(), r.device.clone()));
    }

    fn delivered(&self, id: &str) {
        self.send(Change::Delivered(id.to_string()));
    }
}
