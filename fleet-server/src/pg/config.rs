//! The `[storage]` keys that choose the store and reach PostgreSQL:
//!
//! ```toml
//! [storage]
//! backend = "postgres"            # or "sled" (the default: the embedded store)
//! url = "postgres://fleet@db.example:5432/fleet"
//! password_file = "/etc/fleet-server/db.password"   # or password_env = "FLEET_DB_PASSWORD"
//! pool_size = 16
//! ```
//!
//! [`StorageBackendFile`] is these keys as written; [`StorageBackendFile::validate`] reports
//! every problem with its key path (`storage.url: ...`) and yields the runtime
//! [`StorageBackend`]. The password may sit in the URL, in a file or in an environment
//! variable (one of them); it is read at validation, kept only inside the driver's config, and
//! never printed: [`PgConfig`]'s `Debug` and [`PgConfig::target`] leave it out.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tokio_postgres::config::{Host, SslMode};

/// Connections in the pool when `pool_size` is not set.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// Largest `pool_size` accepted (PostgreSQL's default `max_connections` is 100, shared by
/// every instance).
pub const MAX_POOL_SIZE: usize = 64;
/// How long one connection attempt may take, unless the URL sets `connect_timeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// `application_name` the server shows in `pg_stat_activity`, unless the URL sets one.
pub const APPLICATION_NAME: &str = "fleet-server";

/// Which store the server keeps its state in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The embedded sled store in `data_dir` (one instance).
    #[default]
    Sled,
    /// PostgreSQL at `url` (one or several instances).
    Postgres,
}

/// The backend keys of `[storage]` as written (the other `[storage]` keys, `data_dir` and the
/// history retention, sit beside them in the server's storage section).
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageBackendFile {
    #[serde(default)]
    pub backend: Backend,
    /// `postgres://user[:password]@host[:port]/dbname[?param=value...]` or libpq's
    /// `key=value` form.
    #[serde(default)]
    pub url: Option<String>,
    /// A file holding the password (trailing newline ignored), e.g. mode 0600.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub pool_size: Option<usize>,
}

impl std::fmt::Debug for StorageBackendFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageBackendFile")
            .field("backend", &self.backend)
            .field("url", &self.url.as_deref().map(redact_url))
            .field("password_file", &self.password_file)
            .field("password_env", &self.password_env)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

/// The validated choice of store.
#[derive(Debug, Clone)]
pub enum StorageBackend {
    Sled,
    /// Boxed: the driver's config is large beside `Sled`.
    Postgres(Box<PgConfig>),
}

/// How to reach PostgreSQL: the driver's config (password included) and the pool size.
#[derive(Clone)]
pub struct PgConfig {
    config: tokio_postgres::Config,
    pool_size: usize,
    target: String,
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("target", &self.target)
            .field("password", &self.config.get_password().map(|_| "<redacted>"))
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

impl PgConfig {
    /// The driver's config, password included: hand it to the driver, never to a log.
    pub fn driver_config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    pub fn pool_size(&self) -> usize {
        self.pool_size
    }

    /// `postgres://user@host:port/dbname`, without the password: for logs and errors.
    pub fn target(&self) -> &str {
        &self.target
    }
}

impl StorageBackendFile {
    /// Validates with the process environment (for `password_env`).
    pub fn validate(&self, prefix: &str) -> Result<StorageBackend, Vec<String>> {
        self.validate_with(prefix, &|name| std::env::var(name).ok())
    }

