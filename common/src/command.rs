//! Signed recovery commands.
//!
//! The server signs the bincode encoding of a [`Command`] with its Ed25519 key; the agent
//! verifies the signature with the server's public key, then that the command names this
//! device and has not expired. Replay protection (a command id never runs twice) is the
//! agent's job: it keeps executed ids in its store.
//!
//! The signature covers `SIGNING_CONTEXT || payload`, so a signature made for anything else
//! with the same key can never pass as a command.
//!
//! ## Options after the command (dry runs)
//!
//! The payload is the bincode of [`Command`], optionally followed by the bincode of
//! [`CommandOptions`]. The options are written only when they differ from the default, so an
//! ordinary command is byte for byte what it always was and every agent in the field runs it.
//! An agent built before the options existed decodes the payload with "no trailing bytes",
//! so it refuses a command that carries options (a dry run) as malformed: it can never run a
//! dry run for real. The options are inside the signed bytes: nobody can strip or add them.

use std::fmt;

use ring::rand::SystemRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError};
use crate::ids::DeviceId;

/// Domain separation for command signatures.
pub const SIGNING_CONTEXT: &[u8] = b"rvm-fleet/command/v1\0";

/// Longest output a command result carries; the agent truncates to this.
pub const MAX_RESULT_OUTPUT: usize = 4096;

/// The recovery allow-list. Nothing outside this enum can be asked of an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    RestartUnit {
        unit: String,
    },
    RestartProcess {
        name: String,
    },
    DropCaches,
    CleanTemp,
    RestartNetwork {
        interface: String,
    },
    Reboot,
    CollectDiagnostics,
    /// Resets a USB camera by the name the vision service gives it (`front`), with the command
    /// the agent's config names (`recovery.camera_reset_command`); the wire carries only the name.
    ResetCamera {
        camera: String,
    },
}

impl Action {
    /// Stable name, as used in configs, events and the API.
    pub fn name(&self) -> &'static str {
        match self {
            Action::RestartUnit { .. } => "restart_unit",
            Action::RestartProcess { .. } => "restart_process",
            Action::DropCaches => "drop_caches",
            Action::CleanTemp => "clean_temp",
            Action::RestartNetwork { .. } => "restart_network",
            Action::Reboot => "reboot",
            Action::CollectDiagnostics => "collect_diagnostics",
            Action::ResetCamera { .. } => "reset_camera",
        }
    }

    /// What the action acts on, for events and the audit log.
    pub fn target(&self) -> &str {
        match self {
            Action::RestartUnit { unit } => unit,
            Action::RestartProcess { name } => name,
            Action::RestartNetwork { interface } => interface,
            Action::ResetCamera { camera } => camera,
            _ => "",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.target() {
            "" => f.write_str(self.name()),
            t => write!(f, "{}({t})", self.name()),
        }
    }
}

/// What the server asks of one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub id: String,
    pub device: DeviceId,
    pub action: Action,
    pub issued_ms: i64,
    pub expires_ms: i64,
    pub issued_by: String,
    pub reason: String,
}

/// How the agent is to handle a command; encoded after the [`Command`] in the signed payload
/// when not the default (module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOptions {
    /// Validate (signature, target, expiry, allow list, interlock, rate limits) and answer
    /// with what would happen, without doing it.
    pub dry_run: bool,
}

/// A command as it travels on `rvm/v1/{device}/cmd`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCommand {
    /// bincode of [`Command`].
    pub payload: Vec<u8>,
    /// Ed25519 over `SIGNING_CONTEXT || payload`.
    pub signature: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    Accepted,
    Running,
    Succeeded,
    Failed,
    Rejected,
}

impl CommandStatus {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            CommandStatus::Succeeded | CommandStatus::Failed | CommandStatus::Rejected
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    pub command_id: String,
    pub status: CommandStatus,
    /// Bounded to [`MAX_RESULT_OUTPUT`] bytes.
    pub output: String,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("signature does not verify")]
    BadSignature,
    #[error("command is for device {found}, this is {expected}")]
    WrongDevice { found: String, expected: String },
    #[error("command expired at {expires_ms} (now {now_ms})")]
    Expired { expires_ms: i64, now_ms: i64 },
    #[error("command payload: {0}")]
    Codec(#[from] CodecError),
    #[error("signing key: {0}")]
    Key(String),
}

