//! Several fleet-server instances on one PostgreSQL database (issue 21): commands reach a
//! machine through the instance that holds its session, once, wherever they were posted and
//! whichever instance died; a machine's newer session on another instance ends the stale one.
//!
//! Real `fleet-server` processes A (`fleet-a`) and B (`fleet-b`) on a throwaway database of
//! the test cluster, a real agent (in-process, its recovery executor records what runs, its
//! executed-command store on disk like a machine's) connected to one broker at a time. Then
//! the outbox claims and the guarded `commands` upsert on their own against the database.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::DeviceId;
use common::command::{Action, SignedCommand};
use common::pki::CertDir;
use fleet_server::commands::book::{CmdState, CommandRecord};
use fleet_server::commands::outbox;
use fleet_server::commands::pg::PgCommands;
use fleet_server::commands::store::CommandStore;
use fleet_server::pg::store::PgStore;
use fleet_server::sessions::pg as sessions_pg;
use rvm_agent::agent::Overrides;
use rvm_agent::recovery::executor::RecordingExecutor;
use rvm_fleet_tests::cluster::{Cluster, ClusterOptions, pg_store};
use rvm_fleet_tests::harness::ServerProc;
use rvm_fleet_tests::postgres::PgDatabase;
use rvm_fleet_tests::{
    AgentExtra, Agents, ConnectOutcome, Probe, eventually, tls_for, write_agent_config_extra,
};
use serde_json::{Value, json};

/// Two instances on one database, each with its own ports and data directory.
struct Pair {
    dir: tempfile::TempDir,
    certs: CertDir,
    pg: PgDatabase,
    a: ServerProc,
    b: ServerProc,
}

impl Pair {
    async fn start() -> Pair {
        let Cluster {
            mut servers,
            dir,
            certs,
            pg,
            ..
        } = Cluster::start(&["fleet-a", "fleet-b"], ClusterOptions::default()).await;
        let b = servers.pop().unwrap();
        let a = servers.pop().unwrap();
        Pair { dir, certs, pg, a, b }
    }

    /// A real agent `id` on `broker`'s MQTT port, its executor recording.
    fn agent(&self, id: &str, broker: u16, rec: &Arc<RecordingExecutor>) -> Agents {
        let extra = AgentExtra {
            tail: format!(
                "[recovery]\nextra_units = [\"vision.service\"]\n[commands]\npublic_key = \"{}\"\n",
                self.certs.signing_pub().display()
            ),
            ..Default::default()
        };
        // the same buffer directory every time: the machine's executed ids survive the move
        let cfg = write_agent_config_extra(self.dir.path(), &self.certs, id, broker, 500, &extra).unwrap();
        Agents::start_with(vec![(
            cfg,
            Overrides {
                executor: Some(rec.clone()),
                ..Default::default()
            },
        )])
        .unwrap()
    }

    fn sql(&self, q: &str) -> String {
        self.pg.psql(q).unwrap().trim().to_string()
    }

    /// `instance|epoch` of the machine's session row.
    fn owner(&self, device: &str) -> String {
        self.sql(&format!(
            "SELECT instance || '|' || epoch FROM session_owners WHERE device = '{device}'"
        ))
    }

    async fn wait_owner(&self, device: &str, instance: &str) {
        let got = eventually(Duration::from_secs(20), || async {
            self.owner(device)
                .starts_with(&format!("{instance}|"))
                .then_some(())
        })
        .await;
        assert!(
            got.is_some(),
            "{device} on {instance}: {}\nA:\n{}\nB:\n{}",
            self.owner(device),
            tail(&self.a.log),
            tail(&self.b.log)
        );
    }

    /// `delivered|claimed_by|attempts` of a command's outbox row.
    fn outbox(&self, id: &str) -> String {
        self.sql(&format!(
            "SELECT (delivered_at IS NOT NULL)::text || '|' || coalesce(claimed_by, '-') || '|' || attempts
             FROM command_outbox WHERE command_id = '{id}'"
        ))
    }

    /// Final-result lines of the audit log for one command (written once, by its deliverer).
    fn result_audits(&self, id: &str) -> u64 {
        self.sql(&format!(
            "SELECT count(*) FROM audit WHERE action = 'command_result' AND entry->>'command' = '{id}'"
        ))
        .parse()
        .unwrap()
    }
}

