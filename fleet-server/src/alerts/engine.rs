//! The alert engine: one state machine per (rule, device). Pure: every call takes `now_ms`,
//! nothing here reads a clock or does IO; the alerts actor owns one [`AlertEngine`], feeds it,
//! persists [`AlertEngine::export`] and sends the [`Transition`]s to notifiers.
//!
//! # Lifecycle
//! ```text
//! (nothing) --breach--> pending --breach held for `for`--> firing --crosses `clear`--> resolved
//!                          |                                 |
//!                          '--a sample not breaching         '--critical, unacknowledged for
//!                             --> cancelled                     `escalate_after` --> escalated
//!                                                               (once; it stays firing)
//! ```
//! Invariants:
//! - at most one alert per (rule, device) is active (pending or firing); its id is
//!   `{rule}:{device}:{generation}`, and the generation grows with every new alert of that
//!   pair, so a re-fire after a resolve is a new alert id;
//! - a rule with `for_s = 0` goes straight to firing (one `Firing` transition, no `Pending`);
//! - a firing alert resolves only when the value crosses `clear` (hysteresis), never because
//!   samples stopped: a silent device keeps its alerts (the offline rule covers it);
//! - during a rule's cooldown after a resolve, breaching samples of that pair are ignored;
//! - silences never stop the state machine: a transition of a silenced alert carries
//!   `silenced: true`; when the silence of a firing alert ends, an `Unsilenced` transition
//!   tells notifiers to send what they skipped;
//! - transitions are produced only for changes: importing an exported state, or feeding the
//!   same values again, produces none.
//!
//! Metrics absent from an [`AlertEngine::observe`] call leave their rules untouched, so the
//! caller may feed telemetry and derived inputs (presence, agent events) separately.
//!
//! Health check alerts ([`super::checks`]) go through the same lifecycle:
//! [`AlertEngine::observe_checks`] makes a rule per (check, device) from the check's severity
//! and message when its alert starts, keeps it while the alert is active (for `tick`), and
//! drops it with the alert.

use std::collections::{BTreeMap, BTreeSet};

use common::{CheckResult, DeviceId, Severity};
use serde::{Deserialize, Serialize};

use super::alert::{Ack, Alert, AlertState, DeviceInfo, Key, Transition, TransitionKind, severity_label};
use super::checks::{CheckRules, check_kind, is_check_rule, rule_name, severity_of};
use super::growth::GrowthWindow;
use super::rules::{Op, Rule, Scope};
use super::silence::{Silence, live_silence};

mod adopt;
mod resolve;
pub use adopt::DeviceAlerts;

/// Resolved alerts kept for [`AlertEngine::history`].
pub const HISTORY_CAP: usize = 10_000;

/// Silences the engine accepts at once.
pub const MAX_SILENCES: usize = 10_000;

/// [`AlertEngine::tick`] fires a pending alert whose `for` has elapsed only when its last
/// sample is at most this old; otherwise it waits for a sample (the device may be gone).
pub const PENDING_SAMPLE_MAX_AGE_MS: i64 = 120_000;

/// Version of [`EngineState`]; an import of another version is refused.
pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    #[error("no alert {0:?}")]
    UnknownAlert(String),
    #[error("alert {0:?} is resolved")]
    NotActive(String),
    #[error("alert {0:?} is pending: it has not fired, there is nothing to resolve")]
    NotFiring(String),
    #[error("alert {id:?} was already acknowledged by {by}")]
    AlreadyAcknowledged { id: String, by: String },
    #[error("no silence {0:?}")]
    UnknownSilence(String),
    #[error("silence {0:?} exists already")]
    DuplicateSilence(String),
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("engine state version {found} cannot be imported (expected {STATE_VERSION})")]
    StateVersion { found: u32 },
    /// The shared store (several instances) did not answer an acknowledgement or resolve of
    /// an alert another instance evaluates.
    #[error("the shared store: {0}")]
    Store(String),
}

/// Generation counter of one (rule, device) pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairCounter {
    pub rule: String,
    pub device: DeviceId,
    pub generation: u64,
}

/// End of the cooldown of one (rule, device) pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairCooldown {
    pub rule: String,
    pub device: DeviceId,
    pub until_ms: i64,
}

/// Everything that must survive a server restart. JSON-friendly (no maps with struct keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EngineState {
    pub version: u32,
    pub active: Vec<Alert>,
    pub history: Vec<Alert>,
    pub silences: Vec<Silence>,
    pub generations: Vec<PairCounter>,
    pub cooldowns: Vec<PairCooldown>,
}

/// The rule engine. See the module docs for the lifecycle and its invariants.
#[derive(Debug, Clone)]
pub struct AlertEngine {
    rules: Vec<Rule>,
    by_metric: BTreeMap<String, Vec<usize>>,
    by_name: BTreeMap<String, usize>,
    active: BTreeMap<Key, Alert>,
    generations: BTreeMap<Key, u64>,
    cooldown_until: BTreeMap<Key, i64>,
    silences: BTreeMap<String, Silence>,
    history: Vec<Alert>,
    history_cap: usize,
    /// How health checks become alerts; None: they do not.
    checks: Option<CheckRules>,
    /// The rule of each active health check alert.
    check_rules: BTreeMap<Key, Rule>,
    /// The recent samples of each (growth rule, device): in memory only, a restarted or
    /// adopting instance measures the window afresh.
    growth: BTreeMap<Key, GrowthWindow>,
}

/// The rule of `check`'s alert at `severity`, summarised by the check's `message`.
pub fn check_rule(c: &CheckRules, check: &str, severity: Severity, message: &str) -> Rule {
    let mut labels = c.labels.clone();
    labels.insert("check".into(), check.to_string());
    labels.insert("check_kind".into(), check_kind(check).to_string());
    Rule {
        name: rule_name(check),
        metric: format!("health.{check}"),
        abs: false,
        op: Op::Ge,
        threshold: 1.0,
        clear: 1.0,
        for_ms: c.for_ms,
        severity,
        labels,
        cooldown_ms: 0,
        scope: Scope::default(),
        escalate_after_ms: c.escalate_after_ms.filter(|_| severity == Severity::Critical),
        summary: message.to_string(),
        growth_window_ms: None,
    }
}

impl AlertEngine {
    /// An engine for validated rules (see [`super::rules::RulesFile::validate`]).
    pub fn new(rules: Vec<Rule>) -> Self {
        let mut e = AlertEngine {
            rules: Vec::new(),
            by_metric: BTreeMap::new(),
            by_name: BTreeMap::new(),
            active: BTreeMap::new(),
            generations: BTreeMap::new(),
            cooldown_until: BTreeMap::new(),
            silences: BTreeMap::new(),
            history: Vec::new(),
            history_cap: HISTORY_CAP,
            checks: None,
            check_rules: BTreeMap::new(),
            growth: BTreeMap::new(),
        };
        e.index(rules);
        e
    }

