//! Feeding a directory walk into an archive: the glue between `tree::walk`, the files cache
//! and `ingest`. A file that cannot be read, vanished or changed while being read is a
//! warning (to the [`Observer`], counted in the archive's stats) and the walk goes on; only
//! repository failures and interruption stop the backup.
//!
//! Files are read, cut and hashed on reader threads (`ingest::readers`) while the walk goes
//! on; every entry is then added in walk order, so the archive is the same as one thread
//! would make it. Messages are queued with the entries so they also keep the walk's order.

use super::readers::{OrderedReads, Pending, Source};
use super::{ArchiveBuilder, IngestError, Observer};
use crate::files_cache::{FilesCache, Key};
use crate::host::interrupt::Interruptible;
use crate::item::display_path;
use crate::item::pattern::Pattern;
use crate::item::{Item, Kind};
use crate::pve::idmap::{translate_attrs, translate_item, IdMap};
use crate::tree::content::{self, FileContent};
use crate::tree::walk::{walk, Entry, WalkError, WalkEvent, WalkOptions};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error(transparent)]
    Walk(#[from] WalkError),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error("interrupted")]
    Interrupted,
}

type Result<T, E = TreeError> = std::result::Result<T, E>;

/// Entries queued ahead of the archive writer, and the bytes of their contents (a file
/// longer than 4 chunks counts as 4: it streams). Bounds memory whatever the tree.
const MAX_QUEUED: usize = 256;
const MAX_QUEUED_BYTES: u64 = 64 << 20;
/// Walk events go to the main thread in batches (one hand-off per entry cost more CPU in
/// thread wake-ups than the walk itself saved), at most `WALK_AHEAD` batches ahead.
const WALK_BATCH: usize = 64;
const WALK_AHEAD: usize = 16;

/// One source tree being ingested: where it is, what identifies it across runs.
pub struct TreeSource<'a> {
    pub root: &'a Path,
    /// Stable identity for the files cache (canonical path, or a ZFS dataset GUID).
    pub source_id: String,
    /// Where this tree goes inside the archive (empty: the root).
    pub prefix: Vec<u8>,
    pub excludes: &'a [String],
    pub one_file_system: bool,
    /// Host → container id translation (owners, ACL qualifiers, file capabilities).
    pub idmap: Option<&'a IdMap>,
    /// Set when `root` is an id-mapping overlay (fuse-overlayfs) over this snapshot: the
    /// overlay already shows container-side owners, so only ACL qualifiers and capabilities
    /// are translated, and holes come from the snapshot (`WalkOptions::lower`).
    pub lower: Option<&'a Path>,
}

/// A walked entry waiting for its turn.
enum Queued {
    Warning(String),
    /// Added as it is (directories, symlinks, devices, ...).
    Plain(Item),
    /// A regular file the files cache knows: its chunks, nothing read.
    Known {
        item: Item,
        linked: bool,
    },
    /// A regular file being read in the background.
    Read {
        item: Item,
        key: Key,
        ino: u64,
        linked: bool,
    },
    /// A further name of a hard link group: whether its target was stored is known only in
    /// its turn.
    Hardlink {
        item: Item,
        fs_path: PathBuf,
        ino: u64,
    },
}

/// A file's content as a reader thread reads it.
struct TreeFile(Interruptible<FileContent>);

impl std::io::Read for TreeFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Source for TreeFile {
    fn changed(&self) -> bool {
        self.0 .0.changed()
    }
}

