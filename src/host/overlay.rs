//! `--idmap-via overlay`: present a snapshot with container-side owners through
//! `fuse-overlayfs -o uidmapping=...,gidmapping=...` (the design card's method), instead of
//! translating ids in-process. The mount lives in the run directory and is unmounted by the
//! caller's guard; `cleanup` unmounts those of killed runs.

use super::runner::{run, RunError};
use std::path::Path;

/// Mounts `lower` at `mnt` with the given id mapping options (`IdMap::fuse_overlayfs_options`).
/// `scratch` holds the (unused but required) upper and work directories.
pub fn mount_idmapped(
    lower: &Path,
    scratch: &Path,
    mnt: &Path,
    mapping: &str,
) -> Result<(), RunError> {
    let (upper, work) = (scratch.join("upper"), scratch.join("work"));
    for d in [&upper, &work, &mnt.to_path_buf()] {
        std::fs::create_dir_all(d).map_err(|source| RunError::Spawn {
            cmd: format!("mkdir {}", d.display()),
            source,
        })?;
    }
    // The mount's root takes owner, mode and times from the upper directory: give it the
    // lower root's, or every volume root would show up as an unmapped id with a new mtime.
    let meta = std::fs::metadata(lower).map_err(|source| RunError::Spawn {
        cmd: format!("stat {}", lower.display()),
        source,
    })?;
    {
        use std::os::unix::fs::MetadataExt;
        std::os::unix::fs::chown(&upper, Some(meta.uid()), Some(meta.gid())).map_err(|source| {
            RunError::Spawn {
                cmd: format!("chown {}", upper.display()),
                source,
            }
        })?;
        let _ = std::fs::set_permissions(&upper, meta.permissions());
        if let (Ok(m), Ok(a), Ok(dir)) = (
            meta.modified(),
            meta.accessed(),
            std::fs::File::open(&upper),
        ) {
            let _ = dir.set_times(std::fs::FileTimes::new().set_modified(m).set_accessed(a));
        }
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},{mapping}",
        lower.display(),
        upper.display(),
        work.display()
    );
    run(&[
        "fuse-overlayfs".to_string(),
        "-o".to_string(),
        opts,
        mnt.to_string_lossy().into_owned(),
    ])
    .map(drop)
}

pub fn unmount(mnt: &Path) -> Result<(), RunError> {
    let argv = ["fusermount3", "-u", &mnt.to_string_lossy()].map(str::to_string);
    let mut last = None;
    for _ in 0..40 {
        match run(&argv) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    Err(last.expect("tried at least once"))
}

/// One unmount attempt, for leftovers of killed runs (not mounted: an error, ignored).
pub fn unmount_once(mnt: &Path) -> Result<(), RunError> {
    run(&["fusermount3", "-u", &mnt.to_string_lossy()].map(str::to_string)).map(drop)
}
