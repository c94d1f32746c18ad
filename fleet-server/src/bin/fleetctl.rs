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
}
