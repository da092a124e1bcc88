//! The main job on the simulated PVE node (pve/sim, real zfs-fuse): plans, container file
//! backups restored through `pct restore`, vzdump images, datasets, and cleanup after signals.
//! The node lives in its own directory and pool; tests here take turns (one node).

mod common;
#[path = "support/node.rs"]
mod node;
use common::*;
use node::Node;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};

const SIM_DIR: &str = "/var/lib/proxborg-sim-e2e";

fn node() -> (MutexGuard<'static, ()>, &'static Node) {
    static LOCK: Mutex<()> = Mutex::new(());
    static NODE: OnceLock<Node> = OnceLock::new();
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let node = NODE.get_or_init(|| Node::up(SIM_DIR, "pxe2e"));
    node.heal();
    (guard, node)
}

/// The first archive named in a backup's `--json` results.
fn first_archive(out: &std::process::Output) -> String {
    let results: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON results ({e}): {}", stderr(out)));
    results[0]["archive"].as_str().unwrap().to_string()
}

fn run_node(node: &Node, s: &Scratch, args: &[&str]) -> std::process::Output {
    run(node.cmd(s).args(args))
}

#[test]
fn dry_run_prints_the_plan_and_touches_nothing() {
    let (_g, node) = node();
    let s = Scratch::new();
    let share = node.mountpoint("data/share");
    let out = run_node(
        node,
        &s,
        &[
            "--dry-run",
            "100:",
            "tank:!",
            "@prod",
            "200",
            share.to_str().unwrap(),
        ],
    );
    let plan = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        code(&out),
        1,
        "bind mount skip is a warning: {}{plan}",
        stderr(&out)
    );
    assert!(plan.contains("files of container 100 (tank)"), "{plan}");
    assert!(
        plan.contains("mp1      /var/cache/big"),
        "tank:! must include backup=0 mp1: {plan}"
    );
    assert!(plan.contains("skipped: bind mount"), "{plan}");
    assert!(plan.contains("vzdump image of VM 200 (db)"), "{plan}");
    assert!(
        plan.contains("dataset ") && plan.contains("data/share"),
        "{plan}"
    );
    assert_eq!(
        plan.matches("vzdump-qemu-200").count(),
        1,
        "200 twice must be backed up once: {plan}"
    );
    assert!(!s.repo().exists(), "dry run created a repository");
    assert_eq!(node.leftovers(), "");
    // JSON, and refusals.
    let out = run_node(node, &s, &["--dry-run", "--json", "100:", "999", "/tmp"]);
    assert_eq!(code(&out), 2);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["errors"].as_array().unwrap().len(), 2, "{json}");
    assert_eq!(json["jobs"][0]["kind"], "container_files");
}

