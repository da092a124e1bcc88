//! `create`: one source into one archive. A directory tree (its contents become the archive
//! root, as `tar -C DIR .` would), a regular file (read by its data extents, its holes kept,
//! skipped through the files cache when unchanged), a block device, or a stream (stdin).
//! Block devices and `.img`/`.raw` files are disk images: cut into fixed, aligned chunks
//! rather than content-defined ones, because a disk's writes never shift its data.

use super::events::JobReport;
use super::{files_cache, save_files_cache, BackupError, CacheOptions, Sink};
use crate::files_cache::FilesCache;
use crate::host::interrupt::Interruptible;
use crate::ingest::disk::{ingest_image, DiskStats};
use crate::ingest::tree::{ingest_dir, reuse_cached, TreeSource};
use crate::ingest::ArchiveBuilder;
use crate::item::{Extent, Item, Kind, Timestamp};
use crate::pve::idmap::IdMap;
use crate::repo::{Compression, Manifest, ObjectId, Repository};
use crate::tree::content::{self, FileContent};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

pub enum CreateSource {
    /// A stream of unknown length, stored as one entry of this name.
    Stream {
        name: String,
        reader: Box<dyn Read + Send>,
    },
    /// A directory, regular file or block device.
    Path(PathBuf),
}

pub struct CreateRequest {
    pub name: String,
    pub source: CreateSource,
    pub excludes: Vec<String>,
    pub one_file_system: bool,
    /// Record owners, ACLs and capabilities through this container id map.
    pub idmap: Option<IdMap>,
    pub compression: Option<Compression>,
    pub files_cache: CacheOptions,
}

pub struct Created {
    pub id: ObjectId,
    pub manifest: Manifest,
    /// Soft problems (each sent to the sink as it happened).
    pub warnings: u64,
}

/// A valid archive name that the repository does not hold yet (every archive builder checks
/// this before reading anything).
pub(crate) fn ensure_new_archive_name(repo: &Repository, name: &str) -> Result<(), BackupError> {
    crate::repo::archive::validate_name(name)?;
    if repo.find_archive(name).is_ok() {
        return Err(BackupError::Refused(format!(
            "archive {name:?} already exists"
        )));
    }
    Ok(())
}

pub fn create(
    repo: &Repository,
    request: CreateRequest,
    sink: &dyn Sink,
) -> Result<Created, BackupError> {
    ensure_new_archive_name(repo, &request.name)?;
    let report = JobReport::new(sink, &request.name);
    let mut builder = ArchiveBuilder::new(repo, request.compression);
    let mut metadata = BTreeMap::new();
    let mut cache = None;
    match request.source {
        CreateSource::Stream { name, mut reader } => {
            metadata.insert("kind".into(), "stream".into());
            builder.add(stream_item(&name, None), Some(&mut reader), false)?;
        }
        CreateSource::Path(path) => {
            let meta = std::fs::metadata(&path).map_err(|e| source_error(&path, e))?;
            let source = std::fs::canonicalize(&path).map_err(|e| source_error(&path, e))?;
            metadata.insert("source".into(), source.to_string_lossy().into());
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                let mut c = files_cache(repo, request.files_cache);
                let tree = TreeSource {
                    root: &source,
                    source_id: source.to_string_lossy().into_owned(),
                    prefix: Vec::new(),
                    excludes: &request.excludes,
                    one_file_system: request.one_file_system,
                    idmap: request.idmap.as_ref(),
                    lower: None,
                };
                ingest_dir(&mut builder, &tree, &mut c, &report)?;
                cache = Some(c);
                "directory"
            } else if ft.is_file() {
                // A disk image or dump file: the files cache skips it when unchanged.
                let mut c = files_cache(repo, request.files_cache);
                if let Some(drive) =
                    add_regular_file(&mut builder, &mut c, &source, &meta, &report)?
                {
                    metadata.insert("drives".into(), serde_json::json!([drive]));
                }
                cache = Some(c);
                "file"
            } else if ft.is_block_device() {
                // A block device's metadata says nothing about its contents: always read.
                let mut file =
                    std::fs::File::open(&source).map_err(|e| source_error(&source, e))?;
                let size = std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0))
                    .and_then(|n| {
                        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0)).map(|_| n)
                    })
                    .map_err(|e| source_error(&source, e))?;
                let item = stream_item(&entry_name(&source), Some(&meta));
                let whole = [Extent {
                    offset: 0,
                    len: size,
                }];
                let (_, drive) =
                    add_image(&mut builder, item, &mut Interruptible(file), size, &whole)?;
                metadata.insert("drives".into(), serde_json::json!([drive]));
                "block-device"
            } else {
                return Err(BackupError::Refused(format!(
                    "source {}: not a directory, regular file or block device",
                    path.display()
                )));
            };
            metadata.insert("kind".into(), kind.into());
        }
    }
    if crate::host::interrupt::interrupted() {
        return Err(BackupError::Interrupted);
    }
    let (id, manifest) = builder.finish(&request.name, metadata)?;
    if let Some(c) = cache {
        save_files_cache(c, &report);
    }
    Ok(Created {
        id,
        manifest,
        warnings: report.warnings(),
    })
}