    /// Health checks raise alerts as `checks` says (None: they do not).
    pub fn with_health_checks(mut self, checks: Option<CheckRules>) -> Self {
        self.checks = checks;
        self
    }

    /// Keeps at most `cap` resolved alerts (at least 1).
    pub fn with_history_cap(mut self, cap: usize) -> Self {
        self.history_cap = cap.max(1);
        self
    }

    fn index(&mut self, rules: Vec<Rule>) {
        self.by_metric.clear();
        self.by_name.clear();
        for (i, r) in rules.iter().enumerate() {
            self.by_metric.entry(r.metric.clone()).or_default().push(i);
            self.by_name.insert(r.name.clone(), i);
        }
        let by_name = &self.by_name;
        self.growth.retain(|(rule, _), _| {
            by_name
                .get(rule)
                .is_some_and(|i| rules[*i].growth_window_ms.is_some())
        });
        self.rules = rules;
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Replaces the rules (a reload). Active alerts of rules that no longer exist resolve;
    /// the others keep their state and meet the new thresholds at their next sample.
    pub fn set_rules(&mut self, rules: Vec<Rule>, now_ms: i64) -> Vec<Transition> {
        self.index(rules);
        self.drop_orphans(now_ms)
    }

    fn drop_orphans(&mut self, now_ms: i64) -> Vec<Transition> {
        let orphans: Vec<Key> = self
            .active
            .keys()
            .filter(|(rule, _)| {
                let known = self.by_name.contains_key(rule) || (is_check_rule(rule) && self.checks.is_some());
                !known
            })
            .cloned()
            .collect();
        let mut out = Vec::new();
        for key in orphans {
            if let Some(mut a) = self.active.remove(&key) {
                if a.state == AlertState::Firing {
                    a.state = AlertState::Resolved;
                    a.resolved_ms = Some(now_ms);
                    out.push(Transition::of(TransitionKind::Resolved, &a, now_ms));
                    push_history(&mut self.history, self.history_cap, a);
                } else {
                    out.push(Transition::of(TransitionKind::Cancelled, &a, now_ms));
                }
            }
        }
        out
    }

    /// Evaluates one device's samples. Only rules whose input is in `metrics` move;
    /// non-finite values are ignored.
    pub fn observe(
        &mut self,
        device: &DeviceInfo,
        metrics: &[(String, f64)],
        now_ms: i64,
    ) -> Vec<Transition> {
        let latest: BTreeMap<&str, f64> = metrics
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(n, v)| (n.as_str(), *v))
            .collect();
        let work: Vec<(usize, f64)> = latest
            .iter()
            .filter_map(|(name, v)| self.by_metric.get(*name).map(|idx| (idx, *v)))
            .flat_map(|(idx, v)| idx.iter().map(move |i| (*i, v)))
            .collect();
        let mut out = Vec::new();
        // the rules are not changed by an evaluation: lend them out meanwhile
        let rules = std::mem::take(&mut self.rules);
        for (i, value) in work {
            if let Some(rule) = rules.get(i) {
                let value = match rule.growth_window_ms {
                    Some(w) => self
                        .growth
                        .entry((rule.name.clone(), device.id.clone()))
                        .or_default()
                        .push(now_ms, value, w),
                    None => value,
                };
                self.evaluate(rule, device, value, now_ms, &mut out);
            }
        }
        self.rules = rules;
        out
    }

    /// Evaluates one device's health report: each check of a covered kind moves its own
    /// alert (see [`super::checks`]); an alert whose check is no longer reported resolves.
    pub fn observe_checks(
        &mut self,
        device: &DeviceInfo,
        checks: &[CheckResult],
        now_ms: i64,
    ) -> Vec<Transition> {
        let mut out = Vec::new();
        let Some(cfg) = self.checks.clone() else {
            return out;
        };
        let mut seen = BTreeSet::new();
        for c in checks.iter().filter(|c| cfg.covers(&c.name)) {
            let value = cfg.value(&c.name, c.status);
            let key: Key = (rule_name(&c.name), device.id.clone());
            seen.insert(key.0.clone());
            let severity = severity_of(c.status);
            // worse while active: close it, so the new severity starts an alert of its own
            if value >= 1.0
                && self.active.get(&key).is_some_and(|a| a.severity < severity)
                && let Some(old) = self.check_rules.get(&key).cloned()
            {
                self.evaluate(&old, device, 0.0, now_ms, &mut out);
            }
            let rule = match self.check_rules.get(&key) {
                Some(r) if self.active.contains_key(&key) => r.clone(),
                _ if value < 1.0 => continue,
                _ => check_rule(&cfg, &c.name, severity, &c.message),
            };
            self.evaluate(&rule, device, value, now_ms, &mut out);
            if self.active.contains_key(&key) {
                self.check_rules.insert(key, rule);
            } else {
                self.check_rules.remove(&key);
            }
        }
        let gone: Vec<Key> = self
            .check_rules
            .keys()
            .filter(|(rule, id)| *id == device.id && !seen.contains(rule))
            .cloned()
            .collect();
        for key in gone {
            if let Some(rule) = self.check_rules.remove(&key) {
                self.evaluate(&rule, device, 0.0, now_ms, &mut out);
            }
        }
        out
    }

