//! The repository engine through the command line, with stream sources (stdin, a file):
//! round trips, dedup, encryption, corruption found by `check`, crash safety, concurrent
//! writers and bad input.

mod common;
use common::*;
use std::io::Write;

#[test]
fn stdin_round_trip_300m() {
    let s = Scratch::new();
    s.init("repokey");
    let data = noise(300 << 20, 1);
    let out = s.create_stdin("s", &data);
    assert_success(&out, &["create"]);
    let out = s.ok(&["extract", "s", "--stdout"]);
    assert!(out.stdout == data, "extracted bytes differ from the input");
    let listing = String::from_utf8(s.ok(&["list", "s"]).stdout).unwrap();
    assert!(
        listing.contains("314572800") && listing.contains("./stdin"),
        "{listing}"
    );
}

#[test]
fn same_stream_twice_adds_almost_nothing() {
    let s = Scratch::new();
    s.init("none");
    let data = noise(64 << 20, 2);
    assert_success(&s.create_stdin("a", &data), &["create a"]);
    let before = dir_size(&s.repo());
    assert_success(&s.create_stdin("b", &data), &["create b"]);
    let added = dir_size(&s.repo()) - before;
    assert!(
        added < (64 << 20) / 100,
        "second identical archive added {added} bytes"
    );
}

/// The keyring entry (`repo::key_cache`) of this repository's key for PASS, as /proc/keys
/// lists it (the description's first 32 characters, then the rest of the line), if present.
fn unlock_cache_entry(s: &Scratch) -> Option<String> {
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.repo().join("config")).unwrap()).unwrap();
    let wrapped: proxborg::repo::key::WrappedKey =
        serde_json::from_value(config["key"].clone()).unwrap();
    let name = proxborg::repo::key_cache::entry_name(&wrapped, PASS.as_bytes());
    std::fs::read_to_string("/proc/keys")
        .expect("/proc/keys (kernel keyrings)")
        .lines()
        .find(|l| l.contains(&name))
        .map(str::to_string)
}

