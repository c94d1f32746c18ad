//! Every family `/metrics` may export, with its type and help: the catalogue the renderer
//! writes `# HELP` / `# TYPE` from, and the dashboard test checks its PromQL against.

/// Every family the server may export: (name, type, help).
pub const FAMILIES: &[(&str, &str, &str)] = &[
    ("rvm_fleet_devices", "gauge", "Machines by status now."),
    (
        "rvm_fleet_device_info",
        "gauge",
        "Always 1; the machine's versions as labels.",
    ),
    (
        "rvm_fleet_device_status",
        "gauge",
        "Presence now: 0 offline, 1 stale, 2 degraded, 3 online.",
    ),
    (
        "rvm_fleet_device_health",
        "gauge",
        "The agent's latest health: 0 ok, 1 warn, 2 critical.",
    ),
    (
        "rvm_fleet_device_last_seen_age_seconds",
        "gauge",
        "Seconds since the server last heard from the machine.",
    ),
    (
        "rvm_fleet_device_cpu_usage_percent",
        "gauge",
        "CPU use of the machine.",
    ),
    ("rvm_fleet_device_load1", "gauge", "Load average over 1 minute."),
    ("rvm_fleet_device_memory_used_percent", "gauge", "Memory in use."),
    (
        "rvm_fleet_device_disk_used_max_percent",
        "gauge",
        "Fullest filesystem.",
    ),
    (
        "rvm_fleet_device_temperature_max_celsius",
        "gauge",
        "Hottest temperature sensor.",
    ),
    ("rvm_fleet_device_gpu_load_percent", "gauge", "GPU load."),
    (
        "rvm_fleet_device_gpu_temperature_celsius",
        "gauge",
        "GPU temperature.",
    ),
    (
        "rvm_fleet_device_power_watts",
        "gauge",
        "Total board power (INA3221 rails or NVML).",
    ),
    (
        "rvm_fleet_device_delivery_received_total",
        "counter",
        "Sequenced records received from the machine (duplicates excluded).",
    ),
    (
        "rvm_fleet_device_delivery_duplicates_total",
        "counter",
        "Duplicate records dropped.",
    ),
    (
        "rvm_fleet_device_delivery_missing",
        "gauge",
        "Sequence numbers never received (holes below the highest seq).",
    ),
    (
        "rvm_fleet_device_delivery_reported_dropped_total",
        "counter",
        "Records the machine reported it had to drop (buffer full).",
    ),
    (
        "rvm_fleet_device_actor_restarts_total",
        "counter",
        "Restarts of each agent actor, from the machine's latest health report.",
    ),
    (
        "rvm_fleet_device_actor_alive",
        "gauge",
        "1 when the agent actor runs, from the machine's latest health report.",
    ),
    (
        "rvm_fleet_server_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
    ),
    (
        "rvm_fleet_server_actor_restarts_total",
        "counter",
        "Restarts of each of the server's own actors and threads by its supervisor.",
    ),
    (
        "rvm_fleet_server_actor_alive",
        "gauge",
        "1 when the server's actor or thread runs (0 while it waits to be restarted).",
    ),
    (
        "rvm_fleet_server_actor_last_exit_timestamp_seconds",
        "gauge",
        "When the server's actor or thread last exited, by reason (panic, stall, died, ended, failed).",
    ),
    (
        "rvm_fleet_ingest_connected",
        "gauge",
        "1 when the server's MQTT session is connected.",
    ),
    (
        "rvm_fleet_ingest_received_total",
        "counter",
        "Records that reached the ingest writer.",
    ),
    ("rvm_fleet_ingest_accepted_total", "counter", "Records stored."),
    (
        "rvm_fleet_ingest_duplicates_total",
        "counter",
        "Duplicate records dropped by (device, seq).",
    ),
    (
        "rvm_fleet_ingest_rejected_total",
        "counter",
        "Records refused, by reason.",
    ),
    (
        "rvm_fleet_writer_batches_total",
        "counter",
        "Batches written by the ingest writer.",
    ),
    (
        "rvm_fleet_writer_queue_depth",
        "gauge",
        "Records waiting for the ingest writer after its last batch.",
    ),
    (
        "rvm_fleet_broker_connects_allowed_total",
        "counter",
        "Connections the embedded broker accepted.",
    ),
    (
        "rvm_fleet_broker_refusals_total",
        "counter",
        "What the embedded broker refused, by kind (connect, not_ready, publish, subscribe).",
    ),
    (
        "rvm_fleet_alerts_active",
        "gauge",
        "Active alerts by state (firing, pending) and severity.",
    ),
    (
        "rvm_fleet_alerts_acknowledged",
        "gauge",
        "Active alerts that are acknowledged, by severity.",
    ),
    (
        "rvm_fleet_alerts_silenced",
        "gauge",
        "Active alerts a silence matches, by severity.",
    ),
    (
        "rvm_fleet_alert_transitions_total",
        "counter",
        "Alert lifecycle transitions.",
    ),
    ("rvm_fleet_incidents_open", "gauge", "Open incidents."),
    ("rvm_fleet_silences_active", "gauge", "Active silences."),
    (
        "rvm_fleet_notifications_muted_total",
        "counter",
        "Notifications not sent because a maintenance window covered their machines.",
    ),
    (
        "rvm_fleet_notifications_routed_total",
        "counter",
        "Notifications accepted for delivery, by route.",
    ),
    (
        "rvm_fleet_notifications_sent_total",
        "counter",
        "Notifications delivered, by channel.",
    ),
    (
        "rvm_fleet_notifications_failed_total",
        "counter",
        "Notifications given up after retries, by channel.",
    ),
    (
        "rvm_fleet_notifications_dropped_total",
        "counter",
        "Notifications dropped, by reason (rate_limited per route, queue_full, outbox_write).",
    ),
    (
        "rvm_fleet_notifications_retried_total",
        "counter",
        "Deliveries that failed and will be tried again, by channel.",
    ),
    (
        "rvm_fleet_notification_errors_total",
        "counter",
        "Failed deliveries (retried or given up), by channel and error kind (tls, connect, timeout, status, auth, rejected, template, setup, ...).",
    ),
    (
        "rvm_fleet_notification_outbox_entries",
        "gauge",
        "Notification outbox entries by state (pending, delivered, failed, corrupt).",
    ),
    (
        "rvm_fleet_notification_outbox_errors_total",
        "counter",
        "Reads and writes of the notification outbox that failed.",
    ),
    (
        "rvm_fleet_history_disk_bytes",
        "gauge",
        "Size of the server's store on disk.",
    ),
    (
        "rvm_fleet_history_errors_total",
        "counter",
        "Errors of the history rollup and retention job.",
    ),
    (
        "rvm_fleet_storage_up",
        "gauge",
        "1 while the store answers, 0 while it cannot be reached (records are then not acknowledged; /api/v1/health says why).",
    ),
    (
        "rvm_fleet_storage_unavailable_since_timestamp_seconds",
        "gauge",
        "While the store cannot be reached: since when, labelled with why (connect, connection_lost, shutdown, too_many_connections, pool_timeout).",
    ),
    (
        "rvm_fleet_storage_errors_total",
        "counter",
        "Store operations that failed.",
    ),
    (
        "rvm_fleet_storage_unavailable_total",
        "counter",
        "Times the store became unreachable.",
    ),
    (
        "rvm_fleet_cluster_instances",
        "gauge",
        "Instances on the store by state (alive, dead: silent for longer than the lease, stopped: stopped cleanly), as this instance last read them.",
    ),
    (
        "rvm_fleet_leader",
        "gauge",
        "1 while this instance leads the job (its lease trusted by its own clock), else 0.",
    ),
    (
        "rvm_fleet_leader_fenced_writes_total",
        "counter",
        "Writes of this instance as leader that the database refused because the lease was lost (SQLSTATE RVML1); none was applied.",
    ),
    (
        "rvm_fleet_cluster_heartbeat_errors_total",
        "counter",
        "Heartbeats (with their lease renewals) that got no answer from the store.",
    ),
];

/// Names of [`FAMILIES`].
pub fn family_names() -> Vec<&'static str> {
    FAMILIES.iter().map(|f| f.0).collect()
}
