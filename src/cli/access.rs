//! Opening the repository from the command line: where it is, and the secrets it needs.
//! A passphrase comes from `PROXBORG_PASSPHRASE`, `PROXBORG_PASSPHRASE_FILE` or
//! `PROXBORG_PASSPHRASE_COMMAND` (never from argv, so it never shows in `ps`); a `keyfile`
//! repository's key lives at `PROXBORG_KEY_FILE` or `~/.config/proxborg/keys/<repo id>`.
//! An unlocked key's KEK stays in root's kernel keyring for `PROXBORG_KEY_CACHE` or
//! `key-cache:` seconds (default 300, 0: off; `repo::key_cache`).
//!
//! A second repository (the source of `sync`, the `--chunker-params-from` of `init`) takes
//! its secrets from `PROXBORG_SRC_PASSPHRASE`, `PROXBORG_SRC_PASSPHRASE_FILE`,
//! `PROXBORG_SRC_PASSPHRASE_COMMAND` and `PROXBORG_SRC_KEY_FILE`; when none of the passphrase
//! ones is set, it uses the same passphrase as the first (the usual case).

use super::Global;
use crate::repo::backend::s3::{self, S3Backend};
use crate::repo::backend::throttle::{Limiter, Throttled};
use crate::repo::backend::{local::LocalDir, meta_cache::MetaCache, Backend};
use crate::repo::key::WrappedKey;
use crate::repo::location::Location;
use crate::repo::lock::{Lock, LockKind};
use crate::repo::trust::TrustStore;
use crate::repo::{Credentials, RepoError, RepoId, Repository};
use crate::settings::{self, Settings};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use zeroize::Zeroizing;

pub struct EnvCredentials;

impl Credentials for EnvCredentials {
    fn passphrase(&self) -> Result<Zeroizing<String>, RepoError> {
        passphrase_from_env().map_err(|e| RepoError::NeedPassphrase(format!("{e:#}")))
    }

    fn key_file(&self, repo_id: &str) -> Result<WrappedKey, RepoError> {
        read_key_file(repo_id, key_file_path)
    }

    fn key_cache(&self) -> Option<Duration> {
        key_cache_ttl()
    }
}

/// The secrets of the second repository (`PROXBORG_SRC_*`, see the module text).
pub struct SrcCredentials;

const SRC_PASSPHRASE_VARS: [&str; 3] = [
    "PROXBORG_SRC_PASSPHRASE",
    "PROXBORG_SRC_PASSPHRASE_FILE",
    "PROXBORG_SRC_PASSPHRASE_COMMAND",
];

impl Credentials for SrcCredentials {
    fn passphrase(&self) -> Result<Zeroizing<String>, RepoError> {
        if SRC_PASSPHRASE_VARS
            .iter()
            .all(|v| std::env::var_os(v).is_none())
        {
            return EnvCredentials.passphrase();
        }
        src_passphrase().map_err(|e| RepoError::NeedPassphrase(format!("{e:#}")))
    }

    fn key_file(&self, repo_id: &str) -> Result<WrappedKey, RepoError> {
        read_key_file(repo_id, |id| {
            match std::env::var_os("PROXBORG_SRC_KEY_FILE") {
                Some(p) => PathBuf::from(p),
                None => default_key_file_path(id),
            }
        })
    }

    fn key_cache(&self) -> Option<Duration> {
        key_cache_ttl()
    }
}

/// The unlock cache's lifetime (`repo::key_cache`): `PROXBORG_KEY_CACHE`, else the settings
/// file's `key-cache`, else 300 s; 0 turns it off. A value that does not parse turns it off
/// too (a cache is an optimisation, never a reason to fail).
fn key_cache_ttl() -> Option<Duration> {
    let secs = match std::env::var("PROXBORG_KEY_CACHE") {
        Ok(v) => v.trim().parse().unwrap_or(0),
        Err(_) => settings().ok().and_then(|s| s.key_cache).unwrap_or(300),
    };
    (secs > 0).then(|| Duration::from_secs(secs))
}

