//! [`StatusSnapshot`]: what `/api/v1/status` shows as JSON and the agent-state part of
//! `/metrics`; the agent builds a fresh one per request from its shared counters.

use common::{ActorStatus, DeviceId, GpuBackendKind, HealthReport};
use serde::Serialize;

use crate::appmetrics::store::AppMetricsCounters;
use crate::buffer::BufferStats;
use crate::health::camera::CameraSnapshot;
use crate::link::status::LinkSnapshot;

/// What `/api/v1/status` shows, and the agent-state part of `/metrics`.
#[derive(Debug, Serialize)]
pub struct StatusSnapshot {
    pub device: DeviceId,
    pub agent_version: String,
    /// The latest health report; `None` before the first evaluation.
    pub health: Option<HealthReport>,
    pub actors: Vec<ActorStatus>,
    pub buffer: BufferStats,
    pub link: LinkSnapshot,
    pub gpu_backend: GpuBackendKind,
    /// Why earlier backends of the chain were passed over, and what the chosen one cannot read.
    pub gpu_notes: Vec<String>,
    pub app_metrics: AppMetricsCounters,
    /// The agent process's own memory (heap in use, RSS).
    pub memory: proc_mem::ProcessMemory,
    /// The cameras camera health tracks, with their learned baselines (empty: none reported).
    pub cameras: Vec<CameraSnapshot>,
}
