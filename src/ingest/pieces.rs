//! Cutting content into chunks and naming them (blob ids): the CPU-heavy front of a backup,
//! done off the thread that writes the archive. Every path here gives the same pieces, in the
//! same order, as cutting the whole content with the repository's chunker and hashing each
//! chunk one after the other: parallelism never changes what is stored.

use crate::repo::chunker::{is_zero, Chunker};
use crate::repo::crypto::Crypto;
use crate::repo::ChunkId;
use crossbeam_channel::{bounded, unbounded, Receiver};
use std::io::{self, Read};
use std::sync::{Arc, Mutex};

/// One chunk of content and its blob id.
#[derive(Debug, PartialEq, Eq)]
pub struct Piece {
    pub id: ChunkId,
    pub data: Vec<u8>,
}

/// The start of some content, read to decide how to cut it.
pub enum Head {
    /// All of it fitted in one maximal chunk and was cut and hashed in memory; the number is
    /// its length.
    Whole(Vec<Piece>, u64),
    /// Longer than one maximal chunk: these bytes were read, the rest is still in the source.
    Longer(Vec<u8>),
}

/// What reading pieces can fail on: the source, or what the caller did with a piece.
#[derive(Debug)]
pub enum PieceError<E> {
    Read(io::Error),
    Emit(E),
}

/// The repository's chunker and blob naming; cheap to clone into worker threads.
#[derive(Clone)]
pub struct Cutter {
    pub chunker: Chunker,
    crypto: Crypto,
    /// The id of the last all-zero chunk named, by length: a disk image's empty space is
    /// thousands of identical zero chunks, hashed once.
    zeros: Arc<Mutex<Option<(usize, ChunkId)>>>,
}

impl Cutter {
    pub fn new(chunker: Chunker, crypto: Crypto) -> Self {
        Cutter {
            chunker,
            crypto,
            zeros: Arc::default(),
        }
    }

    pub fn piece(&self, data: Vec<u8>) -> Piece {
        if data.len() >= 4096 && is_zero(&data) {
            let mut zeros = self.zeros.lock().unwrap_or_else(|e| e.into_inner());
            let id = match *zeros {
                Some((len, id)) if len == data.len() => id,
                _ => {
                    let id = self.crypto.blob_id(&data);
                    *zeros = Some((data.len(), id));
                    id
                }
            };
            return Piece { id, data };
        }
        Piece {
            id: self.crypto.blob_id(&data),
            data,
        }
    }

    /// Reads up to one maximal chunk (plus one byte, to know whether there is more). Content
    /// that fits (most files of a system tree) is cut in one buffer sized by `size_hint`: the
    /// streaming chunker allocates and zeroes a maximal-chunk buffer per stream, which
    /// profiling showed costing 13% of a /usr backup.
    pub fn head(&self, source: &mut dyn Read, size_hint: Option<u64>) -> io::Result<Head> {
        let max = self.chunker.params.max as u64;
        let capacity = size_hint.unwrap_or(64 << 10).min(max + 1);
        let mut buf = Vec::with_capacity(capacity as usize);
        source.take(max + 1).read_to_end(&mut buf)?;
        if buf.len() as u64 > max {
            return Ok(Head::Longer(buf));
        }
        let total = buf.len() as u64;
        let cuts = self.chunker.cuts(&buf);
        let pieces = if cuts.is_empty() {
            // Empty content has no chunks.
            Vec::new()
        } else if cuts.len() == 1 {
            vec![self.piece(buf)]
        } else {
            let mut start = 0;
            cuts.into_iter()
                .map(|end| {
                    let p = self.piece(buf[start..end].to_vec());
                    start = end;
                    p
                })
                .collect()
        };
        Ok(Head::Whole(pieces, total))
    }

    /// Every piece of `source`, in order, one thread: the reference the parallel path must
    /// match (tests only). Returns the number of bytes read.
    #[cfg(test)]
    pub fn each_piece<E>(
        &self,
        source: &mut dyn Read,
        size_hint: Option<u64>,
        emit: &mut dyn FnMut(Piece) -> Result<(), E>,
    ) -> Result<u64, PieceError<E>> {
        match self.head(source, size_hint).map_err(PieceError::Read)? {
            Head::Whole(pieces, total) => {
                for p in pieces {
                    emit(p).map_err(PieceError::Emit)?;
                }
                Ok(total)
            }
            Head::Longer(start) => {
                let mut rest = io::Cursor::new(start).chain(source);
                let mut total = 0u64;
                for chunk in self.chunker.stream(&mut rest) {
                    let data = chunk.map_err(PieceError::Read)?;
                    total += data.len() as u64;
                    emit(self.piece(data)).map_err(PieceError::Emit)?;
                }
                Ok(total)
            }
        }
    }

    /// Like `each_piece`, but content longer than one chunk is cut on a thread of its own
    /// while `threads` others hash the chunks; `emit` still runs on the calling thread, in
    /// order. At most `ahead` chunks wait between the cutter and `emit` (plus one per hashing
    /// thread), so memory stays at a few chunks whatever the content's length.
    pub fn each_piece_parallel<E>(
        &self,
        source: &mut (dyn Read + Send),
        size_hint: Option<u64>,
        threads: usize,
        ahead: usize,
        emit: &mut dyn FnMut(Piece) -> Result<(), E>,
    ) -> Result<u64, PieceError<E>> {
        match self.head(source, size_hint).map_err(PieceError::Read)? {
            Head::Whole(pieces, total) => {
                for p in pieces {
                    emit(p).map_err(PieceError::Emit)?;
                }
                Ok(total)
            }
            Head::Longer(start) => self.rest_parallel(start, source, threads, ahead, emit),
        }
    }

