//! From send events to the byte ranges of the volume that must be read again, and from those
//! to the fixed-size chunks they touch. Both WRITEs and FREEs count: a FREE may only repeat
//! an old hole (idempotent, see `Event::Free`), but a discard is also a FREE, and missing one
//! would keep stale data in the backup. `written` and `freed` keep the two apart for reports.

use super::Event;
use std::ops::Range;

/// The chunk size of direct zvol mode (fixed, 4 MiB).
pub const CHUNK_SIZE: u64 = 4 << 20;

/// A WRITE ends past the volume size the caller gave (`zfs get volsize @new`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("zfs send WRITE at {offset}+{len} ends past the volume size {volsize}")]
pub struct WritePastEnd {
    pub offset: u64,
    pub len: u64,
    pub volsize: u64,
}

/// Accumulates changed ranges as events stream by. Memory: one range per run of adjacent
/// changes in stream order (a stream is sorted by offset, so runs merge as they arrive).
#[derive(Debug, Clone)]
pub struct ChangeSet {
    volsize: u64,
    ranges: Vec<Range<u64>>,
    /// Bytes of WRITE data inside the volume.
    pub written: u64,
    /// Bytes FREEs cover inside the volume (old holes included).
    pub freed: u64,
}

impl ChangeSet {
    pub fn new(volsize: u64) -> Self {
        ChangeSet {
            volsize,
            ranges: Vec::new(),
            written: 0,
            freed: 0,
        }
    }

    /// Takes in one event; only `Write` and `Free` matter.
    pub fn add(&mut self, event: &Event<'_>) -> Result<(), WritePastEnd> {
        match *event {
            Event::Write { offset, data } => {
                let len = data.len() as u64;
                let end = offset
                    .checked_add(len)
                    .filter(|&e| e <= self.volsize)
                    .ok_or(WritePastEnd {
                        offset,
                        len,
                        volsize: self.volsize,
                    })?;
                self.written += len;
                self.push(offset..end);
            }
            Event::Free { offset, end } => {
                let end = end.unwrap_or(u64::MAX).min(self.volsize);
                if offset < end {
                    self.freed += end - offset;
                    self.push(offset..end);
                }
            }
            Event::Begin(_) | Event::DataObject { .. } | Event::End { .. } => {}
        }
        Ok(())
    }

    fn push(&mut self, r: Range<u64>) {
        if r.is_empty() {
            return;
        }
        match self.ranges.last_mut() {
            Some(last) if r.start >= last.start && r.start <= last.end => {
                last.end = last.end.max(r.end);
            }
            _ => self.ranges.push(r),
        }
    }

    /// The changed ranges, sorted, merged (overlapping or adjacent ones joined) and inside
    /// `[0, volsize)`.
    pub fn finish(self) -> Vec<Range<u64>> {
        merge(self.ranges)
    }
}

