//! The HTML fleet report of `GET /api/v1/report?from=&to=` (viewer): availability per
//! machine, alerts, the worst machines and small inline SVG charts, in one self-contained page
//! (no scripts, no external assets; it prints and can be mailed). Pure: the route
//! ([`crate::http::report`]) reads the store and the alerts and calls [`render`].
//!
//! # Availability
//!
//! A machine is *up* in a minute when the server holds at least one telemetry record stamped
//! in that minute (by the record's own timestamp). The agent collects every second and keeps
//! what it could not send on disk, so a machine that ran but lost its network for an hour
//! still counts as up once its backlog arrived: this measures whether the machine ran and
//! collected, not whether it was reachable (presence and the `device_offline` alert speak for
//! that). Minutes are read from the 1-minute rollups, and from raw rows for the last few
//! minutes the rollup job may not have reached yet.
//!
//! Availability = up minutes / observed minutes, where observed minutes run from the start of
//! the window, or from the machine's first record if it came later (a machine installed
//! mid-window is not blamed for the time before), to the end of the window or now; the current,
//! unfinished minute counts only if it already has data. A machine with no record at all
//! before the window's end has no availability ("no data").

use std::collections::BTreeMap;
use std::fmt::Write as _;

use common::{DeviceId, Severity};

use crate::export::rfc3339_ms;
use crate::fleet::Presence;
use crate::history::{MINUTE_MS, Point};

/// Points per time-series chart, about.
pub const CHART_POINTS: i64 = 60;
/// Smallest chart step.
pub const MIN_CHART_STEP_MS: i64 = 1_000;
/// Machines in the "worst machines" table.
pub const WORST: usize = 10;
/// Machines in the availability bar chart, at most (the worst first).
pub const MAX_BARS: usize = 30;
/// Availability at or above this is green.
pub const GOOD_PCT: f64 = 99.0;
/// ...at or above this amber, below it red.
pub const FAIR_PCT: f64 = 95.0;

/// Counts up and observed minutes of one machine, fed the minutes with data in ascending
/// order (duplicates are ignored); nothing is kept per minute.
#[derive(Debug, Clone)]
pub struct AvailabilityCounter {
    start: i64,
    end: i64,
    up: u64,
    last: Option<i64>,
    longest_gap: i64,
}

/// The result of an [`AvailabilityCounter`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Availability {
    pub observed_minutes: u64,
    pub up_minutes: u64,
    /// None when nothing was observed (no data).
    pub pct: Option<f64>,
    /// Longest run of minutes without data.
    pub longest_gap_minutes: u64,
}

impl Availability {
    pub fn down_minutes(&self) -> u64 {
        self.observed_minutes.saturating_sub(self.up_minutes)
    }
}

impl AvailabilityCounter {
    /// The window `[from_ms, to_ms)` at `now_ms`, for a machine whose first record (ever, within
    /// retention) is in `first_minute`.
    pub fn new(from_ms: i64, to_ms: i64, now_ms: i64, first_minute: Option<i64>) -> Self {
        let end = to_ms.min(now_ms);
        let start = match first_minute {
            Some(f) => crate::history::minute_of(from_ms).max(f),
            None => end, // nothing observed
        };
        AvailabilityCounter {
            start,
            end,
            up: 0,
            last: None,
            longest_gap: 0,
        }
    }

    /// A minute (its start) with at least one record.
    pub fn observe(&mut self, minute_ms: i64) {
        if minute_ms < self.start || minute_ms >= self.end {
            return;
        }
        if self.last.is_some_and(|l| minute_ms <= l) {
            return;
        }
        let prev = self.last.unwrap_or(self.start - MINUTE_MS);
        self.longest_gap = self.longest_gap.max((minute_ms - prev) / MINUTE_MS - 1);
        self.last = Some(minute_ms);
        self.up += 1;
    }

