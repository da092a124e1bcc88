//! Disk images arriving out of order (a VMA stream's clusters, interleaved across drives as
//! QEMU sends them) cut into fixed-size chunks aligned to the disk: a block device's writes
//! do not shift data, so an unchanged region gives the same chunks run after run, whatever
//! the stream's framing. A chunk is stored as soon as all of its bytes have arrived; an
//! all-zero chunk is a hole, not a blob. At the end each disk becomes one sparse file entry.

use super::{ArchiveBuilder, IngestError};
use crate::item::{ChunkRef, Extent, Item, Kind, Timestamp};
use std::collections::HashMap;

/// The fixed chunk size of disk images (PBS uses 4 MiB too).
pub const IMAGE_CHUNK: u64 = 4 << 20;
/// Incomplete chunks held in memory at most (QEMU's near-sequential order keeps a few).
const MAX_PENDING: usize = 128;

struct Pending {
    data: Vec<u8>,
    /// Bytes of the chunk not yet arrived.
    missing: u64,
}

pub struct Disk {
    pub name: String,
    pub size: u64,
    /// Per chunk: its blob, `None` for a hole; unset until complete.
    chunks: Vec<Option<Option<ChunkRef>>>,
    /// Bytes of its chunks that were new to the repository (before compression).
    new: u64,
}

/// What one run did with one disk (`info --json` shows it per drive).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DiskStats {
    pub name: String,
    /// The disk's size.
    pub size: u64,
    /// Bytes in data chunks (everything not a hole).
    pub allocated: u64,
    /// Bytes the source handed over (a VMA leaves out blocks it knows are zero); set by
    /// the caller, which sees the source's framing.
    pub read: u64,
    /// Bytes of its chunks the repository did not have yet (before compression).
    pub new: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error(transparent)]
    Ingest(#[from] IngestError),
    #[error("disk {disk}: {reason}")]
    Invalid { disk: String, reason: String },
}

pub struct DiskAssembler {
    disks: Vec<Disk>,
    pending: HashMap<(usize, u64), Pending>,
}

impl DiskAssembler {
    pub fn new(disks: impl IntoIterator<Item = (String, u64)>) -> Self {
        DiskAssembler {
            disks: disks
                .into_iter()
                .map(|(name, size)| Disk {
                    name,
                    size,
                    chunks: vec![None; size.div_ceil(IMAGE_CHUNK) as usize],
                    new: 0,
                })
                .collect(),
            pending: HashMap::new(),
        }
    }

    fn size_of(&self, disk: usize) -> Result<u64, DiskError> {
        self.disks
            .get(disk)
            .map(|d| d.size)
            .ok_or_else(|| DiskError::Invalid {
                disk: disk.to_string(),
                reason: "no such disk".into(),
            })
    }

    /// `data` belongs at `offset` of disk `disk` (bytes past the disk's end are dropped).
    /// Each byte must come once; a chunk is stored when its last byte arrives.
    pub fn write(
        &mut self,
        builder: &mut ArchiveBuilder,
        disk: usize,
        offset: u64,
        data: &[u8],
    ) -> Result<(), DiskError> {
        let size = self.size_of(disk)?;
        let mut at = offset;
        let mut rest = &data[..data.len().min(size.saturating_sub(offset) as usize)];
        while !rest.is_empty() {
            let index = at / IMAGE_CHUNK;
            let start = index * IMAGE_CHUNK;
            let len = (size - start).min(IMAGE_CHUNK);
            let within = (at - start) as usize;
            let n = rest.len().min(len as usize - within);
            if !self.pending.contains_key(&(disk, index)) && self.pending.len() >= MAX_PENDING {
                return Err(DiskError::Invalid {
                    disk: self.disks[disk].name.clone(),
                    reason: format!(
                        "the stream interleaves more than {} MiB of incomplete chunks",
                        (MAX_PENDING as u64 * IMAGE_CHUNK) >> 20
                    ),
                });
            }
            let p = self
                .pending
                .entry((disk, index))
                .or_insert_with(|| Pending {
                    data: vec![0; len as usize],
                    missing: len,
                });
            p.data[within..within + n].copy_from_slice(&rest[..n]);
            p.missing = p.missing.saturating_sub(n as u64);
            if p.missing == 0 {
                if let Some(done) = self.pending.remove(&(disk, index)) {
                    let stored = if done.data.iter().all(|&b| b == 0) {
                        None
                    } else {
                        let before = builder.stats().new_chunks;
                        let r = builder.put_chunk(done.data)?;
                        if builder.stats().new_chunks > before {
                            self.disks[disk].new += u64::from(r.len);
                        }
                        Some(r)
                    };
                    self.disks[disk].chunks[index as usize] = Some(stored);
                }
            }
            rest = &rest[n..];
            at += n as u64;
        }
        Ok(())
    }

