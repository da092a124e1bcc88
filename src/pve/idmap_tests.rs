use super::*;
use crate::item::{Kind, Xattr};
use crate::pve::conf::{parse_guest_config, GuestKind};
use crate::pve::Vmid;
use proptest::prelude::*;

fn map_of(text: &str) -> Result<IdMap, ConfigError> {
    let f = Path::new("lxc/102.conf");
    IdMap::from_config(&parse_guest_config(GuestKind::Lxc, Vmid(102), f, text)?, f)
}

/// PVE's own example (`src/test/idmap-test.pm`): uid 1005 and gid 1007 punched through.
const PUNCHED: &str = "unprivileged: 1\nlxc.idmap: u 0 100000 1005\nlxc.idmap: g 0 100000 1007\nlxc.idmap: u 1005 1005 1\nlxc.idmap: g 1007 1007 1\nlxc.idmap: u 1006 101006 64530\nlxc.idmap: g 1008 101008 64528\n";

/// `struct vfs_ns_cap_data` as the kernel lays it out: magic_etc, {permitted, inheritable} x2,
/// rootid, all little-endian.
fn cap_v3(effective: bool, permitted0: u32, rootid: u32) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(0x0300_0000u32 | u32::from(effective)).to_le_bytes());
    for word in [permitted0, 0, 0, 0] {
        v.extend_from_slice(&word.to_le_bytes());
    }
    v.extend_from_slice(&rootid.to_le_bytes());
    v
}

fn cap_v2(effective: bool, permitted0: u32) -> Vec<u8> {
    let mut v = cap_v3(effective, permitted0, 0);
    v[3] = 0x02;
    v.truncate(20);
    v
}

const CAP_NET_RAW: u32 = 1 << 13;

#[test]
fn default_and_custom_maps() {
    let d = map_of("unprivileged: 1\n").unwrap();
    assert_eq!(d, IdMap::default_unprivileged());
    assert_eq!(d.host_to_ct(IdKind::Uid, 100_000), Some(0));
    assert_eq!(d.host_to_ct(IdKind::Gid, 165_535), Some(65_535));
    assert_eq!(d.host_to_ct(IdKind::Uid, 165_536), None);
    assert_eq!(d.host_to_ct_or_overflow(IdKind::Uid, 0), OVERFLOW_ID);
    assert_eq!(d.ct_to_host(IdKind::Uid, 33), Some(100_033));
    assert_eq!(d.root_host_ids(), (Some(100_000), Some(100_000)));
    assert_eq!(
        d.usernsexec_args(),
        ["-m", "u:0:100000:65536", "-m", "g:0:100000:65536"]
    );

    assert!(map_of("hostname: x\n").unwrap().is_identity());
    assert_eq!(
        map_of("unprivileged: 0\n")
            .unwrap()
            .host_to_ct(IdKind::Uid, 1234),
        Some(1234)
    );

    let p = map_of(PUNCHED).unwrap();
    assert_eq!(p.entries.len(), 6);
    assert_eq!(p.host_to_ct(IdKind::Uid, 1005), Some(1005));
    assert_eq!(p.host_to_ct(IdKind::Uid, 101_006), Some(1006));
    assert_eq!(
        p.host_to_ct(IdKind::Uid, 101_005),
        None,
        "the hole left by the punched uid"
    );
    assert_eq!(p.host_to_ct(IdKind::Gid, 1007), Some(1007));
    assert_eq!(p.ct_to_host(IdKind::Gid, 1008), Some(101_008));
    assert_eq!(
        p.fuse_overlayfs_options().unwrap(),
        "uidmapping=100000:0:1005:1005:1005:1:101006:1006:64530,gidmapping=100000:0:1007:1007:1007:1:101008:1008:64528"
    );
    // A custom map applies even without `unprivileged: 1`, and replaces the default entirely.
    let only_u = map_of("lxc.idmap: u 0 200000 65536\n").unwrap();
    assert_eq!(only_u.host_to_ct(IdKind::Uid, 200_000), Some(0));
    assert_eq!(only_u.host_to_ct(IdKind::Gid, 100_000), None);
}

