//! End-to-end check of the simulated Proxmox VE node (`pve/sim`): it must build from nothing and
//! idempotently, hold real zfs-fuse datasets with shifted owners, and its `vzdump`, `pct restore`
//! and `lxc-freeze` must behave as PVE-FACTS.md says, since proxborg's own end-to-end tests trust
//! it. One #[test] drives every step in order: the steps share one node and one zfs-fuse daemon.
//! It uses its own DIR and pool name so it never touches the demo node at the default DIR.

#[path = "support/vma.rs"]
mod vma;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const DIR: &str = "/var/lib/proxborg-sim-selftest";
const POOL: &str = "psimselftest";
const FOREIGN_POOL: &str = "psimforeign";

fn sim() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pve/sim")
}

fn ok(what: &str, out: Output) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn run(what: &str, cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    ok(what, out)
}

fn sim_cmd(verb: &str, dir: &str) -> Command {
    let mut c = Command::new(sim());
    c.args([verb, dir]).env("PROXBORG_SIM_POOL", POOL);
    c
}

/// `export NAME='value'` lines → map, with the PATH line's literal "$PATH" kept as written.
fn parse_exports(stdout: &[u8]) -> BTreeMap<String, String> {
    let text = String::from_utf8(stdout.to_vec()).expect("up prints UTF-8");
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let rest = line
            .strip_prefix("export ")
            .unwrap_or_else(|| panic!("non-export line on stdout: {line:?}"));
        let (k, v) = rest
            .split_once('=')
            .unwrap_or_else(|| panic!("bad export line {line:?}"));
        m.insert(k.to_string(), v.replace('\'', ""));
    }
    m
}

/// A command from the node's bin directory, found through the PATH that `up` exported.
fn pve(env: &BTreeMap<String, String>, prog: &str) -> Command {
    let path = env["PATH"].replace("\"$PATH\"", &std::env::var("PATH").unwrap_or_default());
    let mut c = Command::new(prog);
    c.env("PATH", path)
        .env("PROXBORG_PVE_ROOT", &env["PROXBORG_PVE_ROOT"]);
    c
}

