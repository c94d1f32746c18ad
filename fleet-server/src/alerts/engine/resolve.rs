//! Resolving by hand: a person closes a firing alert their samples do not (a sensor that
//! stopped reporting, a fault fixed while the machine is off). The alert leaves the engine
//! like one whose value crossed `clear`: a `Resolved` transition (notifiers send the
//! resolution), the rule's cooldown for its (rule, device) pair, the history. It carries
//! [`Resolution`] (who, when, the comment), so its history says a person closed it. If the
//! condition still holds after the cooldown, a new alert (the next generation) starts.

use super::{AlertEngine, AlertError, parse_alert_id, push_history};
use crate::alerts::alert::{Alert, AlertState, Resolution, Transition, TransitionKind};

impl AlertEngine {
    /// Resolves the firing alert `alert_id` as `who` with `comment`. A pending alert has not
    /// fired (there is nothing to resolve: refused), a resolved one is refused too.
    pub fn resolve_by_hand(
        &mut self,
        alert_id: &str,
        who: &str,
        comment: &str,
        now_ms: i64,
    ) -> Result<Transition, AlertError> {
        if who.trim().is_empty() {
            return Err(AlertError::Invalid("a resolve needs who".into()));
        }
        let key = parse_alert_id(alert_id)
            .filter(|k| self.active.get(k).is_some_and(|a| a.id == alert_id))
            .ok_or_else(|| {
                if self.history.iter().any(|a| a.id == alert_id) {
                    AlertError::NotActive(alert_id.to_string())
                } else {
                    AlertError::UnknownAlert(alert_id.to_string())
                }
            })?;
        if self
            .active
            .get(&key)
            .is_some_and(|a| a.state != AlertState::Firing)
        {
            return Err(AlertError::NotFiring(alert_id.to_string()));
        }
        let Some(mut a): Option<Alert> = self.active.remove(&key) else {
            return Err(AlertError::UnknownAlert(alert_id.to_string()));
        };
        let rule = self
            .by_name
            .get(&a.rule)
            .and_then(|i| self.rules.get(*i))
            .or_else(|| self.check_rules.get(&key));
        if let Some(cooldown) = rule.map(|r| r.cooldown_ms).filter(|c| *c > 0) {
            self.cooldown_until.insert(key.clone(), now_ms + cooldown);
        }
        self.check_rules.remove(&key);
        a.state = AlertState::Resolved;
        a.resolved_ms = Some(now_ms);
        a.resolved_by = Some(Resolution {
            by: who.to_string(),
            at_ms: now_ms,
            comment: comment.to_string(),
        });
        let t = Transition::of(TransitionKind::Resolved, &a, now_ms);
        push_history(&mut self.history, self.history_cap, a);
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use common::DeviceId;

    use super::*;
    use crate::alerts::alert::DeviceInfo;
    use crate::alerts::rules::parse_rules;

    const S: i64 = 1000;

    fn build_engine(extra: &str) -> AlertEngine {
        AlertEngine::new(
            parse_rules(&format!(
                "[[rules]]\nname = \"cpu_high\"\nmetric = \"cpu.usage_pct\"\nop = \">\"\nthreshold = 80\nseverity = \"warning\"\n{extra}"
            ))
            .unwrap()
            .rules,
        )
    }

    fn cpu(v: f64) -> Vec<(String, f64)> {
        vec![("cpu.usage_pct".into(), v)]
    }

    #[test]
    fn a_firing_alert_resolved_by_hand_goes_to_history_with_who_and_why() {
        let mut e = build_engine("cooldown_s = 60\n");
        let d = DeviceInfo::new(DeviceId::new("rvm1").unwrap());
        e.observe(&d, &cpu(90.0), 0);
        let t = e
            .resolve_by_hand("cpu_high:rvm1:1", "bob", "fan replaced", 5 * S)
            .unwrap();
        assert_eq!(t.kind, TransitionKind::Resolved);
        assert_eq!(t.alert.resolved_ms, Some(5 * S));
        assert_eq!(
            t.alert.resolved_by,
            Some(Resolution {
                by: "bob".into(),
                at_ms: 5 * S,
                comment: "fan replaced".into()
            })
        );
        assert!(e.active().is_empty());
        assert_eq!(e.history().last(), Some(&t.alert));
        // twice: it is resolved now
        assert_eq!(
            e.resolve_by_hand("cpu_high:rvm1:1", "bob", "", 6 * S),
            Err(AlertError::NotActive("cpu_high:rvm1:1".into()))
        );
        // the cooldown holds the still-breaching samples back, then a new alert starts
        assert!(e.observe(&d, &cpu(90.0), 30 * S).is_empty());
        let again = e.observe(&d, &cpu(90.0), 70 * S);
        assert_eq!(again[0].alert.id, "cpu_high:rvm1:2");
        assert_eq!(again[0].alert.resolved_by, None);
    }

    #[test]
    fn pending_unknown_and_anonymous_resolves_are_refused() {
        let mut e = build_engine("for_s = 60\n");
        let d = DeviceInfo::new(DeviceId::new("rvm1").unwrap());
        e.observe(&d, &cpu(90.0), 0);
        assert_eq!(
            e.resolve_by_hand("cpu_high:rvm1:1", "bob", "", S),
            Err(AlertError::NotFiring("cpu_high:rvm1:1".into()))
        );
        assert_eq!(
            e.resolve_by_hand("cpu_high:rvm9:1", "bob", "", S),
            Err(AlertError::UnknownAlert("cpu_high:rvm9:1".into()))
        );
        assert_eq!(
            e.resolve_by_hand("nonsense", "bob", "", S),
            Err(AlertError::UnknownAlert("nonsense".into()))
        );
        assert!(matches!(
            e.resolve_by_hand("cpu_high:rvm1:1", " ", "", S),
            Err(AlertError::Invalid(_))
        ));
        assert_eq!(e.active().len(), 1, "nothing refused changed the engine");
    }
}
