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
    let items = vec![
        (item(b"", Kind::Dir, 0o755, 0, 0), Vec::new()),
        (item(b"etc", Kind::Dir, 0o755, 0, 0), Vec::new()),
        file(b"etc/hostname", 0o644, 0, 0, b"ct\n"),
        file(b"nobody", 0o600, 65534, 65534, b"overflow id\n"),
        ping,
        shared,
        (www, Vec::new()),
        file(b"www/index.html", 0o644, 33, 33, b"<html>\n"),
    ];

    let tmp = shm_dir();
    let tar = tmp.path().join("export.tar");
    write_tar(&tar, &items);
    let dest = tmp.path().join("rootfs");
    std::fs::create_dir(&dest).unwrap();
    let root = rustix::fs::Uid::from_raw(100_000);
    let root_gid = rustix::fs::Gid::from_raw(100_000);
    rustix::fs::chown(&dest, Some(root), Some(root_gid)).unwrap();
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
