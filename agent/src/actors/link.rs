//! Link actor: owns the MQTT link task (see [`crate::link`]) and stops it on shutdown.

use std::sync::Arc;

use actix::prelude::*;
use common::command::SignedCommand;
use tokio::sync::{Notify, mpsc};

use crate::buffer::Buffer;
use crate::link::{self, LinkConfig, LinkHandles, LinkStatus};

pub struct LinkActor {
    cfg: Option<LinkConfig>,
    buffer: Arc<Buffer>,
    pub wake: Arc<Notify>,
    pub status: Arc<LinkStatus>,
    shutdown: Arc<Notify>,
    commands: mpsc::UnboundedSender<SignedCommand>,
}

impl LinkActor {
    pub fn new(
        cfg: LinkConfig,
        buffer: Arc<Buffer>,
        wake: Arc<Notify>,
        commands: mpsc::UnboundedSender<SignedCommand>,
    ) -> Self {
        LinkActor {
            cfg: Some(cfg),
            buffer,
            wake,
            status: Arc::default(),
            shutdown: Arc::new(Notify::new()),
            commands,
        }
    }
}

impl Actor for LinkActor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Context<Self>) {
        let Some(cfg) = self.cfg.take() else { return };
        let handles = LinkHandles {
            buffer: self.buffer.clone(),
            wake: self.wake.clone(),
            status: self.status.clone(),
            commands: self.commands.clone(),
            shutdown: self.shutdown.clone(),
        };
        actix::spawn(link::run(cfg, handles));
    }

    fn stopping(&mut self, _ctx: &mut Context<Self>) -> Running {
        self.shutdown.notify_one();
        Running::Stop
    }
}

/// Asks the link to say goodbye and disconnect.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for LinkActor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        self.shutdown.notify_one();
        ctx.stop();
    }
}
