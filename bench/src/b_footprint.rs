//! Agent footprint: RSS and CPU of a release `rvm-agent` at a 1 s interval publishing to a
//! release `fleet-server`, beside `prometheus-node-exporter` scraped every second and
//! `collectd` at 1 s (the C floor), all three measured over the same window; and the time of
//! one full collection beside the time of one node_exporter scrape.

use std::path::Path;
use std::time::{Duration, Instant};

use rvm_agent::collect::MetricSource;
use rvm_agent::collect::system::{SystemOptions, SystemSource};

use crate::figure::{Figure, GroupResult, at_most, both};
use crate::procs::{self, Proc};
use crate::setup::{self, AgentSpec, Ctx, FleetServer, ServerSpec};

const MIB: f64 = 1024.0;

pub fn run(ctx: &Ctx) -> anyhow::Result<GroupResult> {
    let dir = ctx.dir("footprint")?;
    let certs = setup::make_certs(&dir)?;
    eprintln!("  starting fleet-server (embedded broker)");
    let server = FleetServer::start(ctx, &dir, &certs, &ServerSpec::default())?;
    let cfg = setup::agent_config(
        &dir,
        &certs,
        &AgentSpec {
            id: "bench0",
            port: server.mqtt,
            interval_ms: 1000,
            buffer_dir: &dir.join("agent-buffer"),
            http: Some(procs::free_port()?),
        },
    )?;
    let mut agent = setup::spawn_agent(ctx, &cfg, &dir.join("agent.log"))?;
    let node_port = procs::free_port()?;
    let mut node = Proc::spawn(
        "prometheus-node-exporter",
        Path::new("/usr/bin/prometheus-node-exporter"),
        &[format!("--web.listen-address=127.0.0.1:{node_port}")],
        &[],
        &dir.join("node-exporter.log"),
    )?;
    let collectd_conf = write_collectd_conf(&dir)?;
    let mut collectd = Proc::spawn(
        "collectd",
        Path::new("/usr/sbin/collectd"),
        &["-f".into(), "-C".into(), collectd_conf.display().to_string()],
        &[],
        &dir.join("collectd.log"),
    )?;
    procs::wait_port(node_port, setup::START_TIMEOUT)?;
    let seen = ctx.rt.block_on(async {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if setup::delivery(&ctx.http, server.http, &server.token, "bench0")
                .await
                .is_some_and(|d| d.0 > 0)
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    });
    anyhow::ensure!(
        seen,
        "the agent's records do not reach the server:\n{}",
        agent.log_tail()
    );
    let warmup = ctx.secs(10, 5);
    eprintln!("  warming up {warmup:?}, then sampling agent, node_exporter and collectd");
    std::thread::sleep(warmup);
    for p in [&mut agent, &mut node, &mut collectd] {
        anyhow::ensure!(p.alive(), "{} exited:\n{}", p.name, p.log_tail());
    }
    let window = ctx.secs(60, 20);
    let mut scrapes = Vec::new();
    let mut scrape_bytes = 0;
    let usage = procs::watch(
        &[agent.pid(), node.pid(), collectd.pid()],
        window,
        Duration::from_secs(1),
        || {
            if let Ok((n, d)) = procs::http_get(node_port, "/metrics") {
                scrapes.push(d.as_secs_f64() * 1e6);
                scrape_bytes = n;
            }
        },
    );
    let (a, n, c) = (&usage[0], &usage[1], &usage[2]);
    let received = ctx
        .rt
        .block_on(setup::delivery(&ctx.http, server.http, &server.token, "bench0"))
        .map(|d| d.0)
        .unwrap_or(0);
    let commands = vec![
        agent.cmdline.clone(),
        node.cmdline.clone(),
        collectd.cmdline.clone(),
        format!(
            "# collectd.conf:\n{}",
            indent(&std::fs::read_to_string(&collectd_conf)?)
        ),
        format!("# agent.toml:\n{}", indent(&std::fs::read_to_string(&cfg)?)),
        server.proc.cmdline.clone(),
    ];
    drop(collectd);
    drop(node);
    drop(agent);
    drop(server);

    eprintln!("  timing SystemSource::collect");
    let iters = ctx.n(300, 60);
    let (tick_us, scan_us, procs_n) = collect_times(iters);

    let rss_mib = a.rss_max_kib as f64 / MIB;
    let node_mib = n.rss_max_kib as f64 / MIB;
    let figures = vec![
        Figure::new("agent RSS (max over the window)", rss_mib, "MiB")
            .vs("node_exporter RSS", node_mib)
            .target(
                "< 6 MiB and < 0.3x node_exporter",
                rss_mib < 6.0 && rss_mib < 0.3 * node_mib,
                both(
                    at_most(rss_mib, 6.0, "MiB"),
                    at_most(rss_mib / node_mib, 0.3, "x"),
                )
                .1,
            )
            .note(format!(
                "mean {:.2} MiB; node_exporter mean {:.2} MiB",
                a.rss_mean_kib / MIB,
                n.rss_mean_kib / MIB
            )),
        Figure::new("agent private memory (RssAnon)", a.anon_kib as f64 / MIB, "MiB")
            .vs("node_exporter RssAnon", n.anon_kib as f64 / MIB)
            .note(format!(
                "the rest of RSS is clean, shared pages of mapped files (RssFile): agent {:.2} MiB \
                 (code and constants of its {:.1} MiB binary, and libc), node_exporter {:.2} MiB",
                a.file_kib as f64 / MIB,
                std::fs::metadata(ctx.bin("rvm-agent")).map_or(0, |m| m.len()) as f64 / MIB / 1024.0,
                n.file_kib as f64 / MIB
            )),
        Figure::new("agent CPU (share of one core)", a.cpu_pct, "%")
            .vs("node_exporter CPU, scraped every second", n.cpu_pct)
            .target(
                "<= 0.5x node_exporter",
                a.cpu_pct <= 0.5 * n.cpu_pct,
                at_most(a.cpu_pct / n.cpu_pct, 0.5, "x").1,
            )
            .note(format!(
                "{received} records delivered by the agent during the run"
            )),
        Figure::new("agent RSS beside collectd (the C floor)", rss_mib, "MiB")
            .vs("collectd RSS", c.rss_max_kib as f64 / MIB),
        Figure::new("agent CPU beside collectd (the C floor)", a.cpu_pct, "%").vs(
            "collectd CPU (cpu, memory, disk, interface, load at 1 s)",
            c.cpu_pct,
        ),
        Figure::new(
            "one collection (SystemSource::collect, scan every 10 s)",
            tick_us,
            "µs",
        )
        .vs(
            "one node_exporter scrape (median, HTTP included)",
            procs::percentile(&scrapes, 50.0),
        )
        .note(format!(
            "mean over {iters} ticks; node_exporter answered {} KiB per scrape",
            scrape_bytes / 1024
        )),
        Figure::new("one collection with a full process scan", scan_us, "µs")
            .vs(
                "one node_exporter scrape (median)",
                procs::percentile(&scrapes, 50.0),
            )
            .note(format!("{procs_n} processes on the machine")),
    ];
    Ok(GroupResult {
        key: "footprint".into(),
        title: "Agent footprint".into(),
        date: String::new(),
        machine: String::new(),
        quick: ctx.quick,
        command: String::new(),
        commands,
        figures,
        notes: vec![
            format!(
                "All three run at once for {window:?} after a {warmup:?} warm-up; RSS is VmRSS and \
                 CPU is utime+stime from /proc/PID, sampled every second. The agent runs the \
                 release build with MALLOC_ARENA_MAX=2 and publishes every record to the \
                 embedded broker of a release fleet-server (whose own cost is not counted)."
            ),
            "node_exporter runs with its default collectors and is scraped every second by the \
             bench (a plain HTTP GET); collectd has only the cpu, memory, disk, interface and \
             load plugins at Interval 1 and writes CSV to a temp dir."
                .into(),
        ],
    })
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("#   {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn write_collectd_conf(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let base = dir.join("collectd");
    std::fs::create_dir_all(base.join("csv"))?;
    let conf = dir.join("collectd.conf");
    std::fs::write(
        &conf,
        format!(
            "Hostname \"bench\"\nFQDNLookup false\nInterval 1\nBaseDir \"{base}\"\nPIDFile \"{base}/collectd.pid\"\n\
             PluginDir \"/usr/lib/collectd\"\nTypesDB \"/usr/share/collectd/types.db\"\n\
             LoadPlugin cpu\nLoadPlugin memory\nLoadPlugin disk\nLoadPlugin interface\nLoadPlugin load\nLoadPlugin csv\n\
             <Plugin csv>\n  DataDir \"{base}/csv\"\n  StoreRates true\n</Plugin>\n",
            base = base.display()
        ),
    )?;
    Ok(conf)
}

/// Mean µs of one tick as the collector runs it (process table every 10 s), of one tick
/// with a full process scan, and the number of processes.
fn collect_times(iters: usize) -> (f64, f64, usize) {
    let mut s = SystemSource::with_options(SystemOptions {
        interval_ms: 1000,
        watch: Vec::new(),
        scan_every_ms: 10_000,
    });
    let t0 = common::time::now_ms();
    s.collect(t0);
    let start = Instant::now();
    for i in 1..=iters {
        // the clock the collector would pass: one tick a second
        std::hint::black_box(s.collect(t0 + i as i64 * 1000));
    }
    let tick = start.elapsed().as_secs_f64() * 1e6 / iters as f64;
    let mut full = SystemSource::with_options(SystemOptions {
        interval_ms: 1000,
        watch: Vec::new(),
        scan_every_ms: 0,
    });
    full.collect(t0);
    let n = iters.min(100);
    let start = Instant::now();
    let mut procs_n = 0;
    for i in 1..=n {
        let t = full.collect(t0 + i as i64 * 1000);
        procs_n = t.processes.len();
    }
    let scan = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    let procs_total = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .chars()
                        .all(|c| c.is_ascii_digit())
                })
                .count()
        })
        .unwrap_or(procs_n);
    (tick, scan, procs_total)
}
