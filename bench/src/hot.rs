//! The agent's steady-state functions, for the linker's symbol ordering file
//! (`agent/hot-symbols.txt`, passed to the link by `agent/build.rs`).
//!
//! Why: the agent's loop runs about 700 KiB of its 5.5 MiB of code, in some 450 functions
//! scattered over the whole text. The kernel maps code 64 KiB at a time around each fault
//! (`fault_around_bytes`), so the scattered 700 KiB kept 3.9 MiB of the binary resident.
//! Linked next to each other they fill a few hundred pages.
//!
//! `bench/hot-symbols.sh` runs the agent under callgrind in the footprint bench's setup and
//! calls [`from_callgrind`] on the profile; the footprint bench reports with [`layout`] how
//! many of the listed functions the built binary has and how far apart they ended up, so a
//! list gone stale (renamed functions, new dependency versions) shows in its figures.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// Names of the functions of the object whose path ends with `object` that have a cost in a
/// callgrind profile (written with `--demangle=no`), without callgrind's `'N` recursion marks.
pub fn from_callgrind(profile: &str, object: &str) -> BTreeSet<String> {
    let (mut fns, mut obs) = (BTreeMap::new(), BTreeMap::new());
    let mut current_ob: Option<String> = None;
    let mut executed: Vec<(String, Option<String>)> = Vec::new();
    for line in profile.lines() {
        let (callee, rest) = match line.strip_prefix('c') {
            Some(r) => (true, r),
            None => (false, line),
        };
        let (table, rest, is_fn) = if let Some(r) = rest.strip_prefix("fn=") {
            (&mut fns, r, true)
        } else if let Some(r) = rest.strip_prefix("ob=") {
            (&mut obs, r, false)
        } else {
            continue;
        };
        // "(id) name" the first time, "(id)" after; uncompressed files have the name only
        let (id, name) = match rest.strip_prefix('(').and_then(|r| r.split_once(')')) {
            Some((id, name)) => (id.to_string(), name.trim()),
            None => (rest.to_string(), rest),
        };
        if !name.is_empty() {
            table.insert(id.clone(), name.to_string());
        }
        match (callee, is_fn) {
            (false, false) => current_ob = Some(id),
            (false, true) => executed.push((id, current_ob.clone())),
            _ => {}
        }
    }
    executed
        .into_iter()
        .filter(|(_, ob)| {
            ob.as_ref()
                .and_then(|o| obs.get(o))
                .is_some_and(|o| o.ends_with(object))
        })
        .filter_map(|(f, _)| fns.get(&f))
        .map(|n| match n.rsplit_once('\'') {
            Some((base, k)) if k.chars().all(|c| c.is_ascii_digit()) => base.to_string(),
            _ => n.clone(),
        })
        .collect()
}

/// The binary's function symbols: name to (address, size), from `nm`. Empty for a binary
/// without a symbol table.
pub fn functions(binary: &Path) -> anyhow::Result<BTreeMap<String, (u64, u64)>> {
    let out = Command::new("nm")
        .args(["-S", "--defined-only"])
        .arg(binary)
        .output()
        .map_err(|e| anyhow::anyhow!("nm (binutils) did not run: {e}"))?;
    let mut map = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let [addr, size, kind, name] = f[..]
            && matches!(kind, "t" | "T" | "w" | "W")
            && let (Ok(a), Ok(s)) = (u64::from_str_radix(addr, 16), u64::from_str_radix(size, 16))
        {
            map.entry(name.to_string()).or_insert((a, s));
        }
    }
    Ok(map)
}

/// Where the listed functions ended up in a binary.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub listed: usize,
    pub found: usize,
    /// Their code, summed.
    pub bytes: u64,
    /// From the lowest start to the highest end among them.
    pub span: u64,
}

/// Reads an ordering file (one name per line, `#` comments) and finds its names in `funcs`.
pub fn layout(list: &str, funcs: &BTreeMap<String, (u64, u64)>) -> Layout {
    let names: Vec<&str> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let hits: Vec<(u64, u64)> = names.iter().filter_map(|n| funcs.get(*n).copied()).collect();
    let lo = hits.iter().map(|h| h.0).min().unwrap_or(0);
    let hi = hits.iter().map(|h| h.0 + h.1).max().unwrap_or(0);
    Layout {
        listed: names.len(),
        found: hits.len(),
        bytes: hits.iter().map(|h| h.1).sum(),
        span: hi - lo,
    }
}

/// The ordering file: a header saying where it came from, then the names in order.
pub fn ordering_file(names: &BTreeSet<String>, funcs: &BTreeMap<String, (u64, u64)>) -> String {
    let kept: Vec<&String> = names.iter().filter(|n| funcs.contains_key(*n)).collect();
    let bytes: u64 = kept.iter().map(|n| funcs[*n].1).sum();
    let mut s = format!(
        "# The functions rvm-agent runs in its steady state, linked first and together\n\
         # (agent/build.rs). Generated by bench/hot-symbols.sh from a callgrind profile of the\n\
         # footprint bench's agent: {} functions, {} KiB of code. A name the build does not\n\
         # have is ignored, so a stale list only costs memory; regenerate it after upgrading\n\
         # dependencies or the toolchain.\n",
        kept.len(),
        bytes / 1024
    );
    for n in kept {
        s.push_str(n);
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILE: &str = "\
# callgrind format
events: Ir
ob=(1) /usr/lib/x86_64-linux-gnu/libc.so.6
fn=(1) memcpy
3 10
ob=(2) /tmp/x/rvm-agent
fn=(2) _ZN4sled4tree4Tree6insert17h0123456789abcdefE
5 20
cob=(1)
cfn=(1)
calls=1 0
5 10
cfn=(3) _ZN5actix3foo17hfedcba9876543210E
calls=1 0
6 3
fn=(4) _ZN4core5slice4sort6stable9quicksort9quicksort17h74ef461d01d91f68E'2
1 1
ob=(1)
fn=(5) strlen
1 1
ob=(2)
fn=(3)
2 2
";

    #[test]
    fn the_agents_executed_functions_are_read_with_compressed_names_and_no_recursion_marks() {
        let got = from_callgrind(PROFILE, "/rvm-agent");
        let want: BTreeSet<String> = [
            "_ZN4sled4tree4Tree6insert17h0123456789abcdefE",
            "_ZN5actix3foo17hfedcba9876543210E",
            "_ZN4core5slice4sort6stable9quicksort9quicksort17h74ef461d01d91f68E",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // libc's memcpy and strlen are another object; actix::foo is named first as a callee
        assert_eq!(got, want);
    }

    #[test]
    fn the_layout_counts_listed_names_found_and_their_span() {
        let funcs: BTreeMap<String, (u64, u64)> = [
            ("a", (0x1000, 0x100)),
            ("b", (0x1100, 0x40)),
            ("c", (0x9000, 0x10)),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), *v))
        .collect();
        let names: BTreeSet<String> = ["a", "b", "gone"].iter().map(|s| s.to_string()).collect();
        let file = ordering_file(&names, &funcs);
        assert!(file.contains("2 functions, 0 KiB"), "{file}");
        assert!(
            !file.contains("gone"),
            "names the binary lacks are left out: {file}"
        );
        let l = layout(&format!("{file}stale\n"), &funcs);
        assert_eq!(
            l,
            Layout {
                listed: 3,
                found: 2,
                bytes: 0x140,
                span: 0x140
            }
        );
    }
}
