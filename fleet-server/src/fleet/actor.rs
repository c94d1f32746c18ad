//! Fleet actor: owns the [`FleetState`]; ingest sends it records, the API asks it questions.
//!
//! With an alerts actor attached ([`AttachAlerts`]) it also feeds alerting: each live
//! telemetry record's flat metrics (plus `clock.skew_s` and `service.down`), each live health
//! report's checks (plus `service.down`), the derived inputs of events and births at once,
//! and every [`PRESENCE_TICK`] each device's presence and time-based inputs
//! ([`crate::alerts::inputs`]) that changed, and the unchanged ones every
//! [`super::resend::REFRESH_MS`] ([`super::resend`]). Backlog telemetry and health reports (made before the
//! device's current connection) go to history and the device page only: they are not the
//! machine's state now.
//!
//! With a live hub attached ([`AttachLive`]) it publishes, every tick, the summaries of the
//! devices that changed ([`SummaryDiff`]) for `GET /api/v1/stream`. With a presence store
//! attached ([`AttachPresence`]) it records, every tick, the presence that changed
//! ([`PresenceLog`]; PostgreSQL's `presence` table).
//!
//! Several instances (PostgreSQL, [`AttachCluster`]): the state holds the whole fleet, the
//! machines other instances serve read from the store every second ([`super::mirror`]). Those
//! get no alert inputs here (their instance evaluates them), and `presence.offline` is judged
//! only by the instance that leads [`PRESENCE`], for every machine, from when it was last seen
//! anywhere: so a machine that moved between instances is never offline, and a site's
//! offline alerts all fire on one instance, whose correlator sees the whole site.
//!
//! Supervised (`crate::server::children`): a new generation starts from the store (births,
//! delivery accounting: [`Restore`]) and from what its predecessor wrote to the
//! [`FleetCheckpoint`] at its last tick (each tick updates the devices touched since the one
//! before) (presence, and the alert inputs of each device's
//! current connection, which tell live records from a backlog), with the server's start
//! time, so that a restart neither forgets which devices are online and which records are
//! live nor makes offline devices look new.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use common::{Birth, DeviceId, DeviceState};

use super::delivery::Delivery;
use super::live::SummaryDiff;
use super::mirror::{Mirrored, apply_remote};
use super::resend::InputsSent;
use super::state::{DeviceDetail, DeviceSummary, FleetState, Presence, PresencePolicy, Seen};
use super::store::{PresenceLog, PresenceStore};
use crate::alerts::actor::{Observation, Observe};
use crate::alerts::alert::DeviceInfo;
use crate::alerts::inputs::{self, DeviceInputs};
use crate::alerts::kpi::KpiConfig;
use crate::alerts::names::PRESENCE_OFFLINE;
use crate::cluster::leader::PRESENCE;
use crate::cluster::{Leadership, Role};
use crate::commands::actor::CommandFeed;
use crate::live::LiveHub;
use crate::live::event::LiveEvent;
use crate::messages::AttachLive;
use crate::messages::Ingested;
use crate::messages::{MachineReading, ReadMachines};
use crate::supervise::child::Beat;

/// How often presence and the time-based inputs of every device are evaluated.
pub const PRESENCE_TICK: Duration = Duration::from_secs(1);
/// A record handled this long after the last tick runs the tick itself: actix drains the
/// whole mailbox before it polls timers, so under a sustained flood of records
/// `run_interval` would never fire (no presence, no alert inputs, no live updates).
pub const OVERDUE_TICK_MS: i64 = 1_500;

/// What the fleet actor keeps in memory only, as of its last tick, for the next generation.
#[derive(Debug, Clone, Default)]
pub struct Checkpoint {
    pub seen: BTreeMap<DeviceId, Seen>,
    pub inputs: BTreeMap<DeviceId, DeviceInputs>,
}

/// Shared between the fleet actor's generations.
pub type FleetCheckpoint = Arc<Mutex<Checkpoint>>;

