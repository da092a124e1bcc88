//! The pure part of direct zvol mode (docs/ZVOL.md): bookmark names, the argv of `zfs send`,
//! `zfs bookmark` and the listing of a zvol's snapshots and bookmarks, and the rules that
//! decide which proxborg bookmark an incremental may start from, whether the bookmark may move
//! forward after a backup, and which bookmarks must go.
//!
//! The rule that keeps PVE's `qm rollback` working: `zfs rollback vol@S` (which PVE runs
//! without `-r`) fails while any bookmark is newer than `S`. So proxborg never leaves a
//! bookmark newer than a snapshot it did not make: it moves its bookmark forward only while
//! the zvol has no other snapshot, and removes any of its bookmarks that a foreign snapshot
//! predates (which only a snapshot taken during a run can cause). While PVE snapshots exist,
//! the bookmark stays where it was, older than all of them, and each incremental reads what
//! changed since it (still correct: the previous archive with that bookmark is the base).

use super::names::{DatasetName, SnapshotName};
use super::parse::perr;
use super::{ZfsError, SNAPSHOT_PREFIX};

/// `dataset#name`, for a bookmark proxborg made (the name starts with `proxborg-`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(transparent)]
pub struct BookmarkName(String);

impl BookmarkName {
    /// A proxborg bookmark of `dataset`; `mark` must start with [`SNAPSHOT_PREFIX`] and be a
    /// valid ZFS name component.
    pub fn new(dataset: &DatasetName, mark: &str) -> Result<BookmarkName, ZfsError> {
        let full = format!("{dataset}#{mark}");
        // a bookmark's part follows the snapshot part's rules
        dataset.snapshot(mark).map_err(|e| match e {
            ZfsError::InvalidName { reason, .. } => ZfsError::InvalidName {
                name: full.clone(),
                reason,
            },
            e => e,
        })?;
        if !mark.starts_with(SNAPSHOT_PREFIX) {
            return Err(ZfsError::NotProxborgOwned { name: full });
        }
        Ok(BookmarkName(full))
    }

    /// Parses `dataset#name` (as `zfs list` prints it) for a proxborg bookmark.
    pub fn parse(s: &str) -> Result<BookmarkName, ZfsError> {
        let (ds, mark) = s.split_once('#').ok_or_else(|| ZfsError::InvalidName {
            name: s.to_string(),
            reason: "a bookmark name needs '#'".into(),
        })?;
        BookmarkName::new(&DatasetName::new(ds)?, mark)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after `#`.
    pub fn mark(&self) -> &str {
        self.0.split_once('#').map(|(_, m)| m).unwrap_or("")
    }
}

impl std::fmt::Display for BookmarkName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The bookmark prefix of one repository: two repositories backing up the same VM keep one
/// bookmark each (`proxborg-<first 8 hex digits of the repository id>-`).
pub fn bookmark_prefix(repo_id_hex: &str) -> String {
    let short: String = repo_id_hex.chars().take(8).collect();
    format!("{SNAPSHOT_PREFIX}{short}-")
}

/// The bookmark a backup from `snap` leaves: the repository's prefix and the snapshot's time.
pub fn bookmark_for(snap: &SnapshotName, prefix: &str) -> Result<BookmarkName, ZfsError> {
    let stamp = snap.snap().trim_start_matches(SNAPSHOT_PREFIX);
    BookmarkName::new(&snap.dataset(), &format!("{prefix}{stamp}"))
}

/// `zfs send [-i dataset#bookmark] dataset@snap`: no other flag, so that every WRITE carries
/// plain logical blocks (docs/ZVOL.md §1).
pub fn send_argv(
    snap: &SnapshotName,
    from: Option<&BookmarkName>,
) -> Result<Vec<String>, ZfsError> {
    let mut a = vec!["zfs".to_string(), "send".to_string()];
    if let Some(b) = from {
        if b.as_str().split_once('#').map(|(d, _)| d) != Some(snap.dataset().as_str()) {
            return Err(ZfsError::InvalidName {
                name: b.to_string(),
                reason: format!("not a bookmark of {}", snap.dataset()),
            });
        }
        a.push("-i".into());
        a.push(b.to_string());
    }
    a.push(snap.to_string());
    Ok(a)
}

/// `zfs bookmark dataset@snap dataset#name`.
pub fn bookmark_argv(
    snap: &SnapshotName,
    bookmark: &BookmarkName,
) -> Result<Vec<String>, ZfsError> {
    if bookmark.as_str().split_once('#').map(|(d, _)| d) != Some(snap.dataset().as_str()) {
        return Err(ZfsError::InvalidName {
            name: bookmark.to_string(),
            reason: format!("not a bookmark of {}", snap.dataset()),
        });
    }
    Ok(vec![
        "zfs".into(),
        "bookmark".into(),
        snap.to_string(),
        bookmark.to_string(),
    ])
}

/// `zfs list -H -p -t snapshot,bookmark -o name,guid,createtxg -d 1 dataset`.
pub fn points_argv(dataset: &DatasetName) -> Vec<String> {
    [
        "zfs",
        "list",
        "-H",
        "-p",
        "-t",
        "snapshot,bookmark",
        "-o",
        "name,guid,createtxg",
        "-d",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([dataset.to_string()])
    .collect()
}

/// A snapshot or bookmark of a zvol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Point {
    /// `dataset@snap` or `dataset#mark`.
    pub name: String,
    pub bookmark: bool,
    pub guid: u64,
    pub createtxg: u64,
}

impl Point {
    /// The part after `@` or `#`.
    pub fn short(&self) -> &str {
        self.name
            .split_once(if self.bookmark { '#' } else { '@' })
            .map(|(_, s)| s)
            .unwrap_or("")
    }

