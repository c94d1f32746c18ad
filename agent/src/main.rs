//! rvm-agent command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rvm_agent::collect::MetricSource;
use rvm_agent::config::{AgentFile, split_host_port};

#[derive(Parser)]
#[command(
    name = "rvm-agent",
    version,
    about = "RVM Fleet agent: collects, checks, repairs and forwards"
)]
struct Cli {
    /// Config file (for `run`, the default command).
    #[arg(long, global = true, default_value = "/etc/rvm-agent/agent.toml")]
    config: PathBuf,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the agent (default).
    Run,
    /// Validate the config file and name every bad key.
    CheckConfig,
    /// Print one collection of what the agent sees.
    Collect {
        #[arg(long)]
        once: bool,
        #[arg(long, default_value = "json")]
        format: String,
    },
    /// Run N simulated RVMs against a broker.
    Simulate {
        #[arg(long, default_value_t = 20)]
        devices: usize,
        #[arg(long, default_value_t = 3)]
        sites: usize,
        #[arg(long, default_value = "sim")]
        prefix: String,
        /// host:port of the broker
        #[arg(long)]
        broker: String,
        /// Certificate directory holding the fleet CA (device certificates are issued there).
        #[arg(long)]
        certs: PathBuf,
        #[arg(long, default_value_t = 1000)]
        interval: u64,
        /// Index of the first simulated device.
        #[arg(long, default_value_t = 0)]
        first: usize,
    },
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RVM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    init_tracing();
    common::tls::install_crypto_provider();
    let cli = Cli::parse();
    let result = match cli.cmd.unwrap_or(Cmd::Run) {
        Cmd::CheckConfig => match AgentFile::load(&cli.config) {
            Ok(_) => {
                println!("{}: ok", cli.config.display());
                Ok(())
            }
            Err(e) => Err(anyhow::anyhow!(e)),
        },
        Cmd::Run => run(cli.config),
        Cmd::Collect { once: _, format } => collect(&format),
        Cmd::Simulate {
            devices,
            sites,
            prefix,
            broker,
            certs,
            interval,
            first,
        } => simulate(devices, sites, prefix, broker, certs, interval, first),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rvm-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn collect(format: &str) -> anyhow::Result<()> {
    anyhow::ensure!(format == "json", "--format {format:?}: only json is supported");
    let mut s = rvm_agent::collect::system::SystemSource::new(1000);
    s.collect(common::time::now_ms());
    std::thread::sleep(Duration::from_millis(250));
    let t = s.collect(common::time::now_ms());
    println!("{}", serde_json::to_string_pretty(&t)?);
    Ok(())
}

fn run(config: PathBuf) -> anyhow::Result<()> {
    let file = AgentFile::load(&config)?;
    let sys = actix::System::new();
    sys.block_on(async move {
        let handle = rvm_agent::agent::start(&file)?;
        tracing::info!(device = %handle.device, "agent running");
        wait_for_signal().await;
        tracing::info!("shutting down");
        handle.stop().await;
        let b = handle.buffer.clone();
        tokio::task::spawn_blocking(move || b.flush()).await??;
        anyhow::Ok(())
    })
}

#[allow(clippy::too_many_arguments)]
fn simulate(
    devices: usize,
    sites: usize,
    prefix: String,
    broker: String,
    certs: PathBuf,
    interval: u64,
    first: usize,
) -> anyhow::Result<()> {
    let (host, port) =
        split_host_port(&broker).ok_or_else(|| anyhow::anyhow!("--broker {broker:?} is not host:port"))?;
    anyhow::ensure!(interval >= 10, "--interval {interval}: at least 10 ms");
    let cfg = rvm_agent::simulate::SimConfig {
        devices,
        sites,
        prefix,
        host,
        port,
        certs,
        interval: Duration::from_millis(interval),
        first,
    };
    let sys = actix::System::new();
    sys.block_on(async move {
        let handles = rvm_agent::simulate::start(&cfg)?;
        eprintln!(
            "simulating {} machines against {}:{}",
            handles.len(),
            cfg.host,
            cfg.port
        );
        wait_for_signal().await;
        for h in &handles {
            h.stop().await;
        }
        anyhow::Ok(())
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
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
}
