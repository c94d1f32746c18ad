//! Commands actor: the durable per-device command queue, signing, dispatch over MQTT,
//! re-sending on reconnect, TTL, results, rollouts and the audit log. Decisions are in
//! [`super::book`] and [`super::rollout`]; this actor persists ([`super::store`]), publishes and
//! logs.
//!
//! Supervised (`crate::server::children`): a new generation reloads every command and rollout
//! from the store, connects its own publisher, and learns which devices are online from the
//! fleet actor it attaches to (`AttachCommands`); pending commands then go out again (the
//! agent answers a repeated id with its stored result).
//!
//! With several instances on PostgreSQL ([`CommandCluster`]) the book does not send: a new
//! command gets an outbox row, and sends are claims ([`super::outbox`]) of the machines whose
//! session this instance holds and that are online here, woken by the cluster's events
//! (`fleet_command`, a session this instance took, a birth) and every [`CLUSTER_POLL`]. The
//! same poll reads the commands other instances changed into the book, so every instance
//! answers for every command. Expiry and timeouts are decided by the instance that created or
//! delivered a command (`mine`), the others learn the outcome.

mod cluster;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::prelude::*;
use common::DeviceId;
use common::codec;
use common::command::{Action, Command, CommandResult, CommandSigner};
use common::tls::ClientIdentity;
use common::topics::{Kind, Topic};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS, TlsConfiguration, Transport};
use serde::Serialize;
use tokio::sync::broadcast;

use self::cluster::{Cluster, Wake};
use super::book::{CmdState, CommandBook, CommandRecord, CommandView, Effect};
use super::rollout::{Rollout, RolloutProgress, RolloutState, Target};
use super::store::CommandStore;
use crate::audit::AuditLog;
use crate::live::LiveHub;
use crate::live::event::LiveEvent;
use crate::messages::AttachLive;
use crate::pg::store::PgStore;
use crate::sessions::{ClusterEvent, ClusterLink};
use crate::supervise::child::Beat;

/// How often expiry, resends and rollouts are looked at.
pub const COMMAND_TICK: Duration = Duration::from_secs(1);
/// Client id of the server's command publisher.
pub const COMMANDS_CLIENT_ID: &str = "fleet-server:commands";
/// Several instances: how often due outbox rows are claimed and other instances' changes
/// read, whatever the notifications said (NOTIFY is only a wake-up).
pub const CLUSTER_POLL: Duration = Duration::from_secs(2);
/// Several instances: changes are re-read from this far before the last one seen (a change
/// is written a moment after its `updated_at`, by the writer behind each actor).
pub const REFRESH_OVERLAP_MS: i64 = 5_000;

/// Several instances on one PostgreSQL store: what the actor needs to deliver through the
/// outbox.
#[derive(Clone)]
pub struct CommandCluster {
    pub store: PgStore,
    pub link: ClusterLink,
}

/// Why a command was not created.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("cannot sign command {id}: {source}")]
    Sign {
        id: String,
        source: common::command::CommandError,
    },
    /// The book forgot the command while inserting it (its cap evicted it at once).
    #[error("command {0} vanished")]
    Vanished(String),
}

pub struct CommandsSetup {
    pub signer: Arc<CommandSigner>,
    pub store: Arc<dyn CommandStore>,
    /// What `store` held at start ([`CommandStore::records`], read off the actor's thread).
    pub records: Vec<CommandRecord>,
    pub rollouts: Vec<Rollout>,
    pub audit: Arc<dyn AuditLog>,
    pub host: String,
    pub port: u16,
    pub identity: ClientIdentity,
    /// Several instances on PostgreSQL: deliver through the outbox.
    pub cluster: Option<CommandCluster>,
}

pub struct CommandsActor {
    signer: Arc<CommandSigner>,
    book: CommandBook,
    store: Arc<dyn CommandStore>,
    rollouts: BTreeMap<String, Rollout>,
    online: HashSet<DeviceId>,
    audit: Arc<dyn AuditLog>,
    client: Option<AsyncClient>,
    connected: Arc<AtomicBool>,
    mqtt: Option<(String, u16, ClientIdentity)>,
    /// With a live hub attached ([`AttachLive`]): every state change goes to open pages.
    live: Option<LiveHub>,
    cluster: Option<Cluster>,
}

