//! `proxborg init`

use super::{access, Global, Outcome};
use crate::repo::location::Location;
use crate::repo::{Compression, EncryptionMode, InitOptions, Repository};
use anyhow::{Context, Result};

#[derive(clap::Args)]
pub struct Args {
    /// none, repokey (key in the repository, locked by the passphrase) or keyfile (key kept
    /// on this machine under ~/.config/proxborg/keys/, also locked by the passphrase)
    #[arg(long, default_value = "repokey")]
    encryption: EncryptionMode,
    /// Default compression for new blobs: none, zstd,N or auto,zstd,N
    #[arg(long, default_value = "zstd,3")]
    compression: Compression,
    /// Refuse delete, prune and compact in this repository
    #[arg(long)]
    append_only: bool,
    /// Give the new repository the same chunk ids as REPO (its chunker parameters, id key
    /// and chunker seed; a fresh encryption key), so `proxborg sync` between them copies
    /// chunks by id. REPO's passphrase: PROXBORG_SRC_PASSPHRASE(_FILE|_COMMAND), else the same
    #[arg(long, value_name = "REPO")]
    chunker_params_from: Option<std::path::PathBuf>,
}

pub fn run(global: &Global, args: Args) -> Result<Outcome> {
    let location = access::repo_location(global)?;
    let same_ids_as = match &args.chunker_params_from {
        Some(other) => {
            let other = crate::repo::location::parse(other)?;
            access::require_existing(&other)?;
            let repo = access::unlock(
                access::raw_backend(&other)?,
                &other,
                &access::SrcCredentials,
            )?;
            Some(repo.id_scheme())
        }
        None => None,
    };
    match &location {
        Location::Local(path) => std::fs::create_dir_all(path)
            .with_context(|| format!("creating repository directory {}", path.display()))?,
        Location::S3(url) => {
            if access::s3_backend(url)?
                .create_bucket_if_missing()
                .with_context(|| format!("repository {location}"))?
            {
                eprintln!("Created bucket {}", url.bucket);
            }
        }
        Location::Ssh(_) => {}
    }
    let (repo, keyfile) = Repository::init(
        access::backend_at(global, &location)?,
        InitOptions {
            encryption: args.encryption,
            compression: args.compression,
            append_only: args.append_only,
            same_ids_as,
        },
        &access::EnvCredentials,
    )
    .with_context(|| format!("repository {location}"))?;
    repo.remember_in(&crate::repo::trust::TrustStore::from_env())
        .context("recording the new repository in this client's security record")?;
    if let Some(wrapped) = keyfile {
        let key_path = access::key_file_path(&repo.config().id);
        write_key_file(&key_path, &wrapped)?;
        eprintln!(
            "Key file written to {}. Back it up: without it the repository cannot be read.",
            key_path.display()
        );
    }
    eprintln!(
        "Initialised repository {} ({} encryption, compression {})",
        location, args.encryption, args.compression
    );
    Ok(Outcome::Success)
}

fn write_key_file(path: &std::path::Path, key: &crate::repo::key::WrappedKey) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("key file {}", path.display()))?;
    f.write_all(&serde_json::to_vec_pretty(key)?)?;
    f.sync_all()?;
    Ok(())
}
