//! `GET /metrics`: the fleet and the server itself in the Prometheus text exposition format
//! 0.0.4. Open by default; with `[http] metrics_token` set, a scrape needs
//! `Authorization: Bearer <metrics_token>` (API tokens are not accepted: a scraper should hold
//! no API role). It shows the whole fleet, so a request carrying an API token limited to a
//! store or retailer is refused (403) even while the endpoint is open ([`refuse_scoped`]).
//!
//! [`render`] is pure; the shared `exposition` crate writes the format (through [`text`],
//! which types and describes each family from the catalogue). Every family is listed in
//! [`families::FAMILIES`] (the dashboard test checks its
//! PromQL against it); a family without samples is left out. Names follow Prometheus
//! conventions: `rvm_fleet_` prefix, base units in the name (`_seconds`, `_percent`,
//! `_celsius`, `_watts`, `_bytes`), counters end in `_total`.
//!
//! Per device (labels `device`, `site`; `site` is empty when the machine never said):
//! `rvm_fleet_device_status` is 0 offline, 1 stale, 2 degraded, 3 online; a figure the machine
//! did not report is left out, never written as 0. Delivery counters are the server's
//! accounting of the machine's records (received, duplicates dropped, seqs never received,
//! drops the machine reported). Actor restarts and liveness come from the agent's latest
//! health report. The server's own actors and threads (label `actor`) come from its
//! supervisor ([`crate::supervise`]): restarts, liveness, and when and why each last exited.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;

use actix_web::{HttpRequest, HttpResponse, web};
use common::{HealthStatus, Severity};

pub mod families;
pub mod text;

use exposition::{Exposition, RenderError};

use self::text::{family, one};
use super::error::ApiError;
use super::state::AppState;
use crate::alerts::alert::{Alert, AlertState};
use crate::alerts::requests::{GetSnapshot, ListAlerts, StateFilter};
use crate::alerts::stats::AlertsSnapshot;
use crate::broker::embedded::BrokerStatsSnapshot;
use crate::cluster::leader::LeadershipSnapshot;
use crate::fleet::actor::{DeviceScrape, ScrapeDevices};
use crate::fleet::state::Presence;
use crate::history::job::HistorySnapshot;
use crate::notify::NotifySnapshot;
use crate::storage::health::StorageStatus;
use crate::supervise::restart::ChildStatus;

/// Content type of the exposition.
pub const CONTENT_TYPE: &str = exposition::CONTENT_TYPE;

/// `[http] metrics_token`, handed to the route as app data.
#[derive(Debug, Clone, Default)]
pub struct MetricsAuth {
    pub token: Option<String>,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics));
}

/// Numeric value of a presence.
pub fn status_value(p: Presence) -> u8 {
    match p {
        Presence::Offline => 0,
        Presence::Stale => 1,
        Presence::Degraded => 2,
        Presence::Online => 3,
    }
}

fn health_value(h: HealthStatus) -> u8 {
    match h {
        HealthStatus::Ok => 0,
        HealthStatus::Warn => 1,
        HealthStatus::Critical => 2,
    }
}

fn severity_label(s: Severity) -> &'static str {
    match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

/// The server's counters at scrape time.
#[derive(Debug, Clone, Default)]
pub struct ServerFigures {
    pub uptime_s: i64,
    pub ingest_connected: bool,
    pub received: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: BTreeMap<String, u64>,
    pub writer_batches: u64,
    pub writer_queue: u64,
}

/// Everything [`render`] needs.
#[derive(Debug, Default)]
pub struct ScrapeInput {
    pub now_ms: i64,
    pub devices: Vec<DeviceScrape>,
    pub server: ServerFigures,
    pub broker: Option<BrokerStatsSnapshot>,
    /// Active alerts (firing and pending).
    pub alerts: Vec<Alert>,
    pub alerts_snapshot: Option<AlertsSnapshot>,
    pub notify: NotifySnapshot,
    pub history: Option<HistorySnapshot>,
    pub storage: Option<StorageStatus>,
    /// The server's own children, from its supervisor.
    pub server_actors: Vec<ChildStatus>,
    /// This instance's leaderships and the instances it last saw.
    pub cluster: Option<LeadershipSnapshot>,
}

