//! `fleetctl cmd`: send an action to one machine (or a dry run of it), approve another
//! operator's disruptive one, start a rollout (health-gated with `--gate`), follow it, resume
//! or abort it.

use crate::Remote;
use crate::api::{api, block_on};

#[derive(clap::Subcommand)]
pub enum CmdCmd {
    /// Send an action to one machine and wait for its result (--no-wait to return at once).
    Send {
        device: String,
        /// restart_unit, restart_process, drop_caches, clean_temp, restart_network, reboot,
        /// collect_diagnostics, reset_camera
        action: String,
        /// The unit, process, interface or camera the action is for.
        #[arg(long)]
        target: Option<String>,
        #[arg(long, default_value_t = 300)]
        ttl_s: u64,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        no_wait: bool,
        /// The agent validates it (signature, target, allow list, interlock, rate limits) and
        /// answers what it would do, without doing it.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Approve a disruptive command another operator requested (it is sent then).
    Approve {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show one command.
    Get {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// A machine's commands, newest first.
    List {
        device: String,
        #[command(flatten)]
        output: crate::output::OutputArg,
        #[command(flatten)]
        remote: Remote,
    },
    /// One action across a site, a tag or the whole fleet, at a rate, stopping when too many fail.
    Rollout {
        action: String,
        #[arg(long)]
        target: Option<String>,
        /// `all`, `site=NAME` or `tag=NAME`.
        #[arg(long = "to", default_value = "all")]
        to: String,
        #[arg(long, default_value_t = 10)]
        per_minute: u32,
        #[arg(long, default_value_t = 20.0)]
        abort_failed_pct: f64,
        #[arg(long, default_value_t = 600)]
        ttl_s: u64,
        #[arg(long)]
        reason: String,
        /// Health gate: pause, then abort, when machines that ran it got worse than before.
        #[arg(long)]
        gate: bool,
        /// Gate: seconds each machine is watched before and after its command.
        #[arg(long, default_value_t = 120)]
        settle_s: u64,
        /// Gate: a machine whose accepted rate fell by more than this is worse.
        #[arg(long, default_value_t = 30.0)]
        max_accepted_drop_pct: f64,
        /// Gate: a machine whose reject ratio rose by more than this many points is worse.
        #[arg(long, default_value_t = 10.0)]
        max_reject_ratio_rise_pct: f64,
        /// Gate: a paused rollout aborts after this many seconds without a resume.
        #[arg(long, default_value_t = 900)]
        pause_s: u64,
        /// Gate: machines per batch (default: --per-minute).
        #[arg(long)]
        batch_size: Option<u32>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Rollouts, newest first.
    Rollouts {
        #[command(flatten)]
        remote: Remote,
    },
    /// Show one rollout, its progress and its gate's findings per machine.
    RolloutGet {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Resume a paused rollout (its findings stand overridden, in your name).
    Resume {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Abort a running or paused rollout: no further machine gets it.
    Abort {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
}

pub fn print_rollout(r: &serde_json::Value) {
    let p = &r["progress"];
    println!(
        "{}  {}  {}  dispatched {} remaining {} succeeded {} failed {} healthy {} worse {}{}",
        r["id"].as_str().unwrap_or("?"),
        r["state"].as_str().unwrap_or("?"),
        r["action"],
        p["dispatched"],
        p["remaining"],
        p["succeeded"],
        p["failed"],
        p["healthy"],
        p["worse"],
        r["detail"]
            .as_str()
            .map(|d| format!("\n  {d}"))
            .unwrap_or_default()
    );
}

/// The JSON form of an action from its name and target.
pub fn action_json(name: &str, target: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let need = |what: &str| {
        target
            .map(str::to_string)
            .ok_or_else(|| anyhow::anyhow!("{name} needs --target {what}"))
    };
    Ok(match name {
        "restart_unit" => serde_json::json!({ "restart_unit": { "unit": need("UNIT")? } }),
        "restart_process" => serde_json::json!({ "restart_process": { "name": need("PROCESS")? } }),
        "restart_network" => serde_json::json!({ "restart_network": { "interface": need("INTERFACE")? } }),
        "reset_camera" => serde_json::json!({ "reset_camera": { "camera": need("CAMERA")? } }),
        "drop_caches" | "clean_temp" | "reboot" | "collect_diagnostics" => serde_json::json!(name),
        _ => anyhow::bail!(
            "unknown action {name:?} (restart_unit, restart_process, drop_caches, clean_temp, restart_network, reboot, collect_diagnostics, reset_camera)"
        ),
    })
}

pub fn print_command(c: &serde_json::Value) {
    println!(
        "{}  {}  {}{}  {}{}{}",
        c["id"].as_str().unwrap_or("?"),
        c["device"].as_str().unwrap_or("?"),
        c["state"].as_str().unwrap_or("?"),
        if c["dry_run"] == true { " (dry run)" } else { "" },
        c["action"],
        c["approved_by"]
            .as_str()
            .map(|a| format!("  approved by {a}"))
            .unwrap_or_default(),
        c["detail"]
            .as_str()
            .map(|d| format!("  ({d})"))
            .unwrap_or_default()
    );
    if let Some(o) = c["output"].as_str().filter(|o| !o.is_empty()) {
        println!("{o}");
    }
}

pub fn cmd(cmd: CmdCmd) -> anyhow::Result<()> {
    let cmd_name = match &cmd {
        CmdCmd::Resume { .. } => "resume",
        _ => "",
    };
    block_on(async move {
        match cmd {
            CmdCmd::Send {
                device,
                action,
                target,
                ttl_s,
                reason,
                no_wait,
                dry_run,
                remote,
            } => {
                let body = serde_json::json!({ "action": action_json(&action, target.as_deref())?, "ttl_s": ttl_s, "reason": reason, "dry_run": dry_run });
                let c = api(
                    &remote,
                    reqwest::Method::POST,
                    &format!("/api/v1/devices/{device}/commands"),
                    Some(body),
                )
                .await?;
                let id = c["id"].as_str().unwrap_or_default().to_string();
                if no_wait {
                    print_command(&c);
                    return anyhow::Ok(());
                }
                if c["state"] == "awaiting_approval" {
                    eprintln!(
                        "{id} needs a second operator's approval: `fleetctl cmd approve {id}` by another operator"
                    );
                }
                eprintln!("sent {id}; waiting for the result (ttl {ttl_s} s)");
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(ttl_s + 90);
                loop {
                    let c = api(
                        &remote,
                        reqwest::Method::GET,
                        &format!("/api/v1/commands/{id}"),
                        None,
                    )
                    .await?;
                    let st = c["state"].as_str().unwrap_or("");
                    if ["succeeded", "failed", "rejected", "expired", "timed_out"].contains(&st) {
                        print_command(&c);
                        anyhow::ensure!(st == "succeeded", "command {id} ended {st}");
                        return anyhow::Ok(());
                    }
                    anyhow::ensure!(std::time::Instant::now() < deadline, "command {id} still {st}");
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
            }
            CmdCmd::Approve { id, remote } => {
                let c = api(
                    &remote,
                    reqwest::Method::POST,
                    &format!("/api/v1/commands/{id}/approve"),
                    None,
                )
                .await?;
                print_command(&c);
            }
            CmdCmd::Rollouts { remote } => {
                let v = api(&remote, reqwest::Method::GET, "/api/v1/rollouts", None).await?;
                for r in v["rollouts"].as_array().cloned().unwrap_or_default() {
                    print_rollout(&r);
                }
            }
            CmdCmd::RolloutGet { id, remote } => {
                let r = api(
                    &remote,
                    reqwest::Method::GET,
                    &format!("/api/v1/rollouts/{id}"),
                    None,
                )
                .await?;
                print_rollout(&r);
                for m in r["machines"].as_array().cloned().unwrap_or_default() {
                    println!("  {}  {}", m["device"].as_str().unwrap_or("?"), m["verdict"]);
                }
            }
            CmdCmd::Resume { id, remote } | CmdCmd::Abort { id, remote } => {
                let verb = if matches!(cmd_name, "resume") {
                    "resume"
                } else {
                    "abort"
                };
                let r = api(
                    &remote,
                    reqwest::Method::POST,
                    &format!("/api/v1/rollouts/{id}/{verb}"),
                    None,
                )
                .await?;
                print_rollout(&r);
            }
            CmdCmd::Get { id, remote } => {
                print_command(
                    &api(
                        &remote,
                        reqwest::Method::GET,
                        &format!("/api/v1/commands/{id}"),
                        None,
                    )
                    .await?,
                );
            }
            CmdCmd::List {
                device,
                output,
                remote,
            } => {
                let v = api(
                    &remote,
                    reqwest::Method::GET,
                    &format!("/api/v1/devices/{device}/commands"),
                    None,
                )
                .await?;
                if crate::output::printed_json(&output, &v)? {
                    return Ok(());
                }
                for c in v["commands"].as_array().cloned().unwrap_or_default() {
                    print_command(&c);
                }
            }
            CmdCmd::Rollout {
                action,
                target,
                to,
                per_minute,
                abort_failed_pct,
                ttl_s,
                reason,
                gate,
                settle_s,
                max_accepted_drop_pct,
                max_reject_ratio_rise_pct,
                pause_s,
                batch_size,
                remote,
            } => {
                let target_json = match to.split_once('=') {
                    None if to == "all" => serde_json::json!("all"),
                    Some(("site", v)) => serde_json::json!({ "site": v }),
                    Some(("tag", v)) => serde_json::json!({ "tag": v }),
                    _ => anyhow::bail!("--to {to:?}: all, site=NAME or tag=NAME"),
                };
                let mut body = serde_json::json!({
                    "action": action_json(&action, target.as_deref())?, "target": target_json,
                    "per_minute": per_minute, "abort_failed_pct": abort_failed_pct, "ttl_s": ttl_s, "reason": reason,
                });
                if gate {
                    body["gate"] = serde_json::json!({
                        "settle_s": settle_s, "max_accepted_drop_pct": max_accepted_drop_pct,
                        "max_reject_ratio_rise_pct": max_reject_ratio_rise_pct, "pause_s": pause_s,
                    });
                }
                if let Some(b) = batch_size {
                    body["batch_size"] = serde_json::json!(b);
                }
                let r = api(&remote, reqwest::Method::POST, "/api/v1/rollouts", Some(body)).await?;
                println!(
                    "rollout {} started; follow with `fleetctl cmd rollout-get {}`",
                    r["id"].as_str().unwrap_or("?"),
                    r["id"].as_str().unwrap_or("?")
                );
            }
        }
        anyhow::Ok(())
    })
}
