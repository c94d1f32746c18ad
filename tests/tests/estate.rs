//! The estate end to end: `fleetctl estate import` of a stores CSV (and the line and column
//! of a bad one), machines joining their store by site, an unknown site listed, and the
//! availability report through the API equal to the figure computed by hand from the alerts
//! the API lists, in JSON, CSV, HTML and PDF (read back with `pdftotext`, Debian
//! poppler-utils). A second test keeps the estate in PostgreSQL.

use std::time::Duration;

use rvm_fleet_tests::process::bin_path;
use rvm_fleet_tests::{Backend, FleetOptions, SimFleet, TestFleet, eventually};
use rvm_sim::simulate::{SimConfig, SimProfile};
use serde_json::{Value, json};

const RULES: &str = r#"
[[rules]]
name = "device_offline"
metric = "presence.offline"
op = ">"
threshold = 0
severity = "critical"
summary = "device is offline"
"#;

const STORES_CSV: &str = "\
id,name,retailer,retailer_name,address,time_zone,latitude,longitude,mon,tue,wed,thu,fri,sat,sun
est1,Open all day,coop,Coop Norge,\"Storgata 1, Oslo\",UTC,59.91,10.75,24h,24h,24h,24h,24h,24h,24h
est2,Never open,coop,Coop Norge,,UTC,60.39,5.32,closed,closed,closed,closed,closed,closed,closed
est3,Maintained,coop,Coop Norge,,UTC,63.43,10.39,24h,24h,24h,24h,24h,24h,24h
";

fn fleetctl(fleet: &TestFleet, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(bin_path("fleetctl"))
        .args(args)
        .env("FLEET_URL", fleet.url(""))
        .env("FLEET_TOKEN", &fleet.admin)
        .output()
        .expect("fleetctl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn get_text(fleet: &TestFleet, path: &str) -> (u16, String, Vec<u8>) {
    let r = fleet
        .http
        .get(fleet.url(path))
        .bearer_auth(&fleet.admin)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, ct, r.bytes().await.unwrap().to_vec())
}

