//! A VMA stream taken apart as it arrives, for `proxborg VMID` (vzdump's pipe) and the vzdump
//! hook (a `.vma` dump file): its config files become entries and each drive a sparse image
//! entry (`drive-scsi0.raw`) cut into fixed, aligned chunks, so an unchanged disk stores
//! nothing new whatever the stream's framing and random uuid. The VMA itself is not stored;
//! `export-vma` makes a new one.
//!
//! [`ContentDigest`] lets the hook delete a dump only once the archive is known to hold the
//! same configs and disk bytes, although it does not hold the same file.

use super::BackupError;
use crate::ingest::disk::{DiskAssembler, DiskStats};
use crate::ingest::ArchiveBuilder;
use crate::item::filter::Selection;
use crate::item::{checked_extents, Extent, Item, Kind, Timestamp};
use crate::repo::{Manifest, Repository};
use crate::retrieve::ArchiveReader;
use crate::vma::reader::{ReadError, VmaReader};
use crate::vma::{VmaError, CLUSTER};
use std::io::Read;

/// The VMA stream's config files, then one sparse entry per drive; the drives' figures.
/// `source` names the stream in errors; an empty stream is `on_empty`'s error.
pub(super) fn ingest_vma(
    builder: &mut ArchiveBuilder,
    stream: &mut dyn Read,
    mtime: Timestamp,
    source: &str,
    on_empty: fn() -> BackupError,
    mut digest: Option<&mut ContentDigest>,
) -> Result<Vec<DiskStats>, BackupError> {
    let vma = |e: ReadError| match e {
        ReadError::Vma(VmaError::Truncated(0)) => on_empty(),
        e => BackupError::Refused(format!("{source}: {e}")),
    };
    let mut reader = VmaReader::new(stream).map_err(vma)?;
    let header = reader.header().clone();
    for (name, data) in &header.configs {
        add_config(builder, name, data, mtime)?;
        if let Some(d) = digest.as_deref_mut() {
            d.add_config(name, data);
        }
    }
    let ids: Vec<u8> = header.devices.iter().map(|d| d.id).collect();
    let mut disks = DiskAssembler::new(header.devices.iter().map(|d| (d.name.clone(), d.size)));
    let mut cluster = vec![0u8; CLUSTER as usize];
    let mut read = vec![0u64; ids.len()];
    let mut each = |c: crate::vma::reader::Cluster<'_>| -> Result<(), BackupError> {
        // The reader checked that the device exists.
        let disk = ids
            .iter()
            .position(|&id| id == c.dev_id)
            .unwrap_or(usize::MAX);
        if let Some(r) = read.get_mut(disk) {
            *r += c.data.len() as u64;
        }
        c.expand(&mut cluster);
        if let (Some(d), Some(dev)) = (digest.as_deref_mut(), header.devices.get(disk)) {
            let end = dev.size.saturating_sub(c.offset).min(CLUSTER) as usize;
            d.add_cluster(&dev.name, c.offset, &cluster[..end]);
        }
        Ok(disks.write(builder, disk, c.offset, &cluster)?)
    };
    while reader.next_extent::<BackupError>(&mut each)? {}
    reader.finish().map_err(|e| vma(e.into()))?;
    let mut stats = disks.stats();
    for (s, r) in stats.iter_mut().zip(read) {
        s.read = r;
    }
    for item in disks.finish(mtime)? {
        builder.add_stored(item)?;
    }
    Ok(stats)
}

/// A config file of a VM archive (`qemu-server.conf`, `qemu-server.fw`) as its entry.
pub(super) fn add_config(
    builder: &mut ArchiveBuilder,
    name: &str,
    data: &[u8],
    mtime: Timestamp,
) -> Result<(), BackupError> {
    let mut item = Item::new(name.as_bytes().to_vec(), Kind::File);
    item.mode = 0o644;
    (item.mtime, item.atime, item.ctime) = (mtime, mtime, mtime);
    builder.add(item, Some(&mut &data[..]), false)?;
    Ok(())
}

/// The drives' figures as archive metadata (`info --json` shows them).
pub(super) fn drives_metadata(stats: &[DiskStats]) -> serde_json::Value {
    serde_json::to_value(stats).unwrap_or_default()
}

