//! A guest through `vzdump --stdout`, read as it is written. A VM's VMA stream is taken
//! apart as it arrives: its config files become entries and each drive a sparse image entry
//! (`drive-scsi0.raw`) cut into fixed, aligned chunks, so an unchanged disk stores nothing
//! new whatever the stream's framing and random uuid. A container's vzdump tar is stored as
//! one entry. An empty dump is an error and writes no archive; an unfinished one stops
//! vzdump (dropping the stream).

use super::{base_metadata, BackupError, JobCtx, JobResultOf};
use crate::ingest::disk::DiskAssembler;
use crate::ingest::ArchiveBuilder;
use crate::item::{Item, Kind, Timestamp};
use crate::plan::ImageJob;
use crate::pve::GuestKind;
use crate::vma::reader::{ReadError, VmaReader};
use crate::vma::{VmaError, CLUSTER};
use std::io::Read;

pub(super) fn run(ctx: &JobCtx, job: &ImageJob) -> JobResultOf {
    let mut stream = ctx.host.spawn_vzdump(job.vmid)?;
    let mut builder = ArchiveBuilder::new(ctx.repo, ctx.options.compression);
    let now = jiff::Timestamp::now();
    let now = Timestamp {
        secs: now.as_second(),
        nanos: now.subsec_nanosecond() as u32,
    };
    let format = match job.guest_kind {
        GuestKind::Qemu => {
            vma_drives(&mut builder, &mut stream, now)?;
            "drives"
        }
        GuestKind::Lxc => {
            let mut item = Item::new(job.archive.as_bytes().to_vec(), Kind::File);
            item.mode = 0o600;
            (item.mtime, item.atime, item.ctime) = (now, now, now);
            if builder.add(item, Some(&mut stream), false)?.size == 0 {
                return Err(no_output());
            }
            "vzdump"
        }
    };
    stream.finish()?;
    ctx.checkpoint()?;
    let kind = job.guest_kind.as_str();
    let mut meta = base_metadata(kind, format!("{kind}-{}", job.vmid.0));
    meta.insert("vmid".into(), job.vmid.0.into());
    meta.insert(
        "hostname".into(),
        job.hostname.clone().unwrap_or_default().into(),
    );
    meta.insert("format".into(), format.into());
    let (_, manifest) = builder.finish(&job.archive, meta)?;
    Ok(manifest)
}

fn no_output() -> BackupError {
    BackupError::Refused("vzdump produced no output; no archive written".into())
}

/// The VMA stream's config files, then one sparse entry per drive.
fn vma_drives(
    builder: &mut ArchiveBuilder,
    stream: &mut dyn Read,
    mtime: Timestamp,
) -> Result<(), BackupError> {
    let vma = |e: ReadError| match e {
        ReadError::Vma(VmaError::Truncated(0)) => no_output(),
        e => BackupError::Refused(format!("vzdump's VMA stream: {e}")),
    };
    let mut reader = VmaReader::new(stream).map_err(vma)?;
    let header = reader.header().clone();
    for (name, data) in &header.configs {
        let mut item = Item::new(name.as_bytes().to_vec(), Kind::File);
        item.mode = 0o644;
        (item.mtime, item.atime, item.ctime) = (mtime, mtime, mtime);
        builder.add(item, Some(&mut data.as_slice()), false)?;
    }
    let ids: Vec<u8> = header.devices.iter().map(|d| d.id).collect();
    let mut disks = DiskAssembler::new(header.devices.iter().map(|d| (d.name.clone(), d.size)));
    let mut cluster = vec![0u8; CLUSTER as usize];
    let mut each = |c: crate::vma::reader::Cluster<'_>| -> Result<(), BackupError> {
        // The reader checked that the device exists.
        let disk = ids
            .iter()
            .position(|&id| id == c.dev_id)
            .unwrap_or(usize::MAX);
        c.expand(&mut cluster);
        Ok(disks.write(builder, disk, c.offset, &cluster)?)
    };
    while reader.next_extent::<BackupError>(&mut each)? {}
    reader.finish().map_err(|e| vma(e.into()))?;
    for item in disks.finish(mtime)? {
        builder.add_stored(item)?;
    }
    Ok(())
}
