//! Walks a directory tree into items in tar order: the root (path `""`) first, then depth
//! first with names sorted bytewise, parents before children. Streams: memory is bounded by
//! the open directories' name lists (depth x width) plus the hard link table, never the whole
//! tree. Problems below the root (an unreadable directory, a vanished file, a socket) become
//! `WalkEvent::Warning`s and the walk goes on. Never reads file contents (only the sparse map
//! of files that may have holes) and never follows a symlink below the root.

use super::entry::{probe, Probe, ProbeError};
use super::{content, show};
use crate::item::pattern::Pattern;
use crate::item::{Item, Kind, Timestamp};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default)]
pub struct WalkOptions {
    /// Like `tar --one-file-system`: a directory on another device than the root is recorded
    /// (empty) but not descended into.
    pub one_file_system: bool,
    /// Matched against each item path like `tar --exclude`; an excluded directory is not
    /// descended into.
    pub excludes: Vec<Pattern>,
    /// Where this tree will sit in the archive (`srv/data` for a container mountpoint):
    /// excludes are matched against `prefix/path`, as the archive will name the entry.
    /// Item paths stay relative to the walked root.
    pub exclude_prefix: Vec<u8>,
    /// The tree beneath an id-mapping overlay (fuse-overlayfs) that is being walked. The
    /// overlay answers SEEK_DATA as if no file had holes (measured with 1.10) and shows its
    /// upper directory, whose atime the mount bumps, as the root: holes (by the same relative
    /// path) and the root's atime are read from here instead.
    pub lower: Option<PathBuf>,
}

// Entries are nearly every event; boxing them would cost an allocation per file.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum WalkEvent {
    Entry(Entry),
    /// One line naming the path at fault.
    Warning(String),
}

#[derive(Debug)]
pub struct Entry {
    /// `chunks` empty. Regular files: `size` is st_size and `sparse` is `Some` iff the file
    /// has holes. Hard links after the first: `Kind::Hardlink`, `size` = st_size, no sparse map.
    pub item: Item,
    /// Absolute path on disk, for `content::open_content`.
    pub fs_path: PathBuf,
    /// Inode number and link count, for the files cache and hard link bookkeeping.
    pub ino: u64,
    pub nlink: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("cannot open {path} to walk it: {source}")]
    Root { path: PathBuf, source: io::Error },
    #[error("cannot walk {path}: not a directory")]
    NotDir { path: PathBuf },
}

struct Frame {
    dir: OwnedFd,
    path: Vec<u8>,
    names: std::vec::IntoIter<Vec<u8>>,
}

pub struct Walk {
    root: PathBuf,
    opts: WalkOptions,
    root_dev: (u32, u32),
    stack: Vec<Frame>,
    pending: VecDeque<WalkEvent>,
    /// (device, inode) of multiply linked files -> the first path seen and how many names
    /// are still to come; a group is forgotten once all its names were seen, so the table
    /// holds only groups that straddle the walk position.
    links: HashMap<(u32, u32, u64), (Vec<u8>, u32)>,
}

/// Starts a walk. Fails only when `root` cannot be opened as a directory.
pub fn walk(root: &Path, opts: &WalkOptions) -> Result<Walk, WalkError> {
    let root = std::path::absolute(root).map_err(|source| WalkError::Root {
        path: root.to_path_buf(),
        source,
    })?;
    let dir = open_dir(rustix::fs::CWD, root.as_os_str().as_bytes()).map_err(|e| {
        if e == Errno::NOTDIR {
            WalkError::NotDir { path: root.clone() }
        } else {
            WalkError::Root {
                path: root.clone(),
                source: e.into(),
            }
        }
    })?;
    let mut warnings = Vec::new();
    let probe = probe(dir.as_fd(), b".", Vec::new(), &mut warnings).map_err(|e| {
        let source = match e {
            ProbeError::Io(e) => e,
            _ => io::Error::from(io::ErrorKind::NotFound),
        };
        WalkError::Root {
            path: root.clone(),
            source,
        }
    })?;
    let mut probe = probe;
    if let Some(lower) = &opts.lower {
        if let Ok(meta) = std::fs::metadata(lower) {
            use std::os::unix::fs::MetadataExt;
            probe.item.atime = Timestamp {
                secs: meta.atime(),
                nanos: meta.atime_nsec() as u32,
            };
        }
    }
    let mut walk = Walk {
        root,
        opts: opts.clone(),
        root_dev: probe.dev,
        stack: Vec::new(),
        pending: VecDeque::new(),
        links: HashMap::new(),
    };
    let shown = show(&walk.root, b"");
    walk.pending.extend(
        warnings
            .into_iter()
            .map(|w| WalkEvent::Warning(format!("{shown}: {w}"))),
    );
    walk.pending.push_back(WalkEvent::Entry(Entry {
        item: probe.item,
        fs_path: walk.root.clone(),
        ino: probe.ino,
        nlink: probe.nlink,
    }));
    match read_names(dir.as_fd()) {
        Ok(names) => walk.stack.push(Frame {
            dir,
            path: Vec::new(),
            names: names.into_iter(),
        }),
        Err(e) => walk.pending.push_back(WalkEvent::Warning(format!(
            "{shown}: cannot read directory: {e}"
        ))),
    }
    Ok(walk)
}

