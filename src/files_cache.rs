//! The files cache: lets an incremental backup skip reading files that have not changed.
//!
//! Key: BLAKE3 (16 bytes) of a stable source identity (a ZFS dataset GUID for snapshot
//! sources, else the canonical source path) and the path inside the source, so a snapshot
//! mounted at a new place every run still hits. Value: inode, size, mtime and ctime (ns), and
//! the file's chunk list (and sparse map). A hit whose blobs are all still in the repository
//! index reuses them without opening the file.
//!
//! Only an accelerator: it lives in the client cache directory, a missing or damaged cache
//! means a slower backup, never a wrong one (a damaged file fails its checksum and is
//! ignored). Entries not seen for `ttl` runs are dropped. A file whose mtime is not safely
//! older than the backup's start is not remembered: it could change again within the
//! filesystem's timestamp granularity without its mtime moving (borg's "files cache race").

use crate::item::{ChunkRef, Extent, Item, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"PXFC";
const VERSION: u8 = 1;

/// Which metadata must match for a hit (borg's `--files-cache` modes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    Off,
    #[default]
    CtimeSizeInode,
    MtimeSize,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" | "disabled" => Ok(Mode::Off),
            "ctime,size,inode" => Ok(Mode::CtimeSizeInode),
            "mtime,size" => Ok(Mode::MtimeSize),
            _ => Err(format!(
                "invalid files cache mode {s:?}: expected off, ctime,size,inode or mtime,size"
            )),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    ino: u64,
    size: u64,
    mtime: Timestamp,
    ctime: Timestamp,
    /// Runs since this entry was last seen.
    age: u32,
    chunks: Vec<ChunkRef>,
    sparse: Option<Vec<Extent>>,
}

pub type Key = [u8; 16];

pub struct FilesCache {
    path: Option<PathBuf>,
    mode: Mode,
    ttl: u32,
    entries: HashMap<Key, Entry>,
    /// mtimes at or after this are too fresh to remember.
    fresh_after: Timestamp,
}

/// What a hit gives back.
pub struct Hit {
    pub chunks: Vec<ChunkRef>,
    pub sparse: Option<Vec<Extent>>,
}

impl FilesCache {
    /// A cache that never hits and is never written.
    pub fn disabled() -> Self {
        FilesCache {
            path: None,
            mode: Mode::Off,
            ttl: 0,
            entries: HashMap::new(),
            fresh_after: Timestamp::default(),
        }
    }

