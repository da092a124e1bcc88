//! Item streams on top of blobs: the encoded records (see `codec`) are cut with a small
//! content-defined chunker into metadata blobs, so archives of similar trees share most of
//! their metadata and a huge tree never needs its whole listing in memory.
//!
//! This module does no I/O itself: the writer hands finished blobs to a `put` closure and the
//! reader asks a `get` closure for blobs by id.

use super::chunker::Chunker;
use super::{ChunkId, RepoError};
use crate::item::codec::{self, CodecError};
use crate::item::Item;

pub struct ItemStreamWriter {
    chunker: Chunker,
    buf: Vec<u8>,
    blobs: Vec<ChunkId>,
    count: u64,
}

impl ItemStreamWriter {
    pub fn new(chunker: Chunker) -> Self {
        ItemStreamWriter {
            chunker,
            buf: codec::header(),
            blobs: Vec::new(),
            count: 0,
        }
    }

    pub fn push<F>(&mut self, item: &Item, put: &mut F) -> Result<(), RepoError>
    where
        F: FnMut(Vec<u8>) -> Result<ChunkId, RepoError>,
    {
        codec::encode_record(item, &mut self.buf).map_err(|e| RepoError::Invalid(e.to_string()))?;
        self.count += 1;
        // Cut only once there is room for several maximal chunks: every cut but the last is
        // final (it does not depend on bytes that have not arrived yet).
        if self.buf.len() >= 4 * self.chunker.params.max as usize {
            self.emit(false, put)?;
        }
        Ok(())
    }

    /// Returns the stream's blob ids and its item count.
    pub fn finish<F>(mut self, put: &mut F) -> Result<(Vec<ChunkId>, u64), RepoError>
    where
        F: FnMut(Vec<u8>) -> Result<ChunkId, RepoError>,
    {
        self.emit(true, put)?;
        Ok((self.blobs, self.count))
    }

    fn emit<F>(&mut self, all: bool, put: &mut F) -> Result<(), RepoError>
    where
        F: FnMut(Vec<u8>) -> Result<ChunkId, RepoError>,
    {
        let cuts = self.chunker.cuts(&self.buf);
        let keep = if all {
            cuts.len()
        } else {
            cuts.len().saturating_sub(1)
        };
        let mut start = 0;
        for &end in &cuts[..keep] {
            self.blobs.push(put(self.buf[start..end].to_vec())?);
            start = end;
        }
        self.buf.drain(..start);
        Ok(())
    }
}

/// Iterates the items of a stream, fetching its blobs one at a time.
pub struct ItemStreamReader<G> {
    get: G,
    blobs: std::vec::IntoIter<ChunkId>,
    buf: Vec<u8>,
    pos: usize,
    header_checked: bool,
    failed: bool,
    /// Items the archive file says the stream holds (`expect_items`), and items read so far.
    expected: Option<u64>,
    seen: u64,
}

impl<G> ItemStreamReader<G>
where
    G: FnMut(&ChunkId) -> Result<Vec<u8>, RepoError>,
{
    pub fn new(blobs: Vec<ChunkId>, get: G) -> Self {
        ItemStreamReader {
            get,
            blobs: blobs.into_iter(),
            buf: Vec::new(),
            pos: 0,
            header_checked: false,
            failed: false,
            expected: None,
            seen: 0,
        }
    }

    /// Makes a stream that ends before `n` items, or holds more, an error: a stream cut at a
    /// record boundary (its last blobs dropped from the list) decodes cleanly otherwise.
    pub fn expect_items(mut self, n: u64) -> Self {
        self.expected = Some(n);
        self
    }

    fn counted(&mut self, item: Item) -> Result<Option<Item>, RepoError> {
        self.seen += 1;
        match self.expected {
            Some(n) if self.seen > n => Err(RepoError::corrupt(
                "item stream",
                format!("holds more than the {n} items its archive records"),
            )),
            _ => Ok(Some(item)),
        }
    }

    fn ended(&self) -> Result<Option<Item>, RepoError> {
        match self.expected {
            Some(n) if self.seen != n => Err(RepoError::corrupt(
                "item stream",
                format!(
                    "ends after {} of the {n} items its archive records (truncated)",
                    self.seen
                ),
            )),
            _ => Ok(None),
        }
    }

    fn next_item(&mut self) -> Result<Option<Item>, RepoError> {
        let corrupt = |e: CodecError| RepoError::corrupt("item stream", e.to_string());
        loop {
            if !self.header_checked && self.buf.len() >= 5 {
                codec::check_header(&self.buf).map_err(corrupt)?;
                self.pos = 5;
                self.header_checked = true;
            }
            if self.header_checked {
                let rest = self.buf.get(self.pos..).unwrap_or_default();
                if let Some((item, used)) = codec::decode_record(rest).map_err(corrupt)? {
                    self.pos += used;
                    return self.counted(item);
                }
            }
            match self.blobs.next() {
                Some(id) => {
                    let bytes = (self.get)(&id)?;
                    self.buf.drain(..self.pos);
                    self.pos = 0;
                    self.buf.extend_from_slice(&bytes);
                }
                None if self.buf.len() == self.pos && self.header_checked => return self.ended(),
                None if self.buf.is_empty() && !self.header_checked => return self.ended(),
                None => return Err(RepoError::corrupt("item stream", "ends inside a record")),
            }
        }
    }
}