fn src_passphrase() -> Result<Zeroizing<String>> {
    let [pass, file, cmd] = SRC_PASSPHRASE_VARS;
    if let Ok(p) = std::env::var(pass) {
        return Ok(Zeroizing::new(p));
    }
    if let Some(path) = std::env::var_os(file) {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{file} {}", PathBuf::from(&path).display()))?;
        return Ok(first_line(text));
    }
    let command = std::env::var(cmd).with_context(|| format!("{cmd} is not UTF-8"))?;
    let out =
        crate::host::runner::run_shell(&command).with_context(|| format!("{cmd} {command:?}"))?;
    let text = String::from_utf8(out).with_context(|| format!("{cmd} printed non-UTF-8"))?;
    Ok(Zeroizing::new(strip_newline(text)))
}

fn read_key_file(
    repo_id: &str,
    path_of: impl Fn(&RepoId) -> PathBuf,
) -> Result<WrappedKey, RepoError> {
    let id = RepoId::parse(repo_id)
        .ok_or_else(|| RepoError::Invalid(format!("invalid repository id {repo_id:?}")))?;
    let path = path_of(&id);
    let text = std::fs::read(&path).map_err(|e| {
        RepoError::NeedPassphrase(format!(
            "key file {} of this keyfile repository: {e}",
            path.display()
        ))
    })?;
    serde_json::from_slice(&text)
        .map_err(|e| RepoError::Invalid(format!("key file {}: {e}", path.display())))
}

