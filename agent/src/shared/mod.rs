//! Leaf helpers used by several features. Nothing here imports a feature, or any module of
//! this crate outside `shared`, so every feature may import it without making a circle.
//!
//! - [`problem`]: [`problem::ConfigProblem`], one bad key of a config file with its key path
//! - [`names`]: systemd unit, process and network interface names as the system accepts them
//!   (health watches them, recovery restarts them)
//! - [`subprocess`]: running a program without a shell, with a timeout and bounded output
//! - [`http`]: the agent's one HTTP client (reqwest over rustls + ring), for the health probes
//!   and the app-metrics scrape

pub mod http;
pub mod names;
pub mod problem;
pub mod subprocess;
