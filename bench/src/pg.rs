//! A throwaway PostgreSQL cluster for the `postgres` group: Debian's `initdb`, `pg_ctl` and
//! `psql` (`apt-get install postgresql`), in the run's work directory, on a free loopback port,
//! stopped when dropped. Unlike the tests' clusters it keeps PostgreSQL's durable defaults
//! (`fsync`, `synchronous_commit`, `full_page_writes` on): the figure is what an installation
//! pays. As root the server runs as the `postgres` user (`initdb` refuses root).

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

use crate::procs;

/// Where Debian puts PostgreSQL 15's programs.
pub const BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
/// The application role and database.
pub const USER: &str = "fleet";
pub const DB: &str = "fleet";

pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    pub port: u16,
    owner: Option<(u32, u32)>,
    password: String,
}

/// uid and gid of the `postgres` user.
fn postgres_user() -> anyhow::Result<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"postgres"))
                .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
        })
        .context("no `postgres` user: apt-get install postgresql")
}

impl PgCluster {
    /// Makes and starts a cluster in `dir` with the `fleet` role and database.
    pub fn start(dir: &Path) -> anyhow::Result<PgCluster> {
        let bin = PathBuf::from(BIN_DIR);
        anyhow::ensure!(
            bin.join("initdb").exists(),
            "{BIN_DIR}/initdb is missing: apt-get install postgresql"
        );
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        let owner = if root { Some(postgres_user()?) } else { None };
        std::fs::create_dir_all(dir)?;
        let c = PgCluster {
            dir: dir.to_path_buf(),
            bin,
            port: procs::free_port()?,
            owner,
            password: common::ids::random_hex(12),
        };
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
        }
        c.run(
            "initdb",
            &[
                "-D",
                &c.data(),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-locale",
            ],
        )?;
        {
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(Path::new(&c.data()).join("postgresql.conf"))?;
            writeln!(
                f,
                "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'",
                c.port,
                c.dir.display()
            )?;
        }
        let log = c.dir.join("server.log").display().to_string();
        c.run(
            "pg_ctl",
            &["-D", &c.data(), "-l", &log, "-w", "-t", "60", "start"],
        )
        .with_context(|| std::fs::read_to_string(&log).unwrap_or_default())?;
        c.psql(
            "postgres",
            &format!("CREATE ROLE {USER} LOGIN PASSWORD '{}'", c.password),
        )?;
        c.psql("postgres", &format!("CREATE DATABASE {DB} OWNER {USER}"))?;
        Ok(c)
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let mut c = Command::new(self.bin.join(program));
        c.args(args).current_dir(&self.dir).env("LC_ALL", "C");
        if let Some((uid, gid)) = self.owner {
            c.uid(uid).gid(gid);
        }
        let out = c.output().with_context(|| format!("running {program}"))?;
        anyhow::ensure!(
            out.status.success(),
            "{program}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// Runs `sql` as the superuser on `database`; its output (unaligned, tuples only).
    pub fn psql(&self, database: &str, sql: &str) -> anyhow::Result<String> {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-U",
                "postgres",
                "-h",
            ])
            .arg(&self.dir)
            .args(["-p", &self.port.to_string(), "-d", database, "-c", sql])
            .output()
            .context("running psql")?;
        anyhow::ensure!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The `fleet` role on `database`.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{USER}:{}@127.0.0.1:{}/{database}",
            self.password, self.port
        )
    }

    /// `SHOW name`.
    pub fn setting(&self, name: &str) -> String {
        self.psql("postgres", &format!("SHOW {name}")).unwrap_or_default()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let _ = self.run("pg_ctl", &["-D", &self.data(), "-m", "fast", "-w", "stop"]);
    }
}