    pub fn finish(&self) -> Availability {
        if self.start >= self.end {
            return Availability {
                observed_minutes: 0,
                up_minutes: 0,
                pct: None,
                longest_gap_minutes: 0,
            };
        }
        // whole minutes, plus the unfinished last one when it has data
        let complete = (self.end - self.start) / MINUTE_MS;
        let partial_start = self.start + complete * MINUTE_MS;
        let partial_up = partial_start < self.end && self.last.is_some_and(|l| l >= partial_start);
        let observed = complete as u64 + u64::from(partial_up);
        // the gap after the last minute with data, up to the last complete minute
        let prev = self.last.unwrap_or(self.start - MINUTE_MS);
        let tail = (partial_start - prev) / MINUTE_MS - 1;
        let longest = self.longest_gap.max(tail).max(0) as u64;
        Availability {
            observed_minutes: observed,
            up_minutes: self.up.min(observed),
            pct: (observed > 0).then(|| self.up.min(observed) as f64 * 100.0 / observed as f64),
            longest_gap_minutes: longest,
        }
    }
}

/// Step of the time-series charts for a window.
pub fn chart_step_ms(from_ms: i64, to_ms: i64) -> i64 {
    let range = (to_ms - from_ms).max(1);
    ((range + CHART_POINTS - 1) / CHART_POINTS).max(MIN_CHART_STEP_MS)
}

/// One machine in the report.
#[derive(Debug, Clone)]
pub struct DeviceReport {
    pub id: DeviceId,
    pub site: Option<String>,
    pub status: Presence,
    pub availability: Availability,
    /// CPU % per chart step: `[ts, min, max, avg]`.
    pub cpu: Vec<Point>,
    /// GPU temperature per chart step (or the hottest sensor when the GPU has none).
    pub temp: Vec<Point>,
}

/// An alert that fired in (or was firing during) the window.
#[derive(Debug, Clone)]
pub struct AlertRow {
    pub device: DeviceId,
    pub rule: String,
    pub severity: Severity,
    pub fired_ms: i64,
    pub resolved_ms: Option<i64>,
}

impl AlertRow {
    /// Firing at some point in `[from_ms, to_ms)`.
    pub fn overlaps(&self, from_ms: i64, to_ms: i64) -> bool {
        self.fired_ms < to_ms && self.resolved_ms.is_none_or(|r| r >= from_ms)
    }
}

/// Everything [`render`] needs.
#[derive(Debug, Clone)]
pub struct ReportInput {
    pub from_ms: i64,
    pub to_ms: i64,
    pub now_ms: i64,
    pub devices: Vec<DeviceReport>,
    /// Already limited to the window ([`AlertRow::overlaps`]).
    pub alerts: Vec<AlertRow>,
    /// Resolved alerts the server still remembers (the report cannot see older ones).
    pub alert_history_note: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlertCounts {
    pub critical: u64,
    pub warning: u64,
    pub info: u64,
}

impl AlertCounts {
    pub fn total(&self) -> u64 {
        self.critical + self.warning + self.info
    }

    fn add(&mut self, s: Severity) {
        match s {
            Severity::Critical => self.critical += 1,
            Severity::Warning => self.warning += 1,
            Severity::Info => self.info += 1,
        }
    }
}

/// Alerts per device.
pub fn alert_counts(alerts: &[AlertRow]) -> BTreeMap<DeviceId, AlertCounts> {
    let mut m: BTreeMap<DeviceId, AlertCounts> = BTreeMap::new();
    for a in alerts {
        m.entry(a.device.clone()).or_default().add(a.severity);
    }
    m
}

/// Machines worst first: lowest availability (no data last), then most critical alerts, then
/// most alerts, then id.
pub fn rank_worst<'a>(
    devices: &'a [DeviceReport],
    counts: &BTreeMap<DeviceId, AlertCounts>,
) -> Vec<&'a DeviceReport> {
    let mut v: Vec<&DeviceReport> = devices.iter().collect();
    let c = |d: &DeviceReport| counts.get(&d.id).copied().unwrap_or_default();
    v.sort_by(|a, b| {
        let pa = a.availability.pct.unwrap_or(f64::INFINITY);
        let pb = b.availability.pct.unwrap_or(f64::INFINITY);
        pa.total_cmp(&pb)
            .then(c(b).critical.cmp(&c(a).critical))
            .then(c(b).total().cmp(&c(a).total()))
            .then(a.id.cmp(&b.id))
    });
    v
}

