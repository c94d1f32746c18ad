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
mod rollouts;

pub use self::rollouts::{
    GetRollout, ListRollouts, OperateRollout, RolloutOpError, RolloutView, StartRollout, WatchView,
};

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::prelude::*;
use common::DeviceId;
use common::codec;
use common::command::{Action, Command, CommandOptions, CommandResult, CommandSigner, SignedCommand};
use common::tls::ClientIdentity;
use common::topics::{Kind, Topic};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS, TlsConfiguration, Transport};
use tokio::sync::broadcast;

use self::cluster::{Cluster, Wake};
use super::book::{ApproveError, CmdState, CommandBook, CommandRecord, CommandView, Effect};
use super::config::CommandsConfig;
use super::rollout::Rollout;
use super::store::CommandStore;
use crate::audit::AuditLog;
use crate::cluster::Leadership;
use crate::live::LiveHub;
use crate::live::event::LiveEvent;
use crate::messages::{AttachLive, ReadMachines};
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

/// Where the health gate reads machines (the fleet actor of the moment: it may restart).
pub type ReadingsSource = Arc<dyn Fn() -> Option<Recipient<ReadMachines>> + Send + Sync>;

/// The leader-only job that dispatches and judges rollouts (`crate::cluster::leader`).
pub const ROLLOUTS_JOB: &str = crate::cluster::leader::ROLLOUTS;

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
    /// `[commands]`: actions that wait for a second operator.
    pub config: CommandsConfig,
    /// Whether this instance advances rollouts now (the leader of [`ROLLOUTS_JOB`]).
    pub leadership: Leadership,
    /// Where the health gate reads machines.
    pub readings: Option<ReadingsSource>,
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
    config: CommandsConfig,
    leadership: Leadership,
    readings: Option<ReadingsSource>,
    /// A read of machines for the gate is under way (one at a time).
    reading: bool,
}

/// A command to create.
pub struct NewCommand {
    pub device: DeviceId,
    pub action: Action,
    pub ttl_s: u64,
    pub reason: String,
    pub who: String,
    pub rollout: Option<String>,
    pub dry_run: bool,
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
            config: s.config,
            leadership: s.leadership,
            readings: s.readings,
            reading: false,
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

    /// Creates, signs, stores and (if online) sends one command. A disruptive one
    /// (`[commands] approval_required`) is stored unsigned, awaiting a second operator.
    fn create(&mut self, n: NewCommand) -> Result<CommandView, SubmitError> {
        let NewCommand {
            device,
            action,
            ttl_s,
            reason,
            who,
            rollout,
            dry_run,
        } = n;
        let now = common::time::now_ms();
        let id = format!("c{}", common::ids::random_hex(8));
        let expires_ms = now + ttl_s as i64 * 1000;
        // a dry run changes nothing on the machine: it needs no second pair of eyes
        let awaiting = !dry_run && self.config.needs_approval(action.name());
        let cmd = Command {
            id: id.clone(),
            device: device.clone(),
            action: action.clone(),
            issued_ms: now,
            expires_ms,
            issued_by: who.clone(),
            reason: reason.clone(),
        };
        let signed = if awaiting {
            SignedCommand {
                payload: Vec::new(),
                signature: Vec::new(),
            }
        } else {
            self.sign(&cmd, dry_run)?
        };
        let rec = CommandRecord {
            id: id.clone(),
            device: device.clone(),
            action: action.clone(),
            reason: reason.clone(),
            issued_by: who.clone(),
            created_ms: now,
            expires_ms,
            state: if awaiting {
                CmdState::AwaitingApproval
            } else {
                CmdState::Queued
            },
            updated_ms: now,
            output: String::new(),
            detail: awaiting.then(|| format!("{} needs a second operator's approval", action.name())),
            sends: 0,
            last_sent_ms: None,
            accepted_ms: None,
            rollout,
            signed,
            dry_run,
            approved_by: None,
            approved_ms: None,
        };
        self.audit(serde_json::json!({
            "ts_ms": now, "who": who, "action": "command", "target": device,
            "command": id, "requested": action.to_string(), "reason": reason, "ttl_s": ttl_s,
            "dry_run": dry_run, "awaiting_approval": awaiting,
        }));
        let online = !awaiting && self.book_sends() && self.online.contains(&device);
        let (fx, forgotten) = self.book.insert(rec, online, now);
        for f in forgotten {
            self.store.remove(&f);
        }
        self.persist(&id);
        if let Some(c) = &mut self.cluster {
            // after its record, in the same write: whoever holds the machine is woken
            c.mine.insert(id.clone());
            if let Some(r) = self.book.get(&id).filter(|r| r.state.is_pending()) {
                self.store.enqueue(r);
            }
        }
        self.apply(fx);
        self.book
            .get(&id)
            .map(|r| r.view())
            .ok_or(SubmitError::Vanished(id))
    }

