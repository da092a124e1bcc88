//! Building one archive: items and their contents in, blobs + item stream + archive file out.
//!
//! The producers (the directory walker, a stdin or device stream, the Proxmox executor that
//! puts `pct.conf` first) hand items in tar order; this module chunks contents, deduplicates
//! and stores blobs through the repository's `BlobWriter`, fills in chunk lists (hard links
//! get their group's), writes the item stream and, last, the archive file. `ArchiveBuilder`
//! knows nothing about where items come from and never touches the filesystem itself;
//! `tree` feeds it a directory walk (reading the files on reader threads).

pub mod disk;
pub mod pieces;
pub mod readers;
pub mod tree;
pub mod zvol;

/// Where an ingest's soft problems (a file unreadable, changed while read) and its progress
/// go. The backup engine forwards them as events; nothing below it prints.
pub trait Observer: Sync {
    fn warning(&self, message: String);
    fn progress(&self, _stats: &ArchiveStats) {}
}

/// An observer that drops everything (tests, benchmarks).
pub struct Silent;

impl Observer for Silent {
    fn warning(&self, _message: String) {}
}

use crate::item::{display_path, ChunkRef, Item, Kind};
use crate::repo::item_stream::ItemStreamWriter;
use crate::repo::{
    ArchiveStats, BlobKind, BlobWriter, Compression, Manifest, ObjectId, RepoError, Repository,
};
use pieces::{Cutter, Piece, PieceError};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;

/// Chunks of a long stream waiting between its cutter and the archive writer.
const STREAM_AHEAD: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// Reading a source failed; the archive cannot be completed (a stream source) or the
    /// caller downgrades it to a warning (one file of a tree).
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
}

/// What a hard link group's later names repeat from the first.
struct LinkGroup {
    size: u64,
    sparse: Option<Vec<crate::item::Extent>>,
    chunks: Vec<ChunkRef>,
}

pub struct ArchiveBuilder<'r> {
    repo: &'r Repository,
    writer: BlobWriter,
    cutter: Cutter,
    /// Threads that hash a long stream's chunks (and read files, see `readers`).
    threads: usize,
    stream: ItemStreamWriter,
    link_groups: HashMap<Vec<u8>, LinkGroup>,
    stats: ArchiveStats,
    start: jiff::Timestamp,
}

impl<'r> ArchiveBuilder<'r> {
    pub fn new(repo: &'r Repository, compression: Option<Compression>) -> Self {
        ArchiveBuilder {
            repo,
            writer: repo.writer(compression),
            cutter: Cutter::new(repo.content_chunker(), repo.crypto().clone()),
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            stream: ItemStreamWriter::new(repo.metadata_chunker()),
            link_groups: HashMap::new(),
            stats: ArchiveStats::default(),
            start: jiff::Timestamp::now(),
        }
    }

    /// Adds one item. For `Kind::File` `content` supplies its stored bytes (the data extents
    /// when `item.sparse` is set); for a file without a sparse map, `size` becomes the number of
    /// bytes read, so streams of unknown length need no size up front. If reading fails, the
    /// item is not added and the error says which path. `linked` says later `Hardlink` items
    /// may name this file (its chunk list is then kept in memory until the end). Returns the
    /// item as stored (chunks filled in).
    pub fn add(
        &mut self,
        item: Item,
        content: Option<&mut (dyn Read + Send)>,
        linked: bool,
    ) -> Result<Item, IngestError> {
        self.add_with(item, linked, |b, hint| {
            let mut empty = std::io::empty();
            let source: &mut (dyn Read + Send) = match content {
                Some(c) => c,
                None => &mut empty,
            };
            let (cutter, threads) = (b.cutter.clone(), b.threads);
            let mut chunks = Vec::new();
            let total = cutter
                .each_piece_parallel(source, hint, threads, STREAM_AHEAD, &mut |p| {
                    chunks.push(b.put_piece(p)?);
                    Ok(())
                })
                .map_err(from_piece_error)?;
            Ok((chunks, total))
        })
    }

    /// Adds a file whose content was already cut and hashed (on a reader thread): `pieces`
    /// yields them in order. Same rules as `add`.
    pub fn add_pieces(
        &mut self,
        item: Item,
        pieces: &mut dyn Iterator<Item = std::io::Result<Piece>>,
        linked: bool,
    ) -> Result<Item, IngestError> {
        self.add_with(item, linked, |b, _| {
            let mut chunks = Vec::new();
            let mut total = 0u64;
            for p in pieces {
                let p = p.map_err(|source| IngestError::Read {
                    path: String::new(),
                    source,
                })?;
                total += p.data.len() as u64;
                chunks.push(b.put_piece(p)?);
            }
            Ok((chunks, total))
        })
    }

