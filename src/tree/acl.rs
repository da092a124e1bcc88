//! The on-disk form of POSIX ACLs: the value of the `system.posix_acl_access` and
//! `system.posix_acl_default` extended attributes (`linux/posix_acl_xattr.h`). We decode it
//! ourselves instead of linking libacl, so ids stay numeric and are never resolved through the
//! host's passwd (they may be container ids). Pure: no I/O.
//!
//! Layout, all little-endian: a 4-byte header `u32 version = 2`, then 8-byte entries
//! `u16 tag, u16 perm, u32 id`. Tags: USER_OBJ 0x01, USER 0x02, GROUP_OBJ 0x04, GROUP 0x08,
//! MASK 0x10, OTHER 0x20. Perm bits r 4, w 2, x 1. `id` is 0xFFFFFFFF (ignored) for every tag
//! but USER and GROUP. The kernel keeps entries sorted by (tag, id); `encode` writes them so.

use crate::item::{AclEntry, AclTag};

pub const XATTR_ACCESS: &str = "system.posix_acl_access";
pub const XATTR_DEFAULT: &str = "system.posix_acl_default";

const VERSION: u32 = 2;
const UNDEFINED_ID: u32 = u32::MAX;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AclError {
    #[error("ACL xattr is {0} bytes, not 4 + 8n")]
    BadLength(usize),
    #[error("ACL xattr version {0}, only version 2 is known")]
    BadVersion(u32),
    #[error("ACL entry {index} has unknown tag {tag:#x}")]
    UnknownTag { index: usize, tag: u16 },
    #[error("ACL entry {index} has permission bits {perm:#x} beyond rwx")]
    BadPerm { index: usize, perm: u16 },
}

/// Decodes an ACL xattr value into entries, in the order stored.
pub fn decode(xattr_value: &[u8]) -> Result<Vec<AclEntry>, AclError> {
    let len = xattr_value.len();
    if len < 4 || (len - 4) % 8 != 0 {
        return Err(AclError::BadLength(len));
    }
    let version = u32::from_le_bytes([
        xattr_value[0],
        xattr_value[1],
        xattr_value[2],
        xattr_value[3],
    ]);
    if version != VERSION {
        return Err(AclError::BadVersion(version));
    }
    xattr_value[4..]
        .chunks_exact(8)
        .enumerate()
        .map(|(index, e)| {
            let tag = u16::from_le_bytes([e[0], e[1]]);
            let perm = u16::from_le_bytes([e[2], e[3]]);
            let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            if perm & !7 != 0 {
                return Err(AclError::BadPerm { index, perm });
            }
            let tag = match tag {
                0x01 => AclTag::UserObj,
                0x02 => AclTag::User(id),
                0x04 => AclTag::GroupObj,
                0x08 => AclTag::Group(id),
                0x10 => AclTag::Mask,
                0x20 => AclTag::Other,
                tag => return Err(AclError::UnknownTag { index, tag }),
            };
            Ok(AclEntry {
                tag,
                perm: perm as u8,
            })
        })
        .collect()
}