/// Fleet availability: all up minutes over all observed minutes.
pub fn fleet_availability(devices: &[DeviceReport]) -> Option<f64> {
    let (up, obs) = devices.iter().fold((0u64, 0u64), |(u, o), d| {
        (u + d.availability.up_minutes, o + d.availability.observed_minutes)
    });
    (obs > 0).then(|| up as f64 * 100.0 / obs as f64)
}

/// Merges per-device points of the same steps: average of the averages (CPU) or the maximum
/// (temperature).
pub fn merge_points(series: &[&[Point]], max: bool) -> Vec<(i64, f64)> {
    let mut m: BTreeMap<i64, (f64, u32)> = BTreeMap::new();
    for s in series {
        for &(ts, _, hi, avg) in s.iter() {
            let e = m.entry(ts).or_insert((if max { f64::MIN } else { 0.0 }, 0));
            if max {
                e.0 = e.0.max(hi);
            } else {
                e.0 += avg;
            }
            e.1 += 1;
        }
    }
    m.into_iter()
        .map(|(ts, (v, n))| (ts, if max { v } else { v / f64::from(n.max(1)) }))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// HTML

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn pct_text(p: Option<f64>) -> String {
    match p {
        Some(p) if p >= 99.995 => "100%".into(),
        Some(p) => format!("{p:.2}%"),
        None => "no data".into(),
    }
}

fn pct_class(p: Option<f64>) -> &'static str {
    match p {
        Some(p) if p >= GOOD_PCT => "good",
        Some(p) if p >= FAIR_PCT => "fair",
        Some(_) => "bad",
        None => "none",
    }
}

fn pct_color(p: Option<f64>) -> &'static str {
    match pct_class(p) {
        "good" => "#2e7d32",
        "fair" => "#ef8f00",
        "bad" => "#c62828",
        _ => "#9e9e9e",
    }
}

fn status_text(s: Presence) -> &'static str {
    match s {
        Presence::Online => "online",
        Presence::Degraded => "degraded",
        Presence::Stale => "stale",
        Presence::Offline => "offline",
    }
}

fn minutes_text(m: u64) -> String {
    if m >= 60 * 24 {
        format!("{}d {}h", m / (60 * 24), (m / 60) % 24)
    } else if m >= 60 {
        format!("{}h {}m", m / 60, m % 60)
    } else {
        format!("{m}m")
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
fn human_time(ts_ms: i64) -> String {
    let t = rfc3339_ms(ts_ms);
    format!(
        "{} {} UTC",
        t.get(..10).unwrap_or(""),
        t.get(11..19).unwrap_or("")
    )
}

/// Short UTC time for chart axes: `MM-DD HH:MM`, or `HH:MM:SS` for a window under 2 hours.
fn axis_time(ts_ms: i64, span_ms: i64) -> String {
    let t = rfc3339_ms(ts_ms);
    if span_ms < 2 * 3_600_000 {
        t.get(11..19).unwrap_or("").to_string()
    } else {
        format!("{} {}", t.get(5..10).unwrap_or(""), t.get(11..16).unwrap_or(""))
    }
}

/// Horizontal availability bars, worst first.
pub fn svg_availability_bars(devices: &[&DeviceReport]) -> String {
    let rows: Vec<&&DeviceReport> = devices.iter().take(MAX_BARS).collect();
    let (label_w, bar_w, row_h) = (150.0, 420.0, 18.0);
    let h = rows.len() as f64 * row_h + 24.0;
    let w = label_w + bar_w + 70.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" role=\"img\" aria-label=\"availability per machine\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">"
    );
    for (i, x) in [0.0, 50.0, 90.0, 100.0].iter().enumerate() {
        let gx = label_w + bar_w * x / 100.0;
        let _ = write!(
            s,
            "<line x1=\"{gx}\" y1=\"0\" x2=\"{gx}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{gx}\" y=\"{}\" font-size=\"10\" text-anchor=\"{}\" fill=\"#666\">{x}%</text>",
            h - 14.0,
            h - 2.0,
            if i == 0 { "start" } else { "middle" }
        );
    }
    for (i, d) in rows.iter().enumerate() {
        let y = i as f64 * row_h;
        let p = d.availability.pct;
        let bw = bar_w * p.unwrap_or(0.0) / 100.0;
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{}</text><rect x=\"{label_w}\" y=\"{}\" width=\"{bw:.1}\" height=\"{}\" fill=\"{}\"><title>{}: {}</title></rect><text x=\"{}\" y=\"{}\" font-size=\"11\">{}</text>",
            label_w - 6.0,
            y + 13.0,
            esc(d.id.as_str()),
            y + 3.0,
            row_h - 6.0,
            pct_color(p),
            esc(d.id.as_str()),
            pct_text(p),
            label_w + bw + 4.0,
            y + 13.0,
            pct_text(p)
        );
    }
    s.push_str("</svg>");
    s
}

