//! The server's supervised children, in start order, one spec each: how to start (and
//! restart) it with its state reloaded from the store, and whom to re-attach it to. A new
//! long-lived actor, task or thread joins with one more spec here.
//!
//! | child | runs as | state on (re)start | reached by |
//! | --- | --- | --- | --- |
//! | `cluster` | task (PostgreSQL only) | a new session; the leases as this instance last trusted them | the history job (its [`Leadership`]) |
//! | `fleet` | actor | births and delivery from the store, presence and alert inputs from its checkpoint; with several instances the fleet-wide view read anew (a task of its generation) | writer, routes (slot); alerts, commands, live, the presence store, the leaderships attached |
//! | `writer` | thread `ingest-writer` | delivery state from the store, journal replayed with sled (before the next child starts, unless a stalled predecessor still holds the queue) | the broker's hook, the ingest client (its queue) |
//! | `notify` | task (the dispatcher) | rate limits start full | the alerts actor (its queue) |
//! | `notify-worker` | task (the outbox worker) | the outbox in the store (claims of a dead generation are due again when their lease ends) | the dispatcher (its wake-up) |
//! | `alerts-persist` | thread `alerts-persist` | an export lost in a crash is made again | the alerts actor (its queue) |
//! | `alerts` | actor | engine and correlator imported from the store | the fleet (attached), routes (slot) |
//! | `history` | actor | none (the dirty minutes are in the store); runs while this instance leads `history` | nobody |
//! | `commands` | actor | commands and rollouts from the store, presence from the fleet; with PostgreSQL and the embedded broker, which sessions this instance holds from [`crate::sessions`] (its events subscribed anew) | the fleet (attached), routes (slot), cluster events |
//! | `republish` | task | none | the writer, the alerts actor (its queue) |
//! | `ingest` | task | the broker's persistent session | nobody |

use std::sync::Arc;

use common::command::CommandSigner;
use common::tls::ClientIdentity;

use crate::alerts::actor::{AlertsActor, AlertsSetup, AttachRepublisher};
use crate::alerts::persist::{self, PersistHandle, PersistInbox, PersistSetup};
use crate::alerts::rules::RuleSet;
use crate::alerts::stats::AlertsStats;
use crate::cluster::{Cluster, Leadership};
use crate::commands::actor::{CommandCluster, CommandsActor, CommandsSetup, ReadingsSource};
use crate::fleet::actor::{
    AttachAlerts, AttachCluster, AttachCommands, AttachPresence, FleetActor, FleetCheckpoint, Restore,
};
use crate::fleet::mirror_pg;
use crate::fleet::state::PresencePolicy;
use crate::history::job::{HistoryJob, HistoryStats};
use crate::history::rollup::HistoryPolicy;
use crate::ingest::client::{self, IngestConfig, IngestMode};
use crate::ingest::stats::IngestStats;
use crate::ingest::writer::{self, IngestItem, WriterInbox, WriterSetup};
use crate::live::LiveHub;
use crate::messages::AttachLive;
use crate::notify::NotifyService;
use crate::notify::maintenance::Windows;
use crate::republish::client::{self as republisher, RepublishConfig, RepublishInbox};
use crate::republish::queue::{RepublishHandle, RepublishStats};
use crate::sessions::ClusterLink;
use crate::storage::Stores;
use crate::supervise::child::{ChildSpec, spawn_actor, spawn_task, spawn_thread};
use crate::supervise::slot::Slot;

/// Everything the children are made of; built once by [`super::Server::start`].
pub(super) struct Wiring {
    pub started_ms: i64,
    /// Every store, of the configured backend.
    pub stores: Stores,
    pub live: LiveHub,
    pub fleet: Slot<FleetActor>,
    pub alerts: Slot<AlertsActor>,
    pub commands: Slot<CommandsActor>,
    /// `[commands]`: actions that wait for approval.
    pub commands_cfg: crate::commands::config::CommandsConfig,
    /// Several instances on PostgreSQL: this instance's id and cluster events.
    pub cluster: Option<ClusterLink>,
    pub presence: PresencePolicy,
    pub writer: WriterSetup,
    pub writer_inbox: WriterInbox,
    pub notify: NotifyService,
    /// `[[notify.maintenance]]`, for the alerts actor.
    pub maintenance: Windows,
    pub persist: (PersistHandle, PersistInbox),
    pub rules: RuleSet,
    pub hold_offline_ms: Option<i64>,
    pub alerts_stats: Arc<AlertsStats>,
    pub history: (HistoryPolicy, Arc<HistoryStats>),
    pub signer: Arc<CommandSigner>,
    /// Where the server's own MQTT clients connect, as whom.
    pub mqtt: (String, u16, ClientIdentity),
    pub republish: Option<(RepublishHandle, RepublishInbox, Arc<RepublishStats>)>,
    pub ingest: (
        IngestConfig,
        IngestMode,
        tokio::sync::mpsc::Sender<IngestItem>,
        Arc<IngestStats>,
    ),
    /// This instance among several: its registration, heartbeat and leaderships (registered
    /// before the children start).
    pub instance: Cluster,
    /// Faults armed for the children's own fault points (test builds).
    #[cfg(any(test, feature = "faults"))]
    pub faults: crate::supervise::faults::Faults,
}

