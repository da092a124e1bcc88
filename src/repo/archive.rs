//! Archive files: one small sealed JSON manifest per archive.
//!
//! ```text
//! archives/<BLAKE3 of the stored bytes> = sealed("PXAR", v1, JSON(Manifest))
//! ```
//! Written last, after every blob it references is in a pack named by an index file, so an
//! archive never references missing data. Deleting an archive deletes only this file.
//!
//! Notes and protection (`notes`, `protected`) live in the sealed manifest, so they are
//! authenticated like the rest of it and travel with it (compact, a future sync). Changing them
//! writes a new file with `revision` one higher, then deletes the old one. Between the two (a
//! crash, an append-only repository, or an older file put back by the storage) two files
//! describe the same backup: same name, start, end and item stream. [`resolve`] keeps the one
//! with the highest revision (ties: the protected one, then the higher file id) and names the
//! others as superseded; `compact` and the next rewrite delete them. Two different backups that
//! happen to share a name (two `create`s racing) are never merged.
//!
//! Old manifests have none of the three fields (serde defaults: no notes, unprotected,
//! revision 0) and are written without them, so their bytes and ids do not change.

use super::crypto::Crypto;
use super::error::{RepoError, Result};
use super::id::{ChunkId, ObjectId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

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
    /// Free text set by `archive note` (UTF-8, see [`validate_notes`]); empty: none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
    /// Set by `archive protect`: prune and delete refuse to remove the archive.
    #[serde(default, skip_serializing_if = "is_false")]
    pub protected: bool,
    /// How many times notes or protection were changed; the highest revision of one backup wins.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub revision: u64,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Longest notes accepted, in bytes.
pub const MAX_NOTES: usize = 4096;

/// Notes: any UTF-8 up to [`MAX_NOTES`] bytes; newlines and tabs are the only control
/// characters allowed (notes are printed on terminals).
pub fn validate_notes(notes: &str) -> Result<()> {
    if notes.len() > MAX_NOTES {
        return Err(RepoError::Invalid(format!(
            "notes are {} bytes, at most {MAX_NOTES} allowed",
            notes.len()
        )));
    }
    if let Some(c) = notes
        .chars()
        .find(|&c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(RepoError::Invalid(format!(
            "notes contain the control character {c:?}: only newline and tab are allowed"
        )));
    }
    Ok(())
}

/// A manifest file that a newer file of the same backup replaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superseded {
    pub id: ObjectId,
    pub name: String,
    pub revision: u64,
    /// The file that wins.
    pub by: ObjectId,
}

/// Whether two manifests describe the same backup (one is a rewrite of the other's notes or
/// protection).
pub fn same_backup(a: &Manifest, b: &Manifest) -> bool {
    a.name == b.name && a.start == b.start && a.end == b.end && a.item_stream == b.item_stream
}

