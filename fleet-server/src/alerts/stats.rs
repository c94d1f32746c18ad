//! The alerts actor's counters and the snapshot the API shows; shared with its persister.

use std::sync::atomic::AtomicU64;

use serde::Serialize;

#[derive(Debug, Default)]
pub struct AlertsStats {
    pub observations: AtomicU64,
    pub transitions: AtomicU64,
    pub notified: AtomicU64,
    pub skipped_silenced: AtomicU64,
    pub skipped_suppressed: AtomicU64,
    pub held: AtomicU64,
    /// Held offline notifications not sent (suppressed, back online, silenced meanwhile).
    pub held_dropped: AtomicU64,
    /// Notifications not sent because a maintenance window covered their machines.
    pub muted: AtomicU64,
    pub incident_changes: AtomicU64,
    pub persist_errors: AtomicU64,
    /// Audit lines dropped because the audit log stayed unwritable (past
    /// `persist::MAX_PENDING_AUDIT` kept).
    pub audit_dropped: AtomicU64,
    /// States handed to the persister.
    pub state_exports: AtomicU64,
    /// Open alerts taken from the shared store (PostgreSQL, several instances): a device's
    /// loaded before its first evaluation, and those of claims another instance won.
    pub adopted: AtomicU64,
    /// Alerts this instance opened whose (rule, device) another instance held open: not
    /// notified, the stored alert adopted.
    pub claims_lost: AtomicU64,
    /// Device loads and claims the shared store did not answer (the alert is notified anyway:
    /// at least once).
    pub shared_errors: AtomicU64,
    /// Fenced writes of the fleet-wide correlator's incidents that committed (several
    /// instances: while this instance leads `correlator`).
    pub fleet_incident_writes: AtomicU64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertsSnapshot {
    pub active: usize,
    pub firing: usize,
    pub open_incidents: usize,
    pub silences: usize,
    pub observations: u64,
    pub transitions: u64,
    pub notified: u64,
    pub skipped_silenced: u64,
    pub skipped_suppressed: u64,
    pub held: u64,
    pub held_dropped: u64,
    pub muted: u64,
    pub incident_changes: u64,
    pub persist_errors: u64,
    pub audit_dropped: u64,
    pub adopted: u64,
    pub claims_lost: u64,
    pub shared_errors: u64,
    pub fleet_incident_writes: u64,
    /// Open incidents of the fleet-wide correlator (0 unless this instance leads it).
    pub fleet_open_incidents: usize,
}