fn tail(p: &Path) -> String {
    let t = rvm_fleet_tests::read(p);
    let lines: Vec<&str> = t.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

async fn post_command(server: &ServerProc, device: &str, reason: &str) -> String {
    let r = reqwest::Client::new()
        .post(server.url(&format!("/api/v1/devices/{device}/commands")))
        .bearer_auth(&server.token)
        .json(
            &json!({"action": {"restart_unit": {"unit": "vision.service"}}, "ttl_s": 300, "reason": reason}),
        )
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{v}");
    v["id"].as_str().unwrap().to_string()
}

async fn command(server: &ServerProc, id: &str) -> Option<Value> {
    server.get(&format!("/api/v1/commands/{id}")).await.ok()
}

async fn wait_state(server: &ServerProc, id: &str, want: &str, within: Duration) -> Option<Value> {
    eventually(within, || async {
        let v = command(server, id).await?;
        (v["state"] == want).then_some(v)
    })
    .await
}

async fn sessions(server: &ServerProc) -> Value {
    server
        .get("/api/v1/health")
        .await
        .map(|h| h["sessions"].clone())
        .unwrap_or_default()
}

fn restart_vision() -> Action {
    Action::RestartUnit {
        unit: "vision.service".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_command_posted_on_b_reaches_the_machine_through_a_once() {
    let p = Pair::start().await;
    let rec = Arc::new(RecordingExecutor::new());
    let _agent = p.agent("clu1", p.a.mqtt, &rec);
    p.wait_owner("clu1", "fleet-a").await;
    // A has seen the machine's birth (it is online there), and B its delivery row (B's view
    // of the fleet reads the store every second: a command posted before would be a 404)
    eventually(Duration::from_secs(20), || async {
        p.a.get("/api/v1/devices/clu1").await.ok()?;
        p.b.get("/api/v1/devices/clu1").await.ok()
    })
    .await
    .expect("A and B know the machine");

    let t0 = Instant::now();
    let id = post_command(&p.b, "clu1", "posted on B").await;
    let ran = eventually(Duration::from_secs(10), || async {
        (!rec.calls().is_empty()).then(|| t0.elapsed())
    })
    .await;
    println!(
        "posted on B, run by the machine on A: {:?}",
        ran.map(|d| d.as_millis())
    );
    let done = wait_state(&p.b, &id, "succeeded", Duration::from_secs(15)).await;
    let took = t0.elapsed();
    assert!(
        done.is_some(),
        "B shows it succeeded: {:?}\noutbox {}\nA:\n{}\nB:\n{}",
        command(&p.b, &id).await,
        p.outbox(&id),
        tail(&p.a.log),
        tail(&p.b.log)
    );
    println!("posted on B, succeeded as B sees it: {} ms", took.as_millis());
    // and it stays that way: one run, one publish, one claim, by A
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(rec.calls(), vec![restart_vision()], "ran once");
    let on_a = command(&p.a, &id).await.expect("A knows the command too");
    assert_eq!(on_a["state"], "succeeded", "{on_a}");
    assert_eq!(on_a["sends"], 1, "published once: {on_a}");
    assert_eq!(p.outbox(&id), "true|fleet-a|1", "delivered by A, claimed once");
    assert_eq!(p.result_audits(&id), 1, "one final result in the audit log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_commands_for_a_machine_whose_instance_was_killed_run_once_after_it_reconnects_to_the_other()
{
    let mut p = Pair::start().await;
    let rec = Arc::new(RecordingExecutor::new());
    let mut agent = p.agent("clu2", p.a.mqtt, &rec);
    p.wait_owner("clu2", "fleet-a").await;
    eventually(Duration::from_secs(20), || async {
        p.a.get("/api/v1/devices/clu2").await.ok()
    })
    .await
    .expect("A knows the machine");

    // the machine goes away; one command queued on A while it is away, then A dies
    agent.stop();
    drop(agent);
    let gone = eventually(Duration::from_secs(15), || async {
        (sessions(&p.a).await["held"].as_u64()? == 0).then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "A's broker saw the session end: {}",
        sessions(&p.a).await
    );
    let on_a = post_command(&p.a, "clu2", "queued on A").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    p.a.kill9();
    // one more posted on B while the machine is away and A is dead
    let on_b = post_command(&p.b, "clu2", "posted on B").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    for id in [&on_a, &on_b] {
        let v = command(&p.b, id).await.expect("B knows both commands");
        assert_eq!(
            v["state"], "queued",
            "nobody delivers while the machine is away: {v}"
        );
        assert!(p.outbox(id).starts_with("false|"), "{}", p.outbox(id));
    }
    assert!(rec.calls().is_empty());

    // the machine comes back, on B
    let t0 = Instant::now();
    let rec2 = Arc::new(RecordingExecutor::new());
    let _agent = p.agent("clu2", p.b.mqtt, &rec2);
    for id in [&on_a, &on_b] {
        let done = wait_state(&p.b, id, "succeeded", Duration::from_secs(20)).await;
        assert!(
            done.is_some(),
            "{id}: {:?}\nowner {}\noutbox {}\nB:\n{}",
            command(&p.b, id).await,
            p.owner("clu2"),
            p.outbox(id),
            tail(&p.b.log)
        );
    }
    println!(
        "reconnected to B, both succeeded: {} ms",
        t0.elapsed().as_millis()
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        rec2.calls(),
        vec![restart_vision(), restart_vision()],
        "each ran once"
    );
    assert!(rec.calls().is_empty());
    assert!(p.owner("clu2").starts_with("fleet-b|"), "{}", p.owner("clu2"));
    for id in [&on_a, &on_b] {
        let v = command(&p.b, id).await.unwrap();
        assert_eq!(v["sends"], 1, "published once: {v}");
        assert_eq!(p.outbox(id), "true|fleet-b|1", "{id}");
        assert_eq!(p.result_audits(id), 1, "{id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_the_same_machine_connecting_to_b_makes_a_end_its_stale_session() {
    let p = Pair::start().await;
    let rec = Arc::new(RecordingExecutor::new());
    let agent = p.agent("clu3", p.a.mqtt, &rec);
    p.wait_owner("clu3", "fleet-a").await;
    let epoch_a: i64 = p.owner("clu3").split('|').nth(1).unwrap().parse().unwrap();
    assert_eq!(sessions(&p.a).await["stale_dropped"], 0);

    // a second session of the same machine (its certificate) on B, while A's is alive
    let id = p.certs.device_identity(&common::DeviceId::new("clu3").unwrap());
    // (B's API answers before its broker takes devices: it refuses them until its own session
    // is subscribed, so try again as an agent would)
    let accepted = eventually(Duration::from_secs(20), || async {
        let mut probe = Probe::new("clu3", tls_for(&id));
        probe.username = Some("clu3".into());
        match probe.connect(p.b.mqtt).await {
            ConnectOutcome::Accepted(client, el) => Some((client, el)),
            _ => None,
        }
    })
    .await;
    let Some((_client, mut el)) = accepted else {
        panic!("the machine's certificate connects to B: {}", tail(&p.b.log))
    };
    let t0 = Instant::now();
    tokio::spawn(async move { while el.poll().await.is_ok() {} });
    let dropped = eventually(Duration::from_secs(10), || async {
        (sessions(&p.a).await["stale_dropped"].as_u64()? >= 1).then_some(t0.elapsed())
    })
    .await;
    assert!(
        dropped.is_some(),
        "A ends its stale session: {}\nowner {}\nA:\n{}",
        sessions(&p.a).await,
        p.owner("clu3"),
        tail(&p.a.log)
    );
    println!(
        "stale session on A ended {} ms after B took the machine",
        dropped.unwrap().as_millis()
    );
    // the agent reconnects to A (its only broker): a newer session, so B ends the probe's
    let b_dropped = eventually(Duration::from_secs(20), || async {
        (sessions(&p.b).await["stale_dropped"].as_u64()? >= 1).then_some(())
    })
    .await;
    assert!(
        b_dropped.is_some(),
        "B ends the probe's session: {}",
        sessions(&p.b).await
    );
    p.wait_owner("clu3", "fleet-a").await;
    let epoch_now: i64 = p.owner("clu3").split('|').nth(1).unwrap().parse().unwrap();
    assert!(
        epoch_now >= epoch_a + 2,
        "B's connect and A's reconnect: {epoch_a} -> {epoch_now}"
    );
    // and it settles: no session flapping once the probe is gone
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (sa, sb) = (sessions(&p.a).await, sessions(&p.b).await);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sessions(&p.a).await["stale_dropped"], sa["stale_dropped"], "{sa}");
    assert_eq!(sessions(&p.b).await["stale_dropped"], sb["stale_dropped"], "{sb}");
    assert_eq!(sessions(&p.a).await["held"], 1, "A holds the machine again");
    drop(agent);
}

// ---------------------------------------------------------------------------------------------
// The outbox and the guarded upsert on their own, against the real database.

fn build_command(id: &str, state: CmdState, now: i64) -> CommandRecord {
    CommandRecord {
        id: id.into(),
        device: DeviceId::new("m1").unwrap(),
        action: Action::DropCaches,
        reason: "r".into(),
        issued_by: "op".into(),
        created_ms: now,
        expires_ms: now + 600_000,
        state,
        updated_ms: now,
        output: String::new(),
        detail: None,
        sends: 0,
        last_sent_ms: None,
        accepted_ms: None,
        rollout: None,
        signed: SignedCommand {
            payload: vec![1],
            signature: vec![2; 64],
        },
        dry_run: false,
        approved_by: None,
        approved_ms: None,
    }
}

/// Writes through the actor's store and waits for the writer (its drop drains it).
fn write(store: &PgStore, f: impl FnOnce(&PgCommands)) {
    let c = PgCommands::new(store.clone());
    f(&c);
}

fn claim(store: &PgStore, me: &str) -> Vec<String> {
    let (s, me) = (store.clone(), me.to_string());
    store
        .run(async move { outbox::claim(&s, &me, &[DeviceId::new("m1").unwrap()]).await })
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect()
}

fn own(store: &PgStore, me: &str) -> i64 {
    let (s, me) = (store.clone(), me.to_string());
    store
        .run(async move { sessions_pg::upsert_owner(&s, &DeviceId::new("m1").unwrap(), &me).await })
        .unwrap()
}

#[test]
fn postgres_only_the_session_holder_claims_once_per_lease_and_session_until_the_agent_answers() {
    let pg = PgDatabase::shared().unwrap();
    let store = pg_store(&pg, 4);
    let now = common::time::now_ms();
    let c1 = build_command("c1", CmdState::Queued, now);
    write(&store, |c| {
        c.put(&c1);
        c.enqueue(&c1);
    });
    let attempts = || {
        pg.psql("SELECT attempts FROM command_outbox WHERE command_id = 'c1'")
            .unwrap()
    };
    assert!(claim(&store, "a").is_empty(), "no instance holds the machine yet");
    assert_eq!(own(&store, "a"), 1);
    assert!(claim(&store, "b").is_empty(), "b does not hold the machine");
    assert_eq!(claim(&store, "a"), ["c1"]);
    assert!(
        claim(&store, "a").is_empty(),
        "claimed: not again within the lease"
    );
    // the machine reconnects to a: what went to the old session is sent again, once
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(own(&store, "a"), 2);
    assert_eq!(claim(&store, "a"), ["c1"]);
    assert!(claim(&store, "a").is_empty());
    // the machine moves to b: a no longer claims, b does, once
    assert_eq!(own(&store, "b"), 3);
    assert!(claim(&store, "a").is_empty());
    assert_eq!(claim(&store, "b"), ["c1"]);
    assert!(claim(&store, "b").is_empty());
    // the lease runs out (no answer): due again
    pg.psql("UPDATE command_outbox SET claimed_until = now() - interval '1 second'")
        .unwrap();
    assert_eq!(claim(&store, "b"), ["c1"]);
    assert_eq!(attempts().trim(), "4");
    // the agent answered: never again
    write(&store, |c| c.delivered("c1"));
    pg.psql("UPDATE command_outbox SET claimed_until = now() - interval '1 second'")
        .unwrap();
    assert!(claim(&store, "b").is_empty());
    assert_eq!(own(&store, "b"), 4);
    assert!(
        claim(&store, "b").is_empty(),
        "delivered rows are not claimed on reconnect"
    );
    assert_eq!(attempts().trim(), "4");
}

#[test]
fn postgres_a_lagging_write_never_moves_a_command_back() {
    let pg = PgDatabase::shared().unwrap();
    let store = pg_store(&pg, 4);
    let now = common::time::now_ms();
    let state = |id: &str| {
        pg.psql(&format!("SELECT state FROM commands WHERE id = '{id}'"))
            .unwrap()
            .trim()
            .to_string()
    };
    let steps: [(&str, &[CmdState], &str); 4] = [
        ("c1", &[CmdState::Succeeded, CmdState::Sent], "succeeded"),
        ("c2", &[CmdState::Accepted, CmdState::Expired], "accepted"),
        ("c3", &[CmdState::Sent, CmdState::Expired], "expired"),
        (
            "c4",
            &[
                CmdState::Queued,
                CmdState::Sent,
                CmdState::Running,
                CmdState::Accepted,
            ],
            "running",
        ),
    ];
    for (id, states, want) in steps {
        for (i, s) in states.iter().enumerate() {
            let mut r = build_command(id, *s, now);
            r.updated_ms = now + i as i64;
            write(&store, |c| c.put(&r));
        }
        assert_eq!(state(id), want, "{id}: {states:?}");
    }
    // a final state is final, whatever comes later
    let mut late = build_command("c1", CmdState::Failed, now);
    late.updated_ms = now + 100;
    write(&store, |c| c.put(&late));
    assert_eq!(state("c1"), "succeeded");
}
