//! Machine sessions across several instances on one PostgreSQL store (docs/architecture.md,
//! "Several instances"): which instance holds each machine's MQTT session, ending a stale one,
//! and waking the commands actor when a command or a session it can deliver to appears.
//!
//! - [`owners`]: the sessions this instance holds and when one is stale (pure)
//! - [`pg`]: the `session_owners` upsert and re-read, the LISTEN connection
//!
//! How it runs: the embedded broker reports each device session it accepts or loses
//! ([`crate::broker::sessions::SessionEvents`]); one task on the store's runtime upserts the
//! machine's row (this instance, epoch + 1), remembers the epoch, and announces
//! [`ClusterEvent::SessionOwned`] once the row is committed (the commands actor may then claim
//! the machine's commands). The listener's notifications arrive in the same task: a
//! `fleet_session` row naming another instance at a higher epoch than a session held here ends
//! that session ([`SessionStats::stale_dropped`]); `fleet_command` becomes
//! [`ClusterEvent::CommandDue`]. NOTIFY is only a wake-up: after every (re)connect of the
//! listener and every [`REREAD_INTERVAL`] the rows of the held machines are read again.
//!
//! With sled (one instance) none of this runs.

pub mod owners;
pub mod pg;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use common::DeviceId;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};

use self::owners::{Held, Holdings};
use self::pg::Wake;
use crate::broker::sessions::{BrokerSession, SessionEvents, SessionObserver};
use crate::pg::store::PgStore;

/// How often the rows of the held sessions are read again (a lost notification is noticed
/// within this).
pub const REREAD_INTERVAL: Duration = Duration::from_secs(5);
/// Cluster events kept for a slow subscriber before it misses some (it then re-reads).
pub const EVENTS_CAPACITY: usize = 4096;

/// What other features of this instance learn from the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// This instance now holds `device`'s session, and its row says so (committed).
    SessionOwned(DeviceId),
    /// A command for `device` entered the outbox (on any instance).
    CommandDue(DeviceId),
    /// Notifications may have been missed: look at everything again.
    Resync,
}

/// The sessions' counters (in `/api/v1/health` as `sessions`).
#[derive(Debug, Default)]
pub struct SessionStats {
    pub owned: AtomicU64,
    pub stale_dropped: AtomicU64,
    pub stale_already_gone: AtomicU64,
    pub upsert_errors: AtomicU64,
    pub reread_errors: AtomicU64,
    pub notifications: AtomicU64,
    pub malformed: AtomicU64,
    pub resyncs: AtomicU64,
    pub held: AtomicU64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SessionStatsSnapshot {
    pub instance: String,
    /// Sessions this broker accepted whose row now names this instance.
    pub owned: u64,
    /// Stale sessions ended because another instance took the machine.
    pub stale_dropped: u64,
    /// Stale sessions that had ended by themselves before they could be ended.
    pub stale_already_gone: u64,
    pub upsert_errors: u64,
    pub reread_errors: u64,
    pub notifications: u64,
    pub malformed: u64,
    /// Times the listener (re)connected and everything was read again.
    pub resyncs: u64,
    /// Sessions held now.
    pub held: u64,
}

/// The sessions service of this instance (module docs). Dropping it does not stop the task:
/// it ends when the broker's last [`SessionObserver`] is gone.
pub struct Sessions {
    me: String,
    observer: SessionObserver,
    events: broadcast::Sender<ClusterEvent>,
    stats: Arc<SessionStats>,
    held: HeldSet,
}

/// The machines whose session this instance's broker holds now (its row names this
/// instance), kept by the task for the commands actor (a new generation of the actor reads
/// it rather than replaying events).
type HeldSet = Arc<RwLock<HashSet<DeviceId>>>;

impl Sessions {
    /// Starts the task and the listener on the store's runtime.
    pub fn start(store: PgStore, me: &str) -> Sessions {
        let (tx, rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(EVENTS_CAPACITY);
        let stats = Arc::new(SessionStats::default());
        let held = HeldSet::default();
        store.spawn(run(
            store.clone(),
            me.to_string(),
            rx,
            Out {
                events: events.clone(),
                stats: stats.clone(),
                held: held.clone(),
            },
        ));
        Sessions {
            me: me.to_string(),
            observer: SessionObserver(Arc::new(Reporter { tx })),
            events,
            stats,
            held,
        }
    }

    /// What the embedded broker reports sessions to.
    pub fn observer(&self) -> SessionObserver {
        self.observer.clone()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.events.subscribe()
    }

    pub fn stats(&self) -> Arc<SessionStats> {
        self.stats.clone()
    }

    /// What the commands actor needs: who this instance is, and the events (each generation
    /// of the actor subscribes anew).
    pub fn link(&self) -> ClusterLink {
        ClusterLink {
            me: self.me.clone(),
            events: self.events.clone(),
            held: self.held.clone(),
        }
    }

    /// A handle the API keeps for the counters.
    pub fn view(&self) -> SessionsView {
        SessionsView {
            me: self.me.clone(),
            stats: self.stats.clone(),
        }
    }
}

/// This instance's id and its cluster events, for the commands actor.
#[derive(Debug, Clone)]
pub struct ClusterLink {
    pub me: String,
    events: broadcast::Sender<ClusterEvent>,
    held: HeldSet,
}

impl ClusterLink {
    pub fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.events.subscribe()
    }

