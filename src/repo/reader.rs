//! Reading blobs: one verified read (`BlobSource`), and reading ahead of a consumer on worker
//! threads in the consumer's order with a bounded number of blobs in flight (`Prefetcher`).
//! Decryption, decompression and hashing run on the workers, so a tar writer or a restore on
//! the consumer side keeps both cores busy.

use super::backend::Backend;
use super::crypto::Crypto;
use super::error::{RepoError, Result};
use super::id::ChunkId;
use super::index::Index;
use super::pack::pack_key;
use crossbeam_channel::{bounded, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// What a reader thread needs to fetch and verify blobs; cheap to clone.
#[derive(Clone)]
pub struct BlobSource {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) crypto: Crypto,
    pub(crate) index: Arc<Index>,
}

impl BlobSource {
    pub fn read_blob(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let (pack, loc) = self
            .index
            .get(id)
            .ok_or_else(|| RepoError::NotFound(format!("blob {id}")))?;
        let stored =
            self.backend
                .get_range(&pack_key(&pack), loc.offset as u64, loc.length as usize)?;
        self.crypto.decode_blob(id, &stored, loc.raw_len as usize)
    }
}

struct Job {
    id: ChunkId,
    reply: Sender<Result<Vec<u8>>>,
}

pub struct Prefetcher {
    jobs: Option<Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
    tokens_tx: Sender<()>,
    tokens_rx: Receiver<()>,
}

/// A blob that was asked for; holds one in-flight slot until it is consumed or dropped.
pub struct PendingBlob {
    rx: Receiver<Result<Vec<u8>>>,
    tokens: Receiver<()>,
}

impl PendingBlob {
    pub fn wait(self) -> Result<Vec<u8>> {
        self.rx
            .recv()
            .unwrap_or_else(|_| Err(RepoError::Worker("a reader thread stopped".into())))
    }
}

impl Drop for PendingBlob {
    fn drop(&mut self) {
        let _ = self.tokens.try_recv();
    }
}

impl Prefetcher {
    pub fn new(source: BlobSource, threads: usize, max_in_flight: usize) -> Self {
        let (job_tx, job_rx) = bounded::<Job>(max_in_flight.max(1));
        let workers = (0..threads.max(1))
            .map(|_| {
                let (rx, src) = (job_rx.clone(), source.clone());
                std::thread::spawn(move || {
                    for job in rx {
                        let _ = job.reply.send(src.read_blob(&job.id));
                    }
                })
            })
            .collect();
        let (tokens_tx, tokens_rx) = bounded(max_in_flight.max(1));
        Prefetcher {
            jobs: Some(job_tx),
            workers,
            tokens_tx,
            tokens_rx,
        }
    }

    /// Queues a read; blocks while `max_in_flight` blobs are requested and not yet consumed.
    pub fn request(&self, id: ChunkId) -> PendingBlob {
        let _ = self.tokens_tx.send(());
        let (reply, rx) = bounded(1);
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(Job { id, reply });
        }
        PendingBlob {
            rx,
            tokens: self.tokens_rx.clone(),
        }
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
