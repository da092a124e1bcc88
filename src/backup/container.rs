//! A container's files: freeze (if it runs), sync, one `zfs snapshot` per pool of all its
//! volumes, thaw at once; then each volume is read from its snapshot (`.zfs/snapshot` or a
//! clone, optionally through an id-mapping overlay) into one archive, rootfs at `./` and each
//! mountpoint at its path, after vzdump's `./etc/vzdump/pct.conf` and `pct.fw`.

use super::guards::Guards;
use super::volumes::{readable, snapshot_groups, thaw_and_hold};
use super::{base_metadata, save_files_cache, BackupError, JobCtx, JobResultOf, VZDUMP_EXCLUDES};
use crate::host::CtState;
use crate::ingest::tree::{ingest_dir, TreeSource};
use crate::ingest::ArchiveBuilder;
use crate::item::{Item, Kind, Timestamp};
use crate::plan::FilesJob;

pub(super) fn run(ctx: &JobCtx, job: &FilesJob, snapshot: &str) -> JobResultOf {
    let host = ctx.host;
    let mut guards = Guards::new(ctx.report);
    // A container someone else froze stays as it is: it cannot change while frozen.
    let running = host.container_state(job.vmid)? == CtState::Running;
    ctx.checkpoint()?;
    if running {
        host.freeze(job.vmid)?;
        let vmid = job.vmid;
        guards.push(format!("thaw container {vmid}"), move || host.thaw(vmid));
    }
    host.sync();
    let snapped = snapshot_groups(
        ctx,
        job.snapshots_by_pool(),
        &format!("container {}", job.vmid.0),
    );
    thaw_and_hold(ctx, &mut guards, running, snapped)?;

    let mut builder = ArchiveBuilder::new(ctx.repo, ctx.options.compression);
    add_vzdump_files(
        &mut builder,
        job.vzdump_file_owner(),
        &job.pct_conf,
        &job.pct_fw,
    )?;
    let mut cache = ctx.files_cache();
    let excludes: Vec<String> = VZDUMP_EXCLUDES
        .iter()
        .map(|s| s.to_string())
        .chain(ctx.options.excludes.iter().cloned())
        .collect();
    let overlay = if ctx.options.idmap_via_overlay {
        job.idmap.fuse_overlayfs_options()
    } else {
        None
    };
    for vol in &job.volumes {
        let snap_dir = readable(ctx, &mut guards, &vol.snapshot, vol.mountpoint.as_deref())?;
        ctx.checkpoint()?;
        let (root, lower) = match &overlay {
            Some(mapping) => {
                let mnt = host.mount_idmapped(&snap_dir, mapping)?;
                let m = mnt.clone();
                guards.push(format!("unmount {}", mnt.display()), move || {
                    host.unmount(&m)
                });
                ctx.checkpoint()?;
                (mnt, Some(snap_dir))
            }
            None => (snap_dir, None),
        };
        let guid = host.dataset_guid(&vol.dataset)?;
        ingest_dir(
            &mut builder,
            &TreeSource {
                root: &root,
                source_id: format!("zfs-guid:{guid}"),
                prefix: vol.archive_path.as_bytes().to_vec(),
                excludes: &excludes,
                one_file_system: true,
                idmap: Some(&job.idmap),
                lower: lower.as_deref(),
            },
            &mut cache,
            ctx.report,
        )?;
        ctx.checkpoint()?;
    }
    let mut meta = base_metadata("lxc", format!("lxc-{}-files", job.vmid.0));
    meta.insert("vmid".into(), job.vmid.0.into());
    meta.insert(
        "hostname".into(),
        job.hostname.clone().unwrap_or_default().into(),
    );
    meta.insert("unprivileged".into(), job.unprivileged.into());
    meta.insert(
        "datasets".into(),
        job.volumes
            .iter()
            .map(|v| v.dataset.to_string())
            .collect::<Vec<_>>()
            .into(),
    );
    meta.insert("snapshot".into(), snapshot.into());
    let (_, manifest) = builder.finish(&job.archive, meta)?;
    save_files_cache(cache, ctx.report);
    Ok(manifest)
}

/// `./etc/vzdump/pct.conf` and `./etc/vzdump/pct.fw` lead the archive as in vzdump's,
/// owned as vzdump's tar records them (`FilesJob::vzdump_file_owner`).
pub(super) fn add_vzdump_files(
    builder: &mut ArchiveBuilder,
    (uid, gid): (u32, u32),
    pct_conf: &str,
    pct_fw: &str,
) -> Result<(), BackupError> {
    let now = jiff::Timestamp::now();
    let t = Timestamp {
        secs: now.as_second(),
        nanos: 0,
    };
    for (name, text) in [
        ("etc/vzdump/pct.conf", pct_conf),
        ("etc/vzdump/pct.fw", pct_fw),
    ] {
        let mut item = Item::new(name.as_bytes().to_vec(), Kind::File);
        item.mode = 0o644;
        item.uid = uid;
        item.gid = gid;
        item.mtime = t;
        item.atime = t;
        item.ctime = t;
        builder.add(item, Some(&mut text.as_bytes()), false)?;
    }
    Ok(())
}
