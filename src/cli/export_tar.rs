//! `proxborg export-tar ARCHIVE FILE|-`: the archive as a POSIX pax tar that GNU tar, and so
//! `pct restore`, extracts with owners, ACLs, xattrs, hard links and holes. A file is written
//! as a temporary next to it and renamed at the end, so a failed export leaves nothing behind;
//! `-` streams to stdout (uncompressed unless asked: `pct restore -` cannot decompress).

use super::progress::Progress;
use super::{access, Global, Outcome};
use crate::item::filter::Selection;
use crate::retrieve::export_tar::{export_tar, export_tar_to_file, TarCompression};
use anyhow::{bail, Result};
use std::io::IsTerminal;
use std::path::PathBuf;

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
    #[arg(long, default_value = "none")]
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
    let mut on_entry = |n: u64| progress.set(|| format!("{n} entries"));
    if to_stdout {
        let out = std::io::stdout().lock();
        export_tar(
            &repo,
            &manifest,
            selection,
            out,
            args.compression,
            &mut on_entry,
        )?;
    } else {
        export_tar_to_file(
            &repo,
            &manifest,
            selection,
            &args.output,
            args.compression,
            &mut on_entry,
        )?;
    }
    progress.finish();
    Ok(if warnings > 0 {
        Outcome::Warnings
    } else {
        Outcome::Success
    })
}