#[test]
fn container_files_backup_restores_through_pct_restore() {
    let (_g, node) = node();
    let s = Scratch::new();
    s.init("repokey");
    let out = run_node(node, &s, &["100:", "--json"]);
    assert_eq!(
        code(&out),
        1,
        "expected warnings (bind mount, non-atomic zfs-fuse): {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("not atomically"), "{}", stderr(&out));
    assert_eq!(node.leftovers(), "", "snapshots or clones left behind");
    assert!(!std::path::Path::new("/run/proxborg")
        .join(format!("{}", 0))
        .exists());
    let freeze = std::fs::read_to_string(format!("{SIM_DIR}/log/freeze.log")).unwrap();
    let last: Vec<&str> = freeze.lines().rev().take(2).collect();
    assert!(
        last[1].contains("lxc-freeze -n 100") && last[0].contains("lxc-unfreeze -n 100"),
        "{freeze}"
    );

    let archive = first_archive(&out);
    assert!(archive.starts_with("dump-100-"), "{archive}");
    let listing = String::from_utf8(s.ok(&["list", &archive]).stdout).unwrap();
    let lines: Vec<&str> = listing.lines().collect();
    assert!(
        lines[0].ends_with("./etc/vzdump/pct.conf") && lines[0].contains("65534/65534"),
        "{listing}"
    );
    assert!(lines[1].ends_with("./etc/vzdump/pct.fw"), "{listing}");
    assert!(
        !listing.contains("session.tmp")
            && !listing.contains("cache.tmp")
            && !listing.contains("sshd.pid"),
        "vzdump excludes not applied"
    );
    assert!(listing.contains("./var/run/keep.state"));
    assert!(!listing.contains("lost+found"));
    assert!(listing.contains("./srv/data/"), "mp0 missing");
    assert!(
        !listing.contains("./var/cache/big/") || !listing.contains("./var/cache/big/x"),
        ""
    );
    assert!(
        listing.contains(" 33/33 "),
        "www-data not translated to 33: {listing}"
    );
    assert!(listing.contains("65534/65534") && listing.contains("./root/host-owned.txt"));
    let info: serde_json::Value =
        serde_json::from_slice(&s.ok(&["info", &archive, "--json"]).stdout).unwrap();
    assert_eq!(info["metadata"]["vmid"], 100);
    assert_eq!(info["metadata"]["kind"], "lxc");

    // Restore as a new unprivileged container through the simulated pct restore.
    node.sh("pct destroy 310 >/dev/null 2>&1 || true");
    node.sh(&format!(
        "{} export-tar {archive} - | pct restore 310 - --rootfs local-zfs:1 --mp0 local-zfs:1,mp=/srv/data --unprivileged 1",
        s.bin()
    ));
    let new_root = node.mountpoint("data/subvol-310-disk-0");
    let old_root = node.mountpoint("data/subvol-100-disk-0");
    let owner = |p: &PathBuf, rel: &str| {
        sh(&format!("stat -c %u:%g '{}/{rel}'", p.display()))
            .trim()
            .to_string()
    };
    assert_eq!(
        owner(&new_root, "etc/hostname"),
        owner(&old_root, "etc/hostname")
    );
    let www = sh(&format!(
        "cd '{}' && find . -uid 100033 | sort",
        old_root.display()
    ));
    let www_new = sh(&format!(
        "cd '{}' && find . -uid 100033 | sort",
        new_root.display()
    ));
    assert_eq!(www, www_new, "files of www-data differ after restore");
    assert!(!www.is_empty());
    let new_mp0 = node.mountpoint("data/subvol-310-disk-1");
    let old_mp0 = node.mountpoint("data/subvol-100-disk-1");
    let same = sh(&format!(
        "diff -r '{}' '{}' && echo same",
        old_mp0.display(),
        new_mp0.display()
    ));
    assert_eq!(same.trim(), "same");
    let conf = std::fs::read_to_string(format!("{SIM_DIR}/etc/pve/lxc/310.conf")).unwrap();
    assert!(conf.contains("hostname: tank"), "{conf}");
    node.sh("pct destroy 310 >/dev/null 2>&1 || true");
}

#[test]
fn vm_backup_stores_drives_that_deduplicate_and_restores_through_export_vma() {
    let (_g, node) = node();
    let s = Scratch::new();
    s.init("none");
    let mut archives = Vec::new();
    for _ in 0..2 {
        let out = run_node(node, &s, &["200", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        archives.push(first_archive(&out));
        std::thread::sleep(std::time::Duration::from_millis(1100)); // distinct names
    }
    let archive = &archives[0];
    assert!(
        archive.starts_with("vzdump-qemu-200-") && archive.ends_with(".vma"),
        "{archive}"
    );
    // The VMA is taken apart: its config, firewall and one sparse image per drive (scsi1 has
    // backup=0).
    let listing = String::from_utf8(s.ok(&["list", archive]).stdout).unwrap();
    let names: Vec<&str> = listing
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "./qemu-server.conf",
            "./qemu-server.fw",
            "./drive-scsi0.raw",
            "./drive-virtio1.raw"
        ],
        "{listing}"
    );
    // A second run of an unchanged VM, with vzdump's fresh uuid, adds under 1% of the data.
    let stats = |a: &str| -> serde_json::Value {
        serde_json::from_slice(&s.ok(&["info", a, "--json"]).stdout).unwrap()
    };
    let (first, second) = (stats(&archives[0]), stats(&archives[1]));
    let data = first["original_size"].as_u64().unwrap();
    let added = second["added_size"].as_u64().unwrap();
    assert!(data > 1 << 20, "{first}");
    assert!(
        added * 100 < data,
        "second run added {added} of {data} bytes"
    );
    // Restored through export-vma and the node's qmrestore: the same disks.
    node.sh(&format!(
        "qmrestore - 290 --force 1 < <({} export-vma {archive} -) >/dev/null",
        s.bin()
    ));
    // scsi1 (backup=0) is not in the dump, so qmrestore numbers the disks 0 and 1.
    for (from, to) in [("0", "0"), ("2", "1")] {
        let same = node.sh(&format!(
            "cmp $PROXBORG_SIM_DIR/vz/images/200/vm-200-disk-{from}.raw $PROXBORG_SIM_DIR/vz/images/290/vm-290-disk-{to}.raw && echo same"
        ));
        assert_eq!(same.trim(), "same", "disk {from} differs after restore");
    }
    let conf = node.sh("cat $PROXBORG_PVE_ROOT/nodes/*/qemu-server/290.conf");
    assert!(conf.contains("name: db"), "{conf}");
    // To a file: written beside it and renamed, a VMA, nothing else left in the directory.
    let out_dir = s.path("vma-out");
    std::fs::create_dir(&out_dir).unwrap();
    let file = out_dir.join("200.vma");
    s.ok(&["export-vma", archive, file.to_str().unwrap()]);
    assert_eq!(&std::fs::read(&file).unwrap()[..4], b"VMA\0");
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 1);
    // extract gives the raw disks.
    let disk0 = s
        .ok(&["extract", archive, "drive-scsi0.raw", "--stdout"])
        .stdout;
    let orig = std::fs::read(format!("{SIM_DIR}/vz/images/200/vm-200-disk-0.raw")).unwrap();
    assert!(disk0 == orig, "extracted drive differs");
    node.sh(
        "rm -rf $PROXBORG_SIM_DIR/vz/images/290 $PROXBORG_PVE_ROOT/nodes/*/qemu-server/290.conf",
    );
}

