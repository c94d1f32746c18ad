//! The PostgreSQL store's groundwork (`fleet_server::pg`) against real throwaway clusters:
//! the start sequence and its errors, migrations, partitions and retention, the history batch
//! writer, the issue-21 constraints, and the read views. Needs Debian's PostgreSQL 15
//! (`apt-get install postgresql`; `.ci/run` installs it).

use common::DeviceId;
use fleet_server::pg::history::{self, MetricAgg, MetricIds, MinuteRollup, RawRow, RawWriter, WriteMode};
use fleet_server::pg::migrate::{self, MIGRATIONS, MigrateError, Migration};
use fleet_server::pg::partitions::{self, DAY_MS, Retention};
use fleet_server::pg::{Backend, PgConfig, PgError, Pool, StorageBackend, StorageBackendFile, pool};
use rvm_fleet_tests::postgres::PgDatabase;

/// 2025-03-10 13:00 UTC: partitions are made around this time in every test.
const NOW: i64 = 1_741_611_600_000;

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

fn build_rows(device: &str, seqs: std::ops::Range<u64>, start_ms: i64) -> Vec<RawRow> {
    seqs.map(|seq| RawRow {
        device: DeviceId::new(device).unwrap(),
        time_ms: start_ms + seq as i64 * 1000,
        seq,
        metrics: vec![
            ("cpu.usage_pct".into(), seq as f32),
            ("gpu.temp_c".into(), 40.0 + (seq % 10) as f32),
            ("memory.used_pct".into(), 50.0),
        ],
    })
    .collect()
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn postgres_start_migrates_an_empty_database_once_and_makes_partitions() {
    let pg = PgDatabase::shared().unwrap();
    let cfg = pg_config(&pg.url());
    let started = pool::start(&cfg, &Retention::default(), NOW).await.unwrap();
    let every: Vec<u32> = (1..=migrate::latest()).collect();
    assert_eq!(started.report.migrations.applied, every);
    assert_eq!(started.report.migrations.current, migrate::latest());
    assert!(
        started
            .report
            .partitions
            .created
            .contains(&"telemetry_p20250310".to_string()),
        "{:?}",
        started.report.partitions
    );
    assert!(
        started
            .report
            .partitions
            .created
            .contains(&"rollups_1m_p20250208".to_string())
    );
    let again = pool::start(&cfg, &Retention::default(), NOW).await.unwrap();
    assert!(again.report.migrations.applied.is_empty());
    assert!(again.report.partitions.created.is_empty());
    let client = again.pool.get().await.unwrap();
    assert_eq!(
        count(&client, "SELECT count(*) FROM schema_migrations").await,
        i64::from(migrate::latest())
    );
}

#[tokio::test]
async fn postgres_instances_starting_together_apply_each_migration_once() {
    let pg = PgDatabase::shared().unwrap();
    let cfg = pg_config(&pg.url());
    let starts: Vec<_> = (0..4)
        .map(|_| {
            let cfg = cfg.clone();
            tokio::spawn(async move { pool::start(&cfg, &Retention::default(), NOW).await })
        })
        .collect();
    let mut applied = Vec::new();
    let mut created = 0;
    for s in starts {
        let r = s.await.unwrap().unwrap().report;
        applied.extend(r.migrations.applied);
        created += r.partitions.created.len();
    }
    assert_eq!(
        applied,
        (1..=migrate::latest()).collect::<Vec<_>>(),
        "one instance applied each, the others found them applied"
    );
    // 24 h of raw + 2 days ahead: 4 days; 30 days of rollups + 2 ahead: 33 days
    assert_eq!(created, 4 + 33, "each partition made once");
}

#[tokio::test]
async fn postgres_a_newer_schema_is_refused_naming_both_versions() {
    let pg = PgDatabase::shared().unwrap();
    let cfg = pg_config(&pg.url());
    pool::start(&cfg, &Retention::default(), NOW).await.unwrap();
    let future = migrate::latest() + 1;
    pg.psql(&format!(
        "INSERT INTO schema_migrations (version, name, checksum) VALUES ({future}, 'future', 'x')"
    ))
    .unwrap();
    let err = pool::start(&cfg, &Retention::default(), NOW).await.err().unwrap();
    assert!(
        matches!(
            &err,
            PgError::Migrate(MigrateError::Newer { database, binary })
                if *database == future && *binary == migrate::latest()
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .starts_with(&format!("storage.url: the database's schema is version {future}")),
        "{err}"
    );
}

#[tokio::test]
async fn postgres_a_failing_migration_leaves_nothing_behind() {
    let pg = PgDatabase::shared().unwrap();
    let pool = pool::pool(&pg_config(&pg.url())).unwrap();
    let mut client = pool.get().await.unwrap();
    let broken = [
        MIGRATIONS[0],
        Migration {
            version: 2,
            name: "broken",
            sql: "CREATE TABLE half_done (x int); SELECT no_such_function();",
        },
    ];
    let err = migrate::migrate_to(&mut client, &broken).await.unwrap_err();
    assert!(err.to_string().contains("no_such_function"), "{err}");
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM pg_tables WHERE tablename IN ('half_done', 'telemetry')"
        )
        .await,
        0,
        "one transaction: neither migration's tables exist"
    );
}