pub fn ingest_dir(
    builder: &mut ArchiveBuilder,
    source: &TreeSource,
    cache: &mut FilesCache,
    observer: &dyn Observer,
) -> Result<()> {
    let opts = WalkOptions {
        one_file_system: source.one_file_system,
        excludes: source.excludes.iter().map(|p| Pattern::new(p)).collect(),
        exclude_prefix: source.prefix.clone(),
        lower: source.lower.map(Path::to_path_buf),
    };
    let walker = walk(source.root, &opts)?;
    crate::host::memory::bound_heap_growth(builder.cutter().chunker.params.max as usize);
    let mut reads = OrderedReads::new(
        builder.cutter().clone(),
        builder.threads(),
        MAX_QUEUED,
        MAX_QUEUED_BYTES,
    );
    let finish = |builder: &mut ArchiveBuilder,
                  cache: &mut FilesCache,
                  (queued, read): (Queued, Option<Pending>)|
     -> Result<()> {
        finish_entry(builder, source, cache, observer, queued, read)?;
        observer.progress(builder.stats());
        Ok(())
    };
    // The walk (a stat, xattrs and ACLs per entry) runs on a thread of its own: on this one
    // it took a third of a deduplicating backup's time.
    std::thread::scope(|s| -> Result<()> {
        let (tx, events) = crossbeam_channel::bounded(WALK_AHEAD);
        s.spawn(move || {
            let mut batch = Vec::with_capacity(WALK_BATCH);
            for event in walker {
                batch.push(event);
                if batch.len() == WALK_BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(WALK_BATCH));
                    if tx.send(full).is_err() {
                        return;
                    }
                }
            }
            let _ = tx.send(batch);
        });
        for event in events.iter().flatten() {
            if crate::host::interrupt::interrupted() {
                return Err(TreeError::Interrupted);
            }
            match event {
                WalkEvent::Warning(msg) => reads.push(Queued::Warning(msg), None),
                WalkEvent::Entry(entry) => queue_entry(builder, source, cache, &mut reads, entry),
            }
            while let Some(next) = reads.pop_if_full() {
                finish(builder, cache, next)?;
            }
        }
        Ok(())
    })?;
    while let Some(next) = reads.pop() {
        finish(builder, cache, next)?;
    }
    Ok(())
}

fn queue_entry(
    builder: &ArchiveBuilder,
    source: &TreeSource,
    cache: &mut FilesCache,
    reads: &mut OrderedReads<Queued>,
    entry: Entry,
) {
    let Entry {
        mut item,
        fs_path,
        ino,
        nlink,
    } = entry;
    item.path = prefixed(&source.prefix, &item.path);
    match &mut item.kind {
        Kind::File => queue_file(
            builder,
            cache,
            &source.source_id,
            reads,
            item,
            fs_path,
            ino,
            nlink > 1,
        ),
        Kind::Hardlink { target } => {
            *target = prefixed(&source.prefix, target);
            reads.push(Queued::Hardlink { item, fs_path, ino }, None);
        }
        _ => reads.push(Queued::Plain(item), None),
    }
}

/// Queues a regular file: known to the files cache, or to be read by a reader thread.
#[allow(clippy::too_many_arguments)]
fn queue_file(
    builder: &ArchiveBuilder,
    cache: &mut FilesCache,
    source_id: &str,
    reads: &mut OrderedReads<Queued>,
    mut item: Item,
    fs_path: PathBuf,
    ino: u64,
    linked: bool,
) {
    // Only regular files need a cache key; the hash is skipped for everything else.
    let key = FilesCache::key(source_id, &item.path);
    if reuse_cached(builder, cache, &key, &mut item, ino) {
        reads.push(Queued::Known { item, linked }, None);
        return;
    }
    // What the reader needs of the item: which ranges to read and what to compare after.
    let mut shape = Item::new(Vec::new(), Kind::File);
    shape.size = item.size;
    shape.mtime = item.mtime;
    shape.sparse = item.sparse.clone();
    let stored = item.stored_len();
    let longest = 4 * builder.cutter().chunker.params.max as u64;
    let open = Box::new(move || {
        let file = content::open_path(&fs_path)?;
        Ok(Box::new(TreeFile(Interruptible(FileContent::new(file, &shape)))) as Box<dyn Source>)
    });
    reads.push(
        Queued::Read {
            item,
            key,
            ino,
            linked,
        },
        Some((open, Some(stored), stored.min(longest))),
    );
}

/// Fills `item`'s chunks (and sparse map) from the files cache when the file is unchanged
/// and its blobs are all still in the repository; `false` means it must be read.
pub fn reuse_cached(
    builder: &ArchiveBuilder,
    cache: &mut FilesCache,
    key: &Key,
    item: &mut Item,
    ino: u64,
) -> bool {
    match cache.lookup(key, item, ino) {
        Some(hit) if builder.has_blobs(&hit.chunks) => {
            item.chunks = hit.chunks;
            item.sparse = hit.sparse;
            true
        }
        _ => false,
    }
}

