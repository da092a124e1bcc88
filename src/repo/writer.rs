//! Writing blobs: the back half of the backup pipeline.
//!
//! ```text
//! caller thread (hash + dedup) --jobs--> N encoder threads (compress + encrypt)
//!                                  --encoded--> packer thread (packs, then index files)
//! ```
//! The caller hashes each blob and decides alone whether it is new (one owner of the "seen"
//! set, no locks); only new blobs cross to the encoders. Channels are bounded, so memory stays
//! at a few dozen chunks however large the source is.
//!
//! Crash rules: a pack is written (temp + fsync + rename) before any index file names it; an
//! index file is written every `INDEX_EVERY` packs, so an interrupted backup leaves its packs
//! indexed and the next run deduplicates against them; the caller writes the archive file only
//! after `finish` has flushed every pack and index.

use super::backend::Backend;
use super::compression::Compression;
use super::crypto::{Crypto, Encoder};
use super::error::{RepoError, Result};
use super::id::ChunkId;
use super::index::{index_key, Index, IndexFile, IndexedPack};
use super::pack::{pack_key, BlobKind, PackBuilder, TARGET_SIZE};
use crate::item::ChunkRef;
use crossbeam_channel::{bounded, Receiver, Sender};
use std::collections::HashSet;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Packs per index file while a backup runs (~64 MiB of packs at risk in a crash).
const INDEX_EVERY: usize = 4;

struct Job {
    id: ChunkId,
    kind: BlobKind,
    data: Vec<u8>,
}

enum Encoded {
    Blob {
        id: ChunkId,
        kind: BlobKind,
        stored: Vec<u8>,
        raw_len: u32,
    },
    Failed(RepoError),
}

/// What a writer session added to the repository.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    pub blobs: u64,
    pub new_blobs: u64,
    pub new_data_blobs: u64,
    pub raw_bytes: u64,
    pub new_raw_bytes: u64,
    /// Bytes of new blobs as stored (compressed, encrypted).
    pub stored_bytes: u64,
    pub packs: u64,
    pub index_files: u64,
}

pub struct BlobWriter {
    crypto: Crypto,
    index: Arc<Index>,
    seen: HashSet<ChunkId>,
    jobs: Option<Sender<Job>>,
    encoders: Vec<JoinHandle<()>>,
    packer: Option<JoinHandle<Result<WriteStats>>>,
    stats: WriteStats,
}

impl BlobWriter {
    pub(crate) fn start(
        backend: Arc<dyn Backend>,
        crypto: Crypto,
        index: Arc<Index>,
        compression: Compression,
        threads: usize,
    ) -> Self {
        let threads = threads.max(1);
        let (job_tx, job_rx) = bounded::<Job>(threads * 4);
        let (enc_tx, enc_rx) = bounded::<Encoded>(threads * 4);
        let encoders = (0..threads)
            .map(|_| {
                let (rx, tx, crypto) = (job_rx.clone(), enc_tx.clone(), crypto.clone());
                std::thread::spawn(move || encode_loop(rx, tx, crypto, compression))
            })
            .collect();
        drop(enc_tx);
        let packer_crypto = crypto.clone();
        let packer = std::thread::spawn(move || pack_loop(enc_rx, backend, packer_crypto));
        BlobWriter {
            crypto,
            index,
            seen: HashSet::new(),
            jobs: Some(job_tx),
            encoders,
            packer: Some(packer),
            stats: WriteStats::default(),
        }
    }

    pub fn blob_id(&self, data: &[u8]) -> ChunkId {
        self.crypto.blob_id(data)
    }

    /// Stores a blob unless the repository or this session already has it.
    pub fn put(&mut self, kind: BlobKind, data: Vec<u8>) -> Result<ChunkRef> {
        let id = self.crypto.blob_id(&data);
        self.put_hashed(kind, id, data)
    }

    /// `put` for a blob whose id the caller computed (with this repository's `blob_id`, on
    /// another thread): the dedup decision stays here, in one place, in put order.
    pub fn put_hashed(&mut self, kind: BlobKind, id: ChunkId, data: Vec<u8>) -> Result<ChunkRef> {
        let len = u32::try_from(data.len())
            .map_err(|_| RepoError::Invalid("blob larger than 4 GiB".into()))?;
        self.stats.blobs += 1;
        self.stats.raw_bytes += data.len() as u64;
        if !self.index.contains(&id) && self.seen.insert(id) {
            self.stats.new_blobs += 1;
            self.stats.new_raw_bytes += data.len() as u64;
            if kind == BlobKind::Data {
                self.stats.new_data_blobs += 1;
            }
            let sent = self
                .jobs
                .as_ref()
                .map(|j| j.send(Job { id, kind, data }).is_ok())
                .unwrap_or(false);
            if !sent {
                // The pipeline stopped: its error says why.
                return Err(self
                    .shutdown()
                    .err()
                    .unwrap_or_else(|| RepoError::Worker("pipeline closed".into())));
            }
        }
        Ok(ChunkRef { id, len })
    }

