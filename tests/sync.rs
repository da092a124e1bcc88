//! `proxborg sync SRC DST` and `init --chunker-params-from`: archives copied between local
//! repositories extract byte-identically, a second sync copies nothing, a dry run writes
//! nothing, repositories with different passphrases and keys share chunk ids and dedup,
//! incompatible repositories are refused in one line, notes and protection travel, and the
//! destination passes `check --verify-data`.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Several repositories in one scratch directory, each with its own passphrase; one client
/// (security record, cache) for all of them.
struct Repos {
    s: Scratch,
}

impl Repos {
    fn new() -> Self {
        Repos { s: Scratch::new() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.s.path(name)
    }

    fn pass(name: &str) -> String {
        format!("passphrase of {name}")
    }

    /// `proxborg` on repository `name` with its passphrase.
    fn cmd(&self, name: &str) -> Command {
        let mut c = proxborg();
        c.env("PROXBORG_REPO", self.path(name))
            .env("PROXBORG_PASSPHRASE", Self::pass(name))
            .env("PROXBORG_CACHE_DIR", self.s.path("cache"))
            .env("PROXBORG_SECURITY_DIR", self.s.path("security"));
        c
    }

    fn ok(&self, name: &str, args: &[&str]) -> Output {
        let out = run(self.cmd(name).args(args));
        assert_success(&out, args);
        out
    }

    fn init(&self, name: &str, args: &[&str]) -> Output {
        run(self.cmd(name).arg("init").args(args))
    }

    /// `proxborg sync SRC DST ARGS`, each repository with its own passphrase.
    fn sync(&self, src: &str, dst: &str, args: &[&str]) -> Output {
        let mut c = self.cmd(dst);
        c.env("PROXBORG_SRC_PASSPHRASE", Self::pass(src))
            .env_remove("PROXBORG_REPO")
            .arg("sync")
            .arg(self.path(src))
            .arg(self.path(dst))
            .args(args);
        run(&mut c)
    }

    fn sync_json(&self, src: &str, dst: &str, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.sync(src, dst, &all);
        assert_success(&out, &["sync"]);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `init --chunker-params-from FROM` of `name`.
    fn init_from(&self, name: &str, from: &str, encryption: &str) -> Output {
        let mut c = self.cmd(name);
        c.env("PROXBORG_SRC_PASSPHRASE", Self::pass(from)).args([
            "init",
            "--encryption",
            encryption,
            "--chunker-params-from",
        ]);
        c.arg(self.path(from));
        run(&mut c)
    }

    fn create(&self, name: &str, archive: &str, data: &[u8]) {
        assert_success(
            &create_stdin_with(self.cmd(name), archive, data),
            &["create"],
        );
    }

    fn list(&self, name: &str) -> Vec<serde_json::Value> {
        serde_json::from_slice(&self.ok(name, &["list", "--json"]).stdout).unwrap()
    }

    fn names(&self, name: &str) -> Vec<String> {
        self.list(name)
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn export(&self, name: &str, archive: &str) -> Vec<u8> {
        self.ok(name, &["export-tar", archive, "-"]).stdout
    }

    fn check_clean(&self, name: &str) {
        self.ok(name, &["check", "--verify-data"]);
    }
}

/// Every file of a repository with its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    files_under(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

fn n(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} in {v}"))
}

#[test]
fn archives_copied_twice_over_extract_identically_and_a_second_sync_copies_nothing() {
    let r = Repos::new();
    assert_success(&r.init("a", &["--encryption", "repokey"]), &["init a"]);
    let tree = r.path("tree");
    build_tree(&tree, 0);
    r.ok("a", &["create", "tree-1", tree.to_str().unwrap()]);
    r.create("a", "noise-1", &noise(3 << 20, 1));
    let mut more = noise(3 << 20, 1);
    more.extend_from_slice(&noise(1 << 20, 2));
    r.create("a", "noise-2", &more);
    // b: another passphrase, another key (repokey), c: a keyfile repository
    assert_success(&r.init_from("b", "a", "repokey"), &["init b"]);
    let key_c = r.path("key-c");
    let mut c = r.cmd("c");
    c.env("PROXBORG_SRC_PASSPHRASE", Repos::pass("b"))
        .env("PROXBORG_KEY_FILE", &key_c)
        .args(["init", "--encryption", "keyfile", "--chunker-params-from"])
        .arg(r.path("b"));
    assert_success(&run(&mut c), &["init c"]);

    let first = r.sync_json("a", "b", &[]);
    assert_eq!(n(&first, "archives_copied"), 3, "{first}");
    assert!(n(&first, "blobs_copied") > 3, "{first}");
    let mut to_c = r.cmd("c");
    to_c.env("PROXBORG_SRC_PASSPHRASE", Repos::pass("b"))
        .env("PROXBORG_KEY_FILE", &key_c)
        .env_remove("PROXBORG_REPO")
        .args(["sync", "--json"])
        .arg(r.path("b"))
        .arg(r.path("c"));
    let out = run(&mut to_c);
    assert_success(&out, &["sync b c"]);
    let to_c_report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(n(&to_c_report, "blobs_copied"), n(&first, "blobs_copied"));

    for archive in ["tree-1", "noise-1", "noise-2"] {
        let original = r.export("a", archive);
        assert_eq!(original, r.export("b", archive), "{archive} in b");
        let mut exp = r.cmd("c");
        exp.env("PROXBORG_KEY_FILE", &key_c)
            .args(["export-tar", archive, "-"]);
        let out = run(&mut exp);
        assert_success(&out, &["export-tar c"]);
        assert!(out.stdout == original, "{archive} in c");
    }
    // the same archives again: nothing to copy
    let again = r.sync_json("a", "b", &[]);
    assert_eq!(n(&again, "archives_copied"), 0, "{again}");
    assert_eq!(n(&again, "archives_skipped"), 3, "{again}");
    assert_eq!(n(&again, "blobs_copied"), 0, "{again}");
    assert_eq!(n(&again, "bytes_copied"), 0, "{again}");
    r.check_clean("b");
    // each repository keeps its own key: b's passphrase does not open a
    let mut wrong = r.cmd("a");
    wrong
        .env("PROXBORG_PASSPHRASE", Repos::pass("b"))
        .arg("list");
    assert_eq!(code(&run(&mut wrong)), 2);
}

#[test]
fn a_dry_run_writes_nothing_and_reports_what_a_sync_copies() {
    let r = Repos::new();
    assert_success(&r.init("a", &["--encryption", "repokey"]), &["init a"]);
    r.create("a", "one", &noise(2 << 20, 7));
    r.create("a", "two", b"small\n");
    assert_success(&r.init_from("b", "a", "repokey"), &["init b"]);
    let before = snapshot(&r.path("b"));
    let dry = r.sync_json("a", "b", &["--dry-run"]);
    assert_eq!(
        snapshot(&r.path("b")),
        before,
        "a dry run changed the repository"
    );
    assert_eq!(n(&dry, "archives_copied"), 2, "{dry}");
    let real = r.sync_json("a", "b", &[]);
    for k in ["archives_copied", "blobs_copied", "bytes_copied"] {
        assert_eq!(n(&dry, k), n(&real, k), "{k}: {dry} vs {real}");
    }
    assert!(n(&real, "bytes_stored") > 0);
}

#[test]
fn a_similar_archive_adds_few_blobs_and_selection_picks_one() {
    let r = Repos::new();
    assert_success(&r.init("a", &["--encryption", "repokey"]), &["init a"]);
    assert_success(&r.init_from("b", "a", "repokey"), &["init b"]);
    let base = noise(8 << 20, 3);
    r.create("a", "day-1", &base);
    let one = r.sync_json("a", "b", &["day-1"]);
    assert_eq!(n(&one, "archives_copied"), 1);
    let full = n(&one, "blobs_copied");
    let mut changed = base.clone();
    changed.extend_from_slice(b"a little more at the end\n");
    r.create("a", "day-2", &changed);
    r.create("a", "other", b"not selected\n");
    let two = r.sync_json("a", "b", &["day-2"]);
    assert_eq!(n(&two, "archives_copied"), 1, "{two}");
    let added = n(&two, "blobs_copied");
    assert!(added <= 3 && added < full, "{added} of {full} blobs: {two}");
    assert_eq!(r.names("b"), ["day-1", "day-2"]);
    assert_eq!(r.export("b", "day-2"), r.export("a", "day-2"));
    r.check_clean("b");
}

#[test]
fn repositories_with_other_chunk_ids_are_refused_in_one_line() {
    let r = Repos::new();
    assert_success(&r.init("a", &["--encryption", "repokey"]), &["init a"]);
    assert_success(&r.init("b", &["--encryption", "repokey"]), &["init b"]);
    r.create("a", "x", b"data\n");
    let out = r.sync("a", "b", &[]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("sync: SRC and DST chunk ids differ; make DST with `proxborg init --chunker-params-from SRC`"),
        "{err}"
    );
    assert!(r.names("b").is_empty());
    // unencrypted <-> encrypted cannot share ids
    assert_success(&r.init("plain", &["--encryption", "none"]), &["init plain"]);
    for (name, from, enc) in [("e", "plain", "repokey"), ("p", "a", "none")] {
        let out = r.init_from(name, from, enc);
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        assert!(
            stderr(&out).contains("both encrypted or both unencrypted"),
            "{}",
            stderr(&out)
        );
    }
    // two unencrypted repositories share ids without being told
    assert_success(
        &r.init("plain2", &["--encryption", "none"]),
        &["init plain2"],
    );
    r.create("plain", "y", &noise(1 << 20, 9));
    let out = r.sync_json("plain", "plain2", &[]);
    assert_eq!(n(&out, "archives_copied"), 1);
    assert_eq!(r.export("plain2", "y"), r.export("plain", "y"));
}

#[test]
fn notes_and_protection_survive_and_bwlimit_is_accepted() {
    let r = Repos::new();
    assert_success(&r.init("a", &["--encryption", "repokey"]), &["init a"]);
    r.create("a", "kept", b"important\n");
    r.create("a", "plain", b"ordinary\n");
    r.ok("a", &["archive", "note", "kept", "before the upgrade"]);
    r.ok("a", &["archive", "protect", "kept"]);
    assert_success(&r.init_from("b", "a", "repokey"), &["init b"]);
    let out = r.sync("a", "b", &["--bwlimit", "100000"]);
    assert_success(&out, &["sync --bwlimit"]);
    let kept = r
        .list("b")
        .into_iter()
        .find(|a| a["name"] == "kept")
        .unwrap();
    assert_eq!(kept["notes"], "before the upgrade");
    assert_eq!(kept["protected"], true);
    let out = run(r.cmd("b").args(["delete", "kept"]));
    assert_eq!(code(&out), 2, "a protected archive was deleted");
    r.check_clean("b");
}
