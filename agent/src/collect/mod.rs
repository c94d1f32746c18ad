//! Collection: what the agent reads each tick, and the actor that reads it.
//!
//! A source ([`MetricSource`]) fills a [`Telemetry`]; the collector actor decides when, and
//! keeps blocking sources off actor threads. The real agent reads the machine
//! ([`system::SystemSource`]); the `rvm-sim` crate's virtual machines bring a source of
//! their own: only the source differs, the buffer and link are the same code.
//!
//! - [`config`]: the `[collector]` and `[paths]` sections
//! - [`system`]: the machine through sysinfo (CPU, memory, disks, network, processes)
//! - [`inside`]: what sysinfo does not read: block devices and their wear, interface drops,
//!   TCP states, thread counts (`/proc` and `/sys` under configurable roots)
//! - [`kept`]: a `/proc` or `/sys` file kept open, reread with `pread` each tick
//! - [`host`]: CPU, memory, load, uptime from kept-open files (sysinfo's open-read-close, gone)
//! - [`sockdiag`]: TCP states by netlink `sock_diag` (the text tables' cheap replacement)
//! - [`gpu`]: GPU backends (Jetson sysfs, tegrastats, NVML) and the chain that picks one
//! - [`worker`]: one thread per blocking source, a timeout per read
//! - [`actor`]: the collector actor: every interval, one collection into the buffer

pub mod actor;
pub mod config;
pub mod gpu;
pub mod host;
pub mod inside;
pub mod kept;
pub mod sockdiag;
pub mod system;
pub mod worker;

use common::Telemetry;

pub trait MetricSource: Send + 'static {
    /// One collection. `now_ms` is the wall clock of the tick.
    fn collect(&mut self, now_ms: i64) -> Telemetry;

    /// Whether `collect` does IO that can block (then it runs on a blocking thread).
    fn is_blocking(&self) -> bool;

    /// Capabilities to announce in the birth message (`gpu:jetson_sysfs`, ...).
    fn capabilities(&self) -> Vec<String> {
        Vec::new()
    }
}
