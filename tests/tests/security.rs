//! Security checks, each breaking something on purpose:
//!
//! - the HTTP API refuses missing, wrong and expired tokens;
//! - roles hold on every route: the table (`rvm_fleet_tests::routes`, shared with the scope
//!   test) is compared with the routes registered in `fleet-server/src/**/*.rs`, so a new route without an entry fails here; each route
//!   answers 401 without a token, 403 below its role and neither at its role;
//! - every POST route refuses an oversized body with 413;
//! - errors never leak tokens or keys into the server's log or its answers;
//! - the broker speaks TLS 1.2 and 1.3 only (`openssl s_client`, Debian's `openssl`).
//!
//! Devices with a wrong clock or a full disk: `security_devices.rs`.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use fleet_server::auth::Role;
use rvm_fleet_tests::harness::ServerProc;
use rvm_fleet_tests::routes::{registered_routes, routes};
use rvm_fleet_tests::{FleetOptions, TestFleet};
use serde_json::{Value, json};

async fn status(
    fleet: &TestFleet,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> u16 {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut r = fleet
        .http
        .request(m, fleet.url(path))
        .timeout(Duration::from_secs(20));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.header("content-type", "application/json").body(b);
    }
    r.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_missing_wrong_and_expired_tokens_are_refused() {
    let fleet = TestFleet::start().unwrap();
    let path = "/api/v1/devices";
    assert_eq!(status(&fleet, "GET", path, None, None).await, 401, "no token");
    assert_eq!(
        status(
            &fleet,
            "GET",
            path,
            Some("rvmf_0123456789abcdef0123456789abcdef"),
            None
        )
        .await,
        401
    );
    assert_eq!(
        status(&fleet, "GET", path, Some(""), None).await,
        401,
        "empty token"
    );
    let r = fleet
        .http
        .get(fleet.url(path))
        .header("authorization", "Basic YWRtaW46YWRtaW4=")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "not a bearer token");
    let now = common::time::now_ms();
    let expired = fleet
        .server
        .tokens
        .create_with_expiry("old", Role::Admin, Some(now - 1))
        .unwrap();
    assert_eq!(
        status(&fleet, "GET", path, Some(&expired), None).await,
        401,
        "expired token"
    );
    let soon = fleet
        .server
        .tokens
        .create_with_expiry("soon", Role::Viewer, Some(now + 1_500))
        .unwrap();
    assert_eq!(
        status(&fleet, "GET", path, Some(&soon), None).await,
        200,
        "valid until it expires"
    );
    tokio::time::sleep(Duration::from_millis(1_700)).await;
    assert_eq!(
        status(&fleet, "GET", path, Some(&soon), None).await,
        401,
        "refused once expired"
    );
    assert_eq!(status(&fleet, "GET", path, Some(&fleet.admin), None).await, 200);
    // the list shows the expiry
    let tokens = fleet.get("/api/v1/tokens").await.unwrap();
    let old = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "old")
        .unwrap();
    assert_eq!(old["expires_ms"], now - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_every_route_holds_its_role() {
    let table = routes();
    let listed: BTreeSet<(String, String)> = table
        .iter()
        .map(|r| (r.method.to_string(), r.pattern.to_string()))
        .collect();
    let registered = registered_routes();
    assert!(
        registered.len() > 20,
        "routes found in the source: {registered:?}"
    );
    let missing: Vec<_> = registered.difference(&listed).collect();
    assert!(
        missing.is_empty(),
        "routes without an entry in the security table: {missing:?}"
    );
    let stale: Vec<_> = listed.difference(&registered).collect();
    assert!(
        stale.is_empty(),
        "table entries for routes that do not exist: {stale:?}"
    );

    let fleet = TestFleet::start().unwrap();
    let tokens = [
        (Role::Viewer, fleet.token("sec-viewer", Role::Viewer).unwrap()),
        (
            Role::Operator,
            fleet.token("sec-operator", Role::Operator).unwrap(),
        ),
        (Role::Admin, fleet.admin.clone()),
    ];
    let mut checked = 0;
    for r in &table {
        let body = r.body.as_ref().map(|b| serde_json::to_vec(b).unwrap());
        let Some(min) = r.min else {
            let s = status(&fleet, r.method, r.path, None, body.clone()).await;
            assert!(s < 400, "{} {} is open, got {s}", r.method, r.path);
            continue;
        };
        let s = status(&fleet, r.method, r.path, None, body.clone()).await;
        assert_eq!(s, 401, "{} {} without a token", r.method, r.path);
        for (role, token) in &tokens {
            let s = status(&fleet, r.method, r.path, Some(token), body.clone()).await;
            if *role < min {
                assert_eq!(s, 403, "{} {} as {role:?} (needs {min:?})", r.method, r.path);
            } else if *role == min {
                assert!(
                    s != 401 && s != 403 && s != 0,
                    "{} {} as {role:?}: {s}",
                    r.method,
                    r.path
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, table.iter().filter(|r| r.min.is_some()).count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_metrics_token_guards_the_prometheus_endpoint() {
    let fleet = TestFleet::start_with(FleetOptions {
        metrics_token: Some("scrape-token-0123456789".into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(status(&fleet, "GET", "/metrics", None, None).await, 401);
    assert_eq!(
        status(&fleet, "GET", "/metrics", Some("wrong-token-0123456789"), None).await,
        401
    );
    assert_eq!(
        status(&fleet, "GET", "/metrics", Some("scrape-token-0123456789"), None).await,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_every_post_route_refuses_an_oversized_body_with_413() {
    let fleet = TestFleet::start().unwrap();
    let limit = fleet_server::http::MAX_BODY;
    let big = format!("{{\"reason\": \"{}\"}}", "x".repeat(limit + 1024)).into_bytes();
    let mut posts = 0;
    for r in routes().iter().filter(|r| r.method == "POST") {
        let s = status(&fleet, "POST", r.path, Some(&fleet.admin), Some(big.clone())).await;
        assert_eq!(s, 413, "POST {} with {} bytes", r.path, big.len());
        // just under the limit is read (and then judged on its content)
        let fits = format!("{{\"reason\": \"{}\"}}", "x".repeat(limit - 64)).into_bytes();
        let s = status(&fleet, "POST", r.path, Some(&fleet.admin), Some(fits)).await;
        assert!(s != 413 && s < 500, "POST {} under the limit: {s}", r.path);
        posts += 1;
    }
    assert!(posts >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_errors_never_leak_tokens_or_keys_into_logs_or_responses() {
    let dir = tempfile::tempdir().unwrap();
    let certs = common::pki::CertDir::new(dir.path().join("certs"));
    common::pki::init(&certs, &["localhost".into(), "127.0.0.1".into()], false).unwrap();
    let mut server = ServerProc::new(dir.path(), &certs, "").unwrap();
    server.start().unwrap();
    assert!(server.wait_ready(Duration::from_secs(30)).await);
    let client = reqwest::Client::new();
    const MARKER: &str = "rvmf_5ec2e7c0ffee5ec2e7c0ffee5ec2e7c0";
    let mut answers = Vec::new();
    let send = |req: reqwest::RequestBuilder| {
        let req = req.timeout(Duration::from_secs(10));
        async move {
            let r = req.send().await.unwrap();
            let headers = format!("{:?}", r.headers());
            let s = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            (s, format!("{headers}\n{body}"))
        }
    };
    let url = |p: &str| server.url(p);
    // wrong tokens: in the header, malformed, in the stream's query string
    for p in [
        "/api/v1/devices",
        "/api/v1/tokens",
        "/api/v1/audit",
        "/api/v1/export",
    ] {
        answers.push(send(client.get(url(p)).bearer_auth(MARKER)).await);
        answers.push(
            send(
                client
                    .get(url(p))
                    .header("authorization", format!("Basic {MARKER}")),
            )
            .await,
        );
        answers.push(
            send(
                client
                    .get(url(p))
                    .header("authorization", format!("Bearer {MARKER} {MARKER}")),
            )
            .await,
        );
    }
    answers.push(send(client.get(url(&format!("/api/v1/stream?token={MARKER}")))).await);
    answers.push(
        send(
            client
                .post(url("/api/v1/devices/x/commands"))
                .bearer_auth(MARKER)
                .body(format!("{{\"reason\":\"{MARKER}\"}}")),
        )
        .await,
    );
    for (s, a) in &answers {
        assert_eq!(*s, 401, "{a}");
        assert!(!a.contains(MARKER), "a refused token is echoed: {a}");
    }
    // bad bodies with a secret inside, sent with a valid token (the body is the client's own
    // and may be named in the answer; it must not reach the log)
    let admin = server.token.clone();
    let bodies = [
        format!("{{\"action\": \"drop_caches\", \"reason\": \"{MARKER}\", \"ttl_s\": 1}}"),
        format!("{{\"{MARKER}\": 1}}"),
        format!("not json {MARKER}"),
        format!("{{\"action\": {{\"restart_unit\": {{\"unit\": \"{MARKER}\"}}}}, \"reason\": \"x\"}}"),
    ];
    for b in &bodies {
        for p in [
            "/api/v1/devices/secdev/commands",
            "/api/v1/rollouts",
            "/api/v1/silences",
            "/api/v1/tokens",
        ] {
            let (s, a) = send(
                client
                    .post(url(p))
                    .bearer_auth(&admin)
                    .header("content-type", "application/json")
                    .body(b.clone()),
            )
            .await;
            assert!((400..500).contains(&s), "POST {p} {b}: {s} {a}");
            assert!(!a.contains(&admin), "the caller's token is echoed: {a}");
        }
    }
    // a token made through the API is shown once, to its maker, and never logged
    let (s, a) = send(
        client
            .post(url("/api/v1/tokens"))
            .bearer_auth(&admin)
            .json(&json!({"name": "leakcheck", "role": "viewer"})),
    )
    .await;
    assert_eq!(s, 201, "{a}");
    let made: Value = serde_json::from_str(a.split_once('\n').map_or("", |x| x.1)).unwrap();
    let made = made["token"].as_str().unwrap().to_string();
    let (s, _) = send(client.get(url("/api/v1/whoami")).bearer_auth(&made)).await;
    assert_eq!(s, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.terminate();

    let log = rvm_fleet_tests::read(&server.log);
    assert!(log.len() > 100, "the server logged: {log}");
    for (what, secret) in [
        ("a refused token or a body secret", MARKER),
        ("the admin token", admin.as_str()),
        ("a new token", made.as_str()),
    ] {
        assert!(!log.contains(secret), "the log contains {what}:\n{log}");
    }
    // no key material: the server's and CA's private keys and the command-signing key
    let mut keys = Vec::new();
    for e in walk(certs.root()) {
        let text = std::fs::read_to_string(&e).unwrap_or_default();
        if text.contains("PRIVATE KEY") {
            keys.extend(
                text.lines()
                    .filter(|l| !l.starts_with("-----") && l.len() > 16)
                    .map(str::to_string),
            );
        }
    }
    assert!(!keys.is_empty(), "private keys found to look for");
    assert!(!log.contains("PRIVATE KEY"), "the log contains a PEM private key");
    for k in &keys {
        assert!(!log.contains(k.as_str()), "the log contains private key material");
        for (_, a) in &answers {
            assert!(!a.contains(k.as_str()));
        }
    }
    // the token store holds hashes only
    let stored = std::fs::read_to_string(server.data.join("tokens.json")).unwrap();
    assert!(!stored.contains(&admin) && !stored.contains(&made));
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `openssl s_client` against the broker with one protocol version; (handshake done, output).
fn s_client(port: u16, version: &str, ident: &common::tls::ClientIdentity) -> (bool, String) {
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            version,
            // let the client offer old protocols (OpenSSL 3's own floor would refuse first)
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
            "-CAfile",
            &ident.ca.to_string_lossy(),
            "-cert",
            &ident.cert.to_string_lossy(),
            "-key",
            &ident.key.to_string_lossy(),
            "-brief",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl is installed (Debian package openssl)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let done = text.contains("CONNECTION ESTABLISHED") || text.contains("Protocol version:");
    (done, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_broker_refuses_tls_1_0_and_1_1_and_speaks_1_2_needs_openssl() {
    let fleet = TestFleet::start().unwrap();
    let ident = fleet.device_identity("tlsprobe").unwrap();
    let port = fleet.broker_port();
    for v in ["-tls1", "-tls1_1"] {
        let (done, text) = s_client(port, v, &ident);
        assert!(!done, "{v}: handshake completed:\n{text}");
        // refused by the server, not by the client's own configuration
        assert!(
            !text.contains("no protocols available"),
            "{v}: the client did not offer it:\n{text}"
        );
        assert!(
            text.contains("protocol version")
                || text.contains("handshake failure")
                || text.contains("unsupported protocol"),
            "{v}: not a protocol refusal:\n{text}"
        );
    }
    let (done, text) = s_client(port, "-tls1_2", &ident);
    assert!(done && text.contains("TLSv1.2"), "TLS 1.2 must work:\n{text}");
    let (done, text) = s_client(port, "-tls1_3", &ident);
    assert!(done && text.contains("TLSv1.3"), "TLS 1.3 must work:\n{text}");
}
