//! Remote recovery commands on the server (pure): the per-device durable queue's records,
//! their lifecycle, when to (re)send, expire or time out, and rollouts across a fleet.
//!
//! ```text
//! awaiting_approval -> queued (a disruptive action, once another operator approved it)
//! queued -> sent -> accepted -> running -> succeeded | failed
//!    \        \         \
//!     `--------`---------`---> expired (TTL passed before the agent accepted)
//!                               rejected (the agent refused: signature, device, expiry, allow-list, interlock)
//!                               timed_out (accepted but no final result within the TTL + grace)
//! ```
//!
//! A command awaiting approval has no signature yet: it is signed when approved, so nothing
//! an agent would run exists before the second operator said yes. Its TTL runs from its
//! creation (an unapproved command expires). A dry run (`dry_run`) is signed with the option
//! in its payload (`common::command::CommandOptions`): the agent answers what it would do.
//!
//! A command is signed once, when it is created (or approved); re-sending publishes the same bytes, so the
//! agent's "never run an id twice" rule makes resends harmless. The actor persists every record
//! after each change and writes the audit log.

use std::collections::{BTreeMap, VecDeque};

use common::DeviceId;
use common::command::{Action, CommandResult, CommandStatus, SignedCommand};
use serde::{Deserialize, Serialize};

/// Resend a sent command the agent has not answered after this long (while it is online).
pub const RESEND_AFTER_MS: i64 = 10_000;
/// After accepted, a final result is expected within the TTL plus this.
pub const RESULT_GRACE_MS: i64 = 60_000;
/// TTL bounds.
pub const MIN_TTL_S: u64 = 1;
pub const MAX_TTL_S: u64 = 7 * 24 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CmdState {
    Queued,
    Sent,
    Accepted,
    Running,
    Succeeded,
    Failed,
    Rejected,
    Expired,
    TimedOut,
    /// A disruptive action waiting for a second operator (last: sled keeps records as
    /// bincode, where a variant is its index).
    AwaitingApproval,
}

impl CmdState {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            CmdState::Succeeded
                | CmdState::Failed
                | CmdState::Rejected
                | CmdState::Expired
                | CmdState::TimedOut
        )
    }

    /// Not yet accepted by the agent: still deliverable.
    pub fn is_pending(self) -> bool {
        matches!(self, CmdState::Queued | CmdState::Sent)
    }

    /// How far along the lifecycle: a command never moves to a lower rank (the PostgreSQL
    /// upsert of `commands/pg.rs` says the same in SQL).
    pub fn rank(self) -> u8 {
        match self {
            CmdState::Queued | CmdState::AwaitingApproval => 0,
            CmdState::Sent => 1,
            CmdState::Accepted => 2,
            CmdState::Running => 3,
            _ => 4,
        }
    }
}

/// What [`CommandBook::merge`] did with a record read from the shared store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merged {
    /// Not known here before.
    Added,
    /// The stored one was further along, or newer: it replaced ours.
    Replaced,
    /// Ours is as far along and as new (or further: a change not written yet).
    Kept,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandRecord {
    pub id: String,
    pub device: DeviceId,
    pub action: Action,
    pub reason: String,
    pub issued_by: String,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub state: CmdState,
    pub updated_ms: i64,
    /// Bounded output of the final result.
    pub output: String,
    /// Why it was rejected, failed, expired or timed out.
    pub detail: Option<String>,
    pub sends: u32,
    pub last_sent_ms: Option<i64>,
    pub accepted_ms: Option<i64>,
    pub rollout: Option<String>,
    /// The bytes sent (and re-sent) to the agent (empty while awaiting approval).
    pub signed: SignedCommand,
    /// Validate and answer what would happen, without doing it.
    pub dry_run: bool,
    /// The second operator who approved a disruptive action, and when.
    pub approved_by: Option<String>,
    pub approved_ms: Option<i64>,
}

