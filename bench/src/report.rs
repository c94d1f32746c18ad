//! docs/benchmarks.md from the saved results: a summary of every targeted figure, then one
//! section per group with its figures, notes and the exact command lines it measured.

use std::fmt::Write as _;
use std::path::Path;

use crate::figure::{Figure, GroupResult, ORDER, fmt};

/// Renders docs/benchmarks.md from every saved group plus the hand-written notes.
pub fn render(results: &Path, notes: &str) -> anyhow::Result<String> {
    let mut groups = Vec::new();
    for key in ORDER {
        let p = results.join(format!("{key}.json"));
        if let Ok(bytes) = std::fs::read(&p) {
            groups.push(serde_json::from_slice::<GroupResult>(&bytes)?);
        }
    }
    let mut s = String::new();
    writeln!(s, "# Benchmarks")?;
    writeln!(s)?;
    writeln!(
        s,
        "Written by `bench/run.sh` (do not edit by hand: the next run rewrites it; the text after \
         the figures comes from `bench/notes.md`). Every figure stands beside a reference measured \
         in the same run on the same machine, because the machines this runs on are shared and \
         noisy: compare ratios, not absolute numbers, across machines."
    )?;
    writeln!(s)?;
    writeln!(
        s,
        "Reproduce everything: `bench/run.sh` (about 20 minutes on 2 cores; `--quick` about 10); one group: `bench/run.sh --only KEY` with KEY one of {}.",
        ORDER.join(", ")
    )?;
    writeln!(s)?;
    writeln!(s, "## Summary")?;
    writeln!(s)?;
    writeln!(
        s,
        "| group | figure | value | reference | ratio | target | verdict |"
    )?;
    writeln!(s, "| --- | --- | --- | --- | --- | --- | --- |")?;
    for g in &groups {
        for f in &g.figures {
            if f.target.is_empty() && f.value.is_some() && !f.in_summary {
                continue;
            }
            writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                g.key,
                f.name,
                value_cell(f),
                reference_cell(f),
                f.ratio.map(|r| format!("{}x", fmt(r))).unwrap_or("-".into()),
                if f.target.is_empty() { "-" } else { &f.target },
                verdict_cell(f),
            )?;
        }
    }
    writeln!(s)?;
    for g in &groups {
        writeln!(s, "## {}", g.title)?;
        writeln!(s)?;
        writeln!(
            s,
            "Measured {} on {}{}.",
            g.date,
            g.machine,
            if g.quick {
                " (`--quick` run: shorter windows)"
            } else {
                ""
            }
        )?;
        writeln!(s)?;
        writeln!(s, "Command: `{}`", g.command)?;
        writeln!(s)?;
        writeln!(
            s,
            "| figure | value | reference | ratio | target | verdict | notes |"
        )?;
        writeln!(s, "| --- | --- | --- | --- | --- | --- | --- |")?;
        for f in &g.figures {
            writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                f.name,
                value_cell(f),
                reference_cell(f),
                f.ratio.map(|r| format!("{}x", fmt(r))).unwrap_or("-".into()),
                if f.target.is_empty() { "-" } else { &f.target },
                verdict_cell(f),
                f.notes.replace('|', "\\|"),
            )?;
        }
        writeln!(s)?;
        for n in &g.notes {
            writeln!(s, "- {n}")?;
        }
        if !g.notes.is_empty() {
            writeln!(s)?;
        }
        if !g.commands.is_empty() {
            writeln!(
                s,
                "<details><summary>processes measured (exact command lines)</summary>"
            )?;
            writeln!(s)?;
            writeln!(s, "```")?;
            for c in &g.commands {
                writeln!(s, "{c}")?;
            }
            writeln!(s, "```")?;
            writeln!(s)?;
            writeln!(s, "</details>")?;
            writeln!(s)?;
        }
    }
    s.push_str(notes);
    Ok(s)
}

fn value_cell(f: &Figure) -> String {
    match f.value {
        Some(v) => format!("{} {}", fmt(v), f.unit),
        None => "not measured".into(),
    }
}

fn reference_cell(f: &Figure) -> String {
    match (&f.reference, f.reference_value) {
        (Some(r), Some(v)) => format!("{r}: {} {}", fmt(v), f.unit),
        (Some(r), None) => r.clone(),
        _ => "-".into(),
    }
}

fn verdict_cell(f: &Figure) -> String {
    match f.met {
        Some(true) => format!("**met**: {}", f.verdict),
        Some(false) => format!("**missed**: {}", f.verdict),
        None if f.value.is_none() => format!("**{}**", f.notes),
        None => "-".into(),
    }
}