#[tokio::test]
async fn postgres_an_unreachable_database_or_a_wrong_password_is_an_error_naming_storage_url() {
    let pg = PgDatabase::shared().unwrap();
    let closed = rvm_fleet_tests::free_port();
    let cfg = pg_config(&format!("postgres://fleet:s3cret@127.0.0.1:{closed}/fleet"));
    let err = pool::start(&cfg, &Retention::default(), NOW)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "storage.url: cannot connect to postgres://fleet@127.0.0.1:{closed}/fleet"
        )),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
    let cfg = pg_config(&pg.url().replace(pg.password(), "wrong"));
    let err = pool::start(&cfg, &Retention::default(), NOW)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.starts_with("storage.url: cannot connect"), "{err}");
    assert!(err.contains("password authentication failed"), "{err}");
    let cfg = pg_config(&pg.cluster().url_for("no_such_db"));
    let err = pool::start(&cfg, &Retention::default(), NOW)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
}

#[tokio::test]
async fn postgres_the_password_comes_from_a_file_or_the_environment() {
    let pg = PgDatabase::shared().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("db.password");
    std::fs::write(&pw, format!("{}\n", pg.password())).unwrap();
    let text = format!(
        "backend = \"postgres\"\nurl = \"{}\"\npassword_file = \"{}\"\n",
        pg.url_without_password(),
        pw.display()
    );
    let file: StorageBackendFile = toml::from_str(&text).unwrap();
    let StorageBackend::Postgres(cfg) = file.validate("storage").unwrap() else {
        panic!("postgres expected")
    };
    pool::start(&cfg, &Retention::default(), NOW).await.unwrap();
    let text = format!(
        "backend = \"postgres\"\nurl = \"{}\"\npassword_env = \"TEST_PW\"\n",
        pg.url_without_password()
    );
    let file: StorageBackendFile = toml::from_str(&text).unwrap();
    let password = pg.password().to_string();
    let StorageBackend::Postgres(cfg) = file
        .validate_with("storage", &|n| (n == "TEST_PW").then(|| password.clone()))
        .unwrap()
    else {
        panic!("postgres expected")
    };
    pool::start(&cfg, &Retention::default(), NOW).await.unwrap();
}

async fn started(pg: &PgDatabase) -> Pool {
    pool::start(&pg_config(&pg.url()), &Retention::default(), NOW)
        .await
        .unwrap()
        .pool
}

