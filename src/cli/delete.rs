//! `proxborg delete ARCHIVE...`: removes archive files only; `compact` frees their space.
//! A protected archive among them is refused before anything is deleted.

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
    let list = repo.list_archives()?;
    // Resolve every name before deleting anything, so a typo or a protected archive deletes
    // nothing.
    let mut chosen = Vec::new();
    for name in &args.archives {
        if let Some(msg) = list.rolled_back.get(name) {
            bail!("{msg}; nothing deleted");
        }
        match list.archives.iter().find(|(_, m)| &m.name == name) {
            Some((_, m)) if m.protected => bail!(
                "archive {name:?} is protected; nothing deleted (proxborg archive unprotect {name:?} first)"
            ),
            Some(entry) => chosen.push(entry),
            None => bail!("archive {name:?} not found; nothing deleted"),
        }
    }
    if repo.append_only() {
        bail!(crate::repo::RepoError::AppendOnly("delete"));
    }
    for entry in chosen {
        repo.delete_archive(entry, &list)?;
        eprintln!("Deleted archive {}", entry.1.name);
    }
    Ok(Outcome::Success)
}
