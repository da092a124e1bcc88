//! `check --repair` (issue 15, item 4): lost or damaged index files are rebuilt from the
//! packs, a damaged pack is moved aside after its readable blobs are salvaged, archives that
//! used its lost blobs are rewritten with their damaged files marked, a later backup of the
//! same data heals them, and an unreadable archive file is moved aside, never deleted.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Every file under `dir` (relative path -> BLAKE3 of its contents).
fn contents(dir: &Path) -> BTreeMap<String, String> {
    files_under(dir)
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            (
                rel,
                blake3::hash(&std::fs::read(&p).unwrap())
                    .to_hex()
                    .to_string(),
            )
        })
        .collect()
}

fn under(s: &Scratch, dir: &str) -> Vec<PathBuf> {
    files_under(&s.repo().join(dir))
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Twelve files of 100 KiB noise (one blob each, all in one data pack) under `src/d`.
fn source(s: &Scratch) -> PathBuf {
    let src = s.path("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    for i in 0..12u64 {
        std::fs::write(src.join(format!("d/f{i:02}")), noise(100 << 10, i)).unwrap();
    }
    src
}

fn repository() -> (Scratch, PathBuf) {
    let s = Scratch::new();
    s.init("repokey");
    let src = source(&s);
    s.ok(&["create", "a1", src.to_str().unwrap()]);
    s.ok(&["create", "a2", src.to_str().unwrap()]);
    (s, src)
}

/// Extracts `archive` into a fresh directory; returns the directory and the output.
fn extract(s: &Scratch, archive: &str, dest: &str) -> (PathBuf, std::process::Output) {
    let d = s.path(dest);
    std::fs::create_dir_all(&d).unwrap();
    let out = s.run(&["extract", archive, "-C", d.to_str().unwrap()]);
    (d, out)
}

fn assert_restores(s: &Scratch, src: &Path, archive: &str, dest: &str) {
    let (d, out) = extract(s, archive, dest);
    assert_success(&out, &["extract", archive]);
    assert_eq!(contents(&d), contents(src), "{archive} is not byte-exact");
}

fn flip_middle(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0xa5;
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn lost_index_files_are_rebuilt_and_a_dry_run_changes_nothing() {
    let (s, src) = repository();
    for f in under(&s, "index") {
        std::fs::remove_file(f).unwrap();
    }
    let out = s.run(&["check"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));

    let before = contents(&s.repo());
    let out = s.run(&["check", "--repair", "--dry-run"]);
    assert!(code(&out) <= 1, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("index would be rebuilt from 2 packs (2 not indexed before"),
        "{text}"
    );
    assert_eq!(
        contents(&s.repo()),
        before,
        "the dry run changed the repository"
    );
    assert!(under(&s, "index").is_empty());

    let out = s.ok(&["check", "--repair"]);
    assert!(
        stdout(&out).contains("index rebuilt from 2 packs"),
        "{}",
        stdout(&out)
    );
    assert_eq!(under(&s, "index").len(), 1);
    s.ok(&["check", "--verify-data"]);
    assert_restores(&s, &src, "a1", "x1");
    assert_restores(&s, &src, "a2", "x2");
    // Done is done: a second repair finds nothing, and changes nothing.
    let before = contents(&s.repo());
    let out = s.ok(&["check", "--repair"]);
    assert!(
        stderr(&out).contains("nothing to repair"),
        "{}",
        stderr(&out)
    );
    assert_eq!(contents(&s.repo()), before);
}

#[test]
fn a_truncated_index_file_is_rebuilt() {
    let (s, src) = repository();
    let victim = under(&s, "index").pop().unwrap();
    let len = std::fs::metadata(&victim).unwrap().len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&victim)
        .unwrap();
    f.set_len(len / 2).unwrap();
    let out = s.run(&["check"]);
    assert_eq!(code(&out), 2);
    let name = victim.file_name().unwrap().to_str().unwrap().to_string();
    assert!(stdout(&out).contains(&name), "{}", stdout(&out));

    let out = s.ok(&["check", "--repair"]);
    let text = stdout(&out);
    assert!(
        text.contains("damaged index file") && text.contains(&name),
        "{text}"
    );
    assert!(text.contains("index rebuilt"), "{text}");
    assert!(
        !victim.exists(),
        "the damaged index file is still in effect"
    );
    s.ok(&["check", "--verify-data"]);
    assert_restores(&s, &src, "a2", "x");
}

/// The data pack (the larger of the two packs one small backup writes).
fn data_pack(s: &Scratch) -> PathBuf {
    under(s, "data")
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
}

#[test]
fn a_damaged_pack_is_moved_aside_its_files_marked_and_a_new_backup_heals() {
    let (s, src) = repository();
    let pack = data_pack(&s);
    let original = std::fs::read(&pack).unwrap();
    flip_middle(&pack);
    let pack_name = pack.file_name().unwrap().to_str().unwrap().to_string();
    let out = s.run(&["check", "--verify-data"]);
    assert_eq!(code(&out), 2);
    assert!(stdout(&out).contains(&pack_name), "{}", stdout(&out));

    // Dry run: says it, does nothing.
    let before = contents(&s.repo());
    let out = s.run(&["check", "--repair", "--dry-run"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stdout(&out).contains("would move to"), "{}", stdout(&out));
    assert_eq!(contents(&s.repo()), before);

    let out = s.run(&["check", "--repair"]);
    assert_eq!(code(&out), 1, "data was lost: exit 1\n{}", stderr(&out));
    let text = stdout(&out);
    // One blob (one file) is hit; the eleven others are salvaged.
    let line = text.lines().find(|l| l.contains(&pack_name)).unwrap();
    assert!(
        line.contains("11 readable blobs salvaged, 1 lost"),
        "{text}"
    );
    assert!(line.contains("used by archives: a1, a2"), "{text}");
    let damaged: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("damaged file ./d/"))
        .collect();
    assert_eq!(damaged.len(), 2, "one file in each archive: {text}");
    let file = damaged[0]
        .rsplit("damaged file ./")
        .next()
        .unwrap()
        .to_string();
    assert!(
        text.contains("archive \"a1\": rewritten; 1 damaged files"),
        "{text}"
    );
    assert!(!pack.exists());
    let aside = PathBuf::from(format!("{}.bad", pack.display()));
    assert_eq!(std::fs::read(&aside).unwrap().len(), original.len());

    s.ok(&["check", "--verify-data"]);
    // list marks the file, and only it.
    let listing = stdout(&s.ok(&["list", "a1"]));
    let marked: Vec<&str> = listing.lines().filter(|l| l.contains("DAMAGED")).collect();
    assert_eq!(marked.len(), 1, "{listing}");
    assert!(marked[0].contains(&file), "{listing}");
    let json = stdout(&s.ok(&["list", "a1", "--json"]));
    assert_eq!(json.matches("\"damaged\":true").count(), 1, "{json}");
    // Extracting it: a one-line error naming it, exit != 0, nothing on stdout.
    let out = s.run(&["extract", "a1", &file, "--stdout"]);
    assert_ne!(code(&out), 0);
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&file) && err.contains("damaged"), "{err}");
    // Extracting everything: fails for that file, restores the rest byte-exact.
    let (d, out) = extract(&s, "a2", "x-damaged");
    assert_ne!(code(&out), 0);
    assert!(stderr(&out).contains(&file), "{}", stderr(&out));
    let mut want = contents(&src);
    want.remove(&file);
    assert_eq!(contents(&d), want);
    // The manifest records the repair.
    let json = stdout(&s.ok(&["list", "--json"]));
    assert!(
        json.contains("\"repaired\"") && json.contains("\"damaged_count\": 1"),
        "{json}"
    );

    // A backup of the same data writes the lost blob again: the new archive, and the old
    // ones (their references were kept), restore whole.
    s.ok(&["create", "a3", src.to_str().unwrap()]);
    s.ok(&["check", "--verify-data"]);
    assert_restores(&s, &src, "a3", "x3");
    assert_restores(&s, &src, "a1", "x1");
    assert!(!stdout(&s.ok(&["list", "a1"])).contains("DAMAGED"));
    // And the next repair takes the mark off the manifests.
    let out = s.ok(&["check", "--repair"]);
    assert!(
        stdout(&out).contains("archive \"a1\": healed"),
        "{}",
        stdout(&out)
    );
    let json = stdout(&s.ok(&["list", "--json"]));
    assert_eq!(json.matches("\"damaged_count\": 0").count(), 2, "{json}");
    s.ok(&["check", "--verify-data"]);
}

