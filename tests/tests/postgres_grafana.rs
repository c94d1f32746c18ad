//! Every query of the PostgreSQL Grafana dashboard (`config/grafana/rvm-fleet-postgres.json`)
//! runs against the store's schema and finds the data it shows. Grafana's macros and variables
//! are expanded here as Grafana expands them, for the dashboard's default range. Needs
//! PostgreSQL 15 (`apt-get install postgresql`).

use common::DeviceId;
use fleet_server::pg::history::{self, MetricAgg, MetricIds, MinuteRollup, RawRow, RawWriter, WriteMode};
use fleet_server::pg::partitions::{DAY_MS, Retention};
use fleet_server::pg::{Backend, StorageBackend, StorageBackendFile, pool};
use rvm_fleet_tests::postgres::PgCluster;
use serde_json::Value;

/// 2025-03-10 13:00 UTC.
const NOW: i64 = 1_741_611_600_000;
/// The dashboard's default range: the last 6 hours.
const RANGE_MS: i64 = 6 * 3_600_000;

const METRICS: [&str; 5] = [
    "cpu.usage_pct",
    "gpu.load_pct",
    "gpu.temp_c",
    "memory.used_pct",
    "power.total_mw",
];

fn dashboard() -> Value {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/grafana/rvm-fleet-postgres.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every SQL text of the dashboard: panel targets and template variable queries, with where
/// they come from.
fn queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for v in d["templating"]["list"].as_array().unwrap() {
        out.push((
            format!("variable {}", v["name"]),
            v["query"].as_str().unwrap().to_string(),
        ));
    }
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let sql = t["rawSql"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: no rawSql", p["title"]));
            out.push((format!("panel {}", p["title"]), sql.to_string()));
        }
    }
    out
}

fn sql_time(ms: i64) -> String {
    let t = history::system_time(ms);
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    format!("to_timestamp({secs})")
}

/// Seconds of a Grafana interval (`1m`, `'1h'`, `30s`).
fn interval_s(arg: &str) -> i64 {
    let a = arg.trim().trim_matches('\'');
    let (n, unit) = a.split_at(a.len() - 1);
    let n: i64 = n.parse().unwrap_or_else(|_| panic!("interval {arg}"));
    n * match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => panic!("interval {arg}"),
    }
}

/// The text between the parentheses that open at `open` (exclusive), and the index after the
/// closing one.
fn args_at(sql: &str, open: usize) -> (Vec<String>, usize) {
    let mut depth = 0;
    for (i, c) in sql[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    let inner = &sql[open + 1..open + i];
                    return (
                        inner.split(',').map(|s| s.trim().to_string()).collect(),
                        open + i + 1,
                    );
                }
            }
            _ => {}
        }
    }
    panic!("unclosed macro in {sql}")
}

/// Grafana's expansion of the PostgreSQL data source's variables and macros.
fn expand(sql: &str, from_ms: i64, to_ms: i64, sites: &[&str]) -> String {
    let quoted: Vec<String> = sites.iter().map(|s| format!("'{s}'")).collect();
    let mut sql = sql
        .replace("$__interval", "1m")
        .replace("$site", &quoted.join(","));
    while let Some(at) = sql.find("$__") {
        let name_end = at
            + sql[at..]
                .find('(')
                .unwrap_or_else(|| panic!("macro without ( in {sql}"));
        let name = sql[at..name_end].to_string();
        let (args, end) = args_at(&sql, name_end);
        let with = match name.as_str() {
            "$__timeFilter" => format!(
                "{} BETWEEN {} AND {}",
                args[0],
                sql_time(from_ms),
                sql_time(to_ms)
            ),
            "$__timeGroupAlias" | "$__timeGroup" => {
                let s = interval_s(&args[1]);
                let alias = if name == "$__timeGroupAlias" {
                    " AS \"time\""
                } else {
                    ""
                };
                format!("floor(extract(epoch from {})/{s})*{s}{alias}", args[0])
            }
            "$__timeFrom" => sql_time(from_ms),
            "$__timeTo" => sql_time(to_ms),
            other => panic!("macro {other} is not expanded by this test: add it"),
        };
        sql.replace_range(at..end, &with);
    }
    sql
}

#[test]
fn grafana_macros_expand_as_grafana_does() {
    let sql = expand(
        "SELECT $__timeGroupAlias(time, $__interval), x FROM t WHERE $__timeFilter(time) AND s IN ($site)",
        0,
        60_000,
        &["a", "b"],
    );
    assert_eq!(
        sql,
        "SELECT floor(extract(epoch from time)/60)*60 AS \"time\", x FROM t \
         WHERE time BETWEEN to_timestamp(0) AND to_timestamp(60) AND s IN ('a','b')"
    );
}

