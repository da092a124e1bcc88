//! The repository engine on directory trees: every entry type round-trips through create and
//! extract, dedup across trees, warnings for unreadable files.

mod common;
use common::*;

#[test]
fn every_kind_of_entry_round_trips_through_create_and_extract() {
    let s = Scratch::new();
    s.init("repokey");
    let src = s.path("src");
    build_tree(&src, 0);
    s.ok(&["create", "t", src.to_str().unwrap()]);
    let dest = s.path("dest");
    std::fs::create_dir(&dest).unwrap();
    s.ok(&["extract", "t", "-C", dest.to_str().unwrap(), "--sparse"]);

    let (a, b) = (tree_dump(&src), tree_dump(&dest));
    assert_dumps_equal(&a, &b, "restored tree differs from the source");
    // The parts of the dump worth asserting on their own, so a silent tool change cannot
    // make both sides equally empty.
    assert!(a.contains("user:33:r-x"), "ACL missing from the dump");
    assert!(
        a.contains("security.capability="),
        "capability missing from the dump"
    );
    assert!(a.contains("user.bin=0x00ff10fe"));
    use std::os::unix::fs::MetadataExt;
    let ino = |p: &str| std::fs::metadata(dest.join(p)).unwrap().ino();
    assert_eq!(ino("usr/bin/big"), ino("usr/bin/big-hardlink"));
    assert_eq!(
        ino("dir with spaces/file with spaces"),
        ino("dir with spaces/second name")
    );
    let sparse = dest.join("srv/sparse");
    assert!(
        blocks(&sparse) <= blocks(&src.join("srv/sparse")),
        "holes not restored"
    );
    assert_eq!(std::fs::metadata(&sparse).unwrap().len(), 2 << 30);

    // Listing shows the tar-style view, and a subtree extracts alone.
    let listing = String::from_utf8(s.ok(&["list", "t"]).stdout).unwrap();
    assert!(
        listing.lines().next().unwrap().ends_with(" ./"),
        "{listing}"
    );
    assert!(listing.contains("./usr/bin/big-hardlink link to ./usr/bin/big"));
    let sub = s.path("sub");
    std::fs::create_dir(&sub).unwrap();
    s.ok(&[
        "extract",
        "t",
        "var/www",
        "-C",
        sub.to_str().unwrap(),
        "--strip-components",
        "1",
    ]);
    assert!(sub.join("www/html/index.html").is_file());
    assert!(!sub.join("usr").exists() && !sub.join("var").exists());
}

#[test]
fn same_tree_twice_adds_little_and_similar_trees_share_blobs() {
    let s = Scratch::new();
    s.init("none");
    let src = s.path("src");
    std::fs::create_dir(&src).unwrap();
    for i in 0..40u64 {
        std::fs::write(src.join(format!("f{i}")), noise(512 << 10, i)).unwrap();
    }
    let size = |s: &Scratch| -> u64 {
        files_under(&s.repo())
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().len())
            .sum()
    };
    s.ok(&["create", "a", src.to_str().unwrap()]);
    let one = size(&s);
    s.ok(&["create", "b", src.to_str().unwrap()]);
    let two = size(&s);
    assert!(
        (two - one) * 100 < one,
        "the same tree again added {} of {one} bytes",
        two - one
    );
    // A copy with two files changed and one added shares everything else.
    let other = s.path("other");
    sh(&format!("cp -a {} {}", src.display(), other.display()));
    std::fs::write(other.join("f3"), noise(512 << 10, 1000)).unwrap();
    std::fs::write(other.join("f7"), noise(512 << 10, 1001)).unwrap();
    std::fs::write(other.join("new"), noise(512 << 10, 1002)).unwrap();
    s.ok(&["create", "c", other.to_str().unwrap()]);
    let added = size(&s) - two;
    assert!(added < 4 * (512 << 10), "similar tree added {added} bytes");
    assert!(
        added > 3 * (512 << 10) - 4096,
        "changed files were not stored ({added} bytes)"
    );
}

#[test]
fn unreadable_file_is_a_warning_and_the_archive_is_still_made() {
    let s = Scratch::new();
    s.init("none");
    let src = s.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("ok"), b"fine").unwrap();
    std::fs::write(src.join("locked"), b"nope").unwrap();
    sh(&format!("chmod 000 {}", src.join("locked").display()));
    // Root reads everything; drop the capabilities that let it, like a confined backup user.
    let out = std::process::Command::new("capsh")
        .args(["--drop=cap_dac_override,cap_dac_read_search", "--"])
        .arg("-c")
        .arg(format!(
            "exec {} create w {}",
            env!("CARGO_BIN_EXE_proxborg"),
            src.display()
        ))
        .env("PROXBORG_REPO", s.repo())
        .env("PROXBORG_SECURITY_DIR", s.path("security"))
        .env("PROXBORG_TEST_FAST_KDF", "1")
        .output()
        .expect("capsh missing: apt-get install libcap2-bin");
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("locked"), "{}", stderr(&out));
    let listing = String::from_utf8(s.ok(&["list", "w"]).stdout).unwrap();
    assert!(
        listing.contains("./ok") && !listing.contains("./locked"),
        "{listing}"
    );
    assert_eq!(s.ok(&["extract", "w", "ok", "--stdout"]).stdout, b"fine");
}

