//! History export (`GET /api/v1/export`, CSV and JSON, streamed) and the HTML fleet report
//! (`GET /api/v1/report`), with simulated machines. The report is rendered by headless
//! Chromium (Debian package `chromium`) into `target/tmp/rvm-fleet-report.png`; the test
//! named `chromium` fails if Chromium is missing.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use fleet_server::auth::Role;
use rvm_fleet_tests::{FleetOptions, SimFleet, TestFleet, eventually};
use rvm_sim::simulate::{SimConfig, SimProfile};
use rvm_sim::source::Fault;

fn build_sim(prefix: &str, devices: usize, sites: usize) -> SimConfig {
    SimConfig {
        devices,
        sites,
        prefix: prefix.into(),
        host: String::new(),
        port: 0,
        certs: Default::default(),
        interval: Duration::from_millis(250),
        first: 0,
    }
}

async fn get(fleet: &TestFleet, path: &str, token: &str) -> reqwest::Response {
    fleet
        .http
        .get(fleet.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Waits until every machine has at least `rows` history rows (through the JSON export).
async fn wait_for_rows(fleet: &TestFleet, ids: &[String], rows: usize) {
    let devices = ids.join(",");
    let ok = eventually(Duration::from_secs(30), || async {
        let r = get(
            fleet,
            &format!("/api/v1/export?format=json&devices={devices}&metrics=cpu.usage_pct"),
            &fleet.admin,
        )
        .await;
        let v: serde_json::Value = r.json().await.ok()?;
        let list = v.as_array()?;
        ids.iter()
            .all(|id| list.iter().filter(|x| x["device"] == id.as_str()).count() >= rows)
            .then_some(())
    })
    .await;
    assert!(ok.is_some(), "{ids:?} did not reach {rows} history rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_csv_streams_history_as_a_table_with_a_header_row() {
    let fleet = TestFleet::start().unwrap();
    let sims = SimFleet::start(&fleet, build_sim("exp", 3, 1), SimProfile::default()).unwrap();
    let ids = sims.ids.clone();
    wait_for_rows(&fleet, &ids, 8).await;
    let viewer = fleet.token("viewer", Role::Viewer).unwrap();
    let picked = format!("{},{}", ids[0], ids[1]);
    let r = get(
        &fleet,
        &format!(
            "/api/v1/export?format=csv&devices={picked}&metrics=cpu.usage_pct,gpu.temp_c,memory.used_pct"
        ),
        &viewer,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(
        header(&r, "content-type").starts_with("text/csv"),
        "{:?}",
        r.headers()
    );
    let cd = header(&r, "content-disposition");
    assert!(
        cd.starts_with("attachment; filename=\"rvm-fleet-export-") && cd.ends_with(".csv\""),
        "{cd}"
    );
    // streamed: chunked, no length known up front
    assert!(r.content_length().is_none(), "{:?}", r.headers());
    assert_eq!(header(&r, "transfer-encoding"), "chunked");
    let body = r.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let headers: Vec<String> = reader.headers().unwrap().iter().map(str::to_string).collect();
    assert_eq!(
        headers,
        [
            "device",
            "time",
            "ts_ms",
            "seq",
            "cpu.usage_pct",
            "gpu.temp_c",
            "memory.used_pct"
        ]
    );
    let now = common::time::now_ms();
    let mut per_device = std::collections::BTreeMap::<String, Vec<i64>>::new();
    for rec in reader.records() {
        let rec = rec.expect("every line is a CSV record of the header's width");
        assert_eq!(rec.len(), headers.len());
        let ts: i64 = rec[2].parse().unwrap();
        assert!(ts > now - 3_600_000 && ts <= now, "{ts}");
        assert!(rec[1].ends_with('Z') && rec[1].contains('T'), "{}", &rec[1]);
        rec[3].parse::<u64>().expect("seq");
        let cpu: f64 = rec[4].parse().expect("cpu.usage_pct is a number");
        assert!((0.0..=100.0).contains(&cpu));
        per_device.entry(rec[0].to_string()).or_default().push(ts);
    }
    assert_eq!(
        per_device.keys().cloned().collect::<Vec<_>>(),
        vec![ids[0].clone(), ids[1].clone()],
        "only the devices asked for, in id order"
    );
    for (d, ts) in &per_device {
        assert!(ts.len() >= 8, "{d}: {} rows", ts.len());
        assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{d}: rows out of time order");
    }

    // JSON: one array, only the metrics asked for
    let r = get(
        &fleet,
        &format!("/api/v1/export?format=json&devices={}", ids[2]),
        &viewer,
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    let rows = v.as_array().unwrap();
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|x| x["device"] == ids[2].as_str()));
    assert!(rows[0]["metrics"]["cpu.usage_pct"].is_number(), "{}", rows[0]);

    // minute rows appear once the history job rolled the minutes up
    let minute = eventually(Duration::from_secs(30), || async {
        let r = get(
            &fleet,
            &format!("/api/v1/export?format=csv&resolution=minute&devices={}", ids[0]),
            &viewer,
        )
        .await;
        let body = r.text().await.ok()?;
        let mut rd = csv::Reader::from_reader(body.as_bytes());
        let first = rd.records().next()?.ok()?;
        first[3].is_empty().then_some(first[0].to_string())
    })
    .await;
    assert_eq!(
        minute.as_deref(),
        Some(ids[0].as_str()),
        "a minute row has no seq"
    );

    // errors name the parameter; no token, no export
    let r = get(&fleet, "/api/v1/export?format=xml", &viewer).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("format"));
    let r = get(&fleet, "/api/v1/export?devices=nosuchdevice", &viewer).await;
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("nosuchdevice"));
    let r = fleet.http.get(fleet.url("/api/v1/export")).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_html_renders_in_chromium_with_a_screenshot() {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("chromium is not installed: apt-get install -y chromium");
    const RULES: &str = r#"
[[rules]]
name = "gpu_hot"
metric = "gpu.temp_c"
op = ">"
threshold = 80
clear = 75
for_s = 1
severity = "critical"
summary = "GPU above 80 C"

[[rules]]
name = "device_offline"
metric = "presence.offline"
op = ">"
threshold = 0
severity = "warning"
summary = "device is offline"
"#;
    let fleet = TestFleet::start_with(FleetOptions {
        rules: Some(RULES.into()),
        stale_after_ms: 2_000,
        offline_after_ms: 4_000,
        ..Default::default()
    })
    .unwrap();
    let started = common::time::now_ms();
    let sims = SimFleet::start(&fleet, build_sim("rpt", 6, 2), SimProfile::default()).unwrap();
    wait_for_rows(&fleet, &sims.ids, 4).await;
    sims.set_fault(1, Fault::Overheating);
    sims.stop_device(4);
    // an alert fires and a machine goes offline
    let fired = eventually(Duration::from_secs(30), || async {
        let v = fleet.get("/api/v1/alerts").await.ok()?;
        let list = v["alerts"].as_array()?.clone();
        (list
            .iter()
            .any(|a| a["rule"] == "gpu_hot" && a["state"] == "firing")
            && list.iter().any(|a| a["rule"] == "device_offline"))
        .then_some(())
    })
    .await;
    assert!(fired.is_some(), "the alerts did not fire");

    // a window a little longer than the machines ran, so the charts have data across it
    let from = started - 20_000;
    let path = format!("/api/v1/report?from={from}");
    let r = get(&fleet, &path, &fleet.admin).await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("text/html"));
    let cd = header(&r, "content-disposition");
    assert!(
        cd.starts_with("inline; filename=\"rvm-fleet-report-") && cd.ends_with(".html\""),
        "{cd}"
    );
    let html = r.text().await.unwrap();
    for id in &sims.ids {
        assert!(html.contains(id.as_str()), "{id} is not in the report");
    }
    assert!(html.contains("gpu_hot") && html.contains("Worst machines"));
    assert!(html.contains("<svg"));
    let r = get(&fleet, &format!("{path}&download=1"), &fleet.admin).await;
    assert!(header(&r, "content-disposition").starts_with("attachment; filename="));
    let r = get(&fleet, "/api/v1/report?from=5&to=4", &fleet.admin).await;
    assert_eq!(r.status(), 400);
    let viewer = fleet.token("v", Role::Viewer).unwrap();
    assert_eq!(get(&fleet, &path, &viewer).await.status(), 200);

    // render it
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&out_dir).unwrap();
    let page = out_dir.join("rvm-fleet-report.html");
    std::fs::write(&page, &html).unwrap();
    let shot = out_dir.join("rvm-fleet-report.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1280,900")
        .arg(format!("file://{}", page.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("chromium starts");
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let png = std::fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot at {} ({e}); chromium exited {status:?}",
            shot.display()
        )
    });
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), (1280, 900));
    assert!(
        png.len() > 20_000,
        "a {} byte screenshot is a blank page",
        png.len()
    );
    eprintln!("report screenshot: {}", shot.display());
    drop(sims);
}
