//! The item model: one record per filesystem entry of an archive, in tar order (depth first,
//! names sorted bytewise, parents before children). The walker (`tree::walk`) produces items,
//! the repository stores them as an item stream (`repo::item_stream`), and `extract` (`tree::restore`)
//! and `export-tar` (`export::tar`) consume them. This module is pure data: no I/O.
//!
//! Conventions every producer and consumer relies on:
//! - `path` is the entry's path relative to the archive root, as raw bytes, with no leading
//!   `./` or `/` and no trailing `/`; the root directory itself is the empty path. Exporters
//!   add the `./` prefix (and `/` for directories) that tar uses.
//! - Ids (`uid`, `gid`, ACL qualifiers, the rootid of a file capability) are numeric and are
//!   whatever the archive's creator decided to record: for containers, container-side ids.
//! - A regular file's content is the concatenation of its chunks. When `sparse` is `Some`, the
//!   content is only the data extents, concatenated in order; everything else reads as zeros.
//! - A hard link group is stored once as a `File` (the first path in tar order) followed by
//!   `Hardlink` entries naming that first path. A `Hardlink` item repeats the size, sparse map
//!   and chunks of its group, so a reader that skipped the first path can still write the data.

use crate::id::ChunkId;
use serde::{Deserialize, Serialize};

pub mod codec;
pub mod filter;
pub mod pattern;

/// An item path for messages: `./`-prefixed as tar shows it, invalid UTF-8 replaced.
pub fn display_path(path: &[u8]) -> String {
    format!("./{}", String::from_utf8_lossy(path))
}

/// Seconds and nanoseconds since the Unix epoch, as statx reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    File,
    Dir,
    Symlink {
        target: Vec<u8>,
    },
    /// A further name of a file stored earlier in the stream under `target`.
    Hardlink {
        target: Vec<u8>,
    },
    CharDevice {
        major: u32,
        minor: u32,
    },
    BlockDevice {
        major: u32,
        minor: u32,
    },
    Fifo,
}

/// One POSIX ACL entry, decoded from `system.posix_acl_access` / `_default`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AclTag {
    UserObj,
    User(u32),
    GroupObj,
    Group(u32),
    Mask,
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclEntry {
    pub tag: AclTag,
    /// `r` = 4, `w` = 2, `x` = 1.
    pub perm: u8,
}

/// An extended attribute other than the POSIX ACL ones (those live in `Item::acl_*`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

/// A run of data in a sparse file: `len` bytes at `offset` of the logical file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
}

/// A content blob and its plaintext length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub id: ChunkId,
    pub len: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub path: Vec<u8>,
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Timestamp,
    pub atime: Timestamp,
    pub ctime: Timestamp,
    /// Logical size for regular files (holes included); 0 for everything else.
    pub size: u64,
    /// Sorted by name; never contains `system.posix_acl_access` or `system.posix_acl_default`.
    pub xattrs: Vec<Xattr>,
    /// `None` when the file has no extended ACL (its mode bits say it all).
    pub acl_access: Option<Vec<AclEntry>>,
    /// Directories only.
    pub acl_default: Option<Vec<AclEntry>>,
    /// Data extents of a file with holes; `None` for a dense file.
    pub sparse: Option<Vec<Extent>>,
    pub chunks: Vec<ChunkRef>,
}

impl Item {
    /// A new item with everything but the path and kind zeroed or empty.
    pub fn new(path: impl Into<Vec<u8>>, kind: Kind) -> Self {
        Item {
            path: path.into(),
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: Timestamp::default(),
            atime: Timestamp::default(),
            ctime: Timestamp::default(),
            size: 0,
            xattrs: Vec::new(),
            acl_access: None,
            acl_default: None,
            sparse: None,
            chunks: Vec::new(),
        }
    }

    /// Bytes of content actually stored: the data extents, not the holes. Saturates: a map
    /// whose lengths overflow is refused by [`checked_extents`] before anything is written.
    pub fn stored_len(&self) -> u64 {
        match &self.sparse {
            Some(extents) => extents.iter().fold(0u64, |n, e| n.saturating_add(e.len)),
            None => self.size,
        }
    }

    pub fn is_file(&self) -> bool {
        matches!(self.kind, Kind::File)
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir)
    }
}

/// A sparse map as the consumers of an archive (extract, export) need it: zero-length extents
/// dropped, the rest sorted, disjoint and inside a file of `size` bytes. The map comes from
/// the repository, so this is checked before a byte is written.
pub fn checked_extents(extents: &[Extent], size: u64) -> Result<Vec<Extent>, &'static str> {
    let mut out = Vec::with_capacity(extents.len());
    let mut end = 0u64;
    for e in extents.iter().filter(|e| e.len > 0) {
        let e_end = e
            .offset
            .checked_add(e.len)
            .ok_or("sparse extent overflows")?;
        if e.offset < end {
            return Err("sparse extents overlap or are out of order");
        }
        if e_end > size {
            return Err("sparse extent ends past the file size");
        }
        end = e_end;
        out.push(*e);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_maps_are_checked() {
        let e = |offset, len| Extent { offset, len };
        assert_eq!(
            checked_extents(&[e(0, 0), e(2, 3), e(5, 5)], 10),
            Ok(vec![e(2, 3), e(5, 5)])
        );
        assert!(checked_extents(&[e(5, 5), e(0, 1)], 10).is_err());
        assert!(checked_extents(&[e(0, 5), e(4, 1)], 10).is_err());
        assert!(checked_extents(&[e(8, 5)], 10).is_err());
        assert!(checked_extents(&[e(u64::MAX, 2)], u64::MAX).is_err());
        let mut it = Item::new("f", Kind::File);
        it.sparse = Some(vec![e(0, u64::MAX), e(0, u64::MAX)]);
        assert_eq!(it.stored_len(), u64::MAX);
    }
}
