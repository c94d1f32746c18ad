//! `fleetctl certs` (the fleet CA, the server, devices, readers, provisioning bundles) and
//! `fleetctl token` (API tokens in the server's store: `--config`, or `--data-dir`).

use std::path::PathBuf;

use clap::Subcommand;
use common::DeviceId;
use common::pki::{self, Ca, CertDir, LEAF_VALIDITY_DAYS, Validity};
use fleet_server::auth::Role;

use crate::parse_for;
use crate::store::StoreArgs;

#[derive(Subcommand)]
pub enum CertsCmd {
    /// Make the fleet CA, the server certificate and the command-signing key.
    Init {
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Subject alternative names of the server certificate (repeat).
        #[arg(long = "san", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        sans: Vec<String>,
        #[arg(long)]
        force: bool,
    },
    /// Issue a device certificate (CN and O = ID).
    Device {
        id: String,
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        #[arg(long)]
        force: bool,
    },
    /// A provisioning bundle for one RVM: device certificate and key (issued if missing), the
    /// fleet CA, the command-signing public key and provision.env, for `config/install.sh`.
    Bundle {
        id: String,
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// `ID.tar` (a tar file), or any other path (a directory).
        #[arg(long)]
        out: PathBuf,
        /// host:port the machine connects to (written to provision.env as BROKER).
        #[arg(long)]
        broker: Option<String>,
        /// The machine's site (written to provision.env as SITE).
        #[arg(long)]
        site: Option<String>,
        #[arg(long)]
        force: bool,
    },
    /// Issue a certificate for a subscriber that may only read `fleet/v1/#`.
    Client {
        name: String,
        /// Required: the only kind of client certificate there is.
        #[arg(long)]
        read_only: bool,
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
pub enum TokenCmd {
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "viewer")]
        role: Role,
        #[command(flatten)]
        store: StoreArgs,
        /// The token is refused after this long (`90s`, `30m`, `12h`, `30d`); default: never.
        #[arg(long, value_name = "DURATION", value_parser = parse_for)]
        ttl: Option<u64>,
        /// Limit the token to one store (`site=STORE`) or a retailer's stores
        /// (`retailer=RETAILER`); default: the whole fleet. Not for admin tokens.
        #[arg(long, value_name = "site=S|retailer=R")]
        scope: Option<fleet_server::auth::Scope>,
    },
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub fn certs(cmd: CertsCmd) -> anyhow::Result<()> {
    match cmd {
        CertsCmd::Init { dir, sans, force } => {
            let r = pki::init(&CertDir::new(&dir), &sans, force)?;
            for p in &r.written {
                println!("wrote {}", p.display());
            }
            for p in &r.kept {
                println!("kept  {} (exists; --force to replace)", p.display());
            }
        }
        CertsCmd::Device { id, dir, force } => {
            let id = DeviceId::new(id)?;
            let d = CertDir::new(&dir);
            let ident =
                Ca::load(&d)?.issue_device(&d, &id, Validity::days_from_now(LEAF_VALIDITY_DAYS), force)?;
            println!(
                "wrote {}\nwrote {} (0600)",
                ident.cert.display(),
                ident.key.display()
            );
        }
        CertsCmd::Bundle {
            id,
            dir,
            out,
            broker,
            site,
            force,
        } => {
            let id = DeviceId::new(id)?;
            let files = fleet_server::provision::bundle_files(
                &CertDir::new(&dir),
                &id,
                broker.as_deref(),
                site.as_deref(),
            )?;
            for p in fleet_server::provision::write_bundle(&files, &out, force)? {
                println!("wrote {}", p.display());
            }
            eprintln!("the bundle holds {id}'s private key: copy it to the machine and delete it");
        }
        CertsCmd::Client {
            name,
            read_only,
            dir,
            force,
        } => {
            anyhow::ensure!(
                read_only,
                "only read-only subscriber certificates exist: pass --read-only"
            );
            let d = CertDir::new(&dir);
            let ident =
                Ca::load(&d)?.issue_reader(&d, &name, Validity::days_from_now(LEAF_VALIDITY_DAYS), force)?;
            println!(
                "wrote {}\nwrote {} (0600)",
                ident.cert.display(),
                ident.key.display()
            );
        }
    }
    Ok(())
}

pub fn token(cmd: TokenCmd) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Create {
            name,
            role,
            store,
            ttl,
            scope,
        } => {
            if scope.is_some() {
                fleet_server::auth::Scope::check_role(role).map_err(anyhow::Error::msg)?;
            }
            let store = fleet_server::storage::open_tokens(&store.storage()?)?;
            let expires_ms = ttl
                .map(|s| {
                    i64::try_from(s)
                        .ok()
                        .and_then(|s| s.checked_mul(1000))
                        .and_then(|ms| common::time::now_ms().checked_add(ms))
                        .ok_or_else(|| anyhow::anyhow!("--ttl {s} s is too long"))
                })
                .transpose()?;
            let t = store.create_scoped(&name, role, expires_ms, scope.clone())?;
            println!("{t}");
            if let Some(s) = &scope {
                eprintln!("limited to {s}");
            }
            match expires_ms {
                Some(x) => eprintln!(
                    "token {name:?} ({role:?}) created, valid until {x} (ms since the epoch); it is shown only now"
                ),
                None => eprintln!("token {name:?} ({role:?}) created; it is shown only now"),
            }
        }
        TokenCmd::List { store } => {
            let store = fleet_server::storage::open_tokens(&store.storage()?)?;
            for e in store.list() {
                let scope = e.scope.map_or_else(|| "all".to_string(), |s| s.to_string());
                match e.expires_ms {
                    Some(x) => println!("{}\t{:?}\t{scope}\texpires_ms={x}", e.name, e.role),
                    None => println!("{}\t{:?}\t{scope}", e.name, e.role),
                }
            }
        }
    }
    Ok(())
}
