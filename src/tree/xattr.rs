//! Extended attributes of any entry (file, directory, symlink, device, fifo) through an
//! `O_PATH` descriptor. `f*xattr` refuses `O_PATH` descriptors and `l*xattr` needs the full
//! path (which may exceed PATH_MAX), so we go through the `/proc/self/fd/N` magic link: the
//! kernel resolves it to the entry itself, even when that entry is a symlink.
//! Never opens a file for reading, so fifos and devices are safe to ask.

use rustix::fd::{AsRawFd, BorrowedFd};
use rustix::io::Errno;
use std::io;

pub(crate) fn proc_path(fd: BorrowedFd<'_>) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Is this errno the filesystem saying "no xattrs here at all"?
pub(crate) fn unsupported(e: Errno) -> bool {
    e == Errno::NOTSUP || e == Errno::OPNOTSUPP
}

/// All names, unsorted. A filesystem without xattr support has none.
pub(crate) fn list(fd: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let path = proc_path(fd);
    // Most entries have no xattrs or a few short names: ask with a small buffer first and
    // query the size only when it is too small (one path lookup per entry instead of two).
    let mut buf = vec![0u8; 256];
    loop {
        match rustix::fs::listxattr(path.as_str(), &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                break;
            }
            Err(Errno::RANGE) => {
                let size = match rustix::fs::listxattr_query(path.as_str()) {
                    Ok(n) => n,
                    Err(e) if unsupported(e) => return Ok(Vec::new()),
                    Err(e) => return Err(e.into()),
                };
                // The list may grow again before the next call: the loop then asks again.
                buf.resize(size.max(buf.len() * 2), 0);
            }
            Err(e) if unsupported(e) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(buf
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

/// One value; `Ok(None)` when the attribute vanished since it was listed.
pub(crate) fn get(fd: BorrowedFd<'_>, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let path = proc_path(fd);
    let mut buf = Vec::new();
    loop {
        let size = match rustix::fs::getxattr_query(path.as_str(), name) {
            Ok(n) => n,
            Err(Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        buf.resize(size, 0);
        match rustix::fs::getxattr(path.as_str(), name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(Errno::RANGE) => continue,
            Err(Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

pub(crate) fn set(fd: BorrowedFd<'_>, name: &[u8], value: &[u8]) -> Result<(), Errno> {
    rustix::fs::setxattr(
        proc_path(fd).as_str(),
        name,
        value,
        rustix::fs::XattrFlags::empty(),
    )
}

/// Removes an attribute; absent or unsupported is success.
pub(crate) fn remove(fd: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    match rustix::fs::removexattr(proc_path(fd).as_str(), name) {
        Ok(()) | Err(Errno::NODATA) => Ok(()),
        Err(e) if unsupported(e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fd::AsFd;
    use rustix::fs::{Mode, OFlags};

    #[test]
    fn lists_names_longer_than_the_first_buffer() {
        let tmp = crate::tree::fixture::shm_tempdir();
        let file = tmp.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let fd = rustix::fs::open(&file, OFlags::PATH | OFlags::CLOEXEC, Mode::empty()).unwrap();
        assert!(list(fd.as_fd()).unwrap().is_empty());
        let mut want: Vec<Vec<u8>> = (0..40)
            .map(|i| format!("user.a-rather-long-attribute-name-{i:03}").into_bytes())
            .collect();
        for name in &want {
            set(fd.as_fd(), name, b"v").unwrap();
        }
        let mut got = list(fd.as_fd()).unwrap();
        got.sort();
        want.sort();
        assert_eq!(got, want);
    }
}
