//! The server's PostgreSQL stores (the storage seam: `ingest/pg.rs`, `history/pg.rs`,
//! `alerts/pg.rs`, `commands/pg.rs`, `fleet/pg.rs`, `pg/tokens.rs`, `pg/audit.rs`,
//! `notify/outbox/pg_store.rs`) against real PostgreSQL (a database each on the binary's shared
//! throwaway cluster; a cluster of its own for the test that crashes it): what each writes
//! comes back as it was, and a database that goes away is reported and recovered from. Needs
//! Debian's PostgreSQL 15 (`.ci/run` installs it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::command::{Action, SignedCommand};
use common::{Birth, DeviceId, Severity};
use fleet_server::alerts::alert::{Ack, Alert, AlertState, Resolution};
use fleet_server::alerts::engine::{self, EngineState, PairCooldown, PairCounter};
use fleet_server::alerts::maintenance::AddedWindow;
use fleet_server::alerts::pg::PgAlerts;
use fleet_server::alerts::rules::Op;
use fleet_server::alerts::silence::{Matcher, Silence};
use fleet_server::alerts::store::AlertStore;
use fleet_server::audit::AuditLog;
use fleet_server::auth::{Role, Scope, TokenError, TokenStore};
use fleet_server::commands::book::{CmdState, CommandRecord};
use fleet_server::commands::pg::PgCommands;
use fleet_server::commands::rollout::{Rollout, RolloutState, Target};
use fleet_server::commands::store::CommandStore;
use fleet_server::fleet::delivery::DeliveryState;
use fleet_server::fleet::pg::PgPresence;
use fleet_server::fleet::state::Presence;
use fleet_server::fleet::store::{PresenceRow, PresenceStore};
use fleet_server::history::minute::{DAY_MS, MINUTE_MS, minute_of};
use fleet_server::history::pg::{PAGE_ROWS, PgHistory};
use fleet_server::history::rollup::HistoryPolicy;
use fleet_server::history::rows::HistoryRow;
use fleet_server::history::store::HistoryStore;
use fleet_server::incidents::incident::{
    self, CorrelatorState, FiringAlert, Incident, IncidentKind, IncidentState,
};
use fleet_server::ingest::pg::PgIngest;
use fleet_server::ingest::store::{IngestStore, WriteBatch};
use fleet_server::notify::maintenance::WindowFile;
use fleet_server::notify::notification::Notification;
use fleet_server::notify::outbox::pg_store::PgOutbox;
use fleet_server::notify::outbox::{
    EntryState, MemoryOutbox, OutboxEntry, OutboxStore, Outcome, RetryPolicy,
};
use fleet_server::pg::audit::PgAudit;
use fleet_server::pg::partitions::Retention;
use fleet_server::pg::store::PgStore;
use fleet_server::pg::tokens::{PgTokens, TOKEN_REFRESH};
use fleet_server::pg::{Backend, PgConfig, StorageBackend, StorageBackendFile};
use fleet_server::storage::health::StorageHealth;
use proptest::prelude::*;
use rvm_fleet_tests::postgres::PgDatabase;

fn pg_config(url: &str) -> PgConfig {
    let file = StorageBackendFile {
        backend: Backend::Postgres,
        url: Some(url.to_string()),
        pool_size: Some(4),
        ..Default::default()
    };
    match file.validate_with("storage", &|_| None).unwrap() {
        StorageBackend::Postgres(c) => *c,
        StorageBackend::Sled => unreachable!(),
    }
}

fn open(pg: &PgDatabase) -> PgStore {
    let health = Arc::new(StorageHealth::new("postgres"));
    PgStore::open(
        &pg_config(&pg.url()),
        Retention::default(),
        health,
        common::time::now_ms(),
    )
    .unwrap()
    .0
}

fn d(s: &str) -> DeviceId {
    DeviceId::new(s).unwrap()
}

