//! Command round trip: `POST /api/v1/devices/{id}/commands` until `GET /api/v1/commands/{id}`
//! says `succeeded`, one at a time on loopback and one fanned out to 1,000 simulated machines.
//! Measured only when the server has the commands API; otherwise the figures say so.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::figure::{Figure, GroupResult, at_most};
use crate::procs::percentile;
use crate::setup::{self, Ctx, FleetServer, ServerSpec};

const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
const MACHINES: usize = 1000;

fn group(figures: Vec<Figure>, commands: Vec<String>, notes: Vec<String>, quick: bool) -> GroupResult {
    GroupResult {
        key: "commands".into(),
        title: "Command round trip".into(),
        date: String::new(),
        machine: String::new(),
        quick,
        command: String::new(),
        commands,
        figures,
        notes,
    }
}

async fn post(ctx: &Ctx, s: &FleetServer, device: &str) -> anyhow::Result<(u16, Value)> {
    let r = ctx
        .http
        .post(format!(
            "http://127.0.0.1:{}/api/v1/devices/{device}/commands",
            s.http
        ))
        .bearer_auth(&s.token)
        .json(&json!({"action": "drop_caches", "ttl_s": 60, "reason": "bench"}))
        .send()
        .await?;
    let status = r.status().as_u16();
    let text = r.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
}

/// Polls a command until it ends: its final state and when that was seen.
async fn settle(ctx: &Ctx, s: &FleetServer, id: &str) -> (String, Instant) {
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        if let Ok(v) = s.get(ctx, &format!("/api/v1/commands/{id}")).await {
            let st = v["state"].as_str().unwrap_or("").to_string();
            if matches!(
                st.as_str(),
                "succeeded" | "failed" | "expired" | "refused" | "cancelled"
            ) {
                return (st, Instant::now());
            }
        }
        if Instant::now() > deadline {
            return ("timed out".into(), Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub fn run(ctx: &Ctx) -> anyhow::Result<GroupResult> {
    let dir = ctx.dir("commands")?;
    let certs = setup::make_certs(&dir)?;
    let server = FleetServer::start(ctx, &dir, &certs, &ServerSpec::default())?;
    let (status, body) = ctx.rt.block_on(post(ctx, &server, "sim0000"))?;
    if status == 404 || status == 405 {
        let why = "not measured yet: commands not merged";
        eprintln!("  {why} (POST answered {status}: {body})");
        return Ok(group(
            vec![
                Figure::not_measured("command round trip p99 on loopback", why).target_only("p99 < 100 ms"),
                Figure::not_measured("one command to 1,000 simulated machines, all results", why)
                    .target_only("< 5 s"),
            ],
            vec![],
            vec![format!(
                "`POST /api/v1/devices/sim0000/commands` answered {status} on this build; the \
                 bench measures these figures as soon as it answers 201."
            )],
            ctx.quick,
        ));
    }
    eprintln!("  starting {MACHINES} simulated machines");
    let sim = setup::spawn_simulator(
        ctx,
        &certs,
        server.mqtt,
        "sim",
        MACHINES,
        0,
        1000,
        &dir.join("sim.log"),
    )?;
    setup::wait_online(ctx, &server, "sim", MACHINES, Duration::from_secs(300))?;
    std::thread::sleep(Duration::from_secs(3));
    let n = ctx.n(100, 30);
    eprintln!("  {n} commands one at a time");
    let (lat, failed, api) = ctx.rt.block_on(async {
        let mut lat = Vec::new();
        let mut api = Vec::new();
        let mut failed = Vec::new();
        for i in 0..n {
            let dev = format!("sim{:04}", i % MACHINES);
            let t = Instant::now();
            let _ = s_get(ctx, &server, &dev).await;
            api.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            let (st, v) = post(ctx, &server, &dev).await?;
            let Some(id) = v["id"].as_str().map(String::from).filter(|_| st == 201) else {
                failed.push(format!("POST {st}: {v}"));
                continue;
            };
            let (state, at) = settle(ctx, &server, &id).await;
            if state == "succeeded" {
                lat.push((at - t).as_secs_f64() * 1e3);
            } else {
                failed.push(state);
            }
        }
        anyhow::Ok((lat, failed, api))
    })?;
    eprintln!("  one command to each of {MACHINES} machines at once");
    let (fan, fan_failed) = ctx.rt.block_on(async {
        let t = Instant::now();
        let mut ids = Vec::new();
        let mut failed = 0;
        for i in 0..MACHINES {
            match post(ctx, &server, &format!("sim{i:04}")).await {
                Ok((201, v)) => ids.extend(v["id"].as_str().map(String::from)),
                _ => failed += 1,
            }
        }
        let mut last = t;
        for id in &ids {
            let (state, at) = settle(ctx, &server, id).await;
            if state != "succeeded" {
                failed += 1;
            }
            last = last.max(at);
        }
        ((last - t).as_secs_f64(), failed)
    });
    let cmds = vec![server.proc.cmdline.clone(), sim.cmdline.clone()];
    let p99 = percentile(&lat, 99.0);
    let (ok, why) = at_most(p99, 100.0, "ms");
    let (ok2, why2) = at_most(fan, 5.0, "s");
    let mut notes = vec![];
    if !failed.is_empty() {
        notes.push(format!(
            "{} of {n} commands did not succeed: {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        ));
    }
    Ok(group(
        vec![
            Figure::new("command round trip p50 on loopback", percentile(&lat, 50.0), "ms")
                .vs("GET /api/v1/devices/{id} p50", percentile(&api, 50.0)),
            Figure::new("command round trip p99 on loopback", p99, "ms")
                .vs("GET /api/v1/devices/{id} p99", percentile(&api, 99.0))
                .target("p99 < 100 ms", ok && failed.is_empty(), why),
            Figure::new("one command to 1,000 simulated machines, all results", fan, "s")
                .target("< 5 s", ok2 && fan_failed == 0, why2)
                .note(format!("{fan_failed} did not succeed")),
        ],
        cmds,
        notes,
        ctx.quick,
    ))
}

async fn s_get(ctx: &Ctx, s: &FleetServer, dev: &str) -> anyhow::Result<Value> {
    s.get(ctx, &format!("/api/v1/devices/{dev}")).await
}
