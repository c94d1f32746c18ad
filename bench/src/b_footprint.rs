//! Agent footprint: private memory (RssAnon), working set, CPU, RSS and PSS of a release
//! `rvm-agent` at a 1 s interval publishing to a release `fleet-server`, beside
//! `prometheus-node-exporter` scraped every second and `collectd` at 1 s (the C floor), all
//! three measured in the same window (see [`crate::memory`] for what each measure counts); and
//! the time of one full collection beside the time of one node_exporter scrape.
//!
//! Targets: RssAnon at most 0.2x node_exporter's and working set at most 0.15x (issue 25,
//! step 6; issue 18 asked 0.25x for both), CPU at most 0.3x (issue 18).
//! RSS and PSS are shown beside them without a target: they count clean pages of the binary
//! the kernel may drop at any time, which a process can move without needing less memory.

use std::path::Path;
use std::time::{Duration, Instant};

use rvm_agent::collect::MetricSource;
use rvm_agent::collect::system::{SystemOptions, SystemSource};

use crate::figure::{Figure, GroupResult, at_most, fmt};
use crate::memory::{self, Footprint, largest};
use crate::procs::{self, Proc};
use crate::setup::{self, AgentSpec, Ctx, FleetServer, ServerSpec};

const MIB: f64 = 1024.0;

/// The agent's private memory and working set: at most this times node_exporter's (issue 18).
/// Private memory (RssAnon) against node_exporter's (issue 25).
const ANON_RATIO: f64 = 0.2;
/// Working set against node_exporter's (issue 25).
const WS_RATIO: f64 = 0.15;
/// The agent's CPU: at most this times node_exporter's, scraped every second (issue 18).
const CPU_RATIO: f64 = 0.3;
/// Working-set intervals back to back in the window (the larger is shown).
const WS_INTERVALS: u32 = 2;
/// How many mappings the notes name, largest first, for what dominates a measure.
const BY_MAPPING_TOP: usize = 5;

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
    let ws_interval = ctx.secs(60, 20);
    let window = ws_interval * WS_INTERVALS;
    let mut scrapes = Vec::new();
    let mut scrape_bytes = 0;
    let usage = memory::watch(
        &[agent.pid(), node.pid(), collectd.pid()],
        ws_interval,
        WS_INTERVALS,
        Duration::from_secs(1),
        || {
            if let Ok((n, d)) = procs::http_get(node_port, "/metrics") {
                scrapes.push(d.as_secs_f64() * 1e6);
                scrape_bytes = n;
            }
        },
    )?;
    for p in [&mut agent, &mut node, &mut collectd] {
        anyhow::ensure!(
            p.alive(),
            "{} exited during the window:\n{}",
            p.name,
            p.log_tail()
        );
    }
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
    let sizes = record_sizes();

    let binary_mib = std::fs::metadata(ctx.bin("rvm-agent")).map_or(0, |m| m.len()) as f64 / MIB / MIB;
    let mut figures = Vec::new();
    figures.extend(targeted(a, n, ws_interval, received));
    figures.extend(shown(a, n, "node_exporter", binary_mib));
    figures.extend(beside_collectd(a, c));
    figures.extend([
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
        Figure::new(
            "telemetry record on the wire (mean over a 10 s scan cycle)",
            sizes.mean,
            "bytes",
        )
        .note(format!(
            "the record of a process scan {} bytes (what every record was while each carried \
             the whole process table), the {} between scans {} to {} bytes; bincode, before TLS",
            sizes.scan,
            sizes.between.len(),
            sizes.between.iter().min().copied().unwrap_or(0),
            sizes.between.iter().max().copied().unwrap_or(0),
        )),
    ]);
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
                "All three run at once for {window:?} after a {warmup:?} warm-up. Sampled every \
                 second from /proc/PID: RSS (`VmRSS`) and private memory (`RssAnon`, resident \
                 anonymous pages: heap, stacks, written data) from `status`, PSS from \
                 `smaps_rollup`; the largest sample is shown, the mean in the notes. CPU is \
                 utime+stime from `stat` over the window. The working set: `echo 1 > \
                 /proc/PID/clear_refs`, then after {ws_interval:?} the sum of `Referenced:` over \
                 `/proc/PID/smaps` (every page, anonymous or file, touched in the interval), then \
                 clear again: {WS_INTERVALS} intervals back to back, the larger shown and both in \
                 the notes, with the mappings that hold the most."
            ),
            "`Referenced:` of a page of a shared library (libc above all) is also the page's \
             own flag, which the kernel sets when any process that used the page unmaps it or \
             exits: on a machine where processes start and stop all the time (here, other \
             sessions' builds and tests), a process that has most of libc mapped shows most of \
             it referenced whatever it did itself. The working set is still measured as issue 18 \
             defines it, with shared libraries included; the row without them is for \
             information."
                .into(),
            "RSS and PSS are shown without a target: they count clean pages of the binary and \
             its libraries that the kernel may drop at any time and read back on the next touch, \
             so a process can move them without needing less memory. RssAnon and the working \
             set are the targets (issue 18)."
                .into(),
            "The agent runs the release build (`cargo build --release -p rvm-agent`, as it \
             ships) with the environment of its systemd unit (MALLOC_ARENA_MAX=2, \
             GLIBC_TUNABLES=glibc.malloc.tcache_count=0) and publishes every record to the embedded broker of \
             a release fleet-server (whose own cost is not counted). node_exporter runs with its \
             default collectors and is scraped every second by the bench (a plain HTTP GET); \
             collectd has only the cpu, memory, disk, interface and load plugins at Interval 1 \
             and writes CSV to a temp dir."
                .into(),
        ],
    })
}

