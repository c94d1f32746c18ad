//! [`Inbox`]: a queue's receiving end that outlives the child consuming it. Producers keep
//! their senders across restarts, and nothing queued is lost with a consumer: each generation
//! holds the receiver for its lifetime, and the next one takes it when the previous one let
//! go (it panicked or ended, or, stalled, woke up and saw it was stopped). While it waits its
//! beats do not count ([`Liveness::set_waiting`]), so a generation stuck behind a predecessor
//! that never wakes is seen as stalled too, and the restart intensity ends the process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, OwnedMutexGuard};

use super::liveness::Liveness;

/// How often a thread waiting for its inbox looks again (and at its stop flag).
pub const TAKE_POLL: Duration = Duration::from_millis(20);

pub struct Inbox<R>(Arc<Mutex<R>>);

impl<R> Clone for Inbox<R> {
    fn clone(&self) -> Self {
        Inbox(self.0.clone())
    }
}

impl<R> Inbox<R> {
    pub fn new(receiver: R) -> Self {
        Inbox(Arc::new(Mutex::new(receiver)))
    }

    /// Takes the receiver for an async child (waits for the previous generation).
    pub async fn take(&self, live: &Liveness) -> OwnedMutexGuard<R> {
        live.set_waiting(true);
        let g = self.0.clone().lock_owned().await;
        live.set_waiting(false);
        g
    }

    /// Takes the receiver if no generation holds it.
    pub fn try_take(&self) -> Option<OwnedMutexGuard<R>> {
        self.0.clone().try_lock_owned().ok()
    }

    /// Takes the receiver for a thread child; None once `stop` is set while it waits. Not on
    /// an async runtime's thread.
    pub fn take_blocking(&self, live: &Liveness, stop: &AtomicBool) -> Option<OwnedMutexGuard<R>> {
        live.set_waiting(true);
        let g = loop {
            if let Ok(g) = self.0.clone().try_lock_owned() {
                break Some(g);
            }
            if stop.load(Ordering::Acquire) {
                break None;
            }
            std::thread::sleep(TAKE_POLL);
        };
        live.set_waiting(false);
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_generation_gets_the_queue_with_what_is_still_in_it() {
        let (tx, rx) = std::sync::mpsc::channel::<u32>();
        let inbox = Inbox::new(rx);
        let stop = AtomicBool::new(false);
        let first = Liveness::new("persist", 0);
        let g = inbox.take_blocking(&first, &stop).unwrap();
        assert!(inbox.try_take().is_none(), "held by the first generation");
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        assert_eq!(g.recv().unwrap(), 1);
        // the first generation dies (its guard drops) with 2 still queued
        drop(g);
        let second = Liveness::new("persist", 0);
        let g = inbox.take_blocking(&second, &stop).unwrap();
        assert_eq!(g.recv().unwrap(), 2);
        // a third one waits while the second holds it, and gives up when stopped
        let third = Liveness::new("persist", 0);
        stop.store(true, Ordering::Release);
        assert!(inbox.take_blocking(&third, &stop).is_none());
    }
}
