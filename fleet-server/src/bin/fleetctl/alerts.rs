//! `fleetctl alerts` (the list with the API's filters) and `fleetctl resolve` (close a firing
//! alert by hand with a comment); `ack` and `silence` are in [`crate::api`].

use clap::Args;
use reqwest::Method;

use crate::Remote;
use crate::api::{api, block_on};
use crate::output::{OutputArg, Table, items, num, print, s, time};

/// The filters of `GET /api/v1/alerts`, passed as they are (the server names a bad one).
#[derive(Args, Clone, Debug, Default)]
pub struct AlertFilter {
    /// firing, pending, resolved, acknowledged or all (default: active; all with --from/--to).
    #[arg(long)]
    pub state: Option<String>,
    /// Active at some time after this: RFC 3339 (2026-12-07T10:00:00Z) or ms since the epoch.
    #[arg(long)]
    pub from: Option<String>,
    /// Active at some time before this (RFC 3339 or ms).
    #[arg(long)]
    pub to: Option<String>,
    /// info, warning, critical (comma-separated for several).
    #[arg(long)]
    pub severity: Option<String>,
    #[arg(long)]
    pub site: Option<String>,
    #[arg(long)]
    pub rule: Option<String>,
    #[arg(long)]
    pub device: Option<String>,
    #[arg(long)]
    pub limit: Option<usize>,
}

impl AlertFilter {
    /// The query string (`?state=...&site=...`), empty without filters.
    pub fn query(&self) -> String {
        let pairs = [
            ("state", self.state.clone()),
            ("from", self.from.clone()),
            ("to", self.to.clone()),
            ("severity", self.severity.clone()),
            ("site", self.site.clone()),
            ("rule", self.rule.clone()),
            ("device", self.device.clone()),
            ("limit", self.limit.map(|n| n.to_string())),
        ];
        let q: Vec<String> = pairs
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
            .collect();
        if q.is_empty() {
            String::new()
        } else {
            format!("?{}", q.join("&"))
        }
    }
}

/// Percent-encodes a query value (RFC 3339 times carry `+` and `:`).
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b',' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn list(remote: &Remote, filter: &AlertFilter, out: &OutputArg) -> anyhow::Result<()> {
    let v = block_on(api(
        remote,
        Method::GET,
        &format!("/api/v1/alerts{}", filter.query()),
        None,
    ))?;
    print(out.output, &v, |v| {
        let mut t = Table::new(&[
            "ID", "STATE", "SEVERITY", "DEVICE", "SITE", "SINCE", "VALUE", "HANDLED", "SUMMARY",
        ]);
        for a in items(v, "alerts") {
            let mut state = s(&a["state"]);
            if a["silenced_by"].is_string() {
                state.push('*');
            }
            let handled = if a["resolved_by"].is_object() {
                format!("resolved by {}", s(&a["resolved_by"]["by"]))
            } else if a["ack"].is_object() {
                format!("ack by {}", s(&a["ack"]["by"]))
            } else {
                "-".into()
            };
            t.row(vec![
                s(&a["id"]),
                state,
                s(&a["severity"]),
                s(&a["device"]),
                s(&a["labels"]["site"]),
                time(if a["fired_ms"].is_null() {
                    &a["started_ms"]
                } else {
                    &a["fired_ms"]
                }),
                num(&a["value"], 2),
                handled,
                s(&a["summary"]),
            ]);
        }
        t
    })?;
    if out.output == crate::output::Format::Table {
        eprintln!(
            "{} alert(s) ({}; * = silenced)",
            items(&v, "alerts").len(),
            v["state"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

pub fn resolve(remote: &Remote, id: &str, comment: &str) -> anyhow::Result<()> {
    let path = format!("/api/v1/alerts/{id}/resolve");
    let body = serde_json::json!({ "comment": comment });
    let a = block_on(api(remote, Method::POST, &path, Some(body)))?;
    println!(
        "resolved {} by {}: {}",
        s(&a["id"]),
        s(&a["resolved_by"]["by"]),
        s(&a["resolved_by"]["comment"])
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_an_encoded_query_string() {
        assert_eq!(AlertFilter::default().query(), "");
        let f = AlertFilter {
            from: Some("2026-12-07T10:00:00+01:00".into()),
            severity: Some("warning,critical".into()),
            site: Some("oslo".into()),
            ..Default::default()
        };
        assert_eq!(
            f.query(),
            "?from=2026-12-07T10%3A00%3A00%2B01%3A00&severity=warning,critical&site=oslo"
        );
    }
}