/// A record as sled kept it before approvals and dry runs (read, never written).
#[derive(Debug, Clone, Deserialize)]
pub struct CommandRecordV1 {
    pub id: String,
    pub device: DeviceId,
    pub action: Action,
    pub reason: String,
    pub issued_by: String,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub state: CmdState,
    pub updated_ms: i64,
    pub output: String,
    pub detail: Option<String>,
    pub sends: u32,
    pub last_sent_ms: Option<i64>,
    pub accepted_ms: Option<i64>,
    pub rollout: Option<String>,
    pub signed: SignedCommand,
}

impl From<CommandRecordV1> for CommandRecord {
    fn from(r: CommandRecordV1) -> Self {
        CommandRecord {
            id: r.id,
            device: r.device,
            action: r.action,
            reason: r.reason,
            issued_by: r.issued_by,
            created_ms: r.created_ms,
            expires_ms: r.expires_ms,
            state: r.state,
            updated_ms: r.updated_ms,
            output: r.output,
            detail: r.detail,
            sends: r.sends,
            last_sent_ms: r.last_sent_ms,
            accepted_ms: r.accepted_ms,
            rollout: r.rollout,
            signed: r.signed,
            dry_run: false,
            approved_by: None,
            approved_ms: None,
        }
    }
}

/// Why an approval was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApproveError {
    #[error("no command {0}")]
    NotFound(String),
    #[error(
        "command {id} was requested by {who}: the requester cannot approve their own request, another operator must"
    )]
    OwnRequest { id: String, who: String },
    #[error("command {id} is {state:?}, not awaiting approval")]
    NotAwaiting { id: String, state: CmdState },
}

/// What the API shows of a command.
#[derive(Debug, Clone, Serialize)]
pub struct CommandView {
    pub id: String,
    pub device: DeviceId,
    pub action: Action,
    pub reason: String,
    pub issued_by: String,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub updated_ms: i64,
    pub state: CmdState,
    pub output: String,
    pub detail: Option<String>,
    pub sends: u32,
    pub rollout: Option<String>,
    pub dry_run: bool,
    pub approved_by: Option<String>,
    pub approved_ms: Option<i64>,
}

impl CommandRecord {
    pub fn view(&self) -> CommandView {
        CommandView {
            id: self.id.clone(),
            device: self.device.clone(),
            action: self.action.clone(),
            reason: self.reason.clone(),
            issued_by: self.issued_by.clone(),
            created_ms: self.created_ms,
            expires_ms: self.expires_ms,
            updated_ms: self.updated_ms,
            state: self.state,
            output: self.output.clone(),
            detail: self.detail.clone(),
            sends: self.sends,
            rollout: self.rollout.clone(),
            dry_run: self.dry_run,
            approved_by: self.approved_by.clone(),
            approved_ms: self.approved_ms,
        }
    }
}

/// What the actor should do after a change.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Send {
        device: DeviceId,
        id: String,
    },
    Changed {
        id: String,
        from: CmdState,
        to: CmdState,
    },
}

/// All commands, by id, with a per-device index in creation order.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct CommandBook {
    records: BTreeMap<String, CommandRecord>,
    by_device: BTreeMap<DeviceId, VecDeque<String>>,
}

/// Records kept per device (oldest final ones are forgotten first).
pub const KEEP_PER_DEVICE: usize = 200;

impl CommandBook {
    pub fn get(&self, id: &str) -> Option<&CommandRecord> {
        self.records.get(id)
    }

    pub fn for_device(&self, device: &DeviceId) -> Vec<&CommandRecord> {
        self.by_device
            .get(device)
            .map(|ids| ids.iter().rev().filter_map(|i| self.records.get(i)).collect())
            .unwrap_or_default()
    }

    pub fn all(&self) -> impl Iterator<Item = &CommandRecord> {
        self.records.values()
    }

