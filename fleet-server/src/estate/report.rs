//! An availability report per machine, store and retailer over a period, and the worst state
//! of a store (pure: the route reads the estate, the machines, the alerts and the maintenance
//! windows; this module turns them into intervals, [`super::availability`] into figures),
//! and its CSV and HTML forms. The PDF form is [`super::pdf`].
//!
//! # Where "could not serve" comes from
//! The alerts the server raised for the machine, from the first breaching sample
//! (`started_ms`) to the resolution (or now), counting only alerts that fired (a pending
//! alert that cleared before its `for` is a blip, not an outage):
//! - `device_offline`: **offline**;
//! - `service_down`, and any health-check alert (`check.*`) whose name mentions `vision`:
//!   **not accepting containers**;
//! - any other health-check alert of severity critical: **unhealthy**.
//!
//! The server keeps the last [`crate::alerts::engine::HISTORY_CAP`] resolved alerts; older
//! ones are not counted (the report says so).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use common::{DeviceId, Severity};
use serde::Serialize;

use super::Estate;
use super::availability::{Figures, Intervals, MachineTimes, machine_figures, normalize};
use crate::alerts::alert::Alert;
use crate::alerts::checks::CHECK_RULE_PREFIX;
use crate::fleet::state::{DeviceSummary, Presence};
use crate::history::export::rfc3339_ms;
use crate::history::report::html::esc;
use crate::notify::maintenance::Window;

/// Maintenance windows are opened and closed on minute boundaries (`HH:MM` local times, and
/// every zone's offset is whole minutes), so sampling each minute finds them exactly.
const WINDOW_STEP_MS: i64 = 60_000;

/// A machine as the report needs it.
#[derive(Debug, Clone)]
pub struct Machine {
    pub id: DeviceId,
    pub site: Option<String>,
    pub tags: Vec<String>,
}

/// Why a machine could not serve, from one alert (module docs); None: the alert does not
/// count.
pub fn down_reason(a: &Alert) -> Option<&'static str> {
    a.fired_ms?;
    let check = a.rule.starts_with(CHECK_RULE_PREFIX);
    match a.rule.as_str() {
        "device_offline" => Some("offline"),
        "service_down" => Some("not accepting containers"),
        r if check && r.contains("vision") => Some("not accepting containers"),
        _ if check && a.severity == Severity::Critical => Some("unhealthy"),
        _ => None,
    }
}

/// Every counted alert's interval, per machine.
pub fn down_intervals(alerts: &[Alert], now_ms: i64) -> BTreeMap<DeviceId, Intervals> {
    let mut by: BTreeMap<DeviceId, Intervals> = BTreeMap::new();
    for a in alerts.iter().filter(|a| down_reason(a).is_some()) {
        by.entry(a.device.clone())
            .or_default()
            .push((a.started_ms, a.resolved_ms.unwrap_or(now_ms)));
    }
    by.into_iter().map(|(k, v)| (k, normalize(v))).collect()
}

/// When a window is open within `[from_ms, to_ms)`.
pub fn window_intervals(w: &Window, from_ms: i64, to_ms: i64) -> Intervals {
    let mut out = Vec::new();
    let mut t = from_ms - from_ms.rem_euclid(WINDOW_STEP_MS);
    while t < to_ms {
        if w.is_open(t) {
            out.push((t.max(from_ms), (t + WINDOW_STEP_MS).min(to_ms)));
        }
        t += WINDOW_STEP_MS;
    }
    normalize(out)
}

/// One machine's line.
#[derive(Debug, Clone, Serialize)]
pub struct MachineLine {
    pub id: DeviceId,
    pub store: String,
    pub retailer: String,
    #[serde(flatten)]
    pub figures: Figures,
}

/// One store's or retailer's line.
#[derive(Debug, Clone, Serialize)]
pub struct GroupLine {
    pub id: String,
    pub name: String,
    /// The retailer, for a store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retailer: Option<String>,
    pub machines: usize,
    #[serde(flatten)]
    pub figures: Figures,
}

