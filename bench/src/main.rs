//! # rvm-bench
//!
//! Runs every benchmark of docs/benchmarks.md against the release binaries and rewrites the
//! document. Every figure is measured beside a reference from the same run (the machines are
//! shared and noisy: ratios travel, absolute numbers do not). `bench/run.sh` builds, installs
//! the reference tools and calls `rvm-bench run`.
//!
//! # Layout
//! - [`figure`]: a figure beside its reference and its target, saved results
//! - [`report`]: docs/benchmarks.md from the saved results and the document as it stands
//! - [`paths`]: paths as the report shows them (relative to the repository, `$BENCH_DIR`)
//! - [`procs`]: child processes that die with the bench, /proc sampling, percentiles
//! - [`memory`]: RSS, PSS, RssAnon, working set and CPU of several processes in one window
//! - [`setup`]: certificates, fleet-server, Mosquitto, agents, simulators, the API
//! - [`mqtt`]: a load generator of valid records and probe devices
//! - [`profile`]: fixed workloads of the hot paths for callgrind
//! - [`pg`]: a throwaway PostgreSQL cluster (the `postgres` and `cluster` groups)
//! - `b_*`: one module per group of figures

mod b_alerts;
mod b_buffer;
mod b_cluster;
mod b_commands;
mod b_footprint;
mod b_ingest;
mod b_postgres;
mod b_scale;
mod figure;
mod memory;
mod mqtt;
mod paths;
mod pg;
mod procs;
mod profile;
mod report;
mod setup;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "rvm-bench", about = "RVM Fleet benchmarks (see bench/run.sh)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run benchmarks, save their results and rewrite the report.
    Run {
        /// Comma-separated groups (footprint, buffer, ingest, alerts, commands, scale, postgres,
        /// cluster); default all.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Shorter windows and fewer samples.
        #[arg(long)]
        quick: bool,
        /// Directory of the release binaries.
        #[arg(long, default_value = "target/release")]
        bins: PathBuf,
        /// Where each group's results are kept between runs.
        #[arg(long, default_value = "target/bench-results")]
        results: PathBuf,
        /// The report to rewrite.
        #[arg(long, default_value = "docs/benchmarks.md")]
        doc: PathBuf,
        /// Hand-written text appended to the report.
        #[arg(long, default_value = "bench/notes.md")]
        notes: PathBuf,
        /// The command line to print as "the command" of each group (run.sh passes its own).
        #[arg(long, default_value = "bench/run.sh")]
        invoked_as: String,
    },
    /// A fixed workload of one hot path, for `valgrind --tool=callgrind`.
    Profile {
        /// append, open, drain or writer.
        what: String,
        #[arg(long, default_value_t = 5000)]
        n: usize,
    },
    /// Rewrite the report from the saved results and the document as it stands (the newer of
    /// the two for each group).
    Report {
        #[arg(long, default_value = "target/bench-results")]
        results: PathBuf,
        #[arg(long, default_value = "docs/benchmarks.md")]
        doc: PathBuf,
        #[arg(long, default_value = "bench/notes.md")]
        notes: PathBuf,
    },
}

/// Raises the soft open-file limit to the hard one (children inherit it); returns it.
pub fn nofile_limit() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
    }
    r.rlim_cur
}

type Bench = fn(&setup::Ctx) -> anyhow::Result<figure::GroupResult>;

fn bench(key: &str) -> Option<Bench> {
    Some(match key {
        "footprint" => b_footprint::run,
        "buffer" => b_buffer::run,
        "ingest" => b_ingest::run,
        "alerts" => b_alerts::run,
        "commands" => b_commands::run,
        "scale" => b_scale::run,
        "postgres" => b_postgres::run,
        "cluster" => b_cluster::run,
        _ => return None,
    })
}

/// Rewrites `doc` from the saved results and the document as it stands (`fresh`: the groups
/// just run, which always show their new result).
fn write_report(
    results: &std::path::Path,
    doc: &std::path::Path,
    notes: &std::path::Path,
    fresh: &[String],
) -> anyhow::Result<()> {
    let notes = std::fs::read_to_string(notes).unwrap_or_default();
    let previous = std::fs::read_to_string(doc).unwrap_or_default();
    let text = report::render(results, &previous, fresh, &notes)?;
    if let Some(d) = doc.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(doc, text)?;
    Ok(())
}

