//! Several processes' memory over one window, each measure as `/proc` gives it: RSS
//! (`VmRSS`), PSS (`smaps_rollup`), private memory (`RssAnon`), the working set (pages
//! referenced within an interval after `clear_refs`), and CPU time. The footprint group compares
//! the agent with node_exporter and collectd on these, all taken in the same window.
//!
//! RSS and PSS count clean pages of the binary and its libraries that the kernel may drop at
//! any time, so a process can lower them without needing less memory (an `madvise` on its own
//! code). RssAnon and the working set cannot be moved that way: they are what the process
//! holds privately and what it touches.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proc_mem::procfs::{self, Mapping, Rollup, Status};

use crate::procs;

const KIB: u64 = 1024;

/// The largest and the mean of a measure sampled over the window, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Span {
    pub max_kib: u64,
    pub mean_kib: f64,
}

impl Span {
    pub fn of(samples: &[u64]) -> Span {
        Span {
            max_kib: samples.iter().copied().max().unwrap_or(0),
            mean_kib: if samples.is_empty() {
                f64::NAN
            } else {
                samples.iter().sum::<u64>() as f64 / samples.len() as f64
            },
        }
    }
}

/// The pages one process referenced in one interval after `clear_refs`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkingSet {
    pub total_kib: u64,
    /// The same without the mappings of shared libraries (see [`is_shared_library`]).
    pub own_kib: u64,
    /// Referenced KiB per mapping name (file name, `[heap]`, `thread stacks`, `anonymous`...),
    /// largest first.
    pub by_mapping: Vec<(String, u64)>,
    /// Resident anonymous KiB per mapping name at the same moment, largest first: where the
    /// private memory is.
    pub anon_by_mapping: Vec<(String, u64)>,
}

impl WorkingSet {
    pub fn of(mappings: &[Mapping]) -> WorkingSet {
        WorkingSet {
            total_kib: procfs::working_set(mappings) / KIB,
            own_kib: mappings
                .iter()
                .filter(|m| !is_shared_library(m))
                .map(|m| m.referenced)
                .sum::<u64>()
                / KIB,
            by_mapping: by_name(mappings, |m| m.referenced),
            anon_by_mapping: by_name(mappings, |m| m.anonymous),
        }
    }
}

/// One process over the window.
#[derive(Debug, Clone, Default)]
pub struct Footprint {
    pub rss: Span,
    pub pss: Span,
    pub anon: Span,
    /// `RssFile` of the last sample: resident pages of mapped files.
    pub file_kib: u64,
    /// CPU time over wall time, percent of one core.
    pub cpu_pct: f64,
    /// One per interval, in order.
    pub working_sets: Vec<WorkingSet>,
}

impl Footprint {
    /// The largest working set of the intervals.
    pub fn ws_max(&self) -> Option<&WorkingSet> {
        self.working_sets.iter().max_by_key(|w| w.total_kib)
    }
}