    /// A snapshot proxborg did not take (PVE's, the user's, vzdump's).
    pub fn is_foreign_snapshot(&self) -> bool {
        !self.bookmark && !self.short().starts_with(SNAPSHOT_PREFIX)
    }
}

/// Parses [`points_argv`]'s output.
pub fn parse_points(text: &str) -> Result<Vec<Point>, ZfsError> {
    const WHAT: &str = "zfs list -H -p -o name,guid,createtxg";
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.is_empty() {
            continue;
        }
        let f: Vec<&str> = l.split('\t').collect();
        let [name, guid, txg] = f[..] else {
            return Err(perr(WHAT, i + 1, l, "expected 3 tab-separated fields"));
        };
        let bookmark = name.contains('#');
        if !bookmark && !name.contains('@') {
            return Err(perr(WHAT, i + 1, l, "neither a snapshot nor a bookmark"));
        }
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| perr(WHAT, i + 1, l, "not a number"))
        };
        out.push(Point {
            name: name.to_string(),
            bookmark,
            guid: num(guid)?,
            createtxg: num(txg)?,
        });
    }
    Ok(out)
}

/// Whether the bookmark `name` still exists with the snapshot guid the previous archive
/// recorded: only then is that archive the state the bookmark marks.
pub fn base_is_usable(points: &[Point], name: &str, guid: u64) -> bool {
    points
        .iter()
        .any(|p| p.bookmark && p.name == name && p.guid == guid)
}

/// After a backup from a snapshot on a zvol with `points`: may proxborg move its bookmark
/// forward to that snapshot? Only while no foreign snapshot exists, which would then be older
/// than the new bookmark and could no longer be rolled back to.
pub fn may_move_bookmark(points: &[Point]) -> bool {
    !points.iter().any(Point::is_foreign_snapshot)
}

/// This repository's bookmarks (those starting with `prefix`) that must go: every one but
/// `keep`, and even `keep` when a foreign snapshot is older than it (it would make `qm
/// rollback` to that snapshot fail).
pub fn bookmarks_to_remove(
    points: &[Point],
    prefix: &str,
    keep: Option<&str>,
) -> Vec<BookmarkName> {
    let oldest_foreign = points
        .iter()
        .filter(|p| p.is_foreign_snapshot())
        .map(|p| p.createtxg)
        .min();
    points
        .iter()
        .filter(|p| p.bookmark && p.short().starts_with(prefix))
        .filter(|p| {
            Some(p.name.as_str()) != keep || oldest_foreign.is_some_and(|t| p.createtxg > t)
        })
        .filter_map(|p| BookmarkName::parse(&p.name).ok())
        .collect()
}

