//! The vzdump hook's job: a finished dump file (`.tar`, `.vma`, compressed or not) becomes
//! one archive named after the file; with `remove_dump` the file is deleted, but only once
//! the archive reads back identical through the normal, verifying read path.

use super::create::stream_item;
use super::BackupError;
use crate::ingest::ArchiveBuilder;
use crate::item::filter::Selection;
use crate::repo::{Compression, Manifest, Repository};
use crate::retrieve::ArchiveReader;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

pub struct DumpRequest {
    pub dump: PathBuf,
    /// Archive name (the dump's file name).
    pub name: String,
    /// What vzdump says of the guest (`kind`, `vmtype`, `vmid`, `hostname`, `mode`,
    /// `series`), recorded as the archive's metadata.
    pub metadata: BTreeMap<String, serde_json::Value>,
    pub compression: Option<Compression>,
    pub remove_dump: bool,
}

pub struct DumpResult {
    pub manifest: Manifest,
    /// The dump was verified and deleted.
    pub removed: bool,
}

pub fn archive_dump(
    repo: &mut Repository,
    request: DumpRequest,
) -> Result<DumpResult, BackupError> {
    let DumpRequest {
        dump,
        name,
        mut metadata,
        compression,
        remove_dump,
    } = request;
    if repo.find_archive(&name).is_ok() {
        return Err(BackupError::Refused(format!(
            "archive {name:?} already exists"
        )));
    }
    let io = |what: &str, e| BackupError::Host(crate::host::HostError::io(what, e));
    let file = std::fs::File::open(&dump).map_err(|e| io(&dump.display().to_string(), e))?;
    let meta = file
        .metadata()
        .map_err(|e| io(&dump.display().to_string(), e))?;
    let mut builder = ArchiveBuilder::new(repo, compression);
    let mut hashing = HashingReader::new(file);
    builder.add(stream_item(&name, Some(&meta)), Some(&mut hashing), false)?;
    let source_hash = hashing.finish();
    metadata.insert("source".into(), dump.to_string_lossy().into());
    let (_, manifest) = builder.finish(&name, metadata)?;
    if !remove_dump {
        return Ok(DumpResult {
            manifest,
            removed: false,
        });
    }
    repo.reload_index()?; // the blobs just written
    let mut stored = blake3::Hasher::new();
    for entry in ArchiveReader::open(repo, &manifest, Selection::default()) {
        let mut entry = entry?;
        std::io::copy(&mut entry.content, &mut stored)
            .map_err(|e| io("reading the archive back", e))?;
    }
    if stored.finalize() != source_hash {
        return Err(BackupError::Refused(format!(
            "archive {name:?} does not read back identical to {}; dump kept",
            dump.display()
        )));
    }
    std::fs::remove_file(&dump).map_err(|e| io(&format!("removing {}", dump.display()), e))?;
    Ok(DumpResult {
        manifest,
        removed: true,
    })
}

/// Hashes what passes through, so the dump is read only once.
struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: blake3::Hasher::new(),
        }
    }
    fn finish(self) -> blake3::Hash {
        self.hasher.finalize()
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
