//! Supervision of the server's own children: every long-lived actor, task and thread
//! (`crate::server::children` lists them) is restarted after a panic or a stall, with restart
//! intensity, and past it the process exits non-zero so that systemd restarts it.
//!
//! actix's own `Supervisor` restarts only an actor that stopped itself, never one that
//! panicked. Checked with actix 0.13.5 and actix-rt 2.15: a panicking handler ends its actor
//! (its mailbox closes; senders get `MailboxError::Closed`) while the arbiter's thread and its
//! other actors live on; on a `SyncArbiter` the worker thread is gone for good. So the
//! supervisor here is a parent that watches its children from its own thread: each child
//! runs on a thread of its own, shows progress through a [`liveness::Liveness`], and is
//! re-created by its [`child::ChildSpec`] with its state reloaded from the store. Holders of a
//! restarted actor reach the new one through a [`slot::Slot`] or because the child's start
//! function re-attaches it; queues outlive their consumer in an [`inbox::Inbox`], so nothing
//! queued is lost with a consumer and producers never notice.
//!
//! - [`restart`]: the `[supervisor]` section and the restart decisions (pure, take `now`)
//! - [`liveness`]: progress, exit reasons, the panic hook that records a child's panic
//! - [`child`]: child specs and the three ways a child runs (actor, task, thread)
//! - [`slot`]: the current address of a restartable actor
//! - [`inbox`]: a queue's receiving end that outlives its consumer
//! - [`supervisor`]: the watching thread, its published state, the give-up exit code
//! - `faults` (test builds only: the `faults` feature or unit tests): make a named child
//!   panic or stall on demand

pub mod child;
#[cfg(any(test, feature = "faults"))]
pub mod faults;
pub mod inbox;
pub mod liveness;
pub mod restart;
pub mod slot;
pub mod supervisor;
