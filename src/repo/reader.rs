//! Reading blobs: one verified read (`BlobSource`), and reading ahead of a consumer on worker
//! threads in the consumer's order with a bounded number of blobs in flight (`Prefetcher`).
//! Decryption, decompression and hashing run on the workers, so a tar writer or a restore on
//! the consumer side keeps both cores busy.

use super::backend::Backend;
use super::crypto::{Crypto, MAX_BLOB, MAX_STORED_BLOB};
use super::error::{RepoError, Result};
use super::id::ChunkId;
use super::index::Index;
use super::pack::pack_key;
use crossbeam_channel::{bounded, Receiver, SendTimeoutError, Sender};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

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
        // Index entries come from storage: refuse impossible lengths before allocating them.
        if loc.raw_len as usize > MAX_BLOB || loc.length as usize > MAX_STORED_BLOB {
            return Err(RepoError::corrupt(
                format!("blob {id}"),
                format!(
                    "the index claims {} bytes stored, {} plain (limits {MAX_STORED_BLOB}, {MAX_BLOB})",
                    loc.length, loc.raw_len
                ),
            ));
        }
        let stored =
            self.backend
                .get_range(&pack_key(&pack), loc.offset.into(), loc.length as usize)?;
        self.crypto.decode_blob(id, &stored, loc.raw_len as usize)
    }
}

struct Job {
    id: ChunkId,
    reply: Sender<Result<Vec<u8>>>,
}

pub struct Prefetcher {
    cancelled: Arc<AtomicBool>,
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
            cancelled: Arc::new(AtomicBool::new(false)),
            jobs: Some(job_tx),
            workers,
            tokens_tx,
            tokens_rx,
        }
    }

    /// A flag that makes a `request` blocked on the in-flight limit give up: the consumer
    /// sets it when it stops reading, since the blobs holding the slots may never be dropped
    /// while the requester waits (they can sit in a channel the requester owns).
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        self.cancelled.clone()
    }

    /// Queues a read; blocks while `max_in_flight` blobs are requested and not yet consumed.
    /// `None` once cancelled.
    pub fn request(&self, id: ChunkId) -> Option<PendingBlob> {
        loop {
            if self.cancelled.load(Ordering::Relaxed) {
                return None;
            }
            match self.tokens_tx.send_timeout((), Duration::from_millis(20)) {
                Ok(()) => break,
                Err(SendTimeoutError::Timeout(())) => continue,
                Err(SendTimeoutError::Disconnected(())) => return None,
            }
        }
        let (reply, rx) = bounded(1);
        if let Some(jobs) = &self.jobs {
            let _ = jobs.send(Job { id, reply });
        }
        Some(PendingBlob {
            rx,
            tokens: self.tokens_rx.clone(),
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::pack::{BlobKind, PackEntry};

    /// A backend that fails any read larger than a blob can be.
    struct Guard;
    impl Backend for Guard {
        fn put(&self, _: &str, _: &[u8]) -> Result<bool> {
            unreachable!()
        }
        fn replace(&self, _: &str, _: &[u8]) -> Result<()> {
            unreachable!()
        }
        fn get(&self, _: &str) -> Result<Vec<u8>> {
            unreachable!()
        }
        fn get_range(&self, _: &str, _: u64, len: usize) -> Result<Vec<u8>> {
            assert!(len <= MAX_STORED_BLOB, "asked to allocate {len} bytes");
            Ok(vec![0; len])
        }
        fn size(&self, _: &str) -> Result<u64> {
            unreachable!()
        }
        fn list(&self, _: &str) -> Result<Vec<String>> {
            unreachable!()
        }
        fn delete(&self, _: &str) -> Result<()> {
            unreachable!()
        }
        fn exists(&self, _: &str) -> Result<bool> {
            unreachable!()
        }
        fn location(&self) -> String {
            "guard".into()
        }
    }

    #[test]
    fn an_index_entry_is_checked_before_its_length_is_allocated() {
        let id = ChunkId([3; 32]);
        let mut index = Index::default();
        index.insert_pack(
            ChunkId([4; 32]),
            &[PackEntry {
                id,
                kind: BlobKind::Data,
                offset: 0,
                length: u32::MAX,
                raw_len: 100,
            }],
        );
        let source = BlobSource {
            backend: Arc::new(Guard),
            crypto: Crypto::plain(),
            index: Arc::new(index),
        };
        let err = source.read_blob(&id).unwrap_err();
        assert!(err.is_corruption(), "{err}");
    }
}
