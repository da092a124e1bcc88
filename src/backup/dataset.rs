//! One mounted ZFS dataset (not recursive): snapshot, read it, release it.

use super::guards::Guards;
use super::volumes::{destroy_later, readable};
use super::{base_metadata, save_files_cache, JobCtx, JobResultOf};
use crate::ingest::tree::{ingest_dir, TreeSource};
use crate::ingest::ArchiveBuilder;
use crate::plan::DatasetJob;

pub(super) fn run(ctx: &JobCtx, job: &DatasetJob) -> JobResultOf {
    let mut guards = Guards::new(ctx.report);
    let snaps = vec![job.snapshot.clone()];
    ctx.host.snapshot(&snaps)?;
    destroy_later(ctx, &mut guards, snaps);
    ctx.checkpoint()?;
    let root = readable(ctx, &mut guards, &job.snapshot, Some(&job.path))?;
    ctx.checkpoint()?;
    let guid = ctx.host.dataset_guid(&job.dataset)?;
    let mut builder = ArchiveBuilder::new(ctx.repo, ctx.options.compression);
    let mut cache = ctx.files_cache();
    ingest_dir(
        &mut builder,
        &TreeSource {
            root: &root,
            source_id: format!("zfs-guid:{guid}"),
            prefix: Vec::new(),
            excludes: &ctx.options.excludes,
            one_file_system: true,
            idmap: None,
            lower: None,
        },
        &mut cache,
        ctx.report,
    )?;
    ctx.checkpoint()?;
    let mut meta = base_metadata("dataset", format!("dataset-{}", job.dataset));
    meta.insert("datasets".into(), vec![job.dataset.to_string()].into());
    meta.insert("snapshot".into(), job.snapshot.to_string().into());
    meta.insert("path".into(), job.path.to_string_lossy().into());
    let (_, manifest) = builder.finish(&job.archive, meta)?;
    save_files_cache(cache, ctx.report);
    Ok(manifest)
}
