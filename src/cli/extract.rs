//! `proxborg extract ARCHIVE [PATH...]`: restore into a directory (`-C`, default the current
//! one) with owners, modes, ACLs, xattrs, times, hard links and holes, or write the selected
//! files' contents to stdout. A file whose content fails verification is reported and
//! removed, never left behind with wrong bytes; the other entries are still restored.

use super::progress::Progress;
use super::{access, extract_tree, Global, Outcome};
use crate::item::filter::Selection;
use crate::item::Kind;
use crate::retrieve::ArchiveReader;
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Archive to restore
    archive: String,
    /// Only these paths (and what is below them)
    paths: Vec<String>,
    /// Directory to restore into
    #[arg(
        short = 'C',
        long = "directory",
        value_name = "DIR",
        default_value = "."
    )]
    directory: PathBuf,
    /// Write the selected files' contents to stdout instead
    #[arg(long, conflicts_with = "directory")]
    stdout: bool,
    /// Drop this many leading path components (entries left empty are skipped)
    #[arg(long, value_name = "N", default_value_t = 0)]
    strip_components: usize,
    /// Leave out paths matching PATTERN
    #[arg(long, value_name = "PATTERN")]
    exclude: Vec<String>,
    /// Write runs of zeros as holes (sparse files stored with holes are always restored sparse)
    #[arg(long)]
    sparse: bool,
    /// Show progress (on a terminal only)
    #[arg(long)]
    progress: bool,
}

pub fn run(global: &Global, args: Args) -> Result<Outcome> {
    let (repo, warnings) = access::open(global)?;
    let (_, manifest) = repo.find_archive(&args.archive)?;
    let selection = Selection::from_args(&args.paths, &args.exclude, args.strip_components);
    let progress = Progress::new(args.progress);
    let reader = ArchiveReader::open(&repo, &manifest, selection);
    let failures = if args.stdout {
        to_stdout(reader)?
    } else {
        if !args.directory.is_dir() {
            bail!("-C {}: not a directory", args.directory.display());
        }
        extract_tree::restore(reader, &args.directory, args.sparse, &progress)?
    };
    progress.finish();
    if failures > 0 {
        bail!("{failures} entries could not be restored (see above)");
    }
    Ok(if warnings > 0 {
        Outcome::Warnings
    } else {
        Outcome::Success
    })
}

fn to_stdout(reader: ArchiveReader) -> Result<u64> {
    let mut out = std::io::stdout().lock();
    for entry in reader {
        let mut entry = entry?;
        if !matches!(entry.item.kind, Kind::File) {
            continue;
        }
        let path = crate::ingest::display_path(&entry.item.path);
        match entry.item.sparse.clone() {
            None => {
                std::io::copy(&mut entry.content, &mut out).with_context(|| path.clone())?;
            }
            // In a stream, holes are zeros.
            Some(extents) => {
                let mut pos = 0u64;
                for e in extents.iter().chain(std::iter::once(&crate::item::Extent {
                    offset: entry.item.size,
                    len: 0,
                })) {
                    std::io::copy(
                        &mut std::io::repeat(0).take(e.offset.saturating_sub(pos)),
                        &mut out,
                    )?;
                    std::io::copy(&mut (&mut entry.content).take(e.len), &mut out)
                        .with_context(|| path.clone())?;
                    pos = e.offset + e.len;
                }
            }
        }
    }
    out.flush()?;
    Ok(0)
}
