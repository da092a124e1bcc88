//! Content-defined chunking (FastCDC v2020, normalization level 1). In encrypted repositories
//! the gear table is seeded from the master key so chunk boundaries do not fingerprint content.
//! The same parameters and seed always give the same cut points, however the input arrives.

use super::config::ChunkerParams;
use fastcdc::v2020::{cut_gear, get_gear_with_seed, select_masks, FastCDC, Normalization};
use std::borrow::Cow;
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
    pub fn stream<R: Read>(&self, source: R) -> Stream<R> {
        let p = self.params;
        let (mask_s, mask_l) = select_masks(p.avg as usize, Normalization::Level1);
        let (gear, gear_ls) = get_gear_with_seed(self.seed);
        Stream {
            source,
            buf: Vec::new(),
            pos: 0,
            len: 0,
            eof: false,
            failed: false,
            params: p,
            masks: [mask_s, mask_l, mask_s << 1, mask_l << 1],
            gear,
            gear_ls,
            zero_cut: None,
        }
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

/// A chunked stream (see `Chunker::stream`). The cut ending a chunk depends only on the
/// `max` bytes from its start, so this cuts a window of `max` bytes at a time from a buffer of
/// two windows, with the same cut points as `Chunker::cuts` over the whole content. A window
/// that is all zeros (the empty space of a disk image) is not scanned: its cut point is the
/// same for every such window and is computed once.
pub struct Stream<R> {
    source: R,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    eof: bool,
    failed: bool,
    params: ChunkerParams,
    /// mask_s, mask_l and both shifted left by one, as FastCDC uses them.
    masks: [u64; 4],
    gear: Cow<'static, [u64]>,
    gear_ls: Cow<'static, [u64]>,
    zero_cut: Option<usize>,
}

impl<R: Read> Stream<R> {
    fn cut(&self, window: &[u8]) -> usize {
        let p = self.params;
        let [s, l, s_ls, l_ls] = self.masks;
        cut_gear(
            window,
            p.min as usize,
            p.avg as usize,
            p.max as usize,
            s,
            l,
            s_ls,
            l_ls,
            &self.gear,
            &self.gear_ls,
        )
        .1
    }

    /// Makes at least one full window available unless the source ends first.
    fn fill(&mut self) -> io::Result<()> {
        let max = self.params.max as usize;
        if self.eof || self.len - self.pos >= max {
            return Ok(());
        }
        if self.buf.is_empty() {
            self.buf = vec![0; 2 * max];
        }
        self.buf.copy_within(self.pos..self.len, 0);
        self.len -= self.pos;
        self.pos = 0;
        while self.len < self.buf.len() {
            match self.source.read(&mut self.buf[self.len..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl<R: Read> Iterator for Stream<R> {
    type Item = io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<io::Result<Vec<u8>>> {
        if self.failed {
            return None;
        }
        if let Err(e) = self.fill() {
            self.failed = true;
            return Some(Err(e));
        }
        let max = self.params.max as usize;
        let avail = self.len - self.pos;
        if avail == 0 {
            return None;
        }
        let window = &self.buf[self.pos..self.pos + avail.min(max)];
        if window.len() == max && is_zero(window) {
            let n = match self.zero_cut {
                Some(n) => n,
                None => {
                    let n = self.cut(&vec![0; max]);
                    self.zero_cut = Some(n);
                    n
                }
            };
            self.pos += n;
            return Some(Ok(vec![0; n]));
        }
        let n = self.cut(window).max(1);
        let data = window[..n].to_vec();
        self.pos += n;
        Some(Ok(data))
    }
}

/// Whether `data` is all zero bytes; quick to say no for ordinary data.
pub fn is_zero(data: &[u8]) -> bool {
    data.chunks(4096)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
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
        crate::ingest::pieces::tests::noise(n, 1)
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
    fn zero_windows_cut_where_the_scan_would() {
        let p = ChunkerParams::METADATA;
        let max = p.max as usize;
        // Data with zero runs shorter than, exactly and much longer than one window, at odd
        // offsets, between noise; the content ends inside a zero run.
        let mut data = Vec::new();
        for (n, zeros) in [10, max - 1, max, max + 3, 5 * max + 77, 3 * max / 2]
            .into_iter()
            .enumerate()
        {
            data.extend(pseudo_random(max / 3 + n * 1001));
            data.extend(std::iter::repeat_n(0u8, zeros));
        }
        for seed in [0, 42, 0xdead_beef_cafe] {
            let chunker = Chunker::new(p, seed);
            let ends = chunker.cuts(&data);
            for step in [1usize << 20, 4093] {
                let mut pos = 0;
                let got: Vec<usize> = chunker
                    .stream(Trickle { data: &data, step })
                    .map(|c| {
                        let c = c.unwrap();
                        assert_eq!(c, data[pos..pos + c.len()], "chunk bytes differ");
                        pos += c.len();
                        pos
                    })
                    .collect();
                assert_eq!(got, ends, "seed {seed}, step {step}");
            }
        }
        assert!(is_zero(&[0; 10000]) && !is_zero(&[0, 0, 1]) && is_zero(&[]));
    }

    #[test]
    fn read_errors_end_the_stream() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("gone"))
            }
        }
        let mut s = Chunker::new(ChunkerParams::METADATA, 0).stream(Broken);
        assert_eq!(s.next().unwrap().unwrap_err().to_string(), "gone");
        assert!(s.next().is_none());
    }

    #[test]
    fn seed_changes_cut_points() {
        let data = pseudo_random(4 << 20);
        let a = Chunker::new(ChunkerParams::METADATA, 0).cuts(&data);
        let b = Chunker::new(ChunkerParams::METADATA, 0xdead_beef).cuts(&data);
        assert_ne!(a, b);
    }
}
