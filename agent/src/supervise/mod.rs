//! Supervision: the agent's own one_for_one supervisor and the decisions it takes.
//!
//! actix's own `Supervisor` restarts only actors that stop themselves, never one that panicked
//! (docs/architecture.md, crate pitfalls), so the agent has its own: every child reports progress and its
//! exit reason through a shared [`liveness::Liveness`]; the supervisor actor polls it and asks
//! [`restart::ChildRecord`] what to do. Restart intensity is one_for_one: at most
//! `max_restarts` within `window_ms` per child, with a growing delay between restarts.
//!
//! - [`restart`]: the `[supervisor]` section ([`restart::RestartPolicy`]) and the restart
//!   decisions (pure)
//! - [`liveness`]: what a running child shares with its supervisor: progress, exit reason, and
//!   [`liveness::guarded`] to turn a panic into one
//! - [`actor`]: [`actor::AgentSupervisor`], which starts, watches and restarts the children

pub mod actor;
pub mod liveness;
pub mod restart;
