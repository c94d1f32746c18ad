//! [`AppState`]: what every route reaches (actors, stats, the token store), built once by
//! [`crate::server`]. Actors are reached through [`Slot`]s: the supervisor restarts them.

use std::sync::{Arc, OnceLock};

use crate::alerts::actor::AlertsActor;
use crate::auth::TokenStore;
use crate::broker::embedded::BrokerStats;
use crate::commands::actor::CommandsActor;
use crate::fleet::actor::FleetActor;
use crate::history::job::HistoryStats;
use crate::history::rollup::HistoryPolicy;
use crate::ingest::stats::IngestStats;
use crate::live::LiveHub;
use crate::notify::Notifier;
use crate::store::FleetStore;
use crate::supervise::slot::Slot;
use crate::supervise::supervisor::SupervisorView;

/// Everything a handler may need; shared by every worker.
pub struct AppState {
    pub fleet: Slot<FleetActor>,
    pub tokens: Arc<TokenStore>,
    pub ingest: Arc<IngestStats>,
    /// Set once the embedded broker runs (none with an external broker).
    pub broker: Arc<OnceLock<Arc<BrokerStats>>>,
    pub started_ms: i64,
    pub alerting: AlertsApi,
    /// What changed, for `GET /api/v1/stream` ([`crate::http::live`]).
    pub live: LiveHub,
    pub commands: Slot<CommandsActor>,
    /// `DATA_DIR/audit.log` (JSON lines).
    pub audit_log: std::path::PathBuf,
    /// The server's children: restarts and last exit reasons.
    pub supervisor: SupervisorView,
}

/// What the alerting and history routes need (part of [`AppState`]).
#[derive(Clone)]
pub struct AlertsApi {
    pub alerts: Slot<AlertsActor>,
    pub store: FleetStore,
    pub history_policy: HistoryPolicy,
    pub history: Arc<HistoryStats>,
    /// Notifications: counters, channels, the outbox, the test message.
    pub notify: Arc<Notifier>,
}