#[test]
fn dataset_backup_and_signals_leave_nothing_behind() {
    let (_g, node) = node();
    let s = Scratch::new();
    s.init("none");
    let share = node.mountpoint("data/share");
    std::fs::write(share.join("big.bin"), noise(200 << 20, 5)).unwrap();
    let share_s = share.to_str().unwrap().to_string();
    let out = run_node(node, &s, &[&share_s, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let archive = first_archive(&out);
    assert!(archive.starts_with("dataset-"), "{archive}");
    let dest = s.path("dest");
    std::fs::create_dir(&dest).unwrap();
    s.ok(&["extract", &archive, "-C", dest.to_str().unwrap()]);
    let same = sh(&format!(
        "diff -r '{share_s}' '{}' && echo same",
        dest.display()
    ));
    assert_eq!(same.trim(), "same");

    // SIGTERM while it reads: guards undo the snapshot and clone, exit 130.
    for (sig, files_cache) in [("TERM", "off"), ("INT", "off")] {
        let mut child = node
            .cmd(&s)
            .args([&share_s, "--files-cache", files_cache])
            .spawn()
            .unwrap();
        let t = std::time::Instant::now();
        while !node.leftovers().contains("proxborg-clone") {
            assert!(t.elapsed().as_secs() < 30, "no clone appeared");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        sh(&format!("kill -{sig} {}", child.id()));
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(130), "SIG{sig}");
        assert_eq!(node.leftovers(), "", "left behind after SIG{sig}");
    }
    // SIGKILL leaves things; the next run (or `proxborg cleanup`) removes them.
    let mut child = node
        .cmd(&s)
        .args([&share_s, "--files-cache", "off"])
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while !node.leftovers().contains("proxborg-clone") {
        assert!(t.elapsed().as_secs() < 30, "no clone appeared");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    node.heal();
    assert_ne!(
        node.leftovers(),
        "",
        "kill -9 should leave something to clean"
    );
    let out = run_node(node, &s, &["cleanup"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(node.leftovers(), "", "cleanup left: {}", stderr(&out));
    std::fs::remove_file(share.join("big.bin")).unwrap();
    s.ok(&["check"]);
}

#[test]
fn all_mountpoints_with_bang_and_pct_conf_as_vzdump_writes_it() {
    let (_g, node) = node();
    let s = Scratch::new();
    s.init("none");
    let out = run_node(node, &s, &["tank:!", "--json"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let archive = first_archive(&out);
    let listing = String::from_utf8(s.ok(&["list", &archive]).stdout).unwrap();
    assert!(
        listing.contains("./var/cache/big/"),
        "mp1 (backup=0) missing with tank:!"
    );
    let conf = String::from_utf8(
        s.ok(&["extract", &archive, "etc/vzdump/pct.conf", "--stdout"])
            .stdout,
    )
    .unwrap();
    assert!(
        conf.contains("hostname: tank") && conf.contains("mp0:"),
        "{conf}"
    );
    for dropped in ["lock:", "parent:", "[before-upgrade]", "snapshots"] {
        assert!(!conf.contains(dropped), "pct.conf keeps {dropped}: {conf}");
    }
    assert_eq!(node.leftovers(), "");
}

#[test]
fn a_failing_guest_writes_no_archive_and_the_others_still_run() {
    let (_g, node) = node();
    let s = Scratch::new();
    s.init("none");
    let img = format!("{SIM_DIR}/vz/images/200/vm-200-disk-0.raw");
    std::fs::rename(&img, format!("{img}.away")).unwrap();
    let share = node.mountpoint("data/share");
    let out = run_node(node, &s, &["200", "999", share.to_str().unwrap()]);
    std::fs::rename(format!("{img}.away"), &img).unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("vzdump") && err.contains("999"), "{err}");
    let names = String::from_utf8(s.ok(&["list"]).stdout).unwrap();
    assert!(
        !names.contains("vzdump-qemu-200"),
        "an archive was written for a failed vzdump: {names}"
    );
    assert!(
        names.contains("dataset-"),
        "the good target was not backed up: {names}"
    );
    assert_eq!(node.leftovers(), "");
}

#[test]
fn custom_idmap_container_records_ids_through_its_own_map() {
    let (_g, node) = node();
    let s = Scratch::new();
    s.init("none");
    let out = run_node(node, &s, &["102:", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let archive = first_archive(&out);
    let listing = String::from_utf8(s.ok(&["list", &archive]).stdout).unwrap();
    let owner_of = |path: &str| -> String {
        let line = listing
            .lines()
            .find(|l| l.ends_with(path))
            .unwrap_or_else(|| panic!("{path} missing:\n{listing}"));
        line.split_whitespace().nth(1).unwrap().to_string()
    };
    assert_eq!(
        owner_of("./etc/hostname"),
        "0/0",
        "host 200000 is the container's root"
    );
    assert_eq!(
        owner_of("./home/shared.txt"),
        "1000/1000",
        "1000 maps to itself"
    );
    assert_eq!(
        owner_of("./root/outside-map.txt"),
        "65534/65534",
        "unmapped ids become nobody"
    );
    assert_eq!(owner_of("./var/www/html/index.html"), "33/33");
    assert_eq!(node.leftovers(), "");
}

#[test]
fn overlay_idmap_gives_the_same_item_stream_as_in_process_translation() {
    let (_g, node) = node();
    let s = Scratch::new();
    s.init("none");
    let entries = |archive: &str| -> Vec<serde_json::Value> {
        let out = s.ok(&["list", archive, "--json"]).stdout;
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| !v["path"].as_str().unwrap().starts_with("./etc/vzdump/"))
            .collect()
    };
    for ct in ["100:", "102:"] {
        let mut names = Vec::new();
        for via in ["in-process", "overlay"] {
            let out = run_node(
                node,
                &s,
                &[ct, "--idmap-via", via, "--files-cache", "off", "--json"],
            );
            assert!(code(&out) <= 1, "{ct} via {via}: {}", stderr(&out));
            names.push(first_archive(&out));
            std::thread::sleep(std::time::Duration::from_millis(1100)); // distinct archive names
        }
        let (a, b) = (entries(&names[0]), entries(&names[1]));
        assert!(a.len() > 20, "{ct}: too few entries");
        let first = a.iter().zip(&b).find(|(x, y)| x != y);
        assert!(
            first.is_none() && a.len() == b.len(),
            "{ct}: overlay and in-process item streams differ: {first:?}"
        );
        assert_eq!(node.leftovers(), "");
        assert_eq!(
            sh("mount | grep -c fuse-overlayfs || true").trim(),
            "0",
            "overlay mount left behind"
        );
    }
}

#[test]
fn vzdump_hook_archives_a_dump_from_the_node_and_runs_the_file_level_backup() {
    let (_g, node) = node();
    let s = Scratch::new();
    s.init("repokey");
    let dump = s.path("dump");
    std::fs::create_dir(&dump).unwrap();
    node.sh(&format!(
        "vzdump 100 --dumpdir {} --compress 0 --mode snapshot --quiet >/dev/null 2>&1",
        dump.display()
    ));
    let tar = std::fs::read_dir(&dump)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "tar"))
        .expect("the node's vzdump wrote no .tar");
    std::fs::write(s.path("pass"), format!("{PASS}\n")).unwrap();
    let conf = s.path("proxborg.conf");
    std::fs::write(
        &conf,
        format!(
            "repo: {}\npassphrase-file: {}\npve-root: {}\nfile-level: 1\n",
            s.repo().display(),
            s.path("pass").display(),
            node.get("PROXBORG_PVE_ROOT")
        ),
    )
    .unwrap();
    // As vzdump runs it: an emptied environment plus its variables.
    let vars = [
        ("DUMPDIR", dump.display().to_string()),
        ("VMTYPE", "lxc".to_string()),
        ("HOSTNAME", "tank".to_string()),
        ("TARGET", tar.display().to_string()),
        ("PROXBORG_CACHE_DIR", s.path("cache").display().to_string()),
        ("PROXBORG_HOOK_PATH", format!("{SIM_DIR}/bin")),
    ];
    let out = run_vzdump_hook(&conf, &vars, &["backup-end", "snapshot", "100"]);
    assert!(code(&out) <= 1, "{}", stderr(&out));
    let names = String::from_utf8(s.ok(&["list"]).stdout).unwrap();
    let tar_name = tar.file_name().unwrap().to_str().unwrap();
    assert!(names.contains(tar_name), "{names}");
    assert!(
        names.contains("dump-100-"),
        "file-level backup missing: {names}"
    );
    assert!(s.ok(&["extract", tar_name, "--stdout"]).stdout == std::fs::read(&tar).unwrap());
    assert_eq!(node.leftovers(), "");

    // A VM's zstd-compressed VMA dump from the node's vzdump: taken apart into drives, as
    // `proxborg 200` stores them, so each deduplicates against the other.
    node.sh(&format!(
        "vzdump 200 --dumpdir {} --compress zstd --mode snapshot --quiet >/dev/null 2>&1",
        dump.display()
    ));
    let vma = std::fs::read_dir(&dump)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".vma.zst"))
        .expect("the node's vzdump wrote no .vma.zst");
    let vars = [
        ("VMTYPE", "qemu".to_string()),
        ("HOSTNAME", "db".to_string()),
        ("TARGET", vma.display().to_string()),
    ];
    let out = run_vzdump_hook(&conf, &vars, &["backup-end", "snapshot", "200"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let vma_name = vma.file_name().unwrap().to_str().unwrap();
    let drive = s
        .ok(&["extract", vma_name, "drive-scsi0.raw", "--stdout"])
        .stdout;
    let disk = std::fs::read(format!("{SIM_DIR}/vz/images/200/vm-200-disk-0.raw")).unwrap();
    assert!(
        drive == disk,
        "the hook's archived drive differs from the disk"
    );
    let out = run_node(node, &s, &["200", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let info: serde_json::Value =
        serde_json::from_slice(&s.ok(&["info", &first_archive(&out), "--json"]).stdout).unwrap();
    let (added, data) = (
        info["added_size"].as_u64().unwrap(),
        info["original_size"].as_u64().unwrap(),
    );
    assert!(
        added * 100 < data,
        "proxborg 200 after the hook's dump added {added} of {data} bytes"
    );
    assert_eq!(
        info["metadata"]["drives"].as_array().unwrap().len(),
        2,
        "{info}"
    );
}

#[test]
fn prune_after_backup_keeps_the_series_to_its_rules() {
    let (_g, node) = node();
    let s = Scratch::new();
    s.init("none");
    let share = node.mountpoint("data/share");
    let share = share.to_str().unwrap();
    assert_success(&s.create_stdin("unrelated-2020-01-01", b"x"), &["create"]);
    for _ in 0..3 {
        let out = run_node(node, &s, &[share, "--prune", "--keep-last", "2"]);
        assert!(out.status.success(), "{}", stderr(&out));
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let names = String::from_utf8(s.ok(&["list"]).stdout).unwrap();
    assert_eq!(names.matches("dataset-").count(), 2, "{names}");
    assert!(
        names.contains("unrelated-2020-01-01"),
        "prune touched another series: {names}"
    );
}

/// A process of CT 100 appends line i to a file on rootfs and then to one on mp0, so at any
/// instant the mp0 file has as many lines as the rootfs one, or one fewer. zfs-fuse takes the
/// snapshots one call each; proxborg keeps the container frozen across the calls (the simulated
/// lxc-freeze stops the registered process as the cgroup freezer would), so the archive must
/// still show the two files in step. Without the freeze, the writer runs on between the calls.
#[test]
fn lockstep_writer_in_the_container_is_never_out_of_step_in_the_archive() {
    let (_g, node) = node();
    let s = Scratch::new();
    s.init("none");
    let root = node.mountpoint("data/subvol-100-disk-0");
    let mp0 = node.mountpoint("data/subvol-100-disk-1");
    let (a, b) = (root.join("root/lockstep.a"), mp0.join("lockstep.b"));
    // The writer stops at the top of its loop when told to: a SIGKILL mid-write could hang
    // zfs-fuse (see Node::heal).
    let stop = s.path("stop-lockstep");
    let mut writer = Command::new("sh")
        .arg("-c")
        .arg(r#"i=0; while [ ! -e "$3" ]; do i=$((i + 1)); echo $i >> "$1"; echo $i >> "$2"; done"#)
        .args([
            "lockstep",
            a.to_str().unwrap(),
            b.to_str().unwrap(),
            stop.to_str().unwrap(),
        ])
        .spawn()
        .unwrap();
    let procs = format!("{SIM_DIR}/state/100.procs");
    std::fs::write(&procs, format!("{}\n", writer.id())).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = run_node(node, &s, &["100:", "--json"]);
    std::fs::write(&stop, "").unwrap();
    writer.wait().unwrap();
    std::fs::remove_file(&procs).unwrap();
    let written = std::fs::read_to_string(&a).unwrap().lines().count();
    std::fs::remove_file(&a).unwrap();
    std::fs::remove_file(&b).unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("not atomically"), "{}", stderr(&out));

    let archive = first_archive(&out);
    let dest = s.path("lockstep");
    std::fs::create_dir(&dest).unwrap();
    s.ok(&[
        "extract",
        &archive,
        "-C",
        dest.to_str().unwrap(),
        "root/lockstep.a",
        "srv/data/lockstep.b",
    ]);
    let lines = |p: &str| {
        std::fs::read_to_string(dest.join(p))
            .unwrap()
            .lines()
            .count()
    };
    let (la, lb) = (lines("root/lockstep.a"), lines("srv/data/lockstep.b"));
    assert!(la > 0 && la < written, "archive a={la}, written {written}");
    assert!(
        lb == la || lb + 1 == la,
        "out of step in the archive: rootfs {la} lines, mp0 {lb} lines"
    );
    assert_eq!(node.leftovers(), "");
}

/// SIGKILL while the container is frozen (a slow freezer) leaves it frozen; `proxborg cleanup`
/// finds the dead run's marker and thaws it, and touches no container it did not freeze.
#[test]
fn a_container_left_frozen_by_a_killed_run_is_thawed_by_cleanup() {
    let (_g, node) = node();
    let s = Scratch::new();
    s.init("none");
    let state = |vmid: u32| {
        std::fs::read_to_string(format!("{SIM_DIR}/state/{vmid}"))
            .unwrap()
            .trim()
            .to_string()
    };
    let delay = format!("{SIM_DIR}/state/100.freeze-delay");
    std::fs::write(&delay, "3").unwrap();
    let mut child = node.cmd(&s).args(["100:"]).spawn().unwrap();
    let t = std::time::Instant::now();
    while state(100) != "FROZEN" {
        assert!(t.elapsed().as_secs() < 30, "CT 100 never froze");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    node.heal();
    std::fs::remove_file(&delay).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(3500)); // the orphaned lxc-freeze ends
    assert_eq!(
        state(100),
        "FROZEN",
        "the kill should have left CT 100 frozen"
    );
    // a container frozen by someone else is not ours to thaw
    std::fs::write(format!("{SIM_DIR}/state/101"), "FROZEN").unwrap();
    let out = run_node(node, &s, &["cleanup"]);
    std::fs::write(format!("{SIM_DIR}/state/101"), "STOPPED").unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("thawed container 100"),
        "{}",
        stderr(&out)
    );
    assert_eq!(state(100), "RUNNING");
    assert!(!stderr(&out).contains("container 101"), "{}", stderr(&out));
    assert_eq!(node.leftovers(), "");
    let again = run_node(node, &s, &["cleanup"]);
    assert!(
        stderr(&again).contains("nothing to clean up"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn restore_brings_containers_and_vms_back_in_one_step() {
    let (_g, node) = node();
    let s = Scratch::new();
    s.init("none");
    let backup = |target: &str| {
        let out = run_node(node, &s, &[target, "--json"]);
        assert!(code(&out) <= 1, "{target}: {}", stderr(&out));
        first_archive(&out)
    };
    let owner = |p: &PathBuf, rel: &str| {
        sh(&format!("stat -c %u:%g '{}/{rel}'", p.display()))
            .trim()
            .to_string()
    };

    // CT 100: unprivileged, rootfs and mp0 on local-zfs; the bind mount mp2 is left out.
    let ct100 = backup("100:");
    let out = run_node(node, &s, &["restore", &ct100, "121", "--print"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        printed.starts_with(&format!(
            "proxborg export-tar {ct100} - | pct restore 121 - --rootfs local-zfs:8"
        )) && printed.contains(" --mp0 local-zfs:")
            && printed.contains("mp=/srv/data")
            && printed.trim_end().ends_with("--unprivileged 1"),
        "{printed}"
    );
    assert!(stderr(&out).contains("note: mp2"), "{}", stderr(&out));
    node.sh("pct destroy 121 >/dev/null 2>&1 || true");
    let out = run_node(node, &s, &["restore", &ct100, "121"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let conf = std::fs::read_to_string(format!("{SIM_DIR}/etc/pve/lxc/121.conf")).unwrap();
    assert!(
        conf.contains("hostname: tank")
            && conf.contains("unprivileged: 1")
            && conf.contains("rootfs: local-zfs:subvol-121-disk-0,size=8G")
            && conf.contains("mp=/srv/data"),
        "{conf}"
    );
    let (old_root, new_root) = (
        node.mountpoint("data/subvol-100-disk-0"),
        node.mountpoint("data/subvol-121-disk-0"),
    );
    assert_eq!(
        owner(&new_root, "etc/hostname"),
        owner(&old_root, "etc/hostname")
    );
    let www = |root: &PathBuf| {
        sh(&format!(
            "cd '{}' && find . -uid 100033 | sort",
            root.display()
        ))
    };
    assert!(!www(&old_root).is_empty());
    assert_eq!(www(&old_root), www(&new_root), "files of www-data differ");
    let same = sh(&format!(
        "diff -r '{}' '{}' && echo same",
        node.mountpoint("data/subvol-100-disk-1").display(),
        node.mountpoint("data/subvol-121-disk-1").display()
    ));
    assert_eq!(same.trim(), "same", "mp0 differs after restore");
    // An existing guest is refused without --force, before anything is written.
    let out = run_node(node, &s, &["restore", &ct100, "121"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    node.sh("pct destroy 121 >/dev/null 2>&1 || true");

    // CT 102 maps ids through its own lxc.idmap: restored from a file so the map applies.
    let ct102 = backup("102:");
    let printed = String::from_utf8(s.ok(&["restore", &ct102, "122", "--print"]).stdout).unwrap();
    assert!(
        printed.contains("/var/tmp/vzdump-lxc-122-restore.tar"),
        "{printed}"
    );
    node.sh("pct destroy 122 >/dev/null 2>&1 || true");
    let out = run_node(
        node,
        &s,
        &[
            "restore",
            &ct102,
            "122",
            "--tmpdir",
            s.path("").to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (old_root, new_root) = (
        node.mountpoint("data/subvol-102-disk-0"),
        node.mountpoint("data/subvol-122-disk-0"),
    );
    for rel in ["etc/hostname", "home/shared.txt", "var/www/html/index.html"] {
        assert_eq!(owner(&new_root, rel), owner(&old_root, rel), "{rel}");
    }
    let conf = std::fs::read_to_string(format!("{SIM_DIR}/etc/pve/lxc/122.conf")).unwrap();
    assert!(conf.contains("lxc.idmap"), "{conf}");
    let left = sh(&format!(
        "ls {} | grep proxborg-restore || true",
        s.path("").display()
    ));
    assert_eq!(left.trim(), "", "temporary tar left behind");
    node.sh("pct destroy 122 >/dev/null 2>&1 || true");

    // VM 200 through qmrestore; scsi1 (backup=0) is not in the dump.
    let vm = backup("200");
    let printed = String::from_utf8(s.ok(&["restore", &vm, "291", "--print"]).stdout).unwrap();
    assert_eq!(
        printed.trim(),
        format!("proxborg export-vma {vm} - | qmrestore - 291")
    );
    let out = run_node(node, &s, &["restore", &vm, "291", "--force"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for (from, to) in [("0", "0"), ("2", "1")] {
        let same = node.sh(&format!(
            "cmp $PROXBORG_SIM_DIR/vz/images/200/vm-200-disk-{from}.raw $PROXBORG_SIM_DIR/vz/images/291/vm-291-disk-{to}.raw && echo same"
        ));
        assert_eq!(same.trim(), "same", "disk {from} differs after restore");
    }
    node.sh(
        "rm -rf $PROXBORG_SIM_DIR/vz/images/291 $PROXBORG_PVE_ROOT/nodes/*/qemu-server/291.conf",
    );
    // A plain archive is not a guest.
    assert_success(&s.create_stdin("notes", b"x"), &["create"]);
    let out = run_node(node, &s, &["restore", "notes", "123"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("not a backup of a guest"),
        "{}",
        stderr(&out)
    );
}

/// The repository's filesystem fills in the middle of a container backup: one error naming
/// the full disk, exit 2, the container thawed and its snapshots and clones gone, a
/// repository that checks; once there is room the next run completes.
#[test]
fn a_full_repository_disk_mid_backup_releases_the_container() {
    let (_g, node) = node();
    let s = Scratch::new();
    struct Tmpfs(PathBuf);
    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    std::fs::create_dir_all(s.repo()).unwrap();
    sh(&format!(
        "mount -t tmpfs -o size=12m pxb-enospc '{}'",
        s.repo().display()
    ));
    let _tmpfs = Tmpfs(s.repo());
    s.init("none");
    let mp0 = node.mountpoint("data/subvol-100-disk-1");
    let big = mp0.join("enospc.bin");
    let data = noise(40 << 20, 41);
    std::fs::write(&big, &data).unwrap();
    let out = run_node(node, &s, &["100:"]);
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(
        err.to_lowercase().contains("no space left"),
        "the error does not say the disk is full: {err}"
    );
    assert_eq!(node.leftovers(), "", "snapshots or clones left: {err}");
    let state = std::fs::read_to_string(format!("{SIM_DIR}/state/100")).unwrap();
    assert_eq!(state.trim(), "RUNNING", "CT 100 left frozen: {err}");
    s.ok(&["check", "--verify-data"]);
    // Room again (as after deleting other files there): the next run completes.
    sh(&format!(
        "mount -o remount,size=200m '{}'",
        s.repo().display()
    ));
    let out = run_node(node, &s, &["100:", "--json"]);
    std::fs::remove_file(&big).unwrap();
    assert!(code(&out) <= 1, "{}", stderr(&out));
    let archive = first_archive(&out);
    let back = s
        .ok(&["extract", &archive, "srv/data/enospc.bin", "--stdout"])
        .stdout;
    assert!(back == data, "the file read back differs");
    s.ok(&["check", "--verify-data"]);
}
