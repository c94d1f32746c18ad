//! fleetctl: the operator's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use common::DeviceId;
use common::pki::{self, Ca, CertDir, LEAF_VALIDITY_DAYS, Validity};
use fleet_server::auth::{Role, TokenStore};

#[derive(Parser)]
#[command(name = "fleetctl", version, about = "RVM Fleet operator command line")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Certificates: the fleet CA, the server, devices, read-only subscribers.
    Certs {
        #[command(subcommand)]
        cmd: CertsCmd,
    },
    /// API tokens (written to the server's data directory).
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// List devices from a running server.
    Devices {
        #[arg(long, env = "FLEET_URL", default_value = "http://127.0.0.1:8080")]
        server: String,
        #[arg(long, env = "FLEET_TOKEN")]
        token: String,
    },
}

#[derive(Subcommand)]
enum CertsCmd {
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
enum TokenCmd {
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "viewer")]
        role: Role,
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
    },
    List {
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    common::tls::install_crypto_provider();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleetctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Certs { cmd } => certs(cmd),
        Cmd::Token { cmd } => token(cmd),
        Cmd::Devices { server, token } => devices(&server, &token),
    }
}

fn certs(cmd: CertsCmd) -> anyhow::Result<()> {
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

fn token(cmd: TokenCmd) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Create { name, role, data_dir } => {
            let store = TokenStore::open(&data_dir.join("tokens.json"))?;
            let t = store.create(&name, role)?;
            println!("{t}");
            eprintln!("token {name:?} ({role:?}) created; it is shown only now");
        }
        TokenCmd::List { data_dir } => {
            let store = TokenStore::open(&data_dir.join("tokens.json"))?;
            for e in store.list() {
                println!("{}\t{:?}", e.name, e.role);
            }
        }
    }
    Ok(())
}

fn devices(server: &str, token: &str) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let url = format!("{}/api/v1/devices", server.trim_end_matches('/'));
        let v = http_get_json(&url, token).await?;
        let list = v["devices"].as_array().cloned().unwrap_or_default();
        println!(
            "{:<16} {:<9} {:<10} {:>6} {:>6} {:>6}",
            "DEVICE", "STATUS", "SITE", "CPU%", "MEM%", "GPU%"
        );
        for d in list {
            let m = &d["metrics"];
            let f = |k: &str| {
                m[k].as_f64()
                    .map(|v| format!("{v:.1}"))
                    .unwrap_or_else(|| "-".into())
            };
            println!(
                "{:<16} {:<9} {:<10} {:>6} {:>6} {:>6}",
                d["id"].as_str().unwrap_or("?"),
                d["status"].as_str().unwrap_or("?"),
                d["site"].as_str().unwrap_or("-"),
                f("cpu.usage_pct"),
                f("memory.used_pct"),
                f("gpu.load_pct")
            );
        }
        anyhow::Ok(())
    })
}

/// Minimal HTTP/1.1 GET over plain TCP (the API is on loopback or behind a TLS proxy).
async fn http_get_json(url: &str, token: &str) -> anyhow::Result<serde_json::Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("--server must start with http:// (got {url})"))?;
    let (hostport, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut s = tokio::net::TcpStream::connect(hostport).await?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {hostport}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("malformed HTTP response"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("?");
    anyhow::ensure!(status == "200", "server answered {status}: {body}");
    Ok(serde_json::from_str(body)?)
}
