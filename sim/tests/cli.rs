//! The `rvm-sim` binary's command line, run as a user runs it. Being an integration test of
//! this package also makes `cargo test --workspace` build the binary, which the end-to-end
//! suites (`tests/tests/chaos.rs`, `scenario.rs`) start by path.

use std::process::Command;

fn rvm_sim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rvm-sim"))
        .args(args)
        .output()
        .expect("run rvm-sim")
}

#[test]
fn help_lists_the_demo_and_the_simulator() {
    let out = rvm_sim(&["--help"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["demo", "simulate"] {
        assert!(
            text.lines().any(|l| l.trim_start().starts_with(sub)),
            "no {sub} in:\n{text}"
        );
    }
}

#[test]
fn simulate_without_a_broker_is_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().display().to_string();
    let out = rvm_sim(&["simulate", "--certs", &certs]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--broker"), "{err}");
}
