//! The interlock (pure): the vision service's "do not disturb", from its application metrics
//! or an explicit signal, with a staleness limit.

use common::command::Action;
use common::{Reading, Telemetry};
use serde::Serialize;

/// The application metric (in `Telemetry::app`) the vision service sets to 1 during a
/// transaction (`app.transaction_active` in flat metric names).
pub const TRANSACTION_METRIC: &str = "transaction_active";
/// Without a fresh interlock signal for this long, the service counts as not busy.
pub const INTERLOCK_STALE_AFTER_MS: i64 = 30_000;

/// The vision service's "do not disturb": while it reports a transaction in progress,
/// disruptive actions are refused. A signal older than [`INTERLOCK_STALE_AFTER_MS`] no
/// longer counts (a dead service must not block its own recovery forever).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Interlock {
    busy: bool,
    last_signal_ms: Option<i64>,
}

impl Interlock {
    pub fn new() -> Self {
        Self::default()
    }

    /// An explicit signal from the vision service.
    pub fn set_busy(&mut self, busy: bool, now_ms: i64) {
        self.busy = busy;
        self.last_signal_ms = Some(now_ms);
    }

    /// Reads `transaction_active` from application metrics taken at `at_ms` (the time the
    /// service reported them). Returns whether the metric was there.
    pub fn observe_app_metrics(&mut self, app: &[Reading], at_ms: i64) -> bool {
        match app.iter().find(|r| r.name == TRANSACTION_METRIC) {
            Some(r) if r.value.is_finite() => {
                self.set_busy(r.value >= 0.5, at_ms);
                true
            }
            _ => false,
        }
    }

    /// [`Interlock::observe_app_metrics`] on a telemetry record.
    pub fn observe_telemetry(&mut self, telemetry: &Telemetry, at_ms: i64) -> bool {
        self.observe_app_metrics(&telemetry.app, at_ms)
    }

    /// Busy by a signal younger than [`INTERLOCK_STALE_AFTER_MS`]. A signal up to that much
    /// in the future (the wall clock stepped back) still counts; one further off does not.
    pub fn is_busy(&self, now_ms: i64) -> bool {
        self.busy
            && self
                .last_signal_ms
                .is_some_and(|at| (now_ms - at).abs() < INTERLOCK_STALE_AFTER_MS)
    }

    /// Actions that would interrupt a transaction: restarts of services, processes, the
    /// network, and reboot. Freeing caches, cleaning temp files and collecting diagnostics
    /// do not.
    pub fn guards(action: &Action) -> bool {
        matches!(
            action,
            Action::RestartUnit { .. }
                | Action::RestartProcess { .. }
                | Action::RestartNetwork { .. }
                | Action::Reboot
                | Action::ResetCamera { .. }
        )
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::policy::tests::{S, build_health, build_recovery, vision_restart};
    use crate::recovery::policy::{Decision, RecoveryPolicy, Source};

    #[test]
    fn the_interlock_blocks_disruptive_actions_until_its_signal_is_stale() {
        let mut p = RecoveryPolicy::new(&build_recovery(true), &build_health());
        let mut lock = Interlock::new();
        let app = vec![Reading::new("fps", 30.0), Reading::new(TRANSACTION_METRIC, 1.0)];
        assert!(lock.observe_app_metrics(&app, 0));
        assert!(lock.is_busy(29_999));
        assert!(
            lock.is_busy(-1_000),
            "a clock stepped back a little keeps the signal"
        );
        assert!(
            !lock.is_busy(-INTERLOCK_STALE_AFTER_MS),
            "one stepped back far does not"
        );
        assert!(
            !lock.is_busy(INTERLOCK_STALE_AFTER_MS),
            "a silent service does not block for ever"
        );
        assert_eq!(
            p.decide(&vision_restart(), &Source::Local, &lock, 10 * S),
            Decision::Refused("interlock: transaction in progress".into())
        );
        assert!(
            p.decide(&Action::DropCaches, &Source::Local, &lock, 10 * S)
                .is_allowed(),
            "freeing caches does not disturb a transaction"
        );
        assert!(
            p.decide(&vision_restart(), &Source::Local, &lock, 30 * S)
                .is_allowed()
        );
        let t = Telemetry {
            app: vec![Reading::new(TRANSACTION_METRIC, 0.0)],
            ..Default::default()
        };
        assert!(lock.observe_telemetry(&t, 40 * S));
        assert!(!lock.is_busy(41 * S));
        assert!(!lock.observe_app_metrics(&[Reading::new("fps", 1.0)], 42 * S));
    }
}
