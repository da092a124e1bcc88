//! A guest as one vzdump image: `vzdump --stdout` streamed into one entry. An empty dump is
//! an error and writes no archive; an unfinished one stops vzdump (dropping the stream).

use super::{base_metadata, BackupError, JobCtx, JobResultOf};
use crate::ingest::ArchiveBuilder;
use crate::item::{Item, Kind, Timestamp};
use crate::plan::ImageJob;

pub(super) fn run(ctx: &JobCtx, job: &ImageJob) -> JobResultOf {
    let mut stream = ctx.host.spawn_vzdump(job.vmid)?;
    let mut builder = ArchiveBuilder::new(ctx.repo, ctx.options.compression);
    let mut item = Item::new(job.archive.as_bytes().to_vec(), Kind::File);
    let now = jiff::Timestamp::now();
    item.mode = 0o600;
    item.mtime = Timestamp {
        secs: now.as_second(),
        nanos: now.subsec_nanosecond() as u32,
    };
    item.atime = item.mtime;
    item.ctime = item.mtime;
    let stored = builder.add(item, Some(&mut stream), false)?;
    stream.finish()?;
    if stored.size == 0 {
        return Err(BackupError::Refused(
            "vzdump produced no output; no archive written".into(),
        ));
    }
    ctx.checkpoint()?;
    let kind = job.guest_kind.as_str();
    let mut meta = base_metadata(kind, format!("{kind}-{}", job.vmid.0));
    meta.insert("vmid".into(), job.vmid.0.into());
    meta.insert(
        "hostname".into(),
        job.hostname.clone().unwrap_or_default().into(),
    );
    meta.insert("format".into(), "vzdump".into());
    let (_, manifest) = builder.finish(&job.archive, meta)?;
    Ok(manifest)
}
