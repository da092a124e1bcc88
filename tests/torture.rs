//! The torture suite (issue 15, item 3): what the repository promises when a process is killed
//! with SIGKILL at any instant, when its filesystem fills up, when its disk returns I/O errors,
//! and when whoever holds the storage swaps, replaces, rolls back or deletes its files.
//!
//! This file is the short version run with the normal tests (`PROXBORG_TORTURE_TRIALS`
//! defaults to 10 kill trials). `tests/torture/run` runs the full matrix (50 trials by default)
//! by hand; see the README's "Torture suite" section.
//!
//! The ENOSPC and EIO cases need root, `mount` and loop devices: they fail (never skip) with
//! the command that installs what is missing. Every mount and loop device is released by a Drop
//! guard on every path.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Helpers

/// splitmix64: a seeded, reproducible RNG (the seed is printed so a failing trial can be rerun
/// with `PROXBORG_TORTURE_SEED`).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// Archive names in the repository, from `list`.
fn archive_names(s: &Scratch) -> Vec<String> {
    let out = s.ok(&["list"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// Fails unless `out` exited 2 with no panic and a single-line error containing `needle`.
fn assert_clean_failure(out: &std::process::Output, needle: &str, what: &str) {
    let err = stderr(out);
    assert_eq!(
        code(out),
        2,
        "{what}: expected exit 2, got {}:\n{err}",
        out.status
    );
    assert!(!err.contains("panicked"), "{what} panicked:\n{err}");
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "{what}: no `{needle}` in:\n{err}"
    );
}

/// What an archive must extract to.
#[derive(Clone)]
enum Source {
    Tree(PathBuf),
    Stream(PathBuf),
}

fn assert_extracts(s: &Scratch, name: &str, src: &Source, what: &str) {
    match src {
        Source::Stream(file) => {
            let out = s.run(&["extract", name, "--stdout"]);
            assert_success(&out, &["extract", name, "--stdout"]);
            assert!(
                out.stdout == std::fs::read(file).unwrap(),
                "{what}: stream archive {name} does not extract byte-identical"
            );
        }
        Source::Tree(dir) => {
            let dest = s.path(&format!("x-{name}"));
            let _ = std::fs::remove_dir_all(&dest);
            std::fs::create_dir_all(&dest).unwrap();
            s.ok(&["extract", name, "-C", dest.to_str().unwrap()]);
            let a = sh(&format!(
                "cd '{}' && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 md5sum",
                dir.display()
            ));
            let b = sh(&format!(
                "cd '{}' && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 md5sum",
                dest.display()
            ));
            assert_dumps_equal(&a, &b, &format!("{what}: tree archive {name}"));
            std::fs::remove_dir_all(&dest).unwrap();
        }
    }
}

fn write_tree(root: &Path, seed: u64) {
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    for i in 0..12u64 {
        let dir = match i % 3 {
            0 => root.to_path_buf(),
            1 => root.join("sub"),
            _ => root.join("sub/deeper"),
        };
        let len = 64 * 1024 + (i as usize * 97_331) % (900 * 1024);
        std::fs::write(
            dir.join(format!("f{i}")),
            noise(len, seed.wrapping_mul(1000).wrapping_add(i)),
        )
        .unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// 1. kill -9 matrix

#[derive(Clone, Copy, Debug)]
enum Op {
    CreateTree,
    CreateStream,
    Prune,
    Compact,
    Delete,
}

struct Spawned {
    op: Op,
    args: Vec<String>,
    child: Child,
    started: Instant,
    kill_at: Duration,
}

/// `create` of a stream: stdin from the source file (so the pipe outlives a kill cleanly).
fn spawn(s: &Scratch, args: &[String], stdin: Option<&Path>) -> Child {
    let mut c = s.cmd();
    c.args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .stdin(match stdin {
            Some(p) => Stdio::from(std::fs::File::open(p).unwrap()),
            None => Stdio::null(),
        });
    c.spawn().unwrap()
}

/// Runs the kill matrix for `trials` trials; returns the per-trial report lines.
fn kill_matrix(trials: u64, seed: u64) -> Vec<String> {
    let started = Instant::now();
    let s = Scratch::new();
    s.init("repokey");
    // Sources: two trees and a stream of tens of MiB (mostly shared between trials, with a
    // fresh MiB per trial so every trial writes new packs).
    let stream_mib: usize = env_u64("PROXBORG_TORTURE_STREAM_MIB").unwrap_or(24) as usize;
    let base_stream = noise(stream_mib << 20, seed);
    let mut sources: BTreeMap<String, Source> = BTreeMap::new();
    let mut rng = Rng(seed);

    // Seed archives so prune, delete and compact have work from the first trial (the first
    // tree's create is timed: tree kill points are drawn over its duration).
    let mut tree_ms = 0;
    for i in 0..2u64 {
        let t = s.path(&format!("src-seed-tree{i}"));
        write_tree(&t, seed.wrapping_add(i));
        let name = format!("seed-t{i}");
        let t0 = Instant::now();
        s.ok(&["create", &name, t.to_str().unwrap()]);
        tree_ms = tree_ms.max(t0.elapsed().as_millis() as u64);
        sources.insert(name, Source::Tree(t));
    }
    // How long a full stream create takes: kill points are drawn over 1.3 times that.
    let stream0 = s.path("src-seed-stream");
    std::fs::write(&stream0, &base_stream).unwrap();
    let t0 = Instant::now();
    let out = spawn(
        &s,
        &["create".into(), "seed-s".into(), "-".into()],
        Some(&stream0),
    )
    .wait_with_output()
    .unwrap();
    assert_success(&out, &["create", "seed-s", "-"]);
    let full = t0.elapsed();
    sources.insert("seed-s".into(), Source::Stream(stream0));
    // Each operation is killed at a point drawn uniformly over 1.2 times its own duration
    // (timed once here, alone), so most kills land mid-operation and some after the end.
    let timed = |args: &[&str]| {
        let t0 = Instant::now();
        s.ok(args);
        t0.elapsed().as_millis() as u64
    };
    let prune_ms = timed(&["prune", "--keep-last", "100"]);
    let compact_ms = timed(&["compact"]);
    let stream_ms = full.as_millis() as u64;
    let window = |op: Op| {
        let ms = match op {
            Op::CreateTree => tree_ms,
            Op::CreateStream => stream_ms,
            Op::Prune | Op::Delete => prune_ms,
            Op::Compact => compact_ms,
        };
        (ms * 6 / 5).max(10)
    };
    eprintln!(
        "torture kill matrix: seed {seed}, {trials} trials, stream {stream_mib} MiB; alone: create stream {stream_ms} ms, create tree {tree_ms} ms, prune {prune_ms} ms, compact {compact_ms} ms; kill points uniform over 1.2x those"
    );

    let mut report = Vec::new();
    for trial in 0..trials {
        // Writer A: any operation; writer B: always a create, so two writers run at once.
        let a_op = match rng.below(5) {
            0 => Op::CreateTree,
            1 => Op::CreateStream,
            2 => Op::Prune,
            3 => Op::Compact,
            _ => Op::Delete,
        };
        let b_op = if rng.below(2) == 0 {
            Op::CreateTree
        } else {
            Op::CreateStream
        };
        let mut spawned = Vec::new();
        let mut prepared = Vec::new();
        let mut pending: BTreeMap<String, Source> = BTreeMap::new();
        for (w, op) in [(0, a_op), (1, b_op)] {
            let name = format!("t{trial}-{w}");
            let mut stdin = None;
            let args: Vec<String> = match op {
                Op::CreateTree => {
                    let t = s.path(&format!("src-{name}"));
                    write_tree(&t, seed ^ (trial * 2 + w + 7));
                    pending.insert(name.clone(), Source::Tree(t.clone()));
                    vec!["create".into(), name.clone(), t.display().to_string()]
                }
                Op::CreateStream => {
                    let f = s.path(&format!("src-{name}"));
                    let mut data = base_stream.clone();
                    let at = (rng.below(stream_mib as u64) as usize) << 20;
                    let fresh = noise(1 << 20, seed ^ (trial * 2 + w + 1000));
                    data[at..at + (1 << 20)].copy_from_slice(&fresh);
                    std::fs::write(&f, &data).unwrap();
                    pending.insert(name.clone(), Source::Stream(f.clone()));
                    stdin = Some(f);
                    vec!["create".into(), name.clone(), "-".into()]
                }
                Op::Prune => vec!["prune".into(), "--keep-last".into(), "4".into()],
                Op::Compact => vec!["compact".into()],
                Op::Delete => {
                    let names: Vec<&String> = sources.keys().collect();
                    let victim = names[rng.below(names.len() as u64) as usize].clone();
                    vec!["delete".into(), victim]
                }
            };
            let kill_at = Duration::from_millis(rng.below(window(op)));
            prepared.push((op, args, stdin, kill_at));
        }
        // Both sources are written before either writer starts, so they run side by side.
        for (op, args, stdin, kill_at) in prepared {
            let started = Instant::now();
            let child = spawn(&s, &args, stdin.as_deref());
            spawned.push(Spawned {
                op,
                args,
                child,
                started,
                kill_at,
            });
        }
        // Kill each at its instant (measured from its own start).
        let mut order: Vec<usize> = (0..spawned.len()).collect();
        order.sort_by_key(|&i| spawned[i].started + spawned[i].kill_at);
        for i in order {
            let sp = &mut spawned[i];
            if let Some(rest) = sp.kill_at.checked_sub(sp.started.elapsed()) {
                std::thread::sleep(rest);
            }
            let _ = sp.child.kill(); // SIGKILL; harmless if it already exited
        }
        let mut outcomes = Vec::new();
        let mut reruns = Vec::new();
        for sp in spawned {
            let out = sp.child.wait_with_output().unwrap();
            let killed = out.status.code().is_none();
            let name = sp.args.get(1).cloned().unwrap_or_default();
            if let Some(c) = out.status.code() {
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(
                    !err.contains("panicked"),
                    "trial {trial}: {:?} panicked:\n{err}",
                    sp.args
                );
                // A create that finished must have exited 0; prune/delete/compact may meet a
                // victim another writer removed (exit 2 with a message), never a crash.
                if matches!(sp.op, Op::CreateTree | Op::CreateStream) {
                    assert_eq!(c, 0, "trial {trial}: {:?} failed:\n{err}", sp.args);
                }
            }
            match sp.op {
                // Reported complete: must extract identical from now on.
                Op::CreateTree | Op::CreateStream if !killed => {
                    sources.insert(name.clone(), pending[&name].clone());
                }
                Op::Delete if !killed => {
                    sources.remove(&name);
                }
                _ => {}
            }
            outcomes.push(format!(
                "{:?} kill@{}ms {}",
                sp.op,
                sp.kill_at.as_millis(),
                if killed { "KILLED" } else { "completed" }
            ));
            if killed {
                reruns.push((sp.op, sp.args, name));
            }
        }

        // After every trial: check --verify-data passes.
        let out = s.run(&["check", "--verify-data"]);
        assert!(
            code(&out) == 0,
            "trial {trial} (seed {seed}): check --verify-data failed ({}):\n{}",
            out.status,
            stderr(&out)
        );
        // Reconcile with what exists: a killed create may have finished its archive file (then
        // it must be right too); a killed prune/delete may have removed archives.
        let present = archive_names(&s);
        for (name, src) in &pending {
            if present.contains(name) && !sources.contains_key(name) {
                sources.insert(name.clone(), src.clone());
            }
        }
        let reported: Vec<String> = sources.keys().cloned().collect();
        for name in &reported {
            if !present.contains(name) {
                // Gone only if a prune or delete (killed or not) ran this trial or earlier.
                sources.remove(name);
            }
        }
        for (name, src) in &sources {
            assert_extracts(&s, name, src, &format!("trial {trial} (seed {seed})"));
        }
        // A rerun of each killed command completes.
        for (op, mut args, name) in reruns {
            let stdin = match pending.get(&name) {
                Some(Source::Stream(f)) => Some(f.clone()),
                _ => None,
            };
            match op {
                Op::CreateTree | Op::CreateStream if present.contains(&name) => continue,
                Op::Delete if !present.contains(&name) => continue,
                _ => {}
            }
            let out = spawn(&s, &args, stdin.as_deref())
                .wait_with_output()
                .unwrap();
            assert_success(&out, &args.iter().map(String::as_str).collect::<Vec<_>>());
            match op {
                Op::CreateTree | Op::CreateStream => {
                    sources.insert(name.clone(), pending[&name].clone());
                    assert_extracts(&s, &name, &sources[&name], "rerun");
                }
                Op::Delete => {
                    sources.remove(&name);
                }
                _ => {}
            }
            args.clear();
        }
        let out = s.run(&["check"]);
        assert!(
            code(&out) == 0,
            "trial {trial}: check after reruns:\n{}",
            stderr(&out)
        );
        let line = format!("trial {trial:>3}: {}", outcomes.join(" | "));
        eprintln!("{line}");
        report.push(line);
    }
    let killed = report
        .iter()
        .map(|l| l.matches("KILLED").count())
        .sum::<usize>();
    eprintln!(
        "torture kill matrix: {trials} trials passed in {:.1} s (seed {seed}): {killed} of {} processes killed mid-run, the rest completed before their kill point",
        started.elapsed().as_secs_f64(),
        2 * trials
    );
    report
}

#[test]
fn kill_matrix_short() {
    let trials = env_u64("PROXBORG_TORTURE_TRIALS").unwrap_or(10);
    let seed = env_u64("PROXBORG_TORTURE_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    let report = kill_matrix(trials, seed);
    assert_eq!(report.len() as u64, trials);
}

// ---------------------------------------------------------------------------------------------
// 4. hostile storage

/// Every archive of `names` either extracts (stdout and export-tar) to its source or errors.
fn never_wrong_bytes(s: &Scratch, names: &[(&str, &[u8])], what: &str) {
    for (name, data) in names {
        let out = s.run(&["extract", name, "--stdout"]);
        let err = stderr(&out);
        assert!(
            !err.contains("panicked"),
            "{what}: extract {name} panicked:\n{err}"
        );
        if out.status.success() {
            assert!(
                out.stdout == *data,
                "{what}: extract {name} returned wrong bytes"
            );
        } else {
            assert_eq!(code(&out), 2, "{what}: extract {name}:\n{err}");
        }
        let out = s.run(&["export-tar", name, "-"]);
        let err = stderr(&out);
        assert!(
            !err.contains("panicked"),
            "{what}: export-tar {name} panicked:\n{err}"
        );
        if out.status.success() {
            // A stream archive's tar holds one member: its content must be the source's.
            let tar = s.path("hostile.tar");
            std::fs::write(&tar, &out.stdout).unwrap();
            let member = Command::new("tar")
                .args(["-xOf", tar.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(
                member.status.success() && member.stdout == *data,
                "{what}: export-tar {name} returned wrong bytes"
            );
        } else {
            assert_eq!(code(&out), 2, "{what}: export-tar {name}:\n{err}");
        }
    }
}

/// `check --verify-data` fails, with a line on stdout naming each problem (`key` in it).
fn check_detects(s: &Scratch, what: &str, key: &str) {
    let out = s.run(&["check", "--verify-data"]);
    let err = stderr(&out);
    let problems = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "hostile storage, {what}: check exit {}:\n{}",
        code(&out),
        problems.trim()
    );
    assert_ne!(code(&out), 0, "{what}: check did not notice:\n{err}");
    assert!(!err.contains("panicked"), "{what}: check panicked:\n{err}");
    assert!(
        problems.lines().any(|l| l.contains(key)),
        "{what}: no problem line naming {key}:\n{problems}\n{err}"
    );
}

fn name_of(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| !p.to_string_lossy().ends_with(".tmp"))
        .collect()
}

fn hostile_repo() -> (Scratch, Vec<u8>, Vec<u8>) {
    let s = Scratch::new();
    s.init("repokey");
    let a = noise(3 << 20, 11);
    let b = noise(3 << 20, 12);
    assert_success(&s.create_stdin("a", &a), &["create", "a"]);
    assert_success(&s.create_stdin("b", &b), &["create", "b"]);
    (s, a, b)
}

#[test]
fn hostile_swap_two_archive_files() {
    let (s, a, b) = hostile_repo();
    let arch = files_in(&s.repo().join("archives"));
    assert_eq!(arch.len(), 2);
    let (x, y) = (
        std::fs::read(&arch[0]).unwrap(),
        std::fs::read(&arch[1]).unwrap(),
    );
    std::fs::write(&arch[0], y).unwrap();
    std::fs::write(&arch[1], x).unwrap();
    check_detects(&s, "two archive files swapped", &name_of(&arch[0]));
    never_wrong_bytes(&s, &[("a", &a), ("b", &b)], "archives swapped");
}

#[test]
fn hostile_replace_a_pack_with_another_pack() {
    let (s, a, b) = hostile_repo();
    let packs = files_in(&s.repo().join("data"));
    assert!(packs.len() >= 2, "{packs:?}");
    std::fs::copy(&packs[0], &packs[1]).unwrap();
    check_detects(&s, "a pack replaced by another pack", &name_of(&packs[1]));
    never_wrong_bytes(&s, &[("a", &a), ("b", &b)], "pack replaced");
}

#[test]
fn hostile_roll_the_config_back() {
    let (s, a, b) = hostile_repo();
    let old = std::fs::read(s.repo().join("config")).unwrap();
    s.ok(&["config", "append-only", "true"]);
    std::fs::write(s.repo().join("config"), old).unwrap();
    // Refused as soon as it is opened (the security record knows a newer config), so check
    // stops with that one line rather than listing problems.
    let out = s.run(&["check", "--verify-data"]);
    let err = stderr(&out);
    assert_eq!(
        code(&out),
        2,
        "config rolled back: check did not notice:\n{err}"
    );
    assert!(
        err.contains("config is older") && err.contains("rolled back"),
        "{err}"
    );
    never_wrong_bytes(&s, &[("a", &a), ("b", &b)], "config rolled back");
}

#[test]
fn hostile_delete_the_newest_index_file() {
    let (s, a, b) = hostile_repo();
    let mut idx = files_in(&s.repo().join("index"));
    assert!(!idx.is_empty());
    idx.sort_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap());
    std::fs::remove_file(idx.last().unwrap()).unwrap();
    // The problem named: a blob the archive needs that no index file lists (or its pack).
    check_detects(&s, "newest index file deleted", "");
    never_wrong_bytes(&s, &[("a", &a), ("b", &b)], "index deleted");
}

// ---------------------------------------------------------------------------------------------
// Root, mounts and loop devices, with guards that release them on every path.

const INSTALL: &str = "apt-get install -y util-linux mount e2fsprogs";

fn require_root_and_tools() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "the torture suite's ENOSPC/EIO cases need root (run the tests as root)"
    );
    for tool in ["mount", "umount", "losetup", "mkfs.ext4"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(found, "`{tool}` is missing: install it with `{INSTALL}`");
    }
    assert!(
        Path::new("/dev/loop-control").exists(),
        "no loop devices (/dev/loop-control): `modprobe loop` (and `{INSTALL}`)"
    );
}

/// A mount point, unmounted (lazily if busy) on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .map(|s| s.success());
        if !matches!(ok, Ok(true)) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// A loop device, detached on drop (after the mount guard, declared later, is dropped).
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

fn mount_tmpfs(at: &Path, size: &str) -> Mount {
    std::fs::create_dir_all(at).unwrap();
    sh(&format!(
        "mount -t tmpfs -o size={size} pxb-torture '{}'",
        at.display()
    ));
    Mount(at.to_path_buf())
}

/// ext4 on a loop device over `image`, mounted at `at`.
fn mount_loop_ext4(image: &Path, mib: u64, at: &Path) -> (Loop, Mount) {
    sh(&format!("truncate -s {mib}M '{}'", image.display()));
    let dev = sh(&format!("losetup -f --show '{}'", image.display()))
        .trim()
        .to_owned();
    let lo = Loop(dev.clone());
    sh(&format!(
        "mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 {dev}"
    ));
    std::fs::create_dir_all(at).unwrap();
    sh(&format!(
        "mount -o errors=continue {dev} '{}'",
        at.display()
    ));
    (lo, Mount(at.to_path_buf()))
}

/// From now on every read or write past the first 1 MiB of the device fails with EIO: the
/// backing file shrinks and the loop device is told its new capacity (the block layer then
/// fails every request beyond the end; nothing is faked above it).
fn fail_device(lo: &Loop, image: &Path) {
    sh(&format!(
        "truncate -s 1M '{}' && losetup -c {} && echo 3 > /proc/sys/vm/drop_caches",
        image.display(),
        lo.0
    ));
}

fn added_size(s: &Scratch, name: &str) -> u64 {
    let out = s.ok(&["list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("no archive {name}"))["stats"]["added_size"]
        .as_u64()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// 2. ENOSPC

#[test]
fn enospc_mid_backup_then_space_freed() {
    require_root_and_tools();
    let s = Scratch::new();
    // Packs are ~16 MiB: room for two, then the third fills the filesystem.
    let _m = mount_tmpfs(&s.repo(), "40m");
    s.init("repokey");
    let data = noise(72 << 20, 21);
    let out = s.create_stdin("full", &data);
    let err = stderr(&out);
    eprintln!("ENOSPC: create exit {}: {}", code(&out), err.trim());
    assert_clean_failure(&out, "no space left", "create on a full filesystem");
    assert_eq!(
        err.trim().lines().count(),
        1,
        "ENOSPC: not a one-line error:\n{err}"
    );
    assert!(
        err.contains(&s.repo().display().to_string())
            || err.contains("pack")
            || err.contains("index"),
        "ENOSPC: the error does not name what could not be written:\n{err}"
    );
    let left: Vec<_> = files_under(&s.repo())
        .into_iter()
        .filter(|p| name_of(p).starts_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "ENOSPC left temp files: {left:?}");
    let out = s.run(&["check", "--verify-data"]);
    assert_eq!(code(&out), 0, "check after ENOSPC:\n{}", stderr(&out));
    // Free space: the filesystem grows (as after deleting other files on it).
    sh(&format!(
        "mount -o remount,size=160m '{}'",
        s.repo().display()
    ));
    let out = s.create_stdin("full", &data);
    assert_success(&out, &["create", "full", "- (after space was freed)"]);
    let added = added_size(&s, "full");
    eprintln!(
        "ENOSPC: after freeing space the backup added {added} bytes of {}",
        data.len()
    );
    assert!(
        added < data.len() as u64 * 3 / 4,
        "the backup after ENOSPC did not reuse what was written: added {added} of {}",
        data.len()
    );
    s.ok(&["check", "--verify-data"]);
    assert!(s.ok(&["extract", "full", "--stdout"]).stdout == data);
}

// ---------------------------------------------------------------------------------------------
// 3. EIO

#[test]
fn eio_during_create() {
    require_root_and_tools();
    let s = Scratch::new();
    let image = s.path("disk.img");
    let (lo, _m) = mount_loop_ext4(&image, 256, &s.repo());
    s.init("repokey");
    let data = noise(96 << 20, 31);
    let src = s.path("stream");
    std::fs::write(&src, &data).unwrap();
    let child = spawn(&s, &["create".into(), "io".into(), "-".into()], Some(&src));
    std::thread::sleep(Duration::from_millis(150));
    fail_device(&lo, &image);
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    eprintln!("EIO during create: exit {}: {}", code(&out), err.trim());
    assert!(!err.contains("panicked"), "create panicked:\n{err}");
    assert_eq!(code(&out), 2, "create on a failing disk:\n{err}");
    assert!(
        err.contains("(os error ") && err.contains(&s.repo().display().to_string()),
        "EIO during create: no clear I/O error naming the object:\n{err}"
    );
    assert_eq!(
        err.trim().lines().count(),
        1,
        "not a one-line error:\n{err}"
    );
}

#[test]
fn eio_during_extract() {
    require_root_and_tools();
    let s = Scratch::new();
    let image = s.path("disk.img");
    let (lo, m) = mount_loop_ext4(&image, 128, &s.repo());
    s.init("repokey");
    let tree = s.path("src");
    write_tree(&tree, 41);
    std::fs::write(tree.join("big"), noise(40 << 20, 42)).unwrap();
    s.ok(&["create", "t", tree.to_str().unwrap()]);
    // A clean page cache: remount, then the device fails.
    drop(m);
    std::fs::create_dir_all(s.repo()).unwrap();
    sh(&format!(
        "mount -o errors=continue {} '{}'",
        lo.0,
        s.repo().display()
    ));
    let _m = Mount(s.repo());
    // Warm the metadata (config, index and archive files, the packs' inodes) so the read that
    // fails is a pack's data, then fail the device without dropping the caches.
    sh(&format!(
        "cd '{}' && cat config index/* archives/* >/dev/null && ls -lR data >/dev/null",
        s.repo().display()
    ));
    sh(&format!(
        "truncate -s 1M '{}' && losetup -c {}",
        image.display(),
        lo.0
    ));
    let dest = s.path("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let out = s.run(&["extract", "t", "-C", dest.to_str().unwrap()]);
    let err = stderr(&out);
    eprintln!("EIO during extract: exit {}: {}", code(&out), err.trim());
    assert!(!err.contains("panicked"), "extract panicked:\n{err}");
    assert_eq!(code(&out), 2, "extract from a failing disk:\n{err}");
    assert!(
        err.contains("(os error ") && err.contains(&s.repo().display().to_string()),
        "EIO during extract: no clear I/O error naming the object:\n{err}"
    );
    assert_eq!(
        err.trim().lines().count(),
        1,
        "not a one-line error:\n{err}"
    );
    // Whatever extract left has the right bytes; nothing else (no temp files) is there.
    for f in files_under(&dest) {
        let rel = f.strip_prefix(&dest).unwrap();
        let orig = tree.join(rel);
        assert!(
            orig.exists(),
            "extract left {} behind (not in the source)",
            rel.display()
        );
        assert!(
            std::fs::read(&f).unwrap() == std::fs::read(&orig).unwrap(),
            "extract wrote wrong bytes to {}",
            rel.display()
        );
    }
}