/// An order-free digest of a VM's configs and disk contents: the wrapping sum of the BLAKE3
/// hashes of every config (name, bytes) and every non-zero 64 KiB cluster (drive, offset,
/// bytes). A VMA sends clusters in any order and an archive holds them in disk order; both
/// give the same sum exactly when they hold the same configs and the same disk bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct ContentDigest([u64; 4]);

impl ContentDigest {
    fn add(&mut self, hash: blake3::Hash) {
        for (acc, word) in self.0.iter_mut().zip(hash.as_bytes().chunks_exact(8)) {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            *acc = acc.wrapping_add(u64::from_le_bytes(w));
        }
    }

    fn add_config(&mut self, name: &str, data: &[u8]) {
        let mut h = blake3::Hasher::new();
        h.update(b"config\0");
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(data);
        self.add(h.finalize());
    }

    /// A cluster at `offset` of drive `drive`, cut at the drive's end; zeros add nothing.
    fn add_cluster(&mut self, drive: &str, offset: u64, data: &[u8]) {
        if data.iter().all(|&b| b == 0) {
            return;
        }
        let mut h = blake3::Hasher::new();
        h.update(b"cluster\0");
        h.update(&(drive.len() as u64).to_le_bytes());
        h.update(drive.as_bytes());
        h.update(&offset.to_le_bytes());
        h.update(data);
        self.add(h.finalize());
    }

    /// The digest of what an archive made by [`ingest_vma`] holds, read through the normal,
    /// verifying read path. Drive entries are `<drive>.raw`; every other entry is a config.
    pub(super) fn of_archive(repo: &Repository, manifest: &Manifest) -> Result<Self, BackupError> {
        let io = |e: std::io::Error| {
            BackupError::Host(crate::host::HostError::io("reading the archive back", e))
        };
        let mut digest = ContentDigest::default();
        let mut cluster = vec![0u8; CLUSTER as usize];
        for entry in ArchiveReader::open(repo, manifest, Selection::default()) {
            let mut entry = entry?;
            let name = String::from_utf8_lossy(&entry.item.path).into_owned();
            let Some(drive) = name.strip_suffix(".raw") else {
                let mut data = Vec::new();
                entry.content.read_to_end(&mut data).map_err(io)?;
                digest.add_config(&name, &data);
                continue;
            };
            // Data extents are whole 4 MiB chunks, so 64 KiB clusters line up with the disk's.
            let extents = match &entry.item.sparse {
                Some(map) => checked_extents(map, entry.item.size).map_err(|e| {
                    BackupError::Refused(format!("archive {}: {name}: {e}", manifest.name))
                })?,
                None => vec![Extent {
                    offset: 0,
                    len: entry.item.size,
                }],
            };
            for extent in extents {
                let mut at = extent.offset;
                let end = extent.offset.saturating_add(extent.len);
                while at < end {
                    let n = (end - at).min(CLUSTER) as usize;
                    entry.content.read_exact(&mut cluster[..n]).map_err(io)?;
                    digest.add_cluster(drive, at, &cluster[..n]);
                    at += n as u64;
                }
            }
        }
        Ok(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_ignores_order_and_zeros_but_not_bytes_or_places() {
        let (a, b) = (vec![1u8; 100], vec![2u8; 100]);
        let mut one = ContentDigest::default();
        one.add_config("qemu-server.conf", b"name: db\n");
        one.add_cluster("drive-scsi0", 0, &a);
        one.add_cluster("drive-scsi0", CLUSTER, &b);
        let mut other = ContentDigest::default();
        other.add_cluster("drive-scsi0", CLUSTER, &b);
        other.add_cluster("drive-scsi1", 0, &[0; 100]);
        other.add_cluster("drive-scsi0", 0, &a);
        other.add_config("qemu-server.conf", b"name: db\n");
        assert_eq!(one, other);
        let differs = |f: &dyn Fn(&mut ContentDigest)| {
            let mut d = ContentDigest::default();
            d.add_config("qemu-server.conf", b"name: db\n");
            f(&mut d);
            assert_ne!(d, one);
        };
        differs(&|d| {
            d.add_cluster("drive-scsi0", 0, &b);
            d.add_cluster("drive-scsi0", CLUSTER, &a);
        });
        differs(&|d| {
            d.add_cluster("drive-scsi1", 0, &a);
            d.add_cluster("drive-scsi0", CLUSTER, &b);
        });
        differs(&|d| d.add_cluster("drive-scsi0", 0, &a));
    }
}
