//! Writes items into a destination directory, the inverse of `walk`. Every entry is created
//! relative to an open descriptor of its parent, and parents are opened one component at a
//! time with `O_NOFOLLOW`: an archive holding `a -> /etc` and then `a/passwd` is refused,
//! never written through. Paths with `..`, `.` or empty components are refused outright.
//! Existing non-directories are replaced; existing directories are kept. Directory metadata
//! (owner, mode, xattrs, ACLs, times) is applied in `finish`, children before parents, so a
//! read-only or default-ACL directory neither blocks nor leaks into what is written inside it.

pub use super::restore_meta::RestoreError;
use super::restore_meta::{apply, io_err, write_content};
use super::show;
use crate::item::{Item, Kind};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, Default)]
pub struct RestoreOptions {
    /// Write holes for the gaps of sparse maps and for all-zero 4 KiB-aligned runs of data.
    pub sparse: bool,
    /// Owners are always restored numerically (the archive holds no names); kept for the
    /// command line's sake. Ownership is only restored when running as root.
    pub numeric_owner: bool,
}

pub struct Restorer {
    dest: PathBuf,
    root: OwnedFd,
    opts: RestoreOptions,
    as_root: bool,
    /// Open directories from `dest` down to the parent of the last item put.
    chain: Vec<(Vec<u8>, OwnedFd)>,
    /// Directories whose metadata waits for `finish`, in put order.
    dirs: Vec<Item>,
    warnings: Vec<String>,
}

fn components(path: &[u8]) -> Option<Vec<&[u8]>> {
    if path.is_empty() {
        return Some(Vec::new());
    }
    let comps: Vec<&[u8]> = path.split(|&b| b == b'/').collect();
    let bad = |c: &&[u8]| c.is_empty() || *c == b"." || *c == b"..";
    (!comps.iter().any(bad)).then_some(comps)
}

fn open_dir(base: BorrowedFd<'_>, name: &[u8]) -> Result<OwnedFd, Errno> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::openat(base, name, flags, Mode::empty())
}

/// Opens directory `name` in `base`, creating it (0700 until `finish`) when missing. A
/// symlink or non-directory in its place is refused: following it could leave `dest`.
fn open_or_create_dir(
    base: BorrowedFd<'_>,
    name: &[u8],
    shown: &str,
) -> Result<OwnedFd, RestoreError> {
    let refuse = |_| RestoreError::Unsafe {
        path: shown.to_string(),
        reason: "a leading path component is a symlink or not a directory",
    };
    match open_dir(base, name) {
        Ok(fd) => Ok(fd),
        Err(Errno::NOENT) => {
            match rustix::fs::mkdirat(base, name, Mode::from_raw_mode(0o700)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(io_err(shown, "create a parent directory")(e)),
            }
            open_dir(base, name).map_err(|e| match e {
                Errno::LOOP | Errno::NOTDIR => refuse(e),
                e => io_err(shown, "open a parent directory")(e),
            })
        }
        Err(e @ (Errno::LOOP | Errno::NOTDIR)) => Err(refuse(e)),
        Err(e) => Err(io_err(shown, "open a parent directory")(e)),
    }
}

/// Makes room for a new entry `name`: removes a non-directory (or an empty directory when
/// the new entry is not one). Returns whether a directory is already there to keep.
fn clear(
    parent: BorrowedFd<'_>,
    name: &[u8],
    keep_dir: bool,
    shown: &str,
) -> Result<bool, RestoreError> {
    match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => Ok(false),
        Err(e) => Err(io_err(shown, "stat the existing entry")(e)),
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
            if keep_dir {
                return Ok(true);
            }
            rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)
                .map_err(io_err(shown, "replace the existing directory"))?;
            Ok(false)
        }
        Ok(_) => {
            rustix::fs::unlinkat(parent, name, AtFlags::empty())
                .map_err(io_err(shown, "replace the existing entry"))?;
            Ok(false)
        }
    }
}

