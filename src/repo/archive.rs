//! Archive files: one small sealed JSON manifest per archive.
//!
//! ```text
//! archives/<BLAKE3 of the stored bytes> = sealed("PXAR", v1, JSON(Manifest))
//! ```
//! Written last, after every blob it references is in a pack named by an index file, so an
//! archive never references missing data. Deleting an archive deletes only this file.

use super::crypto::Crypto;
use super::error::{RepoError, Result};
use super::id::{ChunkId, ObjectId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const MAGIC: &[u8; 4] = b"PXAR";
pub const VERSION: u8 = 1;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveStats {
    /// Entries in the item stream.
    pub items: u64,
    /// Regular files (hard links not counted again).
    pub files: u64,
    /// Logical bytes of file contents (holes not counted).
    pub original_size: u64,
    /// Content chunks referenced, and how many of them this archive added.
    pub chunks: u64,
    pub new_chunks: u64,
    /// Bytes this archive added to the repository (stored size of its new blobs).
    pub added_size: u64,
    /// Soft problems met while creating it (unreadable files, vanished files, ...).
    pub warnings: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub name: String,
    /// RFC 3339, UTC.
    pub start: String,
    pub end: String,
    pub hostname: String,
    pub tool_version: String,
    /// Structured facts about the source (kind, vmid, guest hostname, datasets, snapshot, ...),
    /// so listing and pruning never parse archive names.
    pub metadata: BTreeMap<String, serde_json::Value>,
    /// The item stream's metadata blobs, in order.
    pub item_stream: Vec<ChunkId>,
    pub stats: ArchiveStats,
}

impl Manifest {
    pub fn encode(&self, crypto: &Crypto) -> Result<Vec<u8>> {
        let body = serde_json::to_vec(self).map_err(|e| RepoError::Invalid(e.to_string()))?;
        crypto.seal(MAGIC, VERSION, &body)
    }

    pub fn decode(crypto: &Crypto, stored: &[u8], what: &str) -> Result<Self> {
        let body = crypto.unseal_version(MAGIC, VERSION, stored, what)?;
        Self::decode_body(&body, what)
    }

    /// The unsealed part of [`Manifest::decode`]. serde_json allocates as it reads (never
    /// from a claimed count) and stops at 128 levels of nesting.
    pub fn decode_body(body: &[u8], what: &str) -> Result<Self> {
        serde_json::from_slice(body).map_err(|e| RepoError::corrupt(what, e.to_string()))
    }
}

pub fn archive_key(id: &ObjectId) -> String {
    format!("archives/{}", id.to_hex())
}

/// Archive names become file names in recipes and tar streams: printable, no `/`, not empty.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 255
        || name.contains('/')
        || name.chars().any(|c| c.is_control())
    {
        return Err(RepoError::Invalid(format!(
            "invalid archive name {name:?}: 1 to 255 printable characters, no '/'"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trip() {
        let mut metadata = BTreeMap::new();
        metadata.insert("kind".to_string(), serde_json::json!("lxc-files"));
        let m = Manifest {
            name: "dump-100-x".into(),
            start: "2026-11-23T06:00:00Z".into(),
            end: "2026-11-23T06:01:00Z".into(),
            hostname: "pve1".into(),
            tool_version: "0.1.0".into(),
            metadata,
            item_stream: vec![ChunkId([4; 32])],
            stats: ArchiveStats {
                items: 3,
                ..Default::default()
            },
        };
        let c = Crypto::plain();
        assert_eq!(
            Manifest::decode(&c, &m.encode(&c).unwrap(), "a").unwrap(),
            m
        );
    }

    #[test]
    fn names() {
        assert!(validate_name("vzdump-lxc-100-2026_01_01-00_00_00.tar").is_ok());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name("").is_err());
    }
}
