//! Inputs the server derives for alert rules, beyond the telemetry's flat metrics: presence,
//! agent restarts, dropped records, failed recoveries and clock skew (see
//! [`super::names::SPECIAL_INPUTS`]). Pure: every call takes `now_ms`; the fleet actor owns one
//! [`DeviceInputs`] per device and feeds the results to the alerts actor.
//!
//! - `presence.offline`: 1 while the device is offline by last will (or goodbye) or by silence,
//!   else 0 ([`presence_offline`]). Silence is counted from the server's start at the earliest,
//!   so devices remembered from before a restart are not declared offline before they had a
//!   chance to reconnect.
//! - `agent.restarted`: 1 when a birth carries a boot id other than the one known, then 0 at the
//!   next evaluation. The first birth of a device, a birth repeated by the broker (retained) and
//!   a birth remembered from before a server restart are not restarts.
//! - `agent.records_dropped`: 1 while a `RecordsDropped` event arrived within
//!   [`RECORDS_DROPPED_WINDOW_MS`], else 0.
//! - `agent.recovery_failed`: 1 after a recovery that failed, 0 after one that succeeded
//!   (a refused action says nothing about the machine and leaves it as it was).
//! - `clock.skew_s`: device clock minus server clock, from live records only: a record stamped
//!   before the birth of the device's current connection (device clock) is backlog, and its
//!   age is delivery delay, not skew. Queueing makes live records look older too, so the value
//!   fed is the largest `record ts - receive time` of the last [`SKEW_WINDOW_MS`]: a single
//!   prompt record shows the true offset. A record whose seq is above one already seen live is
//!   live too, whatever its timestamp, so a clock that jumps back mid connection is flagged
//!   ([`DeviceInputs::is_live_seq`], the same rule as [`crate::fleet::clock`]).
//! - `service.down`: watched processes not running (the latest live telemetry's
//!   `process.down`) plus watched systemd units failed or inactive (`unit:*` checks critical
//!   in the latest live health report), fed with each of either ([`DeviceInputs::on_health`],
//!   [`DeviceInputs::on_metrics`]).
//! - `kpi.*`: the machine's accepted and rejected rates, reject ratio against its own
//!   baseline, and jams, from the vision service's counters ([`super::kpi`]). A health report made before the current connection, or
//!   older than one already taken, is not the machine's state now and is left out.

use std::collections::{BTreeMap, VecDeque};

use common::{ActionOutcome, Birth, DeviceId, Event, EventKind, HealthReport, HealthStatus};

use super::alert::DeviceInfo;
use super::kpi::KpiInputs;
use super::names::{
    AGENT_RESTARTED, CLOCK_SKEW, PRESENCE_OFFLINE, PROCESS_DOWN, RECORDS_DROPPED, RECOVERY_FAILED,
    SERVICE_DOWN,
};

/// A `RecordsDropped` event keeps `agent.records_dropped` at 1 this long.
pub const RECORDS_DROPPED_WINDOW_MS: i64 = 60_000;
/// Clock skew is the largest offset of the live records of this window.
pub const SKEW_WINDOW_MS: i64 = 10_000;
/// Skew samples kept per device at most (a fast device within the window).
const SKEW_SAMPLES_CAP: usize = 256;

/// What the engine knows of a device: site, tags and the attributes `agent_version`,
/// `vision_model_version`, `jetpack` and `board` from its latest birth.
pub fn device_info(id: &DeviceId, birth: Option<&Birth>) -> DeviceInfo {
    let mut info = DeviceInfo::new(id.clone());
    let Some(b) = birth else {
        return info;
    };
    info.site = b.site.clone().filter(|s| !s.is_empty());
    info.tags = b.tags.clone();
    let attrs = [
        ("agent_version", Some(&b.agent_version)),
        ("vision_model_version", b.vision_model_version.as_ref()),
        ("jetpack", b.jetpack.as_ref()),
        ("board", b.board.as_ref()),
    ];
    info.attrs = attrs
        .into_iter()
        .filter_map(|(k, v)| v.filter(|v| !v.is_empty()).map(|v| (k.to_string(), v.clone())))
        .collect::<BTreeMap<_, _>>();
    info
}

