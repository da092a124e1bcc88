//! Pure ZFS vocabulary: validated dataset and snapshot names, parsers for the text the `zfs`
//! CLI prints (`zfs list -H -o name,mountpoint,type`, `zfs get -H -p -o name,property,value`),
//! argv builders for the few commands proxborg runs, the classification of `zfs` error
//! output, and the decoder of a zvol's `zfs send` stream (`send`). Works for OpenZFS 2.x
//! (PVE 8/9) and zfs-fuse 0.7 (tests). Nothing here runs a command: `host` does, with the
//! argv built here.

pub mod argv;
pub mod cleanup;
pub mod names;
pub mod parse;
pub mod send;
pub mod zvol;

pub use argv::{
    clone_argv, destroy_argv, get_argv, list_argv, set_user_property, snapshot_argv,
    snapshot_with_props_argv, Destroyable, UserProperty, CLONE_PREFIX, RUN_PROPERTY,
    SNAPSHOT_PREFIX,
};
pub use cleanup::{leftovers, leftovers_argv, Leftover};
pub use names::{DatasetName, SnapshotName};
pub use parse::{
    parse_get, parse_list, property, DatasetType, Mountpoint, PropertyRow, ZfsListEntry,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZfsError {
    #[error("invalid ZFS name '{name}': {reason}")]
    InvalidName { name: String, reason: String },
    #[error("invalid user property '{name}': {reason}")]
    InvalidProperty { name: String, reason: String },
    #[error("unexpected `{what}` output, line {line}: {msg}: '{text}'")]
    Parse {
        what: &'static str,
        line: usize,
        text: String,
        msg: String,
    },
    #[error("snapshots in one atomic call must share a pool: '{first}' and '{other}'")]
    CrossPool { first: String, other: String },
    #[error("no snapshot names given")]
    NothingToSnapshot,
    #[error("refusing to destroy '{name}': not made by proxborg (needs the `{SNAPSHOT_PREFIX}` / `{CLONE_PREFIX}` prefix)")]
    NotProxborgOwned { name: String },
    /// zfs-fuse 0.7 takes one snapshot per `zfs snapshot` call; it answers several with
    /// "too many arguments". The caller may fall back to one call per dataset (not atomic).
    #[error("this zfs cannot take several snapshots in one call (zfs-fuse): {stderr}")]
    MultiSnapshotUnsupported { stderr: String },
    #[error("dataset does not exist: {stderr}")]
    DatasetMissing { stderr: String },
    #[error("dataset already exists: {stderr}")]
    AlreadyExists { stderr: String },
    #[error("dataset is busy: {stderr}")]
    Busy { stderr: String },
    #[error("zfs failed: {stderr}")]
    Other { stderr: String },
}

impl ZfsError {
    /// Reads the stderr of a failed `zfs` call (both implementations word these the same).
    pub fn from_stderr(stderr: &str) -> ZfsError {
        let s = stderr.trim().to_string();
        let first = s.lines().next().unwrap_or("");
        if first.trim() == "too many arguments" {
            ZfsError::MultiSnapshotUnsupported { stderr: s }
        } else if s.contains("dataset does not exist") {
            ZfsError::DatasetMissing { stderr: s }
        } else if s.contains("dataset already exists") {
            ZfsError::AlreadyExists { stderr: s }
        } else if s.contains("dataset is busy") || s.contains("target is busy") {
            ZfsError::Busy { stderr: s }
        } else {
            ZfsError::Other { stderr: s }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let p = format!("{}/tests/fixtures/zfs/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    #[test]
    fn classifies_captured_zfs_fuse_errors() {
        assert!(matches!(
            ZfsError::from_stderr(&fixture("zfs-fuse-snapshot-multi.stderr")),
            ZfsError::MultiSnapshotUnsupported { .. }
        ));
        assert!(matches!(
            ZfsError::from_stderr(&fixture("zfs-fuse-list-missing.stderr")),
            ZfsError::DatasetMissing { .. }
        ));
        assert!(matches!(
            ZfsError::from_stderr(&fixture("zfs-fuse-snapshot-exists.stderr")),
            ZfsError::AlreadyExists { .. }
        ));
        assert!(matches!(
            ZfsError::from_stderr(&fixture("openzfs-destroy-busy.stderr")),
            ZfsError::Busy { .. }
        ));
        let e = ZfsError::from_stderr("cannot mount 'x': permission denied\n");
        assert_eq!(
            e,
            ZfsError::Other {
                stderr: "cannot mount 'x': permission denied".into()
            }
        );
    }
}