/// `[a, b)` overlap.
fn overlap(a: (i64, i64), b: (i64, i64)) -> i64 {
    (a.1.min(b.1) - a.0.max(b.0)).max(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn estate_availability_through_the_api_equals_the_hand_computed_figure_needs_pdftotext() {
    let fleet = TestFleet::start_with(FleetOptions {
        rules: Some(RULES.into()),
        stale_after_ms: 1_000,
        offline_after_ms: 3_000,
        ..Default::default()
    })
    .unwrap();
    let dir = fleet.dir.path();

    // a bad file names its line and column and sends nothing
    let bad = dir.join("bad.csv");
    std::fs::write(
        &bad,
        STORES_CSV.replace(
            "est2,Never open,coop,Coop Norge,,UTC,60.39,5.32,closed",
            "est2,Never open,coop,Coop Norge,,UTC,60.39,5.32,9-17",
        ),
    )
    .unwrap();
    let (code, _, err) = fleetctl(&fleet, &["estate", "import", bad.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("line 3, column mon: \"9-17\" is not HH:MM-HH:MM"),
        "{err}"
    );
    assert_eq!(fleet.get("/api/v1/estate").await.unwrap()["stores"], json!([]));

    let good = dir.join("stores.csv");
    std::fs::write(&good, STORES_CSV).unwrap();
    let (code, out, err) = fleetctl(&fleet, &["estate", "import", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("imported 1 retailers, 3 stores"), "{out}");
    let (code, exported, err) = fleetctl(&fleet, &["estate", "export"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(exported, STORES_CSV, "export gives back the imported file");

    // four machines: est1 goes offline, est2 is never open, est3 has a maintenance window, the
    // fourth is at a site no store has
    let cfg = SimConfig {
        devices: 4,
        sites: 4,
        prefix: "est".into(),
        host: String::new(),
        port: 0,
        certs: Default::default(),
        interval: Duration::from_millis(250),
        first: 0,
    };
    let profile = SimProfile {
        sites: [(0, "est1"), (1, "est2"), (2, "est3"), (3, "nowhere")]
            .into_iter()
            .map(|(i, s)| (i, s.to_string()))
            .collect(),
        ..Default::default()
    };
    let sims = SimFleet::start(&fleet, cfg, profile).unwrap();
    let ids = sims.ids.clone();
    let online = eventually(Duration::from_secs(30), || async {
        let d = fleet.devices().await.ok()?;
        (d.iter().filter(|d| d["status"] == "online").count() == 4).then_some(())
    })
    .await;
    assert!(online.is_some(), "the machines did not come online");
    // the window covers this minute (windows are HH:MM, UTC here); the period starts 30 s
    // before it, so est3 has scheduled time as well as maintenance
    let now = common::time::now_ms();
    let minute = now - now.rem_euclid(60_000);
    let from = minute - 30_000;
    let hhmm = |ms: i64| {
        let t = jiff::Timestamp::from_millisecond(ms)
            .unwrap()
            .to_zoned(jiff::tz::TimeZone::UTC);
        format!("{:02}:{:02}", t.hour(), t.minute())
    };
    let body = json!({"name": "est3-clean", "sites": ["est3"], "from": hhmm(minute), "to": hhmm(minute + 60_000), "comment": "test"});
    let r = fleet
        .http
        .post(fleet.url("/api/v1/maintenance"))
        .bearer_auth(&fleet.admin)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());

    tokio::time::sleep(Duration::from_secs(2)).await;
    sims.stop_device(0);
    let alert = eventually(Duration::from_secs(30), || async {
        let v = fleet.get("/api/v1/alerts?state=all").await.ok()?;
        v["alerts"]
            .as_array()?
            .iter()
            .find(|a| {
                a["rule"] == "device_offline" && a["device"] == ids[0].as_str() && a["state"] == "firing"
            })
            .cloned()
    })
    .await
    .expect("device_offline fired");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let to = common::time::now_ms();
    let all = fleet.get("/api/v1/alerts?state=all").await.unwrap();
    let others: Vec<&Value> = all["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["id"] != alert["id"])
        .collect();
    assert!(others.is_empty(), "no other alert may count: {others:?}");

    // by hand
    let period = to - from;
    let started = alert["started_ms"].as_i64().unwrap();
    let offline = overlap((started, i64::MAX), (from, to));
    let maintenance = overlap((minute, minute + 60_000), (from, to));
    assert!(offline > 0 && maintenance > 0);
    let (sched1, avail1) = (period, period - offline);
    let (sched3, avail3) = (period - maintenance, period - maintenance);
    assert!(sched3 >= 30_000, "{sched3}");
    let retailer_pct = (avail1 + avail3) as f64 * 100.0 / (sched1 + sched3) as f64;

    let q = format!("/api/v1/estate/availability?from={from}&to={to}");
    let r = fleet.get(&q).await.unwrap();
    let m = |id: &str| {
        r["machines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let m1 = m(&ids[0]);
    assert_eq!(
        (
            m1["scheduled_ms"].as_i64(),
            m1["unavailable_ms"].as_i64(),
            m1["available_ms"].as_i64()
        ),
        (Some(sched1), Some(offline), Some(avail1)),
        "{m1}"
    );
    let m2 = m(&ids[1]);
    assert_eq!(
        (
            m2["closed_ms"].as_i64(),
            m2["scheduled_ms"].as_i64(),
            &m2["availability_pct"]
        ),
        (Some(period), Some(0), &Value::Null),
        "{m2}"
    );
    let m3 = m(&ids[2]);
    assert_eq!(
        (
            m3["maintenance_ms"].as_i64(),
            m3["scheduled_ms"].as_i64(),
            m3["unavailable_ms"].as_i64()
        ),
        (Some(maintenance), Some(sched3), Some(0)),
        "{m3}"
    );
    assert!(
        m(&ids[3]).is_null(),
        "a machine at an unknown site is not counted"
    );
    assert_eq!(
        r["unknown_sites"],
        json!([{"site": "nowhere", "machines": [ids[3]]}])
    );
    let pct = r["retailers"][0]["availability_pct"].as_f64().unwrap();
    assert!((pct - retailer_pct).abs() < 1e-9, "{pct} vs {retailer_pct}");
    let unknown = fleet.get("/api/v1/estate/unknown-sites").await.unwrap();
    assert_eq!(unknown["sites"], r["unknown_sites"]);

    // the other forms show the same figure
    let want = format!("{retailer_pct:.2}");
    let (s, ct, csv) = get_text(&fleet, &format!("{q}&format=csv")).await;
    assert_eq!((s, ct.as_str()), (200, "text/csv; charset=utf-8"));
    let csv = String::from_utf8(csv).unwrap();
    let line = csv.lines().find(|l| l.starts_with("retailer,coop,")).unwrap();
    assert!(line.ends_with(&format!(",{want}")), "{line} / {want}");
    let (s, _, html) = get_text(&fleet, &format!("{q}&format=html")).await;
    assert_eq!(s, 200);
    assert!(
        String::from_utf8(html)
            .unwrap()
            .contains(&format!("<td class=\"pct\">{want}</td>"))
    );
    let (s, ct, pdf) = get_text(&fleet, &format!("{q}&format=pdf")).await;
    assert_eq!((s, ct.as_str()), (200, "application/pdf"));
    assert!(pdf.starts_with(b"%PDF-"));
    // kept for a person to look at (pdftoppm -png target/tmp/rvm-availability.pdf)
    let path = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rvm-availability.pdf");
    std::fs::write(&path, &pdf).unwrap();
    let out = std::process::Command::new("pdftotext")
        .args(["-layout", path.to_str().unwrap(), "-"])
        .output()
        .expect("pdftotext is not installed: apt-get install -y poppler-utils");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text
        .lines()
        .find(|l| l.contains("Coop Norge (coop)"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(row.split_whitespace().any(|w| w == want), "{row} / {want}");
    assert!(
        text.contains("RVM Fleet availability") && text.contains("nowhere:"),
        "{text}"
    );

    // the store page: its machines and their state, the open alert, today's figure
    let page = fleet.get("/api/v1/estate/stores/est1").await.unwrap();
    assert_eq!(page["state"], "critical", "{page}");
    assert_eq!(page["machines"][0]["id"], ids[0].as_str());
    assert_eq!(page["alerts"][0]["rule"], "device_offline");
    assert!(page["today"]["store"]["unavailable_ms"].as_i64().unwrap() >= offline);
    let map = fleet.get("/api/v1/estate/map").await.unwrap();
    assert_eq!(map["stores"].as_array().unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn estate_rows_live_in_postgresql_and_the_rules_hold() {
    let fleet = TestFleet::start_on(Backend::Postgres).unwrap();
    let http = &fleet.http;
    let put = |path: &str, body: Value| {
        http.put(fleet.url(path))
            .bearer_auth(&fleet.admin)
            .json(&body)
            .send()
    };
    let store = json!({"id": "pg1", "name": "PG store", "retailer": "r1", "time_zone": "Europe/Oslo",
                       "hours": {"mon": "08:00-20:00"}, "latitude": 59.9, "longitude": 10.7});
    // a store needs its retailer
    let r = put("/api/v1/estate/stores/pg1", store.clone()).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("no retailer \\\"r1\\\""));
    assert_eq!(
        put("/api/v1/estate/retailers/r1", json!({"name": "R one"}))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        put("/api/v1/estate/stores/pg1", store.clone())
            .await
            .unwrap()
            .status(),
        200
    );
    // every bad field is named
    let mut bad = store.clone();
    bad["time_zone"] = json!("Mars/Base");
    bad["hours"]["sat"] = json!("all day");
    let r = put("/api/v1/estate/stores/pg1", bad).await.unwrap();
    assert_eq!(r.status(), 400);
    let msg = r.text().await.unwrap();
    assert!(
        msg.contains("time_zone: \\\"Mars/Base\\\"") && msg.contains("hours.sat:"),
        "{msg}"
    );
    // the rows are in the tables
    let rows = fleet
        .pg()
        .psql("SELECT id || '/' || retailer || '/' || (hours->>'mon') FROM stores")
        .unwrap();
    assert_eq!(rows.trim(), "pg1/r1/08:00-20:00");
    // a retailer with stores stays
    let del = |path: &str| http.delete(fleet.url(path)).bearer_auth(&fleet.admin).send();
    assert_eq!(del("/api/v1/estate/retailers/r1").await.unwrap().status(), 409);
    let got = fleet.get("/api/v1/estate").await.unwrap();
    assert_eq!(got["stores"][0]["hours"]["mon"], "08:00-20:00");
    assert_eq!(got["stores"][0]["machines"], 0);
    assert_eq!(del("/api/v1/estate/stores/pg1").await.unwrap().status(), 204);
    assert_eq!(del("/api/v1/estate/stores/pg1").await.unwrap().status(), 404);
    assert_eq!(del("/api/v1/estate/retailers/r1").await.unwrap().status(), 204);
}
