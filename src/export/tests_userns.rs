//! The tar stream restored the way `pct restore` does for an unprivileged container: GNU tar
//! inside `lxc-usernsexec -m u:0:100000:65536 -m g:0:100000:65536`, into a root directory owned
//! by the mapped root (PVE chowns a new subvol's root to 100000:100000). Container-side ids in
//! the stream must land shifted on the host: owners, ACL qualifiers and the capability rootid.

use super::test_support::*;
use super::tests_gnu_tar::{acl, assert_only_totals, file, item, CAP_NET_RAW_V2};
use crate::item::{AclTag, Kind, Xattr};

#[test]
fn unprivileged_restore_shifts_ids() {
    use AclTag::*;
    require_root();
    ensure_root_subids();
    let mut www = item(b"www", Kind::Dir, 0o2775, 33, 33);
    www.acl_default = acl(&[
        (UserObj, 7),
        (User(33), 7),
        (GroupObj, 5),
        (Mask, 7),
        (Other, 5),
    ]);
    let mut shared = file(b"shared", 0o660, 0, 0, b"acl\n");
    shared.0.acl_access = acl(&[
        (UserObj, 6),
        (User(33), 6),
        (GroupObj, 6),
        (Group(33), 4),
        (Mask, 6),
        (Other, 0),
    ]);
    let mut ping = file(b"ping", 0o755, 0, 0, b"\x7fELF\n");
    ping.0.xattrs = vec![Xattr {
        name: b"security.capability".to_vec(),
        value: CAP_NET_RAW_V2.to_vec(),
    }];
    let up = Kind::Symlink {
        target: b"../shared".to_vec(),
    };
    let whiteout = Kind::CharDevice { major: 0, minor: 0 };
    let items = vec![
        (item(b"", Kind::Dir, 0o755, 0, 0), Vec::new()),
        (item(b"etc", Kind::Dir, 0o755, 0, 0), Vec::new()),
        file(b"etc/hostname", 0o644, 0, 0, b"ct\n"),
        file(b"nobody", 0o600, 65534, 65534, b"overflow id\n"),
        ping,
        shared,
        (www, Vec::new()),
        file(b"www/index.html", 0o644, 33, 33, b"<html>\n"),
        (item(b"www/pipe", Kind::Fifo, 0o620, 33, 33), Vec::new()),
        (item(b"www/up", up, 0o777, 33, 33), Vec::new()),
        // An overlayfs whiteout (docker in an unprivileged CT): the one device node the
        // kernel lets a user namespace create.
        (item(b"www/whiteout", whiteout, 0o600, 0, 0), Vec::new()),
    ];

    let tmp = shm_dir();
    let tar = tmp.path().join("export.tar");
    write_tar(&tar, &items);
    let dest = mapped_rootfs(tmp.path());
    let stderr = pct_extract(&tar, &dest, true);
    assert_only_totals(&stderr);

    let owner = |rel: &[u8]| stat(&at(&dest, rel), "%u:%g");
    assert_eq!(owner(b"etc/hostname"), "100000:100000");
    assert_eq!(owner(b"etc"), "100000:100000");
    assert_eq!(owner(b"www"), "100033:100033");
    assert_eq!(owner(b"www/index.html"), "100033:100033");
    assert_eq!(owner(b"nobody"), "165534:165534");
    assert_eq!(
        std::fs::read(at(&dest, b"nobody")).unwrap(),
        b"overflow id\n"
    );
    assert_eq!(stat(&at(&dest, b"www"), "%a"), "2775");
    assert_eq!(
        stat(&at(&dest, b"www/pipe"), "%F %u:%g %a"),
        "fifo 100033:100033 620"
    );
    assert_eq!(
        stat(&at(&dest, b"www/up"), "%F %u:%g"),
        "symbolic link 100033:100033"
    );
    assert_eq!(
        stat(&at(&dest, b"www/whiteout"), "%F %t:%T %u:%g"),
        "character special file 0:0 100000:100000"
    );
    assert_eq!(
        getfacl(&at(&dest, b"shared")),
        [
            "user::rw-",
            "user:100033:rw-",
            "group::rw-",
            "group:100033:r--",
            "mask::rw-",
            "other::---",
        ]
    );
    let www_acl = getfacl(&at(&dest, b"www"));
    assert!(
        www_acl.contains(&"default:user:100033:rwx".to_string()),
        "{www_acl:?}"
    );
    // A v2 capability written inside the userns is stored by the kernel as v3 with the
    // namespace's root (host uid 100000 = 0x000186a0, little-endian) as rootid.
    assert_eq!(
        getfattr_hex(&at(&dest, b"ping")),
        ["security.capability=0x0100000300200000000000000000000000000000a0860100"]
    );
}

/// A fact for the caller: inside the user namespace GNU tar cannot create a real device node,
/// so one outside `./dev/` (which pct excludes) makes tar, and so `pct restore`, fail.
#[test]
fn unprivileged_restore_fails_on_real_device_nodes() {
    require_root();
    ensure_root_subids();
    let null = Kind::CharDevice { major: 1, minor: 3 };
    let items = vec![
        (item(b"", Kind::Dir, 0o755, 0, 0), Vec::new()),
        (item(b"dev", Kind::Dir, 0o755, 0, 0), Vec::new()),
        (item(b"dev/null", null.clone(), 0o666, 0, 0), Vec::new()),
        (item(b"null", null, 0o666, 0, 0), Vec::new()),
    ];
    let tmp = shm_dir();
    let tar = tmp.path().join("export.tar");
    write_tar(&tar, &items);
    let dest = mapped_rootfs(tmp.path());
    let (_, out) = pct_extract_output(&tar, &dest, true, "C");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("./null: Cannot mknod: Operation not permitted"),
        "{stderr}"
    );
    assert!(!stderr.contains("dev/null"), "{stderr}");
}

/// The restore target as PVE prepares it for an unprivileged CT: owned by the mapped root.
fn mapped_rootfs(parent: &std::path::Path) -> std::path::PathBuf {
    let dest = parent.join("rootfs");
    std::fs::create_dir(&dest).unwrap();
    let uid = rustix::fs::Uid::from_raw(100_000);
    let gid = rustix::fs::Gid::from_raw(100_000);
    rustix::fs::chown(&dest, Some(uid), Some(gid)).unwrap();
    dest
}
