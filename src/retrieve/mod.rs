//! Reading one archive front to back: the selected items, renamed for `--strip-components`,
//! each with a reader of its content that verifies every blob. The single reader behind both
//! `extract` and `export-tar`, so they always agree on selection, hard links and errors.
//!
//! ```text
//! producer thread: item stream -> selection -> Prefetcher requests (bounded in flight)
//!      --entries--> consumer: Entry { item, content: Content (impl Read) }
//! ```
//! Blob reads, decryption, decompression and hashing run on the prefetcher's threads, ahead
//! of the consumer, so a restore or tar writer keeps both cores busy while memory stays at
//! `MAX_IN_FLIGHT` blobs whatever the archive size.
//!
//! On top of it: `export_tar` (an archive as a tar stream, vzdump's config first),
//! `extract` (into a directory, or files to a stream) and `diff` (two archives' item streams).

pub mod diff;
pub mod export_tar;
pub mod export_vma;
pub mod extract;

use crate::item::filter::Selection;
use crate::item::{Item, Kind};
use crate::repo::index::Index;
use crate::repo::item_stream::ItemStreamReader;
use crate::repo::reader::{PendingBlob, Prefetcher};
use crate::repo::{Manifest, RepoError, Repository};
use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Blobs requested ahead of the consumer (at most 4 MiB each).
const MAX_IN_FLIGHT: usize = 16;
const ENTRIES_AHEAD: usize = 256;

pub struct Entry {
    pub item: Item,
    pub content: Content,
}

/// An item's content as the archive stores it: the data extents, concatenated, verified.
pub struct Content {
    blobs: Option<Receiver<PendingBlob>>,
    current: Vec<u8>,
    pos: usize,
    remaining: u64,
    path: String,
    /// Set when content blobs are known to be gone before anything is read: the read fails
    /// at once with this, naming the file, instead of after part of it was written.
    damaged: Option<String>,
}

impl Content {
    fn empty() -> Self {
        Content {
            blobs: None,
            current: Vec::new(),
            pos: 0,
            remaining: 0,
            path: String::new(),
            damaged: None,
        }
    }
}

impl Read for Content {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(why) = &self.damaged {
            // Every caller names the file already.
            return Err(io::Error::other(why.clone()));
        }
        loop {
            if self.pos < self.current.len() {
                let n = buf.len().min(self.current.len() - self.pos);
                buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            let next = self.blobs.as_ref().and_then(|rx| rx.recv().ok());
            let Some(pending) = next else {
                if self.remaining > 0 {
                    return Err(io::Error::other(format!(
                        "{}: content ends {} bytes early",
                        self.path, self.remaining
                    )));
                }
                return Ok(0);
            };
            let data = pending
                .wait()
                .map_err(|e| io::Error::other(format!("{}: {e}", self.path)))?;
            if data.len() as u64 > self.remaining {
                return Err(io::Error::other(format!(
                    "{}: content longer than recorded",
                    self.path
                )));
            }
            self.remaining -= data.len() as u64;
            self.current = data;
            self.pos = 0;
        }
    }
}

pub struct ArchiveReader {
    cancelled: Arc<AtomicBool>,
    entries: Receiver<Result<Entry, RepoError>>,
    producer: Option<JoinHandle<()>>,
}

impl ArchiveReader {
    pub fn open(repo: &Repository, manifest: &Manifest, selection: Selection) -> Self {
        let source = repo.blob_source();
        let prefetch = Prefetcher::new(source.clone(), 2, MAX_IN_FLIGHT);
        let cancelled = prefetch.cancel_flag();
        let (blobs, count) = (manifest.item_stream.clone(), manifest.stats.items);
        let (tx, rx) = bounded(ENTRIES_AHEAD);
        let producer = std::thread::spawn(move || {
            let items = ItemStreamReader::new(blobs, |id| source.read_blob(id)).expect_items(count);
            produce(items, &selection, &prefetch, &source.index, &tx);
        });
        ArchiveReader {
            cancelled,
            entries: rx,
            producer: Some(producer),
        }
    }
}

impl Iterator for ArchiveReader {
    type Item = Result<Entry, RepoError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.entries.recv().ok()
    }
}

impl Drop for ArchiveReader {
    fn drop(&mut self) {
        // The producer may be blocked on the in-flight limit by blobs queued in entries we
        // never took: cancel first, then disconnect so its next send fails.
        self.cancelled.store(true, Ordering::Relaxed);
        let (_, dead) = bounded(0);
        drop(std::mem::replace(&mut self.entries, dead));
        if let Some(p) = self.producer.take() {
            let _ = p.join();
        }
    }
}

