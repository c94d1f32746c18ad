//! Notifications and maintenance windows from the command line: `fleetctl notify channels`,
//! `notify test CHANNEL` (a test message, and what the receiver answered), `notify outbox`,
//! and `fleetctl maintenance list|add|rm`.

use clap::Subcommand;
use serde_json::Value;

use crate::Remote;
use crate::api::{api, block_on};
use crate::output::{OutputArg, printed_json};

#[derive(Subcommand)]
pub enum NotifyCmd {
    /// Every channel: kind, format, where it sends, its counters and last error.
    Channels {
        #[command(flatten)]
        output: OutputArg,
        #[command(flatten)]
        remote: Remote,
    },
    /// Send a test message to a channel now and print what the receiver answered (needs an
    /// operator token). Exits non-zero when it was not delivered.
    Test {
        channel: String,
        /// Send the test alert's resolution instead (closes what a test opened in PagerDuty
        /// or Alertmanager).
        #[arg(long)]
        resolved: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Entries of the notification outbox.
    Outbox {
        /// pending, delivered, failed or all.
        #[arg(long, default_value = "all")]
        state: String,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        output: OutputArg,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Subcommand)]
pub enum MaintenanceCmd {
    /// Every window (from the config file and added here), and whether it is open now.
    List {
        #[command(flatten)]
        output: OutputArg,
        #[command(flatten)]
        remote: Remote,
    },
    /// Add a recurring window: notifications about the machines it covers are muted while it
    /// is open (needs an operator token).
    Add {
        name: String,
        /// Machines at this site (repeat for more).
        #[arg(long = "site")]
        sites: Vec<String>,
        /// Machines with this tag (repeat for more).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// IANA time zone of `--from` and `--to`, e.g. Europe/Oslo.
        #[arg(long, default_value = "UTC")]
        time_zone: String,
        /// mon, tue, wed, thu, fri, sat, sun (repeat; default every day).
        #[arg(long = "day")]
        days: Vec<String>,
        /// Local start, HH:MM.
        #[arg(long, default_value = "00:00")]
        from: String,
        /// Local end (not included), HH:MM; 24:00 is the end of the day.
        #[arg(long, default_value = "24:00")]
        to: String,
        #[arg(long, default_value = "")]
        comment: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Remove a window added with `add` (config windows are changed in the config file).
    Rm {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("-")
}

pub fn notify(cmd: NotifyCmd) -> anyhow::Result<()> {
    block_on(async move {
        match cmd {
            NotifyCmd::Channels { output, remote } => {
                let v = api(&remote, reqwest::Method::GET, "/api/v1/notify", None).await?;
                if printed_json(&output, &v)? {
                    return Ok(());
                }
                println!(
                    "{:<16} {:<8} {:<13} {:>9} {:>7} {:>6}  {:<40} LAST ERROR",
                    "CHANNEL", "KIND", "FORMAT", "DELIVERED", "RETRIED", "FAILED", "TARGET"
                );
                for c in v["channels"].as_array().cloned().unwrap_or_default() {
                    let st = &c["stats"];
                    let n = |k: &str| st[k].as_u64().unwrap_or(0);
                    let last = match (&st["setup_error"], &st["last_error"]) {
                        (Value::String(e), _) => format!("setup: {e}"),
                        (_, e) if e.is_object() => format!("{}: {}", s(e, "kind"), s(e, "message")),
                        _ => "-".into(),
                    };
                    println!(
                        "{:<16} {:<8} {:<13} {:>9} {:>7} {:>6}  {:<40} {}",
                        s(&c, "name"),
                        s(&c, "kind"),
                        s(&c, "format"),
                        n("delivered"),
                        n("retried"),
                        n("failed"),
                        s(&c, "target"),
                        last
                    );
                }
                let o = &v["outbox"];
                eprintln!(
                    "outbox: {} pending, {} delivered, {} failed",
                    o["pending"].as_u64().unwrap_or(0),
                    o["delivered"].as_u64().unwrap_or(0),
                    o["failed"].as_u64().unwrap_or(0)
                );
            }
            NotifyCmd::Test {
                channel,
                resolved,
                remote,
            } => {
                let path = format!("/api/v1/notify/channels/{channel}/test");
                let body = serde_json::json!({ "resolved": resolved });
                let v = api(&remote, reqwest::Method::POST, &path, Some(body)).await?;
                println!("{}", describe_test(&v));
                anyhow::ensure!(
                    v["delivered"].as_bool() == Some(true),
                    "test message to {channel} not delivered"
                );
            }
            NotifyCmd::Outbox {
                state,
                limit,
                output,
                remote,
            } => {
                let path = format!("/api/v1/notify/outbox?state={state}&limit={limit}");
                let v = api(&remote, reqwest::Method::GET, &path, None).await?;
                if printed_json(&output, &v)? {
                    return Ok(());
                }
                println!(
                    "{:<10} {:>8} {:<16} {:<48} LAST ERROR",
                    "STATE", "ATTEMPTS", "CHANNEL", "NOTIFICATION"
                );
                for e in v["entries"].as_array().cloned().unwrap_or_default() {
                    println!(
                        "{:<10} {:>8} {:<16} {:<48} {}",
                        s(&e, "state"),
                        e["attempts"].as_u64().unwrap_or(0),
                        s(&e, "channel"),
                        s(&e, "notification"),
                        s(&e, "last_error")
                    );
                }
            }
        }
        anyhow::Ok(())
    })
}

/// One line for what a test message got: the receiver's answer or the error.
pub fn describe_test(v: &Value) -> String {
    let took = v["took_ms"].as_u64().unwrap_or(0);
    if v["delivered"].as_bool() == Some(true) {
        let r = &v["receipt"];
        let answer = match r["kind"].as_str() {
            Some("http") => r["answers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|a| {
                    format!(
                        "HTTP {} {}",
                        a["status"].as_u64().unwrap_or(0),
                        a["body"].as_str().unwrap_or("").trim()
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            Some("logged") => "written to the server's log".into(),
            Some("smtp") => format!(
                "SMTP {} {}",
                r["code"].as_u64().unwrap_or(0),
                r["message"].as_str().unwrap_or("").trim()
            ),
            _ => r.to_string(),
        };
        format!("delivered to {} in {took} ms: {answer}", s(v, "channel"))
    } else {
        let e = &v["error"];
        format!(
            "not delivered to {} ({took} ms): {}: {}",
            s(v, "channel"),
            s(e, "kind"),
            s(e, "message")
        )
    }
}

pub fn maintenance(cmd: MaintenanceCmd) -> anyhow::Result<()> {
    block_on(async move {
        match cmd {
            MaintenanceCmd::List { output, remote } => {
                let v = api(&remote, reqwest::Method::GET, "/api/v1/maintenance", None).await?;
                if printed_json(&output, &v)? {
                    return Ok(());
                }
                println!(
                    "{:<20} {:<7} {:<5} {:<24} {:<18} {:<28} {:<12} BY",
                    "NAME", "SOURCE", "OPEN", "SITES/#TAGS", "TIME ZONE", "DAYS", "HOURS"
                );
                for w in v["windows"].as_array().cloned().unwrap_or_default() {
                    let list = |k: &str| -> Vec<String> {
                        w[k].as_array()
                            .cloned()
                            .unwrap_or_default()
                            .iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    };
                    let scope: Vec<String> = list("sites")
                        .into_iter()
                        .chain(list("tags").into_iter().map(|t| format!("#{t}")))
                        .collect();
                    let days = list("days");
                    println!(
                        "{:<20} {:<7} {:<5} {:<24} {:<18} {:<28} {:<12} {}",
                        s(&w, "name"),
                        s(&w, "source"),
                        if w["open_now"].as_bool() == Some(true) {
                            "yes"
                        } else {
                            "no"
                        },
                        scope.join(","),
                        s(&w, "time_zone"),
                        if days.is_empty() {
                            "every day".into()
                        } else {
                            days.join(",")
                        },
                        format!("{}-{}", s(&w, "from"), s(&w, "to")),
                        w["created_by"]
                            .as_str()
                            .map_or("config file".to_string(), |b| format!("added by {b}"))
                    );
                }
            }
            MaintenanceCmd::Add {
                name,
                sites,
                tags,
                time_zone,
                days,
                from,
                to,
                comment,
                remote,
            } => {
                anyhow::ensure!(
                    !sites.is_empty() || !tags.is_empty(),
                    "give at least one --site or --tag"
                );
                let body = serde_json::json!({
                    "name": name, "sites": sites, "tags": tags, "time_zone": time_zone,
                    "days": days, "from": from, "to": to, "comment": comment,
                });
                let w = api(&remote, reqwest::Method::POST, "/api/v1/maintenance", Some(body)).await?;
                println!(
                    "maintenance window {} added ({} now)",
                    s(&w, "name"),
                    if w["open_now"].as_bool() == Some(true) {
                        "open"
                    } else {
                        "closed"
                    }
                );
            }
            MaintenanceCmd::Rm { name, remote } => {
                let path = format!("/api/v1/maintenance/{name}");
                api(&remote, reqwest::Method::DELETE, &path, None).await?;
                println!("maintenance window {name} removed");
            }
        }
        anyhow::Ok(())
    })
}
