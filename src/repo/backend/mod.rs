//! Storage backends: a dumb keyed store of immutable objects. Keys are `/`-separated relative
//! names (`config`, `data/ab/<id>`, `index/<id>`, `archives/<id>`, `locks/<id>`).
//!
//! The trait has no rename, append, atime or lock semantics so that object stores fit later.
//! `put` is atomic (readers see the whole object or nothing) and never overwrites an existing
//! key: content-addressed names make a second put of the same key a no-op for the caller.

#[doc(hidden)]
pub mod conformance;
pub mod local;
pub mod meta_cache;
pub mod pipeline;
pub mod s3;
pub mod throttle;
pub mod traffic;

use super::error::{RepoError, Result};

pub trait Backend: Send + Sync {
    /// Stores `data` under `key` atomically and durably. Returns `Ok(false)` without writing if
    /// the key already exists.
    fn put(&self, key: &str, data: &[u8]) -> Result<bool>;
    /// Like `put`, but may return before the object is stored (a remote backend sends it and
    /// goes on); its outcome is reported by the next `settle`. Callers settle before writing
    /// anything that names the object (packs before their index file).
    fn put_pipelined(&self, key: &str, data: &[u8]) -> Result<()> {
        self.put(key, data).map(|_| ())
    }
    /// Waits until every `put_pipelined` so far is stored; the first error of any.
    fn settle(&self) -> Result<()> {
        Ok(())
    }
    /// Stores `data` under `key`, replacing an existing object (only for mutable names such as
    /// `config` and lock objects, never for content-addressed ones).
    fn replace(&self, key: &str, data: &[u8]) -> Result<()>;
    fn get(&self, key: &str) -> Result<Vec<u8>>;
    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>>;
    /// Size in bytes of an object.
    fn size(&self, key: &str) -> Result<u64>;
    /// Keys of every object under `prefix` (a directory like `index`), recursively, sorted.
    fn list(&self, prefix: &str) -> Result<Vec<String>>;
    fn delete(&self, key: &str) -> Result<()>;
    /// Deletes `key` if it is there, and is content when it is not (a lock's release). S3
    /// answers a DELETE with 204 either way, so its `delete` makes a HEAD first to report
    /// NotFound; this skips that round trip.
    fn discard(&self, key: &str) -> Result<()> {
        match self.delete(key) {
            Err(RepoError::NotFound(_)) => Ok(()),
            other => other,
        }
    }
    fn exists(&self, key: &str) -> Result<bool>;
    /// A human-readable location for messages.
    fn location(&self) -> String;
    /// The location in one canonical spelling (a local path with symlinks resolved), under
    /// which the client's security record remembers which repository lives there.
    fn canonical_location(&self) -> String {
        self.location()
    }
    /// Whether the storage side refuses deletes whatever the repository's config says
    /// (`proxborg serve --append-only`).
    fn append_only(&self) -> bool {
        false
    }
}

/// The largest object a key of its kind can rightly be. A storage side that hands back more is
/// refused before the bytes are held, so a hostile server or disk cannot make one read take
/// gigabytes of memory. Packs hold blobs up to about their target size plus one largest blob
/// and their header; index and archive files grow with the repository and get more room.
pub fn largest_object(key: &str) -> u64 {
    use super::crypto::MAX_BLOB;
    use super::pack::{MAX_HEADER, TARGET_SIZE};
    match key.split('/').next().unwrap_or("") {
        "config" | "keys" | "locks" => 4 << 20,
        "data" => (TARGET_SIZE + MAX_BLOB + MAX_HEADER) as u64 + (1 << 20),
        "archives" => 256 << 20,
        _ => 1 << 30,
    }
}

/// The most a page of a listing may be (an S3 ListObjectsV2 answer holds up to 1000 keys).
pub const LARGEST_LIST_PAGE: u64 = 16 << 20;

/// Refuses a key that is empty or has an empty, `.` or `..` component (so it cannot name
/// anything outside the repository on any backend). Every backend checks keys with this.
pub fn check_key(key: &str) -> Result<()> {
    if key.is_empty()
        || key
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(RepoError::Invalid(format!("invalid object key {key:?}")));
    }
    Ok(())
}