async fn batch_writer_stores_each_record_once(mode: WriteMode) {
    let pg = PgDatabase::shared().unwrap();
    let pool = started(&pg).await;
    let mut client = pool.get().await.unwrap();
    let mut w = RawWriter::new(MetricIds::load(&**client).await.unwrap(), mode, DAY_MS);
    let start = NOW - 3_600_000;
    let first = build_rows("rvm1", 1..1501, start);
    let r = w.write(&mut client, &first, NOW).await.unwrap();
    assert_eq!((r.inserted, r.duplicates), (1500, 0));
    // a resend overlapping the first batch, and another device
    let mut again = build_rows("rvm1", 1001..2001, start);
    again.extend(build_rows("rvm2", 1..11, start));
    let r = w.write(&mut client, &again, NOW).await.unwrap();
    assert_eq!((r.inserted, r.duplicates), (510, 500));
    // the same record twice in one batch, a row past retention, a seq 0
    let mut odd = build_rows("rvm3", 1..2, start);
    odd.extend(build_rows("rvm3", 1..2, start));
    odd.extend(build_rows("rvm3", 2..3, NOW - 3 * DAY_MS));
    odd.push(RawRow {
        seq: 0,
        ..build_rows("rvm3", 3..4, start)[0].clone()
    });
    let r = w.write(&mut client, &odd, NOW).await.unwrap();
    assert_eq!(
        (r.inserted, r.duplicates, r.outside_retention, r.invalid),
        (1, 1, 1, 1)
    );
    assert_eq!(count(&client, "SELECT count(*) FROM telemetry").await, 2011);
    assert_eq!(
        count(&client, "SELECT count(DISTINCT (device, seq)) FROM telemetry").await,
        2011,
        "every record once"
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM rollup_dirty").await,
        count(
            &client,
            "SELECT count(DISTINCT (device, date_trunc('minute', time))) FROM telemetry"
        )
        .await,
        "every minute written is marked for its rollup"
    );
    let mut ids = MetricIds::load(&**client).await.unwrap();
    let dev = DeviceId::new("rvm1").unwrap();
    let read = history::read_raw(&**client, &mut ids, &dev, start, NOW, 10_000)
        .await
        .unwrap();
    assert_eq!(read.len(), 2000);
    assert_eq!(read[41], first[41], "a row reads back as written");
}

#[tokio::test]
async fn postgres_batch_writer_by_copy_stores_each_record_once() {
    batch_writer_stores_each_record_once(WriteMode::Copy).await;
}

#[tokio::test]
async fn postgres_batch_writer_by_insert_stores_each_record_once() {
    batch_writer_stores_each_record_once(WriteMode::Insert).await;
}

#[tokio::test]
async fn postgres_two_writes_in_one_transaction_both_count() {
    let pg = PgDatabase::shared().unwrap();
    let pool = started(&pg).await;
    let mut client = pool.get().await.unwrap();
    let mut w = RawWriter::new(MetricIds::default(), WriteMode::Copy, DAY_MS);
    let a = build_rows("rvm1", 1..11, NOW - 60_000);
    let b = build_rows("rvm1", 6..21, NOW - 60_000);
    w.prepare(&client, &a).await.unwrap();
    let tx = client.transaction().await.unwrap();
    let ra = w.write_in(&tx, &a, NOW).await.unwrap();
    let rb = w.write_in(&tx, &b, NOW).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!((ra.inserted, rb.inserted, rb.duplicates), (10, 10, 5));
}

#[tokio::test]
async fn postgres_the_pool_writes_again_after_postgresql_restarts() {
    let mut pg = PgDatabase::own().unwrap();
    let pool = started(&pg).await;
    let mut w = RawWriter::new(MetricIds::default(), WriteMode::Copy, DAY_MS);
    let rows = build_rows("rvm1", 1..101, NOW - 600_000);
    {
        let mut client = pool.get().await.unwrap();
        w.write(&mut client, &rows[..50], NOW).await.unwrap();
    }
    pg.own_cluster().crash().unwrap();
    let cfg = pg_config(&pg.url());
    // a write while it is down fails: on the pooled connection, or when connecting anew
    let err = match pool::get(&pool, &cfg).await {
        Ok(mut client) => w.write(&mut client, &rows[50..], NOW).await.unwrap_err(),
        Err(e) => e,
    };
    assert!(
        matches!(err, PgError::Db { .. } | PgError::Connect { .. }),
        "{err}"
    );
    // the dead connection is not handed out again: the pool connects anew, and says why not
    let err = pool::get(&pool, &cfg).await.err().unwrap();
    assert!(
        err.to_string().starts_with("storage.url: cannot connect"),
        "{err}"
    );
    pg.own_cluster().start_again().unwrap();
    let mut client = pool.get().await.unwrap();
    let r = w.write(&mut client, &rows, NOW).await.unwrap();
    assert_eq!((r.inserted, r.duplicates), (50, 50));
    assert_eq!(count(&client, "SELECT count(*) FROM telemetry").await, 100);
}

