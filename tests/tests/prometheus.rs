//! `GET /metrics` of a running fleet with simulated machines, read with a real exposition
//! parser (the `prometheus-parse` crate) and checked by Prometheus' own `promtool` (Debian
//! package `prometheus`; the test named `promtool` fails if it is missing). The Grafana
//! dashboard's PromQL may only name metrics the server exports.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use fleet_server::http::metrics::families::family_names;
use prometheus_parse::{Scrape, Value};
use rvm_fleet_tests::{FleetOptions, SimFleet, TestFleet, eventually};
use rvm_sim::simulate::{SimConfig, SimProfile};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn build_sim(devices: usize, sites: usize) -> SimConfig {
    SimConfig {
        devices,
        sites,
        prefix: "prom".into(),
        host: String::new(),
        port: 0,
        certs: Default::default(),
        interval: Duration::from_millis(300),
        first: 0,
    }
}

async fn scrape_text(fleet: &TestFleet, token: Option<&str>) -> (u16, String) {
    let mut r = fleet.http.get(fleet.url("/metrics"));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.expect("GET /metrics");
    let status = resp.status().as_u16();
    if status == 200 {
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert!(ct.starts_with("text/plain; version=0.0.4"), "content type {ct}");
    }
    (status, resp.text().await.expect("body"))
}

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("the exposition parses")
}

fn value(v: &Value) -> f64 {
    match v {
        Value::Counter(x) | Value::Gauge(x) | Value::Untyped(x) => *x,
        other => panic!("unexpected value {other:?}"),
    }
}

