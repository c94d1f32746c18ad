//! Calls to the fleet server's API (`ack`, `silence`), printed as tables, and
//! [`api`], the one HTTP client every remote subcommand uses.

use crate::Remote;

pub fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

pub fn ack(remote: &Remote, id: &str, comment: &str) -> anyhow::Result<()> {
    block_on(async {
        let path = format!("/api/v1/alerts/{id}/ack");
        let body = serde_json::json!({ "comment": comment });
        let a = api(remote, reqwest::Method::POST, &path, Some(body)).await?;
        println!(
            "acknowledged {} by {}",
            a["id"].as_str().unwrap_or(id),
            a["ack"]["by"].as_str().unwrap_or("?")
        );
        anyhow::Ok(())
    })
}

pub fn silence(
    remote: &Remote,
    matchers: Vec<(String, String)>,
    duration_s: Option<u64>,
    comment: &str,
    list: bool,
    remove: Option<String>,
    output: &crate::output::OutputArg,
) -> anyhow::Result<()> {
    block_on(async {
        if list {
            let v = api(remote, reqwest::Method::GET, "/api/v1/silences", None).await?;
            if crate::output::printed_json(output, &v)? {
                return Ok(());
            }
            println!(
                "{:<12} {:<20} {:<12} {:<32} COMMENT",
                "ID", "EXPIRES", "BY", "MATCH"
            );
            for s in v["silences"].as_array().cloned().unwrap_or_default() {
                let m: Vec<String> = s["matchers"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|m| {
                        format!(
                            "{}={}",
                            m["label"].as_str().unwrap_or("?"),
                            m["value"].as_str().unwrap_or("?")
                        )
                    })
                    .collect();
                println!(
                    "{:<12} {:<20} {:<12} {:<32} {}",
                    s["id"].as_str().unwrap_or("?"),
                    crate::output::time(&s["expires_ms"]),
                    s["created_by"].as_str().unwrap_or("?"),
                    m.join(","),
                    s["comment"].as_str().unwrap_or("")
                );
            }
            return Ok(());
        }
        if let Some(id) = remove {
            api(
                remote,
                reqwest::Method::DELETE,
                &format!("/api/v1/silences/{id}"),
                None,
            )
            .await?;
            println!("removed silence {id}");
            return Ok(());
        }
        anyhow::ensure!(
            !matchers.is_empty(),
            "--match label=value is required (repeat for more)"
        );
        let duration_s = duration_s.ok_or_else(|| anyhow::anyhow!("--for DURATION is required (e.g. 2h)"))?;
        let body = serde_json::json!({
            "matchers": matchers
                .iter()
                .map(|(l, v)| serde_json::json!({ "label": l, "value": v }))
                .collect::<Vec<_>>(),
            "duration_s": duration_s,
            "comment": comment,
        });
        let s = api(remote, reqwest::Method::POST, "/api/v1/silences", Some(body)).await?;
        println!(
            "silence {} until {}",
            s["id"].as_str().unwrap_or("?"),
            crate::output::time(&s["expires_ms"])
        );
        anyhow::Ok(())
    })
}

/// One API call answered with JSON; an error status becomes an error with the server's message.
pub async fn api(
    remote: &Remote,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<serde_json::Value> {
    let text = api_text(remote, method, path, body).await?;
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    Ok(serde_json::from_str(&text)?)
}

/// One API call, its answer as text (CSV exports, the HTML report); errors as [`api`].
pub async fn api_text(
    remote: &Remote,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<String> {
    let base = remote.server.trim_end_matches('/');
    anyhow::ensure!(
        base.starts_with("http://"),
        "--server must start with http:// (got {base}; put a TLS proxy in front for https)"
    );
    let url = format!("{base}{path}");
    let mut req = reqwest::Client::new().request(method.clone(), &url).bearer_auth(
        remote
            .token
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("--token (or FLEET_TOKEN) is needed to ask the server"))?,
    );
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{method} {url}: {e}"))?;
    let status = resp.status();
    let text = resp.text().await?;
    if !status.is_success() {
        let msg = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or(text);
        anyhow::bail!("{method} {path}: the server answered {status}: {msg}");
    }
    Ok(text)
}