fn mountpoint(ds: &str) -> PathBuf {
    let out = run(
        "zfs get mountpoint",
        Command::new("zfs").args(["get", "-H", "-o", "value", "mountpoint", ds]),
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn owner(p: &Path) -> (u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.uid(), m.gid())
}

fn datasets() -> Vec<String> {
    let out = run(
        "zfs list",
        Command::new("zfs").args(["list", "-H", "-t", "all", "-o", "name"]),
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn pool_exists(name: &str) -> bool {
    Command::new("zpool")
        .args(["list", "-H", "-o", "name", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

#[test]
fn simulated_pve_node() {
    assert_eq!(
        rustix::process::geteuid().as_raw(),
        0,
        "the sim test needs root (zfs-fuse, mounts, userns)"
    );
    for (cmd, pkg) in [("tar", "tar"), ("python3", "python3"), ("apt-get", "apt")] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {cmd} >/dev/null")])
                .status()
                .unwrap()
                .success(),
            "{cmd} is missing: apt-get install {pkg}"
        );
    }
    // a leftover of an earlier, interrupted run
    run("sim down (cleanup)", &mut sim_cmd("down", DIR));

    // --- up twice: same env lines, stdout holds nothing else -------------------------------
    let first = run("sim up", &mut sim_cmd("up", DIR));
    let second = run("sim up (again)", &mut sim_cmd("up", DIR));
    assert_eq!(
        first.stdout, second.stdout,
        "a second up must print the same env"
    );
    let env = parse_exports(&first.stdout);
    assert_eq!(env["PROXBORG_PVE_ROOT"], format!("{DIR}/etc/pve"));
    assert_eq!(env["PROXBORG_SIM_POOL"], POOL);
    assert_eq!(env["PROXBORG_SIM_DIR"], DIR);
    assert_eq!(env["PATH"], format!("{DIR}/bin:\"$PATH\""));

    // --- datasets, owners, file kinds ---------------------------------------------------------
    let all = datasets();
    for ds in [
        "data",
        "data/subvol-100-disk-0",
        "data/subvol-100-disk-1",
        "data/subvol-100-disk-2",
        "data/subvol-101-disk-0",
        "data/share",
        "data/subvol-100-disk-0@before-upgrade",
    ] {
        assert!(
            all.contains(&format!("{POOL}/{ds}")),
            "dataset {POOL}/{ds} missing from {all:?}"
        );
    }
    let ct100 = mountpoint(&format!("{POOL}/data/subvol-100-disk-0"));
    assert_eq!(owner(&ct100), (100000, 100000));
    assert_eq!(owner(&ct100.join("etc/hostname")), (100000, 100000));
    assert_eq!(
        std::fs::read_to_string(ct100.join("etc/hostname")).unwrap(),
        "tank\n"
    );
    assert_eq!(
        owner(&ct100.join("var/www/html/index.html")),
        (100033, 100033)
    );
    assert_eq!(owner(&ct100.join("etc/shadow")), (100000, 100042));
    assert!(std::fs::symlink_metadata(ct100.join("run/initctl"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(
        std::fs::read_link(ct100.join("bin")).unwrap(),
        Path::new("usr/bin")
    );
    let perl = std::fs::metadata(ct100.join("usr/bin/perl")).unwrap();
    assert_eq!(perl.nlink(), 2);
    assert_eq!(
        perl.ino(),
        std::fs::metadata(ct100.join("usr/bin/perl5.36.0"))
            .unwrap()
            .ino()
    );
    assert!(ct100.join("lost+found").is_dir() && ct100.join("tmp/session.tmp").is_file());
    let ct101 = mountpoint(&format!("{POOL}/data/subvol-101-disk-0"));
    assert_eq!(owner(&ct101.join("var/www/html/index.html")), (33, 33));
    assert_eq!(owner(&ct101.join("etc/hostname")), (0, 0));
    let pve_root = PathBuf::from(&env["PROXBORG_PVE_ROOT"]);
    let conf100 = std::fs::read_to_string(pve_root.join("local/lxc/100.conf")).unwrap();
    assert!(
        conf100.contains("rootfs: local-zfs:subvol-100-disk-0,size=8G\n"),
        "{conf100}"
    );
    assert!(conf100.contains("unprivileged: 1\n") && conf100.contains("\n[before-upgrade]\n"));
    let storage = std::fs::read_to_string(pve_root.join("storage.cfg")).unwrap();
    assert!(
        storage.contains(&format!("zfspool: local-zfs\n\tpool {POOL}/data\n")),
        "{storage}"
    );
    let vmlist: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pve_root.join(".vmlist")).unwrap()).unwrap();
    assert_eq!(vmlist["ids"]["200"]["type"], "qemu");
    assert_eq!(vmlist["ids"]["101"]["type"], "lxc");
    let user = std::fs::read_to_string(pve_root.join("user.cfg")).unwrap();
    assert!(
        user.contains("pool:prod:Production%20guests:100,200::") && user.contains("pool:prod/sub:")
    );

    // --- vzdump of the QEMU VM: a valid VMA whose disks equal the images ----------------------
    let dump = run(
        "vzdump 200 --stdout",
        pve(&env, "vzdump")
            .args([
                "200",
                "--stdout",
                "--compress",
                "0",
                "--mode",
                "snapshot",
                "--dumpdir",
            ])
            .arg(format!("{DIR}/tmp"))
            .arg("--quiet"),
    );
    let vma = vma::parse(&dump.stdout)
        .unwrap_or_else(|e| panic!("vzdump 200 output is not valid VMA: {e}"));
    let conf = String::from_utf8(
        vma.config("qemu-server.conf")
            .expect("qemu-server.conf blob")
            .to_vec(),
    )
    .unwrap();
    assert!(
        conf.contains("name: db\n") && conf.contains("#qmdump#map:scsi0:drive-scsi0:local:raw:\n"),
        "{conf}"
    );
    assert!(
        conf.contains("#qmdump#map:virtio1:drive-virtio1:local:raw:\n"),
        "{conf}"
    );
    assert!(
        !conf.contains("map:scsi1") && !conf.contains("map:ide2"),
        "backup=0 and cdrom must be skipped"
    );
    assert!(
        conf.starts_with("#Database VM\n") && !conf.contains("unused0:"),
        "{conf}"
    );
    assert!(vma.config("qemu-server.fw").is_some());
    let names: Vec<&str> = vma.devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["drive-scsi0", "drive-virtio1"]);
    for (dev, img) in [
        ("drive-scsi0", "vm-200-disk-0.raw"),
        ("drive-virtio1", "vm-200-disk-2.raw"),
    ] {
        let want = std::fs::read(format!("{DIR}/vz/images/200/{img}")).unwrap();
        let got = vma.device(dev).unwrap();
        assert_eq!(got.size, want.len() as u64, "{dev} size");
        assert!(
            got.data == want,
            "{dev}: reassembled bytes differ from {img}"
        );
    }
    assert!(vma.extents > 1, "64 MiB must need several extents");
    // the reader's checks are real: damage is reported, never reassembled
    assert_eq!(
        vma::md5(b"abc"),
        *b"\x90\x01\x50\x98\x3c\xd2\x4f\xb0\xd6\x96\x3f\x7d\x28\xe1\x7f\x72"
    );
    let hsize = u32::from_be_bytes(dump.stdout[56..60].try_into().unwrap()) as usize;
    for (at, what) in [
        (100, "header"),
        (hsize + 45, "extent header"),
        (dump.stdout.len() - 1, "truncation"),
    ] {
        let mut bad = dump.stdout.clone();
        if what == "truncation" {
            bad.truncate(at);
        } else {
            bad[at] ^= 1;
        }
        assert!(
            vma::parse(&bad).is_err(),
            "a damaged {what} must be rejected"
        );
    }

    // --- qmrestore of that stream: new raw images with the same bytes, rewritten config ------
    let mut child = pve(&env, "qmrestore")
        .args(["-", "201"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn qmrestore");
    child.stdin.take().unwrap().write_all(&dump.stdout).unwrap();
    ok("qmrestore - 201", child.wait_with_output().unwrap());
    for (src, dst) in [
        ("200/vm-200-disk-0.raw", "201/vm-201-disk-0.raw"),
        ("200/vm-200-disk-2.raw", "201/vm-201-disk-1.raw"),
    ] {
        let a = std::fs::read(format!("{DIR}/vz/images/{src}")).unwrap();
        let b = std::fs::read(format!("{DIR}/vz/images/{dst}")).unwrap();
        assert!(a == b, "restored {dst} differs from {src}");
    }
    let conf201 = std::fs::read_to_string(pve_root.join("local/qemu-server/201.conf")).unwrap();
    for line in [
        "scsi0: local:201/vm-201-disk-0.raw,iothread=1,size=64M\n",
        "virtio1: local:201/vm-201-disk-1.raw,size=1060K\n",
        "#scsi1: local:200/vm-200-disk-1.raw,backup=0,size=16M\n",
        "ide2: local:iso/debian-12.iso,media=cdrom,size=21\n",
    ] {
        assert!(
            conf201.contains(line),
            "201.conf lacks {line:?}:\n{conf201}"
        );
    }
    assert!(
        !conf201.contains("#qmdump#")
            && !conf201.contains("vmgenid: 0f0e0d0c-0b0a-4908-8706-050403020100")
    );
    let truncated = &dump.stdout[..dump.stdout.len() / 2];
    let mut child = pve(&env, "qmrestore")
        .args(["-", "202"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // qmrestore may stop reading early; a broken pipe here is not the point of the check
    let _ = child.stdin.take().unwrap().write_all(truncated);
    let bad = child.wait_with_output().unwrap();
    assert!(
        !bad.status.success() && !Path::new(&format!("{DIR}/vz/images/202")).exists(),
        "a truncated VMA must fail and leave nothing"
    );

    // --- vzdump to a dump dir with a hook script: file name, phases, wiped environment -------
    let dumpdir = tempfile::tempdir().unwrap();
    let hooklog = dumpdir.path().join("hook.log");
    let hook = dumpdir.path().join("hook.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"phase $*\" >> {0}\n/usr/bin/env | /usr/bin/sort >> {0}\n",
            hooklog.display()
        ),
    )
    .unwrap();
    run("chmod hook", Command::new("chmod").arg("755").arg(&hook));
    let out_dir = dumpdir.path().join("dump");
    run(
        "vzdump 200 --dumpdir --script",
        pve(&env, "vzdump")
            .arg("200")
            .arg("--dumpdir")
            .arg(&out_dir)
            .arg("--script")
            .arg(&hook)
            .arg("--quiet"),
    );
    let mut vma_files: Vec<PathBuf> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "vma"))
        .collect();
    assert_eq!(
        vma_files.len(),
        1,
        "one vzdump-qemu-200-*.vma in {}",
        out_dir.display()
    );
    let vma_file = vma_files.pop().unwrap();
    let base = vma_file.file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        base.starts_with("vzdump-qemu-200-")
            && base.len() == "vzdump-qemu-200-2026_01_02-03_04_05.vma".len(),
        "{base}"
    );
    let from_file = vma::parse(&std::fs::read(&vma_file).unwrap()).expect("the .vma file parses");
    assert!(
        from_file.device("drive-scsi0").unwrap().data == vma.device("drive-scsi0").unwrap().data
    );
    let hook_text = std::fs::read_to_string(&hooklog).unwrap();
    let mut phases: Vec<(String, Vec<String>)> = Vec::new();
    for line in hook_text.lines() {
        match line.strip_prefix("phase ") {
            Some(p) => phases.push((p.to_string(), Vec::new())),
            None => phases
                .last_mut()
                .expect("env after a phase")
                .1
                .push(line.to_string()),
        }
    }
    let names: Vec<&str> = phases.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        names,
        [
            "job-init",
            "job-start",
            "backup-start snapshot 200",
            "pre-stop snapshot 200",
            "pre-restart snapshot 200",
            "post-restart snapshot 200",
            "backup-end snapshot 200",
            "log-end snapshot 200",
            "job-end"
        ]
    );
    let logfile = vma_file.with_extension("log");
    let want_end: Vec<String> = [
        format!("DUMPDIR={}", out_dir.display()),
        "HOSTNAME=db".to_string(),
        "LC_ALL=C".to_string(),
        format!("LOGFILE={}", logfile.display()),
        "LVM_SUPPRESS_FD_WARNINGS=1".to_string(),
        format!("TARGET={}", vma_file.display()),
        "VMTYPE=qemu".to_string(),
    ]
    .into();
    // /bin/sh itself adds PWD; everything else comes from vzdump, and PATH must not
    let env_of = |i: usize| -> Vec<String> {
        phases[i]
            .1
            .iter()
            .filter(|l| !l.starts_with("PWD="))
            .cloned()
            .collect()
    };
    assert_eq!(env_of(6), want_end, "backup-end environment");
    assert_eq!(
        env_of(0),
        [
            format!("DUMPDIR={}", out_dir.display()),
            "LC_ALL=C".into(),
            "LVM_SUPPRESS_FD_WARNINGS=1".into()
        ]
    );
    assert!(logfile.is_file(), "the task log is copied to the dump dir");

    // --- vzdump of the unprivileged CT: container ids, pct.conf first, vzdump's excludes ------
    let dump = run(
        "vzdump 100 --stdout",
        pve(&env, "vzdump")
            .args(["100", "--stdout", "--compress", "0", "--dumpdir"])
            .arg(format!("{DIR}/tmp"))
            .arg("--quiet"),
    );
    let mut members = Vec::new();
    let ct100_tar = dump.stdout;
    let mut ar = tar::Archive::new(ct100_tar.as_slice());
    for e in ar.entries().expect("vzdump 100 output is a tar") {
        let e = e.expect("tar entry");
        let h = e.header();
        members.push((
            String::from_utf8_lossy(&e.path_bytes()).into_owned(),
            h.uid().unwrap(),
            h.gid().unwrap(),
        ));
    }
    assert_eq!(members[0], ("./etc/vzdump/pct.conf".into(), 65534, 65534));
    assert_eq!(members[1].0, "./etc/vzdump/pct.fw");
    let find = |p: &str| members.iter().find(|m| m.0 == p).map(|m| (m.1, m.2));
    assert_eq!(find("./var/www/html/index.html"), Some((33, 33)));
    assert_eq!(find("./etc/hostname"), Some((0, 0)));
    assert_eq!(
        find("./srv/data/projects/blob.bin"),
        Some((1000, 1000)),
        "mp0 (backup=1) is included"
    );
    assert_eq!(
        find("./root/host-owned.txt"),
        Some((65534, 65534)),
        "unmapped ids show as nobody"
    );
    for gone in [
        "./tmp/session.tmp",
        "./var/tmp/cache.tmp",
        "./var/run/sshd.pid",
        "./lost+found/",
        "./var/cache/big/cache.dat",
    ] {
        assert_eq!(find(gone), None, "{gone} must be excluded");
    }
    assert!(find("./var/run/keep.state").is_some());
    assert!(
        !datasets()
            .iter()
            .any(|d| d.contains("vzdump") || d.contains("vzsnap")),
        "vzdump cleaned up"
    );

    // --- pct restore of a GNU tar with ids 0/33 into an unprivileged CT -----------------------
    let src = tempfile::tempdir().unwrap();
    let s = src.path();
    std::fs::create_dir_all(s.join("etc/vzdump")).unwrap();
    std::fs::create_dir_all(s.join("var/www")).unwrap();
    std::fs::write(
        s.join("etc/vzdump/pct.conf"),
        "hostname: restored\nmemory: 256\nunprivileged: 1\n",
    )
    .unwrap();
    std::fs::write(s.join("etc/hostname"), "restored\n").unwrap();
    std::fs::write(s.join("var/www/index.html"), "hello\n").unwrap();
    for p in ["var/www", "var/www/index.html"] {
        rustix::fs::chown(
            s.join(p),
            Some(rustix::fs::Uid::from_raw(33)),
            Some(rustix::fs::Gid::from_raw(33)),
        )
        .unwrap();
    }
    let tarball = run(
        "GNU tar",
        Command::new("tar").arg("-C").arg(s).args([
            "-cf",
            "-",
            "--numeric-owner",
            "./etc/vzdump/pct.conf",
            "./",
        ]),
    );
    let mut child = pve(&env, "pct")
        .args([
            "restore",
            "300",
            "-",
            "--rootfs",
            "local-zfs:1",
            "--unprivileged",
            "1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pct");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&tarball.stdout)
        .unwrap();
    ok("pct restore 300", child.wait_with_output().unwrap());
    let ct300 = mountpoint(&format!("{POOL}/data/subvol-300-disk-0"));
    assert_eq!(owner(&ct300), (100000, 100000));
    assert_eq!(owner(&ct300.join("etc/hostname")), (100000, 100000));
    assert_eq!(owner(&ct300.join("var/www/index.html")), (100033, 100033));
    assert_eq!(
        std::fs::read_to_string(ct300.join("var/www/index.html")).unwrap(),
        "hello\n"
    );
    assert!(
        !ct300.join("etc/vzdump/pct.conf").exists(),
        "pct.conf is consumed by restore"
    );
    let conf300 = std::fs::read_to_string(pve_root.join("local/lxc/300.conf")).unwrap();
    assert_eq!(
        conf300,
        "hostname: restored\nmemory: 256\nrootfs: local-zfs:subvol-300-disk-0,size=1G\nswap: 512\nunprivileged: 1\n"
    );
    let refquota = run(
        "zfs get refquota",
        Command::new("zfs").args([
            "get",
            "-H",
            "-p",
            "-o",
            "value",
            "refquota",
            &format!("{POOL}/data/subvol-300-disk-0"),
        ]),
    );
    assert_eq!(
        String::from_utf8_lossy(&refquota.stdout).trim(),
        "1073741824"
    );
    let list = run("pct list", pve(&env, "pct").arg("list"));
    assert!(String::from_utf8_lossy(&list.stdout)
        .lines()
        .any(|l| l.starts_with("300 ") && l.contains("restored")));
    let again = pve(&env, "pct")
        .args(["restore", "300", "-", "--rootfs", "local-zfs:1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        !again.status.success()
            && String::from_utf8_lossy(&again.stderr).contains("already exists")
    );

    // --- the whole chain: vzdump of CT 100 piped into pct restore with its mount point ------
    let mut child = pve(&env, "pct")
        .args([
            "restore",
            "301",
            "-",
            "--rootfs",
            "local-zfs:1",
            "--mp0",
            "local-zfs:1,mp=/srv/data,backup=1",
        ])
        .args(["--unprivileged", "1", "--pool", "prod"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pct");
    child.stdin.take().unwrap().write_all(&ct100_tar).unwrap();
    ok(
        "pct restore 301 from vzdump 100",
        child.wait_with_output().unwrap(),
    );
    let root301 = mountpoint(&format!("{POOL}/data/subvol-301-disk-0"));
    let mp301 = mountpoint(&format!("{POOL}/data/subvol-301-disk-1"));
    assert_eq!(owner(&root301.join("etc/shadow")), (100000, 100042));
    assert_eq!(
        owner(&root301.join("srv/data")),
        (100000, 100000),
        "mount point dir"
    );
    assert_eq!(owner(&mp301), (100000, 100000));
    assert_eq!(
        owner(&root301.join("root/host-owned.txt")),
        (165534, 165534)
    );
    assert_eq!(owner(&mp301.join("projects/blob.bin")), (101000, 101000));
    assert_eq!(
        std::fs::read(mp301.join("projects/blob.bin")).unwrap(),
        std::fs::read(
            mountpoint(&format!("{POOL}/data/subvol-100-disk-1")).join("projects/blob.bin")
        )
        .unwrap()
    );
    assert!(!root301.join("lost+found").exists() && !root301.join("tmp/session.tmp").exists());
    assert!(root301.join("tmp").is_dir() && root301.join("var/run/keep.state").is_file());
    let conf301 = std::fs::read_to_string(pve_root.join("local/lxc/301.conf")).unwrap();
    for line in [
        "hostname: tank\n",
        "mp0: local-zfs:subvol-301-disk-1,mp=/srv/data,backup=1,size=1G\n",
        "rootfs: local-zfs:subvol-301-disk-0,size=1G\n",
        "#Storage container%3A files and data volume\n",
    ] {
        assert!(
            conf301.contains(line),
            "301.conf lacks {line:?}:\n{conf301}"
        );
    }
    assert!(
        !conf301.contains("parent:")
            && !conf301.contains("[before-upgrade]")
            && !conf301.contains("mp1:")
    );
    assert_eq!(
        std::fs::read_to_string(pve_root.join("firewall/301.fw")).unwrap(),
        std::fs::read_to_string(pve_root.join("firewall/100.fw")).unwrap()
    );
    let user = std::fs::read_to_string(pve_root.join("user.cfg")).unwrap();
    assert!(
        user.contains("pool:prod:Production%20guests:100,200,301::"),
        "{user}"
    );
    run("pct destroy 301", pve(&env, "pct").args(["destroy", "301"]));
    assert!(
        !datasets().iter().any(|d| d.contains("subvol-301")),
        "pct destroy removes the volumes"
    );
    assert!(!std::fs::read_to_string(pve_root.join("user.cfg"))
        .unwrap()
        .contains("301"));

    // --- lxc-freeze / lxc-unfreeze / lxc-info -----------------------------------------------
    let state = |vmid: &str| {
        let o = run("lxc-info", pve(&env, "lxc-info").args(["-n", vmid, "-s"]));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(state("100"), "State:          RUNNING");
    assert_eq!(state("101"), "State:          STOPPED");
    run("lxc-freeze", pve(&env, "lxc-freeze").args(["-n", "100"]));
    assert_eq!(state("100"), "State:          FROZEN");
    run(
        "lxc-unfreeze",
        pve(&env, "lxc-unfreeze").args(["-n", "100"]),
    );
    assert_eq!(state("100"), "State:          RUNNING");
    assert!(
        !pve(&env, "lxc-freeze")
            .args(["-n", "101"])
            .status()
            .unwrap()
            .success(),
        "a stopped CT cannot freeze"
    );
    let log = std::fs::read_to_string(format!("{DIR}/log/freeze.log")).unwrap();
    let calls: Vec<&str> = log.lines().map(|l| l.split_once(' ').unwrap().1).collect();
    assert_eq!(
        calls,
        [
            "lxc-freeze -n 100",
            "lxc-unfreeze -n 100",
            "lxc-freeze -n 101"
        ]
    );

    // --- down: removes what up made, idempotent, never a pool it did not make ------------------
    run("sim down", &mut sim_cmd("down", DIR));
    assert!(!pool_exists(POOL), "down must destroy {POOL}");
    assert!(!Path::new(DIR).exists(), "down must remove {DIR}");
    run("sim down (again)", &mut sim_cmd("down", DIR));

    let foreign = tempfile::tempdir().unwrap();
    let img = foreign.path().join("foreign.img");
    run(
        "truncate",
        Command::new("truncate").args(["-s", "128M"]).arg(&img),
    );
    if pool_exists(FOREIGN_POOL) {
        run(
            "zpool destroy stale",
            Command::new("zpool").args(["destroy", "-f", FOREIGN_POOL]),
        );
    }
    run(
        "zpool create",
        Command::new("zpool")
            .args(["create", "-m", "none", FOREIGN_POOL])
            .arg(&img),
    );
    let fake = foreign.path().join("simdir");
    std::fs::create_dir(&fake).unwrap();
    std::fs::write(fake.join(".proxborg-sim"), "").unwrap();
    std::fs::write(fake.join("sim.conf"), format!("POOL={FOREIGN_POOL}\n")).unwrap();
    run(
        "sim down (foreign pool)",
        &mut sim_cmd("down", fake.to_str().unwrap()),
    );
    let survived = pool_exists(FOREIGN_POOL);
    run(
        "zpool destroy foreign",
        Command::new("zpool").args(["destroy", "-f", FOREIGN_POOL]),
    );
    assert!(survived, "down destroyed a pool it did not create");
}
