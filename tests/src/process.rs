//! The workspace's binaries as child processes of a test: where they are built, a free port
//! for them, and a handle that kills its process when dropped.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Path of a workspace binary built next to this test executable (`target/debug/NAME`).
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --bins` (cargo test --workspace builds it)",
        p.display()
    );
    p
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process killed (SIGKILL) when dropped.
pub struct Child(pub std::process::Child);

impl Child {
    pub fn spawn(bin: &str, args: &[&str], log: &Path) -> anyhow::Result<Child> {
        Self::spawn_env(bin, args, &[], log)
    }

    pub fn spawn_env(bin: &str, args: &[&str], env: &[(&str, &str)], log: &Path) -> anyhow::Result<Child> {
        let out = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let c = std::process::Command::new(bin_path(bin))
            .args(args)
            .envs(env.iter().copied())
            .env("RVM_LOG", "info")
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        Ok(Child(c))
    }

    /// Waits for the process to exit by itself, up to `within`; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.0.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM, then wait up to 10 s.
    pub fn terminate(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill9();
    }
}