/// Any bookmark (proxborg's or not) newer than a foreign snapshot: `qm rollback` to that
/// snapshot fails until it is gone. Used to say so, not to act on others' bookmarks.
pub fn rollback_blockers(points: &[Point]) -> Vec<&Point> {
    let Some(oldest) = points
        .iter()
        .filter(|p| p.is_foreign_snapshot())
        .map(|p| p.createtxg)
        .min()
    else {
        return Vec::new();
    };
    points
        .iter()
        .filter(|p| p.bookmark && p.createtxg > oldest)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, guid: u64, txg: u64) -> Point {
        Point {
            name: name.into(),
            bookmark: name.contains('#'),
            guid,
            createtxg: txg,
        }
    }

    #[test]
    fn bookmark_names_are_proxborg_owned_and_valid() {
        let ds = DatasetName::new("rpool/data/vm-200-disk-0").unwrap();
        let b = BookmarkName::new(&ds, "proxborg-1a2b3c4d-20261206T120000Z").unwrap();
        assert_eq!(
            b.as_str(),
            "rpool/data/vm-200-disk-0#proxborg-1a2b3c4d-20261206T120000Z"
        );
        assert_eq!(b.mark(), "proxborg-1a2b3c4d-20261206T120000Z");
        assert!(matches!(
            BookmarkName::new(&ds, "pve-snap"),
            Err(ZfsError::NotProxborgOwned { .. })
        ));
        assert!(BookmarkName::new(&ds, "proxborg-a/b").is_err());
        assert!(BookmarkName::parse("rpool/x#proxborg-1").is_ok());
        assert!(BookmarkName::parse("rpool/x@proxborg-1").is_err());
        let snap = ds.snapshot("proxborg-20261206T120000Z").unwrap();
        let prefix = bookmark_prefix("1a2b3c4d5e6f");
        assert_eq!(prefix, "proxborg-1a2b3c4d-");
        assert_eq!(bookmark_for(&snap, &prefix).unwrap(), b);
    }

    #[test]
    fn send_has_only_the_incremental_flag_and_refuses_another_datasets_bookmark() {
        let snap = SnapshotName::new("rpool/data/vm-200-disk-0@proxborg-2").unwrap();
        assert_eq!(
            send_argv(&snap, None).unwrap(),
            ["zfs", "send", "rpool/data/vm-200-disk-0@proxborg-2"]
        );
        let b = BookmarkName::parse("rpool/data/vm-200-disk-0#proxborg-x-1").unwrap();
        assert_eq!(
            send_argv(&snap, Some(&b)).unwrap(),
            [
                "zfs",
                "send",
                "-i",
                "rpool/data/vm-200-disk-0#proxborg-x-1",
                "rpool/data/vm-200-disk-0@proxborg-2"
            ]
        );
        let other = BookmarkName::parse("rpool/data/vm-200-disk-1#proxborg-x-1").unwrap();
        assert!(send_argv(&snap, Some(&other)).is_err());
        assert!(bookmark_argv(&snap, &other).is_err());
        assert_eq!(bookmark_argv(&snap, &b).unwrap()[1], "bookmark");
    }

    #[test]
    fn parses_points_and_rejects_garbage() {
        let out = "rpool/v@pve1\t11\t100\nrpool/v#proxborg-ab-1\t12\t90\n";
        let pts = parse_points(out).unwrap();
        assert_eq!(
            pts,
            [
                p("rpool/v@pve1", 11, 100),
                p("rpool/v#proxborg-ab-1", 12, 90)
            ]
        );
        assert!(pts[0].is_foreign_snapshot() && !pts[1].is_foreign_snapshot());
        for bad in ["rpool/v@x\t1\n", "rpool/v@x\t-\t3\n", "rpool/v\t1\t2\n"] {
            assert!(parse_points(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_base_needs_the_bookmark_with_the_recorded_guid() {
        let pts = [p("v#proxborg-ab-1", 7, 10), p("v@proxborg-2", 7, 10)];
        assert!(base_is_usable(&pts, "v#proxborg-ab-1", 7));
        assert!(
            !base_is_usable(&pts, "v#proxborg-ab-1", 8),
            "a foreign bookmark of that name"
        );
        assert!(!base_is_usable(&pts, "v#proxborg-ab-0", 7), "destroyed");
        assert!(
            !base_is_usable(&pts, "v@proxborg-2", 7),
            "a snapshot is not the bookmark"
        );
    }

    #[test]
    fn the_bookmark_moves_only_while_no_foreign_snapshot_exists() {
        let ours = [p("v#proxborg-ab-1", 1, 10), p("v@proxborg-2", 2, 20)];
        assert!(may_move_bookmark(&ours));
        let with_pve = [
            p("v#proxborg-ab-1", 1, 10),
            p("v@before-upgrade", 3, 15),
            p("v@proxborg-2", 2, 20),
        ];
        assert!(!may_move_bookmark(&with_pve));
    }

    #[test]
    fn stale_and_rollback_blocking_bookmarks_go_others_stay() {
        let pts = [
            p("v#proxborg-ab-1", 1, 10),
            p("v#proxborg-ab-2", 2, 20),
            p("v#proxborg-cd-2", 2, 20), // another repository's
            p("v#mine", 9, 25),          // the user's
        ];
        let names =
            |v: Vec<BookmarkName>| v.iter().map(|b| b.mark().to_string()).collect::<Vec<_>>();
        assert_eq!(
            names(bookmarks_to_remove(
                &pts,
                "proxborg-ab-",
                Some("v#proxborg-ab-2")
            )),
            ["proxborg-ab-1"]
        );
        assert_eq!(
            names(bookmarks_to_remove(&pts, "proxborg-ab-", None)),
            ["proxborg-ab-1", "proxborg-ab-2"]
        );
        // a PVE snapshot older than the kept bookmark: it must go too
        let mut with_snap = pts.to_vec();
        with_snap.push(p("v@pve", 5, 15));
        assert_eq!(
            names(bookmarks_to_remove(
                &with_snap,
                "proxborg-ab-",
                Some("v#proxborg-ab-2")
            )),
            ["proxborg-ab-1", "proxborg-ab-2"]
        );
        // but one older than the snapshot stays
        assert_eq!(
            names(bookmarks_to_remove(
                &with_snap,
                "proxborg-ab-",
                Some("v#proxborg-ab-1")
            )),
            ["proxborg-ab-2"]
        );
        let blockers: Vec<&str> = rollback_blockers(&with_snap)
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(blockers, ["v#proxborg-ab-2", "v#proxborg-cd-2", "v#mine"]);
        assert!(rollback_blockers(&pts).is_empty());
    }
}
