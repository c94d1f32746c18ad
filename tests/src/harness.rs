//! Process-level helpers for the chaos, soak and security tests: a `fleet-server` child
//! process with its own config and token, simulator processes, RSS sampling, a least-squares
//! slope and a tiny seeded PRNG. Everything binds to 127.0.0.1 and every child is killed when
//! its handle is dropped.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::pki::CertDir;
use serde_json::Value;

use crate::{Child, free_port};

/// A `fleet-server run` child process on fixed loopback ports, restartable on the same data.
pub struct ServerProc {
    pub http: u16,
    pub mqtt: u16,
    /// An admin token, made before the first start.
    pub token: String,
    pub config: PathBuf,
    pub data: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    client: reqwest::Client,
}

impl ServerProc {
    /// Writes `DIR/server.toml` (ports, certificates, data under `DIR/data`, then `extra`
    /// appended verbatim) and an admin token; does not start the server.
    pub fn new(dir: &Path, certs: &CertDir, extra: &str) -> anyhow::Result<ServerProc> {
        Self::with_storage(dir, certs, "", extra)
    }

    /// As [`ServerProc::new`], with more `[storage]` lines (`backend = "postgres"`, `url`):
    /// the admin token is made in that store.
    pub fn with_storage(
        dir: &Path,
        certs: &CertDir,
        storage: &str,
        extra: &str,
    ) -> anyhow::Result<ServerProc> {
        Self::on_store(dir, certs, storage, extra, None)
    }

    /// As [`ServerProc::with_storage`]; with `token`, that admin token (already in the
    /// shared store: another instance on the same PostgreSQL database) instead of a new one.
    pub fn on_store(
        dir: &Path,
        certs: &CertDir,
        storage: &str,
        extra: &str,
        token: Option<&str>,
    ) -> anyhow::Result<ServerProc> {
        let (http, mqtt) = (free_port(), free_port());
        let data = dir.join("data");
        let config = dir.join("server.toml");
        std::fs::write(
            &config,
            format!(
                "[http]\nlisten = \"127.0.0.1:{http}\"\n[mqtt]\nlisten = \"127.0.0.1:{mqtt}\"\n[certs]\ndir = \"{}\"\n[storage]\ndata_dir = \"{}\"\n{storage}\n{extra}\n",
                certs.root().display(),
                data.display()
            ),
        )?;
        let token = match token {
            Some(t) => t.to_string(),
            None => {
                let c = fleet_server::config::ServerFile::load(&config)?;
                let tokens = fleet_server::storage::open_tokens(&fleet_server::storage::StorageConfig {
                    backend: c.storage,
                    data_dir: c.data_dir,
                    cache_bytes: c.store_cache_bytes,
                    history: c.history,
                })?;
                tokens.create("harness-admin", fleet_server::auth::Role::Admin)?
            }
        };
        Ok(ServerProc {
            http,
            mqtt,
            token,
            config,
            data,
            log: dir.join("server.log"),
            child: None,
            client: reqwest::Client::new(),
        })
    }

    /// Starts the server (a no-op while it runs).
    pub fn start(&mut self) -> anyhow::Result<()> {
        self.start_env(&[])
    }

    /// Starts the server with more environment variables (a no-op while it runs).
    pub fn start_env(&mut self, env: &[(&str, &str)]) -> anyhow::Result<()> {
        if self.child.is_none() {
            let config = self.config.to_string_lossy().into_owned();
            self.child = Some(Child::spawn_env(
                "fleet-server",
                &["run", "--config", &config],
                env,
                &self.log,
            )?);
        }
        Ok(())
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Waits up to `within` for the process to exit on its own: its exit code (None: it
    /// still runs, or a signal ended it).
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let code = self.child.as_mut()?.wait_exit(within);
        if code.is_some() {
            self.child = None;
        }
        code
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.0.id())
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill9();
        }
    }

    /// SIGTERM, then `kill -9` after 10 s.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.terminate();
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.http, path)
    }

    /// GET with the admin token; the JSON body of a 2xx answer.
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let r = self
            .client
            .get(self.url(path))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(10))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "GET {path}: {}", r.status());
        Ok(r.json().await?)
    }

    /// Waits until the API answers, up to `within`.
    pub async fn wait_ready(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.get("/api/v1/health").await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }
}

