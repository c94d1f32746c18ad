//! Fleet actor: owns the [`FleetState`]; ingest sends it records, the API asks it questions.

use actix::prelude::*;
use common::command::CommandResult;
use common::{Birth, DeviceId, DeviceState, Envelope, Event, HealthReport, Telemetry};

use crate::delivery::Delivery;
use crate::fleet::{DeviceDetail, DeviceSummary, FleetState, PresencePolicy};

pub struct FleetActor {
    state: FleetState,
}

impl FleetActor {
    pub fn new(policy: PresencePolicy) -> Self {
        FleetActor {
            state: FleetState::new(policy),
        }
    }
}

impl Actor for FleetActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // The fleet's mailbox must absorb ingest bursts.
        ctx.set_mailbox_capacity(1_000_000);
    }
}

/// A decoded, deduplicated record from a device (see [`crate::writer`]).
#[derive(Message)]
#[rtype(result = "()")]
pub enum Ingested {
    Telemetry(Box<Envelope<Telemetry>>),
    Health(Envelope<HealthReport>),
    Event(Envelope<Event>),
    State(Envelope<DeviceState>),
    CmdResult(Envelope<CommandResult>),
    /// Metadata remembered from before a restart.
    Restored(DeviceId, Box<Birth>),
}

impl Ingested {
    /// (seq, timestamp) of a sequenced record; None for presence.
    pub fn seq_ts(&self) -> Option<(u64, i64)> {
        match self {
            Ingested::Telemetry(e) => Some((e.seq, e.ts_ms)),
            Ingested::Health(e) => Some((e.seq, e.ts_ms)),
            Ingested::Event(e) => Some((e.seq, e.ts_ms)),
            Ingested::CmdResult(e) => Some((e.seq, e.ts_ms)),
            Ingested::State(_) | Ingested::Restored(..) => None,
        }
    }
}

impl Handler<Ingested> for FleetActor {
    type Result = ();

    fn handle(&mut self, msg: Ingested, _: &mut Context<Self>) {
        let now = common::time::now_ms();
        match msg {
            Ingested::Telemetry(e) => self.state.apply_telemetry(*e, now),
            Ingested::Health(e) => self.state.apply_health(e, now),
            Ingested::Event(e) => self.state.apply_event(e, now),
            Ingested::State(e) => self.state.apply_state(e, now),
            Ingested::CmdResult(e) => self.state.touch(&e.device, now),
            Ingested::Restored(id, b) => self.state.restore(id, *b),
        }
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
