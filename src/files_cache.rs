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
//!
//! Decoding limits: records of at most `MAX_RECORD` bytes, read before they are allocated;
//! at most `u32::MAX` chunks in all; every failure is a `CacheError` and the cache is ignored.

use crate::item::{ChunkRef, Extent, Item, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"PXFC";
/// 3: records carry the sparse map of files with holes (2 did not cache such files).
const VERSION: u8 = 3;

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

/// One remembered file; its chunk list lives in the table's arena (`start..start+count`).
/// Kept in flat vectors rather than a hash map: at a million files the map's per-entry
/// overhead was most of a backup's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Meta {
    key: Key,
    ino: u64,
    size: u64,
    /// Nanoseconds since the epoch (64 bytes per entry instead of 80); files with times
    /// outside i64's ±292 years are simply not cached.
    mtime: i64,
    ctime: i64,
    /// Runs since this entry was last seen.
    age: u32,
    start: u32,
    count: u32,
}

#[derive(Default)]
struct Table {
    metas: Vec<Meta>,
    chunks: Vec<ChunkRef>,
    /// Sparse maps of the few files with holes, by key (a field in every `Meta` would cost
    /// the million ordinary files of a large tree more than the maps do).
    sparse: HashMap<Key, Vec<Extent>>,
}

impl Table {
    fn chunks_of(&self, m: &Meta) -> &[ChunkRef] {
        let start = m.start as usize;
        start
            .checked_add(m.count as usize)
            .and_then(|end| self.chunks.get(start..end))
            .unwrap_or(&[])
    }

    fn sparse_of(&self, m: &Meta) -> Option<&[Extent]> {
        self.sparse.get(&m.key).map(Vec::as_slice)
    }

    fn push(&mut self, mut m: Meta, chunks: &[ChunkRef], sparse: Option<&[Extent]>) {
        if let Some(map) = sparse {
            self.sparse.insert(m.key, map.to_vec());
        }
        // The arena is indexed in u32: a table that would outgrow it stops remembering (the
        // decoder refuses such a file; a run remembering 4 G chunks has other problems).
        let (Ok(start), Ok(count)) = (
            u32::try_from(self.chunks.len()),
            u32::try_from(chunks.len()),
        ) else {
            return;
        };
        if start.checked_add(count).is_none() {
            return;
        }
        m.start = start;
        m.count = count;
        self.chunks.extend_from_slice(chunks);
        self.metas.push(m);
    }
}

/// The on-disk record of one file (length-prefixed postcard, like the item stream).
#[derive(Serialize)]
struct RecordOut<'a> {
    key: Key,
    ino: u64,
    size: u64,
    mtime: i64,
    ctime: i64,
    age: u32,
    chunks: &'a [ChunkRef],
    sparse: Option<&'a [Extent]>,
}

#[derive(Deserialize)]
struct RecordIn {
    key: Key,
    ino: u64,
    size: u64,
    mtime: i64,
    ctime: i64,
    age: u32,
    chunks: Vec<ChunkRef>,
    sparse: Option<Vec<Extent>>,
}

pub type Key = [u8; 16];