impl CommandsActor {
    pub fn new(s: CommandsSetup) -> Self {
        let mut book = CommandBook::default();
        for r in s.records {
            book.restore(r);
        }
        book.sort_indexes();
        let rollouts: BTreeMap<String, Rollout> = s.rollouts.into_iter().map(|r| (r.id.clone(), r)).collect();
        CommandsActor {
            signer: s.signer,
            book,
            store: s.store,
            rollouts,
            online: HashSet::new(),
            audit: s.audit,
            client: None,
            connected: Arc::default(),
            mqtt: Some((s.host, s.port, s.identity)),
            live: None,
            cluster: s.cluster.map(Cluster::new),
        }
    }

    /// Whether this book sends by itself (one instance) rather than through the outbox.
    fn book_sends(&self) -> bool {
        self.cluster.is_none()
    }

    fn persist(&self, id: &str) {
        if let Some(r) = self.book.get(id) {
            self.store.put(r);
        }
    }

    fn persist_rollout(&self, r: &Rollout) {
        self.store.put_rollout(r);
    }

    fn audit(&self, line: serde_json::Value) {
        let audit = self.audit.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = audit.append(&[line]) {
                tracing::error!(error = %e, "audit log not written");
            }
        });
    }

    fn apply(&mut self, fx: Vec<Effect>) {
        let now = common::time::now_ms();
        let mut changed = Vec::new();
        for e in fx {
            match e {
                Effect::Send { device, id } => self.publish(&device, &id),
                Effect::Changed { id, from, to } => {
                    if let Some(r) = self.book.get(&id) {
                        tracing::info!(command = %id, device = %r.device, from = ?from, to = ?to, "command state");
                        if to.is_final() {
                            self.audit(serde_json::json!({
                                "ts_ms": now, "who": r.issued_by, "action": "command_result",
                                "target": r.device, "command": id, "state": to,
                                "detail": r.detail, "output": r.output.chars().take(512).collect::<String>(),
                            }));
                        }
                    }
                    changed.push(id);
                }
            }
        }
        changed.sort();
        changed.dedup();
        for id in changed {
            self.persist(&id);
            self.publish_live(&id);
        }
    }

    fn publish_live(&self, id: &str) {
        if let (Some(hub), Some(r)) = (&self.live, self.book.get(id))
            && hub.has_subscribers()
            && let Ok(command) = serde_json::to_value(r.view())
        {
            hub.publish(&LiveEvent::Command { command });
        }
    }

    fn publish(&mut self, device: &DeviceId, id: &str) {
        let Some(r) = self.book.get(id) else { return };
        let payload = match codec::encode(&r.signed) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "signed command not encodable");
                return;
            }
        };
        match &self.client {
            Some(c) if self.connected.load(Ordering::Relaxed) => {
                if let Err(e) =
                    c.try_publish(Topic::device(device, Kind::Cmd), QoS::AtLeastOnce, false, payload)
                {
                    tracing::warn!(error = %e, command = %id, "command not published now; it will be re-sent");
                }
            }
            _ => tracing::warn!(command = %id, "command publisher not connected; it will be re-sent"),
        }
        self.persist(id);
    }

    /// Creates, signs, stores and (if online) sends one command.
    fn create(
        &mut self,
        device: DeviceId,
        action: Action,
        ttl_s: u64,
        reason: String,
        who: String,
        rollout: Option<String>,
    ) -> Result<CommandView, SubmitError> {
        let now = common::time::now_ms();
        let id = format!("c{}", common::ids::random_hex(8));
        let expires_ms = now + ttl_s as i64 * 1000;
        let cmd = Command {
            id: id.clone(),
            device: device.clone(),
            action: action.clone(),
            issued_ms: now,
            expires_ms,
            issued_by: who.clone(),
            reason: reason.clone(),
        };
        let signed = self.signer.sign(&cmd).map_err(|source| SubmitError::Sign {
            id: id.clone(),
            source,
        })?;
        let rec = CommandRecord {
            id: id.clone(),
            device: device.clone(),
            action: action.clone(),
            reason: reason.clone(),
            issued_by: who.clone(),
            created_ms: now,
            expires_ms,
            state: CmdState::Queued,
            updated_ms: now,
            output: String::new(),
            detail: None,
            sends: 0,
            last_sent_ms: None,
            accepted_ms: None,
            rollout,
            signed,
        };
        self.audit(serde_json::json!({
            "ts_ms": now, "who": who, "action": "command", "target": device,
            "command": id, "requested": action.to_string(), "reason": reason, "ttl_s": ttl_s,
        }));
        let online = self.book_sends() && self.online.contains(&device);
        let (fx, forgotten) = self.book.insert(rec, online, now);
        for f in forgotten {
            self.store.remove(&f);
        }
        self.persist(&id);
        if let Some(c) = &mut self.cluster {
            // after its record, in the same write: whoever holds the machine is woken
            c.mine.insert(id.clone());
            if let Some(r) = self.book.get(&id) {
                self.store.enqueue(r);
            }
        }
        self.apply(fx);
        self.book
            .get(&id)
            .map(|r| r.view())
            .ok_or(SubmitError::Vanished(id))
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        let Some((host, port, identity)) = self.mqtt.take() else {
            return;
        };
        let tls = match common::tls::client_config(&identity) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "command publisher cannot load its TLS identity");
                return;
            }
        };
        let mut o = MqttOptions::new(COMMANDS_CLIENT_ID, host, port);
        o.set_keep_alive(Duration::from_secs(30));
        o.set_clean_session(true);
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
        let (client, mut el) = AsyncClient::new(o, 4096);
        crate::mqtt_no_delay(&mut el);
        self.client = Some(client);
        let connected = self.connected.clone();
        let me = ctx.address();
        actix::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                match el.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        backoff = Duration::from_millis(200);
                        connected.store(true, Ordering::Relaxed);
                        me.do_send(PublisherUp);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        connected.store(false, Ordering::Relaxed);
                        tracing::warn!(error = %e, "command publisher disconnected");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
        });
    }

    fn tick(&mut self) {
        let now = common::time::now_ms();
        let fx = match &self.cluster {
            None => {
                let online = &self.online;
                self.book.tick(now, |d| online.contains(d))
            }
            // resends are claims whose lease ran out; only our commands' fates are decided here
            Some(c) => self.book.tick_some(now, |_| false, |id| c.mine.contains(id)),
        };
        self.apply(fx);
        let ids: Vec<String> = self.rollouts.keys().cloned().collect();
        for rid in ids {
            let Some(mut r) = self.rollouts.remove(&rid) else {
                continue;
            };
            let mut changed = false;
            for device in r.due(now) {
                match self.create(
                    device.clone(),
                    r.action.clone(),
                    r.ttl_s,
                    r.reason.clone(),
                    r.issued_by.clone(),
                    Some(rid.clone()),
                ) {
                    Ok(v) => r.commands.push(v.id),
                    Err(e) => tracing::error!(error = %e, device = %device, "rollout command not created"),
                }
                changed = true;
            }
            if r.evaluate(&self.book) {
                changed = true;
                tracing::info!(rollout = %rid, state = ?r.state, detail = ?r.detail, "rollout finished");
                self.audit(serde_json::json!({
                    "ts_ms": now, "who": r.issued_by, "action": "rollout_result",
                    "rollout": rid, "state": r.state, "detail": r.detail,
                }));
            }
            if changed {
                self.persist_rollout(&r);
            }
            self.rollouts.insert(rid, r);
        }
    }
}

