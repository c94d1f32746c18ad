//! Throwaway PostgreSQL 15 clusters for the tests: Debian's `initdb`, `pg_ctl` and `psql`
//! (packages `postgresql-15` and `postgresql-client-15`; `apt-get install postgresql`), one
//! cluster per [`PgCluster`], in its own directory, on a free loopback port, stopped and
//! deleted when dropped (also when the test panics). A missing PostgreSQL fails the test that
//! needs it and says what to install: these tests never pass by skipping.
//!
//! As root (CI) the server runs as the `postgres` user, since `initdb` refuses root: the
//! cluster's directory is handed to that user and every server program is started with its
//! uid and gid. No system cluster is touched and nothing is registered in `/etc/postgresql`.
//!
//! Each cluster has a superuser `postgres` (password-less over its Unix socket, which only the
//! harness uses) and an application role `fleet` with a random password owning the database
//! `fleet`; TCP logins need the password (scram-sha-256), like a real deployment.
//! [`PgCluster::stop`], [`PgCluster::crash`] and [`PgCluster::start_again`] stop and restart
//! the server mid-test on the same port and data.
//!
//! Clusters live under `$TMPDIR/rvm-fleet-pg/PID-N-RANDOM`. A test process killed before its
//! clusters were dropped leaves them behind: the next [`PgCluster::start`] stops and deletes
//! every cluster whose process is gone.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::free_port;

/// PostgreSQL major version the tests run on (Debian 12's).
pub const PG_MAJOR: &str = "15";
/// How long `pg_ctl` waits for the server to start or stop.
pub const PG_CTL_TIMEOUT: Duration = Duration::from_secs(60);
/// Ports tried when another process took the free port first.
pub const START_ATTEMPTS: usize = 5;
/// The application role and its database.
pub const APP_USER: &str = "fleet";
pub const APP_DB: &str = "fleet";

/// What to install when PostgreSQL is missing.
pub const INSTALL_HINT: &str = "apt-get install -y postgresql (Debian's PostgreSQL 15: the PostgreSQL tests need \
     initdb, pg_ctl and psql and never skip)";

static NEXT: AtomicU64 = AtomicU64::new(0);

/// Directory of the PostgreSQL programs: Debian's `/usr/lib/postgresql/15/bin`, another
/// version there, or `pg_ctl` on the PATH; an error naming the package when none has them.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let mut candidates = vec![PathBuf::from(format!("/usr/lib/postgresql/{PG_MAJOR}/bin"))];
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut others: Vec<PathBuf> = entries.flatten().map(|e| e.path().join("bin")).collect();
        others.sort();
        others.reverse();
        candidates.extend(others);
    }
    let path = std::env::var("PATH").unwrap_or_default();
    candidates.extend(path.split(':').filter(|d| !d.is_empty()).map(PathBuf::from));
    find_bin_dir(&candidates)
}

/// The first of `dirs` holding `initdb`, `pg_ctl` and `psql`.
pub fn find_bin_dir(dirs: &[PathBuf]) -> anyhow::Result<PathBuf> {
    dirs.iter()
        .find(|d| ["initdb", "pg_ctl", "psql"].iter().all(|p| d.join(p).is_file()))
        .cloned()
        .with_context(|| format!("PostgreSQL is not installed: {INSTALL_HINT}"))
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// uid and gid of the `postgres` user (from /etc/passwd).
fn postgres_user() -> anyhow::Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    passwd
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            if f.next() != Some("postgres") {
                return None;
            }
            let uid = f.nth(1)?.parse().ok()?;
            let gid = f.next()?.parse().ok()?;
            Some((uid, gid))
        })
        .with_context(|| {
            format!("running as root needs the `postgres` user to own the cluster: {INSTALL_HINT}")
        })
}

fn root_dir() -> PathBuf {
    std::env::temp_dir().join("rvm-fleet-pg")
}

/// A PostgreSQL cluster of its own, stopped and deleted when dropped.
pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    /// uid, gid the server runs as (root only).
    owner: Option<(u32, u32)>,
    password: String,
    running: bool,
}

impl PgCluster {
    /// Makes a cluster with the `fleet` role and database and starts it.
    pub fn start() -> anyhow::Result<PgCluster> {
        let bin = bin_dir()?;
        let owner = if running_as_root() {
            Some(postgres_user()?)
        } else {
            None
        };
        sweep_orphans(&bin, owner);
        let root = root_dir();
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let name = format!(
            "{}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            common::ids::random_hex(3)
        );
        let dir = root.join(name);
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut cluster = PgCluster {
            dir,
            bin,
            port: 0,
            owner,
            password: common::ids::random_hex(12),
            running: false,
        };
        cluster.init()?;
        cluster.start_on_free_port()?;
        let role = format!("CREATE ROLE {APP_USER} LOGIN PASSWORD '{}'", cluster.password);
        cluster.psql_on("postgres", &role)?;
        cluster.psql_on("postgres", &format!("CREATE DATABASE {APP_DB} OWNER {APP_USER}"))?;
        Ok(cluster)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The server's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        c.current_dir(&self.dir).env_remove("PGDATA").env("LC_ALL", "C");
        if let Some((uid, gid)) = self.owner {
            c.uid(uid).gid(gid);
        }
        c
    }

