//! Approvals and dry runs (issue 23 item 4), end to end with a real agent whose recovery
//! executor records calls instead of acting: a reboot (disruptive by default,
//! `[commands] approval_required`) requested by operator A is not sent until operator B
//! approves it, A cannot approve it; a dry run of a reboot is validated by the agent and
//! answered with what would happen, and the executor records no call. The same through the
//! real `fleetctl` binary (`cmd send --dry-run`, `cmd approve`).

use std::sync::Arc;
use std::time::Duration;

use common::command::Action;
use fleet_server::auth::Role;
use reqwest::Method;
use rvm_agent::agent::Overrides;
use rvm_agent::recovery::executor::RecordingExecutor;
use rvm_fleet_tests::{AgentExtra, Agents, TestFleet, bin_path, eventually};
use serde_json::{Value, json};

fn start_agent(fleet: &TestFleet, id: &str, allow_reboot: bool, rec: &Arc<RecordingExecutor>) -> Agents {
    let extra = AgentExtra {
        tail: format!(
            "[recovery]\nallow_reboot = {allow_reboot}\n[commands]\npublic_key = \"{}\"\n",
            fleet.certs.signing_pub().display()
        ),
        ..Default::default()
    };
    let cfg = fleet.agent_config_extra(id, 500, &extra).unwrap();
    Agents::start_with(vec![(
        cfg,
        Overrides {
            executor: Some(rec.clone()),
            ..Default::default()
        },
    )])
    .unwrap()
}

async fn known(fleet: &TestFleet, id: &str) {
    eventually(Duration::from_secs(15), || async { fleet.device(id).await.ok()? })
        .await
        .expect("device reports");
}

async fn post(fleet: &TestFleet, token: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    fleet.send(Method::POST, path, token, body).await.unwrap()
}

