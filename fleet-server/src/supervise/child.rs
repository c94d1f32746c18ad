//! Children: how the supervisor starts one generation of a child and what it holds of it.
//!
//! A [`ChildSpec`] is a name and a start function; each call starts a new generation with a
//! fresh [`Liveness`] and returns its [`Running`]. The start function reloads whatever state
//! the child needs from the store and re-attaches it to the children it talks to, so a
//! restart is the same code path as the first start. Three helpers cover every child, each on
//! a thread of its own so that a panic or a stall never takes a neighbour with it:
//!
//! - [`spawn_actor`]: an actix actor on a new arbiter. Its liveness is its mailbox: the
//!   supervisor sends it a [`Beat`] every [`BEAT`] and the actor records it. A panicking
//!   handler ends the actor (actix 0.13 drops its task; the arbiter's thread and its other
//!   actors live on), which the closed mailbox shows.
//! - [`spawn_task`]: a future (an MQTT client loop, the notification dispatcher) on a new
//!   arbiter, beaten every [`BEAT`] from inside its own task: a blocked thread stops the
//!   beats, a panic ends the task.
//! - [`spawn_thread`]: a blocking loop (the ingest writer, the alerts persister) on a named
//!   thread; the loop beats itself and ends when its stop flag is set.
//!
//! Stopping a generation never blocks the supervisor: a stalled one is abandoned to end when
//! its thread wakes up (its queue, an [`super::inbox::Inbox`], waits for it).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix::prelude::*;

use super::liveness::{Liveness, enter, panic_message};
use super::restart::ExitKind;

/// How often every child shows it is alive.
pub const BEAT: Duration = Duration::from_secs(1);

/// What the supervisor holds of a running generation.
pub struct Running {
    alive: Box<dyn Fn() -> bool + Send>,
    ping: Box<dyn Fn() + Send>,
    stop: Option<Box<dyn FnOnce() + Send>>,
}

impl Running {
    /// Still running (an actor's mailbox open, a task or thread not ended).
    pub fn alive(&self) -> bool {
        (self.alive)()
    }

    /// Asks an actor for a beat (no-op for tasks and threads, which beat themselves).
    pub fn ping(&self) {
        (self.ping)()
    }

    /// Asks it to stop; returns at once.
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            s();
        }
    }
}

pub type StartFn = Box<dyn FnMut(Arc<Liveness>) -> anyhow::Result<Running> + Send>;

/// How to (re)start one child.
pub struct ChildSpec {
    pub name: &'static str,
    pub(super) start: StartFn,
}

impl ChildSpec {
    pub fn new(
        name: &'static str,
        start: impl FnMut(Arc<Liveness>) -> anyhow::Result<Running> + Send + 'static,
    ) -> Self {
        ChildSpec {
            name,
            start: Box::new(start),
        }
    }
}

/// The supervisor's liveness probe: an actor handles it by calling [`Beat::record`].
#[derive(Message)]
#[rtype(result = "()")]
pub struct Beat(pub Arc<Liveness>);

impl Beat {
    pub fn record(&self) {
        self.0.beat(common::time::now_ms());
    }
}

/// Sets a flag when dropped: a task or thread ended, however it ended.
struct DoneOnDrop(Arc<AtomicBool>);

impl Drop for DoneOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Starts the actor `make` builds on a new arbiter.
pub fn spawn_actor<A>(
    live: &Arc<Liveness>,
    make: impl FnOnce(&mut Context<A>) -> A + Send + 'static,
) -> (Addr<A>, Running)
where
    A: Actor<Context = Context<A>> + Handler<Beat>,
{
    let arbiter = Arbiter::new();
    let l = live.clone();
    arbiter.spawn_fn(move || enter(l));
    let addr = A::start_in_arbiter(&arbiter.handle(), make);
    let (probe, pinged, l) = (addr.clone(), addr.clone(), live.clone());
    let run = Running {
        alive: Box::new(move || probe.connected()),
        ping: Box::new(move || pinged.do_send(Beat(l.clone()))),
        // the actor is dropped with its arbiter's runtime, which stops it (`stopped` runs)
        stop: Some(Box::new(move || {
            arbiter.stop();
        })),
    };
    (addr, run)
}

