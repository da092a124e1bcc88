//! Restore tests: the fixture tree walked and restored through `FileContent`, then compared
//! with the real tools (`getfacl`, `getfattr`, `getcap`, `stat`, `du`); hole handling; the
//! symlink and `..` escapes an archive could try; replacement of existing entries.

use super::content::{open_content, open_path};
use super::fixture::{self, os, run_in, GIB};
use super::restore::{RestoreError, RestoreOptions, Restorer};
use super::walk::{walk, WalkEvent, WalkOptions};
use crate::item::{Item, Kind};
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

fn restore_tree(src: &Path, dst: &Path, opts: RestoreOptions) -> Vec<Item> {
    let mut restorer = Restorer::new(dst, opts).unwrap();
    let mut items = Vec::new();
    for ev in walk(src, &WalkOptions::default()).unwrap() {
        let WalkEvent::Entry(e) = ev else { continue };
        if e.item.is_file() {
            let mut content = open_content(&e.fs_path, &e.item).unwrap();
            restorer.put(&e.item, &mut content).unwrap();
            assert!(!content.changed());
        } else {
            restorer.put(&e.item, &mut std::io::empty()).unwrap();
        }
        items.push(e.item);
    }
    assert!(restorer.take_warnings().is_empty());
    restorer.finish().unwrap();
    items
}

/// Output of a tool run on the same relative name in `a` and in `b` must be equal.
fn same(a: &Path, b: &Path, prog: &str, args: &[&str], name: &[u8], package: &str) -> String {
    let mut argv: Vec<&OsStr> = args.iter().map(|s| os(s)).collect();
    argv.push(OsStr::from_bytes(name));
    let left = run_in(a, prog, &argv, package);
    let right = run_in(b, prog, &argv, package);
    let shown = String::from_utf8_lossy(&left).into_owned();
    assert_eq!(
        shown,
        String::from_utf8_lossy(&right),
        "{prog} {args:?} {}",
        name.escape_ascii()
    );
    shown
}

fn allocated_kib(path: &Path) -> u64 {
    fs::symlink_metadata(path).unwrap().blocks() / 2
}

