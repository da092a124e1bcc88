//! `proxborg extract ARCHIVE [PATH...]`: restore into a directory (`-C`, default the current
//! one) with owners, modes, ACLs, xattrs, times, hard links and holes, or write the selected
//! files' contents to stdout. A file whose content fails verification is reported and
//! removed, never left behind with wrong bytes; the other entries are still restored.

use super::progress::Progress;
use super::{access, warn, Global, Outcome};
use crate::item::filter::Selection;
use crate::retrieve::extract::{self, ExtractReport};
use crate::retrieve::ArchiveReader;
use crate::tree::restore::RestoreError;
use anyhow::{bail, Result};
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
    let reader = ArchiveReader::open(&repo, &manifest, selection);
    let failures = if args.stdout {
        extract::contents_to(reader, &mut std::io::stdout().lock())?;
        0
    } else {
        if !args.directory.is_dir() {
            bail!("-C {}: not a directory", args.directory.display());
        }
        let mut console = Console(Progress::new(args.progress));
        let failures = extract::restore(reader, &args.directory, args.sparse, &mut console)?;
        console.0.finish();
        failures
    };
    if failures > 0 {
        bail!("{failures} entries could not be restored (see above)");
    }
    Ok(if warnings > 0 {
        Outcome::Warnings
    } else {
        Outcome::Success
    })
}

/// Failures and warnings as lines on stderr, progress on a terminal.
struct Console(Progress);

impl ExtractReport for Console {
    fn failed(&mut self, error: &RestoreError) {
        eprintln!("proxborg: error: {error}");
    }
    fn warning(&mut self, message: String) {
        warn(message);
    }
    fn progress(&mut self, count: u64, path: &str) {
        self.0.set(|| format!("{count} entries: {path}"));
    }
}