/// A line chart of one series over the window, `y` from 0 to `y_max` (at least the data's).
pub fn svg_line_chart(
    title: &str,
    unit: &str,
    points: &[(i64, f64)],
    from_ms: i64,
    to_ms: i64,
    y_max: f64,
) -> String {
    let (w, h, left, right, top, bottom) = (560.0, 170.0, 40.0, 10.0, 10.0, 22.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let data_max = points.iter().map(|p| p.1).fold(0.0f64, f64::max);
    let y_max = if data_max > y_max {
        (data_max / 10.0).ceil() * 10.0
    } else {
        y_max
    };
    let y_max = y_max.max(1.0);
    let span = (to_ms - from_ms).max(1) as f64;
    let x = |ts: i64| left + pw * ((ts - from_ms) as f64 / span).clamp(0.0, 1.0);
    let y = |v: f64| top + ph * (1.0 - (v / y_max).clamp(0.0, 1.0));
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" role=\"img\" aria-label=\"{}\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">",
        esc(title)
    );
    for frac in [0.0, 0.5, 1.0] {
        let v = y_max * frac;
        let gy = y(v);
        let _ = write!(
            s,
            "<line x1=\"{left}\" y1=\"{gy:.1}\" x2=\"{}\" y2=\"{gy:.1}\" stroke=\"#e0e0e0\"/><text x=\"{}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\" fill=\"#666\">{v:.0}{}</text>",
            w - right,
            left - 4.0,
            gy + 3.0,
            esc(unit)
        );
    }
    let _ = write!(
        s,
        "<text x=\"{left}\" y=\"{}\" font-size=\"10\" fill=\"#666\">{}</text><text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\" fill=\"#666\">{}</text>",
        h - 6.0,
        axis_time(from_ms, to_ms - from_ms),
        w - right,
        h - 6.0,
        axis_time(to_ms, to_ms - from_ms)
    );
    if points.is_empty() {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\" fill=\"#999\">no data in this window</text>",
            left + pw / 2.0,
            top + ph / 2.0
        );
    } else if points.len() == 1 {
        let _ = write!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#1565c0\"/>",
            x(points[0].0),
            y(points[0].1)
        );
    } else {
        let pts: Vec<String> = points
            .iter()
            .map(|(t, v)| format!("{:.1},{:.1}", x(*t), y(*v)))
            .collect();
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"#1565c0\" stroke-width=\"1.8\" points=\"{}\"/>",
            pts.join(" ")
        );
    }
    s.push_str("</svg>");
    s
}

/// A small sparkline of averages (0..100).
pub fn svg_sparkline(points: &[Point], from_ms: i64, to_ms: i64) -> String {
    let (w, h) = (120.0, 22.0);
    let span = (to_ms - from_ms).max(1) as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"spark\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\"><rect width=\"{w}\" height=\"{h}\" fill=\"#f5f7fa\"/>"
    );
    let pts: Vec<String> = points
        .iter()
        .map(|&(t, _, _, v)| {
            format!(
                "{:.1},{:.1}",
                w * ((t - from_ms) as f64 / span).clamp(0.0, 1.0),
                h - 1.0 - (h - 2.0) * (v / 100.0).clamp(0.0, 1.0)
            )
        })
        .collect();
    if pts.len() >= 2 {
        let _ = write!(
            s,
            "<polyline fill=\"none\" stroke=\"#1565c0\" stroke-width=\"1.2\" points=\"{}\"/>",
            pts.join(" ")
        );
    } else if let Some(p) = pts.first() {
        let (cx, cy) = p.split_once(',').unwrap_or(("0", "0"));
        let _ = write!(s, "<circle cx=\"{cx}\" cy=\"{cy}\" r=\"2\" fill=\"#1565c0\"/>");
    }
    s.push_str("</svg>");
    s
}