    /// `len` zero bytes at `offset` of disk `disk` (a hole of the source): whole chunks become
    /// holes without being looked at, so a mostly empty image costs no memory scans.
    pub fn write_zeros(
        &mut self,
        builder: &mut ArchiveBuilder,
        disk: usize,
        offset: u64,
        len: u64,
    ) -> Result<(), DiskError> {
        let size = self.size_of(disk)?;
        let end = offset.saturating_add(len).min(size);
        let zeros = vec![0u8; IMAGE_CHUNK as usize];
        let mut at = offset;
        while at < end {
            let index = at / IMAGE_CHUNK;
            let start = index * IMAGE_CHUNK;
            let chunk_end = (start + IMAGE_CHUNK).min(size);
            let n = (end.min(chunk_end) - at) as usize;
            let whole = at == start && at + n as u64 == chunk_end;
            if whole && !self.pending.contains_key(&(disk, index)) {
                self.disks[disk].chunks[index as usize] = Some(None);
            } else {
                self.write(builder, disk, at, &zeros[..n])?;
            }
            at += n as u64;
        }
        Ok(())
    }

    /// Chunk `index` of disk `disk` is `stored` (a blob of a previous archive, `None` for a
    /// hole), taken over without reading it.
    pub fn reuse(
        &mut self,
        disk: usize,
        index: u64,
        stored: Option<ChunkRef>,
    ) -> Result<(), DiskError> {
        let d = self.disks.get_mut(disk).ok_or_else(|| DiskError::Invalid {
            disk: disk.to_string(),
            reason: "no such disk".into(),
        })?;
        let slot = d
            .chunks
            .get_mut(index as usize)
            .ok_or_else(|| DiskError::Invalid {
                disk: d.name.clone(),
                reason: format!("no chunk {index}"),
            })?;
        *slot = Some(stored);
        Ok(())
    }

    /// What arrived and was stored so far, per disk, in order.
    pub fn stats(&self) -> Vec<DiskStats> {
        self.disks
            .iter()
            .map(|d| DiskStats {
                name: d.name.clone(),
                size: d.size,
                allocated: d
                    .chunks
                    .iter()
                    .flatten()
                    .flatten()
                    .map(|r| u64::from(r.len))
                    .sum(),
                read: 0,
                new: d.new,
            })
            .collect()
    }

    /// Each disk as a file entry `<name>.raw` (sparse where chunks were zero), in order.
    pub fn finish(self, mtime: Timestamp) -> Result<Vec<Item>, DiskError> {
        let mut items = Vec::new();
        for disk in self.disks {
            let mut item = Item::new(format!("{}.raw", disk.name).into_bytes(), Kind::File);
            item.mode = 0o600;
            item.size = disk.size;
            item.mtime = mtime;
            item.atime = mtime;
            item.ctime = mtime;
            let mut extents: Vec<Extent> = Vec::new();
            for (i, c) in disk.chunks.iter().enumerate() {
                let Some(stored) = c else {
                    return Err(DiskError::Invalid {
                        disk: disk.name.clone(),
                        reason: format!("chunk {i} never complete"),
                    });
                };
                let Some(r) = stored else { continue };
                let offset = i as u64 * IMAGE_CHUNK;
                match extents.last_mut() {
                    Some(e) if e.offset + e.len == offset => e.len += u64::from(r.len),
                    _ => extents.push(Extent {
                        offset,
                        len: u64::from(r.len),
                    }),
                }
                item.chunks.push(*r);
            }
            let dense = extents.len() == 1 && extents[0].offset == 0 && extents[0].len == disk.size;
            item.sparse = (!dense && disk.size > 0).then_some(extents);
            items.push(item);
        }
        Ok(items)
    }
}

