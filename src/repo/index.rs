//! Index files and the in-memory index.
//!
//! ```text
//! index/<BLAKE3 of the stored bytes> = sealed("PXIX", v1, postcard(IndexFile))
//! ```
//! An index file names packs that exist and the blobs inside them. Writers put it only after
//! the packs it names are durable, so an index never dangles. Several index files may list the
//! same blob (concurrent writers): any copy is valid. `supersedes` lets compaction replace old
//! index files by a merged one; a reader ignores index files superseded by another it sees.

use super::crypto::Crypto;
use super::error::{RepoError, Result};
use super::id::ChunkId;
use super::pack::{BlobKind, PackEntry};
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
        let (version, body) = crypto.unseal(MAGIC, stored, what)?;
        if version != VERSION {
            return Err(RepoError::corrupt(
                what,
                format!("unsupported index version {version}"),
            ));
        }
        postcard::from_bytes(&body).map_err(|e| RepoError::corrupt(what, e.to_string()))
    }
}

pub fn index_key(id: &ChunkId) -> String {
    format!("index/{}", id.to_hex())
}

/// Where a blob is stored. 17 bytes of payload per blob (plus the 32-byte key in the map).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub pack: u32,
    pub offset: u32,
    pub length: u32,
    pub raw_len: u32,
    pub kind: BlobKind,
}

#[derive(Default)]
pub struct Index {
    packs: Vec<ChunkId>,
    pack_numbers: HashMap<ChunkId, u32>,
    blobs: HashMap<ChunkId, Location>,
}

impl Index {
    pub fn insert_pack(&mut self, pack: ChunkId, entries: &[PackEntry]) {
        let n = *self.pack_numbers.entry(pack).or_insert_with(|| {
            self.packs.push(pack);
            (self.packs.len() - 1) as u32
        });
        for e in entries {
            self.blobs.entry(e.id).or_insert(Location {
                pack: n,
                offset: e.offset,
                length: e.length,
                raw_len: e.raw_len,
                kind: e.kind,
            });
        }
    }

    pub fn get(&self, id: &ChunkId) -> Option<(ChunkId, Location)> {
        self.blobs
            .get(id)
            .map(|l| (self.packs[l.pack as usize], *l))
    }

    pub fn contains(&self, id: &ChunkId) -> bool {
        self.blobs.contains_key(id)
    }

    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }

    pub fn packs(&self) -> &[ChunkId] {
        &self.packs
    }

    pub fn blobs(&self) -> impl Iterator<Item = (&ChunkId, &Location)> {
        self.blobs.iter()
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
                index.insert_pack(p.pack, &p.blobs);
            }
        }
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
}