fn build_alert(rule: &str, dev: &str, generation: u64, state: AlertState, t: i64) -> Alert {
    Alert {
        id: format!("{rule}:{dev}:{generation}"),
        rule: rule.into(),
        device: d(dev),
        generation,
        metric: "gpu.temp_c".into(),
        severity: Severity::Critical,
        labels: BTreeMap::from([("site".to_string(), "oslo".to_string())]),
        summary: "hot".into(),
        op: Op::Gt,
        value: 91.5,
        threshold: 90.0,
        clear: 85.0,
        started_ms: t,
        fired_ms: (state != AlertState::Pending).then_some(t + 1_000),
        resolved_ms: (state == AlertState::Resolved).then_some(t + 2_000),
        escalated_ms: None,
        last_sample_ms: t + 1_500,
        ack: (generation == 1).then(|| Ack {
            by: "alice".into(),
            at_ms: t + 1_200,
            comment: "on it".into(),
        }),
        silenced_by: None,
        // a maintenance window muted the notifications of the first generation
        muted_by: (generation == 1).then(|| "nightly".to_string()),
        // a person resolved the first generation by hand
        resolved_by: (generation == 1 && state == AlertState::Resolved).then(|| Resolution {
            by: "bob".into(),
            at_ms: t + 2_000,
            comment: "fan replaced".into(),
        }),
        state,
    }
}

fn build_incident(id: &str, state: IncidentState, t: i64) -> Incident {
    Incident {
        id: id.into(),
        kind: IncidentKind::SiteOutage,
        title: "oslo offline".into(),
        probable_cause: "the site's network".into(),
        site: Some("oslo".into()),
        attribute: None,
        attribute_value: None,
        rule: Some("device_offline".into()),
        metric: None,
        devices: vec![d("rvm1"), d("rvm2")],
        members: vec!["device_offline:rvm1:1".into()],
        active_members: vec![],
        suppresses_members: true,
        opened_ms: t,
        updated_ms: t + 10,
        resolved_ms: (state != IncidentState::Open).then_some(t + 20),
        state,
    }
}

/// An engine's and a correlator's export as the cores make them (sorted as they sort).
fn build_exports(t: i64) -> (EngineState, CorrelatorState) {
    let engine = EngineState {
        version: engine::STATE_VERSION,
        active: vec![
            build_alert("gpu_hot", "rvm1", 2, AlertState::Firing, t),
            build_alert("gpu_hot", "rvm2", 1, AlertState::Pending, t),
        ],
        history: vec![
            build_alert("gpu_hot", "rvm1", 1, AlertState::Resolved, t - 10_000),
            build_alert("cpu_hot", "rvm3", 4, AlertState::Resolved, t - 5_000),
        ],
        silences: vec![Silence {
            id: "s1".into(),
            matchers: vec![Matcher {
                label: "site".into(),
                value: "oslo".into(),
            }],
            expires_ms: t + 3_600_000,
            created_by: "bob".into(),
            comment: "maintenance".into(),
            created_ms: t,
        }],
        generations: vec![
            PairCounter {
                rule: "cpu_hot".into(),
                device: d("rvm3"),
                generation: 4,
            },
            PairCounter {
                rule: "gpu_hot".into(),
                device: d("rvm1"),
                generation: 2,
            },
            PairCounter {
                rule: "gpu_hot".into(),
                device: d("rvm2"),
                generation: 1,
            },
        ],
        cooldowns: vec![PairCooldown {
            rule: "cpu_hot".into(),
            device: d("rvm3"),
            until_ms: t + 60_000,
        }],
    };
    let corr = CorrelatorState {
        version: incident::STATE_VERSION,
        next_seq: 7,
        open: vec![build_incident("site_outage-6", IncidentState::Open, t)],
        recent: vec![build_incident(
            "site_outage-5",
            IncidentState::Resolved,
            t - 50_000,
        )],
        firing: vec![FiringAlert {
            id: "gpu_hot:rvm1:2".into(),
            rule: "gpu_hot".into(),
            device: d("rvm1"),
            metric: "gpu.temp_c".into(),
            site: Some("oslo".into()),
            started_ms: t,
            fired_ms: t + 1_000,
        }],
    };
    (engine, corr)
}

/// The orders a load does not promise (the cores key them by id).
fn normalized(mut e: EngineState) -> EngineState {
    e.active.sort_by(|a, b| a.id.cmp(&b.id));
    e.generations
        .sort_by(|a, b| (&a.rule, &a.device).cmp(&(&b.rule, &b.device)));
    e.cooldowns
        .sort_by(|a, b| (&a.rule, &a.device).cmp(&(&b.rule, &b.device)));
    e
}

