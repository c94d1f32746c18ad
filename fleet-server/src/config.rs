//! `fleet-server.toml`: format, defaults, validation naming every bad key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::alerts::rules::{RuleSet, parse_rules};
use crate::cluster::{ClusterConfig, ClusterSection};
use crate::commands::config::{CommandsConfig, CommandsSection};
use crate::history::minute::{DAY_MS, HOUR_MS};
use crate::history::rollup::HistoryPolicy;
use crate::notify::config::{NotifyConfig, NotifySection};
use crate::pg::config::{Backend, StorageBackend, StorageBackendFile};
use crate::supervise::restart::RestartPolicy;

/// The rules used when `[alerts] rules` is not set: the shipped `config/rules.toml`.
pub const BUILTIN_RULES: &str = include_str!("../../config/rules.toml");

/// Longest duration accepted by a `*_s` setting (a year).
pub const MAX_DURATION_S: u64 = 365 * 24 * 3600;

/// Shortest `[http] metrics_token` accepted.
pub const MIN_METRICS_TOKEN_LEN: usize = 16;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    #[serde(default)]
    pub http: HttpSection,
    #[serde(default)]
    pub mqtt: MqttSection,
    #[serde(default)]
    pub certs: CertsSection,
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub presence: PresenceSection,
    #[serde(default)]
    pub alerts: AlertsSection,
    #[serde(default)]
    pub notify: NotifySection,
    #[serde(default)]
    pub republish: RepublishSection,
    /// Restart intensity of the server's own actors and threads ([`crate::supervise`]).
    #[serde(default)]
    pub supervisor: RestartPolicy,
    /// This instance among several on one PostgreSQL store ([`crate::cluster`]).
    #[serde(default)]
    pub cluster: ClusterSection,
    /// Remote commands: which need a second operator's approval ([`crate::commands::config`]).
    #[serde(default)]
    pub commands: CommandsSection,
}

