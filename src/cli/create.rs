//! `proxborg create NAME SOURCE`: a directory tree (its contents become the archive root, as
//! `tar -C DIR .` would), a regular file or block device (one entry, read as a stream), or
//! `-` (stdin, one entry named by `--stdin-name`).

use super::progress::Progress;
use super::{access, create_tree, warn, Global, Outcome};
use crate::files_cache::{FilesCache, Mode as FilesCacheMode};
use crate::host::interrupt::Interruptible;
use crate::ingest::ArchiveBuilder;
use crate::item::{Item, Kind, Timestamp};
use crate::pve::idmap::{IdMap, IdMapEntry};
use crate::repo::{Compression, Manifest, ObjectId};
use crate::tree::content::{self, FileContent};
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Name of the new archive
    name: String,
    /// Directory, regular file, block device, or - for stdin
    source: PathBuf,
    /// Entry name for a stdin source
    #[arg(long, default_value = "stdin", value_name = "NAME")]
    stdin_name: String,
    /// Leave out paths matching PATTERN (tar-style glob; a leading / anchors at the root)
    #[arg(long, value_name = "PATTERN")]
    exclude: Vec<String>,
    /// Do not descend into other filesystems (mount points are kept as empty directories)
    #[arg(long)]
    one_file_system: bool,
    /// The source is an unprivileged container's files: record ids as the container sees
    /// them through PVE's default map (host 100000+N is N; others 65534)
    #[arg(long, conflicts_with = "idmap")]
    unprivileged: bool,
    /// Record ids through this map instead, in lxc.idmap syntax (`u 0 100000 65536`; repeat
    /// for each line, uid and gid)
    #[arg(long, value_name = "MAP")]
    idmap: Vec<String>,
    /// Compression for this archive's new blobs: none, zstd,N or auto,zstd,N
    #[arg(long)]
    compression: Option<Compression>,
    /// Which metadata marks a file unchanged so it is not read again: ctime,size,inode,
    /// mtime,size, or off
    #[arg(long, value_name = "MODE", default_value = "ctime,size,inode")]
    files_cache: FilesCacheMode,
    /// Forget files not seen in this many backups
    #[arg(long, value_name = "RUNS", default_value_t = 20)]
    files_cache_ttl: u32,
    /// Show progress (on a terminal only)
    #[arg(long)]
    progress: bool,
    /// Print the archive's statistics when done
    #[arg(long)]
    stats: bool,
    /// Print the result as JSON on stdout
    #[arg(long)]
    json: bool,
}

