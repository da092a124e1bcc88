//! An archive as the tar stream `pct restore` and GNU tar read: vzdump's `pct.conf` and
//! `pct.fw` first (PVE-FACTS §1.4), then every selected entry, optionally compressed. The
//! encoding itself is `export::TarWriter`'s; this module reads the repository for it.

use super::ArchiveReader;
use crate::export::{ExportError, TarWriter};
use crate::item::filter::Selection;
use crate::item::pattern::Pattern;
use crate::repo::{Manifest, RepoError, Repository};
use std::io::Write;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum TarExportError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("writing the tar stream: {0}")]
    Write(#[from] std::io::Error),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TarCompression {
    None,
    Zstd(i32),
    Gzip,
}

impl std::str::FromStr for TarCompression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(TarCompression::None),
            "gzip" => Ok(TarCompression::Gzip),
            "zstd" => Ok(TarCompression::Zstd(3)),
            _ => s
                .strip_prefix("zstd,")
                .and_then(|n| n.parse().ok())
                .filter(|n| (1..=19).contains(n))
                .map(TarCompression::Zstd)
                .ok_or_else(|| {
                    format!("invalid compression {s:?}: expected none, zstd[,1-19] or gzip")
                }),
        }
    }
}

/// Writes the selected entries of `manifest` to `out` as a tar stream; `on_entry` is called
/// with the count after each entry (progress).
pub fn export_tar<W: Write>(
    repo: &Repository,
    manifest: &Manifest,
    selection: Selection,
    out: W,
    compression: TarCompression,
    on_entry: &mut dyn FnMut(u64),
) -> Result<(), TarExportError> {
    let (first, selection) = config_first(repo, manifest, selection)?;
    let reader = ArchiveReader::open(repo, manifest, selection);
    let mut tar = TarWriter::new(compress(out, compression)?);
    for (item, data) in first {
        tar.append(&item, &mut data.as_slice())?;
    }
    for (count, entry) in reader.enumerate() {
        let mut entry = entry?;
        tar.append(&entry.item, &mut entry.content)?;
        on_entry(count as u64 + 1);
    }
    let sink = tar.finish()?;
    let mut out = sink.finish()?;
    out.flush()?;
    Ok(())
}

/// Like `export_tar`, into the file `path`: written as a temporary beside it, synced and
/// renamed at the end, so a failed export leaves nothing behind (and no half file under the
/// final name).
pub fn export_tar_to_file(
    repo: &Repository,
    manifest: &Manifest,
    selection: Selection,
    path: &Path,
    compression: TarCompression,
    on_entry: &mut dyn FnMut(u64),
) -> Result<(), TarExportError> {
    super::write_file_atomically(path, |file| {
        export_tar(repo, manifest, selection, file, compression, on_entry)
    })
}

/// The compressor around the output; `finish` must be called to complete the frame.
enum Sink<W: Write> {
    Plain(W),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Gzip(flate2::write::GzEncoder<W>),
}

fn compress<W: Write>(out: W, c: TarCompression) -> std::io::Result<Sink<W>> {
    Ok(match c {
        TarCompression::None => Sink::Plain(out),
        TarCompression::Zstd(level) => {
            let mut enc = zstd::stream::write::Encoder::new(out, level)?;
            // The tar writer is cheap; let zstd use the other core.
            enc.multithread(2)?;
            Sink::Zstd(enc)
        }
        TarCompression::Gzip => Sink::Gzip(flate2::write::GzEncoder::new(
            out,
            flate2::Compression::default(),
        )),
    })
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Zstd(w) => w.write(buf),
            Sink::Gzip(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Zstd(w) => w.flush(),
            Sink::Gzip(w) => w.flush(),
        }
    }
}

impl<W: Write> Sink<W> {
    fn finish(self) -> std::io::Result<W> {
        match self {
            Sink::Plain(w) => Ok(w),
            Sink::Zstd(w) => w.finish(),
            Sink::Gzip(w) => w.finish(),
        }
    }
}

/// vzdump puts these first, and `pct restore` takes the first `./etc/vzdump/pct.conf` it
/// finds (PVE-FACTS §1.4), so they lead the stream whatever their place in the archive.
const CONFIG_FIRST: [&str; 2] = ["etc/vzdump/pct.conf", "etc/vzdump/pct.fw"];
/// Larger "config files" are left in place rather than held in memory.
const CONFIG_MAX: u64 = 16 << 20;

/// An entry read into memory.
type Loaded = (crate::item::Item, Vec<u8>);

/// The config entries to write first (with their contents), and the selection for the rest.
/// Archives made by proxborg's container backups already start with them: no extra pass.
fn config_first(
    repo: &Repository,
    manifest: &Manifest,
    selection: Selection,
) -> Result<(Vec<Loaded>, Selection), TarExportError> {
    if selection.strip_components > 0 {
        return Ok((Vec::new(), selection));
    }
    let mut probe = ArchiveReader::open(repo, manifest, Selection::default());
    let already_first = match probe.next() {
        Some(Ok(e)) => e.item.path == CONFIG_FIRST[0].as_bytes(),
        _ => true, // empty or damaged: the main pass reports it
    };
    drop(probe);
    if already_first {
        return Ok((Vec::new(), selection));
    }
    let wanted = Selection {
        includes: CONFIG_FIRST.iter().map(|p| p.as_bytes().to_vec()).collect(),
        ..Default::default()
    };
    let mut first = Vec::new();
    for entry in ArchiveReader::open(repo, manifest, wanted) {
        let mut entry = entry?;
        let path = entry.item.path.clone();
        if !CONFIG_FIRST.iter().any(|p| p.as_bytes() == path) || !selection.selects(&path) {
            continue;
        }
        if !entry.item.is_file() || entry.item.stored_len() > CONFIG_MAX {
            return Ok((Vec::new(), selection));
        }
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry.content, &mut data)?;
        first.push((entry.item, data));
    }
    let mut rest = selection;
    for (item, _) in &first {
        let anchored = format!("/{}", String::from_utf8_lossy(&item.path));
        rest.excludes.push(Pattern::new(&anchored));
    }
    Ok((first, rest))
}