/// Sorts and joins overlapping or adjacent ranges, dropping empty ones.
pub fn merge(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.retain(|r| !r.is_empty());
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// Indexes of the `chunk_size` chunks any range touches, ascending, each once. Ranges may
/// come in any order. A `chunk_size` of 0 touches nothing.
pub fn touched_chunks(ranges: &[Range<u64>], chunk_size: u64) -> Vec<u64> {
    if chunk_size == 0 {
        return Vec::new();
    }
    let mut out: Vec<u64> = Vec::new();
    let mut sorted = true;
    for r in ranges.iter().filter(|r| !r.is_empty()) {
        // `first` <= `last` < u64::MAX (as `r.end - 1` is), so `p + 1` cannot overflow.
        let (first, last) = (r.start / chunk_size, (r.end - 1) / chunk_size);
        let from = match out.last() {
            // The usual case: sorted ranges, this one starting in the last chunk seen.
            Some(&p) if p == first => p + 1,
            Some(&p) if p > first => {
                sorted = false;
                first
            }
            _ => first,
        };
        out.extend(from..=last);
    }
    if !sorted {
        out.sort_unstable();
        out.dedup();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn writes_and_frees_merge_and_clip_to_the_volume() {
        let vol = 20 * MIB;
        let block = vec![7u8; 16384];
        let mut set = ChangeSet::new(vol);
        for ev in [
            Event::Free {
                offset: 32 * MIB,
                end: None,
            },
            Event::Write {
                offset: 0,
                data: &block,
            },
            Event::Write {
                offset: 16384,
                data: &block,
            },
            Event::Free {
                offset: 32768,
                end: Some(65536),
            },
            Event::Write {
                offset: 4 * MIB - 16384,
                data: &block,
            },
            Event::Free {
                offset: 19 * MIB,
                end: None,
            },
        ] {
            set.add(&ev).unwrap();
        }
        assert_eq!(set.written, 3 * 16384);
        assert_eq!(set.freed, 32768 + MIB);
        let ranges = set.finish();
        assert_eq!(
            ranges,
            vec![0..65536, 4 * MIB - 16384..4 * MIB, 19 * MIB..vol]
        );
        assert_eq!(touched_chunks(&ranges, CHUNK_SIZE), vec![0, 4]);
    }

    #[test]
    fn a_write_past_the_volume_is_refused() {
        let mut set = ChangeSet::new(MIB);
        let block = [0u8; 4096];
        assert!(set
            .add(&Event::Write {
                offset: MIB - 4096,
                data: &block
            })
            .is_ok());
        assert_eq!(
            set.add(&Event::Write {
                offset: MIB,
                data: &block
            }),
            Err(WritePastEnd {
                offset: MIB,
                len: 4096,
                volsize: MIB
            })
        );
        assert!(set
            .add(&Event::Write {
                offset: u64::MAX - 10,
                data: &block
            })
            .is_err());
    }

    #[test]
    fn merge_joins_overlaps_and_neighbours_in_any_order() {
        assert_eq!(
            merge(vec![10..20, 0..5, 5..7, 15..30, 40..40, 31..32]),
            vec![0..7, 10..30, 31..32]
        );
    }

    #[test]
    fn touched_chunks_across_boundaries_and_at_the_end() {
        let c = CHUNK_SIZE;
        let one = |r: Range<u64>, size: u64| touched_chunks(std::slice::from_ref(&r), size);
        // Exactly one chunk, ends on a boundary.
        assert_eq!(one(0..c, c), vec![0]);
        // One byte over the boundary touches the next chunk.
        assert_eq!(one(0..c + 1, c), vec![0, 1]);
        // Crossing a boundary in the middle.
        assert_eq!(one(c - 1..c + 1, c), vec![0, 1]);
        // Several ranges in one chunk count it once; a long range spans many.
        assert_eq!(
            touched_chunks(&[10..20, 30..40, 2 * c..5 * c + 3], c),
            vec![0, 2, 3, 4, 5]
        );
        // The last, partial chunk of a volume that is not a multiple of the chunk size.
        let vol = 10 * c + 8192;
        assert_eq!(one(vol - 4096..vol, c), vec![10]);
        // Unsorted and overlapping input.
        assert_eq!(
            touched_chunks(&[5 * c..6 * c, 0..1, 5 * c..5 * c + 1], c),
            vec![0, 5]
        );
        assert!(one(3..3, c).is_empty());
        assert!(one(0..10, 0).is_empty());
        assert_eq!(one(u64::MAX - 1..u64::MAX, c), vec![u64::MAX / c]);
    }

    proptest::proptest! {
        #[test]
        fn touched_chunks_matches_a_byte_model(
            ranges in proptest::collection::vec((0u64..200, 0u64..50), 0..8),
            chunk in 1u64..40,
        ) {
            let ranges: Vec<Range<u64>> = ranges.into_iter().map(|(s, l)| s..s + l).collect();
            let mut want: Vec<u64> = ranges.iter().flat_map(|r| r.clone()).map(|b| b / chunk).collect();
            want.sort_unstable();
            want.dedup();
            proptest::prop_assert_eq!(touched_chunks(&ranges, chunk), want.clone());
            proptest::prop_assert_eq!(touched_chunks(&merge(ranges), chunk), want);
        }
    }
}
