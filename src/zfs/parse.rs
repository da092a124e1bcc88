//! Parsers for `zfs list -H -o name,mountpoint,type` and `zfs get -H -p -o
//! name,property,value` output: one record per line, fields separated by a single tab (`-H`),
//! `-` for "not applicable / unset". Both zfs-fuse 0.7 and OpenZFS 2.x print exactly this; the
//! golden tests run on output captured from each.

use super::names::{DatasetName, SnapshotName};
use super::ZfsError;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetType {
    Filesystem,
    Volume,
    Snapshot,
    Bookmark,
}

/// The `mountpoint` column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "path", rename_all = "lowercase")]
pub enum Mountpoint {
    Path(PathBuf),
    /// `none`: never mounted.
    None,
    /// `legacy`: mounted through fstab, not by zfs.
    Legacy,
    /// `-`: snapshots and volumes have no mountpoint.
    NotApplicable,
}

impl Mountpoint {
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            Mountpoint::Path(p) => Some(p),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ZfsListEntry {
    /// The full name; for snapshots `dataset@snap`.
    pub name: String,
    pub mountpoint: Mountpoint,
    pub kind: DatasetType,
}

impl ZfsListEntry {
    pub fn dataset(&self) -> Option<DatasetName> {
        DatasetName::new(&self.name).ok()
    }

    pub fn snapshot(&self) -> Option<SnapshotName> {
        SnapshotName::new(&self.name).ok()
    }
}

pub(super) fn perr(
    what: &'static str,
    line: usize,
    text: &str,
    msg: impl Into<String>,
) -> ZfsError {
    ZfsError::Parse {
        what,
        line,
        text: text.to_string(),
        msg: msg.into(),
    }
}

/// Parses `zfs list -H -o name,mountpoint,type [-t ...]`.
pub fn parse_list(text: &str) -> Result<Vec<ZfsListEntry>, ZfsError> {
    const WHAT: &str = "zfs list -H -o name,mountpoint,type";
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.is_empty() {
            continue;
        }
        let f: Vec<&str> = l.split('\t').collect();
        let [name, mp, kind] = f.as_slice() else {
            return Err(perr(
                WHAT,
                i + 1,
                l,
                format!("expected 3 tab-separated fields, got {}", f.len()),
            ));
        };
        let kind = match *kind {
            "filesystem" => DatasetType::Filesystem,
            "volume" => DatasetType::Volume,
            "snapshot" => DatasetType::Snapshot,
            "bookmark" => DatasetType::Bookmark,
            o => return Err(perr(WHAT, i + 1, l, format!("unknown type '{o}'"))),
        };
        let valid = match kind {
            DatasetType::Snapshot => SnapshotName::new(name).map(|_| ()),
            DatasetType::Bookmark => Ok(()),
            _ => DatasetName::new(name).map(|_| ()),
        };
        valid.map_err(|e| perr(WHAT, i + 1, l, e.to_string()))?;
        let mountpoint = match *mp {
            "-" => Mountpoint::NotApplicable,
            "none" => Mountpoint::None,
            "legacy" => Mountpoint::Legacy,
            p if p.starts_with('/') => Mountpoint::Path(PathBuf::from(p)),
            p => {
                return Err(perr(
                    WHAT,
                    i + 1,
                    l,
                    format!("mountpoint '{p}' is not absolute"),
                ))
            }
        };
        out.push(ZfsListEntry {
            name: name.to_string(),
            mountpoint,
            kind,
        });
    }
    Ok(out)
}

/// One line of `zfs get -H -p -o name,property,value`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PropertyRow {
    pub name: String,
    pub property: String,
    /// `None` for `-` (unset user property, or not applicable to this type).
    pub value: Option<String>,
}

/// Parses `zfs get -H -p -o name,property,value ...`. A value may itself contain tabs only in
/// user properties; everything after the second tab is the value.
pub fn parse_get(text: &str) -> Result<Vec<PropertyRow>, ZfsError> {
    const WHAT: &str = "zfs get -H -p -o name,property,value";
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.is_empty() {
            continue;
        }
        let mut f = l.splitn(3, '\t');
        let (Some(name), Some(property), Some(value)) = (f.next(), f.next(), f.next()) else {
            return Err(perr(WHAT, i + 1, l, "expected 3 tab-separated fields"));
        };
        if name.is_empty() || property.is_empty() {
            return Err(perr(WHAT, i + 1, l, "empty name or property"));
        }
        out.push(PropertyRow {
            name: name.to_string(),
            property: property.to_string(),
            value: (value != "-").then(|| value.to_string()),
        });
    }
    Ok(out)
}

/// One line of `zfs get -H -p -o name,property,value,source`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourcedRow {
    pub name: String,
    pub property: String,
    pub value: Option<String>,
    /// `local`, `default`, `inherited from <ds>`, `temporary`, `received`; `None` for `-`.
    pub source: Option<String>,
}

impl SourcedRow {
    /// Set on this very dataset or snapshot, not inherited from a parent.
    pub fn is_local(&self) -> bool {
        self.source.as_deref() == Some("local")
    }
}