const STYLE: &str = "body{font-family:-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:24px;color:#1f2933;background:#fff}\
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #e4e7eb;padding-bottom:4px}\
.meta{color:#52606d;font-size:13px}.cards{display:flex;gap:12px;flex-wrap:wrap;margin-top:16px}\
.card{border:1px solid #e4e7eb;border-radius:6px;padding:10px 14px;min-width:120px}.card .v{font-size:22px;font-weight:600}\
.card .l{font-size:12px;color:#52606d}.charts{display:flex;gap:20px;flex-wrap:wrap}\
table{border-collapse:collapse;font-size:13px;margin-top:6px}th,td{padding:4px 10px;border-bottom:1px solid #eef0f2;text-align:left;vertical-align:middle}\
th{background:#f5f7fa;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.good{color:#2e7d32}.fair{color:#ef8f00}.bad{color:#c62828;font-weight:600}.none{color:#9e9e9e}\
.st-online{color:#2e7d32}.st-degraded{color:#ef8f00}.st-stale{color:#ef8f00}.st-offline{color:#c62828}\
.note{font-size:12px;color:#52606d;max-width:900px}@media print{body{margin:8mm}}";

/// The whole report page.
pub fn render(input: &ReportInput) -> String {
    let counts = alert_counts(&input.alerts);
    let worst = rank_worst(&input.devices, &counts);
    let mut fleet_alerts = AlertCounts::default();
    for a in &input.alerts {
        fleet_alerts.add(a.severity);
    }
    let online = input
        .devices
        .iter()
        .filter(|d| matches!(d.status, Presence::Online | Presence::Degraded))
        .count();
    let fleet = fleet_availability(&input.devices);
    let mut sites: Vec<&str> = input.devices.iter().filter_map(|d| d.site.as_deref()).collect();
    sites.sort_unstable();
    sites.dedup();

    let mut h = String::with_capacity(32 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>RVM Fleet report {} to {}</title><style>{STYLE}</style></head><body>",
        esc(&rfc3339_ms(input.from_ms)),
        esc(&rfc3339_ms(input.to_ms))
    );
    let _ = write!(
        h,
        "<h1>RVM Fleet report</h1><div class=\"meta\">{} &ndash; {} &middot; generated {} by fleet-server {}</div>",
        esc(&human_time(input.from_ms)),
        esc(&human_time(input.to_ms)),
        esc(&human_time(input.now_ms)),
        env!("CARGO_PKG_VERSION")
    );
    let card = |h: &mut String, v: &str, l: &str, class: &str| {
        let _ = write!(
            h,
            "<div class=\"card\"><div class=\"v {class}\">{}</div><div class=\"l\">{}</div></div>",
            esc(v),
            esc(l)
        );
    };
    h.push_str("<div class=\"cards\">");
    card(&mut h, &input.devices.len().to_string(), "machines", "");
    card(&mut h, &sites.len().to_string(), "sites", "");
    card(&mut h, &format!("{online}"), "online now", "");
    card(&mut h, &pct_text(fleet), "fleet availability", pct_class(fleet));
    card(
        &mut h,
        &fleet_alerts.critical.to_string(),
        "critical alerts",
        if fleet_alerts.critical > 0 { "bad" } else { "" },
    );
    card(&mut h, &fleet_alerts.warning.to_string(), "warning alerts", "");
    h.push_str("</div>");

    // charts
    let cpu: Vec<&[Point]> = input.devices.iter().map(|d| d.cpu.as_slice()).collect();
    let temp: Vec<&[Point]> = input.devices.iter().map(|d| d.temp.as_slice()).collect();
    h.push_str("<h2>Availability per machine (worst first)</h2>");
    if input.devices.is_empty() {
        h.push_str("<p class=\"none\">The server knows no machines.</p>");
    } else {
        h.push_str(&svg_availability_bars(&worst));
        if worst.len() > MAX_BARS {
            let _ = write!(
                h,
                "<div class=\"note\">The {MAX_BARS} worst of {} machines; all are in the table below.</div>",
                worst.len()
            );
        }
    }
    h.push_str(
        "<h2>Fleet over time</h2><div class=\"charts\"><div><div class=\"meta\">Average CPU use, %</div>",
    );
    h.push_str(&svg_line_chart(
        "average CPU use",
        "%",
        &merge_points(&cpu, false),
        input.from_ms,
        input.to_ms,
        100.0,
    ));
    h.push_str("</div><div><div class=\"meta\">Hottest GPU, &deg;C</div>");
    h.push_str(&svg_line_chart(
        "hottest GPU temperature",
        "\u{b0}",
        &merge_points(&temp, true),
        input.from_ms,
        input.to_ms,
        100.0,
    ));
    h.push_str("</div></div>");

    // worst machines
    let _ = write!(
        h,
        "<h2>Worst machines</h2><table><tr><th>machine</th><th>site</th><th>now</th><th>availability</th><th>down</th><th>longest gap</th><th>critical</th><th>warning</th><th>CPU %</th></tr>"
    );
    for d in worst.iter().take(WORST) {
        device_row(&mut h, d, &counts, input);
    }
    h.push_str("</table>");

    // alerts by rule
    let mut by_rule: BTreeMap<(&str, Severity), (u64, Vec<&str>)> = BTreeMap::new();
    for a in &input.alerts {
        let e = by_rule.entry((a.rule.as_str(), a.severity)).or_default();
        e.0 += 1;
        if !e.1.contains(&a.device.as_str()) {
            e.1.push(a.device.as_str());
        }
    }
    h.push_str("<h2>Alerts in the window</h2>");
    if by_rule.is_empty() {
        h.push_str("<p class=\"none\">No alert fired in this window.</p>");
    } else {
        h.push_str("<table><tr><th>rule</th><th>severity</th><th>alerts</th><th>machines</th></tr>");
        let mut rows: Vec<_> = by_rule.into_iter().collect();
        rows.sort_by(|a, b| b.0.1.cmp(&a.0.1).then(b.1.0.cmp(&a.1.0)).then(a.0.0.cmp(b.0.0)));
        for ((rule, sev), (n, devs)) in rows {
            let shown: Vec<String> = devs.iter().take(8).map(|d| esc(d)).collect();
            let more = if devs.len() > 8 {
                format!(" and {} more", devs.len() - 8)
            } else {
                String::new()
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"{}\">{}</td><td class=\"n\">{n}</td><td>{}{more}</td></tr>",
                esc(rule),
                if sev == Severity::Critical { "bad" } else { "" },
                severity_text(sev),
                shown.join(", ")
            );
        }
        h.push_str("</table>");
    }
    if let Some(n) = &input.alert_history_note {
        let _ = write!(h, "<div class=\"note\">{}</div>", esc(n));
    }

    // all machines
    h.push_str("<h2>All machines</h2><table><tr><th>machine</th><th>site</th><th>now</th><th>availability</th><th>down</th><th>longest gap</th><th>critical</th><th>warning</th><th>CPU %</th></tr>");
    let mut all: Vec<&DeviceReport> = input.devices.iter().collect();
    all.sort_by(|a, b| a.site.cmp(&b.site).then(a.id.cmp(&b.id)));
    for d in all {
        device_row(&mut h, d, &counts, input);
    }
    h.push_str("</table>");
    h.push_str(
        "<h2>How availability is computed</h2><p class=\"note\">A machine is up in a minute when \
         the server holds at least one telemetry record stamped in that minute by the machine's \
         own clock. Records a machine buffered while its network was down count once they \
         arrive, so this is whether the machine ran and collected, not whether it was reachable. \
         Minutes are counted from the start of the window, or from the machine's first record if \
         it came later, to the end of the window or now; the unfinished current minute counts \
         only when it already has data. Alerts are those that fired or were firing in the window, \
         as far as the server still remembers resolved alerts.</p>",
    );
    h.push_str("</body></html>\n");
    h
}

