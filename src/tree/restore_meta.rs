//! The second half of restoring one entry: its content (holes included) and its metadata,
//! in the only order that keeps every bit: owner first (chown clears setuid/setgid and
//! `security.capability`), then mode, xattrs, ACLs, the file capability, and times last
//! (everything before touches ctime or mtime). Never resolves a path through a symlink: the
//! entry is reached from its parent descriptor with `O_NOFOLLOW`.

use super::{acl, xattr};
use crate::item::{Extent, Item, Kind, Timestamp};
use rustix::fd::BorrowedFd;
use rustix::fs::{AtFlags, Gid, Mode, OFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("cannot restore into {path}: {source}")]
    Dest { path: PathBuf, source: io::Error },
    #[error("refusing to restore {path}: {reason}")]
    Unsafe { path: String, reason: &'static str },
    #[error("{path}: cannot {op}: {source}")]
    Io {
        path: String,
        op: &'static str,
        source: io::Error,
    },
    #[error("{path}: content ended after {got} of {want} bytes")]
    ShortContent { path: String, got: u64, want: u64 },
}

pub(crate) fn io_err<'a>(
    path: &'a str,
    op: &'static str,
) -> impl FnOnce(Errno) -> RestoreError + 'a {
    move |e| RestoreError::Io {
        path: path.to_string(),
        op,
        source: e.into(),
    }
}

const CAPABILITY: &[u8] = b"security.capability";
const BLOCK: usize = 4096;
const BUF: usize = 1 << 20;

fn timespec(t: Timestamp) -> Timespec {
    Timespec {
        tv_sec: t.secs,
        tv_nsec: t.nanos.into(),
    }
}

/// How `apply` reaches the entry: a regular file just written is still open, and the `f*`
/// calls on its descriptor save a path lookup each (a third of a many-file extract's system
/// calls); anything else is opened `O_PATH` and reached through `/proc/self/fd`.
#[derive(Clone, Copy)]
enum Handle<'a> {
    Open(BorrowedFd<'a>),
    Path(BorrowedFd<'a>),
}

impl Handle<'_> {
    fn chmod(self, mode: Mode) -> Result<(), Errno> {
        match self {
            Handle::Open(fd) => rustix::fs::fchmod(fd, mode),
            Handle::Path(fd) => rustix::fs::chmod(xattr::proc_path(fd).as_str(), mode),
        }
    }
    fn set_xattr(self, name: &[u8], value: &[u8]) -> Result<(), Errno> {
        match self {
            Handle::Open(fd) => {
                rustix::fs::fsetxattr(fd, name, value, rustix::fs::XattrFlags::empty())
            }
            Handle::Path(fd) => xattr::set(fd, name, value),
        }
    }
    fn remove_xattr(self, name: &[u8]) -> io::Result<()> {
        match self {
            Handle::Open(fd) => match rustix::fs::fremovexattr(fd, name) {
                Ok(()) | Err(Errno::NODATA) => Ok(()),
                Err(e) if xattr::unsupported(e) => Ok(()),
                Err(e) => Err(e.into()),
            },
            Handle::Path(fd) => xattr::remove(fd, name),
        }
    }
}

