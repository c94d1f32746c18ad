//! Commands that read or write the server's store itself, with either backend: the store of
//! `--config fleet-server.toml` (its `[storage]` section), or the sled store in `--data-dir`.
//!
//! - `fleetctl devices --config`: every device the store knows, from its births, delivery
//!   state and (PostgreSQL) presence;
//! - `fleetctl export --config`: metric history as CSV or JSON, as `GET /api/v1/export`;
//! - `fleetctl store migrate --from DATA_DIR --to URL`: a sled store copied into PostgreSQL.
//!
//! A sled store is locked by the server running on it: these commands then say so (tokens are
//! not in sled and work beside a running server with either backend).

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use common::DeviceId;
use fleet_server::config::ServerFile;
use fleet_server::history::export::walk::{Walked, walk};
use fleet_server::history::export::{self, ExportParams};
use fleet_server::pg::config::{Backend, StorageBackend, StorageBackendFile};
use fleet_server::pg::partitions::{DAY_MS, Retention};
use fleet_server::storage::migrate::{MigrateReport, migrate};
use fleet_server::storage::{self, StorageConfig, Stores};

/// Which store: the one `--config` names, else the sled store in `--data-dir`.
#[derive(Args, Clone, Debug)]
pub struct StoreArgs {
    /// The server's config file: its `[storage]` section says which store (sled or
    /// PostgreSQL) and where.
    #[arg(long, conflicts_with = "data_dir")]
    pub config: Option<PathBuf>,
    /// The sled store's data directory (without --config).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

impl StoreArgs {
    pub fn storage(&self) -> anyhow::Result<StorageConfig> {
        match &self.config {
            Some(path) => {
                let c = ServerFile::load(path)?;
                Ok(StorageConfig {
                    backend: c.storage,
                    data_dir: c.data_dir,
                    cache_bytes: c.store_cache_bytes,
                    history: c.history,
                })
            }
            None => Ok(StorageConfig::sled(
                self.data_dir.as_deref().unwrap_or(Path::new("data")),
            )),
        }
    }
}

/// Every store, or an error that says a running sled server holds it.
fn open(cfg: &StorageConfig) -> anyhow::Result<Stores> {
    storage::open(cfg).map_err(|e| match cfg.backend {
        StorageBackend::Sled => anyhow::anyhow!(
            "{e}\n(a fleet-server running on {} holds its sled store: stop it, or ask it with --server and --token)",
            cfg.data_dir.display()
        ),
        StorageBackend::Postgres(_) => e.into(),
    })
}

/// `fleetctl devices --config`: one line per device the store knows.
pub fn devices(args: &StoreArgs) -> anyhow::Result<()> {
    let stores = open(&args.storage()?)?;
    let births = stores.ingest.load_births()?;
    let delivery = stores.ingest.load_delivery()?;
    let presence: std::collections::BTreeMap<DeviceId, _> = stores
        .presence
        .load()?
        .into_iter()
        .map(|p| (p.device.clone(), p))
        .collect();
    let mut ids: Vec<&DeviceId> = births.keys().chain(delivery.keys()).collect();
    ids.sort();
    ids.dedup();
    println!(
        "{:<16} {:<9} {:<10} {:<10} {:>10} {:>10} {:>8}",
        "DEVICE", "STATUS", "SITE", "AGENT", "LAST_SEQ", "RECEIVED", "MISSING"
    );
    for id in &ids {
        let b = births.get(*id);
        let d = delivery.get(*id).map(|s| s.view()).unwrap_or_default();
        let status = presence.get(*id).map_or("-".to_string(), |p| {
            serde_json::to_value(p.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        });
        println!(
            "{:<16} {:<9} {:<10} {:<10} {:>10} {:>10} {:>8}",
            id.as_str(),
            status,
            b.and_then(|b| b.site.as_deref()).unwrap_or("-"),
            b.map(|b| b.agent_version.as_str()).unwrap_or("-"),
            d.last_seq,
            d.received,
            d.missing
        );
    }
    eprintln!(
        "{} device(s) in the {} store{}",
        ids.len(),
        stores.health.backend(),
        if stores.pg.is_none() {
            " (status is known only to a running server: `fleetctl devices --token`)"
        } else {
            ""
        }
    );
    Ok(())
}

/// `fleetctl export`'s options (those of `GET /api/v1/export`).
#[derive(Args, Clone, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// csv or json.
    #[arg(long)]
    pub format: Option<String>,
    /// From this time (ms since the epoch; default: an hour ago).
    #[arg(long)]
    pub from: Option<String>,
    /// Up to this time (ms since the epoch; default: now).
    #[arg(long)]
    pub to: Option<String>,
    /// Comma-separated device ids (default: every device the store knows).
    #[arg(long)]
    pub devices: Option<String>,
    /// Comma-separated metric names (default: those of each device's first row).
    #[arg(long)]
    pub metrics: Option<String>,
    /// raw or minute.
    #[arg(long)]
    pub resolution: Option<String>,
    /// Write here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `fleetctl export`: history from the store, written as the API would send it.
pub fn export(a: &ExportArgs) -> anyhow::Result<()> {
    let cfg = a.store.storage()?;
    let params = ExportParams {
        format: a.format.clone(),
        from: a.from.clone(),
        to: a.to.clone(),
        devices: a.devices.clone(),
        metrics: a.metrics.clone(),
        resolution: a.resolution.clone(),
    };
    let plan = export::plan(&params, &cfg.history, common::time::now_ms())
        .map_err(|e| anyhow::anyhow!("--{}: {}", e.param, e.message))?;
    let stores = open(&cfg)?;
    let known = stores.history.known_devices()?;
    let devices: Vec<DeviceId> = match &plan.devices {
        Some(list) => {
            if let Some(unknown) = list.iter().find(|d| !known.contains(d)) {
                anyhow::bail!("--devices: no device {unknown} in the store");
            }
            list.clone()
        }
        None => known,
    };
    let latest: Vec<String> = devices
        .iter()
        .filter_map(|d| stores.history.history_iter(d, plan.from_ms, plan.to_ms).next())
        .filter_map(Result::ok)
        .flat_map(|r| r.metrics.into_iter().map(|(n, _)| n))
        .collect();
    let columns = export::columns(&plan, latest);
    let mut out: Box<dyn Write> = match &a.out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| anyhow::anyhow!("--out {}: {e}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut failed = None;
    let mut sink = |piece: String| match out.write_all(piece.as_bytes()) {
        Ok(()) => true,
        Err(e) => {
            failed = Some(e);
            false
        }
    };
    let walked = walk(&*stores.history, &plan, &devices, &columns, 64 * 1024, &mut sink)?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    out.flush()?;
    if let Walked::Done(rows) = walked {
        eprintln!("{rows} row(s) of {} device(s)", devices.len());
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum StoreCmd {
    /// Copy a sled store (a stopped server's data directory) into PostgreSQL; rerun it
    /// safely: what the database has is kept, what is new is copied.
    Migrate {
        /// The sled data directory (`[storage] data_dir`).
        #[arg(long)]
        from: PathBuf,
        /// The PostgreSQL database: `postgres://user[:password]@host:port/dbname`.
        #[arg(long)]
        to: String,
        /// A file holding the database password.
        #[arg(long, conflicts_with = "password_env")]
        password_file: Option<PathBuf>,
        /// An environment variable holding the database password.
        #[arg(long)]
        password_env: Option<String>,
        /// Raw history is kept this long in the database (its partitions; older rows are
        /// skipped): the target server's `history_raw_hours`.
        #[arg(long, default_value_t = 24)]
        raw_hours: u64,
        /// Rollups are kept this long: the target server's `history_rollup_days`.
        #[arg(long, default_value_t = 30)]
        rollup_days: u64,
    },
}

pub fn store(cmd: StoreCmd) -> anyhow::Result<()> {
    match cmd {
        StoreCmd::Migrate {
            from,
            to,
            password_file,
            password_env,
            raw_hours,
            rollup_days,
        } => {
            let backend = StorageBackendFile {
                backend: Backend::Postgres,
                url: Some(to),
                password_file,
                password_env,
                pool_size: Some(2),
            }
            .validate("--to")
            .map_err(|p| anyhow::anyhow!("{}", cli_keys(&p.join("; "))))?;
            let StorageBackend::Postgres(pg) = backend else {
                anyhow::bail!("--to: not a PostgreSQL database");
            };
            let retention = Retention {
                raw_ms: raw_hours as i64 * DAY_MS / 24,
                rollup_ms: rollup_days as i64 * DAY_MS,
            };
            eprintln!("copying {} into {}", from.display(), pg.target());
            let mut last = String::new();
            let mut progress = |kind: &str, n: u64| {
                if kind != last {
                    if !last.is_empty() {
                        eprintln!();
                    }
                    last = kind.to_string();
                }
                eprint!("\r{kind}: {n}");
            };
            let report = migrate(&from, &pg, retention, &mut progress)
                .map_err(|e| anyhow::anyhow!("{}", cli_keys(&e.to_string())))?;
            eprintln!();
            print_report(&report);
            Ok(())
        }
    }
}

/// Errors name the options of `store migrate`, not the config keys they stand for.
fn cli_keys(e: &str) -> String {
    e.replace("--to.password_file", "--password-file")
        .replace("--to.password_env", "--password-env")
        .replace("--to.url", "--to")
        .replace("storage.url", "--to")
}

fn print_report(r: &MigrateReport) {
    println!(
        "{:<14} {:>10} {:>10} {:>14} {:>10} {:>10}",
        "KIND", "READ", "COPIED", "ALREADY THERE", "SKIPPED", "VERIFIED"
    );
    for (kind, c) in r.kinds() {
        println!(
            "{kind:<14} {:>10} {:>10} {:>14} {:>10} {:>10}",
            c.read,
            c.new,
            c.already(),
            c.skipped,
            c.verified
        );
    }
    if r.raw_rows.skipped + r.rollups.skipped > 0 {
        println!("skipped: history older than --raw-hours / --rollup-days (no partition keeps it)");
    }
    if r.alerts.skipped + r.silences.skipped + r.incidents.skipped > 0 {
        println!(
            "skipped: alerts, silences and incidents: the database has an alerts state of its own (kept)"
        );
    }
    println!("verified: every row read and not skipped is in the database");
}