    /// Was this blob new in this session (not in the repository before)?
    pub fn is_new(&self, id: &ChunkId) -> bool {
        self.seen.contains(id)
    }

    /// Flushes every pack and the final index file. The caller may write an archive that
    /// references this session's blobs only after this returned `Ok`.
    pub fn finish(mut self) -> Result<WriteStats> {
        self.shutdown()?;
        Ok(std::mem::take(&mut self.stats))
    }

    fn shutdown(&mut self) -> Result<()> {
        self.jobs = None;
        for h in self.encoders.drain(..) {
            h.join()
                .map_err(|_| RepoError::Worker("an encoder thread panicked".into()))?;
        }
        let Some(packer) = self.packer.take() else {
            return Err(RepoError::Worker("pipeline already stopped".into()));
        };
        let packed = packer
            .join()
            .map_err(|_| RepoError::Worker("the packer thread panicked".into()))??;
        self.stats.stored_bytes = packed.stored_bytes;
        self.stats.packs = packed.packs;
        self.stats.index_files = packed.index_files;
        Ok(())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // An abandoned writer (error elsewhere) still stops its threads; what it had packed
        // stays indexed for the next run.
        if self.packer.is_some() {
            let _ = self.shutdown();
        }
    }
}

fn encode_loop(rx: Receiver<Job>, tx: Sender<Encoded>, crypto: Crypto, compression: Compression) {
    let mut enc = Encoder::default();
    for job in rx {
        let msg = match crypto.encode_blob(&job.id, &job.data, compression, &mut enc) {
            Ok(stored) => Encoded::Blob {
                id: job.id,
                kind: job.kind,
                stored,
                raw_len: job.data.len() as u32,
            },
            Err(e) => Encoded::Failed(e),
        };
        if tx.send(msg).is_err() {
            return;
        }
    }
}

struct Packer {
    backend: Arc<dyn Backend>,
    crypto: Crypto,
    data: PackBuilder,
    meta: PackBuilder,
    unindexed: Vec<IndexedPack>,
    stats: WriteStats,
}

impl Packer {
    fn flush_pack(&mut self, kind: BlobKind) -> Result<()> {
        let builder = std::mem::take(match kind {
            BlobKind::Data => &mut self.data,
            BlobKind::Meta => &mut self.meta,
        });
        if builder.is_empty() {
            return Ok(());
        }
        let (id, bytes, entries) = builder.finish(&self.crypto)?;
        // Pipelined (over ssh the packer does not wait for each answer); `flush_index` settles
        // them before the index file that names them is written.
        self.backend.put_pipelined(&pack_key(&id), &bytes)?;
        self.stats.packs += 1;
        self.unindexed.push(IndexedPack {
            pack: id,
            blobs: entries,
        });
        if self.unindexed.len() >= INDEX_EVERY {
            self.flush_index()?;
        }
        Ok(())
    }

    fn flush_index(&mut self) -> Result<()> {
        self.backend.settle()?;
        if self.unindexed.is_empty() {
            return Ok(());
        }
        let file = IndexFile {
            packs: std::mem::take(&mut self.unindexed),
            supersedes: Vec::new(),
        };
        let bytes = file.encode(&self.crypto)?;
        self.backend.put(&index_key(&ChunkId::of(&bytes)), &bytes)?;
        self.stats.index_files += 1;
        Ok(())
    }
}

fn pack_loop(
    rx: Receiver<Encoded>,
    backend: Arc<dyn Backend>,
    crypto: Crypto,
) -> Result<WriteStats> {
    let mut p = Packer {
        backend,
        crypto,
        data: PackBuilder::default(),
        meta: PackBuilder::default(),
        unindexed: Vec::new(),
        stats: WriteStats::default(),
    };
    for msg in rx {
        let (id, kind, stored, raw_len) = match msg {
            Encoded::Blob {
                id,
                kind,
                stored,
                raw_len,
            } => (id, kind, stored, raw_len),
            Encoded::Failed(e) => {
                // Keep what is packed so far usable by the next run, then report.
                let _ = p.flush_index();
                return Err(e);
            }
        };
        p.stats.stored_bytes += stored.len() as u64;
        let builder = match kind {
            BlobKind::Data => &mut p.data,
            BlobKind::Meta => &mut p.meta,
        };
        builder.add(id, kind, &stored, raw_len);
        if builder.len() >= TARGET_SIZE {
            if let Err(e) = p.flush_pack(kind) {
                let _ = p.flush_index();
                return Err(e);
            }
        }
    }
    p.flush_pack(BlobKind::Data)?;
    p.flush_pack(BlobKind::Meta)?;
    p.flush_index()?;
    Ok(p.stats)
}
