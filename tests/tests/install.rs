//! The installer (`config/install.sh`, `config/uninstall.sh`), the provisioning bundle
//! (`fleetctl certs bundle`) and the systemd unit, run for real into a temporary `DESTDIR`.
//!
//! Needs the workspace binaries (`cargo build --bins`; `cargo test --workspace` builds them),
//! `sh`, `tar`, and for the unit check `systemd-analyze` (Debian package `systemd`). A missing
//! tool fails the test with its name; nothing is skipped.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::pki::{self, CertDir};
use rvm_fleet_tests::bin_path;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn require_tool(name: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| panic!("{name} is not installed: apt-get install -y {package}"))
}

/// A fleet CA with the command-signing key, and a bundle for `id` made by the real fleetctl.
fn build_bundle(dir: &Path, id: &str, extra: &[&str]) -> PathBuf {
    let certs = CertDir::new(dir.join("certs"));
    if !certs.has_ca() {
        pki::init(&certs, &["localhost".into()], false).expect("fleet CA");
    }
    let out = dir.join(format!("{id}.tar"));
    let mut args = vec![
        "certs".to_string(),
        "bundle".into(),
        id.into(),
        "--dir".into(),
        certs.root().display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "--force".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let o = Command::new(bin_path("fleetctl"))
        .args(&args)
        .output()
        .expect("fleetctl runs");
    assert!(o.status.success(), "fleetctl certs bundle: {}", text(&o));
    out
}

fn run_script(script: &str, destdir: &Path, args: &[&str]) -> Output {
    require_tool("sh", "dash");
    Command::new("sh")
        .arg(repo().join("config").join(script))
        .args(args)
        .env("DESTDIR", destdir)
        .env_remove("NOTIFY_SOCKET")
        .output()
        .expect("sh runs")
}

fn install(destdir: &Path, args: &[&str]) -> Output {
    run_script("install.sh", destdir, args)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// `path -> (mode, owner, type)` of the install manifest.
fn manifest(root: &Path) -> BTreeMap<String, (String, String, String)> {
    let text = std::fs::read_to_string(root.join("usr/share/rvm-agent/install-manifest"))
        .expect("the install manifest exists");
    let mut m = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 4, "manifest line {line:?}");
        let prev = m.insert(f[0].to_string(), (f[1].into(), f[2].into(), f[3].into()));
        assert!(prev.is_none(), "{} is listed twice", f[0]);
    }
    m
}

/// The installed agent.toml with its absolute paths moved under `root`.
fn config_under(root: &Path) -> String {
    let text = std::fs::read_to_string(root.join("etc/rvm-agent/agent.toml")).expect("agent.toml");
    let r = root.display().to_string();
    text.replace("\"/etc/rvm-agent/", &format!("\"{r}/etc/rvm-agent/"))
        .replace("\"/var/lib/rvm-agent", &format!("\"{r}/var/lib/rvm-agent"))
}