impl Actor for CommandsActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.connect(ctx);
        ctx.run_interval(COMMAND_TICK, |act, _| act.tick());
        if let Some(c) = &self.cluster {
            // every pending command has its outbox row (one moved in by `fleetctl store
            // migrate`, or written before the row was: the insert does nothing for the rest)
            let now = common::time::now_ms();
            for r in self.book.all() {
                if r.state.is_pending() && r.expires_ms > now {
                    self.store.enqueue(r);
                }
            }
            let mut events = c.cfg.link.subscribe();
            let me = ctx.address();
            actix::spawn(async move {
                loop {
                    let ev = match events.recv().await {
                        Ok(ev) => ev,
                        // missed some: look at everything
                        Err(broadcast::error::RecvError::Lagged(_)) => ClusterEvent::Resync,
                        Err(broadcast::error::RecvError::Closed) => return,
                    };
                    if me.try_send(Wake(ev)).is_err() && !me.connected() {
                        return;
                    }
                }
            });
            ctx.run_interval(CLUSTER_POLL, |act, ctx| {
                act.refresh(ctx);
                act.claim(ctx);
            });
        }
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct PublisherUp;

impl Handler<PublisherUp> for CommandsActor {
    type Result = ();
    fn handle(&mut self, _: PublisherUp, ctx: &mut Context<Self>) {
        if self.cluster.is_some() {
            self.claim(ctx);
            return;
        }
        // whatever is pending for online devices goes out now
        let now = common::time::now_ms();
        let online: Vec<DeviceId> = self.online.iter().cloned().collect();
        let fx: Vec<Effect> = online.iter().flat_map(|d| self.book.on_online(d, now)).collect();
        self.apply(fx);
    }
}

