//! Test helpers of the command book and rollouts: ids, records and results.

use common::DeviceId;
use common::command::{Action, CommandResult, CommandStatus, SignedCommand};

use super::book::{CmdState, CommandRecord};

pub(super) fn d(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}

pub(super) fn rec(id: &str, dev: &str, created: i64, ttl_ms: i64) -> CommandRecord {
    CommandRecord {
        id: id.into(),
        device: d(dev),
        action: Action::DropCaches,
        reason: "r".into(),
        issued_by: "op".into(),
        created_ms: created,
        expires_ms: created + ttl_ms,
        state: CmdState::Queued,
        updated_ms: created,
        output: String::new(),
        detail: None,
        sends: 0,
        last_sent_ms: None,
        accepted_ms: None,
        rollout: None,
        signed: SignedCommand {
            payload: vec![],
            signature: vec![],
        },
        dry_run: false,
        approved_by: None,
        approved_ms: None,
    }
}

pub(super) fn result(id: &str, status: CommandStatus) -> CommandResult {
    CommandResult {
        command_id: id.into(),
        status,
        output: "out".into(),
        reason: None,
    }
}
