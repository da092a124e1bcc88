//! Index files and the in-memory index.
//!
//! ```text
//! index/<BLAKE3 of the stored bytes> = sealed("PXIX", v1, postcard(IndexFile))
//! ```
//! An index file names packs that exist and the blobs inside them. Writers put it only after
//! the packs it names are durable, so an index never dangles. Several index files may list the
//! same blob (concurrent writers): any copy is valid. `supersedes` lets compaction replace old
//! index files by a merged one; a reader ignores index files superseded by another it sees.
//!
//! Decoding limits: postcard preallocates at most 1 MiB per sequence whatever count a file
//! claims; every entry must claim at most `MAX_STORED_BLOB` bytes stored and `MAX_BLOB` plain
//! (`pack::check_entry`), so a read never allocates a length only storage vouches for.

use super::crypto::Crypto;
use super::error::{RepoError, Result};
use super::id::ChunkId;
use super::pack::{check_entry, BlobKind, PackEntry};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

pub const MAGIC: &[u8; 4] = b"PXIX";
pub const VERSION: u8 = 1;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFile {
    pub packs: Vec<IndexedPack>,
    pub supersedes: Vec<ChunkId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedPack {
    pub pack: ChunkId,
    pub blobs: Vec<PackEntry>,
}

impl IndexFile {
    pub fn encode(&self, crypto: &Crypto) -> Result<Vec<u8>> {
        let body = postcard::to_allocvec(self).map_err(|e| RepoError::Invalid(e.to_string()))?;
        crypto.seal(MAGIC, VERSION, &body)
    }

    pub fn decode(crypto: &Crypto, stored: &[u8], what: &str) -> Result<Self> {
        let body = crypto.unseal_version(MAGIC, VERSION, stored, what)?;
        Self::decode_body(&body, what)
    }

    /// The unsealed part of [`IndexFile::decode`]: every entry's lengths are checked here, so
    /// the in-memory index never holds one a reader would allocate blindly.
    pub fn decode_body(body: &[u8], what: &str) -> Result<Self> {
        let file: IndexFile =
            postcard::from_bytes(body).map_err(|e| RepoError::corrupt(what, e.to_string()))?;
        for e in file.packs.iter().flat_map(|p| &p.blobs) {
            check_entry(e, what)?;
        }
        Ok(file)
    }
}

pub fn index_key(id: &ChunkId) -> String {
    format!("index/{}", id.to_hex())
}

/// Where a blob is stored: 17 bytes of payload (20 with padding) beside its 32-byte id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub pack: u32,
    pub offset: u32,
    pub length: u32,
    pub raw_len: u32,
    pub kind: BlobKind,
}

/// The in-memory index: every blob's location, as one vector sorted by id. A hash map costs
/// ~110 bytes per blob here (load factor and control bytes); the sorted vector costs 52, and
/// a binary search over a few million ids is still millions of lookups per second. The index
/// is built once per run (writers track their new blobs themselves), so nothing inserts into
/// it on the hot path.
#[derive(Default)]
pub struct Index {
    packs: Vec<ChunkId>,
    pack_numbers: HashMap<ChunkId, u32>,
    blobs: Vec<(ChunkId, Location)>,
    /// `buckets[b]..buckets[b + 1]` is where ids whose top `bucket_bits` bits are `b` lie.
    buckets: Vec<u32>,
    bucket_bits: u32,
}

fn bucket(id: &ChunkId, bits: u32) -> usize {
    if bits == 0 {
        return 0;
    }
    (u32::from_be_bytes(id.0[..4].try_into().expect("4 bytes")) >> (32 - bits)) as usize
}

impl Index {
    /// Adds one pack's blobs. For building many packs use `from_files`, which sorts once.
    pub fn insert_pack(&mut self, pack: ChunkId, entries: &[PackEntry]) {
        self.push_pack(pack, entries);
        self.seal();
    }

    fn push_pack(&mut self, pack: ChunkId, entries: &[PackEntry]) {
        let n = *self.pack_numbers.entry(pack).or_insert_with(|| {
            self.packs.push(pack);
            (self.packs.len() - 1) as u32
        });
        self.blobs.extend(entries.iter().map(|e| {
            (
                e.id,
                Location {
                    pack: n,
                    offset: e.offset,
                    length: e.length,
                    raw_len: e.raw_len,
                    kind: e.kind,
                },
            )
        }));
    }

    /// Sorts by id; of several copies of a blob the first added wins (stable sort).
    fn seal(&mut self) {
        self.blobs.sort_by_key(|e| e.0);
        self.blobs.dedup_by(|later, first| later.0 == first.0);
        self.blobs.shrink_to_fit();
        let bits = (self.blobs.len() / 4).max(1).ilog2().min(28);
        let mut buckets = vec![0u32; (1usize << bits) + 1];
        for (id, _) in &self.blobs {
            buckets[bucket(id, bits) + 1] += 1;
        }
        for i in 1..buckets.len() {
            buckets[i] += buckets[i - 1];
        }
        self.buckets = buckets;
        self.bucket_bits = bits;
    }

