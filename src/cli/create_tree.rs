//! Feeding a directory walk into an archive: the glue between `tree::walk`, the files cache
//! and `ingest`. A file that cannot be read, vanished or changed while being read is a
//! warning (exit 1) and the walk goes on; only repository failures stop the backup.

use super::progress::Progress;
use crate::files_cache::FilesCache;
use crate::host::interrupt::Interruptible;
use crate::ingest::{display_path, ArchiveBuilder, IngestError};
use crate::item::pattern::Pattern;
use crate::item::{Item, Kind};
use crate::pve::idmap::{translate_attrs, translate_item, IdMap};
use crate::tree::content::{self, FileContent};
use crate::tree::walk::{walk, Entry, WalkEvent, WalkOptions};
use anyhow::Result;
use std::path::Path;

/// One source tree being ingested: where it is, what identifies it across runs.
pub struct TreeSource<'a> {
    pub root: &'a Path,
    /// Stable identity for the files cache (canonical path, or a ZFS dataset GUID).
    pub source_id: String,
    /// Where this tree goes inside the archive (empty: the root).
    pub prefix: Vec<u8>,
    pub excludes: &'a [String],
    pub one_file_system: bool,
    /// Host → container id translation (owners, ACL qualifiers, file capabilities).
    pub idmap: Option<&'a IdMap>,
    /// Set when `root` is an id-mapping overlay (fuse-overlayfs) over this snapshot: the
    /// overlay already shows container-side owners, so only ACL qualifiers and capabilities
    /// are translated, and holes come from the snapshot (`WalkOptions::lower`).
    pub lower: Option<&'a Path>,
}

pub fn ingest_dir(
    builder: &mut ArchiveBuilder,
    source: &TreeSource,
    cache: &mut FilesCache,
    progress: &Progress,
) -> Result<()> {
    let opts = WalkOptions {
        one_file_system: source.one_file_system,
        excludes: source.excludes.iter().map(|p| Pattern::new(p)).collect(),
        exclude_prefix: source.prefix.clone(),
        lower: source.lower.map(Path::to_path_buf),
    };
    for event in walk(source.root, &opts)? {
        if crate::host::interrupt::interrupted() {
            anyhow::bail!("interrupted");
        }
        match event {
            WalkEvent::Warning(msg) => {
                super::warn(msg);
                builder.warn();
            }
            WalkEvent::Entry(entry) => add_entry(builder, source, cache, entry)?,
        }
        let s = builder.stats();
        progress.set(|| {
            format!(
                "{} files, {} read, {} new chunks",
                s.files,
                bytesize::ByteSize(s.original_size),
                s.new_chunks
            )
        });
    }
    Ok(())
}

fn add_entry(
    builder: &mut ArchiveBuilder,
    source: &TreeSource,
    cache: &mut FilesCache,
    entry: Entry,
) -> Result<()> {
    let Entry {
        mut item,
        fs_path,
        ino,
        nlink,
    } = entry;
    item.path = prefixed(&source.prefix, &item.path);
    if let Some(map) = source.idmap {
        let warnings = if source.lower.is_some() {
            translate_attrs(map, &mut item)
        } else {
            translate_item(map, &mut item)
        };
        for w in warnings {
            super::warn(format!("{}: {w:?}", display_path(&item.path)));
            builder.warn();
        }
    }
    match &mut item.kind {
        Kind::File => add_file(
            builder,
            cache,
            &source.source_id,
            item,
            &fs_path,
            ino,
            nlink > 1,
        ),
        Kind::Hardlink { target } => {
            *target = prefixed(&source.prefix, target);
            if builder.has_link_target(target) {
                let r = builder.add(item, None, false).map(drop);
                soft(builder, r)
            } else {
                // The group's first name was not stored (unreadable): this one carries the data.
                item.kind = Kind::File;
                add_file(builder, cache, &source.source_id, item, &fs_path, ino, true)
            }
        }
        _ => {
            let r = builder.add(item, None, false).map(drop);
            soft(builder, r)
        }
    }
}

fn prefixed(prefix: &[u8], path: &[u8]) -> Vec<u8> {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_vec(),
        (false, true) => prefix.to_vec(),
        (false, false) => [prefix, b"/", path].concat(),
    }
}

fn add_file(
    builder: &mut ArchiveBuilder,
    cache: &mut FilesCache,
    source_id: &str,
    mut item: Item,
    fs_path: &Path,
    ino: u64,
    linked: bool,
) -> Result<()> {
    // Only regular files need a cache key; the hash is skipped for everything else.
    let key = FilesCache::key(source_id, &item.path);
    if let Some(hit) = cache.lookup(&key, &item, ino) {
        if builder.has_blobs(&hit.chunks) {
            item.chunks = hit.chunks;
            item.sparse = hit.sparse;
            builder.add_known(item, linked)?;
            return Ok(());
        }
    }
    let path = display_path(&item.path);
    let file = match content::open_path(fs_path) {
        Ok(f) => f,
        Err(e) => {
            super::warn(format!("{path}: {e}; not backed up"));
            builder.warn();
            return Ok(());
        }
    };
    let mut reader = Interruptible(FileContent::new(file, &item));
    let stored = builder.add(item, Some(&mut reader), linked);
    if crate::host::interrupt::interrupted() {
        anyhow::bail!("interrupted");
    }
    let changed = reader.0.changed();
    if changed {
        super::warn(format!("{path}: changed while it was read; stored as read"));
        builder.warn();
    }
    match stored {
        Ok(item) if !changed => cache.remember(key, &item, ino),
        Ok(_) => {}
        Err(e) => soft(builder, Err(e))?,
    }
    Ok(())
}

/// A read error of one entry is a warning; anything else (the repository) is fatal.
fn soft(builder: &mut ArchiveBuilder, r: Result<(), IngestError>) -> Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(e @ IngestError::Read { .. }) => {
            super::warn(format!("{e}; not backed up"));
            builder.warn();
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
