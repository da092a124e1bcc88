//! Hostile storage against the client's memory (issue 15, "authenticated repository state"):
//! whoever can write the repository edits `config` (encryption off, another key, other chunker
//! parameters, another id, an id that is a path), and every command refuses with exit 2 and one
//! line naming the change, writing nothing to the repository.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::Path;

/// Every entry under `dir` with what would show a write: kind, size, mtime (a directory's
/// changes when an entry is created or removed in it, so a lock object written and deleted
/// again shows) and content hash.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let m = std::fs::symlink_metadata(&d).unwrap();
        out.insert(
            d.display().to_string(),
            format!("dir {} {}", m.mtime(), m.mtime_nsec()),
        );
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else {
                let hash = blake3::hash(&std::fs::read(&p).unwrap());
                out.insert(
                    p.display().to_string(),
                    format!("{} {} {} {hash}", m.len(), m.mtime(), m.mtime_nsec()),
                );
            }
        }
    }
    out
}

fn edit_config(s: &Scratch, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = s.repo().join("config");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

fn config(s: &Scratch) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(s.repo().join("config")).unwrap()).unwrap()
}

/// A scratch with an encrypted repository holding archive `a` of a one-file tree.
fn repository(encryption: &str) -> Scratch {
    let s = Scratch::new();
    s.init(encryption);
    let src = s.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("file"), b"FIRST-BACKUP-CONTENT ".repeat(100)).unwrap();
    s.ok(&["create", "a", src.to_str().unwrap()]);
    s
}

/// `create`, `list` and `extract` each exit 2 with one line containing `expect`, and leave
/// the repository (and the client's cache) exactly as they found them.
fn assert_refused(s: &Scratch, expect: &str) {
    let src2 = s.path("src2");
    std::fs::create_dir_all(&src2).unwrap();
    std::fs::write(src2.join("new"), b"SECOND-BACKUP-PLAINTEXT ".repeat(100)).unwrap();
    let dest = s.path("dest");
    let before = snapshot(&s.repo());
    let cache_before = std::fs::read_dir(s.path("cache")).map(|d| d.count()).ok();
    for args in [
        vec!["create", "b", src2.to_str().unwrap()],
        vec!["list"],
        vec!["list", "a"],
        vec!["extract", "a", dest.to_str().unwrap()],
        vec!["extract", "a", "file", "--stdout"],
    ] {
        let out = s.run(&args);
        let err = stderr(&out);
        assert_eq!(code(&out), 2, "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?} printed data");
    }
    assert_eq!(snapshot(&s.repo()), before, "the repository was written to");
    assert_eq!(
        std::fs::read_dir(s.path("cache")).map(|d| d.count()).ok(),
        cache_before
    );
    assert!(!dest.join("file").exists());
    let grep = sh(&format!(
        "grep -r -l SECOND-BACKUP '{}' || true",
        s.repo().display()
    ));
    assert_eq!(
        grep, "",
        "plaintext of the refused backup in the repository"
    );
}

#[test]
fn encryption_switched_off_by_the_storage_is_refused_and_nothing_is_written() {
    let s = repository("repokey");
    let original = std::fs::read(s.repo().join("config")).unwrap();
    edit_config(&s, |c| {
        let c = c.as_object_mut().unwrap();
        c.insert("encryption".into(), "none".into());
        c.remove("key");
        c.remove("mac");
    });
    assert_refused(&s, "encryption mode changed from repokey to none");
    // What the refusal names is the record to remove if the change were intended.
    let out = s.run(&["list"]);
    let id = config(&s)["id"].as_str().unwrap().to_string();
    assert!(
        stderr(&out).contains(&s.path("security").join(&id).display().to_string()),
        "{}",
        stderr(&out)
    );
    // The genuine config opens as before: the record was not disturbed by the refusals.
    std::fs::write(s.repo().join("config"), original).unwrap();
    assert_eq!(
        s.ok(&["extract", "a", "file", "--stdout"]).stdout.len(),
        2100
    );
}

#[test]
fn another_repositorys_key_is_refused() {
    let s = repository("repokey");
    let other = Scratch::new();
    other.init("repokey");
    let their_key = config(&other)["key"].clone();
    let our_config = std::fs::read(s.repo().join("config")).unwrap();
    edit_config(&s, |c| c["key"] = their_key.clone());
    assert_refused(&s, "encryption key changed");
    // A client with no record of the repository still refuses: the config's MAC was made
    // with the other key. (Same passphrase for both, so the swapped key does unwrap.)
    let out = run(s
        .cmd()
        .env("PROXBORG_SECURITY_DIR", s.path("fresh-client"))
        .args(["list"]));
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("config: authentication failed"),
        "{}",
        stderr(&out)
    );
    assert!(!s.path("fresh-client").exists());
    // And the attacker's own MAC with their key does not help: the fingerprint differs.
    std::fs::write(s.repo().join("config"), our_config).unwrap();
    let mut theirs = config(&other);
    theirs["id"] = config(&s)["id"].clone();
    std::fs::write(
        s.repo().join("config"),
        serde_json::to_vec_pretty(&theirs).unwrap(),
    )
    .unwrap();
    assert_refused(&s, "encryption key changed");
}

