//! Adoption: the engine takes the shared store's word on alerts that another fleet-server
//! instance opened (several instances on one PostgreSQL, docs/architecture.md "Several
//! instances").
//!
//! A machine's records are evaluated by the instance that holds its session; when the
//! session moves (an instance died, a network blip), the new instance's engine knows nothing
//! of what the old one opened since this one started. Two things keep an alert notified once:
//! - [`AlertEngine::adopt_device`]: before the engine first evaluates a device, the actor
//!   loads the device's open alerts and pair counters from the store, and they replace what
//!   the engine held for it (which is at best the state of its own start);
//! - [`AlertEngine::adopt`]: an alert this engine opened lost the store's race (the unique
//!   open alert per (rule, device)): the stored one replaces it, with its id and fired time,
//!   and the next samples move it as if this engine had opened it.
//!
//! Neither makes a transition: what they take in was already notified by whoever opened it.

use common::DeviceId;
use serde::{Deserialize, Serialize};

use super::{AlertEngine, Key, PairCooldown, PairCounter, check_rule};
use crate::alerts::alert::{Alert, AlertState};
use crate::alerts::checks::is_check_rule;

/// What the shared store holds of one device: its open (pending or firing) alerts and the
/// bookkeeping of its (rule, device) pairs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceAlerts {
    pub open: Vec<Alert>,
    pub generations: Vec<PairCounter>,
    pub cooldowns: Vec<PairCooldown>,
}

impl AlertEngine {
    /// Takes `stored` as the truth about `device` (module docs): its open alerts replace the
    /// engine's, an alert the engine holds open that the store does not (closed elsewhere
    /// meanwhile) goes without a transition, and generations and cooldowns only grow, so an
    /// alert id is never reused. Alerts of other devices and of rules this engine does not
    /// have are ignored. Returns the ids of the alerts now held that the engine did not hold.
    pub fn adopt_device(&mut self, device: &DeviceId, stored: DeviceAlerts) -> Vec<String> {
        let stale: Vec<Key> = self
            .active
            .keys()
            .filter(|(rule, d)| d == device && !stored.open.iter().any(|a| a.rule == *rule && a.device == *d))
            .cloned()
            .collect();
        for key in stale {
            self.active.remove(&key);
            self.check_rules.remove(&key);
        }
        for c in stored.generations.into_iter().filter(|c| &c.device == device) {
            let g = self.generations.entry((c.rule, c.device)).or_insert(0);
            *g = (*g).max(c.generation);
        }
        for c in stored.cooldowns.into_iter().filter(|c| &c.device == device) {
            let until = self
                .cooldown_until
                .entry((c.rule, c.device))
                .or_insert(c.until_ms);
            *until = (*until).max(c.until_ms);
        }
        let mut taken = Vec::new();
        for a in stored.open.into_iter().filter(|a| &a.device == device) {
            let id = a.id.clone();
            let held = self.active.get(&a.key()).map(|h| h.id == id);
            if self.adopt(a).is_some() && held != Some(true) {
                taken.push(id);
            }
        }
        taken
    }

    /// Replaces the engine's alert of `stored`'s (rule, device) with `stored` (module docs);
    /// the generation counter of the pair grows to it. None, and nothing changes, for an
    /// alert that is not open or whose rule this engine does not have; else the alert the
    /// engine held for the pair, if any.
    pub fn adopt(&mut self, stored: Alert) -> Option<Option<Alert>> {
        if stored.state == AlertState::Resolved {
            return None;
        }
        let check = is_check_rule(&stored.rule);
        let known = self.by_name.contains_key(&stored.rule) || (check && self.checks.is_some());
        if !known {
            return None;
        }
        let key = stored.key();
        let g = self.generations.entry(key.clone()).or_insert(0);
        *g = (*g).max(stored.generation);
        if check
            && let Some(cfg) = &self.checks
            && let Some(name) = stored.labels.get("check")
        {
            let rule = check_rule(cfg, name, stored.severity, &stored.summary);
            self.check_rules.insert(key.clone(), rule);
        }
        Some(self.active.insert(key, stored))
    }

