//! The FUSE side of `mount`: answers the kernel's requests from the inode tables of
//! `tree` and from verified blob reads. Read-only by construction: nothing here writes to
//! the repository, and every modifying request fails with EROFS. A damaged blob or an
//! inconsistent record fails that one read with EIO and one message (to the `Report` the
//! command passed in: a line on stderr) naming the archive and the file; nothing the
//! repository holds can make this code panic.

use super::tree::{Node, NodeId, Segment, Tree, ROOT};
use super::{ChunkCache, CACHE_CHUNKS};
use crate::id::ChunkId;
use crate::item::{Item, Kind, Timestamp};
use crate::repo::item_stream::ItemStreamReader;
use crate::repo::reader::BlobSource;
use crate::repo::Manifest;
use crate::tree::acl;
use crossbeam_channel::{bounded, Sender};
use fuser::{
    BsdFileFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyLseek, ReplyOpen, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Chunks decoded ahead of a sequential reader, and the threads doing it.
const AHEAD: usize = 2;
const AHEAD_THREADS: usize = 2;

/// Reads and verifies one content chunk, checking its length against the item's record.
fn load_chunk(source: &BlobSource, id: &ChunkId, len: u32) -> Result<Vec<u8>, String> {
    let data = source.read_blob(id).map_err(|e| e.to_string())?;
    if data.len() != len as usize {
        return Err(format!(
            "chunk {id} holds {} bytes, the archive says {len}",
            data.len()
        ));
    }
    Ok(data)
}

/// Nothing changes under a mount: the kernel may keep names and attributes this long.
const TTL: Duration = Duration::from_secs(300);
const NODE_BITS: u32 = 32;

/// Where messages go (errors behind an EIO, notes about odd records): the kernel only
/// carries an errno, so this is how the user learns which file and why.
pub type Report = Arc<dyn Fn(String) + Send + Sync>;

/// One archive: its manifest and, once something inside it was looked at, its tree.
pub struct Archive {
    /// Its directory name in a whole-repository mount (the archive name, made unique).
    pub dir_name: String,
    pub manifest: Manifest,
    tree: OnceLock<Result<Arc<Tree>, String>>,
}

impl Archive {
    pub fn new(dir_name: String, manifest: Manifest) -> Self {
        Archive {
            dir_name,
            manifest,
            tree: OnceLock::new(),
        }
    }

    /// An archive whose tree is already read (a single-archive mount reads it before
    /// mounting, so a damaged item stream is an error of the command, not EIO later).
    pub fn with_tree(dir_name: String, manifest: Manifest, tree: Arc<Tree>) -> Self {
        let a = Archive::new(dir_name, manifest);
        let _ = a.tree.set(Ok(tree));
        a
    }

    /// The tree, read from the item stream on first use (one failure message, then EIO).
    fn tree(&self, source: &BlobSource, report: &Report) -> Option<&Arc<Tree>> {
        self.tree
            .get_or_init(|| {
                load_tree(source, &self.manifest, report)
                    .inspect_err(|e| report(format!("error: archive {}: {e}", self.manifest.name)))
            })
            .as_ref()
            .ok()
    }

    fn loaded(&self) -> Option<&Arc<Tree>> {
        self.tree.get().and_then(|t| t.as_ref().ok())
    }
}

/// Reads an archive's whole item stream into its inode table, verifying every blob.
pub fn load_tree(
    source: &BlobSource,
    manifest: &Manifest,
    report: &Report,
) -> Result<Arc<Tree>, String> {
    let mut failed = None;
    let items = ItemStreamReader::new(manifest.item_stream.clone(), |id| source.read_blob(id))
        .expect_items(manifest.stats.items)
        .map_while(|r| r.map_err(|e| failed = Some(e)).ok());
    let tree = Tree::build(items);
    if let Some(e) = failed {
        return Err(e.to_string());
    }
    for n in &tree.notes {
        report(format!("warning: archive {}: {n}", manifest.name));
    }
    Ok(Arc::new(tree))
}

pub enum View {
    /// One archive at the mount point.
    Single(Box<Archive>),
    /// Every archive, one directory each.
    Repository(Vec<Archive>),
}

pub struct ArchiveFs {
    source: BlobSource,
    view: View,
    cache: Arc<ChunkCache>,
    /// Chunks to decode ahead of a sequential reader, on a thread of their own.
    ahead: Sender<(ChunkId, u32)>,
    mounted: SystemTime,
    report: Report,
}

/// What an inode number names.
enum Target<'a> {
    /// The list of archives (whole-repository mode).
    List,
    /// An archive's directory whose tree is not read yet.
    Unloaded(usize),
    Node(Found<'a>),
}

struct Found<'a> {
    archive: usize,
    tree: &'a Tree,
    id: NodeId,
    node: &'a Node,
}

