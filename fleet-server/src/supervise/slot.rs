//! [`Slot`]: the current address of a restartable actor. A restart starts a new actor with a
//! new address; whoever holds the slot (the writer, the HTTP routes) resolves it on each send
//! and so reaches the new actor. Messages sent while the child is down are dropped
//! ([`Slot::do_send`]) or answered with [`MailboxError::Closed`] ([`Slot::send`]), as for a
//! stopped actor.

use std::sync::{Arc, RwLock};

use actix::dev::ToEnvelope;
use actix::prelude::*;

pub struct Slot<A: Actor>(Arc<RwLock<Option<Addr<A>>>>);

impl<A: Actor> Clone for Slot<A> {
    fn clone(&self) -> Self {
        Slot(self.0.clone())
    }
}

impl<A: Actor> Default for Slot<A> {
    fn default() -> Self {
        Slot(Arc::default())
    }
}

impl<A: Actor> Slot<A> {
    /// A slot holding `addr` (an actor nobody restarts: tools, tests).
    pub fn with(addr: Addr<A>) -> Self {
        let s = Slot::default();
        s.set(addr);
        s
    }

    /// The actor's new address (its supervisor, after a start).
    pub fn set(&self, addr: Addr<A>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(addr);
    }

    /// The current address; None before the first start.
    pub fn get(&self) -> Option<Addr<A>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sends without waiting; dropped while the actor is down.
    pub fn do_send<M>(&self, msg: M)
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        if let Some(a) = self.get() {
            a.do_send(msg);
        }
    }

    /// Sends and waits for the answer.
    pub async fn send<M>(&self, msg: M) -> Result<M::Result, MailboxError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        match self.get() {
            Some(a) => a.send(msg).await,
            None => Err(MailboxError::Closed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(u32);
    impl Actor for Echo {
        type Context = Context<Self>;
    }
    #[derive(Message)]
    #[rtype(result = "u32")]
    struct Who;
    impl Handler<Who> for Echo {
        type Result = u32;
        fn handle(&mut self, _: Who, _: &mut Context<Self>) -> u32 {
            self.0
        }
    }

    #[actix::test]
    async fn holders_reach_the_actor_started_after_them() {
        let slot: Slot<Echo> = Slot::default();
        let holder = slot.clone();
        assert!(matches!(holder.send(Who).await, Err(MailboxError::Closed)));
        slot.set(Echo(1).start());
        assert_eq!(holder.send(Who).await.unwrap(), 1);
        slot.set(Echo(2).start());
        assert_eq!(holder.send(Who).await.unwrap(), 2, "the restarted actor answers");
    }
}
