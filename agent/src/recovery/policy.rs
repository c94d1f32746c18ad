//! The policy (pure): the escalation ladders and the gate every action passes (enabled,
//! allow-list, `allow_reboot`, allowed targets, interlock, rate limits). Time is an argument.

use std::collections::{HashMap, HashSet, VecDeque};

use common::command::Action;
use common::{ActionOutcome, HealthReport, HealthStatus};
use serde::Serialize;

use super::config::{Ladder, RecoveryConfig, default_retry_after_s, secs_to_ms};
use super::interlock::Interlock;
use crate::health::config::HealthConfig;
use crate::shared::names::{valid_camera_name, valid_interface_name, valid_process_name, valid_unit_name};

/// A refused ladder step is tried again after this long (or when its rate limit frees).
pub const REFUSED_RETRY_AFTER_MS: i64 = 30_000;
/// Window of `max_actions_per_hour`.
pub const RATE_WINDOW_MS: i64 = 3_600_000;
/// Window of `max_reboots_per_day`.
pub const REBOOT_WINDOW_MS: i64 = 86_400_000;
/// At most this many camera ladders are made as camera checks appear.
pub const MAX_CAMERA_LADDERS: usize = 32;

/// Who asked for an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The agent's own ladder.
    Local,
    /// A verified command, by its id.
    Remote(String),
}

impl Source {
    pub fn describe(&self) -> String {
        match self {
            Source::Local => "local".into(),
            Source::Remote(id) => format!("command {id}"),
        }
    }
}

/// The gate's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Not attempted; the reason goes into the event's detail.
    Refused(String),
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed)
    }
}

/// A ladder step that is due.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedAction {
    /// The failing check whose ladder this is.
    pub check: String,
    /// 0-based index of the step.
    pub step: usize,
    /// Steps in the ladder.
    pub of: usize,
    pub action: Action,
}