/// The current manifest of each backup, in the order of `files`, and the superseded ones.
pub fn resolve(files: Vec<(ObjectId, Manifest)>) -> (Vec<(ObjectId, Manifest)>, Vec<Superseded>) {
    let key = |m: &Manifest| -> (String, String, String, Vec<ChunkId>) {
        (
            m.name.clone(),
            m.start.clone(),
            m.end.clone(),
            m.item_stream.clone(),
        )
    };
    let rank = |(id, m): &(ObjectId, Manifest)| (m.revision, m.protected, *id);
    // Index of the winning file per backup (`same_backup`'s fields).
    let mut best: HashMap<(String, String, String, Vec<ChunkId>), usize> = HashMap::new();
    for (i, (_, m)) in files.iter().enumerate() {
        let slot = best.entry(key(m)).or_insert(i);
        if rank(&files[i]) > rank(&files[*slot]) {
            *slot = i;
        }
    }
    let winner: Vec<usize> = files.iter().map(|(_, m)| best[&key(m)]).collect();
    let mut superseded = Vec::new();
    for (i, (id, m)) in files.iter().enumerate() {
        if winner[i] != i {
            superseded.push(Superseded {
                id: *id,
                name: m.name.clone(),
                revision: m.revision,
                by: files[winner[i]].0,
            });
        }
    }
    let current = files
        .into_iter()
        .enumerate()
        .filter(|(i, _)| winner[*i] == *i)
        .map(|(_, e)| e)
        .collect();
    (current, superseded)
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
            notes: String::new(),
            protected: false,
            revision: 0,
        };
        let c = Crypto::plain();
        // Manifests without notes or protection encode as before these fields existed.
        let body = serde_json::to_string(&m).unwrap();
        assert!(
            !body.contains("notes") && !body.contains("revision"),
            "{body}"
        );
        let old: Manifest = serde_json::from_str(&body).unwrap();
        assert_eq!(old, m);
        assert_eq!(
            Manifest::decode(&c, &m.encode(&c).unwrap(), "a").unwrap(),
            m
        );
    }

    fn manifest(name: &str, start: &str, revision: u64, protected: bool) -> Manifest {
        Manifest {
            name: name.into(),
            start: start.into(),
            end: start.into(),
            hostname: "pve1".into(),
            tool_version: "0.1.0".into(),
            metadata: BTreeMap::new(),
            item_stream: vec![ChunkId([7; 32])],
            stats: ArchiveStats::default(),
            notes: String::new(),
            protected,
            revision,
        }
    }

    #[test]
    fn resolve_keeps_the_highest_revision_of_each_backup() {
        let t = "2026-01-01T00:00:00Z";
        let files = vec![
            (ChunkId([3; 32]), manifest("a", t, 2, false)),
            (ChunkId([1; 32]), manifest("a", t, 1, true)),
            (ChunkId([2; 32]), manifest("b", t, 0, false)),
            (ChunkId([4; 32]), manifest("a", t, 0, false)),
        ];
        let (current, superseded) = resolve(files);
        let ids: Vec<_> = current.iter().map(|(id, _)| id.0[0]).collect();
        assert_eq!(ids, [3, 2]);
        let mut gone: Vec<_> = superseded.iter().map(|s| (s.id.0[0], s.by.0[0])).collect();
        gone.sort();
        assert_eq!(gone, [(1, 3), (4, 3)]);
    }

    #[test]
    fn resolve_breaks_ties_towards_protection_then_id() {
        let t = "2026-01-01T00:00:00Z";
        let (current, _) = resolve(vec![
            (ChunkId([9; 32]), manifest("a", t, 1, false)),
            (ChunkId([1; 32]), manifest("a", t, 1, true)),
        ]);
        assert_eq!(current.len(), 1);
        assert!(current[0].1.protected);
        let (current, _) = resolve(vec![
            (ChunkId([1; 32]), manifest("a", t, 1, false)),
            (ChunkId([9; 32]), manifest("a", t, 1, false)),
        ]);
        assert_eq!(current[0].0, ChunkId([9; 32]));
    }

    #[test]
    fn different_backups_sharing_a_name_are_not_merged() {
        let (current, superseded) = resolve(vec![
            (
                ChunkId([1; 32]),
                manifest("a", "2026-01-01T00:00:00Z", 0, false),
            ),
            (
                ChunkId([2; 32]),
                manifest("a", "2026-01-02T00:00:00Z", 3, false),
            ),
        ]);
        assert_eq!(current.len(), 2);
        assert!(superseded.is_empty());
    }

    #[test]
    fn notes_limits() {
        assert!(validate_notes("").is_ok());
        assert!(validate_notes("before upgrade\n\tto PVE 9 \u{e9}").is_ok());
        assert!(validate_notes(&"x".repeat(MAX_NOTES)).is_ok());
        assert!(validate_notes(&"x".repeat(MAX_NOTES + 1)).is_err());
        for bad in ["a\rb", "\u{1b}[31m", "a\0b"] {
            assert!(validate_notes(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names() {
        assert!(validate_name("vzdump-lxc-100-2026_01_01-00_00_00.tar").is_ok());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name("").is_err());
    }
}