/// `rvm-sim simulate` child process arguments for `devices` machines from index `first`.
pub struct SimSpec<'a> {
    pub prefix: &'a str,
    pub devices: usize,
    pub first: usize,
    pub interval_ms: u64,
    pub sites: usize,
    /// `--buffer-dir`: sled buffers that survive `kill -9`; None: in memory.
    pub buffer_dir: Option<&'a Path>,
}

/// Starts `rvm-sim simulate` against the broker on `mqtt_port`.
pub fn spawn_simulator(certs: &CertDir, mqtt_port: u16, spec: &SimSpec, log: &Path) -> anyhow::Result<Child> {
    let broker = format!("127.0.0.1:{mqtt_port}");
    let (devices, first, interval, sites) = (
        spec.devices.to_string(),
        spec.first.to_string(),
        spec.interval_ms.to_string(),
        spec.sites.to_string(),
    );
    let certs = certs.root().to_string_lossy().into_owned();
    let mut args = vec![
        "simulate",
        "--devices",
        &devices,
        "--first",
        &first,
        "--prefix",
        spec.prefix,
        "--broker",
        &broker,
        "--certs",
        &certs,
        "--interval",
        &interval,
        "--sites",
        &sites,
    ];
    let buffer_dir = spec.buffer_dir.map(|p| p.to_string_lossy().into_owned());
    if let Some(b) = &buffer_dir {
        args.extend(["--buffer-dir", b.as_str()]);
    }
    Child::spawn("rvm-sim", &args, log)
}

/// Resident set size of a process in KiB (`VmRSS`), None when it is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Least-squares slope of `(x, y)` points; None with fewer than two distinct x.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// A tiny deterministic PRNG (splitmix64): the same seed gives the same schedule.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (`lo` when the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// An environment variable as a number, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Replaces the section headed exactly `heading` (up to the next `## ` heading) of the
/// Markdown file at `path` with `body`, or appends it; other sections are left as they are.
/// The file is re-read right before writing, since others edit it too.
pub fn replace_md_section(path: &Path, heading: &str, body: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let section = format!("{heading}\n\n{}\n", body.trim_end());
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|l| l.trim_end() == heading);
    let out = match start {
        Some(s) => {
            let end = lines[s + 1..]
                .iter()
                .position(|l| l.starts_with("## "))
                .map_or(lines.len(), |e| s + 1 + e);
            let mut out = lines[..s].join("\n");
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&section);
            if end < lines.len() {
                out.push('\n');
                out.push_str(&lines[end..].join("\n"));
                out.push('\n');
            }
            out
        }
        None => {
            let mut out = text.trim_end().to_string();
            if !out.is_empty() {
                out.push_str("\n\n");
            }
            out.push_str(&section);
            out
        }
    };
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)?;
    }
    std::fs::write(path, out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_is_its_gradient() {
        let pts: Vec<(f64, f64)> = (0..10).map(|x| (x as f64, 3.0 * x as f64 + 1.0)).collect();
        assert!((slope(&pts).unwrap() - 3.0).abs() < 1e-9);
        assert_eq!(slope(&[(1.0, 1.0)]), None);
    }

    #[test]
    fn the_prng_repeats_for_a_seed_and_stays_in_range() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..100 {
            let x = a.range(3, 9);
            assert_eq!(x, b.range(3, 9));
            assert!((3..9).contains(&x));
        }
    }

    #[test]
    fn a_markdown_section_is_replaced_in_place_or_appended() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.md");
        std::fs::write(&p, "# T\n\n## A\n\na\n\n## Soak\n\nold\n\n## C\n\nc\n").unwrap();
        replace_md_section(&p, "## Soak", "new").unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "# T\n\n## A\n\na\n\n## Soak\n\nnew\n\n## C\n\nc\n"
        );
        let q = dir.path().join("c.md");
        std::fs::write(&q, "# T\n\n## A\n\na\n").unwrap();
        replace_md_section(&q, "## Soak", "x").unwrap();
        assert_eq!(
            std::fs::read_to_string(&q).unwrap(),
            "# T\n\n## A\n\na\n\n## Soak\n\nx\n"
        );
    }
}