/// Is a device offline: by its last will or goodbye, or silent for `offline_after_ms`
/// (counted from `server_started_ms` at the earliest)?
pub fn presence_offline(
    offline_reason: bool,
    last_seen_ms: i64,
    server_started_ms: i64,
    offline_after_ms: i64,
    now_ms: i64,
) -> bool {
    offline_reason || now_ms - last_seen_ms.max(server_started_ms) >= offline_after_ms
}

/// One device's derived inputs. See the module docs.
#[derive(Debug, Clone, Default)]
pub struct DeviceInputs {
    boot_id: Option<String>,
    /// Device-clock time of the birth of the current connection.
    link_since_ms: Option<i64>,
    /// A restart was reported (1) and the next evaluation reports 0.
    restart_reported: bool,
    last_drop_ms: Option<i64>,
    recovery_failed: Option<bool>,
    /// (receive time, device ts - receive time in s) of live records.
    skew: VecDeque<(i64, f64)>,
    /// Lowest seq seen live on the current connection.
    live_floor_seq: Option<u64>,
    /// `process.down` of the latest live telemetry.
    processes_down: Option<f64>,
    /// Watched units failed or inactive in the latest live health report.
    units_down: Option<f64>,
    /// Device time of the latest health report taken.
    health_ts_ms: Option<i64>,
    /// The machine's KPIs from the vision service's counters ([`super::kpi`]).
    pub kpi: KpiInputs,
}

/// Watched systemd units failed or inactive in a health report (its critical `unit:*` checks).
pub fn units_down(report: &HealthReport) -> f64 {
    report
        .checks
        .iter()
        .filter(|c| c.name.starts_with("unit:") && c.status == HealthStatus::Critical)
        .count() as f64
}

impl DeviceInputs {
    /// A birth remembered from before a server restart: its boot id is known, not new.
    pub fn restore(&mut self, boot_id: &str) {
        if self.boot_id.is_none() {
            self.boot_id = Some(boot_id.to_string());
        }
    }

    /// What a restarted fleet actor carries on from: everything but the skew samples, which
    /// refill within [`SKEW_WINDOW_MS`] (a checkpoint is copied every second).
    pub fn checkpoint(&self) -> DeviceInputs {
        DeviceInputs {
            skew: VecDeque::new(),
            boot_id: self.boot_id.clone(),
            kpi: self.kpi.clone(),
            ..*self
        }
    }

    /// A birth (`birth_ts_ms` is its envelope time, device clock).
    pub fn on_birth(&mut self, boot_id: &str, birth_ts_ms: i64) -> Vec<(String, f64)> {
        let restarted = self.boot_id.as_deref().is_some_and(|b| b != boot_id);
        // the same birth again (retained, replayed) is not a new link; a later one is, and so
        // is an earlier one (the device's clock went back)
        let new_link = self.boot_id.as_deref() != Some(boot_id)
            || self.link_since_ms.is_none_or(|since| birth_ts_ms != since);
        if new_link {
            self.link_since_ms = Some(birth_ts_ms);
            self.live_floor_seq = None;
            // reports of this connection count even if the device's clock went back
            self.health_ts_ms = None;
        }
        self.boot_id = Some(boot_id.to_string());
        if restarted {
            self.restart_reported = true;
            self.skew.clear();
            vec![(AGENT_RESTARTED.into(), 1.0)]
        } else {
            Vec::new()
        }
    }

    /// Is a record stamped `ts_ms` (device clock) live, i.e. made on the current connection?
    /// Unknown (no birth seen since the server started): not live.
    pub fn is_live(&self, ts_ms: i64) -> bool {
        self.link_since_ms.is_some_and(|since| ts_ms >= since)
    }

    /// As [`DeviceInputs::is_live`], and live as well when `seq` is above the lowest seq
    /// already seen live on this connection (the device's clock jumped back). Remembers it.
    pub fn is_live_seq(&mut self, seq: u64, ts_ms: i64) -> bool {
        let live = self.is_live(ts_ms) || self.live_floor_seq.is_some_and(|f| seq > f);
        if live {
            self.live_floor_seq = Some(self.live_floor_seq.map_or(seq, |f| f.min(seq)));
        }
        live
    }