#[test]
fn postgres_the_alerts_state_comes_back_as_it_was_saved() {
    let pg = PgDatabase::shared().unwrap();
    let store = open(&pg);
    let t = 1_741_611_600_000;
    let (engine, corr) = build_exports(t);
    let alerts = PgAlerts::new(store.clone());
    assert_eq!(alerts.load().unwrap().engine, None, "an empty database");
    alerts.save(&engine, &corr).unwrap();
    let loaded = PgAlerts::new(store.clone()).load().unwrap();
    assert_eq!(normalized(loaded.engine.unwrap()), normalized(engine.clone()));
    assert_eq!(loaded.correlator.unwrap(), corr);
    // people and Grafana read the same: one open alert per (rule, device), acks shown
    let rows = pg
        .psql("SELECT id, state, ack_by FROM fleet_alerts WHERE state <> 'resolved' ORDER BY id")
        .unwrap();
    assert_eq!(rows, "gpu_hot:rvm1:2|firing|\ngpu_hot:rvm2:1|pending|alice");
    let muted = pg
        .psql("SELECT string_agg(id, ',' ORDER BY id) FROM fleet_alerts WHERE muted_by = 'nightly'")
        .unwrap();
    assert_eq!(
        muted, "gpu_hot:rvm1:1,gpu_hot:rvm2:1",
        "the muting window is kept and shown"
    );
    // the maintenance windows added through the API, beside the exports
    let windows = vec![AddedWindow {
        window: WindowFile {
            name: Some("nightly".into()),
            sites: vec!["oslo".into()],
            tags: vec![],
            time_zone: "Europe/Oslo".into(),
            days: vec![],
            from: "02:00".into(),
            to: "03:00".into(),
        },
        created_by: "alice".into(),
        created_ms: t,
        comment: "backups".into(),
    }];
    assert_eq!(alerts.load().unwrap().windows, None);
    alerts.save_windows(&windows).unwrap();
    assert_eq!(
        PgAlerts::new(store.clone()).load().unwrap().windows,
        Some(windows)
    );
    alerts.save_windows(&[]).unwrap();
    assert_eq!(PgAlerts::new(store).load().unwrap().windows, Some(vec![]));
}

#[test]
fn postgres_a_resolve_and_the_next_generation_in_one_save_keep_one_open_alert_and_a_cancelled_one_goes() {
    let pg = PgDatabase::shared().unwrap();
    let store = open(&pg);
    let t = 1_741_611_600_000;
    let (mut engine, corr) = build_exports(t);
    let alerts = PgAlerts::new(store.clone());
    alerts.save(&engine, &corr).unwrap();
    // gpu_hot:rvm1:2 resolves and :3 fires in the same change; rvm2's pending one is cancelled
    let mut resolved = engine.active.remove(0);
    resolved.state = AlertState::Resolved;
    resolved.resolved_ms = Some(t + 5_000);
    engine.history.push(resolved);
    engine.active = vec![build_alert("gpu_hot", "rvm1", 3, AlertState::Firing, t + 6_000)];
    alerts.save(&engine, &corr).unwrap();
    let open = pg
        .psql("SELECT id FROM alerts WHERE state IN ('pending', 'firing') ORDER BY id")
        .unwrap();
    assert_eq!(open, "gpu_hot:rvm1:3");
    let loaded = PgAlerts::new(store).load().unwrap().engine.unwrap();
    assert_eq!(normalized(loaded), normalized(engine));
}

fn build_command(id: &str, state: CmdState, t: i64) -> CommandRecord {
    CommandRecord {
        id: id.into(),
        device: d("rvm1"),
        action: Action::RestartUnit {
            unit: "vision.service".into(),
        },
        reason: "stuck".into(),
        issued_by: "alice".into(),
        created_ms: t,
        expires_ms: t + 60_000,
        state,
        updated_ms: t + 5,
        output: "ok".into(),
        detail: None,
        sends: 2,
        last_sent_ms: Some(t + 1),
        accepted_ms: Some(t + 2),
        rollout: Some("r1".into()),
        signed: SignedCommand {
            payload: vec![1, 2, 3],
            signature: vec![9; 64],
        },
        dry_run: false,
        approved_by: None,
        approved_ms: None,
    }
}