    /// The store holds generation `taken` of this open alert's pair already (alerts of it
    /// opened and closed on another instance since this engine last heard): the alert takes
    /// the generation after it, and so a new id. None if `alert_id` is not open here.
    pub fn renumber(&mut self, alert_id: &str, taken: u64) -> Option<Alert> {
        let key = super::parse_alert_id(alert_id)?;
        let a = self.active.get_mut(&key).filter(|a| a.id == alert_id)?;
        let g = self.generations.entry(key).or_insert(0);
        *g = (*g).max(taken).max(a.generation) + 1;
        a.generation = *g;
        a.id = format!("{}:{}:{}", a.rule, a.device, a.generation);
        Some(a.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::alert::{DeviceInfo, TransitionKind};
    use crate::alerts::rules::parse_rules;

    fn build_engine() -> AlertEngine {
        AlertEngine::new(
            parse_rules(
                "[[rules]]\nname = \"gpu_hot\"\nmetric = \"gpu.temp_c\"\nop = \">\"\nthreshold = 80\nclear = 75\nseverity = \"warning\"\n",
            )
            .unwrap()
            .rules,
        )
    }

    fn dev(id: &str) -> DeviceInfo {
        DeviceInfo::new(DeviceId::new(id).unwrap())
    }

    fn temp(v: f64) -> Vec<(String, f64)> {
        vec![("gpu.temp_c".into(), v)]
    }

    /// The alert as instance A's engine made it: fired at `at`, generation `g`.
    fn build_stored(g: u64, at: i64) -> Alert {
        let mut a = build_engine();
        for _ in 1..g {
            a.observe(&dev("rvm1"), &temp(90.0), 0);
            a.observe(&dev("rvm1"), &temp(10.0), 0);
        }
        let t = a.observe(&dev("rvm1"), &temp(90.0), at);
        assert_eq!(t.len(), 1);
        t[0].alert.clone()
    }

    fn build_counter(g: u64) -> PairCounter {
        PairCounter {
            rule: "gpu_hot".into(),
            device: DeviceId::new("rvm1").unwrap(),
            generation: g,
        }
    }

    #[test]
    fn a_device_adopted_with_a_firing_alert_is_not_notified_again_and_resolves_that_alert() {
        let mut b = build_engine();
        let stored = build_stored(2, 1_000);
        let d = DeviceId::new("rvm1").unwrap();
        let taken = b.adopt_device(
            &d,
            DeviceAlerts {
                open: vec![stored.clone()],
                generations: vec![build_counter(2)],
                cooldowns: vec![],
            },
        );
        assert_eq!(taken, vec!["gpu_hot:rvm1:2".to_string()]);
        assert!(
            b.observe(&dev("rvm1"), &temp(91.0), 5_000).is_empty(),
            "still firing: no news"
        );
        let t = b.observe(&dev("rvm1"), &temp(60.0), 9_000);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].kind, TransitionKind::Resolved);
        assert_eq!(t[0].alert.id, "gpu_hot:rvm1:2");
        assert_eq!(
            t[0].alert.fired_ms,
            Some(1_000),
            "the fired time of the instance that opened it"
        );
        // the next one is a new generation, never a reused id
        let t = b.observe(&dev("rvm1"), &temp(95.0), 10_000);
        assert_eq!(t[0].alert.id, "gpu_hot:rvm1:3");
    }

    #[test]
    fn an_alert_the_store_no_longer_has_open_goes_without_a_transition() {
        let mut b = build_engine();
        let t = b.observe(&dev("rvm1"), &temp(90.0), 0);
        assert_eq!(t[0].alert.id, "gpu_hot:rvm1:1");
        // another instance resolved it, then nothing is open
        let taken = b.adopt_device(
            &DeviceId::new("rvm1").unwrap(),
            DeviceAlerts {
                generations: vec![build_counter(1)],
                ..Default::default()
            },
        );
        assert!(taken.is_empty());
        assert!(b.active().is_empty());
        assert!(b.tick(5_000).is_empty());
        let t = b.observe(&dev("rvm1"), &temp(90.0), 6_000);
        assert_eq!(t[0].alert.id, "gpu_hot:rvm1:2");
    }

    #[test]
    fn a_lost_race_replaces_the_engines_alert_with_the_stored_one() {
        let mut b = build_engine();
        let mine = b.observe(&dev("rvm1"), &temp(90.0), 3_000)[0].alert.clone();
        assert_eq!(mine.id, "gpu_hot:rvm1:1");
        let stored = build_stored(4, 1_000);
        assert_eq!(b.adopt(stored.clone()), Some(Some(mine)));
        assert_eq!(b.active(), vec![stored]);
        assert!(b.observe(&dev("rvm1"), &temp(90.0), 4_000).is_empty());
        assert_eq!(b.export().generations[0].generation, 4);
    }

    #[test]
    fn alerts_of_unknown_rules_other_devices_or_resolved_are_not_adopted() {
        let mut b = build_engine();
        let mut other_rule = build_stored(1, 0);
        other_rule.rule = "not_here".into();
        assert_eq!(b.adopt(other_rule), None);
        let mut resolved = build_stored(1, 0);
        resolved.state = AlertState::Resolved;
        assert_eq!(b.adopt(resolved), None);
        let taken = b.adopt_device(
            &DeviceId::new("rvm2").unwrap(),
            DeviceAlerts {
                open: vec![build_stored(1, 0)],
                ..Default::default()
            },
        );
        assert!(taken.is_empty());
        assert!(b.active().is_empty());
    }

    #[test]
    fn a_stale_generation_is_renumbered_past_the_stored_one() {
        let mut b = build_engine();
        b.observe(&dev("rvm1"), &temp(90.0), 0);
        let a = b.renumber("gpu_hot:rvm1:1", 3).unwrap();
        assert_eq!((a.id.as_str(), a.generation), ("gpu_hot:rvm1:4", 4));
        assert_eq!(b.get("gpu_hot:rvm1:4").map(|a| a.generation), Some(4));
        assert_eq!(b.renumber("gpu_hot:rvm1:1", 3), None, "no longer its id");
        let t = b.observe(&dev("rvm1"), &temp(10.0), 1_000);
        assert_eq!(t[0].alert.id, "gpu_hot:rvm1:4");
    }

    #[test]
    fn generations_and_cooldowns_only_grow() {
        let mut b = build_engine();
        b.observe(&dev("rvm1"), &temp(90.0), 0);
        b.observe(&dev("rvm1"), &temp(10.0), 0);
        b.observe(&dev("rvm1"), &temp(90.0), 0);
        b.observe(&dev("rvm1"), &temp(10.0), 0);
        let d = DeviceId::new("rvm1").unwrap();
        b.adopt_device(
            &d,
            DeviceAlerts {
                generations: vec![build_counter(1)],
                cooldowns: vec![PairCooldown {
                    rule: "gpu_hot".into(),
                    device: d.clone(),
                    until_ms: 50_000,
                }],
                ..Default::default()
            },
        );
        assert!(
            b.observe(&dev("rvm1"), &temp(90.0), 20_000).is_empty(),
            "cooling down"
        );
        let t = b.observe(&dev("rvm1"), &temp(90.0), 50_000);
        assert_eq!(t[0].alert.id, "gpu_hot:rvm1:3", "the local counter was higher");
    }
}
