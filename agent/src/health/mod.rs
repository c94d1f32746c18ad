//! Health checks: the `[health]` config, a pure evaluator and publish tracker, the probes, and
//! the health actor.
//!
//! The health actor ([`actor`]) gathers [`evaluate::Observations`] (the latest telemetry plus
//! what the [`probes`] return), calls [`evaluate::evaluate`] and publishes the `HealthReport`
//! when [`evaluate::HealthTracker::should_publish`] says so. The evaluator and the tracker do
//! no IO and take the time as an argument; the probes do the IO, block, and belong on a
//! blocking thread.
//!
//! Check names are stable, because the recovery ladder ([`crate::recovery`]) is keyed by them:
//! `cpu`, `memory`, `disk`, `gpu_temp`, `telemetry`, `process:NAME`, `unit:NAME`, `http:NAME`,
//! `camera`, `data_disk`, `broker`, `actor:NAME`, and per camera of the vision service
//! `camera:CAMERA:ASPECT` (`frames`, `frozen`, `covered`, `fps`, `confidence`).
//!
//! - [`config`]: the `[health]` section and its validation
//! - [`evaluate`]: observations -> report (pure), and when a report goes out
//! - [`camera`]: camera and vision health from the vision service's per-camera figures
//!   (pure, stateful: timers and learned baselines)
//! - [`baselines`]: where the learned baselines are kept between runs (sled or memory)
//! - [`probes`]: systemd units, processes, HTTP endpoints, the camera, the data disk (blocking)
//! - [`actor`]: probes on a blocking thread, evaluates, publishes, tells recovery

pub mod actor;
pub mod baselines;
pub mod camera;
pub mod config;
pub mod evaluate;
pub mod probes;