/// Starts a fleet with `n` simulated machines over two sites and waits for a scrape that has
/// them all online with CPU figures.
async fn fleet_with_machines(opts: FleetOptions, n: usize) -> (TestFleet, SimFleet, String) {
    let fleet = TestFleet::start_with(opts.clone()).expect("fleet starts");
    let sims = SimFleet::start(&fleet, build_sim(n, 2), SimProfile::default()).expect("sims start");
    let token = opts.metrics_token.clone();
    let text = eventually(Duration::from_secs(30), || async {
        let (status, text) = scrape_text(&fleet, token.as_deref()).await;
        let s = parse(&text);
        let online = s
            .samples
            .iter()
            .find(|x| x.metric == "rvm_fleet_devices" && x.labels.get("status") == Some("online"))
            .map(|x| value(&x.value))
            .unwrap_or(0.0);
        let cpu = s
            .samples
            .iter()
            .filter(|x| x.metric == "rvm_fleet_device_cpu_usage_percent")
            .count();
        (status == 200 && online as usize == n && cpu == n).then_some(text)
    })
    .await
    .expect("every machine online with figures in /metrics within 30 s");
    (fleet, sims, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_metrics_parse_with_a_real_parser_and_label_every_machine() {
    let (_fleet, sims, text) = fleet_with_machines(FleetOptions::default(), 3).await;
    let s = parse(&text);
    let by_name = |name: &str| -> Vec<&prometheus_parse::Sample> {
        s.samples.iter().filter(|x| x.metric == name).collect()
    };
    for id in &sims.ids {
        for family in [
            "rvm_fleet_device_status",
            "rvm_fleet_device_cpu_usage_percent",
            "rvm_fleet_device_memory_used_percent",
            "rvm_fleet_device_gpu_load_percent",
            "rvm_fleet_device_gpu_temperature_celsius",
            "rvm_fleet_device_power_watts",
            "rvm_fleet_device_last_seen_age_seconds",
            "rvm_fleet_device_delivery_received_total",
            "rvm_fleet_device_delivery_duplicates_total",
            "rvm_fleet_device_delivery_missing",
        ] {
            let sample = by_name(family)
                .into_iter()
                .find(|x| x.labels.get("device") == Some(id.as_str()))
                .unwrap_or_else(|| panic!("{family} has no sample for {id}:\n{text}"));
            let site = sample.labels.get("site").unwrap_or("");
            assert!(!site.is_empty(), "{family} of {id} has no site label");
            let v = value(&sample.value);
            assert!(v.is_finite() && v >= 0.0, "{family}{{{id}}} = {v}");
        }
        let status = by_name("rvm_fleet_device_status")
            .into_iter()
            .find(|x| x.labels.get("device") == Some(id.as_str()))
            .map(|x| value(&x.value));
        assert!(matches!(status, Some(2.0) | Some(3.0)), "{id} status {status:?}");
    }
    // counters are typed as counters
    let received = by_name("rvm_fleet_ingest_received_total");
    assert!(
        matches!(received[0].value, Value::Counter(v) if v > 0.0),
        "{received:?}"
    );
    assert!(matches!(
        by_name("rvm_fleet_broker_refusals_total")[0].value,
        Value::Counter(_)
    ));
    assert!(!by_name("rvm_fleet_alerts_active").is_empty());
    assert!(!by_name("rvm_fleet_writer_batches_total").is_empty());
    // every family of the exposition is documented and known
    let known: BTreeSet<&str> = family_names().into_iter().collect();
    for name in s.docs.keys() {
        assert!(known.contains(name.as_str()), "{name} is not in FAMILIES");
    }
    let two_sites: BTreeSet<&str> = by_name("rvm_fleet_device_status")
        .iter()
        .filter_map(|x| x.labels.get("site"))
        .collect();
    assert_eq!(two_sites.len(), 2, "{two_sites:?}");
    drop(sims);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_checks_the_metrics_exposition_and_the_scrape_config() {
    let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("promtool is not installed: apt-get install -y prometheus");
    let (_fleet, _sims, text) = fleet_with_machines(FleetOptions::default(), 2).await;
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("exposition written to promtool");
    let o = child.wait_with_output().expect("promtool finishes");
    assert!(
        o.status.success(),
        "promtool check metrics: {:?}\n{}{}\n--- exposition\n{text}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let o = Command::new(&promtool)
        .args(["check", "config"])
        .arg(repo().join("config/prometheus.yml"))
        .output()
        .expect("promtool runs");
    assert!(
        o.status.success(),
        "promtool check config: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_metrics_need_the_metrics_token_when_one_is_set() {
    let token = "scrape-token-0123456789";
    let fleet = TestFleet::start_with(FleetOptions {
        metrics_token: Some(token.into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(scrape_text(&fleet, None).await.0, 401);
    assert_eq!(scrape_text(&fleet, Some("scrape-token-0123456788")).await.0, 401);
    // an API token is not a scrape token
    assert_eq!(scrape_text(&fleet, Some(&fleet.admin)).await.0, 401);
    let (status, text) = scrape_text(&fleet, Some(token)).await;
    assert_eq!(status, 200);
    assert!(text.contains("rvm_fleet_server_uptime_seconds"));
    // and without a token configured, /metrics is open
    let open = TestFleet::start().unwrap();
    assert_eq!(scrape_text(&open, None).await.0, 200);
}

/// Metric names an expression uses: identifiers outside label matchers, ranges and strings
/// that are not functions, keywords or grouping labels.
fn promql_metrics(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "bool",
        "and",
        "or",
        "unless", // aggregation operators, also before `by (...)`
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
    ];
    const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
    // blank out strings, {...} and [...]
    let mut cleaned = String::with_capacity(expr.len());
    let (mut brace, mut bracket, mut quote) = (0, 0, false);
    for c in expr.chars() {
        match c {
            '"' if brace == 0 => quote = !quote,
            '{' if !quote => brace += 1,
            '}' if !quote => brace -= 1,
            '[' if !quote => bracket += 1,
            ']' if !quote => bracket -= 1,
            _ if quote || brace > 0 || bracket > 0 => {}
            c => {
                cleaned.push(c);
                continue;
            }
        }
        cleaned.push(' ');
    }
    let chars: Vec<char> = cleaned.chars().collect();
    let mut out = BTreeSet::new();
    let mut i = 0;
    let mut skip_list = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().find(|c| !c.is_whitespace());
            if LABEL_LISTS.contains(&word.as_str()) {
                skip_list = true;
            } else if KEYWORDS.contains(&word.as_str()) || next == Some(&'(') {
                // a function or keyword
            } else {
                out.insert(word);
            }
        } else if c == '(' && skip_list {
            // the label list of by (...) / without (...)
            while i < chars.len() && chars[i] != ')' {
                i += 1;
            }
            skip_list = false;
            i += 1;
        } else {
            if c.is_ascii_digit() {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                continue;
            }
            i += 1;
        }
    }
    out
}

fn panels(v: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
    if let Some(list) = v["panels"].as_array() {
        for p in list {
            out.push(p.clone());
            panels(p, out);
        }
    }
}

#[test]
fn grafana_dashboard_panels_query_only_metrics_the_server_exports() {
    let text = std::fs::read_to_string(repo().join("config/grafana/rvm-fleet.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is valid JSON");
    assert_eq!(dash["title"], "RVM Fleet");
    let known: BTreeSet<String> = family_names().into_iter().map(str::to_string).collect();
    let mut all = Vec::new();
    panels(&dash, &mut all);
    let mut used: BTreeMap<String, usize> = BTreeMap::new();
    let mut queried = 0;
    for p in all.iter().filter(|p| p["type"] != "row") {
        let title = p["title"].as_str().unwrap_or("?");
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for t in targets {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {title:?}: a target without expr"));
            let names = promql_metrics(expr);
            assert!(!names.is_empty(), "panel {title:?}: {expr} names no metric");
            for n in names {
                assert!(
                    known.contains(&n),
                    "panel {title:?}: {n} (in {expr}) is not a metric the server exports"
                );
                *used.entry(n).or_default() += 1;
            }
            queried += 1;
        }
    }
    assert!(queried >= 10, "only {queried} queries");
    for v in dash["templating"]["list"].as_array().cloned().unwrap_or_default() {
        let q = v["definition"].as_str().unwrap_or("");
        let metric = q
            .trim_start_matches("label_values(")
            .split(',')
            .next()
            .unwrap_or("");
        let names = promql_metrics(metric);
        assert!(!names.is_empty(), "variable {}: {q} names no metric", v["name"]);
        for n in names {
            assert!(known.contains(&n), "variable {}: {n} is not exported", v["name"]);
        }
    }
    // the panels the dashboard promises
    for must in [
        "rvm_fleet_devices",
        "rvm_fleet_device_cpu_usage_percent",
        "rvm_fleet_device_gpu_load_percent",
        "rvm_fleet_device_gpu_temperature_celsius",
        "rvm_fleet_ingest_received_total",
        "rvm_fleet_ingest_rejected_total",
        "rvm_fleet_alerts_active",
    ] {
        assert!(used.contains_key(must), "no panel shows {must}");
    }
    // the tokenizer itself
    assert_eq!(
        promql_metrics(
            r#"sum by (state, severity) (rate(rvm_fleet_x_total{site=~"$site", a="b"}[$__rate_interval])) / on (device) group_left(site) rvm_y"#
        ),
        ["rvm_fleet_x_total", "rvm_y"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
}
