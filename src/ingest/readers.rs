//! Reading many files at once, in order. A pool of threads opens, reads, cuts and hashes the
//! files queued in a window; the caller takes each entry back in the order it was queued and
//! hands its pieces to the archive, so both cores work on new and on deduplicated data while
//! the archive (item order, chunk lists, blob put order) stays exactly what one thread makes.
//!
//! ```text
//! caller: push(entry, file?) ──jobs──> reader threads: open, read, cut, hash
//!    ^                                       │ one reply channel per file
//!    └── pop (oldest first) <────────────────┘
//! ```
//! Memory is bounded by the window: at most `max_entries` queued entries and `max_bytes` of
//! their (capped) sizes; a file longer than one chunk streams through a reply channel of
//! `REPLY_AHEAD` messages. Deadlock-free: jobs are taken in queue order, so the oldest entry's
//! file is being read or done whenever the caller waits for it, and the job queue itself
//! never blocks the caller.

use super::pieces::{Cutter, Head, Piece, PieceError};
use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use std::collections::VecDeque;
use std::io::{self, Read};
use std::thread::JoinHandle;

/// Messages a file's reply channel holds before its reader waits for the caller.
const REPLY_AHEAD: usize = 4;
/// Chunks of a long file cut ahead of its hashing threads.
const CUT_AHEAD: usize = 4;

/// A file's content as the reader threads read it.
pub trait Source: Read + Send {
    /// Whether the file changed while it was read (checked after the last read).
    fn changed(&self) -> bool;
}

/// Opens the source on a reader thread.
pub type Opener = Box<dyn FnOnce() -> io::Result<Box<dyn Source>> + Send>;

enum Msg {
    Pieces(Vec<Piece>),
    End { changed: bool },
    OpenFailed(io::Error),
    ReadFailed(io::Error),
}

struct Job {
    open: Opener,
    size_hint: Option<u64>,
    reply: Sender<Msg>,
}

/// One queued file being read: first `open_error`, then its pieces as an iterator.
pub struct Pending {
    rx: Receiver<Msg>,
    /// Pieces received and not yet handed out, in reverse order.
    buffered: Vec<Piece>,
    /// A read error met by `open_error`, for the iterator to return.
    failed: Option<io::Error>,
    changed: bool,
    done: bool,
}

impl Pending {
    fn next_msg(&mut self) -> Msg {
        self.rx.recv().unwrap_or_else(|_| {
            Msg::ReadFailed(io::Error::other("a reader thread stopped unexpectedly"))
        })
    }

    /// Waits until the file was opened; the error if it could not be.
    pub fn open_error(&mut self) -> Option<io::Error> {
        match self.next_msg() {
            Msg::OpenFailed(e) => {
                self.done = true;
                Some(e)
            }
            msg => {
                if let Some(Err(e)) = self.take(msg) {
                    self.failed = Some(e);
                }
                None
            }
        }
    }

