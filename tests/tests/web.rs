//! The web view's server side without a browser: the page and its files come from the
//! binary, the live stream (`GET /api/v1/stream`) needs a token (header or `?token=`) and
//! carries device changes at most once per device per second, an offline machine within
//! 5 s, and HTTPS works when `[http] tls_cert` / `tls_key` are set.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::pki::{self, CertDir};
use fleet_server::auth::Role;
use fleet_server::config::ServerFile;
use fleet_server::server::Server;
use rvm_fleet_tests::{FleetOptions, SimFleet, TestFleet, eventually};
use rvm_sim::simulate::{SimConfig, SimProfile};
use serde_json::Value;

fn build_sim(prefix: &str, devices: usize) -> SimConfig {
    SimConfig {
        devices,
        sites: 2,
        prefix: prefix.into(),
        host: String::new(),
        port: 0,
        certs: Default::default(),
        interval: Duration::from_millis(300),
        first: 0,
    }
}

/// An open event stream and what it has sent so far.
struct Stream {
    resp: reqwest::Response,
    buf: String,
}

impl Stream {
    async fn open(
        fleet: &TestFleet,
        query_token: Option<&str>,
        header_token: Option<&str>,
    ) -> reqwest::Response {
        let url = match query_token {
            Some(t) => fleet.url(&format!("/api/v1/stream?token={t}")),
            None => fleet.url("/api/v1/stream"),
        };
        let mut r = fleet.http.get(url);
        if let Some(t) = header_token {
            r = r.bearer_auth(t);
        }
        r.send().await.unwrap()
    }

