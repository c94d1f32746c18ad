//! The alert list's filters and the resolve by hand, end to end: simulated machines on two
//! sites raise warnings and a critical alert; `GET /api/v1/alerts` narrows them by severity,
//! site, rule, device and time range (RFC 3339 or milliseconds), naming a bad parameter; an
//! operator resolves one with a comment, which the audit log and the alert's history keep
//! across a restart, on sled and on PostgreSQL.

use std::time::Duration;

use fleet_server::auth::Role;
use reqwest::Method;
use rvm_fleet_tests::{Backend, FleetOptions, SimFleet, TestFleet, eventually};
use rvm_sim::simulate::{SimConfig, SimProfile};
use rvm_sim::source::Fault;
use serde_json::{Value, json};

const RULES: &str = rvm_fleet_tests::rules::OFFLINE_AND_INFERENCE_SLOW;

fn build_sim(prefix: &str) -> SimConfig {
    SimConfig {
        devices: 4,
        sites: 2,
        prefix: prefix.into(),
        host: String::new(),
        port: 0,
        certs: Default::default(),
        interval: Duration::from_millis(500),
        first: 0,
    }
}

/// The ids of the alerts a query lists, sorted.
async fn ids(fleet: &TestFleet, query: &str) -> Vec<String> {
    let v = fleet
        .get(&format!("/api/v1/alerts?{query}"))
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    let mut out: Vec<String> = v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_filter_by_severity_site_rule_and_time_and_a_resolve_by_hand_is_kept_and_audited() {
    alerts_filter_and_resolve_on(Backend::Sled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_filter_by_severity_site_rule_and_time_and_a_resolve_by_hand_is_kept_and_audited_on_postgres()
{
    alerts_filter_and_resolve_on(Backend::Postgres).await;
}

async fn alerts_filter_and_resolve_on(backend: Backend) {
    let mut fleet = TestFleet::start_with(FleetOptions {
        backend,
        rules: Some(RULES.into()),
        ..Default::default()
    })
    .unwrap();
    let viewer = fleet.token("vera", Role::Viewer).unwrap();
    let otto = fleet.token("otto", Role::Operator).unwrap();
    let before_ms = common::time::now_ms();
    // machines 0 and 2 on site1, 1 and 3 on site2
    let sims = SimFleet::start(&fleet, build_sim("filt"), SimProfile::default()).unwrap();
    let id = |i: usize| sims.ids[i].clone();
    eventually(Duration::from_secs(20), || async {
        (fleet.devices().await.ok()?.len() == 4).then_some(())
    })
    .await
    .expect("four machines online");
    sims.set_fault(0, Fault::InferenceDegraded);
    sims.set_fault(1, Fault::InferenceDegraded);
    sims.stop_device(2);
    let slow0 = format!("inference_slow:{}:1", id(0));
    let slow1 = format!("inference_slow:{}:1", id(1));
    let off2 = format!("device_offline:{}:1", id(2));
    let mut all = vec![slow0.clone(), slow1.clone(), off2.clone()];
    all.sort();
    if eventually(Duration::from_secs(20), || async {
        (ids(&fleet, "state=firing").await == all).then_some(())
    })
    .await
    .is_none()
    {
        panic!("three alerts fire: {:?}", ids(&fleet, "state=all").await);
    }

    // each filter alone, then together
    assert_eq!(
        ids(&fleet, "severity=critical").await,
        std::slice::from_ref(&off2)
    );
    assert_eq!(ids(&fleet, "severity=warning,critical").await, all);
    let mut site1 = vec![slow0.clone(), off2.clone()];
    site1.sort();
    assert_eq!(ids(&fleet, "site=site1").await, site1);
    assert_eq!(ids(&fleet, "rule=inference_slow").await.len(), 2);
    assert_eq!(
        ids(&fleet, "rule=inference_slow&site=site2&severity=warning").await,
        std::slice::from_ref(&slow1)
    );
    assert_eq!(
        ids(&fleet, &format!("device={}", id(0))).await,
        std::slice::from_ref(&slow0)
    );
    assert_eq!(ids(&fleet, "limit=1").await.len(), 1);
    // a range that ends before they started holds none; one around now holds all three,
    // in RFC 3339 or in milliseconds
    assert!(ids(&fleet, &format!("to={}", before_ms - 1)).await.is_empty());
    let now = common::time::now_ms();
    assert_eq!(
        ids(
            &fleet,
            &format!("from={}&to={}", rfc3339(before_ms), rfc3339(now))
        )
        .await,
        all
    );
    assert_eq!(ids(&fleet, &format!("from={before_ms}&to={now}")).await, all);
    // bad parameters are named
    for (query, param) in [
        ("from=yesterday", "from"),
        ("to=12:00", "to"),
        ("from=2000&to=1000", "from"),
        ("severity=loud", "severity"),
        ("limit=0", "limit"),
        ("sevrity=critical", "sevrity"),
    ] {
        let (st, e) = fleet
            .send(Method::GET, &format!("/api/v1/alerts?{query}"), &viewer, None)
            .await
            .unwrap();
        assert_eq!(st, 400, "{query}: {e}");
        assert!(e["message"].as_str().unwrap().contains(param), "{query}: {e}");
    }

    // resolve by hand: operators only, a comment required, a firing alert only
    let resolve = format!("/api/v1/alerts/{slow0}/resolve");
    let body = || Some(json!({"comment": "model swapped, the slowness is the old one"}));
    let (st, e) = fleet.send(Method::POST, &resolve, &viewer, body()).await.unwrap();
    assert_eq!((st, e["error"].as_str()), (403, Some("forbidden")), "{e}");
    let (st, e) = fleet
        .send(Method::POST, &resolve, &otto, Some(json!({"comment": " "})))
        .await
        .unwrap();
    assert_eq!(st, 400, "{e}");
    assert!(e["message"].as_str().unwrap().starts_with("comment"), "{e}");
    let (st, _) = fleet
        .send(
            Method::POST,
            "/api/v1/alerts/inference_slow:nope:1/resolve",
            &otto,
            body(),
        )
        .await
        .unwrap();
    assert_eq!(st, 404);
    let resolved_at = common::time::now_ms();
    let (st, a) = fleet.send(Method::POST, &resolve, &otto, body()).await.unwrap();
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["state"], "resolved");
    assert_eq!(a["resolved_by"]["by"], "otto");
    assert_eq!(
        a["resolved_by"]["comment"],
        "model swapped, the slowness is the old one"
    );
    let (st, e) = fleet.send(Method::POST, &resolve, &otto, body()).await.unwrap();
    assert_eq!((st, e["error"].as_str()), (409, Some("conflict")), "{e}");
    assert!(!ids(&fleet, "state=firing").await.contains(&slow0));
    assert_eq!(ids(&fleet, "state=resolved").await, std::slice::from_ref(&slow0));
    // a range that starts after the resolve leaves it out; one that covers it keeps it
    let later = common::time::now_ms() + 1;
    assert!(
        !ids(&fleet, &format!("state=all&from={later}"))
            .await
            .contains(&slow0)
    );
    assert!(
        ids(&fleet, &format!("from={}", rfc3339(resolved_at - 1000)))
            .await
            .contains(&slow0)
    );
    // the audit log names who, what and why
    let audit = eventually(Duration::from_secs(5), || async {
        let (_, a) = fleet.send(Method::GET, "/api/v1/audit", &otto, None).await.ok()?;
        a["entries"]
            .as_array()?
            .iter()
            .find(|e| e["action"] == "resolve")
            .cloned()
    })
    .await
    .expect("the resolve is audited");
    assert_eq!(
        (audit["who"].as_str(), audit["target"].as_str()),
        (Some("otto"), Some(slow0.as_str())),
        "{audit}"
    );
    assert_eq!(audit["comment"], "model swapped, the slowness is the old one");

    // the history keeps who resolved it across a restart
    tokio::time::sleep(Duration::from_millis(500)).await;
    fleet.restart().unwrap();
    let kept: Value = eventually(Duration::from_secs(15), || async {
        let v = fleet.get("/api/v1/alerts?state=resolved").await.ok()?;
        v["alerts"]
            .as_array()?
            .iter()
            .find(|a| a["id"] == slow0.as_str())
            .cloned()
    })
    .await
    .expect("the resolved alert is in the history after a restart");
    assert_eq!(kept["resolved_by"]["by"], "otto", "{kept}");
    assert_eq!(
        kept["resolved_by"]["comment"],
        "model swapped, the slowness is the old one"
    );
    if backend == Backend::Postgres {
        let rows = fleet
            .pg()
            .psql(&format!(
                "SELECT resolved_by || ': ' || resolve_comment FROM fleet_alerts WHERE id = '{slow0}'"
            ))
            .unwrap();
        assert_eq!(rows, "otto: model swapped, the slowness is the old one");
    }
    // the machine is still slow: a new alert of the same rule opens after the resolve
    eventually(Duration::from_secs(20), || async {
        ids(&fleet, "state=firing")
            .await
            .contains(&format!("inference_slow:{}:2", id(0)))
            .then_some(())
    })
    .await
    .expect("a still-breaching machine raises the next generation");
}