async fn fill(pool: &fleet_server::pg::Pool) {
    let mut client = pool.get().await.unwrap();
    let mut w = RawWriter::new(MetricIds::default(), WriteMode::Copy, DAY_MS);
    let start = NOW - 30 * 60_000;
    let mut rows = Vec::new();
    for dev in ["rvm1", "rvm2"] {
        for seq in 1..=120u64 {
            rows.push(RawRow {
                device: DeviceId::new(dev).unwrap(),
                time_ms: start + seq as i64 * 5000,
                seq,
                metrics: METRICS.iter().map(|m| (m.to_string(), seq as f32)).collect(),
            });
        }
    }
    let r = w.write(&mut client, &rows, NOW).await.unwrap();
    assert_eq!(r.inserted, 240);
    let tx = client.transaction().await.unwrap();
    let mut rollups = Vec::new();
    for dev in ["rvm1", "rvm2"] {
        for minute in 0..10 {
            rollups.push(MinuteRollup {
                device: DeviceId::new(dev).unwrap(),
                minute_ms: start + minute * 60_000,
                metrics: METRICS
                    .iter()
                    .map(|m| {
                        let agg = MetricAgg {
                            min: 1.0,
                            max: 3.0,
                            sum: 24.0,
                            count: 12,
                        };
                        (m.to_string(), agg)
                    })
                    .collect(),
            });
        }
    }
    history::write_rollups(&tx, w.ids(), &rollups).await.unwrap();
    tx.commit().await.unwrap();
    client
        .batch_execute(
            "INSERT INTO devices (device, site, boot_id, agent_version, hostname, birth, birth_at) VALUES
                 ('rvm1', 'oslo', 'b1', '0.1.0', 'j1', '{}', now()),
                 ('rvm2', NULL, 'b2', '0.1.0', 'j2', '{}', now());
             INSERT INTO presence (device, status, reason, since, first_seen, last_seen) VALUES
                 ('rvm1', 'online', NULL, now(), now(), now()),
                 ('rvm2', 'offline', 'last will', now(), now(), now());
             INSERT INTO delivery (device, received, missing, tracker) VALUES
                 ('rvm1', 120, 0, '\\x00'), ('rvm2', 118, 2, '\\x00');",
        )
        .await
        .unwrap();
    for (id, state, fired) in [
        ("gpu_temp_high:rvm1:1", "firing", "to_timestamp(1741610000)"),
        ("offline:rvm2:1", "resolved", "to_timestamp(1741609000)"),
    ] {
        client
            .batch_execute(&format!(
                "INSERT INTO alerts (id, rule, subject, generation, state, severity, metric, op,
                     value, threshold, clear, summary, labels, started_at, fired_at, last_sample_at)
                 VALUES ('{id}', split_part('{id}', ':', 1), split_part('{id}', ':', 2), 1,
                     '{state}', 'warning', 'gpu.temp_c', '>', 90, 85, 80, 'summary',
                     '{{\"site\": \"oslo\"}}', {fired}, {fired}, {fired})"
            ))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn postgres_every_grafana_dashboard_query_runs_and_finds_its_data() {
    let pg = PgCluster::start().unwrap();
    let file = StorageBackendFile {
        backend: Backend::Postgres,
        url: Some(pg.url()),
        ..Default::default()
    };
    let StorageBackend::Postgres(cfg) = file.validate_with("storage", &|_| None).unwrap() else {
        panic!("postgres expected")
    };
    let pool = pool::start(&cfg, &Retention::default(), NOW).await.unwrap().pool;
    fill(&pool).await;
    let client = pool.get().await.unwrap();
    let d = dashboard();
    assert_eq!(d["__inputs"][0]["pluginId"], "postgres");
    let all = queries(&d);
    assert!(all.len() >= 10, "{} queries", all.len());
    for (what, sql) in all {
        let sql = expand(&sql, NOW - RANGE_MS, NOW, &["oslo", "(none)"]);
        let rows = client
            .query(&sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{what}: {}\n{sql}", fleet_server::pg::describe(&e)));
        assert!(!rows.is_empty(), "{what} finds no rows:\n{sql}");
    }
}

#[test]
fn grafana_postgres_dashboard_panels_all_use_the_postgres_data_source_and_the_views() {
    let d = dashboard();
    for p in d["panels"].as_array().unwrap() {
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${DS_POSTGRES}", "{}", p["title"]);
        for t in p["targets"].as_array().unwrap() {
            let sql = t["rawSql"].as_str().unwrap();
            assert!(
                [
                    "fleet_metrics",
                    "fleet_metrics_1m",
                    "fleet_devices",
                    "fleet_alerts"
                ]
                .iter()
                .any(|v| sql.contains(&format!("FROM {v}\n")) || sql.ends_with(&format!("FROM {v}"))),
                "{}: reads the views of docs/postgres.md, not the tables:\n{sql}",
                p["title"]
            );
        }
    }
}
