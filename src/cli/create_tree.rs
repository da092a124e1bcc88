//! Feeding a directory walk into an archive: the glue between `tree::walk` and `ingest`.
//! A file that cannot be read, vanished or changed while being read is a warning (exit 1)
//! and the walk goes on; only repository failures stop the backup.

use super::progress::Progress;
use crate::ingest::{display_path, ArchiveBuilder, IngestError};
use crate::item::pattern::Pattern;
use crate::item::{Item, Kind};
use crate::tree::content::{self, FileContent};
use crate::tree::walk::{walk, Entry, WalkEvent, WalkOptions};
use anyhow::Result;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

pub fn ingest_dir(
    builder: &mut ArchiveBuilder,
    root: &Path,
    excludes: &[String],
    one_file_system: bool,
    progress: &Progress,
) -> Result<()> {
    let opts = WalkOptions {
        one_file_system,
        excludes: excludes.iter().map(|p| Pattern::new(p)).collect(),
    };
    for event in walk(root, &opts)? {
        match event {
            WalkEvent::Warning(msg) => {
                super::warn(msg);
                builder.warn();
            }
            WalkEvent::Entry(entry) => add_entry(builder, entry)?,
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

/// Adds one walked entry; per-file read problems become warnings.
pub fn add_entry(builder: &mut ArchiveBuilder, entry: Entry) -> Result<()> {
    let Entry { mut item, fs_path } = entry;
    match &item.kind {
        Kind::File => add_file(builder, item, &fs_path),
        Kind::Hardlink { target } if !builder.has_link_target(target) => {
            // The group's first name was not stored (unreadable): this name carries the data.
            item.kind = Kind::File;
            add_file(builder, item, &fs_path)
        }
        _ => {
            let r = builder.add(item, None, false);
            soft(builder, r)
        }
    }
}

fn add_file(builder: &mut ArchiveBuilder, item: Item, fs_path: &Path) -> Result<()> {
    let path = display_path(&item.path);
    let file = match content::open_path(fs_path) {
        Ok(f) => f,
        Err(e) => {
            super::warn(format!("{path}: {e}; not backed up"));
            builder.warn();
            return Ok(());
        }
    };
    let linked = file.metadata().map(|m| m.nlink() > 1).unwrap_or(true);
    let mut reader = FileContent::new(file, &item);
    let r = builder.add(item, Some(&mut reader), linked);
    soft(builder, r)?;
    if reader.changed() {
        super::warn(format!("{path}: changed while it was read; stored as read"));
        builder.warn();
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