    /// Whether this instance's broker holds `device`'s session now and its row says so.
    pub fn holds(&self, device: &DeviceId) -> bool {
        self.held
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(device)
    }
}

/// The counters and the instance id, for `/api/v1/health`.
#[derive(Debug, Clone)]
pub struct SessionsView {
    me: String,
    stats: Arc<SessionStats>,
}

impl SessionsView {
    pub fn snapshot(&self) -> SessionStatsSnapshot {
        let s = &self.stats;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SessionStatsSnapshot {
            instance: self.me.clone(),
            owned: n(&s.owned),
            stale_dropped: n(&s.stale_dropped),
            stale_already_gone: n(&s.stale_already_gone),
            upsert_errors: n(&s.upsert_errors),
            reread_errors: n(&s.reread_errors),
            notifications: n(&s.notifications),
            malformed: n(&s.malformed),
            resyncs: n(&s.resyncs),
            held: n(&s.held),
        }
    }
}

enum BrokerEvent {
    Connected(DeviceId, BrokerSession),
    Disconnected(DeviceId, BrokerSession),
}

/// Queues the broker's reports for the task (never blocks the broker).
struct Reporter {
    tx: mpsc::UnboundedSender<BrokerEvent>,
}

impl SessionEvents for Reporter {
    fn connected(&self, device: DeviceId, session: BrokerSession) {
        let _ = self.tx.send(BrokerEvent::Connected(device, session));
    }

    fn disconnected(&self, device: DeviceId, session: BrokerSession) {
        let _ = self.tx.send(BrokerEvent::Disconnected(device, session));
    }
}

/// Where the task's outcomes go.
struct Out {
    events: broadcast::Sender<ClusterEvent>,
    stats: Arc<SessionStats>,
    held: HeldSet,
}

impl Out {
    fn publish_held(&self, held: &Holdings<BrokerSession>) {
        let now: HashSet<DeviceId> = held.devices().into_iter().collect();
        self.stats.held.store(now.len() as u64, Ordering::Relaxed);
        *self.held.write().unwrap_or_else(|p| p.into_inner()) = now;
    }
}

/// The task: broker reports, notifications and re-reads, one at a time (so an upsert's epoch
/// is remembered before the next notification is judged).
async fn run(store: PgStore, me: String, mut rx: mpsc::UnboundedReceiver<BrokerEvent>, out: Out) {
    let (events, stats) = (&out.events, &out.stats);
    let (wtx, mut wrx) = mpsc::unbounded_channel();
    let listener = store.spawn(pg::listen(store.config().driver_config().clone(), wtx));
    let mut held: Holdings<BrokerSession> = Holdings::new(&me);
    // sessions accepted whose `session_owners` row is not written yet, tried again every
    // REREAD_INTERVAL while they last: until then commands for them wait and other instances
    // believe the machine is still where it was
    let mut unrecorded: BTreeMap<DeviceId, BrokerSession> = BTreeMap::new();
    let mut reread = tokio::time::interval(REREAD_INTERVAL);
    reread.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                None => break,
                Some(BrokerEvent::Connected(device, session)) => {
                    unrecorded.remove(&device);
                    own(&store, &me, device, session, &mut held, &mut unrecorded, &out).await;
                }
                Some(BrokerEvent::Disconnected(device, session)) => {
                    if unrecorded.get(&device).is_some_and(|s| s.same(&session)) {
                        unrecorded.remove(&device);
                    }
                    held.release(&device, |s| s.same(&session));
                    out.publish_held(&held);
                }
            },
            Some(w) = wrx.recv() => match w {
                Wake::Resync => {
                    stats.resyncs.fetch_add(1, Ordering::Relaxed);
                    reread_owners(&store, &mut held, stats).await;
                    out.publish_held(&held);
                    let _ = events.send(ClusterEvent::Resync);
                }
                Wake::Session(owner) => {
                    stats.notifications.fetch_add(1, Ordering::Relaxed);
                    if let Some(h) = held.take_stale(&owner) {
                        drop_stale(owner.device.clone(), h, &owner.instance, owner.epoch, stats);
                        out.publish_held(&held);
                    } else if owner.instance == me {
                        // ours (the same notification as our own upsert, or a restart's)
                        tracing::trace!(device = %owner.device, epoch = owner.epoch, "own session row");
                    }
                }
                Wake::Command(device) => {
                    stats.notifications.fetch_add(1, Ordering::Relaxed);
                    let _ = events.send(ClusterEvent::CommandDue(device));
                }
                Wake::Malformed(why) => {
                    stats.malformed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %why, "notification not understood");
                }
            },
            _ = reread.tick() => {
                // sessions whose row could not be written (the database was down): again
                for (device, session) in std::mem::take(&mut unrecorded) {
                    own(&store, &me, device, session, &mut held, &mut unrecorded, &out).await;
                }
                if reread_owners(&store, &mut held, stats).await {
                    out.publish_held(&held);
                }
            }
        }
    }
    listener.abort();
}