/// RssAnon, working set and CPU beside node_exporter, with the targets of issue 18.
fn targeted(a: &Footprint, n: &Footprint, ws_interval: Duration, received: u64) -> Vec<Figure> {
    let anon = (kib_mib(a.anon.max_kib), kib_mib(n.anon.max_kib));
    let (a_ws, n_ws) = (a.ws_max(), n.ws_max());
    let ws = (
        a_ws.map_or(f64::NAN, |w| kib_mib(w.total_kib)),
        n_ws.map_or(f64::NAN, |w| kib_mib(w.total_kib)),
    );
    vec![
        ratio_target(
            Figure::new("agent private memory (RssAnon, max)", anon.0, "MiB")
                .vs("node_exporter RssAnon (max)", anon.1),
            ANON_RATIO,
        )
        .note(format!(
            "mean {} MiB, node_exporter {} MiB; resident anonymous pages by mapping at the end of \
             the window: agent {}; node_exporter {}",
            fmt(a.anon.mean_kib / MIB),
            fmt(n.anon.mean_kib / MIB),
            largest(
                a.working_sets.last().map_or(&[][..], |w| &w.anon_by_mapping),
                BY_MAPPING_TOP
            ),
            largest(
                n.working_sets.last().map_or(&[][..], |w| &w.anon_by_mapping),
                BY_MAPPING_TOP
            ),
        )),
        ratio_target(
            Figure::new(
                &format!(
                    "agent working set (referenced within {} s of clear_refs, max of {WS_INTERVALS})",
                    ws_interval.as_secs()
                ),
                ws.0,
                "MiB",
            )
            .vs("node_exporter working set, measured the same way", ws.1),
            WS_RATIO,
        )
        .note(format!(
            "each interval: agent {}, node_exporter {} MiB; referenced by mapping in the larger: \
             agent {}; node_exporter {}",
            intervals(a),
            intervals(n),
            largest(a_ws.map_or(&[][..], |w| &w.by_mapping), BY_MAPPING_TOP),
            largest(n_ws.map_or(&[][..], |w| &w.by_mapping), BY_MAPPING_TOP),
        )),
        Figure::new(
            "agent working set without shared libraries (max; for information)",
            own(a),
            "MiB",
        )
        .vs("node_exporter, the same", own(n))
        .note(
            "the working set above less the pages of libc and other shared libraries, whose \
             `Referenced:` is set whenever any process on the machine used them (see the notes)",
        ),
        ratio_target(
            Figure::new("agent CPU (share of one core)", a.cpu_pct, "%")
                .vs("node_exporter CPU, scraped every second", n.cpu_pct),
            CPU_RATIO,
        )
        .note(format!(
            "{received} records delivered by the agent during the run"
        )),
    ]
}

/// RSS and PSS beside the reference: shown in the summary, not targeted.
fn shown(a: &Footprint, r: &Footprint, name: &str, binary_mib: f64) -> Vec<Figure> {
    vec![
        Figure::new(
            "agent RSS (max; shown, not targeted)",
            kib_mib(a.rss.max_kib),
            "MiB",
        )
        .vs(&format!("{name} RSS (max)"), kib_mib(r.rss.max_kib))
        .in_summary()
        .note(format!(
            "mean {} MiB, {name} {} MiB; of it clean pages of mapped files (RssFile) at the \
                 end: agent {} MiB (code and constants of its {} MiB binary, and libc), {name} \
                 {} MiB",
            fmt(a.rss.mean_kib / MIB),
            fmt(r.rss.mean_kib / MIB),
            fmt(kib_mib(a.file_kib)),
            fmt(binary_mib),
            fmt(kib_mib(r.file_kib)),
        )),
        Figure::new(
            "agent PSS (max; shown, not targeted)",
            kib_mib(a.pss.max_kib),
            "MiB",
        )
        .vs(&format!("{name} PSS (max)"), kib_mib(r.pss.max_kib))
        .in_summary()
        .note(format!(
            "mean {} MiB, {name} {} MiB",
            fmt(a.pss.mean_kib / MIB),
            fmt(r.pss.mean_kib / MIB)
        )),
    ]
}

