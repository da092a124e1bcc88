//! The vzdump hook, run the way vzdump runs it: empty environment plus vzdump's variables.

mod common;
use common::*;
use std::path::Path;

fn hook(
    s: &Scratch,
    conf: &Path,
    phase_args: &[&str],
    target: &Path,
    vmtype: &str,
) -> std::process::Output {
    let vars = [
        ("LVM_SUPPRESS_FD_WARNINGS", "1".to_string()),
        ("STOREID", "local".to_string()),
        ("DUMPDIR", s.path("dump").display().to_string()),
        ("VMTYPE", vmtype.to_string()),
        ("HOSTNAME", "db".to_string()),
        ("TARGET", target.display().to_string()),
        ("LOGFILE", s.path("dump/x.log").display().to_string()),
    ];
    run_vzdump_hook(conf, &vars, phase_args)
}

fn setup(extra_conf: &str) -> (Scratch, std::path::PathBuf, std::path::PathBuf) {
    let s = Scratch::new();
    s.init("repokey");
    std::fs::create_dir_all(s.path("dump")).unwrap();
    std::fs::write(s.path("pass"), format!("{PASS}\n")).unwrap();
    let conf = s.path("proxborg.conf");
    std::fs::write(
        &conf,
        format!(
            "repo: {}\npassphrase-file: {}\n{extra_conf}",
            s.repo().display(),
            s.path("pass").display()
        ),
    )
    .unwrap();
    let target = s.path("dump/vzdump-qemu-200-2026_11_23-06_00_00.vma");
    std::fs::write(&target, [noise(5 << 20, 1), vec![0; 3 << 20]].concat()).unwrap();
    (s, conf, target)
}

#[test]
fn backup_end_archives_the_dump_and_other_phases_do_nothing() {
    let (s, conf, target) = setup("");
    for phase in [
        &["job-init"][..],
        &["job-start"],
        &["backup-start", "snapshot", "200"],
        &["pre-stop", "snapshot", "200"],
        &["pre-restart", "snapshot", "200"],
        &["post-restart", "snapshot", "200"],
        &["log-end", "snapshot", "200"],
        &["job-end"],
    ] {
        let out = hook(&s, &conf, phase, &target, "qemu");
        assert!(out.status.success(), "{phase:?}: {}", stderr(&out));
        assert!(
            out.stdout.is_empty() && out.stderr.is_empty(),
            "{phase:?} was not quiet"
        );
    }
    assert!(
        files_under(&s.repo().join("archives")).is_empty(),
        "a no-op phase made an archive"
    );

    let out = hook(
        &s,
        &conf,
        &["backup-end", "snapshot", "200"],
        &target,
        "qemu",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let name = "vzdump-qemu-200-2026_11_23-06_00_00.vma";
    let restored = s.ok(&["extract", name, "--stdout"]).stdout;
    assert!(
        restored == std::fs::read(&target).unwrap(),
        "archived bytes differ from the dump"
    );
    let info: serde_json::Value =
        serde_json::from_slice(&s.ok(&["info", name, "--json"]).stdout).unwrap();
    assert_eq!(info["metadata"]["vmid"], 200);
    assert_eq!(info["metadata"]["vmtype"], "qemu");
    assert_eq!(info["metadata"]["hostname"], "db");
    assert!(target.exists(), "dump removed without remove-dump");
}

#[test]
fn remove_dump_deletes_the_file_only_after_it_reads_back() {
    let (s, conf, target) = setup("remove-dump: 1\n");
    let out = hook(
        &s,
        &conf,
        &["backup-end", "snapshot", "200"],
        &target,
        "qemu",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!target.exists(), "dump not removed");
    assert!(stderr(&out).contains("verified and removed"));
    s.ok(&["check", "--verify-data"]);
}

#[test]
fn a_missing_repository_fails_the_guest_with_one_line() {
    let (s, _, target) = setup("");
    let conf = s.path("bad.conf");
    std::fs::write(&conf, format!("repo: {}\n", s.path("nowhere").display())).unwrap();
    let out = hook(
        &s,
        &conf,
        &["backup-end", "snapshot", "200"],
        &target,
        "qemu",
    );
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("nowhere"), "{err}");
    // A broken settings file is named with its line.
    std::fs::write(&conf, "repo /x\n").unwrap();
    let out = hook(
        &s,
        &conf,
        &["backup-end", "snapshot", "200"],
        &target,
        "qemu",
    );
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("bad.conf:1"), "{}", stderr(&out));
}

#[test]
fn config_check_names_bad_lines() {
    let s = Scratch::new();
    let conf = s.path("p.conf");
    std::fs::write(&conf, "repo: /srv/r\nkeep-daily: x\nbogus: 1\n").unwrap();
    let out = run(proxborg().args(["config", "check"]).arg(&conf));
    assert_eq!(code(&out), 2);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("p.conf:2:") && report.contains("p.conf:3:"),
        "{report}"
    );
    std::fs::write(&conf, "repo: /srv/r\nkeep-daily: 7\n").unwrap();
    let out = run(proxborg().args(["config", "check"]).arg(&conf));
    assert!(out.status.success(), "{}", stderr(&out));
}