    /// Every problem with its key path under `prefix` (`storage`), or the runtime choice.
    /// `env` looks an environment variable up.
    pub fn validate_with(
        &self,
        prefix: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<StorageBackend, Vec<String>> {
        let mut problems = Vec::new();
        let key = |k: &str| format!("{prefix}.{k}");
        if let Some(n) = self.pool_size
            && !(1..=MAX_POOL_SIZE).contains(&n)
        {
            problems.push(format!(
                "{}: {n} is not between 1 and {MAX_POOL_SIZE}",
                key("pool_size")
            ));
        }
        if self.backend == Backend::Sled {
            for (name, set) in [
                ("url", self.url.is_some()),
                ("password_file", self.password_file.is_some()),
                ("password_env", self.password_env.is_some()),
                ("pool_size", self.pool_size.is_some()),
            ] {
                if set {
                    problems.push(format!("{}: only used with backend = \"postgres\"", key(name)));
                }
            }
            return if problems.is_empty() {
                Ok(StorageBackend::Sled)
            } else {
                Err(problems)
            };
        }
        let config = match self.url.as_deref().map(str::trim) {
            None | Some("") => {
                problems.push(format!(
                    "{}: required with backend = \"postgres\" (postgres://user@host:5432/dbname)",
                    key("url")
                ));
                None
            }
            Some(url) => match parse_url(url) {
                Ok(c) => Some(c),
                Err(e) => {
                    problems.push(format!("{}: {e}", key("url")));
                    None
                }
            },
        };
        let password = match (&self.password_file, &self.password_env) {
            (Some(_), Some(_)) => {
                problems.push(format!(
                    "{}: give one of password_file and password_env",
                    key("password_env")
                ));
                None
            }
            (Some(path), None) => match std::fs::read_to_string(path) {
                Ok(text) => {
                    let p = text.strip_suffix('\n').unwrap_or(&text);
                    let p = p.strip_suffix('\r').unwrap_or(p);
                    if p.is_empty() {
                        problems.push(format!("{}: {} is empty", key("password_file"), path.display()));
                        None
                    } else {
                        Some((key("password_file"), p.to_string()))
                    }
                }
                Err(e) => {
                    problems.push(format!(
                        "{}: cannot read {}: {e}",
                        key("password_file"),
                        path.display()
                    ));
                    None
                }
            },
            (None, Some(name)) => match env(name) {
                Some(p) if !p.is_empty() => Some((key("password_env"), p)),
                Some(_) => {
                    problems.push(format!(
                        "{}: environment variable {name} is empty",
                        key("password_env")
                    ));
                    None
                }
                None => {
                    problems.push(format!(
                        "{}: environment variable {name} is not set",
                        key("password_env")
                    ));
                    None
                }
            },
            (None, None) => None,
        };
        let Some(mut config) = config else {
            return Err(problems);
        };
        if let Some((source, password)) = password {
            if config.get_password().is_some() {
                problems.push(format!(
                    "{source}: {} already has a password; give it in one place",
                    key("url")
                ));
            } else {
                config.password(password);
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let target = target_of(&config);
        Ok(StorageBackend::Postgres(Box::new(PgConfig {
            config,
            pool_size: self.pool_size.unwrap_or(DEFAULT_POOL_SIZE),
            target,
        })))
    }
}

/// Parses `storage.url` and fills in what the server relies on; the error never repeats the
/// URL (it may hold a password).
fn parse_url(url: &str) -> Result<tokio_postgres::Config, String> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
        format!("not a PostgreSQL URL (postgres://user@host:5432/dbname or key=value pairs): {e}")
    })?;
    if config.get_hosts().is_empty() {
        return Err("names no host (postgres://user@HOST:5432/dbname)".into());
    }
    if config.get_user().is_none() {
        return Err("names no user (postgres://USER@host:5432/dbname)".into());
    }
    if config.get_ssl_mode() == SslMode::Require {
        return Err("sslmode=require: this build connects without TLS (docs/postgres.md)".into());
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name(APPLICATION_NAME);
    }
    Ok(config)
}

/// `postgres://user@host:port,host2:port2/dbname`: what a log may say about the database.
fn target_of(c: &tokio_postgres::Config) -> String {
    let ports = c.get_ports();
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                Host::Tcp(h) => h.clone(),
                Host::Unix(p) => p.display().to_string(),
            };
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            format!("{host}:{port}")
        })
        .collect();
    format!(
        "postgres://{}@{}/{}",
        c.get_user().unwrap_or(""),
        hosts.join(","),
        c.get_dbname().or(c.get_user()).unwrap_or("")
    )
}

