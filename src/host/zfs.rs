//! Running `zfs` with argv from `crate::zfs`: snapshot sets (atomic per pool, with the
//! zfs-fuse fallback), read-only clones, destroy with retries on "busy", listing, and the
//! cleanup of leftovers of dead runs.

use super::runner::{run, RunError};
use crate::zfs::argv::Destroyable;
use crate::zfs::{
    clone_argv, destroy_argv, get_argv, list_argv, parse_get, parse_list, snapshot_with_props_argv,
    DatasetName, SnapshotName, UserProperty, ZfsError, ZfsListEntry,
};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ZfsHostError {
    #[error(transparent)]
    Zfs(#[from] ZfsError),
    #[error(transparent)]
    Run(#[from] RunError),
}

fn classify(e: RunError) -> ZfsHostError {
    match &e {
        RunError::Failed { stderr, .. } => match ZfsError::from_stderr(stderr) {
            ZfsError::Other { .. } => ZfsHostError::Run(e),
            z => ZfsHostError::Zfs(z),
        },
        RunError::Spawn { .. } => ZfsHostError::Run(e),
    }
}

/// Every filesystem and volume with its mountpoint.
pub fn list() -> Result<Vec<ZfsListEntry>, ZfsHostError> {
    let out = run(&list_argv(&[], false)).map_err(classify)?;
    Ok(parse_list(&out)?)
}

pub fn guid(dataset: &DatasetName) -> Result<String, ZfsHostError> {
    let out = run(&get_argv(&["guid"], &[dataset.as_str()])).map_err(classify)?;
    let rows = parse_get(&out)?;
    Ok(rows
        .into_iter()
        .find_map(|r| r.value)
        .unwrap_or_else(|| dataset.to_string()))
}

/// Takes the snapshots of one pool in one call (atomic on OpenZFS). Where the `zfs` answers
/// that it takes only one name per call (zfs-fuse), falls back to one call each and returns
/// `false` (the set is then not atomic; the caller says so). Every snapshot carries the run's
/// property. On failure, the snapshots already taken are destroyed.
pub fn snapshot_set(snaps: &[SnapshotName], run_id: &str) -> Result<bool, ZfsHostError> {
    let props = [(UserProperty::run(), run_id.to_string())];
    match run(&snapshot_with_props_argv(snaps, &props)?).map_err(classify) {
        Ok(_) => Ok(true),
        Err(ZfsHostError::Zfs(ZfsError::MultiSnapshotUnsupported { .. })) => {
            let mut taken = Vec::new();
            for s in snaps {
                let one = std::slice::from_ref(s);
                if let Err(e) = run(&snapshot_with_props_argv(one, &props)?).map_err(classify) {
                    for t in taken {
                        let _ = destroy(&Destroyable::Snapshot(t));
                    }
                    return Err(e);
                }
                taken.push(s.clone());
            }
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// A read-only clone of `snap` mounted at `mountpoint`, tagged with the run id.
pub fn clone_readonly(
    snap: &SnapshotName,
    target: &DatasetName,
    mountpoint: &std::path::Path,
    run_id: &str,
) -> Result<(), ZfsHostError> {
    let mp = mountpoint.to_string_lossy();
    let argv = clone_argv(
        snap,
        target,
        &[
            ("readonly", "on"),
            ("mountpoint", &mp),
            (crate::zfs::RUN_PROPERTY, run_id),
        ],
    )?;
    run(&argv).map_err(classify)?;
    Ok(())
}

/// Destroys a proxborg snapshot or clone; "busy" (a reader just closed its files) is retried
/// for up to ten seconds, as zfs-fuse needs.
pub fn destroy(target: &Destroyable) -> Result<(), ZfsHostError> {
    let argv = destroy_argv(target)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match run(&argv).map_err(classify) {
            Ok(_) => return Ok(()),
            Err(ZfsHostError::Zfs(ZfsError::DatasetMissing { .. })) => return Ok(()),
            Err(ZfsHostError::Zfs(ZfsError::Busy { .. })) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Destroys the clones and snapshots left by proxborg runs that are no longer alive (killed
/// with -9, power loss): those whose `proxborg:run` (set locally, not inherited) names this
/// host and a process that no longer runs. Runs of other hosts are left alone. Returns what
/// was removed, one line each.
pub fn cleanup_dead_runs(this_host: &str) -> Result<Vec<String>, ZfsHostError> {
    let pools: Vec<DatasetName> = list()?
        .into_iter()
        .filter_map(|e| e.dataset())
        .filter(|d| d.parent().is_none())
        .collect();
    let mut removed = Vec::new();
    for pool in pools {
        let out = run(&crate::zfs::cleanup::leftovers_argv(&pool)).map_err(classify)?;
        let rows = crate::zfs::parse::parse_get_sourced(&out)?;
        let runs: Vec<String> = rows.iter().filter_map(|r| r.value.clone()).collect();
        let alive: Vec<&str> = runs
            .iter()
            .map(String::as_str)
            .filter(|r| !run_is_dead(r, this_host))
            .collect();
        for left in crate::zfs::cleanup::leftovers(&rows, &alive) {
            let name = match &left.target {
                Destroyable::Snapshot(s) => s.to_string(),
                Destroyable::Clone(d) => d.to_string(),
            };
            if let Destroyable::Clone(d) = &left.target {
                let _ = unmount_quietly(d);
            }
            destroy(&left.target)?;
            removed.push(format!("{name} (run {})", left.run));
        }
    }
    Ok(removed)
}

fn unmount_quietly(d: &DatasetName) -> Result<(), RunError> {
    run(&["zfs".to_string(), "unmount".to_string(), d.to_string()]).map(drop)
}

/// A run id is `host:pid:start`; dead when it is ours and the pid is gone.
pub fn run_is_dead(run_id: &str, this_host: &str) -> bool {
    let mut parts = run_id.rsplitn(3, ':');
    let (_start, pid, host) = (parts.next(), parts.next(), parts.next());
    match (host, pid.and_then(|p| p.parse::<u32>().ok())) {
        (Some(h), Some(pid)) if h == this_host => {
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
        }
        _ => false,
    }
}

/// This process's run id.
pub fn run_id(this_host: &str) -> String {
    format!(
        "{this_host}:{}:{}",
        std::process::id(),
        jiff::Timestamp::now().as_second()
    )
}

/// What a zvol snapshot is: its size and guid (the guid a send stream names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZvolSnapshot {
    pub volsize: u64,
    pub guid: u64,
}

/// `zfs get -Hp volsize,guid pool/vol@snap`.
pub fn zvol_snapshot(snap: &SnapshotName) -> Result<ZvolSnapshot, ZfsHostError> {
    let out = run(&get_argv(&["volsize", "guid"], &[snap.as_str()])).map_err(classify)?;
    let rows = parse_get(&out)?;
    let num = |prop: &str| -> Result<u64, ZfsHostError> {
        crate::zfs::property(&rows, snap.as_str(), prop)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                ZfsHostError::Zfs(ZfsError::Other {
                    stderr: format!("{snap}: no numeric {prop} in `zfs get` (not a zvol?)"),
                })
            })
    };
    Ok(ZvolSnapshot {
        volsize: num("volsize")?,
        guid: num("guid")?,
    })
}

/// A zvol's snapshots and bookmarks with their guids and creation txgs.
pub fn zvol_points(dataset: &DatasetName) -> Result<Vec<crate::zfs::zvol::Point>, ZfsHostError> {
    let out = run(&crate::zfs::zvol::points_argv(dataset)).map_err(classify)?;
    Ok(crate::zfs::zvol::parse_points(&out)?)
}

/// `zfs bookmark pool/vol@snap pool/vol#mark`.
pub fn bookmark(
    snap: &SnapshotName,
    bookmark: &crate::zfs::zvol::BookmarkName,
) -> Result<(), ZfsHostError> {
    run(&crate::zfs::zvol::bookmark_argv(snap, bookmark)?).map_err(classify)?;
    Ok(())
}

/// `zfs destroy pool/vol#mark` of a proxborg bookmark; one already gone is fine.
pub fn destroy_bookmark(bookmark: &crate::zfs::zvol::BookmarkName) -> Result<(), ZfsHostError> {
    let argv = ["zfs", "destroy", bookmark.as_str()].map(str::to_string);
    match run(&argv).map_err(classify) {
        Ok(_) | Err(ZfsHostError::Zfs(ZfsError::DatasetMissing { .. })) => Ok(()),
        Err(e) => Err(e),
    }
}

/// `zfs send [-i bookmark] snap`, read as it is written.
pub fn send(
    snap: &SnapshotName,
    from: Option<&crate::zfs::zvol::BookmarkName>,
) -> Result<super::runner::StreamChild, ZfsHostError> {
    Ok(super::runner::StreamChild::spawn(
        &crate::zfs::zvol::send_argv(snap, from)?,
    )?)
}