/// Parses `zfs get -H -p -o name,property,value,source ...`. The source never contains a tab,
/// so it is split off the end and the value keeps any tab it has.
pub fn parse_get_sourced(text: &str) -> Result<Vec<SourcedRow>, ZfsError> {
    const WHAT: &str = "zfs get -H -p -o name,property,value,source";
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.is_empty() {
            continue;
        }
        let mut f = l.splitn(3, '\t');
        let (Some(name), Some(property), Some(rest)) = (f.next(), f.next(), f.next()) else {
            return Err(perr(WHAT, i + 1, l, "expected 4 tab-separated fields"));
        };
        let Some((value, source)) = rest.rsplit_once('\t') else {
            return Err(perr(WHAT, i + 1, l, "expected 4 tab-separated fields"));
        };
        if name.is_empty() || property.is_empty() {
            return Err(perr(WHAT, i + 1, l, "empty name or property"));
        }
        out.push(SourcedRow {
            name: name.to_string(),
            property: property.to_string(),
            value: (value != "-").then(|| value.to_string()),
            source: (source != "-").then(|| source.to_string()),
        });
    }
    Ok(out)
}

/// The value of `property` for `name` in parsed `zfs get` rows.
pub fn property<'a>(rows: &'a [PropertyRow], name: &str, property: &str) -> Option<&'a str> {
    rows.iter()
        .find(|r| r.name == name && r.property == property)
        .and_then(|r| r.value.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let p = format!("{}/tests/fixtures/zfs/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    #[test]
    fn zfs_fuse_list_golden() {
        let l = parse_list(&fixture("zfs-fuse-list-all.txt")).unwrap();
        assert_eq!(l.len(), 7);
        assert_eq!(
            l[0],
            ZfsListEntry {
                name: "pvefix".into(),
                mountpoint: Mountpoint::Path("/tmp/pvefix-mnt".into()),
                kind: DatasetType::Filesystem
            }
        );
        assert_eq!(
            l[5].mountpoint.path(),
            Some(std::path::Path::new("/tmp/pvefix-mnt/srv"))
        );
        let snap = &l[4];
        assert_eq!(snap.kind, DatasetType::Snapshot);
        assert_eq!(snap.mountpoint, Mountpoint::NotApplicable);
        assert_eq!(snap.snapshot().unwrap().snap(), "proxborg-20261123T071900Z");
        assert_eq!(parse_list(&fixture("zfs-fuse-list.txt")).unwrap().len(), 5);
    }

    #[test]
    fn openzfs_list_golden() {
        let l = parse_list(&fixture("openzfs-list.txt")).unwrap();
        let get = |n: &str| l.iter().find(|e| e.name == n).unwrap();
        assert_eq!(
            get("rpool/ROOT/pve-1").mountpoint,
            Mountpoint::Path("/".into())
        );
        assert_eq!(get("rpool/data/vm-200-disk-0").kind, DatasetType::Volume);
        assert_eq!(
            get("rpool/data/vm-200-disk-0").mountpoint,
            Mountpoint::NotApplicable
        );
        assert_eq!(get("rpool/nomount").mountpoint, Mountpoint::None);
        assert_eq!(get("rpool/legacy").mountpoint, Mountpoint::Legacy);
        assert_eq!(
            get("tank/ct/subvol-103-disk-0").mountpoint.path().unwrap(),
            std::path::Path::new("/tank/ct/subvol-103-disk-0")
        );
    }

    #[test]
    fn get_golden_both_implementations() {
        let rows = parse_get(&fixture("zfs-fuse-get.txt")).unwrap();
        assert_eq!(rows.len(), 28);
        assert_eq!(
            property(&rows, "pvefix/data/subvol-100-disk-1", "proxborg:run"),
            Some("abc123")
        );
        assert_eq!(
            property(&rows, "pvefix/data/subvol-100-disk-0", "proxborg:run"),
            None
        );
        assert_eq!(
            property(&rows, "pvefix", "guid"),
            Some("212755847572743819")
        );
        assert_eq!(
            property(
                &rows,
                "pvefix/data/subvol-100-disk-0@proxborg-20261123T071900Z",
                "mountpoint"
            ),
            None
        );
        let rows = parse_get(&fixture("zfs-fuse-get-snapshot.txt")).unwrap();
        assert_eq!(
            property(
                &rows,
                "pvefix/data/subvol-100-disk-0@proxborg-20261123T071900Z",
                "proxborg:run"
            ),
            Some("abc123")
        );
        let rows = parse_get(&fixture("openzfs-get.txt")).unwrap();
        assert_eq!(
            property(&rows, "rpool/data/subvol-100-disk-0", "guid"),
            Some("5419873327731839610")
        );
        assert_eq!(
            property(&rows, "rpool/data/subvol-100-disk-0", "refquota"),
            Some("8589934592")
        );
        assert_eq!(
            property(
                &rows,
                "rpool/data/subvol-100-disk-0@vzdump",
                "pve-storage:refquota"
            ),
            Some("8589934592")
        );
        assert_eq!(
            property(
                &rows,
                "rpool/data/proxborg-clone-20261101T000000Z",
                "proxborg:run"
            ),
            Some("run-7f3a\twith tab")
        );
    }

    #[test]
    fn malformed_output_is_an_error_naming_the_line() {
        let e = parse_list("rpool\t/rpool\tfilesystem\nrpool/x /rpool/x filesystem\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 2: expected 3 tab-separated fields, got 1"),
            "{e}"
        );
        assert!(parse_list("rpool\trelative\tfilesystem\n").is_err());
        assert!(parse_list("rpool\t/r\tzvol\n").is_err());
        assert!(parse_list("rpool/x%y\t/r\tfilesystem\n").is_err());
        assert!(parse_get("rpool\tguid\n")
            .unwrap_err()
            .to_string()
            .contains("line 1"));
    }
}