impl Restorer {
    /// `dest` must be an existing directory.
    pub fn new(dest: &Path, opts: RestoreOptions) -> Result<Self, RestoreError> {
        let root = rustix::fs::openat(
            rustix::fs::CWD,
            dest,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| RestoreError::Dest {
            path: dest.to_path_buf(),
            source: e.into(),
        })?;
        Ok(Restorer {
            dest: dest.to_path_buf(),
            root,
            opts,
            as_root: rustix::process::geteuid().is_root(),
            chain: Vec::new(),
            dirs: Vec::new(),
            warnings: Vec::new(),
        })
    }

    /// Makes `self.chain` the open directories of `dirs` (the parent path of an item).
    fn descend(&mut self, dirs: &[&[u8]], shown: &str) -> Result<(), RestoreError> {
        let common = self
            .chain
            .iter()
            .zip(dirs)
            .take_while(|((have, _), want)| have.as_slice() == **want)
            .count();
        self.chain.truncate(common);
        for comp in &dirs[common..] {
            let base = self
                .chain
                .last()
                .map_or(self.root.as_fd(), |(_, fd)| fd.as_fd());
            let fd = open_or_create_dir(base, comp, shown)?;
            self.chain.push((comp.to_vec(), fd));
        }
        Ok(())
    }

    /// Writes one item. `content` yields `item.stored_len()` bytes for a file, and for a hard
    /// link whose target is missing (it is then written as a file); it is not read otherwise.
    pub fn put(&mut self, item: &Item, content: &mut dyn io::Read) -> Result<(), RestoreError> {
        let shown = show(&self.dest, &item.path);
        let unsafe_path = |reason| RestoreError::Unsafe {
            path: shown.clone(),
            reason,
        };
        let comps =
            components(&item.path).ok_or_else(|| unsafe_path("empty, . or .. component"))?;
        // The sparse map comes from the repository: check it (as export does) before the
        // file is created, so a bad one writes nothing.
        if let (Kind::File | Kind::Hardlink { .. }, Some(map)) = (&item.kind, &item.sparse) {
            crate::item::checked_extents(map, item.size).map_err(unsafe_path)?;
        }
        let Some((name, dirs)) = comps.split_last() else {
            // The root: `dest` itself, whose metadata waits for `finish`.
            if item.is_dir() {
                self.dirs.push(item.clone());
            }
            return Ok(());
        };
        self.descend(dirs, &shown)?;
        let parent = self
            .chain
            .last()
            .map_or(self.root.as_fd(), |(_, fd)| fd.as_fd());
        let kept = clear(parent, name, item.is_dir(), &shown)?;
        let mode = Mode::from_raw_mode(0o600);
        let mut written = None;
        match &item.kind {
            Kind::Dir => {
                if !kept {
                    rustix::fs::mkdirat(parent, *name, Mode::from_raw_mode(0o700))
                        .map_err(io_err(&shown, "create directory"))?;
                }
                self.dirs.push(item.clone());
                return Ok(());
            }
            Kind::File => written = Some(self.create_file(parent, name, item, content, &shown)?),
            Kind::Hardlink { target } => {
                // A further name of an inode already restored needs no metadata of its own.
                if self.link(parent, name, target, &shown)? {
                    return Ok(());
                }
                written = Some(self.create_file(parent, name, item, content, &shown)?)
            }
            Kind::Symlink { target } => rustix::fs::symlinkat(target.as_slice(), parent, *name)
                .map_err(io_err(&shown, "create symlink"))?,
            Kind::CharDevice { major, minor } => {
                let dev = rustix::fs::makedev(*major, *minor);
                rustix::fs::mknodat(parent, *name, FileType::CharacterDevice, mode, dev)
                    .map_err(io_err(&shown, "create character device"))?
            }
            Kind::BlockDevice { major, minor } => {
                let dev = rustix::fs::makedev(*major, *minor);
                rustix::fs::mknodat(parent, *name, FileType::BlockDevice, mode, dev)
                    .map_err(io_err(&shown, "create block device"))?
            }
            Kind::Fifo => rustix::fs::mknodat(parent, *name, FileType::Fifo, mode, 0)
                .map_err(io_err(&shown, "create fifo"))?,
        }
        let open = written.as_ref().map(AsFd::as_fd);
        apply(
            parent,
            name,
            open,
            item,
            self.as_root,
            &shown,
            &mut self.warnings,
        )
    }