    fn sign(&self, cmd: &Command, dry_run: bool) -> Result<SignedCommand, SubmitError> {
        self.signer
            .sign_with(cmd, CommandOptions { dry_run })
            .map_err(|source| SubmitError::Sign {
                id: cmd.id.clone(),
                source,
            })
    }

    /// A second operator approves a command awaiting approval: it is signed now and sent.
    fn approve(&mut self, id: &str, who: &str) -> Result<CommandView, ApproveCmdError> {
        let now = common::time::now_ms();
        let r = self.book.approvable(id, who)?;
        let cmd = Command {
            id: r.id.clone(),
            device: r.device.clone(),
            action: r.action.clone(),
            issued_ms: r.created_ms,
            expires_ms: r.expires_ms,
            issued_by: r.issued_by.clone(),
            reason: r.reason.clone(),
        };
        let (dry_run, device, requester) = (r.dry_run, r.device.clone(), r.issued_by.clone());
        let signed = self.sign(&cmd, dry_run)?;
        let online = self.book_sends() && self.online.contains(&device);
        let fx = self.book.approve(id, who, signed, online, now)?;
        tracing::info!(command = %id, device = %device, requested_by = %requester, approved_by = %who, "command approved");
        self.audit(serde_json::json!({
            "ts_ms": now, "who": who, "action": "command_approved", "target": device,
            "command": id, "requested": cmd.action.to_string(), "requested_by": requester,
            "dry_run": dry_run,
        }));
        self.persist(id);
        if let Some(c) = &mut self.cluster {
            c.mine.insert(id.to_string());
            if let Some(r) = self.book.get(id) {
                self.store.enqueue(r);
            }
        }
        self.apply(fx);
        self.book
            .get(id)
            .map(|r| r.view())
            .ok_or_else(|| ApproveCmdError::Approve(ApproveError::NotFound(id.into())))
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
        self.advance_rollouts(now);
    }
}

impl Actor for CommandsActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.connect(ctx);
        ctx.run_interval(COMMAND_TICK, |act, ctx| {
            act.tick();
            act.read_gated(ctx);
        });
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
                act.refresh_rollouts(ctx);
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
    /// Validate on the agent and answer what would happen, without doing it.
    pub dry_run: bool,
}

impl Handler<Submit> for CommandsActor {
    type Result = Result<CommandView, SubmitError>;
    fn handle(&mut self, m: Submit, _: &mut Context<Self>) -> Self::Result {
        self.create(NewCommand {
            device: m.device,
            action: m.action,
            ttl_s: m.ttl_s,
            reason: m.reason,
            who: m.who,
            rollout: None,
            dry_run: m.dry_run,
        })
    }
}

/// Why an approval did not go through.
#[derive(Debug, thiserror::Error)]
pub enum ApproveCmdError {
    #[error(transparent)]
    Approve(#[from] ApproveError),
    #[error(transparent)]
    Submit(#[from] SubmitError),
}

/// A second operator approves a command awaiting approval.
#[derive(Message)]
#[rtype(result = "Result<CommandView, ApproveCmdError>")]
pub struct Approve {
    pub id: String,
    pub who: String,
}

impl Handler<Approve> for CommandsActor {
    type Result = Result<CommandView, ApproveCmdError>;
    fn handle(&mut self, m: Approve, _: &mut Context<Self>) -> Self::Result {
        self.approve(&m.id, &m.who)
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

/// Every command awaiting a second operator's approval, oldest first.
#[derive(Message)]
#[rtype(result = "Vec<CommandView>")]
pub struct AwaitingApproval;

impl Handler<AwaitingApproval> for CommandsActor {
    type Result = MessageResult<AwaitingApproval>;
    fn handle(&mut self, _: AwaitingApproval, _: &mut Context<Self>) -> Self::Result {
        let mut v: Vec<CommandView> = self
            .book
            .all()
            .filter(|r| r.state == CmdState::AwaitingApproval)
            .map(|r| r.view())
            .collect();
        v.sort_by_key(|c| c.created_ms);
        MessageResult(v)
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
