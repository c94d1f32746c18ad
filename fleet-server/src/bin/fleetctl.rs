//! fleetctl: the operator's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
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
        #[command(flatten)]
        remote: Remote,
    },
    /// List alerts (default: the active ones).
    Alerts {
        /// firing, pending, resolved, acknowledged or all.
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Remote recovery commands: send one, follow it, list a machine's, roll out to many.
    #[command(name = "cmd")]
    Command {
        #[command(subcommand)]
        cmd: CmdCmd,
    },
    /// Acknowledge an alert (needs an operator token; you are the token's name).
    Ack {
        id: String,
        #[arg(long, default_value = "")]
        comment: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Silence notifications of matching alerts, list silences, or remove one.
    Silence {
        /// `label=value` that alerts must have (repeat: all must match), e.g. `site=oslo`.
        #[arg(long = "match", value_name = "LABEL=VALUE", value_parser = parse_matcher)]
        matchers: Vec<(String, String)>,
        /// How long: `30m`, `2h`, `1d`.
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_for)]
        duration_s: Option<u64>,
        #[arg(long, default_value = "")]
        comment: String,
        /// List the active silences instead.
        #[arg(long, conflicts_with_all = ["matchers", "duration_s", "remove"])]
        list: bool,
        /// Remove the silence with this id instead.
        #[arg(long, value_name = "ID", conflicts_with_all = ["matchers", "duration_s"])]
        remove: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Write `mosquitto.conf` and `acl` for Mosquitto (Debian `mosquitto`) as the fleet's
    /// broker; rerun after issuing a reader certificate (see config/mosquitto/README.md).
    BrokerConfig {
        /// Directory to write `mosquitto.conf` and `acl` into.
        #[arg(long)]
        out: PathBuf,
        /// Certificate directory; reader certificates are listed from its `clients/`.
        #[arg(long, default_value = "certs")]
        certs: PathBuf,
        /// Listener for devices and readers.
        #[arg(long, default_value = fleet_server::broker::mosquitto::DEFAULT_LISTEN)]
        listen: std::net::SocketAddr,
        /// Listener for the fleet server's own sessions; keep it out of the devices' reach.
        #[arg(long, default_value = fleet_server::broker::mosquitto::DEFAULT_SERVER_LISTEN)]
        server_listen: std::net::SocketAddr,
        /// Where Mosquitto reads ca.pem, server.pem and server.key on the broker host
        /// (default: --certs).
        #[arg(long)]
        broker_certs: Option<PathBuf>,
        /// Where the acl file will be on the broker host (default: --out).
        #[arg(long)]
        conf_dir: Option<PathBuf>,
        #[arg(long, default_value = fleet_server::broker::mosquitto::DEFAULT_PERSISTENCE_DIR)]
        persistence_dir: PathBuf,
        /// Account Mosquitto switches to when started as root (default: Mosquitto's, `mosquitto`).
        #[arg(long)]
        run_as: Option<String>,
    },
    /// Subscribe to the broker and print one JSON line per message (`rvm/v1/...` records
    /// decoded; `fleet/v1/...` as they are).
    Sub {
        /// Topic filter, e.g. `fleet/v1/#` or `rvm/v1/rvm0001/telemetry`.
        filter: String,
        /// Certificate directory of --name.
        #[arg(long, default_value = "certs")]
        certs: PathBuf,
        /// Whose certificate from --certs: `fleet-server`, `reader-NAME` or a device id.
        #[arg(long, required_unless_present = "cert", conflicts_with = "cert")]
        name: Option<String>,
        /// Client certificate (PEM), instead of --name; needs --key, --ca and --cn.
        #[arg(long, requires_all = ["key", "ca", "cn"])]
        cert: Option<PathBuf>,
        #[arg(long)]
        key: Option<PathBuf>,
        /// The fleet CA (PEM).
        #[arg(long)]
        ca: Option<PathBuf>,
        /// The certificate's CN (the client id starts with it).
        #[arg(long)]
        cn: Option<String>,
        #[arg(long, env = "FLEET_BROKER", default_value = "127.0.0.1:8883")]
        broker: String,
        /// Stop after N messages.
        #[arg(long)]
        count: Option<u64>,
        /// Print each payload alone instead of {topic, retain, payload}.
        #[arg(long)]
        payload_only: bool,
    },
}

