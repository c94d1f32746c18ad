//! Fleet state: per device the latest values, presence and delivery. Pure: every function
//! takes `now_ms`; the fleet actor owns one [`FleetState`] and does the IO.

use std::collections::{BTreeMap, VecDeque};

use common::{Birth, DeviceId, DeviceState, Envelope, Event, HealthReport, HealthStatus, Telemetry};
use serde::Serialize;

use super::delivery::Delivery;

/// Events kept per device for the API.
pub const RECENT_EVENTS: usize = 50;

/// The counter behind `items_per_hour` (the vision service's recognised items).
pub const ITEMS_COUNTER: &str = "app.items_recognised";
/// `items_per_hour` is the counter's rise over at most this long...
pub const RATE_WINDOW_MS: i64 = 5 * 60_000;
/// ...and at least this long (before that it is unknown).
pub const RATE_MIN_SPAN_MS: i64 = 10_000;
/// One sample of the counter is kept per this much time.
pub const RATE_SAMPLE_MS: i64 = 15_000;

#[derive(Debug, Clone, Copy)]
pub struct PresencePolicy {
    /// No record for this long: stale.
    pub stale_after_ms: i64,
    /// No record for this long: offline, even without a last will.
    pub offline_after_ms: i64,
}

impl Default for PresencePolicy {
    fn default() -> Self {
        PresencePolicy {
            stale_after_ms: 15_000,
            offline_after_ms: 60_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    Online,
    Degraded,
    Stale,
    Offline,
}

/// A device's presence facts, kept across a restart of the fleet actor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub offline_reason: Option<String>,
    pub offline_since_ms: Option<i64>,
}

impl Seen {
    fn of(e: &DeviceEntry) -> Seen {
        Seen {
            first_seen_ms: e.first_seen_ms,
            last_seen_ms: e.last_seen_ms,
            offline_reason: e.offline_reason.clone(),
            offline_since_ms: e.offline_since_ms,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct DeviceEntry {
    pub birth: Option<Birth>,
    /// Set by the last will or a goodbye; cleared by a birth.
    pub offline_reason: Option<String>,
    pub offline_since_ms: Option<i64>,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub latest: Option<Envelope<Telemetry>>,
    pub metrics: Vec<(String, f64)>,
    pub health: Option<HealthReport>,
    pub events: VecDeque<(u64, i64, Event)>,
    /// From the ingest writer, which owns dedup.
    pub delivery: Delivery,
    /// Samples of [`ITEMS_COUNTER`] for `items_per_hour`.
    pub items: RateWindow,
    /// Several instances: the other instance that holds its session, as the fleet-wide view
    /// last read it ([`super::mirror`]); None: served here (any record received here clears
    /// it), or never seen anywhere.
    pub served_by: Option<String>,
    /// Device time of the latest telemetry the fleet-wide view read from the store (the
    /// record itself was received by another instance).
    pub remote_ts_ms: Option<i64>,
}

impl DeviceEntry {
    /// Device time of the newest telemetry known, received here or read from the store.
    pub fn telemetry_ts(&self) -> Option<i64> {
        let local = self.latest.as_ref().map(|l| l.ts_ms);
        local.max(self.remote_ts_ms)
    }
}

/// A counter's rate per hour over a sliding window of sparse samples (pure). A counter that
/// goes down (the service restarted) starts the window again.
#[derive(Debug, Clone, Default)]
pub struct RateWindow {
    samples: VecDeque<(i64, f64)>,
    latest: Option<(i64, f64)>,
}

impl RateWindow {
    pub fn push(&mut self, ts_ms: i64, value: f64) {
        if !value.is_finite() {
            return;
        }
        if let Some((lt, lv)) = self.latest {
            if ts_ms <= lt {
                return;
            }
            if value < lv {
                self.samples.clear();
            }
        }
        self.latest = Some((ts_ms, value));
        if self
            .samples
            .back()
            .is_none_or(|&(t, _)| ts_ms - t >= RATE_SAMPLE_MS)
        {
            self.samples.push_back((ts_ms, value));
        }
        while self
            .samples
            .front()
            .is_some_and(|&(t, _)| ts_ms - t > RATE_WINDOW_MS)
        {
            self.samples.pop_front();
        }
    }

    /// Rise per hour from the oldest kept sample to the latest; None over less than
    /// [`RATE_MIN_SPAN_MS`].
    pub fn per_hour(&self) -> Option<f64> {
        let (t0, v0) = *self.samples.front()?;
        let (t1, v1) = self.latest?;
        let span = t1 - t0;
        (span >= RATE_MIN_SPAN_MS).then(|| (v1 - v0) * 3_600_000.0 / span as f64)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceSummary {
    pub id: DeviceId,
    pub status: Presence,
    pub status_reason: String,
    pub site: Option<String>,
    pub tags: Vec<String>,
    pub last_seen_ms: i64,
    /// Several instances: the other instance that holds its session (its state here is read
    /// from the store, about a second behind); absent: served by the instance that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub served_by: Option<String>,
    pub agent_version: Option<String>,
    pub board: Option<String>,
    pub jetpack: Option<String>,
    pub vision_model_version: Option<String>,
    pub simulated: bool,
    /// Latest flat metrics (`memory.total_bytes`, `cpu.usage_pct`, ...).
    pub metrics: BTreeMap<String, f64>,
    pub health: Option<HealthStatus>,
    /// Rise of `app.items_recognised` per hour over the last minutes (None: not known yet).
    pub items_per_hour: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceDetail {
    #[serde(flatten)]
    pub summary: DeviceSummary,
    pub birth: Option<Birth>,
    pub telemetry: Option<Telemetry>,
    pub telemetry_ts_ms: Option<i64>,
    pub health_report: Option<HealthReport>,
    pub recent_events: Vec<EventRow>,
    pub delivery: Delivery,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    pub seq: u64,
    pub ts_ms: i64,
    #[serde(flatten)]
    pub event: Event,
}

#[derive(Debug, Default)]
pub struct FleetState {
    pub devices: BTreeMap<DeviceId, DeviceEntry>,
    pub policy: PresencePolicy,
}

impl FleetState {
    pub fn new(policy: PresencePolicy) -> Self {
        FleetState {
            devices: BTreeMap::new(),
            policy,
        }
    }

    fn entry(&mut self, id: &DeviceId, now_ms: i64) -> &mut DeviceEntry {
        self.devices.entry(id.clone()).or_insert_with(|| DeviceEntry {
            first_seen_ms: now_ms,
            ..Default::default()
        })
    }

    /// Records reach here deduplicated by the ingest writer.
    fn seen(&mut self, id: &DeviceId, now_ms: i64) -> &mut DeviceEntry {
        let e = self.entry(id, now_ms);
        e.last_seen_ms = e.last_seen_ms.max(now_ms);
        e.served_by = None;
        e
    }

    /// The latest record also keeps the machine's last process scan: an agent sends the
    /// table's counts and top lists only in the record of the scan that made them (every
    /// 10 s), so a record between scans takes them from the one it replaces. The Processes
    /// tab, the overview's process columns and the `proc.count`/`proc.zombies` inputs of the
    /// rules stay filled; after a restart of the server they are empty until the next scan.
    pub fn apply_telemetry(&mut self, mut env: Envelope<Telemetry>, now_ms: i64) {
        let e = self.seen(&env.device.clone(), now_ms);
        // newer by seq (a clock that jumped back) or by time (a buffer that started over)
        if e.latest
            .as_ref()
            .is_none_or(|l| env.seq > l.seq || env.ts_ms >= l.ts_ms)
        {
            if let Some(last) = e.latest.as_mut() {
                env.body.detail.procs.take_scan_from(&mut last.body.detail.procs);
            }
            refresh_metrics(&mut e.metrics, &env.body);
            if let Some((_, v)) = e.metrics.iter().find(|(n, _)| n == ITEMS_COUNTER) {
                e.items.push(env.ts_ms, *v);
            }
            e.latest = Some(env);
        }
    }

    pub fn apply_health(&mut self, env: Envelope<HealthReport>, now_ms: i64) {
        self.seen(&env.device.clone(), now_ms).health = Some(env.body);
    }

    pub fn apply_event(&mut self, env: Envelope<Event>, now_ms: i64) {
        let e = self.seen(&env.device.clone(), now_ms);
        e.events.push_back((env.seq, env.ts_ms, env.body));
        while e.events.len() > RECENT_EVENTS {
            e.events.pop_front();
        }
    }

    /// Any other record: the device is alive.
    pub fn touch(&mut self, device: &DeviceId, now_ms: i64) {
        self.seen(device, now_ms);
    }

    /// Metadata from before a restart; the device counts as silent until it reports.
    pub fn restore(&mut self, device: DeviceId, birth: Birth) {
        let e = self.devices.entry(device).or_default();
        if e.birth.is_none() {
            e.birth = Some(birth);
        }
    }

    /// Every device's presence facts: what a restarted fleet actor starts from
    /// ([`FleetState::restore_seen`]).
    pub fn presence_facts(&self) -> BTreeMap<DeviceId, Seen> {
        self.devices
            .iter()
            .map(|(id, e)| (id.clone(), Seen::of(e)))
            .collect()
    }

    /// One device's presence facts (None for a device not known).
    pub fn seen_facts(&self, id: &DeviceId) -> Option<Seen> {
        self.devices.get(id).map(Seen::of)
    }

    /// Presence facts from before a restart of the fleet actor (not of the process: presence
    /// is not persisted, and after a process restart every device is silent until it
    /// reports). Newer facts already applied win.
    pub fn restore_seen(&mut self, device: DeviceId, seen: Seen) {
        let e = self.devices.entry(device).or_default();
        if e.last_seen_ms > seen.last_seen_ms {
            return;
        }
        e.first_seen_ms = seen.first_seen_ms;
        e.last_seen_ms = seen.last_seen_ms;
        e.offline_reason = seen.offline_reason;
        e.offline_since_ms = seen.offline_since_ms;
    }

    pub fn set_delivery(&mut self, device: DeviceId, d: Delivery) {
        self.devices.entry(device).or_default().delivery = d;
    }

    pub fn apply_state(&mut self, env: Envelope<DeviceState>, now_ms: i64) {
        let e = self.entry(&env.device, now_ms);
        match env.body {
            DeviceState::Online(birth) => {
                e.served_by = None;
                e.birth = Some(birth);
                e.offline_reason = None;
                e.offline_since_ms = None;
                e.last_seen_ms = e.last_seen_ms.max(now_ms);
            }
            DeviceState::Offline(will) => {
                // A will from an older boot must not mark a newer boot offline.
                let same_boot = e.birth.as_ref().is_none_or(|b| b.boot_id == will.boot_id);
                if same_boot {
                    e.offline_reason = Some(will.reason);
                    e.offline_since_ms = Some(now_ms);
                }
            }
        }
    }

    pub fn presence(&self, e: &DeviceEntry, now_ms: i64) -> (Presence, String) {
        if let Some(r) = &e.offline_reason {
            return (Presence::Offline, format!("offline: {r}"));
        }
        let silent = now_ms - e.last_seen_ms;
        if silent >= self.policy.offline_after_ms {
            return (Presence::Offline, format!("no data for {} s", silent / 1000));
        }
        if silent >= self.policy.stale_after_ms {
            return (Presence::Stale, format!("no data for {} s", silent / 1000));
        }
        match e.health.as_ref().map(|h| h.status) {
            Some(HealthStatus::Critical) | Some(HealthStatus::Warn) => {
                let worst = e
                    .health
                    .as_ref()
                    .and_then(|h| h.checks.iter().max_by_key(|c| c.status))
                    .map(|c| format!("{}: {}", c.name, c.message))
                    .unwrap_or_default();
                (Presence::Degraded, worst)
            }
            _ => (Presence::Online, "reporting".into()),
        }
    }

    pub fn summary(&self, id: &DeviceId, e: &DeviceEntry, now_ms: i64) -> DeviceSummary {
        let (status, status_reason) = self.presence(e, now_ms);
        let b = e.birth.as_ref();
        DeviceSummary {
            id: id.clone(),
            status,
            status_reason,
            site: b.and_then(|b| b.site.clone()),
            tags: b.map(|b| b.tags.clone()).unwrap_or_default(),
            last_seen_ms: e.last_seen_ms,
            served_by: e.served_by.clone(),
            agent_version: b.map(|b| b.agent_version.clone()),
            board: b.and_then(|b| b.board.clone()),
            jetpack: b.and_then(|b| b.jetpack.clone()),
            vision_model_version: b.and_then(|b| b.vision_model_version.clone()),
            simulated: b.is_some_and(|b| b.simulated),
            metrics: e.metrics.iter().cloned().collect(),
            health: e.health.as_ref().map(|h| h.status),
            items_per_hour: e.items.per_hour(),
        }
    }

    pub fn list(&self, now_ms: i64) -> Vec<DeviceSummary> {
        self.devices
            .iter()
            .map(|(id, e)| self.summary(id, e, now_ms))
            .collect()
    }

    pub fn detail(&self, id: &DeviceId, now_ms: i64) -> Option<DeviceDetail> {
        let e = self.devices.get(id)?;
        Some(DeviceDetail {
            summary: self.summary(id, e, now_ms),
            birth: e.birth.clone(),
            telemetry: e.latest.as_ref().map(|l| l.body.clone()),
            telemetry_ts_ms: e.latest.as_ref().map(|l| l.ts_ms),
            health_report: e.health.clone(),
            recent_events: e
                .events
                .iter()
                .rev()
                .map(|(seq, ts, ev)| EventRow {
                    seq: *seq,
                    ts_ms: *ts,
                    event: ev.clone(),
                })
                .collect(),
            delivery: e.delivery.clone(),
        })
    }
}

/// `metrics` set to `body`'s flat metrics, reusing its names: a machine reports the same
/// names in the same order record after record, so in the steady state this writes values
/// only, where building the list anew allocated every name (issue 25).
fn refresh_metrics(metrics: &mut Vec<(String, f64)>, body: &Telemetry) {
    let mut n = 0;
    body.visit_metrics(|name, v| {
        match metrics.get_mut(n) {
            Some((k, old)) => {
                if k != name {
                    k.clear();
                    k.push_str(name);
                }
                *old = v;
            }
            None => metrics.push((name.to_string(), v)),
        }
        n += 1;
    });
    metrics.truncate(n);
}

#[cfg(test)]
mod tests {
    use common::LastWill;

    use super::*;

    fn d() -> DeviceId {
        DeviceId::new("rvm1").unwrap()
    }

    fn tel(seq: u64, ts: i64) -> Envelope<Telemetry> {
        let mut t = Telemetry::default();
        t.memory.total_bytes = 8 << 30;
        Envelope::new(d(), seq, ts, t)
    }

    fn birth(boot: &str) -> Envelope<DeviceState> {
        Envelope::new(
            d(),
            0,
            0,
            DeviceState::Online(Birth {
                boot_id: boot.into(),
                site: Some("s1".into()),
                ..Default::default()
            }),
        )
    }

    #[test]
    fn telemetry_sets_the_latest_flat_metrics() {
        let mut f = FleetState::default();
        f.apply_telemetry(tel(1, 10), 10);
        let det = f.detail(&d(), 12).unwrap();
        assert_eq!(det.summary.metrics["memory.total_bytes"], (8u64 << 30) as f64);
    }

    #[test]
    fn metrics_refreshed_in_place_follow_a_change_of_names_and_count() {
        let mut m = Vec::new();
        let mut t = Telemetry {
            app: vec![
                common::Reading::new("rvm.accepted_total", 1.0),
                common::Reading::new("rvm.bin_fill_pct", 40.0),
            ],
            ..Default::default()
        };
        refresh_metrics(&mut m, &t);
        assert_eq!(m, t.flat_metrics());
        // a renamed metric, and one fewer
        t.app = vec![common::Reading::new("rvm.jams_total", 3.0)];
        refresh_metrics(&mut m, &t);
        assert_eq!(m, t.flat_metrics());
        // back to more than before
        t.app.push(common::Reading::new("rvm.door_open", 0.0));
        t.memory.swap_total_bytes = 1 << 30;
        refresh_metrics(&mut m, &t);
        assert_eq!(m, t.flat_metrics());
    }

    /// Records between process scans carry no counts nor top lists: the state keeps the last
    /// scan's, for the Processes tab, the overview and the rules' `proc.*` inputs.
    #[test]
    fn records_between_scans_keep_the_last_scanned_process_table() {
        use common::{ProcessInfo, ProcessTable};
        let info = |name: &str, fds: u32| ProcessInfo {
            name: name.into(),
            fds: Some(fds),
            ..Default::default()
        };
        let with = |seq: u64, procs: ProcessTable| {
            let mut e = tel(seq, seq as i64 * 1000);
            e.body.detail.procs = procs;
            e
        };
        let scan = |zombies: u32| ProcessTable {
            total: 90,
            threads: Some(300),
            zombies,
            scanned: true,
            top_cpu: vec![info("ffmpeg", 3)],
            top_mem: vec![info("vision", 40)],
            watched: vec![info("vision", 40)],
        };
        let between = |fds: u32| ProcessTable {
            watched: vec![info("vision", fds)],
            ..Default::default()
        };
        let mut f = FleetState::default();
        // before any scan reached this server: nothing is claimed
        f.apply_telemetry(with(1, between(39)), 1000);
        let m = &f.detail(&d(), 1000).unwrap().summary.metrics;
        assert!(!m.contains_key("proc.zombies") && m["proc.vision.fds"] == 39.0);
        f.apply_telemetry(with(2, scan(6)), 2000);
        for seq in 3..12 {
            f.apply_telemetry(with(seq, between(40 + seq as u32)), seq as i64 * 1000);
            let det = f.detail(&d(), seq as i64 * 1000).unwrap();
            let m = &det.summary.metrics;
            assert_eq!(m["proc.zombies"], 6.0, "record {seq}");
            assert_eq!(m["proc.count"], 90.0, "record {seq}");
            assert_eq!(m["proc.top_cpu.ffmpeg"], 0.0, "record {seq}");
            assert_eq!(m["proc.vision.fds"], 40.0 + seq as f64, "record {seq}: its own");
            let p = det.telemetry.unwrap().detail.procs;
            assert!(p.scanned && p.threads == Some(300), "record {seq}: {p:?}");
            assert_eq!(p.top_mem, vec![info("vision", 40)], "record {seq}");
            assert_eq!(p.watched, vec![info("vision", 40 + seq as u32)], "record {seq}");
        }
        // the next scan replaces it (the zombies were reaped: the rule's input falls)
        f.apply_telemetry(with(12, scan(0)), 12_000);
        f.apply_telemetry(with(13, between(41)), 13_000);
        assert_eq!(
            f.detail(&d(), 13_000).unwrap().summary.metrics["proc.zombies"],
            0.0
        );
        // an older record (a backlog) neither replaces nor consumes the kept scan
        f.apply_telemetry(with(4, between(1)), 14_000);
        f.apply_telemetry(with(14, between(42)), 14_000);
        let p = f.detail(&d(), 14_000).unwrap().telemetry.unwrap().detail.procs;
        assert_eq!((p.total, p.zombies, p.watched[0].fds), (90, 0, Some(42)));
    }

    #[test]
    fn a_backlog_does_not_replace_newer_latest_values() {
        let mut f = FleetState::default();
        f.apply_telemetry(tel(5, 500), 500);
        f.apply_telemetry(tel(2, 200), 600);
        assert_eq!(f.detail(&d(), 600).unwrap().telemetry_ts_ms, Some(500));
    }

    #[test]
    fn presence_follows_birth_will_and_silence() {
        let mut f = FleetState::new(PresencePolicy {
            stale_after_ms: 100,
            offline_after_ms: 1000,
        });
        f.apply_state(birth("b1"), 0);
        f.apply_telemetry(tel(1, 0), 0);
        let e = &f.devices[&d()];
        assert_eq!(f.presence(e, 50).0, Presence::Online);
        assert_eq!(f.presence(e, 150).0, Presence::Stale);
        assert_eq!(f.presence(e, 1500).0, Presence::Offline);
        f.apply_state(
            Envelope::new(
                d(),
                0,
                0,
                DeviceState::Offline(LastWill {
                    boot_id: "b1".into(),
                    reason: "connection lost".into(),
                }),
            ),
            60,
        );
        let e = &f.devices[&d()];
        assert_eq!(f.presence(e, 61).0, Presence::Offline);
    }

    #[test]
    fn a_will_from_an_older_boot_is_ignored() {
        let mut f = FleetState::default();
        f.apply_state(birth("new"), 0);
        f.apply_state(
            Envelope::new(
                d(),
                0,
                0,
                DeviceState::Offline(LastWill {
                    boot_id: "old".into(),
                    reason: "x".into(),
                }),
            ),
            1,
        );
        assert_eq!(f.presence(&f.devices[&d()], 2).0, Presence::Online);
    }

    #[test]
    fn items_per_hour_is_the_counter_rise_over_the_window_and_restarts_with_the_counter() {
        let mut w = RateWindow::default();
        w.push(0, 100.0);
        w.push(5_000, 105.0);
        assert_eq!(w.per_hour(), None, "under the minimum span");
        w.push(20_000, 120.0);
        assert_eq!(w.per_hour(), Some(20.0 * 180.0));
        // a counter reset starts again
        w.push(30_000, 3.0);
        assert_eq!(w.per_hour(), None);
        // old samples leave the window
        let mut w = RateWindow::default();
        for i in 0..=40 {
            w.push(i * 15_000, (i * 10) as f64);
        }
        assert_eq!(w.per_hour(), Some(10.0 * 240.0));
        assert!(w.samples.len() <= (RATE_WINDOW_MS / RATE_SAMPLE_MS) as usize + 1);
    }

    #[test]
    fn presence_restored_from_before_a_restart_keeps_a_device_online_or_offline() {
        let policy = PresencePolicy {
            stale_after_ms: 100,
            offline_after_ms: 1000,
        };
        let mut before = FleetState::new(policy);
        before.apply_state(birth("b1"), 0);
        before.apply_telemetry(tel(1, 500), 500);
        let other = DeviceId::new("rvm2").unwrap();
        before.apply_state(
            Envelope::new(
                other.clone(),
                0,
                0,
                DeviceState::Offline(LastWill {
                    boot_id: "b9".into(),
                    reason: "connection lost".into(),
                }),
            ),
            400,
        );
        let seen = before.presence_facts();

        let mut after = FleetState::new(policy);
        after.restore(d(), before.devices[&d()].birth.clone().unwrap());
        for (id, s) in seen {
            after.restore_seen(id, s);
        }
        assert_eq!(after.presence(&after.devices[&d()], 550).0, Presence::Online);
        let (p, reason) = after.presence(&after.devices[&other], 550);
        assert_eq!(
            (p, reason.as_str()),
            (Presence::Offline, "offline: connection lost")
        );
        // a record applied before the restore is newer and stays
        let mut raced = FleetState::new(policy);
        raced.apply_telemetry(tel(2, 900), 900);
        raced.restore_seen(d(), before.presence_facts()[&d()].clone());
        assert_eq!(raced.devices[&d()].last_seen_ms, 900);
    }

    #[test]
    fn a_restored_birth_gives_metadata_before_the_device_reports() {
        let mut f = FleetState::default();
        f.restore(
            d(),
            Birth {
                site: Some("s9".into()),
                ..Default::default()
            },
        );
        assert_eq!(f.list(0)[0].site.as_deref(), Some("s9"));
    }
}