    fn take(&mut self, msg: Msg) -> Option<io::Result<()>> {
        match msg {
            Msg::Pieces(mut p) => {
                p.reverse();
                self.buffered = p;
                Some(Ok(()))
            }
            Msg::End { changed } => {
                self.changed = changed;
                self.done = true;
                None
            }
            Msg::OpenFailed(e) | Msg::ReadFailed(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }

    /// True once the last piece was taken and the file was found changed while it was read.
    pub fn changed(&self) -> bool {
        self.changed
    }
}

impl Iterator for Pending {
    type Item = io::Result<Piece>;

    fn next(&mut self) -> Option<io::Result<Piece>> {
        if let Some(e) = self.failed.take() {
            return Some(Err(e));
        }
        loop {
            if let Some(p) = self.buffered.pop() {
                return Some(Ok(p));
            }
            if self.done {
                return None;
            }
            let msg = self.next_msg();
            if let Err(e) = self.take(msg)? {
                return Some(Err(e));
            }
        }
    }
}

struct Slot<T> {
    entry: T,
    read: Option<Pending>,
    weight: u64,
}

/// The window of queued entries and the reader threads behind it.
pub struct OrderedReads<T> {
    // Field order matters: the slots (and their reply channels) drop before the readers are
    // joined, so no reader is left waiting on a full reply channel.
    slots: VecDeque<Slot<T>>,
    bytes: u64,
    max_entries: usize,
    max_bytes: u64,
    jobs: Option<Sender<Job>>,
    /// To drop the jobs not started yet when the caller gives up (an error, an interrupt).
    queued: Receiver<Job>,
    workers: Vec<JoinHandle<()>>,
}

impl<T> OrderedReads<T> {
    /// `threads` readers; a long file's chunks are hashed on `threads` more while it is read.
    pub fn new(cutter: Cutter, threads: usize, max_entries: usize, max_bytes: u64) -> Self {
        let threads = threads.max(1);
        let (jobs, rx) = unbounded::<Job>();
        let workers = (0..threads)
            .map(|_| {
                let (rx, cutter) = (rx.clone(), cutter.clone());
                std::thread::spawn(move || {
                    for job in rx {
                        read_one(&cutter, job, threads);
                    }
                })
            })
            .collect();
        OrderedReads {
            slots: VecDeque::new(),
            bytes: 0,
            max_entries: max_entries.max(1),
            max_bytes,
            jobs: Some(jobs),
            queued: rx,
            workers,
        }
    }

    /// Queues an entry; with `file` (opener, size hint, weight in bytes for the window) its
    /// content is read in the background.
    pub fn push(&mut self, entry: T, file: Option<(Opener, Option<u64>, u64)>) {
        let mut weight = 0;
        let read = file.map(|(open, size_hint, w)| {
            weight = w;
            let (reply, rx) = bounded(REPLY_AHEAD);
            if let Some(jobs) = &self.jobs {
                let _ = jobs.send(Job {
                    open,
                    size_hint,
                    reply,
                });
            }
            Pending {
                rx,
                buffered: Vec::new(),
                failed: None,
                changed: false,
                done: false,
            }
        });
        self.bytes += weight;
        self.slots.push_back(Slot {
            entry,
            read,
            weight,
        });
    }

    /// The oldest entry if the window is over one of its limits (call after each `push`).
    pub fn pop_if_full(&mut self) -> Option<(T, Option<Pending>)> {
        let full = self.slots.len() > self.max_entries || self.bytes > self.max_bytes;
        if full {
            self.pop()
        } else {
            None
        }
    }

    /// The oldest entry, to drain the window at the end.
    pub fn pop(&mut self) -> Option<(T, Option<Pending>)> {
        let slot = self.slots.pop_front()?;
        self.bytes -= slot.weight;
        Some((slot.entry, slot.read))
    }
}

impl<T> Drop for OrderedReads<T> {
    fn drop(&mut self) {
        self.slots.clear();
        self.jobs = None;
        while self.queued.try_recv().is_ok() {}
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Reads one file into its reply channel. A closed channel (the caller gave up on the entry)
/// stops the read.
fn read_one(cutter: &Cutter, job: Job, hash_threads: usize) {
    let reply = job.reply;
    let mut source = match (job.open)() {
        Ok(s) => s,
        Err(e) => {
            let _ = reply.send(Msg::OpenFailed(e));
            return;
        }
    };
    let result = match cutter.head(&mut source, job.size_hint) {
        Ok(Head::Whole(pieces, _)) => reply.send(Msg::Pieces(pieces)).map_err(|_| None),
        Ok(Head::Longer(start)) => cutter
            .rest_parallel(start, &mut source, hash_threads, CUT_AHEAD, &mut |p| {
                reply.send(Msg::Pieces(vec![p]))
            })
            .map(drop)
            .map_err(|e| match e {
                PieceError::Read(e) => Some(e),
                PieceError::Emit(_) => None,
            }),
        Err(e) => Err(Some(e)),
    };
    let _ = match result {
        Ok(()) => reply.send(Msg::End {
            changed: source.changed(),
        }),
        Err(Some(e)) => reply.send(Msg::ReadFailed(e)),
        Err(None) => Ok(()),
    };
}

#[cfg(test)]
mod tests {
    use super::super::pieces::tests::{cutter, noise};
    use super::*;
    use std::time::Duration;

    struct Fake {
        data: io::Cursor<Vec<u8>>,
        fail_at: Option<u64>,
        delay_us: u64,
        changed: bool,
    }

    impl Read for Fake {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            std::thread::sleep(Duration::from_micros(self.delay_us));
            if self.fail_at.is_some_and(|f| self.data.position() >= f) {
                return Err(io::Error::other("bad sector"));
            }
            let n = buf.len().min(64 << 10);
            self.data.read(&mut buf[..n])
        }
    }

    impl Source for Fake {
        fn changed(&self) -> bool {
            self.changed
        }
    }

    #[derive(Debug, PartialEq)]
    enum Outcome {
        NoFile,
        OpenFailed,
        Read(Vec<Piece>, bool),
        ReadFailed(usize),
    }

    fn summary(o: &Outcome) -> String {
        match o {
            Outcome::Read(p, changed) => format!(
                "read {:?} changed {changed}",
                p.iter().map(|p| p.data.len()).collect::<Vec<_>>()
            ),
            other => format!("{:?}", std::mem::discriminant(other)),
        }
    }

    /// Random entries: no file, unopenable, good (0 bytes to several chunks), failing midway.
    #[test]
    fn entries_come_back_in_order_with_the_serial_pieces() {
        let c = cutter();
        let max = c.chunker.params.max as u64;
        let mut x = 0x1234_5678_9abc_def1u64;
        let mut rnd = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for (threads, max_entries, max_bytes) in [(1, 1, 0), (2, 3, 2 * max), (4, 64, 1 << 30)] {
            let mut reads = OrderedReads::new(c.clone(), threads, max_entries, max_bytes);
            let mut want = Vec::new();
            let mut got = Vec::new();
            let take = |got: &mut Vec<Outcome>, (i, read): (usize, Option<Pending>)| {
                assert_eq!(i, got.len(), "entries out of order");
                let Some(mut p) = read else {
                    got.push(Outcome::NoFile);
                    return;
                };
                if p.open_error().is_some() {
                    got.push(Outcome::OpenFailed);
                    return;
                }
                let mut pieces = Vec::new();
                for r in &mut p {
                    match r {
                        Ok(piece) => pieces.push(piece),
                        Err(e) => {
                            assert_eq!(e.to_string(), "bad sector");
                            got.push(Outcome::ReadFailed(pieces.len()));
                            return;
                        }
                    }
                }
                got.push(Outcome::Read(pieces, p.changed()));
            };
            for i in 0..60usize {
                let kind = rnd(10);
                let len = match rnd(4) {
                    0 => 0,
                    1 => rnd(5000),
                    2 => rnd(max + 2),
                    _ => rnd(6 * max),
                };
                let data = noise(len as usize, i as u64);
                let changed = rnd(5) == 0;
                let delay_us = rnd(300);
                let file: Option<(Opener, Option<u64>, u64)> = match kind {
                    0 => {
                        want.push(Outcome::NoFile);
                        None
                    }
                    1 => {
                        want.push(Outcome::OpenFailed);
                        Some((
                            Box::new(|| Err(io::Error::other("permission denied"))),
                            None,
                            0,
                        ))
                    }
                    k => {
                        let fail_at = (k == 2 && len > 0).then(|| rnd(len));
                        let mut serial = Vec::new();
                        let src = fail_at.map_or(&data[..], |f| &data[..f as usize]);
                        c.each_piece::<()>(&mut &src[..], None, &mut |p| {
                            serial.push(p);
                            Ok(())
                        })
                        .unwrap();
                        want.push(match fail_at {
                            // Pieces before the failure may or may not have been handed out:
                            // the serial cut of the prefix ends with a shorter last chunk.
                            Some(_) => Outcome::ReadFailed(usize::MAX),
                            None => Outcome::Read(serial, changed),
                        });
                        let fake = Fake {
                            data: io::Cursor::new(data),
                            fail_at,
                            delay_us,
                            changed,
                        };
                        Some((
                            Box::new(move || Ok(Box::new(fake) as Box<dyn Source>)),
                            Some(len),
                            len.min(4 * max),
                        ))
                    }
                };
                reads.push(i, file);
                while let Some(e) = reads.pop_if_full() {
                    take(&mut got, e);
                }
            }
            while let Some(e) = reads.pop() {
                take(&mut got, e);
            }
            assert_eq!(got.len(), want.len());
            for (n, (g, w)) in got.iter().zip(&want).enumerate() {
                match (g, w) {
                    (Outcome::ReadFailed(_), Outcome::ReadFailed(_)) => {}
                    _ => assert!(
                        g == w,
                        "entry {n} differs ({threads} threads): {} vs {}",
                        summary(g),
                        summary(w)
                    ),
                }
            }
        }
    }

    #[test]
    fn dropping_a_full_window_stops_the_readers() {
        let c = cutter();
        let max = c.chunker.params.max as usize;
        let mut reads = OrderedReads::new(c, 2, 100, u64::MAX);
        for i in 0..6u64 {
            let data = noise(20 * max, i);
            let fake = Fake {
                data: io::Cursor::new(data),
                fail_at: None,
                delay_us: 0,
                changed: false,
            };
            reads.push(
                i,
                Some((
                    Box::new(move || Ok(Box::new(fake) as Box<dyn Source>)),
                    None,
                    0,
                )),
            );
        }
        // Readers are now blocked on full reply channels nobody drains; drop must not hang.
        std::thread::sleep(Duration::from_millis(50));
        drop(reads);
    }
}
