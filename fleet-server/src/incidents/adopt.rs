//! Site outages across instances (docs/architecture.md "Several instances"): only the
//! presence judge fires offline alerts, so only it opens site outages, but the judge changes
//! with the `presence` lease. Every instance therefore keeps the site outages open in the
//! shared store among its own open incidents ([`Correlator::adopt_site_outages`], every
//! couple of seconds): a new judge whose offline alerts fire for a site with an open outage
//! *joins* it (not news, not notified) instead of opening a second one, and its members stay
//! suppressed. And when a claim shows that the store already holds a machine's open alert,
//! the correlator follows the engine's adoption ([`Correlator::replace_alert`]) so the
//! incident resolves when that alert does.

use std::collections::BTreeSet;

use super::Correlator;
use super::incident::{Incident, IncidentKind, IncidentState};

impl Correlator {
    /// Takes the site outages open in the store that this correlator does not hold, and drops
    /// (silently: it did not open them) adopted ones the store no longer has open. Produces no
    /// change: the instance that opened or closes them notifies.
    pub fn adopt_site_outages(&mut self, stored: Vec<Incident>) {
        let open: BTreeSet<String> = stored.iter().map(|i| i.id.clone()).collect();
        let gone: Vec<String> = self
            .adopted
            .iter()
            .filter(|id| !open.contains(*id))
            .cloned()
            .collect();
        for id in gone {
            self.adopted.remove(&id);
            if let Some(inc) = self.open.remove(&id) {
                for m in &inc.members {
                    self.suppressed.remove(m);
                }
            }
        }
        for inc in stored {
            let site_outage = inc.kind == IncidentKind::SiteOutage && inc.state == IncidentState::Open;
            if !site_outage || self.open.contains_key(&inc.id) || self.get(&inc.id).is_some() {
                continue;
            }
            // another site outage of the same site open here: this one's own, kept
            if self
                .find_open(|i| i.kind == IncidentKind::SiteOutage && i.site == inc.site)
                .is_some()
            {
                continue;
            }
            self.suppressed.extend(inc.members.iter().cloned());
            self.adopted.insert(inc.id.clone());
            self.open.insert(inc.id.clone(), inc);
        }
    }

    /// The engine adopted the stored alert `stored` in place of `ours` (a lost claim): the
    /// incidents and the firing set name the stored one from now on.
    pub fn replace_alert(&mut self, ours: &str, stored: &str) {
        if ours == stored {
            return;
        }
        for f in self.firing.values_mut().filter(|f| f.id == ours) {
            f.id = stored.to_string();
        }
        for inc in self.open.values_mut() {
            for list in [&mut inc.members, &mut inc.active_members] {
                let had_stored = list.iter().any(|m| m == stored);
                if had_stored {
                    list.retain(|m| m != ours);
                } else {
                    for m in list.iter_mut().filter(|m| *m == ours) {
                        *m = stored.to_string();
                    }
                }
            }
        }
        if self.suppressed.remove(ours) {
            self.suppressed.insert(stored.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::alerts::names::PRESENCE_OFFLINE;
    use crate::incidents::incident::IncidentChangeKind;
    use crate::incidents::testkit::*;

    #[test]
    fn a_new_judge_joins_the_stored_site_outage_instead_of_opening_another() {
        // the old judge opened it
        let mut old = Harness::build(build_site("oslo", 10));
        for id in ["oslo0", "oslo1", "oslo2"] {
            old.feed(id, &[(PRESENCE_OFFLINE, 1.0)], 0);
        }
        let stored = old.corr.open();
        assert_eq!(stored.len(), 1);
        // the new judge knew it from the store before its own offline alerts fired
        let mut new = Harness::build(build_site("oslo", 10));
        new.corr.adopt_site_outages(stored.clone());
        for id in ["oslo0", "oslo1", "oslo2", "oslo3"] {
            let t = new.feed(id, &[(PRESENCE_OFFLINE, 1.0)], 5_000);
            assert!(t.iter().all(|t| new.corr.is_suppressed(&t.alert.id)), "{t:?}");
        }
        assert!(new.opened().is_empty(), "{:?}", new.opened());
        let joined = new
            .changes
            .iter()
            .filter(|c| c.kind == IncidentChangeKind::Joined)
            .count();
        assert_eq!(joined, 1, "oslo3 joins; the others were members already");
        // every member back: it resolves here, once
        for id in ["oslo0", "oslo1", "oslo2", "oslo3"] {
            new.feed(id, &[(PRESENCE_OFFLINE, 0.0)], 9_000);
        }
        let resolved: Vec<&str> = new
            .changes
            .iter()
            .filter(|c| c.kind == IncidentChangeKind::Resolved)
            .map(|c| c.incident.id.as_str())
            .collect();
        assert_eq!(resolved, [stored[0].id.as_str()]);
    }

    #[test]
    fn an_adopted_outage_the_store_closed_is_dropped_silently() {
        let mut old = Harness::build(build_site("oslo", 10));
        for id in ["oslo0", "oslo1", "oslo2"] {
            old.feed(id, &[(PRESENCE_OFFLINE, 1.0)], 0);
        }
        let mut other = Harness::build(build_site("oslo", 10));
        other.corr.adopt_site_outages(old.corr.open());
        assert_eq!(other.corr.open().len(), 1);
        other.corr.adopt_site_outages(Vec::new());
        assert!(other.corr.open().is_empty());
        assert!(other.changes.is_empty(), "nothing to notify");
    }

    #[test]
    fn a_lost_claim_renames_the_member_so_the_incident_resolves_with_the_stored_alert() {
        let mut h = Harness::build(build_site("oslo", 10));
        let mut ids = Vec::new();
        for id in ["oslo0", "oslo1", "oslo2"] {
            ids.push(h.feed(id, &[(PRESENCE_OFFLINE, 1.0)], 0)[0].alert.id.clone());
        }
        h.corr.replace_alert(&ids[0], "device_offline:oslo0:7");
        assert!(h.corr.is_suppressed("device_offline:oslo0:7"));
        let inc = &h.corr.open()[0];
        assert!(inc.active_members.contains(&"device_offline:oslo0:7".to_string()));
        assert!(!inc.active_members.contains(&ids[0]));
    }
}