    fn evaluate(
        &mut self,
        rule: &Rule,
        device: &DeviceInfo,
        value: f64,
        now_ms: i64,
        out: &mut Vec<Transition>,
    ) {
        let key: Key = (rule.name.clone(), device.id.clone());
        // Out of scope (say the device moved to another site) counts as not breaching.
        let in_scope = rule.scope.matches(device.site.as_deref(), &device.tags);
        let breach = in_scope && rule.breaches(value);
        match self.active.get_mut(&key) {
            None => {
                let cooling = self.cooldown_until.get(&key).is_some_and(|until| now_ms < *until);
                if !breach || cooling {
                    return;
                }
                let generation = self.generations.get(&key).copied().unwrap_or(0) + 1;
                self.generations.insert(key.clone(), generation);
                let mut a = new_alert(rule, device, generation, value, now_ms);
                a.silenced_by = live_silence(&self.silences, &a.labels, now_ms);
                let kind = if rule.for_ms == 0 {
                    a.state = AlertState::Firing;
                    a.fired_ms = Some(now_ms);
                    TransitionKind::Firing
                } else {
                    TransitionKind::Pending
                };
                out.push(Transition::of(kind, &a, now_ms));
                self.active.insert(key, a);
            }
            Some(a) => {
                a.value = value;
                a.last_sample_ms = now_ms;
                a.silenced_by = live_silence(&self.silences, &a.labels, now_ms);
                match a.state {
                    AlertState::Pending if !breach => {
                        out.push(Transition::of(TransitionKind::Cancelled, a, now_ms));
                        self.active.remove(&key);
                    }
                    AlertState::Pending => {
                        if now_ms - a.started_ms >= rule.for_ms {
                            a.state = AlertState::Firing;
                            a.fired_ms = Some(now_ms);
                            out.push(Transition::of(TransitionKind::Firing, a, now_ms));
                        }
                    }
                    AlertState::Firing if !(in_scope && rule.holds_firing(value)) => {
                        a.state = AlertState::Resolved;
                        a.resolved_ms = Some(now_ms);
                        out.push(Transition::of(TransitionKind::Resolved, a, now_ms));
                        if rule.cooldown_ms > 0 {
                            self.cooldown_until.insert(key.clone(), now_ms + rule.cooldown_ms);
                        }
                        if let Some(done) = self.active.remove(&key) {
                            push_history(&mut self.history, self.history_cap, done);
                        }
                    }
                    AlertState::Firing => {
                        if escalation_due(rule, a, now_ms) {
                            a.escalated_ms = Some(now_ms);
                            out.push(Transition::of(TransitionKind::Escalated, a, now_ms));
                        }
                    }
                    AlertState::Resolved => {
                        // Never stored as active; drop it if an import put it there.
                        self.active.remove(&key);
                    }
                }
            }
        }
    }

    /// Time passing without samples: pending alerts whose `for` elapsed fire, due escalations
    /// happen, expired silences go (with `Unsilenced` for firing alerts they covered), and
    /// finished cooldowns are forgotten.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Transition> {
        let mut out = Vec::new();
        self.silences.retain(|_, s| s.is_live(now_ms));
        self.refresh_silences(now_ms, &mut out);
        for a in self.active.values_mut() {
            let rule = match self.by_name.get(&a.rule) {
                Some(i) => self.rules.get(*i),
                None => self.check_rules.get(&(a.rule.clone(), a.device.clone())),
            };
            let Some(rule) = rule else {
                continue;
            };
            match a.state {
                AlertState::Pending => {
                    let elapsed = now_ms - a.started_ms >= rule.for_ms;
                    let fresh = now_ms - a.last_sample_ms <= PENDING_SAMPLE_MAX_AGE_MS;
                    if elapsed && fresh {
                        a.state = AlertState::Firing;
                        a.fired_ms = Some(now_ms);
                        out.push(Transition::of(TransitionKind::Firing, a, now_ms));
                    }
                }
                AlertState::Firing => {
                    if escalation_due(rule, a, now_ms) {
                        a.escalated_ms = Some(now_ms);
                        out.push(Transition::of(TransitionKind::Escalated, a, now_ms));
                    }
                }
                AlertState::Resolved => {}
            }
        }
        self.cooldown_until.retain(|_, until| now_ms < *until);
        out
    }

    /// Recomputes `silenced_by` of every active alert; a firing alert that lost its silence
    /// yields `Unsilenced`.
    fn refresh_silences(&mut self, now_ms: i64, out: &mut Vec<Transition>) {
        for a in self.active.values_mut() {
            let was = a.silenced_by.is_some();
            a.silenced_by = live_silence(&self.silences, &a.labels, now_ms);
            if was && a.silenced_by.is_none() && a.state == AlertState::Firing {
                out.push(Transition::of(TransitionKind::Unsilenced, a, now_ms));
            }
        }
    }

    /// Acknowledges an active (pending or firing) alert; stops its escalation.
    pub fn ack(
        &mut self,
        alert_id: &str,
        who: &str,
        comment: &str,
        now_ms: i64,
    ) -> Result<Alert, AlertError> {
        if who.trim().is_empty() {
            return Err(AlertError::Invalid("an acknowledgement needs who".into()));
        }
        let active = parse_alert_id(alert_id)
            .and_then(|key| self.active.get_mut(&key))
            .filter(|a| a.id == alert_id);
        let Some(a) = active else {
            return Err(if self.history.iter().any(|a| a.id == alert_id) {
                AlertError::NotActive(alert_id.to_string())
            } else {
                AlertError::UnknownAlert(alert_id.to_string())
            });
        };
        if let Some(prev) = &a.ack {
            return Err(AlertError::AlreadyAcknowledged {
                id: alert_id.to_string(),
                by: prev.by.clone(),
            });
        }
        a.ack = Some(Ack {
            by: who.to_string(),
            at_ms: now_ms,
            comment: comment.to_string(),
        });
        Ok(a.clone())
    }

    /// Adds a silence (its `created_ms` is set to `now_ms`). It needs an id, at least one
    /// matcher (a silence of everything is refused) and an expiry in the future.
    pub fn add_silence(&mut self, mut silence: Silence, now_ms: i64) -> Result<Silence, AlertError> {
        if silence.id.is_empty() {
            return Err(AlertError::Invalid("silence id is empty".into()));
        }
        if self.silences.contains_key(&silence.id) {
            return Err(AlertError::DuplicateSilence(silence.id));
        }
        if silence.matchers.is_empty() {
            return Err(AlertError::Invalid("a silence needs at least one matcher".into()));
        }
        if let Some(m) = silence.matchers.iter().find(|m| m.label.is_empty()) {
            return Err(AlertError::Invalid(format!(
                "matcher with empty label (value {:?})",
                m.value
            )));
        }
        if !silence.is_live(now_ms) {
            return Err(AlertError::Invalid("the silence expires in the past".into()));
        }
        if self.silences.len() >= MAX_SILENCES {
            return Err(AlertError::Invalid(format!("at most {MAX_SILENCES} silences")));
        }
        silence.created_ms = now_ms;
        self.silences.insert(silence.id.clone(), silence.clone());
        // Gaining a silence never needs a notification.
        let mut none = Vec::new();
        self.refresh_silences(now_ms, &mut none);
        Ok(silence)
    }

    /// Removes a silence; firing alerts it covered yield `Unsilenced`.
    pub fn remove_silence(&mut self, id: &str, now_ms: i64) -> Result<Vec<Transition>, AlertError> {
        if self.silences.remove(id).is_none() {
            return Err(AlertError::UnknownSilence(id.to_string()));
        }
        let mut out = Vec::new();
        self.refresh_silences(now_ms, &mut out);
        Ok(out)
    }

    pub fn silences(&self) -> Vec<Silence> {
        self.silences.values().cloned().collect()
    }

    /// Does a live silence match this alert's labels at `now_ms`?
    pub fn is_silenced(&self, alert: &Alert, now_ms: i64) -> bool {
        live_silence(&self.silences, &alert.labels, now_ms).is_some()
    }

    /// Marks an active alert as muted by a maintenance window (`None` clears the mark): the
    /// alert after the change, or None when no such alert is active.
    pub fn set_muted(&mut self, alert_id: &str, window: Option<&str>) -> Option<Alert> {
        let a = parse_alert_id(alert_id)
            .and_then(|key| self.active.get_mut(&key))
            .filter(|a| a.id == alert_id)?;
        a.muted_by = window.map(str::to_string);
        Some(a.clone())
    }

    /// Pending and firing alerts, ordered by rule then device.
    pub fn active(&self) -> Vec<Alert> {
        self.active.values().cloned().collect()
    }

    /// An active alert by id, else a resolved one from the history.
    pub fn get(&self, alert_id: &str) -> Option<&Alert> {
        parse_alert_id(alert_id)
            .and_then(|key| self.active.get(&key))
            .filter(|a| a.id == alert_id)
            .or_else(|| self.history.iter().rev().find(|a| a.id == alert_id))
    }

    /// Resolved alerts, oldest first, at most the history cap.
    pub fn history(&self) -> &[Alert] {
        let skip = self.history.len().saturating_sub(self.history_cap);
        self.history.get(skip..).unwrap_or(&[])
    }

    /// The state to persist.
    pub fn export(&self) -> EngineState {
        EngineState {
            version: STATE_VERSION,
            active: self.active.values().cloned().collect(),
            history: self.history().to_vec(),
            silences: self.silences.values().cloned().collect(),
            generations: self
                .generations
                .iter()
                .map(|((rule, device), g)| PairCounter {
                    rule: rule.clone(),
                    device: device.clone(),
                    generation: *g,
                })
                .collect(),
            cooldowns: self
                .cooldown_until
                .iter()
                .map(|((rule, device), until)| PairCooldown {
                    rule: rule.clone(),
                    device: device.clone(),
                    until_ms: *until,
                })
                .collect(),
        }
    }

    /// Replaces the state with a persisted one. Nothing that was already pending or firing is
    /// reported again; the only transitions are for alerts whose rule no longer exists (they
    /// resolve or are cancelled). Silences that expired meanwhile go at the next `tick`.
    pub fn import(&mut self, state: EngineState, now_ms: i64) -> Result<Vec<Transition>, AlertError> {
        if state.version != STATE_VERSION {
            return Err(AlertError::StateVersion { found: state.version });
        }
        self.active = state
            .active
            .into_iter()
            .filter(|a| a.state != AlertState::Resolved)
            .map(|a| (a.key(), a))
            .collect();
        self.history = state.history;
        self.silences = state.silences.into_iter().map(|s| (s.id.clone(), s)).collect();
        self.generations = state
            .generations
            .into_iter()
            .map(|c| ((c.rule, c.device), c.generation))
            .collect();
        // A generation must never be reused, even if the counters were lost.
        for a in self.active.values().chain(self.history.iter()) {
            let g = self.generations.entry(a.key()).or_insert(0);
            *g = (*g).max(a.generation);
        }
        self.cooldown_until = state
            .cooldowns
            .into_iter()
            .map(|c| ((c.rule, c.device), c.until_ms))
            .collect();
        let out = self.drop_orphans(now_ms);
        // the rules of active health check alerts, as they were when each started
        self.check_rules.clear();
        if let Some(cfg) = &self.checks {
            for (key, a) in &self.active {
                if let Some(check) = a.labels.get("check").filter(|_| is_check_rule(&a.rule)) {
                    let rule = check_rule(cfg, check, a.severity, &a.summary);
                    self.check_rules.insert(key.clone(), rule);
                }
            }
        }
        Ok(out)
    }
}

