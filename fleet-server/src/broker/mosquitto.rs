//! Mosquitto as the fleet's broker in production (the Debian `mosquitto` package, 2.0): what
//! `fleetctl broker-config` writes. [`render_conf`] is pure; [`write_config`] does the IO.
//!
//! Two TLS listeners, both requiring a client certificate of the fleet CA and taking the MQTT
//! username from its CN (`use_identity_as_username`), one ACL for both
//! ([`crate::broker::policy::mosquitto_acl`]):
//! - the device listener (`--listen`, default `0.0.0.0:8883`) for devices and readers, with
//!   `use_username_as_clientid`: every client's id is its CN, so no certificate can take over
//!   another client's session. Without it a device connecting with the client id
//!   `fleet-server:ingest` disconnects the server and takes over its persistent session (seen
//!   on Mosquitto 2.0.11), and the records queued for the server are lost;
//! - the server listener (`--server-listen`, default `127.0.0.1:8884`) for the fleet server's
//!   own sessions, which need distinct client ids (`fleet-server:ingest`, `:republish`,
//!   `:commands`). Any certificate could use any client id there, so keep it out of the
//!   devices' reach: loopback (the server runs on the broker's host) or a private interface.
//!
//! What Mosquitto does differently from the embedded broker, and what the tests check
//! (`tests/tests/mosquitto.rs`): a denied QoS 1 publish is acknowledged and dropped (MQTT 5
//! clients see reason code 135), a subscription outside the ACL is granted and filtered at
//! delivery, a last will on a foreign topic is accepted at connect and dropped when due.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use common::codec::MAX_PAYLOAD;
use common::ids::READER_PREFIX;
use common::pki::CertDir;

use super::policy::AclError;

/// QoS 1 messages Mosquitto queues per client beyond those in flight (see [`render_conf`]).
pub const MAX_QUEUED_MESSAGES: u64 = 1_000_000;
/// QoS 1 messages sent to one client and not yet acknowledged.
pub const MAX_INFLIGHT_MESSAGES: u32 = 1_000;
/// Seconds between saves of Mosquitto's in-memory database.
pub const AUTOSAVE_INTERVAL_S: u32 = 30;
/// Largest MQTT packet accepted: the codec's payload limit and room for topic and header
/// (what the server's own clients accept).
pub const MAX_PACKET: usize = MAX_PAYLOAD + 4096;
/// A persistent session unused this long is removed with its queue.
pub const PERSISTENT_CLIENT_EXPIRATION: &str = "7d";

pub const DEFAULT_LISTEN: &str = "0.0.0.0:8883";
pub const DEFAULT_SERVER_LISTEN: &str = "127.0.0.1:8884";
pub const DEFAULT_PERSISTENCE_DIR: &str = "/var/lib/mosquitto";

/// File names written into the output directory.
pub const CONF_FILE: &str = "mosquitto.conf";
pub const ACL_FILE: &str = "acl";

