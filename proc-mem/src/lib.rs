//! The process's own memory, as the allocator and the kernel see it, and giving the
//! allocator's free memory back to the kernel. Both binaries use it; it is not part of the wire
//! protocol, so it lives apart from `common`. [`procfs`] reads any process's memory from
//! `/proc/PID` (RSS, PSS, RssAnon, the working set); the bench compares processes with it.
//!
//! RSS alone cannot tell a leak from allocator fragmentation or from pages of the binary
//! faulting in: the soak test (`tests/tests/soak.rs`) judges the heap in use, and reports RSS
//! beside it. Both binaries expose this (`/api/v1/status` of the agent, `/api/v1/health` of the
//! server).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub mod procfs;

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
    /// Reads the allocator's statistics and `/proc/self/status`. `mallinfo2` walks every
    /// arena's free lists holding that arena's lock: microseconds on a quiet heap, but about
    /// 2.5 ms on the server's while it ingests thousands of records a second (measured with
    /// `perf`), during which no thread of the process can allocate from that arena. Meant for
    /// a periodic sample; a status route polled by anyone uses [`ProcessMemory::recent`].
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

impl ProcessMemory {
    /// [`ProcessMemory::now`] taken at most once per `max_age`, shared by every caller: a
    /// health route polled many times a second (a load balancer, a dashboard, a benchmark
    /// every 25 ms) must not lock the allocator that often.
    pub fn recent(max_age: Duration) -> ProcessMemory {
        static LAST: Mutex<Option<(Instant, ProcessMemory)>> = Mutex::new(None);
        let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
        match *last {
            Some((at, m)) if at.elapsed() < max_age => m,
            _ => {
                let m = ProcessMemory::now();
                *last = Some((Instant::now(), m));
                m
            }
        }
    }
}

/// This process's resident set size (`VmRSS`) in bytes, None where it cannot be read.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status_kib(&status, "VmRSS:").map(|k| k * 1024)
}

/// Asks the allocator to return the free memory it holds to the kernel (glibc
/// `malloc_trim`), after a burst of allocations was freed; does nothing elsewhere.
///
/// glibc gives memory back by itself only from the top of each heap. `malloc_trim` also goes
/// through every arena's free chunks and gives back the whole pages inside them, so memory
/// freed in the middle of a heap, or in another thread's arena, leaves the RSS too. It locks
/// each arena while it walks it.
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

    /// The heap figures are process-wide: the two tests that allocate tens of MiB take turns
    /// (in the crate's own test binary they would otherwise run at once and see each other).
    static ALLOCATING: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn a_live_allocation_shows_in_heap_in_use_and_goes_when_freed() {
        let _turn = ALLOCATING.lock().unwrap_or_else(|e| e.into_inner());
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
    fn a_recent_sample_is_shared_until_it_is_too_old() {
        let _turn = ALLOCATING.lock().unwrap_or_else(|e| e.into_inner());
        let first = ProcessMemory::recent(Duration::from_secs(3600));
        let Some(h0) = first.heap_in_use else {
            return; // not glibc: nothing to compare
        };
        let block = vec![1u8; 8 << 20];
        assert_eq!(
            ProcessMemory::recent(Duration::from_secs(3600)),
            first,
            "a cached sample"
        );
        let fresh = ProcessMemory::recent(Duration::ZERO).heap_in_use.unwrap();
        assert!(
            fresh >= h0 + (7 << 20),
            "a new sample sees the block: {h0} -> {fresh}"
        );
        drop(block);
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn trim_gives_back_the_free_memory_in_the_middle_of_a_heap() {
        let _turn = ALLOCATING.lock().unwrap_or_else(|e| e.into_inner());
        // 48 MiB in 64 KiB blocks, on a thread of its own (its own arena); every other block
        // freed leaves 24 MiB of holes glibc cannot give back from the top of the heap
        let kept = std::thread::spawn(|| {
            let mut blocks: Vec<Vec<u8>> = (0..768).map(|_| vec![1u8; 64 << 10]).collect();
            let mut kept = Vec::new();
            for (i, b) in blocks.drain(..).enumerate() {
                if i % 2 == 0 {
                    kept.push(b);
                }
            }
            kept
        })
        .join()
        .unwrap();
        let before = ProcessMemory::now().rss_anon.unwrap();
        trim();
        let after = ProcessMemory::now().rss_anon.unwrap();
        // other tests allocate meanwhile: 8 MiB of slack
        assert!(
            before >= after + (16 << 20),
            "RssAnon {} -> {} KiB",
            before >> 10,
            after >> 10
        );
        assert_eq!(kept.len(), 384);
        assert!(rss_bytes().unwrap() > 0);
    }

    #[test]
    fn status_fields_are_read_in_kib() {
        let s = "Name:\tx\nVmRSS:\t    9652 kB\nRssAnon:\t    1592 kB\n";
        assert_eq!(status_kib(s, "VmRSS:"), Some(9652));
        assert_eq!(status_kib(s, "RssAnon:"), Some(1592));
        assert_eq!(status_kib(s, "RssFile:"), None);
    }
}