fn push_history(history: &mut Vec<Alert>, cap: usize, a: Alert) {
    history.push(a);
    // Trim in batches so a full history does not shift on every push.
    if history.len() > cap + cap / 8 {
        let excess = history.len() - cap;
        history.drain(..excess);
    }
}

fn new_alert(rule: &Rule, device: &DeviceInfo, generation: u64, value: f64, now_ms: i64) -> Alert {
    let mut labels = rule.labels.clone();
    labels.insert("rule".into(), rule.name.clone());
    labels.insert("device".into(), device.id.to_string());
    labels.insert("severity".into(), severity_label(rule.severity).into());
    if let Some(site) = &device.site {
        labels.insert("site".into(), site.clone());
    }
    Alert {
        id: format!("{}:{}:{generation}", rule.name, device.id),
        rule: rule.name.clone(),
        device: device.id.clone(),
        generation,
        metric: rule.metric.clone(),
        severity: rule.severity,
        labels,
        summary: rule.summary.clone(),
        op: rule.op,
        value,
        threshold: rule.threshold,
        clear: rule.clear,
        started_ms: now_ms,
        fired_ms: None,
        resolved_ms: None,
        escalated_ms: None,
        last_sample_ms: now_ms,
        ack: None,
        silenced_by: None,
        muted_by: None,
        resolved_by: None,
        state: AlertState::Pending,
    }
}

fn escalation_due(rule: &Rule, a: &Alert, now_ms: i64) -> bool {
    let Some(after) = rule.escalate_after_ms else {
        return false;
    };
    a.state == AlertState::Firing
        && a.severity == Severity::Critical
        && a.ack.is_none()
        && a.escalated_ms.is_none()
        && a.fired_ms.is_some_and(|f| now_ms - f >= after)
}

