//! The rest of the API from the command line: the device list and one device, a metric's
//! history, a rollout's progress, incidents, the audit log, who the token is, tokens, the fleet report and the
//! history export. Every call goes through [`crate::api::api`] (or [`api_text`] for CSV and
//! HTML); listings print a table or, with `--output json`, the server's answer.
//!
//! Time flags (`--from`, `--to`) take RFC 3339 (`2026-12-07T10:00:00Z`) or milliseconds since
//! the epoch; the API's history routes want milliseconds, so RFC 3339 is converted here.

use std::path::PathBuf;

use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;

use crate::Remote;
use crate::api::{api, api_text, block_on};
use crate::output::{OutputArg, Table, items, num, print, s, time};

/// `--from`/`--to` as milliseconds: RFC 3339 or a number of milliseconds.
pub fn to_ms(flag: &str, v: &str) -> anyhow::Result<String> {
    let v = v.trim();
    if v.parse::<i64>().is_ok() {
        return Ok(v.to_string());
    }
    v.parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond().to_string())
        .map_err(|_| {
            anyhow::anyhow!(
                "{flag} {v:?}: give RFC 3339 (2026-12-07T10:00:00Z) or milliseconds since the epoch"
            )
        })
}

/// `?k=v&...` of the pairs that are set (values are ids, names and numbers: no encoding).
fn query(pairs: &[(&str, Option<String>)]) -> String {
    let q: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .collect();
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

fn get(remote: &Remote, path: &str) -> anyhow::Result<Value> {
    block_on(api(remote, Method::GET, path, None))
}

pub fn devices(remote: &Remote, out: &OutputArg) -> anyhow::Result<()> {
    let v = get(remote, "/api/v1/devices")?;
    print(out.output, &v, |v| {
        let mut t = Table::new(&[
            "DEVICE",
            "STATUS",
            "SITE",
            "CPU%",
            "MEM%",
            "GPU%",
            "LAST SEEN",
            "REASON",
        ]);
        for d in items(v, "devices") {
            let m = &d["metrics"];
            t.row(vec![
                s(&d["id"]),
                s(&d["status"]),
                s(&d["site"]),
                num(&m["cpu.usage_pct"], 1),
                num(&m["memory.used_pct"], 1),
                num(&m["gpu.load_pct"], 1),
                time(&d["last_seen_ms"]),
                s(&d["status_reason"]),
            ]);
        }
        t
    })
}

/// One device: what it is, how it is, and its latest metrics.
pub fn device(remote: &Remote, id: &str, out: &OutputArg) -> anyhow::Result<()> {
    let v = get(remote, &format!("/api/v1/devices/{id}"))?;
    print(out.output, &v, |d| {
        let mut t = Table::new(&["FIELD", "VALUE"]);
        for k in [
            "id",
            "status",
            "status_reason",
            "site",
            "agent_version",
            "vision_model_version",
            "board",
            "jetpack",
        ] {
            t.row(vec![k.to_string(), s(&d[k])]);
        }
        let tags: Vec<String> = items(d, "tags").iter().map(s).collect();
        t.row(vec!["tags".into(), tags.join(",")]);
        t.row(vec!["last_seen".into(), time(&d["last_seen_ms"])]);
        if let Some(m) = d["metrics"].as_object() {
            for (k, v) in m {
                t.row(vec![k.clone(), num(v, 2)]);
            }
        }
        t
    })
}

pub struct HistoryArgs<'a> {
    pub id: &'a str,
    pub metric: &'a str,
    pub from: Option<&'a str>,
    pub to: Option<&'a str>,
    pub step: Option<&'a str>,
}