    /// The next JSON event (comments and `retry:` lines skipped), or None after `within`.
    async fn next(&mut self, within: Duration) -> Option<Value> {
        let deadline = Instant::now() + within;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                for line in frame.lines() {
                    if let Some(data) = line.strip_prefix("data: ") {
                        return Some(serde_json::from_str(data).unwrap());
                    }
                }
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.resp.chunk()).await {
                Ok(Ok(Some(c))) => self.buf.push_str(&String::from_utf8_lossy(&c)),
                _ => return None,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_files_are_served_from_the_binary_with_a_strict_policy() {
    let fleet = TestFleet::start().unwrap();
    let r = fleet.http.get(fleet.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let page = r.text().await.unwrap();
    for f in [
        "/ui/app.js",
        "/ui/app.css",
        "/ui/vendor/uPlot.iife.min.js",
        "/ui/vendor/uPlot.min.css",
    ] {
        assert!(page.contains(f), "{f}");
        let r = fleet.http.get(fleet.url(f)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{f}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(
            ct.starts_with("text/javascript") || ct.starts_with("text/css"),
            "{f}: {ct}"
        );
        assert!(!r.bytes().await.unwrap().is_empty());
    }
    let r = fleet
        .http
        .get(fleet.url("/ui/../Cargo.toml"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = fleet
        .http
        .get(fleet.url("/ui/vendor/uPlot.LICENSE"))
        .send()
        .await
        .unwrap();
    assert!(r.text().await.unwrap().contains("MIT License"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_needs_a_token_in_the_header_or_the_query_and_names_the_caller() {
    let fleet = TestFleet::start().unwrap();
    let viewer = fleet.token("vic", Role::Viewer).unwrap();
    assert_eq!(Stream::open(&fleet, None, None).await.status(), 401);
    assert_eq!(Stream::open(&fleet, Some("rvmf_wrong"), None).await.status(), 401);
    for (q, h) in [(Some(viewer.as_str()), None), (None, Some(viewer.as_str()))] {
        let resp = Stream::open(&fleet, q, h).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        let mut s = Stream {
            resp,
            buf: String::new(),
        };
        let hello = s.next(Duration::from_secs(5)).await.expect("hello");
        assert_eq!(hello["type"], "hello");
        assert_eq!(hello["name"], "vic");
        assert_eq!(hello["role"], "viewer");
    }
    let me = fleet
        .send(reqwest::Method::GET, "/api/v1/whoami", &viewer, None)
        .await
        .unwrap();
    assert_eq!(me.0, 200, "{me:?}");
    assert_eq!(me.1["role"], "viewer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_sends_each_changed_machine_at_most_once_a_second_and_offline_within_5_s() {
    let fleet = TestFleet::start_with(FleetOptions {
        stale_after_ms: 2_000,
        offline_after_ms: 4_000,
        ..Default::default()
    })
    .unwrap();
    let sims = SimFleet::start(&fleet, build_sim("live", 4), SimProfile::default()).unwrap();
    let resp = Stream::open(&fleet, None, Some(&fleet.admin)).await;
    let mut s = Stream {
        resp,
        buf: String::new(),
    };
    let mut seen_online = std::collections::BTreeSet::new();
    let mut batches: Vec<(Instant, Vec<String>)> = Vec::new();
    let started = Instant::now();
    while seen_online.len() < 4 || started.elapsed() < Duration::from_secs(4) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not all online: {seen_online:?}"
        );
        let Some(ev) = s.next(Duration::from_secs(5)).await else {
            continue;
        };
        if ev["type"] != "devices" {
            continue;
        }
        let names = ev["names"].as_array().unwrap().len();
        let ids: Vec<String> = ev["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                assert!(d["status"].is_string(), "{d}");
                assert_eq!(d["m"].as_array().unwrap().len(), names, "{d}");
                if d["status"] == "online" {
                    seen_online.insert(d["id"].as_str().unwrap().to_string());
                }
                d["id"].as_str().unwrap().to_string()
            })
            .collect();
        batches.push((Instant::now(), ids));
    }
    // Machines report every 300 ms, yet each is sent at most once per batch and batches come
    // about once a second.
    for (_, ids) in &batches {
        let mut u = ids.clone();
        u.dedup();
        assert_eq!(u.len(), ids.len(), "a machine twice in one batch: {ids:?}");
    }
    for w in batches.windows(2) {
        let gap = w[1].0 - w[0].0;
        assert!(gap >= Duration::from_millis(700), "batches {gap:?} apart");
    }

    let stopped = sims.ids[2].clone();
    let t0 = Instant::now();
    sims.stop_device(2);
    let offline = loop {
        let ev = s.next(Duration::from_secs(5)).await.expect("an event within 5 s");
        if ev["type"] == "devices"
            && let Some(d) = ev["devices"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["id"] == stopped.as_str())
            && d["status"] == "offline"
        {
            break t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{stopped} not offline in 5 s"
        );
    };
    println!("offline on the stream {offline:?} after the machine stopped");
    assert!(offline < Duration::from_secs(5));
    let h = fleet.health().await.unwrap();
    assert!(h["live"]["subscribers"].as_u64().unwrap() >= 1, "{h:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_transitions_and_acknowledgements_reach_the_stream() {
    let fleet = TestFleet::start_with(FleetOptions {
        rules: Some(
            "[[rules]]\nname = \"offline\"\nmetric = \"presence.offline\"\nop = \">\"\nthreshold = 0\n\
             severity = \"critical\"\nsummary = \"offline\"\n"
                .into(),
        ),
        stale_after_ms: 2_000,
        offline_after_ms: 4_000,
        ..Default::default()
    })
    .unwrap();
    let sims = SimFleet::start(&fleet, build_sim("alrt", 2), SimProfile::default()).unwrap();
    let up = eventually(Duration::from_secs(20), || async {
        let n = fleet
            .devices()
            .await
            .ok()?
            .iter()
            .filter(|d| d["status"] == "online")
            .count();
        (n == 2).then_some(())
    })
    .await;
    assert!(up.is_some());
    let resp = Stream::open(&fleet, None, Some(&fleet.admin)).await;
    let mut s = Stream {
        resp,
        buf: String::new(),
    };
    sims.stop_device(0);
    let deadline = Instant::now() + Duration::from_secs(15);
    let alert = loop {
        let ev = s.next(Duration::from_secs(5)).await;
        if let Some(ev) = ev
            && ev["type"] == "alert"
            && ev["kind"] == "firing"
        {
            break ev["alert"].clone();
        }
        assert!(Instant::now() < deadline, "no firing alert on the stream");
    };
    assert_eq!(alert["device"], sims.ids[0].as_str());
    let id = alert["id"].as_str().unwrap().to_string();
    let (st, _) = fleet
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/alerts/{id}/ack"),
            &fleet.admin,
            Some(serde_json::json!({"comment": "seen"})),
        )
        .await
        .unwrap();
    assert_eq!(st, 200);
    let acked = loop {
        let ev = s.next(Duration::from_secs(5)).await.expect("ack event");
        if ev["type"] == "acknowledged" {
            break ev;
        }
    };
    assert_eq!(acked["alert"]["id"], id.as_str());
    assert_eq!(acked["alert"]["ack"]["comment"], "seen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_state_changes_reach_the_stream() {
    let fleet = TestFleet::start().unwrap();
    let sims = SimFleet::start(&fleet, build_sim("cmds", 1), SimProfile::default()).unwrap();
    let id = sims.ids[0].clone();
    let up = eventually(Duration::from_secs(20), || async {
        (fleet.device(&id).await.ok()??["status"] == "online").then_some(())
    })
    .await;
    assert!(up.is_some());
    let resp = Stream::open(&fleet, None, Some(&fleet.admin)).await;
    let mut s = Stream {
        resp,
        buf: String::new(),
    };
    let (st, created) = fleet
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/devices/{id}/commands"),
            &fleet.admin,
            Some(serde_json::json!({"action": "drop_caches", "reason": "stream test"})),
        )
        .await
        .unwrap();
    assert_eq!(st, 201, "{created}");
    let cmd = created["id"].as_str().unwrap().to_string();
    let mut states = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while states.last().map(String::as_str) != Some("succeeded") {
        assert!(
            Instant::now() < deadline,
            "command states on the stream: {states:?}"
        );
        let Some(ev) = s.next(Duration::from_secs(5)).await else {
            continue;
        };
        if ev["type"] == "command" && ev["command"]["id"] == cmd.as_str() {
            assert_eq!(ev["command"]["device"], id.as_str());
            states.push(ev["command"]["state"].as_str().unwrap().to_string());
        }
    }
    println!("command states on the stream: {states:?}");
}

#[test]
fn https_serves_the_page_and_the_api_when_tls_is_configured() {
    common::tls::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let certs = CertDir::new(dir.path().join("certs"));
    pki::init(&certs, &["localhost".into(), "127.0.0.1".into()], false).unwrap();
    // through the config file, as `fleet-server run` does
    let toml = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\ntls_cert = {:?}\ntls_key = {:?}\n\
         [mqtt]\nlisten = \"127.0.0.1:0\"\n[certs]\ndir = {:?}\n[storage]\ndata_dir = {:?}\n",
        certs.server_cert().display().to_string(),
        certs.server_key().display().to_string(),
        certs.root().display().to_string(),
        dir.path().join("server").display().to_string(),
    );
    let cfg = toml::from_str::<ServerFile>(&toml).unwrap().validate().unwrap();
    assert!(cfg.http_tls.is_some());
    let mut server = Server::start(cfg).unwrap();
    let tls = common::tls::client_config_without_cert(&certs.ca_cert()).unwrap();
    let get = |path: &str| -> String {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let conn = rustls::ClientConnection::new(tls.clone(), name).unwrap();
        let sock = std::net::TcpStream::connect(server.http_addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut s = rustls::StreamOwned::new(conn, sock);
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = Vec::new();
        // a close without close_notify is fine here: the body is complete
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    let health = get("/api/v1/health");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(health.contains("\"status\":\"ok\""), "{health}");
    let page = get("/");
    assert!(page.contains("/ui/app.js"), "{page}");
    // plain HTTP on the TLS port gets no page
    let mut plain = std::net::TcpStream::connect(server.http_addr).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = plain.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf);
    assert!(!String::from_utf8_lossy(&buf).contains("/ui/app.js"));
    server.stop();
}
