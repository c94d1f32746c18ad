//! Messages passed between several actors. A message handled by one actor sits beside that
//! actor (`Pause` in [`crate::collect::actor`], `Shutdown` in [`crate::link::actor`], ...);
//! the ones here are handled by several, or cross from one feature to another that must not
//! import it. This module imports no feature.

use actix::prelude::*;

/// Asks a child to stop (shutdown or stall). Every supervised actor handles it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopNow;
