//! An archive as an in-memory inode table, built once from its item stream: directories with
//! their children by name, one inode per hard-link group (every name of the group points at
//! it, `nlink` counts them), and for each regular file the map from a logical offset to the
//! chunk holding it (`Layout`). Pure: no I/O, no FUSE; the item stream is untrusted, so odd
//! records (a missing parent, a name twice, a hard link to nothing) are repaired or skipped
//! with a note, never a panic.

use crate::item::{checked_extents, Extent, Item, Kind};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

/// Index of a node in its tree; the root is 0.
pub type NodeId = u32;
pub const ROOT: NodeId = 0;

pub struct Node {
    pub item: Item,
    pub parent: NodeId,
    /// Directories only.
    pub children: BTreeMap<Vec<u8>, NodeId>,
    /// Names of a file (hard links); for a directory 2 + its subdirectories.
    pub nlink: u32,
    layout: OnceLock<Result<Layout, String>>,
}

impl Node {
    fn new(item: Item, parent: NodeId) -> Self {
        let nlink = if item.is_dir() { 2 } else { 1 };
        Node {
            item,
            parent,
            children: BTreeMap::new(),
            nlink,
            layout: OnceLock::new(),
        }
    }

    /// The file's offset map, computed on first use; an error if the archive's sparse map or
    /// chunk lengths do not add up (the file then reads as EIO).
    pub fn layout(&self) -> Result<&Layout, &str> {
        self.layout
            .get_or_init(|| Layout::new(&self.item))
            .as_ref()
            .map_err(String::as_str)
    }
}

pub struct Tree {
    nodes: Vec<Node>,
    /// Records that were skipped or repaired while building, for one warning each.
    pub notes: Vec<String>,
    /// Directories made for a missing parent whose own entry has not come yet.
    stand_ins: BTreeSet<NodeId>,
}

impl Tree {
    /// Builds the table from items in stream order. The root is the item with the empty path
    /// (synthesized as a 0755 directory when the archive has none).
    pub fn build(items: impl IntoIterator<Item = Item>) -> Tree {
        let mut root = Item::new(Vec::new(), Kind::Dir);
        root.mode = 0o755;
        let mut t = Tree {
            nodes: vec![Node::new(root, ROOT)],
            notes: Vec::new(),
            stand_ins: BTreeSet::new(),
        };
        let mut root_seen = false;
        for item in items {
            if item.path.is_empty() {
                if item.is_dir() && !root_seen {
                    t.nodes[0].item = item;
                    root_seen = true;
                } else {
                    t.notes
                        .push("a second or non-directory root entry, skipped".into());
                }
                continue;
            }
            t.insert(item);
        }
        t
    }

    fn insert(&mut self, mut item: Item) {
        let shown = crate::item::display_path(&item.path);
        let comps: Vec<Vec<u8>> = item
            .path
            .split(|&b| b == b'/')
            .map(<[u8]>::to_vec)
            .collect();
        if comps
            .iter()
            .any(|c| c.is_empty() || c == b"." || c == b"..")
        {
            self.notes.push(format!("{shown}: unusable path, skipped"));
            return;
        }
        let (name, dirs) = comps.split_last().expect("split yields at least one part");
        let Some(parent) = self.make_dirs(dirs, &shown) else {
            return;
        };
        if let Some(&existing) = self.nodes[parent as usize].children.get(name) {
            // A directory's own entry after entries below it (every container archive leads
            // with vzdump's ./etc/vzdump files, before ./etc): its metadata replaces the
            // stand-in's, as GNU tar's would on extraction.
            if item.is_dir() && self.stand_ins.remove(&existing) {
                self.nodes[existing as usize].item = item;
                return;
            }
            self.notes
                .push(format!("{shown}: a second entry of this name, skipped"));
            return;
        }
        let id = if let Kind::Hardlink { target } = &item.kind {
            match self.find(target) {
                Some(first) if self.nodes[first as usize].item.is_file() => {
                    self.nodes[first as usize].nlink += 1;
                    self.nodes[parent as usize]
                        .children
                        .insert(name.clone(), first);
                    return;
                }
                // The group's first name is missing: this name carries the data itself.
                _ => {
                    item.kind = Kind::File;
                    self.push(item, parent)
                }
            }
        } else {
            self.push(item, parent)
        };
        let is_dir = self.nodes[id as usize].item.is_dir();
        self.nodes[parent as usize]
            .children
            .insert(name.clone(), id);
        if is_dir {
            self.nodes[parent as usize].nlink += 1;
        }
    }