/// `{rule}:{device}:{generation}` -> (rule, device). Rule names and device ids contain no `:`.
fn parse_alert_id(id: &str) -> Option<Key> {
    let mut parts = id.split(':');
    let rule = parts.next()?;
    let device = DeviceId::new(parts.next()?).ok()?;
    parts.next()?.parse::<u64>().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some((rule.to_string(), device))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::alerts::rules::parse_rules;
    use crate::alerts::silence::Matcher;

    const S: i64 = 1000;

    fn build_rules(extra: &str) -> Vec<Rule> {
        parse_rules(&format!(
            "[[rules]]\nname = \"cpu_high\"\nmetric = \"cpu.usage_pct\"\nop = \">\"\nthreshold = 80\nseverity = \"warning\"\n{extra}"
        ))
        .unwrap()
        .rules
    }

    fn build_engine(extra: &str) -> AlertEngine {
        AlertEngine::new(build_rules(extra))
    }

    fn build_device(id: &str) -> DeviceInfo {
        let mut d = DeviceInfo::new(DeviceId::new(id).unwrap());
        d.site = Some("oslo".into());
        d.tags = vec!["pilot".into()];
        d
    }

    fn cpu(v: f64) -> Vec<(String, f64)> {
        vec![("cpu.usage_pct".into(), v)]
    }

    fn kinds(t: &[Transition]) -> Vec<TransitionKind> {
        t.iter().map(|t| t.kind).collect()
    }

    #[test]
    fn a_rule_without_for_fires_on_the_first_breaching_sample() {
        let mut e = build_engine("");
        let d = build_device("rvm1");
        assert!(e.observe(&d, &cpu(80.0), 0).is_empty());
        let t = e.observe(&d, &cpu(81.0), S);
        assert_eq!(kinds(&t), [TransitionKind::Firing]);
        let a = &t[0].alert;
        assert_eq!(a.id, "cpu_high:rvm1:1");
        assert_eq!(
            (a.value, a.threshold, a.started_ms, a.fired_ms),
            (81.0, 80.0, S, Some(S))
        );
        assert_eq!(a.labels["site"], "oslo");
        assert_eq!(a.labels["severity"], "warning");
        assert!(e.observe(&d, &cpu(90.0), 2 * S).is_empty());
    }

    #[test]
    fn for_holds_before_firing_and_a_good_sample_resets_it() {
        let mut e = build_engine("for_s = 60\n");
        let d = build_device("rvm1");
        assert_eq!(kinds(&e.observe(&d, &cpu(85.0), 0)), [TransitionKind::Pending]);
        assert!(e.observe(&d, &cpu(85.0), 30 * S).is_empty());
        assert_eq!(
            kinds(&e.observe(&d, &cpu(70.0), 50 * S)),
            [TransitionKind::Cancelled]
        );
        assert!(e.active().is_empty());
        // The clock starts again at the next breach.
        assert_eq!(
            kinds(&e.observe(&d, &cpu(85.0), 55 * S)),
            [TransitionKind::Pending]
        );
        assert!(e.observe(&d, &cpu(85.0), 100 * S).is_empty());
        let t = e.observe(&d, &cpu(85.0), 115 * S);
        assert_eq!(kinds(&t), [TransitionKind::Firing]);
        assert_eq!(
            (t[0].alert.started_ms, t[0].alert.fired_ms),
            (55 * S, Some(115 * S))
        );
        assert_eq!(t[0].alert.id, "cpu_high:rvm1:2");
    }

    #[test]
    fn tick_fires_a_pending_alert_when_for_elapses_between_samples() {
        let mut e = build_engine("for_s = 60\n");
        let d = build_device("rvm1");
        e.observe(&d, &cpu(85.0), 0);
        e.observe(&d, &cpu(85.0), 50 * S);
        assert!(e.tick(59 * S).is_empty());
        assert_eq!(kinds(&e.tick(60 * S)), [TransitionKind::Firing]);
        assert!(e.tick(61 * S).is_empty());
    }

    #[test]
    fn tick_does_not_fire_a_pending_alert_of_a_device_that_went_silent() {
        let mut e = build_engine("for_s = 300\n");
        let d = build_device("rvm1");
        e.observe(&d, &cpu(85.0), 0);
        assert!(e.tick(300 * S).is_empty());
        assert_eq!(e.active()[0].state, AlertState::Pending);
    }

    #[test]
    fn hysteresis_on_a_noisy_signal_gives_one_firing_and_one_resolve() {
        let mut e = build_engine("clear = 75\n");
        let d = build_device("rvm1");
        let signal = [
            70.0, 81.0, 79.0, 82.0, 78.0, 80.5, 76.0, 83.0, 77.0, 74.0, 79.0, 76.0,
        ];
        let mut all = Vec::new();
        for (i, v) in signal.iter().enumerate() {
            all.extend(e.observe(&d, &cpu(*v), i as i64 * S));
        }
        assert_eq!(kinds(&all), [TransitionKind::Firing, TransitionKind::Resolved]);
        assert_eq!(all[1].alert.resolved_ms, Some(9 * S));
        assert_eq!(e.history().len(), 1);
    }

    #[test]
    fn a_device_that_stops_sending_keeps_its_alerts() {
        let mut e = build_engine("");
        let d = build_device("rvm1");
        e.observe(&d, &cpu(90.0), 0);
        assert!(e.tick(3600 * S).is_empty());
        assert!(
            e.observe(&d, &[("memory.used_pct".into(), 10.0)], 3600 * S)
                .is_empty()
        );
        assert_eq!(e.active()[0].state, AlertState::Firing);
    }

    #[test]
    fn cooldown_keeps_a_resolved_pair_from_firing_again() {
        let mut e = build_engine("cooldown_s = 600\n");
        let d = build_device("rvm1");
        e.observe(&d, &cpu(90.0), 0);
        assert_eq!(
            kinds(&e.observe(&d, &cpu(50.0), 10 * S)),
            [TransitionKind::Resolved]
        );
        assert!(e.observe(&d, &cpu(90.0), 20 * S).is_empty());
        assert!(e.observe(&d, &cpu(90.0), 609 * S).is_empty());
        // Another device is not affected.
        assert_eq!(e.observe(&build_device("rvm2"), &cpu(90.0), 30 * S).len(), 1);
        let t = e.observe(&d, &cpu(90.0), 610 * S);
        assert_eq!(kinds(&t), [TransitionKind::Firing]);
        assert_eq!(t[0].alert.id, "cpu_high:rvm1:2");
    }

    fn build_silence(id: &str, matchers: &[(&str, &str)], expires_ms: i64) -> Silence {
        Silence {
            id: id.into(),
            matchers: matchers
                .iter()
                .map(|(l, v)| Matcher {
                    label: (*l).into(),
                    value: (*v).into(),
                })
                .collect(),
            expires_ms,
            created_by: "ops".into(),
            comment: "maintenance".into(),
            created_ms: 0,
        }
    }

    #[test]
    fn a_silenced_alert_changes_state_with_silenced_transitions() {
        let mut e = build_engine("[rules.labels]\nteam = \"vision\"\n");
        let d1 = build_device("rvm1");
        let mut d2 = build_device("rvm2");
        d2.site = Some("bergen".into());
        e.add_silence(
            build_silence("s1", &[("site", "oslo"), ("team", "vision")], 100 * S),
            0,
        )
        .unwrap();
        let t1 = e.observe(&d1, &cpu(90.0), S);
        let t2 = e.observe(&d2, &cpu(90.0), S);
        assert!(t1[0].silenced && t1[0].alert.silenced_by.as_deref() == Some("s1"));
        assert!(!t2[0].silenced, "another site is not silenced");
        assert!(e.is_silenced(&t1[0].alert, 2 * S) && !e.is_silenced(&t2[0].alert, 2 * S));
        let r = e.observe(&d1, &cpu(10.0), 2 * S);
        assert_eq!(kinds(&r), [TransitionKind::Resolved]);
        assert!(r[0].silenced);
    }

    #[test]
    fn an_expiring_silence_unsilences_firing_alerts_once() {
        let mut e = build_engine("");
        let d = build_device("rvm1");
        e.add_silence(build_silence("s1", &[("device", "rvm1")], 100 * S), 0)
            .unwrap();
        e.observe(&d, &cpu(90.0), S);
        assert!(e.tick(99 * S).is_empty());
        let t = e.tick(100 * S);
        assert_eq!(kinds(&t), [TransitionKind::Unsilenced]);
        assert!(!t[0].silenced);
        assert!(e.tick(101 * S).is_empty());
        assert!(e.silences().is_empty());
        let r = e.observe(&d, &cpu(10.0), 102 * S);
        assert!(!r[0].silenced);
    }

    #[test]
    fn removing_a_silence_unsilences_and_bad_silences_are_refused() {
        let mut e = build_engine("");
        let d = build_device("rvm1");
        e.add_silence(build_silence("s1", &[("rule", "cpu_high")], 100 * S), 0)
            .unwrap();
        e.observe(&d, &cpu(90.0), S);
        assert_eq!(
            kinds(&e.remove_silence("s1", 2 * S).unwrap()),
            [TransitionKind::Unsilenced]
        );
        assert_eq!(
            e.remove_silence("s1", 2 * S),
            Err(AlertError::UnknownSilence("s1".into()))
        );
        assert!(matches!(
            e.add_silence(build_silence("s2", &[], 100 * S), 0),
            Err(AlertError::Invalid(_))
        ));
        assert!(matches!(
            e.add_silence(build_silence("s3", &[("device", "rvm1")], 5 * S), 5 * S),
            Err(AlertError::Invalid(_))
        ));
        e.add_silence(build_silence("s4", &[("device", "rvm1")], 50 * S), 3 * S)
            .unwrap();
        assert_eq!(
            e.add_silence(build_silence("s4", &[("device", "rvm1")], 50 * S), 3 * S),
            Err(AlertError::DuplicateSilence("s4".into()))
        );
        assert_eq!(e.silences()[0].created_ms, 3 * S);
    }

    #[test]
    fn acknowledgement_records_who_when_and_comment() {
        let mut e = build_engine("");
        let d = build_device("rvm1");
        let id = e.observe(&d, &cpu(90.0), 0)[0].alert.id.clone();
        let a = e.ack(&id, "alice", "looking at it", 5 * S).unwrap();
        assert_eq!(
            a.ack,
            Some(Ack {
                by: "alice".into(),
                at_ms: 5 * S,
                comment: "looking at it".into()
            })
        );
        assert_eq!(e.active()[0].ack.as_ref().map(|a| a.by.as_str()), Some("alice"));
        assert_eq!(
            e.ack(&id, "bob", "", 6 * S),
            Err(AlertError::AlreadyAcknowledged {
                id: id.clone(),
                by: "alice".into()
            })
        );
        assert!(matches!(
            e.ack("cpu_high:rvm1:9", "bob", "", 6 * S),
            Err(AlertError::UnknownAlert(_))
        ));
        assert!(matches!(
            e.ack("nonsense", "bob", "", 6 * S),
            Err(AlertError::UnknownAlert(_))
        ));
        e.observe(&d, &cpu(10.0), 7 * S);
        assert_eq!(
            e.ack(&id, "bob", "", 8 * S),
            Err(AlertError::NotActive(id.clone()))
        );
        assert_eq!(e.get(&id).map(|a| a.state), Some(AlertState::Resolved));
    }

    #[test]
    fn an_unacknowledged_critical_escalates_once() {
        let mut e = build_engine("").into_critical(Some(600 * S));
        let d = build_device("rvm1");
        e.observe(&d, &cpu(90.0), 0);
        assert!(e.tick(599 * S).is_empty());
        let t = e.tick(600 * S);
        assert_eq!(kinds(&t), [TransitionKind::Escalated]);
        assert_eq!(t[0].alert.escalated_ms, Some(600 * S));
        assert!(e.tick(1200 * S).is_empty());
        assert!(e.observe(&d, &cpu(90.0), 1300 * S).is_empty());
    }

    #[test]
    fn an_acknowledged_critical_does_not_escalate() {
        let mut e = build_engine("").into_critical(Some(600 * S));
        let d = build_device("rvm1");
        let id = e.observe(&d, &cpu(90.0), 0)[0].alert.id.clone();
        e.ack(&id, "alice", "", 10 * S).unwrap();
        assert!(e.tick(700 * S).is_empty());
    }

    #[test]
    fn escalation_is_seen_by_observe_too() {
        let mut e = build_engine("").into_critical(Some(60 * S));
        let d = build_device("rvm1");
        e.observe(&d, &cpu(90.0), 0);
        assert_eq!(
            kinds(&e.observe(&d, &cpu(90.0), 60 * S)),
            [TransitionKind::Escalated]
        );
        assert!(e.tick(61 * S).is_empty());
    }

    impl AlertEngine {
        fn into_critical(mut self, after: Option<i64>) -> Self {
            let mut rules = self.rules.clone();
            for r in &mut rules {
                r.severity = Severity::Critical;
                r.escalate_after_ms = after;
            }
            self.index(rules);
            self
        }
    }

    #[test]
    fn export_import_round_trip_produces_no_new_transitions() {
        let mut e = build_engine("for_s = 60\ncooldown_s = 300\n").into_critical(Some(600 * S));
        let (d1, d2, d3) = (build_device("rvm1"), build_device("rvm2"), build_device("rvm3"));
        e.observe(&d1, &cpu(90.0), 0);
        e.observe(&d1, &cpu(90.0), 60 * S); // firing
        e.observe(&d2, &cpu(90.0), 30 * S); // pending
        e.observe(&d3, &cpu(90.0), 0);
        e.observe(&d3, &cpu(90.0), 60 * S);
        e.observe(&d3, &cpu(10.0), 61 * S); // resolved, cooling down
        let id = e.active()[0].id.clone();
        e.ack(&id, "alice", "on it", 62 * S).unwrap();
        e.add_silence(build_silence("s1", &[("device", "rvm2")], 1000 * S), 62 * S)
            .unwrap();

        let json = serde_json::to_string(&e.export()).unwrap();
        let state: EngineState = serde_json::from_str(&json).unwrap();
        let mut f = AlertEngine::new(e.rules().to_vec());
        assert!(f.import(state, 70 * S).unwrap().is_empty());
        assert_eq!(f.active(), e.active());
        assert_eq!(f.history(), e.history());
        assert_eq!(f.silences(), e.silences());
        assert!(f.tick(70 * S).is_empty());
        assert!(
            f.observe(&d1, &cpu(90.0), 71 * S).is_empty(),
            "firing stays firing quietly"
        );
        assert!(f.observe(&d3, &cpu(90.0), 72 * S).is_empty(), "cooldown survived");
        assert_eq!(
            f.get(&id)
                .and_then(|a| a.ack.as_ref())
                .map(|a| a.comment.as_str()),
            Some("on it")
        );
        // The pending alert keeps its start: it fires 60 s after the original first sample.
        let t = f.observe(&d2, &cpu(90.0), 90 * S);
        assert_eq!(kinds(&t), [TransitionKind::Firing]);
        assert!(t[0].silenced);
        // A re-fire after resolve does not reuse an id.
        f.observe(&d1, &cpu(10.0), 100 * S);
        let t = f.observe(&d1, &cpu(90.0), 2000 * S);
        assert_eq!(t[0].alert.id, "cpu_high:rvm1:2");
    }

    #[test]
    fn importing_alerts_of_a_removed_rule_resolves_them() {
        let mut e = build_engine("");
        e.observe(&build_device("rvm1"), &cpu(90.0), 0);
        let mut f = AlertEngine::new(Vec::new());
        let t = f.import(e.export(), 10 * S).unwrap();
        assert_eq!(kinds(&t), [TransitionKind::Resolved]);
        assert!(f.active().is_empty());
        let mut state = e.export();
        state.version = 99;
        assert_eq!(f.import(state, 0), Err(AlertError::StateVersion { found: 99 }));
    }

    #[test]
    fn scope_by_site_and_tag_selects_devices() {
        let mut e = AlertEngine::new(
            parse_rules(concat!(
                "[[rules]]\nname = \"oslo_only\"\nmetric = \"cpu.usage_pct\"\nop = \">\"\nthreshold = 80\n",
                "severity = \"warning\"\nscope = { site = \"oslo\" }\n",
                "[[rules]]\nname = \"canary_only\"\nmetric = \"cpu.usage_pct\"\nop = \">\"\nthreshold = 80\n",
                "severity = \"warning\"\nscope = { tag = \"canary\" }\n",
            ))
            .unwrap()
            .rules,
        );
        let oslo = build_device("rvm1");
        let mut canary = build_device("rvm2");
        canary.site = Some("bergen".into());
        canary.tags = vec!["canary".into()];
        let mut neither = build_device("rvm3");
        neither.site = None;
        let rules_of = |t: Vec<Transition>| t.into_iter().map(|t| t.alert.rule).collect::<Vec<_>>();
        assert_eq!(rules_of(e.observe(&oslo, &cpu(90.0), 0)), ["oslo_only"]);
        assert_eq!(rules_of(e.observe(&canary, &cpu(90.0), 0)), ["canary_only"]);
        assert!(e.observe(&neither, &cpu(90.0), 0).is_empty());
    }

    #[test]
    fn an_absolute_value_rule_fires_on_negative_skew() {
        let mut e = AlertEngine::new(
            parse_rules(
                "[[rules]]\nname = \"skew\"\nmetric = \"clock.skew_s\"\nabs = true\nop = \">\"\nthreshold = 30\nclear = 10\nseverity = \"warning\"\n",
            )
            .unwrap()
            .rules,
        );
        let d = build_device("rvm1");
        let skew = |v: f64| vec![("clock.skew_s".to_string(), v)];
        assert_eq!(kinds(&e.observe(&d, &skew(-45.0), 0)), [TransitionKind::Firing]);
        assert!(e.observe(&d, &skew(-20.0), S).is_empty());
        assert_eq!(
            kinds(&e.observe(&d, &skew(5.0), 2 * S)),
            [TransitionKind::Resolved]
        );
    }

    #[test]
    fn non_finite_values_are_ignored() {
        let mut e = build_engine("");
        let d = build_device("rvm1");
        assert!(e.observe(&d, &cpu(f64::NAN), 0).is_empty());
        assert!(e.observe(&d, &cpu(f64::INFINITY), 0).is_empty());
    }

    #[test]
    fn history_is_bounded() {
        let mut e = build_engine("").with_history_cap(10);
        let d = build_device("rvm1");
        for i in 0..50 {
            e.observe(&d, &cpu(90.0), i * 2 * S);
            e.observe(&d, &cpu(10.0), (i * 2 + 1) * S);
        }
        assert_eq!(e.history().len(), 10);
        assert_eq!(e.history()[9].id, "cpu_high:rvm1:50");
        assert!(e.history.len() <= 10 + 10 / 8 + 1);
    }

    /// Samples mostly inside the hysteresis band (75, 90), with excursions to or below clear
    /// and above the threshold.
    fn band_signal() -> impl Strategy<Value = Vec<f64>> {
        prop::collection::vec(
            prop_oneof![8 => 75.01f64..90.0, 1 => 0.0f64..=75.0, 1 => 80.01f64..100.0],
            1..200,
        )
    }

    proptest! {
        #[test]
        fn noise_inside_the_hysteresis_band_never_flaps(noise in prop::collection::vec(75.01f64..95.0, 0..200)) {
            let mut e = build_engine("clear = 75\n");
            let d = build_device("rvm1");
            let mut all = e.observe(&d, &cpu(85.0), 0);
            for (i, v) in noise.iter().enumerate() {
                all.extend(e.observe(&d, &cpu(*v), (i as i64 + 1) * S));
            }
            all.extend(e.observe(&d, &cpu(50.0), 1000 * S));
            prop_assert_eq!(kinds(&all), vec![TransitionKind::Firing, TransitionKind::Resolved]);
        }

        #[test]
        fn transitions_alternate_and_follow_the_signal(signal in band_signal(), for_s in 0u64..5) {
            let mut e = build_engine(&format!("clear = 75\nfor_s = {for_s}\n"));
            let d = build_device("rvm1");
            let mut firing = false;
            let mut pending_since: Option<i64> = None;
            for (i, v) in signal.iter().enumerate() {
                let now = i as i64 * S;
                for t in e.observe(&d, &cpu(*v), now) {
                    match t.kind {
                        TransitionKind::Pending => {
                            prop_assert!(!firing && pending_since.is_none() && *v > 80.0);
                            pending_since = Some(now);
                        }
                        TransitionKind::Firing => {
                            prop_assert!(!firing && *v > 80.0);
                            let since = pending_since.unwrap_or(now);
                            prop_assert!(now - since >= for_s as i64 * S);
                            firing = true;
                            pending_since = None;
                        }
                        TransitionKind::Resolved => {
                            prop_assert!(firing && *v <= 75.0);
                            firing = false;
                        }
                        TransitionKind::Cancelled => {
                            prop_assert!(pending_since.is_some() && *v <= 80.0);
                            pending_since = None;
                        }
                        TransitionKind::Escalated | TransitionKind::Unsilenced => prop_assert!(false),
                    }
                }
                prop_assert!(e.active().len() <= 1);
            }
        }
    }

    fn build_check(name: &str, status: common::HealthStatus, message: &str) -> CheckResult {
        CheckResult {
            name: name.into(),
            status,
            message: message.into(),
        }
    }

    fn build_check_engine(toml: &str) -> AlertEngine {
        let set = parse_rules(toml).unwrap();
        AlertEngine::new(set.rules).with_health_checks(set.health_checks)
    }

    #[test]
    fn a_failing_http_check_fires_an_alert_naming_it_and_resolves_when_it_passes() {
        use common::HealthStatus::{Critical, Ok};
        let mut e = build_check_engine("");
        let d = build_device("rvm1");
        let failing = [
            build_check("cpu", Critical, "cpu 99 % used"),
            build_check("http:vision", Critical, "http vision answered 500 (expected 200)"),
            build_check("broker", Ok, "broker connected"),
        ];
        let t = e.observe_checks(&d, &failing, 0);
        assert_eq!(
            kinds(&t),
            [TransitionKind::Firing],
            "cpu is the metric rules' job"
        );
        let a = &t[0].alert;
        assert_eq!(a.id, "check.http.vision:rvm1:1");
        assert_eq!(a.severity, Severity::Critical);
        assert_eq!(a.summary, "http vision answered 500 (expected 200)");
        assert_eq!(a.labels["check"], "http:vision");
        assert_eq!(a.labels["check_kind"], "http");
        assert_eq!(a.labels["site"], "oslo");
        // the same report again changes nothing; a pass resolves
        assert!(e.observe_checks(&d, &failing, S).is_empty());
        let passing = [build_check("http:vision", Ok, "http vision answered 200")];
        let t = e.observe_checks(&d, &passing, 2 * S);
        assert_eq!(kinds(&t), [TransitionKind::Resolved]);
        assert!(e.active().is_empty());
        // failing again is a new alert
        let t = e.observe_checks(&d, &failing, 3 * S);
        assert_eq!(t[0].alert.id, "check.http.vision:rvm1:2");
    }

    #[test]
    fn a_check_that_gets_worse_pages_again_at_the_new_severity_and_one_that_improves_stays() {
        use common::HealthStatus::{Critical, Warn};
        let mut e = build_check_engine("");
        let d = build_device("rvm1");
        let warn = [build_check(
            "unit:vision.service",
            Warn,
            "unit vision.service is activating",
        )];
        let crit = [build_check(
            "unit:vision.service",
            Critical,
            "unit vision.service is failed",
        )];
        let t = e.observe_checks(&d, &warn, 0);
        assert_eq!(
            (t[0].kind, t[0].alert.severity),
            (TransitionKind::Firing, Severity::Warning)
        );
        let t = e.observe_checks(&d, &crit, S);
        assert_eq!(kinds(&t), [TransitionKind::Resolved, TransitionKind::Firing]);
        assert_eq!(t[1].alert.severity, Severity::Critical);
        assert_eq!(t[1].alert.summary, "unit vision.service is failed");
        assert!(
            e.observe_checks(&d, &warn, 2 * S).is_empty(),
            "better, still failing"
        );
        assert_eq!(e.active()[0].severity, Severity::Critical);
    }

    #[test]
    fn a_check_no_longer_reported_resolves_and_checks_of_other_machines_stay() {
        use common::HealthStatus::Critical;
        let mut e = build_check_engine("");
        let (d1, d2) = (build_device("rvm1"), build_device("rvm2"));
        let cam = [build_check(
            "camera",
            Critical,
            "no camera device matches /dev/video*",
        )];
        e.observe_checks(&d1, &cam, 0);
        e.observe_checks(&d2, &cam, 0);
        let t = e.observe_checks(&d1, &[], S);
        assert_eq!(kinds(&t), [TransitionKind::Resolved]);
        assert_eq!(t[0].alert.device.as_str(), "rvm1");
        assert_eq!(e.active().len(), 1);
    }

    #[test]
    fn check_alerts_wait_for_for_s_escalate_by_tick_and_survive_an_import() {
        use common::HealthStatus::Critical;
        let toml = "[health_checks]\nfor_s = 10\nescalate_after_s = 60\nlabels = { team = \"field\" }\n";
        let mut e = build_check_engine(toml);
        let d = build_device("rvm1");
        let disk = [build_check("data_disk", Critical, "/data is not writable")];
        assert_eq!(kinds(&e.observe_checks(&d, &disk, 0)), [TransitionKind::Pending]);
        assert_eq!(kinds(&e.tick(10 * S)), [TransitionKind::Firing]);
        assert_eq!(e.active()[0].labels["team"], "field");
        let state = e.export();
        let mut again = build_check_engine(toml);
        assert!(
            again.import(state, 20 * S).unwrap().is_empty(),
            "kept, not an orphan"
        );
        assert_eq!(kinds(&again.tick(70 * S)), [TransitionKind::Escalated]);
        let t = again.observe_checks(
            &d,
            &[build_check("data_disk", common::HealthStatus::Ok, "ok")],
            80 * S,
        );
        assert_eq!(kinds(&t), [TransitionKind::Resolved]);
        // with health checks turned off, an imported check alert resolves
        let mut off = build_check_engine("[health_checks]\nenabled = false\n");
        let mut on = build_check_engine("");
        on.observe_checks(&d, &disk, 0);
        let t = off.import(on.export(), S).unwrap();
        assert_eq!(kinds(&t), [TransitionKind::Resolved]);
        assert!(off.observe_checks(&d, &disk, 2 * S).is_empty());
    }

    #[test]
    fn an_actor_that_restarted_raises_nothing_and_one_that_stopped_does() {
        use common::HealthStatus::{Critical, Warn};
        let mut e = build_check_engine("");
        let d = build_device("rvm1");
        let restarted = [build_check(
            "actor:collector",
            Warn,
            "actor collector restarted 2 time(s)",
        )];
        assert!(e.observe_checks(&d, &restarted, 0).is_empty());
        let dead = [build_check(
            "actor:collector",
            Critical,
            "actor collector is not running",
        )];
        let t = e.observe_checks(&d, &dead, S);
        assert_eq!(t[0].alert.id, "check.actor.collector:rvm1:1");
    }
}