impl ArchiveFs {
    pub fn new(source: BlobSource, view: View, report: Report) -> Self {
        let cache = Arc::new(ChunkCache::new(CACHE_CHUNKS));
        // A short queue: a reader that skips around drops requests rather than queueing work.
        let (ahead, todo) = bounded::<(ChunkId, u32)>(AHEAD);
        for _ in 0..AHEAD_THREADS {
            let (src, c, todo) = (source.clone(), cache.clone(), todo.clone());
            std::thread::spawn(move || {
                for (id, len) in todo {
                    // Errors are reported when a reader gets to the chunk itself.
                    let _ = c.get_or_load(id, || load_chunk(&src, &id, len));
                }
            });
        }
        ArchiveFs {
            source,
            view,
            cache,
            ahead,
            mounted: SystemTime::now(),
            report,
        }
    }

    fn archives(&self) -> &[Archive] {
        match &self.view {
            View::Single(a) => std::slice::from_ref(&**a),
            View::Repository(v) => v,
        }
    }

    fn ino(&self, archive: usize, id: NodeId) -> INodeNo {
        INodeNo(match self.view {
            View::Single(_) => u64::from(id) + 1,
            View::Repository(_) => ((archive as u64 + 1) << NODE_BITS) + u64::from(id),
        })
    }

