//! Command round trip: `POST /api/v1/devices/{id}/commands` until `GET /api/v1/commands/{id}`
//! says `succeeded`, one at a time on loopback and one fanned out to 1,000 simulated machines.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::figure::{Figure, GroupResult, at_most};
use crate::procs::percentile;
use crate::setup::{self, Ctx, FleetServer, ServerSpec};

const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
const MACHINES: usize = 1000;
const FAN_OUT_CONCURRENCY: usize = 32;
/// Telemetry interval of the simulated machines (the fleet-scale scenario's).
const SIM_INTERVAL_MS: u64 = 5000;
/// States a command does not leave.
const FINAL: [&str; 5] = ["succeeded", "failed", "rejected", "expired", "timed_out"];

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
    post_with(&ctx.http, s, device).await
}

async fn post_with(http: &reqwest::Client, s: &FleetServer, device: &str) -> anyhow::Result<(u16, Value)> {
    let r = http
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
            if FINAL.contains(&st.as_str()) {
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
    let server = Arc::new(FleetServer::start(ctx, &dir, &certs, &ServerSpec::default())?);
    eprintln!("  starting {MACHINES} simulated machines");
    let sim = setup::spawn_simulator(
        ctx,
        &certs,
        server.mqtt,
        "sim",
        MACHINES,
        0,
        SIM_INTERVAL_MS,
        &dir.join("sim.log"),
        &["--command-ms", "0"],
    )?;
    setup::wait_online(ctx, &server, "sim", MACHINES, Duration::from_secs(300))?;
    std::thread::sleep(Duration::from_secs(3));
    let n = ctx.n(200, 40);
    eprintln!("  {n} commands one at a time");
    let (lat, failed, api) = ctx.rt.block_on(async {
        let mut lat = Vec::new();
        let mut api = Vec::new();
        let mut failed = Vec::new();
        for i in 0..n {
            let dev = format!("sim{:04}", (i * 7) % MACHINES);
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
    eprintln!(
        "  one command to each of {MACHINES} machines at once ({FAN_OUT_CONCURRENCY} requests in flight)"
    );
    let fan = ctx.rt.block_on(fan_out(ctx, &server))?;
    eprintln!(
        "    all {} results in {:.2} s (POSTs done after {:.2} s), {} did not succeed",
        fan.ids, fan.last_result_s, fan.posted_s, fan.failed
    );
    let cmds = vec![server.proc.cmdline.clone(), sim.cmdline.clone()];
    let p99 = percentile(&lat, 99.0);
    let (ok, why) = at_most(p99, 100.0, "ms");
    let (ok2, why2) = at_most(fan.last_result_s, 5.0, "s");
    let mut notes = vec![
        format!(
            "Round trip: `POST /api/v1/devices/{{id}}/commands` (action `drop_caches`, which the \
         simulated machines answer through the agent's real command path: signature, target and \
         expiry checks, the executed-id record, accepted, running, result; `--command-ms 0`, so \
         the action itself takes no time and the figure is the system's own cost) until \
         `GET /api/v1/commands/{{id}}` shows `succeeded`, polled every 2 ms; {n} commands one at \
         a time to machines spread over the fleet, each machine also publishing telemetry every \
         {SIM_INTERVAL_MS} ms. The reference is a plain `GET /api/v1/devices/{{id}}` on the same connection."
        ),
        format!(
            "Fan-out: {MACHINES} POSTs, {FAN_OUT_CONCURRENCY} in flight at a time, one per machine; the \
         figure runs from the first POST to the last command's final state, as stamped by the \
         server (`updated_ms`, the same clock as the bench's). The POSTs themselves took {:.2} s.",
            fan.posted_s
        ),
    ];
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
                .target("p99 < 100 ms", ok && failed.is_empty(), why)
                .note(format!("{} of {n} succeeded", lat.len())),
            Figure::new(
                "one command to 1,000 simulated machines, all results",
                fan.last_result_s,
                "s",
            )
            .target("< 5 s", ok2 && fan.failed == 0 && fan.ids == MACHINES, why2)
            .note(format!("{} of {MACHINES} succeeded", fan.ids - fan.failed)),
        ],
        cmds,
        notes,
        ctx.quick,
    ))
}

struct FanOut {
    ids: usize,
    failed: usize,
    posted_s: f64,
    last_result_s: f64,
}

/// One command to every machine, [`FAN_OUT_CONCURRENCY`] POSTs in flight; then polls each
/// command until it ends and takes the server's own timestamp of its final state.
async fn fan_out(ctx: &Ctx, server: &Arc<FleetServer>) -> anyhow::Result<FanOut> {
    let t0_ms = now_ms();
    let t0 = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(FAN_OUT_CONCURRENCY));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..MACHINES {
        let (ctx_http, s, sem) = (ctx.http.clone(), server.clone(), sem.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            post_with(&ctx_http, &s, &format!("sim{i:04}")).await
        });
    }
    let mut ids = Vec::new();
    let mut failed = 0;
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok((201, v))) => ids.extend(v["id"].as_str().map(String::from)),
            _ => failed += 1,
        }
    }
    let posted_s = t0.elapsed().as_secs_f64();
    let deadline = Instant::now() + COMMAND_TIMEOUT * 3;
    let mut pending = ids.clone();
    let mut last_ms = t0_ms;
    while !pending.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for id in pending {
            let v = server
                .get(ctx, &format!("/api/v1/commands/{id}"))
                .await
                .unwrap_or(Value::Null);
            let st = v["state"].as_str().unwrap_or("");
            if FINAL.contains(&st) {
                last_ms = last_ms.max(v["updated_ms"].as_i64().unwrap_or(t0_ms));
                if st != "succeeded" {
                    failed += 1;
                }
            } else {
                still.push(id);
            }
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    failed += pending.len();
    Ok(FanOut {
        ids: ids.len(),
        failed,
        posted_s,
        last_result_s: (last_ms - t0_ms) as f64 / 1e3,
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

async fn s_get(ctx: &Ctx, s: &FleetServer, dev: &str) -> anyhow::Result<Value> {
    s.get(ctx, &format!("/api/v1/devices/{dev}")).await
}