#[test]
fn broken_maps_are_refused_with_their_line() {
    let e = map_of("unprivileged: 1\nlxc.idmap: u 0 100000\n")
        .unwrap_err()
        .to_string();
    assert_eq!(e, "lxc/102.conf:2: invalid lxc.idmap 'u 0 100000'");
    assert!(map_of("lxc.idmap: x 0 1 1\n").is_err());
    assert!(map_of("lxc.idmap: u 0 1 0\n").is_err());
    assert!(map_of("lxc.idmap: u 0 4294967295 2\n").is_err());
    let e = map_of("lxc.idmap: u 0 100000 1000\nlxc.idmap: u 999 300000 5\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("lxc/102.conf:2: ") && e.contains("overlap"),
        "{e}"
    );
    let e = map_of("lxc.idmap: u 0 100000 1000\nlxc.idmap: u 5000 100500 5\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("overlap"), "host ranges overlap: {e}");
}

#[test]
fn translate_item_owners_and_acls() {
    let map = IdMap::default_unprivileged();
    let mut item = Item::new("srv/data/file", Kind::File);
    item.uid = 101_000;
    item.gid = 100_033;
    item.acl_access = Some(vec![
        AclEntry {
            tag: AclTag::UserObj,
            perm: 6,
        },
        AclEntry {
            tag: AclTag::User(101_001),
            perm: 4,
        },
        AclEntry {
            tag: AclTag::User(1000),
            perm: 4,
        },
        AclEntry {
            tag: AclTag::GroupObj,
            perm: 4,
        },
        AclEntry {
            tag: AclTag::Group(100_100),
            perm: 6,
        },
        AclEntry {
            tag: AclTag::Mask,
            perm: 6,
        },
        AclEntry {
            tag: AclTag::Other,
            perm: 0,
        },
    ]);
    item.acl_default = Some(vec![AclEntry {
        tag: AclTag::Group(5),
        perm: 7,
    }]);
    item.xattrs = vec![Xattr {
        name: b"user.note".to_vec(),
        value: b"100000".to_vec(),
    }];
    let w = translate_item(&map, &mut item);
    assert!(w.is_empty());
    assert_eq!((item.uid, item.gid), (1000, 33));
    let tags: Vec<AclTag> = item
        .acl_access
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| e.tag)
        .collect();
    assert_eq!(
        tags,
        [
            AclTag::UserObj,
            AclTag::User(1001),
            AclTag::User(OVERFLOW_ID),
            AclTag::GroupObj,
            AclTag::Group(100),
            AclTag::Mask,
            AclTag::Other
        ]
    );
    assert_eq!(item.acl_access.as_ref().unwrap()[1].perm, 4);
    assert_eq!(
        item.acl_default.as_ref().unwrap()[0].tag,
        AclTag::Group(OVERFLOW_ID)
    );
    assert_eq!(
        item.xattrs[0].value, b"100000",
        "other xattrs are data, not ids"
    );

    let mut root_owned = Item::new("etc/vzdump/pct.conf", Kind::File);
    translate_item(&map, &mut root_owned);
    assert_eq!(
        (root_owned.uid, root_owned.gid),
        (OVERFLOW_ID, OVERFLOW_ID),
        "host root is unmapped"
    );

    let mut same = item.clone();
    same.uid = 4242;
    translate_item(&IdMap::identity(), &mut same);
    assert_eq!(same.uid, 4242, "privileged containers keep host ids");
}

#[test]
fn capabilities_as_the_container_sees_them() {
    let map = IdMap::default_unprivileged();
    let with_cap = |v: Vec<u8>| {
        let mut i = Item::new("usr/bin/ping", Kind::File);
        i.uid = 100_000;
        i.xattrs = vec![
            Xattr {
                name: CAP_XATTR.to_vec(),
                value: v,
            },
            Xattr {
                name: b"user.x".to_vec(),
                value: b"y".to_vec(),
            },
        ];
        i
    };

    // v3 owned by the container's root (rootid 100000) becomes v2, flags and sets kept.
    let mut i = with_cap(cap_v3(true, CAP_NET_RAW, 100_000));
    assert!(translate_item(&map, &mut i).is_empty());
    assert_eq!(i.xattrs[0].value, cap_v2(true, CAP_NET_RAW));
    assert_eq!(i.xattrs[0].value.len(), 20);
    assert_eq!(&i.xattrs[0].value[..4], &[1, 0, 0, 2]);

    // v2 (host root's) stays v2 byte for byte.
    let mut i = with_cap(cap_v2(false, CAP_NET_RAW));
    translate_item(&map, &mut i);
    assert_eq!(i.xattrs[0].value, cap_v2(false, CAP_NET_RAW));

    // v3 whose root is another mapped container uid: still v3, rootid shifted.
    let mut i = with_cap(cap_v3(true, CAP_NET_RAW, 101_000));
    translate_item(&map, &mut i);
    assert_eq!(i.xattrs[0].value, cap_v3(true, CAP_NET_RAW, 1000));

    // v3 of a foreign namespace root: the kernel hides it (EOVERFLOW), so it is dropped.
    let mut i = with_cap(cap_v3(true, CAP_NET_RAW, 300_000));
    let w = translate_item(&map, &mut i);
    assert_eq!(
        w,
        [TranslateWarning::CapabilityNotVisible { rootid: 300_000 }]
    );
    assert_eq!(i.xattrs.len(), 1);
    assert_eq!(i.xattrs[0].name, b"user.x");

    // Garbage is dropped with a warning.
    let mut i = with_cap(vec![1, 2, 3]);
    assert_eq!(
        translate_item(&map, &mut i),
        [TranslateWarning::CapabilityMalformed { len: 3 }]
    );

    // Privileged: a v3 with rootid 0 reads as v2 on the host too; other rootids stay.
    let mut i = with_cap(cap_v3(true, CAP_NET_RAW, 0));
    translate_item(&IdMap::identity(), &mut i);
    assert_eq!(i.xattrs[0].value, cap_v2(true, CAP_NET_RAW));
    let mut i = with_cap(cap_v3(true, CAP_NET_RAW, 100_000));
    translate_item(&IdMap::identity(), &mut i);
    assert_eq!(i.xattrs[0].value, cap_v3(true, CAP_NET_RAW, 100_000));
}