async fn wait_final(fleet: &TestFleet, id: &str) -> Value {
    eventually(Duration::from_secs(15), || async {
        let v = fleet.get(&format!("/api/v1/commands/{id}")).await.ok()?;
        ["succeeded", "failed", "rejected", "expired", "timed_out"]
            .contains(&v["state"].as_str()?)
            .then_some(v)
    })
    .await
    .expect("a final state")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_waits_for_a_second_operator_the_requester_cannot_approve_it_and_a_dry_run_reboots_nothing()
{
    let fleet = TestFleet::start().unwrap();
    let rec = Arc::new(RecordingExecutor::new());
    let _agents = start_agent(&fleet, "appr1", true, &rec);
    known(&fleet, "appr1").await;
    let alice = fleet.token("alice", Role::Operator).unwrap();
    let bob = fleet.token("bob", Role::Operator).unwrap();

    // a dry run: validated by the agent, answered, nothing done (and no approval needed)
    let (status, v) = post(
        &fleet,
        &alice,
        "/api/v1/devices/appr1/commands",
        Some(json!({"action": "reboot", "ttl_s": 60, "reason": "will it reboot?", "dry_run": true})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["dry_run"], true);
    let dry = wait_final(&fleet, v["id"].as_str().unwrap()).await;
    println!("dry run: {dry:#}");
    assert_eq!(dry["state"], "succeeded", "{dry}");
    let out = dry["output"].as_str().unwrap();
    assert!(
        out.starts_with("dry run: would run reboot") && out.contains("nothing was done"),
        "{out}"
    );

    // the real thing waits for a second operator
    let (status, v) = post(
        &fleet,
        &alice,
        "/api/v1/devices/appr1/commands",
        Some(json!({"action": "reboot", "ttl_s": 120, "reason": "kernel update"})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["state"], "awaiting_approval", "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = fleet.get(&format!("/api/v1/commands/{id}")).await.unwrap();
    assert_eq!(still["state"], "awaiting_approval");
    assert_eq!(still["sends"], 0, "never sent: {still}");
    assert!(rec.calls().is_empty(), "nothing ran: {:?}", rec.calls());

    // alice cannot approve her own request
    let (status, v) = post(&fleet, &alice, &format!("/api/v1/commands/{id}/approve"), None).await;
    assert_eq!(status, 403, "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("requested by alice") && msg.contains("cannot approve their own"),
        "{msg}"
    );
    // a viewer cannot approve at all
    let viewer = fleet.token("vic", Role::Viewer).unwrap();
    let (status, _) = post(&fleet, &viewer, &format!("/api/v1/commands/{id}/approve"), None).await;
    assert_eq!(status, 403);
    assert!(rec.calls().is_empty());

    // bob approves: it is sent, and the machine reboots (the executor records it)
    let (status, v) = post(&fleet, &bob, &format!("/api/v1/commands/{id}/approve"), None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["approved_by"], "bob");
    let done = wait_final(&fleet, &id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["issued_by"], "alice");
    assert_eq!(rec.calls(), vec![Action::Reboot], "one reboot, the approved one");
    // approving twice is a conflict
    let (status, _) = post(&fleet, &bob, &format!("/api/v1/commands/{id}/approve"), None).await;
    assert_eq!(status, 409);

    // the audit log says who asked, who approved, and the dry run
    let audit = eventually(Duration::from_secs(5), || async {
        let a = fleet
            .send(Method::GET, "/api/v1/audit", &alice, None)
            .await
            .ok()?
            .1;
        let e = a["entries"].as_array()?.clone();
        let asked = e
            .iter()
            .any(|l| l["command"] == id.as_str() && l["who"] == "alice" && l["awaiting_approval"] == true);
        let approved = e.iter().any(|l| {
            l["command"] == id.as_str()
                && l["action"] == "command_approved"
                && l["who"] == "bob"
                && l["requested_by"] == "alice"
        });
        let dry = e.iter().any(|l| l["action"] == "command" && l["dry_run"] == true);
        (asked && approved && dry).then_some(e)
    })
    .await
    .expect("request, approval and dry run in the audit log");
    assert!(!audit.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_the_agent_would_refuse_is_answered_rejected_with_the_reason_and_runs_nothing() {
    let fleet = TestFleet::start().unwrap();
    let rec = Arc::new(RecordingExecutor::new());
    let _agents = start_agent(&fleet, "appr2", false, &rec);
    known(&fleet, "appr2").await;
    let alice = fleet.token("alice", Role::Operator).unwrap();
    let (status, v) = post(
        &fleet,
        &alice,
        "/api/v1/devices/appr2/commands",
        Some(json!({"action": "reboot", "ttl_s": 60, "reason": "would it?", "dry_run": true})),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let done = wait_final(&fleet, v["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "rejected", "{done}");
    let why = done["detail"].as_str().unwrap();
    assert!(
        why.starts_with("dry run:") && why.contains("allow_reboot"),
        "{why}"
    );
    // a dry run of an allowed action uses up no rate limit and runs nothing
    let (_, v) = post(
        &fleet,
        &alice,
        "/api/v1/devices/appr2/commands",
        Some(json!({"action": "drop_caches", "ttl_s": 60, "reason": "would it?", "dry_run": true})),
    )
    .await;
    let done = wait_final(&fleet, v["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(rec.calls().is_empty(), "{:?}", rec.calls());
}

/// Runs fleetctl against the fleet as `token`; (exit code, stdout, stderr).
fn fleetctl(fleet: &TestFleet, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(bin_path("fleetctl"))
        .args(args)
        .args(["--server", &fleet.url(""), "--token", token])
        .output()
        .expect("fleetctl runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleetctl_sends_a_dry_run_and_approves_another_operators_reboot_but_not_its_own() {
    let fleet = TestFleet::start().unwrap();
    let rec = Arc::new(RecordingExecutor::new());
    let _agents = start_agent(&fleet, "appr3", true, &rec);
    known(&fleet, "appr3").await;
    let alice = fleet.token("alice", Role::Operator).unwrap();
    let bob = fleet.token("bob", Role::Operator).unwrap();
    let (a, b) = (alice.clone(), bob.clone());
    let f = &fleet;
    let (code, out, err) = tokio::task::block_in_place(|| {
        fleetctl(
            f,
            &a,
            &[
                "cmd",
                "send",
                "appr3",
                "reboot",
                "--dry-run",
                "--ttl-s",
                "60",
                "--reason",
                "check",
            ],
        )
    });
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("(dry run)") && out.contains("dry run: would run reboot"),
        "{out}"
    );
    let (code, out, err) = tokio::task::block_in_place(|| {
        fleetctl(
            f,
            &a,
            &[
                "cmd",
                "send",
                "appr3",
                "reboot",
                "--no-wait",
                "--ttl-s",
                "60",
                "--reason",
                "update",
            ],
        )
    });
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("awaiting_approval"), "{out}");
    let id = out.split_whitespace().next().unwrap().to_string();
    let (code, out, err) = tokio::task::block_in_place(|| fleetctl(f, &a, &["cmd", "approve", &id]));
    assert_ne!(code, 0, "{out}");
    assert!(
        err.contains("403") || err.contains("cannot approve their own"),
        "{err}"
    );
    assert!(rec.calls().is_empty());
    let (code, out, err) = tokio::task::block_in_place(|| fleetctl(f, &b, &["cmd", "approve", &id]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("approved by bob"), "{out}");
    let done = wait_final(&fleet, &id).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(rec.calls(), vec![Action::Reboot]);
}