/// Flat metric -> family, with a scale.
const DEVICE_GAUGES: &[(&str, &str, f64)] = &[
    ("cpu.usage_pct", "rvm_fleet_device_cpu_usage_percent", 1.0),
    ("load1", "rvm_fleet_device_load1", 1.0),
    ("memory.used_pct", "rvm_fleet_device_memory_used_percent", 1.0),
    ("disk.max_used_pct", "rvm_fleet_device_disk_used_max_percent", 1.0),
    ("temp.max_c", "rvm_fleet_device_temperature_max_celsius", 1.0),
    ("gpu.load_pct", "rvm_fleet_device_gpu_load_percent", 1.0),
    ("gpu.temp_c", "rvm_fleet_device_gpu_temperature_celsius", 1.0),
    ("power.total_mw", "rvm_fleet_device_power_watts", 0.001),
];

/// The whole exposition.
pub fn render(x: &ScrapeInput) -> Result<String, RenderError> {
    let mut out = Exposition::default();
    let mut devices = x.devices.clone();
    devices.sort_by(|a, b| a.summary.id.cmp(&b.summary.id));

    // fleet
    let mut by_status: BTreeMap<&str, u64> = [("online", 0), ("degraded", 0), ("stale", 0), ("offline", 0)]
        .into_iter()
        .collect();
    for d in &devices {
        let k = match d.summary.status {
            Presence::Online => "online",
            Presence::Degraded => "degraded",
            Presence::Stale => "stale",
            Presence::Offline => "offline",
        };
        *by_status.entry(k).or_default() += 1;
    }
    let mut f = family("rvm_fleet_devices");
    for (k, n) in &by_status {
        f.add(&[("status", k)], *n as f64);
    }
    out.push(f);

    // per device
    let site = |d: &DeviceScrape| d.summary.site.clone().unwrap_or_default();
    let mut info = family("rvm_fleet_device_info");
    let mut status = family("rvm_fleet_device_status");
    let mut health = family("rvm_fleet_device_health");
    let mut age = family("rvm_fleet_device_last_seen_age_seconds");
    for d in &devices {
        let s = site(d);
        let id = d.summary.id.as_str();
        let l = [("device", id), ("site", s.as_str())];
        info.add(
            &[
                ("device", id),
                ("site", &s),
                ("agent_version", d.summary.agent_version.as_deref().unwrap_or("")),
                ("board", d.summary.board.as_deref().unwrap_or("")),
                ("jetpack", d.summary.jetpack.as_deref().unwrap_or("")),
                (
                    "vision_model_version",
                    d.summary.vision_model_version.as_deref().unwrap_or(""),
                ),
            ],
            1.0,
        );
        status.add(&l, f64::from(status_value(d.summary.status)));
        if let Some(h) = d.summary.health {
            health.add(&l, f64::from(health_value(h)));
        }
        if d.summary.last_seen_ms > 0 {
            age.add(&l, ((x.now_ms - d.summary.last_seen_ms).max(0) as f64) / 1000.0);
        }
    }
    out.push(info);
    out.push(status);
    out.push(health);
    out.push(age);
    for (flat, name, scale) in DEVICE_GAUGES {
        let mut f = family(name);
        for d in &devices {
            if let Some(v) = d.summary.metrics.get(*flat).filter(|v| v.is_finite()) {
                let s = site(d);
                f.add(&[("device", d.summary.id.as_str()), ("site", &s)], v * scale);
            }
        }
        out.push(f);
    }
    type DeliveryField = fn(&crate::fleet::delivery::Delivery) -> u64;
    let delivery: [(&'static str, DeliveryField); 4] = [
        ("rvm_fleet_device_delivery_received_total", |d| d.received),
        ("rvm_fleet_device_delivery_duplicates_total", |d| {
            d.duplicates_dropped
        }),
        ("rvm_fleet_device_delivery_missing", |d| d.missing),
        ("rvm_fleet_device_delivery_reported_dropped_total", |d| {
            d.reported_dropped
        }),
    ];
    for (name, get) in delivery {
        let mut f = family(name);
        for d in &devices {
            let s = site(d);
            f.add(
                &[("device", d.summary.id.as_str()), ("site", &s)],
                get(&d.delivery) as f64,
            );
        }
        out.push(f);
    }
    let mut restarts = family("rvm_fleet_device_actor_restarts_total");
    let mut alive = family("rvm_fleet_device_actor_alive");
    for d in &devices {
        let s = site(d);
        let mut seen = BTreeSet::new();
        for a in &d.actors {
            if !seen.insert(a.name.as_str()) {
                continue;
            }
            let l = [
                ("device", d.summary.id.as_str()),
                ("site", s.as_str()),
                ("actor", a.name.as_str()),
            ];
            restarts.add(&l, f64::from(a.restarts));
            alive.add(&l, if a.alive { 1.0 } else { 0.0 });
        }
    }
    out.push(restarts);
    out.push(alive);

    // the server
    let s = &x.server;
    one(
        &mut out,
        "rvm_fleet_server_uptime_seconds",
        s.uptime_s.max(0) as f64,
    );
    let mut restarts = family("rvm_fleet_server_actor_restarts_total");
    let mut alive = family("rvm_fleet_server_actor_alive");
    let mut exited = family("rvm_fleet_server_actor_last_exit_timestamp_seconds");
    for a in &x.server_actors {
        let l = [("actor", a.name.as_str())];
        restarts.add(&l, f64::from(a.restarts));
        alive.add(&l, if a.alive { 1.0 } else { 0.0 });
        if let Some(e) = &a.last_exit {
            exited.add(
                &[("actor", a.name.as_str()), ("reason", e.kind.label())],
                e.at_ms as f64 / 1000.0,
            );
        }
    }
    out.push(restarts);
    out.push(alive);
    out.push(exited);
    one(
        &mut out,
        "rvm_fleet_ingest_connected",
        if s.ingest_connected { 1.0 } else { 0.0 },
    );
    one(&mut out, "rvm_fleet_ingest_received_total", s.received as f64);
    one(&mut out, "rvm_fleet_ingest_accepted_total", s.accepted as f64);
    one(&mut out, "rvm_fleet_ingest_duplicates_total", s.duplicates as f64);
    let mut f = family("rvm_fleet_ingest_rejected_total");
    for (reason, n) in &s.rejected {
        f.add(&[("reason", reason)], *n as f64);
    }
    out.push(f);
    one(
        &mut out,
        "rvm_fleet_writer_batches_total",
        s.writer_batches as f64,
    );
    one(&mut out, "rvm_fleet_writer_queue_depth", s.writer_queue as f64);
    if let Some(b) = &x.broker {
        one(
            &mut out,
            "rvm_fleet_broker_connects_allowed_total",
            b.connects_allowed as f64,
        );
        let mut f = family("rvm_fleet_broker_refusals_total");
        f.add(&[("kind", "connect")], b.connects_refused as f64);
        f.add(&[("kind", "not_ready")], b.connects_not_ready as f64);
        f.add(&[("kind", "publish")], b.publishes_refused as f64);
        f.add(&[("kind", "subscribe")], b.subscribes_refused as f64);
        out.push(f);
    }

    // alerts
    let severities = [Severity::Critical, Severity::Warning, Severity::Info];
    let mut active = family("rvm_fleet_alerts_active");
    let mut acked = family("rvm_fleet_alerts_acknowledged");
    let mut silenced = family("rvm_fleet_alerts_silenced");
    for sev in severities {
        let of_sev = || x.alerts.iter().filter(move |a| a.severity == sev);
        for (state, label) in [(AlertState::Firing, "firing"), (AlertState::Pending, "pending")] {
            active.add(
                &[("state", label), ("severity", severity_label(sev))],
                of_sev().filter(|a| a.state == state).count() as f64,
            );
        }
        acked.add(
            &[("severity", severity_label(sev))],
            of_sev().filter(|a| a.ack.is_some()).count() as f64,
        );
        silenced.add(
            &[("severity", severity_label(sev))],
            of_sev().filter(|a| a.silenced_by.is_some()).count() as f64,
        );
    }
    out.push(active);
    out.push(acked);
    out.push(silenced);
    if let Some(a) = &x.alerts_snapshot {
        one(
            &mut out,
            "rvm_fleet_alert_transitions_total",
            a.transitions as f64,
        );
        one(&mut out, "rvm_fleet_incidents_open", a.open_incidents as f64);
        one(&mut out, "rvm_fleet_silences_active", a.silences as f64);
        one(&mut out, "rvm_fleet_notifications_muted_total", a.muted as f64);
    }

    // notifications
    let n = &x.notify;
    for (name, map) in [
        ("rvm_fleet_notifications_routed_total", &n.routed),
        ("rvm_fleet_notifications_sent_total", &n.delivered),
        ("rvm_fleet_notifications_failed_total", &n.failed),
    ] {
        let label = if name.ends_with("routed_total") {
            "route"
        } else {
            "channel"
        };
        let mut f = family(name);
        for (k, v) in map {
            f.add(&[(label, k)], *v as f64);
        }
        out.push(f);
    }
    let mut f = family("rvm_fleet_notifications_dropped_total");
    for (route, v) in &n.rate_limited {
        f.add(&[("reason", "rate_limited"), ("route", route)], *v as f64);
    }
    f.add(&[("reason", "queue_full"), ("route", "")], n.queue_full as f64);
    f.add(
        &[("reason", "outbox_write"), ("route", "")],
        n.enqueue_errors as f64,
    );
    out.push(f);
    let mut retried = family("rvm_fleet_notifications_retried_total");
    let mut errors = family("rvm_fleet_notification_errors_total");
    for (channel, c) in &n.channels {
        retried.add(&[("channel", channel)], c.retried as f64);
        for (kind, v) in &c.errors {
            errors.add(&[("channel", channel), ("kind", kind)], *v as f64);
        }
    }
    out.push(retried);
    out.push(errors);
    let mut entries = family("rvm_fleet_notification_outbox_entries");
    for (state, v) in [
        ("pending", n.outbox.pending),
        ("delivered", n.outbox.delivered),
        ("failed", n.outbox.failed),
        ("corrupt", n.outbox.corrupt),
    ] {
        entries.add(&[("state", state)], v as f64);
    }
    out.push(entries);
    one(
        &mut out,
        "rvm_fleet_notification_outbox_errors_total",
        n.outbox_errors as f64,
    );

    if let Some(h) = &x.history {
        one(&mut out, "rvm_fleet_history_disk_bytes", h.disk_bytes as f64);
        one(&mut out, "rvm_fleet_history_errors_total", h.errors as f64);
    }
    if let Some(s) = &x.storage {
        let b = [("backend", s.backend)];
        for (name, v) in [
            ("rvm_fleet_storage_up", if s.status == "ok" { 1.0 } else { 0.0 }),
            ("rvm_fleet_storage_errors_total", s.errors_total as f64),
            ("rvm_fleet_storage_unavailable_total", s.unavailable_total as f64),
        ] {
            let mut f = family(name);
            f.add(&b, v);
            out.push(f);
        }
        // why and since when, while it cannot be reached (absent while it answers)
        if let (Some(reason), Some(since)) = (s.reason, s.since_ms) {
            let mut f = family("rvm_fleet_storage_unavailable_since_timestamp_seconds");
            f.add(
                &[("backend", s.backend), ("reason", reason)],
                since as f64 / 1000.0,
            );
            out.push(f);
        }
    }
    if let Some(c) = &x.cluster {
        let mut f = family("rvm_fleet_cluster_instances");
        for state in ["alive", "dead", "stopped"] {
            f.add(
                &[("state", state)],
                c.instances.get(state).copied().unwrap_or(0) as f64,
            );
        }
        out.push(f);
        let mut leader = family("rvm_fleet_leader");
        for l in &c.leases {
            leader.add(&[("job", l.name.as_str())], if l.leader { 1.0 } else { 0.0 });
        }
        out.push(leader);
        let mut fenced = family("rvm_fleet_leader_fenced_writes_total");
        for (job, n) in &c.fenced_writes {
            fenced.add(&[("job", job.as_str())], *n as f64);
        }
        out.push(fenced);
        one(
            &mut out,
            "rvm_fleet_cluster_heartbeat_errors_total",
            c.heartbeat_errors as f64,
        );
    }
    out.render()
}

/// Compares without an early exit (the token is a secret).
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn check_auth(req: &HttpRequest, auth: Option<&MetricsAuth>) -> Result<(), ApiError> {
    let Some(token) = auth.and_then(|a| a.token.as_deref()) else {
        return Ok(());
    };
    let given = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(ApiError::NoToken)?;
    if same_secret(given.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::BadToken)
    }
}

