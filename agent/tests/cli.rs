//! The `rvm-agent` command line, run as a process. (Having integration tests here also makes
//! `cargo test --workspace` build the `rvm-agent` binary that other suites start.)

use std::process::Command;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rvm-agent"))
}

#[test]
fn check_config_names_every_bad_key_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        "device_id = \"bad/id\"\n[mqtt]\nbroker = \"nohost\"\nca = \"/x\"\ncert = \"/y\"\nkey = \"/z\"\n",
    )
    .unwrap();
    let out = agent()
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for key in ["device_id", "mqtt.broker", "mqtt.ca"] {
        assert!(err.contains(key), "{key} not named in: {err}");
    }
}

#[test]
fn collect_once_prints_gpu_figures_from_a_fake_orin_nano_tree() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jetson/orin-nano-jp6");
    let out = agent()
        .args([
            "--config",
            "/nonexistent/agent.toml",
            "collect",
            "--once",
            "--format",
            "json",
            "--gpu-backend",
            "jetson",
        ])
        .args([
            "--sysfs",
            &format!("{root}/sys"),
            "--procfs",
            &format!("{root}/proc"),
            "--etc-root",
            root,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["gpu_backend"], "gpu:jetson_sysfs");
    let g = &v["telemetry"]["gpu"];
    assert!(g["load_pct"].as_f64().is_some(), "{g}");
    assert!(
        g["rails"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "VDD_IN"),
        "{g}"
    );
    assert!(v["telemetry"]["memory"]["total_bytes"].as_u64().unwrap() > 0);
}

/// A saved capture checked without the board (issue 24): `cat` prints the lines and exits
/// before the snapshot is taken; the last line is still reported, as a live tegrastats' would be.
#[test]
fn collect_once_reads_a_tegrastats_capture_printed_by_a_command_that_already_exited() {
    let capture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tegrastats/orin-nano-jp6.txt"
    );
    let out = agent()
        .args([
            "--config",
            "/nonexistent/agent.toml",
            "collect",
            "--once",
            "--gpu-backend",
            "tegrastats",
            "--tegrastats-command",
            &format!("cat '{capture}'"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["gpu_backend"], "gpu:tegrastats");
    let g = &v["telemetry"]["gpu"];
    assert!(!g.is_null(), "the capture's figures are reported: {v}");
    // the capture's last line: VDD_IN 6626mW/6625mW
    let vdd_in = g["rails"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "VDD_IN")
        .unwrap_or_else(|| panic!("no VDD_IN rail in {g}"));
    assert_eq!(vdd_in["power_mw"], 6626.0, "{g}");
}