/// A disk image read in order (a block device, a raw image file): its data extents from
/// `data` (their bytes concatenated, as [`crate::tree::content::FileContent`] gives them), the
/// rest holes, cut into [`IMAGE_CHUNK`]s. Returns the entry named `name` and its figures.
pub fn ingest_image(
    builder: &mut ArchiveBuilder,
    data: &mut dyn std::io::Read,
    name: &str,
    size: u64,
    extents: &[Extent],
    mtime: Timestamp,
) -> Result<(Item, DiskStats), DiskError> {
    let mut disks = DiskAssembler::new([(name.to_string(), size)]);
    let mut buf = vec![0u8; IMAGE_CHUNK as usize];
    let mut at = 0u64;
    let mut read = 0u64;
    for e in extents {
        disks.write_zeros(builder, 0, at, e.offset.saturating_sub(at))?;
        let mut pos = e.offset;
        let end = e.offset.saturating_add(e.len).min(size);
        while pos < end {
            // up to the next chunk boundary, so each write completes a chunk
            let n = (IMAGE_CHUNK - pos % IMAGE_CHUNK).min(end - pos) as usize;
            data.read_exact(&mut buf[..n])
                .map_err(|e| DiskError::Invalid {
                    disk: name.to_string(),
                    reason: format!("reading at byte {pos}: {e}"),
                })?;
            disks.write(builder, 0, pos, &buf[..n])?;
            pos += n as u64;
            read += n as u64;
        }
        at = end.max(at);
    }
    disks.write_zeros(builder, 0, at, size.saturating_sub(at))?;
    // One read past the data: it lets a file's reader check at its end whether the file
    // changed meanwhile (FileContent), and finds a device that grew.
    let grew = data.read(&mut buf[..1]).map_err(|e| DiskError::Invalid {
        disk: name.to_string(),
        reason: format!("reading at its end: {e}"),
    })?;
    if grew > 0 {
        return Err(DiskError::Invalid {
            disk: name.to_string(),
            reason: format!("longer than its {size} bytes: it grew while it was read"),
        });
    }
    let mut stats = disks.stats().remove(0);
    stats.read = read;
    let mut item = disks.finish(mtime)?.remove(0);
    item.path = name.as_bytes().to_vec();
    Ok((item, stats))
}

/// What an incremental run does with one chunk of a disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkAction {
    /// Read it from the disk (a dirty region touches it, or there is nothing to reuse).
    Read,
    /// Take it from the previous archive's image entry.
    Reuse,
}

/// The plan for a disk of `size` bytes: with `dirty` (the regions written since the previous
/// archive, as a dirty bitmap gives them) every chunk a region touches is read whole and every
/// other one reused; without it (no usable previous archive) everything is read. Regions past
/// the end are cut off.
pub fn plan_incremental(size: u64, dirty: Option<&[Extent]>) -> Vec<ChunkAction> {
    let count = size.div_ceil(IMAGE_CHUNK) as usize;
    let Some(regions) = dirty else {
        return vec![ChunkAction::Read; count];
    };
    let mut plan = vec![ChunkAction::Reuse; count];
    for r in regions {
        let end = r.offset.saturating_add(r.len).min(size);
        if r.len == 0 || r.offset >= end {
            continue;
        }
        let (first, last) = (r.offset / IMAGE_CHUNK, (end - 1) / IMAGE_CHUNK);
        for a in &mut plan[first as usize..=last as usize] {
            *a = ChunkAction::Read;
        }
    }
    plan
}

/// A disk image entry's chunks by chunk index (`None` for a hole), for reuse by the next
/// incremental run. The entry must be `size` bytes and cut as [`DiskAssembler`] cuts: data
/// extents of whole, aligned [`IMAGE_CHUNK`]s, one blob each; anything else is an error.
pub fn chunks_by_index(item: &Item, size: u64) -> Result<Vec<Option<ChunkRef>>, String> {
    if item.size != size {
        return Err(format!("it is {} bytes, the disk {size}", item.size));
    }
    let extents = match &item.sparse {
        Some(map) => crate::item::checked_extents(map, size).map_err(str::to_string)?,
        None if size == 0 => Vec::new(),
        None => vec![Extent {
            offset: 0,
            len: size,
        }],
    };
    let mut out = vec![None; size.div_ceil(IMAGE_CHUNK) as usize];
    let mut refs = item.chunks.iter();
    for e in extents {
        if e.offset % IMAGE_CHUNK != 0 {
            return Err(format!(
                "a data extent at byte {} is not chunk-aligned",
                e.offset
            ));
        }
        let mut at = e.offset;
        while at < e.offset + e.len {
            let want = (size - at).min(IMAGE_CHUNK);
            let r = refs.next().ok_or("fewer chunks than data")?;
            if u64::from(r.len) != want || at + want > e.offset + e.len {
                return Err(format!(
                    "the chunk at byte {at} is not one whole image chunk"
                ));
            }
            out[(at / IMAGE_CHUNK) as usize] = Some(*r);
            at += want;
        }
    }
    if refs.next().is_some() {
        return Err("more chunks than data".into());
    }
    Ok(out)
}