    fn push(&mut self, item: Item, parent: NodeId) -> NodeId {
        let id = self.nodes.len() as NodeId;
        self.nodes.push(Node::new(item, parent));
        id
    }

    /// The directory at `dirs`, creating missing ones (0755, owned by root).
    fn make_dirs(&mut self, dirs: &[Vec<u8>], shown: &str) -> Option<NodeId> {
        let mut at = ROOT;
        for (i, c) in dirs.iter().enumerate() {
            at = match self.nodes[at as usize].children.get(c) {
                Some(&n) if self.nodes[n as usize].item.is_dir() => n,
                Some(_) => {
                    self.notes
                        .push(format!("{shown}: a parent is not a directory, skipped"));
                    return None;
                }
                None => {
                    let mut d = Item::new(dirs[..=i].join(&b'/'), Kind::Dir);
                    d.mode = 0o755;
                    let n = self.push(d, at);
                    self.stand_ins.insert(n);
                    self.nodes[at as usize].children.insert(c.clone(), n);
                    self.nodes[at as usize].nlink += 1;
                    n
                }
            };
        }
        Some(at)
    }

    /// The node at an archive path (no leading `/`; empty for the root).
    pub fn find(&self, path: &[u8]) -> Option<NodeId> {
        if path.is_empty() {
            return Some(ROOT);
        }
        let mut at = ROOT;
        for c in path.split(|&b| b == b'/') {
            at = *self.nodes[at as usize].children.get(c)?;
        }
        Some(at)
    }

    pub fn get(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(id as usize)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// A piece of a read: zeros, or bytes of one chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    Hole { len: u64 },
    Data { chunk: usize, offset: u64, len: u64 },
}

/// Where a regular file's logical bytes live. The content (the chunks concatenated) is the
/// data extents concatenated; everything outside the extents reads as zeros.
#[derive(Debug)]
pub struct Layout {
    pub size: u64,
    /// Data extents (sorted, disjoint, non-empty) and where each starts in the content.
    extents: Vec<(Extent, u64)>,
    /// Content offset at which each chunk starts, then the content length.
    chunk_starts: Vec<u64>,
}

impl Layout {
    pub fn new(item: &Item) -> Result<Layout, String> {
        let extents = match &item.sparse {
            Some(e) => checked_extents(e, item.size).map_err(str::to_string)?,
            None if item.size > 0 => vec![Extent {
                offset: 0,
                len: item.size,
            }],
            None => Vec::new(),
        };
        let mut stored = 0u64;
        let extents = extents
            .into_iter()
            .map(|e| {
                let at = stored;
                stored += e.len; // checked_extents bounds the sum by the size
                (e, at)
            })
            .collect();
        let mut chunk_starts = Vec::with_capacity(item.chunks.len() + 1);
        let mut content = 0u64;
        for c in &item.chunks {
            chunk_starts.push(content);
            content += u64::from(c.len);
        }
        chunk_starts.push(content);
        if content != stored {
            return Err(format!(
                "its chunks hold {content} bytes, its size and sparse map say {stored}"
            ));
        }
        Ok(Layout {
            size: item.size,
            extents,
            chunk_starts,
        })
    }

    /// The pieces of `len` bytes at `offset`, cut at the end of the file.
    pub fn segments(&self, offset: u64, len: u64) -> Vec<Segment> {
        let end = offset.saturating_add(len).min(self.size);
        let mut out = Vec::new();
        let mut pos = offset;
        // The first extent that ends after `pos`.
        let mut i = self
            .extents
            .partition_point(|(e, _)| e.offset + e.len <= pos);
        while pos < end {
            let Some(&(e, at)) = self.extents.get(i) else {
                out.push(Segment::Hole { len: end - pos });
                break;
            };
            if pos < e.offset {
                let n = e.offset.min(end) - pos;
                out.push(Segment::Hole { len: n });
                pos += n;
                continue;
            }
            let stop = (e.offset + e.len).min(end);
            let mut c = at + (pos - e.offset);
            let c_end = at + (stop - e.offset);
            while c < c_end {
                let chunk = self.chunk_starts.partition_point(|&s| s <= c) - 1;
                let n = self.chunk_starts[chunk + 1].min(c_end) - c;
                out.push(Segment::Data {
                    chunk,
                    offset: c - self.chunk_starts[chunk],
                    len: n,
                });
                c += n;
            }
            pos = stop;
            i += 1;
        }
        out
    }