/// Encodes entries as the kernel wants them: sorted by (tag, id). Permission bits beyond rwx
/// are dropped, since the kernel would refuse the whole ACL for them.
pub fn encode(entries: &[AclEntry]) -> Vec<u8> {
    let mut sorted: Vec<AclEntry> = entries.to_vec();
    // `AclTag`'s derived order is the kernel's tag order, then the id within USER/GROUP.
    sorted.sort_by_key(|e| e.tag);
    let mut out = Vec::with_capacity(4 + 8 * sorted.len());
    out.extend_from_slice(&VERSION.to_le_bytes());
    for e in &sorted {
        let (tag, id): (u16, u32) = match e.tag {
            AclTag::UserObj => (0x01, UNDEFINED_ID),
            AclTag::User(id) => (0x02, id),
            AclTag::GroupObj => (0x04, UNDEFINED_ID),
            AclTag::Group(id) => (0x08, id),
            AclTag::Mask => (0x10, UNDEFINED_ID),
            AclTag::Other => (0x20, UNDEFINED_ID),
        };
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&u16::from(e.perm & 7).to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

/// True when the ACL holds only the owner/group/other entries, which the mode bits already
/// carry: such an access ACL is not worth storing.
pub fn is_minimal(entries: &[AclEntry]) -> bool {
    entries
        .iter()
        .all(|e| matches!(e.tag, AclTag::UserObj | AclTag::GroupObj | AclTag::Other))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::process::Command;

    fn e(tag: AclTag, perm: u8) -> AclEntry {
        AclEntry { tag, perm }
    }

    fn arb_entry() -> impl Strategy<Value = AclEntry> {
        let tag = prop_oneof![
            Just(AclTag::UserObj),
            any::<u32>().prop_map(AclTag::User),
            Just(AclTag::GroupObj),
            any::<u32>().prop_map(AclTag::Group),
            Just(AclTag::Mask),
            Just(AclTag::Other),
        ];
        (tag, 0u8..8).prop_map(|(tag, perm)| AclEntry { tag, perm })
    }

    proptest! {
        #[test]
        fn roundtrip_entries(entries in proptest::collection::vec(arb_entry(), 0..20)) {
            let mut sorted = entries.clone();
            sorted.sort_by_key(|e| e.tag);
            prop_assert_eq!(decode(&encode(&entries)).unwrap(), sorted);
        }

        #[test]
        fn roundtrip_bytes(entries in proptest::collection::vec(arb_entry(), 0..20)) {
            let bytes = encode(&entries);
            prop_assert_eq!(bytes.len(), 4 + 8 * entries.len());
            prop_assert_eq!(encode(&decode(&bytes).unwrap()), bytes);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn rejects_malformed() {
        assert_eq!(decode(&[2, 0, 0]), Err(AclError::BadLength(3)));
        assert_eq!(decode(&[2, 0, 0, 0, 1]), Err(AclError::BadLength(5)));
        assert_eq!(decode(&[1, 0, 0, 0]), Err(AclError::BadVersion(1)));
        let mut bad_tag = encode(&[e(AclTag::UserObj, 7)]);
        bad_tag[4] = 0x40;
        assert_eq!(
            decode(&bad_tag),
            Err(AclError::UnknownTag {
                index: 0,
                tag: 0x40
            })
        );
        let mut bad_perm = encode(&[e(AclTag::Other, 7)]);
        bad_perm[6] = 8;
        assert_eq!(
            decode(&bad_perm),
            Err(AclError::BadPerm { index: 0, perm: 8 })
        );
    }

    #[test]
    fn minimal_means_base_entries_only() {
        let base = [
            e(AclTag::UserObj, 7),
            e(AclTag::GroupObj, 5),
            e(AclTag::Other, 0),
        ];
        assert!(is_minimal(&base));
        let mut ext = base.to_vec();
        ext.push(e(AclTag::Mask, 5));
        assert!(!is_minimal(&ext));
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Golden bytes: what `setfacl` (libacl) writes and the kernel stores, read back raw.
    #[test]
    fn golden_against_setfacl() {
        let dir = tempfile::tempdir_in("/dev/shm").expect("tempdir on /dev/shm");
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
        let st = Command::new("setfacl")
            .args(["-m", "u:1000:rw,g:2001:r,u:70000:x,m::rwx"])
            .arg(&f)
            .status()
            .expect("setfacl missing: apt-get install acl");
        assert!(st.success());
        let out = Command::new("getfattr")
            .args(["-n", XATTR_ACCESS, "-e", "hex"])
            .arg(&f)
            .output()
            .expect("getfattr missing: apt-get install attr");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let prefix = format!("{XATTR_ACCESS}=0x");
        let line = text.lines().find_map(|l| l.strip_prefix(&prefix));
        let raw = hex(line.unwrap_or_else(|| panic!("no {XATTR_ACCESS} in {text:?}")));
        let entries = decode(&raw).unwrap();
        assert_eq!(
            entries,
            vec![
                e(AclTag::UserObj, 6),
                e(AclTag::User(1000), 6),
                e(AclTag::User(70000), 1),
                e(AclTag::GroupObj, 4),
                e(AclTag::Group(2001), 4),
                e(AclTag::Mask, 7),
                e(AclTag::Other, 0),
            ]
        );
        assert_eq!(encode(&entries), raw, "encode must give the kernel's bytes");
    }
}
