//! Foundation acceptance: agents over mutual TLS, TLS enforcement, identity confinement,
//! bad payloads counted. Everything real: the embedded broker, TLS, sled, HTTP.

use std::time::Duration;

use common::codec;
use common::pki::{self, Ca, CertDir, LeafKind, Validity};
use common::{DeviceId, Envelope, Telemetry};
use rumqttc::{Event, Incoming, Outgoing, QoS};
use rvm_fleet_tests::{Agents, ConnectOutcome, Probe, TestFleet, eventually, tls_for};

async fn received(fleet: &TestFleet) -> u64 {
    fleet.health().await.unwrap()["ingest"]["accepted"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_over_mtls_appear_with_memory_totals_within_10s() {
    let fleet = TestFleet::start().unwrap();
    let cfgs = ["rvm1", "rvm2", "rvm3"]
        .iter()
        .map(|id| fleet.agent_config(id, 500).unwrap())
        .collect();
    let _agents = Agents::start(cfgs).unwrap();
    let seen = eventually(Duration::from_secs(10), || async {
        let ds = fleet.devices().await.ok()?;
        let ok: Vec<String> = ds
            .iter()
            .filter(|d| d["metrics"]["memory.total_bytes"].as_f64().unwrap_or(0.0) > 0.0)
            .map(|d| d["id"].as_str().unwrap_or("").to_string())
            .collect();
        (ok.len() == 3).then_some(ok)
    })
    .await;
    assert_eq!(seen, Some(vec!["rvm1".to_string(), "rvm2".into(), "rvm3".into()]));
    for d in fleet.devices().await.unwrap() {
        assert_eq!(d["status"], "online", "{d}");
        assert!(d["last_seen_ms"].as_i64().unwrap() > 0);
        assert_eq!(d["site"], "test");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_needs_a_token_except_health() {
    let fleet = TestFleet::start().unwrap();
    let c = &fleet.http;
    assert_eq!(
        c.get(fleet.url("/api/v1/health")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        c.get(fleet.url("/api/v1/devices")).send().await.unwrap().status(),
        401
    );
    let r = c
        .get(fleet.url("/api/v1/devices"))
        .bearer_auth("rvmf_nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        c.get(fleet.url("/api/v1/devices"))
            .bearer_auth(&fleet.admin)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_enforced_while_good_agents_keep_publishing() {
    let fleet = TestFleet::start().unwrap();
    let _agents = Agents::start(vec![fleet.agent_config("good1", 200).unwrap()]).unwrap();
    eventually(Duration::from_secs(10), || async {
        (received(&fleet).await > 2).then_some(())
    })
    .await
    .expect("good agent publishes");
    let before = received(&fleet).await;
    let port = fleet.broker_port();

    // 1. no client certificate
    let no_cert = common::tls::client_config_without_cert(&fleet.certs.ca_cert()).unwrap();
    assert!(matches!(
        Probe::new("good1", no_cert).connect(port).await,
        ConnectOutcome::Refused(_)
    ));

    // 2. a certificate from another CA, with a device's name
    let other = tempfile::tempdir().unwrap();
    let other_dir = CertDir::new(other.path());
    pki::init(&other_dir, &["localhost".into()], false).unwrap();
    let foreign = Ca::load(&other_dir)
        .unwrap()
        .issue_device(
            &other_dir,
            &DeviceId::new("good1").unwrap(),
            Validity::days_from_now(10),
            false,
        )
        .unwrap();
    let mut foreign_tls_ident = foreign.clone();
    foreign_tls_ident.ca = fleet.certs.ca_cert(); // trusts our server, presents a foreign cert
    assert!(matches!(
        Probe::new("good1", tls_for(&foreign_tls_ident))
            .connect(port)
            .await,
        ConnectOutcome::Refused(_)
    ));

    // 3. an expired certificate from our own CA
    let exp_dir = CertDir::new(fleet.dir.path().join("expired"));
    std::fs::create_dir_all(exp_dir.root()).unwrap();
    std::fs::copy(fleet.certs.ca_cert(), exp_dir.ca_cert()).unwrap();
    std::fs::copy(fleet.certs.ca_key(), exp_dir.ca_key()).unwrap();
    let expired = Ca::load(&exp_dir)
        .unwrap()
        .issue_device(
            &exp_dir,
            &DeviceId::new("good1").unwrap(),
            Validity::expired(),
            false,
        )
        .unwrap();
    assert!(matches!(
        Probe::new("good1", tls_for(&expired)).connect(port).await,
        ConnectOutcome::Refused(_)
    ));

    // the good agent kept publishing all along
    let grew = eventually(Duration::from_secs(5), || async {
        (received(&fleet).await > before + 3).then_some(())
    })
    .await;
    assert!(grew.is_some(), "good agent stalled");
}

/// Drives a probe's event loop until `pred` matches an event or the connection ends.
async fn drive(
    el: &mut rumqttc::EventLoop,
    secs: u64,
    mut pred: impl FnMut(&Event) -> bool,
) -> Result<bool, rumqttc::ConnectionError> {
    let r = tokio::time::timeout(Duration::from_secs(secs), async {
        loop {
            match el.poll().await {
                Ok(ev) if pred(&ev) => return Ok(true),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    r.unwrap_or(Ok(false))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_certificate_cannot_act_for_another_device_or_the_server() {
    let fleet = TestFleet::start().unwrap();
    let _agents = Agents::start(vec![fleet.agent_config("victim", 200).unwrap()]).unwrap();
    eventually(Duration::from_secs(10), || async {
        fleet.device("victim").await.ok().flatten()
    })
    .await
    .expect("victim reports");
    let port = fleet.broker_port();
    let a = tls_for(&fleet.device_identity("attacker").unwrap());

    // publishing to the victim's telemetry topic: disconnected, no PUBACK, nothing attributed
    let ConnectOutcome::Accepted(client, mut el) = Probe::new("attacker", a.clone()).connect(port).await
    else {
        panic!("attacker's own connection should be accepted");
    };
    let forged = Envelope::new(
        DeviceId::new("victim").unwrap(),
        9_999_999,
        0,
        Telemetry::default(),
    );
    client
        .publish(
            "rvm/v1/victim/telemetry",
            QoS::AtLeastOnce,
            false,
            codec::encode(&forged).unwrap(),
        )
        .await
        .unwrap();
    let acked = drive(&mut el, 5, |e| matches!(e, Event::Incoming(Incoming::PubAck(_)))).await;
    assert!(
        !matches!(acked, Ok(true)),
        "a forged publish must not be acknowledged: {acked:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let v = fleet.device("victim").await.unwrap().unwrap();
    assert!(
        v["delivery"]["last_seq"].as_u64().unwrap() < 9_999_999,
        "forged seq attributed: {v}"
    );
    assert!(
        fleet.device("attacker").await.unwrap().is_none(),
        "nothing from the attacker was accepted"
    );

    // planting a last will on the victim's state topic: refused at connect
    let mut p = Probe::new("attacker", a.clone());
    p.will = Some(("rvm/v1/victim/state".into(), b"offline".to_vec()));
    assert!(matches!(p.connect(port).await, ConnectOutcome::Refused(_)));

    // the server's client id: refused, and the server's own session is not kicked off
    let ingest_before = fleet.health().await.unwrap()["ingest"]["received"]
        .as_u64()
        .unwrap();
    assert!(matches!(
        Probe::new("fleet-server:ingest", a.clone()).connect(port).await,
        ConnectOutcome::Refused(_)
    ));
    assert!(matches!(
        Probe::new("fleet-server", a.clone()).connect(port).await,
        ConnectOutcome::Refused(_)
    ));
    let still = eventually(Duration::from_secs(5), || async {
        let h = fleet.health().await.ok()?;
        (h["ingest"]["connected"] == true && h["ingest"]["received"].as_u64()? > ingest_before + 2)
            .then_some(())
    })
    .await;
    assert!(still.is_some(), "the server's session kept receiving");

    // the server's username: the certificate CN replaces it, so only the device's own rights
    let mut p = Probe::new("attacker", a.clone());
    p.username = Some("fleet-server".into());
    let ConnectOutcome::Accepted(client, mut el) = p.connect(port).await else {
        panic!("connects, as itself")
    };
    client
        .subscribe("rvm/v1/+/telemetry", QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut codes = None;
    drive(&mut el, 5, |e| {
        if let Event::Incoming(Incoming::SubAck(s)) = e {
            codes = Some(s.return_codes.clone());
            true
        } else {
            false
        }
    })
    .await
    .unwrap();
    assert_eq!(
        codes,
        Some(vec![rumqttc::SubscribeReasonCode::Failure]),
        "server's subscription refused"
    );

    // a certificate without a CN, claiming the server's username: refused
    let ca = Ca::load(&fleet.certs).unwrap();
    let (cert, key) = ca
        .issue_dn(None, "attacker", LeafKind::Client, Validity::days_from_now(1))
        .unwrap();
    let nocn = fleet.dir.path().join("nocn");
    std::fs::create_dir_all(&nocn).unwrap();
    std::fs::write(nocn.join("c.pem"), cert).unwrap();
    std::fs::write(nocn.join("k.pem"), key).unwrap();
    let ident = common::tls::ClientIdentity {
        ca: fleet.certs.ca_cert(),
        cert: nocn.join("c.pem"),
        key: nocn.join("k.pem"),
    };
    let mut p = Probe::new("fleet-server", tls_for(&ident));
    p.username = Some("fleet-server".into());
    assert!(matches!(p.connect(port).await, ConnectOutcome::Refused(_)));

    // subscribing to another device's topics: refused
    let ConnectOutcome::Accepted(client, mut el) = Probe::new("attacker", a).connect(port).await else {
        panic!()
    };
    for f in ["rvm/v1/victim/cmd", "rvm/v1/#", "#"] {
        client.subscribe(f, QoS::AtLeastOnce).await.unwrap();
    }
    let mut failures = 0;
    drive(&mut el, 5, |e| {
        if let Event::Incoming(Incoming::SubAck(s)) = e {
            failures += s
                .return_codes
                .iter()
                .filter(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                .count();
        }
        failures == 3
    })
    .await
    .unwrap();
    assert_eq!(failures, 3);
    // and its own command topic is fine
    client
        .subscribe("rvm/v1/attacker/cmd", QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut ok = false;
    drive(&mut el, 5, |e| {
        if let Event::Incoming(Incoming::SubAck(s)) = e {
            ok = matches!(s.return_codes[..], [rumqttc::SubscribeReasonCode::Success(_)]);
            true
        } else {
            false
        }
    })
    .await
    .unwrap();
    assert!(ok);
    let b = fleet.health().await.unwrap()["broker"].clone();
    assert!(b["connects_refused"].as_u64().unwrap() >= 4, "{b}");
    assert!(b["subscribes_refused"].as_u64().unwrap() >= 4, "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_and_a_wrong_schema_are_counted_and_ingest_carries_on() {
    let fleet = TestFleet::start().unwrap();
    let port = fleet.broker_port();
    let ConnectOutcome::Accepted(client, mut el) =
        Probe::new("noisy", tls_for(&fleet.device_identity("noisy").unwrap()))
            .connect(port)
            .await
    else {
        panic!()
    };
    let mut garbage = vec![0u8; 300];
    for (i, b) in garbage.iter_mut().enumerate() {
        *b = (i * 131 % 251) as u8;
    }
    // a valid schema byte first, so the bytes reach the body decoder (random bytes starting
    // with another value are refused earlier, as `unknown_schema`)
    garbage[0] = common::SCHEMA_VERSION as u8;
    let mut wrong = Envelope::new(DeviceId::new("noisy").unwrap(), 1, 0, Telemetry::default());
    wrong.schema = 42;
    let good = Envelope::new(DeviceId::new("noisy").unwrap(), 2, common::time::now_ms(), {
        let mut t = Telemetry::default();
        t.memory.total_bytes = 1234;
        t
    });
    for payload in [
        garbage,
        codec::encode(&wrong).unwrap(),
        codec::encode(&good).unwrap(),
    ] {
        client
            .publish("rvm/v1/noisy/telemetry", QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
    let mut acks = 0;
    drive(&mut el, 5, |e| {
        if matches!(e, Event::Incoming(Incoming::PubAck(_))) {
            acks += 1;
        }
        acks == 3 || matches!(e, Event::Outgoing(Outgoing::Disconnect))
    })
    .await
    .unwrap();
    let d = eventually(Duration::from_secs(5), || async {
        fleet.device("noisy").await.ok().flatten()
    })
    .await
    .expect("the good record after the bad ones is ingested");
    assert_eq!(d["metrics"]["memory.total_bytes"], 1234.0);
    let h = fleet.health().await.unwrap();
    let rej = &h["ingest"]["rejected"];
    assert_eq!(rej["malformed"], 1, "{h}");
    assert_eq!(rej["unknown_schema"], 1, "{h}");
    assert_eq!(h["ingest"]["rejected_total"], 2);
}
