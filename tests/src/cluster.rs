//! Several `fleet-server run` processes on one throwaway PostgreSQL database, as the
//! `cluster_*` suites start them (issue 21; docs/architecture.md, "Several instances").
//!
//! [`Cluster::start`] makes the database (a database of its own on the test binary's shared
//! cluster, [`PgDatabase::shared`]), one certificate authority, a webhook receiver, and the
//! instances, started together as a deployment's are (they share the migrations, behind an
//! advisory lock, and the partitions), each with `[cluster] instance_id` its name and one
//! admin token (made in the shared store by the first, used by all). It returns once every
//! instance answers its API *and* logged "fleet server running": its API answers before its
//! ingest subscribed, and until then its broker defers machines, which would fail over to the
//! next broker and spoil a test that knows where each machine starts.
//!
//! [`pg_store`] opens one instance's store on the database in-process, for the tests that
//! drive the store code directly (claims, fences, stale views).

use std::sync::Arc;
use std::time::Duration;

use common::pki::{self, CertDir};
use fleet_server::pg::partitions::Retention;
use fleet_server::pg::store::PgStore;
use fleet_server::pg::{Backend, StorageBackend, StorageBackendFile};
use fleet_server::storage::health::StorageHealth;

use crate::harness::ServerProc;
use crate::postgres::PgDatabase;
use crate::{WebhookReceiver, eventually, read};

/// How the instances of a [`Cluster`] are configured beyond their ports, store and name.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterOptions<'a> {
    /// The rules file of every instance; with rules, every instance notifies
    /// [`Cluster::hook`] (`[notify.default]`, one webhook channel `hook`).
    pub rules: Option<&'a str>,
    /// `[notify.default] per_minute` (the server's default when None).
    pub per_minute: Option<u32>,
    /// `heartbeat_ms = 500`, `lease_ms = 3000`: a leader's death is taken over within
    /// seconds (the defaults: within tens of seconds).
    pub fast_leases: bool,
    /// More config, verbatim, before the rest (tables such as `[presence]`).
    pub extra: &'a str,
}

/// Instances of `fleet-server` sharing one PostgreSQL database (module docs).
pub struct Cluster {
    /// The instances, in the order of their names.
    pub servers: Vec<ServerProc>,
    /// Their `[cluster] instance_id`s.
    pub ids: Vec<String>,
    pub pg: PgDatabase,
    /// Each instance's directory (`DIR/NAME`), the CA (`DIR/certs`), the rules file.
    pub dir: tempfile::TempDir,
    pub certs: CertDir,
    /// Where the instances notify, with [`ClusterOptions::rules`].
    pub hook: WebhookReceiver,
}

impl Cluster {
    /// Starts one instance per name of `ids` on a fresh database and waits until every one
    /// runs (module docs); panics, with every instance's log, when one does not.
    pub async fn start(ids: &[&str], opts: ClusterOptions<'_>) -> Cluster {
        let pg = PgDatabase::shared().unwrap();
        let storage = format!("backend = \"postgres\"\nurl = \"{}\"\n", pg.url());
        let dir = tempfile::tempdir().unwrap();
        let certs = CertDir::new(dir.path().join("certs"));
        pki::init(&certs, &["localhost".into(), "127.0.0.1".into()], false).unwrap();
        let hook = WebhookReceiver::start().await.unwrap();
        let mut alerting = String::new();
        if let Some(rules) = opts.rules {
            let file = dir.path().join("rules.toml");
            std::fs::write(&file, rules).unwrap();
            let per_minute = opts
                .per_minute
                .map(|n| format!("per_minute = {n}\n"))
                .unwrap_or_default();
            alerting = format!(
                "[alerts]\nrules = \"{}\"\n[notify.default]\nchannels = [\"hook\"]\n{per_minute}[notify.channels.hook]\ntype = \"webhook\"\nurl = \"{}\"\n",
                file.display(),
                hook.url
            );
        }
        let leases = if opts.fast_leases {
            "heartbeat_ms = 500\nlease_ms = 3000\n"
        } else {
            ""
        };
        let mut servers: Vec<ServerProc> = Vec::new();
        for id in ids {
            let d = dir.path().join(id);
            std::fs::create_dir_all(&d).unwrap();
            let extra = format!(
                "{}{alerting}[cluster]\ninstance_id = \"{id}\"\n{leases}",
                opts.extra
            );
            // one admin token in the shared store serves every instance
            let token = servers.first().map(|a| a.token.clone());
            let mut s = ServerProc::on_store(&d, &certs, &storage, &extra, token.as_deref()).unwrap();
            s.start().unwrap();
            servers.push(s);
        }
        let cluster = Cluster {
            servers,
            ids: ids.iter().map(|i| i.to_string()).collect(),
            pg,
            dir,
            certs,
            hook,
        };
        for (s, id) in cluster.servers.iter().zip(ids) {
            // every instance's log: a start that hangs may wait on another one
            assert!(
                s.wait_ready(Duration::from_secs(60)).await,
                "instance {id} did not answer within 60 s\n{}",
                cluster.logs()
            );
            let running = eventually(Duration::from_secs(30), || async {
                read(&s.log).contains("fleet server running").then_some(())
            })
            .await;
            assert!(
                running.is_some(),
                "instance {id} not running within 30 s\n{}",
                cluster.logs()
            );
        }
        cluster
    }

    /// Every instance's log, each under its name.
    pub fn logs(&self) -> String {
        self.servers
            .iter()
            .zip(&self.ids)
            .map(|(s, id)| format!("--- instance {id}:\n{}", read(&s.log)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every instance's MQTT address (`127.0.0.1:PORT`), in order.
    pub fn brokers(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.mqtt))
            .collect()
    }

    /// The index of the instance named `id`.
    pub fn index(&self, id: &str) -> usize {
        self.ids
            .iter()
            .position(|i| i == id)
            .unwrap_or_else(|| panic!("no instance {id} in {:?}", self.ids))
    }
}

/// The instance leading the leader-only `job` (`history`, `presence`, `rollouts`,
/// `correlator`) as `s` reads `GET /api/v1/cluster`; None while nobody does or `s` does not
/// answer.
pub async fn leader(s: &ServerProc, job: &str) -> Option<String> {
    let cluster = s.get("/api/v1/cluster").await.ok()?;
    cluster["leaders"].as_array()?.iter().find(|j| j["job"] == job)?["leader"]
        .as_str()
        .map(str::to_string)
}

/// One instance's store on `pg`, with a pool of `pool_size` connections.
pub fn pg_store(pg: &PgDatabase, pool_size: usize) -> PgStore {
    let file = StorageBackendFile {
        backend: Backend::Postgres,
        url: Some(pg.url()),
        pool_size: Some(pool_size),
        ..Default::default()
    };
    let StorageBackend::Postgres(cfg) = file.validate_with("storage", &|_| None).unwrap() else {
        unreachable!("a postgres backend validates to postgres")
    };
    let health = Arc::new(StorageHealth::new("postgres"));
    PgStore::open(&cfg, Retention::default(), health, common::time::now_ms())
        .unwrap()
        .0
}