#[test]
fn other_chunker_parameters_are_refused() {
    // The chunker's seed is derived from the master key (`Keys::cdc_seed`), not stored: a
    // changed seed is a changed key (the test above). The parameters are in the config.
    let s = repository("repokey");
    edit_config(&s, |c| c["chunker"]["avg"] = (512 * 1024).into());
    assert_refused(&s, "chunker parameters changed from 262144/1048576/4194304");
    let out = run(s
        .cmd()
        .env("PROXBORG_SECURITY_DIR", s.path("fresh-client"))
        .args(["list"]));
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("authentication failed"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn another_id_at_the_same_location_is_refused() {
    let s = repository("repokey");
    edit_config(&s, |c| c["id"] = "0123456789abcdef".repeat(2).into());
    assert_refused(&s, "repository id changed from ");
    // Even for an unencrypted repository, where no MAC can help.
    let s = repository("none");
    edit_config(&s, |c| c["id"] = "0123456789abcdef".repeat(2).into());
    assert_refused(&s, "repository id changed from ");
}

#[test]
fn an_unencrypted_repository_that_turns_encrypted_is_refused_too() {
    let s = repository("none");
    let other = Scratch::new();
    other.init("repokey");
    let mut theirs = config(&other);
    theirs["id"] = config(&s)["id"].clone();
    std::fs::write(
        s.repo().join("config"),
        serde_json::to_vec_pretty(&theirs).unwrap(),
    )
    .unwrap();
    assert_refused(&s, "encryption mode changed from none to repokey");
}

#[test]
fn ids_that_are_paths_are_refused_before_any_path_is_built() {
    assert!(
        !Path::new("/root/x").exists(),
        "/root/x exists: this test needs it absent"
    );
    for bad_id in ["../../etc/x", "/root/x"] {
        let s = Scratch::new();
        // Cache, security record and key file two levels down, so `../../etc/x` would still
        // land inside the scratch (at `a/etc/x`), where the test can look.
        let cmd = || {
            let mut c = s.cmd();
            c.env("PROXBORG_CACHE_DIR", s.path("a/b/cache"))
                .env("PROXBORG_SECURITY_DIR", s.path("a/b/security"))
                .env("HOME", s.path("home"));
            c
        };
        let src = s.path("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("f"), b"data").unwrap();
        for args in [
            &["init", "--encryption", "keyfile"][..],
            &["create", "a", src.to_str().unwrap()],
        ] {
            let out = run(cmd().args(args));
            assert_success(&out, args);
        }
        edit_config(&s, |c| c["id"] = bad_id.into());
        let before = snapshot(s.dir.path());
        for args in [
            vec!["create", "b", src.to_str().unwrap()],
            vec!["list"],
            vec!["extract", "a", "f", "--stdout"],
            vec!["info"],
        ] {
            let out = run(cmd().args(&args));
            let err = stderr(&out);
            assert_eq!(code(&out), 2, "{args:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.contains("invalid repository id"), "{args:?}: {err}");
        }
        assert_eq!(
            snapshot(s.dir.path()),
            before,
            "{bad_id}: something was written"
        );
        assert!(!s.path("a/etc").exists());
        assert!(!Path::new("/root/x").exists());
    }
}

#[test]
fn a_config_from_before_macs_opens_gets_one_and_must_keep_it() {
    let s = repository("repokey");
    // As proxborg wrote configs before they were authenticated, met by a client that has no
    // record yet: accepted, recorded as unauthenticated.
    edit_config(&s, |c| {
        c.as_object_mut().unwrap().remove("mac");
    });
    std::fs::remove_dir_all(s.path("security")).unwrap();
    s.ok(&["list"]);
    // Rewriting the config (any `config` change) authenticates it ...
    s.ok(&["config", "append-only", "off"]);
    assert!(config(&s)["mac"].is_string());
    s.ok(&["list"]);
    // ... and from then on this client insists.
    edit_config(&s, |c| {
        c.as_object_mut().unwrap().remove("mac");
    });
    assert_refused(&s, "the config lost its authentication code");
}

#[test]
fn a_moved_repository_is_the_same_repository() {
    let s = repository("repokey");
    std::fs::rename(s.repo(), s.path("moved")).unwrap();
    let out = run(s.cmd().env("PROXBORG_REPO", s.path("moved")).args(["list"]));
    assert_success(&out, &["list"]);
}

#[test]
fn the_security_record_is_private_and_init_takes_over_its_location() {
    use std::os::unix::fs::MetadataExt;
    let s = repository("repokey");
    let sec = s.path("security");
    assert_eq!(std::fs::metadata(&sec).unwrap().mode() & 0o777, 0o700);
    let id = config(&s)["id"].as_str().unwrap().to_string();
    let record = std::fs::read_to_string(sec.join(&id).join("repository")).unwrap();
    assert!(record.contains("\"encryption\": \"repokey\""), "{record}");
    assert!(record.contains("\"key_fingerprint\": \""), "{record}");
    // The user deletes the repository and makes a new one at the same place: that is no attack.
    std::fs::remove_dir_all(s.repo()).unwrap();
    s.init("none");
    s.ok(&["list"]);
}
