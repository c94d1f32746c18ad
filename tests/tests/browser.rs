//! The web view in a real browser: Playwright (npm `playwright-core`, pinned in
//! `tests/browser/package.json`) drives Debian's Chromium against a fleet server with
//! simulated machines. The harness starts everything, writes the URL, tokens and machine ids
//! to a JSON fixture, runs `node --test tests/browser/*.test.mjs` and asserts it passed.
//!
//! Needs `node`, `/usr/bin/chromium` (or `CHROMIUM`) and `npm ci` in `tests/browser`: when
//! one is missing the test fails and says what to install; it never skips.
//!
//! The node tests act on the simulated fleet through a small control server of this harness
//! (`POST {control}/stop/{index}`: the machine says goodbye and disconnects).
//!
//! Beside the simulated machines runs one whole agent as the demo runs it on the operator's
//! own machine (`rvm_sim::demo::local_agent`, recovery actions recorded): its page shows the
//! health checks and the agent's actors that the simulated machines do not report.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::DeviceId;
use fleet_server::auth::Role;
use rvm_fleet_tests::receivers::HttpsReceiver;
use rvm_fleet_tests::{FleetOptions, SimFleet, TestFleet, eventually};
use rvm_sim::demo::local_agent::{LocalAgent, LocalAgentSpec};
use rvm_sim::simulate::{SimConfig, SimProfile};
use rvm_sim::source::Fault;
use serde_json::json;

/// What the HTTPS receiver of the notification tests answers (the page shows it).
const RECEIVER_ANSWER: &str = "ok from the browser test receiver";

/// How long the whole node run may take.
const NODE_TIMEOUT: Duration = Duration::from_secs(300);

/// The machine that runs the whole agent, as the demo's own machine does.
const AGENT_DEVICE: &str = "webagent";

/// Short timings so a scenario takes seconds.
const RULES: &str = rvm_fleet_tests::rules::OFFLINE_AND_INFERENCE_SLOW;

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Every outside program the browser tests need, or a panic naming what to install.
fn require_browser_tools() {
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "the browser tests need Node.js (`node` on PATH): install it (Debian: apt-get install nodejs)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "the browser tests need Chromium at {chromium}: apt-get install -y chromium (or set CHROMIUM)"
    );
    let pw = browser_dir().join("node_modules/playwright-core/package.json");
    assert!(
        pw.exists(),
        "the browser tests need playwright-core: cd {} && npm ci",
        browser_dir().display()
    );
}