#[tokio::test]
async fn postgres_rollups_round_trip_and_each_dirty_minute_is_taken_once() {
    let pg = PgDatabase::shared().unwrap();
    let pool = started(&pg).await;
    let mut client = pool.get().await.unwrap();
    let mut w = RawWriter::new(MetricIds::default(), WriteMode::Insert, DAY_MS);
    let minute = NOW - 10 * 60_000;
    w.write(&mut client, &build_rows("rvm1", 1..121, minute), NOW)
        .await
        .unwrap();
    let tx = client.transaction().await.unwrap();
    let first = history::take_dirty(&tx, 2).await.unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(first[0], (DeviceId::new("rvm1").unwrap(), minute));
    let rollup = MinuteRollup {
        device: DeviceId::new("rvm1").unwrap(),
        minute_ms: minute,
        metrics: vec![
            (
                "cpu.usage_pct".into(),
                MetricAgg {
                    min: 1.0,
                    max: 59.0,
                    sum: 1770.0,
                    count: 59,
                },
            ),
            (
                "gpu.temp_c".into(),
                MetricAgg {
                    min: 40.0,
                    max: 49.0,
                    sum: 2650.0,
                    count: 59,
                },
            ),
        ],
    };
    assert_eq!(
        history::write_rollups(&tx, w.ids(), std::slice::from_ref(&rollup))
            .await
            .unwrap(),
        1
    );
    tx.commit().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let rest = history::take_dirty(&tx, 100).await.unwrap();
    assert!(rest.iter().all(|m| !first.contains(m)), "taken marks are gone");
    assert_eq!(
        first.len() + rest.len(),
        3,
        "120 s from 10 minutes ago: three minutes"
    );
    tx.rollback().await.unwrap();
    let tx = client.transaction().await.unwrap();
    assert_eq!(
        history::take_dirty(&tx, 100).await.unwrap(),
        rest,
        "a rolled-back take keeps them"
    );
    tx.commit().await.unwrap();
    let mut ids = MetricIds::load(&**client).await.unwrap();
    let read = history::read_rollups(&**client, &mut ids, &rollup.device, minute, NOW)
        .await
        .unwrap();
    assert_eq!(read, std::slice::from_ref(&rollup));
    let again = MinuteRollup {
        metrics: vec![(
            "cpu.usage_pct".into(),
            MetricAgg {
                min: 0.5,
                max: 60.0,
                sum: 1830.0,
                count: 61,
            },
        )],
        ..rollup.clone()
    };
    let tx = client.transaction().await.unwrap();
    history::write_rollups(&tx, w.ids(), std::slice::from_ref(&again))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let read = history::read_rollups(&**client, &mut ids, &rollup.device, minute, NOW)
        .await
        .unwrap();
    assert_eq!(read, [again], "a minute rolled up again replaces its row");
}

#[tokio::test]
async fn postgres_partitions_past_retention_are_dropped_whole_with_their_rows() {
    let pg = PgDatabase::shared().unwrap();
    let pool = started(&pg).await;
    let mut client = pool.get().await.unwrap();
    let mut w = RawWriter::new(MetricIds::default(), WriteMode::Copy, DAY_MS);
    w.write(&mut client, &build_rows("rvm1", 1..11, NOW - 60_000), NOW)
        .await
        .unwrap();
    let later = NOW + 2 * DAY_MS;
    let r = partitions::ensure(&mut client, &Retention::default(), later, None)
        .await
        .unwrap();
    assert_eq!(
        r.dropped,
        [
            "telemetry_p20250309",
            "telemetry_p20250310",
            "rollups_1m_p20250208",
            "rollups_1m_p20250209"
        ],
        "days wholly older than 24 h (raw) and 30 days (rollups)"
    );
    assert_eq!(
        r.created,
        [
            "telemetry_p20250313",
            "telemetry_p20250314",
            "rollups_1m_p20250313",
            "rollups_1m_p20250314"
        ]
    );
    assert_eq!(count(&client, "SELECT count(*) FROM telemetry").await, 0);
    let left = partitions::existing_days(&**client, partitions::TELEMETRY)
        .await
        .unwrap();
    assert_eq!(left.len(), 4);
}

