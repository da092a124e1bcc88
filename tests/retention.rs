//! prune, compact, locks and append-only through the command line.

mod common;
use common::*;
use std::collections::HashMap;

fn dir_size(dir: &std::path::Path) -> u64 {
    files_under(dir)
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// Archive `i` of a changing source: a shared part plus a part of its own.
fn version(i: u64) -> Vec<u8> {
    [noise(16 << 20, 100), noise(6 << 20, 200 + i)].concat()
}

#[test]
fn prune_to_two_and_compact_shrinks_to_a_fresh_repo_of_those_two() {
    let s = Scratch::new();
    s.init("repokey");
    for i in 0..10 {
        assert_success(&s.create_stdin(&format!("v-{i}"), &version(i)), &["create"]);
    }
    let dry = s.ok(&["prune", "--keep-last", "2", "--dry-run", "--list"]);
    let listing = String::from_utf8_lossy(&dry.stdout);
    assert!(
        listing.contains("Keeping archive (rule: last #1): v-9"),
        "{listing}"
    );
    assert_eq!(listing.matches("Would prune").count(), 8, "{listing}");
    assert_eq!(
        files_under(&s.repo().join("archives")).len(),
        10,
        "dry run deleted something"
    );

    s.ok(&["prune", "--keep-last", "2"]);
    let names = String::from_utf8(s.ok(&["list"]).stdout).unwrap();
    assert!(
        names.contains("v-8") && names.contains("v-9") && !names.contains("v-7"),
        "{names}"
    );
    let before = dir_size(&s.repo());
    s.ok(&["compact"]);
    let after = dir_size(&s.repo());

    let fresh = Scratch::new();
    fresh.init("repokey");
    for i in [8, 9] {
        assert_success(
            &fresh.create_stdin(&format!("v-{i}"), &version(i)),
            &["create"],
        );
    }
    let fresh_size = dir_size(&fresh.repo());
    eprintln!("before compact {before}, after {after}, fresh repo of the two {fresh_size}");
    assert!(after < before, "compact freed nothing");
    assert!(
        (after as f64) < fresh_size as f64 * 1.10,
        "after compact {after} bytes, a fresh repo of the same two archives {fresh_size}"
    );
    s.ok(&["check", "--verify-data"]);
    for i in [8, 9] {
        assert!(s.ok(&["extract", &format!("v-{i}"), "--stdout"]).stdout == version(i));
    }
}

#[test]
fn append_only_refuses_delete_prune_compact_but_not_backups() {
    let s = Scratch::new();
    s.ok(&["init", "--encryption", "none", "--append-only"]);
    assert_success(&s.create_stdin("a", b"one"), &["create"]);
    assert_success(&s.create_stdin("b", b"two"), &["create"]);
    for args in [
        &["delete", "a"][..],
        &["prune", "--keep-last", "1"],
        &["compact"],
    ] {
        let out = s.run(args);
        assert_eq!(code(&out), 2, "{args:?} was not refused");
        assert!(
            stderr(&out).contains("append-only"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    s.ok(&["list"]);
    s.ok(&["check"]);
    assert_eq!(s.ok(&["extract", "a", "--stdout"]).stdout, b"one");
    assert_eq!(
        String::from_utf8(s.ok(&["config", "append-only"]).stdout)
            .unwrap()
            .trim(),
        "on"
    );
    s.ok(&["config", "append-only", "off"]);
    s.ok(&["delete", "a"]);
}

#[test]
fn stale_locks_are_broken_and_live_ones_time_out() {
    let s = Scratch::new();
    s.init("none");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let locks = s.repo().join("locks");
    std::fs::create_dir_all(&locks).unwrap();
    let lock = |pid: u32| {
        serde_json::json!({"kind": "exclusive", "host": host, "pid": pid, "command": "compact",
            "created": jiff::Timestamp::now().as_second(), "refreshed": jiff::Timestamp::now().as_second()})
        .to_string()
    };
    std::fs::write(locks.join("exclusive-dead"), lock(999_999_999)).unwrap();
    let out = s.create_stdin("a", b"x");
    assert_success(&out, &["create"]);
    assert!(stderr(&out).contains("is stale"), "{}", stderr(&out));
    assert!(!locks.join("exclusive-dead").exists());

    // A live holder (this test process) blocks a create until --lock-wait expires.
    std::fs::write(locks.join("exclusive-live"), lock(std::process::id())).unwrap();
    let t = std::time::Instant::now();
    let out = s.run(&["--lock-wait", "1", "delete", "a"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("locked") && stderr(&out).contains("--lock-wait"),
        "{}",
        stderr(&out)
    );
    assert!(t.elapsed().as_millis() >= 1000);
    std::fs::remove_file(locks.join("exclusive-live")).unwrap();
    s.ok(&["delete", "a"]);
    assert!(
        files_under(&locks).is_empty(),
        "locks left behind: {:?}",
        files_under(&locks)
    );
}

#[test]
fn killed_compact_never_loses_data() {
    let s = Scratch::new();
    s.init("none");
    let mut expected: HashMap<String, Vec<u8>> = HashMap::new();
    for trial in 0..10u64 {
        // Make garbage to collect: two new archives, delete the older one.
        for k in 0..2 {
            let name = format!("t{trial}-{k}");
            let data = [noise(3 << 20, 1000 + trial * 2 + k), noise(1 << 20, 7)].concat();
            assert_success(&s.create_stdin(&name, &data), &["create"]);
            expected.insert(name, data);
        }
        let victim = format!("t{trial}-0");
        s.ok(&["delete", &victim]);
        expected.remove(&victim);
        let mut child = s
            .cmd()
            .args(["compact", "--threshold", "1"])
            .spawn()
            .unwrap();
        // Random-ish points: from almost at once to (likely) after it finished.
        std::thread::sleep(std::time::Duration::from_millis(trial * trial * 7));
        let _ = child.kill();
        let _ = child.wait();
        let out = s.run(&["check"]);
        assert!(
            out.status.success(),
            "trial {trial}: {}{}",
            stderr(&out),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // Leftover locks of killed compacts are stale (dead pid) and get broken.
    s.ok(&["compact"]);
    s.ok(&["check", "--verify-data"]);
    for (name, data) in &expected {
        assert!(
            &s.ok(&["extract", name, "--stdout"]).stdout == data,
            "{name} lost data"
        );
    }
}

#[test]
fn prune_and_compact_are_safe_while_backups_run() {
    let s = Scratch::new();
    s.init("repokey");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let made = std::sync::Mutex::new(Vec::<(String, u64)>::new());
    std::thread::scope(|sc| {
        for w in 0..3u64 {
            let (s, stop, made) = (&s, &stop, &made);
            sc.spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let name = format!("w{w}-{n:04}");
                    let seed = w * 10_000 + n;
                    let out = s.create_stdin(&name, &payload(seed));
                    assert_success(&out, &["create", &name]);
                    made.lock().unwrap().push((name, seed));
                    n += 1;
                }
            });
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(35);
        let mut rounds = 0;
        while std::time::Instant::now() < deadline {
            s.ok(&["prune", "--keep-last", "3"]);
            s.ok(&["compact", "--threshold", "5"]);
            rounds += 1;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        eprintln!("{rounds} prune+compact rounds");
    });
    s.ok(&["check", "--verify-data"]);
    let listing = String::from_utf8(s.ok(&["list", "--json"]).stdout).unwrap();
    let archives: Vec<serde_json::Value> = serde_json::from_str(&listing).unwrap();
    assert!(!archives.is_empty());
    let made = made.into_inner().unwrap();
    for a in &archives {
        let name = a["name"].as_str().unwrap();
        let seed = made.iter().find(|(n, _)| n == name).unwrap().1;
        assert!(
            s.ok(&["extract", name, "--stdout"]).stdout == payload(seed),
            "{name} damaged"
        );
    }
}

/// Each backup shares most of its bytes with the others (so dedup and repacking happen).
fn payload(seed: u64) -> Vec<u8> {
    [noise(4 << 20, 5), noise(1 << 20, 50_000 + seed)].concat()
}
