//! The agent's actors. Each is a thin shell: decisions live in the pure modules
//! ([`crate::buffer`], [`crate::link::InFlight`], the sources), the actor does the IO.

pub mod collector;
pub mod link;
