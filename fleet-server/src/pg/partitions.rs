//! Daily partitions of the time-partitioned tables (`telemetry`, `rollups_1m`): made ahead,
//! dropped past retention.
//!
//! A partition holds one UTC day, `[D 00:00, D+1 00:00)`, and is named `TABLE_pYYYYMMDD`.
//! [`plan`] (pure) decides, for one table at `now_ms`: every day from the retention horizon
//! (the day holding `now - retention`) to [`AHEAD_DAYS`] after today must exist; a day that
//! ends before the horizon's start holds only rows older than the retention and is dropped
//! whole (retention is `DROP TABLE` of a partition: no row-by-row deletes, no vacuum debt).
//! Rows therefore live between the retention and the retention plus one day.
//!
//! [`ensure`] applies the plans of both tables in one transaction under an advisory lock
//! ([`PARTITION_LOCK`]), so instances doing it at once do not race on `CREATE TABLE`. The
//! server calls it at start and then every [`ENSURE_EVERY`] (the leader's job with several
//! instances, fenced by its lease; any instance may at start, the lock makes it safe).

use std::time::Duration;

use tokio_postgres::Client;

use super::PgError;
use crate::cluster::fence::assert_lease;
use crate::cluster::lease::LeaseToken;

pub const DAY_MS: i64 = 86_400_000;
/// Days after today whose partitions exist already: a server that cannot reach the database
/// at midnight still has somewhere to write when it comes back.
pub const AHEAD_DAYS: i64 = 2;
/// How often the server should call [`ensure`].
pub const ENSURE_EVERY: Duration = Duration::from_secs(3600);
/// Advisory lock key held while partitions change: "rvmfpart".
pub const PARTITION_LOCK: i64 = 0x7276_6d66_7061_7274;

/// Raw telemetry, partitioned by `time`.
pub const TELEMETRY: &str = "telemetry";
/// 1-minute rollups, partitioned by `minute`.
pub const ROLLUPS: &str = "rollups_1m";

/// How long each kind of history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub raw_ms: i64,
    pub rollup_ms: i64,
}

impl Default for Retention {
    /// The server's defaults: raw rows 24 h, rollups 30 days.
    fn default() -> Self {
        Retention {
            raw_ms: DAY_MS,
            rollup_ms: 30 * DAY_MS,
        }
    }
}

/// Days since 1970-01-01 (UTC) of a time in ms.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// The first day whose partition must exist: the day holding `now - retention`.
pub fn horizon_day(now_ms: i64, retention_ms: i64) -> i64 {
    day_of(now_ms.saturating_sub(retention_ms))
}

/// `TABLE_pYYYYMMDD` for `day`.
pub fn partition_name(table: &str, day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{table}_p{y:04}{m:02}{d:02}")
}

/// The day of a partition named by [`partition_name`] for `table`.
pub fn parse_partition_day(table: &str, name: &str) -> Option<i64> {
    let rest = name.strip_prefix(table)?.strip_prefix("_p")?;
    if rest.len() != 8 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y: i64 = rest[0..4].parse().ok()?;
    let m: u32 = rest[4..6].parse().ok()?;
    let d: u32 = rest[6..8].parse().ok()?;
    let day = days_from_civil(y, m, d);
    (civil_from_days(day) == (y, m, d)).then_some(day)
}

/// What to create and drop for one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub create: Vec<i64>,
    pub drop: Vec<i64>,
}

/// The plan for one table whose partitions are `existing` days (module docs).
pub fn plan(now_ms: i64, retention_ms: i64, existing: &[i64]) -> Plan {
    let first = horizon_day(now_ms, retention_ms);
    let last = day_of(now_ms) + AHEAD_DAYS;
    let mut drop: Vec<i64> = existing.iter().copied().filter(|d| *d < first).collect();
    drop.sort_unstable();
    drop.dedup();
    let create = (first..=last).filter(|d| !existing.contains(d)).collect();
    Plan { create, drop }
}

/// What [`ensure`] changed: partition names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionReport {
    pub created: Vec<String>,
    pub dropped: Vec<String>,
}

/// Days of the partitions `table` has now.
pub async fn existing_days(
    client: &impl tokio_postgres::GenericClient,
    table: &str,
) -> Result<Vec<i64>, PgError> {
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid
             JOIN pg_class p ON p.oid = i.inhparent
             WHERE p.relname = $1 AND p.relnamespace = c.relnamespace",
            &[&table],
        )
        .await
        .map_err(PgError::db("listing partitions"))?;
    Ok(rows
        .iter()
        .filter_map(|r| parse_partition_day(table, r.get::<_, &str>(0)))
        .collect())
}

