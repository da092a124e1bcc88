//! Archive notes and protection (`archive note|protect|unprotect`) through the command line:
//! shown by list and info, honoured by delete and prune, kept by compact, verified by check,
//! and safe against a crash between writing a manifest and deleting the one it replaces, and
//! against a storage that puts an older manifest back.

mod common;
use common::*;
use std::path::PathBuf;

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn list_json(s: &Scratch) -> Vec<serde_json::Value> {
    serde_json::from_slice(&s.ok(&["list", "--json"]).stdout).unwrap()
}

fn info_json(s: &Scratch, name: &str) -> serde_json::Value {
    serde_json::from_slice(&s.ok(&["info", name, "--json"]).stdout).unwrap()
}

fn entry(s: &Scratch, name: &str) -> Option<serde_json::Value> {
    list_json(s).into_iter().find(|a| a["name"] == name)
}

fn names(s: &Scratch) -> Vec<String> {
    list_json(s)
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect()
}

fn archive_files(s: &Scratch) -> Vec<PathBuf> {
    files_under(&s.repo().join("archives"))
}

/// A repository with archives `a-1`, `a-2`, `a-3` (oldest first), one series.
fn three(encryption: &str) -> Scratch {
    let s = Scratch::new();
    s.init(encryption);
    for i in 1..=3 {
        let data = format!("contents of a-{i}\n");
        assert_success(
            &s.create_stdin(&format!("a-{i}"), data.as_bytes()),
            &["create"],
        );
    }
    s
}