fn arb_map() -> impl Strategy<Value = IdMap> {
    // Up to 3 disjoint uid ranges and the same for gids, laid out in increasing order.
    let ranges = proptest::collection::vec((1u32..5000, 1u32..5000, 0u32..3000, 0u32..3000), 1..4);
    (ranges.clone(), ranges).prop_map(|(u, g)| {
        let mut entries = Vec::new();
        for (kind, rs) in [(IdKind::Uid, u), (IdKind::Gid, g)] {
            let (mut ct, mut host) = (0u32, 100_000u32);
            for (count, _, gap_ct, gap_host) in rs {
                entries.push(IdMapEntry {
                    kind,
                    ct_start: ct,
                    host_start: host,
                    count,
                });
                ct += count + gap_ct;
                host += count + gap_host;
            }
        }
        IdMap::new(entries).expect("disjoint by construction")
    })
}

proptest! {
    #[test]
    fn idmap_round_trips(map in arb_map(), id in 0u32..200_000, gid in any::<bool>()) {
        let kind = if gid { IdKind::Gid } else { IdKind::Uid };
        if let Some(ct) = map.host_to_ct(kind, id) {
            prop_assert_eq!(map.ct_to_host(kind, ct), Some(id));
        } else {
            prop_assert_eq!(map.host_to_ct_or_overflow(kind, id), OVERFLOW_ID);
        }
        if let Some(host) = map.ct_to_host(kind, id) {
            prop_assert_eq!(map.host_to_ct(kind, host), Some(id));
        }
    }

    #[test]
    fn idmap_lines_parse_back(map in arb_map()) {
        let text: String = map.entries.iter().map(|e| {
            format!("lxc.idmap: {} {} {} {}\n", if e.kind == IdKind::Uid { 'u' } else { 'g' }, e.ct_start, e.host_start, e.count)
        }).collect();
        prop_assert_eq!(map_of(&text).unwrap(), map);
    }

    #[test]
    fn capability_translation_preserves_sets(perm in any::<u32>(), eff in any::<bool>(), ctroot in 0u32..65536) {
        let map = IdMap::default_unprivileged();
        let v = translate_capability(&map, &cap_v3(eff, perm, 100_000 + ctroot)).unwrap();
        let expect = if ctroot == 0 { cap_v2(eff, perm) } else { cap_v3(eff, perm, ctroot) };
        prop_assert_eq!(v, expect);
    }
}

#[test]
fn translate_attrs_leaves_owners_to_the_idmapped_mount() {
    // What fuse-overlayfs shows: owners already container-side, ACLs and caps as on disk.
    let map = IdMap::default_unprivileged();
    let mut item = Item::new("usr/bin/ping", Kind::File);
    item.uid = 1000;
    item.gid = 33;
    item.acl_access = Some(vec![AclEntry {
        tag: AclTag::User(101_000),
        perm: 7,
    }]);
    item.xattrs = vec![Xattr {
        name: CAP_XATTR.to_vec(),
        value: cap_v3(true, CAP_NET_RAW, 100_000),
    }];
    let mut full = item.clone();
    assert!(translate_attrs(&map, &mut item).is_empty());
    assert_eq!(
        (item.uid, item.gid),
        (1000, 33),
        "owners are not mapped twice"
    );
    assert_eq!(item.acl_access.as_ref().unwrap()[0].tag, AclTag::User(1000));
    assert_eq!(item.xattrs[0].value, cap_v2(true, CAP_NET_RAW));
    translate_item(&map, &mut full);
    assert_eq!(full.acl_access, item.acl_access);
    assert_eq!(full.xattrs, item.xattrs);
}