impl<G> Iterator for ItemStreamReader<G>
where
    G: FnMut(&ChunkId) -> Result<Vec<u8>, RepoError>,
{
    type Item = Result<Item, RepoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let r = self.next_item().transpose();
        if matches!(r, Some(Err(_))) {
            self.failed = true;
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::codec::tests::arb_item;
    use crate::repo::config::ChunkerParams;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn roundtrip(items: &[Item]) -> (Vec<Item>, usize) {
        let mut store: HashMap<ChunkId, Vec<u8>> = HashMap::new();
        let small = ChunkerParams {
            min: 64,
            avg: 256,
            max: 1024,
        };
        let mut w = ItemStreamWriter::new(Chunker::new(small, 1));
        let mut put = |b: Vec<u8>| {
            let id = ChunkId::of(&b);
            store.insert(id, b);
            Ok(id)
        };
        for it in items {
            w.push(it, &mut put).unwrap();
        }
        let (ids, count) = w.finish(&mut put).unwrap();
        assert_eq!(count as usize, items.len());
        let n = ids.len();
        let r = ItemStreamReader::new(ids, |id: &ChunkId| Ok(store[id].clone()));
        (r.map(|i| i.unwrap()).collect(), n)
    }

    proptest! {
        #[test]
        fn stream_round_trip(items in proptest::collection::vec(arb_item(), 0..40)) {
            let (got, _) = roundtrip(&items);
            prop_assert_eq!(got, items);
        }
    }

    #[test]
    fn big_streams_span_many_blobs() {
        let items: Vec<Item> = (0..2000)
            .map(|i| Item::new(format!("dir/file-{i}"), crate::item::Kind::File))
            .collect();
        let (got, blobs) = roundtrip(&items);
        assert_eq!(got, items);
        assert!(blobs > 10);
    }

    #[test]
    fn a_stream_cut_at_a_record_boundary_is_detected_by_its_count() {
        // One whole record per blob (the header in the first), so dropping the last blob
        // leaves a stream that decodes cleanly: only the archive's item count tells.
        let mut blobs: Vec<Vec<u8>> = (0..3)
            .map(|i| {
                let mut b = Vec::new();
                let it = Item::new(format!("f{i}"), crate::item::Kind::File);
                codec::encode_record(&it, &mut b).unwrap();
                b
            })
            .collect();
        blobs[0].splice(0..0, codec::header());
        let ids: Vec<ChunkId> = (0..3u8).map(|i| ChunkId([i; 32])).collect();
        let get = |id: &ChunkId| Ok(blobs[id.0[0] as usize].clone());
        let read = |ids: &[ChunkId], n: u64| -> Result<Vec<Item>, RepoError> {
            ItemStreamReader::new(ids.to_vec(), get)
                .expect_items(n)
                .collect()
        };
        assert_eq!(read(&ids, 3).unwrap().len(), 3);
        let cut: Result<Vec<_>, _> = ItemStreamReader::new(ids[..2].to_vec(), get).collect();
        assert_eq!(cut.unwrap().len(), 2, "the cut stream alone looks whole");
        let err = read(&ids[..2], 3).unwrap_err();
        assert!(
            err.is_corruption() && err.to_string().contains("truncated"),
            "{err}"
        );
        let err = read(&ids, 2).unwrap_err();
        assert!(err.to_string().contains("more than the 2 items"), "{err}");
    }

    #[test]
    fn truncated_stream_is_corruption() {
        let mut w = ItemStreamWriter::new(Chunker::new(ChunkerParams::METADATA, 0));
        let mut store = Vec::new();
        let mut put = |b: Vec<u8>| {
            store.push(b[..b.len() - 1].to_vec());
            Ok(ChunkId([0; 32]))
        };
        w.push(&Item::new("a", crate::item::Kind::Dir), &mut put)
            .unwrap();
        let (ids, _) = w.finish(&mut put).unwrap();
        let mut r = ItemStreamReader::new(ids, |_: &ChunkId| Ok(store[0].clone()));
        assert!(r.next().unwrap().unwrap_err().is_corruption());
        assert!(r.next().is_none());
    }
}