impl PlannedAction {
    /// `ladder unit:vision.service step 2/3`.
    pub fn describe(&self) -> String {
        format!("ladder {} step {}/{}", self.check, self.step + 1, self.of)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct LadderState {
    /// Index of the next step.
    step: usize,
    next_due_ms: i64,
    /// Since when the check is ok (or absent) again.
    ok_since_ms: Option<i64>,
    /// This run of the ladder escalated already (once per run: no loop).
    escalated: bool,
}

/// A ladder that ran out of steps with its check still critical: a person is needed.
#[derive(Debug, Clone, PartialEq)]
pub struct Escalation {
    pub check: String,
    /// The steps the ladder had (`restart_unit(vision.service)`, ...), skipped ones left out.
    pub tried: Vec<String>,
}

/// One ladder's progress, for the status page and tests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LadderSnapshot {
    pub check: String,
    pub next_step: usize,
    pub steps: usize,
    pub next_due_ms: i64,
    pub ok_since_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicySnapshot {
    pub enabled: bool,
    pub ladders: Vec<LadderSnapshot>,
    /// Allowed actions in the last day: `restart_unit(vision.service)` and when.
    pub recent_actions: Vec<(String, i64)>,
}

/// The escalation ladders and the gate every action passes. Pure: time is an argument.
#[derive(Debug, Clone)]
pub struct RecoveryPolicy {
    enabled: bool,
    allowed: HashSet<String>,
    allow_reboot: bool,
    units: HashSet<String>,
    processes: HashSet<String>,
    interfaces: HashSet<String>,
    max_per_hour: usize,
    max_reboots_per_day: usize,
    reset_after_ok_ms: i64,
    ladders: Vec<Ladder>,
    states: HashMap<String, LadderState>,
    /// Allowed actions and when, oldest first, the last [`REBOOT_WINDOW_MS`].
    history: VecDeque<(Action, i64)>,
    /// Makes camera ladders as camera checks appear (see [`RecoveryConfig::camera_ladder_for`]).
    config: RecoveryConfig,
    camera_ladders: usize,
    /// Escalations decided by [`RecoveryPolicy::on_health`], not yet taken.
    escalations: Vec<Escalation>,
}

impl RecoveryPolicy {
    pub fn new(cfg: &RecoveryConfig, health: &HealthConfig) -> Self {
        Self {
            enabled: cfg.enabled,
            allowed: cfg.allowed_actions.iter().cloned().collect(),
            allow_reboot: cfg.allow_reboot,
            units: health
                .systemd_units
                .iter()
                .chain(&cfg.extra_units)
                .cloned()
                .collect(),
            processes: health
                .watch_processes
                .iter()
                .chain(&cfg.extra_processes)
                .cloned()
                .collect(),
            interfaces: cfg.network_interfaces.iter().cloned().collect(),
            max_per_hour: cfg.max_actions_per_hour as usize,
            max_reboots_per_day: cfg.max_reboots_per_day as usize,
            reset_after_ok_ms: secs_to_ms(cfg.reset_after_ok_s),
            ladders: cfg.ladders(health),
            states: HashMap::new(),
            history: VecDeque::new(),
            config: cfg.clone(),
            camera_ladders: 0,
            escalations: Vec::new(),
        }
    }

    /// The escalations the last calls of [`RecoveryPolicy::on_health`] decided; each is
    /// returned once. The actor reports each as a critical `escalate` event.
    pub fn take_escalations(&mut self) -> Vec<Escalation> {
        std::mem::take(&mut self.escalations)
    }

    /// Adds the camera ladder of every critical camera check that has none yet.
    fn add_camera_ladders(&mut self, report: &HealthReport) {
        for c in &report.checks {
            if c.status != HealthStatus::Critical
                || self.camera_ladders >= MAX_CAMERA_LADDERS
                || self.ladders.iter().any(|l| l.check == c.name)
            {
                continue;
            }
            if let Some(l) = self.config.camera_ladder_for(&c.name) {
                self.ladders.push(l);
                self.camera_ladders += 1;
            }
        }
    }

    pub fn ladders(&self) -> &[Ladder] {
        &self.ladders
    }

    /// Why config alone forbids `action` (allow-list, `allow_reboot`, targets), if it does.
    fn config_refusal(&self, action: &Action) -> Option<String> {
        let name = action.name();
        if !self.allowed.contains(name) {
            return Some(format!("{name} is not in recovery.allowed_actions"));
        }
        match action {
            Action::Reboot if !self.allow_reboot => Some("reboot needs recovery.allow_reboot = true".into()),
            Action::RestartUnit { unit } => {
                valid_unit_name(unit).err().map(|e| e.to_string()).or_else(|| {
                    (!self.units.contains(unit)).then(|| {
                        format!("unit {unit} is not in health.systemd_units or recovery.extra_units")
                    })
                })
            }
            Action::RestartProcess { name } => {
                valid_process_name(name).err().map(|e| e.to_string()).or_else(|| {
                    (!self.processes.contains(name)).then(|| {
                        format!("process {name} is not in health.watch_processes or recovery.extra_processes")
                    })
                })
            }
            Action::RestartNetwork { interface } => valid_interface_name(interface)
                .err()
                .map(|e| e.to_string())
                .or_else(|| {
                    (!self.interfaces.contains(interface))
                        .then(|| format!("interface {interface} is not in recovery.network_interfaces"))
                }),
            Action::ResetCamera { camera } => {
                valid_camera_name(camera)
                    .err()
                    .map(|e| e.to_string())
                    .or_else(|| {
                        self.config
                            .camera_reset_command
                            .is_empty()
                            .then(|| "recovery.camera_reset_command is not set".to_string())
                    })
            }
            _ => None,
        }
    }

    fn prune(&mut self, now_ms: i64) {
        while self
            .history
            .front()
            .is_some_and(|(_, at)| now_ms - at >= REBOOT_WINDOW_MS)
        {
            self.history.pop_front();
        }
    }

    /// Times of allowed runs of the same action on the same target within the hour.
    fn recent_same(&self, action: &Action, now_ms: i64) -> Vec<i64> {
        self.history
            .iter()
            .filter(|(a, at)| {
                a.name() == action.name() && a.target() == action.target() && now_ms - at < RATE_WINDOW_MS
            })
            .map(|(_, at)| *at)
            .collect()
    }

    fn recent_reboots(&self, now_ms: i64) -> Vec<i64> {
        self.history
            .iter()
            .filter(|(a, at)| *a == Action::Reboot && now_ms - at < REBOOT_WINDOW_MS)
            .map(|(_, at)| *at)
            .collect()
    }

    /// Why the rate limits refuse `action` now, and when they would allow it.
    fn rate_refusal(&self, action: &Action, now_ms: i64) -> Option<(String, i64)> {
        let same = self.recent_same(action, now_ms);
        if same.len() >= self.max_per_hour {
            let free_at = same[same.len() - self.max_per_hour] + RATE_WINDOW_MS;
            return Some((
                format!(
                    "rate limit: {action} ran {} time(s) in the last hour (max {})",
                    same.len(),
                    self.max_per_hour
                ),
                free_at,
            ));
        }
        if *action == Action::Reboot {
            let reboots = self.recent_reboots(now_ms);
            if reboots.len() >= self.max_reboots_per_day {
                let free_at = reboots[reboots.len() - self.max_reboots_per_day] + REBOOT_WINDOW_MS;
                return Some((
                    format!(
                        "rate limit: {} reboot(s) in the last 24 h (max {})",
                        reboots.len(),
                        self.max_reboots_per_day
                    ),
                    free_at,
                ));
            }
        }
        None
    }

    /// The ladder steps due now for the report's critical checks. A step whose action config
    /// forbids (not allowed, reboot without `allow_reboot`, unknown target) is skipped and
    /// never planned. Each planned action must be answered with
    /// [`RecoveryPolicy::record_outcome`]; until then the same step is planned again only
    /// after its ladder's `retry_after`.
    pub fn on_health(&mut self, report: &HealthReport, now_ms: i64) -> Vec<PlannedAction> {
        self.prune(now_ms);
        let mut planned: Vec<PlannedAction> = Vec::new();
        if !self.enabled {
            return planned;
        }
        self.add_camera_ladders(report);
        for li in 0..self.ladders.len() {
            let ladder = &self.ladders[li];
            let status = report
                .checks
                .iter()
                .find(|c| c.name == ladder.check)
                .map(|c| c.status);
            let check = ladder.check.clone();
            if status != Some(HealthStatus::Critical) {
                if let Some(st) = self.states.get_mut(&check) {
                    if status == Some(HealthStatus::Warn) {
                        st.ok_since_ms = None;
                    } else {
                        let since = *st.ok_since_ms.get_or_insert(now_ms);
                        if now_ms - since >= self.reset_after_ok_ms {
                            self.states.remove(&check);
                        }
                    }
                }
                continue;
            }
            let (grace_ms, escalate) = (ladder.grace_ms, ladder.escalate);
            let skip: Vec<bool> = ladder
                .steps
                .iter()
                .map(|a| self.config_refusal(a).is_some())
                .collect();
            let tried: Vec<String> = ladder
                .steps
                .iter()
                .zip(&skip)
                .filter(|(_, s)| !**s)
                .map(|(a, _)| a.to_string())
                .collect();
            let st = self.states.entry(check.clone()).or_insert(LadderState {
                step: 0,
                next_due_ms: now_ms.saturating_add(grace_ms),
                ok_since_ms: None,
                escalated: false,
            });
            st.ok_since_ms = None;
            while st.step < skip.len() && skip[st.step] {
                st.step += 1;
            }
            if st.step >= skip.len() {
                // out of steps: still critical once the last step had its time, a person is
                // needed; said once per run of the ladder
                if escalate && !st.escalated && now_ms >= st.next_due_ms {
                    st.escalated = true;
                    self.escalations.push(Escalation { check, tried });
                }
                continue;
            }
            if now_ms < st.next_due_ms {
                continue;
            }
            let ladder = &self.ladders[li];
            let action = ladder.steps[st.step].clone();
            if planned.iter().any(|p| p.action == action) {
                // another ladder already asks for the same thing this round
                continue;
            }
            st.next_due_ms = now_ms.saturating_add(ladder.retry_after_ms);
            planned.push(PlannedAction {
                check,
                step: st.step,
                of: ladder.steps.len(),
                action,
            });
        }
        planned
    }

    /// Moves a ladder on after its planned step ran (succeeded or failed), or holds it after
    /// a refusal: the step is tried again after [`REFUSED_RETRY_AFTER_MS`], or when the rate
    /// limit that refused it frees.
    pub fn record_outcome(&mut self, planned: &PlannedAction, outcome: ActionOutcome, now_ms: i64) {
        let retry_ms = self
            .ladders
            .iter()
            .find(|l| l.check == planned.check)
            .map_or(secs_to_ms(default_retry_after_s()), |l| l.retry_after_ms);
        let free_at = self
            .rate_refusal(&planned.action, now_ms)
            .map_or(now_ms, |(_, at)| at);
        let Some(st) = self.states.get_mut(&planned.check) else {
            return;
        };
        if st.step != planned.step {
            return;
        }
        match outcome {
            ActionOutcome::Refused => {
                st.next_due_ms = now_ms.saturating_add(REFUSED_RETRY_AFTER_MS).max(free_at);
            }
            ActionOutcome::Succeeded | ActionOutcome::Failed => {
                st.step += 1;
                st.next_due_ms = now_ms.saturating_add(retry_ms);
            }
        }
    }

    /// The gate: `enabled` (local actions only), the allow-list, `allow_reboot`, the allowed
    /// targets, the interlock, then the rate limits. An allowed action counts against the
    /// rate limits from now on, so call this right before executing.
    pub fn decide(
        &mut self,
        action: &Action,
        source: &Source,
        interlock: &Interlock,
        now_ms: i64,
    ) -> Decision {
        let d = self.would_decide(action, source, interlock, now_ms);
        if d == Decision::Allowed {
            self.history.push_back((action.clone(), now_ms));
        }
        d
    }

    /// What [`RecoveryPolicy::decide`] would answer now, recording nothing: a dry run does
    /// not use up a rate limit.
    pub fn would_decide(
        &mut self,
        action: &Action,
        source: &Source,
        interlock: &Interlock,
        now_ms: i64,
    ) -> Decision {
        self.prune(now_ms);
        if !self.enabled && *source == Source::Local {
            return Decision::Refused("local recovery is off (recovery.enabled = false)".into());
        }
        if let Some(reason) = self.config_refusal(action) {
            return Decision::Refused(reason);
        }
        if Interlock::guards(action) && interlock.is_busy(now_ms) {
            return Decision::Refused("interlock: transaction in progress".into());
        }
        if let Some((reason, _)) = self.rate_refusal(action, now_ms) {
            return Decision::Refused(reason);
        }
        Decision::Allowed
    }

    /// Allowed actions of the last day, oldest first: persist them to keep rate limits across
    /// restarts and reboots.
    pub fn history(&self) -> Vec<(Action, i64)> {
        self.history.iter().cloned().collect()
    }

    /// Puts persisted history back (before any decision); entries older than a day are dropped.
    pub fn restore_history(&mut self, entries: impl IntoIterator<Item = (Action, i64)>, now_ms: i64) {
        let mut all: Vec<(Action, i64)> = self.history.drain(..).chain(entries).collect();
        all.sort_by_key(|(_, at)| *at);
        self.history = all.into();
        self.prune(now_ms);
    }

    pub fn snapshot(&self) -> PolicySnapshot {
        let mut ladders: Vec<LadderSnapshot> = self
            .ladders
            .iter()
            .filter_map(|l| {
                self.states.get(&l.check).map(|st| LadderSnapshot {
                    check: l.check.clone(),
                    next_step: st.step,
                    steps: l.steps.len(),
                    next_due_ms: st.next_due_ms,
                    ok_since_ms: st.ok_since_ms,
                })
            })
            .collect();
        ladders.sort_by(|a, b| a.check.cmp(&b.check));
        PolicySnapshot {
            enabled: self.enabled,
            ladders,
            recent_actions: self.history.iter().map(|(a, at)| (a.to_string(), *at)).collect(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use common::{CheckResult, Event, EventKind, Severity};

    use super::*;
    use crate::recovery::config::LadderRule;
    use crate::recovery::events::{escalation_event, event_with_origin};
    use crate::recovery::executor::{Executor, RecordingExecutor};

    pub(crate) const S: i64 = 1000;

    pub(crate) fn build_health() -> HealthConfig {
        HealthConfig {
            systemd_units: vec!["vision.service".into()],
            watch_processes: vec!["vision".into()],
            ..Default::default()
        }
    }

    pub(crate) fn build_recovery(allow_reboot: bool) -> RecoveryConfig {
        RecoveryConfig {
            allow_reboot,
            ..Default::default()
        }
    }

    pub(crate) fn build_report(check: &str, status: HealthStatus) -> HealthReport {
        HealthReport {
            status,
            checks: vec![CheckResult {
                name: check.into(),
                status,
                message: format!("{check} is {status:?}"),
            }],
            actors: vec![],
        }
    }

    pub(crate) fn vision_restart() -> Action {
        Action::RestartUnit {
            unit: "vision.service".into(),
        }
    }

    /// The Recovery actor's loop, without threads: plan, gate, execute, record, report.
    struct Harness {
        policy: RecoveryPolicy,
        interlock: Interlock,
        executor: RecordingExecutor,
        planned: Vec<PlannedAction>,
        events: Vec<(i64, Event)>,
    }

    impl Harness {
        fn new(recovery: RecoveryConfig) -> Self {
            Self {
                policy: RecoveryPolicy::new(&recovery, &build_health()),
                interlock: Interlock::new(),
                executor: RecordingExecutor::new(),
                planned: Vec::new(),
                events: Vec::new(),
            }
        }

        fn tick(&mut self, report: &HealthReport, now_ms: i64) {
            for p in self.policy.on_health(report, now_ms) {
                self.planned.push(p.clone());
                let (outcome, detail) =
                    match self
                        .policy
                        .decide(&p.action, &Source::Local, &self.interlock, now_ms)
                    {
                        Decision::Allowed => {
                            let out = self.executor.execute(&p.action);
                            (out.outcome(), out.output)
                        }
                        Decision::Refused(reason) => (ActionOutcome::Refused, reason),
                    };
                self.policy.record_outcome(&p, outcome, now_ms);
                self.events.push((
                    now_ms,
                    event_with_origin(&p.action, outcome, detail, &p.describe()),
                ));
            }
            for e in self.policy.take_escalations() {
                self.events.push((now_ms, escalation_event(&e)));
            }
        }

        fn outcomes(&self) -> Vec<(i64, String, ActionOutcome, String)> {
            self.events
                .iter()
                .map(|(at, e)| match &e.kind {
                    EventKind::Recovery {
                        action,
                        target,
                        outcome,
                        ..
                    } => (*at / S, action.clone(), *outcome, target.clone()),
                    other => panic!("not a recovery event: {other:?}"),
                })
                .collect()
        }
    }

    #[test]
    fn a_watched_unit_that_keeps_failing_gets_restart_restart_then_reboot_only_when_the_interlock_allows() {
        let mut h = Harness::new(build_recovery(true));
        let failing = build_report("unit:vision.service", HealthStatus::Critical);
        for t in (0..=900).step_by(10) {
            let now = t * S;
            if (200..=260).contains(&t) {
                // the vision service reports a transaction every 10 s
                h.interlock.set_busy(true, now);
            } else if t == 270 {
                h.interlock.set_busy(false, now);
            }
            h.tick(&failing, now);
        }
        assert_eq!(
            h.executor.calls(),
            vec![vision_restart(), vision_restart(), Action::Reboot],
            "the refused reboot never reached the executor"
        );
        use ActionOutcome::*;
        assert_eq!(
            h.outcomes(),
            vec![
                (0, "restart_unit".into(), Succeeded, "vision.service".into()),
                (120, "restart_unit".into(), Succeeded, "vision.service".into()),
                (240, "reboot".into(), Refused, "".into()),
                (270, "reboot".into(), Succeeded, "".into()),
            ]
        );
        let (_, refused) = &h.events[2];
        assert_eq!(refused.severity, Severity::Warning);
        match &refused.kind {
            EventKind::Recovery { detail, .. } => assert_eq!(detail, "interlock: transaction in progress"),
            k => panic!("{k:?}"),
        }
        assert_eq!(
            refused.message,
            "reboot refused: interlock: transaction in progress (ladder unit:vision.service step 3/3)"
        );
        assert_eq!(
            h.planned.iter().map(|p| p.describe()).collect::<Vec<_>>(),
            vec![
                "ladder unit:vision.service step 1/3",
                "ladder unit:vision.service step 2/3",
                "ladder unit:vision.service step 3/3",
                "ladder unit:vision.service step 3/3",
            ]
        );
    }

    #[test]
    fn reboot_is_never_planned_when_allow_reboot_is_false() {
        let mut h = Harness::new(build_recovery(false));
        let failing = build_report("unit:vision.service", HealthStatus::Critical);
        for t in (0..=7200).step_by(10) {
            h.tick(&failing, t * S);
        }
        assert!(
            h.planned.iter().all(|p| p.action != Action::Reboot),
            "{:?}",
            h.planned
        );
        assert_eq!(h.executor.calls(), vec![vision_restart(), vision_restart()]);
        assert_eq!(h.events.len(), 2);
    }

    #[test]
    fn a_failed_restart_is_a_critical_event_and_the_ladder_still_moves_on() {
        let mut h = Harness::new(build_recovery(true));
        h.executor
            .set_outcome("restart_unit", false, "Job for vision.service failed.");
        let failing = build_report("unit:vision.service", HealthStatus::Critical);
        for t in (0..=300).step_by(10) {
            h.tick(&failing, t * S);
        }
        let outcomes: Vec<_> = h.outcomes().into_iter().map(|(t, a, o, _)| (t, a, o)).collect();
        assert_eq!(
            outcomes,
            vec![
                (0, "restart_unit".into(), ActionOutcome::Failed),
                (120, "restart_unit".into(), ActionOutcome::Failed),
                (240, "reboot".into(), ActionOutcome::Succeeded),
            ]
        );
        assert_eq!(h.events[0].1.severity, Severity::Critical);
        assert_eq!(
            h.events[0].1.message,
            "restart_unit(vision.service) failed: Job for vision.service failed. \
             (ladder unit:vision.service step 1/3)"
        );
    }

    #[test]
    fn the_ladder_starts_over_only_after_the_check_was_ok_for_a_while() {
        let mut h = Harness::new(build_recovery(false));
        let failing = build_report("unit:vision.service", HealthStatus::Critical);
        let ok = build_report("unit:vision.service", HealthStatus::Ok);
        h.tick(&failing, 0);
        h.tick(&ok, 10 * S);
        h.tick(&ok, 100 * S);
        h.tick(&failing, 130 * S);
        assert_eq!(
            h.planned.last().map(|p| p.step),
            Some(1),
            "a short recovery does not reset the ladder"
        );
        h.tick(&ok, 140 * S);
        h.tick(&ok, 700 * S);
        h.tick(&ok, 740 * S);
        h.tick(&failing, 750 * S);
        assert_eq!(h.planned.len(), 3);
        assert_eq!(h.planned[2].step, 0, "ten minutes ok resets the ladder");
        assert!(h.policy.snapshot().ladders.iter().all(|l| l.next_step == 1));
    }

    #[test]
    fn a_warning_or_an_unrelated_check_plans_nothing() {
        let mut h = Harness::new(build_recovery(true));
        h.tick(&build_report("unit:vision.service", HealthStatus::Warn), 0);
        h.tick(&build_report("memory", HealthStatus::Critical), S);
        assert!(h.planned.is_empty());
    }

    #[test]
    fn the_rate_limit_refuses_the_same_action_on_the_same_target_within_the_hour() {
        let cfg = RecoveryConfig {
            max_actions_per_hour: 2,
            ..Default::default()
        };
        let mut p = RecoveryPolicy::new(&cfg, &build_health());
        let lock = Interlock::new();
        let remote = Source::Remote("c-1".into());
        assert_eq!(p.decide(&vision_restart(), &remote, &lock, 0), Decision::Allowed);
        assert_eq!(
            p.decide(&vision_restart(), &remote, &lock, 60 * S),
            Decision::Allowed
        );
        let third = p.decide(&vision_restart(), &remote, &lock, 120 * S);
        assert_eq!(
            third,
            Decision::Refused(
                "rate limit: restart_unit(vision.service) ran 2 time(s) in the last hour (max 2)".into()
            )
        );
        let other = Action::RestartProcess {
            name: "vision".into(),
        };
        assert!(
            p.decide(&other, &remote, &lock, 120 * S).is_allowed(),
            "other targets are counted apart"
        );
        assert!(
            !p.decide(&vision_restart(), &remote, &lock, 3600 * S - 1)
                .is_allowed()
        );
        assert!(p.decide(&vision_restart(), &remote, &lock, 3600 * S).is_allowed());
    }

    #[test]
    fn a_rate_limited_step_waits_for_the_limit_instead_of_retrying_every_half_minute() {
        let cfg = RecoveryConfig {
            max_actions_per_hour: 1,
            ..Default::default()
        };
        let mut h = Harness::new(cfg);
        let failing = build_report("unit:vision.service", HealthStatus::Critical);
        for t in (0..=3700).step_by(10) {
            h.tick(&failing, t * S);
        }
        let outcomes: Vec<_> = h.outcomes().into_iter().map(|(t, _, o, _)| (t, o)).collect();
        assert_eq!(
            outcomes,
            vec![
                (0, ActionOutcome::Succeeded),
                (120, ActionOutcome::Refused),
                (3600, ActionOutcome::Succeeded),
            ]
        );
    }

    #[test]
    fn reboots_are_limited_per_day_and_the_history_survives_a_restart() {
        let cfg = RecoveryConfig {
            allow_reboot: true,
            max_reboots_per_day: 1,
            ..Default::default()
        };
        let lock = Interlock::new();
        let mut before = RecoveryPolicy::new(&cfg, &build_health());
        assert!(
            before
                .decide(&Action::Reboot, &Source::Local, &lock, 0)
                .is_allowed()
        );
        let saved = before.history();
        let mut after = RecoveryPolicy::new(&cfg, &build_health());
        after.restore_history(saved, 300 * S);
        let d = after.decide(&Action::Reboot, &Source::Local, &lock, 7200 * S);
        assert_eq!(
            d,
            Decision::Refused("rate limit: 1 reboot(s) in the last 24 h (max 1)".into())
        );
        assert!(
            after
                .decide(&Action::Reboot, &Source::Local, &lock, 86_400 * S)
                .is_allowed()
        );
    }

    #[test]
    fn a_dry_run_decision_uses_up_no_rate_limit() {
        let health = build_health();
        let cfg = RecoveryConfig {
            allow_reboot: true,
            max_reboots_per_day: 1,
            ..Default::default()
        };
        let mut p = RecoveryPolicy::new(&cfg, &health);
        let lock = Interlock::new();
        let remote = Source::Remote("c-1".into());
        for _ in 0..3 {
            assert_eq!(
                p.would_decide(&Action::Reboot, &remote, &lock, 0),
                Decision::Allowed
            );
        }
        assert_eq!(p.decide(&Action::Reboot, &remote, &lock, 0), Decision::Allowed);
        assert!(matches!(
            p.would_decide(&Action::Reboot, &remote, &lock, 1),
            Decision::Refused(r) if r.starts_with("rate limit")
        ));
    }

    #[test]
    fn the_allow_list_refuses_a_disabled_action_and_never_plans_it() {
        let health = build_health();
        let cfg = RecoveryConfig {
            allowed_actions: vec!["restart_unit".into(), "collect_diagnostics".into()],
            ladder: vec![LadderRule {
                check: "memory".into(),
                steps: Some(vec!["drop_caches".into(), "collect_diagnostics".into()]),
                retry_after_s: Some(60),
                grace_s: 0,
                escalate: false,
            }],
            ..Default::default()
        };
        let mut p = RecoveryPolicy::new(&cfg, &health);
        let lock = Interlock::new();
        assert_eq!(
            p.decide(&Action::DropCaches, &Source::Remote("c-9".into()), &lock, 0),
            Decision::Refused("drop_caches is not in recovery.allowed_actions".into())
        );
        let planned = p.on_health(&build_report("memory", HealthStatus::Critical), 0);
        assert_eq!(planned.len(), 1);
        assert_eq!(planned[0].action, Action::CollectDiagnostics);
        assert_eq!(planned[0].describe(), "ladder memory step 2/2");
    }

    #[test]
    fn a_reboot_or_an_unwatched_target_is_refused_even_from_a_command() {
        let mut p = RecoveryPolicy::new(&build_recovery(false), &build_health());
        let lock = Interlock::new();
        let remote = Source::Remote("c-2".into());
        assert_eq!(
            p.decide(&Action::Reboot, &remote, &lock, 0),
            Decision::Refused("reboot needs recovery.allow_reboot = true".into())
        );
        let sshd = Action::RestartUnit {
            unit: "ssh.service".into(),
        };
        assert_eq!(
            p.decide(&sshd, &remote, &lock, 0),
            Decision::Refused(
                "unit ssh.service is not in health.systemd_units or recovery.extra_units".into()
            )
        );
        let everything = Action::RestartProcess { name: ".*".into() };
        assert!(!p.decide(&everything, &remote, &lock, 0).is_allowed());
        let net = Action::RestartNetwork {
            interface: "eth0".into(),
        };
        assert!(!p.decide(&net, &remote, &lock, 0).is_allowed());
    }

    #[test]
    fn with_recovery_disabled_nothing_is_planned_but_commands_still_pass_the_gate() {
        let cfg = RecoveryConfig {
            enabled: false,
            ..Default::default()
        };
        let mut p = RecoveryPolicy::new(&cfg, &build_health());
        let lock = Interlock::new();
        assert!(
            p.on_health(&build_report("unit:vision.service", HealthStatus::Critical), 0)
                .is_empty()
        );
        assert!(!p.decide(&vision_restart(), &Source::Local, &lock, 0).is_allowed());
        assert!(
            p.decide(&vision_restart(), &Source::Remote("c-3".into()), &lock, 0)
                .is_allowed()
        );
    }

    fn build_camera_recovery() -> RecoveryConfig {
        RecoveryConfig {
            vision_unit: Some("vision.service".into()),
            camera_reset_command: vec!["/usr/bin/usbreset".into(), "{camera}".into()],
            ..Default::default()
        }
    }

    #[test]
    fn a_frozen_camera_climbs_restart_reset_escalate_once_and_never_loops() {
        let mut h = Harness::new(build_camera_recovery());
        let frozen = build_report("camera:front:frozen", HealthStatus::Critical);
        for t in (0..=900).step_by(5) {
            h.tick(&frozen, t * S);
        }
        let reset = Action::ResetCamera {
            camera: "front".into(),
        };
        assert_eq!(h.executor.calls(), vec![vision_restart(), reset.clone()]);
        let out = h.outcomes();
        assert_eq!(
            out,
            vec![
                (
                    0,
                    "restart_unit".into(),
                    ActionOutcome::Succeeded,
                    "vision.service".into()
                ),
                (
                    120,
                    "reset_camera".into(),
                    ActionOutcome::Succeeded,
                    "front".into()
                ),
                (
                    240,
                    "escalate".into(),
                    ActionOutcome::Failed,
                    "camera:front:frozen".into()
                ),
            ]
        );
        let esc = &h.events[2].1;
        assert_eq!(esc.severity, Severity::Critical);
        assert_eq!(
            esc.message,
            "camera:front:frozen is still critical after its recovery ladder (tried \
             restart_unit(vision.service), reset_camera(front)): a person is needed"
        );
        // fixed for the reset period: the ladder starts over on the next fault
        let ok = build_report("camera:front:frozen", HealthStatus::Ok);
        for t in (905..=1_600).step_by(5) {
            h.tick(&ok, t * S);
        }
        h.tick(&frozen, 1_605 * S);
        assert_eq!(h.executor.calls().len(), 3);
        assert_eq!(h.executor.calls()[2], vision_restart());
    }

    #[test]
    fn without_a_reset_command_the_camera_ladder_skips_the_reset_and_still_escalates() {
        let mut h = Harness::new(RecoveryConfig {
            vision_unit: Some("vision.service".into()),
            ..Default::default()
        });
        let stale = build_report("camera:side:frames", HealthStatus::Critical);
        for t in (0..=400).step_by(5) {
            h.tick(&stale, t * S);
        }
        assert_eq!(h.executor.calls(), vec![vision_restart()]);
        let out = h.outcomes();
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[1].1, "escalate");
        assert_eq!(out[1].0, 120);
        // a reset asked for remotely is refused with the reason
        let mut p = RecoveryPolicy::new(&RecoveryConfig::default(), &build_health());
        let d = p.decide(
            &Action::ResetCamera {
                camera: "side".into(),
            },
            &Source::Remote("c1".into()),
            &Interlock::new(),
            0,
        );
        assert_eq!(
            d,
            Decision::Refused("recovery.camera_reset_command is not set".into())
        );
    }

    #[test]
    fn a_covered_lens_or_a_slow_camera_gets_no_ladder() {
        let mut h = Harness::new(build_camera_recovery());
        for check in [
            "camera:front:covered",
            "camera:front:fps",
            "camera:front:confidence",
        ] {
            let r = build_report(check, HealthStatus::Critical);
            for t in (0..=400).step_by(5) {
                h.tick(&r, t * S);
            }
        }
        assert!(h.executor.calls().is_empty());
        assert!(h.events.is_empty());
    }
}