#[test]
fn postgres_commands_and_rollouts_written_behind_the_actor_are_there_after_the_store_closes() {
    let pg = PgDatabase::shared().unwrap();
    let store = open(&pg);
    let t = 1_741_611_600_000;
    let rollout = Rollout {
        id: "r1".into(),
        action: Action::DropCaches,
        target: Target::Site("oslo".into()),
        per_minute: 5,
        abort_failed_pct: 20.0,
        min_finished: 3,
        ttl_s: 600,
        reason: "clean".into(),
        issued_by: "alice".into(),
        created_ms: t,
        state: RolloutState::Running,
        remaining: [d("rvm2")].into(),
        commands: vec!["c1".into()],
        dispatched_at: vec![t],
        detail: None,
        gate: None,
        batch_size: 0,
        watch: Default::default(),
        paused_ms: None,
        operated: 0,
    };
    {
        let c = PgCommands::new(store.clone());
        c.put(&build_command("c1", CmdState::Queued, t));
        c.put(&build_command("c1", CmdState::Succeeded, t));
        c.put(&build_command("c2", CmdState::Sent, t));
        c.remove("c2");
        c.put_rollout(&rollout);
    }
    let c = PgCommands::new(store);
    assert_eq!(
        c.records().unwrap(),
        [build_command("c1", CmdState::Succeeded, t)]
    );
    assert_eq!(c.rollouts().unwrap(), [rollout]);
}

#[test]
fn postgres_tokens_are_verified_from_memory_and_one_made_elsewhere_is_known_within_the_refresh() {
    let pg = PgDatabase::shared().unwrap();
    let store = open(&pg);
    let server = PgTokens::refreshing(store.clone()).unwrap();
    let mine = server.create("alice", Role::Operator).unwrap();
    assert_eq!(server.verify(&mine).unwrap().role, Role::Operator);
    assert!(matches!(
        server.create("alice", Role::Admin),
        Err(TokenError::Exists(_))
    ));
    let tool = PgTokens::open(store.clone()).unwrap();
    let far = common::time::now_ms() + 365 * DAY_MS;
    let theirs = tool.create_with_expiry("ci", Role::Viewer, Some(far)).unwrap();
    assert!(server.verify(&theirs).is_none(), "not reloaded yet");
    std::thread::sleep(TOKEN_REFRESH * 2 + Duration::from_millis(500));
    assert_eq!(server.verify(&theirs).unwrap().name, "ci");
    assert!(
        !pg.psql("SELECT string_agg(sha256, ',') FROM tokens")
            .unwrap()
            .contains(&mine),
        "only hashes are stored"
    );
}

#[test]
fn postgres_a_token_keeps_its_scope_and_one_whose_scope_does_not_parse_is_refused() {
    let pg = PgDatabase::shared().unwrap();
    let store = open(&pg);
    let tool = PgTokens::open(store.clone()).unwrap();
    let scope = Scope::Retailer("coop".into());
    let mgr = tool
        .create_scoped("coop-mgr", Role::Operator, None, Some(scope.clone()))
        .unwrap();
    let plain = tool.create("plain", Role::Viewer).unwrap();
    let server = PgTokens::open(store.clone()).unwrap();
    assert_eq!(server.verify(&mgr).unwrap().scope, Some(scope));
    assert_eq!(
        server.verify(&plain).unwrap().scope,
        None,
        "no scope: the whole fleet"
    );
    assert_eq!(
        pg.psql("SELECT scope FROM tokens WHERE name = 'coop-mgr'")
            .unwrap()
            .trim(),
        "retailer=coop"
    );
    // an edited row: refused, never widened to the whole fleet
    pg.psql("UPDATE tokens SET scope = 'shop=x' WHERE name = 'coop-mgr'")
        .unwrap();
    let server = PgTokens::open(store).unwrap();
    assert!(server.verify(&mgr).is_none());
    assert!(server.verify(&plain).is_some());
}

