//! rvm-sim command line: `demo` (everything on this machine) and `simulate` (virtual RVMs
//! against any broker).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use rvm_agent::runtime::Broker;
use rvm_sim::demo::{self, DemoOptions};
use rvm_sim::scenario::Scenario;
use rvm_sim::simulate::{self, SimConfig, SimProfile};

#[derive(Parser)]
#[command(
    name = "rvm-sim",
    version,
    about = "RVM Fleet simulator: the demo, and virtual RVMs against any broker"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
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
    /// Run N simulated RVMs against a broker.
    Simulate {
        #[arg(long, default_value_t = 20)]
        devices: usize,
        #[arg(long, default_value_t = 3)]
        sites: usize,
        #[arg(long, default_value = "sim")]
        prefix: String,
        /// host:port of the broker, or a comma-separated list of the brokers of one fleet
        /// (`a:8883,b:8883`): each machine starts on one and fails over to the next, round
        /// robin, when its link is lost.
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
        /// Keep each machine's buffer in sled under DIR/{device} (survives kill -9);
        /// default: in memory.
        #[arg(long)]
        buffer_dir: Option<PathBuf>,
        /// How long a simulated command runs before it reports its result (ms).
        #[arg(long, default_value_t = simulate::SIM_COMMAND_MS)]
        command_ms: u64,
        /// Replay the faults of this scenario file (see scenarios/demo.toml).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Tell the scenario this many times faster (times divided, drift rates multiplied).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// On SIGTERM or Ctrl-C, stop collecting, wait until every machine's telemetry was
        /// acknowledged (at most --drain-s), and write one JSON line per machine here
        /// (records made, still buffered, last seq, broker, failovers) before stopping.
        #[arg(long)]
        report: Option<PathBuf>,
        /// How long the drain before --report waits at most, seconds.
        #[arg(long, default_value_t = 30)]
        drain_s: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.cmd, Cmd::Demo { .. }) {
        // the demo runs the fleet server: its allocator tuning, before any thread starts
        let arenas = fleet_server::alloc::limit_arenas();
        init_tracing();
        tracing::debug!(
            ?arenas,
            "malloc arenas capped (None: MALLOC_ARENA_MAX from the environment)"
        );
    } else {
        init_tracing();
    }
    common::tls::install_crypto_provider();
    let result = match cli.cmd {
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
        Cmd::Simulate {
            devices,
            sites,
            prefix,
            broker,
            certs,
            interval,
            first,
            buffer_dir,
            command_ms,
            scenario,
            speed,
            report,
            drain_s,
        } => run_simulate(
            devices,
            sites,
            prefix,
            broker,
            certs,
            interval,
            first,
            buffer_dir,
            command_ms,
            scenario,
            speed,
            report.map(|r| (r, Duration::from_secs(drain_s))),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rvm-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RVM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rmqtt=warn,rmqtt_net=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn demo_scenario(file: Option<PathBuf>, none: bool) -> anyhow::Result<Option<Scenario>> {
    Ok(match (file, none) {
        (_, true) => None,
        (Some(p), false) => Some(Scenario::load(&p)?),
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
    if let Some(a) = &d.local {
        println!(
            "  local agent: {} (this machine; config {}; recovery actions recorded, not carried out)",
            a.device,
            a.config.display()
        );
    }
    if let Some(s) = &opts.scenario {
        println!("  scenario:    {} (--no-scenario: none)", s.summary());
    }
    println!(
        "  try:         curl -H 'Authorization: Bearer {}' {}api/v1/devices",
        d.admin_token, d.url
    );
    println!("Ctrl-C stops it.");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(wait_for_signal());
    d.stop();
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run_simulate(
    devices: usize,
    sites: usize,
    prefix: String,
    broker: String,
    certs: PathBuf,
    interval: u64,
    first: usize,
    buffer_dir: Option<PathBuf>,
    command_ms: u64,
    scenario: Option<PathBuf>,
    speed: f64,
    report: Option<(PathBuf, Duration)>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        speed.is_finite() && speed > 0.0,
        "--speed {speed}: a positive number"
    );
    let scenario = scenario
        .map(|p| Scenario::load(&p).map(|s| s.speed_up(speed)))
        .transpose()?;
    let mut brokers = parse_brokers(&broker)?.into_iter();
    let primary = brokers
        .next()
        .ok_or_else(|| anyhow::anyhow!("--broker: no broker given"))?;
    let more_brokers: Vec<Broker> = brokers.collect();
    anyhow::ensure!(interval >= 10, "--interval {interval}: at least 10 ms");
    let cfg = SimConfig {
        devices,
        sites,
        prefix,
        host: primary.host.clone(),
        port: primary.port,
        certs,
        interval: Duration::from_millis(interval),
        first,
    };
    let sys = actix::System::new();
    sys.block_on(async move {
        let mut profile = SimProfile {
            buffer_dir,
            command_ms: Some(command_ms),
            more_brokers: more_brokers.clone(),
            ..Default::default()
        };
        if let Some(s) = &scenario {
            profile.models_of(&cfg, s);
        }
        let devices = simulate::start_with(&cfg, &profile)?;
        if let Some(s) = scenario {
            eprintln!("replaying scenario {}", s.summary());
            simulate::replay(s, &devices);
        }
        let handles: Vec<_> = devices.into_iter().map(|d| d.handle).collect();
        let list: Vec<String> = std::iter::once(primary.to_string())
            .chain(more_brokers.iter().map(|b| b.to_string()))
            .collect();
        eprintln!("simulating {} machines against {}", handles.len(), list.join(","));
        wait_for_signal().await;
        if let Some((path, within)) = &report {
            let lines = simulate::drain_and_report(&handles, *within).await;
            write_report(path, &lines)?;
            eprintln!("report of {} machines written to {}", lines.len(), path.display());
        }
        // each stops collecting, says goodbye and closes its buffer
        for h in &handles {
            h.stop().await;
        }
        anyhow::Ok(())
    })
}

/// One JSON line per machine, written whole (a temporary file renamed) so a reader never sees
/// half a report.
fn write_report(path: &std::path::Path, lines: &[simulate::DeviceReport]) -> anyhow::Result<()> {
    let mut text = String::new();
    for l in lines {
        text.push_str(&serde_json::to_string(l)?);
        text.push('\n');
    }
    let tmp = path.with_extension("part");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// `--broker`: `host:port`, or several separated by commas; a bad one is named by its place.
fn parse_brokers(arg: &str) -> anyhow::Result<Vec<Broker>> {
    let mut out: Vec<Broker> = Vec::new();
    for (i, s) in arg.split(',').map(str::trim).enumerate() {
        let b = Broker::parse(s)
            .ok_or_else(|| anyhow::anyhow!("--broker: entry {} {s:?} is not host:port", i + 1))?;
        anyhow::ensure!(!out.contains(&b), "--broker: {b} is given twice");
        out.push(b);
    }
    Ok(out)
}

/// Ctrl-C or SIGTERM.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_takes_one_or_a_comma_separated_list() {
        assert_eq!(
            parse_brokers("127.0.0.1:1883").unwrap(),
            [Broker::new("127.0.0.1", 1883)]
        );
        assert_eq!(
            parse_brokers("a:1,b:2, c:3").unwrap(),
            [Broker::new("a", 1), Broker::new("b", 2), Broker::new("c", 3)]
        );
        let e = parse_brokers("a:1,b").unwrap_err().to_string();
        assert!(e.contains("entry 2") && e.contains("\"b\""), "{e}");
        assert!(parse_brokers("a:1,a:1").is_err());
    }
}