#[test]
fn restores_everything_the_walker_recorded() {
    let tmp = fixture::shm_tempdir();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dst).unwrap();
    let _sock = fixture::build(&src);
    let opts = RestoreOptions {
        sparse: false,
        numeric_owner: true,
    };
    let items = restore_tree(&src, &dst, opts);
    assert_eq!(items.len(), fixture::expected_paths().len());

    let deep = fixture::deep_path();
    for item in items.iter().filter(|i| !i.path.starts_with(b"deep/")) {
        let name: &[u8] = if item.path.is_empty() {
            b"."
        } else {
            &item.path
        };
        let fmt = match item.kind {
            // Reading a symlink may bump its atime (relatime): compare everything else.
            Kind::Symlink { .. } => "%f %u %g %s %y %h %t %T",
            // A directory's size counts its entries, and the socket was not restored.
            Kind::Dir => "%f %u %g %y %x %h",
            _ => "%f %u %g %s %y %x %h %t %T",
        };
        same(&src, &dst, "stat", &["-c", fmt], name, "coreutils");
        if !matches!(item.kind, Kind::Symlink { .. }) {
            let acl = same(&src, &dst, "getfacl", &["-n", "-p"], name, "acl");
            assert!(acl.contains("# owner:"), "{acl}");
        }
        same(
            &src,
            &dst,
            "getfattr",
            &["-h", "-d", "-m", "-", "-e", "hex"],
            name,
            "attr",
        );
        if item.is_file() && item.sparse.is_none() {
            let a = fs::read(src.join(OsStr::from_bytes(name))).unwrap();
            assert_eq!(a, fs::read(dst.join(OsStr::from_bytes(name))).unwrap());
        }
    }
    let acl = same(&src, &dst, "getfacl", &["-n", "-p"], b"setgid_dir", "acl");
    assert!(
        acl.contains("# flags: -s-") && acl.contains("default:user:1000:rwx"),
        "{acl}"
    );
    assert!(acl.contains("group:2000:r-x"), "{acl}");
    let caps = run_in(&dst, "getcap", &[os("ping")], "libcap2-bin");
    assert_eq!(String::from_utf8_lossy(&caps).trim(), "ping cap_net_raw=ep");
    assert_eq!(
        fs::metadata(dst.join("ping")).unwrap().mode() & 0o7777,
        0o4755
    );
    let attrs = same(
        &src,
        &dst,
        "getfattr",
        &["-d", "-m", "-", "-e", "hex"],
        b"xattr_file",
        "attr",
    );
    assert!(attrs.contains("user.bin=0x000102ff0a"), "{attrs}");

    let target = fs::read_link(dst.join("link_odd")).unwrap();
    assert_eq!(target.as_os_str().as_bytes(), fixture::ODD_TARGET);
    let (h1, h2) = (dst.join("hard1"), dst.join("hard2"));
    assert_eq!(
        fs::metadata(&h1).unwrap().ino(),
        fs::metadata(&h2).unwrap().ino()
    );
    assert_eq!(fs::metadata(&h1).unwrap().nlink(), 2);
    assert!(fs::symlink_metadata(dst.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    let null = fs::symlink_metadata(dst.join("null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));

    let sparse = dst.join("sparse");
    assert_eq!(fs::metadata(&sparse).unwrap().len(), GIB);
    assert!(
        allocated_kib(&sparse) <= 64,
        "holes were filled: {} KiB",
        allocated_kib(&sparse)
    );
    let du = run_in(&dst, "du", &[os("-k"), os("sparse")], "coreutils");
    assert!(
        String::from_utf8_lossy(&du).starts_with("8\t"),
        "du says {du:?}"
    );
    let f = fs::File::open(&sparse).unwrap();
    let mut buf = vec![0u8; 4096];
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, GIB - 4096).unwrap();
    assert!(buf.iter().all(|&b| b == b'Z'));
    std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, GIB / 2).unwrap();
    assert!(buf.iter().all(|&b| b == 0));

    let mut leaf = String::new();
    open_path(&dst.join(OsStr::from_bytes(&deep)))
        .unwrap()
        .read_to_string(&mut leaf)
        .unwrap();
    assert_eq!(leaf, "deep down\n");
}

fn file_item(path: &str, size: u64) -> Item {
    let mut item = Item::new(path, Kind::File);
    item.mode = 0o644;
    item.size = size;
    item
}

#[test]
fn bad_sparse_maps_are_refused_before_anything_is_written() {
    use crate::item::Extent;
    let tmp = fixture::shm_tempdir();
    let mut r = Restorer::new(tmp.path(), RestoreOptions::default()).unwrap();
    let e = |offset, len| Extent { offset, len };
    for (name, map) in [
        ("overlap", vec![e(0, 5), e(3, 5)]),
        ("unsorted", vec![e(6, 2), e(0, 2)]),
        ("past-end", vec![e(8, 5)]),
        ("overflow", vec![e(u64::MAX, 5), e(u64::MAX, 5)]),
    ] {
        let mut it = file_item(name, 10);
        it.sparse = Some(map);
        let err = r.put(&it, &mut &[7u8; 20][..]).unwrap_err();
        assert!(matches!(err, RestoreError::Unsafe { .. }), "{name}: {err}");
        assert!(err.to_string().contains("sparse"), "{name}: {err}");
        assert!(!tmp.path().join(name).exists(), "{name} was written");
    }
    r.finish().unwrap();
}

#[test]
fn sparse_option_leaves_zero_blocks_unwritten() {
    let tmp = fixture::shm_tempdir();
    let mut data = vec![0u8; 1 << 20];
    data[600_000] = b'x';
    for (sparse, name) in [(true, "holey"), (false, "dense")] {
        let mut r = Restorer::new(
            tmp.path(),
            RestoreOptions {
                sparse,
                numeric_owner: true,
            },
        )
        .unwrap();
        r.put(&file_item(name, data.len() as u64), &mut data.as_slice())
            .unwrap();
        r.finish().unwrap();
        assert_eq!(fs::read(tmp.path().join(name)).unwrap(), data);
    }
    assert_eq!(allocated_kib(&tmp.path().join("holey")), 4);
    assert_eq!(allocated_kib(&tmp.path().join("dense")), 1024);
}

#[test]
fn refuses_paths_that_leave_the_destination() {
    let tmp = fixture::shm_tempdir();
    let (dst, outside) = (tmp.path().join("dst"), tmp.path().join("outside"));
    fs::create_dir(&dst).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), b"s").unwrap();
    let mut r = Restorer::new(&dst, RestoreOptions::default()).unwrap();
    let target = outside.as_os_str().as_bytes().to_vec();
    r.put(
        &Item::new("a", Kind::Symlink { target }),
        &mut std::io::empty(),
    )
    .unwrap();

    let err = r
        .put(&file_item("a/passwd", 5), &mut &b"owned"[..])
        .unwrap_err();
    assert!(matches!(err, RestoreError::Unsafe { .. }), "{err}");
    assert!(err.to_string().contains("dst/a/passwd"), "{err}");
    assert!(!outside.join("passwd").exists());
    let err = r
        .put(&Item::new("a/sub", Kind::Dir), &mut std::io::empty())
        .unwrap_err();
    assert!(matches!(err, RestoreError::Unsafe { .. }), "{err}");
    let link = Item::new(
        "h",
        Kind::Hardlink {
            target: b"a/secret".to_vec(),
        },
    );
    let err = r.put(&link, &mut std::io::empty()).unwrap_err();
    assert!(matches!(err, RestoreError::Unsafe { .. }), "{err}");
    for bad in ["../escape", "b/../../x", "./x", "b//x"] {
        let err = r.put(&file_item(bad, 1), &mut &b"x"[..]).unwrap_err();
        assert!(matches!(err, RestoreError::Unsafe { .. }), "{bad}: {err}");
    }
    assert!(!tmp.path().join("escape").exists() && !tmp.path().join("x").exists());
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
    r.finish().unwrap();
}

