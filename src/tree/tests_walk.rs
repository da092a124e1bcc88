//! Walker tests against a real tree on tmpfs (see `fixture`): order, kinds, metadata, ACLs,
//! xattrs, capabilities, hard links, sparse maps, odd names, deep paths, excludes and
//! one_file_system, and the content reader on sparse and changing files.

use super::content::{open_content, FileContent};
use super::fixture::{self, os, run, GIB};
use super::walk::{walk, Entry, WalkError, WalkEvent, WalkOptions};
use crate::item::pattern::Pattern;
use crate::item::{AclEntry, AclTag, Extent, Item, Kind, Timestamp, Xattr};
use std::io::Read;
use std::path::Path;

fn collect(root: &Path, opts: &WalkOptions) -> (Vec<Entry>, Vec<String>) {
    let (mut entries, mut warnings) = (Vec::new(), Vec::new());
    for ev in walk(root, opts).unwrap() {
        match ev {
            WalkEvent::Entry(e) => entries.push(e),
            WalkEvent::Warning(w) => warnings.push(w),
        }
    }
    (entries, warnings)
}

fn find<'a>(entries: &'a [Entry], path: &str) -> &'a Item {
    &entries
        .iter()
        .find(|e| e.item.path == path.as_bytes())
        .unwrap_or_else(|| panic!("{path:?} not walked"))
        .item
}

fn acl(spec: &[(AclTag, u8)]) -> Option<Vec<AclEntry>> {
    Some(
        spec.iter()
            .map(|&(tag, perm)| AclEntry { tag, perm })
            .collect(),
    )
}

fn read_all(mut c: FileContent) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    c.read_to_end(&mut out).unwrap();
    (out, c.changed())
}