    fn init(&self) -> anyhow::Result<()> {
        let pwfile = self.dir.join("superuser.pw");
        std::fs::write(&pwfile, common::ids::random_hex(12))?;
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(&self.dir, Some(uid), Some(gid))?;
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))?;
        }
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(self.data())
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .args(["-E", "UTF8", "--no-locale", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .context("running initdb")?;
        check(&out, "initdb")?;
        let _ = std::fs::remove_file(&pwfile);
        Ok(())
    }

    /// Writes the settings that depend on the port into the cluster's config (the last
    /// occurrence of a setting wins, so appending again on a retry is fine).
    fn configure(&self) -> anyhow::Result<()> {
        use std::io::Write as _;
        let conf = self.data().join("postgresql.conf");
        let mut f = std::fs::OpenOptions::new().append(true).open(&conf)?;
        // fsync off: a test cluster survives a server crash (the OS keeps the pages), not a
        // machine crash; small shared_buffers: tests run several clusters at once
        writeln!(
            f,
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nfull_page_writes = off\nshared_buffers = 32MB\nmax_connections = 60\n",
            self.port,
            self.dir.display()
        )?;
        Ok(())
    }

    fn start_on_free_port(&mut self) -> anyhow::Result<()> {
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            self.port = free_port();
            self.configure()?;
            match self.pg_ctl_start() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last = format!("{e:#}");
                    if !self.log().contains("could not bind") && !self.log().contains("in use") {
                        break;
                    }
                }
            }
        }
        bail!("PostgreSQL did not start: {last}\n{}", self.log())
    }

    fn pg_ctl_start(&mut self) -> anyhow::Result<()> {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", &PG_CTL_TIMEOUT.as_secs().to_string(), "start"])
            .output()
            .context("running pg_ctl start")?;
        check(&out, "pg_ctl start")?;
        self.running = true;
        Ok(())
    }

    fn pg_ctl_stop(&mut self, mode: &str) -> anyhow::Result<()> {
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args([
                "-m",
                mode,
                "-w",
                "-t",
                &PG_CTL_TIMEOUT.as_secs().to_string(),
                "stop",
            ])
            .output()
            .context("running pg_ctl stop")?;
        check(&out, "pg_ctl stop")?;
        self.running = false;
        Ok(())
    }

    /// Stops the server cleanly (`pg_ctl stop -m fast`: open connections are ended).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        self.pg_ctl_stop("fast")
    }

    /// Stops the server as a crash would (`-m immediate`: no checkpoint; the next start
    /// recovers from the WAL).
    pub fn crash(&mut self) -> anyhow::Result<()> {
        self.pg_ctl_stop("immediate")
    }

    /// Starts the stopped server again on the same port and data.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.pg_ctl_start()
            .with_context(|| format!("restarting PostgreSQL on port {}:\n{}", self.port, self.log()))
    }

    /// [`PgCluster::stop`] then [`PgCluster::start_again`].
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.start_again()
    }

    pub fn is_running(&self) -> bool {
        self.running
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `fleet` role's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// `postgres://fleet:PASSWORD@127.0.0.1:PORT/fleet`.
    pub fn url(&self) -> String {
        self.url_for(APP_DB)
    }

    /// The same without the password (give it by `password_file` or `password_env`).
    pub fn url_without_password(&self) -> String {
        format!("postgres://{APP_USER}@127.0.0.1:{}/{APP_DB}", self.port)
    }

    /// The `fleet` role on another database of this cluster.
    pub fn url_for(&self, database: &str) -> String {
        format!(
            "postgres://{APP_USER}:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// A new empty database owned by `fleet`; its URL. Cheaper than another cluster.
    pub fn create_database(&self, name: &str) -> anyhow::Result<String> {
        anyhow::ensure!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "database name {name:?}: letters, digits and _ only"
        );
        self.psql_on("postgres", &format!("CREATE DATABASE {name} OWNER {APP_USER}"))?;
        Ok(self.url_for(name))
    }

    /// Runs `sql` as the superuser on the `fleet` database; its output (unaligned, tuples only).
    pub fn psql(&self, sql: &str) -> anyhow::Result<String> {
        self.psql_on(APP_DB, sql)
    }

    /// Runs `sql` as the superuser on `database` over the cluster's Unix socket.
    pub fn psql_on(&self, database: &str, sql: &str) -> anyhow::Result<String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", "postgres"])
            .arg("-h")
            .arg(&self.dir)
            .args(["-p", &self.port.to_string(), "-d", database, "-c", sql])
            .env("LC_ALL", "C")
            .output()
            .context("running psql")?;
        check(&out, "psql")?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running && self.pg_ctl_stop("immediate").is_err() {
            eprintln!("postgres test cluster {} did not stop", self.dir.display());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn check(out: &Output, what: &str) -> anyhow::Result<()> {
    if out.status.success() {
        return Ok(());
    }
    bail!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Stops and deletes clusters left by test processes that no longer run.
fn sweep_orphans(bin: &Path, owner: Option<(u32, u32)>) {
    let Ok(entries) = std::fs::read_dir(root_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let data = e.path().join("data");
        if data.join("postmaster.pid").exists() {
            let mut c = Command::new(bin.join("pg_ctl"));
            c.arg("-D").arg(&data).args(["-m", "immediate", "-w", "stop"]);
            c.current_dir(e.path());
            if let Some((uid, gid)) = owner {
                c.uid(uid).gid(gid);
            }
            let _ = c.output();
        }
        let _ = std::fs::remove_dir_all(e.path());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_without_postgresql_is_told_what_to_install() {
        let empty = tempfile::tempdir().unwrap();
        let e = find_bin_dir(&[empty.path().to_path_buf()]).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("PostgreSQL is not installed"), "{msg}");
        assert!(msg.contains("apt-get install -y postgresql"), "{msg}");
    }
}
