//! Dataset and snapshot names, validated as OpenZFS's `zfs_namecheck.c` does: components of
//! `[A-Za-z0-9_.: -]`, none empty, `.` or `..`; a pool name starting with a letter and not a
//! reserved vdev word; at most 255 bytes in all. `%` (internal names) and bookmarks (`#`) are
//! refused. A validated name can go into argv without further checks.

use super::ZfsError;
use serde::Serialize;

const MAX_NAME: usize = 255;

fn bad(name: &str, reason: impl Into<String>) -> ZfsError {
    ZfsError::InvalidName {
        name: name.to_string(),
        reason: reason.into(),
    }
}

fn check_component(full: &str, c: &str) -> Result<(), ZfsError> {
    if c.is_empty() {
        return Err(bad(full, "empty component"));
    }
    if c == "." || c == ".." {
        return Err(bad(full, format!("component '{c}' is reserved")));
    }
    if let Some(ch) = c
        .chars()
        .find(|ch| !(ch.is_ascii_alphanumeric() || "_.: -".contains(*ch)))
    {
        return Err(bad(full, format!("invalid character '{ch}'")));
    }
    Ok(())
}

fn check_pool(full: &str, pool: &str) -> Result<(), ZfsError> {
    if !pool.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(bad(full, "pool name must begin with a letter"));
    }
    let reserved = ["mirror", "raidz", "draid", "spare", "log"]
        .iter()
        .any(|r| pool.starts_with(r))
        || (pool.len() >= 2 && pool.starts_with('c') && pool.as_bytes()[1].is_ascii_digit());
    if reserved {
        return Err(bad(full, "pool name is reserved"));
    }
    Ok(())
}

/// A filesystem or volume name such as `rpool/data/subvol-100-disk-0`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct DatasetName(String);