/// The report (module docs).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub from_ms: i64,
    /// The end asked for, and the end computed (not after now).
    pub to_ms: i64,
    pub until_ms: i64,
    pub generated_ms: i64,
    pub retailers: Vec<GroupLine>,
    pub stores: Vec<GroupLine>,
    pub machines: Vec<MachineLine>,
    /// Machines at a site no store has: no opening hours, not counted.
    pub unknown_sites: Vec<super::UnknownSite>,
    pub note: String,
}

/// What the report covers: everything, one retailer, or one store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub retailer: Option<String>,
    pub store: Option<String>,
}

/// Everything [`build`] reads.
pub struct Input<'a> {
    pub estate: &'a Estate,
    pub machines: &'a [Machine],
    pub alerts: &'a [Alert],
    pub windows: &'a [Window],
    pub from_ms: i64,
    pub to_ms: i64,
    pub now_ms: i64,
    pub filter: &'a Filter,
}

/// Computes the report (module docs).
pub fn build(i: &Input) -> Report {
    let until = i.to_ms.min(i.now_ms).max(i.from_ms);
    let down = down_intervals(i.alerts, i.now_ms);
    let windows: Vec<(&Window, Intervals)> = i
        .windows
        .iter()
        .map(|w| (w, window_intervals(w, i.from_ms, until)))
        .collect();
    let mut open_by_store: BTreeMap<&str, Intervals> = BTreeMap::new();
    let mut machines = Vec::new();
    for m in i.machines {
        let Some(store) = i.estate.store_of(m.site.as_deref()) else {
            continue;
        };
        let f = &store.file;
        if i.filter.store.as_ref().is_some_and(|s| *s != f.id)
            || i.filter.retailer.as_ref().is_some_and(|r| *r != f.retailer)
        {
            continue;
        }
        let open = open_by_store
            .entry(f.id.as_str())
            .or_insert_with(|| store.hours.open_intervals(&store.time_zone, i.from_ms, until))
            .clone();
        let maintenance = windows
            .iter()
            .filter(|(w, _)| w.applies_to(m.site.as_deref(), &m.tags))
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        let t = MachineTimes {
            open,
            maintenance,
            down: down.get(&m.id).cloned().unwrap_or_default(),
        };
        machines.push(MachineLine {
            id: m.id.clone(),
            store: f.id.clone(),
            retailer: f.retailer.clone(),
            figures: machine_figures(i.from_ms, until, &t),
        });
    }
    machines.sort_by(|a, b| (&a.retailer, &a.store, &a.id).cmp(&(&b.retailer, &b.store, &b.id)));
    let group = |id: &str, name: &str, retailer: Option<String>, of: &dyn Fn(&MachineLine) -> bool| {
        let parts: Vec<&Figures> = machines.iter().filter(|m| of(m)).map(|m| &m.figures).collect();
        GroupLine {
            id: id.into(),
            name: name.into(),
            retailer,
            machines: parts.len(),
            figures: Figures::sum(parts),
        }
    };
    let stores = i
        .estate
        .stores
        .values()
        .filter(|s| i.filter.store.as_ref().is_none_or(|x| *x == s.file.id))
        .filter(|s| i.filter.retailer.as_ref().is_none_or(|x| *x == s.file.retailer))
        .map(|s| {
            group(&s.file.id, &s.file.name, Some(s.file.retailer.clone()), &|m| {
                m.store == s.file.id
            })
        })
        .collect();
    let retailers = i
        .estate
        .retailers
        .values()
        .filter(|r| i.filter.retailer.as_ref().is_none_or(|x| *x == r.id))
        .filter(|r| {
            i.filter
                .store
                .as_ref()
                .is_none_or(|s| i.estate.stores.get(s).is_some_and(|s| s.file.retailer == r.id))
        })
        .map(|r| group(&r.id, &r.name, None, &|m| m.retailer == r.id))
        .collect();
    let unknown_sites = if *i.filter == Filter::default() {
        i.estate
            .unknown_sites(i.machines.iter().map(|m| (m.id.as_str(), m.site.as_deref())))
    } else {
        Vec::new()
    };
    Report {
        from_ms: i.from_ms,
        to_ms: i.to_ms,
        until_ms: until,
        generated_ms: i.now_ms,
        retailers,
        stores,
        machines,
        unknown_sites,
        note: format!(
            "Unavailable: offline, unhealthy or not accepting containers, from the alerts the server raised; \
             it remembers the last {} resolved alerts, older ones are not counted. Closed hours and \
             maintenance windows are excluded.",
            crate::alerts::engine::HISTORY_CAP
        ),
    }
}