    /// `lseek(SEEK_DATA)`: the first data offset at or after `offset`, `None` past the data.
    pub fn seek_data(&self, offset: u64) -> Option<u64> {
        let i = self
            .extents
            .partition_point(|(e, _)| e.offset + e.len <= offset);
        self.extents.get(i).map(|(e, _)| e.offset.max(offset))
    }

    /// `lseek(SEEK_HOLE)`: the first hole at or after `offset` (the end of the file counts as
    /// one); `None` at or past the end.
    pub fn seek_hole(&self, offset: u64) -> Option<u64> {
        if offset >= self.size {
            return None;
        }
        let mut pos = offset;
        for (e, _) in &self.extents[self
            .extents
            .partition_point(|(e, _)| e.offset + e.len <= offset)..]
        {
            if e.offset > pos {
                break;
            }
            pos = e.offset + e.len;
        }
        Some(pos)
    }

    /// Bytes actually stored (for `st_blocks`).
    pub fn stored(&self) -> u64 {
        self.chunk_starts.last().copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ChunkId;
    use crate::item::ChunkRef;
    use proptest::prelude::*;

    fn file(path: &str, size: u64, sparse: Option<Vec<(u64, u64)>>, chunks: &[u32]) -> Item {
        let mut it = Item::new(path, Kind::File);
        it.size = size;
        it.sparse = sparse.map(|v| {
            v.into_iter()
                .map(|(offset, len)| Extent { offset, len })
                .collect()
        });
        it.chunks = chunks
            .iter()
            .enumerate()
            .map(|(i, &len)| ChunkRef {
                id: ChunkId::of(&[i as u8]),
                len,
            })
            .collect();
        it
    }

    fn data(chunk: usize, offset: u64, len: u64) -> Segment {
        Segment::Data { chunk, offset, len }
    }

    fn hole(len: u64) -> Segment {
        Segment::Hole { len }
    }

    #[test]
    fn dense_file_maps_through_chunks_with_a_short_last_one() {
        let l = Layout::new(&file("f", 10, None, &[4, 4, 2])).unwrap();
        assert_eq!(
            l.segments(0, 10),
            [data(0, 0, 4), data(1, 0, 4), data(2, 0, 2)]
        );
        assert_eq!(l.segments(3, 2), [data(0, 3, 1), data(1, 0, 1)]);
        assert_eq!(l.segments(9, 100), [data(2, 1, 1)]);
        assert_eq!(l.segments(8, 2), [data(2, 0, 2)]);
        assert!(l.segments(10, 5).is_empty());
        assert!(l.segments(u64::MAX, u64::MAX).is_empty());
        assert_eq!(l.seek_data(0), Some(0));
        assert_eq!(l.seek_data(7), Some(7));
        assert_eq!(l.seek_data(10), None);
        assert_eq!(l.seek_hole(3), Some(10));
        assert_eq!(l.seek_hole(10), None);
        assert_eq!(l.stored(), 10);
    }

    #[test]
    fn sparse_file_reads_holes_between_extents_and_across_chunks() {
        // Data at [2,5) and [8,12) of 16 bytes; content 7 bytes in chunks of 3 and 4, the
        // second extent starting inside the first chunk.
        let l = Layout::new(&file("f", 16, Some(vec![(2, 3), (8, 4)]), &[3, 4])).unwrap();
        assert_eq!(
            l.segments(0, 16),
            [hole(2), data(0, 0, 3), hole(3), data(1, 0, 4), hole(4)]
        );
        assert_eq!(l.segments(4, 6), [data(0, 2, 1), hole(3), data(1, 0, 2)]);
        assert_eq!(l.segments(13, 2), [hole(2)]);
        assert_eq!(l.segments(0, 1), [hole(1)]);
        assert_eq!(l.seek_data(0), Some(2));
        assert_eq!(l.seek_data(5), Some(8));
        assert_eq!(l.seek_data(9), Some(9));
        assert_eq!(l.seek_data(12), None);
        assert_eq!(l.seek_hole(0), Some(0));
        assert_eq!(l.seek_hole(2), Some(5));
        assert_eq!(l.seek_hole(10), Some(12));
        assert_eq!(l.seek_hole(15), Some(15));
        assert_eq!(l.stored(), 7);

        // Adjacent extents make one run of data for SEEK_HOLE; an extent split over chunks.
        let l = Layout::new(&file("g", 20, Some(vec![(0, 5), (5, 5)]), &[2, 8])).unwrap();
        assert_eq!(l.seek_hole(0), Some(10));
        assert_eq!(l.segments(1, 3), [data(0, 1, 1), data(1, 0, 2)]);
        // All holes, and an empty file.
        let l = Layout::new(&file("h", 8, Some(vec![]), &[])).unwrap();
        assert_eq!(l.segments(0, 8), [hole(8)]);
        assert_eq!(l.seek_data(0), None);
        assert_eq!(l.seek_hole(3), Some(3));
        let l = Layout::new(&file("e", 0, None, &[])).unwrap();
        assert!(l.segments(0, 8).is_empty());
    }

    #[test]
    fn inconsistent_files_are_refused() {
        assert!(Layout::new(&file("f", 10, None, &[4, 4])).is_err());
        assert!(Layout::new(&file("f", 10, Some(vec![(8, 4)]), &[4])).is_err());
        assert!(Layout::new(&file("f", 10, Some(vec![(4, 2), (0, 2)]), &[4])).is_err());
        assert!(Layout::new(&file("f", 10, Some(vec![(u64::MAX, 2)]), &[2])).is_err());
    }

    proptest! {
        /// Reading any range through the segments equals the same range of the logical file
        /// built the slow way.
        #[test]
        fn segments_match_a_naive_model(
            runs in proptest::collection::vec((0u64..6, 1u64..7), 0..6),
            tail in 0u64..5,
            cuts in proptest::collection::vec(1u32..9, 1..8),
            offset in 0u64..60,
            len in 0u64..60,
        ) {
            let mut extents = Vec::new();
            let mut pos = 0;
            for (gap, n) in runs {
                extents.push((pos + gap, n));
                pos += gap + n;
            }
            let size = pos + tail;
            let stored: u64 = extents.iter().map(|e| e.1).sum();
            // Cut the content into chunks of the given lengths, the last one short.
            let mut chunks = Vec::new();
            let mut left = stored;
            for c in cuts.iter().cycle() {
                if left == 0 { break; }
                let n = u64::from(*c).min(left);
                chunks.push(n as u32);
                left -= n;
            }
            let content: Vec<u8> = (1..=stored).map(|b| b as u8).collect();
            let mut logical = vec![0u8; size as usize];
            let mut at = 0usize;
            for &(o, n) in &extents {
                logical[o as usize..(o + n) as usize].copy_from_slice(&content[at..at + n as usize]);
                at += n as usize;
            }
            let l = Layout::new(&file("f", size, Some(extents.clone()), &chunks)).unwrap();
            let starts: Vec<u64> = chunks.iter().scan(0u64, |s, &c| { let a = *s; *s += u64::from(c); Some(a) }).collect();
            let mut got = Vec::new();
            for s in l.segments(offset, len) {
                match s {
                    Segment::Hole { len } => got.extend(std::iter::repeat_n(0u8, len as usize)),
                    Segment::Data { chunk, offset, len } => {
                        prop_assert!(offset + len <= u64::from(chunks[chunk]));
                        let a = (starts[chunk] + offset) as usize;
                        got.extend_from_slice(&content[a..a + len as usize]);
                    }
                }
            }
            let lo = offset.min(size) as usize;
            let hi = offset.saturating_add(len).min(size) as usize;
            prop_assert_eq!(&got[..], &logical[lo..hi]);
            // SEEK_DATA / SEEK_HOLE agree with the extents.
            let in_data = |p: u64| extents.iter().any(|&(o, n)| p >= o && p < o + n);
            let want_data = (offset..size).find(|&p| in_data(p));
            prop_assert_eq!(l.seek_data(offset), want_data);
            let want_hole = (offset < size).then(|| (offset..size).find(|&p| !in_data(p)).unwrap_or(size));
            prop_assert_eq!(l.seek_hole(offset), want_hole);
        }
    }

    fn dir(path: &str) -> Item {
        Item::new(path, Kind::Dir)
    }

    #[test]
    fn tree_links_children_hard_links_and_counts() {
        let items = vec![
            dir(""),
            dir("a"),
            file("a/f", 3, None, &[3]),
            Item::new(
                "a/g",
                Kind::Hardlink {
                    target: b"a/f".to_vec(),
                },
            ),
            dir("a/sub"),
            Item::new(
                "b",
                Kind::Hardlink {
                    target: b"a/f".to_vec(),
                },
            ),
            // Missing parents are made; a link to nothing carries its own data.
            file("x/y/z", 1, None, &[1]),
            {
                let mut h = file("lost", 1, None, &[1]);
                h.kind = Kind::Hardlink {
                    target: b"nowhere".to_vec(),
                };
                h
            },
            // Odd records are skipped.
            file("a/f", 1, None, &[1]),
            file("a/f/under-a-file", 1, None, &[1]),
            file("../escape", 1, None, &[1]),
            file("a//b", 1, None, &[1]),
        ];
        let t = Tree::build(items);
        let f = t.find(b"a/f").unwrap();
        assert_eq!(t.find(b"a/g"), Some(f));
        assert_eq!(t.find(b"b"), Some(f));
        assert_eq!(t.get(f).unwrap().nlink, 3);
        let a = t.find(b"a").unwrap();
        assert_eq!(t.get(a).unwrap().nlink, 3, "2 + one subdirectory");
        assert_eq!(t.get(ROOT).unwrap().nlink, 4, "a, x and the root's own");
        assert_eq!(t.get(t.find(b"a/sub").unwrap()).unwrap().parent, a);
        let z = t.find(b"x/y/z").unwrap();
        assert!(t.get(t.find(b"x/y").unwrap()).unwrap().item.is_dir());
        assert_eq!(t.get(t.get(z).unwrap().parent).unwrap().item.path, b"x/y");
        assert!(t.get(t.find(b"lost").unwrap()).unwrap().item.is_file());
        assert_eq!(t.notes.len(), 4, "{:?}", t.notes);
        assert_eq!(t.find(b"nope"), None);
        let names: Vec<_> = t.get(ROOT).unwrap().children.keys().cloned().collect();
        assert_eq!(
            names,
            [
                b"a".to_vec(),
                b"b".to_vec(),
                b"lost".to_vec(),
                b"x".to_vec()
            ]
        );
    }

    #[test]
    fn a_directory_entry_after_its_contents_replaces_the_stand_in() {
        let mut etc = dir("etc");
        etc.mode = 0o750;
        etc.uid = 100000;
        etc.mtime.secs = 1_600_000_000;
        let mut again = dir("etc");
        again.mode = 0o700;
        let t = Tree::build(vec![
            dir(""),
            file("etc/vzdump/pct.conf", 1, None, &[1]),
            etc,
            file("etc/hostname", 1, None, &[1]),
            again,
        ]);
        let e = t.get(t.find(b"etc").unwrap()).unwrap();
        assert_eq!(
            (e.item.mode, e.item.uid, e.item.mtime.secs),
            (0o750, 100000, 1_600_000_000)
        );
        assert_eq!(e.children.len(), 2, "vzdump and hostname stay");
        assert_eq!(e.nlink, 3);
        let v = t.get(t.find(b"etc/vzdump").unwrap()).unwrap();
        assert_eq!(
            v.item.mode, 0o755,
            "no entry of its own: the stand-in stays"
        );
        assert_eq!(
            t.notes.len(),
            1,
            "only the second ./etc is skipped: {:?}",
            t.notes
        );
    }

    #[test]
    fn an_archive_without_a_root_entry_gets_one() {
        let t = Tree::build(vec![file("stdin", 2, None, &[2])]);
        assert!(t.get(ROOT).unwrap().item.is_dir());
        assert_eq!(t.get(ROOT).unwrap().item.mode, 0o755);
        assert!(t.find(b"stdin").is_some());
        let t = Tree::build(vec![dir(""), file("", 1, None, &[1])]);
        assert_eq!(t.notes.len(), 1);
    }
}