#[test]
fn an_unlock_keeps_its_key_in_roots_keyring_unless_the_cache_is_off() {
    let s = Scratch::new();
    s.init("repokey");
    let out = run(s.cmd().env("PROXBORG_KEY_CACHE", "0").args(["list"]));
    assert_success(&out, &["list, cache off"]);
    assert_eq!(unlock_cache_entry(&s), None, "key-cache 0 stored a key");
    s.ok(&["list"]);
    let entry = unlock_cache_entry(&s).expect("the default run left no keyring entry");
    // type user, a timeout (not "perm"), owner-only permissions, a 32-byte payload
    let f: Vec<&str> = entry.split_whitespace().collect();
    assert!(
        f[3] != "perm" && f[4] == "3f0b0000" && f[7] == "user",
        "{entry}"
    );
    assert!(entry.ends_with(": 32"), "{entry}");
    // A wrong passphrase finds nothing under its own name and is refused as before.
    let out = run(s.cmd().env("PROXBORG_PASSPHRASE", "wrong").args(["list"]));
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("wrong passphrase"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn wrong_passphrase_and_no_plaintext_in_repo() {
    let s = Scratch::new();
    s.init("repokey");
    let marker = b"PLAINTEXT-MARKER-8f2c1d ".repeat(50_000);
    let mut child = s
        .cmd()
        .args(["create", "m", "-", "--stdin-name", "NAME-MARKER-77aa"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&marker).unwrap();
    assert!(child.wait().unwrap().success());
    for f in files_under(&s.repo()) {
        let bytes = std::fs::read(&f).unwrap();
        for needle in [&b"PLAINTEXT-MARKER"[..], b"NAME-MARKER-77aa"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} contains plaintext {:?}",
                f.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
    let out = run(s.cmd().env("PROXBORG_PASSPHRASE", "wrong").args(["list"]));
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("wrong passphrase"),
        "{}",
        stderr(&out)
    );
    let out = run(s.cmd().env_remove("PROXBORG_PASSPHRASE").args(["list"]));
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("PROXBORG_PASSPHRASE"),
        "{}",
        stderr(&out)
    );
    // The right passphrase, from a file and from a command.
    std::fs::write(s.path("pass"), format!("{PASS}\n")).unwrap();
    let out = run(s
        .cmd()
        .env_remove("PROXBORG_PASSPHRASE")
        .env("PROXBORG_PASSPHRASE_FILE", s.path("pass"))
        .args(["extract", "m", "--stdout"]));
    assert!(out.status.success() && out.stdout == marker);
    let out = run(s
        .cmd()
        .env_remove("PROXBORG_PASSPHRASE")
        .env(
            "PROXBORG_PASSPHRASE_COMMAND",
            format!("cat {}", s.path("pass").display()),
        )
        .args(["list"]));
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn keyfile_mode_needs_the_key_file() {
    let s = Scratch::new();
    let key = s.path("keys/repo.key");
    let out = run(s
        .cmd()
        .env("PROXBORG_KEY_FILE", &key)
        .args(["init", "--encryption", "keyfile"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(key.is_file());
    let out = run(s
        .cmd()
        .env("PROXBORG_KEY_FILE", &key)
        .args(["create", "k", "-"])
        .stdin(std::process::Stdio::null()));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(s
        .cmd()
        .env("PROXBORG_KEY_FILE", s.path("nowhere"))
        .args(["list"]));
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("key file"), "{}", stderr(&out));
}

fn flip_byte(path: &std::path::Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, at).unwrap();
}

fn data_packs(s: &Scratch) -> Vec<std::path::PathBuf> {
    files_under(&s.repo().join("data"))
}

#[test]
fn flipped_byte_fails_check_and_extract_loudly() {
    for enc in ["repokey", "none"] {
        let s = Scratch::new();
        s.init(enc);
        let data = noise(8 << 20, 3);
        assert_success(&s.create_stdin("f", &data), &["create"]);
        s.ok(&["check", "--verify-data"]);
        // The biggest pack holds the content; flip a byte in its middle.
        let pack = data_packs(&s)
            .into_iter()
            .max_by_key(|p| std::fs::metadata(p).unwrap().len())
            .unwrap();
        flip_byte(&pack, std::fs::metadata(&pack).unwrap().len() / 3);
        let out = s.run(&["check", "--verify-data"]);
        assert_eq!(code(&out), 2, "{enc}: check passed a damaged pack");
        let report = String::from_utf8_lossy(&out.stdout);
        let name = pack.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            report.contains(&name),
            "{enc}: check did not name the pack: {report}"
        );
        let out = s.run(&["extract", "f", "--stdout"]);
        assert_eq!(code(&out), 2, "{enc}: extract of damaged data succeeded");
        assert!(
            out.stdout.len() < data.len(),
            "{enc}: extract wrote everything anyway"
        );
        assert!(
            data.starts_with(&out.stdout),
            "{enc}: extract wrote wrong bytes"
        );
    }
}

/// A repository with one archive, damaged by `damage`; returns check's exit code and report.
fn check_after(damage: impl Fn(&Scratch)) -> (i32, String, Scratch) {
    let s = Scratch::new();
    s.init("repokey");
    assert_success(&s.create_stdin("a", &noise(40 << 20, 4)), &["create"]);
    s.ok(&["check"]);
    damage(&s);
    let out = s.run(&["check"]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    (code(&out), report, s)
}

fn file_name(p: &std::path::Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn check_names_a_truncated_pack() {
    let (rc, report, s) = check_after(|s| {
        let pack = &data_packs(s)[0];
        let len = std::fs::metadata(pack).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(pack)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
    });
    assert_eq!(rc, 2);
    assert!(report.contains(&file_name(&data_packs(&s)[0])), "{report}");
}

#[test]
fn check_reports_a_deleted_index_file() {
    let (rc, report, _) = check_after(|s| {
        for f in files_under(&s.repo().join("index")) {
            std::fs::remove_file(f).unwrap();
        }
    });
    assert_eq!(rc, 2);
    assert!(
        report.contains("missing blob") || report.contains("not found"),
        "{report}"
    );
}

#[test]
fn check_names_a_garbage_archive_file_and_list_warns() {
    let (rc, report, s) = check_after(|s| {
        let archive = files_under(&s.repo().join("archives")).pop().unwrap();
        std::fs::write(archive, b"garbage, not an archive").unwrap();
    });
    assert_eq!(rc, 2);
    let archive = files_under(&s.repo().join("archives")).pop().unwrap();
    assert!(report.contains(&file_name(&archive)), "{report}");
    // Other commands still work, with a warning about what they skip.
    let out = s.run(&["list"]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("damaged archive"));
}

#[test]
fn killed_create_leaves_a_checkable_repo_and_the_rerun_reuses_its_packs() {
    let s = Scratch::new();
    s.init("none");
    let src = s.path("big.img");
    std::fs::write(&src, noise(768 << 20, 6)).unwrap();
    let src = src.to_str().unwrap().to_string();
    let mut added_by_kills = 0;
    // Kill at different points: after the run has written 2, 9 and 20 more packs.
    for packs in [2usize, 9, 20] {
        let before = dir_size(&s.repo());
        let start_packs = data_packs(&s).len();
        let mut child = s.cmd().args(["create", "big", &src]).spawn().unwrap();
        while data_packs(&s).len() < start_packs + packs {
            assert!(
                child.try_wait().unwrap().is_none(),
                "create finished before the kill"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let _ = child.kill();
        let _ = child.wait();
        added_by_kills += dir_size(&s.repo()) - before;
        let out = s.run(&["check"]);
        assert!(
            out.status.success(),
            "after kill at {packs} packs: {}{}",
            stderr(&out),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let before = dir_size(&s.repo());
    let out = s.run(&["create", "big", &src, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let uploaded = dir_size(&s.repo()) - before;
    eprintln!(
        "killed runs stored {added_by_kills} bytes; the completing run stored {uploaded} of {}",
        768u64 << 20
    );
    assert!(
        added_by_kills > 0,
        "the killed runs stored nothing: kill came too early to test anything"
    );
    assert!(
        uploaded < (768 << 20) - added_by_kills / 2,
        "rerun did not reuse the packs of killed runs"
    );
    s.ok(&["check", "--verify-data"]);
    let out = s.ok(&["extract", "big", "--stdout"]);
    assert!(out.stdout == std::fs::read(&src).unwrap());
}

#[test]
fn concurrent_creates_both_succeed_and_verify() {
    let s = Scratch::new();
    s.init("repokey");
    let shared = noise(32 << 20, 7);
    let a: Vec<u8> = [&shared[..], &noise(8 << 20, 8)].concat();
    let b: Vec<u8> = [&shared[..], &noise(8 << 20, 9)].concat();
    let (ra, rb) = std::thread::scope(|sc| {
        let ha = sc.spawn(|| s.create_stdin("a", &a));
        let hb = sc.spawn(|| s.create_stdin("b", &b));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    assert_success(&ra, &["create a"]);
    assert_success(&rb, &["create b"]);
    s.ok(&["check", "--verify-data"]);
    assert!(s.ok(&["extract", "a", "--stdout"]).stdout == a);
    assert!(s.ok(&["extract", "b", "--stdout"]).stdout == b);
}

#[test]
fn bad_input_gets_one_line_errors_and_exit_2() {
    let s = Scratch::new();
    let out = s.run(&["list"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("repo"), "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));

    s.init("none");
    let out = s.run(&["create", "x", "/nonexistent/source"]);
    assert_eq!(code(&out), 2);
    assert!(
        stderr(&out).contains("/nonexistent/source"),
        "{}",
        stderr(&out)
    );
    assert!(files_under(&s.repo().join("archives")).is_empty());

    assert_success(&s.create_stdin("x", b"hello"), &["create"]);
    std::fs::write(s.path("plainfile"), b"x").unwrap();
    let out = s.run(&["extract", "x", "-C", s.path("plainfile").to_str().unwrap()]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("not a directory"), "{}", stderr(&out));

    let out = s.run(&["extract", "nosuch", "--stdout"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("nosuch"), "{}", stderr(&out));

    let cfg = s.repo().join("config");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["format"] = 99.into();
    std::fs::write(&cfg, serde_json::to_vec(&json).unwrap()).unwrap();
    let out = s.run(&["list"]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("newer"), "{}", stderr(&out));
}

fn dir_size(dir: &std::path::Path) -> u64 {
    files_under(dir)
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum()
}

#[test]
fn an_unchanged_image_file_is_not_read_again() {
    let s = Scratch::new();
    s.init("none");
    let img = s.path("disk.img");
    std::fs::write(&img, noise(3 << 20, 11)).unwrap();
    sh(&format!("touch -d 2020-01-01 {}", img.display()));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let img_s = img.to_str().unwrap();
    s.ok(&["create", "a", img_s, "--files-cache", "mtime,size"]);
    let old = std::fs::read(&img).unwrap();
    std::fs::write(&img, noise(3 << 20, 12)).unwrap();
    sh(&format!("touch -d 2020-01-01 {}", img.display()));
    // Same size and mtime: only a cache hit keeps the old bytes, proving the file was not read.
    s.ok(&["create", "b", img_s, "--files-cache", "mtime,size"]);
    assert!(s.ok(&["extract", "b", "--stdout"]).stdout == old);
    // The default mode sees the ctime change and reads it.
    s.ok(&["create", "c", img_s]);
    assert!(s.ok(&["extract", "c", "--stdout"]).stdout == std::fs::read(&img).unwrap());
}

/// A sparse disk image as the source: only its data is read, the archive keeps its holes
/// (also when the files cache answers), and extract gives the same bytes with the holes.
#[test]
fn a_sparse_image_file_keeps_its_holes() {
    let s = Scratch::new();
    s.init("none");
    let img = s.path("thin.raw");
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(64 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&noise(1 << 20, 3), 0).unwrap();
    f.write_all_at(&noise(4096, 4), 40 << 20).unwrap();
    drop(f);
    assert!(
        blocks(&img) * 512 < 4 << 20,
        "the scratch dir must support holes"
    );
    let img_s = img.to_str().unwrap();
    // older than the run's start, or the files cache does not trust its times
    std::thread::sleep(std::time::Duration::from_millis(1100));
    for name in ["a", "b"] {
        // b: unchanged, so the files cache answers and must carry the sparse map too
        s.ok(&["create", name, img_s]);
        let listing = String::from_utf8(s.ok(&["list", name, "--json"]).stdout).unwrap();
        let entry: serde_json::Value =
            serde_json::from_str(listing.lines().next().unwrap()).unwrap();
        assert_eq!(entry["sparse"], true, "{name}: {listing}");
        assert_eq!(entry["size"], 64 << 20);
        let dest = s.path(&format!("out-{name}"));
        std::fs::create_dir(&dest).unwrap();
        s.ok(&["extract", name, "-C", dest.to_str().unwrap()]);
        let restored = dest.join("thin.raw");
        assert!(std::fs::read(&restored).unwrap() == std::fs::read(&img).unwrap());
        // A disk image is cut into fixed 4 MiB chunks: the two holding data are written out.
        assert!(
            blocks(&restored) * 512 <= 8 << 20,
            "{name}: holes filled on extract"
        );
    }
    // b read nothing: the files cache answered for the sparse image (its entry's map is per
    // chunk, the file's per SEEK_DATA extent, and that must not defeat the cache)
    let info: serde_json::Value =
        serde_json::from_slice(&s.ok(&["info", "b", "--json"]).stdout).unwrap();
    let drive = &info["metadata"]["drives"][0];
    assert_eq!(drive["read"], 0, "{info}");
    assert_eq!(drive["allocated"], 8 << 20, "{info}");
    let info: serde_json::Value =
        serde_json::from_slice(&s.ok(&["info", "a", "--json"]).stdout).unwrap();
    let drive = &info["metadata"]["drives"][0];
    let read = drive["read"].as_u64().unwrap();
    assert!(
        read < 2 << 20,
        "read {read} bytes of a 64 MiB image with 1 MiB of data: {info}"
    );
    assert_eq!(drive["allocated"], 8 << 20, "{info}");
    assert_eq!(drive["size"], 64 << 20, "{info}");
}

/// A disk image is cut at fixed 4 MiB places, not by content: a write in the middle changes
/// one chunk, and an insertion-free disk shares every other chunk with its last backup.
#[test]
fn a_disk_image_changes_by_whole_fixed_chunks() {
    let s = Scratch::new();
    s.init("none");
    let img = s.path("vm.img");
    std::fs::write(&img, noise(32 << 20, 21)).unwrap();
    let img_s = img.to_str().unwrap();
    s.ok(&["create", "a", img_s]);
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all_at(&noise(4096, 22), (9 << 20) + 12345).unwrap();
    drop(f);
    let out = s.ok(&["create", "b", img_s, "--json"]);
    let info: serde_json::Value =
        serde_json::from_slice(&s.ok(&["info", "b", "--json"]).stdout).unwrap();
    let drive = &info["metadata"]["drives"][0];
    // The 4 KiB write touches the chunk at 8 MiB and, crossing no boundary, only that one.
    assert_eq!(drive["new"], 4 << 20, "{info} {}", stderr(&out));
    assert_eq!(info["chunks"], 8, "{info}");
    assert!(s.ok(&["extract", "b", "--stdout"]).stdout == std::fs::read(&img).unwrap());
}

#[test]
fn a_repository_url_is_refused_never_taken_as_a_local_directory() {
    let s = Scratch::new();
    let cwd = s.path("cwd");
    std::fs::create_dir(&cwd).unwrap();
    for (url, says) in [
        // ssh:// is a remote repository (tests/remote.rs): here ssh is `false`, so the
        // connection fails, on one line naming the host, and nothing local is created.
        ("ssh://backup-host/srv/repo", "ssh to backup-host failed"),
        ("ssh://backup-host", "no path after the host"),
        // s3: is a remote repository too (tests/s3.rs): without credentials, one line
        // saying where they come from; a malformed one names what is wrong.
        ("s3:https://127.0.0.1:3900/bucket", "no S3 credentials"),
        ("s3:https://127.0.0.1:3900/Bad_Bucket", "bad bucket name"),
        ("sftp://host/repo", "sftp:// repositories are not supported"),
        ("host:repo", "unknown URL scheme"),
    ] {
        for args in [&["init", "--encryption", "none"][..], &["list"][..]] {
            let out = run(proxborg()
                .current_dir(&cwd)
                .env("PROXBORG_REPO", url)
                .env("PROXBORG_RSH", "false")
                .env_remove("AWS_ACCESS_KEY_ID")
                .env_remove("AWS_SECRET_ACCESS_KEY")
                .env("PROXBORG_CONFIG", "/nonexistent/proxborg.conf")
                .args(args));
            assert_eq!(code(&out), 2, "{url} {args:?}");
            let err = stderr(&out);
            assert!(
                err.contains(says) && err.lines().count() == 1,
                "{url}: {err}"
            );
        }
    }
    assert_eq!(
        std::fs::read_dir(&cwd).unwrap().count(),
        0,
        "something was created"
    );
}

/// A block device (a loop device over an image file) is read whole and stored like a disk
/// image: fixed chunks, zero chunks as holes, the device's bytes back on extract.
#[test]
fn a_block_device_is_stored_as_a_disk_image() {
    let s = Scratch::new();
    s.init("none");
    let backing = s.path("dev.img");
    std::fs::write(&backing, [noise(5 << 20, 31), vec![0; 11 << 20]].concat()).unwrap();
    let dev = sh(&format!(
        "losetup -f --show '{}' || echo 'losetup failed: apt-get install mount' >&2",
        backing.display()
    ))
    .trim()
    .to_string();
    assert!(dev.starts_with("/dev/loop"), "no loop device: {dev}");
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = std::process::Command::new("losetup")
                .args(["-d", &self.0])
                .status();
        }
    }
    let _detach = Detach(dev.clone());
    s.ok(&["create", "dev", &dev]);
    let info: serde_json::Value =
        serde_json::from_slice(&s.ok(&["info", "dev", "--json"]).stdout).unwrap();
    assert_eq!(info["metadata"]["kind"], "block-device", "{info}");
    let drive = &info["metadata"]["drives"][0];
    assert_eq!(drive["size"], 16 << 20, "{info}");
    assert_eq!(drive["read"], 16 << 20, "a device is read whole: {info}");
    assert_eq!(drive["allocated"], 8 << 20, "zero chunks are holes: {info}");
    assert!(s.ok(&["extract", "dev", "--stdout"]).stdout == std::fs::read(&backing).unwrap());
}
