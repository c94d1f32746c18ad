//! The fleet on Mosquitto, the production broker: the Debian `mosquitto` binary started by
//! each test as a child process with the configuration `fleetctl broker-config` writes, on
//! free ports, its own persistence directory; the server with `embedded_broker: None`.
//! Needs the Debian packages `mosquitto` and `mosquitto-clients`; without them every test
//! here fails (never skips).
//!
//! Mosquitto refuses differently from the embedded broker (checked below): a denied QoS 1
//! publish is acknowledged and dropped, a subscription outside the ACL is granted and gets
//! nothing, a last will on a foreign topic is accepted at connect and dropped when due. So
//! the tests assert what matters: nothing is attributed, nothing is delivered.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::codec;
use common::pki::{self, Ca, CertDir, LeafKind, Validity};
use common::{DeviceId, Envelope, Telemetry};
use rumqttc::{Event, EventLoop, Incoming, QoS};
use rvm_fleet_tests::mosquitto::{Mosquitto, Prefilled, program, start_fleet};
use rvm_fleet_tests::{
    Agents, ConnectOutcome, FleetOptions, Probe, SimFleet, TestFleet, eventually, tls_for,
};
use rvm_sim::simulate::{SimConfig, SimProfile};
use serde_json::Value;

/// Seq of the record a test publishes after one that must be dropped: once it is in, the
/// dropped one would be too.
const MARKER_SEQ: u64 = 7;

async fn accepted(fleet: &TestFleet) -> u64 {
    fleet.health().await.unwrap()["ingest"]["accepted"]
        .as_u64()
        .unwrap_or(0)
}

/// A server-identity client on Mosquitto's server listener (its own client id).
async fn server_probe(fleet: &TestFleet, m: &Mosquitto, name: &str) -> (rumqttc::AsyncClient, EventLoop) {
    let tls = tls_for(&fleet.certs.server_identity());
    match Probe::new(&format!("fleet-server:{name}"), tls)
        .connect(m.server_port)
        .await
    {
        ConnectOutcome::Accepted(c, el) => (c, el),
        ConnectOutcome::Refused(e) => panic!("server probe refused: {e}\n{}", m.log_text()),
    }
}

/// Polls `el` for `secs`, collecting (topic, payload) of every publish; stops early on error.
async fn collect(el: &mut EventLoop, secs: u64) -> Vec<(String, Vec<u8>)> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(secs), async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Incoming::Publish(p))) => got.push((p.topic.clone(), p.payload.to_vec())),
                Ok(_) => {}
                Err(_) => return,
            }
        }
    })
    .await;
    got
}