/// What a fleet actor starts from besides its checkpoint: the store's births and delivery
/// accounting.
#[derive(Debug, Default)]
pub struct Restore {
    pub births: Vec<(DeviceId, Birth)>,
    pub delivery: Vec<(DeviceId, Delivery)>,
}

pub struct FleetActor {
    state: FleetState,
    inputs: BTreeMap<DeviceId, DeviceInputs>,
    alerts: Option<Recipient<Observe>>,
    commands: Option<Recipient<CommandFeed>>,
    /// Devices the commands actor was told are online.
    told_online: std::collections::HashSet<DeviceId>,
    started_ms: i64,
    /// With a live hub attached ([`AttachLive`]): changed summaries every tick.
    live: Option<(LiveHub, SummaryDiff)>,
    /// With a presence store attached ([`AttachPresence`]): changed presence every tick.
    presence: Option<(Arc<dyn PresenceStore>, PresenceLog)>,
    last_tick_ms: i64,
    /// Kept up to date every tick when the actor is supervised: the devices in `dirty`.
    checkpoint: Option<FleetCheckpoint>,
    /// Devices whose presence facts or inputs may have changed since the last checkpoint.
    dirty: HashSet<DeviceId>,
    /// The time-based inputs last sent to the alerts actor ([`InputsSent`]).
    sent: InputsSent,
    /// Several instances ([`AttachCluster`]): whether this one judges presence now.
    leadership: Option<Leadership>,
    /// `[kpi]` of the rules: the windows of each machine's derived figures.
    kpi: KpiConfig,
}

impl FleetActor {
    pub fn new(policy: PresencePolicy) -> Self {
        FleetActor {
            state: FleetState::new(policy),
            inputs: BTreeMap::new(),
            alerts: None,
            commands: None,
            told_online: Default::default(),
            started_ms: common::time::now_ms(),
            live: None,
            presence: None,
            last_tick_ms: common::time::now_ms(),
            checkpoint: None,
            dirty: HashSet::new(),
            sent: InputsSent::default(),
            leadership: None,
            kpi: KpiConfig::default(),
        }
    }

    /// Does this instance judge `presence.offline` now? Alone (sled, or no cluster attached)
    /// always; among several only while it leads [`PRESENCE`].
    fn judges_presence(&self) -> bool {
        self.leadership
            .as_ref()
            .is_none_or(|l| l.role(PRESENCE) != Role::Follower)
    }

    /// The windows of the machines' `kpi.*` inputs (`[kpi]` of the rules).
    pub fn with_kpi(mut self, kpi: KpiConfig) -> Self {
        self.kpi = kpi;
        self
    }

    /// A fleet actor of a server that started at `started_ms`: births and delivery from the
    /// store, presence and alert inputs from `checkpoint` (which it then keeps up to date).
    pub fn restored(
        policy: PresencePolicy,
        started_ms: i64,
        restore: Restore,
        checkpoint: FleetCheckpoint,
    ) -> Self {
        let mut a = FleetActor::new(policy);
        a.started_ms = started_ms;
        let now = common::time::now_ms();
        for (id, birth) in restore.births {
            a.apply(Ingested::Restored(id, Box::new(birth)), now);
        }
        for (id, d) in restore.delivery {
            a.state.set_delivery(id, d);
        }
        let cp = checkpoint.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (id, s) in cp.seen {
            a.state.restore_seen(id, s);
        }
        a.inputs.extend(cp.inputs);
        // the checkpoint is updated device by device from now on: start it complete
        a.dirty = a.state.devices.keys().chain(a.inputs.keys()).cloned().collect();
        a.checkpoint = Some(checkpoint);
        a
    }

    /// Presence, time-based alert inputs and live updates.
    fn tick(&mut self, now_ms: i64) {
        self.last_tick_ms = now_ms;
        self.evaluate(now_ms);
        self.publish_live(now_ms);
        let judge = self.judges_presence();
        if let Some((store, log)) = &mut self.presence {
            let mut rows = log.changes(&self.state, now_ms);
            // a machine served elsewhere: its instance writes its row; the presence judge
            // writes it offline (its instance may be dead)
            let devices = &self.state.devices;
            rows.retain(|r| {
                devices.get(&r.device).is_none_or(|e| e.served_by.is_none())
                    || (judge && r.status == Presence::Offline)
            });
            if !rows.is_empty() {
                store.record(rows);
            }
        }
        self.write_checkpoint();
    }

