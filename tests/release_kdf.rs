//! SLOW on a cold target directory: this test builds the release binary
//! (`cargo build --release --bin proxborg`: several minutes the first time, seconds while it is
//! up to date; nothing else in the suite builds one, `tests/package.rs` packages the test
//! binary). It proves the shipped build has no fast-KDF switch: `PROXBORG_TEST_FAST_KDF` exists
//! only with debug assertions (`repo::key::test_fast_kdf`).

mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;

/// The release binary beside the test build's (`<target>/debug/proxborg` ->
/// `<target>/release/proxborg`), built or brought up to date first.
fn release_binary() -> PathBuf {
    let debug_bin = PathBuf::from(env!("CARGO_BIN_EXE_proxborg"));
    let target = debug_bin
        .parent()
        .and_then(|d| d.parent())
        .expect("<target>/debug/proxborg")
        .to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--locked", "--bin", "proxborg"])
        .arg("--target-dir")
        .arg(&target)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("running cargo build --release");
    assert!(status.success(), "cargo build --release failed");
    target.join("release/proxborg")
}

/// `cmd` (a `Scratch` command) with its program replaced by `bin`, keeping its environment.
fn with_binary(bin: &PathBuf, cmd: &Command) -> Command {
    let mut c = Command::new(bin);
    c.env_clear();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    for k in ["PATH", "HOME"] {
        if let Some(v) = std::env::var_os(k) {
            c.env(k, v);
        }
    }
    c
}

fn kdf_costs(s: &Scratch) -> (u64, u64, u64) {
    let c: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.repo().join("config")).unwrap()).unwrap();
    let k = &c["key"]["kdf"];
    (
        k["m_cost_kib"].as_u64().unwrap(),
        k["t_cost"].as_u64().unwrap(),
        k["p_cost"].as_u64().unwrap(),
    )
}

#[test]
fn the_release_binary_ignores_the_fast_kdf_switch() {
    let release = release_binary();

    // The switch works in the test build (so the test below is not vacuous) ...
    let debug_made = Scratch::new();
    debug_made.init("repokey");
    assert_eq!(kdf_costs(&debug_made), (64, 1, 1));

    // ... and the release build, with the switch set, makes a full-cost key.
    let s = Scratch::new();
    let mut init = with_binary(&release, &s.cmd());
    assert!(init.get_envs().any(|(k, _)| k == "PROXBORG_TEST_FAST_KDF"));
    let out = run(init.args(["init", "--encryption", "repokey"]));
    assert_success(&out, &["init (release)"]);
    assert_eq!(kdf_costs(&s), (64 * 1024, 3, 4));
    let out = run(with_binary(&release, &s.cmd()).args(["list"]));
    assert_success(&out, &["list (release)"]);

    // It also refuses the test build's fast key, switch or not.
    let out = run(with_binary(&release, &debug_made.cmd()).args(["list"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Argon2id costs too low (m=64 KiB, t=1, p=1"),
        "{}",
        stderr(&out)
    );
}
