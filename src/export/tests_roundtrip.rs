//! Property test: any dense item written by `TarWriter` reads back, through the `tar` crate's
//! independent reader, with the same name, type, mode, ids, ns times, link target, xattrs, ACL
//! text and content, and the stream stays in sync from one member to the next.

use super::acl_text;
use super::TarWriter;
use crate::item::{AclEntry, AclTag, Item, Kind, Timestamp, Xattr};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::io::Read;

fn name_bytes() -> impl Strategy<Value = Vec<u8>> {
    // Any byte but NUL and '/', up to the 255-byte NAME_MAX.
    proptest::collection::vec(
        any::<u8>().prop_filter("no NUL or /", |b| *b != 0 && *b != b'/'),
        1..255,
    )
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::File),
        Just(Kind::Dir),
        Just(Kind::Fifo),
        name_bytes().prop_map(|target| Kind::Symlink { target }),
        (0u32..4096, 0u32..1 << 20).prop_map(|(major, minor)| Kind::CharDevice { major, minor }),
        (0u32..4096, 0u32..1 << 20).prop_map(|(major, minor)| Kind::BlockDevice { major, minor }),
    ]
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    (-(1i64 << 40)..(1i64 << 40), 0u32..1_000_000_000)
        .prop_map(|(secs, nanos)| Timestamp { secs, nanos })
}

fn acl() -> impl Strategy<Value = Option<Vec<AclEntry>>> {
    proptest::option::of(
        proptest::collection::vec((any::<u32>(), 0u8..8), 0..4).prop_map(|users| {
            let mut v = vec![AclEntry {
                tag: AclTag::UserObj,
                perm: 7,
            }];
            v.extend(users.into_iter().map(|(id, perm)| AclEntry {
                tag: AclTag::User(id),
                perm,
            }));
            v.push(AclEntry {
                tag: AclTag::GroupObj,
                perm: 5,
            });
            v.push(AclEntry {
                tag: AclTag::Mask,
                perm: 7,
            });
            v.push(AclEntry {
                tag: AclTag::Other,
                perm: 0,
            });
            v
        }),
    )
}

prop_compose! {
    fn item_with_content()(
        dirs in proptest::collection::vec(name_bytes(), 0..3),
        base in name_bytes(),
        kind in kind(),
        mode in 0u32..0o10000,
        uid in any::<u32>(),
        gid in any::<u32>(),
        mtime in timestamp(),
        atime in timestamp(),
        xattrs in proptest::collection::btree_map(
            "user\\.[a-z=%]{1,12}", proptest::collection::vec(any::<u8>(), 0..64), 0..3),
        acl_access in acl(),
        content in proptest::collection::vec(any::<u8>(), 0..1500),
    ) -> (Item, Vec<u8>) {
        let mut path = Vec::new();
        for d in dirs {
            path.extend_from_slice(&d);
            path.push(b'/');
        }
        path.extend_from_slice(&base);
        let mut it = Item::new(path, kind);
        it.mode = mode;
        it.uid = uid;
        it.gid = gid;
        it.mtime = mtime;
        it.atime = atime;
        it.xattrs = xattrs
            .into_iter()
            .map(|(n, value)| Xattr { name: n.into_bytes(), value })
            .collect();
        it.acl_access = acl_access;
        let content = if it.is_file() { content } else { Vec::new() };
        it.size = content.len() as u64;
        (it, content)
    }
}

fn expected_name(it: &Item) -> Vec<u8> {
    let mut n = [b"./".as_slice(), &it.path].concat();
    if it.is_dir() {
        n.push(b'/');
    }
    n
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn items_read_back_with_the_tar_crate(
        items in proptest::collection::vec(item_with_content(), 1..6)
    ) {
        let mut w = TarWriter::new(Vec::new());
        for (it, content) in &items {
            w.append(it, &mut content.as_slice()).unwrap();
        }
        let bytes = w.finish().unwrap();
        prop_assert_eq!(bytes.len() % 10240, 0);

        // Raw mode: the tar crate frames blocks and decodes header fields, while the `x` blocks
        // are parsed by length here (its own pax parser splits on '\n').
        let mut archive = ::tar::Archive::new(bytes.as_slice());
        let mut entries = archive.entries().unwrap().raw(true);
        let mut read_back = 0;
        for (it, content) in &items {
            let mut entry = entries.next().unwrap().unwrap();
            let mut pax = BTreeMap::new();
            if entry.header().entry_type().as_byte() == b'x' {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                pax.extend(super::pax::parse_records(&data));
                entry = entries.next().unwrap().unwrap();
            }
            read_back += 1;
            let name = pax.get(b"path".as_slice()).cloned()
                .unwrap_or_else(|| entry.path_bytes().into_owned());
            prop_assert_eq!(name, expected_name(it));
            let h = entry.header().clone();
            let ty = match &it.kind {
                Kind::File => b'0',
                Kind::Dir => b'5',
                Kind::Symlink { target } => {
                    let link = pax.get(b"linkpath".as_slice()).cloned()
                        .unwrap_or_else(|| entry.link_name_bytes().unwrap().into_owned());
                    prop_assert_eq!(&link, target);
                    b'2'
                }
                Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } => {
                    prop_assert_eq!(h.device_major().unwrap(), Some(*major));
                    prop_assert_eq!(h.device_minor().unwrap(), Some(*minor));
                    if matches!(it.kind, Kind::CharDevice { .. }) { b'3' } else { b'4' }
                }
                Kind::Fifo => b'6',
                Kind::Hardlink { .. } => unreachable!("not generated"),
            };
            prop_assert_eq!(h.entry_type().as_byte(), ty);
            prop_assert_eq!(h.mode().unwrap(), it.mode);
            let id = |key: &str, field: u64| match pax.get(key.as_bytes()) {
                Some(v) => String::from_utf8(v.clone()).unwrap().parse::<u64>().unwrap(),
                None => field,
            };
            prop_assert_eq!(id("uid", h.uid().unwrap()), u64::from(it.uid));
            prop_assert_eq!(id("gid", h.gid().unwrap()), u64::from(it.gid));
            prop_assert_eq!(pax.get(b"mtime".as_slice()).cloned(),
                Some(super::pax::format_time(it.mtime).into_bytes()));
            prop_assert_eq!(pax.get(b"atime".as_slice()).cloned(),
                Some(super::pax::format_time(it.atime).into_bytes()));
            for x in &it.xattrs {
                let key = [b"SCHILY.xattr.".as_slice(),
                    &String::from_utf8(x.name.clone()).unwrap()
                        .replace('%', "%25").replace('=', "%3D").into_bytes()].concat();
                prop_assert_eq!(pax.get(&key), Some(&x.value));
            }
            prop_assert_eq!(pax.get(b"SCHILY.acl.access".as_slice()).cloned(),
                it.acl_access.as_ref().map(|a| acl_text::to_text(a).into_bytes()));
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            prop_assert_eq!(&data, content);
        }
        prop_assert_eq!(read_back, items.len());
        prop_assert!(entries.next().is_none(), "nothing after the last member");
    }
}
