//! Fleet scale: 5,000 simulated machines at one record per 5 s on one fleet server (embedded
//! broker) for 10 minutes (`--quick`: 2): the server's CPU share and RSS per machine, the p99
//! from publish to visible in the API (probe devices beside the simulated ones, against the
//! same records' PUBACK), and every seq accounted for.
//!
//! The machines replay the demo's story (`scenarios/demo.toml`: a drift, an overheating
//! machine, a vision crash, a failing model cohort, a machine and then a whole site offline;
//! `--quick`: 6 times faster), so the figures include a site of 250 machines coming back with a
//! 3-minute backlog. The window lasts at least until a minute after the story's last event
//! ended, so every backlog has drained before the count.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::figure::{Figure, GroupResult, at_most};
use crate::mqtt::Probe;
use crate::procs::{self, percentile};
use crate::setup::{self, Ctx, FleetServer, ServerSpec};

pub const MACHINES: usize = 5000;
const SIMULATORS: usize = 2;
const PROBES: usize = 20;
const INTERVAL_MS: u64 = 5000;
const VISIBLE_TIMEOUT: Duration = Duration::from_secs(10);
/// The story the machines replay.
const SCENARIO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/demo.toml");

pub fn run(ctx: &Ctx) -> anyhow::Result<GroupResult> {
    let dir = ctx.dir("scale")?;
    let certs = setup::make_certs(&dir)?;
    let nofile = crate::nofile_limit();
    eprintln!("  open-file limit {nofile}");
    // certificates first, so the machines connect at once when they start
    eprintln!("  issuing {MACHINES} device certificates");
    {
        let ca = common::pki::Ca::load(&certs)?;
        for i in 0..MACHINES {
            ca.ensure_device(&certs, &common::DeviceId::new(format!("fleet{i:04}"))?)?;
        }
    }
    let mut server = FleetServer::start(ctx, &dir, &certs, &ServerSpec::default())?;
    std::thread::sleep(Duration::from_secs(3));
    let base = procs::sample(server.proc.pid()).map_or(0, |s| s.rss_kib);
    eprintln!("  starting {MACHINES} simulated machines (one record per 5 s) in {SIMULATORS} processes");
    let per = MACHINES / SIMULATORS;
    let speed: f64 = if ctx.quick { 6.0 } else { 1.0 };
    let story = rvm_sim::scenario::Scenario::load(std::path::Path::new(SCENARIO))?.speed_up(speed);
    let story_ends = Duration::from_millis(story.events.iter().filter_map(|e| e.end_ms).max().unwrap_or(0));
    eprintln!(
        "  the machines replay {SCENARIO} (speed {speed}); its last event ends {:.0} s after they start",
        story_ends.as_secs_f64()
    );
    let speed_arg = speed.to_string();
    let sims_started = Instant::now();
    let mut sims = Vec::new();
    for k in 0..SIMULATORS {
        sims.push(setup::spawn_simulator(
            ctx,
            &certs,
            server.mqtt,
            "fleet",
            per,
            k * per,
            INTERVAL_MS,
            &dir.join(format!("sim{k}.log")),
            &["--scenario", SCENARIO, "--speed", &speed_arg],
        )?);
    }
    let (online, took) = setup::count_online(ctx, &server, "fleet", MACHINES, ctx.secs(600, 240));
    eprintln!("    {online} online after {:.0} s; settling", took.as_secs_f64());
    std::thread::sleep(Duration::from_secs(10));
    // at least the nominal window, and long enough for the story to end and its backlogs drain
    let window = ctx
        .secs(600, 120)
        .max((story_ends + Duration::from_secs(60)).saturating_sub(sims_started.elapsed()));
    eprintln!("  measuring for {window:?} with {PROBES} probes");
    let probes = ctx.rt.block_on(async {
        let mut v = Vec::new();
        for i in 0..PROBES {
            v.push(Probe::connect(&certs, server.mqtt, &format!("scaleprobe{i:02}"), 500 + i as u64).await?);
        }
        anyhow::Ok(v)
    })?;
    let vis = Arc::new(std::sync::Mutex::new((
        Vec::<f64>::new(),
        Vec::<f64>::new(),
        0usize,
    )));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (i, mut p) in probes.into_iter().enumerate() {
        let vis = vis.clone();
        let stop = stop.clone();
        let (http, port, token) = (ctx.http.clone(), server.http, server.token.clone());
        tasks.push(ctx.rt.spawn(async move {
            tokio::time::sleep(Duration::from_millis(INTERVAL_MS * i as u64 / PROBES as u64)).await;
            let mut every = tokio::time::interval(Duration::from_millis(INTERVAL_MS));
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                every.tick().await;
                p.drain_acks();
                let Ok((seq, _, at)) = p.publish(&[]).await else {
                    continue;
                };
                let acked = p.wait_ack().await;
                let path = format!("/api/v1/devices/{}", p.id);
                let seen = loop {
                    if let Ok(d) = setup::get(&http, port, &token, &path).await
                        && d["delivery"]["last_seq"].as_u64().is_some_and(|s| s >= seq)
                    {
                        break Some(Instant::now());
                    }
                    if at.elapsed() > VISIBLE_TIMEOUT {
                        break None;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                };
                let mut v = vis.lock().unwrap_or_else(|p| p.into_inner());
                match seen {
                    Some(s) => v.0.push((s - at).as_secs_f64() * 1e3),
                    None => v.2 += 1,
                }
                if let Some(a) = acked {
                    v.1.push((a - at).as_secs_f64() * 1e3);
                }
            }
        }));
    }
    let mut pids = vec![server.proc.pid()];
    pids.extend(sims.iter().map(|s| s.pid()));
    let usage = procs::watch(&pids, window, Duration::from_secs(1), || {});
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    ctx.rt.block_on(async {
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(20), t).await;
        }
    });
    let end_rss = procs::sample(server.proc.pid()).map_or(0, |s| s.rss_kib);
    anyhow::ensure!(
        server.proc.alive(),
        "fleet-server exited:\n{}",
        server.proc.log_tail()
    );
    let cmds: Vec<String> = std::iter::once(server.proc.cmdline.clone())
        .chain(sims.iter().map(|s| s.cmdline.clone()))
        .collect();

    eprintln!("  stopping the machines and accounting for every seq");
    for s in &mut sims {
        s.terminate(procs::TERM_GRACE);
    }
    std::thread::sleep(Duration::from_secs(5));
    let (checked, lossy, received, rejected) = ctx.rt.block_on(account(ctx, &server))?;
    server.proc.terminate(procs::TERM_GRACE);

    let (lat, ack, timeouts) = std::mem::take(&mut *vis.lock().unwrap_or_else(|p| p.into_inner()));
    let server_cpu = usage[0].cpu_pct;
    let sims_cpu: f64 = usage[1..].iter().map(|u| u.cpu_pct).sum();
    let per_machine_kib = (end_rss as f64 - base as f64) / MACHINES as f64;
    let p99 = percentile(&lat, 99.0);
    let (ok_rss, why_rss) = at_most(per_machine_kib, 50.0, "KiB");
    let (ok_p99, why_p99) = at_most(p99, 1000.0, "ms");
    let bad = lossy + rejected as usize + timeouts;
    Ok(GroupResult {
        key: "scale".into(),
        title: "Fleet scale".into(),
        date: String::new(),
        machine: String::new(),
        quick: ctx.quick,
        command: String::new(),
        commands: cmds,
        figures: vec![
            Figure::new("machines online before the window", online as f64, "")
                .target(
                    "5,000",
                    online == MACHINES,
                    if online == MACHINES {
                        format!("met (all online after {:.0} s)", took.as_secs_f64())
                    } else {
                        format!("missed: {} not online after {:.0} s", MACHINES - online, took.as_secs_f64())
                    },
                ),
            Figure::new("server CPU (share of one core)", server_cpu, "%")
                .vs("the 5,000 simulated machines' own CPU", sims_cpu)
                .note(format!(
                    "{:.1} % of the whole 2-core machine; {} records/s offered",
                    server_cpu / 2.0,
                    MACHINES as u64 * 1000 / INTERVAL_MS
                )),
            Figure::new("server RSS per machine", per_machine_kib, "KiB")
                .target("< 50 KiB per machine beyond history", ok_rss, why_rss)
                .note(format!(
                    "{:.0} MiB at the end of the window, {:.0} MiB before any machine; history \
                     rows live in sled, whose page cache is capped at 64 MiB and is included here",
                    end_rss as f64 / 1024.0,
                    base as f64 / 1024.0
                )),
            Figure::new("publish to visible in the API p50", percentile(&lat, 50.0), "ms")
                .vs("PUBACK p50 (stored)", percentile(&ack, 50.0)),
            Figure::new("publish to visible in the API p99", p99, "ms")
                .vs("PUBACK p99 (stored)", percentile(&ack, 99.0))
                .target("p99 < 1 s", ok_p99, why_p99)
                .note(format!("{} records from {PROBES} probes", lat.len())),
            Figure::new("records rejected or lost", bad as f64, "")
                .target(
                    "0",
                    bad == 0,
                    if bad == 0 {
                        "met".into()
                    } else {
                        format!("{lossy} devices with gaps, {rejected} rejected, {timeouts} probe records never visible")
                    },
                )
                .note(format!("{received} records from {checked} devices checked seq by seq")),
        ],
        notes: vec![format!(
            "Open-file limit raised to {nofile} (`ulimit -n` in bench/run.sh, setrlimit in the \
             bench): 5,000 mTLS connections need that many descriptors in the server. Machines \
             run in {SIMULATORS} `rvm-sim simulate` processes on the same 2 cores as the server \
             and the bench, so the server shares the machine with its load."
        ), format!(
            "The machines replay `scenarios/demo.toml` (speed {speed}): among other faults, \
             machine 9 is offline for {:.0} s and site3 (250 machines here) for {:.0} s, then \
             each drains its backlog while the fleet keeps publishing. The window ({:.0} s) \
             ends at least 60 s after the story's last event, so the seq-by-seq count of lost \
             records includes every backlog.",
            120.0 / speed,
            180.0 / speed,
            window.as_secs_f64()
        )],
    })
}

/// Every device's delivery: (devices checked, devices with a gap or missing seq, records
/// received, records rejected by the server).
async fn account(ctx: &Ctx, s: &FleetServer) -> anyhow::Result<(usize, usize, u64, u64)> {
    let list = s.get(ctx, "/api/v1/devices").await?;
    let ids: Vec<String> = list["devices"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let mut lossy = 0;
    let mut received = 0;
    for id in &ids {
        match setup::delivery(&ctx.http, s.http, &s.token, id).await {
            Some((r, last, missing, gaps)) => {
                received += r;
                if missing > 0 || gaps > 0 || r < last {
                    lossy += 1;
                }
            }
            None => lossy += 1,
        }
    }
    let h = s.get(ctx, "/api/v1/health").await?;
    let rejected = h["ingest"]["rejected_total"].as_u64().unwrap_or(0);
    Ok((ids.len(), lossy, received, rejected))
}