#[test]
fn notes_are_set_changed_and_cleared_in_list_and_info() {
    let s = three("repokey");
    s.ok(&["archive", "note", "a-1", "before the upgrade\nsecond line"]);
    let human = stdout(&s.ok(&["list"]));
    let line = human.lines().find(|l| l.starts_with("a-1 ")).unwrap();
    assert!(line.contains("before the upgrade"), "{human}");
    assert!(
        !human.contains("second line"),
        "only the first line: {human}"
    );
    assert_eq!(
        entry(&s, "a-1").unwrap()["notes"],
        "before the upgrade\nsecond line"
    );
    assert_eq!(entry(&s, "a-2").unwrap()["notes"], "");
    assert_eq!(entry(&s, "a-1").unwrap()["protected"], false);
    assert_eq!(
        info_json(&s, "a-1")["notes"],
        "before the upgrade\nsecond line"
    );
    let info = stdout(&s.ok(&["info", "a-1"]));
    assert!(info.contains("before the upgrade"), "{info}");

    let out = s.ok(&["archive", "note", "a-1", "changed", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["notes"], "changed");
    assert_eq!(info_json(&s, "a-1")["notes"], "changed");
    assert!(stdout(&s.ok(&["list"])).contains("changed"));

    s.ok(&["archive", "note", "a-1", ""]);
    assert_eq!(info_json(&s, "a-1")["notes"], "");
    assert!(!stdout(&s.ok(&["list"])).contains("changed"));
    // One file per archive: each rewrite deleted the file it replaced.
    assert_eq!(archive_files(&s).len(), 3);

    // Refused notes: one line, exit 2, nothing changed.
    s.ok(&["archive", "note", "a-2", "kept"]);
    for bad in ["bell\u{7}".to_string(), "x".repeat(4097)] {
        let out = s.run(&["archive", "note", "a-2", &bad]);
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }
    assert_eq!(info_json(&s, "a-2")["notes"], "kept");
    let out = s.run(&["archive", "note", "nope", "x"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("nope"), "{}", stderr(&out));
    s.ok(&["check"]);
}

#[test]
fn protected_archives_are_refused_by_delete_and_kept_by_prune() {
    let s = three("repokey");
    s.ok(&["archive", "protect", "a-1"]);
    assert_eq!(entry(&s, "a-1").unwrap()["protected"], true);
    assert_eq!(info_json(&s, "a-1")["protected"], true);
    assert!(stdout(&s.ok(&["list"]))
        .lines()
        .any(|l| l.starts_with("a-1 ") && l.contains("[protected]")));

    // delete refuses before deleting anything, even the unprotected archive named first.
    let out = s.run(&["delete", "a-3", "a-1"]);
    assert_eq!(code(&out), 2);
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("\"a-1\" is protected"),
        "{}",
        stderr(&out)
    );
    assert_eq!(names(&s), ["a-1", "a-2", "a-3"]);
    assert_eq!(
        s.ok(&["extract", "a-1", "--stdout"]).stdout,
        b"contents of a-1\n"
    );

    // keep-last 1: a-3 by the rule, a-1 because protected (not taking the slot), a-2 goes.
    let out = s.ok(&["prune", "--keep-last", "1"]);
    assert!(
        stderr(&out).contains("Keeping protected archive a-1"),
        "{}",
        stderr(&out)
    );
    assert_eq!(names(&s), ["a-1", "a-3"]);
    let dry = stdout(&s.ok(&["prune", "--keep-last", "1", "--dry-run", "--list"]));
    assert!(dry.contains("(rule: protected): a-1"), "{dry}");

    s.ok(&["archive", "unprotect", "a-1"]);
    assert_eq!(entry(&s, "a-1").unwrap()["protected"], false);
    s.ok(&["prune", "--keep-last", "1"]);
    assert_eq!(names(&s), ["a-3"]);
    s.ok(&["check"]);
}

#[test]
fn notes_and_protection_survive_compact_and_check_passes() {
    let s = three("repokey");
    s.ok(&["archive", "note", "a-2", "golden image"]);
    s.ok(&["archive", "protect", "a-2"]);
    s.ok(&["delete", "a-1", "a-3"]);
    s.ok(&["compact"]);
    let a = entry(&s, "a-2").unwrap();
    assert_eq!(a["notes"], "golden image");
    assert_eq!(a["protected"], true);
    let out = s.ok(&["check", "--verify-data"]);
    assert!(
        stderr(&out).contains("1 protected archives"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        s.ok(&["extract", "a-2", "--stdout"]).stdout,
        b"contents of a-2\n"
    );
    let out = s.run(&["delete", "a-2"]);
    assert_eq!(code(&out), 2);
}

/// The id and stored bytes of an archive's current manifest file.
fn manifest_file(s: &Scratch, name: &str) -> (PathBuf, Vec<u8>) {
    let id = entry(s, name).unwrap()["id"].as_str().unwrap().to_string();
    let path = s.repo().join("archives").join(id);
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

#[test]
fn crash_between_writing_and_deleting_resolves_to_the_newer_manifest() {
    let s = three("repokey");
    let rev0 = manifest_file(&s, "a-1");
    s.ok(&["archive", "protect", "a-1"]);
    let rev1 = manifest_file(&s, "a-1");
    s.ok(&["archive", "note", "a-1", "newest"]);
    assert!(!rev0.0.exists() && !rev1.0.exists(), "old files deleted");
    // What a crash before the deletes would leave (or a storage putting old files back
    // beside the new one): three files for a-1.
    std::fs::write(&rev0.0, &rev0.1).unwrap();
    std::fs::write(&rev1.0, &rev1.1).unwrap();
    assert_eq!(archive_files(&s).len(), 5);

    assert_eq!(names(&s), ["a-1", "a-2", "a-3"]);
    let a = entry(&s, "a-1").unwrap();
    assert_eq!(a["notes"], "newest");
    assert_eq!(a["protected"], true);
    let out = s.ok(&["check"]);
    assert!(
        stderr(&out).contains("2 superseded files"),
        "{}",
        stderr(&out)
    );
    s.ok(&["prune", "--keep-last", "1"]);
    assert_eq!(names(&s), ["a-1", "a-3"]);
    // compact deletes the superseded files and nothing else.
    s.ok(&["compact"]);
    assert_eq!(archive_files(&s).len(), 2);
    assert_eq!(entry(&s, "a-1").unwrap()["notes"], "newest");
    assert_eq!(entry(&s, "a-1").unwrap()["protected"], true);

    // An older *protected* file beside a newer unprotected one: the newer wins, and deleting
    // the archive deletes both, so the old one cannot come back.
    let protected = manifest_file(&s, "a-1");
    s.ok(&["archive", "unprotect", "a-1"]);
    std::fs::write(&protected.0, &protected.1).unwrap();
    assert_eq!(entry(&s, "a-1").unwrap()["protected"], false);
    s.ok(&["delete", "a-1"]);
    assert_eq!(names(&s), ["a-3"]);
    assert_eq!(archive_files(&s).len(), 1);
    s.ok(&["check"]);
}

#[test]
fn an_older_manifest_put_back_by_the_storage_never_lets_prune_delete_a_protected_archive() {
    let s = three("repokey");
    let unprotected = manifest_file(&s, "a-1");
    s.ok(&["archive", "protect", "a-1"]);
    let protected = manifest_file(&s, "a-1");
    // The hostile storage swaps the file from before `protect` back in place of the new one.
    std::fs::remove_file(&protected.0).unwrap();
    std::fs::write(&unprotected.0, &unprotected.1).unwrap();

    for args in [
        &["prune", "--keep-last", "1"][..],
        &["delete", "a-1"],
        &["archive", "note", "a-1", "x"],
    ] {
        let out = s.run(args);
        assert_eq!(code(&out), 2, "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("rollback"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let out = s.run(&["check"]);
    assert_eq!(code(&out), 2);
    assert!(stdout(&out).contains("\"a-1\""), "{}", stdout(&out));
    // list still lists, with a warning (exit 1).
    let out = s.run(&["list"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("rollback"), "{}", stderr(&out));
    assert_eq!(archive_files(&s).len(), 3, "nothing was deleted");
    assert_eq!(
        s.ok(&["extract", "a-1", "--stdout"]).stdout,
        b"contents of a-1\n"
    );

    // Putting the newer file back (beside the old one) resolves it: protected again.
    std::fs::write(&protected.0, &protected.1).unwrap();
    s.ok(&["prune", "--keep-last", "1"]);
    assert_eq!(names(&s), ["a-1", "a-3"]);
    assert_eq!(entry(&s, "a-1").unwrap()["protected"], true);
}

#[test]
fn a_tampered_manifest_is_caught_by_check() {
    // Encrypted: a manifest edited by the storage (protection flipped) no longer decodes.
    let s = three("repokey");
    s.ok(&["archive", "protect", "a-1"]);
    let (path, mut bytes) = manifest_file(&s, "a-1");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let out = s.run(&["check"]);
    assert_eq!(code(&out), 2);
    assert!(
        stdout(&out).contains(path.file_name().unwrap().to_str().unwrap()),
        "{}",
        stdout(&out)
    );
    // prune refuses to run on damaged archive files rather than deciding without a-1.
    assert_eq!(code(&s.run(&["prune", "--keep-last", "1"])), 2);
}
