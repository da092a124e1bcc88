//! Restoring entries into a directory: the glue between `retrieve` and `tree::restore`.
//! An entry that fails (damaged data, an unsafe path) is reported and counted; a file whose
//! content failed verification is removed rather than left with wrong bytes.

use super::progress::Progress;
use crate::ingest::display_path;
use crate::item::Kind;
use crate::retrieve::ArchiveReader;
use crate::tree::restore::{RestoreError, RestoreOptions, Restorer};
use anyhow::Result;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub fn restore(
    reader: ArchiveReader,
    dest: &Path,
    sparse: bool,
    progress: &Progress,
) -> Result<u64> {
    let mut restorer = Restorer::new(
        dest,
        RestoreOptions {
            sparse,
            numeric_owner: true,
        },
    )?;
    let mut failures = 0u64;
    for (count, entry) in reader.enumerate() {
        let mut entry = entry?;
        if let Err(e) = restorer.put(&entry.item, &mut entry.content) {
            eprintln!("proxborg: error: {e}");
            failures += 1;
            let wrote_data = matches!(entry.item.kind, Kind::File | Kind::Hardlink { .. });
            if wrote_data && !matches!(e, RestoreError::Unsafe { .. }) {
                // The restorer refuses symlinked parents before writing, so this path is
                // inside dest.
                let _ =
                    std::fs::remove_file(dest.join(std::ffi::OsStr::from_bytes(&entry.item.path)));
            }
        }
        for w in restorer.take_warnings() {
            super::warn(w);
        }
        progress.set(|| format!("{} entries: {}", count + 1, display_path(&entry.item.path)));
    }
    restorer.finish()?;
    Ok(failures)
}