    fn create_file(
        &self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        item: &Item,
        content: &mut dyn io::Read,
        shown: &str,
    ) -> Result<File, RestoreError> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = rustix::fs::openat(parent, name, flags, Mode::from_raw_mode(0o600))
            .map_err(io_err(shown, "create file"))?;
        let file = File::from(fd);
        write_content(&file, item, content, self.opts.sparse, shown)?;
        Ok(file)
    }

    /// Links `name` to the already restored `target`; `Ok(false)` when the target is missing.
    fn link(
        &self,
        parent: BorrowedFd<'_>,
        name: &[u8],
        target: &[u8],
        shown: &str,
    ) -> Result<bool, RestoreError> {
        let refuse = |reason| RestoreError::Unsafe {
            path: shown.to_string(),
            reason,
        };
        let comps = components(target)
            .ok_or_else(|| refuse("hard link target has an empty, . or .. component"))?;
        let Some((tname, tdirs)) = comps.split_last() else {
            return Err(refuse("hard link to the archive root"));
        };
        let mut base: Option<OwnedFd> = None;
        for comp in tdirs {
            let at = base.as_ref().map_or(self.root.as_fd(), |fd| fd.as_fd());
            match open_dir(at, comp) {
                Ok(fd) => base = Some(fd),
                Err(Errno::NOENT) => return Ok(false),
                Err(_) => {
                    return Err(refuse(
                        "hard link target lies under a symlink or non-directory",
                    ))
                }
            }
        }
        let at = base.as_ref().map_or(self.root.as_fd(), |fd| fd.as_fd());
        // Flags 0: a symlink target is linked itself, never followed.
        match rustix::fs::linkat(at, *tname, parent, name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(io_err(shown, "create hard link")(e)),
        }
    }

    /// Soft problems so far (an xattr the destination filesystem cannot hold), one line each.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// Applies the deferred directory metadata, children before parents. Tries every
    /// directory and returns the first error.
    pub fn finish(mut self) -> Result<(), RestoreError> {
        self.chain.clear();
        let mut first_err = None;
        let dirs = std::mem::take(&mut self.dirs);
        for item in dirs.iter().rev() {
            let shown = show(&self.dest, &item.path);
            if let Err(e) = self.finish_dir(item, &shown) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn finish_dir(&mut self, item: &Item, shown: &str) -> Result<(), RestoreError> {
        let warnings = &mut self.warnings;
        let comps = components(&item.path).unwrap_or_default();
        let Some((name, dirs)) = comps.split_last() else {
            return apply(
                self.root.as_fd(),
                b".",
                None,
                item,
                self.as_root,
                shown,
                warnings,
            );
        };
        let mut base: Option<OwnedFd> = None;
        for comp in dirs {
            let at = base.as_ref().map_or(self.root.as_fd(), |fd| fd.as_fd());
            base = Some(open_dir(at, comp).map_err(io_err(shown, "reopen a parent directory"))?);
        }
        let at = base.as_ref().map_or(self.root.as_fd(), |fd| fd.as_fd());
        // Refuse a directory that a later item replaced with a symlink.
        let dir = open_dir(at, name).map_err(io_err(shown, "reopen directory"))?;
        drop(dir);
        apply(at, name, None, item, self.as_root, shown, warnings)
    }
}