/// `[republish]`: decoded JSON of every record, alert transition and incident change on
/// `fleet/v1/...` for third-party subscribers (`docs/topics.md`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepublishSection {
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for RepublishSection {
    fn default() -> Self {
        Self { enabled: true }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsSection {
    /// The rules file; absent: the rules built into the server (the shipped `rules.toml`).
    #[serde(default)]
    pub rules: Option<PathBuf>,
    /// How long an offline alert's notification waits for a site incident to speak for it;
    /// absent: the rules file's `correlate.site_outage.window_s`.
    #[serde(default)]
    pub hold_offline_s: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    #[serde(default = "default_http")]
    pub listen: String,
    /// When set, `GET /metrics` needs `Authorization: Bearer <metrics_token>`; else it is open.
    #[serde(default)]
    pub metrics_token: Option<String>,
    /// PEM certificate chain: with `tls_key`, serve HTTPS (rustls) instead of HTTP.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: default_http(),
            metrics_token: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// HTTPS for the API and the web view: a certificate chain and its key, both PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    /// Run the embedded broker (default) or connect to an external one.
    #[serde(default = "yes")]
    pub embedded: bool,
    /// Where the embedded broker listens.
    #[serde(default = "default_mqtt")]
    pub listen: String,
    /// Where the server's own MQTT client connects: `host:port`. Defaults to `listen`.
    #[serde(default)]
    pub connect: Option<String>,
}

impl Default for MqttSection {
    fn default() -> Self {
        Self {
            embedded: true,
            listen: default_mqtt(),
            connect: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertsSection {
    /// Directory made by `fleetctl certs init`.
    #[serde(default = "default_certs")]
    pub dir: PathBuf,
}

impl Default for CertsSection {
    fn default() -> Self {
        Self { dir: default_certs() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// `sled` (the embedded store in `data_dir`) or `postgres` (at `url`; docs/postgres.md).
    #[serde(default)]
    pub backend: Backend,
    /// PostgreSQL: `postgres://user@host:5432/dbname` (libpq's URL or key=value form).
    #[serde(default)]
    pub url: Option<String>,
    /// PostgreSQL: a file holding the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PostgreSQL: an environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// PostgreSQL: connections of this instance (default 16).
    #[serde(default)]
    pub pool_size: Option<usize>,
    #[serde(default = "default_data")]
    pub data_dir: PathBuf,
    /// Raw metric rows (one per record) are kept this long.
    #[serde(default = "default_raw_hours")]
    pub history_raw_hours: u64,
    /// 1-minute rollups are kept this long.
    #[serde(default = "default_rollup_days")]
    pub history_rollup_days: u64,
    /// sled's page cache (MiB): history reads served from memory, and most of the server's
    /// memory after a few minutes of traffic.
    #[serde(default = "default_cache_mib")]
    pub cache_mib: u64,
}

impl Default for StorageSection {
    fn default() -> Self {
        Self {
            backend: Backend::default(),
            url: None,
            password_file: None,
            password_env: None,
            pool_size: None,
            data_dir: default_data(),
            history_raw_hours: default_raw_hours(),
            history_rollup_days: default_rollup_days(),
            cache_mib: default_cache_mib(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceSection {
    #[serde(default = "default_stale")]
    pub stale_after_s: u64,
    #[serde(default = "default_offline")]
    pub offline_after_s: u64,
}

impl Default for PresenceSection {
    fn default() -> Self {
        Self {
            stale_after_s: default_stale(),
            offline_after_s: default_offline(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_http() -> String {
    "127.0.0.1:8080".into()
}
fn default_mqtt() -> String {
    "127.0.0.1:8883".into()
}
fn default_certs() -> PathBuf {
    PathBuf::from("certs")
}
fn default_data() -> PathBuf {
    PathBuf::from("data")
}
fn default_raw_hours() -> u64 {
    24
}
fn default_rollup_days() -> u64 {
    30
}
fn default_cache_mib() -> u64 {
    crate::store::STORE_CACHE_BYTES >> 20
}
fn default_stale() -> u64 {
    15
}
fn default_offline() -> u64 {
    60
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {}", problems.join("; "))]
    Invalid { path: PathBuf, problems: Vec<String> },
    #[error("alerts.rules: cannot read {path}: {error}")]
    RulesRead { path: PathBuf, error: std::io::Error },
    #[error("alerts.rules: {path}: {message}")]
    Rules { path: PathBuf, message: String },
}

/// Where the alert rules come from.
#[derive(Debug, Clone, PartialEq)]
pub enum RulesSource {
    /// The shipped `config/rules.toml`, compiled in.
    Builtin,
    File(PathBuf),
    /// Rules already parsed (boxed: a rule set is large beside a path).
    Parsed(Box<RuleSet>),
}

impl RulesSource {
    /// Reads and validates the rules; errors name `alerts.rules`, the file and the bad key.
    pub fn load(&self) -> Result<RuleSet, ConfigError> {
        match self {
            RulesSource::Builtin => parse_rules(BUILTIN_RULES).map_err(|e| ConfigError::Rules {
                path: PathBuf::from("(built-in rules)"),
                message: e.to_string(),
            }),
            RulesSource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|error| ConfigError::RulesRead {
                    path: path.clone(),
                    error,
                })?;
                parse_rules(&text).map_err(|e| ConfigError::Rules {
                    path: path.clone(),
                    message: e.to_string(),
                })
            }
            RulesSource::Parsed(set) => Ok((**set).clone()),
        }
    }
}

/// Alert rules and notifications.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertingConfig {
    pub rules: RulesSource,
    pub notify: NotifyConfig,
    /// See `[alerts] hold_offline_s`.
    pub hold_offline_ms: Option<i64>,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        AlertingConfig {
            rules: RulesSource::Builtin,
            notify: NotifyConfig::default(),
            hold_offline_ms: None,
        }
    }
}

/// The validated runtime configuration.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub http: SocketAddr,
    pub embedded_broker: Option<SocketAddr>,
    /// host and port the server's MQTT client connects to.
    pub mqtt_host: String,
    pub mqtt_port: u16,
    pub certs: PathBuf,
    /// Which store, and how to reach it (`[storage] backend`, `url`, ...).
    pub storage: StorageBackend,
    /// sled's directory (the store, the ingest journal, tokens and the audit log), and where
    /// `fleet-server demo` keeps its files.
    pub data_dir: PathBuf,
    /// sled page cache of the fleet store, bytes.
    pub store_cache_bytes: u64,
    pub stale_after_ms: i64,
    pub offline_after_ms: i64,
    /// Rules and notifications; None: the built-in rules, notifications to the log.
    pub alerting: Option<AlertingConfig>,
    /// How long metric history is kept.
    pub history: HistoryPolicy,
    /// `[http] metrics_token`: the bearer token `/metrics` needs; None: `/metrics` is open.
    pub metrics_token: Option<String>,
    /// Serve HTTPS with this certificate; None: plain HTTP.
    pub http_tls: Option<HttpTls>,
    /// `[republish] enabled`: JSON on `fleet/v1/...` for third-party subscribers.
    pub republish: bool,
    /// `[supervisor]`: restart intensity, backoff, heartbeat of the server's children.
    pub supervisor: RestartPolicy,
    /// `[cluster]`: this instance's id, heartbeat and lease.
    pub cluster: ClusterConfig,
    /// `[commands]`: actions that wait for approval.
    pub commands: CommandsConfig,
}

impl ServerFile {
    pub fn load(path: &Path) -> Result<ServerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        let file: ServerFile = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let cfg = file.validate().map_err(|problems| ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        })?;
        // The rules file is part of the configuration: a bad one fails the start.
        if let Some(a) = &cfg.alerting {
            a.rules.load()?;
        }
        Ok(cfg)
    }

    /// Every problem with its key path, or the runtime config.
    pub fn validate(&self) -> Result<ServerConfig, Vec<String>> {
        let mut p = Vec::new();
        let http = self.http.listen.parse::<SocketAddr>().map_err(|_| {
            p.push(format!(
                "http.listen: {:?} is not an address like 127.0.0.1:8080",
                self.http.listen
            ))
        });
        let http_tls = match (&self.http.tls_cert, &self.http.tls_key) {
            (Some(cert), Some(key)) => Some(HttpTls {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => None,
            (Some(_), None) => {
                p.push("http.tls_key: required with http.tls_cert".into());
                None
            }
            (None, Some(_)) => {
                p.push("http.tls_cert: required with http.tls_key".into());
                None
            }
        };
        if let Some(t) = &self.http.metrics_token
            && (t.len() < MIN_METRICS_TOKEN_LEN || !t.chars().all(|c| c.is_ascii_graphic()))
        {
            p.push(format!(
                "http.metrics_token: at least {MIN_METRICS_TOKEN_LEN} printable characters without spaces (leave it out for an open /metrics)"
            ));
        }
        let listen = self.mqtt.listen.parse::<SocketAddr>().map_err(|_| {
            p.push(format!(
                "mqtt.listen: {:?} is not an address like 127.0.0.1:8883",
                self.mqtt.listen
            ))
        });
        let connect = match (&self.mqtt.connect, self.mqtt.embedded) {
            (Some(c), _) => common::addr::split_host_port(c)
                .ok_or_else(|| p.push(format!("mqtt.connect: {c:?} is not host:port"))),
            (None, true) => listen.map(|a| (a.ip().to_string(), a.port())),
            (None, false) => {
                p.push("mqtt.connect: required when mqtt.embedded = false".into());
                Err(())
            }
        };
        if self.presence.stale_after_s == 0 || self.presence.offline_after_s <= self.presence.stale_after_s {
            p.push(format!(
                "presence: need 0 < stale_after_s ({}) < offline_after_s ({})",
                self.presence.stale_after_s, self.presence.offline_after_s
            ));
        }
        // (a bound, so the millisecond conversions below cannot overflow: tests/tests/fuzz.rs)
        for (key, v) in [
            ("presence.stale_after_s", Some(self.presence.stale_after_s)),
            ("presence.offline_after_s", Some(self.presence.offline_after_s)),
            ("alerts.hold_offline_s", self.alerts.hold_offline_s),
        ] {
            if let Some(v) = v.filter(|v| *v > MAX_DURATION_S) {
                p.push(format!("{key}: {v} is longer than {MAX_DURATION_S} s (a year)"));
            }
        }
        let notify = self.notify.validate("notify").map_err(|e| p.extend(e));
        if let Some(0) = self.alerts.hold_offline_s {
            p.push(
                "alerts.hold_offline_s: must be at least 1 (leave it out for the site outage window)".into(),
            );
        }
        let st = &self.storage;
        if st.history_raw_hours == 0 || st.history_raw_hours > 24 * 365 {
            p.push(format!(
                "storage.history_raw_hours: {} is not between 1 and 8760",
                st.history_raw_hours
            ));
        }
        if st.history_rollup_days == 0 || st.history_rollup_days > 3650 {
            p.push(format!(
                "storage.history_rollup_days: {} is not between 1 and 3650",
                st.history_rollup_days
            ));
        }
        let storage = StorageBackendFile {
            backend: st.backend,
            url: st.url.clone(),
            password_file: st.password_file.clone(),
            password_env: st.password_env.clone(),
            pool_size: st.pool_size,
        }
        .validate("storage")
        .map_err(|e| p.extend(e));
        if st.cache_mib == 0 || st.cache_mib > 64 * 1024 {
            p.push(format!(
                "storage.cache_mib: {} is not between 1 and 65536",
                st.cache_mib
            ));
        }
        p.extend(self.supervisor.validate("supervisor"));
        let cluster = self.cluster.validate("cluster").map_err(|e| p.extend(e));
        // (an error is in `p`, which the guard below checks)
        let commands = self.commands.validate("commands").map_err(|e| p.extend(e));
        match (http, listen, connect, notify, storage, cluster) {
            (Ok(http), Ok(listen), Ok((host, port)), Ok(notify), Ok(storage), Ok(cluster))
                if p.is_empty() =>
            {
                Ok(ServerConfig {
                    http,
                    embedded_broker: self.mqtt.embedded.then_some(listen),
                    mqtt_host: host,
                    mqtt_port: port,
                    certs: self.certs.dir.clone(),
                    storage,
                    data_dir: self.storage.data_dir.clone(),
                    store_cache_bytes: self.storage.cache_mib << 20,
                    stale_after_ms: self.presence.stale_after_s as i64 * 1000,
                    offline_after_ms: self.presence.offline_after_s as i64 * 1000,
                    alerting: Some(AlertingConfig {
                        rules: self
                            .alerts
                            .rules
                            .clone()
                            .map_or(RulesSource::Builtin, RulesSource::File),
                        notify,
                        hold_offline_ms: self.alerts.hold_offline_s.map(|s| s as i64 * 1000),
                    }),
                    history: HistoryPolicy {
                        raw_retention_ms: st.history_raw_hours as i64 * HOUR_MS,
                        rollup_retention_ms: st.history_rollup_days as i64 * DAY_MS,
                    },
                    metrics_token: self.http.metrics_token.clone(),
                    http_tls,
                    republish: self.republish.enabled,
                    supervisor: self.supervisor,
                    cluster,
                    commands: commands.unwrap_or_default(),
                })
            }
            _ => Err(p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_and_validates() {
        let f: ServerFile = toml::from_str(include_str!("../../config/fleet-server.toml")).unwrap();
        let c = f.validate().unwrap();
        assert!(c.embedded_broker.is_some());
        let a = c.alerting.unwrap();
        assert_eq!(a.rules, RulesSource::File("config/rules.toml".into()));
        assert!(a.notify.channels.contains_key("log"));
        assert_eq!(c.history, HistoryPolicy::default());
        assert_eq!(
            c.supervisor,
            RestartPolicy::default(),
            "the example lists the defaults"
        );
        let d = crate::cluster::ClusterSection::default();
        assert_eq!(
            (c.cluster.heartbeat_ms, c.cluster.lease_ms),
            (d.heartbeat_ms, d.lease_ms),
            "the example lists the [cluster] defaults"
        );
        // the example names the shipped rules file, which the server also builds in
        let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/rules.toml");
        assert_eq!(
            RulesSource::File(shipped).load().unwrap(),
            RulesSource::Builtin.load().unwrap()
        );
    }

    #[test]
    fn the_commented_postgres_example_of_the_example_config_validates() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("db.password");
        std::fs::write(&pw, "s3cret\n").unwrap();
        // the indented commented lines of [storage]
        let mut section = String::new();
        let text: String = include_str!("../../config/fleet-server.toml")
            .lines()
            .filter(|l| *l != "backend = \"sled\"")
            .map(|l| {
                if l.starts_with('[') {
                    section = l.to_string();
                }
                match l.strip_prefix("#   ") {
                    Some(rest) if section == "[storage]" => {
                        rest.replace("/etc/fleet-server/db.password", &pw.display().to_string())
                    }
                    _ => l.to_string(),
                }
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let c = toml::from_str::<ServerFile>(&text).unwrap().validate().unwrap();
        match c.storage {
            StorageBackend::Postgres(pg) => {
                assert_eq!(pg.target(), "postgres://fleet@db.example:5432/fleet");
                assert_eq!(pg.pool_size(), 16);
                assert_eq!(pg.driver_config().get_password(), Some(&b"s3cret"[..]));
            }
            StorageBackend::Sled => panic!("the example names PostgreSQL"),
        }
    }

    #[test]
    fn storage_problems_are_named_by_key() {
        let f: ServerFile = toml::from_str("[storage]\nbackend = \"postgres\"\n").unwrap();
        let p = f.validate().unwrap_err().join("\n");
        assert!(p.contains("storage.url"), "{p}");
        let f: ServerFile =
            toml::from_str("[storage]\nbackend = \"postgres\"\nurl = \"mysql://db/fleet\"\npool_size = 0\n")
                .unwrap();
        let p = f.validate().unwrap_err().join("\n");
        assert!(
            p.contains("storage.url") && p.contains("storage.pool_size"),
            "{p}"
        );
        let f: ServerFile = toml::from_str("[storage]\nurl = \"postgres://fleet@db/fleet\"\n").unwrap();
        let p = f.validate().unwrap_err().join("\n");
        assert!(p.contains("storage.url"), "a url with the sled backend: {p}");
        let e = toml::from_str::<ServerFile>("[storage]\nbackend = \"mysql\"\n").unwrap_err();
        assert!(e.to_string().contains("backend"), "{e}");
        let e = toml::from_str::<ServerFile>("[storage]\npassword = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("password"), "{e}");
    }

    #[test]
    fn the_commented_examples_of_the_example_config_validate_too() {
        const KEYS: &[&str] = &[
            "[",
            "name",
            "min_severity",
            "match",
            "channels",
            "per_minute",
            "burst",
            "type",
            "url",
            "timeout_s",
            "max_retry_s",
            "smtp",
            "from",
            "to",
            "subject_prefix",
            "hold_offline_s",
            "public_url",
            "format",
            "routing_key",
            "security",
            "username",
            "password_env",
            "account_sid",
            "auth_token_env",
            "sites",
            "tags",
            "time_zone",
            "days",
        ];
        let text: String = include_str!("../../config/fleet-server.toml")
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if KEYS.iter().any(|k| rest.starts_with(k)) && !rest.starts_with("connect") => {
                    rest
                }
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        // secrets are read when the config loads: name a variable every environment has
        let text = text
            .replace("RVM_SMTP_PASSWORD", "PATH")
            .replace("RVM_TWILIO_TOKEN", "PATH");
        let c = toml::from_str::<ServerFile>(&text).unwrap().validate().unwrap();
        let a = c.alerting.unwrap();
        assert_eq!(a.notify.routes.len(), 1);
        assert_eq!(
            a.notify.routes[0].channels,
            ["ops-hook", "pager", "ops-mail", "ops-sms"]
        );
        let kinds: Vec<&str> = a.notify.channels.values().map(|c| c.kind()).collect();
        assert_eq!(kinds, ["log", "webhook", "email", "sms", "webhook"]);
        assert_eq!(a.notify.public_url.as_deref(), Some("https://fleet.example.com"));
        assert_eq!(a.notify.maintenance.windows.len(), 1);
        assert_eq!(a.hold_offline_ms, Some(120_000));
    }

    #[test]
    fn a_bad_rules_file_fails_the_load_naming_alerts_rules_and_the_rule() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules.toml");
        std::fs::write(
            &rules,
            "[[rules]]\nname = \"x\"\nmetric = \"cpu.usage_pct\"\nop = \">\"\nthreshold = 80\nseverity = \"loud\"\n",
        )
        .unwrap();
        let cfg = dir.path().join("server.toml");
        std::fs::write(
            &cfg,
            format!("[alerts]\nrules = {:?}\n", rules.display().to_string()),
        )
        .unwrap();
        let e = ServerFile::load(&cfg).unwrap_err().to_string();
        assert!(e.contains("alerts.rules") && e.contains("rules[0]"), "{e}");
        std::fs::write(&cfg, "[alerts]\nrules = \"/nonexistent/rules.toml\"\n").unwrap();
        let e = ServerFile::load(&cfg).unwrap_err().to_string();
        assert!(
            e.contains("alerts.rules") && e.contains("/nonexistent/rules.toml"),
            "{e}"
        );
    }

    #[test]
    fn notify_and_history_problems_are_named_by_key() {
        let f: ServerFile = toml::from_str(
            "[storage]\nhistory_raw_hours = 0\ncache_mib = 0\n[alerts]\nhold_offline_s = 0\n[notify.default]\nchannels = [\"pager\"]\n",
        )
        .unwrap();
        let p = f.validate().unwrap_err().join("\n");
        for k in [
            "storage.history_raw_hours",
            "storage.cache_mib",
            "alerts.hold_offline_s",
            "notify.default.channels[0]",
        ] {
            assert!(p.contains(k), "{k} in {p}");
        }
        let e = toml::from_str::<ServerFile>("[notify]\nroute = []\n").unwrap_err();
        assert!(e.to_string().contains("route"), "{e}");
    }

    #[test]
    fn tls_needs_both_certificate_and_key() {
        let f: ServerFile = toml::from_str("[http]\ntls_cert = \"c.pem\"\n").unwrap();
        let p = f.validate().unwrap_err().join("\n");
        assert!(p.contains("http.tls_key"), "{p}");
        let f: ServerFile = toml::from_str("[http]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n").unwrap();
        assert_eq!(
            f.validate().unwrap().http_tls,
            Some(HttpTls {
                cert: "c.pem".into(),
                key: "k.pem".into()
            })
        );
    }

    #[test]
    fn a_short_metrics_token_is_named_and_a_good_one_is_kept() {
        let f: ServerFile = toml::from_str("[http]\nmetrics_token = \"short\"\n").unwrap();
        let p = f.validate().unwrap_err().join("\n");
        assert!(p.contains("http.metrics_token"), "{p}");
        let f: ServerFile = toml::from_str("[http]\nmetrics_token = \"0123456789abcdef0123\"\n").unwrap();
        assert_eq!(
            f.validate().unwrap().metrics_token.as_deref(),
            Some("0123456789abcdef0123")
        );
    }

    #[test]
    fn republish_is_on_unless_turned_off() {
        let f: ServerFile = toml::from_str("").unwrap();
        assert!(f.validate().unwrap().republish);
        let f: ServerFile = toml::from_str("[republish]\nenabled = false\n").unwrap();
        assert!(!f.validate().unwrap().republish);
        let e = toml::from_str::<ServerFile>("[republish]\nenable = true\n").unwrap_err();
        assert!(e.to_string().contains("enable"), "{e}");
    }

    #[test]
    fn supervisor_keys_have_defaults_and_bad_ones_are_named() {
        let f: ServerFile = toml::from_str("").unwrap();
        assert_eq!(f.validate().unwrap().supervisor, RestartPolicy::default());
        let f: ServerFile = toml::from_str(
            "[supervisor]
max_restarts = 0
heartbeat_s = 1
window_s = 30
",
        )
        .unwrap();
        let p = f.validate().unwrap_err().join("\n");
        for k in ["supervisor.max_restarts", "supervisor.heartbeat_s"] {
            assert!(p.contains(k), "{k} in {p}");
        }
        assert!(!p.contains("supervisor.window_s"), "{p}");
        let e = toml::from_str::<ServerFile>(
            "[supervisor]
max_restart = 3
",
        )
        .unwrap_err();
        assert!(e.to_string().contains("max_restart"), "{e}");
    }

    #[test]
    fn an_unknown_key_is_named() {
        let e =
            toml::from_str::<ServerFile>("[http]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n").unwrap_err();
        assert!(e.to_string().contains("listen_port"), "{e}");
    }

    #[test]
    fn durations_too_long_to_count_in_milliseconds_are_named_not_a_panic() {
        let f: ServerFile = toml::from_str(
            "[presence]\nstale_after_s = 15\noffline_after_s = 9223372036854775807\n[alerts]\nhold_offline_s = 18446744073709551615\n",
        )
        .unwrap();
        let p = f.validate().unwrap_err().join("\n");
        for k in ["presence.offline_after_s", "alerts.hold_offline_s"] {
            assert!(p.contains(k), "{k} in {p}");
        }
    }

    #[test]
    fn bad_values_are_named_by_key() {
        let f: ServerFile = toml::from_str(
            "[http]\nlisten = \"x\"\n[mqtt]\nembedded = false\n[presence]\nstale_after_s = 10\noffline_after_s = 5\n",
        )
        .unwrap();
        let p = f.validate().unwrap_err().join("\n");
        for k in ["http.listen", "mqtt.connect", "presence"] {
            assert!(p.contains(k), "{k} in {p}");
        }
    }
}
