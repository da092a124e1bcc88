//! The PVE backup-provider storage plugin (packaging/perl) on the simulated node: the
//! Perl harness `pve/lib/vzdump-provider` calls the plugin in PVE's order (a GUI job through
//! the simulated `vzdump --storage`, the storage content list, the restore dialog's config,
//! a `directory` restore, prune and notes). The node has its own directory and pool.

mod common;
#[path = "support/node.rs"]
mod node;
use common::*;
use node::Node;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock};

const SIM_DIR: &str = "/var/lib/proxborg-sim-provider";

fn node() -> (MutexGuard<'static, ()>, &'static Node) {
    static LOCK: Mutex<()> = Mutex::new(());
    static NODE: OnceLock<Node> = OnceLock::new();
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let node = NODE.get_or_init(|| Node::up(SIM_DIR, "pxprov"));
    node.heal();
    (guard, node)
}

impl Node {
    fn dir(&self, rel: &str) -> PathBuf {
        Path::new(&self.get("PROXBORG_SIM_DIR")).join(rel)
    }
    /// A command as PVE runs it: the node's environment, proxborg where the package puts
    /// it, but no repository or passphrase (the plugin brings those from storage.cfg and
    /// /etc/pve/priv). Cache and security record live in the scratch.
    fn pve(&self, s: &Scratch, prog: &str) -> Command {
        let mut c = Command::new(prog);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("PROXBORG_") {
                c.env_remove(&k);
            }
        }
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c.env("PROXBORG_BIN", env!("CARGO_BIN_EXE_proxborg"))
            .env("PROXBORG_TEST_FAST_KDF", "1")
            .env("PROXBORG_CACHE_DIR", s.path("cache"))
            .env("PROXBORG_SECURITY_DIR", s.path("security"))
            .env("PROXBORG_PLUGIN_RUN_DIR", self.dir("run/proxborg-plugin"));
        c
    }
    fn harness(&self, s: &Scratch, args: &[&str]) -> Output {
        let out = self
            .pve(s, &self.dir("bin/vzdump-provider").to_string_lossy())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "vzdump-provider {args:?}: {}",
            stderr(&out)
        );
        out
    }
    /// proxborg on the storage's repository, as an admin would run it.
    fn proxborg(&self, s: &Scratch) -> Command {
        let mut c = s.cmd();
        c.env("PROXBORG_REPO", self.dir("proxborg-repo"));
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }
    /// A GUI backup job of `vmid` into the proxborg storage; its volid.
    fn backup(&self, s: &Scratch, vmid: &str) -> String {
        let out = self
            .pve(s, "vzdump")
            .args([vmid, "--storage", "proxborg", "--mode", "snapshot"])
            .args(["--notes-template", "{{guestname}}"])
            .output()
            .unwrap();
        assert!(out.status.success(), "vzdump: {}", stderr(&out));
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
    fn list(&self, s: &Scratch) -> Vec<serde_json::Value> {
        let out = self.harness(s, &["list", "proxborg", "100"]);
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
    }
}

/// A fresh repository at the storage's path, its passphrase stored by `pvesm add`'s hook.
fn fresh_storage(node: &Node, s: &Scratch) {
    let _ = std::fs::remove_dir_all(node.dir("proxborg-repo"));
    // nor an incremental base in the plugin, nor a bitmap in the simulated QEMU
    let _ = std::fs::remove_file(node.dir("run/proxborg-plugin/last-proxborg-200"));
    let _ = std::fs::remove_file(node.dir("state/bitmap-200-proxborg"));
    let out = run(node.proxborg(s).args(["init", "--encryption", "repokey"]));
    assert_success(&out, &["init"]);
    std::fs::write(s.path("pw"), PASS).unwrap();
    let repo = node.dir("proxborg-repo");
    node.harness(
        s,
        &[
            "add",
            "proxborg",
            "--repo",
            repo.to_str().unwrap(),
            "--passphrase-file",
            s.path("pw").to_str().unwrap(),
        ],
    );
    let pw = node.dir("etc/pve/priv/storage/proxborg.pw");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&pw).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// Entries of a tree with owners, modes, sizes (not of directories: that is the filesystem's),