    /// The parallel path for content whose `start` (from `Head::Longer`) was read already.
    pub fn rest_parallel<E>(
        &self,
        start: Vec<u8>,
        source: &mut (dyn Read + Send),
        threads: usize,
        ahead: usize,
        emit: &mut dyn FnMut(Piece) -> Result<(), E>,
    ) -> Result<u64, PieceError<E>> {
        std::thread::scope(|s| {
            // The cutter only ever blocks on `order` (bounded); hashers never block (one reply
            // slot each), so the consumer's wait on the oldest piece always ends.
            let (order_tx, order_rx) = bounded::<io::Result<Receiver<Piece>>>(ahead.max(1));
            let (job_tx, job_rx) = unbounded::<(Vec<u8>, crossbeam_channel::Sender<Piece>)>();
            for _ in 0..threads.max(1) {
                let (jobs, cutter) = (job_rx.clone(), self.clone());
                s.spawn(move || {
                    for (data, reply) in jobs {
                        let _ = reply.send(cutter.piece(data));
                    }
                });
            }
            drop(job_rx);
            let chunker = self.chunker;
            s.spawn(move || {
                let mut rest = io::Cursor::new(start).chain(source);
                for chunk in chunker.stream(&mut rest) {
                    let msg = chunk.map(|data| {
                        let (reply, pending) = bounded(1);
                        let _ = job_tx.send((data, reply));
                        pending
                    });
                    let failed = msg.is_err();
                    if order_tx.send(msg).is_err() || failed {
                        return;
                    }
                }
            });
            let mut total = 0u64;
            for msg in &order_rx {
                let pending = msg.map_err(PieceError::Read)?;
                let piece = pending
                    .recv()
                    .map_err(|_| PieceError::Read(io::Error::other("a hashing thread stopped")))?;
                total += piece.data.len() as u64;
                emit(piece).map_err(PieceError::Emit)?;
            }
            Ok(total)
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::repo::config::ChunkerParams;

    pub(crate) fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// A small chunker (16..256 KiB) so tests cross many chunk boundaries quickly.
    pub(crate) fn cutter() -> Cutter {
        Cutter::new(Chunker::new(ChunkerParams::METADATA, 7), Crypto::plain())
    }

    /// Hands out at most `step` bytes per read, so cut points cannot follow read sizes.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        step: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    /// What the stored content must be: the chunker's cut points over the whole content,
    /// each chunk named by its hash.
    fn reference(c: &Cutter, data: &[u8]) -> Vec<Piece> {
        let mut start = 0;
        c.chunker
            .cuts(data)
            .into_iter()
            .map(|end| {
                let p = c.piece(data[start..end].to_vec());
                start = end;
                p
            })
            .collect()
    }

    #[test]
    fn serial_and_parallel_paths_give_the_reference_pieces() {
        let c = cutter();
        let max = c.chunker.params.max as usize;
        for (n, len) in [0, 1, 5000, max, max + 1, 3 * max + 17, 40 * max / 3]
            .into_iter()
            .enumerate()
        {
            let data = noise(len, n as u64);
            let want = reference(&c, &data);
            let mut serial = Vec::new();
            let total = c
                .each_piece::<()>(&mut &data[..], Some(len as u64), &mut |p| {
                    serial.push(p);
                    Ok(())
                })
                .unwrap();
            assert_eq!(total, len as u64);
            assert!(serial == want, "serial pieces differ for {len} bytes");
            for (threads, ahead, step) in [(1, 1, 4097), (3, 2, 1 << 20), (4, 8, 333)] {
                let mut got = Vec::new();
                let mut src = Trickle {
                    data: data.clone(),
                    pos: 0,
                    step,
                };
                let total = c
                    .each_piece_parallel::<()>(&mut src, None, threads, ahead, &mut |p| {
                        got.push(p);
                        Ok(())
                    })
                    .unwrap();
                assert_eq!(total, len as u64);
                assert!(
                    got == want,
                    "parallel pieces differ for {len} bytes, {threads} threads"
                );
            }
        }
    }

    struct FailAfter(usize);

    impl Read for FailAfter {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0 == 0 {
                return Err(io::Error::other("disk on fire"));
            }
            let n = buf.len().min(self.0);
            buf[..n].fill(7);
            self.0 -= n;
            Ok(n)
        }
    }

    #[test]
    fn read_errors_and_emit_errors_stop_the_parallel_path() {
        let c = cutter();
        let max = c.chunker.params.max as usize;
        let r = c.each_piece_parallel::<()>(&mut FailAfter(5 * max), None, 2, 2, &mut |_| Ok(()));
        match r {
            Err(PieceError::Read(e)) => assert_eq!(e.to_string(), "disk on fire"),
            other => panic!("expected the read error, got {:?}", other.map(|_| ())),
        }
        let data = noise(20 * max, 3);
        let mut seen = 0;
        let r = c.each_piece_parallel(&mut &data[..], None, 2, 2, &mut |_| {
            seen += 1;
            if seen == 3 {
                Err("full")
            } else {
                Ok(())
            }
        });
        assert!(matches!(r, Err(PieceError::Emit("full"))));
        assert_eq!(seen, 3, "emit was called after it failed");
    }
}
