//! The commands actor with several instances on one PostgreSQL store (see the parent's
//! docs): claims from the outbox, catching up with the other instances' changes, results of
//! commands created elsewhere, and the cluster events that wake them.

use std::collections::HashSet;

use actix::prelude::*;
use common::DeviceId;
use common::command::CommandResult;

use super::{CommandCluster, CommandsActor, REFRESH_OVERLAP_MS};
use crate::commands::book::{CommandRecord, Merged};
use crate::commands::outbox;
use crate::sessions::ClusterEvent;

/// The actor's cluster state (with [`CommandCluster`]).
pub(super) struct Cluster {
    pub(super) cfg: CommandCluster,
    /// Commands this instance created or delivered: it decides their expiry and timeout.
    pub(super) mine: HashSet<String>,
    /// Machines whose birth came before this instance's row for their session was committed:
    /// claimed for when it is ([`ClusterEvent::SessionOwned`]).
    pub(super) born_unowned: HashSet<DeviceId>,
    /// A claim is running; another was asked for meanwhile.
    pub(super) claiming: bool,
    pub(super) claim_again: bool,
    pub(super) refreshing: bool,
    /// `updated_at` of the newest change read from the store.
    pub(super) seen_ms: i64,
    pub(super) refreshing_rollouts: bool,
    /// When rollouts were last read (the next read starts a little before).
    pub(super) rollouts_read_ms: i64,
}

impl Cluster {
    pub(super) fn new(cfg: CommandCluster) -> Cluster {
        Cluster {
            cfg,
            mine: HashSet::new(),
            born_unowned: HashSet::new(),
            claiming: false,
            claim_again: false,
            refreshing: false,
            seen_ms: 0,
            refreshing_rollouts: false,
            rollouts_read_ms: 0,
        }
    }
}

/// Several instances: claims, the catching up with other instances, results of commands
/// created elsewhere.
impl CommandsActor {
    /// Claims what is due for the machines online here whose session this instance holds,
    /// and publishes it (one claim at a time; one asked for meanwhile runs after it).
    pub(super) fn claim(&mut self, ctx: &mut Context<Self>) {
        let Some(c) = &mut self.cluster else { return };
        if c.claiming {
            c.claim_again = true;
            return;
        }
        // online here (birth seen: subscribed) and its session held here now
        let online: Vec<DeviceId> = self
            .online
            .iter()
            .filter(|d| c.cfg.link.holds(d))
            .cloned()
            .collect();
        if online.is_empty() {
            return;
        }
        c.claiming = true;
        c.claim_again = false;
        let (store, me) = (c.cfg.store.clone(), c.cfg.link.me.clone());
        let job = async move {
            let s = store.clone();
            store
                .call(async move { outbox::claim(&s, &me, &online).await })
                .await
        };
        ctx.spawn(job.into_actor(self).map(|res, act, ctx| {
            if let Some(c) = &mut act.cluster {
                c.claiming = false;
            }
            match res {
                Ok(recs) => act.claimed(recs),
                Err(e) => tracing::warn!(error = %e, "commands not claimed; the next poll tries again"),
            }
            if act.cluster.as_ref().is_some_and(|c| c.claim_again) {
                act.claim(ctx);
            }
        }));
    }

    /// Publishes each claimed command that is still deliverable; an answered or expired one's
    /// outbox row is done.
    fn claimed(&mut self, recs: Vec<CommandRecord>) {
        let now = common::time::now_ms();
        for rec in recs {
            let id = rec.id.clone();
            self.book.merge(rec);
            if let Some(c) = &mut self.cluster {
                c.mine.insert(id.clone());
            }
            match self.book.claimed(&id, now) {
                Some(fx) => {
                    tracing::debug!(command = %id, "command claimed");
                    self.apply(fx);
                }
                None => self.store.delivered(&id),
            }
        }
    }