    /// Brings the checkpoint up to date for the devices that changed since the last tick
    /// (rebuilding it whole every tick cost O(fleet) allocations a second: issue 25).
    fn write_checkpoint(&mut self) {
        let Some(c) = &self.checkpoint else {
            self.dirty.clear();
            return;
        };
        if self.dirty.is_empty() {
            return;
        }
        let mut cp = c.lock().unwrap_or_else(|p| p.into_inner());
        for id in self.dirty.drain() {
            match self.state.seen_facts(&id) {
                Some(seen) => cp.seen.insert(id.clone(), seen),
                None => cp.seen.remove(&id),
            };
            match self.inputs.get(&id) {
                Some(i) => cp.inputs.insert(id, i.checkpoint()),
                None => cp.inputs.remove(&id),
            };
        }
    }

    /// Publishes the summaries that changed since the last tick (one batch: at most one
    /// update per device per tick).
    fn publish_live(&mut self, now_ms: i64) {
        let Some((hub, diff)) = &mut self.live else {
            return;
        };
        let changed = diff.changed(&self.state, now_ms, hub.has_subscribers());
        if !changed.is_empty() {
            hub.publish(&LiveEvent::devices(changed));
        }
    }

    /// Tells the commands actor about a presence change (any record means online: births are
    /// not retained, so after a server restart the first record stands in for one).
    fn note_presence(&mut self, id: &DeviceId, online: bool) {
        let Some(c) = &self.commands else { return };
        let changed = if online {
            self.told_online.insert(id.clone())
        } else {
            self.told_online.remove(id)
        };
        if changed {
            c.do_send(CommandFeed::Presence(id.clone(), online));
        }
    }

    fn info(&self, id: &DeviceId) -> DeviceInfo {
        inputs::device_info(id, self.state.devices.get(id).and_then(|e| e.birth.as_ref()))
    }

    fn observe(&self, id: &DeviceId, metrics: Vec<(String, f64)>, at_ms: i64) {
        self.observe_with(id, metrics, None, false, at_ms);
    }

    fn observe_with(
        &self,
        id: &DeviceId,
        metrics: Vec<(String, f64)>,
        checks: Option<Vec<common::CheckResult>>,
        session_started: bool,
        at_ms: i64,
    ) {
        if metrics.is_empty() && checks.is_none() {
            return;
        }
        if let Some(a) = &self.alerts {
            a.do_send(Observe(vec![Observation {
                device: self.info(id),
                metrics,
                checks,
                session_started,
                elsewhere: false,
                at_ms,
            }]));
        }
    }

    fn is_offline(&self, id: &DeviceId, now_ms: i64) -> bool {
        self.state.devices.get(id).is_some_and(|e| {
            inputs::presence_offline(
                e.offline_reason.is_some(),
                e.last_seen_ms,
                self.started_ms,
                self.state.policy.offline_after_ms,
                now_ms,
            )
        })
    }

