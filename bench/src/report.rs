//! docs/benchmarks.md from the saved results: a summary of every targeted figure, then one
//! section per group with its figures, notes and the exact command lines it measured.
//!
//! The results directory lives in `target/` and is not committed, while the document is: a
//! run of one group (`--only footprint`) on a fresh checkout keeps the other groups' sections
//! and summary rows from the document as it stands, unless a newer saved result exists.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::figure::{Figure, GroupResult, ORDER, fmt};
use crate::paths;

/// A group as the document shows it: from a saved result, or carried over from the previous
/// document when no newer result is saved (a run of one group keeps the others' sections).
enum Shown {
    Saved(GroupResult),
    Carried(Carried),
}

/// A group's rows of the summary and its section, as text of the previous document.
#[derive(Debug, Clone, Default, PartialEq)]
struct Carried {
    /// "2026-11-21 23:42 UTC", from its "Measured ... on" line.
    date: String,
    summary_rows: Vec<String>,
    section: String,
}

/// Renders docs/benchmarks.md: each group from its saved result in `results` or from its
/// section in `previous` (the document as it stands), whichever is newer; the groups in `fresh`
/// (run just now) from their saved results. Then the hand-written notes. No absolute path of
/// this machine is shown (see [`crate::paths`]).
pub fn render(results: &Path, previous: &str, fresh: &[String], notes: &str) -> anyhow::Result<String> {
    let mut carried = previous_groups(previous);
    let mut groups = Vec::new();
    for key in ORDER {
        let p = results.join(format!("{key}.json"));
        let saved = match std::fs::read(&p) {
            Ok(bytes) => Some(
                serde_json::from_slice::<GroupResult>(&bytes)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
            ),
            Err(_) => None,
        };
        let old = carried.remove(*key);
        let is_fresh = fresh.iter().any(|k| k == key);
        groups.push(match (saved, old) {
            (Some(g), _) if is_fresh => Shown::Saved(g),
            (Some(g), Some(c)) if c.date > g.date => Shown::Carried(c),
            (Some(g), _) => Shown::Saved(g),
            (None, Some(c)) => Shown::Carried(c),
            (None, None) => continue,
        });
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
        "Reproduce everything: `bench/run.sh` (about 20 minutes on 2 cores; `--quick` about 10); one group: `bench/run.sh --only KEY` with KEY one of {} (the other groups keep their sections). Paths are relative to the repository; `{}` is the run's temporary directory.",
        ORDER.join(", "),
        paths::BENCH_DIR,
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
        match g {
            Shown::Saved(g) => summary_rows(&mut s, g)?,
            Shown::Carried(c) => c.summary_rows.iter().try_for_each(|r| writeln!(s, "{r}"))?,
        }
    }
    writeln!(s)?;
    for g in &groups {
        match g {
            Shown::Saved(g) => section(&mut s, g)?,
            Shown::Carried(c) => {
                s.push_str(c.section.trim_end());
                s.push_str("\n\n");
            }
        }
    }
    // results and sections written on another machine or checkout name its paths
    let mut s = paths::scrub_foreign(&s);
    s.push_str(notes);
    Ok(s)
}

fn summary_rows(s: &mut String, g: &GroupResult) -> std::fmt::Result {
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
    Ok(())
}

fn section(s: &mut String, g: &GroupResult) -> std::fmt::Result {
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
    Ok(())
}

