//! [`AppState`]: what every route reaches (actors, stats, the token store), built once by
//! [`crate::server`]. Actors are reached through [`Slot`]s: the supervisor restarts them.

use std::sync::{Arc, OnceLock};

use crate::alerts::actor::AlertsActor;
use crate::audit::AuditLog;
use crate::auth::TokenStore;
use crate::broker::embedded::BrokerStats;
use crate::cluster::Cluster;
use crate::commands::actor::CommandsActor;
use crate::estate::store::EstateStore;
use crate::fleet::actor::FleetActor;
use crate::history::job::HistoryStats;
use crate::history::rollup::HistoryPolicy;
use crate::history::store::HistoryStore;
use crate::ingest::stats::IngestStats;
use crate::live::LiveHub;
use crate::notify::Notifier;
use crate::pg::store::PgStore;
use crate::sessions::SessionsView;
use crate::storage::health::StorageHealth;
use crate::supervise::slot::Slot;
use crate::supervise::supervisor::SupervisorView;

/// Everything a handler may need; shared by every worker.
pub struct AppState {
    pub fleet: Slot<FleetActor>,
    pub tokens: Arc<dyn TokenStore>,
    pub ingest: Arc<IngestStats>,
    /// Set once the embedded broker runs (none with an external broker).
    pub broker: Arc<OnceLock<Arc<BrokerStats>>>,
    pub started_ms: i64,
    pub alerting: AlertsApi,
    /// What changed, for `GET /api/v1/stream` ([`crate::http::live`]).
    pub live: LiveHub,
    pub commands: Slot<CommandsActor>,
    /// `[commands]`: actions that wait for a second operator.
    pub commands_config: crate::commands::config::CommandsConfig,
    /// The audit log (`GET /api/v1/audit`).
    pub audit: Arc<dyn AuditLog>,
    /// Whether the store answers (`/api/v1/health`, `/metrics`).
    pub storage: Arc<StorageHealth>,
    /// The server's children: restarts and last exit reasons.
    pub supervisor: SupervisorView,
    /// This instance among several: `GET /api/v1/cluster`, health, `/metrics`.
    pub cluster: Cluster,
    /// With PostgreSQL: the sessions this instance holds and the stale ones it ended.
    pub sessions: Option<SessionsView>,
    /// With PostgreSQL: the shared store, for what another instance may have written.
    pub pg: Option<PgStore>,
    /// Retailers and stores ([`crate::estate`]).
    pub estate: Arc<dyn EstateStore>,
}

/// What the alerting and history routes need (part of [`AppState`]).
#[derive(Clone)]
pub struct AlertsApi {
    pub alerts: Slot<AlertsActor>,
    /// Metric history (routes, exports, reports).
    pub store: Arc<dyn HistoryStore>,
    pub history_policy: HistoryPolicy,
    pub history: Arc<HistoryStats>,
    /// Notifications: counters, channels, the outbox, the test message.
    pub notify: Arc<Notifier>,
}