fn severity_text(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "critical",
        Severity::Warning => "warning",
        Severity::Info => "info",
    }
}

fn device_row(
    h: &mut String,
    d: &DeviceReport,
    counts: &BTreeMap<DeviceId, AlertCounts>,
    input: &ReportInput,
) {
    let c = counts.get(&d.id).copied().unwrap_or_default();
    let a = d.availability;
    let _ = write!(
        h,
        "<tr><td>{}</td><td>{}</td><td class=\"st-{st}\">{st}</td><td class=\"n {}\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n{}\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
        esc(d.id.as_str()),
        esc(d.site.as_deref().unwrap_or("-")),
        pct_class(a.pct),
        pct_text(a.pct),
        if a.pct.is_some() {
            minutes_text(a.down_minutes())
        } else {
            "-".into()
        },
        if a.pct.is_some() {
            minutes_text(a.longest_gap_minutes)
        } else {
            "-".into()
        },
        if c.critical > 0 { " bad" } else { "" },
        c.critical,
        c.warning,
        svg_sparkline(&d.cpu, input.from_ms, input.to_ms),
        st = status_text(d.status),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = MINUTE_MS;
    const T0: i64 = 1_700_000_040_000; // a minute boundary

    fn build_device(
        id: &str,
        pct_up: &[i64],
        first: Option<i64>,
        from: i64,
        to: i64,
        now: i64,
    ) -> DeviceReport {
        let mut c = AvailabilityCounter::new(from, to, now, first);
        for m in pct_up {
            c.observe(*m);
        }
        DeviceReport {
            id: DeviceId::new(id).unwrap(),
            site: Some("s1".into()),
            status: Presence::Online,
            availability: c.finish(),
            cpu: vec![(from, 1.0, 30.0, 20.0), (from + 10 * M, 1.0, 90.0, 40.0)],
            temp: vec![(from, 40.0, 55.0, 50.0)],
        }
    }

    #[test]
    fn availability_counts_minutes_with_data_from_the_first_record() {
        assert_eq!(T0 % M, 0);
        // 10 minutes window, data in 8 of them, minutes 3 and 4 missing
        let minutes: Vec<i64> = (0..10)
            .filter(|i| *i != 3 && *i != 4)
            .map(|i| T0 + i * M)
            .collect();
        let mut c = AvailabilityCounter::new(T0, T0 + 10 * M, T0 + 60 * M, Some(T0 - 100 * M));
        for m in &minutes {
            c.observe(*m);
            c.observe(*m); // duplicates are ignored
        }
        let a = c.finish();
        assert_eq!(
            (a.observed_minutes, a.up_minutes, a.longest_gap_minutes),
            (10, 8, 2)
        );
        assert_eq!(a.pct, Some(80.0));
        assert_eq!(a.down_minutes(), 2);

        // installed mid-window: counted from its first minute
        let mut c = AvailabilityCounter::new(T0, T0 + 10 * M, T0 + 60 * M, Some(T0 + 5 * M));
        for i in 5..10 {
            c.observe(T0 + i * M);
        }
        assert_eq!(c.finish().pct, Some(100.0));

        // no data at all
        let c = AvailabilityCounter::new(T0, T0 + 10 * M, T0 + 60 * M, None);
        assert_eq!(c.finish().pct, None);
    }

    #[test]
    fn the_unfinished_minute_counts_only_with_data_and_a_silent_tail_is_a_gap() {
        let now = T0 + 2 * M + 30_000;
        let mut c = AvailabilityCounter::new(T0, T0 + 60 * M, now, Some(T0));
        c.observe(T0);
        c.observe(T0 + M);
        let a = c.finish();
        assert_eq!((a.observed_minutes, a.up_minutes), (2, 2));
        c.observe(T0 + 2 * M);
        assert_eq!(c.finish().observed_minutes, 3);
        assert_eq!(c.finish().pct, Some(100.0));
        // silent for the last 5 complete minutes
        let mut c = AvailabilityCounter::new(T0, T0 + 10 * M, T0 + 10 * M, Some(T0));
        for i in 0..5 {
            c.observe(T0 + i * M);
        }
        let a = c.finish();
        assert_eq!(
            (a.up_minutes, a.observed_minutes, a.longest_gap_minutes),
            (5, 10, 5)
        );
    }

    #[test]
    fn the_worst_machines_come_first_and_no_data_last() {
        let (from, to) = (T0, T0 + 10 * M);
        let all: Vec<i64> = (0..10).map(|i| T0 + i * M).collect();
        let devices = vec![
            build_device("good", &all, Some(T0), from, to, to),
            build_device("nodata", &[], None, from, to, to),
            build_device("half", &all[..5], Some(T0), from, to, to),
            build_device("alerty", &all, Some(T0), from, to, to),
        ];
        let alerts = vec![AlertRow {
            device: DeviceId::new("alerty").unwrap(),
            rule: "gpu_hot".into(),
            severity: Severity::Critical,
            fired_ms: T0,
            resolved_ms: None,
        }];
        let counts = alert_counts(&alerts);
        let order: Vec<&str> = rank_worst(&devices, &counts)
            .iter()
            .map(|d| d.id.as_str())
            .collect();
        assert_eq!(order, ["half", "alerty", "good", "nodata"]);
        assert_eq!(
            fleet_availability(&devices).map(|p| (p * 100.0).round() / 100.0),
            Some(83.33)
        );
    }

    #[test]
    fn alerts_overlap_the_window_when_they_were_firing_in_it() {
        let a = |fired, resolved| AlertRow {
            device: DeviceId::new("d").unwrap(),
            rule: "r".into(),
            severity: Severity::Warning,
            fired_ms: fired,
            resolved_ms: resolved,
        };
        assert!(a(5, None).overlaps(0, 10));
        assert!(a(-5, Some(3)).overlaps(0, 10));
        assert!(!a(-5, Some(-1)).overlaps(0, 10));
        assert!(!a(10, None).overlaps(0, 10));
    }

    #[test]
    fn the_page_is_self_contained_escaped_and_has_its_charts() {
        let (from, to) = (T0, T0 + 10 * M);
        let all: Vec<i64> = (0..10).map(|i| T0 + i * M).collect();
        let mut d = build_device("rvm1", &all[..9], Some(T0), from, to, to);
        d.site = Some("<b>store</b>".into());
        let html = render(&ReportInput {
            from_ms: from,
            to_ms: to,
            now_ms: to,
            devices: vec![d],
            alerts: vec![AlertRow {
                device: DeviceId::new("rvm1").unwrap(),
                rule: "cpu<hot>".into(),
                severity: Severity::Critical,
                fired_ms: T0,
                resolved_ms: Some(T0 + M),
            }],
            alert_history_note: None,
        });
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("&lt;b&gt;store&lt;/b&gt;") && !html.contains("<b>store"));
        assert!(html.contains("cpu&lt;hot&gt;"));
        assert!(html.contains("90.00%"));
        assert_eq!(
            html.matches("<svg").count(),
            1 + 2 + 2,
            "bars, two line charts, two sparklines"
        );
        assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("href="));
    }

    #[test]
    fn merged_points_average_cpu_and_take_the_hottest_temperature() {
        let a: Vec<Point> = vec![(0, 0.0, 10.0, 10.0), (60, 0.0, 50.0, 30.0)];
        let b: Vec<Point> = vec![(0, 0.0, 70.0, 20.0)];
        assert_eq!(merge_points(&[&a, &b], false), vec![(0, 15.0), (60, 30.0)]);
        assert_eq!(merge_points(&[&a, &b], true), vec![(0, 70.0), (60, 50.0)]);
        assert_eq!(chart_step_ms(0, 600_000), 10_000);
        assert_eq!(chart_step_ms(0, 30_000), 1_000);
        assert_eq!(chart_step_ms(0, 7 * 24 * 3_600_000), 10_080_000);
    }
}