pub struct FilesCache {
    path: Option<PathBuf>,
    mode: Mode,
    ttl: u32,
    /// Loaded from disk, sorted by key.
    old: Table,
    /// Remembered during this run.
    fresh: Table,
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
            old: Table::default(),
            fresh: Table::default(),
            fresh_after: Timestamp::default(),
        }
    }

    /// Loads the cache at `path` (missing or damaged: empty). `start` is the backup's start
    /// time (for snapshot sources, the snapshot's).
    pub fn load(path: PathBuf, mode: Mode, ttl: u32, start: Timestamp) -> Self {
        if mode == Mode::Off {
            return FilesCache::disabled();
        }
        let mut old = read_table(&path).unwrap_or_default();
        for m in &mut old.metas {
            m.age = m.age.saturating_add(1);
        }
        FilesCache {
            path: Some(path),
            mode,
            ttl,
            old,
            fresh: Table::default(),
            // One second of margin covers every filesystem's mtime granularity here.
            fresh_after: Timestamp {
                secs: start.secs - 1,
                nanos: start.nanos,
            },
        }
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

    /// The stored chunks of an unchanged file, if the cache knows it. A file with holes hits
    /// only if its map (as the walk just read it) is the one remembered.
    pub fn lookup(&mut self, key: &Key, item: &Item, ino: u64) -> Option<Hit> {
        self.lookup_as(key, item, ino, true)
    }

    /// [`Self::lookup`] for a disk image: its entry's sparse map is one extent per run of
    /// stored 4 MiB chunks, not the file's `SEEK_DATA` map, so the two are not compared;
    /// size, times and inode decide, as they do for any file's content.
    pub fn lookup_image(&mut self, key: &Key, item: &Item, ino: u64) -> Option<Hit> {
        self.lookup_as(key, item, ino, false)
    }

    fn lookup_as(&mut self, key: &Key, item: &Item, ino: u64, same_holes: bool) -> Option<Hit> {
        let mode = self.mode;
        let i = self.old.metas.binary_search_by(|m| m.key.cmp(key)).ok()?;
        let e = &mut self.old.metas[i];
        let same = e.size == item.size
            && match mode {
                Mode::Off => false,
                Mode::CtimeSizeInode => Some(e.ctime) == ns(item.ctime) && e.ino == ino,
                Mode::MtimeSize => Some(e.mtime) == ns(item.mtime),
            };
        if !same {
            return None;
        }
        let e = *e;
        let sparse = self.old.sparse_of(&e);
        if same_holes && sparse != item.sparse.as_deref() {
            return None;
        }
        let hit = Hit {
            chunks: self.old.chunks_of(&e).to_vec(),
            sparse: sparse.map(<[Extent]>::to_vec),
        };
        self.old.metas[i].age = 0;
        Some(hit)
    }

    /// Remembers a file just stored (with its chunks filled in).
    pub fn remember(&mut self, key: Key, item: &Item, ino: u64) {
        let too_fresh = item.mtime >= self.fresh_after || item.ctime >= self.fresh_after;
        if self.mode == Mode::Off || too_fresh {
            // Whatever the cache knew about this path is out of date now.
            if let Ok(i) = self.old.metas.binary_search_by(|m| m.key.cmp(&key)) {
                self.old.metas[i].age = u32::MAX;
            }
            return;
        }
        let (Some(mtime), Some(ctime)) = (ns(item.mtime), ns(item.ctime)) else {
            return;
        };
        let meta = Meta {
            key,
            ino,
            size: item.size,
            mtime,
            ctime,
            age: 0,
            start: 0,
            count: 0,
        };
        self.fresh.push(meta, &item.chunks, item.sparse.as_deref());
    }

    pub fn len(&self) -> usize {
        self.old.metas.len() + self.fresh.metas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops entries older than the TTL and writes the cache atomically, merging this run's
    /// entries (which win) into the loaded ones as a stream. Call only after the archive was
    /// written: a failed backup keeps the previous cache.
    pub fn save(mut self) -> std::io::Result<()> {
        let Some(path) = self.path.take() else {
            return Ok(());
        };
        let ttl = self.ttl;
        let mut order: Vec<u32> = (0..self.fresh.metas.len() as u32).collect();
        order.sort_by_key(|&i| self.fresh.metas[i as usize].key);
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
        self.write_merged(tmp.as_file(), &order, ttl)?;
        // No fsync: after a crash the file is the old cache, the new one, or one that fails
        // its checksum and is ignored; each hit is still checked against the index. Any of
        // them is a correct backup, and the fsync cost 15 to 30 ms of every backup.
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    }

    fn write_merged(&self, file: &std::fs::File, order: &[u32], ttl: u32) -> std::io::Result<()> {
        let mut out = HashingWriter::new(std::io::BufWriter::new(file));
        out.write_all(MAGIC)?;
        out.write_all(&[VERSION])?;
        let (old, fresh) = (&self.old, &self.fresh);
        let mut oi = old.metas.iter().peekable();
        let mut fi = order.iter().map(|&i| &fresh.metas[i as usize]).peekable();
        let mut buf = Vec::new();
        loop {
            let take_fresh = match (oi.peek(), fi.peek()) {
                (None, None) => break,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some(o), Some(f)) => f.key <= o.key,
            };
            let (m, table) = if take_fresh {
                let f = fi.next().expect("peeked");
                if oi.peek().is_some_and(|o| o.key == f.key) {
                    oi.next(); // replaced by this run's entry
                }
                (f, fresh)
            } else {
                (oi.next().expect("peeked"), old)
            };
            if m.age > ttl {
                continue;
            }
            let rec = RecordOut {
                key: m.key,
                ino: m.ino,
                size: m.size,
                mtime: m.mtime,
                ctime: m.ctime,
                age: m.age,
                chunks: table.chunks_of(m),
                sparse: table.sparse_of(m),
            };
            buf.clear();
            let body = postcard::to_allocvec(&rec).map_err(std::io::Error::other)?;
            crate::varint::encode(body.len() as u64, &mut buf);
            buf.extend_from_slice(&body);
            out.write_all(&buf)?;
        }
        out.write_all(&[0])?; // end of records
        let sum = out.hasher.finalize();
        let mut inner = out.inner;
        inner.write_all(sum.as_bytes())?;
        inner.flush()
    }
}

