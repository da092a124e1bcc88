//! Reading a VMA stream as it arrives (a pipe from vzdump): the header first, then one
//! extent at a time, each cluster handed to the caller with its device and position. Memory
//! is one extent (at most 59 clusters) whatever the stream's size. Clusters come in any order
//! and interleaved across devices, as QEMU sends them; `finish` checks, as `vma verify`
//! does, that every cluster of every device came exactly once.

use super::{
    header_size, parse_extent_header, parse_header, BlockInfo, Header, VmaError, BLOCK,
    BLOCKS_PER_CLUSTER, CLUSTER, EXTENT_HEADER, HEADER_FIXED,
};
use std::io::{ErrorKind, Read};

/// One cluster of an extent: the blocks its mask names, in order.
pub struct Cluster<'a> {
    pub dev_id: u8,
    /// Byte offset in the device (`cluster number × 64 KiB`).
    pub offset: u64,
    pub mask: u16,
    pub data: &'a [u8],
}

impl Cluster<'_> {
    /// The whole 64 KiB cluster into `out`, zeros where the mask has no block.
    pub fn expand(&self, out: &mut [u8]) {
        let mut from = self.data.chunks_exact(BLOCK);
        for (i, block) in out
            .chunks_exact_mut(BLOCK)
            .take(BLOCKS_PER_CLUSTER)
            .enumerate()
        {
            match (self.mask >> i) & 1 {
                1 => block.copy_from_slice(from.next().unwrap_or(&[0; BLOCK])),
                _ => block.fill(0),
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Vma(#[from] VmaError),
    #[error("reading the VMA stream: {0}")]
    Io(std::io::Error),
}

pub struct VmaReader<R> {
    input: R,
    header: Header,
    /// Bytes read so far (for messages).
    offset: u64,
    /// Per device (by index in `header.devices`), one bit per cluster seen.
    seen: Vec<Vec<u64>>,
    data: Vec<u8>,
}

impl<R: Read> VmaReader<R> {
    pub fn new(mut input: R) -> Result<Self, ReadError> {
        let mut bytes = vec![0u8; HEADER_FIXED];
        read_full(&mut input, &mut bytes, 0)?
            .then_some(())
            .ok_or(VmaError::Truncated(0))?;
        let size = header_size(&bytes)?;
        bytes.resize(size, 0);
        read_full(&mut input, &mut bytes[HEADER_FIXED..], HEADER_FIXED as u64)?
            .then_some(())
            .ok_or(VmaError::Truncated(HEADER_FIXED as u64))?;
        let header = parse_header(&bytes)?;
        let seen = header
            .devices
            .iter()
            .map(|d| vec![0u64; d.clusters().div_ceil(64) as usize])
            .collect();
        Ok(VmaReader {
            input,
            header,
            offset: size as u64,
            seen,
            data: Vec::new(),
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Reads the next extent and hands each of its clusters to `each`; `false` at the end of
    /// the stream.
    pub fn next_extent<E: From<ReadError>>(
        &mut self,
        each: &mut dyn FnMut(Cluster<'_>) -> Result<(), E>,
    ) -> Result<bool, E> {
        let at = self.offset;
        let mut h = [0u8; EXTENT_HEADER];
        if !read_full(&mut self.input, &mut h, at)? {
            return Ok(false);
        }
        let infos = parse_extent_header(&h, &self.header.uuid, at).map_err(ReadError::from)?;
        let total: usize = infos.iter().map(BlockInfo::data_len).sum();
        for info in &infos {
            self.mark(info, at).map_err(ReadError::from)?;
        }
        self.data.resize(total, 0);
        let data_at = at + EXTENT_HEADER as u64;
        if !read_full(&mut self.input, &mut self.data, data_at)? {
            return Err(ReadError::from(VmaError::Truncated(data_at)).into());
        }
        self.offset = data_at + total as u64;
        let mut pos = 0;
        for info in &infos {
            let len = info.data_len();
            each(Cluster {
                dev_id: info.dev_id,
                offset: u64::from(info.cluster) * CLUSTER,
                mask: info.mask,
                data: &self.data[pos..pos + len],
            })?;
            pos += len;
        }
        Ok(true)
    }

    /// Records a cluster as seen: its device must exist, the cluster lie inside it, and not
    /// have come before.
    fn mark(&mut self, info: &BlockInfo, at: u64) -> Result<(), VmaError> {
        let bad = |reason: String| VmaError::Extent { offset: at, reason };
        let Some(idx) = self.header.devices.iter().position(|d| d.id == info.dev_id) else {
            return Err(bad(format!(
                "names device {}, which the header does not",
                info.dev_id
            )));
        };
        let dev = &self.header.devices[idx];
        let n = u64::from(info.cluster);
        if n >= dev.clusters() {
            return Err(bad(format!("cluster {n} is past the end of {}", dev.name)));
        }
        let (word, bit) = ((n / 64) as usize, n % 64);
        let bits = &mut self.seen[idx][word];
        if *bits & (1 << bit) != 0 {
            return Err(bad(format!("cluster {n} of {} comes twice", dev.name)));
        }
        *bits |= 1 << bit;
        Ok(())
    }

    /// After the last extent: every cluster of every device must have come.
    pub fn finish(&self) -> Result<(), VmaError> {
        for (dev, seen) in self.header.devices.iter().zip(&self.seen) {
            for n in 0..dev.clusters() {
                if seen[(n / 64) as usize] & (1 << (n % 64)) == 0 {
                    return Err(VmaError::MissingCluster {
                        device: dev.name.clone(),
                        cluster: n,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Fills `buf`; `false` if the stream ended before its first byte, an error if it ended
/// inside it.
fn read_full(input: &mut impl Read, buf: &mut [u8], at: u64) -> Result<bool, ReadError> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(VmaError::Truncated(at + got as u64).into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    Ok(true)
}