    /// Resolves an inode; `load` reads an archive's tree if needed (lookups and listings
    /// inside it), otherwise an unread archive directory is `Unloaded` (its attributes come
    /// from the manifest, so `ls -l` of the repository reads no item stream).
    fn resolve(&self, ino: INodeNo, load: bool) -> Result<Target<'_>, Errno> {
        let (archive, id) = match self.view {
            View::Single(_) => (0, ino.0.checked_sub(1).ok_or(Errno::ENOENT)?),
            View::Repository(_) if ino == INodeNo::ROOT => return Ok(Target::List),
            View::Repository(_) => (
                ((ino.0 >> NODE_BITS) as usize)
                    .checked_sub(1)
                    .ok_or(Errno::ENOENT)?,
                ino.0 & ((1 << NODE_BITS) - 1),
            ),
        };
        let id = NodeId::try_from(id).map_err(|_| Errno::ENOENT)?;
        let a = self.archives().get(archive).ok_or(Errno::ENOENT)?;
        let tree = match (a.loaded(), load) {
            (Some(t), _) => t,
            (None, false) if id == ROOT => return Ok(Target::Unloaded(archive)),
            (None, _) => a.tree(&self.source, &self.report).ok_or(Errno::EIO)?,
        };
        let node = tree.get(id).ok_or(Errno::ENOENT)?;
        Ok(Target::Node(Found {
            archive,
            tree,
            id,
            node,
        }))
    }

    fn node(&self, ino: INodeNo) -> Result<Found<'_>, Errno> {
        match self.resolve(ino, true)? {
            Target::Node(f) => Ok(f),
            _ => Err(Errno::EISDIR),
        }
    }

    fn attr(&self, ino: INodeNo, target: &Target) -> FileAttr {
        match target {
            Target::List => dir_attr(ino, self.archives().len() as u32 + 2, self.mounted),
            Target::Unloaded(a) => {
                let start = &self.archives()[*a].manifest.start;
                let t = start
                    .parse::<jiff::Timestamp>()
                    .map(SystemTime::from)
                    .unwrap_or(self.mounted);
                dir_attr(ino, 2, t)
            }
            Target::Node(f) => item_attr(ino, &f.node.item, f.node.nlink),
        }
    }

    /// One message naming the file, and EIO for the kernel.
    fn fail(&self, f: &Found, why: &str) -> Errno {
        let archive = &self.archives()[f.archive].manifest.name;
        (self.report)(format!(
            "error: archive {archive}: {}: {why}",
            crate::item::display_path(&f.node.item.path)
        ));
        Errno::EIO
    }

    fn chunk(&self, item: &Item, index: usize) -> Result<Arc<Vec<u8>>, String> {
        let c = item.chunks.get(index).ok_or("chunk index out of range")?;
        self.cache
            .get_or_load(c.id, || load_chunk(&self.source, &c.id, c.len))
    }

    fn read_range(&self, f: &Found, offset: u64, size: u32) -> Result<Vec<u8>, String> {
        let layout = f.node.layout()?;
        let mut out = Vec::with_capacity(size as usize);
        let segments = layout.segments(offset, size.into());
        // Decode the chunks after this read's last one meanwhile, so a sequential reader
        // finds them ready and both cores work.
        let last = segments.iter().rev().find_map(|s| match s {
            Segment::Data { chunk, .. } => Some(*chunk),
            Segment::Hole { .. } => None,
        });
        if let Some(chunk) = last {
            for c in f.node.item.chunks.iter().skip(chunk + 1).take(AHEAD) {
                if !self.cache.has(&c.id) {
                    let _ = self.ahead.try_send((c.id, c.len));
                }
            }
        }
        for s in segments {
            match s {
                Segment::Hole { len } => out.resize(out.len() + len as usize, 0),
                Segment::Data { chunk, offset, len } => {
                    let data = self.chunk(&f.node.item, chunk)?;
                    // Layout checked the chunk lengths against the item; `chunk` checked
                    // the blob against its recorded length.
                    let bytes = data
                        .get(offset as usize..(offset + len) as usize)
                        .ok_or("chunk shorter than recorded")?;
                    out.extend_from_slice(bytes);
                }
            }
        }
        Ok(out)
    }

    fn xattrs(item: &Item) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = item
            .xattrs
            .iter()
            .map(|x| (x.name.clone(), x.value.clone()))
            .collect();
        if let Some(a) = &item.acl_access {
            out.push((acl::XATTR_ACCESS.into(), acl::encode(a)));
        }
        if let Some(a) = &item.acl_default {
            out.push((acl::XATTR_DEFAULT.into(), acl::encode(a)));
        }
        out
    }
}