/// A metric's history: raw points or 1-minute min/max/avg, as the API decides from `step`.
pub fn history(remote: &Remote, a: &HistoryArgs, out: &OutputArg) -> anyhow::Result<()> {
    let q = query(&[
        ("name", Some(a.metric.to_string())),
        ("from", a.from.map(|f| to_ms("--from", f)).transpose()?),
        ("to", a.to.map(|t| to_ms("--to", t)).transpose()?),
        ("step", a.step.map(str::to_string)),
    ]);
    let v = get(remote, &format!("/api/v1/devices/{}/metrics{q}", a.id))?;
    print(out.output, &v, |v| {
        let mut t = Table::new(&["TIME", "MIN", "MAX", "AVG"]);
        for p in items(v, "points") {
            t.row(vec![time(&p[0]), num(&p[1], 2), num(&p[2], 2), num(&p[3], 2)]);
        }
        t
    })?;
    if out.output == crate::output::Format::Table {
        eprintln!(
            "{} point(s) of {} ({})",
            items(&v, "points").len(),
            s(&v["name"]),
            s(&v["resolution"])
        );
    }
    Ok(())
}

/// A rollout's state and progress (`fleetctl cmd rollout` starts one).
pub fn rollout(remote: &Remote, id: &str, out: &OutputArg) -> anyhow::Result<()> {
    let v = get(remote, &format!("/api/v1/rollouts/{id}"))?;
    print(out.output, &v, |r| {
        let p = &r["progress"];
        let mut t = Table::new(&[
            "ID",
            "STATE",
            "DISPATCHED",
            "REMAINING",
            "SUCCEEDED",
            "FAILED",
            "PENDING",
            "DETAIL",
        ]);
        t.row(vec![
            s(&r["id"]),
            s(&r["state"]),
            s(&p["dispatched"]),
            s(&p["remaining"]),
            s(&p["succeeded"]),
            s(&p["failed"]),
            s(&p["pending"]),
            s(&r["detail"]),
        ]);
        t
    })
}

/// Open incidents, then recent ones.
pub fn incidents(remote: &Remote, out: &OutputArg) -> anyhow::Result<()> {
    let v = get(remote, "/api/v1/incidents")?;
    print(out.output, &v, |v| {
        let mut t = Table::new(&[
            "ID",
            "STATE",
            "KIND",
            "SITE",
            "MACHINES",
            "OPENED",
            "PROBABLE CAUSE",
        ]);
        for i in items(v, "open").iter().chain(items(v, "recent")) {
            t.row(vec![
                s(&i["id"]),
                s(&i["state"]),
                s(&i["kind"]),
                s(&i["site"]),
                items(i, "devices").len().to_string(),
                time(&i["opened_ms"]),
                s(&i["probable_cause"]),
            ]);
        }
        t
    })
}

/// The newest audit entries (operator).
pub fn audit(remote: &Remote, limit: Option<usize>, out: &OutputArg) -> anyhow::Result<()> {
    let v = get(
        remote,
        &format!(
            "/api/v1/audit{}",
            query(&[("limit", limit.map(|n| n.to_string()))])
        ),
    )?;
    print(out.output, &v, |v| {
        let mut t = Table::new(&["TIME", "WHO", "ACTION", "TARGET", "COMMENT"]);
        for e in items(v, "entries") {
            let at = if e["at_ms"].is_null() {
                &e["ts_ms"]
            } else {
                &e["at_ms"]
            };
            let comment = [&e["comment"], &e["reason"]]
                .into_iter()
                .find_map(|c| c.as_str().filter(|c| !c.is_empty()))
                .unwrap_or("-");
            t.row(vec![
                time(at),
                s(&e["who"]),
                s(&e["action"]),
                s(&e["target"]),
                comment.to_string(),
            ]);
        }
        t
    })
}

pub fn whoami(remote: &Remote, out: &OutputArg) -> anyhow::Result<()> {
    let v = get(remote, "/api/v1/whoami")?;
    print(out.output, &v, |v| {
        let mut t = Table::new(&["NAME", "ROLE", "SCOPE"]);
        t.row(vec![s(&v["name"]), s(&v["role"]), scope_text(&v["scope"])]);
        t
    })
}

/// A token's scope as `fleetctl --scope` takes it (`site=S`, `retailer=R`), `all` for none.
fn scope_text(v: &Value) -> String {
    match serde_json::from_value::<fleet_server::auth::Scope>(v.clone()) {
        Ok(scope) => scope.to_string(),
        Err(_) => "all".into(),
    }
}