/// From the fleet actor: presence and command results.
#[derive(Message)]
#[rtype(result = "()")]
pub enum CommandFeed {
    Presence(DeviceId, bool),
    Result(DeviceId, CommandResult),
}

impl Handler<CommandFeed> for CommandsActor {
    type Result = ();
    fn handle(&mut self, m: CommandFeed, ctx: &mut Context<Self>) {
        let now = common::time::now_ms();
        match m {
            CommandFeed::Presence(d, true) => {
                self.online.insert(d.clone());
                if let Some(c) = &mut self.cluster {
                    // a birth: the machine is subscribed; what it has pending is due, once
                    // its session's row names this instance
                    if c.cfg.link.holds(&d) {
                        self.claim(ctx);
                    } else {
                        c.born_unowned.insert(d);
                    }
                } else {
                    let fx = self.book.on_online(&d, now);
                    self.apply(fx);
                }
            }
            CommandFeed::Presence(d, false) => {
                self.online.remove(&d);
                if let Some(c) = &mut self.cluster {
                    c.born_unowned.remove(&d);
                }
            }
            CommandFeed::Result(d, r) => match self.book.on_result(&d, &r, now) {
                Some(fx) => {
                    if let Some(c) = &mut self.cluster {
                        c.mine.insert(r.command_id.clone());
                        self.store.delivered(&r.command_id);
                    }
                    self.apply(fx)
                }
                None if self.cluster.is_some() => self.result_from_elsewhere(d, r, ctx),
                None => {
                    tracing::warn!(device = %d, command = %r.command_id, status = ?r.status, reason = ?r.reason, "result for an unknown command")
                }
            },
        }
    }
}

/// Create one command.
#[derive(Message)]
#[rtype(result = "Result<CommandView, SubmitError>")]
pub struct Submit {
    pub device: DeviceId,
    pub action: Action,
    pub ttl_s: u64,
    pub reason: String,
    pub who: String,
}

impl Handler<Submit> for CommandsActor {
    type Result = Result<CommandView, SubmitError>;
    fn handle(&mut self, m: Submit, _: &mut Context<Self>) -> Self::Result {
        self.create(m.device, m.action, m.ttl_s, m.reason, m.who, None)
    }
}

#[derive(Message)]
#[rtype(result = "Option<CommandView>")]
pub struct GetCommand(pub String);