pub fn run(global: &Global, args: Args) -> Result<Outcome> {
    crate::repo::archive::validate_name(&args.name)?;
    let (repo, _lock, damaged) = access::open_locked(global, "create")?;
    if repo.find_archive(&args.name).is_ok() {
        bail!("archive {:?} already exists", args.name);
    }
    let progress = Progress::new(args.progress);
    let conf = access::settings()?;
    let mut builder = ArchiveBuilder::new(&repo, args.compression.or(conf.compression));
    let excludes: Vec<String> = conf.excludes.iter().chain(&args.exclude).cloned().collect();
    let mut metadata = BTreeMap::new();
    let mut files_cache_to_save = None;
    if args.source.as_os_str() == "-" {
        metadata.insert("kind".into(), "stream".into());
        ingest_stream(&mut builder, &args.stdin_name, std::io::stdin(), None)?;
    } else {
        let meta = std::fs::metadata(&args.source)
            .with_context(|| format!("source {}", args.source.display()))?;
        let source = std::fs::canonicalize(&args.source)
            .with_context(|| format!("source {}", args.source.display()))?;
        metadata.insert("source".into(), source.to_string_lossy().into());
        let ft = meta.file_type();
        if ft.is_dir() {
            metadata.insert("kind".into(), "directory".into());
            let idmap = idmap_of(&args)?;
            let tree = create_tree::TreeSource {
                root: &source,
                source_id: source.to_string_lossy().into_owned(),
                prefix: Vec::new(),
                excludes: &excludes,
                one_file_system: args.one_file_system,
                idmap: idmap.as_ref(),
                lower: None,
            };
            let mut cache = files_cache(&repo, args.files_cache, args.files_cache_ttl);
            create_tree::ingest_dir(&mut builder, &tree, &mut cache, &progress)?;
            files_cache_to_save = Some(cache);
        } else if ft.is_file() || ft.is_block_device() {
            let kind = if ft.is_file() { "file" } else { "block-device" };
            metadata.insert("kind".into(), kind.into());
            let name = source
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "file".into());
            let file = std::fs::File::open(&source)
                .with_context(|| format!("source {}", source.display()))?;
            if ft.is_file() {
                // A disk image or dump file: the files cache skips it when unchanged. A block
                // device's metadata says nothing about its contents, so it is always read.
                let mut cache = files_cache(&repo, args.files_cache, args.files_cache_ttl);
                let key = FilesCache::key(&source.to_string_lossy(), b"");
                let mut item = stream_item(&name, Some(&meta));
                item.size = meta.len();
                // A raw disk image on a thin filesystem is mostly holes: read only its data
                // and keep the holes, as for the files of a tree.
                if meta.blocks().saturating_mul(512) < meta.len() {
                    item.sparse = content::data_extents(&file, meta.len())
                        .with_context(|| format!("source {}: sparse map", source.display()))?;
                }
                // A read error is fatal here (unlike in a tree): the archive would be empty.
                if create_tree::reuse_cached(&builder, &mut cache, &key, &mut item, meta.ino()) {
                    builder.add_known(item, false)?;
                } else {
                    let mut data = Interruptible(FileContent::new(file, &item));
                    let stored = builder.add(item, Some(&mut data), false)?;
                    if data.0.changed() {
                        // the same words as for a file of a tree
                        warn(format!(
                            "{}: changed while it was read; stored as read",
                            source.display()
                        ));
                        builder.warn();
                    } else {
                        cache.remember(key, &stored, meta.ino());
                    }
                }
                files_cache_to_save = Some(cache);
            } else {
                ingest_stream(&mut builder, &name, file, Some(&meta))?;
            }
        } else {
            bail!(
                "source {}: not a directory, regular file or block device",
                args.source.display()
            );
        }
    }
    let warnings = builder.stats().warnings + damaged;
    let (id, manifest) = builder.finish(&args.name, metadata)?;
    if let Some(cache) = files_cache_to_save {
        if let Err(e) = cache.save() {
            super::warn(format!(
                "files cache not saved (the next backup reads everything): {e}"
            ));
        }
    }
    progress.finish();
    report(&args, &id, &manifest)?;
    Ok(if warnings > 0 {
        Outcome::Warnings
    } else {
        Outcome::Success
    })
}

fn idmap_of(args: &Args) -> Result<Option<IdMap>> {
    if args.unprivileged {
        return Ok(Some(IdMap::default_unprivileged()));
    }
    if args.idmap.is_empty() {
        return Ok(None);
    }
    let entries = args
        .idmap
        .iter()
        .map(|l| {
            IdMapEntry::parse(l).ok_or_else(|| {
                anyhow::anyhow!("--idmap {l:?}: expected `u|g CT_START HOST_START COUNT`")
            })
        })
        .collect::<Result<Vec<_>>>()?;
    IdMap::new(entries)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("--idmap: {e}"))
}

/// The files cache of this repository, loaded for a backup starting now.
pub(super) fn files_cache(
    repo: &crate::repo::Repository,
    mode: FilesCacheMode,
    ttl: u32,
) -> FilesCache {
    let now = jiff::Timestamp::now();
    let start = Timestamp {
        secs: now.as_second(),
        nanos: now.subsec_nanosecond() as u32,
    };
    let path = crate::files_cache::cache_dir(&repo.config().id).join("files");
    FilesCache::load(path, mode, ttl, start)
}

/// One entry whose content is read to the end; its size is whatever arrives.
pub(super) fn ingest_stream(
    builder: &mut ArchiveBuilder,
    name: &str,
    mut reader: impl std::io::Read + Send,
    meta: Option<&std::fs::Metadata>,
) -> Result<()> {
    builder.add(stream_item(name, meta), Some(&mut reader), false)?;
    Ok(())
}

/// The one entry of a stream source: the file's metadata, or now and our ids for stdin.
fn stream_item(name: &str, meta: Option<&std::fs::Metadata>) -> Item {
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

fn report(args: &Args, id: &ObjectId, m: &Manifest) -> Result<()> {
    if args.json {
        let out = serde_json::json!({
            "archive": { "name": m.name, "id": id.to_hex(), "start": m.start, "end": m.end,
                         "metadata": m.metadata, "stats": m.stats }
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    if args.stats {
        let s = &m.stats;
        eprintln!("Archive:        {}", m.name);
        eprintln!("Items:          {} ({} files)", s.items, s.files);
        eprintln!("Original size:  {}", bytesize::ByteSize(s.original_size));
        eprintln!("Chunks:         {} ({} new)", s.chunks, s.new_chunks);
        eprintln!("Added to repo:  {}", bytesize::ByteSize(s.added_size));
        eprintln!("Warnings:       {}", s.warnings);
    }
    Ok(())
}
