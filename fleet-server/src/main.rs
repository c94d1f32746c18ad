//! fleet-server command line: `run` and `demo`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use fleet_server::config::ServerFile;
use fleet_server::demo::{self, DemoOptions};
use fleet_server::server::Server;

#[derive(Parser)]
#[command(name = "fleet-server", version, about = "RVM Fleet server")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server from a config file.
    Run {
        #[arg(long, default_value = "config/fleet-server.toml")]
        config: PathBuf,
    },
    /// Validate a config file and name every bad key.
    CheckConfig {
        #[arg(long, default_value = "config/fleet-server.toml")]
        config: PathBuf,
    },
    /// Everything on this machine: broker, server, web view, a local agent, simulated RVMs.
    Demo {
        #[arg(long, default_value = "demo-data")]
        data_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:8883")]
        mqtt: SocketAddr,
        #[arg(long, default_value_t = 20)]
        devices: usize,
        #[arg(long, default_value_t = 3)]
        sites: usize,
        /// Collection interval of the simulated machines, ms.
        #[arg(long, default_value_t = 1000)]
        interval: u64,
        /// Do not run an agent for this machine.
        #[arg(long)]
        no_local_agent: bool,
        /// The story the simulated machines replay (default: scenarios/demo.toml, built in).
        #[arg(long, conflicts_with = "no_scenario")]
        scenario: Option<PathBuf>,
        /// Simulated machines without faults.
        #[arg(long)]
        no_scenario: bool,
    },
}

fn main() -> ExitCode {
    // before any thread starts: see the function
    let arenas = fleet_server::alloc::limit_arenas();
    let filter = tracing_subscriber::EnvFilter::try_from_env("RVM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rmqtt=warn,rmqtt_net=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    common::tls::install_crypto_provider();
    tracing::debug!(
        ?arenas,
        "malloc arenas capped (None: MALLOC_ARENA_MAX from the environment)"
    );
    let res = match Cli::parse().cmd {
        Cmd::Run { config } => match run(config) {
            // a child went past its restart intensity: systemd restarts the process
            Ok(Some(code)) => return ExitCode::from(u8::try_from(code).unwrap_or(1)),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        },
        Cmd::CheckConfig { config } => ServerFile::load(&config)
            .map(|_| println!("{}: ok", config.display()))
            .map_err(anyhow::Error::from),
        Cmd::Demo {
            data_dir,
            http,
            mqtt,
            devices,
            sites,
            interval,
            no_local_agent,
            scenario,
            no_scenario,
        } => demo_scenario(scenario, no_scenario).and_then(|scenario| {
            run_demo(DemoOptions {
                data_dir,
                http,
                mqtt,
                devices,
                sites,
                interval: Duration::from_millis(interval.max(10)),
                local_agent: !no_local_agent,
                scenario,
            })
        }),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleet-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs until a signal (None) or until the supervisor gives up (its exit code,
/// [`fleet_server::server::EXIT_RESTART_LIMIT`]).
fn run(config: PathBuf) -> anyhow::Result<Option<i32>> {
    let cfg = ServerFile::load(&config)?;
    let mut server = Server::start(cfg)?;
    eprintln!(
        "fleet server: http://{}/  mqtts://{}",
        server.http_addr, server.mqtt_addr
    );
    let code = wait_for_signal_or_exit(Some(server.watch_exit()));
    server.stop();
    if let Some(code) = code {
        eprintln!("fleet-server: an actor exceeded its restart limit; exiting with {code}");
    }
    Ok(code)
}

fn demo_scenario(
    file: Option<PathBuf>,
    none: bool,
) -> anyhow::Result<Option<rvm_agent::sim::scenario::Scenario>> {
    Ok(match (file, none) {
        (_, true) => None,
        (Some(p), false) => Some(rvm_agent::sim::scenario::Scenario::load(&p)?),
        (None, false) => Some(demo::demo_scenario()?),
    })
}

fn run_demo(opts: DemoOptions) -> anyhow::Result<()> {
    let mut d = demo::start(&opts)?;
    println!();
    println!("RVM Fleet demo is running");
    println!("  web view:    {}#token={}", d.url, d.admin_token);
    println!(
        "  admin token: {} (also in {})",
        d.admin_token,
        opts.data_dir.join("admin.token").display()
    );
    println!("  MQTT (mTLS): {}", d.server.mqtt_addr);
    println!(
        "  machines:    {} simulated across {} sites{}",
        opts.devices,
        opts.sites,
        if opts.local_agent { " + this machine" } else { "" }
    );
    if let Some(s) = &opts.scenario {
        println!("  scenario:    {} (--no-scenario: none)", s.summary());
    }
    println!(
        "  try:         curl -H 'Authorization: Bearer {}' {}api/v1/devices",
        d.admin_token, d.url
    );
    println!("Ctrl-C stops it.");
    wait_for_signal();
    d.stop();
    Ok(())
}

fn wait_for_signal() {
    wait_for_signal_or_exit(None);
}

/// Waits for SIGINT or SIGTERM (None), or for `exit` to carry an exit code.
fn wait_for_signal_or_exit(exit: Option<tokio::sync::watch::Receiver<Option<i32>>>) -> Option<i32> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let gave_up = async {
            match exit {
                Some(mut rx) => rx.wait_for(Option::is_some).await.ok().and_then(|c| *c),
                None => std::future::pending().await,
            }
        };
        let signalled = async {
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        tokio::select! {
            code = gave_up => code,
            () = signalled => None,
        }
    })
}