#[test]
fn install_sh_installs_a_bundle_into_destdir_with_modes_owners_and_a_valid_config() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = build_bundle(tmp.path(), "rvm0042", &[]);
    let listing = Command::new(require_tool("tar", "tar"))
        .arg("-tvf")
        .arg(&bundle)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout).to_string();
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("-rw-------") && l.ends_with("rvm0042/device.key")),
        "the key is 0600 in the tar:\n{listing}"
    );
    assert_eq!(mode(&bundle), 0o600);

    let root = tmp.path().join("root");
    let agent = bin_path("rvm-agent");
    let o = install(
        &root,
        &[
            "--bundle",
            &bundle.display().to_string(),
            "--binary",
            &agent.display().to_string(),
            "--broker",
            "fleet.example.com:8883",
            "--site",
            "store-12",
            "--units",
            "vision.service camera.service",
        ],
    );
    assert!(o.status.success(), "install.sh: {}", text(&o));

    let m = manifest(&root);
    let agent_owned = "rvm-agent:rvm-agent";
    let expected: &[(&str, u32, &str, &str)] = &[
        ("/usr/bin/rvm-agent", 0o755, "root:root", "file"),
        ("/etc/rvm-agent", 0o750, "root:rvm-agent", "dir"),
        ("/etc/rvm-agent/agent.toml", 0o640, "root:rvm-agent", "file"),
        ("/etc/rvm-agent/device.pem", 0o644, "root:root", "file"),
        ("/etc/rvm-agent/device.key", 0o600, agent_owned, "file"),
        ("/etc/rvm-agent/ca.pem", 0o644, "root:root", "file"),
        ("/etc/rvm-agent/command-signing.pub", 0o644, "root:root", "file"),
        ("/var/lib/rvm-agent", 0o750, agent_owned, "dir"),
        ("/var/lib/rvm-agent/buffer", 0o750, agent_owned, "dir"),
        ("/var/lib/rvm-agent/diagnostics", 0o750, agent_owned, "dir"),
        (
            "/lib/systemd/system/rvm-agent.service",
            0o644,
            "root:root",
            "file",
        ),
        ("/etc/default/rvm-agent", 0o644, "root:root", "file"),
        (
            "/etc/polkit-1/rules.d/50-rvm-agent.rules",
            0o644,
            "root:root",
            "file",
        ),
        ("/usr/share/rvm-agent/uninstall.sh", 0o755, "root:root", "file"),
        ("/usr/share/rvm-agent/agent.toml.in", 0o644, "root:root", "file"),
        ("/usr/share/doc/rvm-agent/install.md", 0o644, "root:root", "file"),
        (
            "/usr/share/rvm-agent/install-manifest",
            0o644,
            "root:root",
            "file",
        ),
    ];
    for (path, want_mode, owner, kind) in expected {
        let on_disk = root.join(path.trim_start_matches('/'));
        assert!(on_disk.exists(), "{path} was not installed");
        assert_eq!(mode(&on_disk), *want_mode, "mode of {path}");
        let (m_mode, m_owner, m_kind) = m
            .get(*path)
            .unwrap_or_else(|| panic!("{path} is not in the manifest: {m:?}"));
        assert_eq!(
            u32::from_str_radix(m_mode, 8).unwrap(),
            *want_mode,
            "manifest mode of {path}"
        );
        assert_eq!(m_owner, owner, "manifest owner of {path}");
        assert_eq!(m_kind, kind, "manifest type of {path}");
    }
    // every manifest entry exists with the mode it claims
    for (path, (m_mode, _, _)) in &m {
        let p = root.join(path.trim_start_matches('/'));
        assert_eq!(
            mode(&p),
            u32::from_str_radix(m_mode, 8).unwrap(),
            "{path} differs from its manifest line"
        );
    }
    let certs = CertDir::new(tmp.path().join("certs"));
    let id = common::DeviceId::new("rvm0042").unwrap();
    assert_eq!(
        std::fs::read(root.join("etc/rvm-agent/device.key")).unwrap(),
        std::fs::read(certs.device_key(&id)).unwrap()
    );
    assert_eq!(
        std::fs::read(root.join("etc/rvm-agent/command-signing.pub")).unwrap(),
        std::fs::read(certs.signing_pub()).unwrap()
    );
    let rules = std::fs::read_to_string(root.join("etc/polkit-1/rules.d/50-rvm-agent.rules")).unwrap();
    assert!(
        rules.contains(r#"var units = ["vision.service", "camera.service"];"#),
        "{rules}"
    );

    // the written agent.toml parses and validates (paths moved under DESTDIR)
    let raw = std::fs::read_to_string(root.join("etc/rvm-agent/agent.toml")).unwrap();
    assert!(!raw.contains('@'), "a placeholder is left:\n{raw}");
    let config = config_under(&root);
    let file = rvm_agent::config::AgentFile::parse(&config).unwrap_or_else(|e| panic!("{e}\n{config}"));
    assert!(file.validate().is_empty(), "{:?}", file.validate());
    assert_eq!(file.device_id, "rvm0042");
    assert_eq!(file.site.as_deref(), Some("store-12"));
    assert_eq!(file.mqtt.broker.entries(), ["fleet.example.com:8883"]);
    assert_eq!(file.buffer.dir, root.join("var/lib/rvm-agent/buffer"));
    assert_eq!(
        file.commands.public_key,
        Some(root.join("etc/rvm-agent/command-signing.pub")),
        "the agent verifies commands with the bundle's key"
    );
    assert!(
        !file.recovery.allowed_actions.iter().any(|a| a == "drop_caches"),
        "drop_caches needs root; the agent is not root"
    );
    // and the installed binary agrees
    let cfg = tmp.path().join("agent-under-root.toml");
    std::fs::write(&cfg, &config).unwrap();
    let o = Command::new(root.join("usr/bin/rvm-agent"))
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "installed rvm-agent check-config: {}",
        text(&o)
    );

    // again with another site: the changed config is kept, the new one written beside it
    let o = install(
        &root,
        &[
            "--bundle",
            &bundle.display().to_string(),
            "--broker",
            "fleet.example.com:8883",
            "--site",
            "store-13",
        ],
    );
    assert!(o.status.success(), "second install.sh: {}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("agent.toml.new"));
    let new = std::fs::read_to_string(root.join("etc/rvm-agent/agent.toml.new")).unwrap();
    assert!(new.contains("site = \"store-13\""));
    assert!(
        std::fs::read_to_string(root.join("etc/rvm-agent/agent.toml"))
            .unwrap()
            .contains("site = \"store-12\"")
    );
    manifest(&root); // still one line per path

    // uninstall keeps the identity and the records; --purge removes everything
    let o = run_script("uninstall.sh", &root, &[]);
    assert!(o.status.success(), "uninstall.sh: {}", text(&o));
    for gone in [
        "usr/bin/rvm-agent",
        "lib/systemd/system/rvm-agent.service",
        "etc/polkit-1/rules.d/50-rvm-agent.rules",
    ] {
        assert!(!root.join(gone).exists(), "{gone} is still there");
    }
    for kept in [
        "etc/rvm-agent/device.key",
        "etc/rvm-agent/agent.toml",
        "var/lib/rvm-agent/buffer",
    ] {
        assert!(root.join(kept).exists(), "{kept} was removed without --purge");
    }
    let o = run_script("uninstall.sh", &root, &["--purge"]);
    assert!(o.status.success(), "uninstall.sh --purge: {}", text(&o));
    for gone in ["etc/rvm-agent", "var/lib/rvm-agent", "usr/share/rvm-agent"] {
        assert!(!root.join(gone).exists(), "{gone} is still there after --purge");
    }
}

