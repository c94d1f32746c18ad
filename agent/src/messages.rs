//! Messages passed between several actors. A message handled by one actor sits beside that
//! actor (`Pause` in [`crate::collect::actor`], `Shutdown` in [`crate::link::actor`], ...);
//! the ones here are handled by several, or cross from one feature to another that must not
//! import it. This module imports no feature.

use actix::prelude::*;
use common::HealthReport;

/// Asks a child to stop (shutdown or stall). Every supervised actor handles it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopNow;

/// A fresh health report, from the health actor for the recovery actor. It sits here rather
/// than beside its one handler: recovery reads the `[health]` config, so a health actor that
/// imported the recovery actor would make the two features import each other.
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct HealthUpdate(pub HealthReport);