#[test]
fn an_interrupted_archive_rewrite_is_finished_by_the_next_repair() {
    let (s, _src) = repository();
    let archives_before: Vec<(PathBuf, Vec<u8>)> = under(&s, "archives")
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    flip_middle(&data_pack(&s));
    assert_eq!(code(&s.run(&["check", "--repair"])), 1);
    // As if the repair had stopped after writing the new manifests: the old ones are back.
    for (p, b) in &archives_before {
        std::fs::write(p, b).unwrap();
    }
    assert_eq!(under(&s, "archives").len(), 4);
    let out = s.run(&["check", "--repair"]);
    let text = stdout(&out);
    assert_eq!(text.matches("deleted (replaced by").count(), 2, "{text}");
    assert_eq!(under(&s, "archives").len(), 2);
    let names = stdout(&s.ok(&["list"]));
    assert_eq!(names.lines().count(), 2, "{names}");
    s.ok(&["check", "--verify-data"]);
}

#[test]
fn a_damaged_metadata_pack_leaves_an_archive_that_lists_and_checks() {
    let (s, _src) = repository();
    let meta = under(&s, "data")
        .into_iter()
        .min_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    flip_middle(&meta);
    let out = s.run(&["check", "--repair"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("archive \"a1\": rebuilt"), "{text}");
    assert!(text.contains("items lost"), "{text}");
    s.ok(&["check", "--verify-data"]);
    s.ok(&["list", "a1"]);
}

#[test]
fn an_unreadable_archive_file_is_moved_aside_not_deleted() {
    let (s, src) = repository();
    let victim = under(&s, "archives").pop().unwrap();
    flip_middle(&victim);
    let damaged = std::fs::read(&victim).unwrap();
    let out = s.run(&["check"]);
    assert_eq!(code(&out), 2);
    let out = s.run(&["check", "--repair"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let name = victim.file_name().unwrap().to_str().unwrap().to_string();
    assert!(
        stdout(&out).contains(&format!("archives/{name}: "))
            && stdout(&out).contains("moved aside"),
        "{}",
        stdout(&out)
    );
    assert!(!victim.exists());
    let aside = PathBuf::from(format!("{}.bad", victim.display()));
    assert_eq!(std::fs::read(aside).unwrap(), damaged, "not kept as it was");
    s.ok(&["check", "--verify-data"]);
    let names = stdout(&s.ok(&["list"]));
    assert_eq!(names.lines().count(), 1, "{names}");
    let left = names.split_whitespace().next().unwrap().to_string();
    assert_restores(&s, &src, &left, "x");
}

#[test]
fn a_deleted_pack_is_dropped_from_the_index_and_every_file_it_held_is_marked() {
    let (s, src) = repository();
    std::fs::remove_file(data_pack(&s)).unwrap();
    let out = s.run(&["check", "--repair"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let text = stdout(&out);
    let line = text
        .lines()
        .find(|l| l.contains("missing (named by an index file)"));
    assert!(
        line.is_some_and(|l| l.contains("12 blobs lost; lost blobs used by archives: a1, a2")),
        "{text}"
    );
    assert!(
        text.contains("archive \"a2\": rewritten; 12 damaged files"),
        "{text}"
    );
    s.ok(&["check", "--verify-data"]);
    let listing = stdout(&s.ok(&["list", "a2"]));
    assert_eq!(listing.matches("DAMAGED").count(), 12, "{listing}");
    s.ok(&["create", "a3", src.to_str().unwrap()]);
    assert_restores(&s, &src, "a2", "x2");
    s.ok(&["check", "--verify-data"]);
}

#[test]
fn a_pack_with_a_damaged_header_is_salvaged_whole_through_the_index() {
    let (s, src) = repository();
    let pack = data_pack(&s);
    let mut bytes = std::fs::read(&pack).unwrap();
    let at = bytes.len() - 20; // inside the sealed header, before the length trailer
    bytes[at] ^= 0xff;
    std::fs::write(&pack, bytes).unwrap();
    assert_eq!(code(&s.run(&["check"])), 2);
    let out = s.ok(&["check", "--repair", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let aside = &json["repair"]["packs_set_aside"][0];
    assert!(aside["why"].as_str().unwrap().contains("header"), "{json}");
    assert_eq!(aside["blobs_salvaged"], 12, "{json}");
    assert_eq!(aside["blobs_lost"], 0, "{json}");
    assert_eq!(json["repair"]["archives"], serde_json::json!([]), "{json}");
    assert_eq!(json["check_after"]["problems"], serde_json::json!([]));
    s.ok(&["check", "--verify-data"]);
    assert_restores(&s, &src, "a1", "x1");
}

#[test]
fn a_repair_interrupted_before_its_deletes_is_finished_by_the_next() {
    let (s, src) = repository();
    let pack = data_pack(&s);
    flip_middle(&pack);
    let keep = |dir: &str| -> Vec<(PathBuf, Vec<u8>)> {
        under(&s, dir)
            .into_iter()
            .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
            .collect()
    };
    let old: Vec<_> = [
        keep("index"),
        keep("archives"),
        vec![(pack.clone(), std::fs::read(&pack).unwrap())],
    ]
    .concat();
    assert_eq!(code(&s.run(&["check", "--repair"])), 1);
    // As if it had stopped after writing everything new and before deleting anything.
    for (p, b) in &old {
        std::fs::write(p, b).unwrap();
    }
    let out = s.run(&["check", "--repair"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    for (p, _) in &old {
        assert!(!p.exists(), "{} is still there", p.display());
    }
    assert!(PathBuf::from(format!("{}.bad", pack.display())).exists());
    s.ok(&["check", "--verify-data"]);
    let before = contents(&s.repo());
    assert!(stderr(&s.ok(&["check", "--repair"])).contains("nothing to repair"));
    assert_eq!(contents(&s.repo()), before);
    s.ok(&["create", "a3", src.to_str().unwrap()]);
    assert_restores(&s, &src, "a1", "x1");
}

#[test]
fn an_append_only_repository_is_not_repaired_but_a_dry_run_reports() {
    let (s, _src) = repository();
    s.ok(&["config", "append-only", "on"]);
    for f in under(&s, "index") {
        std::fs::remove_file(f).unwrap();
    }
    let out = s.run(&["check", "--repair"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("append-only"), "{}", stderr(&out));
    assert!(under(&s, "index").is_empty());
    let out = s.run(&["check", "--repair", "--dry-run"]);
    assert!(
        stdout(&out).contains("index would be rebuilt"),
        "{}",
        stdout(&out)
    );
}

/// A rewritten archive is a later revision of the same backup: its notes and protection
/// carry over, so repair never opens a protected archive to prune.
#[test]
fn a_repaired_archive_keeps_its_notes_and_protection() {
    let (s, _src) = repository();
    s.ok(&["archive", "note", "a1", "before the upgrade"]);
    s.ok(&["archive", "protect", "a1"]);
    flip_middle(&data_pack(&s));
    let out = s.run(&["check", "--repair"]);
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).contains("archive \"a1\": rewritten"),
        "{}",
        stdout(&out)
    );
    let info: serde_json::Value =
        serde_json::from_str(&stdout(&s.ok(&["info", "a1", "--json"]))).unwrap();
    assert_eq!(info["protected"], true, "{info}");
    assert_eq!(info["notes"], "before the upgrade", "{info}");
    let out = s.run(&["delete", "a1"]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    s.ok(&["check"]);
}
