//! `diff`: what changed between two archives, from their item streams alone. Both streams
//! are in tar order (depth-first, names sorted bytewise per directory), so one merge pass
//! over the two finds every added, removed and changed entry; no content is read, because a
//! file's content is its chunk list: equal lists, equal bytes.
//!
//! Only what a user restores is compared: type, content (with sizes), symlink and hard link
//! targets, mode, owner, ACLs and xattrs. Times are left out: every directory above a
//! changed file has a new mtime, which would drown the real changes.

use crate::item::{Item, Kind};
use serde::Serialize;
use std::cmp::Ordering;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Change {
    Added {
        size: u64,
    },
    Removed {
        size: u64,
    },
    /// The entry is of another kind now (a file became a directory, ...).
    Kind {
        old: String,
        new: String,
    },
    Content {
        old_size: u64,
        new_size: u64,
    },
    /// A symlink's or hard link's target.
    Target {
        old: String,
        new: String,
    },
    Mode {
        old: u32,
        new: u32,
    },
    Owner {
        old: (u32, u32),
        new: (u32, u32),
    },
    Acl,
    Xattrs,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// `./`-prefixed, as `list` shows it.
    pub path: String,
    pub changes: Vec<Change>,
}

/// Tar order: component by component, bytewise (`a`, `a/b`, `a.txt`; bytewise alone would
/// put `a.txt` before `a/b`).
pub fn tar_order(a: &[u8], b: &[u8]) -> Ordering {
    a.split(|&c| c == b'/').cmp(b.split(|&c| c == b'/'))
}

/// The differences from `old` to `new`, in tar order. Both must be in tar order (every
/// archive's item stream is); an error from either stops the diff.
pub fn diff<E>(
    old: impl IntoIterator<Item = Result<Item, E>>,
    new: impl IntoIterator<Item = Result<Item, E>>,
    mut out: impl FnMut(Difference),
) -> Result<(), E> {
    let mut old = old.into_iter();
    let mut new = new.into_iter();
    let mut a = old.next().transpose()?;
    let mut b = new.next().transpose()?;
    loop {
        let order = match (&a, &b) {
            (None, None) => return Ok(()),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(x), Some(y)) => tar_order(&x.path, &y.path),
        };
        match order {
            Ordering::Less => {
                if let Some(x) = a.take() {
                    out(one(&x, Change::Removed { size: x.size }));
                }
                a = old.next().transpose()?;
            }
            Ordering::Greater => {
                if let Some(y) = b.take() {
                    out(one(&y, Change::Added { size: y.size }));
                }
                b = new.next().transpose()?;
            }
            Ordering::Equal => {
                if let (Some(x), Some(y)) = (a.take(), b.take()) {
                    let changes = compare(&x, &y);
                    if !changes.is_empty() {
                        out(Difference {
                            path: crate::item::display_path(&y.path),
                            changes,
                        });
                    }
                }
                a = old.next().transpose()?;
                b = new.next().transpose()?;
            }
        }
    }
}

fn one(item: &Item, change: Change) -> Difference {
    Difference {
        path: crate::item::display_path(&item.path),
        changes: vec![change],
    }
}

fn kind_name(k: &Kind) -> &'static str {
    match k {
        Kind::File => "file",
        Kind::Dir => "directory",
        Kind::Symlink { .. } => "symlink",
        Kind::Hardlink { .. } => "hard link",
        Kind::CharDevice { .. } => "character device",
        Kind::BlockDevice { .. } => "block device",
        Kind::Fifo => "fifo",
    }
}

