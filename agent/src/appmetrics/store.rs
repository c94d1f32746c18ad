//! The store both sources land in (pure, thread-safe): values stamped with when they arrived,
//! merged per name with the fresher winning, aged out, capped at `max_metrics`. The collector
//! reads it every tick; the HTTP push handler and the scrape loop write it.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use common::Reading;
use serde::Serialize;

use super::config::AppMetricsConfig;
use super::names::{shorten, validate_name};
use super::push::{PushError, parse_push};

/// A scraped value outlives this many scrape intervals (see the module doc).
const SCRAPE_INTERVALS_KEPT: i64 = 3;

/// Counters for `/api/v1/status` and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AppMetricsCounters {
    pub pushes_accepted: u64,
    pub pushes_rejected: u64,
    pub scrapes_ok: u64,
    pub scrapes_failed: u64,
    /// Lines of scraped bodies that were not Prometheus text (the rest of the body was kept).
    pub scrape_bad_lines: u64,
    pub last_push_ms: Option<i64>,
    pub last_push_error: Option<String>,
    pub last_scrape_ms: Option<i64>,
    pub last_scrape_error: Option<String>,
}

/// What became of a valid push: metrics kept, and metrics ignored because the allow-list
/// (`names`) does not name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PushOutcome {
    pub accepted: usize,
    pub ignored: usize,
}

#[derive(Debug, Clone, Copy)]
struct Stamped {
    value: f64,
    at_ms: i64,
}

#[derive(Debug, Default)]
struct StoreInner {
    pushed: HashMap<String, Stamped>,
    scraped: HashMap<String, Stamped>,
    counters: AppMetricsCounters,
}

/// Latest application metrics from both sources. Share it as `Arc<AppMetricsStore>`; every
/// method takes the time (any millisecond clock, the same one for every call).
#[derive(Debug)]
pub struct AppMetricsStore {
    allow: HashSet<String>,
    max_metrics: usize,
    push_max_age_ms: i64,
    scrape_max_age_ms: i64,
    inner: Mutex<StoreInner>,
}

