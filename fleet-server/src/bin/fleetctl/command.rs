//! `fleetctl command`: send an action to one machine or start a rollout, and follow it.

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
        #[command(flatten)]
        remote: Remote,
    },
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
        "{}  {}  {}  {}{}",
        c["id"].as_str().unwrap_or("?"),
        c["device"].as_str().unwrap_or("?"),
        c["state"].as_str().unwrap_or("?"),
        c["action"],
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
    block_on(async move {
        match cmd {
            CmdCmd::Send {
                device,
                action,
                target,
                ttl_s,
                reason,
                no_wait,
                remote,
            } => {
                let body = serde_json::json!({ "action": action_json(&action, target.as_deref())?, "ttl_s": ttl_s, "reason": reason });
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
                remote,
            } => {
                let target_json = match to.split_once('=') {
                    None if to == "all" => serde_json::json!("all"),
                    Some(("site", v)) => serde_json::json!({ "site": v }),
                    Some(("tag", v)) => serde_json::json!({ "tag": v }),
                    _ => anyhow::bail!("--to {to:?}: all, site=NAME or tag=NAME"),
                };
                let body = serde_json::json!({
                    "action": action_json(&action, target.as_deref())?, "target": target_json,
                    "per_minute": per_minute, "abort_failed_pct": abort_failed_pct, "ttl_s": ttl_s, "reason": reason,
                });
                let r = api(&remote, reqwest::Method::POST, "/api/v1/rollouts", Some(body)).await?;
                println!(
                    "rollout {} started; follow with GET /api/v1/rollouts/{}",
                    r["id"].as_str().unwrap_or("?"),
                    r["id"].as_str().unwrap_or("?")
                );
            }
        }
        anyhow::Ok(())
    })
}