    /// Adds a new command; returns the effects (a send if the device is online).
    pub fn insert(&mut self, rec: CommandRecord, online: bool, now_ms: i64) -> (Vec<Effect>, Vec<String>) {
        let mut fx = Vec::new();
        let id = rec.id.clone();
        let device = rec.device.clone();
        let q = self.by_device.entry(device.clone()).or_default();
        q.push_back(id.clone());
        let mut forgotten = Vec::new();
        while q.len() > KEEP_PER_DEVICE {
            let old = q.front().cloned();
            match old.and_then(|o| self.records.get(&o).map(|r| (o, r.state))) {
                Some((o, s)) if s.is_final() => {
                    q.pop_front();
                    self.records.remove(&o);
                    forgotten.push(o);
                }
                _ => break,
            }
        }
        self.records.insert(id.clone(), rec);
        if online {
            fx.extend(self.mark_sent(&id, now_ms));
        }
        (fx, forgotten)
    }

    fn set(&mut self, id: &str, to: CmdState, now_ms: i64, detail: Option<String>) -> Option<Effect> {
        let r = self.records.get_mut(id)?;
        let from = r.state;
        if from == to || from.is_final() {
            return None;
        }
        r.state = to;
        r.updated_ms = now_ms;
        if detail.is_some() {
            r.detail = detail;
        }
        Some(Effect::Changed {
            id: id.into(),
            from,
            to,
        })
    }

    fn mark_sent(&mut self, id: &str, now_ms: i64) -> Vec<Effect> {
        let mut fx = Vec::new();
        let Some(r) = self.records.get_mut(id) else {
            return fx;
        };
        if !r.state.is_pending() || now_ms >= r.expires_ms {
            return fx;
        }
        r.sends += 1;
        r.last_sent_ms = Some(now_ms);
        fx.push(Effect::Send {
            device: r.device.clone(),
            id: id.into(),
        });
        fx.extend(self.set(id, CmdState::Sent, now_ms, None));
        fx
    }

    /// May `who` approve command `id` now? The record, if so.
    pub fn approvable(&self, id: &str, who: &str) -> Result<&CommandRecord, ApproveError> {
        let r = self
            .records
            .get(id)
            .ok_or_else(|| ApproveError::NotFound(id.into()))?;
        if r.state != CmdState::AwaitingApproval {
            return Err(ApproveError::NotAwaiting {
                id: id.into(),
                state: r.state,
            });
        }
        if r.issued_by == who {
            return Err(ApproveError::OwnRequest {
                id: id.into(),
                who: who.into(),
            });
        }
        Ok(r)
    }

    /// `who` approved command `id`, now signed as `signed`: it is queued (and sent if its
    /// device is online).
    pub fn approve(
        &mut self,
        id: &str,
        who: &str,
        signed: SignedCommand,
        online: bool,
        now_ms: i64,
    ) -> Result<Vec<Effect>, ApproveError> {
        self.approvable(id, who)?;
        let mut fx = Vec::new();
        if let Some(r) = self.records.get_mut(id) {
            r.signed = signed;
            r.approved_by = Some(who.into());
            r.approved_ms = Some(now_ms);
            r.state = CmdState::Queued;
            r.updated_ms = now_ms;
        }
        fx.push(Effect::Changed {
            id: id.into(),
            from: CmdState::AwaitingApproval,
            to: CmdState::Queued,
        });
        if online {
            fx.extend(self.mark_sent(id, now_ms));
        }
        Ok(fx)
    }

    /// The device came online: send everything still pending and not expired, oldest first.
    pub fn on_online(&mut self, device: &DeviceId, now_ms: i64) -> Vec<Effect> {
        let ids: Vec<String> = self
            .by_device
            .get(device)
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default();
        ids.iter().flat_map(|id| self.mark_sent(id, now_ms)).collect()
    }

