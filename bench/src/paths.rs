//! Paths as the report shows them: relative to the repository, the run's temporary directory as
//! `$BENCH_DIR`, never the absolute paths of the machine the bench ran on. The command lines
//! and configs a group records name files by their absolute paths (the processes need them);
//! [`Roots::relativise`] rewrites them before a result is saved, and [`scrub_foreign`] rewrites
//! text recorded elsewhere (a result or a section of the document from another checkout).

use std::path::{Path, PathBuf};

/// What the report calls the run's temporary directory.
pub const BENCH_DIR: &str = "$BENCH_DIR";
/// What the report calls the binaries' directory when it is outside the repository.
pub const BINS: &str = "$BINS";
/// The prefix of the run's temporary directory (`tempfile` adds six characters).
pub const WORK_PREFIX: &str = "rvm-bench-";
const WORK_SUFFIX_LEN: usize = 6;

/// The directories of one run, in the order they are rewritten.
#[derive(Debug, Clone)]
pub struct Roots {
    /// The run's temporary directory.
    pub work: PathBuf,
    /// The release binaries.
    pub bins: PathBuf,
    /// The repository, under each name it may appear by (the working directory, the
    /// workspace root the bench was compiled in).
    pub repos: Vec<PathBuf>,
}

impl Roots {
    /// The roots of a run started in the repository (as `bench/run.sh` does).
    pub fn for_run(work: &Path, bins: &Path) -> Roots {
        let mut repos = vec![PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))];
        if let Some(parent) = Path::new(env!("CARGO_MANIFEST_DIR")).parent() {
            repos.push(parent.to_path_buf());
        }
        if let Ok(cwd) = std::env::current_dir() {
            repos.push(cwd);
        }
        Roots {
            work: work.to_path_buf(),
            bins: bins.to_path_buf(),
            repos,
        }
    }

    /// `text` with the run's directories rewritten: the temporary directory as `$BENCH_DIR`,
    /// the binaries' directory as `$BINS` when it is outside the repository, paths inside the
    /// repository relative to it.
    pub fn relativise(&self, text: &str) -> String {
        let mut t = replace_root(text, &self.work.to_string_lossy(), BENCH_DIR);
        if !self.repos.iter().any(|r| self.bins.starts_with(r)) {
            t = replace_root(&t, &self.bins.to_string_lossy(), BINS);
        }
        // the longest first: one repository name may hold another
        let mut repos: Vec<String> = self
            .repos
            .iter()
            .map(|r| r.to_string_lossy().into_owned())
            .collect();
        repos.sort_by_key(|r| std::cmp::Reverse(r.len()));
        for r in repos {
            t = replace_root(&t, &r, "");
        }
        t
    }
}

/// Rewrites text recorded by a run elsewhere, whose directories are not known: a temporary
/// directory named `rvm-bench-XXXXXX` becomes `$BENCH_DIR`, and a repository recognised by the
/// paths below it (`ROOT/target/release/...`, `ROOT/bench/../...`) becomes relative.
pub fn scrub_foreign(text: &str) -> String {
    let mut roots: Vec<String> = Vec::new();
    for marker in ["/bench/../", "/target/release/"] {
        let mut from = 0;
        while let Some(i) = text[from..].find(marker).map(|i| i + from) {
            let start = token_start(text, i);
            if text[start..].starts_with('/') && start < i {
                // `ROOT/bench/..` is the repository too, and must go before ROOT itself
                if marker == "/bench/../" {
                    roots.push(text[start..i + "/bench/..".len()].to_string());
                }
                roots.push(text[start..i].to_string());
            }
            from = i + marker.len();
        }
    }
    roots.sort_by_key(|r| std::cmp::Reverse(r.len()));
    roots.dedup();
    let mut t = replace_work_dirs(text);
    for r in roots {
        t = replace_root(&t, &r, "");
    }
    t
}

