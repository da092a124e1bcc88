//! `proxborg mount`: archives as a read-only FUSE filesystem. One archive at the mount point,
//! or the whole repository with one directory per archive, whose tree is built on first use.
//!
//! - `tree`: pure; an archive's item stream as an inode table and each file's offset map.
//! - `fs`: the `fuser::Filesystem` over those tables; every content blob is read through the
//!   repository's verifying read, decoded chunks are kept in a small LRU (`ChunkCache`).
//!
//! Inode numbers: with one archive, node `n` of its tree is inode `n + 1` (the root is 1, as
//! FUSE wants). With the whole repository, inode 1 is the list of archives and node `n` of the
//! `k`-th archive (from 0) is `((k + 1) << 32) + n`; a tree has fewer than 2^32 nodes.
//! Owners, modes and times are shown as stored (container ids stay container ids).
//! In a whole-repository mount an archive's directory shows 0755 root and the archive's
//! start time until its tree is read (so `ls -l` of the list reads no item stream), then its
//! root entry's metadata. The list of archives is the one at mount time.
//! Never writes: every modifying operation fails with EROFS, and the mount itself is `ro`.

pub mod fs;
pub mod tree;

use crate::id::ChunkId;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};

/// Decoded chunks kept for reads: sequential reads of a file come in 128 KiB to 1 MiB
/// requests, a chunk is up to 4 MiB, so each chunk is decoded (and verified) once.
pub const CACHE_CHUNKS: usize = 32;

type Loaded = Result<Arc<Vec<u8>>, String>;

/// A chunk being decoded: later askers wait for it instead of decoding it again.
#[derive(Default)]
struct Slot {
    done: Mutex<Option<Loaded>>,
    ready: Condvar,
}

#[derive(Default)]
struct CacheState {
    /// Most recently used first.
    entries: VecDeque<(ChunkId, Arc<Vec<u8>>)>,
    loading: HashMap<ChunkId, Arc<Slot>>,
}

/// A small least-recently-used map of chunk id to plaintext, shared by the request threads
/// and the read-ahead workers; a chunk is decoded by one thread at a time.
pub struct ChunkCache {
    state: Mutex<CacheState>,
    capacity: usize,
}

impl ChunkCache {
    pub fn new(capacity: usize) -> Self {
        ChunkCache {
            state: Mutex::default(),
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, id: &ChunkId) -> Option<Arc<Vec<u8>>> {
        let mut st = self.lock();
        let i = st.entries.iter().position(|(k, _)| k == id)?;
        let hit = st.entries.remove(i)?;
        let data = hit.1.clone();
        st.entries.push_front(hit);
        Some(data)
    }

    /// Whether the chunk is cached or being decoded.
    pub fn has(&self, id: &ChunkId) -> bool {
        let st = self.lock();
        st.loading.contains_key(id) || st.entries.iter().any(|(k, _)| k == id)
    }

    /// The cached chunk, or the one another thread is decoding, or `load`'s result.
    pub fn get_or_load(
        &self,
        id: ChunkId,
        load: impl FnOnce() -> Result<Vec<u8>, String>,
    ) -> Loaded {
        if let Some(d) = self.get(&id) {
            return Ok(d);
        }
        let slot = {
            let mut st = self.lock();
            if let Some(s) = st.loading.get(&id).cloned() {
                drop(st);
                let mut done = s.done.lock().unwrap_or_else(|p| p.into_inner());
                while done.is_none() {
                    done = s.ready.wait(done).unwrap_or_else(|p| p.into_inner());
                }
                return done.clone().unwrap_or_else(|| Err("lost".into()));
            }
            let s = Arc::new(Slot::default());
            st.loading.insert(id, s.clone());
            s
        };
        let r: Loaded = load().map(Arc::new);
        {
            let mut st = self.lock();
            st.loading.remove(&id);
            if let Ok(d) = &r {
                st.entries.push_front((id, d.clone()));
                let cap = self.capacity;
                st.entries.truncate(cap);
            }
        }
        *slot.done.lock().unwrap_or_else(|p| p.into_inner()) = Some(r.clone());
        slot.ready.notify_all();
        r
    }
}

/// Whether `/proc/self/mountinfo` text shows a proxborg FUSE mount at `mountpoint` (as given,
/// already canonical): fstype `fuse` (or `fuse.proxborg` where the subtype is passed on) and
/// source `proxborg`.
pub fn is_proxborg_mount(mountinfo: &str, mountpoint: &str) -> bool {
    mountinfo.lines().any(|line| {
        // id parent major:minor root mountpoint options [optional fields] - fstype source ...
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            return false;
        };
        fields.get(4).map(|m| unescape_mountinfo(m)).as_deref() == Some(mountpoint)
            && matches!(fields.get(sep + 1), Some(&"fuse" | &"fuse.proxborg"))
            && fields.get(sep + 2) == Some(&"proxborg")
    })
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal escapes.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keeps_the_most_recently_used() {
        let c = ChunkCache::new(2);
        let id = |n: u8| ChunkId::of(&[n]);
        let put = |n: u8| c.get_or_load(id(n), || Ok(vec![n])).unwrap();
        put(1);
        put(2);
        assert_eq!(*c.get(&id(1)).unwrap(), [1]);
        put(3);
        assert!(c.get(&id(2)).is_none(), "least recently used goes first");
        assert!(c.has(&id(1)) && c.has(&id(3)) && !c.has(&id(2)));
        assert!(c.get_or_load(id(4), || Err("bad".into())).is_err());
        assert!(!c.has(&id(4)), "failures are not kept");
    }

    #[test]
    fn a_chunk_is_decoded_once_while_others_wait() {
        let c = Arc::new(ChunkCache::new(4));
        let loads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (c, loads) = (c.clone(), loads.clone());
                std::thread::spawn(move || {
                    c.get_or_load(ChunkId::of(b"x"), || {
                        loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(100));
                        Ok(vec![7])
                    })
                    .unwrap()
                })
            })
            .collect();
        for t in threads {
            assert_eq!(*t.join().unwrap(), [7]);
        }
        assert_eq!(loads.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn finds_proxborg_mounts_in_mountinfo() {
        let info = "\
36 35 98:0 / /mnt1 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
80 25 0:61 / /tmp/a\\040b rw,nosuid,nodev,relatime shared:40 - fuse.proxborg proxborg ro,user_id=0
81 25 0:62 / /srv/other rw,relatime - fuse.sshfs host: rw
82 25 0:63 / /srv/plain ro,nosuid,nodev,relatime - fuse proxborg ro,user_id=0
83 25 0:64 / /srv/foreign ro,relatime - fuse other ro,user_id=0
";
        assert!(is_proxborg_mount(info, "/tmp/a b"));
        assert!(!is_proxborg_mount(info, "/srv/other"));
        assert!(is_proxborg_mount(info, "/srv/plain"));
        assert!(!is_proxborg_mount(info, "/srv/foreign"));
        assert!(!is_proxborg_mount(info, "/mnt1"));
        assert!(!is_proxborg_mount(info, "/tmp/a"));
        assert!(!is_proxborg_mount("garbage\n\n- -", "/x"));
        assert_eq!(unescape_mountinfo("a\\134b\\"), "a\\b\\");
    }
}