    /// Presence and the time-based inputs of every device.
    fn evaluate(&mut self, now_ms: i64) {
        // devices that went silent, or moved to another instance, are offline for the
        // commands actor too
        let silent: Vec<DeviceId> = self
            .told_online
            .iter()
            .filter(|id| {
                self.is_offline(id, now_ms)
                    || self.state.devices.get(*id).is_some_and(|e| e.served_by.is_some())
            })
            .cloned()
            .collect();
        for id in silent {
            self.note_presence(&id, false);
        }
        if self.alerts.is_none() {
            return;
        }
        let judge = self.judges_presence();
        let mut batch = Vec::new();
        for (id, e) in &self.state.devices {
            let elsewhere = e.served_by.is_some();
            if elsewhere && !judge {
                continue;
            }
            let offline = inputs::presence_offline(
                e.offline_reason.is_some(),
                e.last_seen_ms,
                self.started_ms,
                self.state.policy.offline_after_ms,
                now_ms,
            );
            let metrics = if elsewhere {
                vec![(PRESENCE_OFFLINE.to_string(), if offline { 1.0 } else { 0.0 })]
            } else {
                let input = match self.inputs.get_mut(id) {
                    Some(i) => i,
                    None => self.inputs.entry(id.clone()).or_default(),
                };
                let mut m = input.tick(offline, now_ms);
                if m.len() > 1 {
                    // beyond presence: inputs that the tick may have moved on
                    self.dirty.insert(id.clone());
                }
                if !judge {
                    m.retain(|(n, _)| n != PRESENCE_OFFLINE);
                }
                m
            };
            if metrics.is_empty() || !self.sent.due(id, &metrics, now_ms) {
                continue;
            }
            batch.push(Observation {
                device: inputs::device_info(id, e.birth.as_ref()),
                metrics,
                checks: None,
                session_started: false,
                elsewhere: false,
                at_ms: now_ms,
            });
        }
        if self.sent.len() > self.state.devices.len() {
            let devices = &self.state.devices;
            self.sent.retain(|id| devices.contains_key(id));
        }
        if let Some(alerts) = self.alerts.as_ref().filter(|_| !batch.is_empty()) {
            alerts.do_send(Observe(batch));
        }
    }

    fn apply(&mut self, msg: Ingested, now: i64) {
        if self.checkpoint.is_some() {
            self.dirty.insert(msg.device().clone());
        }
        match msg {
            Ingested::Telemetry(e) => {
                let (id, ts, seq) = (e.device.clone(), e.ts_ms, e.seq);
                self.note_presence(&id, true);
                // newer by seq (a clock that jumped back) or by time (a buffer that started over)
                let newest = self
                    .state
                    .devices
                    .get(&id)
                    .and_then(|d| d.latest.as_ref())
                    .is_none_or(|l| seq > l.seq || ts >= l.ts_ms);
                self.state.apply_telemetry(*e, now);
                let input = self.inputs.entry(id.clone()).or_default();
                if newest && input.is_live_seq(seq, ts) {
                    let skew = Some(input.on_live_record(ts, now));
                    let mut m = self
                        .state
                        .devices
                        .get(&id)
                        .map(|d| d.metrics.clone())
                        .unwrap_or_default();
                    let service = input.on_metrics(&m);
                    let kpis = input.kpi.on_metrics(&self.kpi, &m, ts);
                    m.extend(skew);
                    m.extend(service);
                    m.extend(kpis);
                    self.observe(&id, m, now);
                }
            }
            Ingested::Health(e) => {
                let id = e.device.clone();
                let taken = self
                    .inputs
                    .entry(id.clone())
                    .or_default()
                    .on_health(&e.body, e.ts_ms);
                let checks = taken.is_some().then(|| e.body.checks.clone());
                self.state.apply_health(e, now);
                if let Some(service) = taken {
                    self.observe_with(&id, vec![service], checks, false, now);
                }
            }
            Ingested::Event(e) => {
                let id = e.device.clone();
                let m = self.inputs.entry(id.clone()).or_default().on_event(&e.body, now);
                self.state.apply_event(e, now);
                self.observe(&id, m, now);
            }
            Ingested::State(e) => {
                let id = e.device.clone();
                let mut m = match &e.body {
                    DeviceState::Online(b) => self
                        .inputs
                        .entry(id.clone())
                        .or_default()
                        .on_birth(&b.boot_id, e.ts_ms),
                    DeviceState::Offline(_) => Vec::new(),
                };
                let online = matches!(e.body, DeviceState::Online(_));
                if online {
                    // a new birth: a reconnect; pending commands go out again
                    self.told_online.remove(&id);
                }
                self.note_presence(&id, online);
                self.state.apply_state(e, now);
                if self.judges_presence() {
                    let offline = self.is_offline(&id, now);
                    m.push((PRESENCE_OFFLINE.into(), if offline { 1.0 } else { 0.0 }));
                }
                // a birth starts a session here: the alerts actor reads the device's stored
                // alerts again (several instances: it may come from another one)
                self.observe_with(&id, m, None, online, now);
            }
            Ingested::CmdResult(e) => {
                self.state.touch(&e.device, now);
                self.note_presence(&e.device.clone(), true);
                if let Some(c) = &self.commands {
                    c.do_send(CommandFeed::Result(e.device.clone(), e.body));
                }
            }
            Ingested::Restored(id, b) => {
                self.inputs.entry(id.clone()).or_default().restore(&b.boot_id);
                self.state.restore(id, *b);
            }
        }
    }
}

