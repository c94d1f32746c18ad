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
/// periodic `malloc_trim` ([`trim`]) returns what the extra arenas hold free.
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

/// Unmaps the resident pages of this process's read-only file mappings that hold no private
/// copy (the executable's code and constants, shared libraries' code), so that only what is
/// used from then on faults back in. Returns the bytes of the mappings released.
///
/// Such pages are clean copies of the file in the page cache: `MADV_DONTNEED` only drops this
/// process's page-table entries, the next access maps the same cached page again, and nothing
/// is read from disk while the cache keeps it. What it changes is what `VmRSS` counts: the
/// agent's steady loop uses about 1 MiB of its 5.6 MiB of code, but everything its start
/// touched (configuration, TLS setup, clap), with the kernel's fault-around of 64 KiB about
/// each fault, stays mapped otherwise. The fault-around still applies to what faults back in
/// (`MADV_RANDOM` does not turn it off): the agent's build links the code it runs every second
/// together for that (`agent/build.rs`). A mapping with any private page (relocated constants,
/// written data) is left alone: dropping those would lose the writes.
pub fn release_file_pages() -> std::io::Result<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut released = 0;
    for (start, end) in clean_file_mappings(&smaps) {
        #[cfg(target_os = "linux")]
        // SAFETY: [start, end) is a whole mapping of this process, read from smaps: private,
        // not writable, backed by a file, and holding no private (copy-on-write) page, so
        // every resident page is the file's own content and DONTNEED only unmaps it; the next
        // access maps the page cache's copy again. A mapping that changed since smaps was read
        // fails with an error (not mapped) or is dropped the same way.
        let rc = unsafe {
            let (addr, len) = (start as *mut libc::c_void, end - start);
            // Random access: where a page must be read from disk again, no readahead around it.
            // (Not the fault-around of pages already cached, which MADV_RANDOM leaves on: the
            // refaults come back 64 KiB at a time.)
            libc::madvise(addr, len, libc::MADV_RANDOM);
            libc::madvise(addr, len, libc::MADV_DONTNEED)
        };
        #[cfg(not(target_os = "linux"))]
        let rc = -1;
        if rc == 0 {
            released += (end - start) as u64;
        }
    }
    Ok(released)
}

/// The address ranges of `smaps` entries that [`release_file_pages`] may drop.
fn clean_file_mappings(smaps: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    let mut rss_kib = 0u64;
    let mut ok = false;
    let mut finish = |current: Option<(usize, usize)>, ok: bool, rss: u64| {
        if let Some(r) = current
            && ok
            && rss > 0
        {
            out.push(r);
        }
    };
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some((a, b)) = first.split_once('-')
            && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
        {
            finish(current, ok, rss_kib);
            let perms = f.next().unwrap_or("");
            let inode = f.nth(2).unwrap_or("0");
            let path = f.next().unwrap_or("");
            // r?xp or r--p: private, never writable; a real file (not [vdso], not deleted)
            ok = perms.len() == 4
                && perms.starts_with('r')
                && perms.as_bytes()[1] == b'-'
                && perms.ends_with('p')
                && inode != "0"
                && path.starts_with('/')
                && f.next().is_none();
            current = Some((a, b));
            rss_kib = 0;
            continue;
        }
        let value = || f.clone().next().and_then(|v| v.parse::<u64>().ok());
        match first {
            "Rss:" => rss_kib = value().unwrap_or(0),
            // any private copy-on-write page, or one we cannot judge: leave the mapping
            "Anonymous:" | "Private_Dirty:" | "Shared_Dirty:" | "Swap:" if value() != Some(0) => ok = false,
            "VmFlags:" if line.split_whitespace().any(|fl| fl == "lo" || fl == "io") => ok = false,
            _ => {}
        }
    }
    finish(current, ok, rss_kib);
    out
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

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn trim_gives_back_the_free_memory_in_the_middle_of_a_heap() {
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

    const SMAPS: &str = "\
55d0c0a00000-55d0c0b00000 r--p 00000000 08:01 1234 /usr/bin/rvm-agent
Rss:                 120 kB
Anonymous:             0 kB
Private_Dirty:         0 kB
Shared_Dirty:          0 kB
Swap:                  0 kB
VmFlags: rd mr mw me
55d0c0b00000-55d0c1000000 r-xp 00100000 08:01 1234 /usr/bin/rvm-agent
Rss:                4548 kB
Anonymous:             0 kB
Private_Dirty:         0 kB
Swap:                  0 kB
VmFlags: rd ex mr mw me
55d0c1000000-55d0c1040000 r--p 00600000 08:01 1234 /usr/bin/rvm-agent
Rss:                 248 kB
Anonymous:           248 kB
Private_Dirty:       248 kB
VmFlags: rd mr mw me ac
55d0c1040000-55d0c1050000 rw-p 00640000 08:01 1234 /usr/bin/rvm-agent
Rss:                  64 kB
Anonymous:             0 kB
VmFlags: rd wr mr mw me ac
55d0c1050000-55d0c1060000 r-xp 00000000 08:01 99 /usr/lib/libnever.so
Rss:                   0 kB
Anonymous:             0 kB
55d0c1060000-55d0c1070000 r-xp 00000000 08:01 98 /usr/lib/liblocked.so
Rss:                  64 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me lo
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
Rss:                 444 kB
Anonymous:           444 kB
7f0000200000-7f0000210000 r-xp 00000000 08:01 77 /tmp/gone.so (deleted)
Rss:                  64 kB
Anonymous:             0 kB
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]
Rss:                   8 kB
Anonymous:             0 kB
7f0000300000-7f0000310000 r-xp 00000000 08:01 76 /usr/lib/libc.so.6
Rss:                  64 kB
Anonymous:             0 kB
";

    #[test]
    fn only_clean_read_only_file_mappings_are_released() {
        assert_eq!(
            clean_file_mappings(SMAPS),
            [
                (0x55d0c0a00000, 0x55d0c0b00000),
                (0x55d0c0b00000, 0x55d0c1000000),
                (0x7f0000300000, 0x7f0000310000)
            ],
            "constants and code of the binary and libc; not the relocated constants (private \
             pages), not data (writable), not an empty, locked, deleted or anonymous mapping"
        );
    }

    #[test]
    fn releasing_file_pages_keeps_the_process_running_and_lowers_its_file_rss() {
        let rss_file = || {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            status_kib(&status, "RssFile:").unwrap()
        };
        let before = rss_file();
        let released = release_file_pages().unwrap();
        assert!(released > 0, "the test binary's own code is a clean file mapping");
        let after = rss_file();
        assert!(after < before, "RssFile {before} -> {after} KiB");
        // code and constants fault back in as used: this very test keeps running
        let v: Vec<String> = (0..1000).map(|i| format!("{i}")).collect();
        assert_eq!(v[999], "999");
    }

    #[test]
    fn status_fields_are_read_in_kib() {
        let s = "Name:\tx\nVmRSS:\t    9652 kB\nRssAnon:\t    1592 kB\n";
        assert_eq!(status_kib(s, "VmRSS:"), Some(9652));
        assert_eq!(status_kib(s, "RssAnon:"), Some(1592));
        assert_eq!(status_kib(s, "RssFile:"), None);
    }
}
