//! The event each action becomes, run or refused: severity by outcome, the action and its
//! target, and the detail (a refusal reason or the command's output) bounded to
//! `MAX_RESULT_OUTPUT`; and the event of a ladder that escalates.

use common::command::{Action, MAX_RESULT_OUTPUT};
use common::{ActionOutcome, Event, EventKind, Severity};

use super::policy::Escalation;

/// [`event_for`], with who asked (`Source::describe`, `PlannedAction::describe`) appended to
/// the message: `reboot refused: interlock: transaction in progress (ladder unit:x step 3/3)`.
pub fn event_with_origin(
    action: &Action,
    outcome: ActionOutcome,
    detail: impl Into<String>,
    origin: &str,
) -> Event {
    let mut e = event_for(action, outcome, detail);
    if !origin.is_empty() {
        e.message = format!("{} ({origin})", e.message);
    }
    e
}

/// The event for an executed or refused action. `detail` is the refusal reason or the
/// command's (bounded) output.
pub fn event_for(action: &Action, outcome: ActionOutcome, detail: impl Into<String>) -> Event {
    let detail = bound_output(detail.into());
    let (severity, word) = match outcome {
        ActionOutcome::Succeeded if *action == Action::Reboot => (Severity::Warning, "succeeded"),
        ActionOutcome::Succeeded => (Severity::Info, "succeeded"),
        ActionOutcome::Refused => (Severity::Warning, "refused"),
        ActionOutcome::Failed => (Severity::Critical, "failed"),
    };
    let first_line: String = detail.lines().next().unwrap_or("").chars().take(200).collect();
    let message = if first_line.is_empty() {
        format!("{action} {word}")
    } else {
        format!("{action} {word}: {first_line}")
    };
    Event {
        severity,
        kind: EventKind::Recovery {
            action: action.name().to_string(),
            target: action.target().to_string(),
            outcome,
            detail,
        },
        message,
    }
}

/// The action name of an escalation event (`EventKind::Recovery`, outcome failed): the
/// server's `recovery_failed` rule pages it like a failed action.
pub const ESCALATE: &str = "escalate";

/// The event for a ladder that ran out of steps with its check still critical: critical, an
/// `escalate` "action" on the check that failed, so a person is paged.
pub fn escalation_event(e: &Escalation) -> Event {
    let tried = if e.tried.is_empty() {
        "no step could run".to_string()
    } else {
        format!("tried {}", e.tried.join(", "))
    };
    let detail = format!(
        "{} is still critical after its recovery ladder ({tried}): a person is needed",
        e.check
    );
    Event {
        severity: Severity::Critical,
        kind: EventKind::Recovery {
            action: ESCALATE.into(),
            target: e.check.clone(),
            outcome: ActionOutcome::Failed,
            detail: bound_output(detail.clone()),
        },
        message: detail,
    }
}

/// Cuts `s` to [`MAX_RESULT_OUTPUT`] bytes at a character boundary, marking the cut.
pub fn bound_output(s: String) -> String {
    bound_to(s, MAX_RESULT_OUTPUT)
}

fn bound_to(mut s: String, max: usize) -> String {
    const MARK: &str = "\n[truncated]";
    if s.len() <= max {
        return s;
    }
    let mut end = max.saturating_sub(MARK.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(MARK);
    s
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::policy::tests::vision_restart;

    #[test]
    fn events_carry_the_action_target_outcome_and_detail() {
        let e = event_for(&vision_restart(), ActionOutcome::Succeeded, "done");
        assert_eq!(e.severity, Severity::Info);
        assert_eq!(e.message, "restart_unit(vision.service) succeeded: done");
        assert_eq!(
            e.kind,
            EventKind::Recovery {
                action: "restart_unit".into(),
                target: "vision.service".into(),
                outcome: ActionOutcome::Succeeded,
                detail: "done".into(),
            }
        );
        let long = event_for(
            &Action::CollectDiagnostics,
            ActionOutcome::Failed,
            "é".repeat(5000),
        );
        match long.kind {
            EventKind::Recovery { detail, .. } => assert!(detail.len() <= MAX_RESULT_OUTPUT),
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn output_is_bounded_at_a_character_boundary() {
        let s = bound_output("é".repeat(5000));
        assert!(s.len() <= MAX_RESULT_OUTPUT);
        assert!(s.ends_with("[truncated]"));
        assert_eq!(bound_output("short".into()), "short");
    }
}
