//! `proxborg delete ARCHIVE...`: removes archive files only; `compact` frees their space.

use super::{access, Global, Outcome};
use anyhow::{bail, Result};

#[derive(clap::Args)]
pub struct Args {
    /// Archives to delete
    #[arg(required = true)]
    archives: Vec<String>,
}

pub fn run(global: &Global, args: Args) -> Result<Outcome> {
    let (repo, _lock, _) = access::open_locked(global, "delete")?;
    let (archives, _) = repo.archives()?;
    // Resolve every name before deleting anything, so a typo deletes nothing.
    let mut ids = Vec::new();
    for name in &args.archives {
        match archives.iter().find(|(_, m)| &m.name == name) {
            Some((id, _)) => ids.push((name, *id)),
            None => bail!("archive {name:?} not found; nothing deleted"),
        }
    }
    for (name, id) in ids {
        repo.delete_archive(&id)?;
        eprintln!("Deleted archive {name}");
    }
    Ok(Outcome::Success)
}
