//! `fleetctl sub`: subscribe to the broker and print one JSON line per message.
//!
//! `fleet/v1/...` payloads are JSON already and are printed as they are; `rvm/v1/...` records
//! are bincode envelopes, decoded with the wire codec into the same JSON the republisher
//! sends ([`crate::republish::item::record_json`]); commands (`rvm/v1/{id}/cmd`) show the
//! signed command's content and signature. Reading `rvm/v1/...` needs the server's identity or
//! the device's own; a reader may read `fleet/v1/#` only.
//!
//! A line: `{"topic": "...", "retain": false, "payload": {...}}`; a payload that does not
//! decode gives `"error"` instead of `"payload"`, and the stream goes on.

use std::path::PathBuf;
use std::time::Duration;

use common::command::{Command, SignedCommand};
use common::pki::CertDir;
use common::tls::ClientIdentity;
use common::topics::{Kind, Topic};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS, TlsConfiguration, Transport};
use serde_json::{Value, json};

/// Keep-alive of the subscriber's connection.
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// Why `fleetctl sub` could not connect or stopped; each variant names the option or the peer.
#[derive(Debug, thiserror::Error)]
pub enum SubError {
    #[error("--name {name:?}: not `fleet-server`, `reader-NAME` or a device id ({source})")]
    BadName {
        name: String,
        source: common::ids::IdError,
    },
    #[error("--name {name}: {path} does not exist")]
    Missing { name: String, path: PathBuf },
    #[error(transparent)]
    Tls(#[from] common::tls::TlsError),
    #[error("--broker {0:?} is not host:port")]
    BadBroker(String),
    #[error(transparent)]
    Subscribe(#[from] rumqttc::ClientError),
    #[error("the broker refused {cn} the subscription to {filter}")]
    Refused { cn: String, filter: String },
    #[error("{broker} as {cn}: {source}")]
    Connection {
        broker: String,
        cn: String,
        source: Box<rumqttc::ConnectionError>,
    },
}

/// Why one message's payload could not be shown as JSON (printed as its line's `error`).
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error(transparent)]
    Command(#[from] common::codec::CodecError),
    #[error(transparent)]
    Record(#[from] crate::republish::item::RecordJsonError),
    #[error(transparent)]
    RecordJson(serde_json::Error),
    #[error("not JSON: {0}")]
    NotJson(serde_json::Error),
}

/// Who subscribes: a name in a certificate directory, or explicit files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// `fleet-server` (or `server`), `reader-NAME`, or a device id, from `certs`.
    Named { certs: PathBuf, name: String },
    /// Explicit PEM files; `cn` is what the client id starts with.
    Files { identity: ClientIdentity, cn: String },
}

impl Who {
    /// The TLS identity and the certificate's CN.
    pub fn resolve(&self) -> Result<(ClientIdentity, String), SubError> {
        match self {
            Who::Named { certs, name } => {
                let dir = CertDir::new(certs);
                let (identity, cn) = if name == "server" || name == common::ids::SERVER_IDENTITY {
                    (dir.server_identity(), common::ids::SERVER_IDENTITY.to_string())
                } else if let Some(reader) = name.strip_prefix(common::ids::READER_PREFIX) {
                    (dir.reader_identity(reader), name.clone())
                } else {
                    let id = common::DeviceId::new(name.as_str()).map_err(|source| SubError::BadName {
                        name: name.clone(),
                        source,
                    })?;
                    (dir.device_identity(&id), name.clone())
                };
                for f in [&identity.ca, &identity.cert, &identity.key] {
                    if !f.exists() {
                        return Err(SubError::Missing {
                            name: name.clone(),
                            path: f.clone(),
                        });
                    }
                }
                Ok((identity, cn))
            }
            Who::Files { identity, cn } => Ok((identity.clone(), cn.clone())),
        }
    }
}

/// What to subscribe to and where.
#[derive(Debug, Clone)]
pub struct SubOptions {
    pub filter: String,
    pub who: Who,
    /// `host:port` of the broker.
    pub broker: String,
    /// Stop after this many messages.
    pub count: Option<u64>,
    /// Print the payload alone rather than `{topic, retain, payload}`.
    pub payload_only: bool,
}

/// The JSON of one message's payload: decoded for `rvm/v1/...`, as is for `fleet/v1/...`.
pub fn payload_json(topic: &str, payload: &[u8]) -> Result<Value, PayloadError> {
    match Topic::parse(topic) {
        Ok(Topic::Device { kind: Kind::Cmd, .. }) => {
            let signed: SignedCommand = common::codec::decode_bare(payload)?;
            let command: Command = common::codec::decode_bare(&signed.payload)?;
            let signature: String = signed.signature.iter().map(|b| format!("{b:02x}")).collect();
            Ok(json!({ "command": command, "signature": signature }))
        }
        Ok(Topic::Device { .. }) => {
            let bytes = crate::republish::item::record_json(topic, payload)?;
            serde_json::from_slice(&bytes).map_err(PayloadError::RecordJson)
        }
        _ => serde_json::from_slice(payload).map_err(PayloadError::NotJson),
    }
}

/// One output line (without the newline).
pub fn render_line(topic: &str, payload: &[u8], retain: bool, payload_only: bool) -> String {
    match (payload_json(topic, payload), payload_only) {
        (Ok(p), true) => p.to_string(),
        (Ok(p), false) => json!({ "topic": topic, "retain": retain, "payload": p }).to_string(),
        (Err(e), _) => json!({ "topic": topic, "retain": retain, "error": e.to_string() }).to_string(),
    }
}

/// Connects, subscribes and hands every line to `out` until `count` messages arrived (or
/// forever). Any connection error or a refused subscription ends it with an error.
pub async fn run(opts: &SubOptions, mut out: impl FnMut(&str)) -> Result<u64, SubError> {
    let (identity, cn) = opts.who.resolve()?;
    let tls = common::tls::client_config(&identity)?;
    let (host, port) = common::addr::split_host_port(&opts.broker)
        .ok_or_else(|| SubError::BadBroker(opts.broker.clone()))?;
    // `CN:suffix` is a client id the embedded broker accepts for this certificate; Mosquitto's
    // device listener replaces it with the CN anyway.
    let client_id = format!("{cn}:sub-{}", common::ids::random_hex(4));
    let mut o = MqttOptions::new(client_id, host, port);
    o.set_keep_alive(KEEP_ALIVE);
    o.set_clean_session(true);
    let max = common::codec::MAX_PAYLOAD * 4;
    o.set_max_packet_size(max, max);
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    let (client, mut el) = AsyncClient::new(o, 64);
    crate::mqtt_no_delay(&mut el);
    client.subscribe(opts.filter.clone(), QoS::AtLeastOnce).await?;
    let mut n = 0;
    loop {
        match el.poll().await {
            Ok(Event::Incoming(Incoming::SubAck(a))) => {
                if a.return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                {
                    return Err(SubError::Refused {
                        cn,
                        filter: opts.filter.clone(),
                    });
                }
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                out(&render_line(&p.topic, &p.payload, p.retain, opts.payload_only));
                n += 1;
                if opts.count.is_some_and(|c| n >= c) {
                    let _ = client.try_disconnect();
                    return Ok(n);
                }
            }
            Ok(_) => {}
            Err(source) => {
                return Err(SubError::Connection {
                    broker: opts.broker.clone(),
                    cn,
                    source: Box::new(source),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use common::{DeviceId, Envelope, Telemetry};

    use super::*;

    #[test]
    fn fleet_json_is_printed_as_it_is_and_records_are_decoded() {
        let line = render_line("fleet/v1/alerts", br#"{"kind":"firing"}"#, false, false);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["payload"]["kind"], "firing");
        assert_eq!(v["topic"], "fleet/v1/alerts");

        let mut t = Telemetry::default();
        t.memory.total_bytes = 9;
        let env = Envelope::new(DeviceId::new("rvm1").unwrap(), 4, 5, t);
        let bytes = common::codec::encode(&env).unwrap();
        let line = render_line("rvm/v1/rvm1/telemetry", &bytes, false, true);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["body"]["memory"]["total_bytes"], 9);
        assert_eq!(v["seq"], 4);

        let bad = render_line("rvm/v1/rvm1/telemetry", b"\x01\x02", true, false);
        let v: Value = serde_json::from_str(&bad).unwrap();
        assert!(v["error"].is_string() && v["retain"] == true, "{v}");
    }

    #[test]
    fn a_signed_command_shows_its_content() {
        let der = common::command::CommandSigner::generate_pkcs8().unwrap();
        let signer = common::command::CommandSigner::from_pkcs8(&der).unwrap();
        let cmd = Command {
            id: "c1".into(),
            device: DeviceId::new("rvm1").unwrap(),
            action: common::command::Action::DropCaches,
            issued_ms: 1,
            expires_ms: 2,
            issued_by: "ops".into(),
            reason: "test".into(),
        };
        let signed = signer.sign(&cmd).unwrap();
        let bytes = common::codec::encode(&signed).unwrap();
        let v = payload_json("rvm/v1/rvm1/cmd", &bytes).unwrap();
        assert_eq!(v["command"]["action"], "drop_caches");
        assert_eq!(v["signature"].as_str().unwrap().len(), 128);
    }

    #[test]
    fn names_resolve_to_their_certificates() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = CertDir::new(tmp.path());
        common::pki::init(&dir, &["localhost".into()], false).unwrap();
        let who = |n: &str| Who::Named {
            certs: tmp.path().into(),
            name: n.into(),
        };
        assert_eq!(who("server").resolve().unwrap().1, "fleet-server");
        let e = who("reader-graf").resolve().unwrap_err().to_string();
        assert!(e.contains("reader-graf.pem"), "{e}");
        let e = who("bad/name").resolve().unwrap_err().to_string();
        assert!(e.contains("bad/name"), "{e}");
    }
}