    /// A result from the agent. Unknown ids are ignored (None).
    pub fn on_result(&mut self, device: &DeviceId, res: &CommandResult, now_ms: i64) -> Option<Vec<Effect>> {
        let r = self.records.get_mut(&res.command_id)?;
        if &r.device != device {
            // a device reporting on another device's command: ignore
            return None;
        }
        if res.status.is_final() {
            r.output = res.output.clone();
        }
        if res.status == CommandStatus::Accepted && r.accepted_ms.is_none() {
            r.accepted_ms = Some(now_ms);
        }
        let to = match res.status {
            CommandStatus::Accepted => CmdState::Accepted,
            CommandStatus::Running => CmdState::Running,
            CommandStatus::Succeeded => CmdState::Succeeded,
            CommandStatus::Failed => CmdState::Failed,
            CommandStatus::Rejected => CmdState::Rejected,
        };
        // accepted/running never move a command backwards
        if to.rank() < r.state.rank() {
            return Some(Vec::new());
        }
        Some(
            self.set(&res.command_id, to, now_ms, res.reason.clone())
                .into_iter()
                .collect(),
        )
    }

    /// Expiry, timeouts and resends. `online` says whether a device is connected now.
    pub fn tick(&mut self, now_ms: i64, online: impl Fn(&DeviceId) -> bool) -> Vec<Effect> {
        self.tick_some(now_ms, online, |_| true)
    }

    /// [`CommandBook::tick`] over the commands `decides` picks (several instances: each
    /// decides for the commands it created or delivered, and learns the others' outcomes).
    pub fn tick_some(
        &mut self,
        now_ms: i64,
        online: impl Fn(&DeviceId) -> bool,
        decides: impl Fn(&str) -> bool,
    ) -> Vec<Effect> {
        let mut fx = Vec::new();
        let ids: Vec<String> = self
            .records
            .values()
            .filter(|r| !r.state.is_final() && decides(&r.id))
            .map(|r| r.id.clone())
            .collect();
        for id in ids {
            let Some(r) = self.records.get(&id) else { continue };
            let (state, expires, last_sent, accepted, device) = (
                r.state,
                r.expires_ms,
                r.last_sent_ms,
                r.accepted_ms,
                r.device.clone(),
            );
            if state == CmdState::AwaitingApproval && now_ms >= expires {
                fx.extend(self.set(
                    &id,
                    CmdState::Expired,
                    now_ms,
                    Some("TTL passed before a second operator approved it".into()),
                ));
            } else if state.is_pending() && now_ms >= expires {
                fx.extend(self.set(
                    &id,
                    CmdState::Expired,
                    now_ms,
                    Some("TTL passed before the agent accepted it".into()),
                ));
            } else if matches!(state, CmdState::Accepted | CmdState::Running)
                && now_ms >= expires.max(accepted.unwrap_or(0)) + RESULT_GRACE_MS
            {
                fx.extend(self.set(
                    &id,
                    CmdState::TimedOut,
                    now_ms,
                    Some("no final result in time".into()),
                ));
            } else if online(&device)
                && (state == CmdState::Queued
                    || (state == CmdState::Sent && last_sent.is_none_or(|t| now_ms - t >= RESEND_AFTER_MS)))
            {
                // queued while the device was away, or sent and unanswered: (re)send
                fx.extend(self.mark_sent(&id, now_ms));
            }
        }
        fx
    }

    /// The instance claimed command `id` from the outbox to publish it now: the send, if it
    /// is still deliverable (pending, not expired); None when it is not (the agent already
    /// answered, or it expired: its outbox row is done).
    pub fn claimed(&mut self, id: &str, now_ms: i64) -> Option<Vec<Effect>> {
        let r = self.records.get(id)?;
        if !r.state.is_pending() || now_ms >= r.expires_ms {
            return None;
        }
        Some(self.mark_sent(id, now_ms))
    }