/// Where the server is and who we are.
#[derive(Args, Clone)]
struct Remote {
    #[arg(long, env = "FLEET_URL", default_value = "http://127.0.0.1:8080")]
    server: String,
    #[arg(long, env = "FLEET_TOKEN")]
    token: String,
}

fn parse_matcher(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((l, v)) if !l.trim().is_empty() && !v.trim().is_empty() => {
            Ok((l.trim().to_string(), v.trim().to_string()))
        }
        _ => Err(format!("{s:?} is not label=value")),
    }
}

/// A duration with a unit (`90s`, `30m`, `2h`, `1d`), in seconds.
fn parse_for(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30m, 2h or 1d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "" => return Err(format!("{s:?} needs a unit: s, m, h or d")),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (s, m, h or d)")),
    };
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("{s:?} is not a usable duration"))
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
enum TokenCmd {
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "viewer")]
        role: Role,
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// The token is refused after this long (`90s`, `30m`, `12h`, `30d`); default: never.
        #[arg(long, value_name = "DURATION", value_parser = parse_for)]
        ttl: Option<u64>,
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

#[derive(clap::Subcommand)]
enum CmdCmd {
    /// Send an action to one machine and wait for its result (--no-wait to return at once).
    Send {
        device: String,
        /// restart_unit, restart_process, drop_caches, clean_temp, restart_network, reboot,
        /// collect_diagnostics
        action: String,
        /// The unit, process or interface the action is for.
        #[arg(long)]
        target: Option<String>,
        #[arg(long, default_value_t = 300)]
        ttl_s: u64,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show one command.
    Get {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// A machine's commands, newest first.
    List {
        device: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// One action across a site, a tag or the whole fleet, at a rate, stopping when too many fail.
    Rollout {
        action: String,
        #[arg(long)]
        target: Option<String>,
        /// `all`, `site=NAME` or `tag=NAME`.
        #[arg(long = "to", default_value = "all")]
        to: String,
        #[arg(long, default_value_t = 10)]
        per_minute: u32,
        #[arg(long, default_value_t = 20.0)]
        abort_failed_pct: f64,
        #[arg(long, default_value_t = 600)]
        ttl_s: u64,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        remote: Remote,
    },
}

/// The JSON form of an action from its name and target.
fn action_json(name: &str, target: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let need = |what: &str| {
        target
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("{name} needs --target {what}"))
    };
    Ok(match name {
        "restart_unit" => serde_json::json!({ "restart_unit": { "unit": need("UNIT")? } }),
        "restart_process" => serde_json::json!({ "restart_process": { "name": need("PROCESS")? } }),
        "restart_network" => serde_json::json!({ "restart_network": { "interface": need("INTERFACE")? } }),
        "drop_caches" | "clean_temp" | "reboot" | "collect_diagnostics" => serde_json::json!(name),
        _ => anyhow::bail!(
            "unknown action {name:?} (restart_unit, restart_process, drop_caches, clean_temp, restart_network, reboot, collect_diagnostics)"
        ),
    })
}

fn print_command(c: &serde_json::Value) {
    println!(
        "{}  {}  {}  {}{}",
        c["id"].as_str().unwrap_or("?"),
        c["device"].as_str().unwrap_or("?"),
        c["state"].as_str().unwrap_or("?"),
        c["action"],
        c["detail"]
            .as_str()
            .map(|d| format!("  ({d})"))
            .unwrap_or_default()
    );
    if let Some(o) = c["output"].as_str().filter(|o| !o.is_empty()) {
        println!("{o}");
    }
}

fn cmd(cmd: CmdCmd) -> anyhow::Result<()> {
    block_on(async move {
        match cmd {
            CmdCmd::Send {
                device,
                action,
                target,
                ttl_s,
                reason,
                no_wait,
                remote,
            } => {
                let body = serde_json::json!({ "action": action_json(&action, target.as_deref())?, "ttl_s": ttl_s, "reason": reason });
                let c = api(
                    &remote,
                    reqwest::Method::POST,
                    &format!("/api/v1/devices/{device}/commands"),
                    Some(body),
                )
                .await?;
                let id = c["id"].as_str().unwrap_or_default().to_string();
                if no_wait {
                    print_command(&c);
                    return anyhow::Ok(());
                }
                eprintln!("sent {id}; waiting for the result (ttl {ttl_s} s)");
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(ttl_s + 90);
                loop {
                    let c = api(
                        &remote,
                        reqwest::Method::GET,
                        &format!("/api/v1/commands/{id}"),
                        None,
                    )
                    .await?;
                    let st = c["state"].as_str().unwrap_or("");
                    if ["succeeded", "failed", "rejected", "expired", "timed_out"].contains(&st) {
                        print_command(&c);
                        anyhow::ensure!(st == "succeeded", "command {id} ended {st}");
                        return anyhow::Ok(());
                    }
                    anyhow::ensure!(std::time::Instant::now() < deadline, "command {id} still {st}");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
            CmdCmd::Get { id, remote } => {
                print_command(
                    &api(
                        &remote,
                        reqwest::Method::GET,
                        &format!("/api/v1/commands/{id}"),
                        None,
                    )
                    .await?,
                );
            }
            CmdCmd::List { device, remote } => {
                let v = api(
                    &remote,
                    reqwest::Method::GET,
                    &format!("/api/v1/devices/{device}/commands"),
                    None,
                )
                .await?;
                for c in v["commands"].as_array().cloned().unwrap_or_default() {
                    print_command(&c);
                }
            }
            CmdCmd::Rollout {
                action,
                target,
                to,
                per_minute,
                abort_failed_pct,
                ttl_s,
                reason,
                remote,
            } => {
                let target_json = match to.split_once('=') {
                    None if to == "all" => serde_json::json!("all"),
                    Some(("site", v)) => serde_json::json!({ "site": v }),
                    Some(("tag", v)) => serde_json::json!({ "tag": v }),
                    _ => anyhow::bail!("--to {to:?}: all, site=NAME or tag=NAME"),
                };
                let body = serde_json::json!({
                    "action": action_json(&action, target.as_deref())?, "target": target_json,
                    "per_minute": per_minute, "abort_failed_pct": abort_failed_pct, "ttl_s": ttl_s, "reason": reason,
                });
                let r = api(&remote, reqwest::Method::POST, "/api/v1/rollouts", Some(body)).await?;
                println!(
                    "rollout {} started; follow with GET /api/v1/rollouts/{}",
                    r["id"].as_str().unwrap_or("?"),
                    r["id"].as_str().unwrap_or("?")
                );
            }
        }
        anyhow::Ok(())
    })
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Command { cmd: c } => cmd(c),
        Cmd::Certs { cmd } => certs(cmd),
        Cmd::Token { cmd } => token(cmd),
        Cmd::Devices { remote } => devices(&remote),
        Cmd::Alerts { state, remote } => alerts(&remote, state.as_deref()),
        Cmd::Ack { id, comment, remote } => ack(&remote, &id, &comment),
        Cmd::Silence {
            matchers,
            duration_s,
            comment,
            list,
            remove,
            remote,
        } => silence(&remote, matchers, duration_s, &comment, list, remove),
        Cmd::BrokerConfig {
            out,
            certs,
            listen,
            server_listen,
            broker_certs,
            conf_dir,
            persistence_dir,
            run_as,
        } => broker_config(fleet_server::broker::mosquitto::BrokerConfigRequest {
            out,
            certs,
            listen,
            server_listen,
            broker_certs,
            conf_dir,
            persistence_dir,
            run_as,
        }),
        Cmd::Sub {
            filter,
            certs,
            name,
            cert,
            key,
            ca,
            cn,
            broker,
            count,
            payload_only,
        } => {
            let who = match (name, cert, key, ca, cn) {
                (Some(name), ..) => fleet_server::sub::Who::Named { certs, name },
                (None, Some(cert), Some(key), Some(ca), Some(cn)) => fleet_server::sub::Who::Files {
                    identity: common::tls::ClientIdentity { ca, cert, key },
                    cn,
                },
                _ => anyhow::bail!("pass --name, or --cert with --key, --ca and --cn"),
            };
            sub(fleet_server::sub::SubOptions {
                filter,
                who,
                broker,
                count,
                payload_only,
            })
        }
    }
}

fn broker_config(req: fleet_server::broker::mosquitto::BrokerConfigRequest) -> anyhow::Result<()> {
    let w = fleet_server::broker::mosquitto::write_config(&req)?;
    println!("wrote {}\nwrote {}", w.conf.display(), w.acl.display());
    match w.readers.is_empty() {
        true => println!("readers: none (issue one with `fleetctl certs client NAME --read-only`)"),
        false => println!("readers: {}", w.readers.join(", ")),
    }
    println!(
        "after issuing another reader certificate run this again and reload Mosquitto \
         (`systemctl reload mosquitto`)\n\
         the fleet server connects to the server listener: [mqtt] embedded = false, \
         connect = \"{}\"",
        w.setup.server_listen
    );
    Ok(())
}

fn sub(opts: fleet_server::sub::SubOptions) -> anyhow::Result<()> {
    use std::io::Write as _;
    block_on(async move {
        let stdout = std::io::stdout();
        fleet_server::sub::run(&opts, |line| {
            let mut o = stdout.lock();
            // a closed pipe (`| head`) ends the output; the next write fails the same way
            let _ = writeln!(o, "{line}").and_then(|_| o.flush());
        })
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
        anyhow::Ok(())
    })
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

fn token(cmd: TokenCmd) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Create {
            name,
            role,
            data_dir,
            ttl,
        } => {
            let store = TokenStore::open(&data_dir.join("tokens.json"))?;
            let expires_ms = ttl
                .map(|s| {
                    i64::try_from(s)
                        .ok()
                        .and_then(|s| s.checked_mul(1000))
                        .and_then(|ms| common::time::now_ms().checked_add(ms))
                        .ok_or_else(|| anyhow::anyhow!("--ttl {s} s is too long"))
                })
                .transpose()?;
            let t = store.create_with_expiry(&name, role, expires_ms)?;
            println!("{t}");
            match expires_ms {
                Some(x) => eprintln!(
                    "token {name:?} ({role:?}) created, valid until {x} (ms since the epoch); it is shown only now"
                ),
                None => eprintln!("token {name:?} ({role:?}) created; it is shown only now"),
            }
        }
        TokenCmd::List { data_dir } => {
            let store = TokenStore::open(&data_dir.join("tokens.json"))?;
            for e in store.list() {
                match e.expires_ms {
                    Some(x) => println!("{}\t{:?}\texpires_ms={x}", e.name, e.role),
                    None => println!("{}\t{:?}", e.name, e.role),
                }
            }
        }
    }
    Ok(())
}

fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

fn devices(remote: &Remote) -> anyhow::Result<()> {
    block_on(async {
        let v = api(remote, reqwest::Method::GET, "/api/v1/devices", None).await?;
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

fn alerts(remote: &Remote, state: Option<&str>) -> anyhow::Result<()> {
    block_on(async {
        let path = match state {
            Some(s) => format!("/api/v1/alerts?state={s}"),
            None => "/api/v1/alerts".to_string(),
        };
        let v = api(remote, reqwest::Method::GET, &path, None).await?;
        let list = v["alerts"].as_array().cloned().unwrap_or_default();
        println!(
            "{:<40} {:<9} {:<9} {:<16} {:<10} SUMMARY",
            "ID", "STATE", "SEVERITY", "DEVICE", "ACK"
        );
        for a in &list {
            let mut state = a["state"].as_str().unwrap_or("?").to_string();
            if a["silenced_by"].is_string() {
                state.push('*');
            }
            println!(
                "{:<40} {:<9} {:<9} {:<16} {:<10} {}",
                a["id"].as_str().unwrap_or("?"),
                state,
                a["severity"].as_str().unwrap_or("?"),
                a["device"].as_str().unwrap_or("?"),
                a["ack"]["by"].as_str().unwrap_or("-"),
                a["summary"].as_str().unwrap_or("")
            );
        }
        eprintln!(
            "{} alert(s) ({}; * = silenced)",
            list.len(),
            v["state"].as_str().unwrap_or("?")
        );
        anyhow::Ok(())
    })
}

fn ack(remote: &Remote, id: &str, comment: &str) -> anyhow::Result<()> {
    block_on(async {
        let path = format!("/api/v1/alerts/{id}/ack");
        let body = serde_json::json!({ "comment": comment });
        let a = api(remote, reqwest::Method::POST, &path, Some(body)).await?;
        println!(
            "acknowledged {} by {}",
            a["id"].as_str().unwrap_or(id),
            a["ack"]["by"].as_str().unwrap_or("?")
        );
        anyhow::Ok(())
    })
}

fn silence(
    remote: &Remote,
    matchers: Vec<(String, String)>,
    duration_s: Option<u64>,
    comment: &str,
    list: bool,
    remove: Option<String>,
) -> anyhow::Result<()> {
    block_on(async {
        if list {
            let v = api(remote, reqwest::Method::GET, "/api/v1/silences", None).await?;
            println!(
                "{:<12} {:<14} {:<12} {:<32} COMMENT",
                "ID", "EXPIRES_MS", "BY", "MATCH"
            );
            for s in v["silences"].as_array().cloned().unwrap_or_default() {
                let m: Vec<String> = s["matchers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|m| {
                        format!(
                            "{}={}",
                            m["label"].as_str().unwrap_or("?"),
                            m["value"].as_str().unwrap_or("?")
                        )
                    })
                    .collect();
                println!(
                    "{:<12} {:<14} {:<12} {:<32} {}",
                    s["id"].as_str().unwrap_or("?"),
                    s["expires_ms"].as_i64().unwrap_or(0),
                    s["created_by"].as_str().unwrap_or("?"),
                    m.join(","),
                    s["comment"].as_str().unwrap_or("")
                );
            }
            return Ok(());
        }
        if let Some(id) = remove {
            api(
                remote,
                reqwest::Method::DELETE,
                &format!("/api/v1/silences/{id}"),
                None,
            )
            .await?;
            println!("removed silence {id}");
            return Ok(());
        }
        anyhow::ensure!(
            !matchers.is_empty(),
            "--match label=value is required (repeat for more)"
        );
        let duration_s = duration_s.ok_or_else(|| anyhow::anyhow!("--for DURATION is required (e.g. 2h)"))?;
        let body = serde_json::json!({
            "matchers": matchers
                .iter()
                .map(|(l, v)| serde_json::json!({ "label": l, "value": v }))
                .collect::<Vec<_>>(),
            "duration_s": duration_s,
            "comment": comment,
        });
        let s = api(remote, reqwest::Method::POST, "/api/v1/silences", Some(body)).await?;
        println!(
            "silence {} until {} ms",
            s["id"].as_str().unwrap_or("?"),
            s["expires_ms"].as_i64().unwrap_or(0)
        );
        anyhow::Ok(())
    })
}

/// One API call; an error status becomes an error with the server's message.
async fn api(
    remote: &Remote,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let base = remote.server.trim_end_matches('/');
    anyhow::ensure!(
        base.starts_with("http://"),
        "--server must start with http:// (got {base}; put a TLS proxy in front for https)"
    );
    let url = format!("{base}{path}");
    let mut req = reqwest::Client::new()
        .request(method.clone(), &url)
        .bearer_auth(&remote.token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{method} {url}: {e}"))?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        let msg = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or(text);
        anyhow::bail!("{method} {path}: the server answered {status}: {msg}");
    }
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    Ok(serde_json::from_str(&text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_create_takes_a_ttl_with_a_unit() {
        let cli =
            Cli::try_parse_from(["fleetctl", "token", "create", "--name", "ci", "--ttl", "30d"]).unwrap();
        let Cmd::Token {
            cmd: TokenCmd::Create { ttl, .. },
        } = cli.cmd
        else {
            panic!("token create");
        };
        assert_eq!(ttl, Some(30 * 86_400));
        assert!(Cli::try_parse_from(["fleetctl", "token", "create", "--name", "ci", "--ttl", "30"]).is_err());
    }

    #[test]
    fn cmd_send_builds_the_action_and_names_a_missing_target() {
        assert_eq!(
            action_json("restart_unit", Some("vision.service")).unwrap(),
            serde_json::json!({"restart_unit": {"unit": "vision.service"}})
        );
        assert_eq!(action_json("reboot", None).unwrap(), serde_json::json!("reboot"));
        assert!(
            action_json("restart_unit", None)
                .unwrap_err()
                .to_string()
                .contains("--target")
        );
        assert!(
            action_json("format_disk", None)
                .unwrap_err()
                .to_string()
                .contains("unknown action")
        );
        let cli = Cli::try_parse_from([
            "fleetctl",
            "cmd",
            "send",
            "rvm1",
            "drop_caches",
            "--reason",
            "x",
            "--token",
            "t",
        ]);
        assert!(cli.is_ok());
    }

    #[test]
    fn silence_arguments_parse_matchers_and_durations() {
        let cli = Cli::try_parse_from([
            "fleetctl",
            "silence",
            "--match",
            "site=oslo",
            "--match",
            "rule=device_offline",
            "--for",
            "2h",
            "--token",
            "t",
        ])
        .unwrap();
        let Cmd::Silence {
            matchers, duration_s, ..
        } = cli.cmd
        else {
            panic!("not silence")
        };
        assert_eq!(
            matchers,
            vec![
                ("site".into(), "oslo".into()),
                ("rule".into(), "device_offline".into())
            ]
        );
        assert_eq!(duration_s, Some(7200));
        assert!(parse_for("90").unwrap_err().contains("unit"));
        assert!(parse_for("5w").is_err());
        assert!(parse_matcher("site").is_err());
        assert!(
            Cli::try_parse_from(["fleetctl", "silence", "--list", "--for", "1h", "--token", "t"]).is_err()
        );
    }
    #[test]
    fn sub_and_broker_config_arguments_parse() {
        let cli = Cli::try_parse_from([
            "fleetctl",
            "sub",
            "fleet/v1/#",
            "--name",
            "reader-graf",
            "--count",
            "2",
        ])
        .unwrap();
        let Cmd::Sub {
            filter,
            name,
            count,
            broker,
            ..
        } = cli.cmd
        else {
            panic!("sub")
        };
        assert_eq!(
            (filter.as_str(), name.as_deref(), count),
            ("fleet/v1/#", Some("reader-graf"), Some(2))
        );
        assert_eq!(broker, "127.0.0.1:8883");
        // either a name or explicit files, with everything they need
        assert!(Cli::try_parse_from(["fleetctl", "sub", "fleet/v1/#"]).is_err());
        assert!(Cli::try_parse_from(["fleetctl", "sub", "fleet/v1/#", "--cert", "c.pem"]).is_err());
        assert!(
            Cli::try_parse_from([
                "fleetctl", "sub", "#", "--cert", "c.pem", "--key", "k.pem", "--ca", "ca.pem", "--cn", "rvm1"
            ])
            .is_ok()
        );
        let cli = Cli::try_parse_from(["fleetctl", "broker-config", "--out", "/tmp/x"]).unwrap();
        let Cmd::BrokerConfig {
            listen,
            server_listen,
            ..
        } = cli.cmd
        else {
            panic!("broker-config")
        };
        assert_eq!(
            listen.to_string(),
            fleet_server::broker::mosquitto::DEFAULT_LISTEN
        );
        assert_eq!(
            server_listen.to_string(),
            fleet_server::broker::mosquitto::DEFAULT_SERVER_LISTEN
        );
    }
}
