//! Reading a snapshot: its `.zfs/snapshot` directory where the dataset shows one, else a
//! read-only clone mounted by the host, destroyed by the job's guards.

use super::guards::Guards;
use super::{BackupError, JobCtx};
use crate::zfs::argv::Destroyable;
use crate::zfs::SnapshotName;
use std::path::{Path, PathBuf};

pub(super) fn readable<'a>(
    ctx: &JobCtx<'a>,
    guards: &mut Guards<'a>,
    snap: &SnapshotName,
    mountpoint: Option<&Path>,
) -> Result<PathBuf, BackupError> {
    if let Some(dir) = mountpoint.and_then(|mp| ctx.host.snapshot_dir(mp, snap)) {
        return Ok(dir);
    }
    ctx.checkpoint()?;
    let clone = crate::zfs::names::clone_of(snap)?;
    let mount = ctx.host.clone_readonly(snap, &clone)?;
    let host = ctx.host;
    guards.push(format!("destroy clone {clone}"), move || {
        host.destroy(&Destroyable::Clone(clone))
    });
    Ok(mount)
}

/// Registers the destroy of each snapshot (after the thaw: guards run in reverse).
pub(super) fn destroy_later<'a>(
    ctx: &JobCtx<'a>,
    guards: &mut Guards<'a>,
    snaps: Vec<SnapshotName>,
) {
    let host = ctx.host;
    for s in snaps {
        guards.push(format!("destroy snapshot {s}"), move || {
            host.destroy(&Destroyable::Snapshot(s))
        });
    }
}