/// The worst state of a group of machines: `critical` (a machine offline or a critical alert
/// firing), `warning` (a machine stale or degraded, or a warning firing), `ok`, or `empty`.
pub fn worst_state(machines: &[&DeviceSummary], alerts: &[&Alert]) -> &'static str {
    let sev = alerts.iter().map(|a| a.severity).max();
    let offline = machines.iter().any(|m| m.status == Presence::Offline);
    let shaky = machines
        .iter()
        .any(|m| matches!(m.status, Presence::Stale | Presence::Degraded));
    if offline || sev == Some(Severity::Critical) {
        "critical"
    } else if shaky || sev == Some(Severity::Warning) {
        "warning"
    } else if machines.is_empty() {
        "empty"
    } else {
        "ok"
    }
}

/// Minutes, to two decimals.
pub fn minutes(ms: i64) -> String {
    format!("{:.2}", ms as f64 / 60_000.0)
}

/// A figure as text: `95.45` or `-` without scheduled time.
pub fn pct_text(p: Option<f64>) -> String {
    p.map_or_else(|| "-".into(), |p| format!("{p:.2}"))
}

/// One row per retailer, store and machine: `level,id,name,retailer,store,machines,` then the
/// figures in minutes and the percentage.
pub fn to_csv(r: &Report) -> Result<String, ::csv::Error> {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    w.write_record([
        "level",
        "id",
        "name",
        "retailer",
        "store",
        "machines",
        "period_min",
        "closed_min",
        "maintenance_min",
        "scheduled_min",
        "unavailable_min",
        "available_min",
        "availability_pct",
    ])?;
    let fig = |f: &Figures| {
        vec![
            minutes(f.period_ms),
            minutes(f.closed_ms),
            minutes(f.maintenance_ms),
            minutes(f.scheduled_ms),
            minutes(f.unavailable_ms),
            minutes(f.available_ms),
            pct_text(f.availability_pct),
        ]
    };
    for g in &r.retailers {
        let mut row = vec![
            "retailer".into(),
            g.id.clone(),
            g.name.clone(),
            g.id.clone(),
            String::new(),
            g.machines.to_string(),
        ];
        row.extend(fig(&g.figures));
        w.write_record(&row)?;
    }
    for g in &r.stores {
        let retailer = g.retailer.clone().unwrap_or_default();
        let mut row = vec![
            "store".into(),
            g.id.clone(),
            g.name.clone(),
            retailer,
            g.id.clone(),
            g.machines.to_string(),
        ];
        row.extend(fig(&g.figures));
        w.write_record(&row)?;
    }
    for m in &r.machines {
        let mut row = vec![
            "machine".into(),
            m.id.to_string(),
            m.id.to_string(),
            m.retailer.clone(),
            m.store.clone(),
            "1".into(),
        ];
        row.extend(fig(&m.figures));
        w.write_record(&row)?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The title line of every form.
pub fn title(r: &Report) -> String {
    format!(
        "RVM Fleet availability {} to {}",
        rfc3339_ms(r.from_ms),
        rfc3339_ms(r.until_ms)
    )
}

/// A self-contained page (no scripts, no external assets).
pub fn to_html(r: &Report) -> String {
    let mut h = String::with_capacity(16 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>\
         body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin-bottom:1.5em}}\
         td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:right}}td:first-child,th:first-child{{text-align:left}}\
         .note{{color:#555;font-size:.9em}}</style></head><body><h1>{t}</h1><p class=\"note\">{n}</p>",
        t = esc(&title(r)),
        n = esc(&r.note)
    );
    let head = "<tr><th>{what}</th><th>machines</th><th>availability %</th><th>scheduled min</th><th>unavailable min</th>\
                <th>maintenance min</th><th>closed min</th></tr>";
    let row = |h: &mut String, name: &str, n: usize, f: &Figures| {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{n}</td><td class=\"pct\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(name),
            pct_text(f.availability_pct),
            minutes(f.scheduled_ms),
            minutes(f.unavailable_ms),
            minutes(f.maintenance_ms),
            minutes(f.closed_ms)
        );
    };
    for (what, lines) in [("retailer", &r.retailers), ("store", &r.stores)] {
        let _ = write!(
            h,
            "<h2>{what}s</h2><table id=\"{what}s\">{}",
            head.replace("{what}", what)
        );
        for g in lines {
            row(&mut h, &format!("{} ({})", g.name, g.id), g.machines, &g.figures);
        }
        h.push_str("</table>");
    }
    let _ = write!(
        h,
        "<h2>machines</h2><table id=\"machines\">{}",
        head.replace("{what}", "machine")
    );
    for m in &r.machines {
        row(&mut h, &format!("{} @ {}", m.id, m.store), 1, &m.figures);
    }
    h.push_str("</table>");
    if !r.unknown_sites.is_empty() {
        h.push_str("<h2>machines at unknown sites (not counted)</h2><ul>");
        for u in &r.unknown_sites {
            let _ = write!(
                h,
                "<li>{}: {}</li>",
                esc(if u.site.is_empty() { "(no site)" } else { &u.site }),
                esc(&u.machines.join(", "))
            );
        }
        h.push_str("</ul>");
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::estate::tests::build_store;
    use crate::estate::{Retailer, StoreFile};
    use crate::notify::maintenance::WindowFile;

    const MIN: i64 = 60_000;

    fn build_alert(
        rule: &str,
        device: &str,
        sev: Severity,
        started: i64,
        resolved: Option<i64>,
        fired: bool,
    ) -> Alert {
        let mut a: Alert = serde_json::from_value(serde_json::json!({
            "id": format!("{rule}:{device}:1"), "rule": rule, "device": device, "generation": 1,
            "metric": "m", "severity": "info", "labels": {}, "summary": "", "op": ">", "value": 1.0,
            "threshold": 0.0, "clear": 0.0, "started_ms": started, "fired_ms": null,
            "resolved_ms": resolved, "escalated_ms": null, "last_sample_ms": started, "ack": null,
            "silenced_by": null, "state": "firing"
        }))
        .unwrap();
        a.severity = sev;
        a.fired_ms = fired.then_some(started);
        a
    }

    fn build_summary(status: Presence) -> DeviceSummary {
        DeviceSummary {
            id: DeviceId::new("m1").unwrap(),
            status,
            status_reason: String::new(),
            site: Some("s".into()),
            tags: vec![],
            last_seen_ms: 0,
            served_by: None,
            agent_version: None,
            board: None,
            jetpack: None,
            vision_model_version: None,
            simulated: true,
            metrics: Default::default(),
            health: None,
            items_per_hour: None,
        }
    }

    #[test]
    fn a_store_is_as_bad_as_its_worst_machine_or_alert() {
        let (ok, stale, off) = (
            build_summary(Presence::Online),
            build_summary(Presence::Stale),
            build_summary(Presence::Offline),
        );
        let warn = build_alert("cpu_high", "m1", Severity::Warning, 0, None, true);
        let crit = build_alert("cpu_critical", "m1", Severity::Critical, 0, None, true);
        assert_eq!(worst_state(&[], &[]), "empty");
        assert_eq!(worst_state(&[&ok], &[]), "ok");
        assert_eq!(worst_state(&[&ok, &stale], &[]), "warning");
        assert_eq!(worst_state(&[&ok], &[&warn]), "warning");
        assert_eq!(worst_state(&[&ok, &stale], &[&crit]), "critical");
        assert_eq!(worst_state(&[&ok, &off], &[&warn]), "critical");
    }

    #[test]
    fn only_fired_outage_alerts_count() {
        let a = |rule, sev, fired| down_reason(&build_alert(rule, "m1", sev, 0, None, fired));
        assert_eq!(a("device_offline", Severity::Critical, true), Some("offline"));
        assert_eq!(a("device_offline", Severity::Critical, false), None);
        assert_eq!(
            a("check.http.vision", Severity::Warning, true),
            Some("not accepting containers")
        );
        assert_eq!(a("check.camera", Severity::Critical, true), Some("unhealthy"));
        assert_eq!(a("check.camera", Severity::Warning, true), None);
        assert_eq!(a("cpu_high", Severity::Critical, true), None);
    }

    /// The issue's example end to end through the report: Europe/Oslo store open 08:00-20:00,
    /// offline 10:00-10:30 and 20:30-21:00 (two alerts), a maintenance window 14:00-15:00
    /// on the store's site; 630 / 660 minutes.
    #[test]
    fn the_report_of_the_issue_example_equals_the_hand_computed_figure() {
        let at = |t: &str| {
            format!("2026-06-01T{t}:00+02:00[Europe/Oslo]")
                .parse::<jiff::Zoned>()
                .unwrap()
                .timestamp()
                .as_millisecond()
        };
        let mut s: StoreFile = build_store("oslo-1", "coop");
        s.hours.sun = Some("08:00-20:00".into());
        let (estate, _) = Estate::from_rows(
            vec![Retailer {
                id: "coop".into(),
                name: "Coop".into(),
            }],
            vec![s],
        );
        let machines = [
            Machine {
                id: DeviceId::new("m1").unwrap(),
                site: Some("oslo-1".into()),
                tags: vec![],
            },
            Machine {
                id: DeviceId::new("m2").unwrap(),
                site: Some("nowhere".into()),
                tags: vec![],
            },
        ];
        let alerts = [
            build_alert(
                "device_offline",
                "m1",
                Severity::Critical,
                at("10:00"),
                Some(at("10:30")),
                true,
            ),
            build_alert(
                "device_offline",
                "m1",
                Severity::Critical,
                at("20:30"),
                Some(at("21:00")),
                true,
            ),
        ];
        let w = WindowFile {
            name: Some("w".into()),
            sites: vec!["oslo-1".into()],
            tags: vec![],
            time_zone: "Europe/Oslo".into(),
            days: vec![],
            from: "14:00".into(),
            to: "15:00".into(),
        }
        .validate("w", 0)
        .unwrap();
        let r = build(&Input {
            estate: &estate,
            machines: &machines,
            alerts: &alerts,
            windows: &[w],
            from_ms: at("00:00"),
            to_ms: at("00:00") + 1440 * MIN,
            now_ms: at("00:00") + 2000 * MIN,
            filter: &Filter::default(),
        });
        assert_eq!(r.machines.len(), 1);
        let f = r.machines[0].figures;
        assert_eq!(
            (f.scheduled_ms, f.unavailable_ms, f.maintenance_ms, f.closed_ms),
            (660 * MIN, 30 * MIN, 60 * MIN, 720 * MIN)
        );
        assert_eq!(r.stores[0].figures.availability_pct, Some(630.0 * 100.0 / 660.0));
        assert_eq!(r.retailers[0].figures, r.stores[0].figures);
        assert_eq!(r.unknown_sites[0].site, "nowhere");
        let csv = to_csv(&r).unwrap();
        assert!(
            csv.contains(
                "store,oslo-1,Store oslo-1,coop,oslo-1,1,1440.00,720.00,60.00,660.00,30.00,630.00,95.45"
            ),
            "{csv}"
        );
        assert!(to_html(&r).contains("<td class=\"pct\">95.45</td>"));
    }
}
