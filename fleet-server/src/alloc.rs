//! glibc malloc's arena cap for the server (the agent gets `MALLOC_ARENA_MAX=2` from its
//! systemd unit instead).

/// Caps glibc's malloc arenas at [`ARENAS_PER_CPU`] per CPU (at least 8), unless
/// `MALLOC_ARENA_MAX` is set in the environment (which then wins). Call it first thing in
/// `main`, before threads start. Returns the cap set, None where it was left alone.
///
/// glibc gives a thread that finds the arenas busy an arena of its own, up to 8 per CPU. A
/// server whose pool threads take turns at a periodic burst (the history job's minute pass
/// runs on whichever blocking thread is free) grows several arenas to the burst's size, and
/// freed memory in one arena cannot serve another: in the soak the fleet server's RSS rose
/// about 1 MiB/min with its heap in use flat.
///
/// The cap was one arena per CPU at first (f011dd6), and that halved ingest: the writer, the
/// broker's runtime, the fleet and alerts actors and the HTTP workers all allocate per record,
/// and with two arenas on two cores they queue on the arena locks. Bisected with
/// `bench/run.sh --only ingest`: 11.7k to 12.1k records/s at 12 s of server CPU per 100,000
/// records before that commit, 7.0k to 8.9k at 16.5 to 19 s after it, and 10.7k to 13.6k with
/// `MALLOC_ARENA_MAX=8` on the same binary (docs/benchmarks.md, "Profiling findings"). The
/// periodic `malloc_trim` (`proc_mem::trim`) returns what the extra arenas hold free.
pub const ARENAS_PER_CPU: usize = 4;

pub fn limit_arenas() -> Option<usize> {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return None;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let n = (std::thread::available_parallelism().map_or(2, |n| n.get()) * ARENAS_PER_CPU).max(8);
        // SAFETY: mallopt only changes a tunable of the allocator; M_ARENA_MAX may be set at
        // any time and applies to arenas created after it.
        if unsafe { libc::mallopt(libc::M_ARENA_MAX, n as libc::c_int) } == 1 {
            return Some(n);
        }
    }
    None
}