impl Actor for FleetActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // The fleet's mailbox must absorb ingest bursts.
        ctx.set_mailbox_capacity(1_000_000);
        ctx.run_interval(PRESENCE_TICK, |act, _| act.tick(common::time::now_ms()));
    }
}

/// Starts feeding an alerts actor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttachAlerts(pub Recipient<Observe>);

/// Presence changes and command results go to the commands actor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttachCommands(pub Recipient<CommandFeed>);

impl Handler<AttachCommands> for FleetActor {
    type Result = ();
    fn handle(&mut self, m: AttachCommands, _: &mut Context<Self>) {
        // a new commands actor (first start or restart) knows no presence: tell it every
        // device's; those online get their pending commands now
        self.commands = Some(m.0);
        self.told_online.clear();
        let now = common::time::now_ms();
        let presence: Vec<(DeviceId, bool)> = self
            .state
            .devices
            .iter()
            .map(|(id, e)| {
                let here = e.served_by.is_none();
                (
                    id.clone(),
                    here && self.state.presence(e, now).0 != Presence::Offline,
                )
            })
            .collect();
        for (id, online) in presence {
            match online {
                true => self.note_presence(&id, true),
                false => {
                    if let Some(c) = &self.commands {
                        c.do_send(CommandFeed::Presence(id, false));
                    }
                }
            }
        }
    }
}

impl Handler<Beat> for FleetActor {
    type Result = ();
    fn handle(&mut self, m: Beat, _: &mut Context<Self>) {
        m.record();
    }
}

impl Handler<AttachAlerts> for FleetActor {
    type Result = ();
    fn handle(&mut self, m: AttachAlerts, _: &mut Context<Self>) {
        self.alerts = Some(m.0);
    }
}

impl Handler<Ingested> for FleetActor {
    type Result = ();

    fn handle(&mut self, msg: Ingested, _: &mut Context<Self>) {
        let now = common::time::now_ms();
        self.apply(msg, now);
        if now - self.last_tick_ms >= OVERDUE_TICK_MS {
            self.tick(now);
        }
    }
}

/// Several instances: this instance's leaderships (who judges presence, [`PRESENCE`]).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttachCluster(pub Leadership);

impl Handler<AttachCluster> for FleetActor {
    type Result = ();
    fn handle(&mut self, m: AttachCluster, _: &mut Context<Self>) {
        self.leadership = Some(m.0);
    }
}

/// Machines served by other instances, from the store ([`super::mirror_pg`]).
impl Handler<Mirrored> for FleetActor {
    type Result = ();
    fn handle(&mut self, m: Mirrored, _: &mut Context<Self>) {
        let me = self
            .leadership
            .as_ref()
            .map(|l| l.id().to_string())
            .unwrap_or_default();
        let mut elsewhere = Vec::new();
        for r in m.0 {
            let id = r.id.clone();
            if self.checkpoint.is_some() {
                self.dirty.insert(id.clone());
            }
            let before = self.state.devices.get(&id).and_then(|e| e.telemetry_ts());
            if apply_remote(&mut self.state, &me, r)
                && let Some(e) = self.state.devices.get(&id)
                && e.served_by.is_some()
                && e.telemetry_ts() > before
            {
                // newer telemetry of a machine held elsewhere: for the fleet-wide correlation
                elsewhere.push(Observation {
                    device: self.info(&id),
                    metrics: e.metrics.clone(),
                    checks: None,
                    session_started: false,
                    elsewhere: true,
                    at_ms: e.telemetry_ts().unwrap_or(e.last_seen_ms),
                });
            }
        }
        if let Some(a) = self.alerts.as_ref().filter(|_| !elsewhere.is_empty()) {
            a.do_send(Observe(elsewhere));
        }
    }
}

