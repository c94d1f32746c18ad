//! The server's actors: thin shells around the pure modules ([`crate::fleet`], ...).

pub mod commands;