/// `fleetctl tokens`: the server's API tokens through the API (admin); `fleetctl token`
/// does the same on the store itself.
#[derive(Subcommand)]
pub enum TokensCmd {
    /// List tokens: name, role, created, expires (never the secret).
    List {
        #[command(flatten)]
        output: OutputArg,
        #[command(flatten)]
        remote: Remote,
    },
    /// Create a token; prints the secret once.
    Create {
        name: String,
        /// viewer, operator or admin.
        #[arg(long)]
        role: String,
        /// Limit it to one store (`site=STORE`) or a retailer (`retailer=RETAILER`).
        #[arg(long, value_name = "site=S|retailer=R")]
        scope: Option<fleet_server::auth::Scope>,
        #[command(flatten)]
        remote: Remote,
    },
}

pub fn tokens(cmd: TokensCmd) -> anyhow::Result<()> {
    match cmd {
        TokensCmd::List { output, remote } => {
            let v = get(&remote, "/api/v1/tokens")?;
            print(output.output, &v, |v| {
                let mut t = Table::new(&["NAME", "ROLE", "SCOPE", "CREATED", "EXPIRES"]);
                for k in items(v, "tokens") {
                    t.row(vec![
                        s(&k["name"]),
                        s(&k["role"]),
                        scope_text(&k["scope"]),
                        time(&k["created_ms"]),
                        time(&k["expires_ms"]),
                    ]);
                }
                t
            })
        }
        TokensCmd::Create {
            name,
            role,
            scope,
            remote,
        } => {
            let body = serde_json::json!({ "name": name, "role": role, "scope": scope });
            let v = block_on(api(&remote, Method::POST, "/api/v1/tokens", Some(body)))?;
            println!("{}", s(&v["token"]));
            eprintln!(
                "token {} ({}): keep it, it is shown once",
                s(&v["name"]),
                s(&v["role"])
            );
            Ok(())
        }
    }
}

/// Writes `text` to `out`, or to standard output.
fn emit(text: &str, out: Option<&PathBuf>) -> anyhow::Result<()> {
    match out {
        Some(p) => {
            std::fs::write(p, text).map_err(|e| anyhow::anyhow!("--out {}: {e}", p.display()))?;
            eprintln!("wrote {} ({} bytes)", p.display(), text.len());
        }
        None => print!("{text}"),
    }
    Ok(())
}

/// The HTML fleet report of a range (default: the last 24 hours).
pub fn report(
    remote: &Remote,
    from: Option<&str>,
    to: Option<&str>,
    out: Option<&PathBuf>,
) -> anyhow::Result<()> {
    let q = query(&[
        ("from", from.map(|f| to_ms("--from", f)).transpose()?),
        ("to", to.map(|t| to_ms("--to", t)).transpose()?),
    ]);
    let html = block_on(api_text(remote, Method::GET, &format!("/api/v1/report{q}"), None))?;
    emit(&html, out)
}

/// The history export through the API (`fleetctl export` without `--config` or `--data-dir`).
pub fn export(remote: &Remote, a: &crate::store::ExportArgs) -> anyhow::Result<()> {
    let q = query(&[
        ("format", a.format.clone()),
        ("from", a.from.as_deref().map(|f| to_ms("--from", f)).transpose()?),
        ("to", a.to.as_deref().map(|t| to_ms("--to", t)).transpose()?),
        ("devices", a.devices.clone()),
        ("metrics", a.metrics.clone()),
        ("resolution", a.resolution.clone()),
    ]);
    let body = block_on(api_text(remote, Method::GET, &format!("/api/v1/export{q}"), None))?;
    emit(&body, a.out.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_flags_take_rfc3339_or_milliseconds_and_name_the_flag() {
        assert_eq!(to_ms("--from", "2026-12-07T10:00:00Z").unwrap(), "1796637600000");
        assert_eq!(to_ms("--from", "1796637600000").unwrap(), "1796637600000");
        assert!(to_ms("--to", "noon").unwrap_err().to_string().starts_with("--to"));
        assert_eq!(query(&[("a", Some("1".into())), ("b", None)]), "?a=1");
        assert_eq!(query(&[("a", None)]), "");
    }
}