    /// A record as the shared store holds it (several instances). It replaces ours when it is
    /// further along, or as far along and newer; ours stays when it is further along or newer
    /// (a change of ours on its way to the store).
    pub fn merge(&mut self, rec: CommandRecord) -> Merged {
        match self.records.get_mut(&rec.id) {
            None => {
                let (device, created, id) = (rec.device.clone(), rec.created_ms, rec.id.clone());
                self.records.insert(id.clone(), rec);
                let recs = &self.records;
                let q = self.by_device.entry(device).or_default();
                // keep creation order (a command made elsewhere may be older than ours)
                let at = q
                    .iter()
                    .position(|i| recs.get(i).is_some_and(|r| r.created_ms > created))
                    .unwrap_or(q.len());
                q.insert(at, id);
                Merged::Added
            }
            Some(ours) => {
                let theirs_ahead = rec.state.rank() > ours.state.rank()
                    || (rec.state.rank() == ours.state.rank()
                        && !ours.state.is_final()
                        && (rec.updated_ms > ours.updated_ms || rec.sends > ours.sends));
                if theirs_ahead && rec != *ours {
                    *ours = rec;
                    Merged::Replaced
                } else {
                    Merged::Kept
                }
            }
        }
    }

    pub fn restore(&mut self, rec: CommandRecord) {
        self.by_device
            .entry(rec.device.clone())
            .or_default()
            .push_back(rec.id.clone());
        self.records.insert(rec.id.clone(), rec);
    }