/// Every child, in start order (stopped in reverse).
pub(super) fn specs(w: Wiring) -> Vec<ChildSpec> {
    // first to start, last to stop: a lease is held until every job stopped
    let mut specs: Vec<ChildSpec> = cluster(&w).into_iter().collect();
    specs.extend([
        fleet(&w),
        ingest_writer(&w),
        notifier(&w),
        notify_worker(&w),
        alerts_persister(&w),
        alerts(&w),
        history(&w),
        commands(&w),
    ]);
    specs.extend(republish(&w));
    specs.push(ingest(w));
    specs
}

/// The heartbeat and the leases (PostgreSQL only: with sled the instance leads alone).
fn cluster(w: &Wiring) -> Option<ChildSpec> {
    let cluster = w.instance.clone();
    cluster.heartbeat()?;
    Some(ChildSpec::new("cluster", move |live| {
        let heartbeat = cluster
            .heartbeat()
            .ok_or_else(|| anyhow::anyhow!("the instance is not registered"))?;
        Ok(spawn_task(&live, move |_| heartbeat.run()))
    }))
}

fn fleet(w: &Wiring) -> ChildSpec {
    let (store, live_hub, policy, started_ms) =
        (w.stores.ingest.clone(), w.live.clone(), w.presence, w.started_ms);
    let kpi = w.rules.kpi;
    let presence_store = w.stores.presence.clone();
    let (slot, alerts, commands) = (w.fleet.clone(), w.alerts.clone(), w.commands.clone());
    // several instances on PostgreSQL with their embedded brokers (whose sessions say which
    // instance serves a machine): the whole fleet, and presence judged by one of them
    let shared = w
        .stores
        .pg
        .clone()
        .filter(|_| w.instance.is_shared() && w.cluster.is_some());
    let leadership = w.instance.leadership().clone();
    let checkpoint = FleetCheckpoint::default();
    ChildSpec::new("fleet", move |live| {
        let restore = Restore {
            births: store.load_births()?.into_iter().collect(),
            delivery: store
                .load_delivery()?
                .into_iter()
                .map(|(id, st)| (id, st.view()))
                .collect(),
        };
        let cp = checkpoint.clone();
        let (addr, run) = spawn_actor(&live, move |_| {
            FleetActor::restored(policy, started_ms, restore, cp).with_kpi(kpi)
        });
        addr.do_send(AttachLive(live_hub.clone()));
        addr.do_send(AttachPresence(presence_store.clone()));
        if let Some(a) = alerts.get() {
            addr.do_send(AttachAlerts(a.recipient()));
        }
        if let Some(c) = commands.get() {
            addr.do_send(AttachCommands(c.recipient()));
        }
        if let Some(pg) = &shared {
            addr.do_send(AttachCluster(leadership.clone()));
            let me = leadership.id().to_string();
            pg.spawn(mirror_pg::run(pg.clone(), me, addr.clone().recipient()));
        }
        slot.set(addr);
        Ok(run)
    })
}

fn ingest_writer(w: &Wiring) -> ChildSpec {
    let (setup, inbox) = (w.writer.clone(), w.writer_inbox.clone());
    ChildSpec::new("writer", move |live| {
        // the journal replayed before the next child starts, when the queue is free
        let open = writer::open_now(&setup, &inbox)?;
        let (setup, inbox) = (setup.clone(), inbox.clone());
        spawn_thread(&live, "ingest-writer", move |live, stop| match open {
            Some(open) => open.serve(&live, &stop),
            None => writer::run(&setup, &inbox, &live, &stop),
        })
    })
}

fn notifier(w: &Wiring) -> ChildSpec {
    let (inbox, dispatcher) = (w.notify.inbox.clone(), w.notify.dispatcher.clone());
    ChildSpec::new("notify", move |live| {
        let (inbox, dispatcher) = (inbox.clone(), dispatcher.clone());
        Ok(spawn_task(&live, move |live| async move {
            let mut rx = inbox.take(&live).await;
            dispatcher.run(&mut rx).await
        }))
    })
}

fn notify_worker(w: &Wiring) -> ChildSpec {
    let worker = w.notify.worker.clone();
    ChildSpec::new("notify-worker", move |live| {
        let worker = worker.clone();
        Ok(spawn_task(&live, move |_| worker.run()))
    })
}

fn alerts_persister(w: &Wiring) -> ChildSpec {
    let setup = PersistSetup {
        store: w.stores.alerts.clone(),
        audit: w.stores.audit.clone(),
        stats: w.alerts_stats.clone(),
        handle: w.persist.0.clone(),
    };
    let inbox = w.persist.1.clone();
    ChildSpec::new("alerts-persist", move |live| {
        let (setup, inbox) = (setup.clone(), inbox.clone());
        spawn_thread(&live, "alerts-persist", move |live, stop| {
            persist::run(&setup, &inbox, &live, &stop)
        })
    })
}

