//! `proxborg export-vma ARCHIVE FILE|-`: a VM archive as the VMA stream `qmrestore` reads
//! (`proxborg export-vma A - | qmrestore - 220`). A file is written beside its final name
//! and renamed at the end, so a failed export leaves nothing.

use super::{access, Global, Outcome};
use crate::retrieve::export_vma::export_vma;
use crate::retrieve::write_file_atomically;
use anyhow::{bail, Result};
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
        write_file_atomically(&args.output, |file| -> Result<()> {
            export_vma(&repo, &manifest, std::io::BufWriter::new(file))?
                .flush()
                .map_err(Into::into)
        })?;
    }
    Ok(if warnings > 0 {
        Outcome::Warnings
    } else {
        Outcome::Success
    })
}