fn dir_attr(ino: INodeNo, nlink: u32, time: SystemTime) -> FileAttr {
    FileAttr {
        ino,
        size: 0,
        blocks: 0,
        atime: time,
        mtime: time,
        ctime: time,
        crtime: time,
        kind: FileType::Directory,
        perm: 0o755,
        nlink,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn item_attr(ino: INodeNo, item: &Item, nlink: u32) -> FileAttr {
    let (kind, size, rdev) = match &item.kind {
        Kind::File | Kind::Hardlink { .. } => (FileType::RegularFile, item.size, 0),
        Kind::Dir => (FileType::Directory, 0, 0),
        Kind::Symlink { target } => (FileType::Symlink, target.len() as u64, 0),
        Kind::CharDevice { major, minor } => (FileType::CharDevice, 0, encode_dev(*major, *minor)),
        Kind::BlockDevice { major, minor } => {
            (FileType::BlockDevice, 0, encode_dev(*major, *minor))
        }
        Kind::Fifo => (FileType::NamedPipe, 0, 0),
    };
    let blocks = if kind == FileType::RegularFile {
        item.stored_len().div_ceil(512)
    } else {
        0
    };
    FileAttr {
        ino,
        size,
        blocks,
        atime: system_time(item.atime),
        mtime: system_time(item.mtime),
        ctime: system_time(item.ctime),
        crtime: system_time(item.ctime),
        kind,
        perm: (item.mode & 0o7777) as u16,
        nlink,
        uid: item.uid,
        gid: item.gid,
        rdev,
        blksize: 4096,
        flags: 0,
    }
}

/// The kernel's `new_encode_dev`, which FUSE's 32-bit `rdev` carries.
fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// A stored time as `SystemTime`; times the platform cannot hold become the epoch.
fn system_time(t: Timestamp) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(t.nanos.min(999_999_999)));
    let at = if t.secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(t.secs as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(t.secs.unsigned_abs()))
    };
    at.and_then(|a| a.checked_add(nanos)).unwrap_or(UNIX_EPOCH)
}

fn file_type(item: &Item) -> FileType {
    match item.kind {
        Kind::File | Kind::Hardlink { .. } => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink { .. } => FileType::Symlink,
        Kind::CharDevice { .. } => FileType::CharDevice,
        Kind::BlockDevice { .. } => FileType::BlockDevice,
        Kind::Fifo => FileType::NamedPipe,
    }
}

