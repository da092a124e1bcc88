//! `proxborg diff ARCHIVE1 ARCHIVE2 [PATH...]`: what changed from the first archive to the
//! second (added, removed, content with sizes, type, link target, mode, owner, ACL, xattrs),
//! one line per path, or one JSON object per line with `--json`.

use super::{access, Global, Outcome};
use crate::item::filter::Selection;
use crate::repo::item_stream::ItemStreamReader;
use crate::retrieve::diff::diff;
use anyhow::Result;
use std::io::Write;

#[derive(clap::Args)]
pub struct Args {
    /// The older archive
    archive1: String,
    /// The newer archive
    archive2: String,
    /// Only these paths (and what is below them)
    paths: Vec<String>,
    /// One JSON object per changed path
    #[arg(long)]
    json: bool,
}

pub fn run(global: &Global, args: Args) -> Result<Outcome> {
    let (repo, warnings) = access::open(global)?;
    let (_, old) = repo.find_archive(&args.archive1)?;
    let (_, new) = repo.find_archive(&args.archive2)?;
    let selection = Selection::from_args(&args.paths, &[], 0);
    let items = |m: &crate::repo::Manifest| {
        ItemStreamReader::new(m.item_stream.clone(), |id| repo.read_blob(id))
            .filter(|i| i.as_ref().map_or(true, |i| selection.selects(&i.path)))
    };
    let mut out = std::io::stdout().lock();
    let mut written = Ok(());
    diff(items(&old), items(&new), |d| {
        if written.is_err() {
            return;
        }
        written = if args.json {
            serde_json::to_string(&d)
                .map_err(std::io::Error::other)
                .and_then(|line| writeln!(out, "{line}"))
        } else {
            let what: Vec<String> = d.changes.iter().map(|c| c.to_string()).collect();
            writeln!(out, "{:<40} {}", what.join(" "), d.path)
        };
    })?;
    written?;
    out.flush()?;
    Ok(if warnings > 0 {
        Outcome::Warnings
    } else {
        Outcome::Success
    })
}
