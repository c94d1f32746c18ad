//! fleet-server command line: `run` and `check-config` (the demo is `rvm-sim demo`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fleet_server::config::ServerFile;
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