/// Runs the future `make` builds on a new arbiter, beating every [`BEAT`] from its own task.
pub fn spawn_task<F, Fut>(live: &Arc<Liveness>, make: F) -> Running
where
    F: FnOnce(Arc<Liveness>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let arbiter = Arbiter::new();
    let done = Arc::new(AtomicBool::new(false));
    let (l, d) = (live.clone(), done.clone());
    arbiter.spawn_fn(move || {
        enter(l.clone());
        let guard = DoneOnDrop(d);
        let fut = make(l.clone());
        let beaten = beating(l.clone(), fut);
        let task = tokio::task::spawn_local(async move {
            let _guard = guard;
            beaten.await
        });
        actix::spawn(async move {
            match task.await {
                Ok(()) => l.exit(ExitKind::Ended, "returned"),
                Err(e) if e.is_panic() => l.exit(ExitKind::Panic, panic_message(&*e.into_panic())),
                // cancelled: its arbiter stopped
                Err(_) => {}
            }
        });
    });
    Running {
        alive: Box::new(move || !done.load(Ordering::Acquire)),
        ping: Box::new(|| {}),
        stop: Some(Box::new(move || {
            arbiter.stop();
        })),
    }
}

/// `fut`, with a beat every [`BEAT`] from the same task.
async fn beating(live: Arc<Liveness>, fut: impl Future<Output = ()>) {
    tokio::pin!(fut);
    let mut tick = tokio::time::interval(BEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            biased;
            () = &mut fut => return,
            _ = tick.tick() => live.beat(common::time::now_ms()),
        }
    }
}

/// Runs `body` on a thread named `thread`; it gets its liveness (to beat) and its stop flag.
/// An error it returns is its exit reason.
pub fn spawn_thread<F>(live: &Arc<Liveness>, thread: &str, body: F) -> anyhow::Result<Running>
where
    F: FnOnce(Arc<Liveness>, Arc<AtomicBool>) -> anyhow::Result<()> + Send + 'static,
{
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let (l, s, d) = (live.clone(), stop.clone(), done.clone());
    std::thread::Builder::new().name(thread.into()).spawn(move || {
        let _done = DoneOnDrop(d);
        enter(l.clone());
        let stopping = s.clone();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(l.clone(), s))) {
            Ok(Ok(())) if stopping.load(Ordering::Acquire) => {}
            Ok(Ok(())) => l.exit(ExitKind::Ended, "returned"),
            Ok(Err(e)) => l.exit(ExitKind::Failed, format!("{e:#}")),
            Err(p) => l.exit(ExitKind::Panic, panic_message(&*p)),
        }
    })?;
    Ok(Running {
        alive: Box::new(move || !done.load(Ordering::Acquire)),
        ping: Box::new(|| {}),
        stop: Some(Box::new(move || stop.store(true, Ordering::Release))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_child_reports_its_error_and_its_end() {
        let live = Arc::new(Liveness::new("t", 0));
        let run = spawn_thread(&live, "t", |_, _| anyhow::bail!("journal unreadable")).unwrap();
        let t = std::time::Instant::now();
        while run.alive() {
            assert!(t.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            live.take_exit(),
            Some((ExitKind::Failed, "journal unreadable".into()))
        );
    }

    #[test]
    fn a_stopped_thread_child_ends_without_a_reason() {
        let live = Arc::new(Liveness::new("t", 0));
        let mut run = spawn_thread(&live, "t", |l, stop| {
            while !stop.load(Ordering::Acquire) {
                l.beat(common::time::now_ms());
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(())
        })
        .unwrap();
        let t = std::time::Instant::now();
        while live.last_progress_ms() == 0 {
            assert!(t.elapsed() < Duration::from_secs(5), "it beats");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(run.alive());
        run.stop();
        while run.alive() {
            assert!(t.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(live.take_exit(), None, "a stop is no exit");
    }
}
