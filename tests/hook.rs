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
    write_vma(&s, &target);
    (s, conf, target)
}

const VM_CONF: &str = "name: db\nscsi0: local:200/vm-200-disk-0.raw,size=9M\n";

/// A real VMA of one 9 MiB drive (5 MiB of noise, then zeros), written by the simulated
/// node's VMA writer (pve/lib/vma.py), as vzdump would write it.
fn write_vma(s: &Scratch, target: &Path) {
    let disk = s.path("vm-200-disk-0.raw");
    if !disk.exists() {
        std::fs::write(&disk, [noise(5 << 20, 1), vec![0; 4 << 20]].concat()).unwrap();
    }
    let script = format!(
        "import sys; sys.path.insert(0, '{}/pve/lib'); from vma import write_vma; \
         write_vma(open(sys.argv[1], 'wb'), [('qemu-server.conf', {VM_CONF:?}.encode())], \
         [('drive-scsi0', 9 << 20, sys.argv[2])])",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .arg(target)
        .arg(&disk)
        .output()
        .expect("python3 missing: apt-get install python3");
    assert!(out.status.success(), "{}", stderr(&out));
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
    // The VMA is taken apart into its config and the drive, as `proxborg 200` stores a VM.
    let listing = String::from_utf8(s.ok(&["list", name]).stdout).unwrap();
    assert!(
        listing.lines().count() == 2
            && listing.contains("./qemu-server.conf")
            && listing.contains("./drive-scsi0.raw"),
        "{listing}"
    );
    let conf_out = s
        .ok(&["extract", name, "qemu-server.conf", "--stdout"])
        .stdout;
    assert_eq!(String::from_utf8_lossy(&conf_out), VM_CONF);
    let drive = s
        .ok(&["extract", name, "drive-scsi0.raw", "--stdout"])
        .stdout;
    assert!(
        drive == std::fs::read(s.path("vm-200-disk-0.raw")).unwrap(),
        "the archived drive differs from the disk"
    );
    let info: serde_json::Value =
        serde_json::from_slice(&s.ok(&["info", name, "--json"]).stdout).unwrap();
    assert_eq!(info["metadata"]["vmid"], 200);
    assert_eq!(info["metadata"]["vmtype"], "qemu");
    assert_eq!(info["metadata"]["hostname"], "db");
    assert_eq!(info["metadata"]["format"], "drives");
    let drives = &info["metadata"]["drives"];
    assert_eq!(drives[0]["name"], "drive-scsi0", "{info}");
    assert_eq!(drives[0]["size"], 9 << 20, "{info}");
    // Whole 4 MiB chunks: the one with the noise's last MiB is data, the last one a hole.
    assert_eq!(drives[0]["allocated"], 8 << 20, "{info}");
    assert_eq!(drives[0]["new"], 8 << 20, "{info}");
    assert_eq!(
        drives[0]["read"],
        5 << 20,
        "the VMA leaves zero clusters out: {info}"
    );
    assert!(target.exists(), "dump removed without remove-dump");

    // The same VM dumped again (a fresh uuid) and compressed: stored as drives too, it
    // deduplicates against the first; a container's tar stays one file, byte for byte.
    let gz = s.path("dump/vzdump-qemu-200-2026_11_24-06_00_00.vma.gz");
    write_vma(&s, &s.path("dump/again.vma"));
    sh(&format!(
        "gzip -c '{}' > '{}'",
        s.path("dump/again.vma").display(),
        gz.display()
    ));
    let out = hook(&s, &conf, &["backup-end", "snapshot", "200"], &gz, "qemu");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("note: "), "{}", stderr(&out));
    let gz_name = gz.file_name().unwrap().to_str().unwrap();
    let info: serde_json::Value =
        serde_json::from_slice(&s.ok(&["info", gz_name, "--json"]).stdout).unwrap();
    let added = info["added_size"].as_u64().unwrap();
    assert!(
        added < (5 << 20) / 100,
        "the second dump added {added} bytes: {info}"
    );
    let tar = s.path("dump/vzdump-lxc-100-2026_11_23-06_00_00.tar");
    std::fs::write(&tar, noise(1 << 20, 2)).unwrap();
    let out = hook(&s, &conf, &["backup-end", "snapshot", "100"], &tar, "lxc");
    assert!(out.status.success(), "{}", stderr(&out));
    let tar_name = tar.file_name().unwrap().to_str().unwrap();
    let restored = s.ok(&["extract", tar_name, "--stdout"]).stdout;
    assert!(
        restored == std::fs::read(&tar).unwrap(),
        "archived tar differs"
    );
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
