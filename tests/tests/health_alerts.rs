//! Health failures are alerts (issue 19), end to end with a real agent: the `rvm-agent`
//! binary probes an HTTP endpoint of this test that answers 500, and a systemd unit through a
//! fake `systemctl` on its PATH that says the unit failed. The server raises an alert naming
//! the HTTP check and the machine, `service_down` and the unit's own check alert, notifies
//! them, and resolves all of them once the endpoint answers 200 and the unit is active.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use rvm_fleet_tests::{AgentExtra, Child, FleetOptions, TestFleet, WebhookReceiver, eventually};
use serde_json::Value;

/// `service_down` without the shipped rule's 30 s wait, so the test takes seconds.
const RULES: &str = r#"
[[rules]]
name = "service_down"
metric = "service.down"
op = ">"
threshold = 0
severity = "critical"
summary = "a watched service is down"
"#;

/// The agent probes every 5 s; a report, then the server's decision, follow.
const WITHIN: Duration = Duration::from_secs(40);

/// A `systemctl` that answers `is-active -- UNIT...` from files `DIR/UNIT` (the state in
/// them, `unknown` without one) and fails everything else.
fn fake_systemctl(bin: &Path, states: &Path) {
    let script = format!(
        r#"#!/bin/sh
[ "$1" = "is-active" ] || exit 1
shift
[ "$1" = "--" ] && shift
rc=0
for u in "$@"; do
  s=$(cat "{dir}/$u" 2>/dev/null || echo unknown)
  echo "$s"
  [ "$s" = active ] || rc=3
done
exit $rc
"#,
        dir = states.display()
    );
    let path = bin.join("systemctl");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// An HTTP endpoint that answers every request with the status in `status`.
async fn status_server(status: Arc<AtomicU16>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/health", l.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else { return };
            let code = status.load(Ordering::Acquire);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let resp = format!("HTTP/1.1 {code} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    url
}

async fn alert(fleet: &TestFleet, id: &str) -> Option<Value> {
    let a = fleet.get("/api/v1/alerts?state=all").await.ok()?;
    a["alerts"].as_array()?.iter().find(|a| a["id"] == id).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_agent_with_a_failing_http_check_and_a_failed_unit_raises_alerts_that_resolve_when_fixed() {
    let hook = WebhookReceiver::start().await.unwrap();
    let fleet = TestFleet::start_with(FleetOptions {
        rules: Some(RULES.into()),
        notify: Some(format!(
            "[notify.default]\nchannels = [\"hook\"]\nper_minute = 100\n[notify.channels.hook]\ntype = \"webhook\"\nurl = \"{}\"\n",
            hook.url
        )),
        ..Default::default()
    })
    .unwrap();
    let status = Arc::new(AtomicU16::new(500));
    let url = status_server(status.clone()).await;
    let (bin, states) = (fleet.dir.path().join("fakebin"), fleet.dir.path().join("units"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&states).unwrap();
    fake_systemctl(&bin, &states);
    std::fs::write(states.join("vision.service"), "failed\n").unwrap();

    let extra = AgentExtra {
        tail: format!(
            "[health]\nsystemd_units = [\"vision.service\"]\n[[health.http_checks]]\nname = \"vision\"\nurl = \"{url}\"\ntimeout_ms = 2000\n[recovery]\nenabled = false\n"
        ),
        ..Default::default()
    };
    let cfg = fleet.agent_config_extra("hc1", 500, &extra).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let log = fleet.dir.path().join("agent.log");
    let _agent = Child::spawn_env(
        "rvm-agent",
        &["--config", cfg.to_str().unwrap()],
        &[("PATH", path.as_str())],
        &log,
    )
    .unwrap();

    let http_id = "check.http.vision:hc1:1";
    let (unit_id, service_id) = ("check.unit.vision.service:hc1:1", "service_down:hc1:1");
    let firing = eventually(WITHIN, || async {
        let mut got = Vec::new();
        for id in [http_id, unit_id, service_id] {
            got.push(alert(&fleet, id).await.filter(|a| a["state"] == "firing")?);
        }
        Some(got)
    })
    .await;
    let Some(all_firing) = firing else {
        panic!(
            "not all three fired: {:#}\nagent log:\n{}",
            fleet.get("/api/v1/alerts?state=all").await.unwrap_or_default(),
            rvm_fleet_tests::read(&log)
        );
    };
    let http = &all_firing[0];
    assert_eq!(http["severity"], "critical", "{http:#}");
    assert_eq!(http["labels"]["check"], "http:vision");
    assert_eq!(http["labels"]["check_kind"], "http");
    assert_eq!(http["labels"]["site"], "test");
    assert_eq!(
        http["summary"], "http vision answered 500 (expected 200)",
        "{http:#}"
    );
    assert_eq!(all_firing[1]["summary"], "unit vision.service is failed");
    assert_eq!(all_firing[2]["value"], 1.0, "one unit down: {:#}", all_firing[2]);
    // people hear about it, the check and the machine named
    let page = eventually(WITHIN, || async {
        hook.bodies()
            .into_iter()
            .find(|b| b["id"] == format!("{http_id}/firing").as_str())
    })
    .await
    .unwrap_or_else(|| panic!("{:#?}", hook.bodies()));
    assert_eq!(
        page["title"],
        "check.http.vision on hc1: http vision answered 500 (expected 200)"
    );
    assert_eq!(page["severity"], "critical");

    // fixed: the endpoint answers 200 and the unit is active again
    status.store(200, Ordering::Release);
    std::fs::write(states.join("vision.service"), "active\n").unwrap();
    let all_resolved = eventually(WITHIN, || async {
        for id in [http_id, unit_id, service_id] {
            alert(&fleet, id).await.filter(|a| a["state"] == "resolved")?;
        }
        Some(())
    })
    .await;
    assert!(
        all_resolved.is_some(),
        "not all three resolved: {:#}",
        fleet.get("/api/v1/alerts?state=all").await.unwrap_or_default()
    );
    let resolved = eventually(WITHIN, || async {
        let ids: Vec<String> = hook
            .bodies()
            .iter()
            .filter_map(|b| b["id"].as_str().map(str::to_string))
            .collect();
        [http_id, unit_id, service_id]
            .iter()
            .all(|id| ids.contains(&format!("{id}/resolved")))
            .then_some(())
    })
    .await;
    assert!(resolved.is_some(), "{:#?}", hook.bodies());
    let active = fleet.get("/api/v1/alerts").await.unwrap();
    assert_eq!(active["alerts"], serde_json::json!([]), "{active:#}");
}
