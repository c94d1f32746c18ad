//! What the page receives: [`LiveEvent`], one change as JSON with a `type` field, and the SSE
//! [`LiveFrame`] it is serialised into once for every subscriber.

use std::sync::Arc;

use common::{DeviceId, HealthStatus};
use serde::Serialize;

use crate::alerts::alert::{Alert, Transition};
use crate::fleet::state::{DeviceSummary, Presence};
use crate::incidents::incident::IncidentChange;

/// A serialised Server-Sent Events frame, shared by every subscriber.
pub type LiveFrame = Arc<str>;

/// One change, as the page receives it: JSON with a `type` field.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LiveEvent {
    /// The devices that changed since the previous batch (see [`LiveEvent::devices`]).
    Devices {
        /// Metric names; each device's `m` holds their values in this order.
        names: Vec<String>,
        devices: Vec<CompactDevice>,
    },
    /// An alert transition (pending, firing, resolved, escalated, cancelled, unsilenced).
    Alert(Transition),
    /// An alert was acknowledged: `alert` is the alert after it.
    Acknowledged { alert: Alert },
    /// A silence was added or removed: refetch silences and alerts.
    Silences,
    /// A maintenance window was added or removed: refetch the windows.
    Maintenance,
    /// An incident opened, gained a member, resolved or was withdrawn.
    Incident(IncidentChange),
    /// A command changed state; the value is what `GET /api/v1/commands/{id}` answers.
    Command { command: serde_json::Value },
    /// Frames were lost (the subscriber was too slow): refetch everything shown.
    Resync { missed: u64 },
}

/// One device of a [`LiveEvent::Devices`] batch: a [`DeviceSummary`] with its metrics as
/// values aligned with the batch's `names` and its metadata only when it changed.
#[derive(Debug, Clone, Serialize)]
pub struct CompactDevice {
    pub id: DeviceId,
    pub status: Presence,
    pub status_reason: String,
    pub last_seen_ms: i64,
    pub health: Option<HealthStatus>,
    pub items_per_hour: Option<f32>,
    /// The value of each of the batch's `names` (null: this device has no such metric).
    pub m: Vec<Option<f32>>,
    /// Site, tags, versions, board: with the first update of a device and after a new boot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<DeviceMeta>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceMeta {
    pub site: Option<String>,
    pub tags: Vec<String>,
    pub agent_version: Option<String>,
    pub board: Option<String>,
    pub jetpack: Option<String>,
    pub vision_model_version: Option<String>,
    pub simulated: bool,
}

/// A device that changed, and whether its metadata may have.
#[derive(Debug, Clone)]
pub struct Changed {
    pub summary: DeviceSummary,
    pub meta_changed: bool,
}

impl LiveEvent {
    /// The compact batch of `changed` devices.
    pub fn devices(changed: Vec<Changed>) -> LiveEvent {
        let names: Vec<String> = changed
            .iter()
            .flat_map(|c| c.summary.metrics.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .cloned()
            .collect();
        let devices = changed
            .into_iter()
            .map(
                |Changed {
                     summary: s,
                     meta_changed,
                 }| CompactDevice {
                    m: names
                        .iter()
                        .map(|n| s.metrics.get(n).map(|v| *v as f32))
                        .collect(),
                    meta: meta_changed.then_some(DeviceMeta {
                        site: s.site,
                        tags: s.tags,
                        agent_version: s.agent_version,
                        board: s.board,
                        jetpack: s.jetpack,
                        vision_model_version: s.vision_model_version,
                        simulated: s.simulated,
                    }),
                    id: s.id,
                    status: s.status,
                    status_reason: s.status_reason,
                    last_seen_ms: s.last_seen_ms,
                    health: s.health,
                    items_per_hour: s.items_per_hour.map(|v| v as f32),
                },
            )
            .collect();
        LiveEvent::Devices { names, devices }
    }

    /// The whole SSE frame: one `data:` line (JSON never contains a raw newline).
    pub fn frame(&self) -> Result<LiveFrame, serde_json::Error> {
        let json = serde_json::to_string(self)?;
        Ok(Arc::from(format!("data: {json}\n\n")))
    }
}