/// What differs between two versions of one path.
pub fn compare(old: &Item, new: &Item) -> Vec<Change> {
    let mut changes = Vec::new();
    match (&old.kind, &new.kind) {
        (Kind::Symlink { target: x }, Kind::Symlink { target: y })
        | (Kind::Hardlink { target: x }, Kind::Hardlink { target: y })
            if x != y =>
        {
            changes.push(Change::Target {
                old: String::from_utf8_lossy(x).into_owned(),
                new: String::from_utf8_lossy(y).into_owned(),
            });
        }
        (x, y) if std::mem::discriminant(x) != std::mem::discriminant(y) => {
            changes.push(Change::Kind {
                old: kind_name(x).into(),
                new: kind_name(y).into(),
            });
        }
        (x, y) if x != y => changes.push(Change::Kind {
            old: format!("{x:?}"),
            new: format!("{y:?}"),
        }),
        _ => {}
    }
    let same_content = old.size == new.size
        && old.sparse == new.sparse
        && old
            .chunks
            .iter()
            .map(|c| c.id)
            .eq(new.chunks.iter().map(|c| c.id));
    if old.kind == Kind::File && new.kind == Kind::File && !same_content {
        changes.push(Change::Content {
            old_size: old.size,
            new_size: new.size,
        });
    }
    if old.mode != new.mode {
        changes.push(Change::Mode {
            old: old.mode,
            new: new.mode,
        });
    }
    if (old.uid, old.gid) != (new.uid, new.gid) {
        changes.push(Change::Owner {
            old: (old.uid, old.gid),
            new: (new.uid, new.gid),
        });
    }
    if old.acl_access != new.acl_access || old.acl_default != new.acl_default {
        changes.push(Change::Acl);
    }
    if old.xattrs != new.xattrs {
        changes.push(Change::Xattrs);
    }
    changes
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let size = |n: &u64| bytesize::ByteSize(*n).to_string();
        match self {
            Change::Added { size: n } => write!(f, "added {}", size(n)),
            Change::Removed { size: n } => write!(f, "removed {}", size(n)),
            Change::Kind { old, new } => write!(f, "[type: {old} -> {new}]"),
            Change::Content { old_size, new_size } => {
                write!(f, "[content: {} -> {}]", size(old_size), size(new_size))
            }
            Change::Target { old, new } => write!(f, "[target: {old} -> {new}]"),
            Change::Mode { old, new } => write!(f, "[mode: {old:04o} -> {new:04o}]"),
            Change::Owner { old, new } => {
                write!(f, "[owner: {}:{} -> {}:{}]", old.0, old.1, new.0, new.1)
            }
            Change::Acl => f.write_str("[acl]"),
            Change::Xattrs => f.write_str("[xattrs]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::{ChunkRef, Xattr};
    use crate::repo::ChunkId;

    fn file(path: &str, chunk: u8, size: u64) -> Item {
        let mut i = Item::new(path.as_bytes().to_vec(), Kind::File);
        i.mode = 0o644;
        i.size = size;
        i.chunks = vec![ChunkRef {
            id: ChunkId([chunk; 32]),
            len: size as u32,
        }];
        i
    }

    fn dir(path: &str) -> Item {
        let mut i = Item::new(path.as_bytes().to_vec(), Kind::Dir);
        i.mode = 0o755;
        i
    }

    fn run(old: Vec<Item>, new: Vec<Item>) -> Vec<(String, Vec<Change>)> {
        let mut out = Vec::new();
        diff::<()>(old.into_iter().map(Ok), new.into_iter().map(Ok), |d| {
            out.push((d.path, d.changes))
        })
        .unwrap();
        out
    }

    #[test]
    fn tar_order_goes_into_a_directory_before_its_siblings() {
        assert_eq!(tar_order(b"a/b", b"a.txt"), Ordering::Less);
        assert_eq!(tar_order(b"a", b"a/b"), Ordering::Less);
        assert_eq!(tar_order(b"", b"a"), Ordering::Less);
        assert_eq!(tar_order(b"b", b"a/z"), Ordering::Greater);
    }

    #[test]
    fn every_kind_of_change_is_found_and_nothing_else() {
        let mut moved = file("a/mode", 2, 10);
        moved.mode = 0o755;
        let mut owned = file("a/owner", 3, 10);
        owned.uid = 33;
        let mut attr = file("a/xattr", 4, 10);
        attr.xattrs = vec![Xattr {
            name: b"user.k".to_vec(),
            value: b"v".to_vec(),
        }];
        let old = vec![
            dir(""),
            dir("a"),
            file("a/content", 1, 10),
            file("a/mode", 2, 10),
            file("a/owner", 3, 10),
            file("a/same", 9, 10),
            file("a/xattr", 4, 10),
            file("a.txt", 5, 3),
            file("gone", 6, 7),
        ];
        let mut root = dir("");
        root.mtime.secs = 99; // times are not compared
        let new = vec![
            root,
            dir("a"),
            file("a/content", 7, 12),
            moved,
            owned,
            file("a/same", 9, 10),
            attr,
            dir("a/z"),
            file("a.txt", 5, 3),
            file("new", 8, 5),
        ];
        let got = run(old, new);
        let want = vec![
            (
                "./a/content".to_string(),
                vec![Change::Content {
                    old_size: 10,
                    new_size: 12,
                }],
            ),
            (
                "./a/mode".into(),
                vec![Change::Mode {
                    old: 0o644,
                    new: 0o755,
                }],
            ),
            (
                "./a/owner".into(),
                vec![Change::Owner {
                    old: (0, 0),
                    new: (33, 0),
                }],
            ),
            ("./a/xattr".into(), vec![Change::Xattrs]),
            ("./a/z".into(), vec![Change::Added { size: 0 }]),
            ("./gone".into(), vec![Change::Removed { size: 7 }]),
            ("./new".into(), vec![Change::Added { size: 5 }]),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn a_file_that_became_a_symlink_is_a_type_change() {
        let mut link = Item::new(
            b"x".to_vec(),
            Kind::Symlink {
                target: b"y".to_vec(),
            },
        );
        link.mode = 0o644;
        let got = run(vec![file("x", 1, 0)], vec![link]);
        assert!(matches!(got[0].1[0], Change::Kind { .. }), "{got:?}");
    }
}
