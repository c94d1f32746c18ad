//! Site outage: at least `min_devices` machines of one site, or `min_pct` of its machines
//! (counting from `min_devices_for_pct` machines), fire the offline alert within `window_s`.
//! The offline alerts are attached and *suppressed* (not notified on their own); later offline
//! alerts of the site join while the incident is open. It resolves when every member device is
//! back (its offline alert resolved).
//!
//! Its probable cause says how many machines are offline *now* out of the site's, and how many
//! went offline since it opened ([`cause`]); it is written again whenever a machine joins or
//! comes back, so it never shows the count of the moment it opened as if it were current.

use common::DeviceId;

use super::Correlator;
use super::incident::{FiringAlert, FleetView, Incident, IncidentChange, IncidentKind, IncidentState, utc};
use crate::alerts::names::PRESENCE_OFFLINE;

impl Correlator {
    pub(super) fn site_outage(
        &mut self,
        alert: &FiringAlert,
        devices: &FleetView,
        now_ms: i64,
        out: &mut Vec<IncidentChange>,
    ) {
        let Some(site) = alert.site.clone() else {
            return;
        };
        let open = self.find_open(|i| i.kind == IncidentKind::SiteOutage && i.site.as_deref() == Some(&site));
        if let Some(id) = open {
            // the cause as it reads once this machine joined, so the change carries it
            if let Some(inc) = self.open.get_mut(&id) {
                let mut joined = inc.clone();
                if joined.join(alert, now_ms) {
                    inc.probable_cause = cause(&joined, devices);
                }
            }
            self.join(&id, alert, now_ms, out);
            return;
        }
        let cfg = &self.config.site_outage;
        let since = now_ms - cfg.window_s as i64 * 1000;
        let offline: Vec<FiringAlert> = self
            .firing
            .values()
            .filter(|f| {
                f.metric == PRESENCE_OFFLINE && f.site.as_deref() == Some(&site) && f.fired_ms >= since
            })
            .cloned()
            .collect();
        let count = offline.len();
        let size = devices
            .iter()
            .filter(|d| d.site.as_deref() == Some(&site))
            .count()
            .max(count);
        let by_count = count >= cfg.min_devices;
        let by_pct = count >= cfg.min_devices_for_pct && count as f64 * 100.0 >= cfg.min_pct * size as f64;
        if !(by_count || by_pct) {
            return;
        }
        let members: Vec<String> = offline.iter().map(|f| f.id.clone()).collect();
        let mut devs: Vec<DeviceId> = offline.iter().map(|f| f.device.clone()).collect();
        devs.sort();
        let mut incident = Incident {
            id: String::new(),
            kind: IncidentKind::SiteOutage,
            title: format!("site outage at {site}"),
            probable_cause: String::new(),
            site: Some(site),
            attribute: None,
            attribute_value: None,
            rule: Some(alert.rule.clone()),
            metric: Some(PRESENCE_OFFLINE.into()),
            devices: devs,
            members: members.clone(),
            active_members: members.clone(),
            suppresses_members: true,
            opened_ms: now_ms,
            updated_ms: now_ms,
            resolved_ms: None,
            state: IncidentState::Open,
        };
        incident.probable_cause = format!(
            "{} ({count} within {} s)",
            cause(&incident, devices),
            cfg.window_s
        );
        self.open_incident(incident, members, now_ms, out);
    }
}