/// Everything `mosquitto.conf` names. Paths are as the broker will see them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MosquittoSetup {
    /// Devices and readers.
    pub listen: SocketAddr,
    /// The fleet server's own sessions.
    pub server_listen: SocketAddr,
    pub ca: PathBuf,
    /// The server certificate doubles as the broker's.
    pub cert: PathBuf,
    pub key: PathBuf,
    pub acl_file: PathBuf,
    pub persistence_dir: PathBuf,
    /// `user`: the account Mosquitto switches to when started as root; None: Mosquitto's own
    /// default (`mosquitto`).
    pub run_as: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerConfigError {
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("no {what} at {path} (run `fleetctl certs init --dir {dir}` first, or pass --broker-certs)")]
    Missing {
        what: &'static str,
        path: PathBuf,
        dir: PathBuf,
    },
    #[error(
        "--listen {listen} and --server-listen {server_listen} overlap: the server listener needs its own port"
    )]
    Overlap {
        listen: SocketAddr,
        server_listen: SocketAddr,
    },
    #[error(transparent)]
    Acl(#[from] AclError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BrokerConfigError + '_ {
    move |error| BrokerConfigError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// `listener PORT ADDRESS`, Mosquitto's order (IPv6 without brackets).
fn listener_line(addr: &SocketAddr) -> String {
    format!("listener {} {}", addr.port(), addr.ip())
}

fn tls_block(s: &MosquittoSetup) -> String {
    format!(
        "cafile {ca}\n\
         certfile {cert}\n\
         keyfile {key}\n\
         require_certificate true\n\
         use_identity_as_username true\n\
         tls_version tlsv1.2\n",
        ca = s.ca.display(),
        cert = s.cert.display(),
        key = s.key.display(),
    )
}

/// The text of `mosquitto.conf`: every choice explained where it is made.
pub fn render_conf(s: &MosquittoSetup) -> String {
    let user = match &s.run_as {
        Some(u) => format!(
            "# The account Mosquitto switches to when started as root; it must be able to read the\n\
             # key file and write the persistence directory.\n\
             user {u}\n\n"
        ),
        None => String::new(),
    };
    let persistence = format!(
        "{}/",
        s.persistence_dir.display().to_string().trim_end_matches('/')
    );
    format!(
        "# RVM Fleet: Mosquitto 2.0 configuration, generated by `fleetctl broker-config`\n\
         # (fleet-server/src/broker/mosquitto.rs); see config/mosquitto/README.md. Install it as\n\
         # /etc/mosquitto/mosquitto.conf (it replaces the Debian default, whose persistence and\n\
         # logging lines would clash). `systemctl restart mosquitto` after a change here,\n\
         # `systemctl reload mosquitto` (SIGHUP) after a new ACL. Private keys never go into git.\n\
         \n\
         {user}\
         # --- who may connect ---------------------------------------------------------------\n\
         # No anonymous clients: every client presents a certificate of the fleet CA (listeners\n\
         # below), its CN is its username, and the ACL decides what each username may do.\n\
         per_listener_settings false\n\
         allow_anonymous false\n\
         acl_file {acl}\n\
         \n\
         # --- durability --------------------------------------------------------------------\n\
         # An agent deletes a record once the broker acknowledged it (PUBACK). From then on the\n\
         # queue of the server's persistent session is the only copy until the server stored it.\n\
         # persistence: sessions, subscriptions, queued and retained messages survive a restart.\n\
         persistence true\n\
         persistence_location {persistence}\n\
         # autosave_interval: seconds between saves of the in-memory database. A clean stop\n\
         # (SIGTERM: systemctl stop or restart) saves everything; a crash or a power loss of the\n\
         # broker host loses what arrived since the last save. Each save writes the whole\n\
         # database, so while a large backlog is queued a shorter interval costs disk writes.\n\
         autosave_interval {AUTOSAVE_INTERVAL_S}\n\
         autosave_on_changes false\n\
         # persistent_client_expiration: a persistent session unused this long is removed with its\n\
         # queue, so a reader that subscribed with a persistent session and went away for good does\n\
         # not grow forever. The server's own session expires too if the server stays away so long.\n\
         persistent_client_expiration {PERSISTENT_CLIENT_EXPIRATION}\n\
         \n\
         # --- queues ------------------------------------------------------------------------\n\
         # max_queued_messages: QoS 1 messages held per client beyond those in flight. Past it\n\
         # Mosquitto drops silently, and its default (1000) is reached by the server's session in\n\
         # any restart of the server. Size it for the longest server outage: machines x records per\n\
         # second x seconds (1,000 machines, one record every 5 s, 1 hour: 720,000); at about\n\
         # 1.5 KB a record the limit also bounds the broker's memory per client. 0 (no limit)\n\
         # would let one stuck persistent client exhaust the broker's memory.\n\
         max_queued_messages {MAX_QUEUED_MESSAGES}\n\
         # max_inflight_messages: QoS 1 messages sent to one client and not yet acknowledged. The\n\
         # server acknowledges a record only once stored, a batch at a time; with the default (20)\n\
         # every store round trip would throttle ingest.\n\
         max_inflight_messages {MAX_INFLIGHT_MESSAGES}\n\
         # QoS 0 messages are not queued for absent clients (the default, stated).\n\
         queue_qos0_messages false\n\
         # max_packet_size: the largest MQTT packet accepted, the wire codec's payload limit plus\n\
         # room for the topic: the server's client refuses anything larger, and without this a\n\
         # larger publish would reach it, break its connection, come again, and so on. A client\n\
         # that sends a larger packet is disconnected without an acknowledgement.\n\
         max_packet_size {MAX_PACKET}\n\
         # Acknowledgements go out at once rather than waiting for Nagle's algorithm.\n\
         set_tcp_nodelay true\n\
         \n\
         # --- logging (systemd's journal takes stderr) --------------------------------------\n\
         log_dest stderr\n\
         log_type error\n\
         log_type warning\n\
         log_type notice\n\
         log_type information\n\
         connection_messages true\n\
         log_timestamp_format %Y-%m-%dT%H:%M:%S\n\
         \n\
         # --- listeners: TLS 1.2 or newer, client certificate of the fleet CA required ------\n\
         # Devices and readers. use_username_as_clientid: the client id becomes the certificate\n\
         # CN, so no certificate can take over (and disconnect) another client's session.\n\
         {listen}\n\
         {tls}\
         use_username_as_clientid true\n\
         \n\
         # The fleet server's own sessions (client ids fleet-server:ingest, :republish, :commands).\n\
         # Client ids are not tied to certificates here: keep this listener out of the devices'\n\
         # reach (loopback, the server on the broker's host; or a private interface).\n\
         {server_listen}\n\
         {tls}",
        acl = s.acl_file.display(),
        listen = listener_line(&s.listen),
        server_listen = listener_line(&s.server_listen),
        tls = tls_block(s),
    )
}

/// Reader names (`NAME` of `clients/reader-NAME.pem`) in a certificate directory, sorted.
pub fn find_readers(certs: &CertDir) -> Result<Vec<String>, BrokerConfigError> {
    let dir = certs.root().join("clients");
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
        let entry = entry.map_err(io(&dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(reader) = name
            .strip_prefix(READER_PREFIX)
            .and_then(|r| r.strip_suffix(".pem"))
            && common::ids::validate_device_id(reader).is_ok()
        {
            out.push(reader.to_string());
        }
    }
    out.sort();
    Ok(out)
}

/// What `fleetctl broker-config` was asked for.
#[derive(Debug, Clone)]
pub struct BrokerConfigRequest {
    /// Where `mosquitto.conf` and `acl` are written.
    pub out: PathBuf,
    /// The certificate directory: reader certificates are listed from its `clients/`.
    pub certs: PathBuf,
    pub listen: SocketAddr,
    pub server_listen: SocketAddr,
    /// Where the broker reads `ca.pem`, `server.pem`, `server.key`; None: `certs`.
    pub broker_certs: Option<PathBuf>,
    /// Where `acl` will be on the broker host; None: `out`.
    pub conf_dir: Option<PathBuf>,
    pub persistence_dir: PathBuf,
    pub run_as: Option<String>,
}

/// What [`write_config`] wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub conf: PathBuf,
    pub acl: PathBuf,
    pub readers: Vec<String>,
    pub setup: MosquittoSetup,
}

fn absolute(p: &Path) -> Result<PathBuf, BrokerConfigError> {
    std::path::absolute(p).map_err(io(p))
}

/// Writes `mosquitto.conf` and `acl` into `req.out` (replacing them: rerun after issuing a
/// reader certificate). Relative paths are made absolute: Mosquitto resolves them against its
/// own working directory.
pub fn write_config(req: &BrokerConfigRequest) -> Result<Written, BrokerConfigError> {
    if req.listen.port() == req.server_listen.port()
        && (req.listen.ip() == req.server_listen.ip()
            || req.listen.ip().is_unspecified()
            || req.server_listen.ip().is_unspecified())
    {
        return Err(BrokerConfigError::Overlap {
            listen: req.listen,
            server_listen: req.server_listen,
        });
    }
    let certs = CertDir::new(absolute(&req.certs)?);
    let broker_certs = match &req.broker_certs {
        Some(dir) => CertDir::new(absolute(dir)?),
        None => {
            for (what, path) in [
                ("fleet CA certificate", certs.ca_cert()),
                ("server certificate", certs.server_cert()),
                ("server key", certs.server_key()),
            ] {
                if !path.exists() {
                    return Err(BrokerConfigError::Missing {
                        what,
                        path,
                        dir: certs.root().to_path_buf(),
                    });
                }
            }
            certs.clone()
        }
    };
    let out = absolute(&req.out)?;
    let conf_dir = match &req.conf_dir {
        Some(d) => absolute(d)?,
        None => out.clone(),
    };
    let readers = find_readers(&certs)?;
    let acl_text = super::policy::mosquitto_acl(&readers)?;
    let setup = MosquittoSetup {
        listen: req.listen,
        server_listen: req.server_listen,
        ca: broker_certs.ca_cert(),
        cert: broker_certs.server_cert(),
        key: broker_certs.server_key(),
        acl_file: conf_dir.join(ACL_FILE),
        persistence_dir: absolute(&req.persistence_dir)?,
        run_as: req.run_as.clone(),
    };
    std::fs::create_dir_all(&out).map_err(io(&out))?;
    let conf = out.join(CONF_FILE);
    let acl = out.join(ACL_FILE);
    std::fs::write(&acl, acl_text).map_err(io(&acl))?;
    std::fs::write(&conf, render_conf(&setup)).map_err(io(&conf))?;
    Ok(Written {
        conf,
        acl,
        readers,
        setup,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parameters `config/mosquitto/` was generated with (see its README).
    fn build_example_setup() -> MosquittoSetup {
        MosquittoSetup {
            listen: DEFAULT_LISTEN.parse().unwrap(),
            server_listen: DEFAULT_SERVER_LISTEN.parse().unwrap(),
            ca: "/etc/mosquitto/rvm-fleet/certs/ca.pem".into(),
            cert: "/etc/mosquitto/rvm-fleet/certs/server.pem".into(),
            key: "/etc/mosquitto/rvm-fleet/certs/server.key".into(),
            acl_file: "/etc/mosquitto/rvm-fleet/acl".into(),
            persistence_dir: DEFAULT_PERSISTENCE_DIR.into(),
            run_as: None,
        }
    }

    #[test]
    fn the_conf_has_every_setting_the_fleet_depends_on() {
        let c = render_conf(&build_example_setup());
        for line in [
            "allow_anonymous false",
            "acl_file /etc/mosquitto/rvm-fleet/acl",
            "persistence true",
            "persistence_location /var/lib/mosquitto/",
            "autosave_interval 30",
            "max_queued_messages 1000000",
            "max_inflight_messages 1000",
            "max_packet_size 266240",
            "listener 8883 0.0.0.0",
            "listener 8884 127.0.0.1",
            "require_certificate true",
            "use_identity_as_username true",
            "use_username_as_clientid true",
            "tls_version tlsv1.2",
            "cafile /etc/mosquitto/rvm-fleet/certs/ca.pem",
            "certfile /etc/mosquitto/rvm-fleet/certs/server.pem",
            "keyfile /etc/mosquitto/rvm-fleet/certs/server.key",
        ] {
            assert!(c.lines().any(|l| l == line), "{line:?} missing in\n{c}");
        }
        // both listeners require certificates; only the device listener ties client ids
        assert_eq!(c.matches("require_certificate true").count(), 2);
        assert_eq!(c.matches("\nuse_username_as_clientid true").count(), 1);
        let devices = c.find("listener 8883").unwrap();
        let server = c.find("listener 8884").unwrap();
        let tie = c.find("\nuse_username_as_clientid true").unwrap();
        assert!(devices < tie && tie < server, "{c}");
        assert!(!c.contains("\nuser "), "no user line unless asked");
        let mut s = build_example_setup();
        s.run_as = Some("root".into());
        s.listen = "[::]:18883".parse().unwrap();
        let c = render_conf(&s);
        assert!(
            c.contains("\nuser root\n") && c.contains("\nlistener 18883 ::\n"),
            "{c}"
        );
    }

    #[test]
    fn the_checked_in_example_is_what_the_command_writes() {
        let conf = include_str!("../../../config/mosquitto/mosquitto.conf");
        assert_eq!(conf, render_conf(&build_example_setup()));
        let acl = include_str!("../../../config/mosquitto/acl");
        assert_eq!(
            acl,
            crate::broker::policy::mosquitto_acl(&["grafana".into()]).unwrap()
        );
    }

    #[test]
    fn readers_are_found_from_their_certificate_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = CertDir::new(tmp.path());
        assert!(find_readers(&dir).unwrap().is_empty());
        let clients = tmp.path().join("clients");
        std::fs::create_dir_all(&clients).unwrap();
        for f in [
            "reader-zed.pem",
            "reader-zed.key",
            "reader-abc.pem",
            "reader-bad-name.pem",
            "notareader.pem",
        ] {
            std::fs::write(clients.join(f), "x").unwrap();
        }
        assert_eq!(find_readers(&dir).unwrap(), ["abc", "zed"]);
    }

    #[test]
    fn write_config_lists_readers_and_refuses_missing_certificates() {
        let tmp = tempfile::tempdir().unwrap();
        let certs = tmp.path().join("certs");
        let req = BrokerConfigRequest {
            out: tmp.path().join("out"),
            certs: certs.clone(),
            listen: "127.0.0.1:18883".parse().unwrap(),
            server_listen: "127.0.0.1:18884".parse().unwrap(),
            broker_certs: None,
            conf_dir: None,
            persistence_dir: tmp.path().join("persist"),
            run_as: None,
        };
        let e = write_config(&req).unwrap_err().to_string();
        assert!(e.contains("ca.pem") && e.contains("fleetctl certs init"), "{e}");
        let dir = CertDir::new(&certs);
        common::pki::init(&dir, &["localhost".into()], false).unwrap();
        common::pki::Ca::load(&dir)
            .unwrap()
            .issue_reader(&dir, "graf", common::pki::Validity::days_from_now(1), false)
            .unwrap();
        let w = write_config(&req).unwrap();
        assert_eq!(w.readers, ["graf"]);
        let acl = std::fs::read_to_string(&w.acl).unwrap();
        assert!(acl.contains("user reader-graf\n"), "{acl}");
        let conf = std::fs::read_to_string(&w.conf).unwrap();
        assert!(conf.contains(&format!("acl_file {}", w.acl.display())), "{conf}");
        assert!(
            conf.contains(&format!("keyfile {}", dir.server_key().display())),
            "{conf}"
        );

        let mut overlap = req.clone();
        overlap.server_listen = "0.0.0.0:18883".parse().unwrap();
        let e = write_config(&overlap).unwrap_err().to_string();
        assert!(e.contains("--server-listen"), "{e}");
    }
}