/// Every measure beside collectd, the C floor: for information.
fn beside_collectd(a: &Footprint, c: &Footprint) -> Vec<Figure> {
    const C: &str = "collectd (cpu, memory, disk, interface, load at 1 s)";
    let ws = |f: &Footprint| f.ws_max().map_or(f64::NAN, |w| kib_mib(w.total_kib));
    vec![
        Figure::new(
            "agent RssAnon beside collectd (the C floor)",
            kib_mib(a.anon.max_kib),
            "MiB",
        )
        .vs(&format!("{C} RssAnon"), kib_mib(c.anon.max_kib))
        .note(format!(
            "collectd's by mapping: {}",
            largest(
                c.working_sets.last().map_or(&[][..], |w| &w.anon_by_mapping),
                BY_MAPPING_TOP
            )
        )),
        Figure::new("agent working set beside collectd", ws(a), "MiB")
            .vs(&format!("{C} working set"), ws(c))
            .note(format!(
                "collectd each interval: {} MiB; by mapping: {}",
                intervals(c),
                largest(c.ws_max().map_or(&[][..], |w| &w.by_mapping), BY_MAPPING_TOP)
            )),
        Figure::new("agent CPU beside collectd", a.cpu_pct, "%").vs(&format!("{C} CPU"), c.cpu_pct),
        Figure::new("agent RSS beside collectd", kib_mib(a.rss.max_kib), "MiB")
            .vs(&format!("{C} RSS"), kib_mib(c.rss.max_kib)),
        Figure::new("agent PSS beside collectd", kib_mib(a.pss.max_kib), "MiB")
            .vs(&format!("{C} PSS"), kib_mib(c.pss.max_kib)),
    ]
}

/// Target "at most `limit` x the reference" on a figure with a reference.
fn ratio_target(f: Figure, limit: f64) -> Figure {
    let ratio = f.ratio.unwrap_or(f64::NAN);
    let (met, verdict) = at_most(ratio, limit, "x");
    // a ratio that could not be measured (NaN) is a miss, never a pass
    f.target(
        &format!("<= {limit}x node_exporter"),
        met && ratio.is_finite(),
        verdict,
    )
}

/// The largest working set of the intervals without shared libraries, in MiB.
fn own(f: &Footprint) -> f64 {
    f.working_sets
        .iter()
        .map(|w| w.own_kib)
        .max()
        .map_or(f64::NAN, kib_mib)
}

/// "2.61, 2.58": the working set of each interval in MiB.
fn intervals(f: &Footprint) -> String {
    f.working_sets
        .iter()
        .map(|w| fmt(kib_mib(w.total_kib)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn kib_mib(kib: u64) -> f64 {
    kib as f64 / MIB
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
        ..Default::default()
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
        ..Default::default()
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

/// Wire sizes of the records of one scan cycle (`scan_every_ms` 10 s at 1 s ticks), the agent
/// as the bench runs it: the record of the scan carries the process table's counts and top
/// lists, the others only what changes every tick.
struct RecordSizes {
    scan: usize,
    between: Vec<usize>,
    mean: f64,
}

fn record_sizes() -> RecordSizes {
    let mut s = SystemSource::with_options(SystemOptions {
        interval_ms: 1000,
        watch: Vec::new(),
        scan_every_ms: 10_000,
        ..Default::default()
    });
    let device = common::DeviceId::new("bench001").expect("a valid id");
    let t0 = common::time::now_ms();
    let (mut scan, mut between) = (0, Vec::new());
    for i in 0..10u64 {
        let t = s.collect(t0 + i as i64 * 1000);
        let fresh = t.detail.procs.scanned;
        let env = common::Envelope::new(device.clone(), i + 1, t0 + i as i64 * 1000, t);
        let n = common::codec::encode(&env).map_or(0, |b| b.len());
        if fresh {
            scan = n;
        } else {
            between.push(n);
        }
    }
    let mean = (scan + between.iter().sum::<usize>()) as f64 / (1 + between.len()) as f64;
    RecordSizes { scan, between, mean }
}
