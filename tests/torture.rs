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
    assert_eq!(code(out), 2, "{what}: expected exit 2, got {}:\n{err}", out.status);
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
        std::fs::write(dir.join(format!("f{i}")), noise(len, seed * 1000 + i)).unwrap();
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

    // Seed archives so prune, delete and compact have work from the first trial.
    for i in 0..2u64 {
        let t = s.path(&format!("src-seed-tree{i}"));
        write_tree(&t, seed + i);
        let name = format!("seed-t{i}");
        s.ok(&["create", &name, t.to_str().unwrap()]);
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
    let window_ms = (full.as_millis() as u64 * 13 / 10).max(200);
    eprintln!(
        "torture kill matrix: seed {seed}, {trials} trials, stream {stream_mib} MiB (a full create takes {} ms), kill points uniform in 0..{window_ms} ms",
        full.as_millis()
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
            let kill_at = Duration::from_millis(rng.below(window_ms));
            let child = spawn(&s, &args, stdin.as_deref());
            spawned.push(Spawned {
                op,
                args,
                child,
                kill_at,
            });
        }
        // Kill each at its instant (measured from the common start).
        let t = Instant::now();
        let mut order: Vec<usize> = (0..spawned.len()).collect();
        order.sort_by_key(|&i| spawned[i].kill_at);
        for i in order {
            let sp = &mut spawned[i];
            if let Some(rest) = sp.kill_at.checked_sub(t.elapsed()) {
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
                assert!(!err.contains("panicked"), "trial {trial}: {:?} panicked:\n{err}", sp.args);
                // A create that finished must have exited 0; prune/delete/compact may meet a
                // victim another writer removed (exit 2 with a message), never a crash.
                if matches!(sp.op, Op::CreateTree | Op::CreateStream) {
                    assert_eq!(c, 0, "trial {trial}: {:?} failed:\n{err}", sp.args);
                }
            }
            match sp.op {
                Op::CreateTree | Op::CreateStream => {
                    if !killed {
                        // Reported complete: must extract identical from now on.
                        sources.insert(name.clone(), pending[&name].clone());
                    }
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
            let out = spawn(&s, &args, stdin.as_deref()).wait_with_output().unwrap();
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
        assert!(code(&out) == 0, "trial {trial}: check after reruns:\n{}", stderr(&out));
        let line = format!("trial {trial:>3}: {}", outcomes.join(" | "));
        eprintln!("{line}");
        report.push(line);
    }
    eprintln!(
        "torture kill matrix: {trials} trials passed in {:.1} s (seed {seed})",
        started.elapsed().as_secs_f64()
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
