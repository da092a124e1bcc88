//! Repository errors. Callers must be able to tell corruption (a verified read failed) from
//! absence and from plain I/O trouble, so each has its own variant.

use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RepoError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: not found in the repository")]
    NotFound(String),
    #[error("{0} already exists in the repository")]
    Exists(String),
    #[error("corrupt {what}: {why}")]
    Corrupt { what: String, why: String },
    #[error("{0} is not a proxborg repository (no config file)")]
    NotARepository(PathBuf),
    #[error("repository format {found} is newer than this proxborg understands (up to {supported}); upgrade proxborg")]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("wrong passphrase (the repository key could not be unlocked)")]
    WrongPassphrase,
    #[error("the repository is encrypted: {0}")]
    NeedPassphrase(String),
    #[error("repository is append-only: {0} refused")]
    AppendOnly(&'static str),
    #[error("repository is locked: {0}")]
    Locked(String),
    #[error("{0}")]
    Invalid(String),
    /// An archive protected by `archive protect`: prune and delete leave it alone.
    #[error("archive {0:?} is protected (proxborg archive unprotect {0:?} first)")]
    Protected(String),
    /// The repository differs from what the client's security record remembers (`trust`).
    #[error("{0}")]
    Changed(String),
    #[error("background worker failed: {0}")]
    Worker(String),
}

impl RepoError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RepoError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn corrupt(what: impl Into<String>, why: impl Into<String>) -> Self {
        RepoError::Corrupt {
            what: what.into(),
            why: why.into(),
        }
    }

    pub fn is_corruption(&self) -> bool {
        matches!(self, RepoError::Corrupt { .. })
    }
}

pub type Result<T, E = RepoError> = std::result::Result<T, E>;
