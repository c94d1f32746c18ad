//! Ingest with one, two and three fleet-server instances on one PostgreSQL (issue 21).
//!
//! The same load each time: the same number of machines publishing the same records as fast as
//! PUBACKs allow, spread evenly over the instances' embedded brokers (as agents given every
//! broker spread themselves by their device id's hash). Each instance is a release
//! `fleet-server run` with its own data directory and `[cluster] instance_id`, registered,
//! heartbeating and holding or following the leader leases, all on one throwaway PostgreSQL 15
//! cluster with its durable defaults. The rate runs from the first publish to the last PUBACK of
//! all machines together; every row is then counted in `telemetry`.
//!
//! The reference is the one-instance run of the same load in the same run. On this 2-core
//! machine every instance, the database and the load generator share the same two cores, so
//! the figures show what a second and third instance cost or gain here (heartbeats, lease
//! renewals and delivery-row locks against more writers committing at once), not what they
//! would add on machines of their own.

use crate::figure::{Figure, GroupResult};
use crate::mqtt;
use crate::pg::{DB, PgCluster};
use crate::procs;
use crate::setup::{self, Ctx, FleetServer, ServerSpec};

/// In-flight publishes per device, as the agents' default window.
const WINDOW: u16 = 64;

/// One run with `n` instances: records/s and the servers' command lines.
struct Run {
    instances: usize,
    rate: f64,
    cmds: Vec<String>,
}

pub fn run(ctx: &Ctx) -> anyhow::Result<GroupResult> {
    let dir = ctx.dir("cluster")?;
    let certs = setup::make_certs(&dir)?;
    // divisible by 1, 2 and 3: every instance gets the same share
    let devices = ctx.n(60, 30);
    let per_device = ctx.n(1_000, 400) as u64;
    let total = devices as u64 * per_device;
    let pg = PgCluster::start(&dir.join("pg"))?;
    let mut runs = Vec::new();
    for n in 1..=3 {
        eprintln!("  {n} instance(s) on one PostgreSQL: {total} records from {devices} devices");
        let run = ingest(ctx, &certs, &pg, n, devices, per_device)?;
        eprintln!("    {:.0} records/s", run.rate);
        runs.push(run);
    }
    let one = runs[0].rate;
    let mut commands = Vec::new();
    let mut figures = Vec::new();
    for r in &runs {
        commands.extend(r.cmds.iter().take(1).cloned());
        let mut f = Figure::new(
            &format!(
                "ingest into PostgreSQL with {} instance{} (embedded brokers, PUBACK after the commit)",
                r.instances,
                if r.instances == 1 { "" } else { "s" }
            ),
            r.rate,
            "records/s",
        )
        .note(format!(
            "{total} records from {devices} devices, {} per instance, {WINDOW} in flight each",
            devices / r.instances
        ));
        if r.instances > 1 {
            f = f.vs("one instance, the same load in the same run", one);
        }
        figures.push(f);
    }
    Ok(GroupResult {
        key: "cluster".into(),
        title: "Several instances on one PostgreSQL".into(),
        date: String::new(),
        machine: String::new(),
        quick: ctx.quick,
        command: String::new(),
        commands,
        figures,
        notes: vec![
            "Each run starts fresh instances on the same database (its rows of earlier runs stay; \
             the machines' ids differ per run). The instances, PostgreSQL and the load generator \
             share this machine's two cores: the figures show what extra instances cost or gain \
             here, not what they would add on machines of their own. Through an embedded broker a \
             connection has one record in the server at a time, so each instance's writer commits \
             small batches one after another, each waiting for its fsync; with two instances two \
             writers wait at once and PostgreSQL groups their commits, which is most likely where the gain of \
             the second instance comes from. A third adds nothing on two cores."
                .into(),
            "The time from a `kill -9` of an instance to every machine online again on the \
             survivors is measured by `cargo test -p rvm-fleet-tests --test cluster_failover` \
             (200 simulated machines, three instances): see \"Instance failover\" below."
                .into(),
        ],
    })
}

/// `n` instances on `pg`, `devices` machines spread evenly over their brokers.
fn ingest(
    ctx: &Ctx,
    certs: &common::pki::CertDir,
    pg: &PgCluster,
    n: usize,
    devices: usize,
    per_device: u64,
) -> anyhow::Result<Run> {
    let mut servers = Vec::new();
    for k in 0..n {
        let storage = format!(
            "backend = \"postgres\"\nurl = \"{}\"\n[cluster]\ninstance_id = \"bench-{n}-{k}\"\n",
            pg.url(DB)
        );
        servers.push(FleetServer::start(
            ctx,
            &ctx.dir(&format!("cluster/{n}/{k}"))?,
            certs,
            &ServerSpec {
                storage,
                ..Default::default()
            },
        )?);
    }
    let targets: Vec<(u16, String, usize)> = servers
        .iter()
        .enumerate()
        .map(|(k, s)| (s.mqtt, format!("n{n}i{k}d"), devices / n))
        .collect();
    let published = ctx
        .rt
        .block_on(mqtt::publish_load_to(certs, &targets, per_device, WINDOW))?;
    let total = devices as u64 / n as u64 * n as u64 * per_device;
    let stored: u64 = pg
        .psql(
            DB,
            &format!("SELECT count(*) FROM telemetry WHERE device LIKE 'n{n}i%'"),
        )?
        .parse()?;
    anyhow::ensure!(
        stored == total,
        "{n} instances: PostgreSQL holds {stored} of {total} rows"
    );
    let cmds = servers.iter().map(|s| s.proc.cmdline.clone()).collect();
    for s in &mut servers {
        s.proc.terminate(procs::TERM_GRACE);
    }
    Ok(Run {
        instances: n,
        rate: total as f64 / published.elapsed.as_secs_f64(),
        cmds,
    })
}