    /// The part of `add` shared by every content source: `store` gets the size hint and
    /// returns the chunk list and the number of bytes read.
    fn add_with(
        &mut self,
        mut item: Item,
        linked: bool,
        store: impl FnOnce(&mut Self, Option<u64>) -> Result<(Vec<ChunkRef>, u64), IngestError>,
    ) -> Result<Item, IngestError> {
        match &item.kind {
            Kind::File => {
                let hint = item
                    .sparse
                    .is_some()
                    .then(|| item.stored_len())
                    .or((item.size > 0).then_some(item.size));
                let (chunks, total) = store(self, hint).map_err(|e| match e {
                    IngestError::Read { source, .. } => IngestError::Read {
                        path: display_path(&item.path),
                        source,
                    },
                    other => other,
                })?;
                if item.sparse.is_none() {
                    item.size = total;
                }
                item.chunks = chunks;
                self.stats.files += 1;
                self.stats.original_size += total;
                if linked {
                    self.remember_link_group(&item);
                }
            }
            Kind::Hardlink { target } => {
                // A target missing from this archive (excluded, unreadable) cannot be linked
                // to: keep the name as an empty file and say so, rather than a dangling link.
                match self.link_groups.get(target) {
                    Some(group) => {
                        item.size = group.size;
                        item.sparse = group.sparse.clone();
                        item.chunks = group.chunks.clone();
                    }
                    None => {
                        return Err(IngestError::Read {
                            path: display_path(&item.path),
                            source: std::io::Error::other(format!(
                                "hard link target {} is not in the archive",
                                display_path(target)
                            )),
                        })
                    }
                }
            }
            _ => {}
        }
        self.push_item(&item)?;
        Ok(item)
    }

    /// Stores one chunk cut by the caller (a disk image's fixed, aligned chunk): hashed,
    /// stored if new, counted like any other chunk. `add_stored` adds the file later.
    pub fn put_chunk(&mut self, data: Vec<u8>) -> Result<ChunkRef, IngestError> {
        let piece = self.cutter.piece(data);
        self.put_piece(piece)
    }

    /// Adds a file whose chunks were stored with `put_chunk` (in its sparse map's order).
    pub fn add_stored(&mut self, item: Item) -> Result<(), IngestError> {
        self.stats.files += 1;
        self.stats.original_size += item.stored_len();
        self.push_item(&item)
    }

    /// Adds a file whose chunks are already known (a files-cache hit): nothing is read.
    pub fn add_known(&mut self, item: Item, linked: bool) -> Result<(), IngestError> {
        let stored = item.stored_len();
        self.stats.files += 1;
        self.stats.original_size += stored;
        self.stats.chunks += item.chunks.len() as u64;
        if linked {
            self.remember_link_group(&item);
        }
        self.push_item(&item)
    }

    fn remember_link_group(&mut self, item: &Item) {
        self.link_groups.insert(
            item.path.clone(),
            LinkGroup {
                size: item.size,
                sparse: item.sparse.clone(),
                chunks: item.chunks.clone(),
            },
        );
    }

    /// How this archive cuts and names content, for reader threads.
    pub fn cutter(&self) -> &Cutter {
        &self.cutter
    }

    /// Worker threads to use for reading and hashing (the machine's cores).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Overrides `threads` (tests compare one thread against many).
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
    }

    /// Are all these blobs in the repository (so a cached chunk list can be reused)?
    pub fn has_blobs(&self, chunks: &[ChunkRef]) -> bool {
        let index = self.repo.index();
        chunks.iter().all(|c| index.contains(&c.id))
    }

    /// Was `path` added as a regular file, so a hard link to it can be recorded?
    pub fn has_link_target(&self, path: &[u8]) -> bool {
        self.link_groups.contains_key(path)
    }

    /// Counts a soft problem (the caller has already told the user about it).
    pub fn warn(&mut self) {
        self.stats.warnings += 1;
    }

    pub fn stats(&self) -> &ArchiveStats {
        &self.stats
    }

    fn push_item(&mut self, item: &Item) -> Result<(), IngestError> {
        let writer = &mut self.writer;
        let mut put = |bytes: Vec<u8>| writer.put(BlobKind::Meta, bytes).map(|r| r.id);
        self.stream.push(item, &mut put)?;
        self.stats.items += 1;
        Ok(())
    }

    fn put_piece(&mut self, p: Piece) -> Result<ChunkRef, IngestError> {
        let r = self.writer.put_hashed(BlobKind::Data, p.id, p.data)?;
        self.stats.chunks += 1;
        if self.writer.is_new(&r.id) {
            self.stats.new_chunks += 1;
        }
        Ok(r)
    }

    /// Writes the rest of the item stream, flushes every pack and index, and only then the
    /// archive file.
    pub fn finish(
        mut self,
        name: &str,
        metadata: BTreeMap<String, serde_json::Value>,
    ) -> Result<(ObjectId, Manifest), IngestError> {
        crate::repo::archive::validate_name(name)?;
        let writer = &mut self.writer;
        let mut put = |bytes: Vec<u8>| writer.put(BlobKind::Meta, bytes).map(|r| r.id);
        let (item_stream, _) = self.stream.finish(&mut put)?;
        let written = self.writer.finish()?;
        // A chunk counted new above may have been stored by a concurrent writer first; the
        // writer's numbers are what this archive really added.
        self.stats.added_size = written.stored_bytes;
        let manifest = Manifest {
            name: name.to_string(),
            start: self.start.to_string(),
            end: jiff::Timestamp::now().to_string(),
            hostname: crate::repo::lock::host_name(),
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            metadata,
            item_stream,
            stats: self.stats,
            notes: String::new(),
            protected: false,
            revision: 0,
        };
        let id = self.repo.write_archive(&manifest)?;
        Ok((id, manifest))
    }
}

fn from_piece_error(e: PieceError<IngestError>) -> IngestError {
    match e {
        PieceError::Read(source) => IngestError::Read {
            path: String::new(),
            source,
        },
        PieceError::Emit(e) => e,
    }
}