    /// Ids are uniformly distributed hashes, so their top bits split the sorted table into
    /// buckets of about four: a directory of bucket starts (one byte per blob) turns a lookup
    /// into one or two cache misses instead of a twenty-step binary search.
    fn find(&self, id: &ChunkId) -> Option<&Location> {
        if self.blobs.is_empty() {
            return None;
        }
        let b = bucket(id, self.bucket_bits);
        let (lo, hi) = (self.buckets[b] as usize, self.buckets[b + 1] as usize);
        self.blobs[lo..hi]
            .binary_search_by(|(k, _)| k.cmp(id))
            .ok()
            .map(|i| &self.blobs[lo + i].1)
    }

    /// Bytes the blob table and its directory occupy (the pack list is negligible).
    pub fn memory_bytes(&self) -> usize {
        self.blobs.capacity() * std::mem::size_of::<(ChunkId, Location)>()
            + self.buckets.capacity() * 4
    }

    pub fn get(&self, id: &ChunkId) -> Option<(ChunkId, Location)> {
        self.find(id).map(|l| (self.packs[l.pack as usize], *l))
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        self.find(id).is_some()
    }

    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }

    pub fn packs(&self) -> &[ChunkId] {
        &self.packs
    }

    pub fn blobs(&self) -> impl Iterator<Item = (&ChunkId, &Location)> {
        self.blobs.iter().map(|(k, l)| (k, l))
    }

    /// Builds the index from decoded index files, honouring `supersedes`.
    pub fn from_files(files: Vec<(ChunkId, IndexFile)>) -> Self {
        let superseded: HashSet<ChunkId> = files
            .iter()
            .flat_map(|(_, f)| f.supersedes.iter().copied())
            .collect();
        let mut index = Index::default();
        for (id, file) in files {
            if superseded.contains(&id) {
                continue;
            }
            for p in &file.packs {
                index.push_pack(p.pack, &p.blobs);
            }
        }
        index.seal();
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::key::Keys;
    use proptest::prelude::*;

    fn entry(id: u8, off: u32) -> PackEntry {
        PackEntry {
            id: ChunkId([id; 32]),
            kind: BlobKind::Data,
            offset: off,
            length: 10,
            raw_len: 20,
        }
    }

    proptest! {
        #[test]
        fn index_file_round_trip(n in 0usize..20, m in 0usize..5) {
            let f = IndexFile {
                packs: (0..n).map(|i| IndexedPack { pack: ChunkId([i as u8; 32]), blobs: (0..m).map(|j| entry(j as u8, j as u32 * 10)).collect() }).collect(),
                supersedes: vec![ChunkId([7; 32])],
            };
            for c in [Crypto::plain(), Crypto::encrypted(Keys::derive(&[2; 32]))] {
                prop_assert_eq!(IndexFile::decode(&c, &f.encode(&c).unwrap(), "i").unwrap(), f.clone());
            }
        }
    }

    #[test]
    fn impossible_entry_lengths_are_refused() {
        let mut e = entry(1, 0);
        e.length = u32::MAX;
        let f = IndexFile {
            packs: vec![IndexedPack {
                pack: ChunkId([1; 32]),
                blobs: vec![e],
            }],
            supersedes: vec![],
        };
        let c = Crypto::plain();
        let err = IndexFile::decode(&c, &f.encode(&c).unwrap(), "i").unwrap_err();
        assert!(err.is_corruption(), "{err}");
    }

    #[test]
    fn superseded_files_are_ignored() {
        let old = IndexFile {
            packs: vec![IndexedPack {
                pack: ChunkId([1; 32]),
                blobs: vec![entry(5, 0)],
            }],
            supersedes: vec![],
        };
        let new = IndexFile {
            packs: vec![IndexedPack {
                pack: ChunkId([2; 32]),
                blobs: vec![entry(6, 0)],
            }],
            supersedes: vec![ChunkId([10; 32])],
        };
        let idx = Index::from_files(vec![(ChunkId([10; 32]), old), (ChunkId([11; 32]), new)]);
        assert!(!idx.contains(&ChunkId([5; 32])));
        assert_eq!(idx.get(&ChunkId([6; 32])).unwrap().0, ChunkId([2; 32]));
    }

    proptest! {
        #[test]
        fn lookups_find_every_blob_and_nothing_else(ids in proptest::collection::vec(any::<[u8; 32]>(), 0..300), probe in any::<[u8; 32]>()) {
            let entries: Vec<PackEntry> = ids.iter().enumerate().map(|(i, id)| PackEntry {
                id: ChunkId(*id), kind: BlobKind::Data, offset: i as u32, length: 1, raw_len: 1,
            }).collect();
            let file = IndexFile { packs: vec![IndexedPack { pack: ChunkId([9; 32]), blobs: entries }], supersedes: vec![] };
            let index = Index::from_files(vec![(ChunkId([1; 32]), file)]);
            for id in &ids {
                prop_assert!(index.contains(&ChunkId(*id)));
            }
            prop_assert_eq!(index.contains(&ChunkId(probe)), ids.contains(&probe));
        }
    }
}
