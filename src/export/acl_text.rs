//! POSIX ACL entries as the text GNU tar stores in `SCHILY.acl.access` / `SCHILY.acl.default`.
//!
//! GNU tar 1.34 writes `acl_to_text()` output: one entry per line, each line ending in `\n`, in
//! the long form (`user::rwx`, `user:NAME:r-x`, `group::r-x`, `mask::r-x`, `other::r--`). On
//! extract it drops an optional fourth `:id` field and calls `acl_from_text()`, which accepts
//! numeric qualifiers. We write numeric ids, never names: names would be resolved against the
//! restoring host's passwd, which is wrong for container-side ids. Pure; no I/O.

use crate::item::{AclEntry, AclTag};

/// Order libacl and the kernel keep entries in: by tag, then by qualifier.
fn sort_key(tag: &AclTag) -> (u8, u32) {
    match *tag {
        AclTag::UserObj => (0, 0),
        AclTag::User(id) => (1, id),
        AclTag::GroupObj => (2, 0),
        AclTag::Group(id) => (3, id),
        AclTag::Mask => (4, 0),
        AclTag::Other => (5, 0),
    }
}

fn perm_text(perm: u8) -> [u8; 3] {
    [
        if perm & 4 != 0 { b'r' } else { b'-' },
        if perm & 2 != 0 { b'w' } else { b'-' },
        if perm & 1 != 0 { b'x' } else { b'-' },
    ]
}

/// The ACL as `acl_to_text` long form with numeric qualifiers, e.g.
/// `"user::rwx\nuser:100033:r-x\ngroup::r-x\nmask::r-x\nother::r--\n"`.
/// Entries are emitted in canonical order whatever order they come in.
pub fn to_text(entries: &[AclEntry]) -> String {
    let mut sorted: Vec<&AclEntry> = entries.iter().collect();
    sorted.sort_by_key(|e| sort_key(&e.tag));
    let mut out = String::with_capacity(sorted.len() * 16);
    for e in sorted {
        let (tag, qualifier) = match e.tag {
            AclTag::UserObj => ("user", None),
            AclTag::User(id) => ("user", Some(id)),
            AclTag::GroupObj => ("group", None),
            AclTag::Group(id) => ("group", Some(id)),
            AclTag::Mask => ("mask", None),
            AclTag::Other => ("other", None),
        };
        out.push_str(tag);
        out.push(':');
        if let Some(id) = qualifier {
            out.push_str(&id.to_string());
        }
        out.push(':');
        // perm_text yields ASCII only.
        for b in perm_text(e.perm) {
            out.push(char::from(b));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(tag: AclTag, perm: u8) -> AclEntry {
        AclEntry { tag, perm }
    }

    #[test]
    fn long_form_numeric_sorted() {
        let acl = [
            e(AclTag::Other, 4),
            e(AclTag::Mask, 5),
            e(AclTag::Group(44), 6),
            e(AclTag::User(100033), 5),
            e(AclTag::GroupObj, 5),
            e(AclTag::User(7), 0),
            e(AclTag::UserObj, 7),
        ];
        assert_eq!(
            to_text(&acl),
            "user::rwx\nuser:7:---\nuser:100033:r-x\ngroup::r-x\ngroup:44:rw-\nmask::r-x\nother::r--\n"
        );
    }

    #[test]
    fn minimal_acl() {
        let acl = [
            e(AclTag::UserObj, 6),
            e(AclTag::GroupObj, 4),
            e(AclTag::Other, 0),
        ];
        assert_eq!(to_text(&acl), "user::rw-\ngroup::r--\nother::---\n");
        assert_eq!(to_text(&[]), "");
    }
}