/// Opens a directory for reading its entries, without atime updates where we may. Below the
/// root, `parent` is the entry's own `O_PATH` descriptor and `name` is `"."`.
fn open_dir(parent: BorrowedFd<'_>, name: &[u8]) -> Result<OwnedFd, Errno> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOATIME;
    match rustix::fs::openat(parent, name, flags, Mode::empty()) {
        Err(Errno::PERM) => {
            rustix::fs::openat(parent, name, flags - OFlags::NOATIME, Mode::empty())
        }
        r => r,
    }
}

/// The entry names of a directory, sorted bytewise (tar order).
fn read_names(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    names.sort_unstable();
    Ok(names)
}

impl Walk {
    fn fs_path(&self, path: &[u8]) -> PathBuf {
        self.root.join(OsStr::from_bytes(path))
    }

    fn excluded(&self, path: &[u8]) -> bool {
        if self.opts.excludes.is_empty() {
            return false;
        }
        if self.opts.exclude_prefix.is_empty() {
            return self.opts.excludes.iter().any(|p| p.matches(path));
        }
        let full = [&self.opts.exclude_prefix[..], b"/", path].concat();
        self.opts.excludes.iter().any(|p| p.matches(&full))
    }

    /// Turns one directory entry into events; returns the frame to descend into, if any.
    fn visit(&mut self, parent: BorrowedFd<'_>, name: &[u8], path: Vec<u8>) -> Option<Frame> {
        let shown = show(&self.root, &path);
        let mut warnings = Vec::new();
        let probed = probe(parent, name, path, &mut warnings);
        self.pending.extend(
            warnings
                .into_iter()
                .map(|w| WalkEvent::Warning(format!("{shown}: {w}"))),
        );
        let Probe {
            mut item,
            dev,
            ino,
            nlink,
            blocks,
            fd,
        } = match probed {
            Ok(p) => p,
            Err(e) => {
                let msg = match e {
                    ProbeError::Vanished => "file vanished before it was read".to_string(),
                    ProbeError::Socket => "socket ignored".to_string(),
                    ProbeError::UnknownType(t) => format!("unknown file type {t:#o} ignored"),
                    ProbeError::Io(e) => format!("cannot stat: {e}"),
                };
                self.pending
                    .push_back(WalkEvent::Warning(format!("{shown}: {msg}")));
                return None;
            }
        };
        let mut child = None;
        match item.kind {
            Kind::File if nlink > 1 => {
                let key = (dev.0, dev.1, ino);
                if let Some((first, left)) = self.links.get_mut(&key) {
                    item.kind = Kind::Hardlink {
                        target: first.clone(),
                    };
                    *left -= 1;
                    if *left == 0 {
                        self.links.remove(&key);
                    }
                } else {
                    self.links.insert(key, (item.path.clone(), nlink - 1));
                    self.sparse_map(parent, name, &mut item, blocks, &shown);
                }
            }
            Kind::File => self.sparse_map(parent, name, &mut item, blocks, &shown),
            Kind::Dir if self.opts.one_file_system && dev != self.root_dev => {}
            Kind::Dir => match open_dir(fd.as_fd(), b".").map_err(io::Error::from) {
                Ok(dir) => match read_names(dir.as_fd()) {
                    Ok(names) => {
                        child = Some(Frame {
                            dir,
                            path: item.path.clone(),
                            names: names.into_iter(),
                        })
                    }
                    Err(e) => self.pending.push_back(WalkEvent::Warning(format!(
                        "{shown}: cannot read directory: {e}"
                    ))),
                },
                Err(e) => self.pending.push_back(WalkEvent::Warning(format!(
                    "{shown}: cannot open directory: {e}"
                ))),
            },
            _ => {}
        }
        let fs_path = self.fs_path(&item.path);
        self.pending.push_back(WalkEvent::Entry(Entry {
            item,
            fs_path,
            ino,
            nlink,
        }));
        child
    }

    /// Fills `item.sparse` for a file whose allocated blocks do not cover its size (the only
    /// files that can have holes; a compressing filesystem gets asked and says "all data").
    fn sparse_map(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        item: &mut Item,
        blocks: u64,
        shown: &str,
    ) {
        if item.size == 0 || blocks.saturating_mul(512) >= item.size {
            return;
        }
        let file = match &self.opts.lower {
            Some(lower) => {
                use std::os::unix::ffi::OsStrExt;
                content::open_path(&lower.join(std::ffi::OsStr::from_bytes(&item.path)))
            }
            None => content::open_at(parent, name),
        };
        let result = file.and_then(|file| content::data_extents(&file, item.size));
        match result {
            Ok(map) => item.sparse = map,
            Err(e) => self.pending.push_back(WalkEvent::Warning(format!(
                "{shown}: cannot read the sparse map: {e}"
            ))),
        }
    }
}

impl Iterator for Walk {
    type Item = WalkEvent;

    fn next(&mut self) -> Option<WalkEvent> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(ev);
            }
            let frame = self.stack.last_mut()?;
            let Some(name) = frame.names.next() else {
                self.stack.pop();
                continue;
            };
            let mut path = frame.path.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&name);
            if self.excluded(&path) {
                continue;
            }
            // The parent descriptor stays open in its frame while we visit; borrow it
            // without cloning the fd.
            let frame = self.stack.pop()?;
            let child = self.visit(frame.dir.as_fd(), &name, path);
            self.stack.push(frame);
            self.stack.extend(child);
        }
    }
}