/// 403 when the request carries a scoped API token: the page would show it every machine.
fn refuse_scoped(req: &HttpRequest, state: &AppState) -> Result<(), ApiError> {
    let bearer = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim);
    match bearer.and_then(|t| state.tokens.verify(t)) {
        Some(who) if who.scope.is_some() => Err(ApiError::Refused(
            "/metrics shows the whole fleet: a token limited to a store or retailer cannot read it".into(),
        )),
        _ => Ok(()),
    }
}

async fn metrics(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: Option<web::Data<MetricsAuth>>,
) -> Result<HttpResponse, ApiError> {
    refuse_scoped(&req, &state)?;
    check_auth(&req, auth.as_ref().map(|a| a.get_ref()))?;
    let mailbox = |what: &str, e: actix::MailboxError| ApiError::Internal(format!("{what}: {e}"));
    let devices = state
        .fleet
        .send(ScrapeDevices)
        .await
        .map_err(|e| mailbox("fleet actor", e))?;
    let alerts_addr = &state.alerting.alerts;
    let mut alerts = alerts_addr
        .send(ListAlerts(StateFilter::Firing))
        .await
        .map_err(|e| mailbox("alerts actor", e))?;
    alerts.extend(
        alerts_addr
            .send(ListAlerts(StateFilter::Pending))
            .await
            .map_err(|e| mailbox("alerts actor", e))?,
    );
    let alerts_snapshot = alerts_addr.send(GetSnapshot).await.ok();
    let i = &state.ingest;
    let now_ms = common::time::now_ms();
    let input = ScrapeInput {
        now_ms,
        devices,
        server: ServerFigures {
            uptime_s: (now_ms - state.started_ms) / 1000,
            ingest_connected: i.connected.load(Ordering::Relaxed),
            received: i.received.load(Ordering::Relaxed),
            accepted: i.accepted.load(Ordering::Relaxed),
            duplicates: i.duplicates.load(Ordering::Relaxed),
            rejected: i.rejected.lock().map(|m| m.clone()).unwrap_or_default(),
            writer_batches: i.writer_batches.load(Ordering::Relaxed),
            writer_queue: i.writer_queue.load(Ordering::Relaxed),
        },
        broker: state.broker.get().map(|b| b.snapshot()),
        alerts,
        alerts_snapshot,
        notify: state.alerting.notify.snapshot(),
        history: Some(state.alerting.history.snapshot(&state.alerting.history_policy)),
        storage: Some(state.storage.status()),
        server_actors: state.supervisor.children(),
        cluster: Some(state.cluster.snapshot()),
    };
    let text = render(&input).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(HttpResponse::Ok().content_type(CONTENT_TYPE).body(text))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use common::{ActorStatus, DeviceId};

    use super::*;
    use crate::fleet::delivery::Delivery;
    use crate::fleet::state::DeviceSummary;
    use crate::http::metrics::families::{FAMILIES, family_names};
    use crate::supervise::restart::{Exit, ExitKind};

    fn build_device(id: &str, site: Option<&str>, status: Presence) -> DeviceScrape {
        let mut metrics = BTreeMap::new();
        metrics.insert("cpu.usage_pct".to_string(), 12.5);
        metrics.insert("power.total_mw".to_string(), 7250.0);
        metrics.insert("gpu.temp_c".to_string(), 51.0);
        DeviceScrape {
            summary: DeviceSummary {
                id: DeviceId::new(id).unwrap(),
                status,
                status_reason: String::new(),
                site: site.map(str::to_string),
                tags: vec![],
                last_seen_ms: 9_000,
                served_by: None,
                agent_version: Some("0.1.0".into()),
                board: None,
                jetpack: None,
                vision_model_version: None,
                simulated: false,
                metrics,
                health: Some(HealthStatus::Warn),
                items_per_hour: None,
            },
            delivery: Delivery {
                received: 40,
                duplicates_dropped: 2,
                missing: 1,
                ..Default::default()
            },
            actors: vec![ActorStatus {
                name: "collector".into(),
                alive: true,
                restarts: 3,
                last_exit: None,
            }],
        }
    }

    fn build_input() -> ScrapeInput {
        let mut rejected = BTreeMap::new();
        rejected.insert("malformed".to_string(), 4);
        let mut notify = NotifySnapshot::default();
        notify.routed.insert("default".into(), 2);
        notify.delivered.insert("log".into(), 2);
        notify.failed.insert("ops-hook".into(), 1);
        notify.rate_limited.insert("default".into(), 5);
        let hook = notify.channels.entry("ops-hook".into()).or_default();
        hook.failed = 1;
        hook.errors.insert("tls".into(), 3);
        ScrapeInput {
            now_ms: 10_000,
            devices: vec![
                build_device("rvm2", Some("oslo \"north\"\\1"), Presence::Online),
                build_device("rvm1", None, Presence::Offline),
            ],
            server: ServerFigures {
                uptime_s: 5,
                ingest_connected: true,
                received: 100,
                accepted: 90,
                duplicates: 6,
                rejected,
                writer_batches: 7,
                writer_queue: 0,
            },
            broker: Some(BrokerStatsSnapshot {
                connects_allowed: 3,
                connects_refused: 1,
                connects_not_ready: 0,
                publishes_refused: 2,
                subscribes_refused: 0,
            }),
            alerts: vec![],
            alerts_snapshot: Some(AlertsSnapshot {
                active: 0,
                firing: 0,
                open_incidents: 1,
                silences: 0,
                observations: 0,
                transitions: 4,
                notified: 0,
                skipped_silenced: 0,
                skipped_suppressed: 0,
                held: 0,
                held_dropped: 0,
                muted: 0,
                incident_changes: 0,
                persist_errors: 0,
                audit_dropped: 0,
                adopted: 0,
                claims_lost: 0,
                shared_errors: 0,
            }),
            notify,
            history: Some(HistorySnapshot {
                disk_bytes: 1024,
                raw_retention_h: 24,
                rollup_retention_d: 30,
                rollups_written: 0,
                raw_rows_expired: 0,
                rollups_expired: 0,
                minutes_packed: 0,
                rows_packed: 0,
                rollups_packed: 0,
                runs_skipped_busy: 0,
                allocator_trims: 0,
                allocator_released_bytes: 0,
                errors: 0,
                last_rollup_ms: 0,
                last_retention_ms: 0,
                partitions_dropped: 0,
            }),
            storage: Some(StorageStatus {
                backend: "postgres",
                status: "unavailable",
                reason: Some("connect"),
                error: Some("storage.url: cannot connect".into()),
                since_ms: Some(1_500),
                last_error: None,
                errors_total: 3,
                unavailable_total: 1,
            }),
            server_actors: vec![
                ChildStatus {
                    name: "alerts".into(),
                    alive: true,
                    restarts: 2,
                    last_exit: Some(Exit {
                        kind: ExitKind::Panic,
                        message: "panic: boom".into(),
                        at_ms: 9_500,
                    }),
                },
                ChildStatus {
                    name: "writer".into(),
                    alive: true,
                    restarts: 0,
                    last_exit: None,
                },
            ],
            cluster: Some(build_cluster()),
        }
    }

    fn build_cluster() -> LeadershipSnapshot {
        LeadershipSnapshot {
            instance: "fleet-a".into(),
            mode: "lease",
            leases: vec![crate::cluster::lease::LeaseView {
                name: "history".into(),
                leader: true,
                epoch: Some(3),
                trusted_for_ms: Some(2_000),
                holder: Some("fleet-a".into()),
                holder_epoch: Some(3),
                gained_total: 1,
                lost_total: 0,
            }],
            fenced_writes: [("history".to_string(), 2)].into_iter().collect(),
            heartbeats: 10,
            heartbeat_errors: 1,
            last_error: None,
            instances: [("alive", 2), ("dead", 1)].into_iter().collect(),
        }
    }

    #[test]
    fn devices_get_labelled_gauges_in_base_units_and_escaped_labels() {
        let text = render(&build_input()).unwrap();
        assert!(text.contains("rvm_fleet_device_power_watts{device=\"rvm1\",site=\"\"} 7.25\n"));
        assert!(text.contains(
            "rvm_fleet_device_cpu_usage_percent{device=\"rvm2\",site=\"oslo \\\"north\\\"\\\\1\"} 12.5\n"
        ));
        assert!(text.contains("rvm_fleet_device_status{device=\"rvm1\",site=\"\"} 0\n"));
        assert!(text.contains("rvm_fleet_device_status{device=\"rvm2\",site=\"oslo"));
        assert!(text.contains("rvm_fleet_devices{status=\"offline\"} 1\n"));
        assert!(text.contains("rvm_fleet_devices{status=\"stale\"} 0\n"));
        assert!(text.contains("rvm_fleet_device_last_seen_age_seconds{device=\"rvm1\",site=\"\"} 1\n"));
        assert!(text.contains(
            "rvm_fleet_device_actor_restarts_total{device=\"rvm1\",site=\"\",actor=\"collector\"} 3\n"
        ));
        assert!(text.contains("rvm_fleet_ingest_rejected_total{reason=\"malformed\"} 4\n"));
        assert!(text.contains("rvm_fleet_broker_refusals_total{kind=\"publish\"} 2\n"));
        assert!(text.contains("rvm_fleet_storage_up{backend=\"postgres\"} 0\n"));
        assert!(text.contains("rvm_fleet_storage_errors_total{backend=\"postgres\"} 3\n"));
        assert!(text.contains(
            "rvm_fleet_storage_unavailable_since_timestamp_seconds{backend=\"postgres\",reason=\"connect\"} 1.5\n"
        ));
        assert!(text.contains(
            "rvm_fleet_notifications_dropped_total{reason=\"rate_limited\",route=\"default\"} 5\n"
        ));
        assert!(text.contains("rvm_fleet_notification_errors_total{channel=\"ops-hook\",kind=\"tls\"} 3\n"));
        assert!(text.contains("rvm_fleet_notification_outbox_entries{state=\"pending\"} 0\n"));
        assert!(text.contains("rvm_fleet_server_actor_restarts_total{actor=\"alerts\"} 2\n"));
        assert!(text.contains("rvm_fleet_server_actor_restarts_total{actor=\"writer\"} 0\n"));
        assert!(text.contains("rvm_fleet_server_actor_alive{actor=\"alerts\"} 1\n"));
        assert!(text.contains(
            "rvm_fleet_server_actor_last_exit_timestamp_seconds{actor=\"alerts\",reason=\"panic\"} 9.5\n"
        ));
        assert!(!text.contains("rvm_fleet_server_actor_last_exit_timestamp_seconds{actor=\"writer\""));
        assert!(text.contains("rvm_fleet_cluster_instances{state=\"alive\"} 2\n"));
        assert!(text.contains("rvm_fleet_cluster_instances{state=\"dead\"} 1\n"));
        assert!(text.contains("rvm_fleet_cluster_instances{state=\"stopped\"} 0\n"));
        assert!(text.contains("rvm_fleet_leader{job=\"history\"} 1\n"));
        assert!(text.contains("rvm_fleet_leader_fenced_writes_total{job=\"history\"} 2\n"));
        // a figure nobody reported is left out
        assert!(!text.contains("rvm_fleet_device_gpu_load_percent"));
    }

    #[test]
    fn every_family_has_help_and_type_once_and_is_listed() {
        let text = render(&build_input()).unwrap();
        let mut seen = BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(seen.insert(name.to_string()), "{name} twice");
                assert!(family_names().contains(&name), "{name} not in FAMILIES");
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(seen.contains(name), "{name} sample before its TYPE");
            }
        }
        let mut names = family_names();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len(), "FAMILIES has a duplicate");
        for (name, kind, _) in FAMILIES {
            assert_eq!(name.ends_with("_total"), *kind == "counter", "{name}");
        }
    }

    #[test]
    fn a_token_is_compared_in_full() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
    }
}