impl CommandError {
    pub fn label(&self) -> &'static str {
        match self {
            CommandError::BadSignature => "bad_signature",
            CommandError::WrongDevice { .. } => "wrong_device",
            CommandError::Expired { .. } => "expired",
            CommandError::Codec(_) => "malformed",
            CommandError::Key(_) => "key",
        }
    }
}

/// The server's command-signing key.
pub struct CommandSigner {
    key: Ed25519KeyPair,
}

impl CommandSigner {
    /// Makes a new key, returned as PKCS#8 DER (store it 0600).
    pub fn generate_pkcs8() -> Result<Vec<u8>, CommandError> {
        Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map(|d| d.as_ref().to_vec())
            .map_err(|e| CommandError::Key(e.to_string()))
    }

    pub fn from_pkcs8(der: &[u8]) -> Result<Self, CommandError> {
        Ed25519KeyPair::from_pkcs8(der)
            .map(|key| Self { key })
            .map_err(|e| CommandError::Key(e.to_string()))
    }

    /// The 32-byte public key agents verify with.
    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.key.public_key().as_ref());
        out
    }

    pub fn sign(&self, command: &Command) -> Result<SignedCommand, CommandError> {
        self.sign_with(command, CommandOptions::default())
    }

    /// Signs a command with its options (written only when not the default: module docs).
    pub fn sign_with(
        &self,
        command: &Command,
        options: CommandOptions,
    ) -> Result<SignedCommand, CommandError> {
        let mut payload = codec::encode(command)?;
        if options != CommandOptions::default() {
            payload.extend(codec::encode(&options)?);
        }
        let signature = self.key.sign(&signed_message(&payload)).as_ref().to_vec();
        Ok(SignedCommand { payload, signature })
    }
}

fn signed_message(payload: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SIGNING_CONTEXT.len() + payload.len());
    msg.extend_from_slice(SIGNING_CONTEXT);
    msg.extend_from_slice(payload);
    msg
}

/// The command and its options from a payload (no trailing bytes after the options).
pub fn decode_payload(payload: &[u8]) -> Result<(Command, CommandOptions), CodecError> {
    let (command, used): (Command, usize) = codec::decode_prefix(payload)?;
    let rest = &payload[used..];
    let options = if rest.is_empty() {
        CommandOptions::default()
    } else {
        codec::decode_bare(rest)?
    };
    Ok((command, options))
}

/// Checks signature, target device and expiry, in that order, and returns the command.
pub fn verify(
    signed: &SignedCommand,
    public_key: &[u8; 32],
    this_device: &DeviceId,
    now_ms: i64,
) -> Result<Command, CommandError> {
    verify_with_options(signed, public_key, this_device, now_ms).map(|(c, _)| c)
}

/// [`verify`], also returning the command's options (a dry run).
pub fn verify_with_options(
    signed: &SignedCommand,
    public_key: &[u8; 32],
    this_device: &DeviceId,
    now_ms: i64,
) -> Result<(Command, CommandOptions), CommandError> {
    UnparsedPublicKey::new(&signature::ED25519, public_key)
        .verify(&signed_message(&signed.payload), &signed.signature)
        .map_err(|_| CommandError::BadSignature)?;
    let (command, options) = decode_payload(&signed.payload)?;
    if &command.device != this_device {
        return Err(CommandError::WrongDevice {
            found: command.device.to_string(),
            expected: this_device.to_string(),
        });
    }
    if command.expires_ms <= now_ms {
        return Err(CommandError::Expired {
            expires_ms: command.expires_ms,
            now_ms,
        });
    }
    Ok((command, options))
}