impl Handler<GetCommand> for CommandsActor {
    type Result = Option<CommandView>;
    fn handle(&mut self, m: GetCommand, _: &mut Context<Self>) -> Self::Result {
        self.book.get(&m.0).map(|r| r.view())
    }
}

#[derive(Message)]
#[rtype(result = "Vec<CommandView>")]
pub struct DeviceCommands(pub DeviceId);

impl Handler<DeviceCommands> for CommandsActor {
    type Result = Vec<CommandView>;
    fn handle(&mut self, m: DeviceCommands, _: &mut Context<Self>) -> Self::Result {
        self.book.for_device(&m.0).into_iter().map(|r| r.view()).collect()
    }
}

/// Start a rollout over already resolved devices. It cannot fail: its commands are created (and
/// may fail, logged) as the rollout proceeds.
#[derive(Message)]
#[rtype(result = "RolloutView")]
pub struct StartRollout {
    pub action: Action,
    pub target: Target,
    pub devices: Vec<DeviceId>,
    pub per_minute: u32,
    pub abort_failed_pct: f64,
    pub min_finished: u32,
    pub ttl_s: u64,
    pub reason: String,
    pub who: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RolloutView {
    pub id: String,
    pub action: Action,
    pub target: Target,
    pub per_minute: u32,
    pub abort_failed_pct: f64,
    pub state: RolloutState,
    pub detail: Option<String>,
    pub progress: RolloutProgress,
    pub commands: Vec<String>,
    pub created_ms: i64,
}

impl CommandsActor {
    fn rollout_view(&self, r: &Rollout) -> RolloutView {
        RolloutView {
            id: r.id.clone(),
            action: r.action.clone(),
            target: r.target.clone(),
            per_minute: r.per_minute,
            abort_failed_pct: r.abort_failed_pct,
            state: r.state,
            detail: r.detail.clone(),
            progress: r.progress(&self.book),
            commands: r.commands.clone(),
            created_ms: r.created_ms,
        }
    }
}

impl Handler<StartRollout> for CommandsActor {
    type Result = MessageResult<StartRollout>;
    fn handle(&mut self, m: StartRollout, _: &mut Context<Self>) -> Self::Result {
        let now = common::time::now_ms();
        let r = Rollout {
            id: format!("r{}", common::ids::random_hex(6)),
            action: m.action,
            target: m.target,
            per_minute: m.per_minute,
            abort_failed_pct: m.abort_failed_pct,
            min_finished: m.min_finished,
            ttl_s: m.ttl_s,
            reason: m.reason,
            issued_by: m.who,
            created_ms: now,
            state: RolloutState::Running,
            remaining: m.devices.into_iter().collect(),
            commands: Vec::new(),
            dispatched_at: Vec::new(),
            detail: None,
        };
        self.audit(serde_json::json!({
            "ts_ms": now, "who": r.issued_by, "action": "rollout", "rollout": r.id,
            "requested": r.action.to_string(), "target": r.target, "machines": r.remaining.len(),
            "per_minute": r.per_minute, "abort_failed_pct": r.abort_failed_pct, "reason": r.reason,
        }));
        self.persist_rollout(&r);
        let v = self.rollout_view(&r);
        self.rollouts.insert(r.id.clone(), r);
        MessageResult(v)
    }
}

#[derive(Message)]
#[rtype(result = "Option<RolloutView>")]
pub struct GetRollout(pub String);

impl Handler<GetRollout> for CommandsActor {
    type Result = Option<RolloutView>;
    fn handle(&mut self, m: GetRollout, _: &mut Context<Self>) -> Self::Result {
        self.rollouts.get(&m.0).map(|r| self.rollout_view(r))
    }
}

impl Handler<Beat> for CommandsActor {
    type Result = ();
    fn handle(&mut self, m: Beat, _: &mut Context<Self>) {
        m.record();
    }
}

impl Handler<AttachLive> for CommandsActor {
    type Result = ();
    fn handle(&mut self, m: AttachLive, _: &mut Context<Self>) {
        self.live = Some(m.0);
    }
}
