//! Content-defined chunking (FastCDC v2020, normalization level 1). In encrypted repositories
//! the gear table is seeded from the master key so chunk boundaries do not fingerprint content.
//! The same parameters and seed always give the same cut points, however the input arrives.

use super::config::ChunkerParams;
use fastcdc::v2020::{FastCDC, Normalization, StreamCDC};
use std::io::{self, Read};

#[derive(Clone, Copy, Debug)]
pub struct Chunker {
    pub params: ChunkerParams,
    pub seed: u64,
}

impl Chunker {
    pub fn new(params: ChunkerParams, seed: u64) -> Self {
        Chunker { params, seed }
    }

    /// Chunks a stream; each item is one chunk's bytes.
    pub fn stream<R: Read>(&self, source: R) -> impl Iterator<Item = io::Result<Vec<u8>>> {
        let p = self.params;
        StreamCDC::with_level_and_seed(
            source,
            p.min as usize,
            p.avg as usize,
            p.max as usize,
            Normalization::Level1,
            self.seed,
        )
        .map(|r| {
            r.map(|c| c.data).map_err(|e| match e {
                fastcdc::v2020::Error::IoError(e) => e,
                other => io::Error::other(other.to_string()),
            })
        })
    }

    /// Cut points (chunk end offsets) of an in-memory buffer.
    pub fn cuts(&self, buf: &[u8]) -> Vec<usize> {
        let p = self.params;
        FastCDC::with_level_and_seed(
            buf,
            p.min as usize,
            p.avg as usize,
            p.max as usize,
            Normalization::Level1,
            self.seed,
        )
        .map(|c| c.offset + c.length)
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out at most `step` bytes per call.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn pseudo_random(n: usize) -> Vec<u8> {
        let mut x: u64 = 0x9E3779B97F4A7C15;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn cut_points_do_not_depend_on_read_sizes() {
        let data = pseudo_random(6 << 20);
        let chunker = Chunker::new(ChunkerParams::METADATA, 42);
        let reference: Vec<Vec<u8>> = chunker.stream(&data[..]).map(|c| c.unwrap()).collect();
        assert!(reference.len() > 20);
        for step in [1usize << 20, 4097, 1] {
            let src = if step == 1 {
                &data[..1 << 20]
            } else {
                &data[..]
            };
            let got: Vec<Vec<u8>> = chunker
                .stream(Trickle { data: src, step })
                .map(|c| c.unwrap())
                .collect();
            let want: Vec<Vec<u8>> = chunker.stream(src).map(|c| c.unwrap()).collect();
            assert_eq!(got, want, "step {step}");
        }
        let ends = chunker.cuts(&data);
        let mut pos = 0;
        for (c, end) in reference.iter().zip(&ends) {
            pos += c.len();
            assert_eq!(pos, *end);
        }
    }

    #[test]
    fn seed_changes_cut_points() {
        let data = pseudo_random(4 << 20);
        let a = Chunker::new(ChunkerParams::METADATA, 0).cuts(&data);
        let b = Chunker::new(ChunkerParams::METADATA, 0xdead_beef).cuts(&data);
        assert_ne!(a, b);
    }
}