/// Every absolute path ending in a directory `rvm-bench-XXXXXX` becomes `$BENCH_DIR`.
fn replace_work_dirs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut from = 0;
    let needle = format!("/{WORK_PREFIX}");
    while let Some(i) = text[from..].find(&needle).map(|i| i + from) {
        let suffix = i + needle.len();
        let end = suffix + WORK_SUFFIX_LEN;
        let start = token_start(text, i);
        let is_dir = text.get(suffix..end).is_some_and(|s| {
            s.bytes().all(|b| b.is_ascii_alphanumeric())
                && text[end..]
                    .chars()
                    .next()
                    .is_none_or(|c| c == '/' || !is_path_char(c))
        });
        if is_dir && text[start..].starts_with('/') {
            out.push_str(&text[copied..start]);
            out.push_str(BENCH_DIR);
            copied = end;
            from = end;
        } else {
            from = suffix;
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// `text` with the path `root` (where it stands as a whole path or a path's first part) replaced
/// by `to`; an empty `to` makes the paths under it relative, and `root` alone becomes `.`.
fn replace_root(text: &str, root: &str, to: &str) -> String {
    let root = root.trim_end_matches('/');
    if root.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some(i) = text[from..].find(root).map(|i| i + from) {
        let end = i + root.len();
        let before_ok = text[..i].chars().next_back().is_none_or(|c| !is_path_char(c));
        let next = text[end..].chars().next();
        let after_ok = next.is_none_or(|c| c == '/' || !is_path_char(c));
        if before_ok && after_ok {
            out.push_str(&text[copied..i]);
            match (to.is_empty(), next) {
                (true, Some('/')) => copied = end + 1,
                (true, _) => {
                    out.push('.');
                    copied = end;
                }
                (false, _) => {
                    out.push_str(to);
                    copied = end;
                }
            }
        }
        from = end;
    }
    out.push_str(&text[copied..]);
    out
}

/// Where the path that runs through byte `i` of `text` starts.
fn token_start(text: &str, i: usize) -> usize {
    text[..i]
        .char_indices()
        .rev()
        .find(|(_, c)| !is_path_char(*c))
        .map_or(0, |(j, c)| j + c.len_utf8())
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+' | '~')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_roots() -> Roots {
        Roots {
            work: "/tmp/rvm-bench-A2FZkG".into(),
            bins: "/work/main/target/release".into(),
            repos: vec!["/work/main/bench/..".into(), "/work/main".into()],
        }
    }

    #[test]
    fn a_command_line_shows_the_binary_in_the_repository_and_files_in_bench_dir() {
        let line = "MALLOC_ARENA_MAX=2 /work/main/target/release/rvm-agent --config \
                    /tmp/rvm-bench-A2FZkG/footprint/bench0.toml";
        assert_eq!(
            build_roots().relativise(line),
            "MALLOC_ARENA_MAX=2 target/release/rvm-agent --config $BENCH_DIR/footprint/bench0.toml"
        );
    }

    #[test]
    fn quoted_paths_in_a_config_and_the_scenario_path_are_rewritten() {
        let text = "#   ca = \"/tmp/rvm-bench-A2FZkG/footprint/certs/ca.pem\"\n\
                    --scenario /work/main/bench/../scenarios/demo.toml";
        assert_eq!(
            build_roots().relativise(text),
            "#   ca = \"$BENCH_DIR/footprint/certs/ca.pem\"\n--scenario scenarios/demo.toml"
        );
    }

    #[test]
    fn a_path_that_only_starts_like_a_root_is_left_alone() {
        let r = build_roots();
        assert_eq!(
            r.relativise("/work/main2/x /srv/work/main/y"),
            "/work/main2/x /srv/work/main/y"
        );
        assert_eq!(r.relativise("cd /work/main; ls"), "cd .; ls");
        assert_eq!(r.relativise("/usr/sbin/collectd -f"), "/usr/sbin/collectd -f");
    }

    #[test]
    fn binaries_outside_the_repository_are_shown_as_bins() {
        let r = Roots {
            bins: "/opt/rvm/bin".into(),
            ..build_roots()
        };
        assert_eq!(
            r.relativise("/opt/rvm/bin/fleet-server run"),
            "$BINS/fleet-server run"
        );
    }

    #[test]
    fn foreign_text_loses_its_temp_dir_and_its_repository_root() {
        let text = "/srv/ci/checkout/target/release/fleet-server run --config \
                    /tmp/rvm-bench-Zx81qQ/scale/fleet-server.toml\n\
                    --scenario /srv/ci/checkout/bench/../scenarios/demo.toml\n\
                    BaseDir \"/var/tmp/rvm-bench-000001/footprint/collectd\"\n\
                    /usr/bin/mosquitto_pub --cafile /tmp/rvm-bench-A2FZkG/buffer/certs/ca.pem";
        assert_eq!(
            scrub_foreign(text),
            "target/release/fleet-server run --config $BENCH_DIR/scale/fleet-server.toml\n\
             --scenario scenarios/demo.toml\n\
             BaseDir \"$BENCH_DIR/footprint/collectd\"\n\
             /usr/bin/mosquitto_pub --cafile $BENCH_DIR/buffer/certs/ca.pem"
        );
    }

    #[test]
    fn foreign_text_without_machine_paths_is_unchanged() {
        let text = "`target/release/rvm-bench profile` writes rvm-bench-results and /proc/PID/stat";
        assert_eq!(scrub_foreign(text), text);
        // not a tempfile name: seven characters
        assert_eq!(
            scrub_foreign("/tmp/rvm-bench-ABCDEFG/x"),
            "/tmp/rvm-bench-ABCDEFG/x"
        );
    }
}