#[tokio::test]
async fn postgres_one_open_alert_per_rule_and_subject() {
    let pg = PgDatabase::shared().unwrap();
    let pool = started(&pg).await;
    let client = pool.get().await.unwrap();
    let insert = |id: &str, generation: i64, state: &str| {
        format!(
            "INSERT INTO alerts (id, rule, subject, generation, state, severity, metric, op, value,
                 threshold, clear, summary, started_at, last_sample_at)
             VALUES ('{id}', 'gpu_temp_high', 'rvm1', {generation}, '{state}', 'warning',
                 'gpu.temp_c', '>', 90, 85, 80, 'hot', now(), now())"
        )
    };
    client
        .batch_execute(&insert("gpu_temp_high:rvm1:1", 1, "pending"))
        .await
        .unwrap();
    let err = client
        .batch_execute(&insert("gpu_temp_high:rvm1:2", 2, "firing"))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION),
        "{err:?}"
    );
    client
        .batch_execute(
            "UPDATE alerts SET state = 'resolved', resolved_at = now() WHERE id = 'gpu_temp_high:rvm1:1'",
        )
        .await
        .unwrap();
    client
        .batch_execute(&insert("gpu_temp_high:rvm1:2", 2, "firing"))
        .await
        .unwrap();
}

#[tokio::test]
async fn postgres_a_leader_whose_lease_was_taken_over_cannot_write() {
    let pg = PgDatabase::shared().unwrap();
    let pool = started(&pg).await;
    let client = pool.get().await.unwrap();
    client
        .batch_execute(
            "INSERT INTO leader_lease (name, holder, epoch, expires_at)
             VALUES ('leader', 'a', 1, clock_timestamp() + interval '10 seconds')",
        )
        .await
        .unwrap();
    let assert = "SELECT fleet_assert_lease('leader', $1, $2)";
    client.execute(assert, &[&"a", &1i64]).await.unwrap();
    // b takes over (a's lease expired, or a froze)
    client
        .batch_execute("UPDATE leader_lease SET holder = 'b', epoch = epoch + 1 WHERE name = 'leader'")
        .await
        .unwrap();
    let err = client.execute(assert, &[&"a", &1i64]).await.unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("RVML1"), "{err:?}");
    client.execute(assert, &[&"b", &2i64]).await.unwrap();
    client
        .batch_execute("UPDATE leader_lease SET expires_at = clock_timestamp() - interval '1 second'")
        .await
        .unwrap();
    assert!(
        client.execute(assert, &[&"b", &2i64]).await.is_err(),
        "an expired lease is not held"
    );
}

#[tokio::test]
async fn postgres_views_show_every_sample_with_its_site_and_the_devices_and_alerts() {
    let pg = PgDatabase::shared().unwrap();
    let pool = started(&pg).await;
    let mut client = pool.get().await.unwrap();
    let mut w = RawWriter::new(MetricIds::default(), WriteMode::Copy, DAY_MS);
    w.write(&mut client, &build_rows("rvm1", 1..11, NOW - 60_000), NOW)
        .await
        .unwrap();
    client
        .batch_execute(
            "INSERT INTO devices (device, site, boot_id, agent_version, hostname, birth, birth_at)
                 VALUES ('rvm1', 'oslo', 'b1', '0.1.0', 'jetson', '{}', now());
             INSERT INTO presence (device, status, since, first_seen, last_seen)
                 VALUES ('rvm1', 'online', now(), now(), now());",
        )
        .await
        .unwrap();
    let rows = client
        .query(
            "SELECT time, device, site, metric, value FROM fleet_metrics
             WHERE metric = 'cpu.usage_pct' ORDER BY time",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 10);
    let values: Vec<f64> = rows.iter().map(|r| r.get(4)).collect();
    assert_eq!(values, (1..11).map(|v| v as f64).collect::<Vec<_>>());
    assert_eq!(rows[0].get::<_, Option<&str>>(2), Some("oslo"));
    assert_eq!(count(&client, "SELECT count(*) FROM fleet_metrics").await, 30);
    let status: String = client
        .query_one("SELECT status FROM fleet_devices WHERE device = 'rvm1'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "online");
    assert_eq!(count(&client, "SELECT count(*) FROM fleet_alerts").await, 0);
}