impl DatasetName {
    pub fn new(s: &str) -> Result<DatasetName, ZfsError> {
        if s.len() > MAX_NAME {
            return Err(bad(s, "longer than 255 bytes"));
        }
        if s.contains('@') || s.contains('#') {
            return Err(bad(s, "a dataset name cannot contain '@' or '#'"));
        }
        let mut parts = s.split('/');
        let pool = parts.next().unwrap_or("");
        check_component(s, pool)?;
        check_pool(s, pool)?;
        for c in parts {
            check_component(s, c)?;
        }
        Ok(DatasetName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn pool(&self) -> &str {
        self.0.split('/').next().unwrap_or(&self.0)
    }

    /// The last component (`subvol-100-disk-0`).
    pub fn leaf(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    pub fn parent(&self) -> Option<DatasetName> {
        self.0
            .rsplit_once('/')
            .map(|(p, _)| DatasetName(p.to_string()))
    }

    pub fn child(&self, component: &str) -> Result<DatasetName, ZfsError> {
        DatasetName::new(&format!("{}/{component}", self.0))
    }

    pub fn snapshot(&self, snap: &str) -> Result<SnapshotName, ZfsError> {
        SnapshotName::new(&format!("{}@{snap}", self.0))
    }
}

impl std::fmt::Display for DatasetName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `dataset@snap`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct SnapshotName(String);

impl SnapshotName {
    pub fn new(s: &str) -> Result<SnapshotName, ZfsError> {
        if s.len() > MAX_NAME {
            return Err(bad(s, "longer than 255 bytes"));
        }
        let (ds, snap) = s
            .split_once('@')
            .ok_or_else(|| bad(s, "a snapshot name needs '@'"))?;
        DatasetName::new(ds).map_err(|e| match e {
            ZfsError::InvalidName { reason, .. } => bad(s, reason),
            e => e,
        })?;
        if snap.contains('@') || snap.contains('/') || snap.contains('#') {
            return Err(bad(s, "the snapshot part cannot contain '@', '/' or '#'"));
        }
        check_component(s, snap)?;
        Ok(SnapshotName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn dataset(&self) -> DatasetName {
        DatasetName(
            self.0
                .split_once('@')
                .map(|(d, _)| d)
                .unwrap_or(&self.0)
                .to_string(),
        )
    }

    /// The part after `@`.
    pub fn snap(&self) -> &str {
        self.0.split_once('@').map(|(_, s)| s).unwrap_or("")
    }
}

/// The read-only clone a run makes of `snap` when the snapshot is not visible under
/// `.zfs/snapshot`: a sibling of its dataset, `proxborg-clone-<leaf>-<snapshot time>`.
pub fn clone_of(snap: &SnapshotName) -> Result<DatasetName, ZfsError> {
    use super::argv::{CLONE_PREFIX, SNAPSHOT_PREFIX};
    let ds = snap.dataset();
    let parent = ds.parent().unwrap_or_else(|| ds.clone());
    let name = format!(
        "{CLONE_PREFIX}{}-{}",
        ds.leaf(),
        snap.snap().trim_start_matches(SNAPSHOT_PREFIX)
    );
    parent.child(&name)
}

impl std::fmt::Display for SnapshotName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_clone_is_a_sibling_named_after_its_snapshot() {
        let s =
            SnapshotName::new("rpool/data/subvol-100-disk-0@proxborg-20261206T120000Z").unwrap();
        assert_eq!(
            clone_of(&s).unwrap().as_str(),
            "rpool/data/proxborg-clone-subvol-100-disk-0-20261206T120000Z"
        );
    }

    #[test]
    fn accepts_what_zfs_accepts() {
        for ok in [
            "rpool",
            "rpool/data/subvol-100-disk-0",
            "tank/a b",
            "tank/ok:.-_",
            "p/x.y",
        ] {
            DatasetName::new(ok).unwrap();
        }
        let s =
            SnapshotName::new("rpool/data/subvol-100-disk-0@proxborg-20261123T071900Z").unwrap();
        assert_eq!(s.dataset().as_str(), "rpool/data/subvol-100-disk-0");
        assert_eq!(s.snap(), "proxborg-20261123T071900Z");
        assert_eq!(s.dataset().pool(), "rpool");
        assert_eq!(s.dataset().leaf(), "subvol-100-disk-0");
        assert_eq!(s.dataset().parent().unwrap().as_str(), "rpool/data");
    }

    #[test]
    fn rejects_what_zfs_rejects() {
        let cases = [
            ("", "empty component"),
            ("rpool/", "empty component"),
            ("rpool//x", "empty component"),
            ("rpool/x%y", "invalid character '%'"),
            ("rpool/../x", "reserved"),
            ("1pool/x", "begin with a letter"),
            ("mirror/x", "reserved"),
            ("c0t0d0/x", "reserved"),
            ("rpool/x@s", "'@'"),
            ("rpool/é", "invalid character"),
        ];
        for (name, why) in cases {
            let e = DatasetName::new(name).unwrap_err().to_string();
            assert!(e.contains(why), "{name}: {e}");
        }
        assert!(DatasetName::new(&format!("p/{}", "a".repeat(254))).is_err());
        for bad in [
            "rpool",
            "rpool@",
            "rpool@a@b",
            "rpool@a/b",
            "rpool/x%@s",
            "rpool@s%",
        ] {
            assert!(SnapshotName::new(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn valid_names_round_trip(pool in "[abe-kn-qt-z][a-z0-9_.:-]{0,10}",
                                  comps in proptest::collection::vec("[A-Za-z0-9_:-][A-Za-z0-9_.: -]{0,12}", 0..4),
                                  snap in "[A-Za-z0-9_:-]{1,20}") {
            let mut name = pool.clone();
            for c in &comps { name.push('/'); name.push_str(c); }
            let ds = DatasetName::new(&name).unwrap();
            prop_assert_eq!(ds.as_str(), name.as_str());
            prop_assert_eq!(ds.pool(), pool.as_str());
            let s = ds.snapshot(&snap).unwrap();
            prop_assert_eq!(s.dataset(), ds);
            prop_assert_eq!(s.snap(), snap.as_str());
        }

        #[test]
        fn names_with_forbidden_bytes_are_refused(prefix in "[a-z]{1,5}/[a-z]{1,5}", bad in "[%#@\\t\\n/*?\\\\\u{80}-\u{ff}]") {
            let name = format!("{prefix}{bad}");
            if bad != "/" {
                prop_assert!(DatasetName::new(&name).is_err());
            } else {
                prop_assert!(DatasetName::new(&name).is_err(), "trailing slash");
            }
        }
    }
}
