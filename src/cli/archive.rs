//! `proxborg archive note|protect|unprotect ARCHIVE`: an archive's notes and protection.
//! Both live in the archive's sealed manifest (`repo::archive`), which is rewritten under the
//! shared repository lock like other writers; prune and delete refuse protected archives.

use super::{access, Global, Outcome};
use crate::repo::{ArchiveEntry, Manifest};
use anyhow::{Context, Result};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Set an archive's notes (UTF-8, up to 4 KiB, newlines allowed; '' clears them)
    Note(NoteArgs),
    /// Protect an archive: prune keeps it and delete refuses it
    Protect(FlagArgs),
    /// Remove an archive's protection
    Unprotect(FlagArgs),
}

#[derive(clap::Args)]
pub struct NoteArgs {
    archive: String,
    /// The notes; '' clears them, '-' reads them from stdin
    text: String,
    /// Print the archive's name, id, notes and protection as JSON
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct FlagArgs {
    archive: String,
    /// Print the archive's name, id, notes and protection as JSON
    #[arg(long)]
    json: bool,
}

/// What a command does to the manifest.
type Change = Box<dyn FnOnce(&mut Manifest)>;

pub fn run(global: &Global, command: Command) -> Result<Outcome> {
    let (archive, json, change): (String, bool, Change) = match command {
        Command::Note(a) => {
            let text = if a.text == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading the notes from stdin")?
            } else {
                a.text
            };
            // A trailing newline (from `echo ... |` or a file) is not part of the notes.
            let text = text.trim_end_matches(['\n', '\r']).to_string();
            crate::repo::archive::validate_notes(&text)?;
            (a.archive, a.json, Box::new(move |m| m.notes = text))
        }
        Command::Protect(a) => (a.archive, a.json, Box::new(|m| m.protected = true)),
        Command::Unprotect(a) => (a.archive, a.json, Box::new(|m| m.protected = false)),
    };
    let (repo, _lock, warnings) = access::open_locked(global, "archive")?;
    let entry = repo.update_archive(&archive, change)?;
    print(&entry, json)?;
    Ok(if warnings > 0 {
        Outcome::Warnings
    } else {
        Outcome::Success
    })
}

fn print((id, m): &ArchiveEntry, json: bool) -> Result<()> {
    if json {
        let v = serde_json::json!({ "name": m.name, "id": id.to_hex(), "notes": m.notes,
            "protected": m.protected, "revision": m.revision });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        eprintln!(
            "Archive {}: {}{}",
            m.name,
            if m.protected {
                "protected"
            } else {
                "not protected"
            },
            if m.notes.is_empty() {
                ", no notes".to_string()
            } else {
                format!(", notes: {}", m.notes.lines().next().unwrap_or_default())
            }
        );
    }
    Ok(())
}