/// Samples `pids` every `every` for `intervals` x `ws_interval`: RSS, PSS and RssAnon at each
/// sample, CPU over the whole window, and the working set of each interval (`clear_refs` at
/// its start, the sum of `smaps` `Referenced:` at its end, per process). `tick` runs once per
/// sample (a scrape of node_exporter, say) and is not counted against the processes.
pub fn watch(
    pids: &[u32],
    ws_interval: Duration,
    intervals: u32,
    every: Duration,
    mut tick: impl FnMut(),
) -> anyhow::Result<Vec<Footprint>> {
    let cpu0: Vec<Option<u64>> = pids.iter().map(|p| procs::cpu_ticks(*p)).collect();
    for p in pids {
        procfs::clear_refs(*p)?;
    }
    let start = Instant::now();
    let mut rss: Vec<Vec<u64>> = vec![Vec::new(); pids.len()];
    let mut pss = rss.clone();
    let mut anon = rss.clone();
    let mut file = vec![0u64; pids.len()];
    let mut sets: Vec<Vec<WorkingSet>> = vec![Vec::new(); pids.len()];
    let mut next_ws = 1u32;
    let mut n = 0u32;
    let duration = ws_interval * intervals;
    loop {
        // each process's interval ends with its own read and starts again with its own clear
        while next_ws <= intervals && start.elapsed() >= ws_interval * next_ws {
            for (i, p) in pids.iter().enumerate() {
                sets[i].push(WorkingSet::of(&procfs::smaps(*p)?));
                procfs::clear_refs(*p)?;
            }
            next_ws += 1;
        }
        if start.elapsed() >= duration {
            break;
        }
        tick();
        for (i, p) in pids.iter().enumerate() {
            if let (Ok(s), Ok(r)) = (Status::of(*p), Rollup::of(*p)) {
                rss[i].push(s.rss / KIB);
                anon[i].push(s.rss_anon / KIB);
                pss[i].push(r.pss / KIB);
                file[i] = s.rss_file / KIB;
            }
        }
        n += 1;
        let next = (start + every * n).min(start + ws_interval * next_ws);
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let hz = procs::clock_ticks_per_s();
    Ok((0..pids.len())
        .map(|i| Footprint {
            rss: Span::of(&rss[i]),
            pss: Span::of(&pss[i]),
            anon: Span::of(&anon[i]),
            file_kib: file[i],
            cpu_pct: match (cpu0[i], procs::cpu_ticks(pids[i])) {
                (Some(a), Some(b)) => b.saturating_sub(a) as f64 / hz / wall * 100.0,
                _ => f64::NAN,
            },
            working_sets: std::mem::take(&mut sets[i]),
        })
        .collect())
}

/// A mapping of a shared library (`libc.so.6`, `ld-linux-x86-64.so.2`). Its pages are shared
/// with every process that maps the library, and `Referenced:` counts a page whose own
/// referenced flag is set, which the kernel does when any of those processes unmaps the page
/// after using it (or exits): on a machine where processes start and stop all the time, a
/// process that has most of libc mapped shows most of it referenced whatever it did itself.
pub fn is_shared_library(m: &Mapping) -> bool {
    let name = m.short_name();
    !name.starts_with('[') && (name.ends_with(".so") || name.contains(".so."))
}

/// The largest guard a thread library puts below a stack (glibc: one page by default).
const MAX_GUARD: u64 = 64 * KIB;

/// An unnamed writable mapping right above a small inaccessible one: a thread's stack above
/// its guard (pthread maps both at once and protects the lowest pages). A malloc arena is the
/// other way round: its writable part starts its reservation, the inaccessible rest follows.
fn is_thread_stack(below: &Mapping, m: &Mapping) -> bool {
    m.perms.starts_with("rw")
        && below.name.is_empty()
        && below.perms.starts_with("---")
        && below.end == m.start
        && below.end - below.start <= MAX_GUARD
}

/// KiB per mapping name (`anonymous` for unnamed mappings other than thread stacks), largest
/// first, zeros left out.
fn by_name(mappings: &[Mapping], bytes: impl Fn(&Mapping) -> u64) -> Vec<(String, u64)> {
    let mut sums: BTreeMap<&str, u64> = BTreeMap::new();
    for (i, m) in mappings.iter().enumerate() {
        let name = match m.short_name() {
            "" if i > 0 && is_thread_stack(&mappings[i - 1], m) => "thread stacks",
            "" => "anonymous",
            n => n,
        };
        *sums.entry(name).or_default() += bytes(m);
    }
    let mut out: Vec<(String, u64)> = sums
        .into_iter()
        .filter(|(_, b)| *b >= KIB)
        .map(|(n, b)| (n.to_string(), b / KIB))
        .collect();
    out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    out
}

/// "rvm-agent 1.42, anonymous 0.95, libc.so.6 0.31 MiB": the `top` largest entries.
pub fn largest(by_mapping: &[(String, u64)], top: usize) -> String {
    let parts: Vec<String> = by_mapping
        .iter()
        .take(top)
        .map(|(n, kib)| format!("{n} {}", crate::figure::fmt(*kib as f64 / 1024.0)))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        format!("{} MiB", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_mapping(name: &str, referenced_kib: u64, anonymous_kib: u64) -> Mapping {
        Mapping {
            name: name.into(),
            perms: "r-xp".into(),
            size: 0,
            rss: (referenced_kib.max(anonymous_kib)) * KIB,
            anonymous: anonymous_kib * KIB,
            referenced: referenced_kib * KIB,
            ..Mapping::default()
        }
    }

    #[test]
    fn a_span_is_the_max_and_the_mean_of_its_samples() {
        let s = Span::of(&[4, 6, 8]);
        assert_eq!(s.max_kib, 8);
        assert!((s.mean_kib - 6.0).abs() < 1e-9);
        assert!(Span::of(&[]).mean_kib.is_nan());
    }

    #[test]
    fn the_working_set_groups_mappings_by_file_name_largest_first() {
        let maps = [
            build_mapping("/usr/bin/rvm-agent", 900, 0),
            build_mapping("/usr/bin/rvm-agent", 500, 12),
            build_mapping("", 300, 300),
            build_mapping("", 200, 200),
            build_mapping("/usr/lib/x86_64-linux-gnu/libc.so.6", 250, 8),
            build_mapping("[heap]", 100, 700),
            build_mapping("[vvar]", 0, 0),
        ];
        let ws = WorkingSet::of(&maps);
        assert_eq!(ws.total_kib, 2250);
        assert_eq!(ws.own_kib, 2000, "libc.so.6 is left out");
        assert_eq!(
            ws.by_mapping,
            [
                ("rvm-agent".to_string(), 1400),
                ("anonymous".to_string(), 500),
                ("libc.so.6".to_string(), 250),
                ("[heap]".to_string(), 100),
            ]
        );
        assert_eq!(ws.anon_by_mapping[0], ("[heap]".to_string(), 700));
        assert_eq!(largest(&ws.by_mapping, 2), "rvm-agent 1.37, anonymous 0.488 MiB");
        assert_eq!(largest(&[], 3), "none");
    }

    #[test]
    fn a_writable_mapping_above_a_small_guard_is_a_thread_stack_and_an_arena_is_not() {
        let anon = |start: u64, end: u64, perms: &str, referenced_kib: u64| Mapping {
            start,
            end,
            perms: perms.into(),
            referenced: referenced_kib * KIB,
            ..Mapping::default()
        };
        const MIB64: u64 = 64 << 20;
        let maps = [
            // an arena: 132 KiB used, the rest of its 64 MiB reserved
            anon(MIB64, MIB64 + (132 << 10), "rw-p", 40),
            anon(MIB64 + (132 << 10), 2 * MIB64, "---p", 0),
            // a thread: a 4 KiB guard, then its 2 MiB stack
            anon(3 * MIB64, 3 * MIB64 + 4096, "---p", 0),
            anon(3 * MIB64 + 4096, 3 * MIB64 + 4096 + (2 << 20), "rw-p", 12),
        ];
        assert_eq!(
            WorkingSet::of(&maps).by_mapping,
            [("anonymous".to_string(), 40), ("thread stacks".to_string(), 12)]
        );
    }

    #[test]
    fn shared_libraries_are_told_from_the_binary_and_kernel_mappings() {
        let lib = |name: &str| is_shared_library(&build_mapping(name, 0, 0));
        assert!(lib("/usr/lib/x86_64-linux-gnu/libc.so.6"));
        assert!(lib("/usr/lib64/ld-linux-x86-64.so.2"));
        assert!(lib("/usr/lib/collectd/cpu.so"));
        assert!(!lib("/usr/bin/rvm-agent"));
        assert!(!lib("/usr/bin/prometheus-node-exporter"));
        assert!(!lib("[vdso]"));
        assert!(!lib(""));
    }

    #[test]
    fn the_largest_working_set_of_the_intervals_is_the_max() {
        let f = Footprint {
            working_sets: vec![
                WorkingSet {
                    total_kib: 300,
                    ..Default::default()
                },
                WorkingSet {
                    total_kib: 500,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(f.ws_max().unwrap().total_kib, 500);
        assert!(Footprint::default().ws_max().is_none());
    }

    #[test]
    fn watching_a_sleeping_process_gives_every_measure_and_one_working_set_per_interval() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        while std::fs::read_to_string(format!("/proc/{}/comm", child.id()))
            .unwrap()
            .trim()
            != "sleep"
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        // past the dynamic loader and into its sleep
        std::thread::sleep(Duration::from_millis(200));
        let mut ticks = 0;
        let f = watch(
            &[child.id()],
            Duration::from_millis(300),
            2,
            Duration::from_millis(100),
            || ticks += 1,
        );
        let _ = child.kill();
        let _ = child.wait();
        let f = f.unwrap().remove(0);
        assert!(ticks >= 4, "{ticks} samples in 600 ms");
        assert_eq!(f.working_sets.len(), 2);
        assert!(f.rss.max_kib > 0 && f.pss.max_kib > 0 && f.anon.max_kib > 0);
        assert!(f.pss.max_kib <= f.rss.max_kib);
        // a sleeping process touches none of its private pages (shared ones may show
        // referenced through other processes: see is_shared_library)
        let ws = f.ws_max().unwrap();
        assert!(ws.own_kib <= ws.total_kib);
        let private: u64 = ws
            .by_mapping
            .iter()
            .filter(|(name, _)| ["[heap]", "[stack]", "anonymous", "thread stacks"].contains(&name.as_str()))
            .map(|(_, kib)| kib)
            .sum();
        assert!(
            private < f.anon.max_kib,
            "{private} KiB of private pages referenced, {} KiB resident",
            f.anon.max_kib
        );
        assert!(f.cpu_pct < 50.0, "{}", f.cpu_pct);
    }
}