fn main() -> ExitCode {
    common::tls::install_crypto_provider();
    match Cli::parse().cmd {
        Cmd::Profile { what, n } => match profile::run(&what, n) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rvm-bench: {e:#}");
                ExitCode::FAILURE
            }
        },
        Cmd::Report { results, doc, notes } => match write_report(&results, &doc, &notes, &[]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rvm-bench: {e:#}");
                ExitCode::FAILURE
            }
        },
        Cmd::Run {
            only,
            quick,
            bins,
            results,
            doc,
            notes,
            invoked_as,
        } => {
            let keys: Vec<String> = if only.is_empty() {
                figure::ORDER.iter().map(|s| s.to_string()).collect()
            } else {
                only
            };
            for k in &keys {
                if bench(k).is_none() {
                    eprintln!(
                        "rvm-bench: unknown group {k:?} (one of {})",
                        figure::ORDER.join(", ")
                    );
                    return ExitCode::FAILURE;
                }
            }
            match run(&keys, quick, bins, &results, &doc, &notes, &invoked_as) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(2),
                Err(e) => {
                    eprintln!("rvm-bench: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Runs the groups in order; a failing group is reported and the others still run. Ok(false)
/// when any failed.
fn run(
    keys: &[String],
    quick: bool,
    bins: PathBuf,
    results: &std::path::Path,
    doc: &std::path::Path,
    notes: &std::path::Path,
    invoked_as: &str,
) -> anyhow::Result<bool> {
    for b in ["fleet-server", "rvm-agent"] {
        anyhow::ensure!(
            bins.join(b).exists(),
            "{} is missing: build with `cargo build --release --bins`",
            bins.join(b).display()
        );
    }
    let limit = nofile_limit();
    let work = tempfile::Builder::new().prefix("rvm-bench-").tempdir()?;
    let ctx = setup::Ctx {
        bins: std::fs::canonicalize(&bins)?,
        work: work.path().to_path_buf(),
        quick,
        rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?,
        http: reqwest::Client::builder().pool_max_idle_per_host(64).build()?,
    };
    let roots = paths::Roots::for_run(&ctx.work, &ctx.bins);
    let machine = figure::machine();
    eprintln!(
        "machine: {machine}; open-file limit {limit}; work dir {}",
        ctx.work.display()
    );
    let mut all_ok = true;
    let mut done: Vec<String> = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let Some(f) = bench(key) else { continue };
        eprintln!(
            "[{}/{}] {key}{}",
            i + 1,
            keys.len(),
            if quick { " (quick)" } else { "" }
        );
        let t = Instant::now();
        match f(&ctx) {
            Ok(mut g) => {
                g.date = figure::today();
                g.machine = machine.clone();
                g.command = format!("{invoked_as} --only {key}{}", if quick { " --quick" } else { "" });
                g.rewrite_text(|t| roots.relativise(t));
                g.save(results)?;
                done.push(key.clone());
                for fig in &g.figures {
                    eprintln!(
                        "    {}: {} {}{}{}",
                        fig.name,
                        fig.value.map(figure::fmt).unwrap_or("not measured".into()),
                        fig.unit,
                        match (fig.ratio, &fig.reference) {
                            (Some(r), Some(n)) => format!(" ({}x {n})", figure::fmt(r)),
                            _ => String::new(),
                        },
                        match fig.met {
                            Some(true) => " [met]".to_string(),
                            Some(false) => format!(" [MISSED: {}]", fig.verdict),
                            None => String::new(),
                        }
                    );
                }
                write_report(results, doc, notes, &done)?;
                eprintln!(
                    "    done in {:.0} s; {} rewritten",
                    t.elapsed().as_secs_f64(),
                    doc.display()
                );
            }
            Err(e) => {
                all_ok = false;
                eprintln!("    FAILED after {:.0} s: {e:#}", t.elapsed().as_secs_f64());
            }
        }
    }
    Ok(all_ok)
}
