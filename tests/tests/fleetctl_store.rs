//! fleetctl against the server's own store, with either backend (`--config fleet-server.toml`:
//! tokens, devices, export), `fleetctl store migrate` moving a sled installation into
//! PostgreSQL, and a server whose database cannot be reached at start. Real `fleet-server` and
//! `fleetctl` processes, a real agent, a database on the binary's shared PostgreSQL cluster.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::pki::{self, CertDir};
use reqwest::Method;
use rvm_fleet_tests::harness::ServerProc;
use rvm_fleet_tests::postgres::PgDatabase;
use rvm_fleet_tests::{Agents, Backend, Child, bin_path, eventually, free_port, write_agent_config};
use serde_json::{Value, json};

/// Runs fleetctl; (exit code, stdout, stderr).
fn fleetctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin_path("fleetctl"))
        .args(args)
        .output()
        .expect("fleetctl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn certs(dir: &Path) -> CertDir {
    let certs = CertDir::new(dir.join("certs"));
    pki::init(&certs, &["localhost".into(), "127.0.0.1".into()], false).unwrap();
    certs
}

fn storage_lines(pg: &PgDatabase) -> String {
    format!("backend = \"postgres\"\nurl = \"{}\"\n", pg.url())
}

async fn received(server: &ServerProc, id: &str) -> u64 {
    server
        .get(&format!("/api/v1/devices/{id}"))
        .await
        .ok()
        .and_then(|d| d["delivery"]["received"].as_u64())
        .unwrap_or(0)
}