#[test]
fn walks_every_entry_type_in_tar_order() {
    let tmp = fixture::shm_tempdir();
    let _sock = fixture::build(tmp.path());
    let (entries, warnings) = collect(tmp.path(), &WalkOptions::default());
    let paths: Vec<Vec<u8>> = entries.iter().map(|e| e.item.path.clone()).collect();
    assert_eq!(paths, fixture::expected_paths());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].ends_with("/sock: socket ignored"),
        "{warnings:?}"
    );

    let root = &entries[0];
    assert!(root.item.is_dir());
    assert_eq!(root.fs_path, tmp.path());
    assert_eq!(find(&entries, "empty").kind, Kind::File);
    assert_eq!(find(&entries, "empty").size, 0);
    assert_eq!(find(&entries, "fifo").kind, Kind::Fifo);
    assert_eq!(find(&entries, "fifo").mode, 0o644);
    let null = find(&entries, "null");
    assert_eq!(null.kind, Kind::CharDevice { major: 1, minor: 3 });
    assert_eq!(null.size, 0);
    let link = find(&entries, "link_odd");
    let target = fixture::ODD_TARGET.to_vec();
    assert_eq!(link.kind, Kind::Symlink { target });
    assert_eq!(
        link.mtime,
        Timestamp {
            secs: fixture::MTIME.0,
            nanos: fixture::MTIME.1
        }
    );

    let file = find(&entries, "file");
    assert_eq!(
        (file.kind.clone(), file.size, file.mode),
        (Kind::File, 6, 0o640)
    );
    assert_eq!((file.uid, file.gid), (1234, 5678));
    assert_eq!(
        file.mtime,
        Timestamp {
            secs: fixture::MTIME.0,
            nanos: fixture::MTIME.1
        }
    );
    assert_eq!(file.atime.secs, fixture::MTIME.0 - 100);
    assert_eq!(file.sparse, None);
    assert_eq!(
        file.xattrs,
        vec![],
        "ACL xattrs must not be listed as xattrs"
    );
    use AclTag::*;
    let want = acl(&[
        (UserObj, 6),
        (User(1000), 4),
        (GroupObj, 4),
        (Mask, 4),
        (Other, 0),
    ]);
    assert_eq!(file.acl_access, want);
    assert_eq!(file.acl_default, None);

    let dir = find(&entries, "setgid_dir");
    assert_eq!(
        (dir.kind.clone(), dir.mode, dir.size),
        (Kind::Dir, 0o2775, 0)
    );
    let access = [
        (UserObj, 7),
        (User(1000), 7),
        (GroupObj, 7),
        (Group(2000), 5),
    ];
    let mut want = access.to_vec();
    want.extend([(Mask, 7), (Other, 5)]);
    assert_eq!(dir.acl_access, acl(&want));
    let default = [
        (UserObj, 7),
        (User(1000), 7),
        (GroupObj, 5),
        (Mask, 7),
        (Other, 0),
    ];
    assert_eq!(dir.acl_default, acl(&default));
    // Inherited from the default ACL: an extended access ACL on the inner file.
    assert!(find(&entries, "setgid_dir/inner").acl_access.is_some());
    // A plain file has only the base entries, which are not stored.
    assert_eq!(find(&entries, "setgid_dir.txt").acl_access, None);

    assert_eq!(find(&entries, "hard1").kind, Kind::File);
    let hard2 = find(&entries, "hard2");
    assert_eq!(
        hard2.kind,
        Kind::Hardlink {
            target: b"hard1".to_vec()
        }
    );
    assert_eq!(hard2.size, 7);

    let xf = find(&entries, "xattr_file");
    let value = fixture::XATTR_VALUE.to_vec();
    assert_eq!(
        xf.xattrs,
        vec![Xattr {
            name: b"user.bin".to_vec(),
            value
        }]
    );
    let ping = find(&entries, "ping");
    assert_eq!(ping.mode, 0o4755);
    let cap = Xattr {
        name: b"security.capability".to_vec(),
        value: fixture::CAP_NET_RAW_EP.to_vec(),
    };
    assert_eq!(ping.xattrs, vec![cap]);

    let sparse = entries.iter().find(|e| e.item.path == b"sparse").unwrap();
    assert_eq!(sparse.item.size, GIB);
    let extents = vec![
        Extent {
            offset: 0,
            len: 4096,
        },
        Extent {
            offset: GIB - 4096,
            len: 4096,
        },
    ];
    assert_eq!(sparse.item.sparse, Some(extents));
    assert_eq!(sparse.item.stored_len(), 8192);
    let (bytes, changed) = read_all(open_content(&sparse.fs_path, &sparse.item).unwrap());
    assert!(!changed);
    assert_eq!(&bytes[..4096], &[b'A'; 4096][..]);
    assert_eq!(&bytes[4096..], &[b'Z'; 4096][..]);

    let deep = find_bytes(&entries, &fixture::deep_path());
    assert!(deep.fs_path.as_os_str().len() > 4096);
    let (bytes, _) = read_all(open_content(&deep.fs_path, &deep.item).unwrap());
    assert_eq!(bytes, b"deep down\n");
    for (name, content) in [
        (&b"bad\xffname"[..], &b"latin1\n"[..]),
        (b"new\nline", b"nl\n"),
    ] {
        let e = find_bytes(&entries, name);
        assert_eq!(
            read_all(open_content(&e.fs_path, &e.item).unwrap()).0,
            content
        );
    }
}

fn find_bytes<'a>(entries: &'a [Entry], path: &[u8]) -> &'a Entry {
    entries.iter().find(|e| e.item.path == path).unwrap()
}

#[test]
fn excludes_prune_like_tar() {
    let tmp = fixture::shm_tempdir();
    let r = tmp.path();
    for d in ["a", "a/skip", "b"] {
        std::fs::create_dir(r.join(d)).unwrap();
    }
    for f in ["a/keep", "a/skip/x", "a/c.log", "top.log", "b/top.log"] {
        std::fs::write(r.join(f), b"x").unwrap();
    }
    // A symlink to a directory is recorded, never followed.
    std::os::unix::fs::symlink(r.join("a"), r.join("b/to_a")).unwrap();
    let excludes = vec![
        Pattern::new("skip"),
        Pattern::new("./top.log"),
        Pattern::new("*.log"),
    ];
    let opts = WalkOptions {
        one_file_system: false,
        excludes,
        ..Default::default()
    };
    let (entries, warnings) = collect(r, &opts);
    assert!(warnings.is_empty(), "{warnings:?}");
    let paths: Vec<&[u8]> = entries.iter().map(|e| e.item.path.as_slice()).collect();
    assert_eq!(paths, [&b""[..], b"a", b"a/keep", b"b", b"b/to_a"]);
    assert!(matches!(entries[4].item.kind, Kind::Symlink { .. }));

    // A tree placed under a prefix in the archive matches anchored excludes there.
    let prefixed = WalkOptions {
        excludes: vec![Pattern::new("/srv/data/a")],
        exclude_prefix: b"srv/data".to_vec(),
        ..Default::default()
    };
    let (entries, _) = collect(r, &prefixed);
    assert!(
        entries.iter().all(|e| !e.item.path.starts_with(b"a")),
        "prefixed exclude ignored"
    );
    assert!(entries.iter().any(|e| e.item.path == b"b"));
}