    /// An event from the device.
    pub fn on_event(&mut self, event: &Event, now_ms: i64) -> Vec<(String, f64)> {
        match &event.kind {
            EventKind::RecordsDropped { .. } => {
                self.last_drop_ms = Some(now_ms);
                vec![(RECORDS_DROPPED.into(), 1.0)]
            }
            EventKind::Recovery { outcome, .. } => {
                let failed = match outcome {
                    ActionOutcome::Failed => true,
                    ActionOutcome::Succeeded => false,
                    ActionOutcome::Refused => return Vec::new(),
                };
                self.recovery_failed = Some(failed);
                vec![(RECOVERY_FAILED.into(), if failed { 1.0 } else { 0.0 })]
            }
            _ => Vec::new(),
        }
    }

    /// A telemetry record stamped `ts_ms` (device clock) received at `now_ms`: the clock skew
    /// input, for live records.
    pub fn on_record(&mut self, ts_ms: i64, now_ms: i64) -> Option<(String, f64)> {
        if !self.is_live(ts_ms) {
            return None;
        }
        Some(self.on_live_record(ts_ms, now_ms))
    }

    /// As [`DeviceInputs::on_record`] for a record already known to be live
    /// ([`DeviceInputs::is_live_seq`]).
    pub fn on_live_record(&mut self, ts_ms: i64, now_ms: i64) -> (String, f64) {
        self.skew.push_back((now_ms, (ts_ms - now_ms) as f64 / 1000.0));
        while self.skew.len() > SKEW_SAMPLES_CAP
            || self
                .skew
                .front()
                .is_some_and(|(at, _)| now_ms - *at > SKEW_WINDOW_MS)
        {
            self.skew.pop_front();
        }
        let max = self.skew.iter().map(|(_, s)| *s).fold(f64::MIN, f64::max);
        (CLOCK_SKEW.into(), max)
    }

    /// A health report stamped `ts_ms` (device clock): the `service.down` input, or None
    /// when the report is backlog or older than one already taken (see the module docs).
    pub fn on_health(&mut self, report: &HealthReport, ts_ms: i64) -> Option<(String, f64)> {
        if !self.is_live(ts_ms) || self.health_ts_ms.is_some_and(|t| ts_ms < t) {
            return None;
        }
        self.health_ts_ms = Some(ts_ms);
        let units = units_down(report);
        self.units_down = Some(units);
        Some((SERVICE_DOWN.into(), self.processes_down.unwrap_or(0.0) + units))
    }

    /// A live telemetry record's flat metrics: the `service.down` input when they have
    /// `process.down`.
    pub fn on_metrics(&mut self, metrics: &[(String, f64)]) -> Option<(String, f64)> {
        let (_, p) = metrics.iter().find(|(n, _)| n == PROCESS_DOWN)?;
        self.processes_down = Some(*p);
        Some((SERVICE_DOWN.into(), p + self.units_down.unwrap_or(0.0)))
    }

    /// The periodic evaluation: presence and the inputs that go back to 0 with time.
    pub fn tick(&mut self, offline: bool, now_ms: i64) -> Vec<(String, f64)> {
        let mut out = vec![(PRESENCE_OFFLINE.to_string(), if offline { 1.0 } else { 0.0 })];
        if self.restart_reported {
            self.restart_reported = false;
            out.push((AGENT_RESTARTED.into(), 0.0));
        }
        if let Some(at) = self.last_drop_ms {
            let recent = now_ms - at < RECORDS_DROPPED_WINDOW_MS;
            out.push((RECORDS_DROPPED.into(), if recent { 1.0 } else { 0.0 }));
            if !recent {
                self.last_drop_ms = None;
            }
        }
        if let Some(failed) = self.recovery_failed {
            out.push((RECOVERY_FAILED.into(), if failed { 1.0 } else { 0.0 }));
        }
        out.extend(self.kpi.tick(now_ms));
        out
    }
}

#[cfg(test)]
mod tests {
    use common::Severity;

    use super::*;

