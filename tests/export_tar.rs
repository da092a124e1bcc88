//! export-tar into GNU tar with the exact flags `pct restore` uses: privileged (no user
//! namespace) and compared with GNU tar's own pax output of the same tree.

mod common;
use common::*;

/// The tree dump without what pct restore's `--exclude ./dev/*` drops.
fn dump_without_dev(root: &std::path::Path) -> String {
    tree_dump(root)
        .lines()
        .filter(|l| !l.starts_with("./dev") && !l.contains("file: ./dev"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Compares dumps, except for the root (pct restore's --skip-old-files never applies the `./`
/// member to the existing root) and ./etc, ./etc/vzdump: pct.conf leads the stream as vzdump
/// writes it, so tar creates those two before their own members arrive and then skips them.
fn assert_same(a: &str, b: &str, what: &str) {
    let keep = |l: &&str| {
        !l.starts_with(".|") && !l.starts_with("./etc|") && !l.starts_with("./etc/vzdump|")
    };
    let a = a.lines().filter(keep).collect::<Vec<_>>().join("\n");
    let b = b.lines().filter(keep).collect::<Vec<_>>().join("\n");
    assert_dumps_equal(&a, &b, what);
}

#[test]
fn privileged_restore_of_the_stream_matches_the_source() {
    let s = Scratch::new();
    s.init("none");
    let src = s.path("src");
    build_tree(&src, 0);
    s.ok(&["create", "t", src.to_str().unwrap()]);
    let tar = s.path("t.tar");
    s.ok(&["export-tar", "t", tar.to_str().unwrap()]);
    let dest = s.path("dest");
    std::fs::create_dir(&dest).unwrap();
    sh(&format!("{} < '{}'", pct_restore_tar(&dest), tar.display()));
    assert!(
        !dest.join("dev/null-copy").exists(),
        "./dev/* was not excluded"
    );
    assert!(dest.join("dev").is_dir());
    assert_same(
        &dump_without_dev(&src),
        &dump_without_dev(&dest),
        "restored tree differs",
    );
    assert!(
        blocks(&dest.join("srv/sparse")) <= blocks(&src.join("srv/sparse")),
        "holes lost"
    );

    // Through a pipe, as `proxborg export-tar t - | pct restore ... -` runs.
    let piped = s.path("piped");
    std::fs::create_dir(&piped).unwrap();
    sh(&format!(
        "{} export-tar t - | {}",
        s.bin(),
        pct_restore_tar(&piped)
    ));
    assert_same(
        &dump_without_dev(&src),
        &dump_without_dev(&piped),
        "piped restore differs",
    );
}

#[test]
fn pct_conf_comes_first_in_the_stream() {
    let s = Scratch::new();
    s.init("none");
    let src = s.path("src");
    std::fs::create_dir_all(src.join("etc/vzdump")).unwrap();
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::write(src.join("bin/sh"), b"x").unwrap();
    std::fs::write(src.join("etc/vzdump/pct.conf"), b"arch: amd64\n").unwrap();
    std::fs::write(src.join("etc/vzdump/pct.fw"), b"").unwrap();
    s.ok(&["create", "t", src.to_str().unwrap()]);
    let tar = s.path("t.tar");
    s.ok(&["export-tar", "t", tar.to_str().unwrap()]);
    let names = sh(&format!("tar tf '{}'", tar.display()));
    let names: Vec<&str> = names.lines().collect();
    assert_eq!(
        &names[..3],
        ["./etc/vzdump/pct.conf", "./etc/vzdump/pct.fw", "./"],
        "{names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| n.ends_with("pct.conf")).count(),
        1,
        "{names:?}"
    );
    // pct restore reads it with --occurrence from the file.
    let conf = sh(&format!(
        "tar -xpOf '{}' ./etc/vzdump/pct.conf --occurrence",
        tar.display()
    ));
    assert_eq!(conf, "arch: amd64\n");
}

#[test]
fn compressed_exports_decompress_to_the_same_stream() {
    let s = Scratch::new();
    s.init("none");
    let src = s.path("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a"), noise(3 << 20, 1)).unwrap();
    s.ok(&["create", "t", src.to_str().unwrap()]);
    let plain = s.path("t.tar");
    s.ok(&["export-tar", "t", plain.to_str().unwrap()]);
    for (flag, file, unpack) in [
        ("zstd", "t.tar.zst", "zstd -dc"),
        ("gzip", "t.tar.gz", "gzip -dc"),
    ] {
        let out = s.path(file);
        s.ok(&[
            "export-tar",
            "t",
            out.to_str().unwrap(),
            "--compression",
            flag,
        ]);
        let same = sh(&format!(
            "{unpack} '{}' | cmp - '{}' && echo same",
            out.display(),
            plain.display()
        ));
        assert_eq!(same.trim(), "same", "{flag}");
    }
    // A failed export leaves no partial file behind.
    let out = s.run(&["export-tar", "nosuch", s.path("x.tar").to_str().unwrap()]);
    assert_eq!(code(&out), 2);
    assert!(!s.path("x.tar").exists());
    assert!(!files_under(s.dir.path())
        .iter()
        .any(|p| p.to_string_lossy().contains(".proxborg-export-")));
}

#[test]
fn gnu_tars_own_pax_archive_and_ours_restore_identically() {
    let s = Scratch::new();
    s.init("none");
    let src = s.path("src");
    build_tree(&src, 0);
    s.ok(&["create", "t", src.to_str().unwrap()]);
    let ours = s.path("ours");
    let theirs = s.path("theirs");
    std::fs::create_dir(&ours).unwrap();
    std::fs::create_dir(&theirs).unwrap();
    sh(&format!(
        "{} export-tar t - | {}",
        s.bin(),
        pct_restore_tar(&ours)
    ));
    sh(&format!(
        "tar cpf - --format=pax --sparse --numeric-owner --acls --xattrs --xattrs-include='*' -C '{}' . | {}",
        src.display(),
        pct_restore_tar(&theirs)
    ));
    assert_same(
        &tree_dump(&theirs),
        &tree_dump(&ours),
        "GNU tar's archive and ours restore differently",
    );
}

#[test]
fn unprivileged_container_restores_through_pct_restores_user_namespace() {
    ensure_subids();
    let s = Scratch::new();
    s.init("repokey");
    let src = s.path("src");
    build_container_tree(&src, 100_000);
    // The capability was set from inside: v3 with rootid 100000 on the host.
    let cap = sh(&format!(
        "getfattr -n security.capability -e hex {}/usr/bin/ping",
        src.display()
    ));
    let hex = cap
        .lines()
        .find_map(|l| l.strip_prefix("security.capability=0x"))
        .unwrap_or_default();
    assert!(
        hex.len() == 48 && hex.ends_with("a0860100"),
        "test tree's capability is not v3/100000: {cap}"
    );
    s.ok(&["create", "ct", src.to_str().unwrap(), "--unprivileged"]);
    // Stored with container-side ids.
    let listing =
        String::from_utf8(s.ok(&["list", "ct", "var/www/html/index.html"]).stdout).unwrap();
    assert!(listing.contains(" 33/33 "), "{listing}");

    let dest = s.path("dest");
    std::fs::create_dir(&dest).unwrap();
    sh(&format!("chown 100000:100000 {}", dest.display())); // pct chowns the new rootfs so
    sh(&format!(
        "{} export-tar ct - | lxc-usernsexec -m u:0:100000:65536 -m g:0:100000:65536 -- {}",
        s.bin(),
        pct_restore_tar(&dest)
    ));
    assert!(!dest.join("dev/null-copy").exists());
    assert_same(
        &dump_without_dev(&src),
        &dump_without_dev(&dest),
        "unprivileged restore differs",
    );
    let acl = sh(&format!(
        "getfacl -n -p {}/var/www/html/index.html",
        dest.display()
    ));
    assert!(acl.contains("user:100033:r-x"), "{acl}");
    assert!(blocks(&dest.join("srv/sparse")) <= blocks(&src.join("srv/sparse")));

    // The same stream restored privileged (no user namespace): container ids land unshifted.
    let plain = s.path("plain");
    std::fs::create_dir(&plain).unwrap();
    sh(&format!(
        "{} export-tar ct - | {}",
        s.bin(),
        pct_restore_tar(&plain)
    ));
    let owner = sh(&format!(
        "stat -c %u:%g {}/var/www/html/index.html",
        plain.display()
    ));
    assert_eq!(owner.trim(), "33:33");
    let acl = sh(&format!(
        "getfacl -n -p {}/var/www/html/index.html",
        plain.display()
    ));
    assert!(acl.contains("user:33:r-x"), "{acl}");
}
