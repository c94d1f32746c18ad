//! rvm-agent command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rvm_agent::collect::MetricSource;
use rvm_agent::config::AgentFile;

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
    /// Print one full snapshot of what the agent sees (backends, capabilities, values).
    /// Options not given come from the config file if it exists, else the defaults.
    Collect {
        /// One snapshot and exit (the only mode).
        #[arg(long)]
        once: bool,
        #[arg(long, default_value = "json")]
        format: String,
        #[arg(long)]
        sysfs: Option<PathBuf>,
        #[arg(long)]
        procfs: Option<PathBuf>,
        /// Root of etc/nv_tegra_release and etc/nvpmodel.conf.
        #[arg(long)]
        etc_root: Option<PathBuf>,
        /// auto, jetson, tegrastats, nvml or none.
        #[arg(long)]
        gpu_backend: Option<rvm_agent::collect::gpu::GpuChoice>,
        #[arg(long)]
        tegrastats_command: Option<String>,
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
        Cmd::Collect {
            once: _,
            format,
            sysfs,
            procfs,
            etc_root,
            gpu_backend,
            tegrastats_command,
        } => collect(
            &cli.config,
            &format,
            sysfs,
            procfs,
            etc_root,
            gpu_backend,
            tegrastats_command,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rvm-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn collect(
    config: &std::path::Path,
    format: &str,
    sysfs: Option<PathBuf>,
    procfs: Option<PathBuf>,
    etc_root: Option<PathBuf>,
    gpu_backend: Option<rvm_agent::collect::gpu::GpuChoice>,
    tegrastats_command: Option<String>,
) -> anyhow::Result<()> {
    use rvm_agent::collect::gpu;
    anyhow::ensure!(format == "json", "--format {format:?}: only json is supported");
    // the config file's settings when there is one, overridden by the options
    let file = if config.exists() {
        Some(
            AgentFile::parse(&std::fs::read_to_string(config)?)
                .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?,
        )
    } else {
        None
    };
    let mut paths = file.as_ref().map(rvm_agent::agent::gpu_paths).unwrap_or_default();
    let mut choice = file.as_ref().map(|f| f.collector.gpu_backend).unwrap_or_default();
    if let Some(p) = sysfs {
        paths.sysfs = p;
    }
    if let Some(p) = procfs {
        paths.procfs = p;
    }
    if let Some(p) = etc_root {
        paths.etc_root = p;
    }
    if let Some(c) = tegrastats_command {
        paths.tegrastats_command = c;
    }
    if let Some(g) = gpu_backend {
        choice = g;
    }
    let watch = file
        .as_ref()
        .map(|f| f.health.watch_processes.clone())
        .unwrap_or_default();
    let mut s =
        rvm_agent::collect::system::SystemSource::with_options(rvm_agent::collect::system::SystemOptions {
            interval_ms: 1000,
            watch,
            scan_every_ms: 0,
            procfs: paths.procfs.clone(),
            sysfs: paths.sysfs.clone(),
        });
    let (mut backend, notes) = gpu::select(choice, &paths);
    s.collect(common::time::now_ms());
    // rates and CPU need two samples; tegrastats needs a line
    std::thread::sleep(Duration::from_millis(1100));
    let mut t = s.collect(common::time::now_ms());
    t.gpu = backend.sample();
    let out = serde_json::json!({
        "gpu_backend": gpu::capability(backend.kind()),
        "gpu_notes": notes,
        "capabilities": [gpu::capability(backend.kind())],
        "units": {"cpu": "percent, MHz", "memory": "bytes", "temperatures": "degrees C", "power": "mW", "gpu_freq": "MHz"},
        "telemetry": t,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// Exit code of a run: 0 after a clean stop, non-zero past the restart limit.
fn run(config: PathBuf) -> anyhow::Result<()> {
    let file = AgentFile::load(&config)?;
    let overrides = overrides()?;
    let sys = actix::System::new();
    let exit_code = sys.block_on(async move {
        let handle = rvm_agent::agent::start_with(&file, overrides)?;
        tracing::info!(device = %handle.device, "agent running");
        let out = handle.exit_code.clone();
        actix::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            handle.stop().await;
            actix::System::current().stop();
        });
        anyhow::Ok(out)
    })?;
    // the buffer is closed by now: by the supervisor's ordered stop after a signal, or, when
    // an actor exceeded its restart limit, by the buffer actor going away with the runtime
    let code = sys.run_with_code().unwrap_or(1);
    let code = code.max(exit_code.load(std::sync::atomic::Ordering::SeqCst));
    if code != 0 {
        eprintln!("rvm-agent: exiting with {code} (an actor exceeded its restart limit)");
        std::process::exit(code);
    }
    Ok(())
}

/// A test build (the `faults` feature) arms the faults `RVM_AGENT_FAULTS` names (see
/// `rvm_agent::faults`); any other build has no fault injection and ignores the variable, with
/// a warning, so that a stray setting never stops a machine's agent from starting.
fn overrides() -> anyhow::Result<rvm_agent::agent::Overrides> {
    #[cfg(feature = "faults")]
    {
        use rvm_agent::faults::{FAULTS_ENV, Faults};
        if let Ok(spec) = std::env::var(FAULTS_ENV) {
            tracing::warn!(faults = %spec, "fault injection armed from {FAULTS_ENV}");
            return Ok(rvm_agent::agent::Overrides {
                faults: Some(std::sync::Arc::new(Faults::parse(&spec)?)),
                ..Default::default()
            });
        }
    }
    #[cfg(not(feature = "faults"))]
    if std::env::var_os("RVM_AGENT_FAULTS").is_some() {
        tracing::warn!("RVM_AGENT_FAULTS ignored: this build has no fault injection (test builds only)");
    }
    Ok(rvm_agent::agent::Overrides::default())
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
