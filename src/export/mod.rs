//! Export: turns an archive's items and their content back into formats other tools restore from.
//! Today that is one POSIX pax tar stream (`tar::TarWriter`) that GNU tar, and so `pct restore -`,
//! extracts with the original owners, modes, ns times, ACLs, xattrs, hard links and holes.
//!
//! This layer only encodes: it never reads the repository, never touches the filesystem and never
//! runs a command (the caller hands it items and content readers; tests run GNU tar themselves).
//! It must never rewrite an item's path, ids or xattrs beyond the encoding tar needs: id mapping
//! and hard link resolution belong to the caller.

pub mod acl_text;
mod header;
mod pax;
pub mod tar;

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests_gnu_tar;
#[cfg(test)]
mod tests_roundtrip;
#[cfg(test)]
mod tests_userns;

pub use self::tar::TarWriter;

/// Why an export stream could not be written. After any error the stream is unusable (a member
/// may be half written), so callers abort the export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("writing the export stream: {0}")]
    Write(#[source] std::io::Error),
    #[error("reading the content of {path}: {source}")]
    ReadContent {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("content of {path} ended after {got} of {expected} bytes")]
    ContentShort {
        path: String,
        expected: u64,
        got: u64,
    },
    #[error("{path}: {reason}")]
    InvalidItem { path: String, reason: String },
}