/// Adds one queued entry to the archive, in walk order.
fn finish_entry(
    builder: &mut ArchiveBuilder,
    source: &TreeSource,
    cache: &mut FilesCache,
    observer: &dyn Observer,
    queued: Queued,
    read: Option<Pending>,
) -> Result<()> {
    let translate = |builder: &mut ArchiveBuilder, item: &mut Item| {
        if let Some(map) = source.idmap {
            let warnings = if source.lower.is_some() {
                translate_attrs(map, item)
            } else {
                translate_item(map, item)
            };
            for w in warnings {
                warn(
                    builder,
                    observer,
                    format!("{}: {w:?}", display_path(&item.path)),
                );
            }
        }
    };
    match queued {
        Queued::Warning(msg) => {
            warn(builder, observer, msg);
            Ok(())
        }
        Queued::Plain(mut item) => {
            translate(builder, &mut item);
            let r = builder.add(item, None, false).map(drop);
            soft(builder, observer, r)
        }
        Queued::Known { mut item, linked } => {
            translate(builder, &mut item);
            builder.add_known(item, linked)?;
            Ok(())
        }
        Queued::Hardlink {
            mut item,
            fs_path,
            ino,
        } => {
            translate(builder, &mut item);
            let Kind::Hardlink { target } = &item.kind else {
                unreachable!("queued as a hard link")
            };
            if builder.has_link_target(target) {
                let r = builder.add(item, None, false).map(drop);
                soft(builder, observer, r)
            } else {
                // The group's first name was not stored (unreadable): this one carries the data.
                item.kind = Kind::File;
                add_file_now(
                    builder,
                    cache,
                    observer,
                    &source.source_id,
                    item,
                    &fs_path,
                    ino,
                )
            }
        }
        Queued::Read {
            mut item,
            key,
            ino,
            linked,
        } => {
            translate(builder, &mut item);
            let mut read = read.expect("a queued read has its pending content");
            let path = display_path(&item.path);
            if let Some(e) = read.open_error() {
                warn(builder, observer, format!("{path}: {e}; not backed up"));
                return Ok(());
            }
            let stored = builder.add_pieces(item, &mut read, linked);
            let changed = read.changed();
            after_read(builder, cache, observer, (key, ino), &path, stored, changed)
        }
    }
}

/// The end of storing a file: warnings, and the files cache for a clean read.
fn after_read(
    builder: &mut ArchiveBuilder,
    cache: &mut FilesCache,
    observer: &dyn Observer,
    (key, ino): (Key, u64),
    path: &str,
    stored: Result<Item, IngestError>,
    changed: bool,
) -> Result<()> {
    if crate::host::interrupt::interrupted() {
        return Err(TreeError::Interrupted);
    }
    if changed {
        let msg = format!("{path}: changed while it was read; stored as read");
        warn(builder, observer, msg);
    }
    match stored {
        Ok(item) if !changed => cache.remember(key, &item, ino),
        Ok(_) => {}
        Err(e) => soft(builder, observer, Err(e))?,
    }
    Ok(())
}

fn prefixed(prefix: &[u8], path: &[u8]) -> Vec<u8> {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_vec(),
        (false, true) => prefix.to_vec(),
        (false, false) => [prefix, b"/", path].concat(),
    }
}

/// Reads and adds a file on this thread (the rare hard link whose first name failed).
fn add_file_now(
    builder: &mut ArchiveBuilder,
    cache: &mut FilesCache,
    observer: &dyn Observer,
    source_id: &str,
    mut item: Item,
    fs_path: &Path,
    ino: u64,
) -> Result<()> {
    let key = FilesCache::key(source_id, &item.path);
    if reuse_cached(builder, cache, &key, &mut item, ino) {
        builder.add_known(item, true)?;
        return Ok(());
    }
    let path = display_path(&item.path);
    let file = match content::open_path(fs_path) {
        Ok(f) => f,
        Err(e) => {
            warn(builder, observer, format!("{path}: {e}; not backed up"));
            return Ok(());
        }
    };
    let mut reader = Interruptible(FileContent::new(file, &item));
    let stored = builder.add(item, Some(&mut reader), true);
    let changed = reader.0.changed();
    after_read(builder, cache, observer, (key, ino), &path, stored, changed)
}