#[test]
fn files_cache_skips_unchanged_files_and_notices_changes() {
    let s = Scratch::new();
    s.init("none");
    let src = s.path("src");
    std::fs::create_dir(&src).unwrap();
    for i in 0..5u64 {
        std::fs::write(src.join(format!("f{i}")), noise(300 << 10, i)).unwrap();
    }
    sh(&format!("touch -d 2020-01-01 {}/*", src.display()));
    std::thread::sleep(std::time::Duration::from_millis(1100)); // ctimes older than start - 1 s
    let src_s = src.to_str().unwrap();
    s.ok(&["create", "a", src_s, "--files-cache", "mtime,size"]);
    // Same size, same mtime, new bytes: only a cache hit can keep the old content.
    let old = std::fs::read(src.join("f1")).unwrap();
    std::fs::write(src.join("f1"), noise(300 << 10, 99)).unwrap();
    sh(&format!("touch -d 2020-01-01 {}/f1", src.display()));
    s.ok(&["create", "b", src_s, "--files-cache", "mtime,size"]);
    assert!(
        s.ok(&["extract", "b", "f1", "--stdout"]).stdout == old,
        "mtime,size mode read the file"
    );
    s.ok(&["create", "c", src_s]);
    let new = std::fs::read(src.join("f1")).unwrap();
    assert!(
        s.ok(&["extract", "c", "f1", "--stdout"]).stdout == new,
        "ctime change not noticed"
    );
    s.ok(&["create", "d", src_s, "--files-cache", "off"]);
    assert!(s.ok(&["extract", "d", "f1", "--stdout"]).stdout == new);
    // Deleting the cache is harmless.
    std::fs::remove_dir_all(s.path("cache")).unwrap();
    s.ok(&["create", "e", src_s]);
    assert!(s.ok(&["extract", "e", "f1", "--stdout"]).stdout == new);
}

#[test]
fn diff_lists_exactly_the_changes_made_between_two_backups() {
    let s = Scratch::new();
    s.init("none");
    let src = s.path("src");
    for d in ["etc", "srv/data", "var/www"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
    }
    let write = |p: &str, data: &[u8]| std::fs::write(src.join(p), data).unwrap();
    write("etc/hostname", b"tank\n");
    write("etc/hosts", b"127.0.0.1 localhost\n");
    write("srv/data/big", &noise(3 << 20, 1));
    write("srv/data/old.log", b"old");
    write("var/www/index.html", b"<html>");
    write("var/www/run.sh", b"#!/bin/sh\n");
    s.ok(&["create", "before", src.to_str().unwrap()]);

    // The changes: content (with a new size), a new file, a removed one, mode, owner, ACL,
    // xattr. Reading a file moves nothing the diff compares.
    write("etc/hosts", b"127.0.0.1 localhost tank\n");
    write("srv/data/new.bin", &noise(5000, 2));
    std::fs::remove_file(src.join("srv/data/old.log")).unwrap();
    sh(&format!(
        "chmod 755 '{}'",
        src.join("var/www/run.sh").display()
    ));
    sh(&format!(
        "chown 33:33 '{}'",
        src.join("var/www/index.html").display()
    ));
    sh(&format!(
        "setfacl -m u:1000:rw '{}'",
        src.join("etc/hostname").display()
    ));
    sh(&format!(
        "setfattr -n user.tag -v x '{}'",
        src.join("srv/data/big").display()
    ));
    let _ = std::fs::read(src.join("srv/data/big")).unwrap();
    s.ok(&["create", "after", src.to_str().unwrap()]);

    let out = String::from_utf8(s.ok(&["diff", "before", "after"]).stdout).unwrap();
    let lines: Vec<String> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        lines,
        [
            // The named entry brings a mask, which is the group bits of the mode.
            "[mode: 0644 -> 0664] [acl] ./etc/hostname",
            "[content: 20 B -> 25 B] ./etc/hosts",
            "[xattrs] ./srv/data/big",
            "added 4.9 KiB ./srv/data/new.bin",
            "removed 3 B ./srv/data/old.log",
            "[owner: 0:0 -> 33:33] ./var/www/index.html",
            "[mode: 0644 -> 0755] ./var/www/run.sh",
        ],
        "{out}"
    );
    // Only a subtree, and as JSON.
    let out =
        String::from_utf8(s.ok(&["diff", "before", "after", "srv", "--json"]).stdout).unwrap();
    let changes: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(changes.len(), 3, "{out}");
    assert_eq!(changes[1]["path"], "./srv/data/new.bin");
    assert_eq!(changes[1]["changes"][0]["type"], "added");
    assert_eq!(changes[1]["changes"][0]["size"], 5000);
    // An archive compared with itself has no differences.
    assert!(s.ok(&["diff", "after", "after"]).stdout.is_empty());
}