/// Unmounts on drop, so a failing test leaves no mount behind.
struct Mounted(std::path::PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn one_file_system_records_the_mount_point_empty() {
    let tmp = fixture::shm_tempdir();
    let r = tmp.path();
    std::fs::create_dir(r.join("mnt")).unwrap();
    std::fs::write(r.join("z"), b"z").unwrap();
    let mnt = r.join("mnt");
    run(
        "mount",
        &[
            os("-t"),
            os("tmpfs"),
            os("-o"),
            os("size=1m"),
            os("none"),
            mnt.as_os_str(),
        ],
        "mount",
    );
    let _guard = Mounted(mnt.clone());
    std::fs::write(mnt.join("inside"), b"other fs").unwrap();

    let opts = WalkOptions {
        one_file_system: true,
        ..Default::default()
    };
    let (entries, _) = collect(r, &opts);
    let paths: Vec<&[u8]> = entries.iter().map(|e| e.item.path.as_slice()).collect();
    assert_eq!(paths, [&b""[..], b"mnt", b"z"]);
    let (entries, _) = collect(r, &WalkOptions::default());
    let paths: Vec<&[u8]> = entries.iter().map(|e| e.item.path.as_slice()).collect();
    assert_eq!(paths, [&b""[..], b"mnt", b"mnt/inside", b"z"]);
}

#[test]
fn root_must_be_an_existing_directory() {
    let tmp = fixture::shm_tempdir();
    let missing = tmp.path().join("missing");
    let err = walk(&missing, &WalkOptions::default()).err().unwrap();
    assert!(matches!(err, WalkError::Root { .. }));
    assert!(err.to_string().contains(missing.to_str().unwrap()), "{err}");
    let file = tmp.path().join("f");
    std::fs::write(&file, b"").unwrap();
    let err = walk(&file, &WalkOptions::default()).err().unwrap();
    assert!(matches!(err, WalkError::NotDir { .. }), "{err}");
    assert!(err.to_string().contains(file.to_str().unwrap()), "{err}");
}

#[test]
fn content_keeps_its_length_when_the_file_changes() {
    let tmp = fixture::shm_tempdir();
    let path = tmp.path().join("f");
    std::fs::write(&path, b"0123456789").unwrap();
    let (entries, _) = collect(tmp.path(), &WalkOptions::default());
    let item = find(&entries, "f").clone();

    std::fs::write(&path, b"0123").unwrap();
    let (bytes, changed) = read_all(open_content(&path, &item).unwrap());
    assert_eq!(bytes, b"0123\0\0\0\0\0\0");
    assert!(changed, "a shrunk file must be reported");

    std::fs::write(&path, b"0123456789abcdef").unwrap();
    let (bytes, changed) = read_all(open_content(&path, &item).unwrap());
    assert_eq!(bytes, b"0123456789");
    assert!(changed, "a grown file must be reported");

    let same = tmp.path().join("g");
    std::fs::write(&same, b"stable").unwrap();
    let (entries, _) = collect(tmp.path(), &WalkOptions::default());
    let (bytes, changed) = read_all(open_content(&same, find(&entries, "g")).unwrap());
    assert_eq!((bytes.as_slice(), changed), (&b"stable"[..], false));

    let link = tmp.path().join("l");
    std::os::unix::fs::symlink(&same, &link).unwrap();
    let err = open_content(&link, &item)
        .err()
        .expect("a symlink must not be followed");
    assert!(err.to_string().contains(link.to_str().unwrap()), "{err}");
}

#[test]
fn data_extents_edges() {
    use super::content::data_extents;
    use std::os::unix::fs::FileExt;
    let tmp = fixture::shm_tempdir();
    let path = tmp.path().join("f");
    let file = std::fs::File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    assert_eq!(data_extents(&file, 0).unwrap(), None);
    file.set_len(1 << 20).unwrap();
    assert_eq!(
        data_extents(&file, 1 << 20).unwrap(),
        Some(vec![]),
        "all hole"
    );
    file.write_all_at(b"x", 8192).unwrap();
    let one = Extent {
        offset: 8192,
        len: 4096,
    };
    assert_eq!(data_extents(&file, 1 << 20).unwrap(), Some(vec![one]));
    // A map that ends in data is clamped to the size the walker saw.
    assert_eq!(
        data_extents(&file, 10000).unwrap(),
        Some(vec![Extent {
            offset: 8192,
            len: 1808
        }])
    );
    file.set_len(0).unwrap();
    file.write_all_at(&[1u8; 12288], 0).unwrap();
    assert_eq!(data_extents(&file, 12288).unwrap(), None, "dense");

    // The walker and the reader agree on an all-hole file: nothing stored, zeros restored.
    let holes = tmp.path().join("holes");
    std::fs::File::create(&holes)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let (entries, _) = collect(tmp.path(), &WalkOptions::default());
    let item = find(&entries, "holes");
    assert_eq!((item.size, item.sparse.clone()), (1 << 20, Some(vec![])));
    assert_eq!(
        read_all(open_content(&holes, item).unwrap()),
        (vec![], false)
    );
}

#[test]
fn hard_link_groups_name_their_first_path() {
    let tmp = fixture::shm_tempdir();
    let r = tmp.path();
    std::fs::create_dir(r.join("a")).unwrap();
    std::fs::write(r.join("a/x"), b"three names").unwrap();
    std::fs::hard_link(r.join("a/x"), r.join("b")).unwrap();
    std::fs::hard_link(r.join("a/x"), r.join("c")).unwrap();
    std::fs::write(r.join("d"), b"two names").unwrap();
    std::fs::hard_link(r.join("d"), r.join("e")).unwrap();
    let (entries, _) = collect(r, &WalkOptions::default());
    let kinds: Vec<(&[u8], Kind)> = entries
        .iter()
        .map(|e| (e.item.path.as_slice(), e.item.kind.clone()))
        .collect();
    let link = |t: &[u8]| Kind::Hardlink { target: t.to_vec() };
    assert_eq!(
        kinds,
        vec![
            (&b""[..], Kind::Dir),
            (b"a", Kind::Dir),
            (b"a/x", Kind::File),
            (b"b", link(b"a/x")),
            (b"c", link(b"a/x")),
            (b"d", Kind::File),
            (b"e", link(b"d")),
        ]
    );
}

#[test]
fn holes_and_root_atime_come_from_the_tree_beneath() {
    // An id-mapping overlay shows the blocks of the file beneath but says "no holes"; the
    // walk then asks the same path in `lower`. Here the two trees differ on purpose, so
    // the map can only have come from `lower`.
    let tmp = fixture::shm_tempdir();
    let (shown, lower) = (tmp.path().join("shown"), tmp.path().join("lower"));
    for (dir, data_at) in [(&shown, 0u64), (&lower, 1 << 20)] {
        std::fs::create_dir_all(dir.join("d")).unwrap();
        let f = std::fs::File::create(dir.join("d/f")).unwrap();
        f.set_len(4 << 20).unwrap();
        std::os::unix::fs::FileExt::write_at(&f, &[7u8; 4096], data_at).unwrap();
    }
    let own = |e: &[Entry]| find(e, "d/f").sparse.clone();
    let (entries, _) = collect(&shown, &WalkOptions::default());
    let extent = |offset| Some(vec![Extent { offset, len: 4096 }]);
    assert_eq!(own(&entries), extent(0));
    let opts = WalkOptions {
        lower: Some(lower.clone()),
        ..Default::default()
    };
    let t = |secs| {
        std::fs::FileTimes::new()
            .set_accessed(std::time::UNIX_EPOCH + std::time::Duration::new(secs, 5))
    };
    std::fs::File::open(&lower)
        .unwrap()
        .set_times(t(1_600_000_000))
        .unwrap();
    std::fs::File::open(&shown)
        .unwrap()
        .set_times(t(1_700_000_000))
        .unwrap();
    let (entries, warnings) = collect(&shown, &opts);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(own(&entries), extent(1 << 20));
    let root = find(&entries, "");
    assert_eq!(
        (root.atime.secs, root.atime.nanos),
        (1_600_000_000, 5),
        "root atime from lower"
    );
}
