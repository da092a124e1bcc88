//! Reading a regular file's content the way the item model stores it: only the data extents
//! of a sparse file, concatenated, or the whole file when it is dense. The reader yields
//! exactly `item.stored_len()` bytes even if the file shrank (zeros) or grew (truncated) since
//! it was stat'ed, and says so through `changed()` so the caller can warn. Never follows a
//! symlink at the last component, never updates atime when allowed not to, never blocks on a
//! file swapped for a fifo.

use crate::item::{Extent, Item, Timestamp};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{Mode, OFlags, SeekFrom};
use rustix::io::Errno;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

/// Paths at least this long are opened piecewise (PATH_MAX is 4096 including the NUL).
const PATH_PIECE: usize = 4000;

fn read_flags() -> OFlags {
    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOATIME
}

/// Opens `name` in `parent` for reading, as a regular file only.
pub(crate) fn open_at(parent: BorrowedFd<'_>, name: &[u8]) -> io::Result<File> {
    let fd = match rustix::fs::openat(parent, name, read_flags(), Mode::empty()) {
        // O_NOATIME is refused on files we do not own unless we have CAP_FOWNER.
        Err(Errno::PERM) => {
            rustix::fs::openat(parent, name, read_flags() - OFlags::NOATIME, Mode::empty())?
        }
        r => r?,
    };
    regular(fd)
}

fn regular(fd: OwnedFd) -> io::Result<File> {
    let file = File::from(fd);
    if !file.metadata()?.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file any more",
        ));
    }
    Ok(file)
}

/// Opens a file by path, also when the path is longer than PATH_MAX: the leading directories
/// are then opened in pieces (following symlinks there, as a plain open would).
pub fn open_path(fs_path: &Path) -> io::Result<File> {
    let mut rest = fs_path.as_os_str().as_bytes();
    let mut dir: Option<OwnedFd> = None;
    while rest.len() >= PATH_PIECE {
        let cut = rest[..PATH_PIECE]
            .iter()
            .rposition(|&b| b == b'/')
            .ok_or_else(|| io::Error::from(Errno::NAMETOOLONG))?;
        let head = if cut == 0 { &rest[..1] } else { &rest[..cut] };
        let base = dir.as_ref().map_or(rustix::fs::CWD, |d| d.as_fd());
        let next = rustix::fs::openat(
            base,
            head,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        dir = Some(next);
        rest = &rest[cut + 1..];
    }
    let base = dir.as_ref().map_or(rustix::fs::CWD, |d| d.as_fd());
    open_at(base, rest)
}

/// The data extents of a file of logical size `size`, by SEEK_DATA/SEEK_HOLE; `None` when the
/// file has no holes, which is also what a filesystem without hole support reports. Moves the
/// file offset.
pub fn data_extents(file: &File, size: u64) -> io::Result<Option<Vec<Extent>>> {
    let fd = file.as_fd();
    let mut extents = Vec::new();
    let mut offset = 0;
    while offset < size {
        let data = match rustix::fs::seek(fd, SeekFrom::Data(offset)) {
            Ok(d) => d,
            // No data at or after `offset`: the rest is a hole.
            Err(Errno::NXIO) => break,
            Err(Errno::INVAL) if offset == 0 => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if data >= size {
            break;
        }
        let hole = match rustix::fs::seek(fd, SeekFrom::Hole(data)) {
            Ok(h) => h,
            Err(Errno::NXIO) => size,
            Err(e) => return Err(e.into()),
        };
        let end = hole.clamp(data + 1, size);
        extents.push(Extent {
            offset: data,
            len: end - data,
        });
        offset = end;
    }
    let dense = extents.len() == 1 && extents[0].offset == 0 && extents[0].len == size;
    if size == 0 || dense {
        return Ok(None);
    }
    Ok(Some(extents))
}

/// The stored bytes of one regular file. See the module comment for the guarantees.
pub struct FileContent {
    file: File,
    extents: Vec<Extent>,
    index: usize,
    /// Bytes already yielded from `extents[index]`.
    done: u64,
    size: u64,
    mtime: Timestamp,
    changed: bool,
    checked: bool,
}

/// Opens `fs_path` to read the content `item` describes (`item.sparse` decides which ranges).
/// Errors name the path.
pub fn open_content(fs_path: &Path, item: &Item) -> io::Result<FileContent> {
    let file = open_path(fs_path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", fs_path.display())))?;
    Ok(FileContent::new(file, item))
}

impl FileContent {
    /// Reads `file` as the content of `item`.
    pub fn new(file: File, item: &Item) -> Self {
        let extents = match &item.sparse {
            Some(map) => map.clone(),
            None => vec![Extent {
                offset: 0,
                len: item.size,
            }],
        };
        FileContent {
            file,
            extents,
            index: 0,
            done: 0,
            size: item.size,
            mtime: item.mtime,
            changed: false,
            checked: false,
        }
    }

    /// True once a read found the file shorter than its item said, or the end of reading found
    /// its size or mtime different from the item's: the stored content is not a snapshot.
    pub fn changed(&self) -> bool {
        self.changed
    }

    fn check_end(&mut self) -> io::Result<()> {
        if !self.checked {
            self.checked = true;
            let meta = self.file.metadata()?;
            let mtime = Timestamp {
                secs: meta.mtime(),
                nanos: meta.mtime_nsec() as u32,
            };
            if meta.len() != self.size || mtime != self.mtime {
                self.changed = true;
            }
        }
        Ok(())
    }
}

impl Read for FileContent {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(extent) = self.extents.get(self.index).copied() else {
                self.check_end()?;
                return Ok(0);
            };
            let left = extent.len - self.done;
            if left == 0 {
                self.index += 1;
                self.done = 0;
                continue;
            }
            if buf.is_empty() {
                return Ok(0);
            }
            let want = left.min(buf.len() as u64) as usize;
            match self
                .file
                .read_at(&mut buf[..want], extent.offset + self.done)
            {
                Ok(0) => {
                    // The file shrank: keep the promised length with zeros.
                    self.changed = true;
                    buf[..want].fill(0);
                    self.done += want as u64;
                    return Ok(want);
                }
                Ok(n) => {
                    self.done += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}
