//! fleetctl: the operator's command line.
//!
//! - this file: the command line (clap) and what each command runs
//! - [`mod@certs`]: certificates, bundles and API tokens
//! - [`command`]: remote commands and rollouts
//! - [`api`]: the server's API (devices, acknowledgements, silences) and its HTTP client
//! - [`alerts`]: the alert list with its filters, resolve by hand
//! - [`output`]: `--output table|json` and the table printer
//! - [`remote`]: the rest of the API (devices, one device, history, incidents, audit, whoami,
//!   tokens, report, export through the API)
//! - [`notify`]: notification channels, test messages, the outbox, maintenance windows
//! - [`estate`]: retailers and stores: `estate import stores.csv`, `export`, `unknown-sites`
//! - [`store`]: the server's store itself (devices and export with `--config`, `store migrate`)

mod alerts;
mod api;
mod certs;
mod command;
mod estate;
mod notify;
mod output;
mod remote;
mod store;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::api::{ack, block_on, silence};
use crate::certs::{CertsCmd, TokenCmd, certs, token};
use crate::command::{CmdCmd, cmd};
use crate::estate::{EstateCmd, estate};
use crate::notify::{MaintenanceCmd, NotifyCmd, maintenance, notify};
use crate::store::{ExportArgs, StoreArgs, StoreCmd};

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
    /// API tokens (in the server's store: --config fleet-server.toml, or --data-dir).
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// List devices: from a running server (--server, --token), or from its store (--config).
    Devices {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        output: output::OutputArg,
        #[command(flatten)]
        remote: Remote,
    },
    /// Metric history as CSV or JSON: from a running server's API, or read from its store
    /// (--config or --data-dir).
    Export {
        #[command(flatten)]
        args: ExportArgs,
        #[command(flatten)]
        remote: Remote,
    },
    /// The store itself: `store migrate --from DATA_DIR --to URL` copies a sled store into
    /// PostgreSQL.
    Store {
        #[command(subcommand)]
        cmd: StoreCmd,
    },
    /// List alerts (default: the active ones), filtered by time, severity, site, rule, device.
    Alerts {
        #[command(flatten)]
        filter: alerts::AlertFilter,
        #[command(flatten)]
        output: output::OutputArg,
        #[command(flatten)]
        remote: Remote,
    },
    /// One device: status, versions, latest metrics.
    Device {
        id: String,
        #[command(flatten)]
        output: output::OutputArg,
        #[command(flatten)]
        remote: Remote,
    },
    /// A device's metric history (raw points or 1-minute min/max/avg).
    History {
        id: String,
        /// The metric, e.g. cpu.usage_pct.
        #[arg(long)]
        metric: String,
        /// RFC 3339 or ms since the epoch (default: an hour before --to).
        #[arg(long)]
        from: Option<String>,
        /// RFC 3339 or ms since the epoch (default: now).
        #[arg(long)]
        to: Option<String>,
        /// 1s, 1m, 5m... (default: the server's choice for the range).
        #[arg(long)]
        step: Option<String>,
        #[command(flatten)]
        output: output::OutputArg,
        #[command(flatten)]
        remote: Remote,
    },
    /// A rollout's state and progress (start one with `cmd rollout`).
    Rollout {
        id: String,
        #[command(flatten)]
        output: output::OutputArg,
        #[command(flatten)]
        remote: Remote,
    },
    /// Incidents: open, then recent, with their probable cause.
    Incidents {
        #[command(flatten)]
        output: output::OutputArg,
        #[command(flatten)]
        remote: Remote,
    },
    /// The audit log's newest entries (needs an operator token).
    Audit {
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        output: output::OutputArg,
        #[command(flatten)]
        remote: Remote,
    },
    /// The token's name and role.
    Whoami {
        #[command(flatten)]
        output: output::OutputArg,
        #[command(flatten)]
        remote: Remote,
    },
    /// API tokens through the server's API (admin): list, create.
    Tokens {
        #[command(subcommand)]
        cmd: remote::TokensCmd,
    },
    /// The HTML fleet report of a range (default: the last 24 hours).
    Report {
        /// RFC 3339 or ms since the epoch.
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Resolve a firing alert by hand (needs an operator token and a comment saying why).
    Resolve {
        id: String,
        #[arg(long)]
        comment: String,
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
        /// How --list prints.
        #[command(flatten)]
        output: output::OutputArg,
        #[command(flatten)]
        remote: Remote,
    },
    /// Notification channels: list them with their errors, send a test message, the outbox.
    Notify {
        #[command(subcommand)]
        cmd: NotifyCmd,
    },
    /// Maintenance windows: notifications about the machines they cover are muted while open.
    Maintenance {
        #[command(subcommand)]
        cmd: MaintenanceCmd,
    },
    /// Retailers and stores: import or export the stores CSV, list unknown sites.
    Estate {
        #[command(subcommand)]
        cmd: EstateCmd,
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
    token: Option<String>,
}

/// A command-line value that does not parse; each variant carries the value as given.
#[derive(Debug, thiserror::Error)]
enum ArgError {
    #[error("{0:?} is not label=value")]
    NotMatcher(String),
    #[error("{0:?} is not a duration like 30m, 2h or 1d")]
    NotDuration(String),
    #[error("{0:?} needs a unit: s, m, h or d")]
    NoUnit(String),
    #[error("{value:?}: unknown unit {unit:?} (s, m, h or d)")]
    UnknownUnit { value: String, unit: String },
    #[error("{0:?} is not a usable duration")]
    UnusableDuration(String),
}

fn parse_matcher(s: &str) -> Result<(String, String), ArgError> {
    match s.split_once('=') {
        Some((l, v)) if !l.trim().is_empty() && !v.trim().is_empty() => {
            Ok((l.trim().to_string(), v.trim().to_string()))
        }
        _ => Err(ArgError::NotMatcher(s.into())),
    }
}

/// A duration with a unit (`90s`, `30m`, `2h`, `1d`), in seconds.
fn parse_for(s: &str) -> Result<u64, ArgError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| ArgError::NotDuration(s.into()))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "" => return Err(ArgError::NoUnit(s.into())),
        _ => {
            return Err(ArgError::UnknownUnit {
                value: s.into(),
                unit: unit.into(),
            });
        }
    };
    n.checked_mul(mult)
        .filter(|v| *v > 0)
        .ok_or_else(|| ArgError::UnusableDuration(s.into()))
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
        Cmd::Command { cmd: c } => cmd(c),
        Cmd::Certs { cmd } => certs(cmd),
        Cmd::Token { cmd } => token(cmd),
        Cmd::Devices {
            store,
            output,
            remote,
        } => match (&store.config, &store.data_dir) {
            (None, None) => remote::devices(&remote, &output),
            _ => store::devices(&store),
        },
        Cmd::Export { args, remote } => match (&args.store.config, &args.store.data_dir) {
            (None, None) => remote::export(&remote, &args),
            _ => store::export(&args),
        },
        Cmd::Device { id, output, remote } => remote::device(&remote, &id, &output),
        Cmd::History {
            id,
            metric,
            from,
            to,
            step,
            output,
            remote,
        } => remote::history(
            &remote,
            &remote::HistoryArgs {
                id: &id,
                metric: &metric,
                from: from.as_deref(),
                to: to.as_deref(),
                step: step.as_deref(),
            },
            &output,
        ),
        Cmd::Rollout { id, output, remote } => remote::rollout(&remote, &id, &output),
        Cmd::Incidents { output, remote } => remote::incidents(&remote, &output),
        Cmd::Audit {
            limit,
            output,
            remote,
        } => remote::audit(&remote, limit, &output),
        Cmd::Whoami { output, remote } => remote::whoami(&remote, &output),
        Cmd::Tokens { cmd } => remote::tokens(cmd),
        Cmd::Report {
            from,
            to,
            out,
            remote,
        } => remote::report(&remote, from.as_deref(), to.as_deref(), out.as_ref()),
        Cmd::Store { cmd } => store::store(cmd),
        Cmd::Alerts {
            filter,
            output,
            remote,
        } => alerts::list(&remote, &filter, &output),
        Cmd::Resolve { id, comment, remote } => alerts::resolve(&remote, &id, &comment),
        Cmd::Ack { id, comment, remote } => ack(&remote, &id, &comment),
        Cmd::Silence {
            matchers,
            duration_s,
            comment,
            list,
            remove,
            output,
            remote,
        } => silence(&remote, matchers, duration_s, &comment, list, remove, &output),
        Cmd::Notify { cmd } => notify(cmd),
        Cmd::Maintenance { cmd } => maintenance(cmd),
        Cmd::Estate { cmd } => estate(cmd),
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
        .await?;
        anyhow::Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::action_json;

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
        assert!(parse_for("90").unwrap_err().to_string().contains("unit"));
        assert!(parse_for("5w").is_err());
        assert!(parse_matcher("site").is_err());
        assert!(
            Cli::try_parse_from(["fleetctl", "silence", "--list", "--for", "1h", "--token", "t"]).is_err()
        );
    }
    #[test]
    fn notify_test_and_maintenance_add_arguments_parse() {
        let cli = Cli::try_parse_from([
            "fleetctl",
            "notify",
            "test",
            "pager",
            "--resolved",
            "--token",
            "t",
        ])
        .unwrap();
        let Cmd::Notify {
            cmd: NotifyCmd::Test {
                channel, resolved, ..
            },
        } = cli.cmd
        else {
            panic!("notify test")
        };
        assert_eq!((channel.as_str(), resolved), ("pager", true));
        let cli = Cli::try_parse_from([
            "fleetctl",
            "maintenance",
            "add",
            "oslo-sundays",
            "--site",
            "oslo",
            "--time-zone",
            "Europe/Oslo",
            "--day",
            "sun",
            "--token",
            "t",
        ])
        .unwrap();
        let Cmd::Maintenance {
            cmd:
                MaintenanceCmd::Add {
                    sites,
                    days,
                    from,
                    to,
                    ..
                },
        } = cli.cmd
        else {
            panic!("maintenance add")
        };
        assert_eq!((sites, days), (vec!["oslo".to_string()], vec!["sun".to_string()]));
        assert_eq!((from.as_str(), to.as_str()), ("00:00", "24:00"));
        assert!(Cli::try_parse_from(["fleetctl", "notify", "test", "--token", "t"]).is_err());
    }

    #[test]
    fn a_test_outcome_reads_as_the_receivers_answer_or_the_error() {
        let ok = serde_json::json!({
            "channel": "pager", "delivered": true, "took_ms": 12,
            "receipt": {"kind": "http", "answers": [{"status": 202, "body": "{\"status\":\"success\"}\n"}]},
        });
        assert_eq!(
            notify::describe_test(&ok),
            "delivered to pager in 12 ms: HTTP 202 {\"status\":\"success\"}"
        );
        let bad = serde_json::json!({
            "channel": "mail", "delivered": false, "took_ms": 40,
            "error": {"kind": "auth", "message": "SMTP 127.0.0.1:25: authentication failed: 535"},
        });
        assert_eq!(
            notify::describe_test(&bad),
            "not delivered to mail (40 ms): auth: SMTP 127.0.0.1:25: authentication failed: 535"
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