/// The settings file, read once; a broken file is an error for every command (it would
/// otherwise silently back up the wrong thing or to the wrong place).
pub fn settings() -> Result<&'static Settings> {
    static SETTINGS: OnceLock<Result<Settings, String>> = OnceLock::new();
    SETTINGS
        .get_or_init(|| {
            settings::load(&settings::default_path(), false).map_err(|errs| {
                errs.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        })
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn passphrase_from_env() -> Result<Zeroizing<String>> {
    if let Ok(p) = std::env::var("PROXBORG_PASSPHRASE") {
        return Ok(Zeroizing::new(p));
    }
    if let Some(file) = std::env::var_os("PROXBORG_PASSPHRASE_FILE") {
        let text = std::fs::read_to_string(&file).with_context(|| {
            format!(
                "PROXBORG_PASSPHRASE_FILE {}",
                PathBuf::from(&file).display()
            )
        })?;
        return Ok(first_line(text));
    }
    let conf = settings()?;
    if let Some(file) = &conf.passphrase_file {
        let text = std::fs::read_to_string(file).with_context(|| {
            format!(
                "passphrase-file {} (from the settings file)",
                file.display()
            )
        })?;
        return Ok(first_line(text));
    }
    let cmd = std::env::var("PROXBORG_PASSPHRASE_COMMAND")
        .ok()
        .or_else(|| conf.passphrase_command.clone());
    if let Some(cmd) = cmd {
        let out = crate::host::runner::run_shell(&cmd)
            .with_context(|| format!("PROXBORG_PASSPHRASE_COMMAND {cmd:?}"))?;
        let text =
            String::from_utf8(out).context("PROXBORG_PASSPHRASE_COMMAND printed non-UTF-8")?;
        return Ok(Zeroizing::new(strip_newline(text)));
    }
    bail!("set PROXBORG_PASSPHRASE, PROXBORG_PASSPHRASE_FILE or PROXBORG_PASSPHRASE_COMMAND, or passphrase-file in {}", settings::default_path().display())
}

/// A passphrase file's first line, without its line end (as the README says).
fn first_line(text: String) -> Zeroizing<String> {
    let text = Zeroizing::new(text);
    let line = text.split('\n').next().unwrap_or_default();
    Zeroizing::new(line.strip_suffix('\r').unwrap_or(line).to_string())
}

fn strip_newline(mut s: String) -> String {
    while s.ends_with('\n') || s.ends_with('\r') {
        s.pop();
    }
    s
}

pub fn key_file_path(repo_id: &RepoId) -> PathBuf {
    if let Some(p) = std::env::var_os("PROXBORG_KEY_FILE") {
        return PathBuf::from(p);
    }
    default_key_file_path(repo_id)
}

fn default_key_file_path(repo_id: &RepoId) -> PathBuf {
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home)
        .join(".config/proxborg/keys")
        .join(repo_id.as_str())
}

pub fn repo_location(global: &Global) -> Result<Location> {
    match (&global.repo, &settings()?.repo) {
        (Some(p), _) | (None, Some(p)) => Ok(crate::repo::location::parse(p)?),
        (None, None) => bail!(
            "no repository given: use --repo DIR, ssh://host/path or s3:https://host/bucket, set PROXBORG_REPO, or set repo in {}",
            settings::default_path().display()
        ),
    }
}

pub fn lock_wait(global: &Global) -> Result<Duration> {
    Ok(Duration::from_secs(
        global.lock_wait.or(settings()?.lock_wait).unwrap_or(120),
    ))
}

/// `--bwlimit` (or `bwlimit` in the settings file), in KiB/s.
pub fn bwlimit(global: &Global) -> Result<Option<u64>> {
    Ok(global.bwlimit.or(settings()?.bwlimit).filter(|&n| n > 0))
}

/// The backend for a location; with `--bwlimit`, writes through it are held to that rate
/// (`backend::throttle`).
pub fn backend_at(global: &Global, location: &Location) -> Result<Arc<dyn Backend>> {
    let backend = raw_backend(location)?;
    Ok(match bwlimit(global)? {
        Some(kib) => Throttled::wrap(backend, Limiter::new(kib), false),
        None => backend,
    })
}

/// The backend for a location: a directory, a connection to `proxborg serve` over ssh, or an
/// S3 bucket. Remote ones keep their index and archive files in the local cache
/// (`backend::meta_cache`), under one directory per location.
pub fn raw_backend(location: &Location) -> Result<Arc<dyn Backend>> {
    let remote: Arc<dyn Backend> = match location {
        Location::Local(path) => return Ok(Arc::new(LocalDir::new(path))),
        Location::Ssh(url) => Arc::new(
            crate::remote::client::SshBackend::connect(url.clone())
                .with_context(|| format!("repository {location}"))?,
        ),
        Location::S3(url) => Arc::new(s3_backend(url)?),
    };
    let name = blake3::hash(remote.canonical_location().as_bytes()).to_hex();
    let dir = crate::files_cache::cache_base()
        .join("remote")
        .join(&name.as_str()[..32]);
    Ok(Arc::new(MetaCache::new(remote, dir)))
}

/// An S3 backend with its access key: `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, or the
/// settings file's `s3-credentials-file`; the region from `AWS_REGION`, `AWS_DEFAULT_REGION`
/// or `s3-region` (default `us-east-1`). Never from argv.
pub fn s3_backend(url: &crate::repo::location::S3Url) -> Result<S3Backend> {
    let conf = settings()?;
    let (key_id, secret) = match (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Ok(k), Ok(s)) if !k.is_empty() => (k, Zeroizing::new(s)),
        _ => match &conf.s3_credentials_file {
            Some(file) => {
                let text = Zeroizing::new(std::fs::read_to_string(file).with_context(|| {
                    format!("s3-credentials-file {} (from the settings file)", file.display())
                })?);
                s3::parse_credentials(&text)
                    .map_err(|e| anyhow::anyhow!("s3-credentials-file {}: {e}", file.display()))?
            }
            None => bail!(
                "repository {url}: no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or s3-credentials-file in {}",
                settings::default_path().display()
            ),
        },
    };
    let region = std::env::var("AWS_REGION")
        .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
        .ok()
        .filter(|r| !r.is_empty())
        .or_else(|| conf.s3_region.clone())
        .unwrap_or_else(|| "us-east-1".to_string());
    Ok(S3Backend::new(
        url.clone(),
        s3::S3Access {
            key_id,
            secret,
            region,
        },
    )?)
}

