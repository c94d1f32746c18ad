//! Link actor: owns the MQTT link task (see [`crate::link::task`]), reports its liveness, and
//! stops it on shutdown. A link task that ends or panics stops the actor with that reason.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actix::prelude::*;
use common::command::SignedCommand;
use tokio::sync::{Notify, mpsc, watch};

use crate::buffer::BufferHandle;
use crate::link::status::LinkStatus;
use crate::link::task::{self, LinkConfig, LinkHandles};
use crate::messages::StopNow;
use crate::supervise::liveness::Liveness;

/// How often the actor looks at its task.
const WATCH: Duration = Duration::from_secs(1);

/// What every (re)started link shares.
#[derive(Clone)]
pub struct LinkParts {
    pub cfg: LinkConfig,
    pub buffer: BufferHandle,
    pub status: Arc<LinkStatus>,
    pub commands: mpsc::UnboundedSender<SignedCommand>,
    /// Holds the link down while it reads `true` (the simulator's network cut; None in the
    /// agent).
    pub gate: Option<watch::Receiver<bool>>,
}

pub struct LinkActor {
    p: LinkParts,
    live: Arc<Liveness>,
    shutdown: Arc<Notify>,
    task: Option<actix::prelude::SpawnHandle>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl LinkActor {
    pub fn new(p: LinkParts, live: Arc<Liveness>) -> Self {
        LinkActor {
            p,
            live,
            shutdown: Arc::new(Notify::new()),
            task: None,
            handle: None,
        }
    }
}

impl Actor for LinkActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let handles = LinkHandles {
            buffer: self.p.buffer.clone(),
            wake: self.p.buffer.appended(),
            status: self.p.status.clone(),
            commands: self.p.commands.clone(),
            shutdown: self.shutdown.clone(),
            gate: self.p.gate.clone(),
        };
        self.handle = Some(actix::spawn(task::run(self.p.cfg.clone(), handles)));
        let _ = &self.task;
        ctx.run_interval(WATCH, |act, ctx| {
            let last = act.p.status.last_loop_ms.load(Ordering::Relaxed);
            if last > 0 {
                act.live.progress(last);
            }
            if act.handle.as_ref().is_some_and(|h| h.is_finished()) {
                let reason = match act.handle.take().map(futures_now) {
                    Some(Some(Err(e))) if e.is_panic() => {
                        crate::supervise::liveness::panic_message(&*e.into_panic())
                    }
                    _ => "link task ended".to_string(),
                };
                act.live.exit(reason);
                ctx.stop();
            }
        });
    }

    fn stopping(&mut self, _ctx: &mut Context<Self>) -> Running {
        self.shutdown.notify_one();
        Running::Stop
    }
}

/// The result of a finished task without awaiting (it is finished).
fn futures_now(h: tokio::task::JoinHandle<()>) -> Option<Result<(), tokio::task::JoinError>> {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut h = h;
    match std::pin::Pin::new(&mut h).poll(&mut cx) {
        std::task::Poll::Ready(r) => Some(r),
        std::task::Poll::Pending => None,
    }
}

impl Handler<StopNow> for LinkActor {
    type Result = ();
    fn handle(&mut self, _: StopNow, ctx: &mut Context<Self>) {
        self.shutdown.notify_one();
        ctx.stop();
    }
}

/// Asks the link to say goodbye and disconnect, and waits for it (bounded).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

impl Handler<Shutdown> for LinkActor {
    type Result = ResponseActFuture<Self, ()>;
    fn handle(&mut self, _: Shutdown, _ctx: &mut Context<Self>) -> Self::Result {
        self.shutdown.notify_one();
        let h = self.handle.take();
        Box::pin(
            async move {
                if let Some(h) = h {
                    let _ = tokio::time::timeout(Duration::from_secs(3), h).await;
                }
            }
            .into_actor(self)
            .map(|_, _, ctx| ctx.stop()),
        )
    }
}
