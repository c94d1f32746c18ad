//! The inputs a rule may name: the flat metric names of [`common::Telemetry::flat_metrics`],
//! the vision service's `app.*` metrics, and the [`SPECIAL_INPUTS`] the server derives itself
//! ([`super::inputs`]); and the labels and longest durations every kind of rule shares (the
//! file's rules and the health check rules, [`super::checks`]). A leaf: the rules, the
//! correlator's settings and the derived inputs all name inputs, and none of them needs the
//! others for it.

/// Labels every alert carries; a rule's own labels may not redefine them.
pub const RESERVED_LABELS: &[&str] = &["rule", "device", "site", "severity"];

/// Longest `for_s`, `cooldown_s` or `escalate_after_s` accepted (one week): keeps every
/// millisecond computation far from overflow.
pub const MAX_DURATION_S: u64 = 7 * 24 * 3600;

/// Flat metric names a rule may use (see `Telemetry::flat_metrics`), plus `app.<name>`.
pub const FLAT_METRICS: &[&str] = &[
    "cpu.usage_pct",
    "load1",
    "memory.total_bytes",
    "memory.used_bytes",
    "memory.used_pct",
    "swap.used_pct",
    "disk.max_used_pct",
    "net.rx_bytes_per_s",
    "net.tx_bytes_per_s",
    "temp.max_c",
    "process.down",
    "gpu.load_pct",
    "gpu.freq_mhz",
    "gpu.temp_c",
    "power.total_mw",
];

/// Prefix of the vision service's application metrics (`app.errors`, `app.camera_fps`, ...).
pub const APP_PREFIX: &str = "app.";

/// Prefixes of the per-name figures of a machine's look inside (schema 2, issue 24; see
/// `common::Detail::visit_metrics`): `proc.zombies`, `proc.<watched>.fds`,
/// `net.<iface>.drops`, `tcp.established`, `disk.<dev>.util_pct`, `broker.rtt_ms`, ...
pub const DETAIL_PREFIXES: &[&str] = &["proc.", "net.", "tcp.", "disk.", "broker."];

/// `1` while the device is offline (presence), `0` otherwise.
pub const PRESENCE_OFFLINE: &str = "presence.offline";
/// Records the agent reported dropped (buffer cap) during the last evaluation window.
pub const RECORDS_DROPPED: &str = "agent.records_dropped";
/// `1` for one evaluation after the server saw a new boot id, then `0`.
pub const AGENT_RESTARTED: &str = "agent.restarted";
/// `1` while the latest recovery action on the device failed, `0` once one succeeds.
pub const RECOVERY_FAILED: &str = "agent.recovery_failed";
/// Device clock minus server clock, in seconds (signed).
pub const CLOCK_SKEW: &str = "clock.skew_s";
/// Watched processes not running, a flat metric of the telemetry.
pub const PROCESS_DOWN: &str = "process.down";
/// Watched services down: processes not running (the telemetry's `process.down`) plus
/// systemd units failed or inactive (the latest health report's `unit:*` checks).
pub const SERVICE_DOWN: &str = "service.down";

/// Items accepted per hour over the last 15 minutes (the `rvm.accepted_total` counter).
pub const KPI_ACCEPTED_PER_H: &str = "kpi.accepted_per_h";
/// Items rejected per hour over the last 15 minutes.
pub const KPI_REJECTED_PER_H: &str = "kpi.rejected_per_h";
/// Rejected / (accepted + rejected) over the last 15 minutes.
pub const KPI_REJECT_RATIO: &str = "kpi.reject_ratio";
/// The reject ratio divided by the machine's own baseline (its last week).
pub const KPI_REJECT_RATIO_VS_BASELINE: &str = "kpi.reject_ratio_vs_baseline";
/// `1` while the jam counter went up within the last 10 minutes.
pub const KPI_JAM: &str = "kpi.jam";
/// How full the bin is, percent (`rvm.bin_fill_pct` or `rvm_bin_fill_pct`).
pub const KPI_BIN_FILL_PCT: &str = "kpi.bin_fill_pct";
/// `1` while the receipt printer works, `0` on a fault.
pub const KPI_PRINTER_OK: &str = "kpi.printer_ok";
/// `1` while the barcode scanner works, `0` on a fault.
pub const KPI_SCANNER_OK: &str = "kpi.scanner_ok";
/// `1` while the service door is open.
pub const KPI_DOOR_OPEN: &str = "kpi.door_open";

/// Inputs the server derives from presence, events and envelopes rather than telemetry.
pub const SPECIAL_INPUTS: &[&str] = &[
    PRESENCE_OFFLINE,
    RECORDS_DROPPED,
    AGENT_RESTARTED,
    RECOVERY_FAILED,
    CLOCK_SKEW,
    SERVICE_DOWN,
];

/// Inputs the server derives from the vision service's counters ([`super::kpi`]).
pub const KPI_INPUTS: &[&str] = &[
    KPI_ACCEPTED_PER_H,
    KPI_REJECTED_PER_H,
    KPI_REJECT_RATIO,
    KPI_REJECT_RATIO_VS_BASELINE,
    KPI_JAM,
    KPI_BIN_FILL_PCT,
    KPI_PRINTER_OK,
    KPI_SCANNER_OK,
    KPI_DOOR_OPEN,
];

/// Is `name` an input a rule may use?
pub fn is_known_input(name: &str) -> bool {
    FLAT_METRICS.contains(&name)
        || SPECIAL_INPUTS.contains(&name)
        || KPI_INPUTS.contains(&name)
        || name.strip_prefix(APP_PREFIX).is_some_and(|rest| !rest.is_empty())
        || DETAIL_PREFIXES.iter().any(|p| {
            name.strip_prefix(p).is_some_and(|rest| {
                !rest.is_empty()
                    && rest
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_metrics_and_special_inputs_are_known_inputs() {
        assert!(is_known_input("app.camera_fps") && is_known_input(PRESENCE_OFFLINE));
        assert!(!is_known_input("app.") && !is_known_input("gpu.temp"));
        assert!(is_known_input(KPI_REJECT_RATIO) && !is_known_input("kpi.nothing"));
        assert!(is_known_input("proc.zombies") && is_known_input("proc.vision.fds"));
        assert!(
            is_known_input("disk.wear_max_pct") && !is_known_input("proc.") && !is_known_input("proc.a b")
        );
    }
}