/// Writes the row of a session this instance's broker accepted (`epoch + 1`) and holds it;
/// if the database does not take it, keeps it in `unrecorded` for the next try.
async fn own(
    store: &PgStore,
    me: &str,
    device: DeviceId,
    session: BrokerSession,
    held: &mut Holdings<BrokerSession>,
    unrecorded: &mut BTreeMap<DeviceId, BrokerSession>,
    out: &Out,
) {
    let res = pg::upsert_owner(store, &device, me).await;
    store.note(&res);
    match res {
        Ok(epoch) => {
            tracing::debug!(device = %device, epoch, "session owned");
            held.hold(device.clone(), epoch, session);
            out.publish_held(held);
            out.stats.owned.fetch_add(1, Ordering::Relaxed);
            let _ = out.events.send(ClusterEvent::SessionOwned(device));
        }
        Err(e) => {
            out.stats.upsert_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(device = %device, error = %e, "session owner not recorded; tried again in {REREAD_INTERVAL:?}");
            unrecorded.insert(device, session);
        }
    }
}

/// Reads the rows of every held session again; ends those another instance took (true when
/// it did).
async fn reread_owners(
    store: &PgStore,
    held: &mut Holdings<BrokerSession>,
    stats: &Arc<SessionStats>,
) -> bool {
    if held.is_empty() {
        return false;
    }
    let res = pg::read_owners(store, &held.devices()).await;
    store.note(&res);
    match res {
        Ok(rows) => {
            let stale = held.take_stale_rows(&rows);
            let any = !stale.is_empty();
            for (device, h) in stale {
                let owner = rows.iter().find(|r| r.device == device);
                let (instance, epoch) = owner.map(|o| (o.instance.as_str(), o.epoch)).unwrap_or(("?", 0));
                drop_stale(device, h, instance, epoch, stats);
            }
            any
        }
        Err(e) => {
            stats.reread_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "session owners not re-read");
            false
        }
    }
}

/// Ends a stale session (on the broker's runtime, without holding up the task) and counts it.
fn drop_stale(
    device: DeviceId,
    h: Held<BrokerSession>,
    instance: &str,
    epoch: i64,
    stats: &Arc<SessionStats>,
) {
    tracing::info!(
        device = %device, held_epoch = h.epoch, owner = %instance, owner_epoch = epoch,
        client = %h.session.client_id(), "another instance took the machine; ending the stale session"
    );
    let stats = stats.clone();
    tokio::spawn(async move {
        if h.session.kick().await {
            stats.stale_dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            stats.stale_already_gone.fetch_add(1, Ordering::Relaxed);
        }
    });
}
