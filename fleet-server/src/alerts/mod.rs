//! Alerts: rules from `config/rules.toml` and the engine that turns samples into alerts.
//! Both are pure (no IO, no clock: every call takes `now_ms`); the alerts actor owns an
//! [`AlertEngine`] and a [`crate::correlate::Correlator`], persists their exports, and hands
//! transitions to notifiers.
//!
//! - [`rules`]: the file format, defaults, validation naming every bad key, runtime [`Rule`]
//! - [`engine`]: per (rule, device) lifecycle pending -> firing -> resolved, `for`, hysteresis,
//!   cooldown, acknowledgement, silences, escalation, export/import
//! - [`inputs`]: the inputs the server derives (presence, restarts, drops, recoveries, skew)
//!
//! Invariants: one active alert per (rule, device); transitions only for changes (an imported
//! state is not notified again); a silenced alert still changes state, its transitions say
//! `silenced: true`.

pub mod engine;
pub mod inputs;
pub mod rules;
pub mod store;

pub use engine::{
    Ack, Alert, AlertEngine, AlertError, AlertState, DeviceInfo, EngineState, Matcher, Silence, Transition,
    TransitionKind,
};
pub use rules::{Op, Rule, RuleSet, RulesError, RulesFile, Scope, parse_rules};