impl AppMetricsStore {
    pub fn new(cfg: &AppMetricsConfig) -> Self {
        let push_max_age_ms = (cfg.push_max_age_s as i64).saturating_mul(1000);
        let scrape_max_age_ms =
            push_max_age_ms.max((cfg.scrape_interval_ms as i64).saturating_mul(SCRAPE_INTERVALS_KEPT));
        Self {
            allow: cfg.names.iter().cloned().collect(),
            max_metrics: cfg.max_metrics.max(1),
            push_max_age_ms,
            scrape_max_age_ms,
            inner: Mutex::new(StoreInner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, StoreInner> {
        // the data stays consistent at every step, so a poisoned lock is still usable
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The allow-list test: the flattened name, or its metric name (the part before the first
    /// `.`).
    fn allowed(&self, name: &str) -> bool {
        self.allow.is_empty()
            || self.allow.contains(name)
            || name
                .split_once('.')
                .is_some_and(|(base, _)| self.allow.contains(base))
    }

    /// Keeps `values` (already validated, e.g. by [`parse_push`]) as pushed at `now_ms`; names
    /// outside the allow-list, invalid names and non-finite values are ignored. Returns how many
    /// were kept.
    pub fn push(&self, values: Vec<Reading>, now_ms: i64) -> usize {
        let mut inner = self.lock();
        let mut kept = 0;
        for r in values {
            if r.value.is_finite() && validate_name(&r.name).is_ok() && self.allowed(&r.name) {
                inner.pushed.insert(
                    r.name,
                    Stamped {
                        value: r.value,
                        at_ms: now_ms,
                    },
                );
                kept += 1;
            }
        }
        evict_oldest(&mut inner.pushed, self.max_metrics);
        inner.counters.pushes_accepted += 1;
        inner.counters.last_push_ms = Some(now_ms);
        kept
    }

    /// Parses and keeps a pushed body; counts it as accepted or rejected.
    pub fn push_json(&self, body: &[u8], now_ms: i64) -> Result<PushOutcome, PushError> {
        match parse_push(body, self.max_metrics) {
            Ok(values) => {
                let total = values.len();
                let accepted = self.push(values, now_ms);
                Ok(PushOutcome {
                    accepted,
                    ignored: total - accepted,
                })
            }
            Err(e) => {
                self.record_rejected_push(&e.to_string());
                Err(e)
            }
        }
    }

    /// Counts a push refused before it could be parsed (e.g. too large).
    pub fn record_rejected_push(&self, why: &str) {
        let mut inner = self.lock();
        inner.counters.pushes_rejected += 1;
        inner.counters.last_push_error = Some(shorten(why));
    }

    /// Replaces the scraped values with `values`, taken at `now_ms` (allow-list and cap
    /// applied, first of a name wins); counts a good scrape.
    pub fn set_scraped(&self, values: Vec<Reading>, now_ms: i64) {
        let mut scraped = HashMap::new();
        for r in values {
            if scraped.len() >= self.max_metrics {
                break;
            }
            if r.value.is_finite() && validate_name(&r.name).is_ok() && self.allowed(&r.name) {
                scraped.entry(r.name).or_insert(Stamped {
                    value: r.value,
                    at_ms: now_ms,
                });
            }
        }
        let mut inner = self.lock();
        inner.scraped = scraped;
        inner.counters.scrapes_ok += 1;
        inner.counters.last_scrape_ms = Some(now_ms);
        inner.counters.last_scrape_error = None;
    }

    /// Counts lines of a scraped body that were not Prometheus text (after [`Self::set_scraped`]
    /// of the rest); `first` says which and shows in `last_scrape_error`.
    pub fn scrape_bad_lines(&self, lines: usize, first: &str) {
        let mut inner = self.lock();
        inner.counters.scrape_bad_lines += lines as u64;
        inner.counters.last_scrape_error = Some(shorten(&format!("{lines} bad lines; {first}")));
    }

    /// Counts a failed scrape; the previous values stay until they age out.
    pub fn scrape_failed(&self, error: &str, now_ms: i64) {
        let mut inner = self.lock();
        inner.counters.scrapes_failed += 1;
        inner.counters.last_scrape_ms = Some(now_ms);
        inner.counters.last_scrape_error = Some(shorten(error));
    }

    /// Both sources merged (the fresher value per name wins, a push wins a tie), aged-out values
    /// dropped, at most `max_metrics` (the freshest), sorted by name.
    pub fn snapshot(&self, now_ms: i64) -> Vec<Reading> {
        let inner = self.lock();
        let mut merged: HashMap<&str, Stamped> = HashMap::new();
        let fresh = |s: &Stamped, max_age: i64| now_ms.saturating_sub(s.at_ms) <= max_age;
        for (name, s) in &inner.scraped {
            if fresh(s, self.scrape_max_age_ms) {
                merged.insert(name, *s);
            }
        }
        for (name, s) in &inner.pushed {
            if fresh(s, self.push_max_age_ms) {
                match merged.get(name.as_str()) {
                    Some(old) if old.at_ms > s.at_ms => {}
                    _ => {
                        merged.insert(name, *s);
                    }
                }
            }
        }
        let mut out: Vec<(&str, Stamped)> = merged.into_iter().collect();
        if out.len() > self.max_metrics {
            out.sort_by(|a, b| b.1.at_ms.cmp(&a.1.at_ms).then(a.0.cmp(b.0)));
            out.truncate(self.max_metrics);
        }
        out.sort_by(|a, b| a.0.cmp(b.0));
        out.into_iter()
            .map(|(name, s)| Reading::new(name, s.value))
            .collect()
    }

    pub fn counters(&self) -> AppMetricsCounters {
        self.lock().counters.clone()
    }
}

/// Drops the oldest entries (ties: the smallest name first) until at most `max` remain.
fn evict_oldest(map: &mut HashMap<String, Stamped>, max: usize) {
    if map.len() <= max {
        return;
    }
    let mut by_age: Vec<(i64, String)> = map.iter().map(|(k, s)| (s.at_ms, k.clone())).collect();
    by_age.sort();
    let excess = map.len() - max;
    for (_, name) in by_age.into_iter().take(excess) {
        map.remove(&name);
    }
}
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn build_store(names: &[&str], max_metrics: usize) -> AppMetricsStore {
        AppMetricsStore::new(&AppMetricsConfig {
            push_max_age_s: 30,
            scrape_interval_ms: 5000,
            names: names.iter().map(|s| s.to_string()).collect(),
            max_metrics,
            ..AppMetricsConfig::default()
        })
    }

    #[test]
    fn the_store_merges_both_sources_and_the_fresher_value_wins() {
        let store = build_store(&[], 64);
        store.set_scraped(
            vec![Reading::new("fps", 25.0), Reading::new("errors", 2.0)],
            1_000,
        );
        store.push(vec![Reading::new("fps", 30.0), Reading::new("items", 7.0)], 2_000);
        assert_eq!(
            store.snapshot(2_000),
            vec![
                Reading::new("errors", 2.0),
                Reading::new("fps", 30.0),
                Reading::new("items", 7.0)
            ]
        );
        // a later scrape is fresher than the push
        store.set_scraped(vec![Reading::new("fps", 24.0)], 3_000);
        assert_eq!(
            store.snapshot(3_000),
            vec![Reading::new("fps", 24.0), Reading::new("items", 7.0)]
        );
        // a tie goes to the push
        store.push(vec![Reading::new("fps", 31.0)], 3_000);
        assert_eq!(store.snapshot(3_000)[0], Reading::new("fps", 31.0));
        let c = store.counters();
        assert_eq!((c.pushes_accepted, c.scrapes_ok), (2, 2));
    }

    #[test]
    fn old_values_age_out_instead_of_being_reported_stale() {
        let store = build_store(&[], 64);
        store.push(vec![Reading::new("transaction_active", 1.0)], 0);
        store.set_scraped(vec![Reading::new("fps", 25.0)], 0);
        assert_eq!(store.snapshot(30_000).len(), 2);
        assert_eq!(store.snapshot(30_001), vec![]);
        // scraped values live three intervals when that is longer than the push age
        let store = AppMetricsStore::new(&AppMetricsConfig {
            push_max_age_s: 5,
            scrape_interval_ms: 10_000,
            ..AppMetricsConfig::default()
        });
        store.push(vec![Reading::new("pushed", 1.0)], 0);
        store.set_scraped(vec![Reading::new("scraped", 2.0)], 0);
        store.scrape_failed("connect: refused", 10_000);
        assert_eq!(store.snapshot(10_000), vec![Reading::new("scraped", 2.0)]);
        assert_eq!(store.snapshot(30_001), vec![]);
        let c = store.counters();
        assert_eq!(c.scrapes_failed, 1);
        assert_eq!(c.last_scrape_error.as_deref(), Some("connect: refused"));
    }

    #[test]
    fn bad_lines_of_a_good_scrape_are_counted_and_shown() {
        let store = AppMetricsStore::new(&AppMetricsConfig::default());
        store.set_scraped(vec![Reading::new("fps", 25.0)], 0);
        store.scrape_bad_lines(2, "line 3: \"x y\" is not a metric sample");
        store.set_scraped(vec![Reading::new("fps", 26.0)], 1_000);
        store.scrape_bad_lines(1, "line 9: \"z\" is not a metric sample");
        let c = store.counters();
        assert_eq!((c.scrapes_ok, c.scrapes_failed, c.scrape_bad_lines), (2, 0, 3));
        assert_eq!(
            c.last_scrape_error.as_deref(),
            Some("1 bad lines; line 9: \"z\" is not a metric sample")
        );
        assert_eq!(store.snapshot(1_000), vec![Reading::new("fps", 26.0)]);
    }

    #[test]
    fn the_store_applies_the_allow_list_and_the_cap() {
        let store = build_store(&["fps", "items"], 64);
        store.push(vec![Reading::new("items", 1.0), Reading::new("other", 2.0)], 0);
        store.set_scraped(
            vec![Reading::new("fps.front", 30.0), Reading::new("fpsx", 1.0)],
            0,
        );
        assert_eq!(
            store.snapshot(0),
            vec![Reading::new("fps.front", 30.0), Reading::new("items", 1.0)]
        );

        let store = build_store(&[], 2);
        store.push(vec![Reading::new("a", 1.0), Reading::new("b", 2.0)], 0);
        store.push(vec![Reading::new("c", 3.0)], 10);
        assert_eq!(
            store.snapshot(10),
            vec![Reading::new("b", 2.0), Reading::new("c", 3.0)]
        );
        store.set_scraped(
            vec![
                Reading::new("x", 1.0),
                Reading::new("y", 2.0),
                Reading::new("z", 3.0),
            ],
            20,
        );
        // four names fresh, the two freshest kept
        assert_eq!(
            store.snapshot(20),
            vec![Reading::new("x", 1.0), Reading::new("y", 2.0)]
        );

        assert!(store.push_json(br#"{"a": "x"}"#, 30).is_err());
        let c = store.counters();
        assert_eq!((c.pushes_accepted, c.pushes_rejected), (2, 1));

        let store = build_store(&["fps"], 64);
        assert_eq!(
            store.push_json(br#"{"fps": 30, "other": 1, "another": 2}"#, 0),
            Ok(PushOutcome {
                accepted: 1,
                ignored: 2
            })
        );
        assert!(c.last_push_error.unwrap_or_default().contains("\"a\""));
    }

    #[test]
    fn the_store_is_shared_between_threads() {
        let store = Arc::new(build_store(&[], 64));
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let s = store.clone();
                std::thread::spawn(move || s.push(vec![Reading::new(format!("m{i}"), i as f64)], 0))
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), 1);
        }
        assert_eq!(store.snapshot(0).len(), 4);
    }
}