/// `POST /stop/{i}` stops simulated machine `i`; answers 200, or 404 for anything else.
async fn control_server(sims: Arc<SimFleet>) -> anyhow::Result<String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", l.local_addr()?);
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let sims = sims.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(s);
                let mut line = String::new();
                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                // headers up to the blank line (no body is expected)
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).await.unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("");
                let status = match path.strip_prefix("/stop/").and_then(|i| i.parse::<usize>().ok()) {
                    Some(i) if i < sims.ids.len() => {
                        sims.stop_device(i);
                        "200 OK"
                    }
                    _ => "404 Not Found",
                };
                let resp = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = r.get_mut().write_all(resp.as_bytes()).await;
            });
        }
    });
    Ok(url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_tests_of_the_web_view_pass_in_chromium() {
    require_browser_tools();
    // a Slack-format channel to an HTTPS receiver behind a private CA, and the same receiver
    // without its CA (a test message there fails with a TLS error); a maintenance window
    let receiver = HttpsReceiver::start().await.unwrap();
    receiver.answer_with(200, RECEIVER_ANSWER);
    let notify = format!(
        r#"
[notify.channels.ops-slack]
type = "webhook"
format = "slack"
url = "{url}"
ca_file = "{ca}"
max_retry_s = 1
[notify.channels.untrusted]
type = "webhook"
format = "slack"
url = "{url}"
max_retry_s = 1
[[notify.maintenance]]
name = "oslo-sundays"
sites = ["oslo"]
time_zone = "Europe/Oslo"
days = ["sun"]
"#,
        url = receiver.url("/services/T0/B0/secret"),
        ca = receiver.ca_file.display()
    );
    let fleet = TestFleet::start_with(FleetOptions {
        rules: Some(RULES.into()),
        notify: Some(notify),
        stale_after_ms: 2_000,
        offline_after_ms: 4_000,
        ..Default::default()
    })
    .unwrap();
    let operator = fleet.token("olivia", Role::Operator).unwrap();
    let viewer = fleet.token("victor", Role::Viewer).unwrap();
    let sims = SimFleet::start(
        &fleet,
        SimConfig {
            devices: 6,
            sites: 2,
            prefix: "web".into(),
            host: String::new(),
            port: 0,
            certs: Default::default(),
            interval: Duration::from_millis(500),
            first: 0,
        },
        SimProfile::default(),
    )
    .unwrap();
    let agent_dir = fleet.dir.path().join("agent");
    std::fs::create_dir_all(&agent_dir).unwrap();
    let mut agent = LocalAgent::start(&LocalAgentSpec {
        device: DeviceId::new(AGENT_DEVICE).unwrap(),
        broker: format!("127.0.0.1:{}", fleet.broker_port()),
        identity: fleet.device_identity(AGENT_DEVICE).unwrap(),
        signing_pub: fleet.certs.signing_pub(),
        data_dir: agent_dir,
        interval: Duration::from_millis(500),
    })
    .unwrap();
    let mut ids = sims.ids.clone();
    ids.push(AGENT_DEVICE.into());
    let online = eventually(Duration::from_secs(30), || async {
        let ds = fleet.devices().await.ok()?;
        let n = ds
            .iter()
            .filter(|d| d["status"] == "online" || d["status"] == "degraded")
            .count();
        (n == ids.len()).then_some(())
    })
    .await;
    assert!(online.is_some(), "simulated machines did not come online");
    // one machine with a firing alert to acknowledge
    sims.set_fault(0, Fault::InferenceDegraded);
    let firing = eventually(Duration::from_secs(20), || async {
        let a = fleet.get("/api/v1/alerts?state=firing").await.ok()?;
        a["alerts"]
            .as_array()?
            .iter()
            .any(|a| a["device"] == ids[0].as_str())
            .then_some(())
    })
    .await;
    assert!(firing.is_some(), "no alert fired on {}", ids[0]);
    // a machine whose vision service leaks descriptors and left a zombie (its Processes tab)
    sims.faults[3].set_all(&[Fault::FdLeak, Fault::Zombie]);

    let sims = Arc::new(sims);
    let control = control_server(sims.clone()).await.unwrap();
    let fixture_path = fleet.dir.path().join("browser-fixture.json");
    let fixture = json!({
        "url": fleet.url("/"),
        "admin": fleet.admin,
        "operator": operator,
        "operator_name": "olivia",
        "viewer": viewer,
        "devices": ids,
        "alert_device": ids[0],
        "stop_device": ids[5],
        "agent_device": AGENT_DEVICE,
        "leak_device": ids[3],
        "control": control,
        "test_channel": "ops-slack",
        "untrusted_channel": "untrusted",
        "receiver_answer": RECEIVER_ANSWER,
        "config_window": "oslo-sundays",
    });
    std::fs::write(&fixture_path, serde_json::to_vec_pretty(&fixture).unwrap()).unwrap();

    let dir = browser_dir();
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".test.mjs"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.test.mjs in {}", dir.display());
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg("--test")
        .arg("--test-concurrency=1")
        .args(&files)
        .current_dir(&dir)
        .env("RVM_BROWSER_FIXTURE", &fixture_path)
        .kill_on_drop(true);
    let out = tokio::time::timeout(NODE_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("the browser tests took longer than {NODE_TIMEOUT:?}"))
        .expect("node starts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    agent.stop();
    assert!(
        out.status.success(),
        "the browser tests failed ({}); output above",
        out.status
    );
    // the test message the page sent reached the receiver, in Slack's format
    let got = receiver.requests();
    assert!(
        got.iter()
            .any(|r| r.path == "/services/T0/B0/secret" && r.json()["text"].is_string()),
        "{got:?}"
    );
}