fn alerts(w: &Wiring) -> ChildSpec {
    let (rules, hold_offline_ms, stats) = (w.rules.clone(), w.hold_offline_ms, w.alerts_stats.clone());
    let (store, notify, persist) = (
        w.stores.alerts.clone(),
        w.notify.handle.clone(),
        w.persist.0.clone(),
    );
    let maintenance = w.maintenance.clone();
    let (slot, fleet, live_hub) = (w.alerts.clone(), w.fleet.clone(), w.live.clone());
    let republish = w.republish.as_ref().map(|r| r.0.clone());
    ChildSpec::new("alerts", move |live| {
        // imports the persisted engine and correlator (blocking reads: on the supervisor's thread)
        let actor = AlertsActor::new(
            AlertsSetup {
                rules: rules.clone(),
                notify: notify.clone(),
                store: store.clone(),
                persist: persist.clone(),
                hold_offline_ms,
                maintenance: maintenance.clone(),
            },
            stats.clone(),
        )?;
        let (addr, run) = spawn_actor(&live, move |_| actor);
        if let Some(r) = &republish {
            addr.do_send(AttachRepublisher(r.clone()));
        }
        addr.do_send(AttachLive(live_hub.clone()));
        fleet.do_send(AttachAlerts(addr.clone().recipient()));
        slot.set(addr);
        Ok(run)
    })
}

fn history(w: &Wiring) -> ChildSpec {
    let (store, (policy, stats)) = (w.stores.history.clone(), w.history.clone());
    let leadership: Leadership = w.instance.leadership().clone();
    #[cfg(any(test, feature = "faults"))]
    let faults = w.faults.clone();
    ChildSpec::new("history", move |live| {
        let job = HistoryJob::new(store.clone(), policy, stats.clone())
            .supervised(live.clone())
            .led_by(leadership.clone());
        #[cfg(any(test, feature = "faults"))]
        let job = job.with_faults(faults.clone());
        Ok(spawn_actor(&live, move |_| job).1)
    })
}

fn commands(w: &Wiring) -> ChildSpec {
    let (store, signer, audit) = (
        w.stores.commands.clone(),
        w.signer.clone(),
        w.stores.audit.clone(),
    );
    let (host, port, identity) = w.mqtt.clone();
    let (slot, fleet, live_hub) = (w.commands.clone(), w.fleet.clone(), w.live.clone());
    let cluster = match (&w.stores.pg, &w.cluster) {
        (Some(store), Some(link)) => Some(CommandCluster {
            store: store.clone(),
            link: link.clone(),
        }),
        _ => None,
    };
    let (config, leadership) = (w.commands_cfg.clone(), w.instance.leadership().clone());
    let fleet_slot = w.fleet.clone();
    let readings: ReadingsSource = Arc::new(move || fleet_slot.get().map(|a| a.recipient()));
    ChildSpec::new("commands", move |live| {
        // read here, on the supervisor's thread, not on the actor's
        let setup = CommandsSetup {
            config: config.clone(),
            leadership: leadership.clone(),
            readings: Some(readings.clone()),
            signer: signer.clone(),
            records: store.records()?,
            rollouts: store.rollouts()?,
            store: store.clone(),
            audit: audit.clone(),
            host: host.clone(),
            port,
            identity: identity.clone(),
            cluster: cluster.clone(),
        };
        let (addr, run) = spawn_actor(&live, move |_| CommandsActor::new(setup));
        addr.do_send(AttachLive(live_hub.clone()));
        fleet.do_send(AttachCommands(addr.clone().recipient()));
        slot.set(addr);
        Ok(run)
    })
}

fn republish(w: &Wiring) -> Option<ChildSpec> {
    let (_, inbox, stats) = w.republish.clone()?;
    let (host, port, identity) = w.mqtt.clone();
    let cfg = RepublishConfig { host, port, identity };
    Some(ChildSpec::new("republish", move |live| {
        let tls = common::tls::client_config(&cfg.identity)
            .map_err(|e| anyhow::anyhow!("republisher TLS identity: {e}"))?;
        let (cfg, inbox, stats) = (cfg.clone(), inbox.clone(), stats.clone());
        Ok(spawn_task(&live, move |live| async move {
            let mut queue = inbox.take(&live).await;
            republisher::run(cfg, tls, &mut queue, stats).await
        }))
    }))
}

fn ingest(w: Wiring) -> ChildSpec {
    let (cfg, mode, tx, stats) = w.ingest;
    ChildSpec::new("ingest", move |live| {
        let tls = common::tls::client_config(&cfg.identity)
            .map_err(|e| anyhow::anyhow!("ingest TLS identity: {e}"))?;
        let (cfg, tx, stats) = (cfg.clone(), tx.clone(), stats.clone());
        Ok(spawn_task(&live, move |_| client::run(cfg, tls, mode, tx, stats)))
    })
}
