//! Ending a `proxborg mount`: the FUSE mount is unmounted like any other, by umount(2) as
//! root (what `umount MOUNTPOINT` does), else by `fusermount3 -u`. The serving process sees
//! its connection close and exits on its own. Only proxborg's own FUSE mounts are touched.

use super::runner::run;
use std::path::{Path, PathBuf};

/// `path` made absolute without touching the mount itself: a FUSE mount whose process died
/// fails every stat with ENOTCONN, so only its parent is resolved.
pub fn mount_point(path: &Path) -> std::io::Result<PathBuf> {
    let abs = std::path::absolute(path)?;
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => Ok(std::fs::canonicalize(parent)?.join(name)),
        _ => Ok(abs),
    }
}

/// Whether a proxborg FUSE filesystem is mounted at `mnt` (absolute, canonical parent).
pub fn is_mounted(mnt: &Path) -> std::io::Result<bool> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(crate::mount::is_proxborg_mount(
        &info,
        &mnt.to_string_lossy(),
    ))
}

/// Unmounts the proxborg FUSE filesystem at `mnt`.
pub fn unmount(mnt: &Path) -> Result<(), String> {
    use rustix::mount::{unmount, UnmountFlags};
    let err = match unmount(mnt, UnmountFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(e) if e == rustix::io::Errno::BUSY => {
            return Err(format!(
                "{}: busy (a process has a file open or its working directory in it; `fuser -vm {0}` names it)",
                mnt.display()
            ))
        }
        Err(e) => e,
    };
    // Not root: the setuid helper unmounts what this user mounted.
    let argv = ["fusermount3", "-u", &mnt.to_string_lossy()].map(str::to_string);
    run(&argv)
        .map(drop)
        .map_err(|e| format!("{}: umount: {err}; {e}", mnt.display()))
}