struct HashingWriter<W> {
    inner: W,
    hasher: blake3::Hasher,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: blake3::Hasher::new(),
        }
    }
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.hasher.update(b);
        self.inner.write_all(b)
    }
}

fn ns(t: Timestamp) -> Option<i64> {
    t.secs
        .checked_mul(1_000_000_000)
        .and_then(|s| s.checked_add(t.nanos as i64))
}

/// Why a cache file was not used (it is then ignored: the cache is only an accelerator).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("files cache: {0}")]
    Io(#[from] std::io::Error),
    #[error("files cache: not a version {VERSION} cache")]
    Header,
    #[error("files cache: record of {0} bytes is over the limit")]
    TooLarge(u64),
    #[error("files cache: more than {} chunks", u32::MAX)]
    TooManyChunks,
    #[error("files cache: undecodable record: {0}")]
    Decode(#[from] postcard::Error),
    #[error("files cache: records out of order")]
    Unsorted,
    #[error("files cache: bad varint")]
    Varint,
    #[error("files cache: checksum mismatch")]
    Checksum,
}

/// Largest record read (a 16 GiB file's chunk list is a few MiB).
pub const MAX_RECORD: u64 = 64 << 20;

fn read_table(path: &Path) -> Option<Table> {
    let file = std::fs::File::open(path).ok()?;
    decode_table(std::io::BufReader::new(file)).ok()
}

/// Decodes a cache file and returns how many entries it holds; the entry point for fuzzing.
pub fn decode(bytes: &[u8]) -> Result<usize, CacheError> {
    decode_table(bytes).map(|t| t.metas.len())
}

/// Reads a cache file record by record. Limits: a record's length is checked against
/// `MAX_RECORD` and its bytes are read before the buffer grows to hold them, so a short file
/// never makes us allocate what it claims; the chunk arena stays within `u32` indices.
fn decode_table(mut r: impl Read) -> Result<Table, CacheError> {
    let mut hasher = blake3::Hasher::new();
    let mut head = [0u8; 5];
    r.read_exact(&mut head)?;
    if &head[..4] != MAGIC || head[4] != VERSION {
        return Err(CacheError::Header);
    }
    hasher.update(&head);
    let mut table = Table::default();
    let mut buf = Vec::new();
    let mut last: Option<Key> = None;
    loop {
        let len = read_varint(&mut r, &mut hasher)?;
        if len == 0 {
            break;
        }
        if len > MAX_RECORD {
            return Err(CacheError::TooLarge(len));
        }
        buf.clear();
        let got = (&mut r).take(len).read_to_end(&mut buf)?;
        if got as u64 != len {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        hasher.update(&buf);
        let rec: RecordIn = postcard::from_bytes(&buf)?;
        if last.is_some_and(|k| k >= rec.key) {
            return Err(CacheError::Unsorted); // not sorted: not ours
        }
        last = Some(rec.key);
        let meta = Meta {
            key: rec.key,
            ino: rec.ino,
            size: rec.size,
            mtime: rec.mtime,
            ctime: rec.ctime,
            age: rec.age,
            start: 0,
            count: 0,
        };
        if table.chunks.len().saturating_add(rec.chunks.len()) > u32::MAX as usize {
            return Err(CacheError::TooManyChunks);
        }
        table.push(meta, &rec.chunks, rec.sparse.as_deref());
    }
    let mut sum = [0u8; 32];
    r.read_exact(&mut sum)?;
    if hasher.finalize().as_bytes() != &sum {
        return Err(CacheError::Checksum);
    }
    Ok(table)
}

fn read_varint(r: &mut impl Read, hasher: &mut blake3::Hasher) -> Result<u64, CacheError> {
    use crate::varint::{Decoder, Step};
    let mut d = Decoder::default();
    loop {
        let mut b = [0u8; 1];
        r.read_exact(&mut b)?;
        hasher.update(&b);
        match d.push(b[0]) {
            Step::Done(v) => return Ok(v),
            Step::TooLong => return Err(CacheError::Varint),
            Step::More => {}
        }
    }
}

/// The client cache directory for a repository: `PROXBORG_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/proxborg`, else `/var/cache/proxborg` for root and `~/.cache/proxborg`.
/// The id is a `RepoId`, so it is hex and can only name a directory inside the base.
pub fn cache_dir(repo_id: &crate::repo::RepoId) -> PathBuf {
    cache_base().join(repo_id.as_str())
}

/// The client cache's base directory (see `cache_dir`).
pub fn cache_base() -> PathBuf {
    if let Some(d) = std::env::var_os("PROXBORG_CACHE_DIR") {
        PathBuf::from(d)
    } else if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        PathBuf::from(d).join("proxborg")
    } else if rustix::process::geteuid().is_root() {
        PathBuf::from("/var/cache/proxborg")
    } else {
        let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
        PathBuf::from(home).join(".cache/proxborg")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::Kind;
    use crate::repo::ChunkId;

    /// The backup start of every test run: files with mtimes up to 998 are cacheable.
    const START: Timestamp = Timestamp {
        secs: 1000,
        nanos: 0,
    };

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
        let start = START;
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
    fn files_with_holes_hit_with_their_map_and_miss_with_another() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("files");
        let start = START;
        let map = |offset| Some(vec![Extent { offset, len: 10 }]);
        let mut sparse = file(500, 1 << 20);
        sparse.sparse = map(4096);
        let (k, plain) = (
            FilesCache::key("src", b"a/b"),
            FilesCache::key("src", b"a/c"),
        );
        let mut c = FilesCache::load(path.clone(), Mode::CtimeSizeInode, 20, start);
        c.remember(k, &sparse, 42);
        c.remember(plain, &file(500, 10), 43);
        c.save().unwrap();
        let mut c = FilesCache::load(path, Mode::CtimeSizeInode, 20, start);
        let hit = c
            .lookup(&k, &sparse, 42)
            .expect("unchanged sparse file hits");
        assert_eq!((hit.sparse, hit.chunks), (map(4096), sparse.chunks.clone()));
        let mut moved = sparse.clone();
        moved.sparse = map(8192);
        assert!(c.lookup(&k, &moved, 42).is_none(), "another map hit");
        let mut dense = sparse.clone();
        dense.sparse = None;
        assert!(c.lookup(&k, &dense, 42).is_none(), "a filled file hit");
        let hit = c
            .lookup(&plain, &file(500, 10), 43)
            .expect("plain file hits");
        assert_eq!(hit.sparse, None);
    }

    #[test]
    fn too_fresh_files_are_not_remembered() {
        let d = tempfile::tempdir().unwrap();
        let start = START;
        let mut c = FilesCache::load(d.path().join("f"), Mode::CtimeSizeInode, 20, start);
        c.remember(FilesCache::key("s", b"x"), &file(999, 1), 1);
        c.remember(FilesCache::key("s", b"y"), &file(998, 1), 1);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn entries_expire_after_ttl_runs_unseen() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("f");
        let start = START;
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
    fn a_short_file_claiming_a_huge_record_allocates_nothing_large() {
        let mut bytes = MAGIC.to_vec();
        bytes.push(VERSION);
        let mut len = Vec::new();
        crate::varint::encode(MAX_RECORD, &mut len);
        bytes.extend_from_slice(&len);
        bytes.extend_from_slice(&[1, 2, 3]);
        assert!(matches!(decode(&bytes), Err(CacheError::Io(_))));
        crate::varint::encode(MAX_RECORD + 1, &mut bytes);
        assert!(decode(&bytes).is_err());
        assert!(matches!(decode(b"PXFC\x09"), Err(CacheError::Header)));
        let mut t = Table::default();
        let m = Meta {
            key: [0; 16],
            ino: 0,
            size: 0,
            mtime: 0,
            ctime: 0,
            age: 0,
            start: u32::MAX,
            count: 2,
        };
        assert!(t.chunks_of(&m).is_empty(), "u32 start + count overflowed");
        t.push(m, &[], None);
        assert_eq!(t.metas.len(), 1);
    }

    #[test]
    fn a_damaged_cache_is_ignored() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("f");
        let start = START;
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