    fn value(m: &[(String, f64)], name: &str) -> Option<f64> {
        m.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    fn build_event(kind: EventKind) -> Event {
        Event {
            severity: Severity::Warning,
            kind,
            message: String::new(),
        }
    }

    #[test]
    fn a_new_boot_id_is_a_restart_for_one_evaluation() {
        let mut d = DeviceInputs::default();
        assert!(d.on_birth("a", 0).is_empty(), "first contact is not a restart");
        assert!(d.on_birth("a", 0).is_empty(), "a repeated birth is not a restart");
        assert_eq!(value(&d.on_birth("b", 10), AGENT_RESTARTED), Some(1.0));
        assert_eq!(value(&d.tick(false, 20), AGENT_RESTARTED), Some(0.0));
        assert_eq!(value(&d.tick(false, 30), AGENT_RESTARTED), None);
    }

    #[test]
    fn a_checkpoint_keeps_the_current_connection_and_drops_the_skew_samples() {
        let mut d = DeviceInputs::default();
        d.on_birth("a", 100);
        assert!(d.is_live_seq(7, 150));
        d.on_live_record(150, 1_000);
        let c = d.checkpoint();
        assert!(c.is_live(150) && !c.is_live(99), "live records stay live");
        assert_eq!(c.live_floor_seq, Some(7));
        assert!(c.skew.is_empty());
        assert!(
            c.clone().on_birth("a", 100).is_empty(),
            "the same boot is no restart"
        );
    }

    #[test]
    fn a_birth_remembered_across_a_server_restart_is_not_a_restart() {
        let mut d = DeviceInputs::default();
        d.restore("a");
        assert!(d.on_birth("a", 5).is_empty());
        assert!(d.is_live(5) && !d.is_live(4));
    }

    #[test]
    fn dropped_records_hold_for_the_window_then_clear() {
        let mut d = DeviceInputs::default();
        let ev = build_event(EventKind::RecordsDropped {
            count: 10,
            first_seq: 1,
            last_seq: 10,
            reason: "cap".into(),
        });
        assert_eq!(value(&d.on_event(&ev, 1000), RECORDS_DROPPED), Some(1.0));
        assert_eq!(value(&d.tick(false, 2000), RECORDS_DROPPED), Some(1.0));
        let late = 1000 + RECORDS_DROPPED_WINDOW_MS;
        assert_eq!(value(&d.tick(false, late), RECORDS_DROPPED), Some(0.0));
        assert_eq!(value(&d.tick(false, late + 1000), RECORDS_DROPPED), None);
    }

    #[test]
    fn recovery_failed_follows_the_latest_outcome_and_ignores_refusals() {
        let mut d = DeviceInputs::default();
        let rec = |outcome| {
            build_event(EventKind::Recovery {
                action: "restart_unit".into(),
                target: "vision".into(),
                outcome,
                detail: String::new(),
            })
        };
        assert_eq!(value(&d.tick(false, 0), RECOVERY_FAILED), None);
        assert_eq!(
            value(&d.on_event(&rec(ActionOutcome::Failed), 1), RECOVERY_FAILED),
            Some(1.0)
        );
        assert!(d.on_event(&rec(ActionOutcome::Refused), 2).is_empty());
        assert_eq!(value(&d.tick(false, 3), RECOVERY_FAILED), Some(1.0));
        d.on_event(&rec(ActionOutcome::Succeeded), 4);
        assert_eq!(value(&d.tick(false, 5), RECOVERY_FAILED), Some(0.0));
    }

    #[test]
    fn clock_skew_ignores_backlog_and_sees_through_queueing_delay() {
        let mut d = DeviceInputs::default();
        assert_eq!(d.on_record(0, 0), None, "no birth seen: not known to be live");
        d.on_birth("a", 100_000);
        assert_eq!(
            d.on_record(50_000, 100_500),
            None,
            "older than the birth: backlog"
        );
        // a device 40 s ahead, whose records queue for up to 5 s
        let s1 = d.on_record(140_000, 105_000).unwrap().1;
        let s2 = d.on_record(141_000, 101_000).unwrap().1;
        assert_eq!((s1, s2), (35.0, 40.0));
        // a prompt device 40 s behind: every record shows it
        let mut b = DeviceInputs::default();
        b.on_birth("a", 60_000);
        assert_eq!(b.on_record(60_000, 100_000), Some((CLOCK_SKEW.into(), -40.0)));
        // old samples leave the window
        let later = 100_000 + SKEW_WINDOW_MS + 1;
        assert_eq!(b.on_record(later - 2_000, later), Some((CLOCK_SKEW.into(), -2.0)));
    }

    #[test]
    fn a_clock_jumping_back_mid_connection_is_still_live_by_seq_and_flagged() {
        let mut d = DeviceInputs::default();
        d.on_birth("a", 100_000);
        assert!(d.is_live_seq(10, 101_000));
        // the clock jumps back a day; later seqs are live, earlier ones (backlog) are not
        let back = 102_000 - 86_400_000;
        assert!(d.is_live_seq(11, back));
        assert!(!d.is_live_seq(9, back));
        assert_eq!(d.on_live_record(back, 102_000), (CLOCK_SKEW.into(), -86_400.0));
        // a new connection starts over
        d.on_birth("a", back + 10_000);
        assert!(!d.is_live_seq(12, back));
    }

    #[test]
    fn presence_counts_silence_from_the_server_start_at_the_earliest() {
        assert!(presence_offline(true, 100, 0, 1000, 101));
        assert!(!presence_offline(false, 0, 5_000, 1000, 5_500));
        assert!(presence_offline(false, 0, 5_000, 1000, 6_000));
        assert!(presence_offline(false, 10_000, 0, 1000, 11_000));
        assert!(!presence_offline(false, 10_000, 0, 1000, 10_999));
    }

    #[test]
    fn device_info_takes_site_tags_and_versions_from_the_birth() {
        let id = DeviceId::new("rvm1").unwrap();
        let b = Birth {
            site: Some("oslo".into()),
            tags: vec!["pilot".into()],
            agent_version: "1.2.0".into(),
            vision_model_version: Some("v3.3".into()),
            jetpack: Some(String::new()),
            ..Default::default()
        };
        let info = device_info(&id, Some(&b));
        assert_eq!(info.site.as_deref(), Some("oslo"));
        assert_eq!(
            info.attrs.get("vision_model_version").map(String::as_str),
            Some("v3.3")
        );
        assert!(
            !info.attrs.contains_key("jetpack"),
            "empty values are not attributes"
        );
        assert!(device_info(&id, None).attrs.is_empty());
    }

    fn build_report(units: &[(&str, HealthStatus)]) -> HealthReport {
        HealthReport {
            status: HealthStatus::Ok,
            checks: units
                .iter()
                .map(|(u, st)| common::CheckResult {
                    name: format!("unit:{u}"),
                    status: *st,
                    message: String::new(),
                })
                .collect(),
            actors: vec![],
        }
    }

    #[test]
    fn service_down_counts_stopped_processes_and_failed_units_from_live_records() {
        let mut d = DeviceInputs::default();
        let failed = build_report(&[
            ("vision.service", HealthStatus::Critical),
            ("ok.service", HealthStatus::Ok),
        ]);
        assert_eq!(d.on_health(&failed, 1_000), None, "no birth yet: not live");
        d.on_birth("boot-a", 5_000);
        assert_eq!(d.on_health(&failed, 4_000), None, "made before this connection");
        assert_eq!(d.on_health(&failed, 6_000), Some((SERVICE_DOWN.into(), 1.0)));
        let m = vec![(PROCESS_DOWN.to_string(), 2.0), ("cpu.usage_pct".into(), 5.0)];
        assert_eq!(d.on_metrics(&m), Some((SERVICE_DOWN.into(), 3.0)));
        assert_eq!(d.on_metrics(&[("cpu.usage_pct".into(), 5.0)]), None);
        let fixed = build_report(&[("vision.service", HealthStatus::Ok)]);
        assert_eq!(d.on_health(&fixed, 5_500), None, "older than the report taken");
        assert_eq!(d.on_health(&fixed, 7_000), Some((SERVICE_DOWN.into(), 2.0)));
        let activating = build_report(&[("vision.service", HealthStatus::Warn)]);
        assert_eq!(units_down(&activating), 0.0, "activating is not down");
    }
}
