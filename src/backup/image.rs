//! A guest through `vzdump --stdout`, read as it is written. A VM's VMA stream is taken
//! apart as it arrives (`drives.rs`); a container's vzdump tar is stored as one entry. An
//! empty dump is an error and writes no archive; an unfinished one stops vzdump (dropping
//! the stream).

use super::drives::{drives_metadata, ingest_vma};
use super::{base_metadata, BackupError, JobCtx, JobResultOf};
use crate::ingest::ArchiveBuilder;
use crate::item::{Item, Kind, Timestamp};
use crate::plan::ImageJob;
use crate::pve::GuestKind;

pub(super) fn run(ctx: &JobCtx, job: &ImageJob) -> JobResultOf {
    let mut stream = ctx.host.spawn_vzdump(job.vmid)?;
    let mut builder = ArchiveBuilder::new(ctx.repo, ctx.options.compression);
    let now = jiff::Timestamp::now();
    let now = Timestamp {
        secs: now.as_second(),
        nanos: now.subsec_nanosecond() as u32,
    };
    let mut drives = Vec::new();
    let format = match job.guest_kind {
        GuestKind::Qemu => {
            let source = format!("vzdump's VMA stream of VM {}", job.vmid.0);
            drives = ingest_vma(&mut builder, &mut stream, now, &source, no_output, None)?;
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
    if !drives.is_empty() {
        meta.insert("drives".into(), drives_metadata(&drives));
    }
    let (_, manifest) = builder.finish(&job.archive, meta)?;
    Ok(manifest)
}

fn no_output() -> BackupError {
    BackupError::Refused("vzdump produced no output; no archive written".into())
}