/// Applies owner, mode, xattrs, ACLs and times of `item` to the entry `name` in `parent`
/// (through `open`, the entry's own writable descriptor, when the caller still has it).
/// A filesystem without support for an xattr is a warning, not an error.
pub(crate) fn apply(
    parent: BorrowedFd<'_>,
    name: &[u8],
    open: Option<BorrowedFd<'_>>,
    item: &Item,
    as_root: bool,
    shown: &str,
    warnings: &mut Vec<String>,
) -> Result<(), RestoreError> {
    let is_symlink = matches!(item.kind, Kind::Symlink { .. });
    let path_fd;
    let handle = match open {
        Some(fd) => Handle::Open(fd),
        None => {
            path_fd = rustix::fs::openat(
                parent,
                name,
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(io_err(shown, "open to set metadata"))?;
            Handle::Path(rustix::fd::AsFd::as_fd(&path_fd))
        }
    };
    if as_root {
        // u32::MAX would mean "leave unchanged" to the kernel; an archive cannot ask that.
        let uid = (item.uid != u32::MAX).then(|| Uid::from_raw(item.uid));
        let gid = (item.gid != u32::MAX).then(|| Gid::from_raw(item.gid));
        match handle {
            Handle::Open(fd) => rustix::fs::fchown(fd, uid, gid),
            Handle::Path(_) => {
                rustix::fs::chownat(parent, name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
            }
        }
        .map_err(io_err(shown, "set owner"))?;
    }
    if !is_symlink {
        handle
            .chmod(Mode::from_raw_mode(item.mode & 0o7777))
            .map_err(io_err(shown, "set mode"))?;
    }
    let mut set = |xname: &[u8], value: &[u8]| -> Result<(), RestoreError> {
        match handle.set_xattr(xname, value) {
            Ok(()) => Ok(()),
            Err(e) if xattr::unsupported(e) => {
                let name = xname.escape_ascii();
                warnings.push(format!("{shown}: xattr {name} not supported here"));
                Ok(())
            }
            // Without root, trusted.* and security.* cannot be set: tar warns and goes on.
            Err(e) if !as_root && (e == Errno::PERM || e == Errno::ACCESS) => {
                let name = xname.escape_ascii();
                warnings.push(format!("{shown}: xattr {name} needs root: {e}"));
                Ok(())
            }
            Err(e) => Err(io_err(shown, "set an xattr")(e)),
        }
    };
    for x in item.xattrs.iter().filter(|x| x.name != CAPABILITY) {
        set(&x.name, &x.value)?;
    }
    if !is_symlink {
        // Without an ACL of its own, the entry must not keep one inherited from a default ACL
        // of a directory that was already there.
        let acls = [
            (acl::XATTR_ACCESS, &item.acl_access, true),
            (acl::XATTR_DEFAULT, &item.acl_default, item.is_dir()),
        ];
        for (xname, entries, applies) in acls {
            match entries {
                Some(entries) => set(xname.as_bytes(), &acl::encode(entries))?,
                None if applies => {
                    handle
                        .remove_xattr(xname.as_bytes())
                        .map_err(|source| RestoreError::Io {
                            path: shown.to_string(),
                            op: "remove an inherited ACL",
                            source,
                        })?
                }
                None => {}
            }
        }
    }
    for x in item.xattrs.iter().filter(|x| x.name == CAPABILITY) {
        set(&x.name, &x.value)?;
    }
    let times = Timestamps {
        last_access: timespec(item.atime),
        last_modification: timespec(item.mtime),
    };
    match handle {
        Handle::Open(fd) => rustix::fs::futimens(fd, &times),
        Handle::Path(_) => rustix::fs::utimensat(parent, name, &times, AtFlags::SYMLINK_NOFOLLOW),
    }
    .map_err(io_err(shown, "set times"))
}

/// Reads exactly `want` bytes (or up to EOF) into `buf`; returns how many arrived.
fn fill(content: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match content.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Writes the stored bytes of `item` into the new, empty `file`: each data extent at its
/// offset, then the logical size. Ranges never written read back as zeros, so with
/// `sparse` an all-zero 4 KiB block is skipped and stays a hole.
pub(crate) fn write_content(
    file: &File,
    item: &Item,
    content: &mut dyn Read,
    sparse: bool,
    shown: &str,
) -> Result<(), RestoreError> {
    let io = |op| {
        move |source| RestoreError::Io {
            path: shown.to_string(),
            op,
            source,
        }
    };
    let dense = [Extent {
        offset: 0,
        len: item.size,
    }];
    let extents = item.sparse.as_deref().unwrap_or(&dense);
    let want = item.stored_len();
    let mut got = 0u64;
    let mut buf = vec![0u8; BUF.min(want as usize).max(1)];
    for extent in extents {
        let mut offset = extent.offset;
        let end = extent.offset.saturating_add(extent.len);
        while offset < end {
            let n = ((end - offset) as usize).min(buf.len());
            let read = fill(content, &mut buf[..n]).map_err(io("read the content"))?;
            got += read as u64;
            if read < n {
                let path = shown.to_string();
                return Err(RestoreError::ShortContent { path, got, want });
            }
            write_at(file, &buf[..n], offset, sparse).map_err(io("write"))?;
            offset += n as u64;
        }
    }
    file.set_len(item.size).map_err(io("set the file size"))
}

fn write_at(file: &File, data: &[u8], offset: u64, sparse: bool) -> io::Result<()> {
    if !sparse {
        return file.write_all_at(data, offset);
    }
    let mut pos = 0usize;
    while pos < data.len() {
        // Pieces end on 4 KiB boundaries of the file so skipped ones are whole blocks.
        let to_boundary = BLOCK - ((offset + pos as u64) % BLOCK as u64) as usize;
        let piece = &data[pos..(pos + to_boundary).min(data.len())];
        if piece.iter().any(|&b| b != 0) {
            file.write_all_at(piece, offset + pos as u64)?;
        }
        pos += piece.len();
    }
    Ok(())
}
