//! Reading one directory entry into an `Item`: statx for the metadata, readlink for symlinks,
//! every readable xattr with the POSIX ACL ones decoded into `acl_access`/`acl_default`.
//! Works on an `O_PATH | O_NOFOLLOW` descriptor, so it never follows a symlink, never blocks
//! on a fifo and never opens a device. It does not know about hard links or sparse files:
//! the walker decides those.

use super::{acl, xattr};
use crate::item::{Item, Kind, Timestamp, Xattr};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags, StatxFlags, StatxTimestamp};
use rustix::io::Errno;
use std::io;

/// What the walker needs beyond the item itself.
pub(crate) struct Probe {
    pub item: Item,
    pub dev: (u32, u32),
    pub ino: u64,
    pub nlink: u32,
    /// 512-byte blocks allocated, to spot files that may have holes.
    pub blocks: u64,
    /// The `O_PATH` descriptor the metadata came from: opening `"."` through it reaches the
    /// very directory that was stat'ed, even if its name was replaced meanwhile.
    pub fd: OwnedFd,
}

pub(crate) enum ProbeError {
    /// The entry disappeared between readdir and stat.
    Vanished,
    /// A socket: tar cannot store it and neither do we.
    Socket,
    /// A file type statx reports but Linux should not have.
    UnknownType(u32),
    Io(io::Error),
}

impl From<Errno> for ProbeError {
    fn from(e: Errno) -> Self {
        if e == Errno::NOENT {
            ProbeError::Vanished
        } else {
            ProbeError::Io(e.into())
        }
    }
}

fn ts(t: StatxTimestamp) -> Timestamp {
    Timestamp {
        secs: t.tv_sec,
        nanos: t.tv_nsec,
    }
}

/// Reads the entry `name` of the directory `parent` (`"."` for the directory itself) as an item
/// at archive path `path`. Soft problems (an unreadable xattr, a malformed ACL) are pushed
/// to `warnings` as text without the path; the caller prefixes it.
pub(crate) fn probe(
    parent: BorrowedFd<'_>,
    name: &[u8],
    path: Vec<u8>,
    warnings: &mut Vec<String>,
) -> Result<Probe, ProbeError> {
    let fd = rustix::fs::openat(
        parent,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let stx = rustix::fs::statx(&fd, "", AtFlags::EMPTY_PATH, StatxFlags::BASIC_STATS)?;
    let mode = u32::from(stx.stx_mode);
    let kind = match mode & 0o170000 {
        0o100000 => Kind::File,
        0o040000 => Kind::Dir,
        0o120000 => Kind::Symlink {
            target: rustix::fs::readlinkat(&fd, "", Vec::new())?.into_bytes(),
        },
        0o020000 => Kind::CharDevice {
            major: stx.stx_rdev_major,
            minor: stx.stx_rdev_minor,
        },
        0o060000 => Kind::BlockDevice {
            major: stx.stx_rdev_major,
            minor: stx.stx_rdev_minor,
        },
        0o010000 => Kind::Fifo,
        0o140000 => return Err(ProbeError::Socket),
        other => return Err(ProbeError::UnknownType(other)),
    };
    let is_file = matches!(kind, Kind::File);
    let is_dir = matches!(kind, Kind::Dir);
    let mut item = Item::new(path, kind);
    item.mode = mode & 0o7777;
    item.uid = stx.stx_uid;
    item.gid = stx.stx_gid;
    item.mtime = ts(stx.stx_mtime);
    item.atime = ts(stx.stx_atime);
    item.ctime = ts(stx.stx_ctime);
    item.size = if is_file { stx.stx_size } else { 0 };
    read_xattrs(fd.as_fd(), is_dir, &mut item, warnings);
    Ok(Probe {
        item,
        dev: (stx.stx_dev_major, stx.stx_dev_minor),
        ino: stx.stx_ino,
        nlink: stx.stx_nlink,
        blocks: stx.stx_blocks,
        fd,
    })
}

fn read_xattrs(fd: BorrowedFd<'_>, is_dir: bool, item: &mut Item, warnings: &mut Vec<String>) {
    let mut names = match xattr::list(fd) {
        Ok(names) => names,
        Err(e) => {
            warnings.push(format!("cannot list xattrs: {e}"));
            return;
        }
    };
    names.sort();
    for name in names {
        let value = match xattr::get(fd, &name) {
            Ok(Some(v)) => v,
            Ok(None) => continue,
            Err(e) => {
                let shown = name.escape_ascii();
                warnings.push(format!("cannot read xattr {shown}: {e}"));
                continue;
            }
        };
        let which = if name == acl::XATTR_ACCESS.as_bytes() {
            Some(false)
        } else if name == acl::XATTR_DEFAULT.as_bytes() {
            Some(true)
        } else {
            None
        };
        let Some(default) = which else {
            item.xattrs.push(Xattr { name, value });
            continue;
        };
        match acl::decode(&value) {
            // The mode bits already say everything a base-only access ACL would. A base-only
            // default ACL still matters: it is what new files in the directory get.
            Ok(entries) if !default && acl::is_minimal(&entries) => {}
            Ok(entries) if default && is_dir => item.acl_default = Some(entries),
            Ok(_) if default => {}
            Ok(entries) => item.acl_access = Some(entries),
            Err(e) => warnings.push(format!("{}: {e}", name.escape_ascii())),
        }
    }
}