#[test]
fn install_sh_takes_broker_and_site_from_the_bundle_and_a_directory_bundle_too() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = CertDir::new(tmp.path().join("certs"));
    pki::init(&certs, &["localhost".into()], false).unwrap();
    let dir = tmp.path().join("bundle-dir");
    let o = Command::new(bin_path("fleetctl"))
        .args(["certs", "bundle", "rvm7", "--dir"])
        .arg(certs.root())
        .arg("--out")
        .arg(&dir)
        .args(["--broker", "10.0.0.5:8883"])
        .output()
        .unwrap();
    assert!(o.status.success(), "fleetctl: {}", text(&o));
    assert_eq!(mode(&dir.join("rvm7/device.key")), 0o600);
    let root = tmp.path().join("root");
    let agent = bin_path("rvm-agent");
    let o = install(
        &root,
        &[
            "--bundle",
            &dir.display().to_string(),
            "--binary",
            &agent.display().to_string(),
            "--polkit",
            "pkla",
        ],
    );
    assert!(o.status.success(), "install.sh: {}", text(&o));
    let file = rvm_agent::config::AgentFile::parse(&config_under(&root)).unwrap();
    assert_eq!(file.device_id, "rvm7");
    assert_eq!(file.mqtt.broker.entries(), ["10.0.0.5:8883"]);
    assert_eq!(file.site, None, "no site anywhere: the line is left out");
    assert!(file.validate().is_empty(), "{:?}", file.validate());
    let pkla = root.join("etc/polkit-1/localauthority/50-local.d/50-rvm-agent.pkla");
    assert!(
        std::fs::read_to_string(pkla)
            .unwrap()
            .contains("unix-user:rvm-agent")
    );
}

#[test]
fn install_sh_refuses_bad_input_and_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = build_bundle(tmp.path(), "rvm1", &[]);
    let agent = bin_path("rvm-agent").display().to_string();
    let b = bundle.display().to_string();
    let root = tmp.path().join("root");
    let cases: &[(&[&str], &str)] = &[
        (&["--bundle", &b, "--binary", &agent], "no broker"),
        (
            &[
                "--bundle",
                &b,
                "--binary",
                &agent,
                "--broker",
                "fleet.example.com",
            ],
            "has no :PORT",
        ),
        (
            &["--bundle", &b, "--binary", &agent, "--broker", "h:99999"],
            "outside 1..65535",
        ),
        (
            &[
                "--bundle", &b, "--binary", &agent, "--broker", "h:1", "--site", "a/b",
            ],
            "--site",
        ),
        (
            &["--bundle", "/nonexistent.tar", "--binary", &agent],
            "does not exist",
        ),
        (
            &[
                "--bundle", &b, "--binary", &agent, "--broker", "h:1", "--units", "vision",
            ],
            "no unit type suffix",
        ),
        (&["--frobnicate"], "unknown option --frobnicate"),
    ];
    for (args, needle) in cases {
        let o = install(&root, args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} was accepted");
        assert!(err.contains(needle), "{args:?}: {needle:?} not in {err:?}");
    }
    let o = Command::new("sh")
        .arg(repo().join("config/install.sh"))
        .args(["--bundle", &b])
        .env("DESTDIR", "relative/path")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("DESTDIR must be an absolute path"));
}

