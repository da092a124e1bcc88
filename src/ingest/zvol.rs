//! A zvol's `zfs send` stream turned into a disk image entry of fixed [`IMAGE_CHUNK`]s, the
//! same shape as a VMA drive (`disk.rs`). A full stream carries every allocated block; an
//! incremental one (`-i #bookmark`) only the blocks rewritten since the bookmark. A chunk no
//! record touches is the previous archive's chunk, taken over unread; a touched chunk starts
//! from the previous chunk's bytes (read back from the repository, verified) and gets the
//! stream's blocks and holes applied, so only changed blocks are read from the pool.
//!
//! Records arrive in increasing offset order (ZFS-SEND-FACTS §2), except the tail FREE that
//! follows the OBJECT record and points ahead; ranges ahead of the chunk being assembled wait
//! in a list. Memory: one chunk being assembled, whatever the volume's size. A record that
//! goes back before that chunk is refused rather than buffered.

use super::disk::{DiskAssembler, DiskError, DiskStats, IMAGE_CHUNK};
use super::ArchiveBuilder;
use crate::item::{ChunkRef, Item, Timestamp};
use crate::zfs::send::{Event, SendStreamReader};
use std::io::Read;
use std::ops::Range;

/// The previous backup an incremental stream applies to.
pub struct SendBase<'a> {
    /// The guid of the bookmark's snapshot: BEGIN's `drr_fromguid` must be this.
    pub from_guid: u64,
    /// The previous archive's chunks of this drive by index (`disk::chunks_by_index`).
    pub chunks: &'a [Option<ChunkRef>],
}

/// What a run took from the stream, beside [`DiskStats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SendFigures {
    /// Bytes of the `zfs send` stream.
    pub stream_bytes: u64,
    /// Bytes of blocks the stream carried (inside the volume).
    pub written: u64,
    /// Chunks assembled anew (touched by a WRITE or a partial FREE).
    pub touched_chunks: u64,
    /// `volblocksize` from the OBJECT record, 0 if the stream had none.
    pub block_size: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum ZvolError {
    /// The stream is unreadable, not the one expected, or out of order: a full read may
    /// still work.
    #[error("{0}")]
    Stream(String),
    /// A chunk of the previous archive could not be read back: a full read may still work.
    #[error("{0}")]
    Base(String),
    /// Storing failed: the run cannot go on.
    #[error(transparent)]
    Store(#[from] DiskError),
    #[error("interrupted")]
    Interrupted,
}

/// Reads the previous archive's bytes of one chunk (verified by the repository).
pub type FetchChunk<'f> = dyn FnMut(&ChunkRef) -> Result<Vec<u8>, String> + 'f;

/// Ingests the send stream of `pool/vol@snap` (its guid `to_guid`, its size `volsize`) as the
/// entry `name` (`drive-scsi0.raw`). With `base` the stream must be incremental from it.
#[allow(clippy::too_many_arguments)]
pub fn ingest_send_stream(
    builder: &mut ArchiveBuilder,
    fetch: &mut FetchChunk,
    stream: &mut dyn Read,
    name: &str,
    volsize: u64,
    to_guid: u64,
    base: Option<&SendBase>,
    mtime: Timestamp,
) -> Result<(Item, DiskStats, SendFigures), ZvolError> {
    let mut reader = SendStreamReader::new(stream);
    let mut state = Assembly {
        disks: DiskAssembler::new([(name.to_string(), volsize)]),
        name,
        volsize,
        count: volsize.div_ceil(IMAGE_CHUNK),
        base,
        settled: 0,
        current: None,
        frees: Vec::new(),
        figures: SendFigures::default(),
    };
    let want_from = base.map_or(0, |b| b.from_guid);
    let stream_err = |e: crate::zfs::send::SendStreamError| ZvolError::Stream(e.to_string());
    let mut ended = false;
    while let Some(event) = reader.next_event().map_err(stream_err)? {
        match event {
            Event::Begin(b) => {
                if b.from_guid != want_from || b.to_guid != to_guid {
                    return Err(ZvolError::Stream(format!(
                        "zfs send stream of {}: goes from guid {} to {}, expected {want_from} to {to_guid}",
                        b.to_name, b.from_guid, b.to_guid
                    )));
                }
            }
            Event::DataObject { block_size } => state.figures.block_size = block_size,
            Event::Write { offset, data } => state.write(builder, fetch, offset, data)?,
            Event::Free { offset, end } => state.free(offset, end)?,
            Event::End { .. } => ended = true,
        }
        if crate::host::interrupt::interrupted() {
            return Err(ZvolError::Interrupted);
        }
    }
    if !ended {
        return Err(ZvolError::Stream("zfs send stream: no END record".into()));
    }
    state.figures.stream_bytes = reader.offset();
    state.settle_until(builder, fetch, state.count)?;
    let mut stats = state.disks.stats().remove(0);
    stats.read = state.figures.written;
    let figures = state.figures.clone();
    let mut item = state.disks.finish(mtime)?.remove(0);
    item.path = name.as_bytes().to_vec();
    Ok((item, stats, figures))
}

struct Assembly<'a> {
    disks: DiskAssembler,
    name: &'a str,
    volsize: u64,
    count: u64,
    base: Option<&'a SendBase<'a>>,
    /// Chunks below this index are settled (stored or taken over); `current` is at or above.
    settled: u64,
    /// The chunk being assembled: its index and bytes.
    current: Option<(u64, Vec<u8>)>,
    /// Holes ahead of `current`, to apply when their chunks come up.
    frees: Vec<Range<u64>>,
    figures: SendFigures,
}

