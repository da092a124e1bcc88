//! Restoring entries into a directory (the glue between the archive reader and
//! `tree::restore`), or writing the regular files' contents to a stream. An entry that fails
//! (damaged data, an unsafe path) is reported and counted, and the rest go on; a file whose
//! content failed verification is removed rather than left with wrong bytes.

use super::ArchiveReader;
use crate::item::{display_path, Kind};
use crate::repo::RepoError;
use crate::tree::restore::{RestoreError, RestoreOptions, Restorer};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error("{path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// What a restore tells its caller as it goes.
pub trait ExtractReport {
    /// An entry that could not be restored (the restore goes on).
    fn failed(&mut self, error: &RestoreError);
    /// A soft problem with an entry that was restored (an xattr the filesystem refused).
    fn warning(&mut self, message: String);
    /// `count` entries done, the last one `path`.
    fn progress(&mut self, count: u64, path: &str);
}

/// Restores every entry of `reader` under `dest`; returns how many failed.
pub fn restore(
    reader: ArchiveReader,
    dest: &Path,
    sparse: bool,
    report: &mut dyn ExtractReport,
) -> Result<u64, ExtractError> {
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
            report.failed(&e);
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
            report.warning(w);
        }
        report.progress(count as u64 + 1, &display_path(&entry.item.path));
    }
    restorer.finish()?;
    Ok(failures)
}

/// Writes the contents of the regular files of `reader` to `out`, one after the other, holes
/// as zeros.
pub fn contents_to(reader: ArchiveReader, out: &mut dyn Write) -> Result<(), ExtractError> {
    for entry in reader {
        let mut entry = entry?;
        if !matches!(entry.item.kind, Kind::File) {
            continue;
        }
        let path = display_path(&entry.item.path);
        let write_err = |source| ExtractError::Write {
            path: path.clone(),
            source,
        };
        let mut logical = super::WithHoles::new(&mut entry.content, &entry.item);
        std::io::copy(&mut logical, out).map_err(write_err)?;
    }
    out.flush().map_err(|source| ExtractError::Write {
        path: "stdout".into(),
        source,
    })
}