/// A local repository must be an existing directory (a backend would create it).
pub fn require_existing(location: &Location) -> Result<()> {
    if let Location::Local(path) = location {
        if !path.is_dir() {
            bail!("repository {}: no such directory", path.display());
        }
    }
    Ok(())
}

/// Where the repository is and its backend; a local one must be an existing directory.
fn existing(global: &Global) -> Result<(Location, Arc<dyn Backend>)> {
    let location = repo_location(global)?;
    require_existing(&location)?;
    let backend = backend_at(global, &location)?;
    Ok((location, backend))
}

/// Opens the repository; damaged index files are reported as warnings (returns their count).
pub fn open(global: &Global) -> Result<(Repository, u64)> {
    let (location, backend) = existing(global)?;
    load_index(unlock(backend, &location, &EnvCredentials)?, &location)
}

/// Opens a second repository (sync's source, init's `--chunker-params-from`) with the
/// `PROXBORG_SRC_*` secrets, read only: no lock, nothing written.
pub fn open_other(backend: Arc<dyn Backend>, location: &Location) -> Result<(Repository, u64)> {
    load_index(unlock(backend, location, &SrcCredentials)?, location)
}

/// Verifies the repository (nothing is written to one that is refused), takes a shared lock
/// (see `repo::lock`), then loads the index, so it stays valid for as long as the lock is held.
pub fn open_locked(global: &Global, command: &str) -> Result<(Repository, Lock, u64)> {
    let (location, backend) = existing(global)?;
    open_locked_at(global, backend, &location, command)
}

/// `open_locked` for a command that writes a new archive next (create, backup, the hook):
/// the archive listing its name check needs is taken together with the index's.
pub fn open_for_backup(global: &Global, command: &str) -> Result<(Repository, Lock, u64)> {
    let (location, backend) = existing(global)?;
    open_locked_listing(global, backend, &location, command, true)
}

/// `open_locked` for a backend the caller made.
pub fn open_locked_at(
    global: &Global,
    backend: Arc<dyn Backend>,
    location: &Location,
    command: &str,
) -> Result<(Repository, Lock, u64)> {
    open_locked_listing(global, backend, location, command, false)
}

fn open_locked_listing(
    global: &Global,
    backend: Arc<dyn Backend>,
    location: &Location,
    command: &str,
    list_archives: bool,
) -> Result<(Repository, Lock, u64)> {
    let repo = unlock(backend, location, &EnvCredentials)?;
    let lock = Lock::acquire(
        repo.backend().clone(),
        LockKind::Shared,
        command,
        lock_wait(global)?,
        &mut |m| super::warn(m),
    )
    .with_context(|| format!("repository {location}"))?;
    let (repo, damaged) = load_index_listing(repo, location, list_archives)?;
    Ok((repo, lock, damaged))
}

/// Opens and verifies against this client's security record (`repo::trust`).
pub fn unlock(
    backend: Arc<dyn Backend>,
    location: &Location,
    creds: &dyn Credentials,
) -> Result<Repository> {
    Repository::unlock(backend, creds, Some(&TrustStore::from_env()))
        .with_context(|| format!("repository {location}"))
}

pub fn load_index(repo: Repository, location: &Location) -> Result<(Repository, u64)> {
    load_index_listing(repo, location, false)
}

fn load_index_listing(
    mut repo: Repository,
    location: &Location,
    list_archives: bool,
) -> Result<(Repository, u64)> {
    let loaded = if list_archives {
        repo.reload_index_listing_archives()
    } else {
        repo.reload_index()
    };
    loaded.with_context(|| format!("repository {location}"))?;
    for d in repo.damaged_indexes() {
        super::warn(format!("skipping damaged index file: {d}"));
    }
    let damaged = repo.damaged_indexes().len() as u64;
    Ok((repo, damaged))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_passphrase_file_gives_its_first_line() {
        for text in ["secret", "secret\n", "secret\r\n", "secret\nsecond line\n"] {
            assert_eq!(
                super::first_line(text.into()).as_str(),
                "secret",
                "{text:?}"
            );
        }
        assert_eq!(super::first_line("\nsecret".into()).as_str(), "");
    }
}