/// A disk read at random places (`source`, a file or block device, `size` bytes) as the entry
/// `<name>.raw`: the chunks `plan` marks [`ChunkAction::Read`] are read whole, the others taken from
/// `previous` (see [`chunks_by_index`]) unread. `read` in the figures counts only bytes read.
pub fn ingest_image_incremental(
    builder: &mut ArchiveBuilder,
    source: &std::fs::File,
    name: &str,
    size: u64,
    plan: &[ChunkAction],
    previous: &[Option<ChunkRef>],
    mtime: Timestamp,
) -> Result<(Item, DiskStats), DiskError> {
    use std::os::unix::fs::FileExt;
    let invalid = |reason: String| DiskError::Invalid {
        disk: name.to_string(),
        reason,
    };
    let mut disks = DiskAssembler::new([(name.to_string(), size)]);
    let mut buf = vec![0u8; IMAGE_CHUNK as usize];
    let mut read = 0u64;
    for (index, action) in plan.iter().enumerate() {
        let offset = index as u64 * IMAGE_CHUNK;
        let len = (size - offset).min(IMAGE_CHUNK) as usize;
        match action {
            ChunkAction::Read => {
                source
                    .read_exact_at(&mut buf[..len], offset)
                    .map_err(|e| invalid(format!("reading at byte {offset}: {e}")))?;
                disks.write(builder, 0, offset, &buf[..len])?;
                read += len as u64;
            }
            ChunkAction::Reuse => {
                let stored = previous
                    .get(index)
                    .ok_or_else(|| invalid(format!("no previous chunk {index} to reuse")))?;
                disks.reuse(0, index as u64, *stored)?;
            }
        }
        if crate::host::interrupt::interrupted() {
            return Err(invalid("interrupted".into()));
        }
    }
    let mut stats = disks.stats().remove(0);
    stats.read = read;
    Ok((disks.finish(mtime)?.remove(0), stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::test_support::unencrypted;

    #[test]
    fn an_image_is_cut_at_fixed_places_and_its_holes_cost_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let repo = unencrypted(&dir.path().join("repo"));
        let mut builder = ArchiveBuilder::new(&repo, None);
        let size = 3 * IMAGE_CHUNK + 100;
        // data in chunk 0 (part), a hole over chunks 1-2, data in the last short chunk
        let extents = [
            Extent {
                offset: 10,
                len: 5000,
            },
            Extent {
                offset: 3 * IMAGE_CHUNK,
                len: 100,
            },
        ];
        let bytes: Vec<u8> = (0..5100u32).map(|i| (i % 251) as u8 + 1).collect();
        let (item, stats) = ingest_image(
            &mut builder,
            &mut bytes.as_slice(),
            "disk.raw",
            size,
            &extents,
            Timestamp::default(),
        )
        .unwrap();
        assert_eq!(item.size, size);
        assert_eq!(
            item.sparse,
            Some(vec![
                Extent {
                    offset: 0,
                    len: IMAGE_CHUNK
                },
                Extent {
                    offset: 3 * IMAGE_CHUNK,
                    len: 100
                },
            ])
        );
        assert_eq!(item.chunks.len(), 2);
        assert_eq!((stats.read, stats.allocated), (5100, IMAGE_CHUNK + 100));
        // A short source is an error naming the disk, never zeros.
        let mut builder = ArchiveBuilder::new(&repo, None);
        let err = ingest_image(
            &mut builder,
            &mut &bytes[..10],
            "disk.raw",
            size,
            &extents,
            Timestamp::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("disk.raw"), "{err}");
        // A source with more than its extents promise (a device that grew) is refused too:
        // the end is read, which is also where a file's reader notices a change.
        let mut builder = ArchiveBuilder::new(&repo, None);
        let longer = [bytes.as_slice(), b"x"].concat();
        let err = ingest_image(
            &mut builder,
            &mut longer.as_slice(),
            "disk.raw",
            size,
            &extents,
            Timestamp::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("grew"), "{err}");
    }

    fn ext(offset: u64, len: u64) -> Extent {
        Extent { offset, len }
    }

    #[test]
    fn a_dirty_region_marks_whole_chunks_and_nothing_else() {
        use ChunkAction::{Read, Reuse};
        let size = 5 * IMAGE_CHUNK - 1000;
        assert_eq!(plan_incremental(size, None), vec![Read; 5]);
        assert_eq!(plan_incremental(size, Some(&[])), vec![Reuse; 5]);
        // one byte in chunk 1, a region across the 2/3 boundary, one past the end, empty ones
        let regions = [
            ext(IMAGE_CHUNK + 7, 1),
            ext(3 * IMAGE_CHUNK - 1, 2),
            ext(9 * IMAGE_CHUNK, 10),
            ext(0, 0),
        ];
        assert_eq!(
            plan_incremental(size, Some(&regions)),
            vec![Reuse, Read, Read, Read, Reuse]
        );
        // the short last chunk, up to and past the disk's end
        assert_eq!(
            plan_incremental(size, Some(&[ext(size - 1, 4096)])),
            vec![Reuse, Reuse, Reuse, Reuse, Read]
        );
        assert_eq!(plan_incremental(0, Some(&[ext(0, 10)])), vec![]);
    }

    #[test]
    fn only_dirty_chunks_are_read_and_the_rest_comes_from_the_previous_image() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let repo = unencrypted(&dir.path().join("repo"));
        let size = 4 * IMAGE_CHUNK + 512;
        let path = dir.path().join("disk");
        let file = std::fs::File::create_new(&path).unwrap();
        file.set_len(size).unwrap();
        file.write_all_at(&[1u8; 4096], 10).unwrap();
        file.write_all_at(&[2u8; 100], 2 * IMAGE_CHUNK + 5).unwrap();
        file.write_all_at(&[3u8; 512], 4 * IMAGE_CHUNK).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let t = Timestamp::default();
        let mut builder = ArchiveBuilder::new(&repo, None);
        let full = plan_incremental(size, None);
        let (first, stats) =
            ingest_image_incremental(&mut builder, &file, "drive-scsi0", size, &full, &[], t)
                .unwrap();
        assert_eq!(first.path, b"drive-scsi0.raw");
        assert_eq!((stats.read, stats.allocated), (size, 2 * IMAGE_CHUNK + 512));
        assert_eq!(first.chunks.len(), 3);
        let previous = chunks_by_index(&first, size).unwrap();
        assert_eq!(previous.iter().filter(|c| c.is_some()).count(), 3);
        assert!(previous[1].is_none() && previous[3].is_none());

        // chunk 3 (a hole before) and chunk 0 change; the bitmap says so for chunk 3 only
        let rw = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        rw.write_all_at(&[4u8; 10], 3 * IMAGE_CHUNK + 99).unwrap();
        rw.write_all_at(&[5u8; 10], 0).unwrap();
        let plan = plan_incremental(size, Some(&[ext(3 * IMAGE_CHUNK + 99, 10)]));
        let mut builder = ArchiveBuilder::new(&repo, None);
        let (second, stats) = ingest_image_incremental(
            &mut builder,
            &file,
            "drive-scsi0",
            size,
            &plan,
            &previous,
            t,
        )
        .unwrap();
        assert_eq!(stats.read, IMAGE_CHUNK);
        assert_eq!(stats.allocated, 3 * IMAGE_CHUNK + 512);
        let now = chunks_by_index(&second, size).unwrap();
        assert_eq!(
            now[0], previous[0],
            "chunk 0 is reused: the bitmap did not name it"
        );
        assert_eq!((now[2], now[4]), (previous[2], previous[4]));
        assert!(now[3].is_some() && now[1].is_none());

        // a previous entry of another size, or cut differently, is refused
        assert!(chunks_by_index(&second, size + 1).is_err());
        let mut odd = second.clone();
        odd.sparse = Some(vec![ext(100, IMAGE_CHUNK)]);
        assert!(chunks_by_index(&odd, size).is_err());
        let mut short = second.clone();
        short.chunks.pop();
        assert!(chunks_by_index(&short, size).is_err());
    }
}