impl Assembly<'_> {
    fn chunk_range(&self, index: u64) -> Range<u64> {
        let start = index * IMAGE_CHUNK;
        start..(start + IMAGE_CHUNK).min(self.volsize)
    }

    fn out_of_order(&self, offset: u64) -> ZvolError {
        ZvolError::Stream(format!(
            "zfs send stream of {}: a record at byte {offset} of the volume comes after byte {}",
            self.name,
            self.settled * IMAGE_CHUNK
        ))
    }

    /// The chunk `index` as the previous backup had it (zeros for a full stream or a hole),
    /// with the pending holes applied.
    fn load(&mut self, fetch: &mut FetchChunk, index: u64) -> Result<Vec<u8>, ZvolError> {
        let range = self.chunk_range(index);
        let len = (range.end - range.start) as usize;
        let previous = self
            .base
            .and_then(|b| b.chunks.get(index as usize).copied().flatten());
        let mut data = match previous {
            None => vec![0u8; len],
            Some(r) => {
                let bytes = fetch(&r).map_err(|e| {
                    ZvolError::Base(format!(
                        "{}: the previous chunk at byte {}: {e}",
                        self.name, range.start
                    ))
                })?;
                if bytes.len() != len {
                    return Err(ZvolError::Base(format!(
                        "{}: the previous chunk at byte {} has {} bytes, not {len}",
                        self.name,
                        range.start,
                        bytes.len()
                    )));
                }
                bytes
            }
        };
        for f in &self.frees {
            let (s, e) = (f.start.max(range.start), f.end.min(range.end));
            if s < e {
                data[(s - range.start) as usize..(e - range.start) as usize].fill(0);
            }
        }
        self.frees.retain(|f| f.end > range.end);
        self.figures.touched_chunks += 1;
        Ok(data)
    }

    /// Stores the chunk being assembled.
    fn flush(&mut self, builder: &mut ArchiveBuilder) -> Result<(), ZvolError> {
        if let Some((index, data)) = self.current.take() {
            self.disks.write(builder, 0, index * IMAGE_CHUNK, &data)?;
            self.settled = index + 1;
        }
        Ok(())
    }

    /// Settles every chunk below `until` that is not being assembled: untouched ones are
    /// taken over, those a pending hole covers whole become holes, partly freed ones are
    /// assembled from the previous bytes.
    fn settle_until(
        &mut self,
        builder: &mut ArchiveBuilder,
        fetch: &mut FetchChunk,
        until: u64,
    ) -> Result<(), ZvolError> {
        self.flush(builder)?;
        while self.settled < until.min(self.count) {
            let index = self.settled;
            let range = self.chunk_range(index);
            let overlap: Vec<Range<u64>> = self
                .frees
                .iter()
                .filter(|f| f.start < range.end && f.end > range.start)
                .cloned()
                .collect();
            if overlap.is_empty() {
                let previous = self
                    .base
                    .and_then(|b| b.chunks.get(index as usize).copied().flatten());
                self.disks.reuse(0, index, previous)?;
            } else if overlap
                .iter()
                .any(|f| f.start <= range.start && f.end >= range.end)
            {
                self.disks.reuse(0, index, None)?;
                self.frees.retain(|f| f.end > range.end);
            } else {
                let data = self.load(fetch, index)?;
                self.disks.write(builder, 0, range.start, &data)?;
            }
            self.settled = index + 1;
        }
        Ok(())
    }

    /// Makes chunk `index` the one being assembled (settling those before it).
    fn enter(
        &mut self,
        builder: &mut ArchiveBuilder,
        fetch: &mut FetchChunk,
        index: u64,
    ) -> Result<(), ZvolError> {
        match &self.current {
            Some((i, _)) if *i == index => return Ok(()),
            Some((i, _)) if *i > index => return Err(self.out_of_order(index * IMAGE_CHUNK)),
            _ => {}
        }
        if index < self.settled {
            return Err(self.out_of_order(index * IMAGE_CHUNK));
        }
        self.settle_until(builder, fetch, index)?;
        let data = self.load(fetch, index)?;
        self.current = Some((index, data));
        Ok(())
    }

    fn write(
        &mut self,
        builder: &mut ArchiveBuilder,
        fetch: &mut FetchChunk,
        offset: u64,
        data: &[u8],
    ) -> Result<(), ZvolError> {
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|e| *e <= self.volsize);
        let Some(end) = end else {
            return Err(ZvolError::Stream(format!(
                "zfs send stream of {}: a block at byte {offset} ends past the volume's {} bytes",
                self.name, self.volsize
            )));
        };
        let mut at = offset;
        while at < end {
            let index = at / IMAGE_CHUNK;
            self.enter(builder, fetch, index)?;
            let range = self.chunk_range(index);
            let n = (end.min(range.end) - at) as usize;
            let src = &data[(at - offset) as usize..][..n];
            if let Some((_, buf)) = &mut self.current {
                let within = (at - range.start) as usize;
                buf[within..within + n].copy_from_slice(src);
            }
            at += n as u64;
        }
        self.figures.written += end - offset;
        Ok(())
    }

    /// A hole: zeros in the chunk being assembled, the rest kept for the chunks ahead.
    fn free(&mut self, offset: u64, end: Option<u64>) -> Result<(), ZvolError> {
        let end = end.unwrap_or(u64::MAX).min(self.volsize);
        if offset >= end {
            return Ok(()); // past the volume (the tail FREE of a full-size volume)
        }
        let mut start = offset;
        if let Some((index, buf)) = &mut self.current {
            let range =
                (*index * IMAGE_CHUNK)..((*index * IMAGE_CHUNK + IMAGE_CHUNK).min(self.volsize));
            if start < range.start {
                return Err(self.out_of_order(start));
            }
            if start < range.end {
                let e = end.min(range.end);
                buf[(start - range.start) as usize..(e - range.start) as usize].fill(0);
                start = e;
            }
        } else if start < self.settled * IMAGE_CHUNK {
            return Err(self.out_of_order(start));
        }
        if start < end {
            self.frees.push(start..end);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::Extent;
    use crate::repo::test_support::unencrypted;
    use crate::repo::Repository;
    use crate::zfs::send::test_support::StreamWriter;

    const C: u64 = IMAGE_CHUNK;
    const END: u64 = u64::MAX;

    /// The bytes an image entry stands for.
    fn image_bytes(repo: &Repository, item: &Item) -> Vec<u8> {
        let mut out = vec![0u8; item.size as usize];
        let extents = item.sparse.clone().unwrap_or_else(|| {
            vec![Extent {
                offset: 0,
                len: item.size,
            }]
        });
        let mut chunks = item.chunks.iter();
        for e in extents {
            let mut at = e.offset;
            while at < e.offset + e.len {
                let c = chunks.next().unwrap();
                let b = repo.read_blob(&c.id).unwrap();
                out[at as usize..at as usize + b.len()].copy_from_slice(&b);
                at += b.len() as u64;
            }
        }
        out
    }

    /// Ingests `stream` and stores the entry as an archive, so that its blobs can be read.
    fn run(
        repo: &mut Repository,
        stream: &[u8],
        volsize: u64,
        to_guid: u64,
        base: Option<&SendBase>,
    ) -> Result<(Item, DiskStats, SendFigures), ZvolError> {
        let out = store(repo, stream, volsize, to_guid, base)?;
        repo.reload_index().unwrap();
        Ok(out)
    }

    fn store(
        repo: &Repository,
        stream: &[u8],
        volsize: u64,
        to_guid: u64,
        base: Option<&SendBase>,
    ) -> Result<(Item, DiskStats, SendFigures), ZvolError> {
        let mut builder = ArchiveBuilder::new(repo, None);
        let mut fetch = |r: &ChunkRef| repo.read_blob(&r.id).map_err(|e| e.to_string());
        let out = ingest_send_stream(
            &mut builder,
            &mut fetch,
            &mut &stream[..],
            "drive-scsi0.raw",
            volsize,
            to_guid,
            base,
            Timestamp::default(),
        )?;
        builder.add_stored(out.0.clone()).unwrap();
        let name = format!("a{to_guid}");
        builder.finish(&name, Default::default()).unwrap();
        Ok(out)
    }

    fn block(fill: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| (fill ^ (i % 251) as u8) | 1).collect()
    }

    #[test]
    fn a_full_stream_is_the_volume_with_holes_and_an_incremental_patches_only_touched_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let mut repo = unencrypted(&dir.path().join("repo"));
        let bs = 16usize << 10;
        let b64 = bs as u64;
        let volsize = 5 * C + 2 * b64; // a short last chunk
                                       // full: data in chunks 0, 2 and 5; the tail FREE comes first and points past the end
        let mut model = vec![0u8; volsize as usize];
        let mut w = StreamWriter::new("rpool/data/vm-201-disk-0@a", 0, 100);
        w.object(1, bs as u32, 5 * C / b64)
            .free(1, 5 * C + b64, END);
        for (off, fill) in [(0u64, 1u8), (b64, 2), (2 * C + 3 * b64, 3), (5 * C, 4)] {
            let b = block(fill, bs);
            model[off as usize..off as usize + bs].copy_from_slice(&b);
            w.write(1, off, &b);
        }
        w.write(2, 0, &[5; 512]); // the volsize ZAP: skipped
        let (item, stats, figs) = run(&mut repo, &w.end(), volsize, 100, None).unwrap();
        assert_eq!(image_bytes(&repo, &item), model);
        assert_eq!(item.chunks.len(), 3, "chunks 1, 3, 4 are holes");
        assert_eq!(figs.written, 4 * b64);
        assert_eq!(stats.read, 4 * b64);
        assert_eq!(figs.block_size, bs as u32);
        let previous = crate::ingest::disk::chunks_by_index(&item, volsize).unwrap();

        // incremental: a partial discard in chunk 0, one block rewritten in chunk 2, a write
        // into the hole chunk 3, chunk 5 discarded whole; chunks 1 and 4 untouched
        let mut w = StreamWriter::new("rpool/data/vm-201-disk-0@b", 100, 200);
        w.object(1, bs as u32, 5 * C / b64)
            .free(1, 5 * C + 2 * b64, END);
        w.free(1, b64, b64);
        model[bs..2 * bs].fill(0);
        let b = block(9, bs);
        w.write(1, 2 * C + 3 * b64, &b);
        model[(2 * C) as usize + 3 * bs..][..bs].copy_from_slice(&b);
        let b = block(7, bs);
        w.write(1, 3 * C, &b);
        model[(3 * C) as usize..][..bs].copy_from_slice(&b);
        w.free(1, 5 * C, 2 * b64);
        model[(5 * C) as usize..].fill(0);
        let base = SendBase {
            from_guid: 100,
            chunks: &previous,
        };
        let (item2, stats2, figs2) = run(&mut repo, &w.end(), volsize, 200, Some(&base)).unwrap();
        assert_eq!(image_bytes(&repo, &item2), model);
        assert_eq!(figs2.touched_chunks, 3, "chunks 0, 2, 3 (5 is freed whole)");
        assert_eq!(stats2.read, 2 * b64);
        let now = crate::ingest::disk::chunks_by_index(&item2, volsize).unwrap();
        assert_eq!(now[1], previous[1], "untouched: the previous blob");
        assert_eq!(now[4], previous[4]);
        assert_eq!(now[5], None, "discarded whole: a hole");
        assert_ne!(now[2], previous[2]);
    }

    #[test]
    fn wrong_guids_order_and_bounds_are_stream_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut repo = unencrypted(&dir.path().join("repo"));
        let volsize = 3 * C;
        let stream = |from: u64, offsets: &[u64]| {
            let mut w = StreamWriter::new("rpool/v@x", from, 5);
            w.object(1, 4096, 0);
            for o in offsets {
                w.write(1, *o, &block(1, 4096));
            }
            w.end()
        };
        let e = run(&mut repo, &stream(0, &[0]), volsize, 6, None).unwrap_err();
        assert!(
            matches!(e, ZvolError::Stream(ref m) if m.contains("expected 0 to 6")),
            "{e}"
        );
        let base = SendBase {
            from_guid: 4,
            chunks: &[None, None, None],
        };
        let e = run(&mut repo, &stream(0, &[0]), volsize, 5, Some(&base)).unwrap_err();
        assert!(
            matches!(e, ZvolError::Stream(_)),
            "a full stream where an incremental is due"
        );
        let e = run(&mut repo, &stream(0, &[2 * C, 0]), volsize, 5, None).unwrap_err();
        assert!(
            matches!(e, ZvolError::Stream(ref m) if m.contains("comes after")),
            "{e}"
        );
        let e = run(&mut repo, &stream(0, &[3 * C]), volsize, 5, None).unwrap_err();
        assert!(
            matches!(e, ZvolError::Stream(ref m) if m.contains("past the volume")),
            "{e}"
        );
        let mut cut = stream(0, &[0]);
        cut.truncate(cut.len() - 10);
        assert!(matches!(
            run(&mut repo, &cut, volsize, 5, None).unwrap_err(),
            ZvolError::Stream(_)
        ));
    }

    #[test]
    fn an_unreadable_previous_chunk_is_a_base_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut repo = unencrypted(&dir.path().join("repo"));
        let bogus = ChunkRef {
            id: crate::id::ChunkId([7; 32]),
            len: C as u32,
        };
        let chunks = [Some(bogus)];
        let base = SendBase {
            from_guid: 1,
            chunks: &chunks,
        };
        let mut w = StreamWriter::new("rpool/v@y", 1, 2);
        w.object(1, 4096, 0).write(1, 0, &block(1, 4096));
        let e = run(&mut repo, &w.end(), C, 2, Some(&base)).unwrap_err();
        assert!(
            matches!(e, ZvolError::Base(ref m) if m.contains("previous chunk at byte 0")),
            "{e}"
        );
    }
}