/// The URL as written, with a password (`user:password@`, `password=...`) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(c) if c.get_password().is_none() => url.to_string(),
        Ok(c) if !c.get_hosts().is_empty() => target_of(&c) + " (password ***)",
        _ => "***".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_file(toml_text: &str) -> StorageBackendFile {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Wrap {
            storage: StorageBackendFile,
        }
        toml::from_str::<Wrap>(toml_text).unwrap().storage
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn problems(toml_text: &str) -> Vec<String> {
        build_file(toml_text)
            .validate_with("storage", &no_env)
            .unwrap_err()
    }

    fn postgres(s: StorageBackend) -> PgConfig {
        match s {
            StorageBackend::Postgres(c) => *c,
            StorageBackend::Sled => panic!("expected postgres"),
        }
    }

    #[test]
    fn an_empty_section_is_the_sled_store() {
        let s = build_file("[storage]\n")
            .validate_with("storage", &no_env)
            .unwrap();
        assert!(matches!(s, StorageBackend::Sled));
    }

    #[test]
    fn postgres_keys_with_the_sled_backend_are_named() {
        let p = problems("[storage]\nurl = \"postgres://u@h/db\"\npool_size = 4\n");
        assert_eq!(
            p,
            [
                "storage.url: only used with backend = \"postgres\"",
                "storage.pool_size: only used with backend = \"postgres\""
            ]
        );
    }

    #[test]
    fn the_postgres_backend_needs_a_url() {
        let p = problems("[storage]\nbackend = \"postgres\"\n");
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("storage.url: required"), "{p:?}");
    }

    #[test]
    fn an_unknown_backend_or_key_is_refused_by_the_parser() {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)] // the parse error is what is tested
        struct Wrap {
            storage: StorageBackendFile,
        }
        let e = toml::from_str::<Wrap>("[storage]\nbackend = \"mysql\"\n").unwrap_err();
        assert!(e.to_string().contains("unknown variant `mysql`"), "{e}");
        let e = toml::from_str::<Wrap>("[storage]\npasword_file = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `pasword_file`"), "{e}");
    }

    #[test]
    fn a_bad_url_is_named_without_repeating_it() {
        let p = problems("[storage]\nbackend = \"postgres\"\nurl = \"postgres://u:s3cret@h:notaport/db\"\n");
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("storage.url: not a PostgreSQL URL"), "{p:?}");
        assert!(!p[0].contains("s3cret"), "{p:?}");
        let p = problems("[storage]\nbackend = \"postgres\"\nurl = \"postgres://h/db\"\n");
        assert_eq!(
            p,
            ["storage.url: names no user (postgres://USER@host:5432/dbname)"]
        );
    }

    #[test]
    fn sslmode_require_is_refused_because_connections_are_plain() {
        let p = problems("[storage]\nbackend = \"postgres\"\nurl = \"postgres://u@h/db?sslmode=require\"\n");
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("storage.url: sslmode=require"), "{p:?}");
    }

    #[test]
    fn the_password_comes_from_a_file_without_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "hunter2\n").unwrap();
        let text = format!(
            "[storage]\nbackend = \"postgres\"\nurl = \"postgres://fleet@db:5433/fleet\"\npassword_file = \"{}\"\n",
            path.display()
        );
        let c = postgres(build_file(&text).validate_with("storage", &no_env).unwrap());
        assert_eq!(c.driver_config().get_password(), Some(&b"hunter2"[..]));
        assert_eq!(c.target(), "postgres://fleet@db:5433/fleet");
        assert_eq!(c.pool_size(), DEFAULT_POOL_SIZE);
        assert_eq!(c.driver_config().get_connect_timeout(), Some(&CONNECT_TIMEOUT));
    }

    #[test]
    fn the_password_comes_from_the_environment() {
        let text = "[storage]\nbackend = \"postgres\"\nurl = \"postgres://fleet@db/fleet\"\npassword_env = \"FLEET_DB_PW\"\npool_size = 3\n";
        let env = |n: &str| (n == "FLEET_DB_PW").then(|| "from-env".to_string());
        let c = postgres(build_file(text).validate_with("storage", &env).unwrap());
        assert_eq!(c.driver_config().get_password(), Some(&b"from-env"[..]));
        assert_eq!(c.pool_size(), 3);
        let p = build_file(text).validate_with("storage", &no_env).unwrap_err();
        assert_eq!(
            p,
            ["storage.password_env: environment variable FLEET_DB_PW is not set"]
        );
    }

    #[test]
    fn password_sources_conflicting_or_missing_are_named() {
        let p = problems(
            "[storage]\nbackend = \"postgres\"\nurl = \"postgres://u@h/db\"\npassword_file = \"/nonexistent/pw\"\npassword_env = \"X\"\n",
        );
        assert_eq!(
            p,
            ["storage.password_env: give one of password_file and password_env"]
        );
        let p = problems(
            "[storage]\nbackend = \"postgres\"\nurl = \"postgres://u@h/db\"\npassword_file = \"/nonexistent/pw\"\n",
        );
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with("storage.password_file: cannot read /nonexistent/pw"),
            "{p:?}"
        );
        let env = |_: &str| Some("x".to_string());
        let p = build_file(
            "[storage]\nbackend = \"postgres\"\nurl = \"postgres://u:inurl@h/db\"\npassword_env = \"X\"\n",
        )
        .validate_with("storage", &env)
        .unwrap_err();
        assert_eq!(
            p,
            ["storage.password_env: storage.url already has a password; give it in one place"]
        );
    }

    #[test]
    fn pool_size_out_of_range_is_named() {
        let p = problems("[storage]\nbackend = \"postgres\"\nurl = \"postgres://u@h/db\"\npool_size = 0\n");
        assert_eq!(
            p,
            [format!(
                "storage.pool_size: 0 is not between 1 and {MAX_POOL_SIZE}"
            )]
        );
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let text = "[storage]\nbackend = \"postgres\"\nurl = \"postgres://fleet:s3cret@db:5432/fleet\"\n";
        let file = build_file(text);
        let shown = format!("{file:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        let c = postgres(file.validate_with("storage", &no_env).unwrap());
        let shown = format!("{c:?} {}", c.target());
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        let kv = redact_url("host=db user=fleet password=s3cret dbname=fleet");
        assert!(!kv.contains("s3cret"), "{kv}");
        assert_eq!(
            redact_url("postgres://fleet@db/fleet"),
            "postgres://fleet@db/fleet"
        );
    }
}
