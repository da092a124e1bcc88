//! The vzdump hook's job: a finished dump file becomes one archive named after the file. A
//! VMA (`.vma`, `.vma.zst`, `.vma.gz`) is taken apart into configs and drives as
//! `proxborg VMID` does, so it deduplicates against those; anything else (a container's
//! tar, an lzo VMA) is stored as one file. With `remove_dump` the file is deleted, but only
//! once the archive reads back through the normal, verifying read path as the same bytes
//! (or, for a VMA, the same configs and disk contents).

use super::create::stream_item;
use super::drives::{drives_metadata, ingest_vma, ContentDigest};
use super::BackupError;
use crate::ingest::ArchiveBuilder;
use crate::item::filter::Selection;
use crate::item::Timestamp;
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
    /// Remarks for the log that are not problems (a compressed VMA costs CPU to unpack).
    pub notes: Vec<String>,
}

/// How a dump file is read, from its name (vzdump's `vzdump-qemu-ID-TIME.vma[.zst|.gz|.lzo]`).
#[derive(Debug, PartialEq, Eq)]
enum DumpShape {
    /// A VMA, plain or compressed with zstd or gzip: taken apart into configs and drives.
    Vma(Compressed),
    /// Anything else (a container's tar, an lzo VMA): stored as one file.
    Opaque,
}

#[derive(Debug, PartialEq, Eq)]
enum Compressed {
    No,
    Zstd,
    Gzip,
}

fn shape(name: &str) -> DumpShape {
    match name.rsplit_once(".vma").map(|(_, rest)| rest) {
        Some("") => DumpShape::Vma(Compressed::No),
        Some(".zst") => DumpShape::Vma(Compressed::Zstd),
        Some(".gz") => DumpShape::Vma(Compressed::Gzip),
        _ => DumpShape::Opaque,
    }
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
    let shown = dump.display().to_string();
    let file = std::fs::File::open(&dump).map_err(|e| io(&shown, e))?;
    let meta = file.metadata().map_err(|e| io(&shown, e))?;
    metadata.insert("source".into(), dump.to_string_lossy().into());
    let mut notes = Vec::new();
    let mut builder = ArchiveBuilder::new(repo, compression);
    let check = match shape(&name) {
        DumpShape::Vma(compressed) => {
            let file = std::io::BufReader::with_capacity(1 << 20, file);
            let mut stream: Box<dyn Read> = match compressed {
                Compressed::No => Box::new(file),
                Compressed::Zstd => Box::new(
                    zstd::stream::read::Decoder::with_buffer(file).map_err(|e| io(&shown, e))?,
                ),
                Compressed::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(file)),
            };
            if compressed != Compressed::No {
                notes.push(format!(
                    "{name} is compressed: unpacking it costs CPU, and proxborg compresses and \
                     deduplicates anyway (vzdump's `compress: 0` is faster)"
                ));
            }
            let mtime = timestamp(&meta);
            let mut digest = ContentDigest::default();
            let drives = ingest_vma(
                &mut builder,
                &mut stream,
                mtime,
                &shown,
                || BackupError::Refused("the dump file is empty; no archive written".into()),
                // only `remove-dump` compares contents: without it the digest is pure cost
                remove_dump.then_some(&mut digest),
            )?;
            metadata.insert("format".into(), "drives".into());
            metadata.insert("drives".into(), drives_metadata(&drives));
            Check::Content(digest)
        }
        DumpShape::Opaque => {
            let mut hashing = HashingReader::new(file);
            builder.add(stream_item(&name, Some(&meta)), Some(&mut hashing), false)?;
            Check::Bytes(hashing.finish())
        }
    };
    let (_, manifest) = builder.finish(&name, metadata)?;
    if !remove_dump {
        return Ok(DumpResult {
            manifest,
            removed: false,
            notes,
        });
    }
    repo.reload_index()?; // the blobs just written
    let same = match check {
        Check::Bytes(source) => {
            let mut stored = blake3::Hasher::new();
            for entry in ArchiveReader::open(repo, &manifest, Selection::default()) {
                let mut entry = entry?;
                std::io::copy(&mut entry.content, &mut stored)
                    .map_err(|e| io("reading the archive back", e))?;
            }
            stored.finalize() == source
        }
        Check::Content(source) => ContentDigest::of_archive(repo, &manifest)? == source,
    };
    if !same {
        return Err(BackupError::Refused(format!(
            "archive {name:?} does not read back identical to {shown}; dump kept"
        )));
    }
    std::fs::remove_file(&dump).map_err(|e| io(&format!("removing {shown}"), e))?;
    Ok(DumpResult {
        manifest,
        removed: true,
        notes,
    })
}

/// What the archive must read back as before the dump may go.
enum Check {
    /// The dump file's own bytes (stored as one file).
    Bytes(blake3::Hash),
    /// The VMA's configs and disk contents (stored as drives).
    Content(ContentDigest),
}

fn timestamp(meta: &std::fs::Metadata) -> Timestamp {
    use std::os::unix::fs::MetadataExt;
    Timestamp {
        secs: meta.mtime(),
        nanos: u32::try_from(meta.mtime_nsec()).unwrap_or(0),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_names_say_how_they_are_read() {
        let vma = |c| DumpShape::Vma(c);
        assert_eq!(
            shape("vzdump-qemu-200-2026_01_01-00_00_00.vma"),
            vma(Compressed::No)
        );
        assert_eq!(shape("vzdump-qemu-200-x.vma.zst"), vma(Compressed::Zstd));
        assert_eq!(shape("vzdump-qemu-200-x.vma.gz"), vma(Compressed::Gzip));
        assert_eq!(shape("vzdump-qemu-200-x.vma.lzo"), DumpShape::Opaque);
        assert_eq!(shape("vzdump-lxc-100-x.tar.zst"), DumpShape::Opaque);
        assert_eq!(shape("vzdump-qemu-200-x.vma.zst.tmp"), DumpShape::Opaque);
    }
}
