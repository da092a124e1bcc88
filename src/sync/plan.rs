//! The pure half of `sync`: which archives of the source to copy, and which blobs of an archive
//! the destination lacks. No I/O: archive lists and "does the destination have this id" come
//! in as values and closures.

use crate::repo::archive::same_backup;
use crate::repo::{ArchiveEntry, BlobKind, ChunkId};
use std::collections::HashSet;

/// Which source archives to consider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    All,
    /// Every archive of one series (`retention::series_key`).
    Series(String),
    /// The archive(s) of this name.
    Archive(String),
}

/// What to do with each selected source archive.
#[derive(Debug, Default)]
pub struct ArchivePlan {
    /// To copy, oldest first.
    pub copy: Vec<ArchiveEntry>,
    /// Already in the destination (same backup: name, times, item stream): their names.
    pub skip: Vec<String>,
    /// The destination has a different backup under the same name: one message each, the
    /// archive is not copied (two archives of one name would make it ambiguous there).
    pub conflicts: Vec<String>,
}

/// Chooses the archives to copy. `src` and `dst` are the resolved current archives of each
/// repository. Errors only when a named archive does not exist in the source.
pub fn choose(
    src: &[ArchiveEntry],
    dst: &[ArchiveEntry],
    selection: &Selection,
) -> Result<ArchivePlan, String> {
    let selected: Vec<&ArchiveEntry> = src
        .iter()
        .filter(|(_, m)| match selection {
            Selection::All => true,
            Selection::Series(s) => crate::retention::series_key(&m.name, &m.metadata) == *s,
            Selection::Archive(name) => m.name == *name,
        })
        .collect();
    if let (Selection::Archive(name), true) = (selection, selected.is_empty()) {
        return Err(format!("no archive {name:?} in the source repository"));
    }
    let mut plan = ArchivePlan::default();
    for entry in selected {
        let m = &entry.1;
        let same_name: Vec<_> = dst.iter().filter(|(_, d)| d.name == m.name).collect();
        if same_name.iter().any(|(_, d)| same_backup(d, m)) {
            plan.skip.push(m.name.clone());
        } else if !same_name.is_empty() {
            plan.conflicts.push(format!(
                "archive {:?}: the destination has a different archive of that name; not copied",
                m.name
            ));
        } else {
            plan.copy.push(entry.clone());
        }
    }
    Ok(plan)
}

/// The blobs of `refs` to copy: those the destination lacks (`has`), each once across the
/// whole run (`planned` remembers what earlier archives of this run already copy), in the
/// order first referenced.
pub fn missing_blobs(
    refs: impl IntoIterator<Item = (ChunkId, BlobKind)>,
    has: impl Fn(&ChunkId) -> bool,
    planned: &mut HashSet<ChunkId>,
) -> Vec<(ChunkId, BlobKind)> {
    refs.into_iter()
        .filter(|(id, _)| !has(id) && planned.insert(*id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::Manifest;

    fn entry(name: &str, start: &str, stream: u8) -> ArchiveEntry {
        let m = Manifest {
            name: name.into(),
            start: start.into(),
            end: start.into(),
            hostname: String::new(),
            tool_version: String::new(),
            metadata: Default::default(),
            item_stream: vec![ChunkId([stream; 32])],
            stats: Default::default(),
            notes: String::new(),
            protected: false,
            revision: 0,
        };
        (ChunkId([stream; 32]), m)
    }

    #[test]
    fn archives_in_the_destination_are_skipped_and_name_clashes_reported() {
        let src = vec![entry("a", "1", 1), entry("b", "2", 2), entry("c", "3", 3)];
        let mut noted = entry("a", "1", 1);
        noted.1.notes = "changed there".into();
        noted.1.revision = 4;
        let dst = vec![noted, entry("c", "9", 9)];
        let plan = choose(&src, &dst, &Selection::All).unwrap();
        let copy: Vec<_> = plan.copy.iter().map(|(_, m)| m.name.as_str()).collect();
        assert_eq!(copy, ["b"]);
        assert_eq!(plan.skip, ["a"]);
        assert_eq!(plan.conflicts.len(), 1);
        assert!(plan.conflicts[0].contains("\"c\""));
        // a second run against the result copies nothing
        let after: Vec<_> = src.clone();
        let plan = choose(&src, &after, &Selection::All).unwrap();
        assert!(plan.copy.is_empty() && plan.conflicts.is_empty());
        assert_eq!(plan.skip.len(), 3);
    }

    #[test]
    fn selection_by_name_and_series() {
        let mut src = vec![entry("x-1", "1", 1), entry("y-1", "2", 2)];
        src[0]
            .1
            .metadata
            .insert("series".into(), serde_json::json!("lxc-100"));
        let plan = choose(&src, &[], &Selection::Archive("y-1".into())).unwrap();
        assert_eq!(plan.copy.len(), 1);
        assert_eq!(plan.copy[0].1.name, "y-1");
        let plan = choose(&src, &[], &Selection::Series("lxc-100".into())).unwrap();
        assert_eq!(plan.copy[0].1.name, "x-1");
        assert_eq!(plan.copy.len(), 1);
        let err = choose(&src, &[], &Selection::Archive("nope".into())).unwrap_err();
        assert!(err.contains("\"nope\""), "{err}");
    }

    #[test]
    fn blobs_the_destination_has_or_the_run_copies_are_left_out() {
        let id = |b| ChunkId([b; 32]);
        let mut planned = HashSet::new();
        let refs = [
            (id(1), BlobKind::Meta),
            (id(2), BlobKind::Data),
            (id(3), BlobKind::Data),
            (id(2), BlobKind::Data),
        ];
        let first = missing_blobs(refs, |i| *i == id(3), &mut planned);
        assert_eq!(first, [(id(1), BlobKind::Meta), (id(2), BlobKind::Data)]);
        let second = missing_blobs(
            [(id(2), BlobKind::Data), (id(4), BlobKind::Data)],
            |_| false,
            &mut planned,
        );
        assert_eq!(second, [(id(4), BlobKind::Data)]);
    }
}
