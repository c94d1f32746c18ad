//! rvm-sim: virtual RVMs and the one-command demo, apart from the agent that ships to every
//! Jetson and the server that runs the fleet (neither carries any of this).
//!
//! # Layout
//!
//! - [`source`]: plausible Jetson metrics per seed, with faults and drifts switched on at will
//!   (a [`rvm_agent::collect::MetricSource`])
//! - [`health`]: health reports of simulated machines, evaluated as the agent evaluates its
//!   own (a crashed vision service, a lost camera, a cut network show as failing checks)
//! - [`scenario`]: scenario files, a story of faults on a schedule, and their replay
//! - [`simulate`]: `rvm-sim simulate`, N machines in one process through the agent's own
//!   buffer and link code, answering commands as an agent would
//! - [`demo`]: `rvm-sim demo`, the README's first command: dev certificates, the server with
//!   its embedded broker and web view, the simulated fleet replaying `scenarios/demo.toml`,
//!   and this machine's own agent
//!
//! Imports go one way: `demo` uses `simulate`, which uses `health`, `scenario` and `source`;
//! `health` and `scenario` use `source`.

pub mod demo;
pub mod health;
pub mod inside;
pub mod scenario;
pub mod simulate;
pub mod source;