/// Starts `server` and an agent `id` on it; returns once the server has `n` of its records.
async fn stream(dir: &Path, certs: &CertDir, server: &mut ServerProc, id: &str, n: u64) -> Agents {
    server.start().unwrap();
    assert!(
        server.wait_ready(Duration::from_secs(20)).await,
        "{}",
        rvm_fleet_tests::read(&server.log)
    );
    let cfg = write_agent_config(dir, certs, id, server.mqtt, 50, "").unwrap();
    let agents = Agents::start(vec![cfg]).unwrap();
    eventually(Duration::from_secs(30), || async {
        (received(server, id).await >= n).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("{n} records of {id}:\n{}", rvm_fleet_tests::read(&server.log)));
    agents
}

/// The row of `kind` in `store migrate`'s table: read, copied, already there, skipped,
/// verified.
fn migrated(table: &str, kind: &str) -> [u64; 5] {
    let line = table
        .lines()
        .find(|l| l.starts_with(kind) && l[kind.len()..].starts_with("  "))
        .unwrap_or_else(|| panic!("no row {kind:?} in\n{table}"));
    let n: Vec<u64> = line[kind.len()..]
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    n.try_into()
        .unwrap_or_else(|n| panic!("{kind}: {n:?} in\n{table}"))
}

async fn fleetctl_reads_the_configured_store(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let pg = match backend {
        Backend::Sled => None,
        Backend::Postgres => Some(PgDatabase::shared().unwrap()),
    };
    let storage = pg.as_ref().map(storage_lines).unwrap_or_default();
    let mut server = ServerProc::with_storage(dir.path(), &certs, &storage, "").unwrap();
    let mut agents = stream(dir.path(), &certs, &mut server, "ctl1", 30).await;
    let config = server.config.to_str().unwrap().to_string();
    if pg.is_some() {
        // PostgreSQL: beside the running server
        let (code, out, err) = fleetctl(&["devices", "--config", &config]);
        assert_eq!(code, 0, "{err}");
        assert!(out.lines().any(|l| l.starts_with("ctl1 ")), "{out}");
    }
    agents.stop();
    // what the API exports, to compare with fleetctl's export of the stopped server's store
    tokio::time::sleep(Duration::from_secs(1)).await;
    let api_csv = reqwest::Client::new()
        .get(server.url("/api/v1/export?format=csv&devices=ctl1&metrics=cpu.usage_pct"))
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    server.terminate();
    let (code, out, err) = fleetctl(&[
        "token", "create", "--name", "bob", "--role", "viewer", "--config", &config,
    ]);
    assert_eq!(code, 0, "{err}");
    let bob = out.trim().to_string();
    let (code, out, err) = fleetctl(&["token", "list", "--config", &config]);
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().any(|l| l.starts_with("bob\tViewer")), "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("harness-admin\tAdmin")),
        "{out}"
    );

    let (code, out, err) = fleetctl(&["devices", "--config", &config]);
    assert_eq!(code, 0, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("ctl1 "))
        .unwrap_or_else(|| panic!("{out}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    let (last_seq, got): (u64, u64) = (cols[4].parse().unwrap(), cols[5].parse().unwrap());
    assert!(got >= 30 && got == last_seq, "{line}");
    assert_eq!(cols[6], "0", "nothing missing: {line}");

    let csv = dir.path().join("ctl1.csv");
    let (code, _, err) = fleetctl(&[
        "export",
        "--config",
        &config,
        "--devices",
        "ctl1",
        "--format",
        "csv",
        "--metrics",
        "cpu.usage_pct",
        "--out",
        csv.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("device,time,ts_ms,seq,cpu.usage_pct"),
        "{text}"
    );
    let seqs: Vec<u64> = lines
        .map(|l| l.split(',').nth(3).unwrap().parse().unwrap())
        .collect();
    assert!(seqs.len() >= 20, "the telemetry rows: {text}");
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "each once, in order: {text}"
    );
    assert_eq!(text, api_csv, "fleetctl writes what the API sends");
    let (code, _, err) = fleetctl(&["export", "--config", &config, "--devices", "nosuch"]);
    assert_ne!(code, 0);
    assert!(err.contains("--devices: no device nosuch"), "{err}");

    // the token made by fleetctl is the server's
    server.start().unwrap();
    assert!(server.wait_ready(Duration::from_secs(20)).await);
    let r = reqwest::Client::new()
        .get(server.url("/api/v1/whoami"))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["name"], "bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleetctl_tokens_devices_and_export_read_the_sled_store_of_the_config() {
    fleetctl_reads_the_configured_store(Backend::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleetctl_tokens_devices_and_export_read_the_postgres_store_of_the_config() {
    fleetctl_reads_the_configured_store(Backend::Postgres).await;
}

/// A sled installation with history, a queued command, a silence, a maintenance window, a
/// store and its audit trail moves into PostgreSQL: every kind is copied and verified, a second run copies nothing, and a
/// server on PostgreSQL carries on where the sled one stopped (the machine's next records are
/// counted on from its migrated delivery state).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_migrate_copies_a_sled_installation_verifies_it_and_a_rerun_copies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let mut server = ServerProc::new(dir.path(), &certs, "").unwrap();
    let mut agents = stream(dir.path(), &certs, &mut server, "mig1", 40).await;
    agents.stop();
    drop(agents);
    let http = reqwest::Client::new();
    let send = |method: Method, path: &str, body: Value| {
        let r = http
            .request(method, server.url(path))
            .bearer_auth(&server.token)
            .json(&body)
            .send();
        async move {
            let r = r.await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or_default())
        }
    };
    let (status, cmd) = send(
        Method::POST,
        "/api/v1/devices/mig1/commands",
        json!({"action": "drop_caches", "ttl_s": 3600, "reason": "before the move"}),
    )
    .await;
    assert_eq!(status, 201, "{cmd}");
    let (status, silence) = send(
        Method::POST,
        "/api/v1/silences",
        json!({"matchers": [{"label": "site", "value": "test"}], "duration_s": 3600, "comment": "moving"}),
    )
    .await;
    assert_eq!(status, 201, "{silence}");
    let (status, window) = send(
        Method::POST,
        "/api/v1/maintenance",
        json!({"name": "moving-night", "sites": ["test"], "time_zone": "UTC", "from": "01:00", "to": "02:00", "comment": "the move"}),
    )
    .await;
    assert!(status == 200 || status == 201, "{status} {window}");
    let (status, r) = send(
        Method::PUT,
        "/api/v1/estate/retailers/coop",
        json!({"name": "Coop"}),
    )
    .await;
    assert_eq!(status, 200, "{r}");
    let store = json!({"id": "test", "name": "Test store", "retailer": "coop", "time_zone": "Europe/Oslo",
                       "hours": {"mon": "08:00-20:00"}, "latitude": 59.9, "longitude": 10.7});
    let (status, r) = send(Method::PUT, "/api/v1/estate/stores/test", store).await;
    assert_eq!(status, 200, "{r}");
    // a token limited to that store: it must stay limited on PostgreSQL
    let scoped = json!({"name": "mig-scoped", "role": "viewer", "scope": {"site": "test"}});
    let (status, r) = send(Method::POST, "/api/v1/tokens", scoped).await;
    assert_eq!(status, 201, "{r}");
    let sled_received = received(&server, "mig1").await;
    server.terminate();
    let sled_rows = {
        let store = fleet_server::store::FleetStore::open(&server.data.join("fleet.sled")).unwrap();
        let id = common::DeviceId::new("mig1").unwrap();
        store.history_iter(&id, i64::MIN / 2, i64::MAX / 2).count() as u64
    };
    assert!(sled_rows >= 20, "{sled_rows}");

    let pg = PgDatabase::shared().unwrap();
    let data = server.data.to_str().unwrap().to_string();
    let url = pg.url();
    let (code, table, err) = fleetctl(&["store", "migrate", "--from", &data, "--to", &url]);
    assert_eq!(code, 0, "{err}\n{table}");
    println!("{err}\n{table}");
    assert!(!err.contains(pg.password()), "the password is never shown: {err}");
    assert!(err.contains("raw rows: "), "progress is shown: {err}");
    let raw = migrated(&table, "raw rows");
    assert_eq!(raw[0], sled_rows, "every row read: {table}");
    assert_eq!(
        raw,
        [raw[0], raw[0], 0, 0, raw[0]],
        "copied and verified: {table}"
    );
    for (kind, n) in [
        ("tokens", 2),
        ("devices", 1),
        ("delivery", 1),
        ("commands", 1),
        ("silences", 1),
        ("windows", 1),
        ("retailers", 1),
        ("stores", 1),
    ] {
        assert_eq!(migrated(&table, kind), [n, n, 0, 0, n], "{kind}: {table}");
    }
    let audit = migrated(&table, "audit entries");
    assert!(
        audit[0] >= 2 && audit[1] == audit[0] && audit[4] == audit[0],
        "{table}"
    );
    assert_eq!(
        pg.psql("SELECT count(DISTINCT seq) FROM telemetry WHERE device = 'mig1'")
            .unwrap(),
        raw[0].to_string()
    );

    let (code, again, err) = fleetctl(&["store", "migrate", "--from", &data, "--to", &url]);
    assert_eq!(code, 0, "{err}");
    let raw2 = migrated(&again, "raw rows");
    assert_eq!(raw2, [raw[0], 0, raw[0], 0, raw[0]], "nothing twice: {again}");
    for kind in [
        "tokens",
        "devices",
        "delivery",
        "commands",
        "silences",
        "windows",
        "outbox",
        "audit entries",
        "retailers",
        "stores",
    ] {
        let [read, copied, already, _, verified] = migrated(&again, kind);
        assert_eq!((copied, already, verified), (0, read, read), "{kind}: {again}");
    }
    assert_eq!(
        pg.psql("SELECT count(*) FROM audit").unwrap(),
        audit[0].to_string(),
        "the audit log copied once"
    );

    assert_eq!(
        pg.psql("SELECT scope FROM tokens WHERE name = 'mig-scoped'")
            .unwrap()
            .trim(),
        "site=test",
        "the scope is copied"
    );
    // the same server on PostgreSQL: same ports, certificates and (migrated) token
    let text = std::fs::read_to_string(&server.config).unwrap();
    let pg_config = dir.path().join("server-pg.toml");
    std::fs::write(
        &pg_config,
        text.replace("[storage]\n", &format!("[storage]\n{}", storage_lines(&pg))),
    )
    .unwrap();
    let log = dir.path().join("server-pg.log");
    let _on_pg = Child::spawn(
        "fleet-server",
        &["run", "--config", pg_config.to_str().unwrap()],
        &log,
    )
    .unwrap();
    assert!(
        server.wait_ready(Duration::from_secs(20)).await,
        "{}",
        rvm_fleet_tests::read(&log)
    );
    let d = server.get("/api/v1/devices/mig1").await.unwrap();
    assert_eq!(d["delivery"]["received"], sled_received, "{}", d["delivery"]);
    // (the commands actor starts a moment after the API: it publishes on the broker)
    let path = format!("/api/v1/commands/{}", cmd["id"].as_str().unwrap());
    let c = eventually(Duration::from_secs(10), || async { server.get(&path).await.ok() })
        .await
        .unwrap_or_else(|| panic!("{}", rvm_fleet_tests::read(&log)));
    assert_eq!(c["state"], "queued", "{c}");
    let s = server.get("/api/v1/silences").await.unwrap();
    assert!(s.to_string().contains(silence["id"].as_str().unwrap()), "{s}");
    let a = server.get("/api/v1/audit").await.unwrap();
    assert!(a.to_string().contains("before the move"), "{a}");
    let w = server.get("/api/v1/maintenance").await.unwrap();
    assert!(w.to_string().contains("moving-night"), "{w}");

    // the machine carries on: the server counts on from the migrated delivery state (seqs
    // the agent reserved before its restart and never used, it reports as dropped)
    let cfg = write_agent_config(dir.path(), &certs, "mig1", server.mqtt, 50, "").unwrap();
    let _agents = Agents::start(vec![cfg]).unwrap();
    let d = eventually(Duration::from_secs(30), || async {
        let d = server.get("/api/v1/devices/mig1").await.ok()?;
        (d["delivery"]["received"].as_u64()? >= sled_received + 20).then_some(d)
    })
    .await
    .unwrap_or_else(|| panic!("{}", rvm_fleet_tests::read(&log)));
    let v = &d["delivery"];
    let n = |k: &str| v[k].as_u64().unwrap();
    // the command queued before the move reaches the machine (it has no signing key
    // configured, so it answers "rejected": delivered and answered)
    let answered = eventually(Duration::from_secs(20), || async {
        let c = server.get(&path).await.ok()?;
        (c["state"] == "rejected").then_some(c)
    })
    .await;
    assert!(answered.is_some(), "{:?}", server.get(&path).await);
    assert_eq!(n("duplicates_dropped"), 0, "{v}");
    assert_eq!(n("received") + n("missing"), n("last_seq"), "{v}");
    assert!(
        n("missing") <= n("reported_dropped"),
        "every seq missing is one the agent skipped: {v}"
    );
}

/// A database that cannot be reached at start: the server does not start and says which key
/// (`storage.url`); `check-config` names a URL that cannot be parsed.
#[test]
fn postgres_a_server_whose_database_is_unreachable_at_start_exits_naming_storage_url() {
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path());
    let closed = free_port();
    let storage = format!("backend = \"postgres\"\nurl = \"postgres://fleet:pw@127.0.0.1:{closed}/fleet\"\n");
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{}\"\n[mqtt]\nlisten = \"127.0.0.1:{}\"\n[certs]\ndir = \"{}\"\n[storage]\ndata_dir = \"{}\"\n{storage}",
            free_port(),
            free_port(),
            certs.root().display(),
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("server.log");
    let mut server = Child::spawn(
        "fleet-server",
        &["run", "--config", config.to_str().unwrap()],
        &log,
    )
    .unwrap();
    let code = server.wait_exit(Duration::from_secs(30));
    let text = rvm_fleet_tests::read(&log);
    assert!(
        matches!(code, Some(c) if c != 0),
        "exits with an error: {code:?}\n{text}"
    );
    assert!(
        text.contains(&format!(
            "storage.url: cannot connect to postgres://fleet@127.0.0.1:{closed}/fleet"
        )),
        "{text}"
    );
    assert!(!text.contains(":pw@"), "the password is never shown: {text}");

    std::fs::write(
        &config,
        "[storage]\nbackend = \"postgres\"\nurl = \"mysql://x\"\n",
    )
    .unwrap();
    let out = Command::new(bin_path("fleet-server"))
        .args(["check-config", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("storage.url"), "{err}");
}