#[test]
fn replaces_entries_and_names_the_path_in_errors() {
    let tmp = fixture::shm_tempdir();
    let dst = tmp.path();
    fs::write(dst.join("x"), b"old").unwrap();
    // A default ACL on the destination must not leak into entries that have none.
    let spec = "u::rwx,u:1000:rwx,g::r-x,m::rwx,o::---";
    fixture::run(
        "setfacl",
        &[os("-d"), os("--set"), os(spec), dst.as_os_str()],
        "acl",
    );
    let mut r = Restorer::new(dst, RestoreOptions::default()).unwrap();
    let link = Item::new(
        "x",
        Kind::Symlink {
            target: b"new".to_vec(),
        },
    );
    r.put(&link, &mut std::io::empty()).unwrap();
    assert_eq!(fs::read_link(dst.join("x")).unwrap(), Path::new("new"));

    let mut lost = file_item("lost", 3);
    lost.kind = Kind::Hardlink {
        target: b"gone/nowhere".to_vec(),
    };
    r.put(&lost, &mut &b"abc"[..]).unwrap();
    assert_eq!(fs::read(dst.join("lost")).unwrap(), b"abc");
    let mode = fs::metadata(dst.join("lost")).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o644, "the inherited ACL must be gone");
    let acl = rustix::fs::getxattr(
        dst.join("lost"),
        "system.posix_acl_access",
        &mut [0u8; 64][..],
    );
    assert_eq!(acl, Err(rustix::io::Errno::NODATA));

    let err = r
        .put(&file_item("short", 10), &mut &b"abc"[..])
        .unwrap_err();
    assert!(
        matches!(
            err,
            RestoreError::ShortContent {
                got: 3,
                want: 10,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("/short"), "{err}");
    r.finish().unwrap();

    let missing = tmp.path().join("missing");
    let err = Restorer::new(&missing, RestoreOptions::default())
        .err()
        .unwrap();
    assert!(err.to_string().contains(missing.to_str().unwrap()), "{err}");
}