/// link targets and content hashes (no times); ids at or above `uid_shift` are shifted down.
fn listing(root: &Path, uid_shift: u32) -> String {
    sh(&format!(
        "cd '{}' && find . -printf '%p|%y|%m|%U|%G|%s|%l\\n' | LC_ALL=C sort | \
         awk -F'|' -v s={uid_shift} 'BEGIN{{OFS=\"|\"}} {{ if ($4 >= s) $4 -= s; if ($5 >= s) $5 -= s; if ($2 == \"d\") $6 = \"\"; print }}' | \
         while IFS= read -r l; do p=${{l%%|*}}; h=''; \
           if [ -f \"$p\" ] && [ ! -L \"$p\" ]; then h=$(md5sum < \"$p\" | cut -c1-32); fi; \
           echo \"$l|$h\"; done",
        root.display()
    ))
}

/// `proxborg export-tar ARCHIVE -` through `cmd`, unpacked by GNU tar (as root, ids as stored).
fn export_tar_into(mut cmd: Command, archive: &str, dest: &Path) {
    use std::process::Stdio;
    std::fs::create_dir_all(dest).unwrap();
    let mut export = cmd
        .args(["export-tar", archive, "-"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let untar = Command::new("tar")
        .args(["-x", "--numeric-owner", "-p", "-C"])
        .arg(dest)
        .stdin(export.stdout.take().unwrap())
        .status()
        .unwrap();
    assert!(export.wait().unwrap().success(), "export-tar {archive}");
    assert!(untar.success(), "tar -x of {archive}");
}

#[test]
fn gui_job_list_config_restore_notes_and_prune() {
    let (_g, node) = node();
    ensure_subids();
    let s = Scratch::new();
    fresh_storage(node, &s);

    // A GUI job: vzdump --storage proxborg with the default notes template.
    let volid = node.backup(&s, "100");
    assert!(volid.starts_with("proxborg:backup/dump-100-"), "{volid}");
    let log = std::fs::read_to_string(node.dir("log/vzdump/lxc-100.log")).unwrap();
    assert!(log.contains("creating proxborg archive"), "{log}");

    // The storage content list (list_volumes through PVE's volume_list).
    let list = node.list(&s);
    let v = list.iter().find(|v| v["volid"] == volid.as_str()).unwrap();
    assert_eq!(v["subtype"], "lxc");
    assert_eq!(v["vmid"], 100);
    assert_eq!(v["content"], "backup");
    assert_eq!(v["notes"], "tank");
    assert_eq!(v["protected"], 0);
    assert_eq!(v["encrypted"], "proxborg repokey");
    assert!(v["ctime"].as_i64().unwrap() > 1_700_000_000);
    assert!(v["size"].as_u64().unwrap() > 0);
    let name = volid.strip_prefix("proxborg:backup/").unwrap().to_string();

    // The same archive as `proxborg 100:` makes (another repository, same content).
    let s2 = Scratch::new();
    s2.init("repokey");
    let mut c = s2.cmd();
    for (k, v) in &node.env {
        c.env(k, v);
    }
    let out = run(c.args(["100:", "--json"]));
    // 1: the sim's bind mount and zfs-fuse's one-by-one snapshots are warnings
    assert!(code(&out) <= 1, "proxborg 100:: {}", stderr(&out));
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let direct = results[0]["archive"].as_str().unwrap().to_string();
    let a = s.path("via-plugin");
    let b = s.path("via-proxborg");
    export_tar_into(node.proxborg(&s), &name, &a);
    let mut c2 = s2.cmd();
    for (k, v) in &node.env {
        c2.env(k, v);
    }
    export_tar_into(c2, &direct, &b);
    let (la, lb) = (listing(&a, 0), listing(&b, 0));
    assert!(la.contains("./srv/data|d"), "{la}");
    assert!(!la.contains("./tmp/session.tmp"), "{la}");
    assert!(la.contains("./var/run/keep.state"), "{la}");
    assert_dumps_equal(&la, &lb, "export-tar via the plugin vs proxborg 100:");

    // The restore dialog's config (extractconfig) is the stored pct.conf.
    let conf = String::from_utf8(node.harness(&s, &["extractconfig", &volid]).stdout).unwrap();
    let stored = std::fs::read_to_string(a.join("etc/vzdump/pct.conf")).unwrap();
    assert_eq!(conf, stored);
    assert!(
        conf.contains("hostname: tank") && conf.contains("unprivileged: 1"),
        "{conf}"
    );
    assert!(
        !conf.contains("[before-upgrade]") && !conf.contains("parent:"),
        "{conf}"
    );

    // pct restore through `directory` (proxborg mount + PVE's tar pipe into the userns).
    let rootdir = node.dir("tmp/provider-restore-9100");
    let _ = std::fs::remove_dir_all(&rootdir);
    node.harness(
        &s,
        &[
            "restore",
            "9100",
            &volid,
            "--rootdir",
            rootdir.to_str().unwrap(),
        ],
    );
    assert_dumps_equal(
        &listing(&rootdir, 100000),
        &la,
        "restored CT (host ids - 100000) vs the archive",
    );
    let _ = std::fs::remove_dir_all(&rootdir);

    // Notes set through update_volume_attribute show in list_volumes and `proxborg list`.
    node.harness(&s, &["set", &volid, "notes", "before the upgrade"]);
    let v = node.list(&s);
    assert_eq!(v[0]["notes"], "before the upgrade");
    let out = run(node.proxborg(&s).args(["list", "--json"]));
    assert_success(&out, &["list"]);
    let l: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(l[0]["notes"], "before the upgrade");

    // Prune keep-last=1: the protected oldest stays, the middle one goes, dry run first.
    node.harness(&s, &["set", &volid, "protected", "1"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = node.backup(&s, "100");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let third = node.backup(&s, "100");
    let marks = |out: &Output| -> Vec<(String, String)> {
        let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        let mut m: Vec<_> = v
            .iter()
            .map(|e| {
                (
                    e["volid"].as_str().unwrap().to_string(),
                    e["mark"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        m.sort();
        m
    };
    let expected = vec![
        (volid.clone(), "protected".to_string()),
        (second.clone(), "remove".to_string()),
        (third.clone(), "keep".to_string()),
    ];
    let dry = node.harness(
        &s,
        &["prune", "proxborg", "100", "keep-last=1", "--dry-run"],
    );
    assert_eq!(marks(&dry), expected);
    assert_eq!(node.list(&s).len(), 3, "a dry run removes nothing");
    let real = node.harness(&s, &["prune", "proxborg", "100", "keep-last=1"]);
    assert_eq!(marks(&real), expected);
    let left: Vec<String> = node
        .list(&s)
        .iter()
        .map(|v| v["volid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, vec![volid.clone(), third.clone()]);
}

#[test]
fn failures_are_one_line_and_leave_nothing_behind() {
    let (_g, node) = node();
    ensure_subids();
    let s = Scratch::new();
    fresh_storage(node, &s);
    let vzdump = |vmid: &str| {
        node.pve(&s, "vzdump")
            .args([vmid, "--storage", "proxborg"])
            .output()
            .unwrap()
    };
    // A wrong passphrase: proxborg's own error line, no archive, no snapshot, no run dir;
    // for a container and for a VM.
    let pw = node.dir("etc/pve/priv/storage/proxborg.pw");
    std::fs::write(&pw, "not the passphrase").unwrap();
    let outs = [vzdump("100"), vzdump("200")];
    std::fs::write(&pw, PASS).unwrap();
    for (vmid, out) in ["100", "200"].iter().zip(&outs) {
        assert!(!out.status.success());
        let err = stderr(out);
        let line = err
            .lines()
            .find(|l| l.starts_with(&format!("ERROR: Backup of VM {vmid} failed")))
            .unwrap_or_else(|| panic!("{err}"));
        assert!(line.contains("wrong passphrase"), "{line}");
    }
    assert!(node.list(&s).is_empty());
    let leftovers = node
        .pve(&s, "zfs")
        .args(["list", "-H", "-o", "name", "-t", "all"])
        .output();
    let leftovers = String::from_utf8(leftovers.unwrap().stdout).unwrap();
    let pool = format!("{}/", node.get("PROXBORG_SIM_POOL"));
    assert!(
        !leftovers
            .lines()
            .any(|l| l.starts_with(&pool) && (l.contains("vzsnap") || l.contains("@vzdump"))),
        "{leftovers}"
    );
    let run = node.dir("run/proxborg-plugin");
    let left: Vec<_> = std::fs::read_dir(&run)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

/// `drive => (size, read)` from `proxborg info --json ARCHIVE`'s drive figures.
fn drive_reads(
    node: &Node,
    s: &Scratch,
    archive: &str,
) -> std::collections::BTreeMap<String, (u64, u64)> {
    let out = run(node.proxborg(s).args(["info", "--json", archive]));
    assert_success(&out, &["info"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["metadata"]["drives"]
        .as_array()
        .unwrap_or_else(|| panic!("no drives: {v}"))
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_string(),
                (d["size"].as_u64().unwrap(), d["read"].as_u64().unwrap()),
            )
        })
        .collect()
}

/// The image file of `key` (`scsi0`) in VM `vmid`'s config on the simulated node.
fn vm_disk(node: &Node, vmid: &str, key: &str) -> PathBuf {
    let nodes = node.dir("etc/pve/nodes");
    let n = std::fs::read_dir(&nodes)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let conf = std::fs::read_to_string(n.join(format!("qemu-server/{vmid}.conf"))).unwrap();
    let line = conf
        .lines()
        .find(|l| l.starts_with(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("{key} in {conf}"));
    let volid = line[key.len() + 2..].split(',').next().unwrap();
    let rel = volid.strip_prefix("local:").unwrap();
    node.dir("vz/images").join(rel)
}

#[test]
fn vm_job_incremental_from_dirty_regions_and_qmrestore() {
    use std::os::unix::fs::FileExt;
    const MIB: u64 = 1 << 20;
    let (_g, node) = node();
    let s = Scratch::new();
    fresh_storage(node, &s);
    let backup = |dirty: Option<&Path>| {
        std::thread::sleep(std::time::Duration::from_millis(1100)); // names have seconds
        let mut c = node.pve(&s, "vzdump");
        c.args(["200", "--storage", "proxborg", "--mode", "snapshot"])
            .args(["--notes-template", "{{guestname}}", "--bwlimit", "1000000"]);
        if let Some(d) = dirty {
            c.env("PXB_SIM_DIRTY", d);
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "vzdump 200: {}", stderr(&out));
        let volid = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let name = volid.strip_prefix("proxborg:backup/").unwrap().to_string();
        (volid, name, stderr(&out))
    };

    // First job: no bitmap yet, so `new`: everything is read.
    let (volid, name, log) = backup(None);
    assert!(volid.starts_with("proxborg:backup/dump-200-"), "{volid}");
    assert!(log.contains("drive-scsi0: reading all of it"), "{log}");
    // the job's bwlimit (PVE hands the plugin bytes/s) reaches proxborg as --bwlimit KiB/s
    assert!(log.contains("bandwidth limit: 1000000 KiB/s"), "{log}");
    let sizes = [("drive-scsi0", 64 * MIB), ("drive-virtio1", 1060 * 1024)];
    let reads = drive_reads(node, &s, &name);
    assert_eq!(
        reads.len(),
        2,
        "{reads:?}: scsi1 has backup=0, ide2 is a cdrom"
    );
    for (d, size) in sizes {
        assert_eq!(reads[d], (size, size), "{d}");
    }
    let list: Vec<serde_json::Value> =
        serde_json::from_slice(&node.harness(&s, &["list", "proxborg", "200"]).stdout).unwrap();
    let v = list.iter().find(|v| v["volid"] == volid.as_str()).unwrap();
    assert_eq!(
        (v["subtype"].as_str(), v["vmid"].as_u64()),
        (Some("qemu"), Some(200))
    );
    assert_eq!(v["notes"], "db");

    // The restore dialog's config is the stored qemu-server.conf, as vzdump assembles it.
    let conf = String::from_utf8(node.harness(&s, &["extractconfig", &volid]).stdout).unwrap();
    let out = run(node
        .proxborg(&s)
        .args(["extract", &name, "qemu-server.conf", "--stdout"]));
    assert_success(&out, &["extract"]);
    assert_eq!(conf, String::from_utf8(out.stdout).unwrap());
    assert!(conf.contains("name: db\n"), "{conf}");
    assert!(conf.ends_with("#qmdump#map:scsi0:drive-scsi0:local:raw:\n#qmdump#map:virtio1:drive-virtio1:local:raw:\n"), "{conf}");
    assert!(!conf.contains("unused0"), "{conf}");

    // Rewrite ~1% of disk 0 at known places (one region across a chunk boundary); the
    // simulated bitmap reports exactly those regions.
    let disk0 = node.dir("vz/images/200/vm-200-disk-0.raw");
    let regions = [
        (MIB + 123, 200 * 1024),
        (20 * MIB, 300 * 1024),
        (52 * MIB - 100 * 1024, 150 * 1024),
    ];
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk0)
        .unwrap();
    let mut saved = Vec::new();
    let mut dirty = String::new();
    for (i, &(off, len)) in regions.iter().enumerate() {
        let mut old = vec![0u8; len as usize];
        f.read_exact_at(&mut old, off).unwrap();
        saved.push(old);
        let new: Vec<u8> = (0..len).map(|j| (j as u8) ^ (i as u8 * 37 + 11)).collect();
        f.write_all_at(&new, off).unwrap();
        dirty += &format!("drive-scsi0 {off} {len}\n");
    }
    f.sync_all().unwrap();
    let dirty_chunks: std::collections::BTreeSet<u64> = regions
        .iter()
        .flat_map(|&(o, l)| (o / (4 * MIB))..=((o + l - 1) / (4 * MIB)))
        .collect();
    assert_eq!(dirty_chunks.len(), 4);
    std::fs::write(s.path("dirty"), &dirty).unwrap();
    let (volid2, name2, log) = backup(Some(s.path("dirty").as_path()));
    assert!(
        log.contains(&format!(
            "incremental backup based on proxborg archive '{name}'"
        )),
        "{log}"
    );
    assert!(log.contains("drive-scsi0: 3 dirty regions"), "{log}");
    let reads = drive_reads(node, &s, &name2);
    let (size, read) = reads["drive-scsi0"];
    assert_eq!(size, 64 * MIB);
    assert!(
        read > 0 && read <= dirty_chunks.len() as u64 * 4 * MIB,
        "read {read}"
    );
    assert_eq!(reads["drive-virtio1"].1, 0, "no dirty region: nothing read");

    // The archive holds the disk as it is now: extracted, and through qmrestore (the FUSE
    // mount's files converted by qemu-img), byte for byte.
    let out_dir = s.path("extracted");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = run(node
        .proxborg(&s)
        .args(["extract", &name2, "drive-scsi0.raw", "--directory"])
        .arg(&out_dir));
    assert_success(&out, &["extract"]);
    assert_eq!(
        std::fs::read(out_dir.join("drive-scsi0.raw")).unwrap(),
        std::fs::read(&disk0).unwrap()
    );
    let out = node
        .pve(&s, "qmrestore")
        .args([volid2.as_str(), "9200", "--force", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "qmrestore: {}", stderr(&out));
    let restored = String::from_utf8_lossy(&out.stdout).to_string() + &stderr(&out);
    assert!(restored.contains("restoring"), "{restored}");
    for (key, src) in [
        ("scsi0", "vm-200-disk-0.raw"),
        ("virtio1", "vm-200-disk-2.raw"),
    ] {
        let a = vm_disk(node, "9200", key);
        let b = node.dir("vz/images/200").join(src);
        let cmp = Command::new("cmp").arg(&a).arg(&b).output().unwrap();
        assert!(
            cmp.status.success(),
            "{key}: {}",
            String::from_utf8_lossy(&cmp.stdout)
        );
    }
    assert!(!std::fs::read_dir(node.dir("run/proxborg-plugin"))
        .unwrap()
        .any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("restore-")));

    // Without a base (the plugin's record gone): `new`, everything is read again.
    std::fs::remove_file(node.dir("run/proxborg-plugin/last-proxborg-200")).unwrap();
    let (_, name3, log) = backup(Some(s.path("dirty").as_path()));
    assert!(!log.contains("incremental backup based on"), "{log}");
    assert_eq!(
        drive_reads(node, &s, &name3)["drive-scsi0"],
        (64 * MIB, 64 * MIB)
    );
    let _ = volid;

    for (&(off, _), old) in regions.iter().zip(&saved) {
        f.write_all_at(old, off).unwrap();
    }
}