    /// Reads what other instances changed (and commands they created) into the book.
    pub(super) fn refresh(&mut self, ctx: &mut Context<Self>) {
        let Some(c) = &mut self.cluster else { return };
        if c.refreshing {
            return;
        }
        c.refreshing = true;
        let store = c.cfg.store.clone();
        let since = c.seen_ms - REFRESH_OVERLAP_MS;
        let job = async move {
            let s = store.clone();
            store
                .call(async move { outbox::changed_since(&s, since).await })
                .await
        };
        ctx.spawn(job.into_actor(self).map(|res, act, _| {
            if let Some(c) = &mut act.cluster {
                c.refreshing = false;
            }
            match res {
                Ok(recs) => {
                    let newest = recs.iter().map(|r| r.updated_ms).max();
                    for rec in recs {
                        let id = rec.id.clone();
                        if act.book.merge(rec) != Merged::Kept {
                            act.publish_live(&id);
                        }
                    }
                    if let (Some(c), Some(n)) = (&mut act.cluster, newest) {
                        c.seen_ms = c.seen_ms.max(n);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "other instances' commands not read"),
            }
        }));
    }

    /// Reads the rollouts other instances wrote: one started elsewhere reaches the leader,
    /// which advances it ([`super::ROLLOUTS_JOB`]); a follower shows the leader's progress;
    /// an operator's resume or abort made on any instance reaches the leader.
    pub(super) fn refresh_rollouts(&mut self, ctx: &mut Context<Self>) {
        let Some(c) = &mut self.cluster else { return };
        if c.refreshing_rollouts {
            return;
        }
        c.refreshing_rollouts = true;
        let store = c.cfg.store.clone();
        let since = c.rollouts_read_ms - REFRESH_OVERLAP_MS;
        let started = common::time::now_ms();
        let job = async move {
            let s = store.clone();
            store
                .call(async move { outbox::rollouts_since(&s, since).await })
                .await
        };
        ctx.spawn(job.into_actor(self).map(move |res, act, _| {
            if let Some(c) = &mut act.cluster {
                c.refreshing_rollouts = false;
            }
            match res {
                Ok(stored) => {
                    let leading = act.leadership.role(super::ROLLOUTS_JOB) != crate::cluster::Role::Follower;
                    for r in stored {
                        let take = act
                            .rollouts
                            .get(&r.id)
                            .is_none_or(|ours| ours.replaced_by(&r, leading));
                        if take {
                            act.rollouts.insert(r.id.clone(), r);
                        }
                    }
                    if let Some(c) = &mut act.cluster {
                        c.rollouts_read_ms = started;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "other instances' rollouts not read"),
            }
        }));
    }

    /// A result for a command this book does not hold (created on another instance, not
    /// read yet): read it, then take the result.
    pub(super) fn result_from_elsewhere(
        &mut self,
        device: DeviceId,
        r: CommandResult,
        ctx: &mut Context<Self>,
    ) {
        let Some(c) = &self.cluster else { return };
        let store = c.cfg.store.clone();
        let id = r.command_id.clone();
        let job = async move {
            let s = store.clone();
            store.call(async move { outbox::load(&s, &id).await }).await
        };
        ctx.spawn(job.into_actor(self).map(move |res, act, _| match res {
            Ok(Some(rec)) if rec.device == device => {
                act.book.merge(rec);
                let now = common::time::now_ms();
                if let Some(fx) = act.book.on_result(&device, &r, now) {
                    if let Some(c) = &mut act.cluster {
                        c.mine.insert(r.command_id.clone());
                    }
                    act.store.delivered(&r.command_id);
                    act.apply(fx);
                }
            }
            Ok(_) => {
                tracing::warn!(device = %device, command = %r.command_id, status = ?r.status, reason = ?r.reason, "result for an unknown command")
            }
            Err(e) => {
                tracing::warn!(error = %e, command = %r.command_id, "result not taken: its command could not be read")
            }
        }));
    }
}

/// A cluster event, inside the actor.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct Wake(pub(super) ClusterEvent);

impl Handler<Wake> for CommandsActor {
    type Result = ();
    fn handle(&mut self, Wake(ev): Wake, ctx: &mut Context<Self>) {
        match ev {
            // the row of a session whose birth came first: its commands are due now. (A
            // machine that was online here before is not claimed for until its new birth
            // says it is subscribed.)
            ClusterEvent::SessionOwned(d) => {
                if self.cluster.as_mut().is_some_and(|c| c.born_unowned.remove(&d)) {
                    self.claim(ctx);
                }
            }
            // only machines online here are claimed for: a wake for another is not ours
            ClusterEvent::CommandDue(d) => {
                if self.online.contains(&d) {
                    self.claim(ctx);
                }
            }
            ClusterEvent::Resync => {
                self.refresh(ctx);
                self.claim(ctx);
            }
        }
    }
}