    /// Loads the cache at `path` (missing or damaged: empty). `start` is the backup's start
    /// time (for snapshot sources, the snapshot's).
    pub fn load(path: PathBuf, mode: Mode, ttl: u32, start: Timestamp) -> Self {
        if mode == Mode::Off {
            return FilesCache::disabled();
        }
        let mut entries: HashMap<Key, Entry> = std::fs::read(&path)
            .ok()
            .and_then(|b| decode(&b))
            .unwrap_or_default();
        for e in entries.values_mut() {
            e.age = e.age.saturating_add(1);
        }
        FilesCache {
            path: Some(path),
            mode,
            ttl,
            entries,
            // One second of margin covers every filesystem's mtime granularity here.
            fresh_after: Timestamp {
                secs: start.secs - 1,
                nanos: start.nanos,
            },
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.mode != Mode::Off
    }

    pub fn key(source_id: &str, path: &[u8]) -> Key {
        let mut h = blake3::Hasher::new();
        h.update(source_id.as_bytes());
        h.update(&[0]);
        h.update(path);
        let mut k = [0u8; 16];
        k.copy_from_slice(&h.finalize().as_bytes()[..16]);
        k
    }

    /// The stored chunks of an unchanged file, if the cache knows it.
    pub fn lookup(&mut self, key: &Key, item: &Item, ino: u64) -> Option<Hit> {
        let mode = self.mode;
        let e = self.entries.get_mut(key)?;
        let same = e.size == item.size
            && match mode {
                Mode::Off => false,
                Mode::CtimeSizeInode => e.ctime == item.ctime && e.ino == ino,
                Mode::MtimeSize => e.mtime == item.mtime,
            };
        if !same {
            return None;
        }
        e.age = 0;
        Some(Hit {
            chunks: e.chunks.clone(),
            sparse: e.sparse.clone(),
        })
    }

    /// Remembers a file just stored (with its chunks filled in).
    pub fn remember(&mut self, key: Key, item: &Item, ino: u64) {
        if self.mode == Mode::Off
            || item.mtime >= self.fresh_after
            || item.ctime >= self.fresh_after
        {
            self.entries.remove(&key);
            return;
        }
        self.entries.insert(
            key,
            Entry {
                ino,
                size: item.size,
                mtime: item.mtime,
                ctime: item.ctime,
                age: 0,
                chunks: item.chunks.clone(),
                sparse: item.sparse.clone(),
            },
        );
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops entries older than the TTL and writes the cache atomically. Call only after the
    /// archive was written: a failed backup keeps the previous cache.
    pub fn save(mut self) -> std::io::Result<()> {
        let Some(path) = self.path.take() else {
            return Ok(());
        };
        let ttl = self.ttl;
        self.entries.retain(|_, e| e.age <= ttl);
        let bytes = encode(&self.entries)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
        std::io::Write::write_all(&mut tmp, &bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    }
}

fn encode(entries: &HashMap<Key, Entry>) -> std::io::Result<Vec<u8>> {
    let list: Vec<(&Key, &Entry)> = entries.iter().collect();
    let body = postcard::to_allocvec(&list).map_err(std::io::Error::other)?;
    let mut out = MAGIC.to_vec();
    out.push(VERSION);
    out.extend_from_slice(&body);
    out.extend_from_slice(blake3::hash(&out).as_bytes());
    Ok(out)
}

fn decode(bytes: &[u8]) -> Option<HashMap<Key, Entry>> {
    if bytes.len() < 5 + 32 || &bytes[..4] != MAGIC || bytes[4] != VERSION {
        return None;
    }
    let (content, sum) = bytes.split_at(bytes.len() - 32);
    if blake3::hash(content).as_bytes() != sum {
        return None;
    }
    let list: Vec<(Key, Entry)> = postcard::from_bytes(&content[5..]).ok()?;
    Some(list.into_iter().collect())
}

/// The client cache directory for a repository: `PROXBORG_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/proxborg`, else `/var/cache/proxborg` for root and `~/.cache/proxborg`.
pub fn cache_dir(repo_id: &str) -> PathBuf {
    let base = if let Some(d) = std::env::var_os("PROXBORG_CACHE_DIR") {
        PathBuf::from(d)
    } else if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        PathBuf::from(d).join("proxborg")
    } else if rustix::process::geteuid().is_root() {
        PathBuf::from("/var/cache/proxborg")
    } else {
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
        PathBuf::from(home).join(".cache/proxborg")
    };
    base.join(repo_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::Kind;
    use crate::repo::ChunkId;

    fn file(mtime: i64, size: u64) -> Item {
        let mut i = Item::new(b"a/b".to_vec(), Kind::File);
        i.mtime = Timestamp {
            secs: mtime,
            nanos: 5,
        };
        i.ctime = i.mtime;
        i.size = size;
        i.chunks = vec![ChunkRef {
            id: ChunkId([7; 32]),
            len: size as u32,
        }];
        i
    }

    #[test]
    fn hits_survive_a_save_and_reload_and_changes_miss() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("files");
        let start = Timestamp {
            secs: 1000,
            nanos: 0,
        };
        let mut c = FilesCache::load(path.clone(), Mode::CtimeSizeInode, 20, start);
        let k = FilesCache::key("src", b"a/b");
        c.remember(k, &file(500, 10), 42);
        c.save().unwrap();
        let mut c = FilesCache::load(path.clone(), Mode::CtimeSizeInode, 20, start);
        assert!(c.lookup(&k, &file(500, 10), 42).is_some());
        assert!(
            c.lookup(&k, &file(500, 11), 42).is_none(),
            "size change hit"
        );
        assert!(
            c.lookup(&k, &file(501, 10), 42).is_none(),
            "ctime change hit"
        );
        assert!(
            c.lookup(&k, &file(500, 10), 43).is_none(),
            "inode change hit"
        );
        let mut m = FilesCache::load(path, Mode::MtimeSize, 20, start);
        assert!(
            m.lookup(&k, &file(500, 10), 43).is_some(),
            "mtime,size ignores inodes"
        );
    }

    #[test]
    fn too_fresh_files_are_not_remembered() {
        let d = tempfile::tempdir().unwrap();
        let start = Timestamp {
            secs: 1000,
            nanos: 0,
        };
        let mut c = FilesCache::load(d.path().join("f"), Mode::CtimeSizeInode, 20, start);
        c.remember(FilesCache::key("s", b"x"), &file(999, 1), 1);
        c.remember(FilesCache::key("s", b"y"), &file(998, 1), 1);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn entries_expire_after_ttl_runs_unseen() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("f");
        let start = Timestamp {
            secs: 1000,
            nanos: 0,
        };
        let mut c = FilesCache::load(path.clone(), Mode::CtimeSizeInode, 2, start);
        c.remember(FilesCache::key("s", b"x"), &file(1, 1), 1);
        c.save().unwrap();
        for expected in [1, 1, 0] {
            let c = FilesCache::load(path.clone(), Mode::CtimeSizeInode, 2, start);
            c.save().unwrap();
            let c = FilesCache::load(path.clone(), Mode::CtimeSizeInode, 2, start);
            assert_eq!(c.len(), expected);
            drop(c);
        }
    }

    #[test]
    fn a_damaged_cache_is_ignored() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("f");
        let start = Timestamp {
            secs: 1000,
            nanos: 0,
        };
        let mut c = FilesCache::load(path.clone(), Mode::CtimeSizeInode, 20, start);
        c.remember(FilesCache::key("s", b"x"), &file(1, 1), 1);
        c.save().unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len() / 2;
        bytes[n] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(FilesCache::load(path, Mode::CtimeSizeInode, 20, start).is_empty());
    }
}
