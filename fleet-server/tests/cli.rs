//! `fleetctl` and `fleet-server` as processes. (Having integration tests here also makes
//! `cargo test --workspace` build the binaries that other suites start.)

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

#[test]
fn fleetctl_certs_init_writes_private_keys_0600_and_keeps_them_on_a_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_fleetctl"))
            .args(["certs", "init", "--dir"])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    assert!(run().status.success());
    let key = std::fs::read(dir.path().join("ca.key")).unwrap();
    for k in ["ca.key", "server.key", "command-signing.key"] {
        let mode = std::fs::metadata(dir.path().join(k))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{k}");
    }
    let again = run();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("kept"));
    assert_eq!(std::fs::read(dir.path().join("ca.key")).unwrap(), key);
}

#[test]
fn fleet_server_check_config_names_a_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("s.toml");
    std::fs::write(&cfg, "[http]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fleet-server"))
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen_port"));
}