#[test]
fn postgres_audit_entries_come_back_newest_last_with_their_columns() {
    let pg = PgDatabase::shared().unwrap();
    let audit = PgAudit::new(open(&pg));
    audit
        .append(&[
            serde_json::json!({"at_ms": 1_000, "who": "alice", "action": "ack", "target": "a:1"}),
            serde_json::json!({"ts_ms": 2_000, "who": "bob", "action": "command", "command": "c1"}),
        ])
        .unwrap();
    audit
        .append(&[serde_json::json!({"ts_ms": 3_000, "who": "carol", "action": "rollout", "rollout": "r1"})])
        .unwrap();
    let who: Vec<String> = audit
        .newest(2)
        .unwrap()
        .iter()
        .map(|e| e["who"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(who, ["bob", "carol"]);
    assert_eq!(
        pg.psql("SELECT who, action, target FROM audit ORDER BY id")
            .unwrap(),
        "alice|ack|a:1\nbob|command|c1\ncarol|rollout|r1"
    );
}

#[test]
fn postgres_presence_written_behind_the_fleet_actor_is_read_back_and_shown_in_fleet_devices() {
    let pg = PgDatabase::shared().unwrap();
    let p = PgPresence::new(open(&pg));
    let row = |status, last_seen_ms| PresenceRow {
        device: d("rvm1"),
        status,
        reason: "reporting".into(),
        since_ms: 1_000,
        first_seen_ms: 500,
        last_seen_ms,
    };
    p.record(vec![row(Presence::Online, 2_000)]);
    p.record(vec![row(Presence::Stale, 3_000)]);
    let back = rvm_fleet_tests::eventually_blocking(Duration::from_secs(10), || {
        p.load()
            .ok()
            .filter(|r| r.first().is_some_and(|r| r.status == Presence::Stale))
    })
    .expect("written within seconds");
    assert_eq!(back, [row(Presence::Stale, 3_000)]);
    assert_eq!(
        pg.psql("SELECT device, status FROM fleet_devices").unwrap(),
        "rvm1|stale"
    );
}

fn build_row(seq: u64, ts_ms: i64) -> HistoryRow {
    HistoryRow {
        ts_ms,
        seq,
        metrics: vec![("cpu.usage_pct".into(), seq as f32), ("gpu.temp_c".into(), 50.0)],
    }
}

#[test]
fn postgres_a_batch_is_one_transaction_and_history_reads_page_through_it_in_order() {
    let pg = PgDatabase::shared().unwrap();
    let store = open(&pg);
    let ingest = PgIngest::open(store.clone()).unwrap();
    let now = common::time::now_ms();
    let start = minute_of(now) - 60 * MINUTE_MS;
    let n = PAGE_ROWS as u64 + 500;
    let mut b = WriteBatch::default();
    let mut st = DeliveryState::default();
    for seq in 1..=n {
        b.history(&d("rvm1"), build_row(seq, start + seq as i64 * 1_000));
        st.seqs.observe(seq);
    }
    st.received = n;
    b.delivery(&d("rvm1"), &st);
    let birth = Birth {
        boot_id: "b1".into(),
        agent_version: "1.2.3".into(),
        hostname: "jetson".into(),
        site: Some("oslo".into()),
        tags: vec!["north".into()],
        board: Some("orin-nano".into()),
        jetpack: Some("6.0".into()),
        vision_model_version: Some("v3.3".into()),
        capabilities: vec![],
        started_ms: now - 1_000,
        simulated: false,
    };
    b.birth(&d("rvm1"), &birth);
    let applied = ingest.apply(b.clone(), now).unwrap();
    assert_eq!(applied.rows_past_retention, 0);
    ingest.apply(b, now).unwrap();

    // a second open reads what the first wrote
    let again = PgIngest::open(store.clone()).unwrap();
    assert_eq!(again.load_delivery().unwrap()[&d("rvm1")], st);
    assert_eq!(again.load_births().unwrap()[&d("rvm1")], birth);

    let history = PgHistory::new(store.clone());
    let rows: Vec<u64> = history
        .history_iter(&d("rvm1"), i64::MIN / 2, i64::MAX / 2)
        .map(|r| r.unwrap().seq)
        .collect();
    assert_eq!(
        rows,
        (1..=n).collect::<Vec<_>>(),
        "every row once, in order, across pages"
    );
    assert_eq!(
        history.history(&d("rvm1"), start, start + 10_500, 100).unwrap()[0].metrics,
        build_row(1, 0).metrics
    );
    assert_eq!(history.known_devices().unwrap(), [d("rvm1")]);
    // rollups of the minutes the batch marked, once
    let minutes = history.roll_up(100_000, None).unwrap();
    assert!(minutes >= 40, "{minutes}");
    assert_eq!(history.roll_up(100_000, None).unwrap(), 0, "each mark taken once");
    let rollups = history.rollups(&d("rvm1"), start, now + MINUTE_MS).unwrap();
    assert_eq!(rollups.len(), minutes);
    let counted: u64 = rollups
        .iter()
        .map(|r| r.get("cpu.usage_pct").unwrap().count)
        .sum();
    assert_eq!(counted, n);
    assert_eq!(
        history.first_data_minute(&d("rvm1")).unwrap(),
        Some(minute_of(start + 1_000))
    );
    assert!(history.disk_bytes() > 0);
    // retention by partition: a day past retention goes whole
    let later = history
        .expire(&HistoryPolicy::default(), now + 3 * DAY_MS, None)
        .unwrap();
    assert!(later.partitions >= 1, "{later:?}");
    assert!(
        history
            .history(&d("rvm1"), i64::MIN / 2, i64::MAX / 2, 10)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn postgres_a_batch_while_the_database_is_down_fails_the_health_says_why_until_the_probe_finds_it_back_and_the_next_one_commits()
 {
    let mut pg = PgDatabase::own().unwrap();
    let store = open(&pg);
    let ingest = PgIngest::open(store.clone()).unwrap();
    let now = common::time::now_ms();
    let batch = |seq: u64| {
        let mut b = WriteBatch::default();
        b.history(&d("rvm1"), build_row(seq, now - 1_000));
        b
    };
    ingest.apply(batch(1), now).unwrap();
    pg.own_cluster().crash().unwrap();
    let err = ingest.apply(batch(2), now).unwrap_err();
    let status = store.health().status();
    assert_eq!(status.status, "unavailable", "{status:?}");
    assert!(
        status.error.as_deref().unwrap_or("").contains("storage.url"),
        "the error names the key: {status:?} ({err})"
    );
    pg.own_cluster().start_again().unwrap();
    // nothing writes meanwhile: the probe sees it back
    rvm_fleet_tests::eventually_blocking(Duration::from_secs(15), || {
        store.health().is_available().then_some(())
    })
    .expect("the probe finds the database back");
    ingest.apply(batch(2), now).unwrap();
    assert_eq!(store.health().status().status, "ok");
    assert_eq!(
        pg.psql("SELECT string_agg(seq::text, ',' ORDER BY seq) FROM telemetry")
            .unwrap(),
        "1,2"
    );
}

/// Notification `i`: a distinct alert firing (`i` even) or resolving (`i` odd).
fn build_notification(i: u32) -> Notification {
    let mut n = if i.is_multiple_of(2) {
        fleet_server::notify::sample::firing_alert(1_000)
    } else {
        fleet_server::notify::sample::resolved_alert(1_000)
    };
    n.id = format!("rule{}:RVM1:1/{}", i / 2, n.event);
    n
}

const LEASE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
enum OutboxOp {
    Enqueue { channel: u8, notification: u32 },
    Claim { limit: usize },
    Finish { which: usize, outcome: u8 },
    Purge,
    Release,
    Advance { ms: i64 },
}

fn outbox_op() -> impl Strategy<Value = OutboxOp> {
    prop_oneof![
        (0u8..3, 0u32..6).prop_map(|(channel, notification)| OutboxOp::Enqueue {
            channel,
            notification
        }),
        (1usize..4).prop_map(|limit| OutboxOp::Claim { limit }),
        (0usize..8, 0u8..3).prop_map(|(which, outcome)| OutboxOp::Finish { which, outcome }),
        Just(OutboxOp::Purge),
        Just(OutboxOp::Release),
        (0i64..4_000_000).prop_map(|ms| OutboxOp::Advance { ms }),
    ]
}

/// Runs `ops` on `pg` (emptied first) and on the in-memory twin: every answer alike.
fn outbox_twins_agree(pg: &PgOutbox, db: &PgDatabase, ops: Vec<OutboxOp>) -> Result<(), TestCaseError> {
    db.psql("TRUNCATE notification_outbox").unwrap();
    let mem = MemoryOutbox::new();
    let p = RetryPolicy {
        keep_finished: Duration::from_secs(3600),
        ..RetryPolicy::default()
    };
    let mut now = 1_700_000_000_000i64;
    let mut claimed: Vec<OutboxEntry> = Vec::new();
    for op in ops {
        match op {
            OutboxOp::Enqueue {
                channel,
                notification,
            } => {
                let e = OutboxEntry::new(&format!("c{channel}"), build_notification(notification), now);
                prop_assert_eq!(pg.enqueue(&e).unwrap(), mem.enqueue(&e).unwrap());
            }
            OutboxOp::Claim { limit } => {
                let a = pg.claim_due(now, limit, LEASE).unwrap();
                let b = mem.claim_due(now, limit, LEASE).unwrap();
                prop_assert_eq!(&a, &b);
                claimed.extend(a);
            }
            OutboxOp::Finish { which, outcome } => {
                if claimed.is_empty() {
                    continue;
                }
                let c = claimed.remove(which % claimed.len());
                let outcome = match outcome {
                    0 => Outcome::Delivered {
                        receipt: "200".into(),
                    },
                    1 => Outcome::Retry { error: "503".into() },
                    _ => Outcome::Fail { error: "tls".into() },
                };
                let f = c.finish(&outcome, now, &p);
                prop_assert_eq!(pg.finish(&f).unwrap(), mem.finish(&f).unwrap());
            }
            OutboxOp::Purge => {
                let before = now - p.keep_finished.as_millis() as i64;
                prop_assert_eq!(
                    pg.purge_finished(before).unwrap(),
                    mem.purge_finished(before).unwrap()
                );
            }
            // one instance: what it released is everything the twin releases
            OutboxOp::Release => {
                prop_assert_eq!(pg.release_all(now).unwrap(), mem.release_all(now).unwrap());
            }
            OutboxOp::Advance { ms } => now += ms,
        }
        prop_assert_eq!(pg.counts().unwrap(), mem.counts().unwrap());
    }
    prop_assert_eq!(
        pg.list(None, usize::MAX).unwrap(),
        mem.list(None, usize::MAX).unwrap()
    );
    for state in [EntryState::Pending, EntryState::Delivered, EntryState::Failed] {
        prop_assert_eq!(
            pg.list(Some(state), usize::MAX).unwrap(),
            mem.list(Some(state), usize::MAX).unwrap()
        );
    }
    for e in mem.list(None, usize::MAX).unwrap() {
        prop_assert_eq!(pg.get(&e.key).unwrap(), Some(e));
    }
    Ok(())
}

#[test]
fn postgres_the_outbox_behaves_like_its_in_memory_twin() {
    let db = PgDatabase::shared().unwrap();
    let pg = PgOutbox::new(open(&db), "test");
    proptest!(ProptestConfig::with_cases(24), |(ops in proptest::collection::vec(outbox_op(), 1..40))| {
        outbox_twins_agree(&pg, &db, ops)?;
    });
}

/// Two instances claiming from one table at once: no entry is claimed twice, none is left;
/// a restart releases only the restarted instance's claims.
#[test]
fn postgres_outbox_claims_of_two_instances_never_take_one_entry_twice_and_a_restart_releases_its_own() {
    let db = PgDatabase::shared().unwrap();
    let store = open(&db);
    let now = common::time::now_ms();
    let first = PgOutbox::new(store.clone(), "a");
    for i in 0..60 {
        assert!(
            first
                .enqueue(&OutboxEntry::new("hook", build_notification(i), now))
                .unwrap()
        );
    }
    let workers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|w| {
            let o = PgOutbox::new(store.clone(), w);
            std::thread::spawn(move || {
                let mut keys = Vec::new();
                loop {
                    let c = o.claim_due(now, 7, LEASE).unwrap();
                    if c.is_empty() {
                        return keys;
                    }
                    keys.extend(c.into_iter().map(|e| e.key));
                }
            })
        })
        .collect();
    let mut all: Vec<String> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    let claimed = all.len();
    all.sort();
    all.dedup();
    assert_eq!((claimed, all.len()), (60, 60), "each entry claimed exactly once");
    assert_eq!(
        db.psql("SELECT count(*) FILTER (WHERE attempts = 1 AND claimed_by IN ('a', 'b')) FROM notification_outbox")
            .unwrap(),
        "60",
        "every row records one claim and its claimer"
    );
    // "a" restarts: its claims are due again, "b"'s stay leased
    let of_a: usize = db
        .psql("SELECT count(*) FROM notification_outbox WHERE claimed_by = 'a'")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(PgOutbox::new(store.clone(), "a").release_all(now).unwrap(), of_a);
    let due = PgOutbox::new(store, "c").claim_due(now, 100, LEASE).unwrap();
    assert_eq!(due.len(), of_a, "only the restarted instance's claims are due");
}
