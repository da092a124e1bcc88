//! `proxborg export-tar ARCHIVE FILE|-`: the archive as a POSIX pax tar that GNU tar, and so
//! `pct restore`, extracts with owners, ACLs, xattrs, hard links and holes. A file is written
//! as a temporary next to it and renamed at the end, so a failed export leaves nothing behind;
//! `-` streams to stdout (uncompressed unless asked: `pct restore -` cannot decompress).

use super::progress::Progress;
use super::{access, Global, Outcome};
use crate::export::TarWriter;
use crate::item::filter::Selection;
use crate::item::pattern::Pattern;
use crate::retrieve::ArchiveReader;
use anyhow::{bail, Context, Result};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TarCompression {
    None,
    Zstd(i32),
    Gzip,
}

fn parse_compression(s: &str) -> Result<TarCompression, String> {
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

#[derive(clap::Args)]
pub struct Args {
    /// Archive to export
    archive: String,
    /// Output file, or - for stdout
    output: PathBuf,
    /// Only these paths (and what is below them)
    paths: Vec<String>,
    /// Leave out paths matching PATTERN
    #[arg(long, value_name = "PATTERN")]
    exclude: Vec<String>,
    /// Drop this many leading path components
    #[arg(long, value_name = "N", default_value_t = 0)]
    strip_components: usize,
    /// none, zstd[,N] or gzip (default none; name the file .tar.zst / .tar.gz to match)
    #[arg(long, value_parser = parse_compression, default_value = "none")]
    compression: TarCompression,
    /// Show progress (on a terminal only)
    #[arg(long)]
    progress: bool,
}

pub fn run(global: &Global, args: Args) -> Result<Outcome> {
    let to_stdout = args.output.as_os_str() == "-";
    if to_stdout && std::io::stdout().is_terminal() {
        bail!("refusing to write a tar stream to a terminal: give a file or redirect stdout");
    }
    let (repo, warnings) = access::open(global)?;
    let (_, manifest) = repo.find_archive(&args.archive)?;
    let selection = Selection::from_args(&args.paths, &args.exclude, args.strip_components);
    let progress = Progress::new(args.progress);
    let (first, selection) = config_first(&repo, &manifest, selection)?;
    let reader = ArchiveReader::open(&repo, &manifest, selection);
    if to_stdout {
        let out = std::io::stdout().lock();
        write_tar(first, reader, compress(out, args.compression)?, &progress)?;
    } else {
        let dir = match args.output.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".proxborg-export-")
            .tempfile_in(&dir)
            .with_context(|| format!("creating a file in {}", dir.display()))?;
        let file = tmp.reopen()?;
        write_tar(first, reader, compress(file, args.compression)?, &progress)?;
        tmp.as_file().sync_all()?;
        persist(tmp, &args.output)?;
    }
    progress.finish();
    Ok(if warnings > 0 {
        Outcome::Warnings
    } else {
        Outcome::Success
    })
}

fn persist(tmp: tempfile::NamedTempFile, to: &Path) -> Result<()> {
    tmp.persist(to)
        .map_err(|e| anyhow::anyhow!("{}: {}", to.display(), e.error))?;
    Ok(())
}

/// The compressor around the output; `finish` must be called to complete the frame.
enum Sink<W: Write> {
    Plain(W),
    Zstd(zstd::stream::write::Encoder<'static, W>),
    Gzip(flate2::write::GzEncoder<W>),
}

fn compress<W: Write>(out: W, c: TarCompression) -> Result<Sink<W>> {
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
    repo: &crate::repo::Repository,
    manifest: &crate::repo::Manifest,
    selection: Selection,
) -> Result<(Vec<Loaded>, Selection)> {
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

fn write_tar<W: Write>(
    first: Vec<Loaded>,
    reader: ArchiveReader,
    sink: Sink<W>,
    progress: &Progress,
) -> Result<()> {
    let mut tar = TarWriter::new(sink);
    for (item, data) in first {
        tar.append(&item, &mut data.as_slice())?;
    }
    for (count, entry) in reader.enumerate() {
        let mut entry = entry?;
        tar.append(&entry.item, &mut entry.content)?;
        progress.set(|| format!("{} entries", count + 1));
    }
    let sink = tar.finish()?;
    let mut out = sink.finish()?;
    out.flush()?;
    Ok(())
}
