//! Reading a snapshot: its `.zfs/snapshot` directory where the dataset shows one, else a
//! read-only clone mounted by the host, destroyed by the job's guards.

use super::guards::Guards;
use super::{BackupError, JobCtx};
use crate::host::Taken;
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

/// Takes each group of snapshots in one `zfs snapshot` call (a group is one pool: atomicity
/// holds within a pool), checking for a signal between calls; says so when this zfs took a
/// group one by one (zfs-fuse). `guest` names the guest in that warning. Returns the
/// snapshots taken and, if a call failed or a signal came, why it stopped.
pub(super) fn snapshot_groups(
    ctx: &JobCtx,
    groups: Vec<Vec<SnapshotName>>,
    guest: &str,
) -> (Vec<SnapshotName>, Option<BackupError>) {
    let mut taken = Vec::new();
    for group in groups {
        if let Err(e) = ctx.checkpoint() {
            return (taken, Some(e));
        }
        match ctx.host.snapshot(&group) {
            Ok(how) => {
                if how == Taken::OneByOne && group.len() > 1 {
                    ctx.report.warn(format!(
                        "{guest}: this zfs takes one snapshot per call: the {} snapshots were taken one by one, not atomically",
                        group.len()
                    ));
                }
                taken.extend(group);
            }
            Err(e) => return (taken, Some(e.into())),
        }
    }
    if let Err(e) = ctx.checkpoint() {
        return (taken, Some(e));
    }
    (taken, None)
}

/// Right after the snapshot calls: thaws at once when `frozen` (the thaw is the guard pushed
/// last), before anything else is undone or read; then the snapshots are the guards' to
/// destroy, even when the thaw failed (its marker lets `cleanup` retry it). Returns the first
/// failure: the snapshot's, else the thaw's, else a signal's.
pub(super) fn thaw_and_hold<'a>(
    ctx: &JobCtx<'a>,
    guards: &mut Guards<'a>,
    frozen: bool,
    (taken, failed): (Vec<SnapshotName>, Option<BackupError>),
) -> Result<(), BackupError> {
    let thawed = if frozen { guards.run_last() } else { Ok(()) };
    destroy_later(ctx, guards, taken);
    if let Some(e) = failed {
        return Err(e);
    }
    thawed?;
    ctx.checkpoint()
}
