//! The fleet-wide correlator's input (several instances on one PostgreSQL, docs/architecture.md
//! "Several instances"): each instance's engine evaluates the machines it holds, so no one
//! engine sees the whole fleet's transitions. The `correlator` leader reads instead, every
//! second, the alerts firing in the shared store, whichever instance fired them, and the
//! correlator turns the difference from what it knew into firings and resolutions
//! ([`Correlator::on_fleet_alerts`]). A new leader starts from the store
//! ([`Correlator::take_over`]): the open incidents of its kinds go on, so the alerts firing at
//! its first read join the incident the old leader opened (members already in it change
//! nothing) or, when the old leader died before writing it, open it: one incident per cause.
//!
//! Offline alerts are left out: they are site outages' (the presence judge's correlator,
//! which suppresses them); a fleet-wide correlator that counted them could take a site outage
//! for a cohort before the judge's incident reached the store.
//!
//! Pure, like the rest of the correlator; the alerts actor's `fleetcorr` does the reads and the
//! fenced writes.

use std::collections::BTreeSet;

use super::Correlator;
use super::incident::{FiringAlert, FleetView, Incident, IncidentChange, IncidentState, firing_alert};
use crate::alerts::alert::{Alert, AlertState};
use crate::alerts::names::PRESENCE_OFFLINE;

impl Correlator {
    /// Starts from what the store holds: its open incidents of this correlator's kinds,
    /// numbering above `seq_max`. The next [`Self::on_fleet_alerts`] takes the firing alerts.
    pub fn take_over(&mut self, open: Vec<Incident>, seq_max: u64) {
        let scope = self.scope;
        self.number_above(seq_max);
        for inc in open
            .into_iter()
            .filter(|i| i.state == IncidentState::Open && scope.owns(i.kind))
        {
            if inc.suppresses_members {
                self.suppressed.extend(inc.members.iter().cloned());
            }
            self.open.insert(inc.id.clone(), inc);
        }
    }

