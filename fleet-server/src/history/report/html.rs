//! The report page: HTML with inline SVG charts, no scripts and no external assets (pure).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use common::{DeviceId, Severity};

use super::{
    AlertCounts, DeviceReport, FAIR_PCT, GOOD_PCT, MAX_BARS, ReportInput, WORST, alert_counts,
    fleet_availability, merge_points, rank_worst,
};
use crate::fleet::state::Presence;
use crate::history::export::rfc3339_ms;
use crate::history::rows::Point;

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
    use crate::history::minute::MINUTE_MS;
    use crate::history::report::{AlertRow, AvailabilityCounter};

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
}