/// Replies to getxattr/listxattr alike: the size when asked for it, ERANGE when too small.
fn reply_sized(reply: ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

impl Filesystem for ArchiveFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // The kernel then reads ACLs through getxattr and enforces them with
        // default_permissions; without it `getfacl` still works through getxattr.
        let _ = config.add_capabilities(InitFlags::FUSE_POSIX_ACL);
        let _ = config.set_max_readahead(1 << 20);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let (ino, target) = match self.resolve(parent, true) {
            Ok(Target::List) => {
                let Some(a) = self
                    .archives()
                    .iter()
                    .position(|a| a.dir_name.as_bytes() == name.as_bytes())
                else {
                    return reply.error(Errno::ENOENT);
                };
                let ino = self.ino(a, ROOT);
                match self.resolve(ino, false) {
                    Ok(t) => (ino, t),
                    Err(e) => return reply.error(e),
                }
            }
            Ok(Target::Node(f)) => {
                if !f.node.item.is_dir() {
                    return reply.error(Errno::ENOTDIR);
                }
                let Some(&child) = f.node.children.get(name.as_bytes()) else {
                    return reply.error(Errno::ENOENT);
                };
                let Some(node) = f.tree.get(child) else {
                    return reply.error(Errno::ENOENT);
                };
                let found = Found {
                    archive: f.archive,
                    tree: f.tree,
                    id: child,
                    node,
                };
                (self.ino(f.archive, child), Target::Node(found))
            }
            Ok(Target::Unloaded(_)) => return reply.error(Errno::EIO),
            Err(e) => return reply.error(e),
        };
        reply.entry(&TTL, &self.attr(ino, &target), Generation(0));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.resolve(ino, false) {
            Ok(t) => reply.attr(&TTL, &self.attr(ino, &t)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.node(ino) {
            Ok(f) => match &f.node.item.kind {
                Kind::Symlink { target } => reply.data(target),
                _ => reply.error(Errno::EINVAL),
            },
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.node(ino) {
            // The content never changes: let the page cache keep it across opens.
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let f = match self.node(ino) {
            Ok(f) if f.node.item.is_file() => f,
            Ok(_) => return reply.error(Errno::EISDIR),
            Err(e) => return reply.error(e),
        };
        match self.read_range(&f, offset, size) {
            Ok(data) => reply.data(&data),
            Err(why) => reply.error(self.fail(&f, &why)),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let f = match self.node(ino) {
            Ok(f) if f.node.item.is_file() => f,
            Ok(_) => return reply.error(Errno::EINVAL),
            Err(e) => return reply.error(e),
        };
        let Ok(offset) = u64::try_from(offset) else {
            return reply.error(Errno::ENXIO);
        };
        let layout = match f.node.layout() {
            Ok(l) => l,
            Err(why) => return reply.error(self.fail(&f, why)),
        };
        let found = match whence {
            libc::SEEK_DATA => layout.seek_data(offset),
            libc::SEEK_HOLE => layout.seek_hole(offset),
            _ => return reply.error(Errno::EINVAL),
        };
        match found.and_then(|o| i64::try_from(o).ok()) {
            Some(o) => reply.offset(o),
            None => reply.error(Errno::ENXIO),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let target = match self.resolve(ino, true) {
            Ok(t) => t,
            Err(e) => return reply.error(e),
        };
        let entries: Box<dyn Iterator<Item = (INodeNo, FileType, &[u8])>> = match &target {
            Target::List => Box::new(
                [
                    (ino, FileType::Directory, &b"."[..]),
                    (ino, FileType::Directory, b".."),
                ]
                .into_iter()
                .chain(self.archives().iter().enumerate().map(|(i, a)| {
                    (
                        self.ino(i, ROOT),
                        FileType::Directory,
                        a.dir_name.as_bytes(),
                    )
                })),
            ),
            Target::Node(f) if f.node.item.is_dir() => {
                let parent = if f.id == ROOT {
                    INodeNo::ROOT
                } else {
                    self.ino(f.archive, f.node.parent)
                };
                Box::new(
                    [
                        (ino, FileType::Directory, &b"."[..]),
                        (parent, FileType::Directory, b".."),
                    ]
                    .into_iter()
                    .chain(f.node.children.iter().filter_map(|(name, &id)| {
                        let n = f.tree.get(id)?;
                        Some((self.ino(f.archive, id), file_type(&n.item), &name[..]))
                    })),
                )
            }
            Target::Node(_) => return reply.error(Errno::ENOTDIR),
            Target::Unloaded(_) => return reply.error(Errno::EIO),
        };
        for (i, (ino, kind, name)) in entries.enumerate().skip(offset as usize) {
            if reply.add(ino, i as u64 + 1, kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let f = match self.resolve(ino, false) {
            Ok(Target::Node(f)) => f,
            Ok(_) => return reply.error(Errno::ENODATA),
            Err(e) => return reply.error(e),
        };
        match Self::xattrs(&f.node.item)
            .into_iter()
            .find(|(n, _)| n[..] == *name.as_bytes())
        {
            Some((_, value)) => reply_sized(reply, size, &value),
            None => reply.error(Errno::ENODATA),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let item = match self.resolve(ino, false) {
            Ok(Target::Node(f)) => &f.node.item,
            Ok(_) => return reply_sized(reply, size, &[]),
            Err(e) => return reply.error(e),
        };
        let mut list = Vec::new();
        for (name, _) in Self::xattrs(item) {
            list.extend_from_slice(&name);
            list.push(0);
        }
        reply_sized(reply, size, &list);
    }

    // Everything below would modify the archive. The mount is read-only, so the kernel
    // refuses most of these itself; the replies make sure of it.

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_and_times_convert_like_the_kernel() {
        assert_eq!(encode_dev(1, 3), 0x103);
        assert_eq!(encode_dev(7, 0), 0x700);
        assert_eq!(encode_dev(259, 0x12345), 0x12310345);
        let t = |secs, nanos| system_time(Timestamp { secs, nanos });
        assert_eq!(t(5, 7), UNIX_EPOCH + Duration::new(5, 7));
        assert_eq!(t(-5, 0), UNIX_EPOCH - Duration::from_secs(5));
        // Out of range never panics.
        let _ = t(i64::MAX, u32::MAX);
        let _ = t(i64::MIN, u32::MAX);
    }
}