    /// The alerts firing in the store now, fleet-wide: those not known firing fire here, the
    /// known ones no longer among them resolved, and so did the members of an open incident
    /// that are not among them (resolved while no correlator was looking).
    pub fn on_fleet_alerts(
        &mut self,
        firing: &[Alert],
        devices: &FleetView,
        now_ms: i64,
    ) -> Vec<IncidentChange> {
        let mut out = Vec::new();
        let offline_too = self.scope.site_outages();
        let firing: Vec<&Alert> = firing
            .iter()
            .filter(|a| a.state == AlertState::Firing && (offline_too || a.metric != PRESENCE_OFFLINE))
            .collect();
        let now_firing: BTreeSet<&str> = firing.iter().map(|a| a.id.as_str()).collect();
        let gone: Vec<(super::AlertKey, String)> = self
            .firing
            .iter()
            .filter(|(_, f)| !now_firing.contains(f.id.as_str()))
            .map(|(k, f)| (k.clone(), f.id.clone()))
            .collect();
        for (key, id) in gone {
            self.firing.remove(&key);
            self.member_resolved(&id, devices, now_ms, &mut out);
        }
        let stale: Vec<String> = self
            .open
            .values()
            .flat_map(|i| i.active_members.iter())
            .filter(|m| !now_firing.contains(m.as_str()))
            .cloned()
            .collect();
        for id in stale {
            self.member_resolved(&id, devices, now_ms, &mut out);
        }
        let mut new: Vec<FiringAlert> = firing
            .iter()
            .filter(|a| {
                self.firing
                    .get(&(a.rule.clone(), a.device.clone()))
                    .is_none_or(|f| f.id != a.id)
            })
            .map(|a| firing_alert(a, devices))
            .collect();
        // in the order they fired, as the engines' transitions would have come
        new.sort_by(|a, b| (a.fired_ms, &a.id).cmp(&(b.fired_ms, &b.id)));
        for f in new {
            self.firing.insert((f.rule.clone(), f.device.clone()), f.clone());
            self.fired(&f, devices, now_ms, &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use common::DeviceId;

    use super::*;
    use crate::alerts::alert::DeviceInfo;
    use crate::incidents::Scope;
    use crate::incidents::config::CorrelatorConfig;
    use crate::incidents::incident::{IncidentChangeKind, IncidentKind};
    use crate::incidents::testkit::*;

    /// Six machines on v3.3 and six on v3.2, spread over three instances (`a`, `b`, `c`, two
    /// of each version on each): each instance's own engine evaluates four.
    fn build_fleet() -> Vec<DeviceInfo> {
        (0..12)
            .map(|i| {
                let model = if i % 4 < 2 { "v3.3" } else { "v3.2" };
                build_device(&format!("rvm{i}"), "oslo", &[("vision_model_version", model)])
            })
            .collect()
    }

    /// One engine per instance, the machines `i / 4` of each; returns every instance's alerts
    /// firing after `slow` machines ran slow for a minute.
    fn fire_on_instances(fleet: &FleetView, slow: &[usize], at: i64) -> Vec<Alert> {
        let mut firing = Vec::new();
        for instance in 0..3 {
            let mut engine = build_engine();
            for i in (instance * 4)..(instance * 4 + 4) {
                let d = fleet.get(&DeviceId::new(format!("rvm{i}")).unwrap()).unwrap();
                let v = if slow.contains(&i) { 400.0 } else { 50.0 };
                engine.observe(d, &m(&[("app.inference_ms", v)]), at);
                engine.observe(d, &m(&[("app.inference_ms", v)]), at + 60 * S);
            }
            firing.extend(engine.active());
        }
        firing
    }

    fn build_fleet_correlator() -> Correlator {
        let mut c = Correlator::new(CorrelatorConfig::default());
        c.set_scope(Scope::AcrossMachines);
        c
    }

    #[test]
    fn a_cohort_spread_over_instances_is_one_incident_which_none_of_them_would_see_alone() {
        let fleet = FleetView::new(build_fleet());
        // the v3.3 machines, two on each instance
        let slow = [0, 1, 4, 5, 8, 9];
        let firing = fire_on_instances(&fleet, &slow, 0);
        assert_eq!(firing.len(), 6);
        // one instance alone: two failing machines, below the cohort's minimum
        let mut alone = build_fleet_correlator();
        let own: Vec<Alert> = firing
            .iter()
            .filter(|a| a.device.as_str() < "rvm2")
            .cloned()
            .collect();
        let own_view = FleetView::new(build_fleet().into_iter().take(4));
        assert!(alone.on_fleet_alerts(&own, &own_view, 61 * S).is_empty());

        let mut c = build_fleet_correlator();
        let changes = c.on_fleet_alerts(&firing, &fleet, 61 * S);
        let opened: Vec<&IncidentChange> = changes
            .iter()
            .filter(|c| c.kind == IncidentChangeKind::Opened)
            .collect();
        assert_eq!(opened.len(), 1, "{changes:#?}");
        assert_eq!(opened[0].incident.kind, IncidentKind::CohortRegression);
        assert_eq!(c.open()[0].members.len(), 6, "the others join");
        assert!(
            c.on_fleet_alerts(&firing, &fleet, 62 * S).is_empty(),
            "nothing new"
        );
        // all cool down: the incident resolves, once
        let changes = c.on_fleet_alerts(&[], &fleet, 200 * S);
        assert_eq!(changes.len(), 1, "{changes:#?}");
        assert_eq!(changes[0].kind, IncidentChangeKind::Resolved);
    }

    #[test]
    fn a_new_leader_goes_on_with_the_stored_incident_and_opens_no_second() {
        let fleet = FleetView::new(build_fleet());
        let first = fire_on_instances(&fleet, &[0, 4, 8], 0);
        let mut old = build_fleet_correlator();
        old.on_fleet_alerts(&first, &fleet, 61 * S);
        let stored = old.open();
        assert_eq!(stored.len(), 1);
        // the old leader dies; the next reads the store and the rest of the cohort fires
        let mut new = build_fleet_correlator();
        new.take_over(stored.clone(), 1);
        let all = fire_on_instances(&fleet, &[0, 4, 8, 1, 5, 9], 0);
        let changes = new.on_fleet_alerts(&all, &fleet, 70 * S);
        assert!(
            changes
                .iter()
                .all(|c| c.kind == IncidentChangeKind::Joined && c.incident.id == stored[0].id),
            "{changes:#?}"
        );
        assert_eq!(changes.len(), 3);
        assert_eq!(new.open().len(), 1);
        assert_eq!(new.open()[0].members.len(), 6);
    }

    #[test]
    fn offline_alerts_are_left_to_the_site_outage_correlator() {
        let mut h = Harness::build(build_site("oslo", 10));
        for id in ["oslo0", "oslo1", "oslo2", "oslo3"] {
            h.feed(id, &[(PRESENCE_OFFLINE, 1.0)], 0);
        }
        let mut c = build_fleet_correlator();
        assert!(c.on_fleet_alerts(&h.engine.active(), &h.fleet, S).is_empty());
        assert!(c.export().firing.is_empty());
    }

    #[test]
    fn a_member_that_resolved_while_no_leader_looked_is_resolved_after_a_takeover() {
        let fleet = FleetView::new(build_fleet());
        let firing = fire_on_instances(&fleet, &[0, 4, 8], 0);
        let mut old = build_fleet_correlator();
        old.on_fleet_alerts(&firing, &fleet, 61 * S);
        let stored = old.open();
        // every member cooled down before the next leader read the store
        let mut new = build_fleet_correlator();
        new.take_over(stored.clone(), 1);
        let changes = new.on_fleet_alerts(&[], &fleet, 90 * S);
        assert_eq!(changes.len(), 1, "{changes:#?}");
        assert_eq!(
            (changes[0].kind, changes[0].incident.id.as_str()),
            (IncidentChangeKind::Resolved, stored[0].id.as_str())
        );
    }

    #[test]
    fn a_site_outage_correlator_keeps_its_own_and_the_fleet_one_never_opens_site_outages() {
        let mut h = Harness::build(build_site("oslo", 10));
        h.corr.set_scope(Scope::AcrossMachines);
        for id in ["oslo0", "oslo1", "oslo2"] {
            h.feed(id, &[(PRESENCE_OFFLINE, 1.0)], 0);
        }
        assert!(h.opened().is_empty());
        let mut h = Harness::build(build_site("oslo", 10));
        h.corr.set_scope(Scope::SiteOutages);
        for id in ["oslo0", "oslo1", "oslo2"] {
            h.feed(id, &[(PRESENCE_OFFLINE, 1.0)], 0);
        }
        assert_eq!(h.opened().len(), 1);
        assert!(!Scope::SiteOutages.owns(IncidentKind::CohortRegression));
        assert!(Scope::AcrossMachines.owns(IncidentKind::Outlier));
    }
}