    pub fn sort_indexes(&mut self) {
        let recs = &self.records;
        for q in self.by_device.values_mut() {
            let mut v: Vec<String> = q.drain(..).collect();
            v.sort_by_key(|i| recs.get(i).map(|r| r.created_ms).unwrap_or(0));
            q.extend(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::testkit::*;

    #[test]
    fn a_command_to_an_online_device_is_sent_at_once_and_follows_its_results() {
        let mut b = CommandBook::default();
        let (fx, _) = b.insert(rec("c1", "a", 0, 60_000), true, 0);
        assert!(fx.contains(&Effect::Send {
            device: d("a"),
            id: "c1".into()
        }));
        assert_eq!(b.get("c1").unwrap().state, CmdState::Sent);
        for (s, want) in [
            (CommandStatus::Accepted, CmdState::Accepted),
            (CommandStatus::Running, CmdState::Running),
            (CommandStatus::Succeeded, CmdState::Succeeded),
        ] {
            b.on_result(&d("a"), &result("c1", s), 10).unwrap();
            assert_eq!(b.get("c1").unwrap().state, want);
        }
        // a late "accepted" (a resend answered twice) never moves it back
        b.on_result(&d("a"), &result("c1", CommandStatus::Accepted), 20)
            .unwrap();
        assert_eq!(b.get("c1").unwrap().state, CmdState::Succeeded);
        assert_eq!(b.get("c1").unwrap().output, "out");
    }

    #[test]
    fn a_command_to_an_offline_device_waits_and_is_sent_when_it_comes_online() {
        let mut b = CommandBook::default();
        let (fx, _) = b.insert(rec("c1", "a", 0, 60_000), false, 0);
        assert!(fx.is_empty());
        assert!(b.tick(1000, |_| false).is_empty());
        let fx = b.on_online(&d("a"), 2000);
        assert!(fx.contains(&Effect::Send {
            device: d("a"),
            id: "c1".into()
        }));
    }

    #[test]
    fn a_pending_command_expires_at_its_ttl_and_is_never_sent_after() {
        let mut b = CommandBook::default();
        b.insert(rec("c1", "a", 0, 5_000), false, 0);
        let fx = b.tick(5_000, |_| false);
        assert_eq!(b.get("c1").unwrap().state, CmdState::Expired);
        assert!(fx.iter().any(|e| matches!(
            e,
            Effect::Changed {
                to: CmdState::Expired,
                ..
            }
        )));
        assert!(b.on_online(&d("a"), 6_000).is_empty());
    }

    #[test]
    fn an_unanswered_sent_command_is_resent_while_online() {
        let mut b = CommandBook::default();
        b.insert(rec("c1", "a", 0, 600_000), true, 0);
        assert!(b.tick(RESEND_AFTER_MS - 1, |_| true).is_empty());
        let fx = b.tick(RESEND_AFTER_MS, |_| true);
        assert!(fx.contains(&Effect::Send {
            device: d("a"),
            id: "c1".into()
        }));
        assert_eq!(b.get("c1").unwrap().sends, 2);
    }

    #[test]
    fn an_accepted_command_without_a_final_result_times_out() {
        let mut b = CommandBook::default();
        b.insert(rec("c1", "a", 0, 10_000), true, 0);
        b.on_result(&d("a"), &result("c1", CommandStatus::Accepted), 100);
        b.tick(10_000 + RESULT_GRACE_MS - 1, |_| true);
        assert_eq!(b.get("c1").unwrap().state, CmdState::Accepted);
        b.tick(10_000 + RESULT_GRACE_MS, |_| true);
        assert_eq!(b.get("c1").unwrap().state, CmdState::TimedOut);
    }

    #[test]
    fn a_claimed_pending_command_is_sent_and_an_answered_or_expired_one_is_not() {
        let mut b = CommandBook::default();
        b.insert(rec("c1", "a", 0, 60_000), false, 0);
        let fx = b.claimed("c1", 10).unwrap();
        assert!(fx.contains(&Effect::Send {
            device: d("a"),
            id: "c1".into()
        }));
        assert_eq!(b.get("c1").unwrap().sends, 1);
        b.on_result(&d("a"), &result("c1", CommandStatus::Accepted), 20);
        assert!(b.claimed("c1", 30).is_none(), "answered: its outbox row is done");
        b.insert(rec("c2", "a", 0, 1_000), false, 0);
        assert!(b.claimed("c2", 1_000).is_none(), "expired");
        assert!(b.claimed("zz", 0).is_none());
    }

    #[test]
    fn a_merged_record_replaces_ours_only_when_it_is_further_along_or_newer() {
        let mut b = CommandBook::default();
        b.insert(rec("c2", "a", 100, 60_000), false, 100);
        // made elsewhere, older: added in creation order
        assert_eq!(b.merge(rec("c1", "a", 50, 60_000)), Merged::Added);
        let order: Vec<&str> = b.for_device(&d("a")).iter().map(|r| r.id.as_str()).collect();
        assert_eq!(order, vec!["c2", "c1"], "newest first");
        // another instance sent and then saw it succeed
        let mut theirs = b.get("c1").unwrap().clone();
        theirs.state = CmdState::Succeeded;
        theirs.updated_ms = 400;
        assert_eq!(b.merge(theirs.clone()), Merged::Replaced);
        assert_eq!(b.get("c1").unwrap().state, CmdState::Succeeded);
        // a lagging copy never moves it back
        let mut stale = theirs.clone();
        stale.state = CmdState::Sent;
        stale.updated_ms = 500;
        assert_eq!(b.merge(stale), Merged::Kept);
        assert_eq!(b.get("c1").unwrap().state, CmdState::Succeeded);
        // ours is ahead (written soon): kept
        b.claimed("c2", 200).unwrap();
        assert_eq!(b.merge(rec("c2", "a", 100, 60_000)), Merged::Kept);
        assert_eq!(b.get("c2").unwrap().state, CmdState::Sent);
        // the same rank, newer and resent elsewhere: theirs
        let mut resent = b.get("c2").unwrap().clone();
        resent.sends = 2;
        resent.last_sent_ms = Some(10_300);
        assert_eq!(b.merge(resent), Merged::Replaced);
        assert_eq!(b.get("c2").unwrap().sends, 2);
    }

    #[test]
    fn tick_some_decides_only_for_the_commands_picked() {
        let mut b = CommandBook::default();
        b.insert(rec("c1", "a", 0, 1_000), false, 0);
        b.insert(rec("c2", "a", 0, 1_000), false, 0);
        b.tick_some(2_000, |_| false, |id| id == "c1");
        assert_eq!(b.get("c1").unwrap().state, CmdState::Expired);
        assert_eq!(
            b.get("c2").unwrap().state,
            CmdState::Queued,
            "another instance decides"
        );
    }

    #[test]
    fn a_command_awaiting_approval_is_not_sent_until_another_operator_approves_it() {
        let mut b = CommandBook::default();
        let mut r = rec("c1", "a", 0, 60_000);
        r.state = CmdState::AwaitingApproval;
        let (fx, _) = b.insert(r, false, 0);
        assert!(fx.is_empty());
        // online, ticking: still not sent
        assert!(b.tick(1_000, |_| true).is_empty());
        assert!(b.on_online(&d("a"), 1_000).is_empty());
        assert_eq!(
            b.approve(
                "c1",
                "op",
                SignedCommand {
                    payload: vec![1],
                    signature: vec![2]
                },
                true,
                2_000
            ),
            Err(ApproveError::OwnRequest {
                id: "c1".into(),
                who: "op".into()
            })
        );
        let fx = b
            .approve(
                "c1",
                "bob",
                SignedCommand {
                    payload: vec![1],
                    signature: vec![2],
                },
                true,
                2_000,
            )
            .unwrap();
        assert!(
            fx.contains(&Effect::Send {
                device: d("a"),
                id: "c1".into()
            }),
            "{fx:?}"
        );
        let r = b.get("c1").unwrap();
        assert_eq!(
            (r.state, r.approved_by.as_deref(), r.signed.payload.clone()),
            (CmdState::Sent, Some("bob"), vec![1])
        );
        assert!(matches!(
            b.approve(
                "c1",
                "carol",
                SignedCommand {
                    payload: vec![],
                    signature: vec![]
                },
                true,
                3_000
            ),
            Err(ApproveError::NotAwaiting { .. })
        ));
        assert!(matches!(
            b.approvable("nope", "x"),
            Err(ApproveError::NotFound(_))
        ));
    }

    #[test]
    fn an_unapproved_command_expires_at_its_ttl() {
        let mut b = CommandBook::default();
        let mut r = rec("c1", "a", 0, 60_000);
        r.state = CmdState::AwaitingApproval;
        b.insert(r, true, 0);
        b.tick(60_000, |_| true);
        let r = b.get("c1").unwrap();
        assert_eq!(r.state, CmdState::Expired);
        assert!(r.detail.as_deref().unwrap().contains("approved"));
    }

    #[test]
    fn a_record_kept_before_approvals_existed_still_reads() {
        let mut r = rec("c1", "a", 0, 60_000);
        r.state = CmdState::Sent;
        // the old layout is the new one without its last three fields
        #[derive(Serialize)]
        struct Old<'a>(
            &'a str,
            &'a DeviceId,
            &'a Action,
            &'a str,
            &'a str,
            i64,
            i64,
            CmdState,
            i64,
            &'a str,
            &'a Option<String>,
            u32,
            Option<i64>,
            Option<i64>,
            &'a Option<String>,
            &'a SignedCommand,
        );
        let old = common::codec::encode(&Old(
            &r.id,
            &r.device,
            &r.action,
            &r.reason,
            &r.issued_by,
            r.created_ms,
            r.expires_ms,
            r.state,
            r.updated_ms,
            &r.output,
            &r.detail,
            r.sends,
            r.last_sent_ms,
            r.accepted_ms,
            &r.rollout,
            &r.signed,
        ))
        .unwrap();
        assert!(common::codec::decode_bare::<CommandRecord>(&old).is_err());
        let back: CommandRecord = common::codec::decode_bare::<CommandRecordV1>(&old)
            .unwrap()
            .into();
        assert_eq!(back, r);
    }

    #[test]
    fn results_from_another_device_or_unknown_ids_are_ignored() {
        let mut b = CommandBook::default();
        b.insert(rec("c1", "a", 0, 10_000), true, 0);
        assert!(
            b.on_result(&d("b"), &result("c1", CommandStatus::Succeeded), 1)
                .is_none()
        );
        assert!(
            b.on_result(&d("a"), &result("zz", CommandStatus::Succeeded), 1)
                .is_none()
        );
        assert_eq!(b.get("c1").unwrap().state, CmdState::Sent);
    }
}
