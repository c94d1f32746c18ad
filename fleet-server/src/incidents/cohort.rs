//! Cohort regression: one rule fires on at least `min_pct` (and `min_devices`) of the machines
//! sharing an attribute value (`vision_model_version = v3.3`) while at most `max_others_pct`
//! of the (at least `min_others`) other machines fire it; machines without the attribute count
//! as others. One incident per rule at a time, naming the attribute that separates best. If
//! the rule later spreads past `max_others_pct` of the others, the incident is *withdrawn*
//! (the explanation no longer holds).

use std::collections::BTreeMap;

use common::DeviceId;

use super::Correlator;
use super::incident::{FiringAlert, FleetView, Incident, IncidentChange, IncidentKind, IncidentState};

impl Correlator {
    pub(super) fn cohort(
        &mut self,
        alert: &FiringAlert,
        devices: &FleetView,
        now_ms: i64,
        out: &mut Vec<IncidentChange>,
    ) {
        // An offline alert explained by a site outage says nothing about versions.
        if self.suppressed.contains(&alert.id) {
            return;
        }
        let attrs_of = |d: &DeviceId| devices.get(d).map(|d| &d.attrs);
        let open = self.find_open(|i| {
            i.kind == IncidentKind::CohortRegression && i.rule.as_deref() == Some(&alert.rule)
        });
        if let Some(id) = open {
            let cohort = self
                .open
                .get(&id)
                .and_then(|i| Some((i.attribute.clone()?, i.attribute_value.clone()?)));
            let Some((key, value)) = cohort else {
                return;
            };
            if attrs_of(&alert.device).and_then(|a| a.get(&key)) == Some(&value) {
                self.join(&id, alert, now_ms, out);
                return;
            }
            // A machine outside the cohort fails too: does the explanation still hold?
            let (n_out, f_out) = devices
                .iter()
                .filter(|d| d.attrs.get(&key) != Some(&value))
                .fold((0usize, 0usize), |(n, f), d| {
                    (n + 1, f + usize::from(self.is_failing(&alert.rule, &d.id)))
                });
            if f_out as f64 * 100.0 <= self.config.cohort.max_others_pct * n_out as f64 {
                return;
            }
            let reason = format!("{f_out} of {n_out} machines without it fire {} too", alert.rule);
            self.close(&id, now_ms, Some(reason), out);
            // Fall through: another attribute may explain it now.
        }
        let Some(my_attrs) = attrs_of(&alert.device) else {
            return;
        };
        let failing: BTreeMap<&DeviceId, &FiringAlert> = self
            .firing
            .values()
            .filter(|f| f.rule == alert.rule && !self.suppressed.contains(&f.id))
            .map(|f| (&f.device, f))
            .collect();
        let cfg = &self.config.cohort;
        // (separation, attr, value, in-group count, in-group firing, others, others firing)
        let mut qualified: Vec<(f64, &str, &str, usize, usize, usize, usize)> = Vec::new();
        for attr in &cfg.attrs {
            let Some(value) = my_attrs.get(attr) else {
                continue;
            };
            let (mut n_in, mut f_in, mut n_out, mut f_out) = (0usize, 0usize, 0usize, 0usize);
            for d in devices.iter() {
                let fails = failing.contains_key(&d.id);
                if d.attrs.get(attr) == Some(value) {
                    n_in += 1;
                    f_in += usize::from(fails);
                } else {
                    n_out += 1;
                    f_out += usize::from(fails);
                }
            }
            let group_fails =
                f_in >= cfg.min_devices && n_in > 0 && f_in as f64 * 100.0 >= cfg.min_pct * n_in as f64;
            let others_fine =
                n_out >= cfg.min_others && f_out as f64 * 100.0 <= cfg.max_others_pct * n_out as f64;
            if group_fails && others_fine {
                let separation = f_in as f64 / n_in as f64 - f_out as f64 / n_out as f64;
                qualified.push((separation, attr, value, n_in, f_in, n_out, f_out));
            }
        }
        // Highest separation; on a tie the attribute listed first (stable sort keeps order).
        qualified.sort_by(|a, b| b.0.total_cmp(&a.0));
        let Some(&(_, attr, value, n_in, f_in, n_out, f_out)) = qualified.first() else {
            return;
        };
        let also: Vec<String> = qualified
            .iter()
            .skip(1)
            .map(|(_, a, v, ..)| format!("{a} = {v}"))
            .collect();
        let mut probable_cause = format!(
            "{attr} = {value}: {f_in} of {n_in} machines with it fire {}, {f_out} of {n_out} without it",
            alert.rule
        );
        if !also.is_empty() {
            probable_cause.push_str(&format!(" (the same machines also share {})", also.join(", ")));
        }
        let mut group: Vec<&FiringAlert> = failing
            .values()
            .filter(|f| attrs_of(&f.device).and_then(|a| a.get(attr)) == Some(&value.to_string()))
            .copied()
            .collect();
        group.sort_by(|a, b| (a.fired_ms, &a.id).cmp(&(b.fired_ms, &b.id)));
        let members: Vec<String> = group.iter().map(|f| f.id.clone()).collect();
        let mut devs: Vec<DeviceId> = group.iter().map(|f| f.device.clone()).collect();
        devs.sort();
        let incident = Incident {
            id: String::new(),
            kind: IncidentKind::CohortRegression,
            title: format!("{} on machines with {attr} = {value}", alert.rule),
            probable_cause,
            site: None,
            attribute: Some(attr.to_string()),
            attribute_value: Some(value.to_string()),
            rule: Some(alert.rule.clone()),
            metric: Some(alert.metric.clone()),
            devices: devs,
            members: members.clone(),
            active_members: members,
            suppresses_members: false,
            opened_ms: now_ms,
            updated_ms: now_ms,
            resolved_ms: None,
            state: IncidentState::Open,
        };
        self.open_incident(incident, Vec::new(), now_ms, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::alert::DeviceInfo;
    use crate::incidents::incident::IncidentChangeKind;
    use crate::incidents::testkit::*;

    fn build_cohort_fleet() -> Vec<DeviceInfo> {
        // 6 machines on v3.3, 14 on v3.2; nothing else differs.
        (0..20)
            .map(|i| {
                let model = if i < 6 { "v3.3" } else { "v3.2" };
                build_device(
                    &format!("rvm{i}"),
                    "oslo",
                    &[
                        ("agent_version", "1.4.0"),
                        ("vision_model_version", model),
                        ("jetpack", "6.0"),
                    ],
                )
            })
            .collect()
    }

    fn slow_inference(h: &mut Harness, ids: &[usize]) {
        for (n, i) in ids.iter().enumerate() {
            let id = format!("rvm{i}");
            let at = n as i64 * 5 * S;
            h.feed(&id, &[("app.inference_ms", 400.0)], at);
            h.feed(&id, &[("app.inference_ms", 400.0)], at + 60 * S);
        }
    }

    #[test]
    fn one_rule_failing_on_one_model_version_only_is_a_cohort_regression() {
        let mut h = Harness::build(build_cohort_fleet());
        slow_inference(&mut h, &[0, 1, 2, 3]);
        let opened = h.opened();
        assert_eq!(opened.len(), 1, "{opened:#?}");
        let inc = opened[0];
        assert_eq!(inc.kind, IncidentKind::CohortRegression);
        assert_eq!(inc.rule.as_deref(), Some("inference_slow"));
        assert_eq!(
            (inc.attribute.as_deref(), inc.attribute_value.as_deref()),
            (Some("vision_model_version"), Some("v3.3"))
        );
        assert!(
            inc.probable_cause.starts_with("vision_model_version = v3.3"),
            "{}",
            inc.probable_cause
        );
        assert_eq!(inc.members.len(), 3, "opened at the third failing machine");
        assert!(!inc.suppresses_members);
        // The fourth joins; everything resolving resolves the incident.
        assert_eq!(h.corr.open()[0].members.len(), 4);
        for i in 0..4 {
            h.feed(&format!("rvm{i}"), &[("app.inference_ms", 50.0)], 500 * S);
        }
        assert!(h.corr.open().is_empty());
    }

    #[test]
    fn a_rule_failing_on_other_versions_too_is_not_a_cohort_regression() {
        let mut h = Harness::build(build_cohort_fleet());
        slow_inference(&mut h, &[6, 7, 0, 1, 2, 3]);
        assert!(h.opened().is_empty(), "{:#?}", h.opened());
    }

    #[test]
    fn a_cohort_regression_is_withdrawn_when_other_versions_start_failing() {
        let mut h = Harness::build(build_cohort_fleet());
        slow_inference(&mut h, &[0, 1, 2, 6]);
        assert_eq!(h.opened().len(), 1);
        assert_eq!(
            h.corr.open().len(),
            1,
            "1 of 14 others (7 %) does not withdraw it"
        );
        slow_inference(&mut h, &[7]);
        assert!(h.corr.open().is_empty());
        let last = h.changes.last().unwrap();
        assert_eq!(last.kind, IncidentChangeKind::Withdrawn);
        assert_eq!(last.incident.state, IncidentState::Withdrawn);
        assert!(
            last.incident.probable_cause.contains("withdrawn: 2 of 14"),
            "{}",
            last.incident.probable_cause
        );
    }

    #[test]
    fn a_version_on_too_few_machines_is_not_a_cohort_regression() {
        let mut h = Harness::build(build_cohort_fleet());
        slow_inference(&mut h, &[0, 1]);
        assert!(h.opened().is_empty());
    }
}