/// The probable cause of site outage `inc` as it stands: machines offline now (its active
/// members) out of the site's machines, and how many went offline since it opened.
pub(super) fn cause(inc: &Incident, devices: &FleetView) -> String {
    let site = inc.site.as_deref().unwrap_or("?");
    let total = inc.devices.len();
    let size = devices
        .iter()
        .filter(|d| d.site.as_deref() == Some(site))
        .count()
        .max(total);
    let now = inc
        .active_members
        .iter()
        .filter_map(|m| m.split(':').nth(1))
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    format!(
        "loss of network or power at site {site}: {now} of {size} machines offline now, \
         {total} went offline since {}",
        utc(inc.opened_ms)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incidents::incident::IncidentChangeKind;
    use crate::incidents::testkit::*;

    #[test]
    fn machines_of_one_site_going_offline_together_make_one_site_outage() {
        let mut h = Harness::build(build_site("oslo", 10));
        let mut offline_ids = Vec::new();
        for (i, id) in ["oslo0", "oslo1", "oslo2"].iter().enumerate() {
            let t = h.feed(id, &[(PRESENCE_OFFLINE, 1.0)], i as i64 * 20 * S);
            offline_ids.push(t[0].alert.id.clone());
        }
        let opened = h.opened();
        assert_eq!(opened.len(), 1);
        let inc = opened[0];
        assert_eq!(
            (inc.kind, inc.site.as_deref()),
            (IncidentKind::SiteOutage, Some("oslo"))
        );
        assert!(inc.probable_cause.contains("3 of 10"), "{}", inc.probable_cause);
        assert_eq!(inc.members, offline_ids);
        assert!(offline_ids.iter().all(|id| h.corr.is_suppressed(id)));
        assert!(
            inc.probable_cause.contains(
                "3 of 10 machines offline now, 3 went offline since 1970-01-01T00:00:40Z (3 within"
            ),
            "{}",
            inc.probable_cause
        );
        // A later machine of the same site joins, suppressed; the cause counts it.
        let t = h.feed("oslo5", &[(PRESENCE_OFFLINE, 1.0)], 600 * S);
        let last = h.changes.last().unwrap();
        assert_eq!(last.kind, IncidentChangeKind::Joined);
        assert_eq!(last.suppressed, vec![t[0].alert.id.clone()]);
        assert!(
            last.incident
                .probable_cause
                .contains("4 of 10 machines offline now, 4 went offline"),
            "{}",
            last.incident.probable_cause
        );
        // It resolves when every machine is back, not before; the cause follows them back.
        for id in ["oslo0", "oslo1", "oslo2"] {
            h.feed(id, &[(PRESENCE_OFFLINE, 0.0)], 700 * S);
        }
        assert_eq!(h.corr.open().len(), 1);
        let cause = &h.corr.open()[0].probable_cause;
        assert!(
            cause.contains("1 of 10 machines offline now, 4 went offline"),
            "{cause}"
        );
        h.feed("oslo5", &[(PRESENCE_OFFLINE, 0.0)], 710 * S);
        assert!(h.corr.open().is_empty());
        assert_eq!(
            h.changes.last().map(|c| c.kind),
            Some(IncidentChangeKind::Resolved)
        );
        assert!(
            h.corr.is_suppressed(&offline_ids[0]),
            "its resolve is not notified either"
        );
    }

    #[test]
    fn two_of_ten_machines_offline_is_not_a_site_outage() {
        let mut h = Harness::build(build_site("oslo", 10));
        h.feed("oslo0", &[(PRESENCE_OFFLINE, 1.0)], 0);
        let t = h.feed("oslo1", &[(PRESENCE_OFFLINE, 1.0)], 10 * S);
        assert!(h.opened().is_empty());
        assert!(!h.corr.is_suppressed(&t[0].alert.id));
    }

    #[test]
    fn machines_going_offline_further_apart_than_the_window_are_not_a_site_outage() {
        let mut h = Harness::build(build_site("oslo", 10));
        for (i, id) in ["oslo0", "oslo1", "oslo2"].iter().enumerate() {
            h.feed(id, &[(PRESENCE_OFFLINE, 1.0)], i as i64 * 121 * S);
        }
        assert!(h.opened().is_empty());
    }

    #[test]
    fn half_of_a_small_site_offline_is_a_site_outage_but_one_machine_never_is() {
        let mut devices = build_site("bergen", 4);
        devices.extend(build_site("solo", 1));
        let mut h = Harness::build(devices);
        h.feed("solo0", &[(PRESENCE_OFFLINE, 1.0)], 0);
        h.feed("bergen0", &[(PRESENCE_OFFLINE, 1.0)], 0);
        assert!(h.opened().is_empty());
        h.feed("bergen1", &[(PRESENCE_OFFLINE, 1.0)], S);
        assert_eq!(h.opened().len(), 1);
        assert_eq!(h.opened()[0].devices.len(), 2);
    }
}