fn item_name(item: &Item) -> String {
    String::from_utf8_lossy(&item.path).into_owned()
}

fn source_error(path: &Path, e: std::io::Error) -> BackupError {
    BackupError::Host(crate::host::HostError::io(
        format!("source {}", path.display()),
        e,
    ))
}

fn entry_name(source: &Path) -> String {
    source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into())
}

/// A disk image file: fixed chunks as for a block device (PBS's `.img` archives do the same).
fn is_disk_image(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("img") || e.eq_ignore_ascii_case("raw"))
}

/// A disk image (block device, `.img`/`.raw` file) as one entry in fixed, aligned chunks
/// (`ingest::disk`), holes kept, with `item`'s metadata.
fn add_image(
    builder: &mut ArchiveBuilder,
    mut item: Item,
    data: &mut dyn Read,
    size: u64,
    extents: &[Extent],
) -> Result<(Item, DiskStats), BackupError> {
    let name = String::from_utf8_lossy(&item.path).into_owned();
    let (stored, stats) = ingest_image(builder, data, &name, size, extents, item.mtime)?;
    item.size = stored.size;
    item.sparse = stored.sparse;
    item.chunks = stored.chunks;
    builder.add_stored(item.clone())?;
    Ok((item, stats))
}

/// One regular file as the archive's only entry; a disk image's figures. A read error is
/// fatal here (unlike in a tree): the archive would be empty.
fn add_regular_file(
    builder: &mut ArchiveBuilder,
    cache: &mut FilesCache,
    source: &Path,
    meta: &std::fs::Metadata,
    report: &JobReport,
) -> Result<Option<DiskStats>, BackupError> {
    let mut drive = None;
    let file = std::fs::File::open(source).map_err(|e| source_error(source, e))?;
    let key = FilesCache::key(&source.to_string_lossy(), b"");
    let mut item = stream_item(&entry_name(source), Some(meta));
    item.size = meta.len();
    // A raw disk image on a thin filesystem is mostly holes: read only its data and keep
    // the holes, as for the files of a tree.
    if meta.blocks().saturating_mul(512) < meta.len() {
        item.sparse = content::data_extents(&file, meta.len()).map_err(|e| {
            BackupError::Host(crate::host::HostError::io(
                format!("source {}: sparse map", source.display()),
                e,
            ))
        })?;
    }
    if is_disk_image(source) {
        let hit = cache
            .lookup_image(&key, &item, meta.ino())
            .filter(|h| builder.has_blobs(&h.chunks));
        if let Some(hit) = hit {
            item.chunks = hit.chunks;
            item.sparse = hit.sparse;
            let stats = DiskStats {
                name: item_name(&item),
                size: item.size,
                allocated: item.chunks.iter().map(|c| u64::from(c.len)).sum(),
                read: 0,
                new: 0,
            };
            builder.add_known(item, false)?;
            return Ok(Some(stats));
        }
    } else if reuse_cached(builder, cache, &key, &mut item, meta.ino()) {
        builder.add_known(item, false)?;
        return Ok(None);
    }
    let mut data = Interruptible(FileContent::new(file, &item));
    let stored = if is_disk_image(source) {
        let extents = item.sparse.clone().unwrap_or_else(|| {
            vec![Extent {
                offset: 0,
                len: item.size,
            }]
        });
        let size = item.size;
        let (stored, stats) = add_image(builder, item, &mut data, size, &extents)?;
        drive = Some(stats);
        stored
    } else {
        builder.add(item, Some(&mut data), false)?
    };
    if data.0.changed() {
        // the same words as for a file of a tree
        report.warn(format!(
            "{}: changed while it was read; stored as read",
            source.display()
        ));
        builder.warn();
    } else {
        cache.remember(key, &stored, meta.ino());
    }
    Ok(drive)
}

/// The one entry of a stream source: the file's metadata, or now and our ids for stdin.
pub(super) fn stream_item(name: &str, meta: Option<&std::fs::Metadata>) -> Item {
    let mut item = Item::new(name.as_bytes().to_vec(), Kind::File);
    match meta {
        Some(m) => {
            item.mode = if m.file_type().is_file() {
                m.mode() & 0o7777
            } else {
                0o600
            };
            item.uid = m.uid();
            item.gid = m.gid();
            item.mtime = Timestamp {
                secs: m.mtime(),
                nanos: m.mtime_nsec() as u32,
            };
            item.atime = Timestamp {
                secs: m.atime(),
                nanos: m.atime_nsec() as u32,
            };
            item.ctime = Timestamp {
                secs: m.ctime(),
                nanos: m.ctime_nsec() as u32,
            };
        }
        None => {
            let now = jiff::Timestamp::now();
            item.mode = 0o600;
            item.uid = rustix::process::geteuid().as_raw();
            item.gid = rustix::process::getegid().as_raw();
            item.mtime = Timestamp {
                secs: now.as_second(),
                nanos: now.subsec_nanosecond() as u32,
            };
            item.atime = item.mtime;
            item.ctime = item.mtime;
        }
    }
    item
}