#[test]
fn install_unit_has_the_hardening_and_watchdog_settings() {
    let unit = std::fs::read_to_string(repo().join("config/rvm-agent.service")).unwrap();
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    for want in [
        "Type=notify",
        "WatchdogSec=30",
        "Restart=on-failure",
        "User=rvm-agent",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/rvm-agent",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "Environment=MALLOC_ARENA_MAX=2",
        "Environment=GLIBC_TUNABLES=glibc.malloc.tcache_count=0",
    ] {
        assert!(lines.contains(&want), "{want} missing from the unit");
    }
    assert!(lines.iter().any(|l| l.starts_with("MemoryMax=")));
}

#[test]
fn install_unit_passes_systemd_analyze_verify() {
    let analyze = require_tool("systemd-analyze", "systemd");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let bin = root.join("usr/bin/rvm-agent");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    std::fs::copy(bin_path("rvm-agent"), &bin).unwrap();
    // a test-only copy of the unit whose programs exist here
    let unit = std::fs::read_to_string(repo().join("config/rvm-agent.service"))
        .unwrap()
        .replace("/usr/bin/rvm-agent", &bin.display().to_string());
    let path = tmp.path().join("rvm-agent.service");
    std::fs::write(&path, unit).unwrap();
    let o = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&path)
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    // systemd-analyze reports problems of other units on the host too: only ours count
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("rvm-agent.service")).collect();
    assert!(
        o.status.success() && ours.is_empty(),
        "systemd-analyze verify: {}",
        text(&o)
    );
}

#[test]
fn install_deb_metadata_names_files_that_exist() {
    let cargo: toml::Value =
        toml::from_str(&std::fs::read_to_string(repo().join("agent/Cargo.toml")).unwrap()).unwrap();
    let deb = &cargo["package"]["metadata"]["deb"];
    let agent_dir = repo().join("agent");
    let assets = deb["assets"].as_array().expect("assets");
    assert!(!assets.is_empty());
    for a in assets {
        let src = a[0].as_str().unwrap();
        if src.starts_with("target/") {
            continue; // built by cargo deb
        }
        assert!(agent_dir.join(src).exists(), "asset {src} does not exist");
    }
    let scripts = agent_dir.join(deb["maintainer-scripts"].as_str().unwrap());
    for s in ["postinst", "prerm", "postrm"] {
        let p = scripts.join(s);
        assert!(p.exists(), "{} is missing", p.display());
        assert_eq!(mode(&p) & 0o111, 0o111, "{} is not executable", p.display());
        let o = Command::new("sh").arg("-n").arg(&p).output().unwrap();
        assert!(o.status.success(), "{s}: {}", text(&o));
    }
    for s in ["install.sh", "uninstall.sh"] {
        let o = Command::new("sh")
            .arg("-n")
            .arg(repo().join("config").join(s))
            .output()
            .unwrap();
        assert!(o.status.success(), "{s}: {}", text(&o));
    }
}

#[test]
fn install_agent_tells_systemd_ready_then_watchdog_over_notify_socket() {
    use std::os::unix::net::UnixDatagram;
    use std::time::{Duration, Instant};

    let tmp = tempfile::tempdir().unwrap();
    let certs = CertDir::new(tmp.path().join("certs"));
    pki::init(&certs, &["localhost".into()], false).unwrap();
    // nothing listens on the broker port: the agent runs and keeps reconnecting
    let port = rvm_fleet_tests::free_port();
    let config = rvm_fleet_tests::write_agent_config(tmp.path(), &certs, "rvm9", port, 500, "").unwrap();
    let sock_path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let log = tmp.path().join("agent.log");
    let mut agent = rvm_fleet_tests::Child::spawn_env(
        "rvm-agent",
        &["--config", &config.display().to_string()],
        &[
            ("NOTIFY_SOCKET", &sock_path.display().to_string()),
            ("WATCHDOG_USEC", "1000000"),
        ],
        &log,
    )
    .unwrap();
    let mut got: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 256];
    while Instant::now() < deadline && got.iter().filter(|m| *m == "WATCHDOG=1").count() < 3 {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
    }
    agent.terminate();
    let ready = got.iter().position(|m| m == "READY=1");
    assert!(
        ready.is_some(),
        "no READY=1 from the agent; got {got:?}\n{}",
        rvm_fleet_tests::read(&log)
    );
    let watchdogs = got.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(
        watchdogs >= 3,
        "{watchdogs} WATCHDOG=1 in 20 s with WATCHDOG_USEC=1 s: {got:?}"
    );
    assert_eq!(got.iter().filter(|m| *m == "READY=1").count(), 1, "{got:?}");
}
