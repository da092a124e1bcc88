//! A local copy of a remote repository's index files and archive files, so `list`, `info`
//! and a backup fetch only the ones that are new since the last run.
//!
//! Both are immutable and named by the BLAKE3 hash of their stored bytes (`index/<hash>`,
//! `archives/<hash>`), which makes the copy safe without any invalidation: a cached file is
//! used only when its bytes still hash to its name (a damaged or altered copy is fetched
//! again), and what the remote says is only cached when it hashes to the name asked for (the
//! repository code reports the damage). A listing of `index` or `archives` drops copies the
//! repository no longer has. The cache is best effort: its I/O errors fall back to the remote.
//! Everything read through it is still authenticated by the repository code above it.

use super::Backend;
use crate::repo::error::Result;
use std::path::PathBuf;
use std::sync::Arc;

const CACHED_DIRS: [&str; 2] = ["index", "archives"];

pub struct MetaCache {
    inner: Arc<dyn Backend>,
    dir: PathBuf,
}

/// The hash a cacheable key names, if the key is one.
fn named_hash(key: &str) -> Option<&str> {
    let (dir, name) = key.split_once('/')?;
    (CACHED_DIRS.contains(&dir)
        && name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(name)
}

fn hashes_to(bytes: &[u8], hex: &str) -> bool {
    blake3::hash(bytes).to_hex().as_str() == hex
}

impl MetaCache {
    /// Caches under `dir` (one directory per repository location).
    pub fn new(inner: Arc<dyn Backend>, dir: PathBuf) -> Self {
        MetaCache { inner, dir }
    }

    fn store(&self, key: &str, bytes: &[u8]) {
        let path = self.dir.join(key);
        let Some(parent) = path.parent() else { return };
        let written = std::fs::create_dir_all(parent)
            .and_then(|_| tempfile::NamedTempFile::new_in(parent))
            .and_then(|mut tmp| {
                std::io::Write::write_all(&mut tmp, bytes)?;
                tmp.persist(&path).map(|_| ()).map_err(|e| e.error)
            });
        if written.is_err() {
            let _ = std::fs::remove_file(&path);
        }
    }
}

impl Backend for MetaCache {
    fn put(&self, key: &str, data: &[u8]) -> Result<bool> {
        let stored = self.inner.put(key, data)?;
        if named_hash(key).is_some_and(|h| hashes_to(data, h)) {
            self.store(key, data);
        }
        Ok(stored)
    }

    fn put_pipelined(&self, key: &str, data: &[u8]) -> Result<()> {
        self.inner.put_pipelined(key, data)
    }

    fn settle(&self) -> Result<()> {
        self.inner.settle()
    }

    fn replace(&self, key: &str, data: &[u8]) -> Result<()> {
        self.inner.replace(key, data)
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        let Some(hash) = named_hash(key) else {
            return self.inner.get(key);
        };
        let path = self.dir.join(key);
        if let Ok(bytes) = std::fs::read(&path) {
            if hashes_to(&bytes, hash) {
                return Ok(bytes);
            }
            let _ = std::fs::remove_file(&path);
        }
        let bytes = self.inner.get(key)?;
        if hashes_to(&bytes, hash) {
            self.store(key, &bytes);
        }
        Ok(bytes)
    }

    fn get_range(&self, key: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.inner.get_range(key, offset, len)
    }

    fn size(&self, key: &str) -> Result<u64> {
        self.inner.size(key)
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let keys = self.inner.list(prefix)?;
        if CACHED_DIRS.contains(&prefix) {
            let live: std::collections::HashSet<&str> = keys.iter().map(String::as_str).collect();
            if let Ok(entries) = std::fs::read_dir(self.dir.join(prefix)) {
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    let key = format!("{prefix}/{}", name.to_string_lossy());
                    if !live.contains(key.as_str()) {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
            }
        }
        Ok(keys)
    }

    fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key)?;
        if named_hash(key).is_some() {
            let _ = std::fs::remove_file(self.dir.join(key));
        }
        Ok(())
    }

    fn discard(&self, key: &str) -> Result<()> {
        self.inner.discard(key)?;
        if named_hash(key).is_some() {
            let _ = std::fs::remove_file(self.dir.join(key));
        }
        Ok(())
    }

    fn exists(&self, key: &str) -> Result<bool> {
        self.inner.exists(key)
    }

    fn location(&self) -> String {
        self.inner.location()
    }

    fn canonical_location(&self) -> String {
        self.inner.canonical_location()
    }

    fn append_only(&self) -> bool {
        self.inner.append_only()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::backend::local::LocalDir;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A local directory that counts its gets, standing in for a remote.
    struct Counting(LocalDir, AtomicUsize);

    impl Backend for Counting {
        fn put(&self, k: &str, d: &[u8]) -> Result<bool> {
            self.0.put(k, d)
        }
        fn replace(&self, k: &str, d: &[u8]) -> Result<()> {
            self.0.replace(k, d)
        }
        fn get(&self, k: &str) -> Result<Vec<u8>> {
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0.get(k)
        }
        fn get_range(&self, k: &str, o: u64, l: usize) -> Result<Vec<u8>> {
            self.0.get_range(k, o, l)
        }
        fn size(&self, k: &str) -> Result<u64> {
            self.0.size(k)
        }
        fn list(&self, p: &str) -> Result<Vec<String>> {
            self.0.list(p)
        }
        fn delete(&self, k: &str) -> Result<()> {
            self.0.delete(k)
        }
        fn exists(&self, k: &str) -> Result<bool> {
            self.0.exists(k)
        }
        fn location(&self) -> String {
            self.0.location()
        }
    }

    fn key_of(dir: &str, bytes: &[u8]) -> String {
        format!("{dir}/{}", blake3::hash(bytes).to_hex())
    }

    #[test]
    fn fetches_each_immutable_object_once_and_heals_a_bad_copy() {
        let remote_dir = tempfile::tempdir().unwrap();
        let cache_dir = tempfile::tempdir().unwrap();
        let remote = Arc::new(Counting(
            LocalDir::new(remote_dir.path()),
            AtomicUsize::new(0),
        ));
        let cache = MetaCache::new(remote.clone(), cache_dir.path().to_path_buf());
        let index = key_of("index", b"an index file");
        remote.put(&index, b"an index file").unwrap();
        remote.put("config", b"mutable").unwrap();
        for _ in 0..3 {
            assert_eq!(cache.get(&index).unwrap(), b"an index file");
            assert_eq!(cache.get("config").unwrap(), b"mutable");
        }
        assert_eq!(
            remote.1.load(Ordering::SeqCst),
            4,
            "index once, config each time"
        );
        // An altered copy is never returned: fetched again.
        std::fs::write(cache_dir.path().join(&index), b"tampered").unwrap();
        assert_eq!(cache.get(&index).unwrap(), b"an index file");
        assert_eq!(remote.1.load(Ordering::SeqCst), 5);
        // What the remote returns under a wrong name is passed on, not cached.
        let wrong = key_of("archives", b"expected");
        remote.put(&wrong, b"something else").unwrap();
        assert_eq!(cache.get(&wrong).unwrap(), b"something else");
        assert!(!cache_dir.path().join(&wrong).exists());
        // Our own puts are cached; a listing drops what the repository no longer has.
        let archive = key_of("archives", b"archive");
        cache.put(&archive, b"archive").unwrap();
        assert!(cache_dir.path().join(&archive).exists());
        remote.delete(&index).unwrap();
        cache.list("index").unwrap();
        assert!(!cache_dir.path().join(&index).exists());
        assert!(cache_dir.path().join(&archive).exists());
    }
}