/// Presence changes go to this store every tick.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttachPresence(pub Arc<dyn PresenceStore>);

impl Handler<AttachPresence> for FleetActor {
    type Result = ();
    fn handle(&mut self, m: AttachPresence, _: &mut Context<Self>) {
        self.presence = Some((m.0, PresenceLog::default()));
    }
}

impl Handler<AttachLive> for FleetActor {
    type Result = ();
    fn handle(&mut self, m: AttachLive, _: &mut Context<Self>) {
        self.live = Some((m.0, SummaryDiff::default()));
    }
}

/// The writer's delivery accounting for one device, after a batch.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeliveryUpdate(pub DeviceId, pub Delivery);

impl Handler<DeliveryUpdate> for FleetActor {
    type Result = ();
    fn handle(&mut self, m: DeliveryUpdate, _: &mut Context<Self>) {
        self.state.set_delivery(m.0, m.1);
    }
}

#[derive(Message)]
#[rtype(result = "Vec<DeviceSummary>")]
pub struct ListDevices;

impl Handler<ListDevices> for FleetActor {
    type Result = MessageResult<ListDevices>;
    fn handle(&mut self, _: ListDevices, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.state.list(common::time::now_ms()))
    }
}

#[derive(Message)]
#[rtype(result = "Option<DeviceDetail>")]
pub struct GetDevice(pub DeviceId);

impl Handler<GetDevice> for FleetActor {
    type Result = MessageResult<GetDevice>;
    fn handle(&mut self, m: GetDevice, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.state.detail(&m.0, common::time::now_ms()))
    }
}

impl Handler<ReadMachines> for FleetActor {
    type Result = MessageResult<ReadMachines>;
    fn handle(&mut self, m: ReadMachines, _: &mut Context<Self>) -> Self::Result {
        use crate::alerts::kpi::{ACCEPTED_TOTAL, REJECTED_TOTAL, find};
        MessageResult(
            m.0.into_iter()
                .filter_map(|d| {
                    let e = self.state.devices.get(&d)?;
                    // a machine served by another instance: its metrics as the store has them
                    let ts_ms = e.telemetry_ts()?;
                    Some(MachineReading {
                        accepted_total: find(&e.metrics, ACCEPTED_TOTAL),
                        rejected_total: find(&e.metrics, REJECTED_TOTAL),
                        health: e.health.as_ref().map(|h| match h.status {
                            common::HealthStatus::Ok => 0,
                            common::HealthStatus::Warn => 1,
                            common::HealthStatus::Critical => 2,
                        }),
                        device: d,
                        ts_ms,
                    })
                })
                .collect(),
        )
    }
}

/// What `/metrics` shows of one device: its summary, delivery accounting and the agent's
/// actor statuses from its latest health report.
#[derive(Debug, Clone)]
pub struct DeviceScrape {
    pub summary: DeviceSummary,
    pub delivery: Delivery,
    pub actors: Vec<common::ActorStatus>,
}

/// Every device for a Prometheus scrape ([`crate::http::metrics`]).
#[derive(Message)]
#[rtype(result = "Vec<DeviceScrape>")]
pub struct ScrapeDevices;

impl Handler<ScrapeDevices> for FleetActor {
    type Result = MessageResult<ScrapeDevices>;
    fn handle(&mut self, _: ScrapeDevices, _: &mut Context<Self>) -> Self::Result {
        let now = common::time::now_ms();
        MessageResult(
            self.state
                .devices
                .iter()
                // a machine served by another instance is in that instance's scrape
                .filter(|(_, e)| e.served_by.is_none())
                .map(|(id, e)| DeviceScrape {
                    summary: self.state.summary(id, e, now),
                    delivery: e.delivery.clone(),
                    actors: e.health.as_ref().map(|h| h.actors.clone()).unwrap_or_default(),
                })
                .collect(),
        )
    }
}
