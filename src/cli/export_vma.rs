//! `proxborg export-vma ARCHIVE FILE|-`: a VM archive as the VMA stream `qmrestore` reads
//! (`proxborg export-vma A - | qmrestore - 220`). A file is written beside its final name
//! and renamed at the end, so a failed export leaves nothing.

use super::{access, Global, Outcome};
use crate::retrieve::export_vma::export_vma;
use anyhow::{bail, Context, Result};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// A VM archive (made by `proxborg VMID`)
    archive: String,
    /// Output file, or - for stdout
    output: PathBuf,
}

pub fn run(global: &Global, args: Args) -> Result<Outcome> {
    let to_stdout = args.output.as_os_str() == "-";
    if to_stdout && std::io::stdout().is_terminal() {
        bail!("refusing to write a VMA stream to a terminal: give a file or redirect stdout");
    }
    let (repo, warnings) = access::open(global)?;
    let (_, manifest) = repo.find_archive(&args.archive)?;
    if to_stdout {
        export_vma(&repo, &manifest, std::io::stdout().lock())?.flush()?;
    } else {
        let dir = match args.output.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".proxborg-export-")
            .tempfile_in(&dir)
            .with_context(|| format!("creating a file in {}", dir.display()))?;
        let file = export_vma(&repo, &manifest, std::io::BufWriter::new(tmp.reopen()?))?;
        file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        tmp.persist(&args.output)
            .map_err(|e| anyhow::anyhow!("{}: {}", args.output.display(), e.error))?;
    }
    Ok(if warnings > 0 {
        Outcome::Warnings
    } else {
        Outcome::Success
    })
}
