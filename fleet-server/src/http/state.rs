//! [`AppState`]: what every route reaches (actors, stats, the token store), built once by
//! [`crate::server`].

use std::sync::{Arc, OnceLock};

use actix::Addr;

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

/// Set once the commands actor runs (it needs the broker's address).
pub type CommandsHandle = Arc<OnceLock<Addr<CommandsActor>>>;

/// Everything a handler may need; shared by every worker.
pub struct AppState {
    pub fleet: Addr<FleetActor>,
    pub tokens: Arc<TokenStore>,
    pub ingest: Arc<IngestStats>,
    /// Set once the embedded broker runs (none with an external broker).
    pub broker: Arc<OnceLock<Arc<BrokerStats>>>,
    pub started_ms: i64,
    pub alerting: AlertsApi,
    /// What changed, for `GET /api/v1/stream` ([`crate::http::live`]).
    pub live: LiveHub,
    pub commands: CommandsHandle,
    /// `DATA_DIR/audit.log` (JSON lines).
    pub audit_log: std::path::PathBuf,
}

/// What the alerting and history routes need (part of [`AppState`]).
#[derive(Clone)]
pub struct AlertsApi {
    pub alerts: Addr<AlertsActor>,
    pub store: FleetStore,
    pub history_policy: HistoryPolicy,
    pub history: Arc<HistoryStats>,
    /// Notifications: counters, channels, the outbox, the test message.
    pub notify: Arc<Notifier>,
}