/// Drives `el` until `pred` matches an event; Err on a connection error, Ok(false) on timeout.
async fn drive(
    el: &mut EventLoop,
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
async fn three_agents_over_mtls_through_mosquitto_appear_with_memory_totals_within_10s() {
    let (fleet, m) = start_fleet(FleetOptions::default(), &[]).unwrap();
    let started = Instant::now();
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
    assert_eq!(
        seen,
        Some(vec!["rvm1".to_string(), "rvm2".into(), "rvm3".into()]),
        "{}",
        m.log_text()
    );
    println!(
        "three agents through Mosquitto seen after {:?}",
        started.elapsed()
    );
    for d in fleet.devices().await.unwrap() {
        assert_eq!(d["status"], "online", "{d}");
        assert_eq!(d["site"], "test");
    }
    // the agents came in on the device listener, with their CN as client id
    let log = m.log_text();
    for id in ["rvm1", "rvm2", "rvm3"] {
        assert!(log.contains(&format!(" as {id} ")), "{id} not in\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_enforces_tls_while_good_agents_keep_publishing() {
    let (fleet, m) = start_fleet(FleetOptions::default(), &[]).unwrap();
    let _agents = Agents::start(vec![fleet.agent_config("good1", 200).unwrap()]).unwrap();
    eventually(Duration::from_secs(10), || async {
        (accepted(&fleet).await > 2).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("good agent publishes\n{}", m.log_text()));
    let before = accepted(&fleet).await;
    let port = fleet.broker_port();

    // 1. no client certificate
    let no_cert = common::tls::client_config_without_cert(&fleet.certs.ca_cert()).unwrap();
    let r = Probe::new("good1", no_cert).connect(port).await;
    assert!(matches!(r, ConnectOutcome::Refused(_)), "no certificate accepted");

    // 2. a certificate from another CA, with a device's name
    let other = tempfile::tempdir().unwrap();
    let other_dir = CertDir::new(other.path());
    pki::init(&other_dir, &["localhost".into()], false).unwrap();
    let mut foreign = Ca::load(&other_dir)
        .unwrap()
        .issue_device(
            &other_dir,
            &DeviceId::new("good1").unwrap(),
            Validity::days_from_now(10),
            false,
        )
        .unwrap();
    foreign.ca = fleet.certs.ca_cert(); // trusts the broker, presents a foreign certificate
    let r = Probe::new("good1", tls_for(&foreign)).connect(port).await;
    assert!(matches!(r, ConnectOutcome::Refused(_)), "foreign CA accepted");

    // 3. an expired certificate of our own CA
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
    let r = Probe::new("good1", tls_for(&expired)).connect(port).await;
    assert!(
        matches!(r, ConnectOutcome::Refused(_)),
        "expired certificate accepted"
    );

    // 4. a certificate without a CN, claiming the server's username
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
    let r = p.connect(port).await;
    assert!(
        matches!(r, ConnectOutcome::Refused(_)),
        "certificate without CN accepted"
    );

    // the good agent kept publishing all along
    let grew = eventually(Duration::from_secs(5), || async {
        (accepted(&fleet).await > before + 3).then_some(())
    })
    .await;
    assert!(grew.is_some(), "good agent stalled\n{}", m.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_certificate_cannot_act_for_another_device_through_mosquitto() {
    let (fleet, m) = start_fleet(FleetOptions::default(), &[]).unwrap();
    let _agents = Agents::start(vec![fleet.agent_config("victim", 200).unwrap()]).unwrap();
    eventually(Duration::from_secs(10), || async {
        fleet.device("victim").await.ok().flatten()
    })
    .await
    .unwrap_or_else(|| panic!("victim reports\n{}", m.log_text()));
    let port = fleet.broker_port();
    let a = tls_for(&fleet.device_identity("attacker").unwrap());

    // 1. publishing a forged record to the victim's topic: Mosquitto acknowledges it (MQTT
    //    3.1.1 has no way to say no) and drops it; nothing is attributed to the victim
    let ConnectOutcome::Accepted(client, mut el) = Probe::new("attacker", a.clone()).connect(port).await
    else {
        panic!("the attacker's own connection is accepted")
    };
    let forged = Envelope::new(
        DeviceId::new("victim").unwrap(),
        9_999_999,
        common::time::now_ms(),
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
        matches!(acked, Ok(true)),
        "Mosquitto acknowledges a denied QoS 1 publish: {acked:?}"
    );
    // then a marker on its own topic, which Mosquitto forwards: the server's session gets one
    // client's publishes in order, so once the marker is in, a forged record that got through
    // would be in too
    let marker = Envelope::new(
        DeviceId::new("attacker").unwrap(),
        MARKER_SEQ,
        common::time::now_ms(),
        Telemetry::default(),
    );
    client
        .publish(
            "rvm/v1/attacker/telemetry",
            QoS::AtLeastOnce,
            false,
            codec::encode(&marker).unwrap(),
        )
        .await
        .unwrap();
    let acked = drive(&mut el, 5, |e| matches!(e, Event::Incoming(Incoming::PubAck(_)))).await;
    assert!(matches!(acked, Ok(true)), "the marker is acknowledged: {acked:?}");
    let attacker = eventually(Duration::from_secs(10), || async {
        let d = fleet.device("attacker").await.ok().flatten()?;
        (d["delivery"]["last_seq"] == MARKER_SEQ).then_some(d)
    })
    .await
    .unwrap_or_else(|| panic!("the attacker's marker never arrived\n{}", m.log_text()));
    let v = fleet.device("victim").await.unwrap().unwrap();
    assert!(
        v["delivery"]["last_seq"].as_u64().unwrap() < 9_999_999,
        "forged seq attributed: {v}"
    );
    assert_eq!(
        attacker["delivery"]["received"], 1,
        "nothing from the attacker but its marker was accepted: {attacker}"
    );
    drop(client);
    drop(el);

    // 2. subscribing to another device's topics (with the server's username, which the
    //    certificate CN replaces): granted, and nothing arrives; its own command topic works
    let mut p = Probe::new("attacker", a.clone());
    p.username = Some("fleet-server".into());
    let ConnectOutcome::Accepted(client, mut el) = p.connect(port).await else {
        panic!("connects, as itself")
    };
    let filters = [
        "rvm/v1/victim/cmd",
        "rvm/v1/victim/#",
        "rvm/v1/+/telemetry",
        "rvm/v1/#",
        "fleet/v1/#",
        "#",
        "rvm/v1/attacker/cmd",
    ];
    for f in filters {
        client.subscribe(f, QoS::AtLeastOnce).await.unwrap();
    }
    let mut subacks = 0;
    drive(&mut el, 5, |e| {
        if matches!(e, Event::Incoming(Incoming::SubAck(_))) {
            subacks += 1;
        }
        subacks == filters.len()
    })
    .await
    .unwrap();
    let (server, mut server_el) = server_probe(&fleet, &m, "probe").await;
    for t in ["rvm/v1/victim/cmd", "rvm/v1/attacker/cmd"] {
        server
            .publish(t, QoS::AtLeastOnce, false, b"probe".to_vec())
            .await
            .unwrap();
    }
    let server_drive = tokio::spawn(async move { collect(&mut server_el, 4).await });
    let got = collect(&mut el, 4).await;
    let _ = server_drive.await;
    let topics: Vec<&str> = got.iter().map(|(t, _)| t.as_str()).collect();
    assert!(!topics.is_empty(), "its own command topic delivers");
    assert!(
        topics.iter().all(|t| *t == "rvm/v1/attacker/cmd"),
        "the attacker read others' topics: {topics:?}"
    );

    // 3. the server's client id: Mosquitto's device listener replaces it with the CN, so the
    //    server's sessions are never taken over
    let ingest_before = fleet.health().await.unwrap()["ingest"]["received"]
        .as_u64()
        .unwrap();
    for cid in ["fleet-server:ingest", "fleet-server:republish", "fleet-server"] {
        let r = Probe::new(cid, a.clone()).connect(port).await;
        assert!(matches!(r, ConnectOutcome::Accepted(..)), "{cid}");
    }
    let still = eventually(Duration::from_secs(5), || async {
        let h = fleet.health().await.ok()?;
        (h["ingest"]["connected"] == true && h["ingest"]["received"].as_u64()? > ingest_before + 2)
            .then_some(())
    })
    .await;
    assert!(still.is_some(), "the server's session kept receiving");
    let log = m.log_text();
    assert!(
        !log.contains("Client fleet-server:ingest already connected"),
        "the ingest session was taken over:\n{log}"
    );

    // 4. a last will on the victim's state topic: accepted at connect, never published;
    //    the same drop with a will on its own topic does publish (the check is not vacuous)
    let (watch, mut watch_el) = server_probe(&fleet, &m, "watch").await;
    watch.subscribe("rvm/v1/+/state", QoS::AtLeastOnce).await.unwrap();
    drive(&mut watch_el, 5, |e| {
        matches!(e, Event::Incoming(Incoming::SubAck(_)))
    })
    .await
    .unwrap();
    for (topic, payload) in [
        ("rvm/v1/victim/state", b"planted".to_vec()),
        ("rvm/v1/attacker/state", b"own-will".to_vec()),
    ] {
        let mut p = Probe::new("attacker", a.clone());
        p.will = Some((topic.into(), payload));
        let ConnectOutcome::Accepted(c, el) = p.connect(port).await else {
            panic!("Mosquitto accepts the connection; the will is checked when due")
        };
        // no DISCONNECT: the socket just closes, so the broker sends the will
        drop(el);
        drop(c);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let seen = collect(&mut watch_el, 3).await;
    assert!(
        !seen.iter().any(|(_, p)| p == b"planted"),
        "a planted will reached the victim's topic"
    );
    assert!(
        seen.iter()
            .any(|(t, p)| t == "rvm/v1/attacker/state" && p == b"own-will"),
        "the control will was not published: {:?}",
        seen.iter().map(|(t, _)| t).collect::<Vec<_>>()
    );
    let v = fleet.device("victim").await.unwrap().unwrap();
    assert_ne!(v["status"], "offline", "{v}");
}

/// Spawns `mosquitto_sub` and collects its output lines.
struct SubProcess {
    child: std::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl SubProcess {
    fn spawn(args: &[String]) -> SubProcess {
        let mut child = Command::new(program("mosquitto_sub"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub starts");
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let l = lines.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
                    l.lock().unwrap().push(line);
                }
            });
        }
        SubProcess { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for SubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Rules with short timings: machines going away make offline alerts and a site incident.
const RULES: &str = r#"
[[rules]]
name = "device_offline"
metric = "presence.offline"
op = ">"
threshold = 0
severity = "critical"
summary = "device is offline"

[correlate.site_outage]
min_devices = 3
window_s = 5
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_sub_with_a_reader_certificate_gets_fleet_json_and_mosquitto_pub_is_refused() {
    let (fleet, mut m) = start_fleet(
        FleetOptions {
            rules: Some(RULES.into()),
            ..Default::default()
        },
        &["graf", "other"],
    )
    .unwrap();
    let reader = m.client_args(&fleet.certs, "reader-graf");
    let mut args = reader.clone();
    args.extend(["-V", "mqttv311", "-q", "1", "-t", "fleet/v1/#", "-F", "%r %t %p"].map(String::from));
    let sub = SubProcess::spawn(&args);
    // a reader reading device topics gets nothing (another certificate: on Mosquitto's device
    // listener the client id is the CN, so a second connection with the same one would take
    // the first one's place, again and again)
    let mut rvm_args = m.client_args(&fleet.certs, "reader-other");
    rvm_args.extend(["-t", "rvm/v1/#", "-t", "#", "-F", "%t"].map(String::from));
    let rvm_sub = SubProcess::spawn(&rvm_args);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let sims = SimFleet::start(
        &fleet,
        SimConfig {
            devices: 3,
            sites: 1,
            prefix: "rdr".into(),
            host: String::new(),
            port: 0,
            certs: Default::default(),
            interval: Duration::from_millis(300),
            first: 0,
        },
        SimProfile::default(),
    )
    .unwrap();
    eventually(Duration::from_secs(15), || async {
        (fleet.devices().await.ok()?.len() == 3).then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("three machines online\n{}", m.log_text()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    for i in 0..3 {
        sims.stop_device(i);
    }
    let kinds = |lines: &[String]| -> Vec<String> {
        let mut k: Vec<String> = lines
            .iter()
            .filter_map(|l| l.split(' ').nth(1))
            .map(|t| match t.strip_prefix("fleet/v1/devices/") {
                Some(rest) => rest
                    .split_once('/')
                    .map(|(_, k)| k.to_string())
                    .unwrap_or_default(),
                None => t.to_string(),
            })
            .collect();
        k.sort();
        k.dedup();
        k
    };
    let all = eventually(Duration::from_secs(20), || async {
        let k = kinds(&sub.lines());
        ["telemetry", "state", "fleet/v1/alerts", "fleet/v1/incidents"]
            .iter()
            .all(|want| k.iter().any(|x| x == want))
            .then_some(())
    })
    .await;
    let lines = sub.lines();
    if all.is_none() {
        let h = fleet.health().await.unwrap();
        panic!(
            "kinds seen: {:?}\nhealth: {h:#}\nalerts: {:#}\n{}",
            kinds(&lines),
            fleet.get("/api/v1/alerts?state=all").await.unwrap(),
            lines.join("\n")
        );
    }
    let schemas = rvm_fleet_tests::schema::Schemas::load().unwrap();
    let mut checked = 0;
    for line in &lines {
        let mut parts = line.splitn(3, ' ');
        let (Some(retained), Some(topic), Some(payload)) = (parts.next(), parts.next(), parts.next()) else {
            panic!("not `retained topic payload`: {line}")
        };
        let v: Value = serde_json::from_str(payload).unwrap_or_else(|e| panic!("{topic}: {e}: {payload}"));
        assert!(v.is_object(), "{topic}: {v}");
        schemas
            .validate_topic(topic, &v)
            .unwrap_or_else(|e| panic!("{topic}: {e}\n{v:#}"));
        // `RVM_DUMP_EXAMPLES=DIR`: keep every payload (how docs/examples/ was refreshed)
        if let Ok(dir) = std::env::var("RVM_DUMP_EXAMPLES") {
            let name = format!("{checked:03}-{}", topic.replace('/', "_"));
            let _ = std::fs::write(format!("{dir}/{name}.json"), format!("{v:#}\n"));
        }
        // Mosquitto passes the retain flag of a live publish through: only state has it
        assert!(retained == "0" || topic.ends_with("/state"), "retained: {line}");
        checked += 1;
    }
    println!("{checked} fleet/v1 messages parsed and matched their schemas");
    let read: Vec<String> = rvm_sub.lines();
    assert!(!read.is_empty(), "`#` gives a reader fleet/v1/...");
    assert!(
        read.iter().all(|t| t.starts_with("fleet/v1/")),
        "a reader read device topics: {read:?}"
    );

    // its publish to a device's command topic is refused (MQTT 5 shows the reason code) and
    // the device never gets it; the server's publish there does arrive
    let ConnectOutcome::Accepted(dev, mut dev_el) =
        Probe::new("lonely", tls_for(&fleet.device_identity("lonely").unwrap()))
            .connect(m.port)
            .await
    else {
        panic!("device connects")
    };
    dev.subscribe("rvm/v1/lonely/cmd", QoS::AtLeastOnce)
        .await
        .unwrap();
    drive(&mut dev_el, 5, |e| {
        matches!(e, Event::Incoming(Incoming::SubAck(_)))
    })
    .await
    .unwrap();
    let mut pub_args = reader.clone();
    pub_args.extend(
        [
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-t",
            "rvm/v1/lonely/cmd",
            "-m",
            "reboot-now",
        ]
        .map(String::from),
    );
    let out = Command::new(program("mosquitto_pub"))
        .args(&pub_args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Not authorized"),
        "mosquitto_pub said: {text:?} ({})",
        out.status
    );
    let got = collect(&mut dev_el, 2).await;
    assert!(got.is_empty(), "the reader's command arrived: {got:?}");
    let (server, mut server_el) = server_probe(&fleet, &m, "cmd").await;
    server
        .publish(
            "rvm/v1/lonely/cmd",
            QoS::AtLeastOnce,
            false,
            b"from-server".to_vec(),
        )
        .await
        .unwrap();
    let server_drive = tokio::spawn(async move { collect(&mut server_el, 3).await });
    let got = collect(&mut dev_el, 3).await;
    let _ = server_drive.await;
    assert_eq!(got.len(), 1, "the server's command arrives: {got:?}");

    // a reader issued after the ACL was written gets nothing until `fleetctl broker-config`
    // runs again and Mosquitto reloads
    Ca::load(&fleet.certs)
        .unwrap()
        .issue_reader(&fleet.certs, "late", Validity::days_from_now(1), false)
        .unwrap();
    let late_args = m.client_args(&fleet.certs, "reader-late");
    let late = |secs: &str| {
        let mut a = late_args.clone();
        a.extend(
            [
                "-t",
                "fleet/v1/alerts",
                "-t",
                "fleet/v1/devices/+/state",
                "-C",
                "1",
                "-W",
                secs,
            ]
            .map(String::from),
        );
        a
    };
    let before = Command::new(program("mosquitto_sub"))
        .args(late("3"))
        .output()
        .unwrap();
    assert!(
        before.stdout.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&before.stdout)
    );
    m.regenerate_and_reload().unwrap();
    assert_eq!(m.written.readers, ["graf", "late", "other"]);
    // the retained state of the machines arrives at once
    let after = Command::new(program("mosquitto_sub"))
        .args(late("10"))
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&after.stdout);
    let v: Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    assert!(
        v["body"]["online"].is_object() || v["body"]["offline"].is_object(),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleetctl_sub_prints_decoded_records_and_fleet_json_from_mosquitto() {
    let (fleet, m) = start_fleet(FleetOptions::default(), &["graf"]).unwrap();
    let _agents = Agents::start(vec![fleet.agent_config("subme", 200).unwrap()]).unwrap();
    let broker = format!("127.0.0.1:{}", m.port);
    let opts = |name: &str, filter: &str| fleet_server::sub::SubOptions {
        filter: filter.into(),
        who: fleet_server::sub::Who::Named {
            certs: fleet.certs.root().into(),
            name: name.into(),
        },
        broker: broker.clone(),
        count: Some(3),
        payload_only: false,
    };
    for (name, filter) in [
        ("fleet-server", "rvm/v1/+/telemetry"),
        ("reader-graf", "fleet/v1/devices/+/telemetry"),
    ] {
        let mut lines = Vec::new();
        let n = tokio::time::timeout(
            Duration::from_secs(15),
            fleet_server::sub::run(&opts(name, filter), |l| lines.push(l.to_string())),
        )
        .await
        .unwrap_or_else(|_| panic!("{name}: no messages\n{}", m.log_text()))
        .unwrap();
        assert_eq!(n, 3);
        for l in &lines {
            let v: Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["payload"]["device"], "subme", "{v}");
            assert!(
                v["payload"]["body"]["memory"]["total_bytes"].as_u64().unwrap() > 0,
                "{v}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_50000_records_from_50_machines_crosses_mosquitto_without_a_gap() {
    const MACHINES: usize = 50;
    const RECORDS: u64 = 1_000;
    let (fleet, m) = start_fleet(FleetOptions::default(), &[]).unwrap();
    let filled = Instant::now();
    let burst = Prefilled::start(&fleet, "burst", MACHINES, RECORDS).unwrap();
    println!(
        "{} records in {MACHINES} buffers, filled in {:?}",
        burst.buffered(),
        filled.elapsed()
    );
    let total = MACHINES as u64 * RECORDS;
    // every record, and each machine's birth
    let done = eventually(Duration::from_secs(240), || async {
        (burst.buffered() == 0 && accepted(&fleet).await >= total + MACHINES as u64).then_some(())
    })
    .await;
    let took = burst.started.elapsed();
    assert!(
        done.is_some(),
        "after {took:?}: accepted {} of {total}, {} still buffered\n{}",
        accepted(&fleet).await,
        burst.buffered(),
        m.log_text().lines().rev().take(30).collect::<Vec<_>>().join("\n")
    );
    println!(
        "burst: {total} records from {MACHINES} machines through Mosquitto in {took:?} ({:.0} records/s)",
        total as f64 / took.as_secs_f64()
    );
    for id in &burst.ids {
        // `accepted` counts in the writer; the device view hears of it a moment later
        let d = eventually(Duration::from_secs(10), || async {
            let d = fleet.device(id).await.ok()??;
            (d["delivery"]["received"] == RECORDS).then_some(d)
        })
        .await;
        let d = match d {
            Some(d) => d,
            None => fleet
                .device(id)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("{id} unknown")),
        };
        let del = &d["delivery"];
        assert_eq!(del["received"], RECORDS, "{id}: {del}");
        assert_eq!(del["last_seq"], RECORDS, "{id}: {del}");
        assert_eq!(del["gaps"], serde_json::json!([]), "{id}: {del}");
        assert_eq!(del["missing"], 0, "{id}: {del}");
    }
    let h = fleet.health().await.unwrap();
    assert_eq!(h["ingest"]["rejected_total"], 0, "{h:#}");
    println!("duplicates dropped: {}", h["ingest"]["duplicates"]);
    let r = fleet.server.republish.as_ref().unwrap().snapshot();
    println!("republisher during the burst: {r:?}");
}