/// Makes and drops partitions of both tables as [`plan`] says for `now_ms`. With `fence` (the
/// leader's periodic run among several instances) the transaction asserts the lease first and
/// changes nothing once it is lost; without (the start of any instance, tools) it needs none:
/// the advisory lock serialises it with everyone else's.
pub async fn ensure(
    client: &mut Client,
    retention: &Retention,
    now_ms: i64,
    fence: Option<&LeaseToken>,
) -> Result<PartitionReport, PgError> {
    let tx = client
        .transaction()
        .await
        .map_err(PgError::db("partition transaction"))?;
    if let Some(token) = fence {
        assert_lease(&tx, token).await?;
    }
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK])
        .await
        .map_err(PgError::db("partition lock"))?;
    let mut report = PartitionReport::default();
    for (table, keep_ms) in [(TELEMETRY, retention.raw_ms), (ROLLUPS, retention.rollup_ms)] {
        let existing = existing_days(&tx, table).await?;
        let p = plan(now_ms, keep_ms, &existing);
        for day in p.create {
            let name = partition_name(table, day);
            let sql = format!(
                "CREATE TABLE {name} PARTITION OF {table} FOR VALUES FROM ('{}') TO ('{}')",
                bound(day),
                bound(day + 1)
            );
            tx.batch_execute(&sql)
                .await
                .map_err(PgError::db("creating a partition"))?;
            report.created.push(name);
        }
        for day in p.drop {
            let name = partition_name(table, day);
            tx.batch_execute(&format!("DROP TABLE {name}"))
                .await
                .map_err(PgError::db("dropping a partition"))?;
            report.dropped.push(name);
        }
    }
    tx.commit().await.map_err(PgError::db("partition commit"))?;
    for name in &report.created {
        tracing::info!(partition = %name, "partition created");
    }
    for name in &report.dropped {
        tracing::info!(partition = %name, "partition dropped past retention");
    }
    Ok(report)
}

/// `YYYY-MM-DD 00:00:00+00`: the start of `day` as a timestamptz literal.
fn bound(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02} 00:00:00+00")
}

/// Year, month, day of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// 2025-03-10 13:00 UTC.
    const NOW: i64 = 1_741_611_600_000;

    #[test]
    fn partition_names_are_utc_dates() {
        assert_eq!(partition_name(TELEMETRY, 0), "telemetry_p19700101");
        assert_eq!(partition_name(ROLLUPS, day_of(NOW)), "rollups_1m_p20250310");
        assert_eq!(
            partition_name(TELEMETRY, day_of(951_782_400_000)),
            "telemetry_p20000229"
        );
        assert_eq!(bound(day_of(NOW)), "2025-03-10 00:00:00+00");
    }

    #[test]
    fn names_of_other_tables_or_dates_that_do_not_exist_are_not_partitions() {
        assert_eq!(
            parse_partition_day(TELEMETRY, "telemetry_p20250310"),
            Some(day_of(NOW))
        );
        assert_eq!(parse_partition_day(TELEMETRY, "rollups_1m_p20250310"), None);
        assert_eq!(parse_partition_day(TELEMETRY, "telemetry_p20250230"), None);
        assert_eq!(parse_partition_day(TELEMETRY, "telemetry_p2025031"), None);
        assert_eq!(parse_partition_day(TELEMETRY, "telemetry_stage"), None);
    }

    #[test]
    fn an_empty_table_gets_every_day_from_the_horizon_to_the_days_ahead() {
        let p = plan(NOW, DAY_MS, &[]);
        let today = day_of(NOW);
        assert_eq!(p.create, (today - 1..=today + AHEAD_DAYS).collect::<Vec<_>>());
        assert!(p.drop.is_empty());
    }

    #[test]
    fn days_wholly_older_than_the_retention_are_dropped_and_the_rest_kept() {
        let today = day_of(NOW);
        let existing: Vec<i64> = (today - 5..=today + AHEAD_DAYS).collect();
        let p = plan(NOW, DAY_MS, &existing);
        // now - 24 h is yesterday 13:00: yesterday still holds rows inside the retention
        assert_eq!(p.drop, (today - 5..today - 1).collect::<Vec<_>>());
        assert!(p.create.is_empty());
    }

    #[test]
    fn a_day_is_dropped_only_once_it_ended_before_now_minus_retention() {
        let today = day_of(NOW);
        let start_of_today = today * DAY_MS;
        // yesterday's last rows turn 24 h old at the end of today
        let p = plan(start_of_today + DAY_MS - 1, DAY_MS, &[today - 1, today]);
        assert!(p.drop.is_empty(), "yesterday still has rows younger than 24 h");
        let p = plan(start_of_today + DAY_MS, DAY_MS, &[today - 1, today]);
        assert_eq!(p.drop, [today - 1]);
    }

    proptest! {
        #[test]
        fn civil_dates_round_trip(day in -800_000i64..800_000) {
            let (y, m, d) = civil_from_days(day);
            prop_assert_eq!(days_from_civil(y, m, d), day);
            let name = partition_name(TELEMETRY, day);
            if (0..=9999).contains(&y) {
                prop_assert_eq!(parse_partition_day(TELEMETRY, &name), Some(day));
            }
        }

        #[test]
        fn a_plan_keeps_every_row_inside_the_retention(
            now in 0i64..4_000_000_000_000,
            retention_days in 1i64..60,
            existing in proptest::collection::vec(0i64..47_000, 0..40),
        ) {
            let retention = retention_days * DAY_MS;
            let p = plan(now, retention, &existing);
            for d in &p.drop {
                prop_assert!((d + 1) * DAY_MS <= now - retention, "day {} holds young rows", d);
            }
            let after: Vec<i64> = existing.iter().copied().filter(|d| !p.drop.contains(d)).chain(p.create.clone()).collect();
            for d in day_of(now - retention)..=day_of(now) + AHEAD_DAYS {
                prop_assert!(after.contains(&d), "day {} missing", d);
            }
        }
    }
}
