//! Verifying a received command (signature, device, expiry, never seen before) and building
//! its results.

use common::DeviceId;
use common::command::{self, Command, CommandResult, CommandStatus, MAX_RESULT_OUTPUT, SignedCommand};

use super::executed::ExecutedStore;

/// What to do with a command that arrived.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// New and valid: record it, then run it through the gate.
    Run(Command),
    /// New and valid, and a dry run: put it through the gate without running it, and answer
    /// with what would happen (nothing recorded but the answer).
    DryRun(Command),
    /// Seen before: answer with what is stored, run nothing.
    Repeat(CommandResult),
    /// Refused; `id` is the command's claimed id (untrusted when the signature failed).
    Reject { id: String, reason: String },
}

/// Checks one signed command (pure apart from the store lookup).
pub fn check(
    signed: &SignedCommand,
    key: Option<&[u8; 32]>,
    me: &DeviceId,
    store: &dyn ExecutedStore,
    now_ms: i64,
) -> Verdict {
    // the claimed id, for the report only
    let claimed = command::decode_payload(&signed.payload)
        .map(|(c, _)| c.id)
        .unwrap_or_else(|_| "unknown".into());
    let Some(key) = key else {
        return Verdict::Reject {
            id: claimed,
            reason: "commands disabled: no commands.public_key configured".into(),
        };
    };
    match command::verify_with_options(signed, key, me, now_ms) {
        Ok((cmd, opts)) => match store.get(&cmd.id) {
            Some(prev) => Verdict::Repeat(prev),
            None if opts.dry_run => Verdict::DryRun(cmd),
            None => Verdict::Run(cmd),
        },
        Err(e) => Verdict::Reject {
            id: claimed,
            reason: format!("{}: {e}", e.label()),
        },
    }
}

pub fn result(id: &str, status: CommandStatus, output: String, reason: Option<String>) -> CommandResult {
    let mut output = output;
    if output.len() > MAX_RESULT_OUTPUT {
        let mut cut = MAX_RESULT_OUTPUT;
        while !output.is_char_boundary(cut) {
            cut -= 1;
        }
        output.truncate(cut);
    }
    CommandResult {
        command_id: id.to_string(),
        status,
        output,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use common::command::{Action, CommandSigner};

    use super::*;
    use crate::commands::executed::MemExecuted;

    fn signer() -> CommandSigner {
        CommandSigner::from_pkcs8(&CommandSigner::generate_pkcs8().unwrap()).unwrap()
    }

    fn cmd(id: &str, device: &str, expires: i64) -> Command {
        Command {
            id: id.into(),
            device: DeviceId::new(device).unwrap(),
            action: Action::DropCaches,
            issued_ms: 0,
            expires_ms: expires,
            issued_by: "op".into(),
            reason: "r".into(),
        }
    }

    #[test]
    fn a_valid_new_command_runs_and_a_repeat_gets_the_stored_result() {
        let s = signer();
        let me = DeviceId::new("a").unwrap();
        let store = MemExecuted::default();
        let sc = s.sign(&cmd("c1", "a", 100)).unwrap();
        assert!(matches!(
            check(&sc, Some(&s.public_key()), &me, &store, 1),
            Verdict::Run(_)
        ));
        let done = result("c1", CommandStatus::Succeeded, "ok".into(), None);
        store.put("c1", &done).unwrap();
        assert_eq!(
            check(&sc, Some(&s.public_key()), &me, &store, 2),
            Verdict::Repeat(done)
        );
    }

    #[test]
    fn bad_signatures_other_devices_and_expired_commands_are_rejected_with_the_reason() {
        let s = signer();
        let other = signer();
        let me = DeviceId::new("a").unwrap();
        let store = MemExecuted::default();
        let by_other = other.sign(&cmd("c1", "a", 100)).unwrap();
        let Verdict::Reject { id, reason } = check(&by_other, Some(&s.public_key()), &me, &store, 1) else {
            panic!()
        };
        assert_eq!(id, "c1");
        assert!(reason.starts_with("bad_signature"), "{reason}");
        let for_b = s.sign(&cmd("c2", "b", 100)).unwrap();
        assert!(
            matches!(check(&for_b, Some(&s.public_key()), &me, &store, 1), Verdict::Reject { reason, .. } if reason.starts_with("wrong_device"))
        );
        let old = s.sign(&cmd("c3", "a", 100)).unwrap();
        assert!(
            matches!(check(&old, Some(&s.public_key()), &me, &store, 100), Verdict::Reject { reason, .. } if reason.starts_with("expired"))
        );
        assert!(
            matches!(check(&old, None, &me, &store, 1), Verdict::Reject { reason, .. } if reason.contains("disabled"))
        );
    }

    #[test]
    fn a_signed_dry_run_is_a_dry_run_and_an_ordinary_command_runs() {
        let s = signer();
        let me = DeviceId::new("a").unwrap();
        let store = MemExecuted::default();
        let dry = s
            .sign_with(
                &cmd("c1", "a", 100),
                common::command::CommandOptions { dry_run: true },
            )
            .unwrap();
        assert!(
            matches!(check(&dry, Some(&s.public_key()), &me, &store, 1), Verdict::DryRun(c) if c.id == "c1")
        );
        let forged = signer()
            .sign_with(
                &cmd("c2", "a", 100),
                common::command::CommandOptions { dry_run: true },
            )
            .unwrap();
        assert!(matches!(
            check(&forged, Some(&s.public_key()), &me, &store, 1),
            Verdict::Reject { id, .. } if id == "c2"
        ));
    }

    #[test]
    fn output_is_bounded() {
        let r = result("c", CommandStatus::Succeeded, "é".repeat(5000), None);
        assert!(r.output.len() <= MAX_RESULT_OUTPUT);
    }
}