/// A read error of one entry is a warning; anything else (the repository) is fatal.
fn soft(
    builder: &mut ArchiveBuilder,
    observer: &dyn Observer,
    r: Result<(), IngestError>,
) -> Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(e @ IngestError::Read { .. }) => {
            warn(builder, observer, format!("{e}; not backed up"));
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// A soft problem: told to the observer and counted in the archive's stats.
fn warn(builder: &mut ArchiveBuilder, observer: &dyn Observer, message: String) {
    observer.warning(message);
    builder.warn();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::item_stream::ItemStreamReader;
    use crate::repo::test_support::{unencrypted, NoCredentials};
    use crate::repo::Repository;

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        crate::ingest::pieces::tests::noise(n, seed)
    }

    /// A tree with files on both sides of the one-chunk limit (4 MiB), empty files, zero
    /// runs, hard links, symlinks and nested directories.
    fn random_tree(root: &Path) {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for d in 0..6 {
            let dir = root.join(format!("d{d}/sub{}", d % 3));
            std::fs::create_dir_all(&dir).unwrap();
            for f in 0..12u64 {
                let len = match rnd(6) {
                    0 => 0,
                    1 => (9 << 20) + rnd(1 << 20),
                    2 => (4 << 20) + rnd(3),
                    _ => rnd(300 << 10),
                };
                let mut data = noise(len as usize, d * 100 + f);
                if len > (5 << 20) {
                    data[(1 << 20)..(len as usize - 1)].fill(0);
                }
                std::fs::write(dir.join(format!("f{f}")), data).unwrap();
            }
            std::fs::hard_link(dir.join("f1"), root.join(format!("link{d}"))).unwrap();
            std::os::unix::fs::symlink("f2", dir.join("sym")).unwrap();
        }
    }

    fn items(repo: &Repository, name: &str) -> Vec<Item> {
        let (_, m) = repo.find_archive(name).unwrap();
        ItemStreamReader::new(m.item_stream.clone(), |id| repo.read_blob(id))
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn the_archive_is_the_same_with_one_reader_thread_or_several() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        random_tree(&src);
        let mut archives = Vec::new();
        for threads in [1, 2, 5] {
            let repo = unencrypted(&tmp.path().join(format!("repo{threads}")));
            let mut builder = ArchiveBuilder::new(&repo, None);
            builder.set_threads(threads);
            let tree = TreeSource {
                root: &src,
                source_id: "test".into(),
                prefix: b"pre".to_vec(),
                excludes: &[],
                one_file_system: false,
                idmap: None,
                lower: None,
            };
            let mut cache = FilesCache::disabled();
            ingest_dir(&mut builder, &tree, &mut cache, &super::super::Silent).unwrap();
            assert_eq!(builder.stats().warnings, 0);
            let cutter = builder.cutter().clone();
            builder.finish("a", Default::default()).unwrap();
            let repo = Repository::open(repo.backend().clone(), &NoCredentials).unwrap();
            let items = items(&repo, "a");
            // Each file's chunks are the one-thread cut and hash of its content.
            let mut files = 0;
            for item in &items {
                if item.kind != Kind::File || item.path == b"pre" {
                    continue;
                }
                let rel = std::str::from_utf8(&item.path[4..]).unwrap();
                let data = std::fs::read(src.join(rel)).unwrap();
                let mut want = Vec::new();
                cutter
                    .each_piece::<()>(&mut &data[..], None, &mut |p| {
                        want.push(p.id);
                        Ok(())
                    })
                    .unwrap();
                let got: Vec<_> = item.chunks.iter().map(|c| c.id).collect();
                assert_eq!(got, want, "{rel} ({threads} threads)");
                files += 1;
            }
            assert_eq!(files, 6 * 12, "not every file was stored");
            // Reading the files for the reference above moved their atimes.
            let mut items = items;
            for item in &mut items {
                item.atime = Default::default();
            }
            archives.push(items);
        }
        for other in &archives[1..] {
            assert_eq!(other.len(), archives[0].len());
            for (a, b) in archives[0].iter().zip(other) {
                assert!(a == b, "{a:?}\n{b:?}");
            }
        }
    }
}
