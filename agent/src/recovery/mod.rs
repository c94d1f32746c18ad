//! Recovery: the `[recovery]` config, the pure policy (escalation ladder, allow-list, rate
//! limits, interlock), the executors that carry actions out, and the recovery actor.
//!
//! The recovery actor ([`actor`]) does, for a health report:
//!
//! ```text
//! for planned in policy.on_health(&report, now)            // pure: which ladder steps are due
//!     match policy.decide(&planned.action, &Source::Local, &interlock, now)   // pure gate
//!         Allowed    -> outcome = executor.execute(..) on a blocking thread
//!         Refused(r) -> outcome = Refused, detail = r
//!     policy.record_outcome(&planned, outcome, now)        // advances or holds the ladder
//!     buffer.append(event_for(&planned.action, outcome, detail))
//! ```
//!
//! and for a verified remote command the same with `Source::Remote(id)` and no ladder.
//!
//! Invariants:
//! - Nothing runs that [`policy::RecoveryPolicy::decide`] did not allow, and every allowed or
//!   refused action becomes exactly one `Event` (built by [`events::event_for`]).
//! - Only the eight `Action`s exist; restarts only touch units and processes that `[health]`
//!   watches (or that `extra_units` / `extra_processes` name), network restarts only the
//!   interfaces in `network_interfaces`, and a camera reset only runs the operator's
//!   `camera_reset_command` with a checked camera name: a bad or hostile command cannot name
//!   anything else.
//! - A ladder with `escalate` (every camera ladder) that runs out of steps with its check
//!   still critical becomes one critical `escalate` event ([`events::escalation_event`]) per
//!   run; the ladder then waits for the check to be ok for `reset_after_ok_s`: no loop.
//! - A reboot needs `allow_reboot = true`; with it false a reboot step is never even planned.
//! - Disruptive actions (restarts, network restart, reboot, camera reset) are refused while the vision
//!   service reports a transaction ([`interlock::Interlock`]); a refused ladder step stays the
//!   next step.
//! - Rate limits count allowed actions per action and target over the last hour (and reboots
//!   over the last day). They live in memory: the actor should persist
//!   [`policy::RecoveryPolicy::history`] and give it back with
//!   [`policy::RecoveryPolicy::restore_history`] so a reboot does not reset them.
//!
//! - [`config`]: the `[recovery]` section, ladder rules and step parsing
//! - [`interlock`]: the vision service's "do not disturb" (pure)
//! - [`policy`]: the escalation ladders and the gate every action passes (pure)
//! - [`events`]: the event each action, run or refused, becomes
//! - [`executor`]: what carries an allowed action out (the system one, a recording one for tests)
//! - [`clean`]: the temp cleaner behind `clean_temp`
//! - [`diagnostics`]: the diagnostics file behind `collect_diagnostics`
//! - [`actor`]: ladder steps on health reports, remote commands, one action at a time

pub mod actor;
pub mod clean;
pub mod config;
pub mod diagnostics;
pub mod events;
pub mod executor;
pub mod interlock;
pub mod policy;
