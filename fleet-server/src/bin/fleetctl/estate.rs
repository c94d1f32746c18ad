//! The estate from the command line: `fleetctl estate import stores.csv` (checked here first:
//! every problem names its line and column, and nothing is sent while there is one), `estate
//! export` (the same CSV format), `estate unknown-sites`. The format is
//! [`fleet_server::estate::csv`]'s (docs/estate.md).

use std::path::PathBuf;

use clap::Subcommand;
use fleet_server::estate::csv::{self, Parsed};
use fleet_server::estate::{Retailer, StoreFile};
use serde_json::Value;

use crate::Remote;
use crate::api::{api, block_on};

#[derive(Subcommand)]
pub enum EstateCmd {
    /// Create or replace the retailers and stores of a CSV file (needs an operator token).
    Import {
        file: PathBuf,
        /// Check the file and print what would be sent, send nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Every store as CSV, in the import format (to stdout, or --out).
    Export {
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Sites machines report that no store has, with their machines.
    UnknownSites {
        #[command(flatten)]
        remote: Remote,
    },
}

/// A path segment: ids may hold spaces and dots.
fn segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn estate(cmd: EstateCmd) -> anyhow::Result<()> {
    match cmd {
        EstateCmd::Import {
            file,
            dry_run,
            remote,
        } => {
            let text =
                std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let parsed = csv::parse(&text).map_err(|e| anyhow::anyhow!("{}:\n{e}", file.display()))?;
            if dry_run {
                println!(
                    "{}: {} retailers, {} stores, no problem (nothing sent)",
                    file.display(),
                    parsed.retailers.len(),
                    parsed.stores.len()
                );
                return Ok(());
            }
            block_on(import(&remote, parsed))
        }
        EstateCmd::Export { out, remote } => block_on(async move {
            let v = api(&remote, reqwest::Method::GET, "/api/v1/estate", None).await?;
            let retailers: Vec<Retailer> = serde_json::from_value(v["retailers"].clone())?;
            let stores: Vec<StoreFile> = v["stores"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    let mut s = s.clone();
                    if let Some(o) = s.as_object_mut() {
                        o.remove("machines");
                    }
                    serde_json::from_value(s)
                })
                .collect::<Result<_, _>>()?;
            let text = csv::write(&retailers, &stores)?;
            match out {
                Some(p) => std::fs::write(&p, text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?,
                None => print!("{text}"),
            }
            Ok(())
        }),
        EstateCmd::UnknownSites { remote } => block_on(async move {
            let v = api(
                &remote,
                reqwest::Method::GET,
                "/api/v1/estate/unknown-sites",
                None,
            )
            .await?;
            for s in v["sites"].as_array().into_iter().flatten() {
                let machines: Vec<&str> = s["machines"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let site = s["site"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .unwrap_or("(no site)");
                println!("{site}\t{}", machines.join(" "));
            }
            Ok(())
        }),
    }
}

/// Retailers first (a store needs its retailer), then stores.
async fn import(remote: &Remote, p: Parsed) -> anyhow::Result<()> {
    for r in &p.retailers {
        let path = format!("/api/v1/estate/retailers/{}", segment(&r.id));
        api(
            remote,
            reqwest::Method::PUT,
            &path,
            Some(serde_json::json!({ "name": r.name })),
        )
        .await?;
    }
    for s in &p.stores {
        let path = format!("/api/v1/estate/stores/{}", segment(&s.id));
        api(
            remote,
            reqwest::Method::PUT,
            &path,
            Some(serde_json::to_value(s)?),
        )
        .await
        .map_err(|e| anyhow::anyhow!("store {:?}: {e:#}", s.id))?;
    }
    println!(
        "imported {} retailers, {} stores",
        p.retailers.len(),
        p.stores.len()
    );
    Ok(())
}