/// The groups of a document this module wrote: each `## ` section (outside code blocks) with
/// a "Command: `... --only KEY`" line is group KEY's; its summary rows start with `| KEY |`.
fn previous_groups(doc: &str) -> BTreeMap<String, Carried> {
    let lines: Vec<&str> = doc.lines().collect();
    let mut headings = Vec::new();
    let mut in_code = false;
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && l.starts_with("## ") {
            headings.push(i);
        }
    }
    headings.push(lines.len());
    let mut out = BTreeMap::new();
    for w in headings.windows(2) {
        let body = &lines[w[0]..w[1]];
        let key = body.iter().find_map(|l| {
            let rest = l.strip_prefix("Command: `")?;
            let after = &rest[rest.find("--only ")? + "--only ".len()..];
            let key = after.split([' ', '`']).next()?;
            ORDER.contains(&key).then(|| key.to_string())
        });
        let date = body.iter().find_map(|l| {
            let rest = l.strip_prefix("Measured ")?;
            Some(rest[..rest.find(" on ")?].to_string())
        });
        if let (Some(key), Some(date)) = (key, date) {
            out.insert(
                key,
                Carried {
                    date,
                    summary_rows: Vec::new(),
                    section: body.join("\n"),
                },
            );
        }
    }
    if let Some(start) = lines.iter().position(|l| *l == "## Summary") {
        for l in lines[start + 1..].iter().take_while(|l| !l.starts_with("## ")) {
            let key = l.strip_prefix("| ").and_then(|r| r.split(" |").next());
            if let Some(c) = key.and_then(|k| out.get_mut(k)) {
                c.summary_rows.push(l.to_string());
            }
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn build_group(key: &str, date: &str, value: f64) -> GroupResult {
        GroupResult {
            key: key.into(),
            title: format!("Group {key}"),
            date: date.into(),
            machine: "nproc 2".into(),
            quick: false,
            command: format!("bench/run.sh --only {key}"),
            commands: vec![format!(
                "target/release/rvm-agent --config $BENCH_DIR/{key}/a.toml"
            )],
            figures: vec![
                Figure::new(&format!("{key} speed"), value, "records/s").target(
                    ">= 1 records/s",
                    true,
                    "met".into(),
                ),
                Figure::new(&format!("{key} detail"), 1.0, "ms"),
            ],
            notes: vec![format!("how {key} is measured")],
        }
    }

    fn build_results(groups: &[GroupResult]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for g in groups {
            g.save(dir.path()).unwrap();
        }
        dir
    }

    const NOTES: &str = "## How the figures are made\n\nBy hand.\n";

    #[test]
    fn a_run_of_one_group_keeps_the_other_groups_sections_and_summary_rows() {
        let before = build_results(&[
            build_group("footprint", "2026-11-21 23:42 UTC", 10.0),
            build_group("buffer", "2026-11-21 19:42 UTC", 20.0),
        ]);
        let previous = render(before.path(), "", &[], NOTES).unwrap();
        // a fresh checkout: only the group just run is saved
        let after = build_results(&[build_group("footprint", "2026-12-07 05:00 UTC", 30.0)]);
        let doc = render(after.path(), &previous, &["footprint".into()], NOTES).unwrap();
        assert!(
            doc.contains("| footprint | footprint speed | 30 records/s |"),
            "{doc}"
        );
        assert!(
            !doc.contains("10 records/s"),
            "the old footprint row is gone:\n{doc}"
        );
        assert!(doc.contains("| buffer | buffer speed | 20 records/s |"), "{doc}");
        assert!(doc.contains("## Group buffer"), "{doc}");
        assert!(doc.contains("how buffer is measured"), "{doc}");
        assert_eq!(doc.matches("## How the figures are made").count(), 1, "{doc}");
        // footprint first, as ORDER says, in the summary and in the sections
        assert!(doc.find("| footprint |").unwrap() < doc.find("| buffer |").unwrap());
        assert!(doc.find("## Group footprint").unwrap() < doc.find("## Group buffer").unwrap());
        // rendering again from the same inputs changes nothing
        assert_eq!(
            render(after.path(), &doc, &["footprint".into()], NOTES).unwrap(),
            doc
        );
    }

    #[test]
    fn a_saved_result_older_than_the_documents_section_does_not_replace_it() {
        let newer = build_results(&[build_group("ingest", "2026-12-01 10:00 UTC", 5.0)]);
        let previous = render(newer.path(), "", &[], NOTES).unwrap();
        let stale = build_results(&[build_group("ingest", "2026-11-01 10:00 UTC", 4.0)]);
        let doc = render(stale.path(), &previous, &[], NOTES).unwrap();
        assert!(doc.contains("| ingest | ingest speed | 5 records/s |"), "{doc}");
        assert!(!doc.contains("4 records/s"), "{doc}");
        // unless it was run just now
        let doc = render(stale.path(), &previous, &["ingest".into()], NOTES).unwrap();
        assert!(doc.contains("4 records/s"), "{doc}");
    }

    #[test]
    fn sections_carried_from_another_checkout_show_no_absolute_paths() {
        let previous = "# Benchmarks\n\n## Summary\n\n| group | figure |\n| --- | --- |\n\
            | scale | server RSS per machine | 135 KiB |\n\n## Fleet scale\n\n\
            Measured 2026-11-21 15:06 UTC on nproc 2.\n\nCommand: `bench/run.sh --only scale`\n\n\
            ```\n/work/main/target/release/fleet-server run --config /tmp/rvm-bench-A2FZkG/scale/fleet-server.toml\n\
            ## not a heading inside a code block\n```\n\n## How the figures are made\n\nBy hand.\n";
        let empty = tempfile::tempdir().unwrap();
        let doc = render(empty.path(), previous, &[], NOTES).unwrap();
        assert!(
            doc.contains("| scale | server RSS per machine | 135 KiB |"),
            "{doc}"
        );
        assert!(
            doc.contains(
                "target/release/fleet-server run --config $BENCH_DIR/scale/fleet-server.toml\n\
                 ## not a heading inside a code block\n"
            ),
            "{doc}"
        );
        assert!(!doc.contains("/work/main") && !doc.contains("/tmp/"), "{doc}");
        assert_eq!(doc.matches("By hand.").count(), 1, "{doc}");
    }

    #[test]
    fn the_previous_document_is_read_back_group_by_group() {
        let dir = build_results(&[
            build_group("alerts", "2026-11-21 11:35 UTC", 1.0),
            build_group("commands", "2026-11-21 10:44 UTC", 2.0),
        ]);
        let doc = render(dir.path(), "", &[], NOTES).unwrap();
        let groups = previous_groups(&doc);
        assert_eq!(groups.keys().collect::<Vec<_>>(), ["alerts", "commands"]);
        let c = &groups["commands"];
        assert_eq!(c.date, "2026-11-21 10:44 UTC");
        assert_eq!(c.summary_rows.len(), 1, "{:?}", c.summary_rows);
        assert!(c.section.starts_with("## Group commands\n"));
        assert!(!c.section.contains("How the figures"), "{}", c.section);
    }
}
