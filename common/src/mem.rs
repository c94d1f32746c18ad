//! The process's own memory, as the allocator and the kernel see it.
//!
//! RSS alone cannot tell a leak from allocator fragmentation or from pages of the binary
//! faulting in: the soak test (`tests/tests/soak.rs`) judges the heap in use, and reports RSS
//! beside it. Both binaries expose this (`/api/v1/status` of the agent, `/api/v1/health` of the
//! server).

use serde::{Deserialize, Serialize};

/// Memory of this process, in bytes; a field is None where it cannot be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessMemory {
    /// Bytes the allocator has handed out and not had back (glibc `mallinfo2`: `uordblks`
    /// plus `hblkhd`): what a leak grows.
    pub heap_in_use: Option<u64>,
    /// Bytes the allocator holds but has free (fragmentation, not yet returned to the kernel).
    pub heap_free: Option<u64>,
    /// Resident set size (`VmRSS`).
    pub rss: Option<u64>,
    /// Private resident memory (`RssAnon`: heap, stacks).
    pub rss_anon: Option<u64>,
}

impl ProcessMemory {
    /// Reads the allocator's statistics and `/proc/self/status`. `mallinfo2` walks the
    /// allocator's free lists: cheap at the agent's and server's heap sizes, but meant for a
    /// status request or a periodic sample, not a hot path.
    pub fn now() -> ProcessMemory {
        let (heap_in_use, heap_free) = heap();
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        ProcessMemory {
            heap_in_use,
            heap_free,
            rss: status_kib(&status, "VmRSS:").map(|k| k * 1024),
            rss_anon: status_kib(&status, "RssAnon:").map(|k| k * 1024),
        }
    }
}

/// Asks the allocator to return the free memory it holds to the kernel (glibc
/// `malloc_trim`), after a burst of allocations was freed; does nothing elsewhere.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only releases free allocator memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap() -> (Option<u64>, Option<u64>) {
    // SAFETY: mallinfo2 has no preconditions; it only reads the allocator's own state.
    let m = unsafe { libc::mallinfo2() };
    (Some((m.uordblks + m.hblkhd) as u64), Some(m.fordblks as u64))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap() -> (Option<u64>, Option<u64>) {
    (None, None)
}

fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_allocation_shows_in_heap_in_use_and_goes_when_freed() {
        let before = ProcessMemory::now();
        assert!(before.rss.unwrap() > 0 && before.rss_anon.unwrap() > 0);
        let Some(h0) = before.heap_in_use else {
            return; // not glibc: nothing to compare
        };
        // the figure is process-wide and other tests run on other threads meanwhile: 1 MiB of
        // slack either way for what they allocate or free
        let block = vec![1u8; 8 << 20];
        let during = ProcessMemory::now().heap_in_use.unwrap();
        assert!(during >= h0 + (7 << 20), "{h0} -> {during}");
        drop(block);
        let after = ProcessMemory::now().heap_in_use.unwrap();
        assert!(after + (6 << 20) < during, "{during} -> {after}");
    }

    #[test]
    fn status_fields_are_read_in_kib() {
        let s = "Name:\tx\nVmRSS:\t    9652 kB\nRssAnon:\t    1592 kB\n";
        assert_eq!(status_kib(s, "VmRSS:"), Some(9652));
        assert_eq!(status_kib(s, "RssAnon:"), Some(1592));
        assert_eq!(status_kib(s, "RssFile:"), None);
    }
}
