//! The simulator: virtual RVMs for the demo, the tests and the benchmarks. The real agent does
//! not use it (apart from the collector's fallback source, see [`crate::collect::actor`]).
//!
//! - [`source`]: plausible Jetson metrics per seed, with faults and drifts switched on at will
//! - [`scenario`]: scenario files, a story of faults on a schedule, and their replay
//! - [`simulate`]: `rvm-agent simulate`, N machines in one process through the same buffer and
//!   link code as the real agent

pub mod scenario;
pub mod simulate;
pub mod source;
