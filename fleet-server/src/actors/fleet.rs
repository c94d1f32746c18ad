//! Fleet actor: owns the [`FleetState`]; ingest sends it records, the API asks it questions.

use actix::prelude::*;
use common::{DeviceId, DeviceState, Envelope, Event, HealthReport, Telemetry};

use crate::fleet::{Applied, DeviceDetail, DeviceSummary, FleetState, PresencePolicy};

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

/// A decoded record from a device.
#[derive(Message)]
#[rtype(result = "Applied")]
pub enum Ingested {
    Telemetry(Box<Envelope<Telemetry>>),
    Health(Envelope<HealthReport>),
    Event(Envelope<Event>),
    State(Envelope<DeviceState>),
    CmdResult { device: DeviceId, seq: u64 },
}

impl Handler<Ingested> for FleetActor {
    type Result = MessageResult<Ingested>;

    fn handle(&mut self, msg: Ingested, _: &mut Context<Self>) -> Self::Result {
        let now = common::time::now_ms();
        MessageResult(match msg {
            Ingested::Telemetry(e) => self.state.apply_telemetry(*e, now),
            Ingested::Health(e) => self.state.apply_health(e, now),
            Ingested::Event(e) => self.state.apply_event(e, now),
            Ingested::State(e) => {
                self.state.apply_state(e, now);
                Applied::New
            }
            Ingested::CmdResult { device, seq } => self.state.apply_sequenced_other(&device, seq, now),
        })
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