/// Hex of a public key, the format of `command-signing.pub`.
pub fn public_key_to_hex(key: &[u8; 32]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn public_key_from_hex(s: &str) -> Result<[u8; 32], CommandError> {
    let s = s.trim();
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(CommandError::Key("public key must be 64 hex characters".into()));
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|e| CommandError::Key(e.to_string()))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn build_signer() -> CommandSigner {
        CommandSigner::from_pkcs8(&CommandSigner::generate_pkcs8().unwrap()).unwrap()
    }

    fn build_command(device: &str, expires_ms: i64) -> Command {
        Command {
            id: "c-1".into(),
            device: DeviceId::new(device).unwrap(),
            action: Action::RestartUnit {
                unit: "vision.service".into(),
            },
            issued_ms: 1000,
            expires_ms,
            issued_by: "alice".into(),
            reason: "stuck".into(),
        }
    }

    #[test]
    fn a_signed_command_verifies_for_its_device() {
        let s = build_signer();
        let c = build_command("rvm1", 10_000);
        let sc = s.sign(&c).unwrap();
        let got = verify(&sc, &s.public_key(), &DeviceId::new("rvm1").unwrap(), 5_000).unwrap();
        assert_eq!(got, c);
    }

    #[test]
    fn a_command_for_another_device_is_refused() {
        let s = build_signer();
        let sc = s.sign(&build_command("rvm2", 10_000)).unwrap();
        let err = verify(&sc, &s.public_key(), &DeviceId::new("rvm1").unwrap(), 5_000);
        assert!(matches!(err, Err(CommandError::WrongDevice { .. })));
    }

    #[test]
    fn an_expired_command_is_refused() {
        let s = build_signer();
        let sc = s.sign(&build_command("rvm1", 10_000)).unwrap();
        let err = verify(&sc, &s.public_key(), &DeviceId::new("rvm1").unwrap(), 10_000);
        assert!(matches!(err, Err(CommandError::Expired { .. })));
    }

    #[test]
    fn a_tampered_payload_or_other_key_is_refused() {
        let s = build_signer();
        let other = build_signer();
        let me = DeviceId::new("rvm1").unwrap();
        let mut sc = s.sign(&build_command("rvm1", 10_000)).unwrap();
        assert_eq!(
            verify(&sc, &other.public_key(), &me, 0),
            Err(CommandError::BadSignature)
        );
        let last = sc.payload.len() - 1;
        sc.payload[last] ^= 1;
        assert_eq!(
            verify(&sc, &s.public_key(), &me, 0),
            Err(CommandError::BadSignature)
        );
    }

    #[test]
    fn an_ordinary_command_is_encoded_as_before_and_a_dry_run_carries_its_option() {
        let s = build_signer();
        let me = DeviceId::new("rvm1").unwrap();
        let c = build_command("rvm1", 10_000);
        let plain = s.sign(&c).unwrap();
        assert_eq!(
            plain.payload,
            codec::encode(&c).unwrap(),
            "unchanged for old agents"
        );
        let dry = s.sign_with(&c, CommandOptions { dry_run: true }).unwrap();
        let (got, opts) = verify_with_options(&dry, &s.public_key(), &me, 0).unwrap();
        assert_eq!((got, opts.dry_run), (c.clone(), true));
        let (_, opts) = verify_with_options(&plain, &s.public_key(), &me, 0).unwrap();
        assert!(!opts.dry_run);
    }

    #[test]
    fn an_agent_that_predates_options_refuses_a_dry_run_as_malformed() {
        // what an old agent did: the whole payload is one Command, no trailing bytes
        let s = build_signer();
        let dry = s
            .sign_with(&build_command("rvm1", 10_000), CommandOptions { dry_run: true })
            .unwrap();
        let old = codec::decode_bare::<Command>(&dry.payload);
        assert!(matches!(old, Err(CodecError::TrailingBytes(_))), "{old:?}");
    }

    #[test]
    fn options_cannot_be_stripped_or_added_without_breaking_the_signature() {
        let s = build_signer();
        let me = DeviceId::new("rvm1").unwrap();
        let c = build_command("rvm1", 10_000);
        let mut dry = s.sign_with(&c, CommandOptions { dry_run: true }).unwrap();
        dry.payload = codec::encode(&c).unwrap();
        assert_eq!(
            verify(&dry, &s.public_key(), &me, 0),
            Err(CommandError::BadSignature)
        );
        let mut plain = s.sign(&c).unwrap();
        plain
            .payload
            .extend(codec::encode(&CommandOptions { dry_run: true }).unwrap());
        assert_eq!(
            verify(&plain, &s.public_key(), &me, 0),
            Err(CommandError::BadSignature)
        );
    }

    #[test]
    fn public_keys_round_trip_through_hex() {
        let k = build_signer().public_key();
        assert_eq!(public_key_from_hex(&public_key_to_hex(&k)).unwrap(), k);
        assert!(public_key_from_hex("zz").is_err());
    }

    proptest! {
        #[test]
        fn verify_never_panics_on_arbitrary_input(
            payload in proptest::collection::vec(any::<u8>(), 0..512),
            signature in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let key = [7u8; 32];
            let _ = verify(&SignedCommand { payload, signature }, &key, &DeviceId::new("a").unwrap(), 0);
        }
    }
}