fn produce(
    items: impl Iterator<Item = Result<Item, RepoError>>,
    selection: &Selection,
    prefetch: &Prefetcher,
    index: &Index,
    tx: &Sender<Result<Entry, RepoError>>,
) {
    for item in items {
        let mut item = match item {
            Ok(i) => i,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        if !selection.selects(&item.path) {
            continue;
        }
        let Some(out) = selection.output_path(&item.path) else {
            continue;
        };
        item.path = out;
        if let Kind::Hardlink { target } = &item.kind {
            // The first name of the group was written only if it was selected and survives
            // stripping; otherwise this name carries the data itself.
            let renamed = selection
                .selects(target)
                .then(|| selection.output_path(target))
                .flatten();
            item.kind = match renamed {
                Some(t) => Kind::Hardlink { target: t },
                None => Kind::File,
            };
        }
        let carries_data = matches!(item.kind, Kind::File) && !item.chunks.is_empty();
        if !carries_data {
            if tx
                .send(Ok(Entry {
                    item,
                    content: Content::empty(),
                }))
                .is_err()
            {
                return;
            }
            continue;
        }
        let (btx, brx) = unbounded();
        let ids: Vec<_> = item.chunks.iter().map(|c| c.id).collect();
        let lost = ids.iter().filter(|id| !index.contains(id)).count();
        let content = Content {
            blobs: Some(brx),
            current: Vec::new(),
            pos: 0,
            remaining: item.stored_len(),
            path: crate::item::display_path(&item.path),
            damaged: (lost > 0).then(|| {
                format!(
                    "damaged: {lost} of its {} content blobs are missing from the repository (`check` names them, `check --repair` marks such files; a new backup of the file heals the archive)",
                    ids.len()
                )
            }),
        };
        let damaged = content.damaged.is_some();
        if tx.send(Ok(Entry { item, content })).is_err() {
            return;
        }
        if damaged {
            continue;
        }
        for id in ids {
            // Blocks while MAX_IN_FLIGHT blobs wait for the consumer; a consumer that dropped
            // this entry makes the send fail and the pending blob frees its slot at once.
            let Some(pending) = prefetch.request(id) else {
                return;
            };
            let _ = btx.send(pending);
        }
    }
}

/// A file's logical bytes from its stored content: zeros where its sparse map has holes,
/// exactly `size` bytes in all (a short content reads as an error, never as zeros).
pub struct WithHoles<R> {
    inner: R,
    /// Data extents still ahead, in order, then a zero-length one at `size`.
    extents: std::collections::VecDeque<crate::item::Extent>,
    pos: u64,
}

impl<R: Read> WithHoles<R> {
    pub fn new(inner: R, item: &Item) -> Self {
        let end = crate::item::Extent {
            offset: item.size,
            len: 0,
        };
        let extents = match &item.sparse {
            Some(e) => e.iter().copied().chain(std::iter::once(end)).collect(),
            None => [
                crate::item::Extent {
                    offset: 0,
                    len: item.size,
                },
                end,
            ]
            .into(),
        };
        WithHoles {
            inner,
            extents,
            pos: 0,
        }
    }
}

impl<R: Read> Read for WithHoles<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(e) = self.extents.front().copied() {
            let end = e.offset.saturating_add(e.len);
            if self.pos < e.offset {
                let n = (e.offset - self.pos).min(buf.len() as u64) as usize;
                buf[..n].fill(0);
                self.pos += n as u64;
                return Ok(n);
            }
            if self.pos < end {
                let want = (end - self.pos).min(buf.len() as u64) as usize;
                let n = self.inner.read(&mut buf[..want])?;
                if n == 0 && want > 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "content shorter than its sparse map",
                    ));
                }
                self.pos += n as u64;
                return Ok(n);
            }
            self.extents.pop_front();
        }
        Ok(0)
    }
}

/// Writes `path` through a temporary file beside it, synced and renamed into place only once
/// `write` succeeded: a failed export leaves nothing, and never a half file under the name.
pub fn write_file_atomically<E: From<io::Error>>(
    path: &std::path::Path,
    write: impl FnOnce(&mut std::fs::File) -> Result<(), E>,
) -> Result<(), E> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".proxborg-export-")
        .tempfile_in(dir)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("creating a file in {}: {e}", dir.display()),
            )
        })?;
    let mut file = tmp.reopen()?;
    write(&mut file)?;
    file.sync_all()?;
    tmp.persist(path)
        .map_err(|e| io::Error::new(e.error.kind(), format!("{}: {}", path.display(), e.error)))?;
    Ok(())
}
